// The .ttfs model-file reader: bytes in memory -> a validated ttfs::Model (docs/FORMAT.md).
//
// Every file is treated as hostile. Nothing is read before the bytes are known to be there,
// offsets and sizes are added and multiplied with overflow checks on uint64, integers are
// assembled byte by byte (little-endian, no unaligned pointer casts), and allocations are
// bounded by the file's own size (tensors) or the format's limits (layers, tensors, window
// steps). Checks run in the order of FORMAT.md's table; the first
// failure wins, with its status and a message naming the field, the value and what was expected.
#include <cstring>
#include <exception>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "model.hpp"
#include "ttfs_format.h"

namespace ttfs {

namespace {

constexpr uint64_t kHeaderSize = TTFS_FMT_HEADER_SIZE;
constexpr uint64_t kLayerRecord = TTFS_FMT_LAYER_RECORD_SIZE;
constexpr uint64_t kTensorRecord = TTFS_FMT_TENSOR_RECORD_SIZE;
constexpr uint64_t kAlignment = TTFS_FMT_ALIGNMENT;
constexpr uint64_t kCrcSize = TTFS_FMT_CRC_SIZE;
// The pool modes are stored as the public enum's values (layer.pool_mode is cast below).
static_assert(TTFS_FMT_POOL_OR == TTFS_POOL_OR && TTFS_FMT_POOL_EARLIEST == TTFS_POOL_EARLIEST &&
                  TTFS_FMT_POOL_GATED == TTFS_POOL_GATED,
              "pool mode values of ttfs_format.h and ttfs.h differ");

// zlib's CRC-32 (reflected polynomial 0xEDB88320), table-driven.
uint32_t crc32(const uint8_t* data, size_t size) {
    static const std::vector<uint32_t> table = [] {
        std::vector<uint32_t> t(256);
        for (uint32_t n = 0; n < 256; ++n) {
            uint32_t c = n;
            for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }();
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

bool utf8_valid(const uint8_t* text, size_t size) {
    size_t i = 0;
    while (i < size) {
        const uint8_t lead = text[i];
        size_t extra;
        uint32_t code;
        if (lead < 0x80) { ++i; continue; }
        if (lead >= 0xC2 && lead <= 0xDF) { extra = 1; code = lead & 0x1Fu; }
        else if (lead >= 0xE0 && lead <= 0xEF) { extra = 2; code = lead & 0x0Fu; }
        else if (lead >= 0xF0 && lead <= 0xF4) { extra = 3; code = lead & 0x07u; }
        else return false;
        if (extra > size - i - 1) return false;
        for (size_t k = 1; k <= extra; ++k) {
            if ((text[i + k] & 0xC0u) != 0x80u) return false;
            code = (code << 6) | (text[i + k] & 0x3Fu);
        }
        // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
        if ((extra == 2 && code < 0x800) || (extra == 3 && (code < 0x10000 || code > 0x10FFFF)) ||
            (code >= 0xD800 && code <= 0xDFFF))
            return false;
        i += extra + 1;
    }
    return true;
}

const char* kind_name(uint32_t kind) {
    switch (kind) {
        case TTFS_FMT_LAYER_INPUT: return "input";
        case TTFS_FMT_LAYER_CONV2D: return "conv2d";
        case TTFS_FMT_LAYER_MAXPOOL: return "maxpool";
        case TTFS_FMT_LAYER_FLATTEN: return "flatten";
        case TTFS_FMT_LAYER_DENSE: return "dense";
        default: return "unknown";
    }
}

bool is_neuron_kind(uint32_t kind) {
    return kind == TTFS_FMT_LAYER_INPUT || kind == TTFS_FMT_LAYER_CONV2D || kind == TTFS_FMT_LAYER_DENSE;
}

bool is_weighted_kind(uint32_t kind) {
    return kind == TTFS_FMT_LAYER_CONV2D || kind == TTFS_FMT_LAYER_DENSE;
}

bool is_windowed_kind(uint32_t kind) {  // has kernel, stride, padding
    return kind == TTFS_FMT_LAYER_CONV2D || kind == TTFS_FMT_LAYER_MAXPOOL;
}

std::string float_text(float value) {
    std::ostringstream text;
    text.precision(9);
    text << value;
    return text.str();
}

// One layer record as stored; integers raw, floats as bits until the value stage checks them.
struct LayerRecord {
    uint8_t name[TTFS_FMT_NAME_SIZE];
    uint32_t kind;
    int32_t depth;
    uint32_t out_h, out_w, out_c, kernel_h, kernel_w, stride_h, stride_w, padding, pool_mode;
    int32_t weight_tensor, bias_tensor;
    uint32_t tau_fire, td_fire, tau_integ, td_integ, vth0;  // f32 bits
    int32_t integ_start, integ_end, fire_start, fire_end;
    uint32_t input_divisor;  // f32 bits
    uint32_t reserved;
};

struct TensorRecord {
    uint32_t dtype, ndim;
    uint64_t dims[TTFS_FMT_MAX_DIMS];
    uint64_t data_offset, data_size, reserved;
    uint64_t elements = 0;  // product of dims[0..ndim), set by the dims stage
};

float float_from_bits(uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

bool is_finite_bits(uint32_t bits) { return (bits & 0x7F800000u) != 0x7F800000u; }

// Bytes shown in a message: valid UTF-8 text as it is, anything else with \xNN escapes.
std::string printable(const uint8_t* bytes, size_t size) {
    const bool text = utf8_valid(bytes, size);
    std::string shown;
    for (size_t i = 0; i < size; ++i) {
        const uint8_t b = bytes[i];
        if ((b >= 0x20 && b < 0x7F && b != '\\') || (text && b >= 0x80)) {
            shown += char(b);
        } else {
            static const char hex[] = "0123456789abcdef";
            shown += "\\x";
            shown += hex[b >> 4];
            shown += hex[b & 0xF];
        }
    }
    return shown;
}

class Reader {
public:
    Reader(const uint8_t* data, size_t size, std::string& error)
        : data_(data), size_(size), error_(error) {}

    ttfs_status read(Model& out) {
        using Stage = ttfs_status (Reader::*)();
        static const Stage stages[] = {&Reader::check_header, &Reader::check_layout, &Reader::check_dims,
                                       &Reader::check_kinds,  &Reader::check_fields, &Reader::check_shapes,
                                       &Reader::check_values};
        for (Stage stage : stages) {
            const ttfs_status status = (this->*stage)();
            if (overrun_)
                return fail(TTFS_ERR_INTERNAL, "the model reader tried to read past the end of a ",
                            size_, "-byte file; please report this file");
            if (status != TTFS_OK) return status;
        }
        Model model;
        build(model);
        // What the constants imply: tables, input scaling, potential bounds (model.cpp).
        const ttfs_status derived = check_derived_values(model, error_);
        if (derived != TTFS_OK) return derived;
        out = std::move(model);
        return TTFS_OK;
    }

private:
    // ---- bounds-checked little-endian loads ----
    // Every caller has checked the range already; a load outside the file would be a bug in
    // this reader, so it reads nothing and read() reports TTFS_ERR_INTERNAL.
    bool in_file(uint64_t offset, uint64_t count) const { return offset <= size_ && count <= size_ - offset; }
    uint64_t load(uint64_t offset, unsigned bytes) {
        if (!in_file(offset, bytes)) {
            overrun_ = true;
            return 0;
        }
        uint64_t value = 0;
        for (unsigned i = 0; i < bytes; ++i) value |= uint64_t(data_[offset + i]) << (8 * i);
        return value;
    }
    uint32_t u32(uint64_t offset) { return uint32_t(load(offset, 4)); }
    int32_t i32(uint64_t offset) {
        const uint32_t bits = u32(offset);
        int32_t value;
        std::memcpy(&value, &bits, sizeof value);
        return value;
    }
    uint64_t u64(uint64_t offset) { return load(offset, 8); }

    ttfs_status fail(ttfs_status status, const std::string& message) {
        error_ = message;
        return status;
    }
    template <typename... Parts>
    ttfs_status fail(ttfs_status status, const Parts&... parts) {
        std::ostringstream message;
        (message << ... << parts);
        return fail(status, message.str());
    }

    // "layer 3 'conv2'", usable before the name is validated.
    std::string layer_label(size_t index) const {
        const uint8_t* name = layers_[index].name;
        size_t length = 0;
        while (length < TTFS_FMT_NAME_SIZE && name[length] != 0) ++length;
        return "layer " + std::to_string(index) + " '" + printable(name, length) + "'";
    }
    std::string tensor_label(size_t index) const {
        std::string label = "tensor " + std::to_string(index);
        if (index < tensor_owner_.size() && !tensor_owner_[index].empty())
            label += " (" + tensor_owner_[index] + ")";
        return label;
    }
    static std::string shape_text(uint64_t h, uint64_t w, uint64_t c) {
        return std::to_string(h) + "x" + std::to_string(w) + "x" + std::to_string(c);
    }
    static std::string dims_text(const TensorRecord& tensor) {
        std::string text = "[";
        const uint32_t shown = tensor.ndim <= TTFS_FMT_MAX_DIMS ? tensor.ndim : TTFS_FMT_MAX_DIMS;
        for (uint32_t k = 0; k < shown; ++k) text += (k ? ", " : "") + std::to_string(tensor.dims[k]);
        return text + "]";
    }

    ttfs_status check_header();
    ttfs_status check_layout();
    ttfs_status check_dims();
    ttfs_status check_kinds();
    ttfs_status check_fields();
    struct UnusedField { const char* field; uint32_t bits; bool is_float = false; };
    ttfs_status check_unused(const std::string& label, const char* kind_text, const UnusedField* fields,
                             size_t count);
    ttfs_status check_layer_fields(size_t index, int32_t& next_depth);
    ttfs_status check_reference(size_t index, int32_t tensor, const char* field, const char* role,
                                bool optional);
    ttfs_status check_shapes();
    ttfs_status check_values();
    std::vector<float> decode_tensor(int32_t index);
    void build(Model& model);

    const uint8_t* data_;
    size_t size_;
    std::string& error_;
    bool overrun_ = false;

    // Header fields.
    uint64_t layer_table_ = 0, tensor_table_ = 0, metadata_offset_ = 0, metadata_size_ = 0;
    uint32_t layer_count_ = 0, tensor_count_ = 0, time_steps_ = 0, readout_ = 0;
    uint64_t payload_end_ = 0;  // offset of the CRC: everything before it is payload
    uint64_t window_steps_ = 0;  // all window lengths added up, by check_layer_fields

    std::vector<LayerRecord> layers_;
    std::vector<TensorRecord> tensors_;
    std::vector<std::string> tensor_owner_;  // "weights of layer 3 'conv2'", set by check_fields
};

// ---- header, size, CRC, counts ----------------------------------------------------------------

ttfs_status Reader::check_header() {
    if (size_ < kHeaderSize)
        return fail(TTFS_ERR_TRUNCATED_HEADER, "the file is ", size_, " bytes, shorter than the ",
                    kHeaderSize, "-byte header: truncated or not a ttfs model file");
    if (std::memcmp(data_ + TTFS_FMT_H_MAGIC, TTFS_FMT_MAGIC, TTFS_FMT_MAGIC_SIZE) != 0)
        return fail(TTFS_ERR_BAD_MAGIC, "magic is \"", printable(data_ + TTFS_FMT_H_MAGIC, TTFS_FMT_MAGIC_SIZE),
                    "\", expected \"TTFSNET\\x00\": not a ttfs model file");
    const uint32_t version = u32(TTFS_FMT_H_VERSION);
    if (version > TTFS_FMT_VERSION)
        return fail(TTFS_ERR_UNSUPPORTED_VERSION, "format_version ", version,
                    ": the file was written by a newer ttfs; this library reads format_version ",
                    TTFS_FMT_VERSION, " (upgrade libttfs)");
    if (version != TTFS_FMT_VERSION)
        return fail(TTFS_ERR_UNSUPPORTED_VERSION, "format_version ", version, ", expected ", TTFS_FMT_VERSION);

    struct Fixed { const char* field; uint64_t offset; uint32_t expected; };
    const Fixed fixed[] = {{"header_size", TTFS_FMT_H_HEADER_SIZE, TTFS_FMT_HEADER_SIZE},
                           {"layer_record_size", TTFS_FMT_H_LAYER_RECORD_SIZE, TTFS_FMT_LAYER_RECORD_SIZE},
                           {"tensor_record_size", TTFS_FMT_H_TENSOR_RECORD_SIZE, TTFS_FMT_TENSOR_RECORD_SIZE},
                           {"flags", TTFS_FMT_H_FLAGS, 0}};
    for (const Fixed& f : fixed) {
        const uint32_t value = u32(f.offset);
        if (value != f.expected)
            return fail(TTFS_ERR_BAD_FIELD, "header field ", f.field, " is ", value, ", expected ", f.expected);
    }
    for (uint64_t offset = TTFS_FMT_H_RESERVED; offset < kHeaderSize; ++offset)
        if (data_[offset] != 0)
            return fail(TTFS_ERR_BAD_FIELD, "reserved header byte at offset ", offset, " is ",
                        unsigned(data_[offset]), ", expected 0 (reserved bytes are zero in format_version 1)");

    const uint64_t file_size = u64(TTFS_FMT_H_FILE_SIZE);
    if (file_size > size_)
        return fail(TTFS_ERR_TRUNCATED_DATA, "header field file_size is ", file_size, " bytes but only ",
                    size_, " bytes are present: the file is truncated");
    if (file_size < size_)
        return fail(TTFS_ERR_TRAILING_BYTES, "the file is ", size_, " bytes, ", size_ - file_size,
                    " more than its header field file_size (", file_size, "): trailing bytes after the CRC");

    // (Before the CRC, which would otherwise read all of it.)
    if (file_size > uint64_t(TTFS_FMT_MAX_FILE_SIZE))
        return fail(TTFS_ERR_BAD_FIELD, "header field file_size is ", file_size, " bytes, more than the limit of ",
                    uint64_t(TTFS_FMT_MAX_FILE_SIZE), " bytes for a model file");
    payload_end_ = size_ - kCrcSize;
    const uint32_t stored = u32(payload_end_);
    const uint32_t computed = crc32(data_, size_t(payload_end_));
    if (stored != computed) {
        std::ostringstream message;
        message << std::hex << "crc32 stored in the last 4 bytes is 0x" << stored << ", computed 0x" << computed
                << std::dec << " over the first " << payload_end_ << " bytes: the file is damaged";
        return fail(TTFS_ERR_BAD_CRC, message.str());
    }

    layer_count_ = u32(TTFS_FMT_H_LAYER_COUNT);
    tensor_count_ = u32(TTFS_FMT_H_TENSOR_COUNT);
    metadata_size_ = u64(TTFS_FMT_H_METADATA_SIZE);
    time_steps_ = u32(TTFS_FMT_H_TIME_STEPS);
    readout_ = u32(TTFS_FMT_H_READOUT);
    if (layer_count_ < 2 || layer_count_ > TTFS_FMT_MAX_LAYERS)
        return fail(TTFS_ERR_BAD_FIELD, "header field layer_count is ", layer_count_, ", expected 2 .. ",
                    TTFS_FMT_MAX_LAYERS, " (an input layer and at least one more)");
    if (tensor_count_ > TTFS_FMT_MAX_TENSORS)
        return fail(TTFS_ERR_BAD_FIELD, "header field tensor_count is ", tensor_count_, ", expected at most ",
                    TTFS_FMT_MAX_TENSORS);
    if (metadata_size_ > TTFS_FMT_MAX_METADATA_SIZE)
        return fail(TTFS_ERR_BAD_FIELD, "header field metadata_size is ", metadata_size_,
                    ", expected at most ", TTFS_FMT_MAX_METADATA_SIZE, " bytes");
    return TTFS_OK;
}

// ---- regions: tables, metadata, tensor data --------------------------------------------------

ttfs_status Reader::check_layout() {
    layer_table_ = u64(TTFS_FMT_H_LAYER_TABLE_OFFSET);
    tensor_table_ = u64(TTFS_FMT_H_TENSOR_TABLE_OFFSET);
    metadata_offset_ = u64(TTFS_FMT_H_METADATA_OFFSET);
    // Counts are bounded above, so these products and sums cannot overflow.
    const uint64_t layer_table_end = kHeaderSize + kLayerRecord * layer_count_;
    const uint64_t tensor_table_end = layer_table_end + kTensorRecord * tensor_count_;
    if (layer_table_ != kHeaderSize)
        return fail(TTFS_ERR_OFFSET_OUT_OF_RANGE, "header field layer_table_offset is ", layer_table_,
                    ", expected ", kHeaderSize, " (right after the header)");
    if (layer_table_end > payload_end_)
        return fail(TTFS_ERR_OFFSET_OUT_OF_RANGE, "the layer table (layer_count ", layer_count_, " x ",
                    kLayerRecord, " bytes at layer_table_offset ", layer_table_, ") ends at ", layer_table_end,
                    ", past the end of the data at ", payload_end_);
    if (tensor_table_ != layer_table_end)
        return fail(TTFS_ERR_OFFSET_OUT_OF_RANGE, "header field tensor_table_offset is ", tensor_table_,
                    ", expected ", layer_table_end, " (right after the layer table)");
    if (tensor_table_end > payload_end_)
        return fail(TTFS_ERR_OFFSET_OUT_OF_RANGE, "the tensor table (tensor_count ", tensor_count_, " x ",
                    kTensorRecord, " bytes at tensor_table_offset ", tensor_table_, ") ends at ",
                    tensor_table_end, ", past the end of the data at ", payload_end_);
    if (metadata_offset_ != tensor_table_end)
        return fail(TTFS_ERR_OFFSET_OUT_OF_RANGE, "header field metadata_offset is ", metadata_offset_,
                    ", expected ", tensor_table_end, " (right after the tensor table)");
    uint64_t metadata_end = 0;
    if (__builtin_add_overflow(metadata_offset_, metadata_size_, &metadata_end) || metadata_end > payload_end_)
        return fail(TTFS_ERR_OFFSET_OUT_OF_RANGE, "the metadata (metadata_size ", metadata_size_,
                    " bytes at metadata_offset ", metadata_offset_, ") runs past the end of the data at ",
                    payload_end_);

    // Both tables are inside the file now; read their records.
    layers_.resize(layer_count_);
    for (uint32_t i = 0; i < layer_count_; ++i) {
        const uint64_t base = layer_table_ + kLayerRecord * i;
        LayerRecord& r = layers_[i];
        std::memcpy(r.name, data_ + base + TTFS_FMT_L_NAME, TTFS_FMT_NAME_SIZE);
        r.kind = u32(base + TTFS_FMT_L_KIND);
        r.depth = i32(base + TTFS_FMT_L_DEPTH);
        r.out_h = u32(base + TTFS_FMT_L_OUT_H);
        r.out_w = u32(base + TTFS_FMT_L_OUT_W);
        r.out_c = u32(base + TTFS_FMT_L_OUT_C);
        r.kernel_h = u32(base + TTFS_FMT_L_KERNEL_H);
        r.kernel_w = u32(base + TTFS_FMT_L_KERNEL_W);
        r.stride_h = u32(base + TTFS_FMT_L_STRIDE_H);
        r.stride_w = u32(base + TTFS_FMT_L_STRIDE_W);
        r.padding = u32(base + TTFS_FMT_L_PADDING);
        r.pool_mode = u32(base + TTFS_FMT_L_POOL_MODE);
        r.weight_tensor = i32(base + TTFS_FMT_L_WEIGHT_TENSOR);
        r.bias_tensor = i32(base + TTFS_FMT_L_BIAS_TENSOR);
        r.tau_fire = u32(base + TTFS_FMT_L_TAU_FIRE);
        r.td_fire = u32(base + TTFS_FMT_L_TD_FIRE);
        r.tau_integ = u32(base + TTFS_FMT_L_TAU_INTEG);
        r.td_integ = u32(base + TTFS_FMT_L_TD_INTEG);
        r.vth0 = u32(base + TTFS_FMT_L_VTH0);
        r.integ_start = i32(base + TTFS_FMT_L_INTEG_START);
        r.integ_end = i32(base + TTFS_FMT_L_INTEG_END);
        r.fire_start = i32(base + TTFS_FMT_L_FIRE_START);
        r.fire_end = i32(base + TTFS_FMT_L_FIRE_END);
        r.input_divisor = u32(base + TTFS_FMT_L_INPUT_DIVISOR);
        r.reserved = u32(base + TTFS_FMT_L_RESERVED);
    }
    tensors_.resize(tensor_count_);
    for (uint32_t i = 0; i < tensor_count_; ++i) {
        const uint64_t base = tensor_table_ + kTensorRecord * i;
        TensorRecord& t = tensors_[i];
        t.dtype = u32(base + TTFS_FMT_T_DTYPE);
        t.ndim = u32(base + TTFS_FMT_T_NDIM);
        for (unsigned k = 0; k < TTFS_FMT_MAX_DIMS; ++k) t.dims[k] = u64(base + TTFS_FMT_T_DIMS + 8 * k);
        t.data_offset = u64(base + TTFS_FMT_T_DATA_OFFSET);
        t.data_size = u64(base + TTFS_FMT_T_DATA_SIZE);
        t.reserved = u64(base + TTFS_FMT_T_RESERVED);
    }

    // Tensor data: in table order, each at the first multiple of 64 after the previous region,
    // zero padding in between, and the last one ending where the CRC starts.
    uint64_t position = metadata_end;
    for (uint32_t i = 0; i < tensor_count_; ++i) {
        const TensorRecord& t = tensors_[i];
        if (t.data_offset % kAlignment != 0)
            return fail(TTFS_ERR_OFFSET_OUT_OF_RANGE, "tensor ", i, ": data_offset ", t.data_offset,
                        " is not a multiple of ", kAlignment);
        const uint64_t expected = (position + kAlignment - 1) / kAlignment * kAlignment;  // position < 2^63
        if (t.data_offset != expected)
            return fail(TTFS_ERR_OFFSET_OUT_OF_RANGE, "tensor ", i, ": data_offset ", t.data_offset, ", expected ",
                        expected, " (the first multiple of ", kAlignment,
                        " after the previous region, which ends at ", position, ")");
        uint64_t end = 0;
        if (__builtin_add_overflow(t.data_offset, t.data_size, &end) || end > payload_end_)
            return fail(TTFS_ERR_OFFSET_OUT_OF_RANGE, "tensor ", i, ": data_size ", t.data_size,
                        " bytes at data_offset ", t.data_offset, " runs past the end of the data at ", payload_end_);
        for (uint64_t offset = position; offset < t.data_offset; ++offset)
            if (data_[offset] != 0)
                return fail(TTFS_ERR_OFFSET_OUT_OF_RANGE, "padding byte at offset ", offset, " before tensor ", i,
                            " is ", unsigned(data_[offset]), ", expected 0");
        position = end;
    }
    if (position != payload_end_)
        return fail(TTFS_ERR_OFFSET_OUT_OF_RANGE, payload_end_ - position, " bytes between the end of the ",
                    tensor_count_ ? "last tensor's data" : "metadata", " at offset ", position,
                    " and the CRC at offset ", payload_end_, " belong to no region (expected none)");
    return TTFS_OK;
}

// ---- sizes: tensor dims and layer extents within limits --------------------------------------

ttfs_status Reader::check_dims() {
    for (uint32_t i = 0; i < tensor_count_; ++i) {
        TensorRecord& t = tensors_[i];
        if (t.ndim < 1 || t.ndim > TTFS_FMT_MAX_DIMS) continue;  // reported by check_fields
        uint64_t elements = 1;
        for (uint32_t k = 0; k < t.ndim; ++k)
            if (__builtin_mul_overflow(elements, t.dims[k], &elements))
                return fail(TTFS_ERR_DIM_OVERFLOW, "tensor ", i, ": dims ", dims_text(t),
                            " overflow 64 bits when multiplied");
        if (elements > TTFS_FMT_MAX_TENSOR_ELEMENTS)
            return fail(TTFS_ERR_DIM_OVERFLOW, "tensor ", i, ": dims ", dims_text(t), " hold ", elements,
                        " elements, more than the limit of ", TTFS_FMT_MAX_TENSOR_ELEMENTS);
        t.elements = elements;
    }
    for (uint32_t i = 0; i < layer_count_; ++i) {
        const LayerRecord& r = layers_[i];
        struct Extent { const char* field; uint32_t value; };
        const Extent extents[] = {{"out_h", r.out_h},         {"out_w", r.out_w},
                                  {"out_c", r.out_c},         {"kernel_h", r.kernel_h},
                                  {"kernel_w", r.kernel_w},   {"stride_h", r.stride_h},
                                  {"stride_w", r.stride_w}};
        for (const Extent& e : extents)
            if (e.value > TTFS_FMT_MAX_EXTENT)
                return fail(TTFS_ERR_DIM_OVERFLOW, layer_label(i), ": ", e.field, " is ", e.value,
                            ", more than the limit of ", TTFS_FMT_MAX_EXTENT);
        const uint64_t neurons = uint64_t(r.out_h) * r.out_w * r.out_c;  // each <= 2^20: no overflow
        if (neurons > TTFS_FMT_MAX_LAYER_SIZE)
            return fail(TTFS_ERR_DIM_OVERFLOW, layer_label(i), ": output shape (out_h x out_w x out_c) ",
                        shape_text(r.out_h, r.out_w, r.out_c), " has ", neurons, " neurons, more than the limit of ",
                        TTFS_FMT_MAX_LAYER_SIZE);
    }
    return TTFS_OK;
}

ttfs_status Reader::check_kinds() {
    for (uint32_t i = 0; i < layer_count_; ++i) {
        const uint32_t kind = layers_[i].kind;
        if (kind < TTFS_FMT_LAYER_INPUT || kind > TTFS_FMT_LAYER_DENSE)
            return fail(TTFS_ERR_UNKNOWN_LAYER_TYPE, layer_label(i), ": kind ", kind,
                        " is not a layer type this library knows (1 input, 2 conv2d, 3 maxpool, 4 flatten, "
                        "5 dense); was the file written by a newer ttfs?");
    }
    return TTFS_OK;
}

// ---- fields: enums, names, depths, windows, unused fields, tensor references -----------------

ttfs_status Reader::check_fields() {
    if (time_steps_ < 1 || time_steps_ > TTFS_FMT_MAX_TIME_STEPS)
        return fail(TTFS_ERR_BAD_FIELD, "header field time_steps is ", time_steps_, ", expected 1 .. ",
                    TTFS_FMT_MAX_TIME_STEPS);
    if (readout_ != TTFS_FMT_READOUT_VMEM && readout_ != TTFS_FMT_READOUT_FIRST_SPIKE)
        return fail(TTFS_ERR_BAD_FIELD, "header field readout is ", readout_, ", expected ",
                    TTFS_FMT_READOUT_VMEM, " (vmem) or ", TTFS_FMT_READOUT_FIRST_SPIKE, " (first_spike)");
    const uint8_t* metadata = data_ + metadata_offset_;
    const void* nul = metadata_size_ > 0 ? std::memchr(metadata, 0, size_t(metadata_size_)) : nullptr;
    if (nul != nullptr)
        return fail(TTFS_ERR_BAD_FIELD, "metadata contains a NUL byte at offset ",
                    metadata_offset_ + uint64_t(static_cast<const uint8_t*>(nul) - metadata),
                    "; expected UTF-8 JSON text without NUL");
    if (!utf8_valid(metadata, size_t(metadata_size_)))
        return fail(TTFS_ERR_BAD_FIELD, "metadata (", metadata_size_, " bytes at offset ", metadata_offset_,
                    ") is not valid UTF-8; expected UTF-8 JSON text");

    for (uint32_t i = 0; i < tensor_count_; ++i) {
        const TensorRecord& t = tensors_[i];
        if (t.dtype != TTFS_FMT_DTYPE_FLOAT32)
            return fail(TTFS_ERR_BAD_FIELD, "tensor ", i, ": dtype ", t.dtype, ", expected ",
                        TTFS_FMT_DTYPE_FLOAT32, " (float32)");
        if (t.ndim < 1 || t.ndim > TTFS_FMT_MAX_DIMS)
            return fail(TTFS_ERR_BAD_FIELD, "tensor ", i, ": ndim ", t.ndim, ", expected 1 .. ", TTFS_FMT_MAX_DIMS);
        for (uint32_t k = 0; k < TTFS_FMT_MAX_DIMS; ++k) {
            if (k < t.ndim && t.dims[k] == 0)
                return fail(TTFS_ERR_BAD_FIELD, "tensor ", i, ": dims[", k, "] is 0, expected >= 1");
            if (k >= t.ndim && t.dims[k] != 0)
                return fail(TTFS_ERR_BAD_FIELD, "tensor ", i, ": dims[", k, "] is ", t.dims[k],
                            ", expected 0 (unused: ndim is ", t.ndim, ")");
        }
        if (t.reserved != 0)
            return fail(TTFS_ERR_BAD_FIELD, "tensor ", i, ": reserved field is ", t.reserved, ", expected 0");
        if (t.data_size != 4 * t.elements)
            return fail(TTFS_ERR_BAD_FIELD, "tensor ", i, ": data_size ", t.data_size, " bytes, expected ",
                        4 * t.elements, " (4 bytes x ", t.elements, " elements of dims ", dims_text(t), ")");
    }

    tensor_owner_.assign(tensor_count_, std::string());
    int32_t next_depth = 0;
    for (uint32_t i = 0; i < layer_count_; ++i) {
        const ttfs_status status = check_layer_fields(i, next_depth);
        if (status != TTFS_OK) return status;
    }
    if (window_steps_ > TTFS_FMT_MAX_WINDOW_STEPS)
        return fail(TTFS_ERR_BAD_FIELD, "the integration and fire windows of all layers add up to ", window_steps_,
                    " steps, more than the limit of ", TTFS_FMT_MAX_WINDOW_STEPS,
                    " (the runtime tabulates one value per window step)");
    for (uint32_t i = 0; i < tensor_count_; ++i)
        if (tensor_owner_[i].empty())
            return fail(TTFS_ERR_BAD_FIELD, "tensor ", i, " is not referenced by any layer's weight_tensor or "
                        "bias_tensor; expected every tensor to belong to exactly one layer");
    return TTFS_OK;
}

ttfs_status Reader::check_reference(size_t index, int32_t tensor, const char* field, const char* role,
                                    bool optional) {
    if (tensor == TTFS_FMT_NO_TENSOR && optional) return TTFS_OK;
    if (tensor < 0 || uint32_t(tensor) >= tensor_count_)
        return fail(TTFS_ERR_BAD_FIELD, layer_label(index), ": ", field, " is ", tensor, ", expected ",
                    optional ? "-1 (none) or " : "", "a tensor index 0 .. ", int64_t(tensor_count_) - 1,
                    " (tensor_count is ", tensor_count_, ")");
    std::string& owner = tensor_owner_[size_t(tensor)];
    const std::string claim = std::string(role) + " of " + layer_label(index);
    if (!owner.empty())
        return fail(TTFS_ERR_BAD_FIELD, layer_label(index), ": ", field, " is ", tensor, ", but tensor ", tensor,
                    " is already the ", owner, "; expected every tensor to belong to exactly one layer");
    owner = claim;
    return TTFS_OK;
}

ttfs_status Reader::check_unused(const std::string& label, const char* kind_text, const UnusedField* fields,
                                 size_t count) {
    for (size_t k = 0; k < count; ++k)
        if (fields[k].bits != 0)
            return fail(TTFS_ERR_BAD_FIELD, label, ": ", fields[k].field, " is ",
                        fields[k].is_float ? float_text(float_from_bits(fields[k].bits))
                                           : std::to_string(int32_t(fields[k].bits)),
                        ", expected 0 (unused by a ", kind_text, " layer)");
    return TTFS_OK;
}

ttfs_status Reader::check_layer_fields(size_t index, int32_t& next_depth) {
    const LayerRecord& r = layers_[index];
    const std::string label = layer_label(index);

    // Name: non-empty UTF-8, terminated and padded with NUL inside its 32 bytes.
    size_t length = 0;
    while (length < TTFS_FMT_NAME_SIZE && r.name[length] != 0) ++length;
    if (length == TTFS_FMT_NAME_SIZE)
        return fail(TTFS_ERR_BAD_FIELD, label, ": name is not NUL-terminated within its ", TTFS_FMT_NAME_SIZE,
                    " bytes; expected at most ", TTFS_FMT_NAME_SIZE - 1, " bytes of UTF-8 and NUL padding");
    if (length == 0)
        return fail(TTFS_ERR_BAD_FIELD, "layer ", index, ": name is empty; expected 1 .. ",
                    TTFS_FMT_NAME_SIZE - 1, " bytes of UTF-8");
    for (size_t k = length; k < TTFS_FMT_NAME_SIZE; ++k)
        if (r.name[k] != 0)
            return fail(TTFS_ERR_BAD_FIELD, label, ": name byte ", k, " after the terminating NUL is ",
                        unsigned(r.name[k]), ", expected NUL padding");
    if (!utf8_valid(r.name, length))
        return fail(TTFS_ERR_BAD_FIELD, label, ": name is not valid UTF-8");

    const uint32_t kind = r.kind;
    const char* kind_text = kind_name(kind);
    if (is_neuron_kind(kind)) {
        if (r.depth != next_depth)
            return fail(TTFS_ERR_BAD_FIELD, label, ": depth is ", r.depth, ", expected ", next_depth,
                        " (neuron layers are numbered 0, 1, 2, ... in file order)");
        ++next_depth;
    } else if (r.depth != -1) {
        return fail(TTFS_ERR_BAD_FIELD, label, ": depth is ", r.depth, ", expected -1 for a ", kind_text, " layer");
    }

    if (is_windowed_kind(kind)) {
        if (r.kernel_h < 1 || r.kernel_w < 1)
            return fail(TTFS_ERR_BAD_FIELD, label, ": kernel_h x kernel_w is ", r.kernel_h, "x", r.kernel_w,
                        ", expected both >= 1");
        if (r.stride_h < 1 || r.stride_w < 1)
            return fail(TTFS_ERR_BAD_FIELD, label, ": stride_h x stride_w is ", r.stride_h, "x", r.stride_w,
                        ", expected both >= 1");
        if (r.padding != TTFS_FMT_PADDING_VALID && r.padding != TTFS_FMT_PADDING_SAME)
            return fail(TTFS_ERR_BAD_FIELD, label, ": padding is ", r.padding, ", expected ",
                        TTFS_FMT_PADDING_VALID, " (VALID) or ", TTFS_FMT_PADDING_SAME, " (SAME)");
    } else {
        const UnusedField unused[] = {{"kernel_h", r.kernel_h}, {"kernel_w", r.kernel_w}, {"stride_h", r.stride_h},
                                      {"stride_w", r.stride_w}, {"padding", r.padding}};
        const ttfs_status status = check_unused(label, kind_text, unused, sizeof unused / sizeof unused[0]);
        if (status != TTFS_OK) return status;
    }
    if (kind == TTFS_FMT_LAYER_MAXPOOL) {
        if (r.pool_mode != TTFS_FMT_POOL_OR && r.pool_mode != TTFS_FMT_POOL_EARLIEST &&
            r.pool_mode != TTFS_FMT_POOL_GATED)
            return fail(TTFS_ERR_BAD_FIELD, label, ": pool_mode is ", r.pool_mode, ", expected ", TTFS_FMT_POOL_OR,
                        " (or), ", TTFS_FMT_POOL_EARLIEST, " (earliest) or ", TTFS_FMT_POOL_GATED, " (gated)");
        // A gated pool reads the spike counters of its children, which only neurons have.
        if (r.pool_mode == TTFS_FMT_POOL_GATED && index > 0 && !is_neuron_kind(layers_[index - 1].kind))
            return fail(TTFS_ERR_BAD_FIELD, label, ": pool_mode is ", r.pool_mode,
                        " (gated), which needs a neuron layer (input, conv2d or dense) directly below it; "
                        "layer ", index - 1, " is a ", kind_name(layers_[index - 1].kind));
    } else if (r.pool_mode != 0) {
        return fail(TTFS_ERR_BAD_FIELD, label, ": pool_mode is ", r.pool_mode, ", expected 0 (unused by a ",
                    kind_text, " layer)");
    }

    if (is_weighted_kind(kind)) {
        ttfs_status status = check_reference(index, r.weight_tensor, "weight_tensor", "weights", false);
        if (status == TTFS_OK) status = check_reference(index, r.bias_tensor, "bias_tensor", "bias", true);
        if (status != TTFS_OK) return status;
    } else if (r.weight_tensor != TTFS_FMT_NO_TENSOR || r.bias_tensor != TTFS_FMT_NO_TENSOR) {
        return fail(TTFS_ERR_BAD_FIELD, label, ": weight_tensor/bias_tensor are ", r.weight_tensor, "/",
                    r.bias_tensor, ", expected -1/-1 (a ", kind_text, " layer has no tensors)");
    }

    if (is_neuron_kind(kind)) {
        struct Window { const char* start_field; const char* end_field; int32_t start, end; };
        const Window windows[] = {{"integ_start", "integ_end", r.integ_start, r.integ_end},
                                  {"fire_start", "fire_end", r.fire_start, r.fire_end}};
        for (const Window& w : windows)
            if (w.start < 0 || w.start > w.end || int64_t(w.end) > int64_t(time_steps_))
                return fail(TTFS_ERR_BAD_FIELD, label, ": ", w.start_field, " ", w.start, ", ", w.end_field, " ",
                            w.end, ": expected 0 <= ", w.start_field, " <= ", w.end_field, " <= time_steps (",
                            time_steps_, ")");
        // Both windows are within [0, time_steps] now, so these lengths are at most 2^20 each.
        window_steps_ += uint64_t(r.integ_end - r.integ_start) + uint64_t(r.fire_end - r.fire_start);
        if (kind == TTFS_FMT_LAYER_INPUT && (r.integ_start || r.integ_end || r.tau_integ || r.td_integ))
            return fail(TTFS_ERR_BAD_FIELD, label, ": integ_start/integ_end are ", r.integ_start, "/", r.integ_end,
                        " and tau_integ/td_integ are ", float_text(float_from_bits(r.tau_integ)), "/",
                        float_text(float_from_bits(r.td_integ)), ", expected all 0 (the input layer does not integrate)");
    } else {
        // Float fields are compared as bits: -0.0 is not the zero the writer stores either.
        const UnusedField unused[] = {{"tau_fire", r.tau_fire, true},   {"td_fire", r.td_fire, true},
                                      {"tau_integ", r.tau_integ, true}, {"td_integ", r.td_integ, true},
                                      {"vth0", r.vth0, true},           {"integ_start", uint32_t(r.integ_start)},
                                      {"integ_end", uint32_t(r.integ_end)}, {"fire_start", uint32_t(r.fire_start)},
                                      {"fire_end", uint32_t(r.fire_end)}};
        const ttfs_status status = check_unused(label, kind_text, unused, sizeof unused / sizeof unused[0]);
        if (status != TTFS_OK) return status;
    }
    if (kind != TTFS_FMT_LAYER_INPUT && r.input_divisor != 0)
        return fail(TTFS_ERR_BAD_FIELD, label, ": input_divisor is ", float_text(float_from_bits(r.input_divisor)),
                    ", expected 0 (used by the input layer only)");
    if (r.reserved != 0)
        return fail(TTFS_ERR_BAD_FIELD, label, ": reserved field is ", r.reserved, ", expected 0");
    return TTFS_OK;
}

// ---- shapes chain layer to layer -------------------------------------------------------------

ttfs_status Reader::check_shapes() {
    for (uint32_t i = 0; i < layer_count_; ++i) {
        const bool input = layers_[i].kind == TTFS_FMT_LAYER_INPUT;
        if (i == 0 && !input)
            return fail(TTFS_ERR_SHAPE_CHAIN, layer_label(0), ": kind is ", kind_name(layers_[0].kind),
                        ", expected the input layer first");
        if (i > 0 && input)
            return fail(TTFS_ERR_SHAPE_CHAIN, layer_label(i), ": kind is input, but only layer 0 may be the "
                        "input layer");
    }
    const uint32_t last = layer_count_ - 1;
    if (!is_weighted_kind(layers_[last].kind))
        return fail(TTFS_ERR_SHAPE_CHAIN, layer_label(last), ": kind is ", kind_name(layers_[last].kind),
                    ", expected conv2d or dense as the last (output) layer");

    const LayerRecord& first = layers_[0];
    if (first.out_h < 1 || first.out_w < 1 || first.out_c < 1)
        return fail(TTFS_ERR_SHAPE_CHAIN, layer_label(0), ": input shape (out_h x out_w x out_c) is ",
                    shape_text(first.out_h, first.out_w, first.out_c), ", expected every extent >= 1");
    uint64_t in_h = first.out_h, in_w = first.out_w, in_c = first.out_c;
    for (uint32_t i = 1; i < layer_count_; ++i) {
        const LayerRecord& r = layers_[i];
        const std::string label = layer_label(i);
        const std::string input = "input " + shape_text(in_h, in_w, in_c);
        uint64_t want_h = 1, want_w = 1, want_c = 0, bias_len = 0;
        std::string rule;
        if (is_windowed_kind(r.kind)) {
            const bool same = r.padding == TTFS_FMT_PADDING_SAME;
            if (!same && (in_h < r.kernel_h || in_w < r.kernel_w))
                return fail(TTFS_ERR_SHAPE_CHAIN, label, ": ", input, " is smaller than its kernel_h x kernel_w ",
                            r.kernel_h, "x", r.kernel_w, " under VALID padding");
            want_h = same ? (in_h + r.stride_h - 1) / r.stride_h : (in_h - r.kernel_h) / r.stride_h + 1;
            want_w = same ? (in_w + r.stride_w - 1) / r.stride_w : (in_w - r.kernel_w) / r.stride_w + 1;
            rule = input + ", kernel " + std::to_string(r.kernel_h) + "x" + std::to_string(r.kernel_w) +
                   ", stride " + std::to_string(r.stride_h) + "x" + std::to_string(r.stride_w) +
                   (same ? ", SAME" : ", VALID") + " padding";
            if (r.kind == TTFS_FMT_LAYER_MAXPOOL) {
                want_c = in_c;
            } else {
                const TensorRecord& w = tensors_[size_t(r.weight_tensor)];
                if (w.ndim != 4 || w.dims[0] != r.kernel_h || w.dims[1] != r.kernel_w || w.dims[2] != in_c ||
                    w.dims[3] != r.out_c)
                    return fail(TTFS_ERR_SHAPE_CHAIN, label, ": weight_tensor ", r.weight_tensor, " has dims ",
                                dims_text(w), ", expected [kernel_h, kernel_w, in_c, out_c] = [", r.kernel_h, ", ",
                                r.kernel_w, ", ", in_c, ", ", r.out_c, "] (HWIO; ", input, ")");
                want_c = r.out_c;
                bias_len = r.out_c;
                rule += " and " + std::to_string(r.out_c) + " filters";
            }
        } else if (r.kind == TTFS_FMT_LAYER_FLATTEN) {
            want_c = in_h * in_w * in_c;
            rule = input + " flattened";
        } else {  // dense
            if (in_h != 1 || in_w != 1)
                return fail(TTFS_ERR_SHAPE_CHAIN, label, ": a dense layer needs a 1x1xN input, got ", input,
                            "; expected a flatten layer before it");
            const TensorRecord& w = tensors_[size_t(r.weight_tensor)];
            if (w.ndim != 2 || w.dims[0] != in_c || w.dims[1] != r.out_c)
                return fail(TTFS_ERR_SHAPE_CHAIN, label, ": weight_tensor ", r.weight_tensor, " has dims ",
                            dims_text(w), ", expected [in, units] = [", in_c, ", ", r.out_c, "] (", input, ")");
            want_c = r.out_c;
            bias_len = r.out_c;
            rule = input + " and " + std::to_string(r.out_c) + " units";
        }
        if (r.out_h != want_h || r.out_w != want_w || r.out_c != want_c)
            return fail(TTFS_ERR_SHAPE_CHAIN, label, ": output shape (out_h x out_w x out_c) is ",
                        shape_text(r.out_h, r.out_w, r.out_c), ", expected ", shape_text(want_h, want_w, want_c),
                        " from ", rule);
        if (is_weighted_kind(r.kind) && r.bias_tensor != TTFS_FMT_NO_TENSOR) {
            const TensorRecord& b = tensors_[size_t(r.bias_tensor)];
            if (b.ndim != 1 || b.dims[0] != bias_len)
                return fail(TTFS_ERR_SHAPE_CHAIN, label, ": bias_tensor ", r.bias_tensor, " has dims ", dims_text(b),
                            ", expected [", bias_len, "] (one bias per output channel)");
        }
        in_h = r.out_h;
        in_w = r.out_w;
        in_c = r.out_c;
    }
    return TTFS_OK;
}

// ---- values: constants and tensor contents ---------------------------------------------------

ttfs_status Reader::check_values() {
    for (uint32_t i = 0; i < layer_count_; ++i) {
        const LayerRecord& r = layers_[i];
        if (!is_neuron_kind(r.kind)) continue;
        struct Constant { const char* field; uint32_t bits; bool positive; bool used; };
        const bool weighted = is_weighted_kind(r.kind);
        const Constant constants[] = {{"tau_fire", r.tau_fire, true, true},
                                      {"td_fire", r.td_fire, false, true},
                                      {"tau_integ", r.tau_integ, true, weighted},
                                      {"td_integ", r.td_integ, false, weighted},
                                      {"vth0", r.vth0, true, true},
                                      {"input_divisor", r.input_divisor, true, !weighted}};
        for (const Constant& c : constants) {
            if (!c.used) continue;
            const float value = float_from_bits(c.bits);
            if (!is_finite_bits(c.bits) || (c.positive && !(value > 0.0f)))
                return fail(TTFS_ERR_BAD_VALUE, layer_label(i), ": ", c.field, " is ", float_text(value), ", expected ",
                            c.positive ? "a finite number > 0" : "a finite number");
        }
    }
    for (uint32_t i = 0; i < tensor_count_; ++i) {
        const TensorRecord& t = tensors_[i];
        for (uint64_t k = 0; k < t.elements; ++k) {
            const uint32_t bits = u32(t.data_offset + 4 * k);
            if (!is_finite_bits(bits))
                return fail(TTFS_ERR_BAD_VALUE, tensor_label(i), ": element ", k, " of ", t.elements, " is ",
                            float_text(float_from_bits(bits)), ", expected finite values");
        }
    }
    return TTFS_OK;
}

// ---- the validated model ---------------------------------------------------------------------

std::vector<float> Reader::decode_tensor(int32_t index) {
    std::vector<float> values;
    if (index == TTFS_FMT_NO_TENSOR) return values;
    const TensorRecord& t = tensors_[size_t(index)];
    values.resize(size_t(t.elements));  // bounded: the data lies inside the file
    for (uint64_t k = 0; k < t.elements; ++k) values[size_t(k)] = float_from_bits(u32(t.data_offset + 4 * k));
    return values;
}

void Reader::build(Model& model) {
    model.format_version = TTFS_FMT_VERSION;
    model.time_steps = int32_t(time_steps_);
    model.readout = ttfs_readout(readout_);
    model.metadata.assign(reinterpret_cast<const char*>(data_ + metadata_offset_), size_t(metadata_size_));
    model.layers.resize(layer_count_);
    Shape previous;
    for (uint32_t i = 0; i < layer_count_; ++i) {
        const LayerRecord& r = layers_[i];
        Layer& layer = model.layers[i];
        size_t length = 0;
        while (r.name[length] != 0) ++length;  // terminated: checked by check_layer_fields
        layer.name.assign(reinterpret_cast<const char*>(r.name), length);
        layer.kind = ttfs_layer_kind(r.kind);
        layer.depth = r.depth;
        // Extents are at most TTFS_FMT_MAX_EXTENT (checked), so they fit int32.
        layer.out = Shape{int32_t(r.out_h), int32_t(r.out_w), int32_t(r.out_c)};
        layer.in = i == 0 ? layer.out : previous;
        previous = layer.out;
        layer.kernel_h = int32_t(r.kernel_h);
        layer.kernel_w = int32_t(r.kernel_w);
        layer.stride_h = int32_t(r.stride_h);
        layer.stride_w = int32_t(r.stride_w);
        layer.padding = ttfs_padding(r.padding);
        layer.pool_mode = ttfs_pool_mode(r.pool_mode);
        if (is_weighted_kind(r.kind)) {
            layer.weights = decode_tensor(r.weight_tensor);
            layer.bias = decode_tensor(r.bias_tensor);  // empty: finalize_model fills zeros
        }
        layer.tau_fire = float_from_bits(r.tau_fire);
        layer.td_fire = float_from_bits(r.td_fire);
        layer.tau_integ = float_from_bits(r.tau_integ);
        layer.td_integ = float_from_bits(r.td_integ);
        layer.vth0 = float_from_bits(r.vth0);
        layer.integ_start = r.integ_start;
        layer.integ_end = r.integ_end;
        layer.fire_start = r.fire_start;
        layer.fire_end = r.fire_end;
        layer.input_divisor = float_from_bits(r.input_divisor);
    }
    finalize_model(model);
}

// Setting the message may itself run out of memory; the status still goes back.
template <typename MakeMessage>
void set_error_nothrow(std::string& error, MakeMessage&& make) noexcept {
    try {
        error = make();
    } catch (...) {
        error.clear();
    }
}

}  // namespace

ttfs_status read_model(const uint8_t* data, size_t size, Model& out, std::string& error) {
    try {
        if (data == nullptr && size != 0) {
            error = "model data is NULL but its size is " + std::to_string(size) + " bytes";
            return TTFS_ERR_INVALID_ARGUMENT;
        }
        static const uint8_t empty = 0;
        Reader reader(data != nullptr ? data : &empty, data != nullptr ? size : 0, error);
        return reader.read(out);
    } catch (const std::bad_alloc&) {
        set_error_nothrow(error, [&] { return "out of memory while reading a model file of " + std::to_string(size) + " bytes"; });
        return TTFS_ERR_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
        set_error_nothrow(error, [&] { return std::string("internal error while reading the model file: ") + e.what(); });
        return TTFS_ERR_INTERNAL;
    } catch (...) {
        set_error_nothrow(error, [] { return std::string("internal error while reading the model file (unknown exception)"); });
        return TTFS_ERR_INTERNAL;
    }
}

}  // namespace ttfs
