// cli_inputs.cpp — ttfs-infer's image and label readers; see cli_inputs.hpp. Every value is
// checked on the way in (shapes against the model, sizes against the headers, floats in [0, 1]
// unless --allow-unscaled, labels against the class count), and every refusal names the file.

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <type_traits>
#include <vector>

#include <dirent.h>     // directories of images
#include <sys/stat.h>

#include "cli_common.hpp"
#include "cli_images.hpp"
#include "cli_inputs.hpp"
#include "cli_npy.hpp"
#include "cli_stream.hpp"

namespace ttfs_cli {

namespace {

struct Checks {
    bool allow_unscaled = false;
};

// How the elements of an IDX, .npy or raw .bin file become pixels: integers as bytes
// 0..255, floats as float32 in [0, 1] (any finite value with --allow-unscaled). A refusal
// names the file, the image and the pixel.
class ArrayValues {
public:
    ArrayValues(std::string file, Element element, bool big_endian, const int32_t shape[3],
                const Checks& checks)
        : file_(std::move(file)), element_(element), big_endian_(big_endian), checks_(checks) {
        for (int d = 0; d < 3; ++d) shape_[d] = shape[d];
    }

    // `values` elements from `raw`, the first of image first_image (for messages), into out.
    void to_u8(const uint8_t* raw, size_t values, uint64_t first_image, uint8_t* out) const {
        switch (element_) {
            case Element::U8: std::memcpy(out, raw, values); break;
            case Element::I8: integers_as_pixels<int8_t>(raw, values, first_image, out); break;
            case Element::I16: integers_as_pixels<int16_t>(raw, values, first_image, out); break;
            case Element::U16: integers_as_pixels<uint16_t>(raw, values, first_image, out); break;
            case Element::I32: integers_as_pixels<int32_t>(raw, values, first_image, out); break;
            case Element::U32: integers_as_pixels<uint32_t>(raw, values, first_image, out); break;
            case Element::I64: integers_as_pixels<int64_t>(raw, values, first_image, out); break;
            case Element::U64: integers_as_pixels<uint64_t>(raw, values, first_image, out); break;
            default: break;
        }
    }

    void to_f32(const uint8_t* raw, size_t values, uint64_t first_image, float* out) const {
        for (size_t i = 0; i < values; ++i) {
            const double value = element_ == Element::F32 ? double(load<float>(raw, i)) : load<double>(raw, i);
            out[i] = float(value);
            const bool finite = std::isfinite(value) && std::isfinite(out[i]);
            if (!finite || (!checks_.allow_unscaled && !(out[i] >= 0.0f && out[i] <= 1.0f))) {
                const std::string what = "images file " + file_ + ": " + place(first_image, i) + " = " +
                                         format("%.9g", value);
                if (!finite)
                    fail(what + "; every input value must be a finite number (check how the images "
                                "were decoded or normalised)");
                fail(what + "; float images must be scaled to [0, 1] (for 8-bit pixels: divide by "
                            "255, or store them as uint8): scale them, or pass --allow-unscaled to "
                            "run them as they are");
            }
        }
    }

private:
    // Where value i of a batch starting at first_image sits, for messages: image, h, w, c.
    std::string place(uint64_t first_image, size_t i) const {
        const size_t per_image = size_t(shape_[0]) * size_t(shape_[1]) * size_t(shape_[2]);
        const uint64_t image = first_image + i / per_image;
        const size_t within = i % per_image;
        const size_t c = within % size_t(shape_[2]);
        const size_t x = within / size_t(shape_[2]) % size_t(shape_[1]);
        const size_t y = within / (size_t(shape_[2]) * size_t(shape_[1]));
        return format("image %" PRIu64 ", pixel (h %zu, w %zu, c %zu)", image, y, x, c);
    }

    template <typename T>
    T load(const uint8_t* raw, size_t i) const {
        const uint8_t* p = raw + i * sizeof(T);
        uint8_t bytes[sizeof(T)];
        if (big_endian_) {
            for (size_t b = 0; b < sizeof(T); ++b) bytes[b] = p[sizeof(T) - 1 - b];
        } else {
            std::memcpy(bytes, p, sizeof(T));
        }
        T value;
        std::memcpy(&value, bytes, sizeof(T));
        return value;
    }

