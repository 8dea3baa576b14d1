// The analytic engine's kernels: grid-stride loops, one thread per (image, unit), over the
// per-unit functions of engine_units.cuh.
#include "analytic_kernels.cuh"

#include "engine_units.cuh"

namespace ttfs {
namespace gpu {

namespace {

__global__ void input_first_spikes_kernel(DeviceLayer input, const float* __restrict__ images,
                                          int64_t total, int32_t* __restrict__ first_spike) {
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x)
        first_spike[idx] = analytic_input_unit(input, images[idx]);
}

__global__ void pool_spike_steps_kernel(DeviceLayer pool, SpikeSteps below, int64_t total,
                                        int32_t* __restrict__ out_steps, int32_t out_capacity) {
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x)
        analytic_pool_unit(pool, below, idx, out_steps, out_capacity);
}

template <int32_t CHUNK>
__global__ void neuron_layer_analytic_kernel(DeviceLayer layer, SpikeSteps below, int64_t total,
                                             int32_t* __restrict__ first_spike,
                                             float* __restrict__ potential, TraceRows trace) {
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x)
        analytic_neuron_unit<CHUNK>(layer, below, idx, first_spike, potential, trace);
}

}  // namespace

cudaError_t launch_input_first_spikes(const DeviceLayer& input, const float* images,
                                      int32_t images_count, int32_t* first_spike,
                                      cudaStream_t stream) {
    const int64_t total = int64_t(images_count) * input.out_size();
    input_first_spikes_kernel<<<grid_for(total), kThreadsPerBlock, 0, stream>>>(input, images, total,
                                                                              first_spike);
    return cudaGetLastError();
}

cudaError_t launch_pool_spike_steps(const DeviceLayer& pool, SpikeSteps below,
                                    int32_t images_count, int32_t* out_steps,
                                    int32_t out_capacity, cudaStream_t stream) {
    const int64_t total = int64_t(images_count) * pool.out_size();
    pool_spike_steps_kernel<<<grid_for(total), kThreadsPerBlock, 0, stream>>>(pool, below, total,
                                                                            out_steps, out_capacity);
    return cudaGetLastError();
}

cudaError_t launch_neuron_layer_analytic(const DeviceLayer& layer, SpikeSteps below,
                                         int32_t images_count, int32_t* first_spike,
                                         float* potential, const TraceRows& trace,
                                         cudaStream_t stream) {
    const int64_t total = int64_t(images_count) * layer.out_size();
    with_step_chunk(layer, [&](auto chunk) {
        neuron_layer_analytic_kernel<decltype(chunk)::value><<<grid_for(total), kThreadsPerBlock, 0, stream>>>(
            layer, below, total, first_spike, potential, trace);
    });
    return cudaGetLastError();
}

}  // namespace gpu
}  // namespace ttfs
