// The certified sums' kernels (docs/ENGINES.md, "Certified sums"), behind one interface: the
// dense window sums, the intervals and the fire steps they decide, the verdicts of a fused
// `earliest` pool, and the activation grid. Each has a portable variant
// (certified_kernels.cpp, compiled per instruction set) and, where it pays, a hand-written
// AVX-512 one (certified_kernels_avx512.cpp); use_avx512() picks. Both variants give the same
// results: the decisions are exact, and the sums may differ only within the bound each
// reports. The inline helpers below are shared by both variants (TTFS_INLINE: a copy in each).

#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/plan.hpp"

namespace ttfs {
namespace cpu {

// Scratch for the AVX-512 window sums over nonzero activations only: the grid's nonzero
// activations listed cell after cell (value, and the offset of its weight row: (column * in_c
// + c) * width, column the cell's grid column), cell_start[cell] the first entry of each cell
// and cell_start[cells] their number. The lists take up to the grid's units + kLanes entries
// (whole registers are stored), cell_start the grid's cells + 1.
struct SparseScratch {
    int32_t* offset;
    float* value;
    int32_t* cell_start;
};

// The entries SparseScratch needs for a grid of `units` activations.
inline size_t sparse_list_entries(size_t units) { return units + kLanes; }

// The certified sums of every output position of a conv2d/dense layer, dense over each window:
// out[p * width + l] = start[l] + sum over the window's rows r of a(p, r) * weights[r * width + l]
// for l in [0, width): the potentials of the position's padded_c neurons, then its kLanes bound
// lanes. The activations a lie in a grid padded with zeros (SAME padding and the tail of the
// last block of positions read zeros), HWC, grid_w cells wide. Each kernel row of the window
// is summed in a chain of its own, then added to the total: a zero activation adds an exact
// zero, so a lane's value passes through at most per_term * (the most nonzero activations in
// one kernel row of its window) + kernel_h + 1 roundings, per_term being what window_sums()
// returns. Order and fused multiply-adds are free here: the caller relies only on that
// rounding count (docs/ENGINES.md).
struct WindowSums {
    const float* grid;
    int32_t grid_w, in_c, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w;
    const float* weights;  // bound_weights: kernel_h * kernel_w * in_c rows of width floats
    const float* start;    // bound_bias: width floats
    int32_t width;
    float* out;            // out_h * out_w rows of width floats
    float* row;            // scratch, width floats (the portable variant)
    // Scratch for the AVX-512 variant's sums over nonzero activations only (null: dense sums
    // only); see SparseScratch.
    const SparseScratch* sparse;
};

// guess16()'s table size: fire windows up to this long get the vectorised first guess.
constexpr int32_t kGuessTable = 128;

// exact_first_crossing()'s bins for the spikes that do not count (steps the layer does not
// integrate, units that did not spike), after the window's bins.
constexpr int32_t kSpareBins = 8;

// What bracket() says about a neuron whose interval [low, high] straddles a threshold step (or
// is not finite): only the exact potential can tell.
constexpr int32_t kUndecided = -2;

// The interval [low, high] around each certified potential v = sums[n] that holds the exact
// one: eps = scale * bound[n % kLanes] + 4u|v| + 2^-100 (docs/ENGINES.md; the last two terms
// cover the rounding of v +- eps and underflow). Lists, ascending, the neurons n < out_c whose
// high end reaches the lowest threshold (or is not a number) in `candidate`, and for each its
// fire step index j = first_crossing(high) in `step` where first_crossing(low) agrees (then
// it is the exact potential's too), else kUndecided. Returns the number of candidates.
struct Bracket {
    const float* table;  // the layer's fire_threshold
    int32_t len, fire_start;
    float lowest;
    // The crossing index, copied into locals (bucket_start null when the index is unusable).
    const int32_t* bucket_start;
    const int32_t* bucket_sure;
    int32_t shift;
    uint32_t first_bucket, last_bucket;
    // fire_threshold[j] = vth0 * exp(-(j - td) / tau): a vectorised first guess of
    // first_crossing() (usable when the crossing index is and len <= 128; see guess16()).
    bool guessable;
    float td, tau, log_vth0;
};

// bracket()'s verdict for a candidate with finite ends (high >= lowest).
TTFS_INLINE int32_t decide_finite(const LayerPlan& plan, const Layer& layer, const Bracket& b,
                                  float high, float low) {
    int32_t j;
    if (b.bucket_start != nullptr) {
        // Mostly both ends fall in one bucket that holds no threshold: then its start is the
        // first_crossing() of both (and of everything between). high >= lowest > 0, so its
        // bits order like its value; low may be smaller than lowest (another bucket then).
        const uint32_t top = std::min(float_bits(high) >> b.shift, b.last_bucket);
        const uint32_t bottom = float_bits(low) >> b.shift;
        if (top == bottom) {
            const int32_t sure = b.bucket_sure[top - b.first_bucket];
            if (sure >= 0) return sure;
        }
        // As crossing_from_lowest(), with the first step of the scan taken without a branch
        // (a bucket seldom holds more than one threshold; the table is non-increasing and
        // high >= its last entry, so j stays inside it).
        const uint32_t bucket = std::min(float_bits(high) >> b.shift, b.last_bucket);
        j = b.bucket_start[bucket - b.first_bucket];
        j += reaches(high, b.table[j]) ? 0 : 1;
        if (!reaches(high, b.table[j])) j = crossing_from_lowest(plan, layer, high);
    } else {
        j = first_crossing(high, b.table, b.len);
    }
    return j >= 0 && !reaches(low, b.table[j]) ? kUndecided : j;
}

// Both ends of an interval are finite numbers (false for NaN).
TTFS_INLINE bool finite_ends(float high, float low) {
    return high <= std::numeric_limits<float>::max() && low >= -std::numeric_limits<float>::max();
}

// The half width of a certified potential v's interval (docs/ENGINES.md): scale * its bound +
// 4u|v| (the rounding of v +- eps) + 2^-100 (underflow).
TTFS_INLINE float interval_eps(float scale, float bound, float v) {
    return scale * bound + std::fabs(v) * 0x1p-22f + 0x1p-100f;
}

TTFS_INLINE int32_t decide(const LayerPlan& plan, const Layer& layer, const Bracket& b,
                           float high, float low) {
    if (!finite_ends(high, low)) return kUndecided;
    return decide_finite(plan, layer, b, high, low);
}

// certified_sums()' activation grid from single spike steps, for the AVX-512 variant (the
// scalar loop in certified_sums() is the reference): per unit k = min(step - first_step,
// steps), activation kernel[k], bin slot[k] (the spare bins, steps + 0 .. kSpareBins - 1, in
// turn where slot[k] == steps), kSpareBins counters per step (of the units with k < steps), and
// with count_cells the number of nonzero activations per grid cell.
struct GridJob {
    const int32_t* single;
    int32_t in_h, in_w, in_c, pad_top, pad_left, grid_w, first_step, steps;
    const float* kernel;  // bin_kernel, steps + 1 entries
    const int32_t* slot;  // bin_slot, steps + 1 entries
    float* grid;
    int32_t* grid_bin;
    int32_t* per_step;
    int32_t* cell_nonzero;
    bool count_cells;
    uint64_t* row_bits;     // scratch: one bit per unit of an input row
    int32_t* spike_steps;   // scratch: in_h * in_w * in_c + kLanes entries
};

// The kernels (certified_kernels.cpp has each one's contract next to its portable variant).

// How window_sums() formed the sums: the roundings per nonzero term (1 for the AVX-512
// variants, fused multiply-adds; 2 for the portable one), and whether over the nonzero
// activations only (AVX-512; the dense sums otherwise).
struct SumsMade {
    int32_t per_term;
    bool nonzero_only;
};

// The certified sums of every position (see WindowSums).
SumsMade window_sums(const WindowSums& d);

// The intervals of a certified layer's neurons and the fire steps they decide; the undecided
// neurons listed, ascending. Returns how many.
int32_t bracket(const LayerPlan& plan, const Layer& layer, const Bracket& b, const float* sums,
                int32_t width, int32_t positions, int32_t padded_c, int32_t out_c,
                const float* scale, float* high, float* low, int32_t* first, int32_t* undecided);

// The intervals of a certified layer followed by a fused `earliest` pool, the neurons sure to
// fire counted, the undecided listed. Returns how many are undecided.
int32_t intervals(const LayerPlan& plan, const float* sums, int32_t width, int32_t positions,
                  int32_t padded_c, int32_t out_c, const float* scale, float lowest, float* high,
                  float* low, int32_t* firing, int32_t* undecided);

// The fused `earliest` pool's units decided from their children's intervals, the others
// listed. Returns how many are undecided.
int32_t pool_verdicts(const LayerPlan& plan, const Layer& layer, const Bracket& b,
                      const WindowGeometry& pg, int32_t padded_c, const float* high, const float* low,
                      int32_t* time, int32_t* undecided);

#if TTFS_HAVE_AVX512_VARIANT
// The AVX-512 variants (certified_kernels_avx512.cpp), called by the functions above when
// use_avx512(); window_sums_avx512 returns kNotMade for a width it has no variant for.
enum class AvxSums { kNotMade, kDense, kNonzeroOnly };
AvxSums window_sums_avx512(const WindowSums& d);
int32_t bracket_avx512(const LayerPlan& plan, const Layer& layer, const Bracket& b,
                       const float* sums, int32_t width, int32_t positions, int32_t padded_c,
                       int32_t out_c, const float* scale, float* high, float* low,
                       int32_t* first, int32_t* undecided);
int32_t intervals_avx512(const LayerPlan& plan, const float* sums, int32_t width,
                         int32_t positions, int32_t padded_c, int32_t out_c, const float* scale,
                         float lowest, float* high, float* low, int32_t* firing,
                         int32_t* undecided);
int32_t pool_verdicts_avx512(const LayerPlan& plan, const Layer& layer, const Bracket& b,
                             const WindowGeometry& pg, int32_t padded_c, const float* high,
                             const float* low, int32_t* time, int32_t* undecided);
// The activation grid of a certified layer from single spike steps (see GridJob).
void grid_rows_avx512(const GridJob& d);
#endif

}  // namespace cpu
}  // namespace ttfs