    template <typename T>
    void integers_as_pixels(const uint8_t* raw, size_t values, uint64_t first_image, uint8_t* out) const {
        for (size_t i = 0; i < values; ++i) {
            const T value = load<T>(raw, i);
            bool outside;  // compared in 64 bits: T(255) would wrap for int8
            if constexpr (std::is_signed<T>::value) outside = int64_t(value) < 0 || int64_t(value) > 255;
            else outside = uint64_t(value) > 255;
            if (outside) {
                const std::string shown = std::is_signed<T>::value ? format("%lld", (long long)value)
                                                                   : format("%llu", (unsigned long long)value);
                fail("images file " + file_ + ": " + place(first_image, i) + " = " + shown + "; " +
                     element_name(element_) + " images must hold pixels 0..255 (scale them, or store "
                     "floats in [0, 1])");
            }
            out[i] = uint8_t(value);
        }
    }

    std::string file_;
    Element element_;
    bool big_endian_;
    int32_t shape_[3];
    Checks checks_;
};

// An IDX, .npy or raw .bin file: a header, then n images of h x w x c elements.
class ArraySource : public ImageSource {
public:
    ArraySource(std::unique_ptr<Stream> stream, const int32_t model_shape[3], const std::string& model_path,
                const Checks& checks, bool raw_bin)
        : stream_(std::move(stream)) {
        for (int d = 0; d < 3; ++d) shape_[d] = model_shape[d];
        uint8_t magic[8] = {0};
        if (raw_bin) {
            open_raw();
        } else {
            size_t got = stream_->read_some(magic, 6);
            if (got >= 6 && std::memcmp(magic, "\x93NUMPY", 6) == 0) {
                open_npy(model_path);
            } else if (got >= 4 && magic[0] == 0 && magic[1] == 0) {
                open_idx(magic, model_path);
            } else {
                std::string seen;
                for (size_t i = 0; i < got && i < 4; ++i) seen += format("%02x", magic[i]);
                fail("images file " + stream_->name() + " starts with bytes " + (seen.empty() ? "(none)" : seen) +
                     "; expected a PNG or JPEG image (or a directory of them), an IDX file (magic "
                     "0x00000803 or 0x00000804 for uint8, 0x00000D03 or 0x00000D04 for float32; "
                     "plain or gzipped), a .npy array, or a raw float32 image named *.bin");
            }
        }
        pixels_ = is_float(element_) ? Pixels::F32 : Pixels::U8;
        values_ = std::make_unique<ArrayValues>(stream_->name(), element_, big_endian_, shape_, checks);
    }

    std::string description() const override {
        return format("%" PRIu64 " image%s, ", count_, count_ == 1 ? "" : "s") +
               shape_text(shape_[0], shape_[1], shape_[2]) + " " + element_name(element_) +
               (stream_->gzipped() ? ", gzipped" : "");
    }

    void skip(uint64_t n) override {
        stream_->skip(n * bytes_per_image(), format("image %" PRIu64, next_ + n - 1));
        next_ += n;
    }

    void read(int32_t n, std::vector<uint8_t>& u8, std::vector<float>& f32) override {
        const size_t values = size_t(n) * values_per_image();
        raw_.resize(values * element_size(element_));
        stream_->read_exact(raw_.data(), raw_.size(),
                            n == 1 ? format("image %" PRIu64, next_)
                                   : format("images %" PRIu64 "..%" PRIu64, next_, next_ + uint64_t(n) - 1));
        if (pixels_ == Pixels::U8) {
            u8.resize(values);
            values_->to_u8(raw_.data(), values, next_, u8.data());
        } else {
            f32.resize(values);
            values_->to_f32(raw_.data(), values, next_, f32.data());
        }
        next_ += uint64_t(n);
    }

    void check_end() override {
        if (!stream_->at_end())
            fail("images file " + stream_->name() + format(" has trailing bytes after its %" PRIu64 " images of ", count_) +
                 shape_text(shape_[0], shape_[1], shape_[2]));
    }

private:
    size_t values_per_image() const { return size_t(shape_[0]) * size_t(shape_[1]) * size_t(shape_[2]); }
    uint64_t bytes_per_image() const { return uint64_t(values_per_image()) * element_size(element_); }

