// ttfs-infer — run a .ttfs time-to-first-spike network on images from the command line.
//
// Uses nothing but the public C ABI (include/ttfs.h), so it doubles as a worked example of
// that ABI. Plain C++17: nvcc compiles it when CUDA is on, the host compiler otherwise.
//
//   ttfs-infer MODEL IMAGES [--labels LABELS] [--index I] [--backend auto|cpu|cuda]
//              [--engine stepped|analytic] [--batch N] [--threads N] [--json]
//
// IMAGES is an IDX file (uint8 or big-endian float32, 3 or 4 dimensions) or a raw
// little-endian float32 file named *.bin holding exactly one image. One image (a .bin, or
// --index into an IDX file) prints its class potentials and prediction; a whole IDX file is
// streamed batch by batch and summarised (accuracy, throughput, spikes per image).

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/stat.h>   // fstat: a directory opens like a file but cannot be read
#include <sys/types.h>  // off_t for fseeko/ftello: images files may exceed 2 GiB
#include <unistd.h>     // isatty: the progress line is for people, not for pipes

#include "infer_efficiency.h"
#include "ttfs.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int32_t kDefaultBatch = 256;

const char* const kUsage =
    "usage: ttfs-infer MODEL IMAGES [--labels LABELS] [--index I] [--backend auto|cpu|cuda]\n"
    "                  [--engine stepped|analytic] [--batch N] [--threads N] [--json]\n"
    "                  [--help] [--version]\n"
    "\n"
    "Runs a .ttfs time-to-first-spike network on images.\n"
    "\n"
    "  MODEL            a .ttfs model file\n"
    "  IMAGES           an IDX file: 0x00000803 (uint8, n x h x w, one channel),\n"
    "                   0x00000804 (uint8, n x h x w x c), 0x00000D03 / 0x00000D04 (the same\n"
    "                   as big-endian float32); or a raw little-endian float32 file named *.bin\n"
    "                   holding exactly one h x w x c image. uint8 pixels are scaled by the\n"
    "                   model's input divisor; float32 values are used as they are (already\n"
    "                   scaled).\n"
    "  --labels LABELS  IDX1 uint8 labels (0x00000801), one per image: reports accuracy\n"
    "  --index I        run only image I (0-based) of an IDX file and show its details\n"
    "  --backend B      auto (CUDA when a device is present, else CPU; default), cpu, cuda\n"
    "  --engine E       analytic (default; falls back to stepped, with a note, when the model's\n"
    "                   windows overlap) or stepped\n"
    "  --batch N        images per run when streaming an IDX file (default 256); memory use\n"
    "                   grows with N, not with the file\n"
    "  --threads N      CPU worker threads (default: one per hardware thread)\n"
    "  --json           print one JSON object instead of text, with the efficiency figures:\n"
    "                   spikes per neuron, synaptic operations per image (each spike times\n"
    "                   its fan-out) next to the ANN's multiply-adds, spikes on a blank image\n"
    "                   (it records spike times for them, which slows a run down a little)\n"
    "  --help           print this help\n"
    "  --version        print the version and the library's build information\n"
    "\n"
    "Exit status: 0 success, 1 failure (bad file, library error), 2 usage error.\n";

// Every failure ends up here and becomes one "ttfs-infer: error: ..." line in main().
struct CliError : std::runtime_error {
    int exit_code;
    CliError(const std::string& message, int code) : std::runtime_error(message), exit_code(code) {}
};

[[noreturn]] void fail(const std::string& message) { throw CliError(message, kExitFailure); }
[[noreturn]] void usage_error(const std::string& message) {
    throw CliError(message + " (see ttfs-infer --help)", kExitUsage);
}

// ttfs_last_error() is only valid until the next ttfs_ call, so copy it before asking for the
// status name.
[[noreturn]] void library_failure(const std::string& what, ttfs_status status) {
    std::string detail = ttfs_last_error();
    std::string name = ttfs_status_name(status);
    if (detail.empty()) detail = "(no message)";
    fail(what + ": " + name + ": " + detail);
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
    va_list args, measure;
    va_start(args, fmt);
    va_copy(measure, args);
    int length = std::vsnprintf(nullptr, 0, fmt, measure);
    va_end(measure);
    std::string text(length > 0 ? size_t(length) : 0, '\0');
    if (length > 0) std::vsnprintf(&text[0], text.size() + 1, fmt, args);
    va_end(args);
    return text;
}

std::string shape_text(int32_t h, int32_t w, int32_t c) { return format("%dx%dx%d", h, w, c); }

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// a * b, or false when it does not fit in 64 bits (file sizes come from hostile headers).
bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) {
    if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
    out = a * b;
    return true;
}

// ---- Command line ------------------------------------------------------------------------

struct Options {
    std::string model_path, images_path, labels_path;
    bool has_index = false;
    uint64_t index = 0;
    int32_t backend = TTFS_BACKEND_AUTO;
    int32_t engine = TTFS_ENGINE_ANALYTIC;
    bool engine_given = false;
    int32_t batch = kDefaultBatch;
    int32_t threads = 0;
    bool threads_given = false;
    bool json = false;
};

