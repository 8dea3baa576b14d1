// cli_info.hpp — `ttfs-infer MODEL --info [--json]`: the model's layers, shapes, windows,
// time constants, pool modes, readout, metadata, file version and checksum. Not part of libttfs.
#pragma once

#include "cli_options.hpp"
#include "cli_session.hpp"

namespace ttfs_cli {

// Prints the description (text, or one JSON object with --json); returns the exit status.
int run_info(const ModelInfo& info, const Options& options);

}  // namespace ttfs_cli
