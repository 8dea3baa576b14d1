// The exact kernels both engines share (docs/ENGINES.md): the scatter of a step's presynaptic
// spikes into synaptic sums, in canonical order, and the integration V = V + S * k of the
// neurons that received something; plus the two exact kernels only the analytic engine uses
// (the earliest child of a pool window, a dense layer's potentials from its spikes by step).
// Every operation is the one docs/ENGINES.md fixes; SIMD lanes run across independent neurons.

#include "cpu/exact_kernels.hpp"

#include <algorithm>
#include <cstddef>

namespace ttfs {
namespace cpu {

// sum += weight over N floats (a whole number of chunks), lane by lane. WIDE: chunk by chunk as
// whole AVX-512 registers (the compiler then hoists the loads); else a fixed-length loop that
// each clone vectorises at its own width.
template <int N, bool WIDE>
TTFS_INLINE void add_row(float* __restrict sum, const float* __restrict weight) {
#if TTFS_HAVE_AVX512_VARIANT
    if constexpr (WIDE) {
        for (int32_t q = 0; q < N / kLanes; ++q) {
            Chunk s, w;
            std::memcpy(&s, sum + q * kLanes, sizeof s);
            std::memcpy(&w, weight + q * kLanes, sizeof w);
            s = s + w;
            std::memcpy(sum + q * kLanes, &s, sizeof s);
        }
        return;
    }
#endif
    for (int32_t k = 0; k < N; ++k) sum[k] = add_rn(sum[k], weight[k]);
}

// Scatters one step's presynaptic spikes (units ascending in HWC order) into the synaptic sums
// of the neurons they feed: sums[position * padded_c + oc] = S(t) of that neuron. For a fixed
// output position the kernel row and column grow with the input row and column (kh = ih + pad
// - oh * stride), so every neuron receives its weights in canonical (kernel row, column,
// channel) order, each added to a sum that started at +0. Positions that receive something are
// flagged and listed in `touched`; returns how many were listed. CHUNKS > 0: padded_c is
// CHUNKS * kLanes, known at compile time (the common widths get whole-register code).
template <int CHUNKS, bool WIDE>
TTFS_INLINE int32_t scatter_spikes_n(const WindowGeometry& g, const Fanout& fan, int32_t padded_c,
                                     const float* weights, const int32_t* units, int32_t count,
                                     float* sums, uint8_t* flagged, int32_t* touched) {
    // Locals, so that the stores below cannot make the compiler reload them.
    const int32_t out_w = g.out_w, kernel_w = g.kernel_w, stride_h = g.stride_h, stride_w = g.stride_w;
    const int32_t pad_top = g.pad_top, pad_left = g.pad_left;
    const int32_t chunks = CHUNKS > 0 ? CHUNKS : padded_c / kLanes;
    const ptrdiff_t row_c = CHUNKS > 0 ? ptrdiff_t(CHUNKS) * kLanes : ptrdiff_t(padded_c);
    const ptrdiff_t kernel_cell = ptrdiff_t(g.in_c) * row_c;  // weights of one (kh, kw)
    const ptrdiff_t next_ow = -ptrdiff_t(stride_w) * kernel_cell;            // kw -= stride_w
    const ptrdiff_t next_oh = -ptrdiff_t(stride_h) * kernel_w * kernel_cell;  // kh -= stride_h
    const UnitOrigin* origin = fan.origin.data();
    const OutputRange* rows_fed = fan.rows.data();
    const OutputRange* cols_fed = fan.cols.data();
    int32_t listed = 0;
    for (int32_t s = 0; s < count; ++s) {
        const UnitOrigin o = origin[units[s]];
        const OutputRange rows = rows_fed[o.h], cols = cols_fed[o.w];
        const int32_t kh = o.h + pad_top - rows.first * stride_h;  // in [0, kernel_h)
        const int32_t kw = o.w + pad_left - cols.first * stride_w;
        // Offsets, not pointers, step through the kernel: they pass below 0 after the last use.
        ptrdiff_t first_row = (ptrdiff_t(kh) * kernel_w + kw) * kernel_cell + ptrdiff_t(o.c) * row_c;
        for (int32_t oh = rows.first; oh <= rows.last; ++oh, first_row += next_oh) {
            ptrdiff_t row = first_row;
            int32_t position = oh * out_w + cols.first;
            for (int32_t ow = cols.first; ow <= cols.last; ++ow, ++position, row += next_ow) {
                if (!flagged[position]) {
                    flagged[position] = 1;
                    touched[listed++] = position;
                }
                float* sum = sums + ptrdiff_t(position) * row_c;
                const float* weight = weights + row;
                if (CHUNKS > 0)
                    add_row<CHUNKS * kLanes, WIDE>(sum, weight);
                else
                    for (int32_t v = 0; v < chunks; ++v) add_row<kLanes, WIDE>(sum + v * kLanes, weight + v * kLanes);
            }
        }
    }
    return listed;
}

template <bool WIDE>
TTFS_INLINE int32_t scatter_spikes_any(const WindowGeometry& g, const Fanout& fan, int32_t padded_c,
                                       const float* weights, const int32_t* units, int32_t count,
                                       float* sums, uint8_t* flagged, int32_t* touched) {
    switch (padded_c / kLanes) {
        case 1: return scatter_spikes_n<1, WIDE>(g, fan, padded_c, weights, units, count, sums, flagged, touched);
        case 2: return scatter_spikes_n<2, WIDE>(g, fan, padded_c, weights, units, count, sums, flagged, touched);
        case 4: return scatter_spikes_n<4, WIDE>(g, fan, padded_c, weights, units, count, sums, flagged, touched);
        default: return scatter_spikes_n<0, WIDE>(g, fan, padded_c, weights, units, count, sums, flagged, touched);
    }
}

TTFS_PORTABLE_CLONES
int32_t scatter_spikes_portable(const WindowGeometry& g, const Fanout& fan, int32_t padded_c,
                                const float* weights, const int32_t* units, int32_t count,
                                float* sums, uint8_t* flagged, int32_t* touched) {
    return scatter_spikes_any<false>(g, fan, padded_c, weights, units, count, sums, flagged, touched);
}

#if TTFS_HAVE_AVX512_VARIANT
TTFS_AVX512
int32_t scatter_spikes_avx512(const WindowGeometry& g, const Fanout& fan, int32_t padded_c,
                              const float* weights, const int32_t* units, int32_t count,
                              float* sums, uint8_t* flagged, int32_t* touched) {
    return scatter_spikes_any<true>(g, fan, padded_c, weights, units, count, sums, flagged, touched);
}
#endif

int32_t scatter_spikes(const WindowGeometry& g, const Fanout& fan, int32_t padded_c,
                       const float* weights, const int32_t* units, int32_t count, float* sums,
                       uint8_t* flagged, int32_t* touched) {
#if TTFS_HAVE_AVX512_VARIANT
    static const bool avx512 = __builtin_cpu_supports("avx512f");
    if (avx512)
        return scatter_spikes_avx512(g, fan, padded_c, weights, units, count, sums, flagged, touched);
#endif
    return scatter_spikes_portable(g, fan, padded_c, weights, units, count, sums, flagged, touched);
}

// Step 0, where every neuron integrates because the bias enters then (after the weights, with
// weight exactly 1): V = +0 + (S(0) + bias) * kernel, from a membrane that is +0 before step 0.
// Leaves every sum +0 and every flag clear.
TTFS_VECTOR_CLONES
void integrate_step_zero(int32_t positions, int32_t out_c, int32_t padded_c, const float* bias,
                         float kernel, float* sums, float* membrane, uint8_t* flagged) {
    for (int32_t p = 0; p < positions; ++p) {
        float* __restrict sum = sums + ptrdiff_t(p) * padded_c;
        float* __restrict v = membrane + ptrdiff_t(p) * out_c;
        for (int32_t oc = 0; oc < out_c; ++oc) {
            v[oc] = integrate(0.0f, add_rn(sum[oc], bias[oc]), kernel);
            sum[oc] = 0.0f;  // the padding lanes only ever hold +0 + +0
        }
        flagged[p] = 0;
    }
}

// A later step: V = V + S(t) * kernel for the neurons of the touched positions only (the others
// are unchanged: V + 0 * k == V), then S = +0 and the flags cleared for the next step.
TTFS_VECTOR_CLONES
void integrate_touched(const int32_t* touched, int32_t count, int32_t out_c, int32_t padded_c,
                       float kernel, float* sums, float* membrane, uint8_t* flagged) {
    for (int32_t i = 0; i < count; ++i) {
        const int32_t p = touched[i];
        float* __restrict sum = sums + ptrdiff_t(p) * padded_c;
        float* __restrict v = membrane + ptrdiff_t(p) * out_c;
        for (int32_t oc = 0; oc < out_c; ++oc) {
            v[oc] = integrate(v[oc], sum[oc], kernel);
            sum[oc] = 0.0f;  // the padding lanes only ever hold +0 + +0
        }
        flagged[p] = 0;
    }
}

// An `earliest` pool unit's step, for all channels of output position (oh, ow) at once: the
// minimum over the window's children of their steps, as unsigned numbers so that kNever (-1)
// is the largest and survives only where no child spiked.
TTFS_VECTOR_CLONES
void earliest_of_window(const WindowGeometry& g, const int32_t* child, int32_t oh, int32_t ow,
                        uint32_t* earliest) {
    const int32_t channels = g.out_c;
    for (int32_t c = 0; c < channels; ++c) earliest[c] = uint32_t(kNever);
    const WindowInside win = window_inside(g, oh, ow);
    for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
        const int32_t ih = win.ih0 + kh;
        for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
            const int32_t iw = win.iw0 + kw;
            const uint32_t* from = reinterpret_cast<const uint32_t*>(child + (ih * g.in_w + iw) * channels);
            for (int32_t c = 0; c < channels; ++c) earliest[c] = std::min(earliest[c], from[c]);
        }
    }
}

