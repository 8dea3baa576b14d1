// The work of one unit (one image's neuron or pool unit) in each engine, host + device. The
// CUDA kernels (analytic_kernels.cu, stepped_kernels.cu) are grid-stride loops over these
// functions; keeping the bodies here lets a host build run exactly the code the GPU runs
// (tests/gpu/emulator), which is how the kernels are checked on machines without a GPU.
//
// Order of float operations: docs/ENGINES.md. Every add and multiply goes through ttfs_math.h.
#pragma once

#include <climits>
#include <cstdint>
#include <type_traits>

#include "device_layer.cuh"

namespace ttfs {
namespace gpu {

// The analytic engine bins a neuron's arrival steps in chunks of consecutive steps and walks
// its presynaptic units once per chunk that holds an arrival (chunks without arrivals are
// skipped). A bigger chunk means fewer passes and more bins per thread to clear and keep; it
// does not limit how many steps or spikes a neuron can receive. On an H200 (docs/GPU.md)
// 128-step chunks ran fastest for 80-step windows and 256-step ones for 240-step windows, so a
// layer whose integration window fits in 128 steps uses 128, any other 256.
// TTFS_ANALYTIC_STEP_CHUNK (1 to 256) sets one size for every layer at build time, for measuring.
constexpr int32_t kLargestStepChunk = 256;  // analytic_neuron_unit()'s bins and mask words
#ifdef TTFS_ANALYTIC_STEP_CHUNK
constexpr int32_t kSmallestStepChunk = TTFS_ANALYTIC_STEP_CHUNK;
#else
constexpr int32_t kSmallestStepChunk = 128;
#endif

// Calls f(std::integral_constant<int32_t, chunk>{}) with the chunk size of the layer's neurons
// (host code: the launcher picks the kernel, the emulator the unit function).
template <typename F>
void with_step_chunk(const DeviceLayer& layer, F&& f) {
#ifdef TTFS_ANALYTIC_STEP_CHUNK
    (void)layer;
    f(std::integral_constant<int32_t, TTFS_ANALYTIC_STEP_CHUNK>{});
#else
    if (layer.integ_end - layer.integ_start <= kSmallestStepChunk)
        f(std::integral_constant<int32_t, kSmallestStepChunk>{});
    else
        f(std::integral_constant<int32_t, kLargestStepChunk>{});
#endif
}

// Index of the lowest set bit of a non-zero word.
TTFS_HD int32_t lowest_set_bit(uint64_t word) {
#if defined(__CUDA_ARCH__)
    return __ffsll((long long)word) - 1;
#else
    return __builtin_ctzll(word);
#endif
}

// ---- analytic engine ---------------------------------------------------------------------

// Input pixel with value x: fire_start + the first threshold-table index it reaches, or -1.
TTFS_HD int32_t analytic_input_unit(const DeviceLayer& input, float x) {
    if (!input.fires) return -1;
    const int32_t j = first_crossing(x, input.fire_threshold, input.fire_len);
    return j >= 0 ? input.fire_start + j : -1;
}

// `gated` maxpool unit `at` at step t, once the neuron layer below has fired at t (the
// spike-count-gated pool of the T2FSNN reference; docs/ENGINES.md): each child's spike counter
// is 0 before it fires, the threshold vth(t) at its fire step and 1 afterwards; the child with
// the largest counter wins, the first in window order (kernel row, then column, positions
// inside the input) among equals; the unit spikes at t when the winner fires at t.
// child_first_spike: the first-spike times of the image's children layer (HWC, -1 = never,
// possibly later than t in the analytic engine: not fired yet at t).
TTFS_HD bool gated_winner_spikes(const DeviceLayer& pool, const int32_t* child_first_spike,
                                 const NeuronIndex& at, int32_t t) {
    const float vth = pool.gate_threshold[t - pool.gate_fire_start];
    float best = 0.0f;
    int32_t winner_time = -1;
    bool any = false;
    const WindowInside win = window_inside(pool, at.oh, at.ow);
    for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
        for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
            const int32_t fired =
                child_first_spike[(int64_t(win.ih0 + kh) * pool.in_w + win.iw0 + kw) * pool.in_c + at.oc];
            const float counter = (fired < 0 || fired > t) ? 0.0f : fired < t ? 1.0f : vth;
            if (!any || counter > best) {
                any = true;
                best = counter;
                winner_time = fired;
            }
        }
    }
    return any && winner_time == t;
}

