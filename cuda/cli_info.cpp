// cli_info.cpp — ttfs-infer --info; see cli_info.hpp.

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "cli_info.hpp"
#include "cli_output.hpp"
#include "cli_stream.hpp"
#include "ttfs.h"

namespace ttfs_cli {

namespace {

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

}  // namespace

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

}  // namespace ttfs_cli