    void open_raw() {
        // A raw .bin has no header: exactly one image of the model's shape.
        single_ = true;
        element_ = Element::F32;
        big_endian_ = false;
        count_ = 1;
        const uint64_t expected = uint64_t(values_per_image()) * 4;
        if (stream_->size_known() && stream_->size() != expected) {
            const uint64_t size = stream_->size();
            fail("raw image " + stream_->name() +
                 format(" holds %" PRIu64 " bytes (%" PRIu64 " float32 values%s), expected "
                        "%" PRIu64 " bytes: exactly one %s float32 image",
                        size, size / 4, size % 4 ? " and a partial one" : "", expected,
                        shape_text(shape_[0], shape_[1], shape_[2]).c_str()));
        }
    }

    // Checks the data's size against its header where the file's size is known (plain files);
    // a gzipped or piped stream is checked as it is read instead.
    void check_size(uint64_t header_bytes, const std::string& what) {
        uint64_t data_bytes = 0;
        bool fits = checked_mul(count_, bytes_per_image(), data_bytes) &&
                    data_bytes <= std::numeric_limits<uint64_t>::max() - header_bytes;
        if (!fits)
            fail("images file " + stream_->name() + " declares more data than any file can hold (" + what + ")");
        if (!stream_->size_known()) return;
        const uint64_t size = stream_->size(), expected = header_bytes + data_bytes;
        if (size < expected)
            fail("images file " + stream_->name() +
                 format(" is truncated: %" PRIu64 " bytes, expected %" PRIu64 " for ", size, expected) + what);
        if (size > expected)
            fail("images file " + stream_->name() + format(" has %" PRIu64 " trailing bytes after ", size - expected) +
                 what + format(" (expected %" PRIu64 " bytes)", expected));
    }

    void check_model_shape(int64_t h, int64_t w, int64_t c, const std::string& model_path) {
        if (h != shape_[0] || w != shape_[1] || c != shape_[2])
            fail("images in " + stream_->name() + " are " + shape_text(h, w, c) + " but model " +
                 quoted(model_path) + " expects " + shape_text(shape_[0], shape_[1], shape_[2]) + " inputs");
    }

    void open_idx(const uint8_t magic[4], const std::string& model_path) {
        static const char* const kExpected =
            "expected an IDX image file (magic 0x00000803 or 0x00000804 for uint8, 0x00000D03 "
            "or 0x00000D04 for float32) or a raw float32 image named *.bin";
        const uint32_t code = big_endian_u32(magic);
        const uint8_t type = magic[2], ndim = magic[3];
        if ((type != 0x08 && type != 0x0D) || (ndim != 3 && ndim != 4))
            fail("images file " + stream_->name() + format(" has magic 0x%08X; ", code) + kExpected);
        uint8_t dims_bytes[16];
        // Two of the header's bytes past the magic were read with it (npy detection).
        std::memcpy(dims_bytes, magic + 4, 2);
        stream_->read_exact(dims_bytes + 2, size_t(4 * ndim) - 2, "the IDX header");
        uint32_t dims[4] = {0, 0, 0, 1};
        for (int d = 0; d < ndim; ++d) dims[d] = big_endian_u32(dims_bytes + 4 * d);
        if (dims[0] == 0) fail("images file " + stream_->name() + " holds no images (count 0)");
        for (int d = 1; d < 4; ++d)
            if (dims[d] == 0 || dims[d] > uint32_t(std::numeric_limits<int32_t>::max()))
                fail("images file " + stream_->name() +
                     format(" has image dimension %d = %u; expected 1 .. 2147483647", d, dims[d]));
        element_ = type == 0x08 ? Element::U8 : Element::F32;
        big_endian_ = true;
        count_ = dims[0];
        check_model_shape(dims[1], dims[2], dims[3], model_path);
        check_size(4 + 4 * uint64_t(ndim),
                   format("%u images of ", dims[0]) + shape_text(dims[1], dims[2], dims[3]));
    }