// maxpool unit idx (image-major, HWC): writes the steps it relays to
// out_steps[idx * out_capacity ...], ascending, padded with -1. `or`: every distinct step of
// its children; `earliest`: only the first; `gated`: those where gated_winner_spikes() (its
// children are neurons: below holds their first-spike times, capacity 1). out_capacity must be
// at least the number of distinct steps the children spike at (the backend sizes it so).
TTFS_HD void analytic_pool_unit(const DeviceLayer& pool, SpikeSteps below, int64_t idx,
                                int32_t* out_steps, int32_t out_capacity) {
    const NeuronIndex at = split_neuron_index(pool, idx);
    const int32_t in_capacity = below.capacity;
    const int32_t* image_steps = below.steps + at.image * pool.in_size() * in_capacity;
    int32_t* unit_out = out_steps + idx * out_capacity;
    const WindowInside win = window_inside(pool, at.oh, at.ow);

    // Each pass finds the smallest child step after `relayed`; each child's list is ascending,
    // so its first entry after `relayed` is its candidate. A gated unit skips the steps its
    // gate closes (at most one pass per distinct child step, as for `or`).
    const bool gated = pool.pool_mode == TTFS_POOL_GATED;
    const int32_t passes = pool.pool_mode == TTFS_POOL_EARLIEST ? 1 : out_capacity;
    int32_t relayed = -1;
    int32_t written = 0;
    while (written < passes) {
        int32_t next = INT_MAX;
        for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
            for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
                const int32_t* child =
                    image_steps + ((int64_t(win.ih0 + kh) * pool.in_w + win.iw0 + kw) * pool.in_c + at.oc) *
                                      in_capacity;
                for (int32_t e = 0; e < in_capacity; ++e) {
                    const int32_t s = child[e];
                    if (s < 0) break;
                    if (s > relayed) {
                        if (s < next) next = s;
                        break;
                    }
                }
            }
        }
        if (next == INT_MAX) break;
        relayed = next;
        if (gated && !gated_winner_spikes(pool, image_steps, at, next)) continue;
        unit_out[written++] = next;
    }
    for (; written < out_capacity; ++written) unit_out[written] = -1;
}

