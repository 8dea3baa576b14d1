// The stepped engine's kernels: one time step of one layer, grid-stride loops, one thread per
// (image, unit), over the per-unit functions of engine_units.cuh.
#include "stepped_kernels.cuh"

#include "engine_units.cuh"

namespace ttfs {
namespace gpu {

namespace {

__global__ void input_fire_step_kernel(DeviceLayer input, const float* __restrict__ images,
                                       int64_t total, int32_t t, int32_t* __restrict__ first_spike,
                                       uint8_t* __restrict__ spiked_now) {
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x)
        stepped_input_unit(input, images, idx, t, first_spike, spiked_now);
}

__global__ void pool_relay_step_kernel(DeviceLayer pool, const uint8_t* __restrict__ below_spiked_now,
                                       const int32_t* __restrict__ below_first_spike, int64_t total,
                                       int32_t t, uint8_t* __restrict__ relayed_before,
                                       uint8_t* __restrict__ spiked_now) {
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x)
        stepped_pool_unit(pool, below_spiked_now, below_first_spike, idx, t, relayed_before, spiked_now);
}

__global__ void neuron_step_kernel(DeviceLayer layer, const uint8_t* __restrict__ below_spiked_now,
                                   int64_t total, int32_t t, bool integrate_now, bool fire_now,
                                   float* __restrict__ membrane, int32_t* __restrict__ first_spike,
                                   uint8_t* __restrict__ spiked_now) {
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x)
        stepped_neuron_unit(layer, below_spiked_now, idx, t, integrate_now, fire_now, membrane,
                            first_spike, spiked_now);
}

}  // namespace

cudaError_t launch_input_fire_step(const DeviceLayer& input, const float* images,
                                   int32_t images_count, int32_t t, int32_t* first_spike,
                                   uint8_t* spiked_now, cudaStream_t stream) {
    const int64_t total = int64_t(images_count) * input.out_size();
    input_fire_step_kernel<<<grid_for(total), kThreadsPerBlock, 0, stream>>>(input, images, total, t,
                                                                           first_spike, spiked_now);
    return cudaGetLastError();
}

cudaError_t launch_pool_relay_step(const DeviceLayer& pool, const uint8_t* below_spiked_now,
                                   const int32_t* below_first_spike, int32_t images_count,
                                   int32_t t, uint8_t* relayed_before, uint8_t* spiked_now,
                                   cudaStream_t stream) {
    const int64_t total = int64_t(images_count) * pool.out_size();
    pool_relay_step_kernel<<<grid_for(total), kThreadsPerBlock, 0, stream>>>(
        pool, below_spiked_now, below_first_spike, total, t, relayed_before, spiked_now);
    return cudaGetLastError();
}

cudaError_t launch_neuron_step(const DeviceLayer& layer, const uint8_t* below_spiked_now,
                               int32_t images_count, int32_t t, bool integrate_now, bool fire_now,
                               float* membrane, int32_t* first_spike, uint8_t* spiked_now,
                               cudaStream_t stream) {
    const int64_t total = int64_t(images_count) * layer.out_size();
    neuron_step_kernel<<<grid_for(total), kThreadsPerBlock, 0, stream>>>(
        layer, below_spiked_now, total, t, integrate_now, fire_now, membrane, first_spike, spiked_now);
    return cudaGetLastError();
}

}  // namespace gpu
}  // namespace ttfs
