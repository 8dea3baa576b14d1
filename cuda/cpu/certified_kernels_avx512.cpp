// The hand-written AVX-512 variants of the certified-sum kernels (certified_kernels.hpp):
// 16 lanes per register, fused multiply-adds in the window sums (one rounding per term, which
// the bound accounts for), tables looked up with register permutes. Each function carries
// target("avx512f") itself rather than the whole file being compiled with -mavx512f: the
// inline helpers of the headers must not come out as AVX-512 code that the linker could pick
// for the other variants too. Compiled only where the variants exist (TTFS_HAVE_AVX512_VARIANT).

#include "cpu/certified_kernels.hpp"

#include <algorithm>
#include <cstring>

namespace ttfs {
namespace cpu {

#if TTFS_HAVE_AVX512_VARIANT

// The first `span` (at most 2 * kLanes) floats of a grid row, as two lane masks, for
// all_zero().
struct SpanLanes {
    __mmask16 first, second;
    explicit SpanLanes(ptrdiff_t span)
        : first(__mmask16(span >= kLanes ? 0xffffu : (1u << span) - 1u)),
          second(__mmask16(span >= 2 * kLanes ? 0xffffu : span > kLanes ? (1u << (span - kLanes)) - 1u : 0u)) {}
};

// Whether those floats from a on are all zero (a kernel row that adds exact zeros only).
TTFS_AVX512 TTFS_INLINE bool all_zero(const float* a, const SpanLanes& span) {
    const __m512 zero = _mm512_setzero_ps();
    return (_mm512_mask_cmp_ps_mask(span.first, _mm512_maskz_loadu_ps(span.first, a), zero, _CMP_NEQ_UQ) |
            _mm512_mask_cmp_ps_mask(span.second, _mm512_maskz_loadu_ps(span.second, a + kLanes), zero, _CMP_NEQ_UQ)) == 0;
}

// The window sums of NB consecutive positions p0 .. p0 + NB - 1 (row-major over out_h x out_w;
// a block may run past the end of an output row into the next), for CH registers of each
// position's row, from register q0 on: all accumulators in registers, one fused multiply-add
// per term (per_term 1). Positions past the last are read as the last one and not stored. Each
// lane's chain (the rows of one kernel row in order, then added to the total) is the same
// whatever the blocking, so the sums do not depend on CH or NB.
template <int CH, int NB>
TTFS_AVX512 TTFS_INLINE void window_block(const WindowSums& d, int32_t p0, int32_t q0) {
    const int32_t valid = std::min(NB, d.out_h * d.out_w - p0);
    const int32_t row_len = d.kernel_w * d.in_c;
    const ptrdiff_t width = d.width;
    const ptrdiff_t grid_row = ptrdiff_t(d.grid_w) * d.in_c;
    const float* start = d.start + q0 * kLanes;
    const float* corner[NB];  // each position's window, top-left
    int32_t oh = p0 / d.out_w, ow = p0 - oh * d.out_w;  // position p0, then each next one
    for (int b = 0; b < NB; ++b) {
        corner[b] = d.grid + ptrdiff_t(oh) * d.stride_h * grid_row + ptrdiff_t(ow) * d.stride_w * d.in_c;
        if (b + 1 < valid && ++ow == d.out_w) {
            ow = 0;
            ++oh;
        }
    }
    float* out = d.out + ptrdiff_t(p0) * width + q0 * kLanes;
    // Narrow blocks keep their totals in registers too; wide ones in `out`.
    constexpr bool kTotalsInRegisters = 2 * NB * CH <= 24;
    __m512 total[kTotalsInRegisters ? NB : 1][CH];
    if constexpr (kTotalsInRegisters)
        for (int b = 0; b < NB; ++b)
            for (int q = 0; q < CH; ++q) total[b][q] = _mm512_loadu_ps(start + q * kLanes);
    // Where the block's windows lie along one grid row and span at most 32 floats (a first
    // layer's narrow input), a kernel row whose activations are all zero adds exact zeros: it
    // is skipped (images with blank borders have many).
    const ptrdiff_t span = corner[valid - 1] - corner[0] + row_len;
    const bool skippable = span <= 2 * kLanes && oh == p0 / d.out_w;
    const SpanLanes span_lanes(span);
    for (int32_t kh = 0; kh < d.kernel_h; ++kh) {
        const float* a[NB];
        for (int b = 0; b < NB; ++b) a[b] = corner[b] + kh * grid_row;
        if (skippable && all_zero(a[0], span_lanes)) {
            if constexpr (!kTotalsInRegisters)
                if (kh == 0)
                    for (int b = 0; b < valid; ++b)
                        for (int q = 0; q < CH; ++q)
                            _mm512_storeu_ps(out + b * width + q * kLanes, _mm512_loadu_ps(start + q * kLanes));
            continue;
        }
        const float* w = d.weights + ptrdiff_t(kh) * row_len * width + q0 * kLanes;
        __m512 acc[NB][CH];
        for (int b = 0; b < NB; ++b)
            for (int q = 0; q < CH; ++q) acc[b][q] = _mm512_setzero_ps();
        for (int32_t r = 0; r < row_len; ++r, w += width) {
            __m512 wv[CH];
            for (int q = 0; q < CH; ++q) wv[q] = _mm512_loadu_ps(w + q * kLanes);
            for (int b = 0; b < NB; ++b) {
                const __m512 x = _mm512_set1_ps(a[b][r]);
                for (int q = 0; q < CH; ++q) acc[b][q] = _mm512_fmadd_ps(x, wv[q], acc[b][q]);
            }
        }
        // The row's chain joins the total (the start values at the first row).
        if constexpr (kTotalsInRegisters) {
            for (int b = 0; b < NB; ++b)
                for (int q = 0; q < CH; ++q) total[b][q] = _mm512_add_ps(total[b][q], acc[b][q]);
            continue;
        }
        for (int b = 0; b < NB; ++b) {
            if (b >= valid) break;
            for (int q = 0; q < CH; ++q) {
                float* sum = out + b * width + q * kLanes;
                const __m512 before = _mm512_loadu_ps(kh == 0 ? start + q * kLanes : sum);
                _mm512_storeu_ps(sum, _mm512_add_ps(before, acc[b][q]));
            }
        }
    }
    if constexpr (kTotalsInRegisters)
        for (int b = 0; b < NB; ++b)
            if (b < valid)
                for (int q = 0; q < CH; ++q) _mm512_storeu_ps(out + b * width + q * kLanes, total[b][q]);
}

// Registers q0 .. q0 + CH - 1 of every position, NB positions at a time.
template <int CH, int NB>
TTFS_AVX512 void window_columns(const WindowSums& d, int32_t q0) {
    const int32_t positions = d.out_h * d.out_w;
    for (int32_t p0 = 0; p0 < positions; p0 += NB) window_block<CH, NB>(d, p0, q0);
}

// window_columns<CH, nb>() for the block sizes window_sums_avx512() picks for wide rows.
template <int CH>
TTFS_AVX512 void window_columns(const WindowSums& d, int32_t q0, int32_t nb) {
    if (nb == 8) window_columns<CH, 8>(d, q0);
    else if (nb == 7) window_columns<CH, 7>(d, q0);
    else window_columns<CH, 6>(d, q0);
}

// window_block<1, NB>() for a block of NB positions in one output row of a layer with one
// input channel and column stride 1 (a grayscale first layer) whose row is one register:
// position b's term r of a kernel row reads the grid row's cell b + r, so a kernel row of the
// block has NB + KW - 1 distinct activations. Each is broadcast once and multiplied by the
// weight rows of every (position, column) pair that reads it, the KW weight rows held in
// registers: a third of window_block()'s loads for KW = 5. Activation k reaches position b's
// chain as its term k - b, so every chain still takes its terms in column order: the same
// operations as window_block<1, NB>().
template <int KW, int NB>
TTFS_AVX512 TTFS_INLINE void gray_block(const WindowSums& d, int32_t p0) {
    const ptrdiff_t width = d.width;
    const int32_t oh = p0 / d.out_w, ow = p0 - oh * d.out_w;
    const float* corner = d.grid + ptrdiff_t(oh) * d.stride_h * d.grid_w + ow;
    __m512 total[NB];
    for (int b = 0; b < NB; ++b) total[b] = _mm512_loadu_ps(d.start);
    // As window_block(): a kernel row whose activations are all zero is skipped.
    constexpr int kSpan = NB + KW - 1;
    static_assert(kSpan <= 2 * kLanes, "the block's kernel row must span at most two registers");
    const SpanLanes span_lanes(kSpan);
    for (int32_t kh = 0; kh < d.kernel_h; ++kh) {
        const float* a = corner + ptrdiff_t(kh) * d.grid_w;
        if (all_zero(a, span_lanes)) continue;
        const float* w = d.weights + ptrdiff_t(kh) * KW * width;
        __m512 wv[KW], acc[NB];
        for (int r = 0; r < KW; ++r) wv[r] = _mm512_loadu_ps(w + r * width);
        for (int b = 0; b < NB; ++b) acc[b] = _mm512_setzero_ps();
#pragma GCC unroll 32
        for (int k = 0; k < kSpan; ++k) {
            const __m512 x = _mm512_set1_ps(a[k]);
#pragma GCC unroll 8
            for (int r = (k - NB + 1 > 0 ? k - NB + 1 : 0); r <= (k < KW - 1 ? k : KW - 1); ++r)
                acc[k - r] = _mm512_fmadd_ps(x, wv[r], acc[k - r]);
        }
        for (int b = 0; b < NB; ++b) total[b] = _mm512_add_ps(total[b], acc[b]);
    }
    float* out = d.out + ptrdiff_t(p0) * width;
    for (int b = 0; b < NB; ++b) _mm512_storeu_ps(out + b * width, total[b]);
}

// window_columns<1, 8>() where gray_block() applies: every block of 8 positions that lies in
// one output row takes it, the others window_block().
template <int KW>
TTFS_AVX512 void gray_columns(const WindowSums& d) {
    constexpr int kBlock = 8;
    const int32_t positions = d.out_h * d.out_w;
    for (int32_t p0 = 0; p0 < positions; p0 += kBlock) {
        const bool one_row = p0 + kBlock <= positions && p0 % d.out_w + kBlock <= d.out_w;
        if (one_row) gray_block<KW, kBlock>(d, p0);
        else window_block<1, kBlock>(d, p0, 0);
    }
}

// ---- Window sums over the nonzero activations only ---------------------------------------
// Where most activations are zero (a layer whose inputs mostly did not spike), the dense sums
// above spend most of their multiply-adds on zeros. Here the grid's nonzero activations are
// listed once, cell after cell in grid order (value, and the offset of its weight row as if
// the kernel's left column sat at the grid's column 0), so that the cells of one kernel row of
// a window are one stretch of the list; per position and kernel row that stretch is summed,
// one weight row per entry, its offsets shifted to the window's left column. Each lane's chain
// per kernel row holds that row's nonzero terms, one fused multiply-add each, as in the dense
// sums, so the rounding count of the bound is the same. Kernel row by kernel row over all
// positions, so that one kernel row's weights stay in the first-level cache.

// Lists the nonzero activations of cells [0, cells), cell_start[cell] the first entry of each
// and cell_start[cells] their number, which it returns.
TTFS_AVX512 int64_t list_cells(const WindowSums& sums, int32_t cells) {
    // Local copies: the stores of offsets and cell starts cannot alias them.
    const WindowSums d = sums;
    const SparseScratch s = *d.sparse;
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i row_offsets = _mm512_mullo_epi32(iota, _mm512_set1_epi32(d.width));
    int32_t n = 0;
    for (int32_t cell = 0; cell < cells; ++cell) {
        const float* a = d.grid + ptrdiff_t(cell) * d.in_c;
        const int32_t column = cell % d.grid_w;
        s.cell_start[cell] = n;
        for (int32_t c0 = 0; c0 < d.in_c; c0 += kLanes) {
            const __mmask16 lanes = __mmask16((1u << std::min(kLanes, d.in_c - c0)) - 1u);
            const __m512 x = _mm512_maskz_loadu_ps(lanes, a + c0);
            const __mmask16 nonzero_lanes = _mm512_mask_cmp_ps_mask(lanes, x, _mm512_setzero_ps(), _CMP_NEQ_UQ);
            const __m512i rows =
                _mm512_add_epi32(row_offsets, _mm512_set1_epi32((column * d.in_c + c0) * d.width));
            _mm512_storeu_si512(s.offset + n, _mm512_maskz_compress_epi32(nonzero_lanes, rows));
            _mm512_storeu_ps(s.value + n, _mm512_maskz_compress_ps(nonzero_lanes, x));
            n += __builtin_popcount(uint32_t(nonzero_lanes));
        }
    }
    s.cell_start[cells] = n;
    return n;
}

// Position p's sums for kernel row kh, CH registers (all of the position's row): the list's
// stretch of the kernel row's cells, a multiply-add per entry, the row's chain added to the
// total (to the start values at the first row).
template <int CH>
TTFS_AVX512 TTFS_INLINE void sparse_position(const WindowSums& d, int32_t p, int32_t kh) {
    const SparseScratch& s = *d.sparse;
    const ptrdiff_t width = d.width;
    const int32_t oh = p / d.out_w, ow = p - oh * d.out_w;
    const int32_t left = ow * d.stride_w;
    const int32_t first_cell = (oh * d.stride_h + kh) * d.grid_w + left;
    const int32_t begin = s.cell_start[first_cell], end = s.cell_start[first_cell + d.kernel_w];
    // An entry's offset less the window's left column: its weight row in kernel row kh.
    const int32_t shift = left * d.in_c * d.width;
    const float* w = d.weights + ptrdiff_t(kh) * d.kernel_w * d.in_c * width;
    __m512 acc[CH];
    for (int q = 0; q < CH; ++q) acc[q] = _mm512_setzero_ps();
    for (int32_t i = begin; i < end; ++i) {
        const __m512 x = _mm512_set1_ps(s.value[i]);
        const float* row = w + (s.offset[i] - shift);
        for (int q = 0; q < CH; ++q) acc[q] = _mm512_fmadd_ps(x, _mm512_loadu_ps(row + q * kLanes), acc[q]);
    }
    float* out = d.out + ptrdiff_t(p) * width;
    for (int q = 0; q < CH; ++q) {
        const __m512 before = _mm512_loadu_ps(kh == 0 ? d.start + q * kLanes : out + q * kLanes);
        _mm512_storeu_ps(out + q * kLanes, _mm512_add_ps(before, acc[q]));
    }
}

template <int CH>
TTFS_AVX512 void sparse_sums(const WindowSums& d) {
    const int32_t positions = d.out_h * d.out_w;
    for (int32_t kh = 0; kh < d.kernel_h; ++kh)
        for (int32_t p = 0; p < positions; ++p) sparse_position<CH>(d, p, kh);
}

// The sums over nonzero activations where they pay (false, nothing done, elsewhere). Measured
// against the dense sums on layers of 8-128 channels: they win where a kernel row holds at
// least 40 activations (fewer: the lists cost more than the zeros they skip) and at most a
// share of 0.4 of the activations is nonzero for rows of 4 registers or more, 0.2 for 3; with
// fewer registers the dense sums win.
TTFS_AVX512 bool sparse_window_sums(const WindowSums& d) {
    const int32_t registers = d.width / kLanes;
    const int64_t row_len = int64_t(d.kernel_w) * d.in_c;
    // The listed offsets span a grid row's cells: int32.
    if (d.sparse == nullptr || registers < 3 || registers > 12 || row_len < 40 ||
        int64_t(d.grid_w) * d.in_c * d.width > std::numeric_limits<int32_t>::max())
        return false;
    const int32_t cells = ((d.out_h - 1) * d.stride_h + d.kernel_h) * d.grid_w;
    const double share = registers == 3 ? 0.2 : 0.4;
    if (double(list_cells(d, cells)) > share * double(cells) * d.in_c) return false;
    switch (registers) {
        case 3: sparse_sums<3>(d); return true;
        case 4: sparse_sums<4>(d); return true;
        case 5: sparse_sums<5>(d); return true;
        case 6: sparse_sums<6>(d); return true;
        case 7: sparse_sums<7>(d); return true;
        case 8: sparse_sums<8>(d); return true;
        case 9: sparse_sums<9>(d); return true;
        case 10: sparse_sums<10>(d); return true;
        case 11: sparse_sums<11>(d); return true;
        default: sparse_sums<12>(d); return true;
    }
}

TTFS_AVX512
AvxSums window_sums_avx512(const WindowSums& d) {
    if (sparse_window_sums(d)) return AvxSums::kNonzeroOnly;
    const int32_t registers = d.width / kLanes;
    const int32_t positions = d.out_h * d.out_w;
    if (registers > 6 && positions >= 6) {
        // Wide rows (more than 96 channels): a whole row's weights, read once per block of
        // two or three positions, would stream from L2 at about one load per two multiply-adds.
        // Two registers of every position at a time instead, over blocks of 6-8 positions
        // (the size that wastes the fewest lanes at the end): each weight load serves up to 8
        // positions. Measured on the Fashion-MNIST model (128-channel layers): 1.16x the
        // whole-row blocks; on narrower rows the whole-row blocks below are faster.
        const int32_t nb = positions % 8 == 0 ? 8 : positions % 7 == 0 ? 7
                         : (positions + 7) / 8 * 8 <= (positions + 5) / 6 * 6 ? 8 : 6;
        int32_t q0 = 0;
        for (; q0 + 2 <= registers; q0 += 2) window_columns<2>(d, q0, nb);
        if (q0 < registers) window_columns<1>(d, q0, nb);
        return AvxSums::kDense;
    }
    // Narrower rows: all their registers at once, in blocks of 2-8 positions.
    switch (registers) {
        case 1:
            if (d.in_c == 1 && d.stride_w == 1 && d.kernel_w == 5) gray_columns<5>(d);
            else if (d.in_c == 1 && d.stride_w == 1 && d.kernel_w == 3) gray_columns<3>(d);
            else window_columns<1, 8>(d, 0);
            return AvxSums::kDense;
        case 2: window_columns<2, 8>(d, 0); return AvxSums::kDense;
        case 3: window_columns<3, 6>(d, 0); return AvxSums::kDense;
        case 4: window_columns<4, 5>(d, 0); return AvxSums::kDense;
        case 5: window_columns<5, 4>(d, 0); return AvxSums::kDense;
        case 6: window_columns<6, 3>(d, 0); return AvxSums::kDense;
        case 9: window_columns<9, 2>(d, 0); return AvxSums::kDense;
        default: return AvxSums::kNotMade;
    }
}

// table[idx] for 16 indices in [0, kGuessTable), the table held in 8 registers (t), by
// permutes within register pairs and a choice by the index's top bits.
TTFS_AVX512 TTFS_INLINE __m512 table16(const __m512* t, __m512i idx) {
    const __m512 r01 = _mm512_permutex2var_ps(t[0], idx, t[1]);
    const __m512 r23 = _mm512_permutex2var_ps(t[2], idx, t[3]);
    const __m512 r45 = _mm512_permutex2var_ps(t[4], idx, t[5]);
    const __m512 r67 = _mm512_permutex2var_ps(t[6], idx, t[7]);
    const __m512i part = _mm512_maskz_srli_epi32(__mmask16(0xffff), idx, 5);  // maskz: see guess16()
    const __m512 low = _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(part, _mm512_set1_epi32(1)), r01, r23);
    const __m512 high = _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(part, _mm512_set1_epi32(3)), r45, r67);
    return _mm512_mask_blend_ps(_mm512_cmpge_epi32_mask(part, _mm512_set1_epi32(2)), low, high);
}