// A whole-string decimal integer in [min_value, max_value].
int64_t parse_integer(const std::string& option, const std::string& text, int64_t min_value,
                      int64_t max_value) {
    const char* begin = text.c_str();
    char* end = nullptr;
    errno = 0;
    long long value = std::strtoll(begin, &end, 10);
    if (text.empty() || *end != '\0' || errno == ERANGE || value < min_value || value > max_value)
        usage_error(format("%s expects an integer from %" PRId64 " to %" PRId64 ", got '%s'",
                           option.c_str(), min_value, max_value, text.c_str()));
    return value;
}

bool parse_options(int argc, char** argv, Options& options) {
    std::vector<std::string> positional;
    bool options_done = false;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (options_done || arg.empty() || arg[0] != '-' || arg == "-") {
            positional.push_back(arg);
            continue;
        }
        if (arg == "--") {
            options_done = true;
            continue;
        }
        if (arg == "--help" || arg == "-h") {
            std::fputs(kUsage, stdout);
            return false;
        }
        if (arg == "--version") {
            std::printf("ttfs-infer %s (%s)\n", ttfs_version_string(), ttfs_build_info());
            return false;
        }
        if (arg == "--json") {
            options.json = true;
            continue;
        }
        // Options with a value: "--name value" or "--name=value".
        std::string name = arg, value;
        size_t equals = arg.find('=');
        bool inline_value = equals != std::string::npos;
        if (inline_value) {
            name = arg.substr(0, equals);
            value = arg.substr(equals + 1);
        }
        static const char* const kValued[] = {"--labels", "--index", "--backend", "--engine",
                                              "--batch", "--threads"};
        if (std::find_if(std::begin(kValued), std::end(kValued),
                         [&](const char* known) { return name == known; }) == std::end(kValued))
            usage_error("unknown option " + quoted(arg));
        if (!inline_value) {
            if (i + 1 >= argc) usage_error(name + " needs a value");
            value = argv[++i];
        }
        if (name == "--labels") {
            options.labels_path = value;
        } else if (name == "--index") {
            options.has_index = true;
            options.index = uint64_t(parse_integer(name, value, 0, int64_t(UINT32_MAX) - 1));
        } else if (name == "--backend") {
            if (value == "auto") options.backend = TTFS_BACKEND_AUTO;
            else if (value == "cpu") options.backend = TTFS_BACKEND_CPU;
            else if (value == "cuda") options.backend = TTFS_BACKEND_CUDA;
            else usage_error("--backend expects auto, cpu or cuda, got " + quoted(value));
        } else if (name == "--engine") {
            if (value == "stepped") options.engine = TTFS_ENGINE_STEPPED;
            else if (value == "analytic") options.engine = TTFS_ENGINE_ANALYTIC;
            else usage_error("--engine expects stepped or analytic, got " + quoted(value));
            options.engine_given = true;
        } else if (name == "--batch") {
            options.batch = int32_t(parse_integer(name, value, 1, std::numeric_limits<int32_t>::max()));
        } else if (name == "--threads") {
            options.threads = int32_t(parse_integer(name, value, 0, 4096));
            options.threads_given = true;
        }
    }
    if (positional.size() != 2)
        usage_error(format("expected MODEL and IMAGES, got %zu positional argument%s",
                           positional.size(), positional.size() == 1 ? "" : "s"));
    options.model_path = positional[0];
    options.images_path = positional[1];
    return true;
}

// ---- Files --------------------------------------------------------------------------------

