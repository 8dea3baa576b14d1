// ttfs-infer — run a .ttfs time-to-first-spike network on images from the command line.
//
// Uses nothing but the public C ABI (include/ttfs.h) for the network, so it doubles as a
// worked example of that ABI. Plain C++17: nvcc compiles it when CUDA is on, the host
// compiler otherwise. PNG/JPEG decoding lives in cli_images.cpp (system libpng/libjpeg),
// gzip through the system zlib, each optional at build time.
//
//   ttfs-infer MODEL IMAGES [options]      run images (see kUsage below)
//   ttfs-infer MODEL --info [--json]       describe a model
//
// IMAGES is read in batches (never whole), so memory grows with --batch, not with the file.
// One image (a .bin, a single PNG/JPEG or .npy image, or --index into a set) prints its class
// potentials and prediction; a set is summarised (accuracy, throughput, spikes per image), and
// --output writes one row per image as it goes.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cctype>
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
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <dirent.h>     // directories of images
#include <sys/stat.h>   // fstat: a directory opens like a file but cannot be read
#include <sys/types.h>  // off_t for fseeko/ftello: images files may exceed 2 GiB
#include <unistd.h>     // isatty: the progress line is for people, not for pipes

#ifdef TTFS_HAVE_ZLIB
#include <zlib.h>
#endif

#include "cli_images.hpp"
#include "infer_efficiency.h"
#include "ttfs.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int32_t kDefaultBatch = 256;
constexpr int32_t kDefaultTopK = 3;

const char* const kUsage =
    "usage: ttfs-infer MODEL IMAGES [--labels LABELS] [--index I] [--output FILE] [--top-k K]\n"
    "                  [--resize] [--allow-unscaled] [--backend auto|cpu|cuda]\n"
    "                  [--engine stepped|analytic] [--batch N] [--threads N] [--json]\n"
    "                  [--max-memory BYTES] [--max-work OPS]\n"
    "       ttfs-infer MODEL --info [--json]\n"
    "       ttfs-infer --help | --version\n"
    "\n"
    "Runs a .ttfs time-to-first-spike network on images (the algorithm: docs/ALGORITHM.md).\n"
    "\n"
    "  MODEL             a .ttfs model file\n"
    "  IMAGES            one of (told apart by their first bytes; '-' reads standard input):\n"
    "                    - a PNG or JPEG image, or a directory of them (*.png, *.jpg, *.jpeg,\n"
    "                      in byte order of their names); gray or RGB, converted to the model's\n"
    "                      channels (gray is repeated; colour becomes gray by BT.601 luma);\n"
    "                      alpha is dropped. Their size must be the model's unless --resize.\n"
    "                    - an IDX file, plain or gzipped: 0x00000803 (uint8, n x h x w),\n"
    "                      0x00000804 (uint8, n x h x w x c), 0x00000D03 / 0x00000D04 (the same\n"
    "                      as big-endian float32)\n"
    "                    - a NumPy .npy array: (n, h, w, c) or one (h, w, c) image, and for a\n"
    "                      one-channel model also (n, h, w) or (h, w); uint8, another integer\n"
    "                      type holding 0..255, float32 or float64\n"
    "                    - a raw little-endian float32 file named *.bin: one h x w x c image\n"
    "                    Integer pixels are divided by the model's input divisor; floats must\n"
    "                    be scaled to [0, 1] already (NaN and infinity are always errors).\n"
    "  --labels LABELS   labels, one per image: IDX1 uint8 (0x00000801, plain or gzipped) or a\n"
    "                    1-D integer .npy; reports accuracy\n"
    "  --index I         run only image I (0-based) of a set and show its details\n"
    "  --output FILE     write one row per image: index, [file,] prediction, confidence,\n"
    "                    the top-k classes with their scores, [label, correct]; CSV, or JSON\n"
    "                    Lines when FILE ends in .jsonl; '-' = standard output (the summary\n"
    "                    then goes to standard error). Scores are the output potentials (for\n"
    "                    first_spike readout, a class that fired scores the threshold value its\n"
    "                    spike time codes); confidence is the softmax of the scores.\n"
    "  --top-k K         classes per row in --output (default 3, at most the class count)\n"
    "  --resize          resize PNG/JPEG images of another size to the model's (area mean)\n"
    "  --allow-unscaled  run float inputs outside [0, 1] as they are (normally an error)\n"
    "  --info            describe the model: layers, shapes, windows, time constants, pool\n"
    "                    modes, readout, conversion metadata, file version and checksum\n"
    "  --backend B       auto (CUDA when a device is present, else CPU; default), cpu, cuda\n"
    "  --engine E        analytic (default; falls back to stepped, with a note, when the model's\n"
    "                    windows overlap) or stepped\n"
    "  --batch N         images per run when streaming a set (default 256); memory use grows\n"
    "                    with N, not with the file\n"
    "  --threads N       CPU worker threads (default: one per hardware thread)\n"
    "  --max-memory BYTES  the session's memory limit (default: the library's, 8 GiB); a\n"
    "                    model or batch that needs more is refused before anything runs\n"
    "  --max-work OPS    the limit on basic operations per image (default: the library's,\n"
    "                    2^34); raise it for a very large network the library refuses\n"
    "  --json            print one JSON object instead of text, with the efficiency figures:\n"
    "                    spikes per neuron, synaptic operations per image (each spike times\n"
    "                    its fan-out) next to the ANN's multiply-adds, spikes on a blank image\n"
    "                    (it records spike times for them, which slows a run down a little)\n"
    "  --help            print this help\n"
    "  --version         print the version and the library's build information\n"
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

std::string shape_text(int64_t h, int64_t w, int64_t c) {
    return format("%" PRId64 "x%" PRId64 "x%" PRId64, h, w, c);
}

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string lower(std::string s) {
    for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    return s;
}

// a * b, or false when it does not fit in 64 bits (file sizes come from hostile headers).
bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) {
    if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
    out = a * b;
    return true;
}

// ---- Command line ------------------------------------------------------------------------