// conv2d/dense neuron idx (image-major, HWC): the closed-form potential and first-spike time.
// For each chunk of arrival steps the receptive field is walked in canonical order (kernel
// row, kernel column, input channel) and each spiking unit's weight is added to the bin of its
// step, so every bin is S(t) formed exactly as the stepped engine forms it (from +0.0f, in
// canonical order). Bins are applied in ascending t; t == 0 carries the bias with weight 1.
// The first chunk starts where the layer's integration window does (steps before it, other
// than 0, are not integrated); its pass also sums S(0), in the same order.
// potential may be nullptr; a neuron that fired reports 0. With an output trace (trace.count >
// 0), the potential as it stands is written for every chosen step before each bin is applied,
// the complete one for the steps left, and 0 from the fire step on (the reset). CHUNK: the
// chunk size, with_step_chunk()'s choice for the layer (any size gives the same bits).
template <int32_t CHUNK>
TTFS_HD void analytic_neuron_unit(const DeviceLayer& layer, SpikeSteps below, int64_t idx,
                                  int32_t* first_spike, float* potential, const TraceRows& trace) {
    static_assert(CHUNK >= 1 && CHUNK <= kLargestStepChunk, "a chunk of 1 to 256 steps");
    constexpr int32_t kWords = (CHUNK + 63) / 64;  // a chunk's arrivals: one bit per step
    const NeuronIndex at = split_neuron_index(layer, idx);
    const int32_t capacity = below.capacity;
    const int32_t* image_steps = below.steps + at.image * layer.in_size() * capacity;
    const WindowInside win = window_inside(layer, at.oh, at.ow);

    float membrane = 0.0f;
    int32_t traced = 0;  // the output trace's rows written
    bool first_pass = true;  // it applies S(0) and the bias
    int32_t chunk_start = layer.integ_start > 0 ? layer.integ_start : 0;
    float sum_at_zero = 0.0f;  // S(0), while the first chunk starts after step 0
    for (;;) {
        const int32_t chunk_end = chunk_start + CHUNK;
        float bins[CHUNK];
        for (int32_t i = 0; i < CHUNK; ++i) bins[i] = 0.0f;
        uint64_t arrived[kWords];  // bit i: some unit spikes at chunk_start + i
        for (int32_t w = 0; w < kWords; ++w) arrived[w] = 0;
        int32_t next_start = INT_MAX;  // earliest integrated arrival after this chunk

        for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
            for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
                const int32_t* position_steps =
                    image_steps + (int64_t(win.ih0 + kh) * layer.in_w + win.iw0 + kw) * layer.in_c * capacity;
                const float* weight_row =
                    layer.weights + (int64_t(kh) * layer.kernel_w + kw) * layer.in_c * layer.out_c + at.oc;
                for (int32_t ic = 0; ic < layer.in_c; ++ic) {
                    const int32_t* unit_steps = position_steps + int64_t(ic) * capacity;
                    for (int32_t e = 0; e < capacity; ++e) {
                        const int32_t s = unit_steps[e];
                        if (s < 0) break;
                        if (s < chunk_start) {  // S(0) when the first chunk starts later
                            if (s == 0 && first_pass)
                                sum_at_zero = add_rn(sum_at_zero, weight_row[int64_t(ic) * layer.out_c]);
                            continue;
                        }
                        if (!integrates_at(layer, s)) continue;
                        if (s >= chunk_end) {  // ascending list: the rest come later too
                            if (s < next_start) next_start = s;
                            break;
                        }
                        const int32_t bin = s - chunk_start;
                        bins[bin] = add_rn(bins[bin], weight_row[int64_t(ic) * layer.out_c]);
                        arrived[bin >> 6] |= uint64_t(1) << (bin & 63);
                    }
                }
            }
        }

        if (first_pass) {  // t == 0: the bias, with weight exactly 1, spikes or not
            const float at_zero = chunk_start == 0 ? bins[0] : sum_at_zero;
            membrane = integrate(membrane, add_rn(at_zero, layer.bias[at.oc]), 1.0f);
            if (chunk_start == 0) arrived[0] &= ~uint64_t(1);
            first_pass = false;
        }
        for (int32_t w = 0; w < kWords; ++w) {
            while (arrived[w] != 0) {  // the remaining bins, ascending
                const int32_t bin = w * 64 + lowest_set_bit(arrived[w]);
                arrived[w] &= arrived[w] - 1;
                for (; traced < trace.count && trace.steps[traced] < chunk_start + bin; ++traced)
                    trace.rows[traced * trace.row_stride + idx] = membrane;
                membrane = integrate(membrane, bins[bin], kernel_at(layer, chunk_start + bin));
            }
        }
        if (next_start == INT_MAX) break;
        chunk_start = next_start;
    }

    int32_t fired_at = -1;
    if (layer.fires) {
        const int32_t j = first_crossing(membrane, layer.fire_threshold, layer.fire_len);
        if (j >= 0) fired_at = layer.fire_start + j;
    }
    for (; traced < trace.count; ++traced)  // complete; 0 once fired (nothing arrives after)
        trace.rows[traced * trace.row_stride + idx] =
            fired_at >= 0 && trace.steps[traced] >= fired_at ? 0.0f : membrane;
    if (fired_at >= 0) membrane = 0.0f;  // reset, as the stepped engine does when it fires
    first_spike[idx] = fired_at;
    if (potential != nullptr) potential[idx] = membrane;
}

// ---- stepped engine ----------------------------------------------------------------------
// Spikes of the current step travel as a 0/1 byte per unit ([image][unit]).

