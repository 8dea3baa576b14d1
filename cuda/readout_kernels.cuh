// Per-image summaries computed on the device, so a run never has to copy every layer's
// first-spike times back just to count them.
#pragma once

#include <cuda_runtime.h>
#include <cstdint>

namespace ttfs {
namespace gpu {

// counts[image] = number of entries >= 0 among first_spike[image * layer_size .. + layer_size).
cudaError_t launch_count_spikes(const int32_t* first_spike, int64_t layer_size,
                                int32_t images_count, int32_t* counts, cudaStream_t stream);

}  // namespace gpu
}  // namespace ttfs