struct Options {
    std::string model_path, images_path, labels_path, output_path;
    bool has_index = false;
    uint64_t index = 0;
    int32_t backend = TTFS_BACKEND_AUTO;
    int32_t engine = TTFS_ENGINE_ANALYTIC;
    bool engine_given = false;
    int32_t batch = kDefaultBatch;
    int32_t threads = 0;
    bool threads_given = false;
    int32_t top_k = kDefaultTopK;
    bool top_k_given = false;
    bool json = false;
    bool info = false;
    bool resize = false;
    bool allow_unscaled = false;
    uint64_t max_memory_bytes = 0;    // 0: the library's default limit
    uint64_t max_work_per_image = 0;  // 0: the library's default limit
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
        if (arg == "--info") {
            options.info = true;
            continue;
        }
        if (arg == "--resize") {
            options.resize = true;
            continue;
        }
        if (arg == "--allow-unscaled") {
            options.allow_unscaled = true;
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
        static const char* const kValued[] = {"--labels", "--index",   "--backend", "--engine",
                                              "--batch",  "--threads", "--output",  "--top-k",
                                              "--max-memory", "--max-work"};
        if (std::find_if(std::begin(kValued), std::end(kValued),
                         [&](const char* known) { return name == known; }) == std::end(kValued))
            usage_error("unknown option " + quoted(arg));
        if (!inline_value) {
            if (i + 1 >= argc) usage_error(name + " needs a value");
            value = argv[++i];
        }
        if (name == "--labels") {
            options.labels_path = value;
        } else if (name == "--output") {
            if (value.empty()) usage_error("--output needs a file name, or '-' for standard output");
            options.output_path = value;
        } else if (name == "--top-k") {
            options.top_k = int32_t(parse_integer(name, value, 1, std::numeric_limits<int32_t>::max()));
            options.top_k_given = true;
        } else if (name == "--index") {
            options.has_index = true;
            options.index = uint64_t(parse_integer(name, value, 0, std::numeric_limits<int64_t>::max()));
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
        } else if (name == "--max-memory") {
            options.max_memory_bytes =
                uint64_t(parse_integer(name, value, 1, std::numeric_limits<int64_t>::max()));
        } else if (name == "--max-work") {
            options.max_work_per_image =
                uint64_t(parse_integer(name, value, 1, std::numeric_limits<int64_t>::max()));
        }
    }
    if (options.info) {
        if (positional.size() != 1)
            usage_error(format("--info expects only MODEL, got %zu positional argument%s", positional.size(),
                               positional.size() == 1 ? "" : "s"));
        options.model_path = positional[0];
        return true;
    }
    if (positional.size() != 2)
        usage_error(format("expected MODEL and IMAGES, got %zu positional argument%s",
                           positional.size(), positional.size() == 1 ? "" : "s"));
    options.model_path = positional[0];
    options.images_path = positional[1];
    if (options.images_path == "-" && options.labels_path == "-")
        usage_error("IMAGES and --labels cannot both be standard input ('-')");
    if (options.top_k_given && options.output_path.empty())
        usage_error("--top-k applies to the rows of --output; add --output FILE");
    return true;
}

// ---- Byte streams: a file, a gzipped file or standard input, read front to back --------------

class Stream {
public:
    // "-" is standard input. role names the file in messages ("images", "labels").
    Stream(const std::string& path, const char* role) : path_(path), role_(role) {
        stdin_ = path == "-";
        if (stdin_) {
            file_ = stdin;
        } else {
            file_ = std::fopen(path.c_str(), "rb");
            if (!file_) fail(format("cannot open %s file ", role) + quoted(path) + ": " + std::strerror(errno));
            struct stat status;
            if (fstat(fileno(file_), &status) == 0) {
                if (S_ISDIR(status.st_mode))
                    fail(format("%s file ", role) + quoted(path) + " is a directory; expected a file");
                if (S_ISREG(status.st_mode)) {
                    size_known_ = true;
                    size_ = uint64_t(status.st_size);
                }
            }
        }
        // gzip is recognised by its first two bytes, whatever the name.
        raw_fill();
        if (raw_end_ - raw_begin_ >= 2 && raw_[raw_begin_] == 0x1f && raw_[raw_begin_ + 1] == 0x8b) {
#ifdef TTFS_HAVE_ZLIB
            gzipped_ = true;
            size_known_ = false;
            std::memset(&zs_, 0, sizeof zs_);
            if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) fail("cannot start the gzip decoder");
            zs_live_ = true;
#else
            fail(format("%s file ", role) + name() +
                 " is gzipped, but this ttfs-infer was built without zlib; gunzip it first");
#endif
        }
    }
    ~Stream() {
#ifdef TTFS_HAVE_ZLIB
        if (zs_live_) inflateEnd(&zs_);
#endif
        if (file_ && !stdin_) std::fclose(file_);
    }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;

    std::string name() const { return stdin_ ? std::string("standard input") : quoted(path_); }
    bool gzipped() const { return gzipped_; }
    // The size of the data when the system knows it: plain regular files only.
    bool size_known() const { return size_known_; }
    uint64_t size() const { return size_; }

    // Up to `bytes` bytes; fewer only at the end of the data.
    size_t read_some(void* out, size_t bytes) {
        auto* dest = static_cast<uint8_t*>(out);
        size_t done = 0;
        while (done < bytes && !peeked_.empty()) {
            dest[done++] = peeked_.back();
            peeked_.pop_back();
        }
        done += gzipped_ ? inflate_into(dest + done, bytes - done) : raw_into(dest + done, bytes - done);
        position_ += done;
        return done;
    }

    // Exactly `bytes` bytes, or an error that names what was being read.
    void read_exact(void* out, size_t bytes, const std::string& what) {
        const uint64_t start = position_;
        if (read_some(out, bytes) != bytes)
            fail(format("%s file ", role_) + name() +
                 format(" is truncated: it ends after %" PRIu64 " bytes, inside ", position_) + what +
                 format(" (bytes %" PRIu64 "..%" PRIu64 ")", start, start + bytes - 1));
    }

    // Moves forward without keeping the bytes (a seek where the file allows it).
    void skip(uint64_t bytes, const std::string& what) {
        if (bytes == 0) return;
        if (!gzipped_ && !stdin_ && peeked_.empty() && size_known_) {
            const uint64_t raw_position = position_ + bytes;
            if (raw_position <= size_ && fseeko(file_, off_t(raw_position), SEEK_SET) == 0) {
                raw_begin_ = raw_end_ = 0;
                position_ = raw_position;
                return;
            }
        }
        std::vector<uint8_t> sink(size_t(std::min<uint64_t>(bytes, 1 << 20)));
        uint64_t left = bytes;
        while (left > 0) {
            size_t chunk = size_t(std::min<uint64_t>(left, sink.size()));
            read_exact(sink.data(), chunk, what);
            left -= chunk;
        }
    }

    // Gives back bytes just read, so the next read returns them first.
    void unread(const uint8_t* bytes, size_t count) {
        for (size_t i = count; i > 0; --i) peeked_.push_back(bytes[i - 1]);
        position_ -= count;
    }

    // True when nothing is left (reads one byte to find out on streams of unknown size).
    bool at_end() {
        if (size_known_ && !gzipped_) return position_ >= size_;
        uint8_t byte;
        if (read_some(&byte, 1) == 0) return true;
        unread(&byte, 1);
        return false;
    }

    // The whole rest of the data, refusing more than `limit` bytes.
    std::vector<uint8_t> read_rest(uint64_t limit) {
        std::vector<uint8_t> data;
        std::vector<uint8_t> chunk(1 << 16);
        for (;;) {
            size_t got = read_some(chunk.data(), chunk.size());
            if (got == 0) break;
            data.insert(data.end(), chunk.begin(), chunk.begin() + std::ptrdiff_t(got));
            if (data.size() > limit)
                fail(format("%s file ", role_) + name() + format(" is larger than %" PRIu64 " bytes", limit));
        }
        return data;
    }

