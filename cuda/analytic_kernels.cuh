// The analytic engine on the GPU (docs/ENGINES.md, "Analytic engine"): each layer computed
// once, in file order, one thread per (image, unit). Every launcher enqueues on `stream` and
// returns the launch's cudaError_t (cudaSuccess or the error cudaGetLastError reports).
#pragma once

#include <cuda_runtime.h>

#include "device_layer.cuh"

namespace ttfs {
namespace gpu {

// Input layer: first_spike[image * size + pixel] = fire_start + first_crossing(x, table), or -1.
cudaError_t launch_input_first_spikes(const DeviceLayer& input, const float* images,
                                      int32_t images_count, int32_t* first_spike,
                                      cudaStream_t stream);

// maxpool: out_steps[image][unit][out_capacity] = the steps the unit relays (`or`: the sorted
// distinct spike steps of its children; `earliest`: the earliest one), padded with -1.
// out_capacity must be at least the number of distinct steps a unit can relay.
cudaError_t launch_pool_spike_steps(const DeviceLayer& pool, SpikeSteps below,
                                    int32_t images_count, int32_t* out_steps,
                                    int32_t out_capacity, cudaStream_t stream);

// conv2d / dense: the closed-form potential of every neuron and its first-spike time (-1 =
// none). potential may be nullptr (only the output layer's is needed); a neuron that fired
// reports 0. trace: the output trace's rows (the output layer), or none (count 0). The threads
// read the weights from global memory: consecutive threads are consecutive output channels,
// so a warp's reads of one weight row are coalesced. (Copying a layer's weights into shared
// memory first was measured slower on an H200, 0.7-0.87x: it limits the blocks per
// multiprocessor; docs/GPU.md.)
cudaError_t launch_neuron_layer_analytic(const DeviceLayer& layer, SpikeSteps below,
                                         int32_t images_count, int32_t* first_spike,
                                         float* potential, const TraceRows& trace,
                                         cudaStream_t stream);

}  // namespace gpu
}  // namespace ttfs
