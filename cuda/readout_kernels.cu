// Spike counting: one block per image, a strided count per thread, then a block reduction.
#include "readout_kernels.cuh"

namespace ttfs {
namespace gpu {

namespace {

constexpr int kCountThreads = 256;

__global__ void count_spikes_kernel(const int32_t* __restrict__ first_spike, int64_t layer_size,
                                    int32_t* __restrict__ counts) {
    const int32_t* image_times = first_spike + int64_t(blockIdx.x) * layer_size;
    int32_t fired = 0;
    for (int64_t i = threadIdx.x; i < layer_size; i += blockDim.x) fired += image_times[i] >= 0 ? 1 : 0;

    for (int offset = 16; offset > 0; offset >>= 1) fired += __shfl_down_sync(0xffffffffu, fired, offset);
    __shared__ int32_t warp_totals[kCountThreads / 32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) warp_totals[warp] = fired;
    __syncthreads();
    if (threadIdx.x == 0) {
        int32_t total = 0;
        for (int w = 0; w < kCountThreads / 32; ++w) total += warp_totals[w];
        counts[blockIdx.x] = total;
    }
}

}  // namespace

cudaError_t launch_count_spikes(const int32_t* first_spike, int64_t layer_size,
                                int32_t images_count, int32_t* counts, cudaStream_t stream) {
    count_spikes_kernel<<<unsigned(images_count), kCountThreads, 0, stream>>>(first_spike, layer_size,
                                                                             counts);
    return cudaGetLastError();
}

}  // namespace gpu
}  // namespace ttfs
