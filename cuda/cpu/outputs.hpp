// One image's results, from a workspace into the session's buffers (docs/ENGINES.md,
// "Outputs"): spike counts, spike times, output potentials and the prediction.

#pragma once

#include <cstdint>

#include "backend.hpp"
#include "cpu/workspace.hpp"

namespace ttfs {
namespace cpu {

// Writes image `image`'s results from `ws`. Returns the index of an output potential that is
// not a finite number, or -1 (the loader's bound makes that impossible; the caller reports it
// as a bug rather than passing on a NaN and a class-0 prediction).
int32_t write_image_outputs(const Model& model, const Workspace& ws, int32_t image,
                            const RunOutputs& out);

}  // namespace cpu
}  // namespace ttfs
