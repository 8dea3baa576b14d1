// cli_options.cpp — ttfs-infer's command line: the usage text (--help) and the parser; see
// cli_options.hpp. A usage error names the option, the value and what was expected.

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "cli_options.hpp"
#include "ttfs.h"

namespace ttfs_cli {

namespace {

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

}  // namespace

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

}  // namespace ttfs_cli