// The lanes of `candidates` (high >= lowest > 0, finite ends) for which the fire step is
// certain, and that step in *j: a first guess j = ceil(td + tau * (ln vth0 - ln high)) from
// the table's formula, then a check against the table itself: high >= table[j] and (j == 0
// or high < table[j - 1]) make j first_crossing(high) (the table does not increase), and
// low >= table[j] makes it first_crossing(low) too. A wrong guess only costs the scalar way.
TTFS_AVX512 TTFS_INLINE __mmask16 guess16(const Bracket& b, const __m512* t, __m512 high,
                                          __m512 low, __mmask16 candidates, __m512i* j) {
    // ln(high) = e ln 2 + ln m, m in [1, 2); ln m = 2 atanh(s), s = (m - 1) / (m + 1) < 1/3,
    // by its series to s^9 (error below 1e-4 with the approximate reciprocal: about 0.01 of a
    // step for time constants up to 100, and a wrong guess only costs the scalar way).
    // (The maskz forms with every lane set: GCC 12 warns about the unmasked forms' undefined
    // pass-through operand.)
    const __mmask16 all = __mmask16(0xffff);
    const __m512 e = _mm512_maskz_getexp_ps(all, high);
    const __m512 m = _mm512_maskz_getmant_ps(all, high, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
    const __m512 one = _mm512_set1_ps(1.0f);
    // (an approximate reciprocal serves: only the guess depends on it)
    const __m512 sv = _mm512_mul_ps(_mm512_sub_ps(m, one), _mm512_maskz_rcp14_ps(all, _mm512_add_ps(m, one)));
    const __m512 s2 = _mm512_mul_ps(sv, sv);
    __m512 series = _mm512_set1_ps(1.0f / 9.0f);
    series = _mm512_fmadd_ps(series, s2, _mm512_set1_ps(1.0f / 7.0f));
    series = _mm512_fmadd_ps(series, s2, _mm512_set1_ps(1.0f / 5.0f));
    series = _mm512_fmadd_ps(series, s2, _mm512_set1_ps(1.0f / 3.0f));
    series = _mm512_fmadd_ps(series, s2, one);
    const __m512 ln = _mm512_fmadd_ps(e, _mm512_set1_ps(0.69314718f),
                                      _mm512_mul_ps(_mm512_set1_ps(2.0f), _mm512_mul_ps(sv, series)));
    const __m512 guess = _mm512_fmadd_ps(_mm512_set1_ps(b.tau), _mm512_sub_ps(_mm512_set1_ps(b.log_vth0), ln),
                                         _mm512_set1_ps(b.td));
    __m512i index = _mm512_maskz_cvt_roundps_epi32(all, guess, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    index = _mm512_maskz_max_epi32(all, _mm512_setzero_si512(),
                                   _mm512_maskz_min_epi32(all, index, _mm512_set1_epi32(b.len - 1)));
    const __m512 at = table16(t, index);
    const __m512i before_index =
        _mm512_maskz_max_epi32(all, _mm512_setzero_si512(), _mm512_sub_epi32(index, _mm512_set1_epi32(1)));
    const __m512 before = table16(t, before_index);
    const __mmask16 first = _mm512_cmpeq_epi32_mask(index, _mm512_setzero_si512());
    const __mmask16 crosses = _mm512_mask_cmp_ps_mask(candidates, high, at, _CMP_GE_OQ);
    const __mmask16 not_earlier = first | _mm512_cmp_ps_mask(high, before, _CMP_LT_OQ);
    const __mmask16 low_too = _mm512_cmp_ps_mask(low, at, _CMP_GE_OQ);
    *j = index;
    return crosses & not_earlier & low_too;
}

// The table for guess16(): kGuessTable floats (+inf after the table's end) in 8 registers.
TTFS_AVX512 TTFS_INLINE void load_table16(const Bracket& b, float* padded, __m512* t) {
    for (int32_t k = 0; k < kGuessTable; ++k)
        padded[k] = k < b.len ? b.table[k] : std::numeric_limits<float>::infinity();
    for (int32_t q = 0; q < kGuessTable / kLanes; ++q) t[q] = _mm512_loadu_ps(padded + q * kLanes);
}

// guess16() for the candidate lanes, and fire_start + j written to out (16 int32) for the lanes
// it decides; returns those lanes.
TTFS_AVX512 TTFS_INLINE uint32_t guess_and_store16(const Bracket& b, const __m512* t, __m512 high,
                                                  __m512 low, uint32_t candidates, int32_t* out) {
    __m512i j;
    const __mmask16 sure = guess16(b, t, high, low, __mmask16(candidates), &j);
    _mm512_mask_storeu_epi32(out, sure, _mm512_add_epi32(j, _mm512_set1_epi32(b.fire_start)));
    return uint32_t(sure);
}

// The lanes whose interval ends are both finite (high <= max and -low <= max; false for NaN).
TTFS_AVX512 TTFS_INLINE uint32_t finite_ends16(__m512 high, __m512 low) {
    const __m512 most = _mm512_set1_ps(std::numeric_limits<float>::max());
    return uint32_t(_mm512_cmp_ps_mask(high, most, _CMP_LE_OQ)) &
           uint32_t(_mm512_cmp_ps_mask(_mm512_sub_ps(_mm512_setzero_ps(), low), most, _CMP_LE_OQ));
}

// interval_eps() for 16 lanes: e = scale * bound + 2^-100 (per position), plus 4u|x|.
TTFS_AVX512 TTFS_INLINE __m512 interval_eps16(__m512 e, __m512 x) {
    return _mm512_add_ps(e, _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(0x1p-22f)));
}

TTFS_AVX512
int32_t bracket_avx512(const LayerPlan& plan, const Layer& layer, const Bracket& bracket,
                       const float* sums, int32_t width, int32_t positions, int32_t padded_c,
                       int32_t out_c, const float* scale, float* high, float* low,
                       int32_t* first, int32_t* undecided) {
    const Bracket b = bracket;  // local copies: the stores below cannot alias them
    const int32_t bound_base = plan.bound_base;
    const __m512 tiny = _mm512_set1_ps(0x1p-100f), floor = _mm512_set1_ps(b.lowest);
    const __m512i bound_lane = _mm512_loadu_si512(plan.bound_lane.data());
    __m512 t[kGuessTable / kLanes];
    alignas(64) float padded[kGuessTable];
    if (b.guessable) load_table16(b, padded, t);
    int32_t count = 0;
    for (int32_t p = 0; p < positions; ++p) {
        const float* v = sums + ptrdiff_t(p) * width;
        int32_t* neuron_first = first + p * out_c;
        if (!(scale[p] >= 0.0f)) {
            for (int32_t n = 0; n < out_c; ++n) undecided[count++] = p * out_c + n;
            continue;
        }
        const __m512 bound = _mm512_maskz_permutexvar_ps(__mmask16(0xffff), bound_lane, _mm512_loadu_ps(v + bound_base));
        const __m512 e = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(scale[p]), bound), tiny);
        for (int32_t q = 0; q < padded_c; q += kLanes) {
            const __m512 x = _mm512_loadu_ps(v + q), eps = interval_eps16(e, x);
            const __m512 h = _mm512_add_ps(x, eps), lo = _mm512_sub_ps(x, eps);
            _mm512_storeu_ps(high + q, h);
            _mm512_storeu_ps(low + q, lo);
            const int32_t valid = std::min(kLanes, out_c - q);
            uint32_t mask = uint32_t(_mm512_cmp_ps_mask(h, floor, _CMP_NLT_UQ)) & ((1u << valid) - 1u);
            const uint32_t finite = finite_ends16(h, lo);
            if (mask != 0 && b.guessable) mask &= ~guess_and_store16(b, t, h, lo, mask & finite, neuron_first + q);
            for (; mask != 0; mask &= mask - 1) {
                const int32_t l = __builtin_ctz(mask), n = q + l;
                const int32_t j = (finite >> l) & 1u ? decide_finite(plan, layer, b, high[n], low[n]) : kUndecided;
                // j >= 0 here unless undecided (high reaches the lowest threshold).
                neuron_first[n] = j >= 0 ? b.fire_start + j : neuron_first[n];
                undecided[count] = p * out_c + n;
                count += j == kUndecided ? 1 : 0;
            }
        }
    }
    return count;
}