// Input pixel idx at step t inside its fire window.
TTFS_HD void stepped_input_unit(const DeviceLayer& input, const float* images, int64_t idx,
                                int32_t t, int32_t* first_spike, uint8_t* spiked_now) {
    uint8_t spiked = 0;
    if (first_spike[idx] < 0 && reaches(images[idx], input.fire_threshold[t - input.fire_start])) {
        first_spike[idx] = t;
        spiked = 1;
    }
    spiked_now[idx] = spiked;
}

// maxpool unit idx at step t: `or` relays when any child spiked now; `earliest` only the
// first time (relayed_before remembers it; unused otherwise); `gated` when a child spiked now
// and gated_winner_spikes() (below_first_spike: the neuron layer below's first-spike times,
// already updated for step t; used by `gated` only).
TTFS_HD void stepped_pool_unit(const DeviceLayer& pool, const uint8_t* below_spiked_now,
                               const int32_t* below_first_spike, int64_t idx, int32_t t,
                               uint8_t* relayed_before, uint8_t* spiked_now) {
    const NeuronIndex at = split_neuron_index(pool, idx);
    const uint8_t* image_map = below_spiked_now + at.image * pool.in_size();
    bool any_child = false;
    const WindowInside win = window_inside(pool, at.oh, at.ow);
    for (int32_t kh = win.kh_first; kh < win.kh_end && !any_child; ++kh) {
        for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
            if (image_map[(int64_t(win.ih0 + kh) * pool.in_w + win.iw0 + kw) * pool.in_c + at.oc]) {
                any_child = true;
                break;
            }
        }
    }
    uint8_t relay = any_child ? 1 : 0;
    if (pool.pool_mode == TTFS_POOL_GATED && relay &&
        !gated_winner_spikes(pool, below_first_spike + at.image * pool.in_size(), at, t))
        relay = 0;
    if (pool.pool_mode == TTFS_POOL_EARLIEST && relay) {
        if (relayed_before[idx]) relay = 0;  // only the first child spike passes
        else relayed_before[idx] = 1;
    }
    spiked_now[idx] = relay;
}

// conv2d/dense neuron idx at step t. integrate_now: V = V + S(t) * kernel_at(t), S from +0.0f
// over the receptive field in canonical order, plus the bias at t == 0; at t != 0 a neuron
// that received no spike is left alone (V + 0*k == V), as the analytic engine only applies
// steps with arrivals. fire_now: a neuron that has not fired and reaches the threshold fires
// (first_spike = t, V = 0).
TTFS_HD void stepped_neuron_unit(const DeviceLayer& layer, const uint8_t* below_spiked_now,
                                 int64_t idx, int32_t t, bool integrate_now, bool fire_now,
                                 float* membrane, int32_t* first_spike, uint8_t* spiked_now) {
    const NeuronIndex at = split_neuron_index(layer, idx);
    float v = membrane[idx];
    if (integrate_now) {
        const uint8_t* image_map = below_spiked_now + at.image * layer.in_size();
        float synaptic_sum = 0.0f;
        bool any_arrival = false;
        const WindowInside win = window_inside(layer, at.oh, at.ow);
        for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
            for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
                const uint8_t* position_map =
                    image_map + (int64_t(win.ih0 + kh) * layer.in_w + win.iw0 + kw) * layer.in_c;
                const float* weight_row =
                    layer.weights + (int64_t(kh) * layer.kernel_w + kw) * layer.in_c * layer.out_c + at.oc;
                for (int32_t ic = 0; ic < layer.in_c; ++ic) {
                    if (position_map[ic]) {
                        synaptic_sum = add_rn(synaptic_sum, weight_row[int64_t(ic) * layer.out_c]);
                        any_arrival = true;
                    }
                }
            }
        }
        if (t == 0)
            v = integrate(v, add_rn(synaptic_sum, layer.bias[at.oc]), 1.0f);
        else if (any_arrival)
            v = integrate(v, synaptic_sum, kernel_at(layer, t));
    }
    uint8_t spiked = 0;
    if (fire_now && first_spike[idx] < 0 && reaches(v, layer.fire_threshold[t - layer.fire_start])) {
        first_spike[idx] = t;
        v = 0.0f;
        spiked = 1;
    }
    membrane[idx] = v;
    spiked_now[idx] = spiked;
}

}  // namespace gpu
}  // namespace ttfs