    void open_npy(const std::string& model_path) {
        const NpyHeader npy = read_npy_header(*stream_, "images file " + stream_->name());
        if (npy.fortran_order)
            fail("images file " + stream_->name() + " is a Fortran-ordered .npy array; save a C-ordered one "
                 "(numpy.ascontiguousarray)");
        if (!npy.known_type)
            fail("images file " + stream_->name() + " has .npy dtype " + quoted(npy.descr) +
                 "; expected uint8 pixels, another integer type holding 0..255, or float32/float64 "
                 "values in [0, 1]");
        element_ = npy.element;
        big_endian_ = npy.big_endian;
        const std::vector<uint64_t>& dims = npy.dims;
        const int64_t h = shape_[0], w = shape_[1], c = shape_[2];
        auto is = [&](std::initializer_list<int64_t> want, size_t from) {
            if (dims.size() - from != want.size()) return false;
            size_t d = from;
            for (int64_t v : want)
                if (int64_t(dims[d++]) != v) return false;
            return true;
        };
        if (is({h, w, c}, 0)) {
            count_ = 1;
            single_ = true;
        } else if (c == 1 && is({h, w}, 0)) {
            count_ = 1;
            single_ = true;
        } else if (dims.size() == 4 && is({h, w, c}, 1)) {
            count_ = dims[0];
        } else if (c == 1 && dims.size() == 3 && is({h, w}, 1)) {
            count_ = dims[0];
        } else {
            const std::string one_channel = c == 1 ? format(", (n, %" PRId64 ", %" PRId64 ") or (%" PRId64 ", %" PRId64 ")",
                                                            h, w, h, w)
                                                   : std::string();
            fail("images in " + stream_->name() + " have shape " + npy.shape_text() + " but model " +
                 quoted(model_path) +
                 format(" expects (n, %" PRId64 ", %" PRId64 ", %" PRId64 ") or (%" PRId64 ", %" PRId64 ", %" PRId64 ")",
                        h, w, c, h, w, c) + one_channel);
        }
        if (count_ == 0) fail("images file " + stream_->name() + " holds no images (shape " + npy.shape_text() + ")");
        check_size(npy.data_offset, format("%" PRIu64 " images of ", count_) + shape_text(h, w, c) + " " +
                                        element_name(element_));
    }

    std::unique_ptr<Stream> stream_;
    int32_t shape_[3];
    Element element_ = Element::U8;
    bool big_endian_ = false;
    std::unique_ptr<ArrayValues> values_;  // made once the header is read
    uint64_t next_ = 0;  // index of the next image to read
    std::vector<uint8_t> raw_;
};

// PNG/JPEG images: one file, standard input, or every image of a directory.
class ImageFilesSource : public ImageSource {
public:
    // A directory (paths listed and sorted here) or one file / standard input whose bytes
    // were already read.
    ImageFilesSource(const std::string& path, bool directory, std::vector<uint8_t> first_bytes,
                     const int32_t model_shape[3], const std::string& model_path, bool resize)
        : resize_(resize), model_path_(model_path) {
        for (int d = 0; d < 3; ++d) shape_[d] = model_shape[d];
        pixels_ = Pixels::U8;
        if (shape_[2] != 1 && shape_[2] != 3)
            fail("model " + quoted(model_path) + format(" has %d input channels; PNG/JPEG images can feed only "
                                                        "1- or 3-channel models", shape_[2]));
        if (directory) {
            directory_ = path;
            list_directory(path);
        } else {
            files_.push_back(path);
            bytes_ = std::move(first_bytes);
            single_ = true;
        }
        count_ = files_.size();
    }

    std::string description() const override {
        return format("%" PRIu64 " image%s, ", count_, count_ == 1 ? "" : "s") +
               shape_text(shape_[0], shape_[1], shape_[2]) + " uint8" + (resize_ ? ", resized" : "");
    }
    bool has_files() const override { return true; }
    std::string file_of(uint64_t index) const override {
        return files_[size_t(index)] == "-" ? std::string("-") : base_name(files_[size_t(index)]);
    }

    void skip(uint64_t n) override { next_ += n; }

    void read(int32_t n, std::vector<uint8_t>& u8, std::vector<float>&) override {
        const size_t per_image = size_t(shape_[0]) * size_t(shape_[1]) * size_t(shape_[2]);
        u8.resize(size_t(n) * per_image);
        for (int32_t i = 0; i < n; ++i) {
            ttfs_cli::Image image = load(next_ + uint64_t(i));
            std::memcpy(u8.data() + size_t(i) * per_image, image.pixels.data(), per_image);
        }
        next_ += uint64_t(n);
    }

private:
    static std::string base_name(const std::string& path) {
        size_t slash = path.find_last_of('/');
        return slash == std::string::npos ? path : path.substr(slash + 1);
    }