TTFS_AVX512
int32_t intervals_avx512(const LayerPlan& plan, const float* sums, int32_t width,
                         int32_t positions, int32_t padded_c, int32_t out_c, const float* scale,
                         float lowest, float* high, float* low, int32_t* firing,
                         int32_t* undecided) {
    const __m512i bound_lane = _mm512_loadu_si512(plan.bound_lane.data());
    const __m512 tiny = _mm512_set1_ps(0x1p-100f), floor = _mm512_set1_ps(lowest);
    const int32_t bound_base = plan.bound_base;  // a local copy: the stores below cannot alias it
    int32_t count = 0, fired = 0;
    for (int32_t p = 0; p < positions; ++p) {
        const float* v = sums + ptrdiff_t(p) * width;
        const float factor = scale[p] >= 0.0f ? scale[p] : std::numeric_limits<float>::infinity();
        const __m512 bound = _mm512_maskz_permutexvar_ps(__mmask16(0xffff), bound_lane, _mm512_loadu_ps(v + bound_base));
        const __m512 e = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(factor), bound), tiny);
        for (int32_t q = 0; q < padded_c; q += kLanes) {
            const __m512 x = _mm512_loadu_ps(v + q), eps = interval_eps16(e, x);
            const __m512 h = _mm512_add_ps(x, eps), lo = _mm512_sub_ps(x, eps);
            _mm512_storeu_ps(high + ptrdiff_t(p) * padded_c + q, h);
            _mm512_storeu_ps(low + ptrdiff_t(p) * padded_c + q, lo);
            const int32_t valid = std::min(kLanes, out_c - q);
            const uint32_t lanes = (1u << valid) - 1u;
            const uint32_t finite = finite_ends16(h, lo);
            const uint32_t below = uint32_t(_mm512_cmp_ps_mask(h, floor, _CMP_LT_OQ)) & finite;
            const uint32_t above = uint32_t(_mm512_cmp_ps_mask(lo, floor, _CMP_GE_OQ)) & finite;
            fired += __builtin_popcount(above & lanes);
            for (uint32_t open = lanes & ~(below | above); open != 0; open &= open - 1)
                undecided[count++] = p * padded_c + q + __builtin_ctz(open);
        }
    }
    *firing = fired;
    return count;
}

