// Window geometry shared by the CPU and CUDA backends (host + device): which input positions
// a conv2d or maxpool output position reads, and which output positions an input position
// feeds. ttfs_math.h has the arithmetic; this header has the indexing, so that both backends
// walk a window in the same canonical order (kernel row, then kernel column) over the same
// positions (those inside the input: SAME padding adds none).
//
// conv2d and dense share one geometry: dense is a 1x1 VALID convolution over its (1, 1, n)
// input, whose [n, units] weights are exactly HWIO [1, 1, n, units]. maxpool windows are
// described the same way (a kernel that keeps the channel); window_geometry() of model.hpp
// builds it from a layer. The CUDA backend's DeviceLayer is a WindowGeometry with its tables.
#pragma once

#include <stdint.h>

#include "ttfs_math.h"

namespace ttfs {

struct WindowGeometry {
    int32_t in_h = 0, in_w = 0, in_c = 0, out_h = 0, out_w = 0, out_c = 0;
    int32_t kernel_h = 0, kernel_w = 0, stride_h = 0, stride_w = 0, pad_top = 0, pad_left = 0;

    TTFS_HD int32_t positions() const { return out_h * out_w; }
};

// The part of output position (oh, ow)'s window that lies inside the input: kernel rows
// [kh_first, kh_end) and columns [kw_first, kw_end); kernel row kh reads input row ih0 + kh,
// kernel column kw input column iw0 + kw. Empty ranges (first >= end) when nothing is inside.
struct WindowInside {
    int32_t kh_first, kh_end, kw_first, kw_end, ih0, iw0;
};

template <class Geometry>
TTFS_HD WindowInside window_inside(const Geometry& g, int32_t oh, int32_t ow) {
    const int32_t ih0 = oh * g.stride_h - g.pad_top, iw0 = ow * g.stride_w - g.pad_left;
    WindowInside win;
    win.kh_first = ih0 < 0 ? -ih0 : 0;
    win.kh_end = g.in_h - ih0 < g.kernel_h ? g.in_h - ih0 : g.kernel_h;
    win.kw_first = iw0 < 0 ? -iw0 : 0;
    win.kw_end = g.in_w - iw0 < g.kernel_w ? g.in_w - iw0 : g.kernel_w;
    win.ih0 = ih0;
    win.iw0 = iw0;
    return win;
}

// The output rows (or columns) whose window [o * stride - pad, o * stride - pad + kernel) holds
// input row i: o in [first, last], empty when first > last. Used to scatter a spike forward.
struct OutputRange {
    int32_t first, last;
};

TTFS_HD OutputRange outputs_fed_by(int32_t i, int32_t pad, int32_t kernel, int32_t stride, int32_t out) {
    const int32_t padded = i + pad;  // >= 0: padding is never negative
    const int32_t lowest = padded - kernel + 1;
    OutputRange range;
    range.first = lowest <= 0 ? 0 : (lowest + stride - 1) / stride;
    range.last = padded / stride < out - 1 ? padded / stride : out - 1;
    return range;
}

}  // namespace ttfs
