// Per-neuron arithmetic shared by the CPU and CUDA backends (host + device).
//
// Both engines and both backends call these functions and nothing else for the arithmetic
// that decides a spike, so stepped == analytic bit for bit and CPU == CUDA wherever the sums
// are formed in the same order. Rules that make that hold:
// - no fused multiply-add: the host build uses -ffp-contract=off, the device path uses the
//   explicitly rounded intrinsics below;
// - every synaptic sum starts at +0.0f and adds presynaptic weights in canonical order
//   (conv2d: kernel row, kernel column, input channel; dense: input index), only for the
//   presynaptic units that spike at that step;
// - thresholds and integration kernels come from the host-computed tables in ttfs::Layer,
//   never from exp() evaluated on the device.
#pragma once

#include <stdint.h>

#if defined(__CUDACC__)
#  define TTFS_HD __host__ __device__ __forceinline__
#else
#  define TTFS_HD inline
#endif

namespace ttfs {

TTFS_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

TTFS_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

// One integration step: v + s * k, rounded after the multiply and after the add.
TTFS_HD float integrate(float membrane, float synaptic_sum, float kernel) {
    return add_rn(membrane, mul_rn(synaptic_sum, kernel));
}

// A neuron fires when its potential reaches the threshold (>=, docs/ALGORITHM.md section 4).
TTFS_HD bool reaches(float membrane, float threshold) { return membrane >= threshold; }

// Index j of the first entry with membrane >= threshold[j], or -1 if none. Used by the
// analytic engine on a complete potential; the stepped engine applies reaches() step by step
// against the same table, which gives the same j.
TTFS_HD int32_t first_crossing(float membrane, const float* threshold, int32_t len) {
    for (int32_t j = 0; j < len; ++j)
        if (reaches(membrane, threshold[j])) return j;
    return -1;
}

// uint8 pixel -> float32, a true division (docs/ALGORITHM.md section 1).
TTFS_HD float scale_pixel(uint8_t byte, float divisor) { return float(byte) / divisor; }

// Output size along one axis for conv2d/maxpool (docs/FORMAT.md): VALID or SAME.
TTFS_HD int32_t output_extent(int32_t in, int32_t kernel, int32_t stride, int32_t same) {
    return same ? (in + stride - 1) / stride : (in - kernel) / stride + 1;
}

// Padding before the first element (TensorFlow SAME: the smaller half goes first).
TTFS_HD int32_t padding_before(int32_t in, int32_t kernel, int32_t stride, int32_t same) {
    if (!same) return 0;
    int32_t out = (in + stride - 1) / stride;
    int32_t total = (out - 1) * stride + kernel - in;
    return total > 0 ? total / 2 : 0;
}

}  // namespace ttfs