    static bool is_image_name(const std::string& name) {
        if (name.empty() || name[0] == '.') return false;
        const std::string l = lower(name);
        return ends_with(l, ".png") || ends_with(l, ".jpg") || ends_with(l, ".jpeg");
    }

    void list_directory(const std::string& path) {
        DIR* dir = opendir(path.c_str());
        if (!dir) fail("cannot open images directory " + quoted(path) + ": " + std::strerror(errno));
        std::vector<std::string> names;
        while (dirent* entry = readdir(dir)) {
            std::string name = entry->d_name;
            if (!is_image_name(name)) continue;
            struct stat status;
            if (stat((path + "/" + name).c_str(), &status) == 0 && S_ISREG(status.st_mode)) names.push_back(name);
        }
        closedir(dir);
        if (names.empty())
            fail("images directory " + quoted(path) + " holds no .png, .jpg or .jpeg files");
        std::sort(names.begin(), names.end());  // byte order, as pyttfs.image_files sorts
        for (const std::string& name : names) files_.push_back(path + "/" + name);
    }

    std::string shown(uint64_t index) const {
        return files_[size_t(index)] == "-" ? std::string("standard input") : quoted(files_[size_t(index)]);
    }

    ttfs_cli::Image load(uint64_t index) {
        std::vector<uint8_t> data;
        if (!directory_.empty()) {
            Stream stream(files_[size_t(index)], "image");
            data = stream.read_rest(uint64_t(1) << 30);
        } else {
            data = bytes_;
        }
        const ttfs_cli::ImageKind kind = ttfs_cli::image_kind(data.data(), data.size());
        if (kind == ttfs_cli::ImageKind::None)
            fail("image " + shown(index) + " is not a PNG or JPEG file (by its first bytes)");
        ttfs_cli::Image image;
        std::string error;
        if (!ttfs_cli::decode_image(data.data(), data.size(), kind, image, error))
            fail("image " + shown(index) + ": " + error);
        ttfs_cli::convert_channels(image, shape_[2]);
        if (image.h != shape_[0] || image.w != shape_[1]) {
            if (!resize_)
                fail("image " + shown(index) + format(" is %dx%d but model ", image.h, image.w) + quoted(model_path_) +
                     format(" expects %dx%d inputs; resize it, or pass --resize", shape_[0], shape_[1]));
            ttfs_cli::resize_area(image, shape_[0], shape_[1]);
        }
        return image;
    }