struct FileCloser {
    void operator()(std::FILE* file) const { std::fclose(file); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

File open_file(const std::string& path, const char* role, uint64_t& size) {
    File file(std::fopen(path.c_str(), "rb"));
    if (!file) fail(format("cannot open %s file ", role) + quoted(path) + ": " + std::strerror(errno));
    struct stat status;
    if (fstat(fileno(file.get()), &status) == 0 && S_ISDIR(status.st_mode))
        fail(format("%s file ", role) + quoted(path) + " is a directory; expected a file");
    if (fseeko(file.get(), 0, SEEK_END) != 0) fail(format("cannot seek in %s file ", role) + quoted(path));
    off_t end = ftello(file.get());
    if (end < 0) fail(format("cannot tell the size of %s file ", role) + quoted(path));
    size = uint64_t(end);
    std::rewind(file.get());
    return file;
}

void read_exact(std::FILE* file, uint64_t offset, void* out, size_t bytes, const std::string& path) {
    if (fseeko(file, off_t(offset), SEEK_SET) != 0 || std::fread(out, 1, bytes, file) != bytes)
        fail(format("cannot read %zu bytes at offset %" PRIu64 " of ", bytes, offset) + quoted(path) +
             (std::ferror(file) ? std::string(": ") + std::strerror(errno) : std::string(": file ended")));
}

uint32_t big_endian_u32(const uint8_t* p) {
    return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
uint32_t little_endian_u32(const uint8_t* p) {
    return (uint32_t(p[3]) << 24) | (uint32_t(p[2]) << 16) | (uint32_t(p[1]) << 8) | uint32_t(p[0]);
}
float float_from_bits(uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

// The images to run: an IDX file (read batch by batch, never whole) or one raw float32 image.
class ImageFile {
public:
    enum class Pixels { U8, F32 };

    // model_shape is the model's input (h, w, c): a .bin has no header, so its size is checked
    // against it; an IDX file's own shape is checked against it too.
    ImageFile(const std::string& path, const int32_t model_shape[3], const std::string& model_path)
        : path_(path) {
        uint64_t size = 0;
        file_ = open_file(path, "images", size);
        if (ends_with(path, ".bin")) open_raw(size, model_shape);
        else open_idx(size);
        if (h_ != model_shape[0] || w_ != model_shape[1] || c_ != model_shape[2])
            fail("images in " + quoted(path) + " are " + shape_text(h_, w_, c_) + " but model " +
                 quoted(model_path) + " expects " +
                 shape_text(model_shape[0], model_shape[1], model_shape[2]) + " inputs");
    }

    uint64_t count() const { return count_; }
    Pixels pixels() const { return pixels_; }
    bool raw() const { return raw_; }
    size_t values_per_image() const { return size_t(h_) * size_t(w_) * size_t(c_); }
    std::string description() const {
        return format("%" PRIu64 " image%s, ", count_, count_ == 1 ? "" : "s") +
               shape_text(h_, w_, c_) + (pixels_ == Pixels::U8 ? " uint8" : " float32");
    }

    // Reads images [first, first + n) as bytes (uint8 files) ...
    void read_u8(uint64_t first, int32_t n, std::vector<uint8_t>& out) {
        out.resize(size_t(n) * values_per_image());
        read_exact(file_.get(), data_offset_ + first * values_per_image(), out.data(), out.size(), path_);
    }
    // ... or as floats (float32 files), converted from the file's byte order.
    void read_f32(uint64_t first, int32_t n, std::vector<float>& out) {
        size_t values = size_t(n) * values_per_image();
        raw_bytes_.resize(values * 4);
        read_exact(file_.get(), data_offset_ + first * values_per_image() * 4, raw_bytes_.data(),
                   raw_bytes_.size(), path_);
        out.resize(values);
        for (size_t i = 0; i < values; ++i) {
            const uint8_t* p = raw_bytes_.data() + 4 * i;
            out[i] = float_from_bits(raw_ ? little_endian_u32(p) : big_endian_u32(p));
        }
    }

private:
    void open_raw(uint64_t size, const int32_t model_shape[3]) {
        raw_ = true;
        pixels_ = Pixels::F32;
        h_ = model_shape[0];
        w_ = model_shape[1];
        c_ = model_shape[2];
        uint64_t expected = uint64_t(values_per_image()) * 4;
        if (size != expected)
            fail("raw image " + quoted(path_) +
                 format(" holds %" PRIu64 " bytes (%" PRIu64 " float32 values%s), expected "
                        "%" PRIu64 " bytes: exactly one %s float32 image",
                        size, size / 4, size % 4 ? " and a partial one" : "", expected,
                        shape_text(h_, w_, c_).c_str()));
        count_ = 1;
        data_offset_ = 0;
    }

    void open_idx(uint64_t size) {
        static const char* const kExpected =
            "expected an IDX image file (magic 0x00000803 or 0x00000804 for uint8, 0x00000D03 "
            "or 0x00000D04 for float32) or a raw float32 image named *.bin";
        uint8_t header[4 + 4 * 4];
        if (size < 4)
            fail("images file " + quoted(path_) + format(" is %" PRIu64 " bytes long; ", size) + kExpected);
        read_exact(file_.get(), 0, header, 4, path_);
        uint32_t magic = big_endian_u32(header);
        uint8_t type = header[2], ndim = header[3];
        if (header[0] != 0 || header[1] != 0 || (type != 0x08 && type != 0x0D) || (ndim != 3 && ndim != 4))
            fail("images file " + quoted(path_) + format(" has magic 0x%08X; ", magic) + kExpected);
        uint64_t header_bytes = 4 + 4 * uint64_t(ndim);
        if (size < header_bytes)
            fail("images file " + quoted(path_) +
                 format(" is truncated: %" PRIu64 " bytes, its header alone needs %" PRIu64, size,
                        header_bytes));
        read_exact(file_.get(), 4, header + 4, size_t(4 * ndim), path_);
        uint32_t dims[4] = {0, 0, 0, 1};
        for (int d = 0; d < ndim; ++d) dims[d] = big_endian_u32(header + 4 + 4 * d);
        if (dims[0] == 0) fail("images file " + quoted(path_) + " holds no images (count 0)");
        for (int d = 1; d < 4; ++d)
            if (dims[d] == 0 || dims[d] > uint32_t(std::numeric_limits<int32_t>::max()))
                fail("images file " + quoted(path_) +
                     format(" has image dimension %d = %u; expected 1 .. 2147483647", d, dims[d]));
        pixels_ = type == 0x08 ? Pixels::U8 : Pixels::F32;
        count_ = dims[0];
        h_ = int32_t(dims[1]);
        w_ = int32_t(dims[2]);
        c_ = int32_t(dims[3]);
        uint64_t data_bytes = 0;
        bool fits = checked_mul(dims[0], dims[1], data_bytes) && checked_mul(data_bytes, dims[2], data_bytes) &&
                    checked_mul(data_bytes, dims[3], data_bytes) &&
                    checked_mul(data_bytes, pixels_ == Pixels::U8 ? 1 : 4, data_bytes) &&
                    data_bytes <= std::numeric_limits<uint64_t>::max() - header_bytes;
        if (!fits)
            fail("images file " + quoted(path_) + " declares more data than any file can hold (" +
                 format("%u images of ", dims[0]) + shape_text(h_, w_, c_) + ")");
        uint64_t expected = header_bytes + data_bytes;
        if (size < expected)
            fail("images file " + quoted(path_) +
                 format(" is truncated: %" PRIu64 " bytes, expected %" PRIu64 " for %u images of ",
                        size, expected, dims[0]) + shape_text(h_, w_, c_));
        if (size > expected)
            fail("images file " + quoted(path_) +
                 format(" has %" PRIu64 " trailing bytes after %u images of ", size - expected, dims[0]) +
                 shape_text(h_, w_, c_) + format(" (expected %" PRIu64 " bytes)", expected));
        data_offset_ = header_bytes;
    }

    std::string path_;
    File file_;
    bool raw_ = false;
    Pixels pixels_ = Pixels::U8;
    uint64_t count_ = 0;
    int32_t h_ = 0, w_ = 0, c_ = 0;
    uint64_t data_offset_ = 0;
    std::vector<uint8_t> raw_bytes_;
};

// IDX1 uint8 labels, read alongside the images batch by batch.
class LabelFile {
public:
    LabelFile(const std::string& path, uint64_t image_count, const std::string& images_path)
        : path_(path) {
        uint64_t size = 0;
        file_ = open_file(path, "labels", size);
        uint8_t header[8];
        if (size < 8)
            fail("labels file " + quoted(path) +
                 format(" is %" PRIu64 " bytes long; expected an IDX1 uint8 label file (magic "
                        "0x00000801, 8-byte header)", size));
        read_exact(file_.get(), 0, header, 8, path);
        uint32_t magic = big_endian_u32(header);
        if (magic != 0x00000801)
            fail("labels file " + quoted(path) +
                 format(" has magic 0x%08X; expected 0x00000801 (IDX1 uint8 labels)", magic));
        uint64_t count = big_endian_u32(header + 4);
        if (size != 8 + count)
            fail("labels file " + quoted(path) +
                 format(" is %" PRIu64 " bytes; expected %" PRIu64 " for its %" PRIu64 " labels",
                        size, 8 + count, count));
        if (count != image_count)
            fail("labels file " + quoted(path) + format(" holds %" PRIu64 " labels but ", count) +
                 quoted(images_path) + format(" holds %" PRIu64 " images", image_count));
    }

    void read(uint64_t first, int32_t n, std::vector<uint8_t>& out) {
        out.resize(size_t(n));
        read_exact(file_.get(), 8 + first, out.data(), out.size(), path_);
    }
    const std::string& path() const { return path_; }

private:
    std::string path_;
    File file_;
};

// ---- Model and session ----------------------------------------------------------------------

struct ModelDeleter {
    void operator()(ttfs_model* model) const { ttfs_model_free(model); }
};
struct SessionDeleter {
    void operator()(ttfs_session* session) const { ttfs_session_free(session); }
};
using ModelHandle = std::unique_ptr<ttfs_model, ModelDeleter>;
using SessionHandle = std::unique_ptr<ttfs_session, SessionDeleter>;

struct NeuronLayer {
    int32_t index;
    std::string name;
};

struct ModelInfo {
    int32_t input_shape[3] = {0, 0, 0};
    int32_t classes = 0;
    int32_t readout = TTFS_READOUT_VMEM;
    int32_t output_layer = 0;
    std::vector<NeuronLayer> neuron_layers;  // input, conv2d, dense: the layers that spike
};

ModelInfo describe_model(const ttfs_model* model, const std::string& path) {
    ModelInfo info;
    ttfs_status status;
    int32_t layer_count = 0;
    if ((status = ttfs_model_layer_count(model, &layer_count)) != TTFS_OK)
        library_failure("cannot count the layers of " + quoted(path), status);
    if ((status = ttfs_model_input_shape(model, info.input_shape)) != TTFS_OK)
        library_failure("cannot get the input shape of " + quoted(path), status);
    if ((status = ttfs_model_num_classes(model, &info.classes)) != TTFS_OK)
        library_failure("cannot get the number of classes of " + quoted(path), status);
    if ((status = ttfs_model_readout(model, &info.readout)) != TTFS_OK)
        library_failure("cannot get the readout of " + quoted(path), status);
    info.output_layer = layer_count - 1;
    for (int32_t i = 0; i < layer_count; ++i) {
        ttfs_layer_info layer;
        std::memset(&layer, 0, sizeof layer);
        layer.struct_size = sizeof layer;
        if ((status = ttfs_model_layer_info(model, i, &layer)) != TTFS_OK)
            library_failure(format("cannot describe layer %d of ", i) + quoted(path), status);
        if (layer.kind == TTFS_LAYER_INPUT || layer.kind == TTFS_LAYER_CONV2D || layer.kind == TTFS_LAYER_DENSE)
            info.neuron_layers.push_back({i, layer.name ? layer.name : format("layer%d", i)});
    }
    return info;
}

const char* backend_name(int32_t backend) {
    switch (backend) {
        case TTFS_BACKEND_CPU: return "cpu";
        case TTFS_BACKEND_CUDA: return "cuda";
        default: return "auto";
    }
}
const char* engine_name(int32_t engine) { return engine == TTFS_ENGINE_STEPPED ? "stepped" : "analytic"; }
const char* readout_name(int32_t readout) { return readout == TTFS_READOUT_FIRST_SPIKE ? "first_spike" : "vmem"; }

struct Runner {
    SessionHandle session;
    int32_t backend = TTFS_BACKEND_CPU;  // as actually used, never auto
    int32_t engine = TTFS_ENGINE_ANALYTIC;
};

Runner create_runner(const ttfs_model* model, const Options& options, int32_t max_batch, uint32_t flags) {
    Runner runner;
    ttfs_session* session = nullptr;
    int32_t engine = options.engine;
    ttfs_status status = ttfs_session_create(model, options.backend, engine, max_batch, flags, &session);
    if (status == TTFS_ERR_UNSUPPORTED && !options.engine_given && engine == TTFS_ENGINE_ANALYTIC) {
        // The default engine cannot run overlapping windows; the stepped engine gives the same
        // answers where both apply, so use it rather than refuse a model the user did not
        // pick an engine for.
        std::string why = ttfs_last_error();
        std::fprintf(stderr, "ttfs-infer: note: using the stepped engine: %s\n", why.c_str());
        engine = TTFS_ENGINE_STEPPED;
        status = ttfs_session_create(model, options.backend, engine, max_batch, flags, &session);
    }
    if (status != TTFS_OK)
        library_failure(format("cannot create a %s session (engine %s, batch %d) for ",
                               backend_name(options.backend), engine_name(engine), max_batch) +
                            quoted(options.model_path),
                        status);
    runner.session.reset(session);
    if ((status = ttfs_session_backend(session, &runner.backend)) != TTFS_OK)
        library_failure("cannot query the session's backend", status);
    if ((status = ttfs_session_engine(session, &runner.engine)) != TTFS_OK)
        library_failure("cannot query the session's engine", status);
    if (options.threads_given && (status = ttfs_session_set_threads(session, options.threads)) != TTFS_OK)
        library_failure(format("cannot use %d threads", options.threads), status);
    return runner;
}

// One batch through the session; returns the seconds spent inside the library.
double run_batch(ttfs_session* session, ImageFile& images, uint64_t first, int32_t n,
                 std::vector<uint8_t>& u8_pixels, std::vector<float>& f32_pixels,
                 std::vector<int32_t>& predictions, std::vector<float>& potentials, int32_t classes) {
    predictions.resize(size_t(n));
    potentials.resize(size_t(n) * size_t(classes));
    ttfs_status status;
    std::chrono::steady_clock::time_point start;
    if (images.pixels() == ImageFile::Pixels::U8) {
        images.read_u8(first, n, u8_pixels);
        start = std::chrono::steady_clock::now();
        status = ttfs_session_run_u8(session, u8_pixels.data(), u8_pixels.size(), n, predictions.data(),
                                     predictions.size(), potentials.data(), potentials.size());
    } else {
        images.read_f32(first, n, f32_pixels);
        start = std::chrono::steady_clock::now();
        status = ttfs_session_run_f32(session, f32_pixels.data(), f32_pixels.size(), n, predictions.data(),
                                      predictions.size(), potentials.data(), potentials.size());
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (status != TTFS_OK)
        library_failure(format("running images %" PRIu64 "..%" PRIu64 " failed", first, first + uint64_t(n) - 1),
                        status);
    return seconds;
}

void check_label(uint8_t label, int32_t classes, uint64_t image, const LabelFile& labels) {
    if (label >= classes)
        fail(format("label %u of image %" PRIu64 " in ", unsigned(label), image) + quoted(labels.path()) +
             format(" is not a class of the model (0 .. %d)", classes - 1));
}

// ---- Output ----------------------------------------------------------------------------------

std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (unsigned char ch : s) {
        switch (ch) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (ch < 0x20) out += format("\\u%04x", ch);
                else out += char(ch);
        }
    }
    return out + "\"";
}

// The shortest decimal that reads back as exactly `value` (36.975, not 36.975000000000001).
std::string shortest_double(double value) {
    for (int digits = 15; digits < 17; ++digits) {
        std::string text = format("%.*g", digits, value);
        if (std::strtod(text.c_str(), nullptr) == value) return text;
    }
    return format("%.17g", value);
}

// JSON has no NaN or infinity; a potential could in principle be either.
std::string json_number(double value) {
    return std::isfinite(value) ? shortest_double(value) : std::string("null");
}
// Nine significant digits are enough to give back the exact float32.
std::string json_float32(float value) {
    return std::isfinite(value) ? format("%.9g", double(value)) : std::string("null");
}

struct SetSummary {
    uint64_t n = 0;
    uint64_t correct = 0;
    bool labelled = false;
    double run_seconds = 0;
    std::vector<uint64_t> spike_totals;  // per neuron layer, over all images
    uint64_t no_output_spike = 0;        // first_spike readout only
};

double images_per_second(const SetSummary& summary) {
    // A tiny run can finish within the clock's resolution; report a rate, never a division by 0.
    return double(summary.n) / std::max(summary.run_seconds, 1e-9);
}

std::string common_json_fields(const Options& options, const ModelInfo& info, const Runner& runner,
                               const SetSummary& summary) {
    std::string out;
    out += "\"model\": " + json_string(options.model_path);
    out += ", \"images\": " + json_string(options.images_path);
    out += ", \"labels\": " + (options.labels_path.empty() ? std::string("null") : json_string(options.labels_path));
    out += ", \"backend\": " + json_string(backend_name(runner.backend));
    out += ", \"engine\": " + json_string(engine_name(runner.engine));
    out += ", \"readout\": " + json_string(readout_name(info.readout));
    out += format(", \"n\": %" PRIu64, summary.n);
    out += ", \"accuracy\": " +
           (summary.labelled ? json_number(double(summary.correct) / double(summary.n)) : std::string("null"));
    out += ", \"correct\": " + (summary.labelled ? format("%" PRIu64, summary.correct) : std::string("null"));
    out += ", \"images_per_second\": " + json_number(images_per_second(summary));
    out += ", \"spikes_per_image\": {";
    for (size_t l = 0; l < info.neuron_layers.size(); ++l) {
        out += (l ? ", " : "") + json_string(info.neuron_layers[l].name) + ": " +
               json_number(double(summary.spike_totals[l]) / double(summary.n));
    }
    out += "}";
    out += ", \"no_output_spike\": " + (info.readout == TTFS_READOUT_FIRST_SPIKE
                                            ? format("%" PRIu64, summary.no_output_spike)
                                            : std::string("null"));
    return out;
}

// The efficiency figures (infer_efficiency.h) as JSON fields, each starting with ", ".
std::string efficiency_json_fields(const ttfs_model* model, const ModelInfo& info, const Runner& runner,
                                   const SetSummary& summary, const ttfs_efficiency::Counter& counter) {
    const std::vector<int64_t>& sizes = counter.neuron_sizes();
    std::string out = ", \"spikes_per_neuron\": {";
    double hidden = 0;
    for (size_t l = 0; l < info.neuron_layers.size(); ++l) {
        double per_image = double(summary.spike_totals[l]) / double(summary.n);
        out += (l ? ", " : "") + json_string(info.neuron_layers[l].name) + ": " +
               json_number(per_image / double(sizes[l]));
        if (l > 0 && l + 1 < info.neuron_layers.size()) hidden += per_image;  // not input, not output
    }
    out += "}, \"hidden_spikes_per_image\": " + json_number(hidden);
    std::string synops = "{", macs = "{";
    double synops_total = 0;
    int64_t macs_total = 0;
    bool countable = true;
    for (size_t s = 0; s < counter.stages().size(); ++s) {
        const ttfs_efficiency::Stage& stage = counter.stages()[s];
        synops += (s ? ", " : "") + json_string(stage.receiver_name) + ": " +
                  (stage.countable ? json_number(double(stage.synaptic_operations) / double(summary.n))
                                   : std::string("null"));
        macs += (s ? ", " : "") + json_string(stage.receiver_name) + ": " + format("%" PRId64, stage.multiply_adds);
        synops_total += double(stage.synaptic_operations) / double(summary.n);
        macs_total += stage.multiply_adds;
        countable = countable && stage.countable;
    }
    out += ", \"synaptic_operations_per_image\": " + synops + "}";
    out += ", \"synaptic_operations_total\": " + (countable ? json_number(synops_total) : std::string("null"));
    out += ", \"ann_multiply_adds\": " + macs + "}";
    out += format(", \"ann_multiply_adds_total\": %" PRId64, macs_total);
    std::vector<int64_t> blank =
        ttfs_efficiency::Counter::blank_image_spikes(model, runner.backend, runner.engine, counter.neuron_layers());
    out += ", \"blank_image_spikes\": {";
    int64_t blank_hidden = 0;
    for (size_t l = 0; l < blank.size(); ++l) {
        out += (l ? ", " : "") + json_string(info.neuron_layers[l].name) + ": " + format("%" PRId64, blank[l]);
        if (l > 0 && l + 1 < blank.size()) blank_hidden += blank[l];
    }
    out += format("}, \"blank_image_hidden_spikes\": %" PRId64, blank_hidden);
    return out;
}

void print_spikes_table(const ModelInfo& info, const SetSummary& summary) {
    size_t width = 5;
    for (const NeuronLayer& layer : info.neuron_layers) width = std::max(width, layer.name.size());
    std::printf("spikes per image:\n");
    for (size_t l = 0; l < info.neuron_layers.size(); ++l)
        std::printf("  %-*s  %.2f\n", int(width), info.neuron_layers[l].name.c_str(),
                    double(summary.spike_totals[l]) / double(summary.n));
}

// Accumulates one batch's spike counts (per neuron layer) into the summary.
void add_spike_counts(ttfs_session* session, const ModelInfo& info, int32_t n, SetSummary& summary,
                      std::vector<int32_t>& counts) {
    counts.resize(size_t(n));
    for (size_t l = 0; l < info.neuron_layers.size(); ++l) {
        const NeuronLayer& layer = info.neuron_layers[l];
        ttfs_status status = ttfs_session_spike_counts(session, layer.index, counts.data(), counts.size());
        if (status != TTFS_OK) library_failure("cannot read the spike counts of layer " + quoted(layer.name), status);
        for (int32_t count : counts) summary.spike_totals[l] += uint64_t(count);
        if (layer.index == info.output_layer && info.readout == TTFS_READOUT_FIRST_SPIKE)
            for (int32_t count : counts) summary.no_output_spike += count == 0;
    }
}

// ---- The two modes ---------------------------------------------------------------------------

int run_single(const ttfs_model* model, const ModelInfo& info, const Options& options, ImageFile& images,
               LabelFile* labels) {
    uint64_t index = options.has_index ? options.index : 0;
    if (images.raw() && index != 0)
        fail(format("--index %" PRIu64 " is out of range: raw image ", index) + quoted(options.images_path) +
             " holds one image (index 0)");
    if (index >= images.count())
        fail(format("--index %" PRIu64 " is out of range: ", index) + quoted(options.images_path) +
             format(" holds %" PRIu64 " images (0 .. %" PRIu64 ")", images.count(), images.count() - 1));
    bool first_spike = info.readout == TTFS_READOUT_FIRST_SPIKE;
    Runner runner = create_runner(model, options, 1,
                                  first_spike || options.json ? TTFS_SESSION_RECORD_SPIKE_TIMES : 0u);

    std::vector<uint8_t> u8_pixels;
    std::vector<float> f32_pixels, potentials;
    std::vector<int32_t> predictions, counts;
    SetSummary summary;
    summary.n = 1;
    summary.spike_totals.assign(info.neuron_layers.size(), 0);
    summary.run_seconds = run_batch(runner.session.get(), images, index, 1, u8_pixels, f32_pixels,
                                    predictions, potentials, info.classes);
    add_spike_counts(runner.session.get(), info, 1, summary, counts);
    ttfs_efficiency::Counter efficiency(model);
    if (options.json) efficiency.add_batch(runner.session.get(), 1);

    std::vector<int32_t> spike_times;
    if (first_spike) {
        spike_times.resize(size_t(info.classes));
        ttfs_status status = ttfs_session_spike_times(runner.session.get(), info.output_layer,
                                                      spike_times.data(), spike_times.size());
        if (status != TTFS_OK) library_failure("cannot read the output layer's spike times", status);
    }
    int label = -1;
    if (labels) {
        std::vector<uint8_t> label_bytes;
        labels->read(index, 1, label_bytes);
        check_label(label_bytes[0], info.classes, index, *labels);
        label = label_bytes[0];
        summary.labelled = true;
        summary.correct = predictions[0] == label;
    }

    if (options.json) {
        std::string out = "{" + common_json_fields(options, info, runner, summary) +
                          efficiency_json_fields(model, info, runner, summary, efficiency);
        out += format(", \"index\": %" PRIu64 ", \"predicted\": %d", index, predictions[0]);
        out += ", \"label\": " + (label >= 0 ? format("%d", label) : std::string("null"));
        out += ", \"potentials\": [";
        for (int32_t k = 0; k < info.classes; ++k) out += (k ? ", " : "") + json_float32(potentials[size_t(k)]);
        out += "], \"spike_times\": ";
        if (first_spike) {
            out += "[";
            for (int32_t k = 0; k < info.classes; ++k) out += (k ? ", " : "") + format("%d", spike_times[size_t(k)]);
            out += "]";
        } else {
            out += "null";  // the output layer never fires under vmem readout
        }
        std::printf("%s}\n", out.c_str());
        return kExitOk;
    }

    std::printf("model: %s\n", options.model_path.c_str());
    if (images.raw()) std::printf("image: %s\n", options.images_path.c_str());
    else std::printf("image: %s [index %" PRIu64 " of %" PRIu64 "]\n", options.images_path.c_str(), index, images.count());
    std::printf("backend: %s\nengine: %s\nreadout: %s\n", backend_name(runner.backend), engine_name(runner.engine),
                readout_name(info.readout));
    std::printf("class  potential%s\n", first_spike ? "        first spike" : "");
    for (int32_t k = 0; k < info.classes; ++k) {
        if (!first_spike) {
            std::printf("%5d  %.9g\n", k, double(potentials[size_t(k)]));
        } else if (spike_times[size_t(k)] >= 0) {
            std::printf("%5d  %-15.9g  %d\n", k, double(potentials[size_t(k)]), spike_times[size_t(k)]);
        } else {
            std::printf("%5d  %-15.9g  none\n", k, double(potentials[size_t(k)]));
        }
    }
    if (first_spike && summary.no_output_spike)
        std::printf("no output spike: prediction from the largest potential\n");
    print_spikes_table(info, summary);
    std::printf("predicted class: %d\n", predictions[0]);
    if (label >= 0) std::printf("label: %d\n", label);
    return kExitOk;
}

int run_set(const ttfs_model* model, const ModelInfo& info, const Options& options, ImageFile& images,
            LabelFile* labels) {
    const uint64_t total = images.count();
    const int32_t batch = int32_t(std::min<uint64_t>(uint64_t(options.batch), total));
    Runner runner = create_runner(model, options, batch, options.json ? TTFS_SESSION_RECORD_SPIKE_TIMES : 0u);
    const bool progress = isatty(STDERR_FILENO) != 0;
    ttfs_efficiency::Counter efficiency(model);

    std::vector<uint8_t> u8_pixels, label_bytes;
    std::vector<float> f32_pixels, potentials;
    std::vector<int32_t> predictions, counts;
    SetSummary summary;
    summary.labelled = labels != nullptr;
    summary.spike_totals.assign(info.neuron_layers.size(), 0);
    for (uint64_t first = 0; first < total; first += uint64_t(batch)) {
        int32_t n = int32_t(std::min<uint64_t>(uint64_t(batch), total - first));
        summary.run_seconds += run_batch(runner.session.get(), images, first, n, u8_pixels, f32_pixels,
                                         predictions, potentials, info.classes);
        add_spike_counts(runner.session.get(), info, n, summary, counts);
        if (options.json) efficiency.add_batch(runner.session.get(), n);
        if (labels) {
            labels->read(first, n, label_bytes);
            for (int32_t i = 0; i < n; ++i) {
                check_label(label_bytes[size_t(i)], info.classes, first + uint64_t(i), *labels);
                summary.correct += predictions[size_t(i)] == int32_t(label_bytes[size_t(i)]);
            }
        }
        summary.n += uint64_t(n);
        if (progress) {
            std::fprintf(stderr, "\rttfs-infer: %" PRIu64 " / %" PRIu64 " images", summary.n, total);
            std::fflush(stderr);
        }
    }
    if (progress) std::fprintf(stderr, "\r%60s\r", "");  // leave the terminal clean

    if (options.json) {
        std::printf("{%s%s, \"batch\": %d}\n", common_json_fields(options, info, runner, summary).c_str(),
                    efficiency_json_fields(model, info, runner, summary, efficiency).c_str(), batch);
        return kExitOk;
    }
    std::printf("model: %s\n", options.model_path.c_str());
    std::printf("images: %s (%s)\n", options.images_path.c_str(), images.description().c_str());
    std::printf("backend: %s\nengine: %s\nreadout: %s\n", backend_name(runner.backend), engine_name(runner.engine),
                readout_name(info.readout));
    std::printf("n: %" PRIu64 "\n", summary.n);
    if (summary.labelled)
        std::printf("accuracy: %.2f %% (%" PRIu64 " of %" PRIu64 ")\n",
                    100.0 * double(summary.correct) / double(summary.n), summary.correct, summary.n);
    std::printf("images per second: %.1f (inference only, batch %d)\n", images_per_second(summary), batch);
    print_spikes_table(info, summary);
    if (info.readout == TTFS_READOUT_FIRST_SPIKE)
        std::printf("no output spike: %" PRIu64 " of %" PRIu64 " images (predicted from the largest potential)\n",
                    summary.no_output_spike, summary.n);
    return kExitOk;
}

int run(int argc, char** argv) {
    Options options;
    if (!parse_options(argc, argv, options)) return kExitOk;  // --help or --version
    if (ttfs_abi_version() != TTFS_ABI_VERSION)
        fail(format("libttfs has ABI version %d but ttfs-infer was built for %d; use the matching library",
                    ttfs_abi_version(), TTFS_ABI_VERSION));

    ttfs_model* loaded = nullptr;
    ttfs_status status = ttfs_model_load_file(options.model_path.c_str(), &loaded);
    if (status != TTFS_OK) library_failure("cannot load model " + quoted(options.model_path), status);
    ModelHandle model(loaded);
    ModelInfo info = describe_model(model.get(), options.model_path);

    ImageFile images(options.images_path, info.input_shape, options.model_path);
    std::unique_ptr<LabelFile> labels;
    if (!options.labels_path.empty())
        labels.reset(new LabelFile(options.labels_path, images.count(), options.images_path));

    if (images.raw() || options.has_index) return run_single(model.get(), info, options, images, labels.get());
    return run_set(model.get(), info, options, images, labels.get());
}

// Messages must stay one line: the contract is one "ttfs-infer: error:" line per failure.
std::string one_line(std::string message) {
    std::replace(message.begin(), message.end(), '\n', ' ');
    std::replace(message.begin(), message.end(), '\r', ' ');
    return message;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        int code = run(argc, argv);
        if (std::fflush(stdout) != 0) {
            std::fprintf(stderr, "ttfs-infer: error: cannot write the output: %s\n", std::strerror(errno));
            return kExitFailure;
        }
        return code;
    } catch (const CliError& error) {
        std::fflush(stdout);
        std::fprintf(stderr, "ttfs-infer: error: %s\n", one_line(error.what()).c_str());
        return error.exit_code;
    } catch (const std::bad_alloc&) {
        std::fflush(stdout);
        std::fprintf(stderr, "ttfs-infer: error: out of memory (try a smaller --batch)\n");
        return kExitFailure;
    } catch (const std::exception& error) {
        std::fflush(stdout);
        std::fprintf(stderr, "ttfs-infer: error: %s\n", one_line(error.what()).c_str());
        return kExitFailure;
    }
}
