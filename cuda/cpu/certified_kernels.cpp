// The portable variants of the certified-sum kernels and the dispatch to the AVX-512 ones
// (certified_kernels.hpp). TTFS_PORTABLE_CLONES compiles each for AVX2 and for any x86-64.

#include "cpu/certified_kernels.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace ttfs {
namespace cpu {

// The portable variant multiplies and adds separately (per_term 2).
TTFS_PORTABLE_CLONES
void window_sums_portable(const WindowSums& d) {
    const int32_t row_len = d.kernel_w * d.in_c, width = d.width;
    float* __restrict row = d.row;
    for (int32_t oh = 0; oh < d.out_h; ++oh) {
        for (int32_t ow = 0; ow < d.out_w; ++ow) {
            float* __restrict out = d.out + ptrdiff_t(oh * d.out_w + ow) * width;
            for (int32_t l = 0; l < width; ++l) out[l] = d.start[l];
            for (int32_t kh = 0; kh < d.kernel_h; ++kh) {
                const float* a = d.grid + (ptrdiff_t(oh * d.stride_h + kh) * d.grid_w + ow * d.stride_w) * d.in_c;
                const float* w = d.weights + ptrdiff_t(kh) * row_len * width;
                for (int32_t l = 0; l < width; ++l) row[l] = 0.0f;
                for (int32_t r = 0; r < row_len; ++r, w += width) {
                    const float x = a[r];
                    if (x == 0.0f) continue;
                    for (int32_t l = 0; l < width; ++l) row[l] = row[l] + x * w[l];
                }
                for (int32_t l = 0; l < width; ++l) out[l] = out[l] + row[l];
            }
        }
    }
}

// The hand-written AVX-512 variants of the certified-sum kernels run where the CPU has
// AVX-512F, unless the environment variable TTFS_CPU_PORTABLE is set to anything but "" or "0"
// when the library is loaded (then the portable variants run: how the tests reach them on an
// AVX-512 machine). Both give the same results.
bool use_avx512() {
#if TTFS_HAVE_AVX512_VARIANT
    static const bool avx512 = [] {
        const char* portable = std::getenv("TTFS_CPU_PORTABLE");
        if (portable != nullptr && *portable != '\0' && std::string(portable) != "0") return false;
        return bool(__builtin_cpu_supports("avx512f"));
    }();
    return avx512;
#else
    return false;
#endif
}

// The AVX-512 variants where the CPU has them and they cover the width (1 rounding per nonzero
// term: fused multiply-adds), else the portable one (2).
SumsMade window_sums(const WindowSums& d) {
#if TTFS_HAVE_AVX512_VARIANT
    if (use_avx512()) {
        const AvxSums made = window_sums_avx512(d);
        if (made != AvxSums::kNotMade) return SumsMade{1, made == AvxSums::kNonzeroOnly};
    }
#endif
    window_sums_portable(d);
    return SumsMade{2, false};
}

// For every position p: the interval ends of its neurons (eps from scale[p]; a position with
// scale[p] < 0 cannot be bounded and all its neurons are undecided). A neuron decided to fire
// at fire step index j gets first[i] = b.fire_start + j (i = p * out_c + n); a neuron decided
// not to fire is left alone (the caller set kNever); the undecided ones are listed, ascending,
// in `undecided`. Returns their number. `high` and `low` are scratch of padded_c floats.
TTFS_PORTABLE_CLONES
int32_t bracket_portable(const LayerPlan& plan, const Layer& layer, const Bracket& b,
                         const float* sums, int32_t width, int32_t positions, int32_t padded_c,
                         int32_t out_c, const float* scale, float* high, float* low,
                         int32_t* first, int32_t* undecided) {
    int32_t count = 0;
    for (int32_t p = 0; p < positions; ++p) {
        const float* v = sums + ptrdiff_t(p) * width;
        const float* bound = v + plan.bound_base;
        if (!(scale[p] >= 0.0f)) {
            for (int32_t n = 0; n < out_c; ++n) undecided[count++] = p * out_c + n;
            continue;
        }
        for (int32_t q = 0; q < padded_c; q += kLanes) {
            for (int32_t l = 0; l < kLanes; ++l) {
                const float eps = interval_eps(scale[p], bound[plan.bound_lane[size_t(l)]], v[q + l]);
                high[q + l] = v[q + l] + eps;
                low[q + l] = v[q + l] - eps;
            }
        }
        for (int32_t n = 0; n < out_c; ++n) {
            if (high[n] < b.lowest) continue;
            const int32_t j = decide(plan, layer, b, high[n], low[n]);
            if (j == kUndecided) undecided[count++] = p * out_c + n;
            else if (j >= 0) first[p * out_c + n] = b.fire_start + j;
        }
    }
    return count;
}

int32_t bracket(const LayerPlan& plan, const Layer& layer, const Bracket& b, const float* sums,
                int32_t width, int32_t positions, int32_t padded_c, int32_t out_c,
                const float* scale, float* high, float* low, int32_t* first, int32_t* undecided) {
#if TTFS_HAVE_AVX512_VARIANT
    if (use_avx512())
        return bracket_avx512(plan, layer, b, sums, width, positions, padded_c, out_c, scale,
                              high, low, first, undecided);
#endif
    return bracket_portable(plan, layer, b, sums, width, positions, padded_c, out_c, scale, high,
                            low, first, undecided);
}

// certified_pool()'s intervals: for every position p and neuron n, high/low[p * padded_c + n]
// = v +- eps as in bracket(). Counts in *firing the neurons whose low end reaches `lowest` (they
// fire whatever the exact potential); lists in `undecided` (as p * padded_c + n, ascending) the
// neurons whose interval straddles `lowest`, is not finite, or cannot be bounded (scale[p] <
// 0); returns their number. The others cannot fire.
TTFS_PORTABLE_CLONES
int32_t intervals_portable(const LayerPlan& plan, const float* sums, int32_t width,
                           int32_t positions, int32_t padded_c, int32_t out_c, const float* scale,
                           float lowest, float* high, float* low, int32_t* firing,
                           int32_t* undecided) {
    int32_t count = 0, fired = 0;
    for (int32_t p = 0; p < positions; ++p) {
        const float* v = sums + ptrdiff_t(p) * width;
        const float* bound = v + plan.bound_base;
        float* h = high + ptrdiff_t(p) * padded_c;
        float* lo = low + ptrdiff_t(p) * padded_c;
        const float factor = scale[p] >= 0.0f ? scale[p] : std::numeric_limits<float>::infinity();
        for (int32_t q = 0; q < padded_c; q += kLanes) {
            for (int32_t l = 0; l < kLanes; ++l) {
                const float eps = interval_eps(factor, bound[plan.bound_lane[size_t(l)]], v[q + l]);
                h[q + l] = v[q + l] + eps;
                lo[q + l] = v[q + l] - eps;
            }
        }
        for (int32_t n = 0; n < out_c; ++n) {
            const bool finite = finite_ends(h[n], lo[n]);
            if (finite && h[n] < lowest) continue;
            if (finite && lo[n] >= lowest) {
                ++fired;
                continue;
            }
            undecided[count++] = p * padded_c + n;
        }
    }
    *firing = fired;
    return count;
}

int32_t intervals(const LayerPlan& plan, const float* sums, int32_t width, int32_t positions,
                  int32_t padded_c, int32_t out_c, const float* scale, float lowest, float* high,
                  float* low, int32_t* firing, int32_t* undecided) {
#if TTFS_HAVE_AVX512_VARIANT
    if (use_avx512())
        return intervals_avx512(plan, sums, width, positions, padded_c, out_c, scale, lowest, high,
                                low, firing, undecided);
#endif
    return intervals_portable(plan, sums, width, positions, padded_c, out_c, scale, lowest, high,
                              low, firing, undecided);
}

// certified_pool()'s pool units: unit (oh, ow, c) of the pool gets step b.fire_start + j where
// j = first_crossing() of both the largest high and the largest low end of its children's
// intervals (the children: the positions of its window inside the certified layer's output,
// padded_c floats each), kNever where no child's high end reaches the lowest threshold. The
// others are listed in `undecided` (unit indices) and left for settle_unit(); returns how many.
TTFS_PORTABLE_CLONES
int32_t pool_verdicts_portable(const LayerPlan& plan, const Layer& layer, const Bracket& b,
                               const WindowGeometry& pg, int32_t padded_c, const float* high,
                               const float* low, int32_t* time, int32_t* undecided) {
    int32_t count = 0;
    for (int32_t oh = 0; oh < pg.out_h; ++oh) {
        for (int32_t ow = 0; ow < pg.out_w; ++ow) {
            for (int32_t c = 0; c < pg.out_c; ++c) {
                float most_high = -std::numeric_limits<float>::infinity(), most_low = most_high;
                const WindowInside win = window_inside(pg, oh, ow);
                for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
                    for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
                        const ptrdiff_t i = ptrdiff_t((win.ih0 + kh) * pg.in_w + win.iw0 + kw) * padded_c + c;
                        most_high = std::max(most_high, high[i]);
                        most_low = std::max(most_low, low[i]);
                    }
                }
                const int32_t unit = (oh * pg.out_w + ow) * pg.out_c + c;
                time[unit] = kNever;
                if (most_high < b.lowest) continue;
                const int32_t j = decide(plan, layer, b, most_high, most_low);
                if (j == kUndecided) undecided[count++] = unit;
                else if (j >= 0) time[unit] = b.fire_start + j;
            }
        }
    }
    return count;
}

int32_t pool_verdicts(const LayerPlan& plan, const Layer& layer, const Bracket& b,
                      const WindowGeometry& pg, int32_t padded_c, const float* high, const float* low,
                      int32_t* time, int32_t* undecided) {
#if TTFS_HAVE_AVX512_VARIANT
    if (use_avx512())
        return pool_verdicts_avx512(plan, layer, b, pg, padded_c, high, low, time, undecided);
#endif
    return pool_verdicts_portable(plan, layer, b, pg, padded_c, high, low, time, undecided);
}

}  // namespace cpu
}  // namespace ttfs