// Bits [first, first + count) of a bit array, counted.
inline int32_t count_bits(const uint64_t* bits, int32_t first, int32_t count) {
    int32_t total = 0;
    while (count > 0) {
        const int32_t word = first >> 6, offset = first & 63, take = std::min(count, 64 - offset);
        const uint64_t mask = take == 64 ? ~uint64_t(0) : ((uint64_t(1) << take) - 1) << offset;
        total += __builtin_popcountll(bits[word] & mask);
        first += take;
        count -= take;
    }
    return total;
}

// 16 units at a time along each input row (a row's units are consecutive in the steps and in
// the grid); the tables are looked up with register permutes (steps + 1 <= kGuessTable).
TTFS_AVX512
void grid_rows_avx512(const GridJob& job) {
    const GridJob d = job;  // a local copy: the stores of bins and steps cannot alias it
    alignas(64) float kernel_table[kGuessTable], slot_table[kGuessTable];
    for (int32_t k = 0; k < kGuessTable; ++k) {
        kernel_table[k] = k <= d.steps ? d.kernel[k] : 0.0f;
        const int32_t slot = k <= d.steps ? d.slot[k] : d.steps;
        std::memcpy(&slot_table[k], &slot, sizeof slot);
    }
    __m512 kernels[kGuessTable / kLanes], slots[kGuessTable / kLanes];
    for (int32_t q = 0; q < kGuessTable / kLanes; ++q) {
        kernels[q] = _mm512_load_ps(kernel_table + q * kLanes);
        slots[q] = _mm512_load_ps(slot_table + q * kLanes);
    }
    const __m512i steps = _mm512_set1_epi32(d.steps), first = _mm512_set1_epi32(d.first_step);
    const __m512i turn = _mm512_and_si512(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                          _mm512_set1_epi32(kSpareBins - 1));
    const int32_t run = d.in_w * d.in_c;
    int32_t spiking_units = 0;  // their steps listed in spike_steps, counted at the end
    for (int32_t h = 0; h < d.in_h; ++h) {
        const int32_t* t = d.single + ptrdiff_t(h) * run;
        const ptrdiff_t offset = (ptrdiff_t(h + d.pad_top) * d.grid_w + d.pad_left) * d.in_c;
        float* x = d.grid + offset;
        int32_t* bin = d.grid_bin + offset;
        if (d.count_cells) std::fill(d.row_bits, d.row_bits + (run + 63) / 64, uint64_t(0));
        for (int32_t i = 0; i < run; i += kLanes) {
            const __mmask16 lanes = __mmask16(run - i >= kLanes ? 0xffffu : (1u << (run - i)) - 1u);
            const __m512i step = _mm512_maskz_loadu_epi32(lanes, t + i);
            const __m512i k = _mm512_maskz_min_epu32(__mmask16(0xffff), _mm512_sub_epi32(step, first), steps);
            const __m512 activation = table16(kernels, k);
            __m512i slot = _mm512_castps_si512(table16(slots, k));
            slot = _mm512_mask_add_epi32(slot, _mm512_cmpeq_epi32_mask(slot, steps), slot, turn);
            _mm512_mask_storeu_ps(x + i, lanes, activation);
            _mm512_mask_storeu_epi32(bin + i, lanes, slot);
            const __mmask16 spiking = _mm512_mask_cmplt_epu32_mask(lanes, k, steps);
            _mm512_storeu_si512(d.spike_steps + spiking_units, _mm512_maskz_compress_epi32(spiking, k));
            spiking_units += __builtin_popcount(uint32_t(spiking));
            if (d.count_cells) {
                const uint64_t nonzero = _mm512_mask_cmp_ps_mask(lanes, activation, _mm512_setzero_ps(), _CMP_NEQ_UQ);
                d.row_bits[i >> 6] |= nonzero << (i & 63);
            }
        }
        if (!d.count_cells) continue;
        int32_t* cells = d.cell_nonzero + (h + d.pad_top) * d.grid_w + d.pad_left;
        for (int32_t w = 0; w < d.in_w; ++w) cells[w] = count_bits(d.row_bits, w * d.in_c, d.in_c);
    }
    // The per-step counts in one pass over the listed steps (no branch per spiking unit; the
    // kSpareBins copies taken in turn, so that increments of one step do not wait for each
    // other).
    for (int32_t s = 0; s < spiking_units; ++s) ++d.per_step[d.spike_steps[s] * kSpareBins + (s & (kSpareBins - 1))];
}

