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

// Shared memory the conv2d/dense kernel may stage a layer's weights in (queried once per
// session; all zero: never stage).
struct WeightStaging {
    size_t most_bytes_per_block = 0;  // cudaDevAttrMaxSharedMemoryPerBlockOptin
    size_t bytes_per_multiprocessor = 0;  // cudaDevAttrMaxSharedMemoryPerMultiprocessor
    int32_t multiprocessors = 0;
};

// conv2d / dense: the closed-form potential of every neuron and its first-spike time (-1 =
// none). potential may be nullptr (only the output layer's is needed); a neuron that fired
// reports 0. trace: the output trace's rows (the output layer), or none (count 0). When the layer's weights fit in `staging`, each block first copies them into
// shared memory and then works through many neurons (a grid of about as many blocks as fit on
// the device at once); otherwise the threads read them from global memory.
cudaError_t launch_neuron_layer_analytic(const DeviceLayer& layer, SpikeSteps below,
                                         int32_t images_count, int32_t* first_spike,
                                         float* potential, const TraceRows& trace,
                                         const WeightStaging& staging, cudaStream_t stream);

}  // namespace gpu
}  // namespace ttfs
