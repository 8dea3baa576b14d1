// cli_options.hpp — ttfs-infer's command line: the options, their parser and the --help text
// (cli_options.cpp). Not part of libttfs.
#pragma once

#include <cstdint>
#include <string>

#include "cli_common.hpp"
#include "ttfs.h"

namespace ttfs_cli {

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

// Fills `options` from the command line. Returns false when --help or --version has been
// printed (nothing to run); a usage error throws CliError with kExitUsage.
bool parse_options(int argc, char** argv, Options& options);

}  // namespace ttfs_cli