private:
    // Refills the raw buffer once it is used up; false at the end of the file.
    bool raw_fill() {
        if (raw_begin_ < raw_end_) return true;
        raw_begin_ = 0;
        raw_end_ = std::fread(raw_, 1, sizeof raw_, file_);
        if (raw_end_ == 0 && std::ferror(file_))
            fail(format("cannot read %s file ", role_) + name() + ": " + std::strerror(errno));
        return raw_end_ > 0;
    }

    size_t raw_into(uint8_t* out, size_t bytes) {
        size_t done = 0;
        // Large reads go straight to the caller's buffer once the buffered bytes are used.
        while (done < bytes) {
            if (raw_begin_ == raw_end_ && bytes - done >= sizeof raw_) {
                size_t got = std::fread(out + done, 1, bytes - done, file_);
                if (got == 0 && std::ferror(file_))
                    fail(format("cannot read %s file ", role_) + name() + ": " + std::strerror(errno));
                if (got == 0) break;
                done += got;
                continue;
            }
            if (!raw_fill()) break;
            size_t take = std::min(bytes - done, raw_end_ - raw_begin_);
            std::memcpy(out + done, raw_ + raw_begin_, take);
            raw_begin_ += take;
            done += take;
        }
        return done;
    }

    size_t inflate_into(uint8_t* out, size_t bytes) {
#ifdef TTFS_HAVE_ZLIB
        size_t done = 0;
        while (done < bytes && !gz_finished_) {
            if (zs_.avail_in == 0) {
                if (!raw_fill())
                    fail(format("%s file ", role_) + name() +
                         format(" is truncated: its gzip data ends early (after %" PRIu64
                                " uncompressed bytes)", position_ + done));
                // The buffered bytes now belong to zlib until it has used them all.
                zs_.next_in = raw_ + raw_begin_;
                zs_.avail_in = unsigned(raw_end_ - raw_begin_);
                raw_begin_ = raw_end_;
            }
            zs_.next_out = out + done;
            zs_.avail_out = unsigned(std::min<size_t>(bytes - done, 1u << 30));
            const unsigned before = zs_.avail_out;
            int code = inflate(&zs_, Z_NO_FLUSH);
            done += before - zs_.avail_out;
            if (code == Z_STREAM_END) {
                // Another gzip member may follow (concatenated .gz files are one stream).
                if (zs_.avail_in == 0 && !raw_fill()) {
                    gz_finished_ = true;
                } else {
                    inflateReset(&zs_);
                }
            } else if (code != Z_OK && code != Z_BUF_ERROR) {
                fail(format("%s file ", role_) + name() + ": broken gzip data (" +
                     (zs_.msg ? zs_.msg : "zlib error") + ")");
            }
        }
        return done;
#else
        (void)out;
        (void)bytes;
        return 0;
#endif
    }

    std::string path_;
    const char* role_;
    bool stdin_ = false;
    std::FILE* file_ = nullptr;
    uint8_t raw_[1 << 16];
    size_t raw_begin_ = 0, raw_end_ = 0;
#ifdef TTFS_HAVE_ZLIB
    z_stream zs_;
    bool zs_live_ = false;
#endif
    bool gzipped_ = false;
    bool gz_finished_ = false;
    bool size_known_ = false;
    uint64_t size_ = 0;
    uint64_t position_ = 0;
    std::vector<uint8_t> peeked_;  // bytes handed back by at_end(), last one first
};

