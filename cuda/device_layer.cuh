// How the CUDA kernels see a layer and the spikes of the layer below it. Shared by the
// analytic and stepped kernel families; the per-neuron arithmetic itself is in ttfs_math.h.
// Host + device (TTFS_HD), so the same code can also be exercised on the host.
#pragma once

#include <cstdint>

#include "ttfs.h"
#include "ttfs_math.h"
#include "window_geometry.h"

namespace ttfs {
namespace gpu {

// One layer, by value in kernel arguments: its window geometry (window_geometry.h, shared with
// the CPU backend: a dense layer is a 1x1 convolution over a 1x1xN input, so that its
// canonical order (input index ascending) and its weight layout [in, out] are exactly those of
// conv2d and one kernel serves both) and its tables. Pointers are device memory owned by the
// CUDA backend (uploaded once at session creation).
struct DeviceLayer : WindowGeometry {
    int32_t kind = 0;  // ttfs_layer_kind
    int32_t pool_mode = 0;  // ttfs_pool_mode
    int32_t integ_start = 0, integ_end = 0, fire_start = 0, fire_len = 0;
    int32_t fires = 0;
    const float* weights = nullptr;         // HWIO (conv2d) or [in, out] (dense)
    const float* bias = nullptr;            // [out_c]
    const float* fire_threshold = nullptr;  // [fire_len], Layer::fire_threshold
    const float* integ_kernel = nullptr;    // [integ_end - integ_start], Layer::integ_kernel
    // `gated` maxpool: the threshold table of the neuron layer below (its children's spike
    // counter at their fire step) and where that layer's fire window starts.
    const float* gate_threshold = nullptr;  // [gate_fire_len]
    int32_t gate_fire_start = 0, gate_fire_len = 0;

    TTFS_HD int64_t in_size() const { return int64_t(in_h) * in_w * in_c; }
    TTFS_HD int64_t out_size() const { return int64_t(out_h) * out_w * out_c; }
};

// Spike steps of every unit of a layer, for the analytic engine: [image][unit][capacity],
// each unit's steps ascending and distinct, padded with -1. A neuron layer's list is its
// first-spike-time array (capacity 1); a maxpool layer's list holds the steps it relays.
struct SpikeSteps {
    const int32_t* steps = nullptr;
    int32_t capacity = 1;
};

// Where the output layer's analytic kernel writes the output trace (RunOutputs::trace_steps):
// rows[r * row_stride + idx] = neuron idx's potential once step steps[r] is complete, for the
// `count` steps (ascending); count 0: no trace (every other layer).
struct TraceRows {
    const int32_t* steps = nullptr;
    int32_t count = 0;
    float* rows = nullptr;
    int64_t row_stride = 0;  // images x classes of the batch
};

// Layer::integrates_at and Layer::kernel_at, reading the uploaded table.
TTFS_HD bool integrates_at(const DeviceLayer& layer, int32_t t) {
    return t == 0 || (t >= layer.integ_start && t < layer.integ_end);
}
TTFS_HD float kernel_at(const DeviceLayer& layer, int32_t t) {
    return t == 0 ? 1.0f : layer.integ_kernel[t - layer.integ_start];
}

// Output neuron idx (image-major, HWC) -> image and output position.
struct NeuronIndex {
    int64_t image;
    int32_t oh, ow, oc;
};
TTFS_HD NeuronIndex split_neuron_index(const DeviceLayer& layer, int64_t idx) {
    const int64_t out_size = layer.out_size();
    NeuronIndex at;
    at.image = idx / out_size;
    int32_t neuron = int32_t(idx - at.image * out_size);
    at.oc = neuron % layer.out_c;
    int32_t position = neuron / layer.out_c;
    at.ow = position % layer.out_w;
    at.oh = position / layer.out_w;
    return at;
}

// Threads per block for the element-wise kernels, and a grid that covers `total` elements
// (the kernels use grid-stride loops, so capping the grid is safe).
constexpr int kThreadsPerBlock = 256;
inline unsigned grid_for(int64_t total) {
    int64_t blocks = (total + kThreadsPerBlock - 1) / kThreadsPerBlock;
    if (blocks < 1) blocks = 1;
    if (blocks > (int64_t(1) << 30)) blocks = int64_t(1) << 30;
    return unsigned(blocks);
}

}  // namespace gpu
}  // namespace ttfs