// The potentials of a dense layer of at most kLanes neurons from its input's spikes listed by
// step: per step with spikes, S = +0 plus each spiking unit's weights (units ascending), then
// V = V + S * kernel_at(t); step 0 also carries the bias (V = +0 + (S + bias) * 1). The
// operations of docs/ENGINES.md, lane by lane, with the sums held in registers: the kLanes
// neurons as one Chunk, so that each spike is one add.

// sum += the kLanes floats at `from`.
TTFS_INLINE void add_lanes(Chunk& sum, const float* from) {
    Chunk x;
    std::memcpy(&x, from, sizeof x);
    sum = sum + x;
}

TTFS_VECTOR_CLONES
void dense_by_step(const Layer& layer, const int32_t* begin, const int32_t* unit, int32_t steps,
                   int32_t first_step, const float* weights, float* potential) {
    const int32_t out_c = layer.out.c;
    Chunk bias = {};
    for (int32_t l = 0; l < out_c; ++l) bias[l] = layer.bias[size_t(l)];
    const int32_t zero = -first_step;  // step 0's index in the list, if inside
    Chunk sum = {};
    if (zero >= 0 && zero < steps)
        for (int32_t s = begin[zero]; s < begin[zero + 1]; ++s) add_lanes(sum, weights + ptrdiff_t(unit[s]) * kLanes);
    const Chunk nothing = {};
    Chunk v = nothing + (sum + bias) * layer.kernel_at(0);
    for (int32_t k = 0; k < steps; ++k) {
        const int32_t t = first_step + k;
        if (t == 0 || begin[k + 1] == begin[k] || !layer.integrates_at(t)) continue;
        sum = nothing;
        for (int32_t s = begin[k]; s < begin[k + 1]; ++s) add_lanes(sum, weights + ptrdiff_t(unit[s]) * kLanes);
        v = v + sum * layer.kernel_at(t);
    }
    for (int32_t l = 0; l < out_c; ++l) potential[l] = v[l];
}

}  // namespace cpu
}  // namespace ttfs