// A pool child's interval ends into the largest so far: raised only by a larger value (a NaN
// never), as std::max(most, x) in the portable variant.
TTFS_AVX512 TTFS_INLINE void raise_ends(const float* high, const float* low, __m512& most_high, __m512& most_low) {
    const __m512 h = _mm512_loadu_ps(high), lo = _mm512_loadu_ps(low);
    most_high = _mm512_mask_mov_ps(most_high, _mm512_cmp_ps_mask(h, most_high, _CMP_GT_OQ), h);
    most_low = _mm512_mask_mov_ps(most_low, _mm512_cmp_ps_mask(lo, most_low, _CMP_GT_OQ), lo);
}

TTFS_AVX512
int32_t pool_verdicts_avx512(const LayerPlan& plan, const Layer& layer, const Bracket& bracket,
                             const WindowGeometry& pool, int32_t padded_c, const float* high,
                             const float* low, int32_t* time, int32_t* undecided) {
    // Local copies: the stores of the units' steps cannot alias them.
    const WindowGeometry pg = pool;
    const Bracket b = bracket;
    const __m512 floor = _mm512_set1_ps(b.lowest);
    const __m512i never = _mm512_set1_epi32(kNever);
    __m512 t[kGuessTable / kLanes];
    alignas(64) float padded[kGuessTable];
    if (b.guessable) load_table16(b, padded, t);
    const ptrdiff_t row = ptrdiff_t(pg.in_w) * padded_c;  // one input row's floats
    int32_t count = 0;
    for (int32_t oh = 0; oh < pg.out_h; ++oh) {
        for (int32_t ow = 0; ow < pg.out_w; ++ow) {
            int32_t* unit_time = time + (oh * pg.out_w + ow) * pg.out_c;
            const WindowInside win = window_inside(pg, oh, ow);
            // The usual 2x2 window, all inside: its four children unrolled.
            const bool whole_2x2 = pg.kernel_h == 2 && pg.kernel_w == 2 && win.kh_first == 0 &&
                                   win.kh_end == 2 && win.kw_first == 0 && win.kw_end == 2;
            const ptrdiff_t corner = (ptrdiff_t(win.ih0) * pg.in_w + win.iw0) * padded_c;
            for (int32_t q = 0; q < padded_c; q += kLanes) {
                __m512 most_high = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
                __m512 most_low = most_high;
                // Children in row-major order either way.
                if (whole_2x2) {
                    const ptrdiff_t i = corner + q;
                    raise_ends(high + i, low + i, most_high, most_low);
                    raise_ends(high + i + padded_c, low + i + padded_c, most_high, most_low);
                    raise_ends(high + i + row, low + i + row, most_high, most_low);
                    raise_ends(high + i + row + padded_c, low + i + row + padded_c, most_high, most_low);
                } else {
                    for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh)
                        for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
                            const ptrdiff_t i = ptrdiff_t((win.ih0 + kh) * pg.in_w + win.iw0 + kw) * padded_c + q;
                            raise_ends(high + i, low + i, most_high, most_low);
                        }
                }
                const int32_t valid = std::min(kLanes, pg.out_c - q);
                const __mmask16 lanes = __mmask16((1u << valid) - 1u);
                _mm512_mask_storeu_epi32(unit_time + q, lanes, never);
                uint32_t mask = uint32_t(_mm512_mask_cmp_ps_mask(lanes, most_high, floor, _CMP_GE_OQ));
                if (mask == 0) continue;
                if (b.guessable) {
                    mask &= ~guess_and_store16(b, t, most_high, most_low,
                                               mask & finite_ends16(most_high, most_low), unit_time + q);
                    if (mask == 0) continue;
                }
                alignas(64) float ends_high[kLanes], ends_low[kLanes];
                _mm512_store_ps(ends_high, most_high);
                _mm512_store_ps(ends_low, most_low);
                for (; mask != 0; mask &= mask - 1) {
                    const int32_t l = __builtin_ctz(mask);
                    const int32_t j = decide(plan, layer, b, ends_high[l], ends_low[l]);
                    unit_time[q + l] = j >= 0 ? b.fire_start + j : kNever;
                    undecided[count] = (oh * pg.out_w + ow) * pg.out_c + q + l;
                    count += j == kUndecided ? 1 : 0;
                }
            }
        }
    }
    return count;
}

#endif  // TTFS_HAVE_AVX512_VARIANT

}  // namespace cpu
}  // namespace ttfs