uint32_t big_endian_u32(const uint8_t* p) {
    return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
uint32_t little_endian_u32(const uint8_t* p) {
    return (uint32_t(p[3]) << 24) | (uint32_t(p[2]) << 16) | (uint32_t(p[1]) << 8) | uint32_t(p[0]);
}

// ---- Images -----------------------------------------------------------------------------------

// What the images are handed to the library as: bytes (divided by the model's input divisor
// inside the library) or floats already scaled.
enum class Pixels { U8, F32 };

// A set of images of the model's input shape, read front to back in batches. Each source
// converts what it stores to uint8 or float32 and checks the values on the way.
class ImageSource {
public:
    virtual ~ImageSource() = default;
    uint64_t count() const { return count_; }
    Pixels pixels() const { return pixels_; }
    // True for inputs that are one image by nature (a .bin, one PNG/JPEG, one .npy image):
    // they print the single-image report without --index.
    bool single() const { return single_; }
    virtual std::string description() const = 0;
    // The file an image came from, for per-image rows ("" for images inside one array file).
    virtual std::string file_of(uint64_t) const { return ""; }
    virtual bool has_files() const { return false; }
    // Moves past the next n images.
    virtual void skip(uint64_t n) = 0;
    // The next n images into u8 or f32 (by pixels()), n * h * w * c values.
    virtual void read(int32_t n, std::vector<uint8_t>& u8, std::vector<float>& f32) = 0;
    // Called after the last image of a streamed set: complains about trailing data.
    virtual void check_end() {}

protected:
    uint64_t count_ = 0;
    Pixels pixels_ = Pixels::U8;
    bool single_ = false;
};

struct Checks {
    bool allow_unscaled = false;
};

// Element types of array files.
enum class Element { U8, I8, I16, U16, I32, U32, I64, U64, F32, F64 };

size_t element_size(Element e) {
    switch (e) {
        case Element::U8: case Element::I8: return 1;
        case Element::I16: case Element::U16: return 2;
        case Element::I32: case Element::U32: case Element::F32: return 4;
        default: return 8;
    }
}
bool is_float(Element e) { return e == Element::F32 || e == Element::F64; }
const char* element_name(Element e) {
    switch (e) {
        case Element::U8: return "uint8";
        case Element::I8: return "int8";
        case Element::I16: return "int16";
        case Element::U16: return "uint16";
        case Element::I32: return "int32";
        case Element::U32: return "uint32";
        case Element::I64: return "int64";
        case Element::U64: return "uint64";
        case Element::F32: return "float32";
        default: return "float64";
    }
}

// An IDX, .npy or raw .bin file: a header, then n images of h x w x c elements.
class ArraySource : public ImageSource {
public:
    ArraySource(std::unique_ptr<Stream> stream, const int32_t model_shape[3], const std::string& model_path,
                const Checks& checks, bool raw_bin)
        : stream_(std::move(stream)), checks_(checks) {
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
            convert_integers(values, u8);
        } else {
            f32.resize(values);
            convert_floats(values, f32);
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

    // Where a value of this batch sits, for messages: image, h, w, c.
    std::string place(size_t value_index) const {
        const size_t per_image = values_per_image();
        const uint64_t image = next_ + value_index / per_image;
        const size_t within = value_index % per_image;
        const size_t c = within % size_t(shape_[2]);
        const size_t x = within / size_t(shape_[2]) % size_t(shape_[1]);
        const size_t y = within / (size_t(shape_[2]) * size_t(shape_[1]));
        return format("image %" PRIu64 ", pixel (h %zu, w %zu, c %zu)", image, y, x, c);
    }

    template <typename T>
    T load(size_t i) const {
        const uint8_t* p = raw_.data() + i * sizeof(T);
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
    void integers_as_pixels(size_t values, std::vector<uint8_t>& out) const {
        for (size_t i = 0; i < values; ++i) {
            const T value = load<T>(i);
            bool outside;  // compared in 64 bits: T(255) would wrap for int8
            if constexpr (std::is_signed<T>::value) outside = int64_t(value) < 0 || int64_t(value) > 255;
            else outside = uint64_t(value) > 255;
            if (outside) {
                const std::string shown = std::is_signed<T>::value ? format("%lld", (long long)value)
                                                                   : format("%llu", (unsigned long long)value);
                fail("images file " + stream_->name() + ": " + place(i) + " = " + shown + "; " +
                     element_name(element_) + " images must hold pixels 0..255 (scale them, or store "
                     "floats in [0, 1])");
            }
            out[i] = uint8_t(value);
        }
    }

    void convert_integers(size_t values, std::vector<uint8_t>& out) const {
        switch (element_) {
            case Element::U8: std::memcpy(out.data(), raw_.data(), values); break;
            case Element::I8: integers_as_pixels<int8_t>(values, out); break;
            case Element::I16: integers_as_pixels<int16_t>(values, out); break;
            case Element::U16: integers_as_pixels<uint16_t>(values, out); break;
            case Element::I32: integers_as_pixels<int32_t>(values, out); break;
            case Element::U32: integers_as_pixels<uint32_t>(values, out); break;
            case Element::I64: integers_as_pixels<int64_t>(values, out); break;
            case Element::U64: integers_as_pixels<uint64_t>(values, out); break;
            default: break;
        }
    }

    void convert_floats(size_t values, std::vector<float>& out) const {
        for (size_t i = 0; i < values; ++i) {
            const double value = element_ == Element::F32 ? double(load<float>(i)) : load<double>(i);
            out[i] = float(value);
            const bool finite = std::isfinite(value) && std::isfinite(out[i]);
            if (!finite || (!checks_.allow_unscaled && !(out[i] >= 0.0f && out[i] <= 1.0f))) {
                const std::string what = "images file " + stream_->name() + ": " + place(i) + " = " +
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
        uint8_t version[2];
        stream_->read_exact(version, 2, "the .npy header");
        uint32_t header_length = 0;
        uint64_t prefix = 0;
        if (version[0] == 1) {
            uint8_t b[2];
            stream_->read_exact(b, 2, "the .npy header");
            header_length = uint32_t(b[0]) | (uint32_t(b[1]) << 8);
            prefix = 10;
        } else if (version[0] == 2 || version[0] == 3) {
            uint8_t b[4];
            stream_->read_exact(b, 4, "the .npy header");
            header_length = little_endian_u32(b);
            prefix = 12;
        } else {
            fail("images file " + stream_->name() + format(" is .npy format version %u; expected 1, 2 or 3", version[0]));
        }
        if (header_length > (1u << 20)) fail("images file " + stream_->name() + " has an oversized .npy header");
        std::string header(header_length, '\0');
        stream_->read_exact(&header[0], header_length, "the .npy header");
        const std::string descr = npy_field(header, "descr");
        const std::string order = npy_field(header, "fortran_order");
        const std::string shape = npy_field(header, "shape");
        if (order != "False")
            fail("images file " + stream_->name() + " is a Fortran-ordered .npy array; save a C-ordered one "
                 "(numpy.ascontiguousarray)");
        parse_descr(descr);
        // shape: "(a, b, c)" with a trailing comma for one dimension.
        std::vector<uint64_t> dims;
        for (size_t i = 0; i < shape.size();) {
            if (std::isdigit(static_cast<unsigned char>(shape[i]))) {
                char* end = nullptr;
                errno = 0;
                unsigned long long value = std::strtoull(shape.c_str() + i, &end, 10);
                if (errno == ERANGE) fail("images file " + stream_->name() + ": a .npy dimension is too large");
                dims.push_back(value);
                i = size_t(end - shape.c_str());
            } else {
                ++i;
            }
        }
        const std::string given = "(" + [&] {
            std::string text;
            for (size_t d = 0; d < dims.size(); ++d) text += (d ? ", " : "") + std::to_string(dims[d]);
            return text;
        }() + ")";
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
            fail("images in " + stream_->name() + " have shape " + given + " but model " + quoted(model_path) +
                 format(" expects (n, %" PRId64 ", %" PRId64 ", %" PRId64 ") or (%" PRId64 ", %" PRId64 ", %" PRId64 ")",
                        h, w, c, h, w, c) + one_channel);
        }
        if (count_ == 0) fail("images file " + stream_->name() + " holds no images (shape " + given + ")");
        check_size(prefix + header_length, format("%" PRIu64 " images of ", count_) + shape_text(h, w, c) + " " +
                                               element_name(element_));
    }

    // The text of one value of the .npy header's Python dict literal.
    std::string npy_field(const std::string& header, const std::string& key) const {
        const std::string quoted_key = "'" + key + "'";
        size_t at = header.find(quoted_key);
        if (at == std::string::npos) fail("images file " + stream_->name() + ": the .npy header has no " + quoted_key);
        at = header.find(':', at);
        if (at == std::string::npos) fail("images file " + stream_->name() + ": malformed .npy header");
        ++at;
        while (at < header.size() && header[at] == ' ') ++at;
        size_t end = at;
        if (at < header.size() && header[at] == '\'') {
            end = header.find('\'', at + 1);
            if (end == std::string::npos) fail("images file " + stream_->name() + ": malformed .npy header");
            return header.substr(at + 1, end - at - 1);
        }
        if (at < header.size() && header[at] == '(') {
            end = header.find(')', at);
            if (end == std::string::npos) fail("images file " + stream_->name() + ": malformed .npy header");
            return header.substr(at, end - at + 1);
        }
        while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
        return header.substr(at, end - at);
    }

    void parse_descr(const std::string& descr) {
        bool ok = descr.size() >= 3;
        char order = ok ? descr[0] : '?';
        const std::string type = ok ? descr.substr(1) : "";
        big_endian_ = order == '>';
        ok = ok && (order == '<' || order == '>' || order == '|' || order == '=');
        if (type == "u1") element_ = Element::U8;
        else if (type == "i1") element_ = Element::I8;
        else if (type == "i2") element_ = Element::I16;
        else if (type == "u2") element_ = Element::U16;
        else if (type == "i4") element_ = Element::I32;
        else if (type == "u4") element_ = Element::U32;
        else if (type == "i8") element_ = Element::I64;
        else if (type == "u8") element_ = Element::U64;
        else if (type == "f4") element_ = Element::F32;
        else if (type == "f8") element_ = Element::F64;
        else ok = false;
        if (!ok)
            fail("images file " + stream_->name() + " has .npy dtype " + quoted(descr) +
                 "; expected uint8 pixels, another integer type holding 0..255, or float32/float64 "
                 "values in [0, 1]");
    }

    std::unique_ptr<Stream> stream_;
    Checks checks_;
    int32_t shape_[3];
    Element element_ = Element::U8;
    bool big_endian_ = false;
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

// Labels read alongside the images: IDX1 uint8 (plain or gzipped) or a 1-D integer .npy.
class LabelSource {
public:
    LabelSource(const std::string& path, uint64_t image_count, const std::string& images_shown)
        : stream_(new Stream(path, "labels")) {
        uint8_t header[8];
        size_t got = stream_->read_some(header, 8);
        if (got >= 6 && std::memcmp(header, "\x93NUMPY", 6) == 0) {
            stream_->unread(header, got);
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

    void skip(uint64_t n) { stream_->skip(n * element_size(element_), "the labels"); next_ += n; }

    // The next n labels; each must name a class of the model.
    void read(int32_t n, int32_t classes, std::vector<int32_t>& out) {
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

private:
    void open_npy() {
        // Reuse the header parsing of the image reader by hand: a 1-D integer array.
        uint8_t prefix[10];
        stream_->read_exact(prefix, 8, "the .npy header");
        uint32_t header_length;
        if (prefix[6] == 1) {
            stream_->read_exact(prefix + 8, 2, "the .npy header");
            header_length = uint32_t(prefix[8]) | (uint32_t(prefix[9]) << 8);
        } else {
            uint8_t b[4];
            stream_->read_exact(b, 4, "the .npy header");
            header_length = little_endian_u32(b);
        }
        if (header_length > (1u << 20)) fail("labels file " + stream_->name() + " has an oversized .npy header");
        std::string header(header_length, '\0');
        stream_->read_exact(&header[0], header_length, "the .npy header");
        auto field = [&](const char* key) {
            size_t at = header.find(std::string("'") + key + "'");
            if (at == std::string::npos) fail("labels file " + stream_->name() + ": malformed .npy header");
            at = header.find(':', at) + 1;
            while (at < header.size() && header[at] == ' ') ++at;
            size_t end = at;
            if (header[at] == '\'') return header.substr(at + 1, header.find('\'', at + 1) - at - 1);
            if (header[at] == '(') return header.substr(at, header.find(')', at) - at + 1);
            while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
            return header.substr(at, end - at);
        };
        const std::string descr = field("descr"), shape = field("shape");
        const std::string type = descr.size() >= 3 ? descr.substr(1) : "";
        big_endian_ = !descr.empty() && descr[0] == '>';
        if (type == "u1") element_ = Element::U8;
        else if (type == "i1") element_ = Element::I8;
        else if (type == "i2") element_ = Element::I16;
        else if (type == "u2") element_ = Element::U16;
        else if (type == "i4") element_ = Element::I32;
        else if (type == "u4") element_ = Element::U32;
        else if (type == "i8") element_ = Element::I64;
        else if (type == "u8") element_ = Element::U64;
        else fail("labels file " + stream_->name() + " has .npy dtype " + quoted(descr) + "; expected integers");
        // "(n,)" : exactly one dimension.
        unsigned long long n = 0;
        int dims = 0;
        for (size_t i = 0; i < shape.size(); ++i)
            if (std::isdigit(static_cast<unsigned char>(shape[i]))) {
                n = std::strtoull(shape.c_str() + i, nullptr, 10);
                ++dims;
                while (i + 1 < shape.size() && std::isdigit(static_cast<unsigned char>(shape[i + 1]))) ++i;
            }
        if (dims != 1 || field("fortran_order") != "False")
            fail("labels file " + stream_->name() + " has .npy shape " + shape + "; expected one dimension (n,)");
        count_ = n;
    }

    std::unique_ptr<Stream> stream_;
    Element element_ = Element::U8;
    bool big_endian_ = false;
    uint64_t count_ = 0, next_ = 0;
    std::vector<uint8_t> raw_;
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
    int32_t time_steps = 0;
    float divisor = 0;
    std::string metadata;
    std::vector<ttfs_layer_info> layers;
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
    if ((status = ttfs_model_time_steps(model, &info.time_steps)) != TTFS_OK)
        library_failure("cannot get the time steps of " + quoted(path), status);
    if ((status = ttfs_model_input_divisor(model, &info.divisor)) != TTFS_OK)
        library_failure("cannot get the input divisor of " + quoted(path), status);
    const char* metadata = nullptr;
    if ((status = ttfs_model_metadata(model, &metadata)) != TTFS_OK)
        library_failure("cannot get the metadata of " + quoted(path), status);
    info.metadata = metadata ? metadata : "";
    info.output_layer = layer_count - 1;
    for (int32_t i = 0; i < layer_count; ++i) {
        ttfs_layer_info layer;
        std::memset(&layer, 0, sizeof layer);
        layer.struct_size = sizeof layer;
        if ((status = ttfs_model_layer_info(model, i, &layer)) != TTFS_OK)
            library_failure(format("cannot describe layer %d of ", i) + quoted(path), status);
        info.layers.push_back(layer);
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
    if (options.allow_unscaled) flags |= TTFS_SESSION_ALLOW_UNSCALED;
    ttfs_session_options session_options{};
    session_options.struct_size = sizeof session_options;
    session_options.flags = flags;
    session_options.max_memory_bytes = options.max_memory_bytes;
    session_options.max_work_per_image = options.max_work_per_image;
    ttfs_status status =
        ttfs_session_create_ex(model, options.backend, engine, max_batch, &session_options, &session);
    if (status == TTFS_ERR_UNSUPPORTED && !options.engine_given && engine == TTFS_ENGINE_ANALYTIC) {
        // The default engine cannot run overlapping windows; the stepped engine gives the same
        // answers where both apply, so use it rather than refuse a model the user did not
        // pick an engine for.
        std::string why = ttfs_last_error();
        std::fprintf(stderr, "ttfs-infer: note: using the stepped engine: %s\n", why.c_str());
        engine = TTFS_ENGINE_STEPPED;
        status = ttfs_session_create_ex(model, options.backend, engine, max_batch,
                                        &session_options, &session);
    }
    if (status == TTFS_ERR_LIMIT) {
        // The library names its own option fields; say which of ours raises the limit.
        std::string why = ttfs_last_error();
        fail(format("cannot create a %s session (engine %s, batch %d) for ",
                    backend_name(options.backend), engine_name(engine), max_batch) +
             quoted(options.model_path) + ": TTFS_ERR_LIMIT: " + why +
             " (ttfs-infer: --max-memory BYTES raises the memory limit, --max-work OPS the work "
             "limit; a smaller --batch needs less memory)");
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
double run_batch(ttfs_session* session, ImageSource& images, uint64_t first, int32_t n,
                 std::vector<uint8_t>& u8_pixels, std::vector<float>& f32_pixels,
                 std::vector<int32_t>& predictions, std::vector<float>& potentials, int32_t classes) {
    predictions.resize(size_t(n));
    potentials.resize(size_t(n) * size_t(classes));
    images.read(n, u8_pixels, f32_pixels);
    ttfs_status status;
    const auto start = std::chrono::steady_clock::now();
    if (images.pixels() == Pixels::U8) {
        status = ttfs_session_run_u8(session, u8_pixels.data(), u8_pixels.size(), n, predictions.data(),
                                     predictions.size(), potentials.data(), potentials.size());
    } else {
        status = ttfs_session_run_f32(session, f32_pixels.data(), f32_pixels.size(), n, predictions.data(),
                                      predictions.size(), potentials.data(), potentials.size());
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (status != TTFS_OK)
        library_failure(format("running images %" PRIu64 "..%" PRIu64 " failed", first, first + uint64_t(n) - 1),
                        status);
    return seconds;
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

// Checks that text is one JSON value (the model's metadata is free-form and unchecked by the
// library): used to embed it in --info --json as an object rather than as a string.
class JsonCheck {
public:
    explicit JsonCheck(const std::string& text) : s_(text) {}
    bool valid() {
        space();
        if (!value(0)) return false;
        space();
        return i_ == s_.size();
    }

private:
    void space() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
    }
    bool literal(const char* word) {
        size_t n = std::strlen(word);
        if (s_.compare(i_, n, word) != 0) return false;
        i_ += n;
        return true;
    }
    bool string() {
        if (i_ >= s_.size() || s_[i_] != '"') return false;
        for (++i_; i_ < s_.size(); ++i_) {
            unsigned char ch = static_cast<unsigned char>(s_[i_]);
            if (ch == '"') { ++i_; return true; }
            if (ch < 0x20) return false;
            if (ch == '\\') {
                if (++i_ >= s_.size()) return false;
                if (s_[i_] == 'u') {
                    for (int k = 0; k < 4; ++k)
                        if (++i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_]))) return false;
                } else if (!std::strchr("\"\\/bfnrt", s_[i_])) {
                    return false;
                }
            }
        }
        return false;
    }
    bool number() {
        size_t start = i_;
        if (i_ < s_.size() && s_[i_] == '-') ++i_;
        size_t digits = i_;
        while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
        if (i_ == digits) return false;
        if (i_ < s_.size() && s_[i_] == '.') {
            size_t fraction = ++i_;
            while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
            if (i_ == fraction) return false;
        }
        if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
            ++i_;
            if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
            size_t exponent = i_;
            while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
            if (i_ == exponent) return false;
        }
        return i_ > start;
    }
    bool value(int depth) {
        if (depth > 64 || i_ >= s_.size()) return false;
        char ch = s_[i_];
        if (ch == '{' || ch == '[') {
            const char close = ch == '{' ? '}' : ']';
            ++i_;
            space();
            if (i_ < s_.size() && s_[i_] == close) { ++i_; return true; }
            for (;;) {
                space();
                if (ch == '{') {
                    if (!string()) return false;
                    space();
                    if (i_ >= s_.size() || s_[i_] != ':') return false;
                    ++i_;
                    space();
                }
                if (!value(depth + 1)) return false;
                space();
                if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
                if (i_ < s_.size() && s_[i_] == close) { ++i_; return true; }
                return false;
            }
        }
        if (ch == '"') return string();
        if (ch == 't') return literal("true");
        if (ch == 'f') return literal("false");
        if (ch == 'n') return literal("null");
        return number();
    }
    const std::string& s_;
    size_t i_ = 0;
};

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
    out += ", \"output\": " + (options.output_path.empty() ? std::string("null") : json_string(options.output_path));
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

void print_spikes_table(std::FILE* out, const ModelInfo& info, const SetSummary& summary) {
    size_t width = 5;
    for (const NeuronLayer& layer : info.neuron_layers) width = std::max(width, layer.name.size());
    std::fprintf(out, "spikes per image:\n");
    for (size_t l = 0; l < info.neuron_layers.size(); ++l)
        std::fprintf(out, "  %-*s  %.2f\n", int(width), info.neuron_layers[l].name.c_str(),
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

// One row per image for --output: CSV or JSON Lines, written as each batch finishes.
class RowWriter {
public:
    RowWriter(const Options& options, const ModelInfo& info, bool files, bool labelled)
        : path_(options.output_path), info_(info), files_(files), labelled_(labelled) {
        jsonl_ = ends_with(lower(path_), ".jsonl");
        top_k_ = std::min(options.top_k, info.classes);
        if (options.top_k_given && options.top_k > info.classes)
            usage_error(format("--top-k %d is more than the model's %d classes", options.top_k, info.classes));
        if (path_ == "-") {
            out_ = stdout;
        } else {
            out_ = std::fopen(path_.c_str(), "w");
            if (!out_) fail("cannot write output file " + quoted(path_) + ": " + std::strerror(errno));
        }
        const ttfs_layer_info& output = info.layers.back();
        fire_start_ = output.fire_window[0];
        tau_ = output.tau_fire;
        td_ = output.td_fire;
        vth0_ = output.vth0;
        if (!jsonl_) {
            std::string header = "index";
            if (files_) header += ",file";
            header += ",prediction,confidence";
            for (int32_t k = 1; k <= top_k_; ++k) header += format(",class_%d,score_%d", k, k);
            if (labelled_) header += ",label,correct";
            std::fprintf(out_, "%s\n", header.c_str());
        }
    }
    ~RowWriter() {
        if (out_ && out_ != stdout) std::fclose(out_);
    }

    bool needs_spike_times() const { return info_.readout == TTFS_READOUT_FIRST_SPIKE; }

    // A class's score: its potential, or (first_spike readout) for a class that fired, the
    // threshold at its spike step: the value that spike time codes (docs/ALGORITHM.md).
    float score(const float* potentials, const int32_t* times, int32_t k) const {
        if (times && times[k] >= 0)
            return vth0_ * std::exp(-(float(times[k] - fire_start_) - td_) / tau_);
        return potentials[k];
    }

    void write(uint64_t index, const std::string& file, int32_t prediction, const float* potentials,
               const int32_t* times, int32_t label) {
        scores_.resize(size_t(info_.classes));
        order_.resize(size_t(info_.classes));
        for (int32_t k = 0; k < info_.classes; ++k) scores_[size_t(k)] = score(potentials, times, k);
        std::iota(order_.begin(), order_.end(), 0);
        // Highest score first; ties by the lower class, as the prediction breaks them.
        std::stable_sort(order_.begin(), order_.end(), [&](int32_t a, int32_t b) {
            return scores_[size_t(a)] > scores_[size_t(b)];
        });
        double top = -std::numeric_limits<double>::infinity();
        for (float v : scores_) top = std::max(top, double(v));
        double total = 0;
        for (float v : scores_) total += std::exp(double(v) - top);
        const double confidence = std::exp(double(scores_[size_t(prediction)]) - top) / total;
        std::string line;
        if (jsonl_) {
            line = format("{\"index\": %" PRIu64, index);
            if (files_) line += ", \"file\": " + json_string(file);
            line += format(", \"prediction\": %d, \"confidence\": ", prediction) + json_number(confidence);
            line += ", \"top_k\": [";
            for (int32_t k = 0; k < top_k_; ++k) {
                const int32_t cls = order_[size_t(k)];
                line += (k ? ", " : "") + format("{\"class\": %d, \"score\": ", cls) + json_float32(scores_[size_t(cls)]) + "}";
            }
            line += "]";
            if (labelled_) line += format(", \"label\": %d, \"correct\": %s", label, label == prediction ? "true" : "false");
            line += "}";
        } else {
            line = format("%" PRIu64, index);
            if (files_) line += "," + csv_field(file);
            line += format(",%d,", prediction) + format("%.9g", confidence);
            for (int32_t k = 0; k < top_k_; ++k) {
                const int32_t cls = order_[size_t(k)];
                line += format(",%d,%.9g", cls, double(scores_[size_t(cls)]));
            }
            if (labelled_) line += format(",%d,%d", label, label == prediction ? 1 : 0);
        }
        if (std::fprintf(out_, "%s\n", line.c_str()) < 0)
            fail("cannot write output file " + quoted(path_) + ": " + std::strerror(errno));
    }

    void finish() {
        if (std::fflush(out_) != 0 || std::ferror(out_))
            fail("cannot write output file " + quoted(path_) + ": " + std::strerror(errno));
        if (out_ != stdout) {
            std::FILE* file = out_;
            out_ = nullptr;
            if (std::fclose(file) != 0) fail("cannot write output file " + quoted(path_) + ": " + std::strerror(errno));
        }
    }

private:
    static std::string csv_field(const std::string& text) {
        if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
        std::string out = "\"";
        for (char ch : text) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
        return out + "\"";
    }

    std::string path_;
    const ModelInfo& info_;
    bool files_, labelled_, jsonl_ = false;
    int32_t top_k_ = 1;
    std::FILE* out_ = nullptr;
    int32_t fire_start_ = 0;
    float tau_ = 1, td_ = 0, vth0_ = 1;
    std::vector<float> scores_;
    std::vector<int32_t> order_;
};

// ---- The modes ---------------------------------------------------------------------------------

// Where the summary goes: standard output, unless the per-image rows are going there.
std::FILE* report_stream(const Options& options) { return options.output_path == "-" ? stderr : stdout; }

std::string images_shown(const Options& options) {
    return options.images_path == "-" ? std::string("standard input") : quoted(options.images_path);
}

int run_single(const ttfs_model* model, const ModelInfo& info, const Options& options, ImageSource& images,
               LabelSource* labels) {
    uint64_t index = options.has_index ? options.index : 0;
    if (images.single() && index != 0)
        fail(format("--index %" PRIu64 " is out of range: ", index) + images_shown(options) +
             " holds one image (index 0)");
    if (index >= images.count())
        fail(format("--index %" PRIu64 " is out of range: ", index) + images_shown(options) +
             format(" holds %" PRIu64 " images (0 .. %" PRIu64 ")", images.count(), images.count() - 1));
    bool first_spike = info.readout == TTFS_READOUT_FIRST_SPIKE;
    Runner runner = create_runner(model, options, 1,
                                  first_spike || options.json ? TTFS_SESSION_RECORD_SPIKE_TIMES : 0u);
    std::unique_ptr<RowWriter> rows;
    if (!options.output_path.empty()) rows.reset(new RowWriter(options, info, images.has_files(), labels != nullptr));

    std::vector<uint8_t> u8_pixels;
    std::vector<float> f32_pixels, potentials;
    std::vector<int32_t> predictions, counts;
    SetSummary summary;
    summary.n = 1;
    summary.spike_totals.assign(info.neuron_layers.size(), 0);
    images.skip(index);
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
        std::vector<int32_t> label_values;
        labels->skip(index);
        labels->read(1, info.classes, label_values);
        label = label_values[0];
        summary.labelled = true;
        summary.correct = predictions[0] == label;
    }
    if (rows) {
        rows->write(index, images.file_of(index), predictions[0], potentials.data(),
                    first_spike ? spike_times.data() : nullptr, label);
        rows->finish();
    }

    std::FILE* out = report_stream(options);
    if (options.json) {
        std::string text = "{" + common_json_fields(options, info, runner, summary) +
                           efficiency_json_fields(model, info, runner, summary, efficiency);
        text += format(", \"index\": %" PRIu64 ", \"predicted\": %d", index, predictions[0]);
        text += ", \"label\": " + (label >= 0 ? format("%d", label) : std::string("null"));
        text += ", \"potentials\": [";
        for (int32_t k = 0; k < info.classes; ++k) text += (k ? ", " : "") + json_float32(potentials[size_t(k)]);
        text += "], \"spike_times\": ";
        if (first_spike) {
            text += "[";
            for (int32_t k = 0; k < info.classes; ++k) text += (k ? ", " : "") + format("%d", spike_times[size_t(k)]);
            text += "]";
        } else {
            text += "null";  // the output layer never fires under vmem readout
        }
        std::fprintf(out, "%s}\n", text.c_str());
        return kExitOk;
    }

    std::fprintf(out, "model: %s\n", options.model_path.c_str());
    const std::string file = images.file_of(index);
    if (images.single())
        std::fprintf(out, "image: %s\n", options.images_path == "-" ? "standard input" : options.images_path.c_str());
    else
        std::fprintf(out, "image: %s [index %" PRIu64 " of %" PRIu64 "%s%s]\n",
                     options.images_path == "-" ? "standard input" : options.images_path.c_str(), index, images.count(),
                     file.empty() ? "" : ", ", file.c_str());
    std::fprintf(out, "backend: %s\nengine: %s\nreadout: %s\n", backend_name(runner.backend), engine_name(runner.engine),
                 readout_name(info.readout));
    std::fprintf(out, "class  potential%s\n", first_spike ? "        first spike" : "");
    for (int32_t k = 0; k < info.classes; ++k) {
        if (!first_spike) {
            std::fprintf(out, "%5d  %.9g\n", k, double(potentials[size_t(k)]));
        } else if (spike_times[size_t(k)] >= 0) {
            std::fprintf(out, "%5d  %-15.9g  %d\n", k, double(potentials[size_t(k)]), spike_times[size_t(k)]);
        } else {
            std::fprintf(out, "%5d  %-15.9g  none\n", k, double(potentials[size_t(k)]));
        }
    }
    if (first_spike && summary.no_output_spike)
        std::fprintf(out, "no output spike: prediction from the largest potential\n");
    print_spikes_table(out, info, summary);
    std::fprintf(out, "predicted class: %d\n", predictions[0]);
    if (label >= 0) std::fprintf(out, "label: %d\n", label);
    return kExitOk;
}

int run_set(const ttfs_model* model, const ModelInfo& info, const Options& options, ImageSource& images,
            LabelSource* labels) {
    const uint64_t total = images.count();
    const int32_t batch = int32_t(std::min<uint64_t>(uint64_t(options.batch), total));
    std::unique_ptr<RowWriter> rows;
    if (!options.output_path.empty()) rows.reset(new RowWriter(options, info, images.has_files(), labels != nullptr));
    // Per-image scores under first_spike readout need the output layer's spike times; the
    // efficiency figures of --json need every layer's.
    const bool record = rows && rows->needs_spike_times();
    Runner runner = create_runner(model, options, batch,
                                  record || options.json ? TTFS_SESSION_RECORD_SPIKE_TIMES : 0u);
    const bool progress = isatty(STDERR_FILENO) != 0;
    ttfs_efficiency::Counter efficiency(model);

    std::vector<uint8_t> u8_pixels;
    std::vector<float> f32_pixels, potentials;
    std::vector<int32_t> predictions, counts, label_values, spike_times;
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
            labels->read(n, info.classes, label_values);
            for (int32_t i = 0; i < n; ++i) summary.correct += predictions[size_t(i)] == label_values[size_t(i)];
        }
        if (rows) {
            if (record) {
                spike_times.resize(size_t(n) * size_t(info.classes));
                ttfs_status status = ttfs_session_spike_times(runner.session.get(), info.output_layer,
                                                              spike_times.data(), spike_times.size());
                if (status != TTFS_OK) library_failure("cannot read the output layer's spike times", status);
            }
            for (int32_t i = 0; i < n; ++i) {
                const uint64_t index = first + uint64_t(i);
                rows->write(index, images.file_of(index), predictions[size_t(i)],
                            potentials.data() + size_t(i) * size_t(info.classes),
                            record ? spike_times.data() + size_t(i) * size_t(info.classes) : nullptr,
                            labels ? label_values[size_t(i)] : -1);
            }
        }
        summary.n += uint64_t(n);
        if (progress) {
            std::fprintf(stderr, "\rttfs-infer: %" PRIu64 " / %" PRIu64 " images", summary.n, total);
            std::fflush(stderr);
        }
    }
    if (progress) std::fprintf(stderr, "\r%60s\r", "");  // leave the terminal clean
    images.check_end();
    if (rows) rows->finish();

    std::FILE* out = report_stream(options);
    if (options.json) {
        std::fprintf(out, "{%s%s, \"batch\": %d}\n", common_json_fields(options, info, runner, summary).c_str(),
                     efficiency_json_fields(model, info, runner, summary, efficiency).c_str(), batch);
        return kExitOk;
    }
    std::fprintf(out, "model: %s\n", options.model_path.c_str());
    std::fprintf(out, "images: %s (%s)\n", options.images_path == "-" ? "standard input" : options.images_path.c_str(),
                 images.description().c_str());
    std::fprintf(out, "backend: %s\nengine: %s\nreadout: %s\n", backend_name(runner.backend), engine_name(runner.engine),
                 readout_name(info.readout));
    std::fprintf(out, "n: %" PRIu64 "\n", summary.n);
    if (summary.labelled)
        std::fprintf(out, "accuracy: %.2f %% (%" PRIu64 " of %" PRIu64 ")\n",
                     100.0 * double(summary.correct) / double(summary.n), summary.correct, summary.n);
    std::fprintf(out, "images per second: %.1f (inference only, batch %d)\n", images_per_second(summary), batch);
    print_spikes_table(out, info, summary);
    if (info.readout == TTFS_READOUT_FIRST_SPIKE)
        std::fprintf(out, "no output spike: %" PRIu64 " of %" PRIu64 " images (predicted from the largest potential)\n",
                     summary.no_output_spike, summary.n);
    if (!options.output_path.empty() && options.output_path != "-")
        std::fprintf(out, "per-image results: %s\n", options.output_path.c_str());
    return kExitOk;
}

// ---- --info ----------------------------------------------------------------------------------

const char* kind_name(int32_t kind) {
    switch (kind) {
        case TTFS_LAYER_INPUT: return "input";
        case TTFS_LAYER_CONV2D: return "conv2d";
        case TTFS_LAYER_MAXPOOL: return "maxpool";
        case TTFS_LAYER_FLATTEN: return "flatten";
        case TTFS_LAYER_DENSE: return "dense";
        default: return "?";
    }
}
const char* pool_mode_name(int32_t mode) {
    switch (mode) {
        case 0: return "or";
        case 1: return "earliest";
        case 2: return "gated";
        default: return "?";
    }
}

struct FileFacts {
    uint32_t version = 0, crc = 0;
    uint64_t size = 0;
};

// The file's format version and stored CRC-32 (docs/FORMAT.md: offset 8, and the last four
// bytes), read from the file itself; the library has already validated both.
FileFacts file_facts(const std::string& path) {
    FileFacts facts;
    Stream stream(path, "model");
    std::vector<uint8_t> bytes = stream.read_rest(uint64_t(1) << 40);
    if (bytes.size() < 16) fail("model file " + quoted(path) + " changed while it was read");
    facts.size = bytes.size();
    facts.version = little_endian_u32(bytes.data() + 8);
    facts.crc = little_endian_u32(bytes.data() + bytes.size() - 4);
    return facts;
}

bool windowed(const ttfs_layer_info& layer) { return layer.kind == TTFS_LAYER_CONV2D || layer.kind == TTFS_LAYER_MAXPOOL; }
bool has_neurons(const ttfs_layer_info& layer) {
    return layer.kind == TTFS_LAYER_INPUT || layer.kind == TTFS_LAYER_CONV2D || layer.kind == TTFS_LAYER_DENSE;
}

int run_info(const ModelInfo& info, const Options& options) {
    const FileFacts facts = file_facts(options.model_path);
    if (options.json) {
        std::string out = "{\"model\": " + json_string(options.model_path);
        out += format(", \"format_version\": %u, \"crc32\": \"0x%08x\", \"file_size\": %" PRIu64, facts.version,
                      facts.crc, facts.size);
        out += format(", \"time_steps\": %d, \"readout\": ", info.time_steps) + json_string(readout_name(info.readout));
        out += format(", \"input_shape\": [%d, %d, %d], \"input_divisor\": ", info.input_shape[0], info.input_shape[1],
                      info.input_shape[2]) + json_float32(info.divisor);
        out += format(", \"classes\": %d, \"layers\": [", info.classes);
        for (size_t i = 0; i < info.layers.size(); ++i) {
            const ttfs_layer_info& l = info.layers[i];
            out += (i ? ", " : "") + std::string("{\"name\": ") + json_string(l.name ? l.name : "");
            out += ", \"kind\": " + json_string(kind_name(l.kind)) + format(", \"depth\": %d", l.depth);
            out += format(", \"shape\": [%d, %d, %d]", l.shape[0], l.shape[1], l.shape[2]);
            if (windowed(l)) {
                out += format(", \"kernel\": [%d, %d], \"stride\": [%d, %d], \"padding\": ", l.kernel[0], l.kernel[1],
                              l.stride[0], l.stride[1]) + json_string(l.padding == TTFS_PADDING_SAME ? "same" : "valid");
            }
            if (l.kind == TTFS_LAYER_MAXPOOL) out += ", \"pool_mode\": " + json_string(pool_mode_name(l.pool_mode));
            if (has_neurons(l)) {
                out += ", \"tau_fire\": " + json_float32(l.tau_fire) + ", \"td_fire\": " + json_float32(l.td_fire);
                out += ", \"tau_integ\": " + json_float32(l.tau_integ) + ", \"td_integ\": " + json_float32(l.td_integ);
                out += ", \"vth0\": " + json_float32(l.vth0);
                out += format(", \"integ_window\": [%d, %d], \"fire_window\": [%d, %d]", l.integ_window[0],
                              l.integ_window[1], l.fire_window[0], l.fire_window[1]);
            }
            out += "}";
        }
        out += "], \"metadata\": ";
        if (info.metadata.empty()) out += "{}";
        else if (JsonCheck(info.metadata).valid()) out += info.metadata;
        else out += json_string(info.metadata);
        std::printf("%s}\n", out.c_str());
        return kExitOk;
    }
    std::printf("model: %s\n", options.model_path.c_str());
    std::printf("file: format version %u, %" PRIu64 " bytes, CRC-32 0x%08x\n", facts.version, facts.size, facts.crc);
    std::printf("input: %s, uint8 pixels divided by %.9g\n",
                shape_text(info.input_shape[0], info.input_shape[1], info.input_shape[2]).c_str(), double(info.divisor));
    std::printf("classes: %d\nreadout: %s\ntime steps: %d\n", info.classes, readout_name(info.readout), info.time_steps);
    size_t name_width = 4;
    for (const ttfs_layer_info& l : info.layers) name_width = std::max(name_width, std::strlen(l.name ? l.name : ""));
    std::printf("layers:\n  %-3s %-*s  %-7s  %-11s  %-26s  %-10s  %-10s  %s\n", "#", int(name_width), "name", "kind",
                "output", "kernel/stride/padding", "integrate", "fire", "tau_fire td_fire tau_integ td_integ vth0");
    for (size_t i = 0; i < info.layers.size(); ++i) {
        const ttfs_layer_info& l = info.layers[i];
        std::string window = "-";
        if (windowed(l))
            window = format("%dx%d /%dx%d %s", l.kernel[0], l.kernel[1], l.stride[0], l.stride[1],
                            l.padding == TTFS_PADDING_SAME ? "same" : "valid");
        if (l.kind == TTFS_LAYER_MAXPOOL) window += std::string(" ") + pool_mode_name(l.pool_mode);
        std::string integrate = "-", fire = "-", constants = "-";
        if (has_neurons(l)) {
            integrate = l.kind == TTFS_LAYER_INPUT ? std::string("t=0") : format("[%d,%d)", l.integ_window[0], l.integ_window[1]);
            fire = format("[%d,%d)", l.fire_window[0], l.fire_window[1]);
            constants = format("%.9g %.9g %.9g %.9g %.9g", double(l.tau_fire), double(l.td_fire), double(l.tau_integ),
                               double(l.td_integ), double(l.vth0));
        }
        std::printf("  %-3zu %-*s  %-7s  %-11s  %-26s  %-10s  %-10s  %s\n", i, int(name_width), l.name ? l.name : "",
                    kind_name(l.kind), shape_text(l.shape[0], l.shape[1], l.shape[2]).c_str(), window.c_str(),
                    integrate.c_str(), fire.c_str(), constants.c_str());
    }
    if (info.readout == TTFS_READOUT_VMEM)
        std::printf("  (vmem readout: the output layer integrates but never fires)\n");
    std::printf("metadata: %s\n", info.metadata.empty() ? "(none)" : info.metadata.c_str());
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
    if (options.info) return run_info(info, options);

    std::unique_ptr<ImageSource> images = open_images(options, info.input_shape);
    std::unique_ptr<LabelSource> labels;
    if (!options.labels_path.empty())
        labels.reset(new LabelSource(options.labels_path, images->count(), images_shown(options)));

    if (images->single() || options.has_index) return run_single(model.get(), info, options, *images, labels.get());
    return run_set(model.get(), info, options, *images, labels.get());
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