    bool resize_;
    std::string model_path_, directory_;
    int32_t shape_[3];
    std::vector<std::string> files_;
    std::vector<uint8_t> bytes_;  // the single file's (or standard input's) bytes
    uint64_t next_ = 0;
};

}  // namespace

// Opens IMAGES: a directory, an image, or an array file; by the first bytes, a .bin by name.
std::unique_ptr<ImageSource> open_images(const Options& options, const int32_t model_shape[3]) {
    const std::string& path = options.images_path;
    Checks checks;
    checks.allow_unscaled = options.allow_unscaled;
    if (path != "-") {
        struct stat status;
        if (stat(path.c_str(), &status) == 0 && S_ISDIR(status.st_mode))
            return std::unique_ptr<ImageSource>(
                new ImageFilesSource(path, true, {}, model_shape, options.model_path, options.resize));
    }
    std::unique_ptr<Stream> stream(new Stream(path, "images"));
    const bool raw_bin = path != "-" && ends_with(path, ".bin") && !stream->gzipped();
    if (!raw_bin) {
        // PNG/JPEG: the whole (single) image; anything else streams.
        uint8_t head[8];
        size_t got = stream->read_some(head, sizeof head);
        if (ttfs_cli::image_kind(head, got) != ttfs_cli::ImageKind::None) {
            std::vector<uint8_t> data(head, head + got);
            std::vector<uint8_t> rest = stream->read_rest(uint64_t(1) << 30);
            data.insert(data.end(), rest.begin(), rest.end());
            return std::unique_ptr<ImageSource>(
                new ImageFilesSource(path, false, std::move(data), model_shape, options.model_path, options.resize));
        }
        stream->unread(head, got);  // not an image: the array reader starts from byte 0
    }
    if (options.resize)
        usage_error("--resize applies to PNG/JPEG images; " + (path == "-" ? std::string("standard input") : quoted(path)) +
                    " holds an array, whose images must already have the model's size");
    return std::unique_ptr<ImageSource>(
        new ArraySource(std::move(stream), model_shape, options.model_path, checks, raw_bin));
}

// ---- Labels -------------------------------------------------------------------------------------

LabelSource::LabelSource(const std::string& path, uint64_t image_count, const std::string& images_shown)
    : stream_(new Stream(path, "labels")) {
    uint8_t header[8];
    size_t got = stream_->read_some(header, 8);
    if (got >= 6 && std::memcmp(header, "\x93NUMPY", 6) == 0) {
        stream_->unread(header + 6, got - 6);  // open_npy() reads on from the magic
        open_npy();
    } else {
        if (got < 8)
            fail("labels file " + stream_->name() +
                 format(" is %zu bytes long; expected an IDX1 uint8 label file (magic 0x00000801, "
                        "8-byte header) or a .npy integer array", got));
        uint32_t magic = big_endian_u32(header);
        if (magic != 0x00000801)
            fail("labels file " + stream_->name() +
                 format(" has magic 0x%08X; expected 0x00000801 (IDX1 uint8 labels) or a .npy "
                        "integer array", magic));
        count_ = big_endian_u32(header + 4);
        element_ = Element::U8;
        if (stream_->size_known() && stream_->size() != 8 + count_)
            fail("labels file " + stream_->name() +
                 format(" is %" PRIu64 " bytes; expected %" PRIu64 " for its %" PRIu64 " labels",
                        stream_->size(), 8 + count_, count_));
    }
    if (count_ != image_count)
        fail("labels file " + stream_->name() + format(" holds %" PRIu64 " labels but ", count_) +
             images_shown + format(" holds %" PRIu64 " images", image_count));
}

void LabelSource::read(int32_t n, int32_t classes, std::vector<int32_t>& out) {
    const size_t size = element_size(element_);
    raw_.resize(size_t(n) * size);
    stream_->read_exact(raw_.data(), raw_.size(), "the labels");
    out.resize(size_t(n));
    for (int32_t i = 0; i < n; ++i) {
        const uint8_t* p = raw_.data() + size_t(i) * size;
        int64_t value = 0;
        if (element_ == Element::U8) {
            value = p[0];
        } else {
            uint8_t bytes[8] = {0};
            for (size_t b = 0; b < size; ++b) bytes[b] = big_endian_ ? p[size - 1 - b] : p[b];
            switch (element_) {
                case Element::I8: value = int8_t(bytes[0]); break;
                case Element::I16: { int16_t v; std::memcpy(&v, bytes, 2); value = v; break; }
                case Element::U16: { uint16_t v; std::memcpy(&v, bytes, 2); value = v; break; }
                case Element::I32: { int32_t v; std::memcpy(&v, bytes, 4); value = v; break; }
                case Element::U32: { uint32_t v; std::memcpy(&v, bytes, 4); value = v; break; }
                case Element::I64: { int64_t v; std::memcpy(&v, bytes, 8); value = v; break; }
                default: { uint64_t v; std::memcpy(&v, bytes, 8); value = v > uint64_t(INT64_MAX) ? -1 : int64_t(v); }
            }
        }
        const uint64_t image = next_ + uint64_t(i);
        if (value < 0 || value >= classes)
            fail(format("label %" PRId64 " of image %" PRIu64 " in ", value, image) + stream_->name() +
                 format(" is not a class of the model (0 .. %d)", classes - 1));
        out[size_t(i)] = int32_t(value);
    }
    next_ += uint64_t(n);
}

void LabelSource::open_npy() {
    const std::string file = "labels file " + stream_->name();
    const NpyHeader npy = read_npy_header(*stream_, file);
    if (!npy.known_type || is_float(npy.element))
        fail(file + " has .npy dtype " + quoted(npy.descr) + "; expected integers");
    if (npy.dims.size() != 1 || npy.fortran_order)
        fail(file + " has .npy shape " + npy.shape_text() + "; expected one dimension (n,)");
    element_ = npy.element;
    big_endian_ = npy.big_endian;
    count_ = npy.dims[0];
}
}  // namespace ttfs_cli
