// CPU backend: the stepped and analytic engines of docs/ENGINES.md, threaded over the batch.
//
// Every float operation that decides a spike goes through cuda/ttfs_math.h and the tables of
// ttfs::Layer, in the order docs/ENGINES.md fixes, so the two engines give the same bits. Each
// image is computed by one thread from start to end, so results do not depend on the thread
// count or on which thread took which image.
//
// Both engines are event driven and share their exact arithmetic kernels: a step's
// presynaptic spikes are scattered forward into the synaptic sums of the neurons they feed,
// and only the neurons that received something integrate at that step (V + 0 * k == V for the
// others). The stepped engine does that at every step and checks thresholds at every step. The
// analytic engine takes each layer once: the output layer (and any layer with TTFS_CERTIFY=off)
// with the same exact kernels at the steps where spikes arrive; hidden conv2d/dense layers by
// certified sums (docs/ENGINES.md): fast dense sums with a rigorous error bound, a fire step
// read off each interval, exact potentials only where an interval cannot decide, and an
// `earliest` pool after such a layer decided from its children's intervals.
// docs/BENCHMARKS.md has the measured speed and where the time goes.
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "backend.hpp"
#include "ttfs_math.h"

#if defined(__x86_64__)
#  include <immintrin.h>
#endif

// The hot loops run across the output channels of one position: independent neurons, so SIMD
// lanes change no neuron's order of operations and every instruction set gives the same bits.
// GCC and Clang compile the functions marked TTFS_VECTOR_CLONES once per instruction set and
// pick one when the library is loaded (ifunc), so a portable build uses AVX-512 or AVX2 where
// the CPU has it and still runs on any x86-64. The scatter kernel has a hand-picked AVX-512
// variant (TTFS_AVX512, chosen at run time) because its portable loop schedules worse there.
// -ffp-contract=off holds in every variant: no fused multiply-add anywhere.
#if defined(__clang__)
#  if __clang_major__ >= 14
#    define TTFS_CLONES_SUPPORTED 1
#  endif
#elif defined(__GNUC__)
#  define TTFS_CLONES_SUPPORTED 1
#endif
#if defined(TTFS_CLONES_SUPPORTED) && defined(__x86_64__) && defined(__ELF__) && \
    !defined(TTFS_NO_VECTOR_CLONES)
#  define TTFS_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#  define TTFS_PORTABLE_CLONES __attribute__((target_clones("avx2", "default")))
#  define TTFS_AVX512 __attribute__((target("avx512f")))
#  define TTFS_HAVE_AVX512_VARIANT 1
#else
#  define TTFS_VECTOR_CLONES
#  define TTFS_PORTABLE_CLONES
#  define TTFS_HAVE_AVX512_VARIANT 0
#endif

namespace ttfs {

namespace {

constexpr int32_t kNever = -1;  // first_spike_time of a neuron that has not fired

// Plans and workspaces take their memory through a Memory, so that a session can learn what
// they will allocate, byte for byte, before anything is allocated (the memory budget of
// ttfs_session_create_ex): counting, take() only adds up the bytes and leaves the vector
// empty; the constructors then run the same code either way. (Each vector's own header and
// the arrays of vectors of vectors, a few dozen bytes per layer, are left out.)
class Memory {
public:
    explicit Memory(bool counting) : counting_(counting) {}
    template <typename T, typename V>
    void take(std::vector<T>& vector, size_t count, const V& value) {
        add(count, sizeof(T));
        if (!counting_) vector.assign(count, T(value));
    }
    void add(size_t count, size_t size) {
        uint64_t bytes = 0;
        if (__builtin_mul_overflow(uint64_t(count), uint64_t(size), &bytes) ||
            __builtin_add_overflow(bytes_, bytes, &bytes_))
            bytes_ = std::numeric_limits<uint64_t>::max();
    }
    bool counting() const { return counting_; }
    uint64_t bytes() const { return bytes_; }

private:
    bool counting_;
    uint64_t bytes_ = 0;
};

// Synaptic sums and (padded copies of) weights hold a position's output channels in chunks of
// kLanes floats, the tail padded with zeros, so the innermost loop has a fixed length the
// compiler turns into whole vector registers (one AVX-512, two AVX2 or four SSE registers).
constexpr int32_t kLanes = 16;

// The most neighbouring output positions window_sums() computes together; the activation grid
// has that many positions' worth of zeros after its end, for the last block's reads.
constexpr int32_t kMostBlock = 8;

int32_t padded_channels(int32_t channels) { return (channels + kLanes - 1) / kLanes * kLanes; }

// conv2d and dense share one geometry: dense is a 1x1 VALID conv over its (1, 1, n) input.
// Its [n, units] weights are then exactly HWIO [1, 1, n, units], and conv2d's canonical order
// (kernel row, kernel column, input channel) reduces to dense's (input index ascending).
// maxpool windows are described the same way (a kernel that keeps the channel).
struct Projection {
    int32_t in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left;

    int32_t positions() const { return out_h * out_w; }
};

Projection projection_of(const Layer& layer) {
    if (layer.kind == TTFS_LAYER_DENSE)
        return {1, 1, int32_t(layer.in.size()), 1, 1, layer.out.c, 1, 1, 1, 1, 0, 0};
    return {layer.in.h,     layer.in.w,     layer.in.c,     layer.out.h,
            layer.out.w,    layer.out.c,    layer.kernel_h, layer.kernel_w,
            layer.stride_h, layer.stride_w, layer.pad_top,  layer.pad_left};
}

// The output rows (or columns) whose window [o*stride - pad, o*stride - pad + kernel) holds
// input row i: o in [first, last], empty when first > last. Used to scatter a spike forward.
struct OutputRange {
    int32_t first, last;
};

OutputRange outputs_fed_by(int32_t i, int32_t pad, int32_t kernel, int32_t stride, int32_t out) {
    const int32_t padded = i + pad;  // >= 0: padding is never negative
    const int32_t lowest = padded - kernel + 1;
    const int32_t first = lowest <= 0 ? 0 : (lowest + stride - 1) / stride;
    const int32_t last = std::min(padded / stride, out - 1);
    return {first, last};
}

// The part of output position (oh, ow)'s window that lies inside the input: kernel rows
// [kh_first, kh_end) and columns [kw_first, kw_end); input row ih0 + kh, column iw0 + kw.
struct WindowInside {
    int32_t kh_first, kh_end, kw_first, kw_end, ih0, iw0;
};

inline WindowInside window_inside(const Projection& g, int32_t oh, int32_t ow) {
    const int32_t ih0 = oh * g.stride_h - g.pad_top, iw0 = ow * g.stride_w - g.pad_left;
    return {std::max(0, -ih0), std::min(g.kernel_h, g.in_h - ih0),
            std::max(0, -iw0), std::min(g.kernel_w, g.in_w - iw0), ih0, iw0};
}

struct UnitOrigin {
    int32_t h, w, c;
};

// Where the spikes of a conv2d/dense/maxpool layer's input go: per input unit (HWC index) its
// row, column and channel, and per input row / column the output rows / columns whose windows
// hold it. Tables instead of divisions in the per-spike loops.
struct Fanout {
    std::vector<UnitOrigin> origin;
    std::vector<OutputRange> rows, cols;
};

Fanout fanout_of(const Projection& g, Memory& memory) {
    Fanout fan;
    memory.take(fan.origin, size_t(g.in_h) * size_t(g.in_w) * size_t(g.in_c), UnitOrigin{0, 0, 0});
    memory.take(fan.rows, size_t(g.in_h), OutputRange{0, 0});
    memory.take(fan.cols, size_t(g.in_w), OutputRange{0, 0});
    if (memory.counting()) return fan;
    size_t unit = 0;
    for (int32_t h = 0; h < g.in_h; ++h)
        for (int32_t w = 0; w < g.in_w; ++w)
            for (int32_t c = 0; c < g.in_c; ++c) fan.origin[unit++] = {h, w, c};
    for (int32_t h = 0; h < g.in_h; ++h)
        fan.rows[size_t(h)] = outputs_fed_by(h, g.pad_top, g.kernel_h, g.stride_h, g.out_h);
    for (int32_t w = 0; w < g.in_w; ++w)
        fan.cols[size_t(w)] = outputs_fed_by(w, g.pad_left, g.kernel_w, g.stride_w, g.out_w);
    return fan;
}

// first_crossing() for a non-increasing threshold table with a positive last entry, in O(1):
// a positive float's bit pattern grows with its value, so the bits above `shift` of a
// potential name a bucket of potentials, and bucket_start[b] is first_crossing() of the
// largest potential of bucket b, a lower bound for every potential in it. A short scan from
// there finds the exact first_crossing() (the same reaches() tests against the same table).
struct CrossingIndex {
    bool usable = false;
    int32_t shift = 0;
    uint32_t first_bucket = 0, last_bucket = 0;  // those of the lowest and the highest threshold
    std::vector<int32_t> bucket_start;
    // Per bucket: its start when every potential of the bucket has that first_crossing() (the
    // bucket holds no threshold), else -1.
    std::vector<int32_t> bucket_sure;
};

uint32_t float_bits(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}

float bits_float(uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

// Bytes of a crossing index at most: two int32 per bucket (kMostBuckets, see below).
constexpr size_t kCrossingIndexBytes = 2 * 4096 * sizeof(int32_t);

CrossingIndex crossing_index_of(const std::vector<float>& table) {
    CrossingIndex index;
    if (table.empty()) return index;
    for (size_t j = 1; j < table.size(); ++j)
        if (!(table[j] <= table[j - 1])) return index;  // not non-increasing (NaN included)
    const float lowest = table.back(), highest = table.front();
    if (!(lowest > 0.0f) || !(highest < bits_float(0x7f800000u))) return index;  // not in (0, inf)
    // Buckets of 1/128 of an octave (7 mantissa bits) where that keeps the index small;
    // coarser buckets only mean longer scans.
    constexpr uint32_t kMostBuckets = 4096;
    index.shift = 16;
    while (index.shift < 31 &&
           (float_bits(highest) >> index.shift) - (float_bits(lowest) >> index.shift) + 1 > kMostBuckets)
        ++index.shift;
    index.first_bucket = float_bits(lowest) >> index.shift;
    index.last_bucket = float_bits(highest) >> index.shift;
    const int32_t len = int32_t(table.size());
    for (uint32_t b = index.first_bucket; b <= index.last_bucket; ++b) {
        // The bucket's largest potential is >= lowest (b >= first_bucket), so it crosses.
        const float largest = bits_float(((b + 1) << index.shift) - 1);
        const int32_t start = first_crossing(largest, table.data(), len);
        if (start < 0) return index;  // cannot happen for finite thresholds; stay safe
        index.bucket_start.push_back(start);
        const float smallest = bits_float(b << index.shift);  // >= lowest > 0: b >= first_bucket
        index.bucket_sure.push_back(first_crossing(smallest, table.data(), len) == start ? start : -1);
    }
    index.usable = true;
    return index;
}

// first_crossing(v, layer.fire_threshold) for a v at or above the table's lowest entry (the
// caller has checked), through the crossing index where the table has one.
struct LayerPlan;
int32_t crossing_from_lowest(const LayerPlan& plan, const Layer& layer, float v);

// What the engines need to know about a layer beyond ttfs::Layer, computed once per session
// and shared read-only by the worker threads.
struct LayerPlan {
    size_t source = 0;  // the layer whose spikes are this layer's output (flatten: the one below)
    // conv2d, dense, maxpool
    Projection projection{};
    Fanout fanout;
    // conv2d, dense
    int32_t padded_c = 0;                // out_c rounded up to whole kLanes chunks
    std::vector<float> padded_weights;   // HWIO with out channels padded to padded_c; empty when
                                         // out_c is already whole chunks (then layer.weights)
    // Neuron layers: below the lowest threshold no entry of the table can be reached.
    float lowest_threshold = 0;
    CrossingIndex crossing;
    // The steps at which the layer's output can spike: [window_start, window_start +
    // window_len); the fire window of a neuron layer, inherited through maxpool and flatten.
    int32_t window_start = 0, window_len = 0;
    // Per image, all units together: SpikeBounds::total of model.hpp (what can actually arrive:
    // an `or` or `gated` pool unit at most once per distinct step of its window's children).
    size_t most_spikes = 0;

    const float* weights(const Layer& layer) const {
        return padded_weights.empty() ? layer.weights.data() : padded_weights.data();
    }

    // Every unit of this layer's output spikes at most once (not so after an `or` pool).
    bool single_spike = true;
    // The next layer reads this layer's spikes listed by step (an exact conv2d/dense layer
    // or a pool relaying spikes by step); otherwise the analytic engine skips that list.
    bool list_by_step = false;
    // Hidden conv2d/dense layers under the analytic engine: the certified sums of
    // docs/ENGINES.md. bound_weights has one row per presynaptic unit of a window (HWIO row
    // (kh * kernel_w + kw) * in_c + ci) of bound_stride floats: the weights of the padded_c
    // channels and the bound lanes, which hold max |w| over groups of channels; bound_bias
    // likewise (the bias, max |bias|). fan_in: rows per window. Bound lanes: channel lane l of
    // every kLanes chunk (channel q * kLanes + l) takes its bound from lane bound_lane[l] of the
    // chunk at offset bound_base. A layer of at most kLanes - 1 channels keeps its bound lanes
    // in its chunk's spare lanes (base 0, lanes out_c + l % (kLanes - out_c)); wider layers
    // have a chunk of their own after the channels (base padded_c, lane l: channels n % kLanes
    // == l).
    bool certified = false;
    int32_t bound_base = 0;
    std::array<int32_t, kLanes> bound_lane{};
    // A certified layer followed by an `earliest` pool: unless first-spike times are recorded,
    // the pool's spike steps come from the layer's intervals directly (docs/ENGINES.md).
    bool fuses_pool = false;
    int32_t fan_in = 0, bound_stride = 0;
    std::vector<float> bound_weights, bound_bias;
    // The input as a grid padded with zeros (SAME padding; plus slack for the last block of
    // window_sums()): grid_h x grid_w cells of in_c floats, grid_floats in all.
    int32_t grid_h = 0, grid_w = 0;
    size_t grid_floats = 0;
    // Per step k of the input's spike window (first step + k): the bin an input spike there
    // goes to (k, or the spare bin `window length` where the layer does not integrate; the
    // spare bin's own entry maps to itself), the kernel of that step (0 where none), and the
    // bin of step 0 (-1 when outside the window). Used by the exact recomputation.
    std::vector<float> weights_by_neuron;  // [out_c][fan_in]: a neuron's window weights together
    std::vector<int32_t> bin_slot;
    std::vector<float> bin_kernel;
    int32_t zero_bin = -1;
    // `gated` maxpool (its children are the neurons of the layer below, which fire at most
    // once): per step k of the children's fire window (first step window_start), how the
    // counter vth(t) of a child firing at t compares with the counter 1 of a child that fired
    // earlier (Gate); see relay_pool() of the analytic engine.
    std::vector<uint8_t> gate;
};

// A `gated` pool at step t (docs/ENGINES.md): every child has a spike counter, 0 before it
// fires, vth(t) at its fire step, 1 afterwards, and the unit passes the spike of the step of the
// child with the largest counter, the first in window order among equals. With E the children
// that fired before t and F those firing at t (F not empty), the unit spikes at t when:
enum Gate : uint8_t {
    kGateOpen = 0,    // vth(t) > 1: F outranks everyone: always
    kGateFirst = 1,   // 0 < vth(t) < 1: only if E is empty
    kGateTieOne = 2,  // vth(t) == 1: if E is empty, else if the first child in window order of E
                      // and F together is in F
    kGateTieZero = 3  // vth(t) == 0: only if E is empty and the first child in window order (the
                      // counters all 0) is in F
};

Gate gate_of(float vth) {
    if (vth > 1.0f) return kGateOpen;
    if (vth == 1.0f) return kGateTieOne;
    return vth > 0.0f ? kGateFirst : kGateTieZero;  // thresholds are never negative
}

void plan_gate(const Layer& children, LayerPlan& plan, Memory& memory) {
    memory.take(plan.gate, size_t(plan.window_len), kGateOpen);
    if (memory.counting()) return;
    for (int32_t k = 0; k < plan.window_len; ++k)
        plan.gate[size_t(k)] = gate_of(children.fire_threshold[size_t(plan.window_start + k - children.fire_start)]);
}

// How the analytic engine forms hidden layers' potentials (environment TTFS_CERTIFY, read when
// a session is created; docs/ENGINES.md): kOn = certified sums with exact recomputation where
// they cannot decide; kOff = exact sums for every neuron (the event-driven scatter);
// kRecompute = certified path, but every neuron recomputed exactly (tests the recomputation).
enum class Certify { kOn, kOff, kRecompute };

int32_t crossing_from_lowest(const LayerPlan& plan, const Layer& layer, float v) {
    const CrossingIndex& index = plan.crossing;
    const float* table = layer.fire_threshold.data();
    const int32_t len = layer.fire_len();
    if (!index.usable) return first_crossing(v, table, len);
    // v >= lowest > 0 here, so its bits order like its value; potentials above the highest
    // threshold share the last bucket, whose start is 0.
    const uint32_t bucket = std::min(float_bits(v) >> index.shift, index.last_bucket);
    int32_t j = index.bucket_start[bucket - index.first_bucket];
    while (j < len && !reaches(v, table[j])) ++j;
    return j == len ? -1 : j;
}

// The bound rows of a certified layer (see LayerPlan).
void plan_certified(const Layer& layer, const LayerPlan& input, LayerPlan& plan, Memory& memory) {
    const Projection& g = plan.projection;
    const int32_t out_c = g.out_c, padded_c = plan.padded_c;
    plan.certified = true;
    plan.fan_in = g.kernel_h * g.kernel_w * g.in_c;
    const bool packed = padded_c == kLanes && out_c < kLanes;
    const int32_t groups = packed ? kLanes - out_c : kLanes;
    plan.bound_base = packed ? 0 : padded_c;
    for (int32_t l = 0; l < kLanes; ++l) plan.bound_lane[size_t(l)] = packed ? out_c + l % groups : l;
    auto bound_at = [&](int32_t n) { return size_t(plan.bound_base + plan.bound_lane[size_t(n % kLanes)]); };
    plan.bound_stride = packed ? kLanes : padded_c + kLanes;
    const size_t stride = size_t(plan.bound_stride);
    const int32_t pad_bottom = std::max(0, (g.out_h - 1) * g.stride_h + g.kernel_h - g.in_h - g.pad_top);
    const int32_t pad_right = std::max(0, (g.out_w - 1) * g.stride_w + g.kernel_w - g.in_w - g.pad_left);
    plan.grid_h = g.in_h + g.pad_top + pad_bottom;
    plan.grid_w = g.in_w + g.pad_left + pad_right;
    plan.grid_floats = (size_t(plan.grid_h) * size_t(plan.grid_w) + size_t(kMostBlock) * size_t(g.stride_w)) *
                       size_t(g.in_c);
    const int32_t steps = input.window_len;
    memory.take(plan.bound_weights, size_t(plan.fan_in) * stride, 0.0f);
    memory.take(plan.weights_by_neuron, size_t(plan.fan_in) * size_t(out_c), 0.0f);
    memory.take(plan.bin_slot, size_t(steps) + 1, steps);
    memory.take(plan.bin_kernel, size_t(steps) + 1, 0.0f);
    memory.take(plan.bound_bias, stride, 0.0f);
    if (memory.counting()) return;
    for (size_t r = 0; r < size_t(plan.fan_in); ++r)
        for (size_t n = 0; n < size_t(out_c); ++n)
            plan.weights_by_neuron[n * size_t(plan.fan_in) + r] = layer.weights[r * size_t(out_c) + n];
    for (size_t r = 0; r < size_t(plan.fan_in); ++r) {
        float* row = plan.bound_weights.data() + r * stride;
        for (int32_t n = 0; n < out_c; ++n) {
            const float w = layer.weights[r * size_t(out_c) + size_t(n)];
            row[n] = w;
            row[bound_at(n)] = std::max(row[bound_at(n)], std::fabs(w));
        }
    }
    for (int32_t k = 0; k < steps; ++k) {
        const int32_t t = input.window_start + k;
        if (!layer.integrates_at(t)) continue;
        plan.bin_slot[size_t(k)] = k;
        plan.bin_kernel[size_t(k)] = layer.kernel_at(t);
        if (t == 0) plan.zero_bin = k;
    }
    for (int32_t n = 0; n < out_c; ++n) {
        const float b = layer.bias[size_t(n)];
        plan.bound_bias[size_t(n)] = b;
        float& lane = plan.bound_bias[bound_at(n)];
        lane = std::max(lane, std::fabs(b));
    }
}

// With a counting Memory: every size and flag, none of the tables (fan-out, padded and bound
// weights, crossing index), and their bytes counted.
std::vector<LayerPlan> plan_model(const Model& model, ttfs_engine engine, Certify certify, Memory& memory) {
    std::vector<LayerPlan> plans(model.layers.size());
    const std::vector<SpikeBounds> bounds = spike_bounds(model);
    for (size_t li = 0; li < model.layers.size(); ++li) {
        const Layer& layer = model.layers[li];
        LayerPlan& plan = plans[li];
        plan.source = li;
        plan.most_spikes = size_t(bounds[li].total);
        if (layer.has_neurons()) {
            const std::vector<float>& table = layer.fire_threshold;
            if (!table.empty()) plan.lowest_threshold = *std::min_element(table.begin(), table.end());
            memory.add(1, kCrossingIndexBytes);
            if (!memory.counting()) plan.crossing = crossing_index_of(table);
            if (layer.fires) {
                plan.window_start = layer.fire_start;
                plan.window_len = layer.fire_len();
            }
        } else {
            const LayerPlan& below = plans[li - 1];
            plan.window_start = below.window_start;
            plan.window_len = below.window_len;
            plan.single_spike = below.single_spike &&
                                !(layer.kind == TTFS_LAYER_MAXPOOL && layer.pool_mode != TTFS_POOL_EARLIEST);
            if (layer.kind == TTFS_LAYER_FLATTEN) plan.source = below.source;  // HWC == flat order
        }
        if (layer.kind == TTFS_LAYER_MAXPOOL) {
            plan.projection = projection_of(layer);  // the window geometry, as for conv2d
            plan.fanout = fanout_of(plan.projection, memory);
            if (layer.pool_mode == TTFS_POOL_GATED) plan_gate(model.layers[li - 1], plan, memory);
        } else if (layer.kind == TTFS_LAYER_CONV2D || layer.kind == TTFS_LAYER_DENSE) {
            const Projection g = projection_of(layer);
            plan.projection = g;
            plan.fanout = fanout_of(g, memory);
            plan.padded_c = padded_channels(g.out_c);
            if (plan.padded_c != g.out_c) {
                const size_t rows = layer.weights.size() / size_t(g.out_c);
                memory.take(plan.padded_weights, rows * size_t(plan.padded_c), 0.0f);
                for (size_t r = 0; r < rows && !memory.counting(); ++r)
                    std::copy(layer.weights.begin() + ptrdiff_t(r * size_t(g.out_c)),
                              layer.weights.begin() + ptrdiff_t((r + 1) * size_t(g.out_c)),
                              plan.padded_weights.begin() + ptrdiff_t(r * size_t(plan.padded_c)));
            }
            // The output layer's potentials are results, so its sums are always exact.
            // (A layer with an empty fire window never fires; the exact path says so.)
            if (engine == TTFS_ENGINE_ANALYTIC && certify != Certify::kOff && layer.fires &&
                layer.fire_len() > 0 && li + 1 < model.layers.size())
                plan_certified(layer, plans[li - 1], plan, memory);
        }
    }
    for (size_t li = 0; li + 1 < model.layers.size(); ++li)
        plans[li].fuses_pool = plans[li].certified && model.layers[li + 1].kind == TTFS_LAYER_MAXPOOL &&
                               model.layers[li + 1].pool_mode == TTFS_POOL_EARLIEST;
    // Who reads a layer's spikes by step (the analytic engine; the stepped engine has no use for
    // list_by_step).
    for (size_t li = 0; li + 1 < model.layers.size(); ++li) {
        if (model.layers[li].kind == TTFS_LAYER_FLATTEN) continue;
        size_t next = li + 1;
        while (next + 1 < model.layers.size() && model.layers[next].kind == TTFS_LAYER_FLATTEN) ++next;
        const Layer& consumer = model.layers[next];
        if (consumer.kind == TTFS_LAYER_MAXPOOL)
            plans[li].list_by_step = !(consumer.pool_mode == TTFS_POOL_EARLIEST && plans[li].single_spike);
        else if (consumer.kind == TTFS_LAYER_CONV2D || consumer.kind == TTFS_LAYER_DENSE)
            plans[li].list_by_step = !plans[next].certified || !plans[li].single_spike;
    }
    return plans;
}

// The plans with their tables, allocated.
std::vector<LayerPlan> make_plans(const Model& model, ttfs_engine engine, Certify certify) {
    Memory memory(false);
    return plan_model(model, engine, certify, memory);
}

// ---- Kernels shared by both engines ---------------------------------------------------------

#if defined(__GNUC__)
#  define TTFS_INLINE inline __attribute__((always_inline))  // so that it lands in every clone
#else
#  define TTFS_INLINE inline
#endif

#if TTFS_HAVE_AVX512_VARIANT
// kLanes floats as one value (GCC/Clang vector extension): lane-wise IEEE adds. Only used in
// the AVX-512 variant, where it is one register.
typedef float Chunk __attribute__((vector_size(kLanes * sizeof(float))));
#endif

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
TTFS_INLINE int32_t scatter_spikes_n(const Projection& g, const Fanout& fan, int32_t padded_c,
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
TTFS_INLINE int32_t scatter_spikes_any(const Projection& g, const Fanout& fan, int32_t padded_c,
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
int32_t scatter_spikes_portable(const Projection& g, const Fanout& fan, int32_t padded_c,
                                const float* weights, const int32_t* units, int32_t count,
                                float* sums, uint8_t* flagged, int32_t* touched) {
    return scatter_spikes_any<false>(g, fan, padded_c, weights, units, count, sums, flagged, touched);
}

#if TTFS_HAVE_AVX512_VARIANT
TTFS_AVX512
int32_t scatter_spikes_avx512(const Projection& g, const Fanout& fan, int32_t padded_c,
                              const float* weights, const int32_t* units, int32_t count,
                              float* sums, uint8_t* flagged, int32_t* touched) {
    return scatter_spikes_any<true>(g, fan, padded_c, weights, units, count, sums, flagged, touched);
}
#endif

int32_t scatter_spikes(const Projection& g, const Fanout& fan, int32_t padded_c,
                       const float* weights, const int32_t* units, int32_t count, float* sums,
                       uint8_t* flagged, int32_t* touched) {
#if TTFS_HAVE_AVX512_VARIANT
    static const bool avx512 = __builtin_cpu_supports("avx512f");
    if (avx512)
        return scatter_spikes_avx512(g, fan, padded_c, weights, units, count, sums, flagged, touched);
#endif
    return scatter_spikes_portable(g, fan, padded_c, weights, units, count, sums, flagged, touched);
}

// ---- Certified sums (analytic engine, hidden layers; docs/ENGINES.md) -------------------------

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
};

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

#if TTFS_HAVE_AVX512_VARIANT
// CH registers per position (width = CH * kLanes), NB neighbouring positions of one output row
// at a time, all accumulators in registers, one fused multiply-add per term (per_term 1).
template <int CH, int NB>
TTFS_AVX512 TTFS_INLINE void window_sums_avx512_n(const WindowSums& d) {
    const int32_t row_len = d.kernel_w * d.in_c;
    const ptrdiff_t next_position = ptrdiff_t(d.stride_w) * d.in_c;
    const ptrdiff_t width = ptrdiff_t(CH) * kLanes;
    for (int32_t oh = 0; oh < d.out_h; ++oh) {
        for (int32_t ow0 = 0; ow0 < d.out_w; ow0 += NB) {
            const int32_t valid = std::min(NB, d.out_w - ow0);
            float* out = d.out + ptrdiff_t(oh * d.out_w + ow0) * width;
            // Narrow blocks keep their totals in registers too; wide ones in `out`.
            constexpr bool kTotalsInRegisters = 2 * NB * CH <= 24;
            __m512 total[kTotalsInRegisters ? NB : 1][CH];
            if constexpr (kTotalsInRegisters)
                for (int b = 0; b < NB; ++b)
                    for (int q = 0; q < CH; ++q) total[b][q] = _mm512_loadu_ps(d.start + q * kLanes);
            for (int32_t kh = 0; kh < d.kernel_h; ++kh) {
                const float* a = d.grid + (ptrdiff_t(oh * d.stride_h + kh) * d.grid_w + ow0 * d.stride_w) * d.in_c;
                const float* w = d.weights + ptrdiff_t(kh) * row_len * width;
                __m512 acc[NB][CH];
                for (int b = 0; b < NB; ++b)
                    for (int q = 0; q < CH; ++q) acc[b][q] = _mm512_setzero_ps();
                for (int32_t r = 0; r < row_len; ++r, w += width) {
                    __m512 wv[CH];
                    for (int q = 0; q < CH; ++q) wv[q] = _mm512_loadu_ps(w + q * kLanes);
                    for (int b = 0; b < NB; ++b) {
                        const __m512 x = _mm512_set1_ps(a[b * next_position + r]);
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
                        const __m512 before = _mm512_loadu_ps(kh == 0 ? d.start + q * kLanes : sum);
                        _mm512_storeu_ps(sum, _mm512_add_ps(before, acc[b][q]));
                    }
                }
            }
            if constexpr (kTotalsInRegisters)
                for (int b = 0; b < NB; ++b)
                    if (b < valid)
                        for (int q = 0; q < CH; ++q) _mm512_storeu_ps(out + b * width + q * kLanes, total[b][q]);
        }
    }
}

TTFS_AVX512
bool window_sums_avx512(const WindowSums& d) {
    switch (d.width / kLanes) {
        case 1: window_sums_avx512_n<1, 8>(d); return true;
        case 2: window_sums_avx512_n<2, 8>(d); return true;
        case 3: window_sums_avx512_n<3, 6>(d); return true;
        case 4: window_sums_avx512_n<4, 5>(d); return true;
        case 5: window_sums_avx512_n<5, 4>(d); return true;
        case 6: window_sums_avx512_n<6, 3>(d); return true;
        case 9: window_sums_avx512_n<9, 2>(d); return true;
        default: return false;
    }
}
#endif

// The hand-written AVX-512 variants of the certified-sum kernels run where the CPU has
// AVX-512F, unless the environment variable TTFS_CPU_PORTABLE is set to anything but "" or "0"
// when the library is loaded (then the portable variants run: how the tests reach them on an
// AVX-512 machine). Both give the same results.
[[maybe_unused]] bool use_avx512() {
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

// Roundings per nonzero term of window_sums() on this machine: 1 (fused multiply-add) where a
// width has an AVX-512 variant, else 2.
int32_t window_sums(const WindowSums& d) {
#if TTFS_HAVE_AVX512_VARIANT
    if (use_avx512() && window_sums_avx512(d)) return 1;
#endif
    window_sums_portable(d);
    return 2;
}

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

#if TTFS_HAVE_AVX512_VARIANT
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

#endif

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

#if TTFS_HAVE_AVX512_VARIANT
TTFS_AVX512
int32_t bracket_avx512(const LayerPlan& plan, const Layer& layer, const Bracket& b,
                       const float* sums, int32_t width, int32_t positions, int32_t padded_c,
                       int32_t out_c, const float* scale, float* high, float* low,
                       int32_t* first, int32_t* undecided) {
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
        const __m512 bound = _mm512_maskz_permutexvar_ps(__mmask16(0xffff), bound_lane, _mm512_loadu_ps(v + plan.bound_base));
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
#endif

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

#if TTFS_HAVE_AVX512_VARIANT
TTFS_AVX512
int32_t intervals_avx512(const LayerPlan& plan, const float* sums, int32_t width,
                         int32_t positions, int32_t padded_c, int32_t out_c, const float* scale,
                         float lowest, float* high, float* low, int32_t* firing,
                         int32_t* undecided) {
    const __m512i bound_lane = _mm512_loadu_si512(plan.bound_lane.data());
    const __m512 tiny = _mm512_set1_ps(0x1p-100f), floor = _mm512_set1_ps(lowest);
    int32_t count = 0, fired = 0;
    for (int32_t p = 0; p < positions; ++p) {
        const float* v = sums + ptrdiff_t(p) * width;
        const float factor = scale[p] >= 0.0f ? scale[p] : std::numeric_limits<float>::infinity();
        const __m512 bound = _mm512_maskz_permutexvar_ps(__mmask16(0xffff), bound_lane, _mm512_loadu_ps(v + plan.bound_base));
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
#endif

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
    uint64_t* row_bits;  // scratch: one bit per unit of an input row
};

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

#if TTFS_HAVE_AVX512_VARIANT
// 16 units at a time along each input row (a row's units are consecutive in the steps and in
// the grid); the tables are looked up with register permutes (steps + 1 <= kGuessTable).
TTFS_AVX512
void grid_rows_avx512(const GridJob& d) {
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
    alignas(64) int32_t ks[kLanes];
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
            uint32_t spiking = uint32_t(_mm512_mask_cmplt_epu32_mask(lanes, k, steps));
            if (spiking != 0) {
                _mm512_store_si512(ks, k);
                for (; spiking != 0; spiking &= spiking - 1) {
                    const int32_t l = __builtin_ctz(spiking);
                    ++d.per_step[ks[l] * kSpareBins + (l & (kSpareBins - 1))];
                }
            }
            if (d.count_cells) {
                const uint64_t nonzero = _mm512_mask_cmp_ps_mask(lanes, activation, _mm512_setzero_ps(), _CMP_NEQ_UQ);
                d.row_bits[i >> 6] |= nonzero << (i & 63);
            }
        }
        if (!d.count_cells) continue;
        int32_t* cells = d.cell_nonzero + (h + d.pad_top) * d.grid_w + d.pad_left;
        for (int32_t w = 0; w < d.in_w; ++w) cells[w] = count_bits(d.row_bits, w * d.in_c, d.in_c);
    }
}
#endif

// certified_pool()'s pool units: unit (oh, ow, c) of the pool gets step b.fire_start + j where
// j = first_crossing() of both the largest high and the largest low end of its children's
// intervals (the children: the positions of its window inside the certified layer's output,
// padded_c floats each), kNever where no child's high end reaches the lowest threshold. The
// others are listed in `undecided` (unit indices) and left for settle_unit(); returns how many.
TTFS_PORTABLE_CLONES
int32_t pool_verdicts_portable(const LayerPlan& plan, const Layer& layer, const Bracket& b,
                               const Projection& pg, int32_t padded_c, const float* high,
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

#if TTFS_HAVE_AVX512_VARIANT
TTFS_AVX512
int32_t pool_verdicts_avx512(const LayerPlan& plan, const Layer& layer, const Bracket& b,
                             const Projection& pg, int32_t padded_c, const float* high,
                             const float* low, int32_t* time, int32_t* undecided) {
    const __m512 floor = _mm512_set1_ps(b.lowest);
    const __m512i never = _mm512_set1_epi32(kNever);
    __m512 t[kGuessTable / kLanes];
    alignas(64) float padded[kGuessTable];
    if (b.guessable) load_table16(b, padded, t);
    int32_t count = 0;
    for (int32_t oh = 0; oh < pg.out_h; ++oh) {
        for (int32_t ow = 0; ow < pg.out_w; ++ow) {
            int32_t* unit_time = time + (oh * pg.out_w + ow) * pg.out_c;
            for (int32_t q = 0; q < padded_c; q += kLanes) {
                __m512 most_high = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
                __m512 most_low = most_high;
                const WindowInside win = window_inside(pg, oh, ow);
                for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
                    for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
                        const ptrdiff_t i = ptrdiff_t((win.ih0 + kh) * pg.in_w + win.iw0 + kw) * padded_c + q;
                        // Raised only by a larger value (a NaN never), as std::max(most, x)
                        // in the portable variant.
                        const __m512 h = _mm512_loadu_ps(high + i), lo = _mm512_loadu_ps(low + i);
                        most_high = _mm512_mask_mov_ps(most_high, _mm512_cmp_ps_mask(h, most_high, _CMP_GT_OQ), h);
                        most_low = _mm512_mask_mov_ps(most_low, _mm512_cmp_ps_mask(lo, most_low, _CMP_GT_OQ), lo);
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
#endif

int32_t pool_verdicts(const LayerPlan& plan, const Layer& layer, const Bracket& b,
                      const Projection& pg, int32_t padded_c, const float* high, const float* low,
                      int32_t* time, int32_t* undecided) {
#if TTFS_HAVE_AVX512_VARIANT
    if (use_avx512())
        return pool_verdicts_avx512(plan, layer, b, pg, padded_c, high, low, time, undecided);
#endif
    return pool_verdicts_portable(plan, layer, b, pg, padded_c, high, low, time, undecided);
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
void earliest_of_window(const Projection& g, const int32_t* child, int32_t oh, int32_t ow,
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
// operations of docs/ENGINES.md, lane by lane, with the sums held in registers.
TTFS_VECTOR_CLONES
void dense_by_step(const Layer& layer, const int32_t* begin, const int32_t* unit, int32_t steps,
                   int32_t first_step, const float* weights, float* potential) {
    const int32_t out_c = layer.out.c;
    float sum[kLanes], v[kLanes], bias[kLanes];
    for (int32_t l = 0; l < kLanes; ++l) bias[l] = l < out_c ? layer.bias[size_t(l)] : 0.0f;
    auto step_sum = [&](int32_t k) {
        for (int32_t l = 0; l < kLanes; ++l) sum[l] = 0.0f;
        for (int32_t s = begin[k]; s < begin[k + 1]; ++s) {
            const float* w = weights + ptrdiff_t(unit[s]) * kLanes;
            for (int32_t l = 0; l < kLanes; ++l) sum[l] = add_rn(sum[l], w[l]);
        }
    };
    const int32_t zero = -first_step;  // step 0's index in the list, if inside
    if (zero >= 0 && zero < steps) {
        step_sum(zero);
    } else {
        for (int32_t l = 0; l < kLanes; ++l) sum[l] = 0.0f;
    }
    const float first_kernel = layer.kernel_at(0);
    for (int32_t l = 0; l < kLanes; ++l) v[l] = integrate(0.0f, add_rn(sum[l], bias[l]), first_kernel);
    for (int32_t k = 0; k < steps; ++k) {
        const int32_t t = first_step + k;
        if (t == 0 || begin[k + 1] == begin[k] || !layer.integrates_at(t)) continue;
        step_sum(k);
        const float kernel = layer.kernel_at(t);
        for (int32_t l = 0; l < kLanes; ++l) v[l] = integrate(v[l], sum[l], kernel);
    }
    for (int32_t l = 0; l < out_c; ++l) potential[l] = v[l];
}

// ---- Shared state -----------------------------------------------------------------------------

// One image's state, reused for every image a worker thread processes. Allocated once per
// session (sized from the model, through `memory`: see Memory); run_image() never allocates.
class Workspace {
public:
    Workspace(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory)
        : model_(model), plans_(plans) {
        const size_t count = model.layers.size();
        memory.take(known_count_, count, -1);
        first_spike_time_.resize(count);
        membrane_.resize(count);
        size_t largest_sums = 0;
        int32_t most_positions = 0;
        for (size_t li = 0; li < count; ++li) {
            const Layer& layer = model.layers[li];
            if (!layer.has_neurons()) continue;
            memory.take(first_spike_time_[li], size_t(layer.out.size()), kNever);
            if (layer.kind == TTFS_LAYER_INPUT) continue;
            memory.take(membrane_[li], size_t(layer.out.size()), 0.0f);
            const LayerPlan& plan = plans[li];
            largest_sums = std::max(largest_sums,
                                    size_t(plan.projection.positions()) * size_t(plan.padded_c));
            most_positions = std::max(most_positions, plan.projection.positions());
        }
        // One set of synaptic sums serves every layer: each layer leaves them all +0.
        memory.take(synaptic_sum_, largest_sums, 0.0f);
        memory.take(flagged_, size_t(most_positions), 0);
        memory.take(touched_, size_t(most_positions), 0);
    }
    virtual ~Workspace() = default;

    // Computes every neuron layer's first-spike times and the conv2d/dense membranes for one
    // image (input size floats, HWC, already scaled).
    virtual void run_image(const float* image) = 0;

    const std::vector<int32_t>& first_spike_time(size_t layer) const { return first_spike_time_[layer]; }
    // The number of neurons of layer li that fired on the last image.
    int32_t spike_count(size_t li) const {
        if (li < known_count_.size() && known_count_[li] >= 0) return known_count_[li];
        const std::vector<int32_t>& first = first_spike_time_[li];
        return int32_t(first.size() - size_t(std::count(first.begin(), first.end(), kNever)));
    }
    // Whether the caller reads every layer's first-spike times (else only spike counts,
    // potentials and predictions), for the images run from now on.
    void set_recording(bool record) { recording_ = record; }
    const std::vector<float>& output_membrane() const { return membrane_.back(); }

protected:
    // Scatter and integrate of one step for a conv2d/dense layer (integrates_at(t) holds):
    // `units` are the presynaptic units spiking at t, ascending.
    void integrate_step(size_t li, int32_t t, const int32_t* units, int32_t count) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const Projection& g = plan.projection;
        const int32_t touched = scatter_spikes(g, plan.fanout, plan.padded_c, plan.weights(layer),
                                               units, count, synaptic_sum_.data(),
                                               flagged_.data(), touched_.data());
        if (t == 0)
            integrate_step_zero(g.positions(), g.out_c, plan.padded_c, layer.bias.data(),
                                layer.kernel_at(0), synaptic_sum_.data(), membrane_[li].data(),
                                flagged_.data());
        else
            integrate_touched(touched_.data(), touched, g.out_c, plan.padded_c, layer.kernel_at(t),
                              synaptic_sum_.data(), membrane_[li].data(), flagged_.data());
    }

    const Model& model_;
    const std::vector<LayerPlan>& plans_;
    bool recording_ = true;
    // Per layer: its spike count when a layer computes it without first-spike times, else -1.
    std::vector<int32_t> known_count_;
    std::vector<std::vector<int32_t>> first_spike_time_;  // neuron layers, HWC; -1 = never
    std::vector<std::vector<float>> membrane_;            // conv2d/dense, HWC
    // Scratch of integrate_step(): S of the current step per neuron (positions x padded_c), +0
    // between steps; per output position a flag "received input at this step"; the flagged
    // positions.
    std::vector<float> synaptic_sum_;
    std::vector<uint8_t> flagged_;
    std::vector<int32_t> touched_;
};

// ---- Stepped engine -------------------------------------------------------------------------

// The fire check of one layer at one step: every neuron not yet fired whose potential reaches
// the step's threshold spikes, and its potential becomes `after` (0 for conv2d/dense: the reset
// of docs/ALGORITHM.md; NaN for the input layer, whose potential here is a private copy of the
// pixel: no threshold is reached by NaN, so a fired pixel is not looked at again). At most
// steps most neurons are below the threshold, so blocks of them are first tested together (a
// vectorised compare, the same reaches() per neuron); the per-neuron checks run in index order,
// so the spike list comes out ascending. Returns the number of spikes written to `spiking`.
TTFS_VECTOR_CLONES
int32_t fire_at_step(float* potential, int32_t count, float threshold, int32_t t, float after,
                     int32_t* first, int32_t* spiking) {
    constexpr int32_t kBlock = 64;
    int32_t spikes = 0;
    for (int32_t start = 0; start < count; start += kBlock) {
        const int32_t end = std::min(count, start + kBlock);
        int any = 0;
        for (int32_t i = start; i < end; ++i) any |= int(reaches(potential[i], threshold));
        if (!any) continue;
        for (int32_t i = start; i < end; ++i) {
            if (reaches(potential[i], threshold) && first[i] == kNever) {
                first[i] = t;
                potential[i] = after;
                spiking[spikes++] = i;
            }
        }
    }
    return spikes;
}

class SteppedWorkspace final : public Workspace {
public:
    SteppedWorkspace(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory)
        : Workspace(model, plans, memory) {
        const size_t count = model.layers.size();
        spiking_now_.resize(count);
        memory.take(spike_count_, count, 0);
        last_marked_.resize(count);
        pool_relayed_.resize(count);
        memory.take(input_potential_, size_t(model.input().out.size()), 0.0f);
        // After the last step at which any layer may fire nothing arrives anywhere, and a
        // neuron without input at t != 0 is unchanged, so later steps can be skipped.
        active_steps_ = 1;
        for (size_t li = 0; li < count; ++li) {
            const Layer& layer = model.layers[li];
            if (layer.fires) active_steps_ = std::max(active_steps_, layer.fire_end);
            // Sized to the longest possible list: a unit is listed at most once per step.
            if (layer.kind != TTFS_LAYER_FLATTEN) memory.take(spiking_now_[li], size_t(layer.out.size()), 0);
            if (layer.kind == TTFS_LAYER_MAXPOOL) {
                if (layer.pool_mode == TTFS_POOL_EARLIEST)
                    memory.take(pool_relayed_[li], size_t(layer.out.size()), 0);
                else
                    memory.take(last_marked_[li], size_t(layer.out.size()), kNever);
            }
        }
        active_steps_ = std::min(active_steps_, model.time_steps);
    }

    void run_image(const float* image) override {
        reset(image);
        for (int32_t t = 0; t < active_steps_; ++t) {
            for (size_t li = 0; li < model_.layers.size(); ++li) {
                const Layer& layer = model_.layers[li];
                switch (layer.kind) {
                    case TTFS_LAYER_INPUT:
                        fire(li, input_potential_.data(), t, std::numeric_limits<float>::quiet_NaN());
                        break;
                    case TTFS_LAYER_MAXPOOL: relay_pool(li, t); break;
                    case TTFS_LAYER_FLATTEN: break;  // plans_[li].source reads through to below
                    case TTFS_LAYER_CONV2D:
                    case TTFS_LAYER_DENSE:
                        if (layer.integrates_at(t)) {
                            const size_t source = plans_[li - 1].source;
                            integrate_step(li, t, spiking_now_[source].data(), spike_count_[source]);
                        }
                        fire(li, membrane_[li].data(), t, 0.0f);
                        break;
                }
            }
        }
    }

private:
    void reset(const float* image) {
        for (size_t li = 0; li < model_.layers.size(); ++li) {
            std::fill(first_spike_time_[li].begin(), first_spike_time_[li].end(), kNever);
            std::fill(membrane_[li].begin(), membrane_[li].end(), 0.0f);
            std::fill(last_marked_[li].begin(), last_marked_[li].end(), kNever);
            std::fill(pool_relayed_[li].begin(), pool_relayed_[li].end(), uint8_t(0));
            spike_count_[li] = 0;
        }
        // The input potential is the pixel itself (vmem := x at t = 0), never integrated; a
        // private copy, which fire_at_step() sets to NaN once the pixel has fired.
        std::copy(image, image + input_potential_.size(), input_potential_.begin());
    }

    // One spike per neuron, ever; a conv2d/dense potential is reset to 0 and may integrate
    // again later (only possible when windows overlap).
    void fire(size_t li, float* potential, int32_t t, float after) {
        const Layer& layer = model_.layers[li];
        spike_count_[li] = 0;
        if (!layer.fires || t < layer.fire_start || t >= layer.fire_end) return;
        spike_count_[li] = fire_at_step(potential, int32_t(first_spike_time_[li].size()),
                                        layer.fire_threshold[size_t(t - layer.fire_start)], t,
                                        after, first_spike_time_[li].data(), spiking_now_[li].data());
    }

    // `or`: a unit spikes at every step one of its children spikes; `earliest`: only once;
    // `gated`: when the child with the largest spike counter spikes (gated_winner_spikes()).
    void relay_pool(size_t li, int32_t t) {
        const Layer& layer = model_.layers[li];
        const size_t source = plans_[li - 1].source;
        int32_t* spiking = spiking_now_[li].data();
        int32_t spikes = 0;
        const bool is_or = layer.pool_mode != TTFS_POOL_EARLIEST;  // `or` and `gated`: per step
        const bool gated = layer.pool_mode == TTFS_POOL_GATED;
        const Fanout& fan = plans_[li].fanout;
        const int32_t* children = spiking_now_[source].data();
        for (int32_t s = 0; s < spike_count_[source]; ++s) {
            const UnitOrigin o = fan.origin[size_t(children[s])];
            const OutputRange rows = fan.rows[size_t(o.h)], cols = fan.cols[size_t(o.w)];
            for (int32_t oh = rows.first; oh <= rows.last; ++oh) {
                for (int32_t ow = cols.first; ow <= cols.last; ++ow) {
                    const int32_t unit = (oh * layer.out.w + ow) * layer.out.c + o.c;
                    if (is_or) {
                        if (last_marked_[li][size_t(unit)] == t) continue;  // already decided at t
                        last_marked_[li][size_t(unit)] = t;
                        if (gated && !gated_winner_spikes(li, oh, ow, o.c, t)) continue;
                    } else {
                        if (pool_relayed_[li][size_t(unit)]) continue;
                        pool_relayed_[li][size_t(unit)] = 1;
                    }
                    spiking[spikes++] = unit;
                }
            }
        }
        // A unit's children are not adjacent in HWC order (channels interleave, windows may
        // overlap), so the list comes out unordered; the next layer needs ascending HWC order.
        std::sort(spiking, spiking + spikes);
        spike_count_[li] = spikes;
    }

    // The spike-count-gated pool of the T2FSNN reference, as it computes it at step t, after
    // the children's layer (the neuron layer below: a gated pool has no other) has fired: every
    // child's counter is 0 before it fires, the threshold vth(t) at its fire step and 1 after;
    // the child with the largest counter wins, the first in window order (kernel row, then
    // column, positions inside the input only) among equals; the unit spikes at t when the
    // winner does.
    bool gated_winner_spikes(size_t li, int32_t oh, int32_t ow, int32_t c, int32_t t) const {
        const Layer& children = model_.layers[li - 1];
        const Projection& g = plans_[li].projection;
        const int32_t* first = first_spike_time_[li - 1].data();
        const float vth = children.fire_threshold[size_t(t - children.fire_start)];
        const WindowInside win = window_inside(g, oh, ow);
        float best = 0.0f;
        int32_t winner = -1;
        for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
            for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
                const int32_t child = ((win.ih0 + kh) * g.in_w + win.iw0 + kw) * g.in_c + c;
                const int32_t fired = first[child];
                const float counter = fired == kNever ? 0.0f : fired < t ? 1.0f : vth;
                if (winner < 0 || counter > best) {
                    best = counter;
                    winner = child;
                }
            }
        }
        return winner >= 0 && first[winner] == t;
    }

    int32_t active_steps_ = 0;
    // Per layer: the units of its output spiking at the current step, ascending HWC, are the
    // first spike_count_ entries of spiking_now_.
    std::vector<std::vector<int32_t>> spiking_now_;
    std::vector<int32_t> spike_count_;
    // `or` pools: per unit, the last step it was listed.
    std::vector<std::vector<int32_t>> last_marked_;
    // `earliest` pools: 1 once a unit has relayed its one spike.
    std::vector<std::vector<uint8_t>> pool_relayed_;
    std::vector<float> input_potential_;
};

// ---- Analytic engine ------------------------------------------------------------------------

// One layer's spikes for one image, by step: the units spiking at step first_step + k are
// unit[begin[k]] .. unit[begin[k + 1] - 1], ascending HWC (the order in which a conv2d/dense
// layer adds them). A maxpool also keeps them by unit, the first of its two counting sorts:
// the steps of unit u are step[unit_begin[u]] .. step[unit_begin[u + 1] - 1], ascending.
// Sized by the window and the most spikes a layer can send, never by the time steps.
struct SpikeList {
    int32_t first_step = 0;
    std::vector<int32_t> begin;  // window length + 1
    std::vector<int32_t> unit;
    std::vector<int32_t> unit_begin, step;  // maxpool

    int32_t steps() const { return int32_t(begin.size()) - 1; }
    const int32_t* at(int32_t k) const { return unit.data() + begin[size_t(k)]; }
    int32_t count(int32_t k) const { return begin[size_t(k) + 1] - begin[size_t(k)]; }
};

// begin[k + 1] holds the number of spikes at step k: turn the counts into offsets, then place
// the units (visited in ascending order, so each step's units come out ascending) using
// begin[k] as step k's cursor; a cursor ends at the next step's offset, so shifting the
// offsets up by one restores them.
template <typename ForEachSpike>
void place_by_step(SpikeList& list, ForEachSpike for_each_spike) {
    int32_t* begin = list.begin.data();
    const int32_t steps = list.steps();
    for (int32_t k = 0; k < steps; ++k) begin[k + 1] += begin[k];
    int32_t* unit = list.unit.data();
    for_each_spike([&](int32_t u, int32_t k) { unit[begin[k]++] = u; });
    for (int32_t k = steps - 1; k > 0; --k) begin[k] = begin[k - 1];
    if (steps > 0) begin[0] = 0;
}

class AnalyticWorkspace final : public Workspace {
public:
    AnalyticWorkspace(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory)
        : Workspace(model, plans, memory) {
        const size_t count = model.layers.size();
        spikes_.resize(count);
        last_relayed_.resize(count);
        pool_time_.resize(count);
        size_t most_units = 0, most_pairs = 0;
        for (size_t li = 0; li < count; ++li) {
            const Layer& layer = model.layers[li];
            const LayerPlan& plan = plans[li];
            most_units = std::max(most_units, size_t(layer.out.size()));
            if (layer.kind == TTFS_LAYER_FLATTEN) continue;  // plan.source reads through
            SpikeList& list = spikes_[li];
            list.first_step = plan.window_start;
            memory.take(list.begin, size_t(plan.window_len) + 1, 0);
            memory.take(list.unit, plan.most_spikes, 0);
            if (layer.kind == TTFS_LAYER_MAXPOOL && layer.pool_mode == TTFS_POOL_EARLIEST &&
                plans[li - 1].single_spike) {
                memory.take(pool_time_[li], size_t(layer.out.size()), kNever);
            } else if (layer.kind == TTFS_LAYER_MAXPOOL) {
                memory.take(list.unit_begin, size_t(layer.out.size()) + 1, 0);
                memory.take(list.step, plan.most_spikes, 0);
                memory.take(last_relayed_[li], size_t(layer.out.size()), kNever);
                most_pairs = std::max(most_pairs, plan.most_spikes);
            }
        }
        memory.take(fired_, most_units, 0);
        for (size_t li = 0; li < count; ++li) {
            if (model.layers[li].kind != TTFS_LAYER_MAXPOOL || model.layers[li].pool_mode != TTFS_POOL_GATED)
                continue;
            memory.take(gate_first_, most_units, kNever);
            memory.take(gate_touched_, most_units + 1, 0);  // + 1: written before it is known to be new
            break;
        }
        // Certified layers: the activation grid and its cell counts, their summed-area table,
        // the sums and bound factors of every position, the candidates, and the bins of the
        // exact recomputation (one per step of the input's spike window).
        size_t grid = 0, cells = 0, sums = 0, positions = 0, neurons = 0, widest = 0, longest = 0;
        size_t neurons_padded = 0;
        for (size_t li = 0; li < count; ++li) {
            const LayerPlan& plan = plans[li];
            if (!plan.certified) continue;
            const Projection& g = plan.projection;
            grid = std::max(grid, plan.grid_floats);
            cells = std::max(cells, size_t(plan.grid_h) * size_t(plan.grid_w + 1));
            positions = std::max(positions, size_t(g.positions()));
            sums = std::max(sums, size_t(g.positions()) * size_t(plan.bound_stride));
            neurons = std::max(neurons, size_t(g.positions()) * size_t(g.out_c));
            neurons_padded = std::max(neurons_padded, size_t(g.positions()) * size_t(plan.padded_c));
            widest = std::max(widest, size_t(plan.padded_c));
            longest = std::max(longest, size_t(plans[plans[li - 1].source].window_len));
        }
        memory.take(grid_, grid, 0.0f);
        memory.take(grid_bin_, grid, 0);
        size_t row_units = 0;
        for (size_t li = 0; li < count; ++li)
            if (plans[li].certified)
                row_units = std::max(row_units, size_t(plans[li].projection.in_w) * size_t(plans[li].projection.in_c));
        memory.take(row_bits_, row_units / 64 + 2, 0);
        memory.take(cell_nonzero_, cells, 0);
        memory.take(area_, cells, 0);
        memory.take(layer_sums_, sums, 0.0f);
        memory.take(scale_, positions, 0.0f);
        memory.take(most_, positions, 0);
        memory.take(interval_high_, neurons_padded, 0.0f);
        memory.take(interval_low_, neurons_padded, 0.0f);
        memory.take(high_, widest + kLanes, 0.0f);  // also window_sums()' row scratch
        memory.take(low_, widest + kLanes, 0.0f);
        memory.take(candidate_, std::max(neurons, neurons_padded), 0);
        memory.take(step_count_, (longest + 1) * kSpareBins, 0);
        memory.take(bins_, longest + kSpareBins, 0.0f);
        memory.take(bin_used_, longest + kSpareBins, 0);
        memory.take(checked_, count, 0);
        memory.take(recomputed_, count, 0);
        // + 1: relay_pool() writes every candidate pair before it knows whether to keep it.
        memory.take(pair_unit_, most_pairs + 1, 0);
        memory.take(pair_step_, most_pairs + 1, 0);
        memory.take(sorted_unit_, most_pairs, 0);
    }

    void run_image(const float* image) override {
        std::fill(known_count_.begin(), known_count_.end(), -1);
        for (size_t li = 0; li < model_.layers.size(); ++li) {
            switch (model_.layers[li].kind) {
                case TTFS_LAYER_INPUT: fire(li, image, nullptr); break;
                case TTFS_LAYER_MAXPOOL:
                    if (pool_time_[li].empty())
                        relay_pool(li);
                    else
                        relay_earliest(li);
                    break;
                case TTFS_LAYER_FLATTEN: break;
                case TTFS_LAYER_CONV2D:
                case TTFS_LAYER_DENSE:
                    if (plans_[li].certified && plans_[li].fuses_pool && !recording_) {
                        certified_sums(li);
                        certified_pool(li);
                        ++li;  // the pool is done
                    } else if (plans_[li].certified) {
                        certified_sums(li);
                        certified_layer(li);
                    } else {
                        integrate(li);
                        fire(li, membrane_[li].data(), membrane_[li].data());
                    }
                    break;
            }
        }
    }

    void set_certify(Certify certify) { certify_ = certify; }
    // Per layer: neurons decided by certified sums so far, and those recomputed exactly.
    const std::vector<int64_t>& checked() const { return checked_; }
    const std::vector<int64_t>& recomputed() const { return recomputed_; }

private:
    // A hidden conv2d/dense layer by certified sums (docs/ENGINES.md, "Certified sums"): each
    // neuron's potential from a fast sum in any order with fused multiply-adds, plus a
    // rigorous bound on how far that can be from the exact engine's potential. Where the
    // first_crossing() of both ends of the interval agree, that is the neuron's fire step;
    // elsewhere (a few neurons per image) exact_first_crossing() forms the exact potential
    // with the operations of the stepped engine. The result is the same bits either way.
    // The certified sums of every position of layer li (layer_sums_) and the factor of each
    // position's bound (scale_; -1 where the position cannot be bounded).
    void certified_sums(size_t li) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const LayerPlan& input_plan = plans_[li - 1];
        const SpikeList& below = spikes_[input_plan.source];
        const Projection& g = plan.projection;
        // Activations a = the sum of kernel_at(t) over each unit's integrated spike steps, in
        // the zero-padded grid; per grid cell the number of its units with a nonzero a (a
        // kernel value may underflow to 0: such a term adds nothing to the exact potential
        // either, as its whole bin is multiplied by 0).
        float* grid = grid_.data();
        std::fill(grid, grid + plan.grid_floats, 0.0f);
        int32_t* cell_nonzero = cell_nonzero_.data();
        const int32_t cells = plan.grid_h * plan.grid_w;
        std::fill(cell_nonzero, cell_nonzero + cells, 0);
        const UnitOrigin* origin = plan.fanout.origin.data();
        int32_t busiest = 0, bins = 1;  // the most spikes at one step; bins of V (t == 0's too)
        const int32_t* single = single_times(li);
        if (single != nullptr) {
            // Unit by unit, without branches: the activation is the kernel of the unit's step
            // (0 for a step not integrated and for a unit that did not spike: the spare bin);
            // spikes counted per step.
            // Each unit's bin for exact_potential() too, in grid_bin_: a spare bin where the
            // unit adds nothing (padding included), the spares taken in turn.
            const int32_t steps = below.steps(), first_step = below.first_step;
            const float* kernel = plan.bin_kernel.data();
            const int32_t* slot = plan.bin_slot.data();
            // (kSpareBins counters per step, taken in turn, so that increments of one step
            // do not wait for each other.)
            int32_t* per_step = step_count_.data();  // kSpareBins counters per step, in turn
            std::fill(per_step, per_step + (steps + 1) * kSpareBins, 0);
            int32_t* grid_bin = grid_bin_.data();
            std::fill(grid_bin, grid_bin + plan.grid_floats, steps);
            [[maybe_unused]] const bool count_cells = g.kernel_w * g.in_c > kLanes;  // see the bound factors below
            bool done = false;
#if TTFS_HAVE_AVX512_VARIANT
            if (use_avx512() && steps + 1 <= kGuessTable) {
                grid_rows_avx512(GridJob{single, g.in_h, g.in_w, g.in_c, g.pad_top, g.pad_left,
                                         plan.grid_w, first_step, steps, kernel, slot, grid, grid_bin,
                                         per_step, cell_nonzero, count_cells, row_bits_.data()});
                done = true;
            }
#endif
            for (int32_t h = 0; !done && h < g.in_h; ++h) {
                for (int32_t w = 0; w < g.in_w; ++w) {
                    const int32_t cell = (h + g.pad_top) * plan.grid_w + w + g.pad_left;
                    float* x = grid + ptrdiff_t(cell) * g.in_c;
                    int32_t* bin = grid_bin + ptrdiff_t(cell) * g.in_c;
                    const int32_t* t = single + (h * g.in_w + w) * g.in_c;
                    int32_t nonzero = 0;
                    for (int32_t c = 0; c < g.in_c; ++c) {
                        const uint32_t k = std::min(uint32_t(t[c] - first_step), uint32_t(steps));
                        ++per_step[k * kSpareBins + uint32_t(c & (kSpareBins - 1))];
                        x[c] = kernel[k];
                        nonzero += kernel[k] != 0.0f ? 1 : 0;
                        const int32_t b = slot[k];
                        bin[c] = b == steps ? steps + (c & (kSpareBins - 1)) : b;
                    }
                    cell_nonzero[cell] = nonzero;
                }
            }
            for (int32_t k = 0; k < steps; ++k) {
                int32_t spikes = 0;
                for (int32_t copy = 0; copy < kSpareBins; ++copy) spikes += per_step[k * kSpareBins + copy];
                if (spikes == 0 || slot[k] != k) continue;  // no spikes, or not integrated
                busiest = std::max(busiest, spikes);
                bins += k != plan.zero_bin ? 1 : 0;
            }
        }
        for (int32_t k = 0; single == nullptr && k < below.steps(); ++k) {
            const int32_t t = below.first_step + k, spikes = below.count(k);
            if (spikes == 0 || !layer.integrates_at(t)) continue;
            busiest = std::max(busiest, spikes);
            bins += t != 0 ? 1 : 0;
            const float kernel = layer.kernel_at(t);
            const int32_t counts = kernel != 0.0f ? 1 : 0;
            const int32_t* units = below.at(k);
            for (int32_t s = 0; s < spikes; ++s) {
                const UnitOrigin o = origin[units[s]];
                const int32_t cell = (o.h + g.pad_top) * plan.grid_w + o.w + g.pad_left;
                float& x = grid[ptrdiff_t(cell) * g.in_c + o.c];
                cell_nonzero[cell] += x == 0.0f ? counts : 0;
                x = add_rn(x, kernel);
            }
        }
        // Roundings behind the exact potential of any neuron (bin sums, the bias, the
        // multiply, the chain of V) and behind an activation (several steps of one unit).
        const double engine_ops = double(std::min(busiest, plan.fan_in)) + bins + 2;
        const double activation_ops = input_plan.single_spike ? 0.0 : double(bins);
        // The certified sums of every position.
        const int32_t width = plan.bound_stride;
        float* sums = layer_sums_.data();
        const WindowSums job{grid, plan.grid_w, g.in_c, g.out_h, g.out_w, g.kernel_h, g.kernel_w,
                             g.stride_h, g.stride_w, plan.bound_weights.data(),
                             plan.bound_bias.data(), width, sums, high_.data()};
        const int32_t per_term = window_sums(job);
        // Per position its bound's factor: gamma(ops) = ops * u / (1 - ops * u) <= 1.0102 *
        // ops * u while ops * u <= 0.01; 1.1 covers that, the activations' own error and the
        // rounding of the bound's sum. The nonzero terms of each kernel row of a window come
        // from prefix sums of the cell counts along each grid row; for short kernel rows the
        // row's length serves (a little looser, much cheaper).
        float* scale = scale_.data();
        const bool recompute_all = certify_ == Certify::kRecompute;
        // ops < 0.01 / u = 167 772 (else -1: not boundable); ops and 1.1 * u are exact enough
        // in float (an integer below 2^24; 1.1f > 1.1).
        const int32_t fixed_ops = int32_t(std::min(double(1 << 30), g.kernel_h + 1 + engine_ops + activation_ops));
        const int32_t most_ops = recompute_all ? -1 : 167772;
        const int32_t row_len = g.kernel_w * g.in_c;
        if (row_len <= kLanes) {
            const int32_t ops = per_term * row_len + fixed_ops;
            std::fill(scale, scale + g.positions(), ops <= most_ops ? float(ops) * (1.1f * 0x1p-24f) : -1.0f);
            return;
        }
        int32_t* prefix = area_.data();
        const int32_t prefix_w = plan.grid_w + 1;
        for (int32_t h = 0; h < plan.grid_h; ++h) {
            int32_t* line = prefix + h * prefix_w;
            line[0] = 0;
            for (int32_t w = 0; w < plan.grid_w; ++w) line[w + 1] = line[w] + cell_nonzero[h * plan.grid_w + w];
        }
        int32_t* most = most_.data();
        for (int32_t oh = 0; oh < g.out_h; ++oh) {
            std::fill(most, most + g.out_w, 0);
            for (int32_t kh = 0; kh < g.kernel_h; ++kh) {
                const int32_t* line = prefix + (oh * g.stride_h + kh) * prefix_w;
                for (int32_t ow = 0; ow < g.out_w; ++ow) {
                    const int32_t left = ow * g.stride_w;
                    most[ow] = std::max(most[ow], line[left + g.kernel_w] - line[left]);
                }
            }
            float* row_scale = scale + oh * g.out_w;
            for (int32_t ow = 0; ow < g.out_w; ++ow) {
                const int32_t ops = per_term * most[ow] + fixed_ops;
                row_scale[ow] = ops <= most_ops ? float(ops) * (1.1f * 0x1p-24f) : -1.0f;
            }
        }
    }

    // Bracket's view of layer li's thresholds and crossing index.
    Bracket bracket_of(size_t li) const {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const CrossingIndex& index = plan.crossing;
        return Bracket{layer.fire_threshold.data(), layer.fire_len(), layer.fire_start,
                       plan.lowest_threshold, index.usable ? index.bucket_start.data() : nullptr,
                       index.usable ? index.bucket_sure.data() : nullptr, index.shift,
                       index.first_bucket, index.last_bucket,
                       index.usable && layer.fire_len() <= kGuessTable && layer.vth0 > 0.0f &&
                           layer.tau_fire > 0.0f,
                       layer.td_fire, layer.tau_fire, std::log(layer.vth0)};
    }

    // The fire step of every neuron of certified layer li from certified_sums(): by the
    // intervals, or for the undecided by the exact potential.
    void certified_layer(size_t li) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const Projection& g = plan.projection;
        const int32_t width = plan.bound_stride, padded_c = plan.padded_c, out_c = g.out_c;
        const int32_t positions = g.positions();
        const float* sums = layer_sums_.data();
        const float* scale = scale_.data();
        // The verdicts; the undecided neurons' exact potentials; the spikes.
        const Bracket decision = bracket_of(li);
        int32_t* first = first_spike_time_[li].data();
        std::fill(first, first + layer.out.size(), kNever);
        int32_t* undecided = candidate_.data();
        const int32_t count = bracket(plan, layer, decision, sums, width, positions, padded_c, out_c,
                                      scale, high_.data(), low_.data(), first, undecided);
        for (int32_t c = 0; c < count; ++c) {
            const int32_t i = undecided[c];
            const int32_t j = exact_first_crossing(li, i / out_c, i % out_c);
            if (j >= 0) first[i] = layer.fire_start + j;
        }
        checked_[li] += int64_t(positions) * out_c;
        recomputed_[li] += count;
        if (plan.list_by_step) list_by_step(li);
    }

    // The spikes of neuron layer li listed by step, from its first-spike times.
    void list_by_step(size_t li) { list_times_by_step(spikes_[li], first_spike_time_[li]); }

    // The exact potential of neuron n of output position p, formed with the stepped engine's
    // operations (docs/ENGINES.md: bins in canonical order, the bias at t == 0, then V chained
    // over the steps ascending), and its first_crossing(), or -1.
    int32_t exact_first_crossing(size_t li, int32_t p, int32_t n) {
        const float v = exact_potential(li, p, n);
        return reaches(v, plans_[li].lowest_threshold) ? crossing_from_lowest(plans_[li], model_.layers[li], v) : -1;
    }

    // Out of line: it runs for a few neurons per image.
    __attribute__((noinline)) float exact_potential(size_t li, int32_t p, int32_t n) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const Projection& g = plan.projection;
        const SpikeList& below = spikes_[plans_[li - 1].source];
        const int32_t* single = single_times(li);  // else each unit's steps, from the pool's list
        // bins[k] = S of step below.first_step + k; bin_slot sends a spike at a step the layer
        // does not integrate (and a unit that never spiked) to the spare bin at index steps.
        const int32_t steps = below.steps(), first_step = below.first_step;
        const int32_t* slot = plan.bin_slot.data();
        float* bins = bins_.data();
        uint8_t* used = bin_used_.data();
        const int32_t oh = p / g.out_w, ow = p % g.out_w;
        const int32_t in_c = g.in_c, in_w = g.in_w, kernel_w = g.kernel_w;
        const float* neuron_weights = plan.weights_by_neuron.data() + size_t(n) * size_t(plan.fan_in);
        if (single != nullptr) {
            // Each kernel row of the window is a run of kernel_w * in_c units in the grid, in
            // canonical order; certified_sums() left each unit's bin in grid_bin_ (a spare bin
            // for padding and for units that add nothing), so no branches.
            const int32_t row_len = kernel_w * in_c;
            for (int32_t kh = 0; kh < g.kernel_h; ++kh) {
                const int32_t* bin = grid_bin_.data() +
                                     (ptrdiff_t(oh * g.stride_h + kh) * plan.grid_w + ow * g.stride_w) * in_c;
                const float* w = neuron_weights + kh * row_len;
                for (int32_t r = 0; r < row_len; ++r) {
                    bins[bin[r]] = add_rn(bins[bin[r]], w[r]);
                    used[bin[r]] = 1;
                }
            }
        }
        const WindowInside win = window_inside(g, oh, ow);
        for (int32_t kh = win.kh_first; single == nullptr && kh < win.kh_end; ++kh) {
            for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
                const int32_t unit0 = ((win.ih0 + kh) * in_w + win.iw0 + kw) * in_c;
                const float* w = neuron_weights + (kh * kernel_w + kw) * in_c;
                for (int32_t c = 0; c < in_c; ++c) {
                    const int32_t u = unit0 + c;
                    for (int32_t e = below.unit_begin[size_t(u)]; e < below.unit_begin[size_t(u) + 1]; ++e) {
                        const int32_t b = slot[below.step[size_t(e)] - first_step];
                        bins[b] = add_rn(bins[b], w[c]);
                        used[b] = 1;
                    }
                }
            }
        }
        // V = +0 + (S(0) + bias) * 1, then V + S(t) * k(t) over the later bins, ascending.
        const int32_t zero = plan.zero_bin;
        const float s0 = zero >= 0 ? bins[zero] : 0.0f;
        float v = ttfs::integrate(0.0f, add_rn(s0, layer.bias[size_t(n)]), layer.kernel_at(0));
        // The products first (independent of V), then the chain of adds: a bin without a step
        // of its own (or step 0's, already in) adds +0, which leaves V as it is (V is never -0),
        // so the chain needs no branches and waits only for the adds.
        const float* kernel = plan.bin_kernel.data();
        for (int32_t k = 0; k < steps; ++k) {
            const float product = mul_rn(bins[k], kernel[k]);
            bins[k] = used[k] && k != zero ? product : 0.0f;
        }
        for (int32_t k = 0; k < steps; ++k) {
            v = add_rn(v, bins[k]);
            bins[k] = 0.0f;
            used[k] = 0;
        }
        std::fill(bins + steps, bins + steps + kSpareBins, 0.0f);
        std::fill(used + steps, used + steps + kSpareBins, uint8_t(0));
        return v;
    }

    // Certified layer li and the `earliest` pool li + 1 after it, when first-spike times are not
    // recorded (docs/ENGINES.md, "Certified sums"). first_crossing() does not increase with the
    // potential, so a pool unit's step, the earliest of its children's, is the first_crossing()
    // of the largest child potential, which lies between the largest low and the largest high
    // end of the children's intervals. The layer's own spike count needs only which neurons
    // reach the lowest threshold. Either question, where the intervals cannot answer it, is
    // answered by the exact potentials of the neurons concerned. The layer's first-spike times
    // are not formed.
    void certified_pool(size_t li) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const Projection& g = plan.projection;
        const int32_t padded_c = plan.padded_c, out_c = g.out_c, positions = g.positions();
        float* high = interval_high_.data();
        float* low = interval_low_.data();
        int32_t* undecided = candidate_.data();
        int32_t count = 0;
        const int32_t undecided_count =
            intervals(plan, layer_sums_.data(), plan.bound_stride, positions, padded_c, out_c,
                      scale_.data(), plan.lowest_threshold, high, low, &count, undecided);
        int64_t recomputed = undecided_count;
        for (int32_t c = 0; c < undecided_count; ++c) {
            const int32_t i = undecided[c];  // p * padded_c + n
            const float v = exact_potential(li, i / padded_c, i % padded_c);
            high[i] = low[i] = v;  // equal ends: exact
            count += reaches(v, plan.lowest_threshold) ? 1 : 0;
        }
        known_count_[li] = count;
        // The pool.
        const size_t pool = li + 1;
        const Projection& pg = plans_[pool].projection;
        int32_t* time = pool_time_[pool].data();
        const int32_t open = pool_verdicts(plan, layer, bracket_of(li), pg, padded_c, high, low,
                                           time, undecided);
        for (int32_t k = 0; k < open; ++k) {
            const int32_t unit = undecided[k];
            const int32_t c = unit % pg.out_c, position = unit / pg.out_c;
            const int32_t j = settle_unit(li, pg, position / pg.out_w, position % pg.out_w, c, high,
                                          low, recomputed);
            time[unit] = j >= 0 ? layer.fire_start + j : kNever;
        }
        checked_[li] += int64_t(positions) * out_c;
        recomputed_[li] += recomputed;
        if (plans_[pool].list_by_step) list_pool_by_step(pool);
    }

    // The first_crossing() of the largest child potential of pool unit (oh, ow, c), where the
    // children's intervals could not tell it: the child with the highest high end that is not
    // exact yet is made exact, until the interval of the largest potential decides it (at the
    // latest when every child that could be the largest is exact). Each round makes one more
    // child exact, so there are at most as many rounds as children (+ 1 to see them all
    // exact); the count, not the float comparisons, ends the loop. (The loader's potential
    // bound keeps every potential finite, so the limit is never reached; were one NaN, its
    // child would never count as exact, and the limit turns that into an internal error
    // instead of an endless loop.)
    int32_t settle_unit(size_t li, const Projection& pg, int32_t oh, int32_t ow, int32_t c,
                        float* high, float* low, int64_t& recomputed) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const Bracket b = bracket_of(li);
        const int32_t padded_c = plan.padded_c, out_w = plan.projection.out_w;
        const WindowInside inside = window_inside(pg, oh, ow);
        const int64_t rounds = int64_t(std::max(0, inside.kh_end - inside.kh_first)) *
                                   std::max(0, inside.kw_end - inside.kw_first) + 1;
        for (int64_t round = 0; round < rounds; ++round) {
            float most_high = -std::numeric_limits<float>::infinity(), most_low = most_high;
            int32_t widest = -1;  // the non-exact child with the highest high end
            const WindowInside win = window_inside(pg, oh, ow);
            for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
                for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
                    const int32_t i = ((win.ih0 + kh) * out_w + win.iw0 + kw) * padded_c + c;
                    most_low = std::max(most_low, low[i]);
                    most_high = std::max(most_high, high[i]);
                    if (high[i] != low[i] && (widest < 0 || !(high[i] <= high[widest]))) widest = i;
                }
            }
            if (!(most_high >= b.lowest)) return -1;  // no child reaches a threshold
            if (widest < 0) return crossing_from_lowest(plan, layer, most_high);  // all exact
            const int32_t j = decide(plan, layer, b, most_high, most_low);
            if (j != kUndecided) return j;
            high[widest] = low[widest] = exact_potential(li, widest / padded_c, widest % padded_c);
            ++recomputed;
        }
        throw std::runtime_error("layer '" + layer.name + "': the earliest-pool unit (" + std::to_string(oh) +
                                 ", " + std::to_string(ow) + ", " + std::to_string(c) +
                                 ") was not settled after making all its children exact (a potential "
                                 "that is not a number?)");
    }

    // An `earliest` pool's spikes listed by step, from its units' steps.
    void list_pool_by_step(size_t li) { list_times_by_step(spikes_[li], pool_time_[li]); }

    // A layer's spikes listed by step from its units' steps (kNever: none): the units that
    // spiked (inside the window, which is all of them) gathered first without branches, then
    // a counting sort of those by step (units ascending within a step).
    void list_times_by_step(SpikeList& list, const std::vector<int32_t>& times) {
        const int32_t* time = times.data();
        const int32_t units = int32_t(times.size());
        const uint32_t steps = uint32_t(list.steps());
        const int32_t first_step = list.first_step;
        int32_t* spiking = fired_.data();
        int32_t count = 0;
        for (int32_t u = 0; u < units; ++u) {
            spiking[count] = u;
            count += uint32_t(time[u] - first_step) < steps ? 1 : 0;
        }
        std::fill(list.begin.begin(), list.begin.end(), 0);
        int32_t* per_step = list.begin.data() + 1;
        for (int32_t s = 0; s < count; ++s) ++per_step[time[spiking[s]] - first_step];
        place_by_step(list, [&](auto place) {
            for (int32_t s = 0; s < count; ++s) place(spiking[s], time[spiking[s]] - first_step);
        });
    }

    // The complete potential of a neuron layer: first_spike_time = fire_start + first_crossing
    // (or -1); a neuron that fires is reset to 0 (`reset`: conv2d/dense; null for the input,
    // whose potential is the pixel). Then its spikes are listed by step.
    void fire(size_t li, const float* potential, float* reset) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        int32_t* first = first_spike_time_[li].data();
        const int32_t units = int32_t(first_spike_time_[li].size());
        std::fill(first, first + units, kNever);
        SpikeList& list = spikes_[li];
        std::fill(list.begin.begin(), list.begin.end(), 0);
        if (!layer.fires) return;
        // Candidates: the neurons at or above the lowest threshold, listed without branching
        // (whether a neuron fires is close to a coin toss in a busy layer).
        const float lowest = plan.lowest_threshold;
        int32_t* candidate = fired_.data();
        int32_t candidates = 0;
        for (int32_t i = 0; i < units; ++i) {
            candidate[candidates] = i;
            candidates += reaches(potential[i], lowest) ? 1 : 0;
        }
        int32_t* per_step = list.begin.data() + 1;  // spikes at step k, counted in begin[k + 1]
        int32_t fired = 0;
        for (int32_t c = 0; c < candidates; ++c) {
            const int32_t i = candidate[c];
            const int32_t j = crossing_from_lowest(plan, layer, potential[i]);
            if (j < 0) continue;
            first[i] = layer.fire_start + j;
            if (reset != nullptr) reset[i] = 0.0f;
            ++per_step[j];
            candidate[fired++] = i;  // the firing neurons, still ascending
        }
        if (!plan.list_by_step) return;
        place_by_step(list, [&](auto place) {
            for (int32_t s = 0; s < fired; ++s) place(candidate[s], first[candidate[s]] - layer.fire_start);
        });
    }

    // The spike step of every unit of the layer whose spikes layer `li` receives, when each
    // of them spikes at most once (a neuron layer, or an `earliest` pool of such); else null.
    const int32_t* single_times(size_t li) const {
        const size_t source = plans_[li - 1].source;
        if (model_.layers[source].has_neurons()) return first_spike_time_[source].data();
        return pool_time_[source].empty() ? nullptr : pool_time_[source].data();
    }

    // An `earliest` pool whose children spike at most once: each unit spikes at the earliest
    // step of its children (the relay of docs/ENGINES.md, as a minimum per unit), then the
    // spikes are listed by step.
    void relay_earliest(size_t li) {
        const Projection& g = plans_[li].projection;
        const int32_t* child = single_times(li);
        int32_t* time = pool_time_[li].data();
        for (int32_t oh = 0; oh < g.out_h; ++oh) {
            for (int32_t ow = 0; ow < g.out_w; ++ow) {
                uint32_t* earliest = reinterpret_cast<uint32_t*>(time + (oh * g.out_w + ow) * g.out_c);
                earliest_of_window(g, child, oh, ow, earliest);
            }
        }
        if (plans_[li].list_by_step) list_pool_by_step(li);
    }

    // The pool's spikes from its children's, which arrive listed by step: each child spike at
    // step t is relayed by the units whose window holds the child, once per unit and step
    // (`or`), only by units that have not relayed yet (`earliest`), or once per unit and step
    // where the gate of a `gated` pool lets it through (gated_pairs()). The (unit, step) pairs
    // come out in step order; two stable counting sorts, by unit and then by step, give both
    // lists (by unit: each unit's steps ascending; by step: each step's units ascending)
    // without a comparison sort, and without data-dependent branches, as whether a pair is
    // new is close to a coin toss.
    void relay_pool(size_t li) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const Projection& g = plan.projection;
        const UnitOrigin* origin = plan.fanout.origin.data();
        const OutputRange* rows_fed = plan.fanout.rows.data();
        const OutputRange* cols_fed = plan.fanout.cols.data();
        const SpikeList& below = spikes_[plans_[li - 1].source];
        SpikeList& list = spikes_[li];
        const int32_t units = int32_t(layer.out.size());
        const bool is_or = layer.pool_mode == TTFS_POOL_OR;
        int32_t* last = last_relayed_[li].data();       // per unit: its last step, or kNever
        int32_t* pair_unit = pair_unit_.data();
        int32_t* pair_step = pair_step_.data();
        int32_t* unit_begin = list.unit_begin.data();    // counts first, in unit_begin[u + 1]
        int32_t* per_step = list.begin.data() + 1;       // counts first, then offsets
        std::fill(unit_begin, unit_begin + units + 1, 0);
        std::fill(list.begin.begin(), list.begin.end(), 0);
        int32_t pairs = 0, dropped = 0;
        const bool gated = layer.pool_mode == TTFS_POOL_GATED;
        if (gated) pairs = gated_pairs(li, unit_begin, per_step);
        for (int32_t k = 0; !gated && k < below.steps(); ++k) {
            const int32_t t = below.first_step + k;
            const int32_t* children = below.at(k);
            for (int32_t s = 0, count = below.count(k); s < count; ++s) {
                const UnitOrigin o = origin[children[s]];
                const OutputRange rows = rows_fed[o.h], cols = cols_fed[o.w];
                for (int32_t oh = rows.first; oh <= rows.last; ++oh) {
                    for (int32_t ow = cols.first; ow <= cols.last; ++ow) {
                        const int32_t u = (oh * g.out_w + ow) * g.out_c + o.c;
                        // `or`: new unless already relayed at t; `earliest`: unless ever.
                        const bool fresh = is_or ? last[u] != t : last[u] == kNever;
                        pair_unit[pairs] = u;
                        pair_step[pairs] = t;
                        pairs += fresh ? 1 : 0;
                        last[u] = fresh ? t : last[u];
                        ++unit_begin[fresh ? u + 1 : 0];  // unit_begin[0] counts the rest
                        ++(fresh ? per_step[k] : dropped);
                    }
                }
            }
        }
        // By unit (stable: each unit's steps stay ascending): the CSR list.
        unit_begin[0] = 0;
        for (int32_t u = 0; u < units; ++u) unit_begin[u + 1] += unit_begin[u];
        int32_t* sorted_unit = sorted_unit_.data();
        int32_t* steps = list.step.data();
        for (int32_t i = 0; i < pairs; ++i) {
            const int32_t slot = unit_begin[pair_unit[i]]++;
            sorted_unit[slot] = pair_unit[i];
            steps[slot] = pair_step[i];
        }
        for (int32_t u = units; u > 0; --u) unit_begin[u] = unit_begin[u - 1];
        unit_begin[0] = 0;
        // By step (stable: each step's units stay ascending).
        place_by_step(list, [&](auto place) {
            for (int32_t i = 0; i < pairs; ++i) place(sorted_unit[i], steps[i] - list.first_step);
        });
        for (int32_t i = 0; i < pairs; ++i) last[sorted_unit[i]] = kNever;  // ready for the next image
    }

    // relay_pool()'s (unit, step) pairs for a `gated` pool (see Gate), in step order, counted
    // per unit and per step as there; returns the number of pairs. The children are the
    // neurons of the layer below (the only kind a gated pool may read), so each spikes once,
    // at its first-spike time. Per unit, the step of its first child spike tells whether a
    // child fired before the current step (E not empty); only an exact tie of the threshold
    // with 0 or 1 needs a look at the window (first_child_spikes()).
    int32_t gated_pairs(size_t li, int32_t* unit_begin, int32_t* per_step) {
        const LayerPlan& plan = plans_[li];
        const Projection& g = plan.projection;
        const UnitOrigin* origin = plan.fanout.origin.data();
        const OutputRange* rows_fed = plan.fanout.rows.data();
        const OutputRange* cols_fed = plan.fanout.cols.data();
        const SpikeList& below = spikes_[li - 1];
        const int32_t* child_time = first_spike_time_[li - 1].data();
        const uint8_t* gate = plan.gate.data();
        int32_t* last = last_relayed_[li].data();  // per unit: its last step, or kNever
        int32_t* first_child = gate_first_.data();  // per unit: its first child's step, or kNever
        int32_t* touched = gate_touched_.data();    // the units whose first_child was set
        int32_t* pair_unit = pair_unit_.data();
        int32_t* pair_step = pair_step_.data();
        int32_t pairs = 0, touched_count = 0;
        for (int32_t k = 0; k < below.steps(); ++k) {
            const int32_t t = below.first_step + k;
            const Gate code = Gate(gate[k]);
            const int32_t* children = below.at(k);
            for (int32_t s = 0, count = below.count(k); s < count; ++s) {
                const UnitOrigin o = origin[children[s]];
                const OutputRange rows = rows_fed[o.h], cols = cols_fed[o.w];
                for (int32_t oh = rows.first; oh <= rows.last; ++oh) {
                    for (int32_t ow = cols.first; ow <= cols.last; ++ow) {
                        const int32_t u = (oh * g.out_w + ow) * g.out_c + o.c;
                        const int32_t before = first_child[u];
                        touched[touched_count] = u;
                        touched_count += before == kNever ? 1 : 0;
                        first_child[u] = before == kNever ? t : before;
                        const bool earlier = before != kNever && before != t;  // E not empty
                        bool open = true;
                        if (code == kGateFirst)
                            open = !earlier;
                        else if (code == kGateTieOne)
                            open = !earlier || first_child_spikes(g, child_time, oh, ow, o.c, t, true);
                        else if (code == kGateTieZero)
                            open = !earlier && first_child_spikes(g, child_time, oh, ow, o.c, t, false);
                        const bool fresh = open && last[u] != t;
                        pair_unit[pairs] = u;
                        pair_step[pairs] = t;
                        pairs += fresh ? 1 : 0;
                        last[u] = fresh ? t : last[u];
                        ++unit_begin[fresh ? u + 1 : 0];  // unit_begin[0] counts the rest
                        per_step[k] += fresh ? 1 : 0;
                    }
                }
            }
        }
        for (int32_t i = 0; i < touched_count; ++i) first_child[touched[i]] = kNever;  // next image
        return pairs;
    }

    // Whether the first child in window order of pool unit (oh, ow, c) — among the children
    // that have fired by step t when `fired_by_t`, else among all — fires at t.
    static bool first_child_spikes(const Projection& g, const int32_t* child_time, int32_t oh, int32_t ow,
                                   int32_t c, int32_t t, bool fired_by_t) {
        const WindowInside win = window_inside(g, oh, ow);
        for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
            for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
                const int32_t time = child_time[((win.ih0 + kh) * g.in_w + win.iw0 + kw) * g.in_c + c];
                if (!fired_by_t || (time != kNever && time <= t)) return time == t;
            }
        }
        return false;
    }

    // V = +0 + (S(0) + bias) * 1, then V + S(t) * k(t) for each later step with arrivals,
    // ascending: the stepped engine's operations for every neuron, only at the steps where
    // something arrives.
    void integrate(size_t li) {
        const Layer& layer = model_.layers[li];
        const SpikeList& below = spikes_[plans_[li - 1].source];
        if (layer.kind == TTFS_LAYER_DENSE && plans_[li].padded_c == kLanes) {
            dense_by_step(layer, below.begin.data(), below.unit.data(), below.steps(),
                          below.first_step, plans_[li].weights(layer), membrane_[li].data());
            return;
        }
        const int32_t zero = -below.first_step;  // step 0's index in the list, if inside
        const bool spikes_at_zero = zero >= 0 && zero < below.steps();
        integrate_step(li, 0, spikes_at_zero ? below.at(zero) : nullptr,
                       spikes_at_zero ? below.count(zero) : 0);
        for (int32_t k = 0; k < below.steps(); ++k) {
            const int32_t t = below.first_step + k;
            if (t == 0 || below.count(k) == 0 || !layer.integrates_at(t)) continue;
            integrate_step(li, t, below.at(k), below.count(k));
        }
    }

    std::vector<SpikeList> spikes_;  // per layer but flatten
    std::vector<int32_t> fired_;     // scratch: a layer's candidate, then firing, neurons
    // maxpool scratch: per unit the step it last relayed (kNever between images); the (unit,
    // step) pairs of relay_pool() as found, and their units sorted.
    std::vector<std::vector<int32_t>> last_relayed_;
    std::vector<int32_t> pair_unit_, pair_step_, sorted_unit_;
    // `earliest` pools of single spikes: per unit its step, or kNever (relay_earliest()).
    std::vector<std::vector<int32_t>> pool_time_;
    // gated_pairs() scratch: per unit the step of its first child spike (kNever between
    // images), and the units that have one.
    std::vector<int32_t> gate_first_, gate_touched_;
    // certified_layer() and exact_first_crossing() scratch (see the constructor).
    Certify certify_ = Certify::kOn;
    std::vector<float> grid_, layer_sums_, scale_, high_, low_, bins_;
    std::vector<float> interval_high_, interval_low_;  // certified_pool(): per neuron, padded
    std::vector<int32_t> cell_nonzero_, area_, candidate_, step_count_;
    std::vector<int32_t> grid_bin_;  // per grid unit its bin in exact_potential()
    std::vector<uint64_t> row_bits_;  // grid_rows_avx512() scratch
    std::vector<int32_t> most_;      // certified_sums(): per output column, its bound's count
    std::vector<uint8_t> bin_used_;
    std::vector<int64_t> checked_, recomputed_;
};

// ---- Outputs --------------------------------------------------------------------------------

int32_t argmax_lowest(const float* values, int32_t count) {
    int32_t best = 0;
    for (int32_t i = 1; i < count; ++i)
        if (values[i] > values[best]) best = i;  // strict: ties keep the lowest index
    return best;
}

// Writes one image's results. Returns the index of an output potential that is not a finite
// number, or -1 (the loader's bound makes that impossible; the caller reports it as a bug
// rather than passing on a NaN and a class-0 prediction).
int32_t write_image_outputs(const Model& model, const Workspace& ws, int32_t image,
                            const RunOutputs& out) {
    for (size_t li = 0; li < model.layers.size(); ++li) {
        if (!model.layers[li].has_neurons()) continue;
        const std::vector<int32_t>& first = ws.first_spike_time(li);
        if (li < out.spike_counts.size() && out.spike_counts[li] != nullptr)
            out.spike_counts[li][image] = ws.spike_count(li);
        if (li < out.spike_times.size() && out.spike_times[li] != nullptr)
            std::copy(first.begin(), first.end(), out.spike_times[li] + size_t(image) * first.size());
    }
    const int32_t classes = model.num_classes();
    const std::vector<float>& potential = ws.output_membrane();
    for (int32_t k = 0; k < classes; ++k)
        if (!std::isfinite(potential[size_t(k)])) return k;
    if (out.potentials != nullptr)
        std::copy(potential.begin(), potential.end(), out.potentials + size_t(image) * classes);
    if (out.predictions == nullptr) return -1;
    int32_t prediction = -1;
    if (model.readout == TTFS_READOUT_FIRST_SPIKE) {
        const std::vector<int32_t>& first = ws.first_spike_time(model.layers.size() - 1);
        for (int32_t k = 0; k < classes; ++k)
            if (first[k] != kNever && (prediction < 0 || first[k] < first[prediction])) prediction = k;
    }
    if (prediction < 0) prediction = argmax_lowest(potential.data(), classes);  // vmem, or no spike
    out.predictions[image] = prediction;
    return -1;
}

// ---- The backend ----------------------------------------------------------------------------

class CpuBackend final : public Backend {
public:
    CpuBackend(std::shared_ptr<const Model> model, ttfs_engine engine, Certify certify, bool report,
               int32_t max_workers)
        : model_(std::move(model)), engine_(engine), certify_(certify), report_(report),
          max_workers_(std::max(1, max_workers)), plans_(make_plans(*model_, engine, certify)) {}

    // TTFS_CERTIFY_STATS: how many neurons the certified sums decided and how many were
    // recomputed exactly, per layer, on stderr (for tests and for tuning; docs/ENGINES.md).
    ~CpuBackend() override {
        if (!report_ || engine_ != TTFS_ENGINE_ANALYTIC) return;
        for (size_t li = 0; li < model_->layers.size(); ++li) {
            if (!plans_[li].certified) continue;
            int64_t checked = 0, recomputed = 0;
            for (const auto& ws : workspaces_) {
                const auto& analytic = static_cast<const AnalyticWorkspace&>(*ws);
                checked += analytic.checked()[li];
                recomputed += analytic.recomputed()[li];
            }
            std::fprintf(stderr, "ttfs certified sums: layer %s: %lld neurons, %lld recomputed exactly\n",
                         model_->layers[li].name.c_str(), static_cast<long long>(checked),
                         static_cast<long long>(recomputed));
        }
    }

    // Workspaces are created here for the default thread count, and later only if the thread
    // count grows; a run never allocates per image or per neuron.
    void prepare(int32_t workers) {
        Memory memory(false);
        while (int32_t(workspaces_.size()) < workers) {
            if (engine_ == TTFS_ENGINE_ANALYTIC) {
                auto ws = std::make_unique<AnalyticWorkspace>(*model_, plans_, memory);
                ws->set_certify(certify_);
                workspaces_.push_back(std::move(ws));
            } else {
                workspaces_.push_back(std::make_unique<SteppedWorkspace>(*model_, plans_, memory));
            }
        }
    }

    // Worker threads for a batch of n: the requested count (default: one per hardware
    // thread), never more than n images or than the memory budget has workspaces for.
    int32_t workers_for(int32_t n) const {
        int32_t threads = requested_threads_;
        if (threads <= 0) threads = default_threads();
        return std::max(1, std::min({threads, n, max_workers_}));
    }
    static int32_t default_threads() { return int32_t(std::max(1u, std::thread::hardware_concurrency())); }

    void set_threads(int32_t threads) override { requested_threads_ = std::max(0, threads); }

    ttfs_status run(const float* images, int32_t n, const RunOutputs& out, std::string& error) override {
        try {
            const int32_t workers = workers_for(n);
            prepare(workers);
            const size_t input_size = size_t(model_->input().out.size());
            std::atomic<int32_t> next_image{0};
            std::mutex failure_lock;
            std::string failure;
            // Images go to whichever worker is free; each image is computed by one worker
            // alone, so the results are the same for any thread count.
            bool recording = false;
            for (const int32_t* times : out.spike_times) recording = recording || times != nullptr;
            auto work = [&](Workspace& ws) noexcept {
                try {
                    ws.set_recording(recording);
                    for (int32_t i = next_image.fetch_add(1); i < n; i = next_image.fetch_add(1)) {
                        ws.run_image(images + size_t(i) * input_size);
                        const int32_t bad = write_image_outputs(*model_, ws, i, out);
                        if (bad >= 0)
                            throw std::runtime_error(
                                "image " + std::to_string(i) + ": the output potential of class " +
                                std::to_string(bad) + " is " +
                                std::to_string(ws.output_membrane()[size_t(bad)]) +
                                ", not a finite number, although the model passed the loader's "
                                "potential bound (docs/FORMAT.md); please report the model");
                    }
                } catch (const std::exception& e) {
                    std::lock_guard<std::mutex> hold(failure_lock);
                    failure = std::string("CPU worker failed: ") + e.what();
                    next_image.store(n);  // stop the other workers too
                } catch (...) {
                    std::lock_guard<std::mutex> hold(failure_lock);
                    failure = "CPU worker failed with an unknown exception";
                    next_image.store(n);
                }
            };
            std::vector<std::thread> helpers;
            helpers.reserve(size_t(workers - 1));
            for (int32_t k = 1; k < workers; ++k) {
                try {
                    helpers.emplace_back(work, std::ref(*workspaces_[size_t(k)]));
                } catch (const std::system_error&) {
                    break;  // no more threads available: the workers already started share the batch
                }
            }
            work(*workspaces_[0]);
            for (std::thread& helper : helpers) helper.join();
            if (!failure.empty()) {
                error = failure;
                return TTFS_ERR_INTERNAL;
            }
            return TTFS_OK;
        } catch (const std::bad_alloc&) {
            error = "out of memory allocating CPU workspaces for " + std::to_string(n) + " images";
            return TTFS_ERR_OUT_OF_MEMORY;
        } catch (const std::length_error&) {
            error = "the model's CPU workspaces are larger than this machine can allocate";
            return TTFS_ERR_OUT_OF_MEMORY;
        } catch (const std::exception& e) {
            error = std::string("CPU backend failed: ") + e.what();
            return TTFS_ERR_INTERNAL;
        }
    }

private:
    std::shared_ptr<const Model> model_;
    ttfs_engine engine_;
    Certify certify_;
    bool report_;
    int32_t max_workers_;
    std::vector<LayerPlan> plans_;  // read by every worker, never written after construction
    int32_t requested_threads_ = 0;
    std::vector<std::unique_ptr<Workspace>> workspaces_;  // one per worker thread
};

// ---- Requirements (the session's budget) -----------------------------------------------------

// An upper bound on the basic operations (a compare, an add of one weight, a table step) one
// image can cost, from the model and the plans (docs/C_API.md, "Limits"). What it counts, per
// layer: threshold checks (every neuron at every step of its fire window: the stepped engine
// does that, the analytic engine's scan can in the worst case); synaptic events (every spike
// that can arrive, times the output positions whose windows hold it, times the channels);
// pool relays; for certified layers the dense window sums, an exact recomputation of every
// neuron and, after an `earliest` pool, every settling round; for the stepped engine the loop
// over steps and layers.
uint64_t work_per_image(const Model& model, const std::vector<LayerPlan>& plans, ttfs_engine engine) {
    const std::vector<SpikeBounds> bounds = spike_bounds(model);
    Tally work;
    int32_t active_steps = 1;
    for (size_t li = 0; li < model.layers.size(); ++li) {
        const Layer& layer = model.layers[li];
        const LayerPlan& plan = plans[li];
        const uint64_t units = uint64_t(layer.out.size());
        work.add(units);
        if (layer.has_neurons() && layer.fires) {
            work.add_product(units, uint64_t(std::max(1, layer.fire_len())));
            active_steps = std::max(active_steps, layer.fire_end);
        }
        if (li == 0 || layer.kind == TTFS_LAYER_FLATTEN) continue;
        const SpikeBounds& in = bounds[li - 1];
        const Projection& g = plan.projection;
        const uint64_t rows = uint64_t(std::min((g.kernel_h + g.stride_h - 1) / g.stride_h, g.out_h));
        const uint64_t cols = uint64_t(std::min((g.kernel_w + g.stride_w - 1) / g.stride_w, g.out_w));
        if (layer.kind == TTFS_LAYER_MAXPOOL) {
            const uint64_t children = uint64_t(bounds[li].children);
            work.add_product(uint64_t(in.total), rows, cols, 4);  // relays, two counting sorts
            work.add_product(units, children);                     // `earliest`: min per window
            work.add(uint64_t(plan.window_len));
            if (layer.pool_mode == TTFS_POOL_GATED) {
                // A threshold of exactly 0 or 1 is a tie that needs a look at the whole window,
                // for every relayed spike (both engines).
                bool ties = false;
                for (float vth : model.layers[li - 1].fire_threshold) ties = ties || vth == 0.0f || vth == 1.0f;
                if (ties) work.add_product(uint64_t(in.total), rows, cols, children);
            }
            continue;
        }
        // conv2d, dense
        const uint64_t positions = uint64_t(g.positions());
        const uint64_t fan_in = uint64_t(g.kernel_h) * uint64_t(g.kernel_w) * uint64_t(g.in_c);
        const uint64_t window = uint64_t(in.window_len);
        work.add_product(uint64_t(in.total), rows, cols, uint64_t(std::max(plan.padded_c, 1)));
        work.add_product(positions, uint64_t(std::max(plan.padded_c, 1)), 2);
        if (engine != TTFS_ENGINE_ANALYTIC || !plan.certified) continue;
        work.add_product(positions, fan_in, uint64_t(plan.bound_stride));       // window sums
        work.add_product(positions, uint64_t(g.out_c), fan_in + window + 2);     // every neuron exact
        work.add_product(uint64_t(plan.grid_floats), 2);
        if (plan.fuses_pool) {  // every settling round of every pool unit
            const SpikeBounds& pool = bounds[li + 1];
            const uint64_t children = uint64_t(pool.children);
            work.add_product(uint64_t(model.layers[li + 1].out.size()), children + 1,
                             children + fan_in + window + 2);
        }
    }
    if (engine == TTFS_ENGINE_STEPPED)
        work.add_product(uint64_t(std::min(active_steps, model.time_steps)), uint64_t(model.layers.size()));
    return work.value();
}

// TTFS_CERTIFY (docs/ENGINES.md), read when a session is created.
ttfs_status certify_mode(Certify& certify, std::string& error) {
    certify = Certify::kOn;
    const char* value = std::getenv("TTFS_CERTIFY");
    if (value == nullptr || *value == '\0') return TTFS_OK;
    const std::string mode = value;
    if (mode == "on") certify = Certify::kOn;
    else if (mode == "off") certify = Certify::kOff;
    else if (mode == "recompute") certify = Certify::kRecompute;
    else {
        error = "CPU backend: environment variable TTFS_CERTIFY is '" + mode +
                "'; expected 'on' (the default), 'off' or 'recompute'";
        return TTFS_ERR_INVALID_ARGUMENT;
    }
    return TTFS_OK;
}

}  // namespace

ttfs_status cpu_backend_requirements(const Model& model, ttfs_engine engine, int32_t max_batch,
                                     Requirements& out, std::string& error) {
    try {
        Certify certify = Certify::kOn;
        const ttfs_status status = certify_mode(certify, error);
        if (status != TTFS_OK) return status;
        // The plans and one workspace, built counting: sizes only, nothing allocated.
        Memory shared(true), worker(true);
        const std::vector<LayerPlan> plans = plan_model(model, engine, certify, shared);
        if (engine == TTFS_ENGINE_ANALYTIC)
            AnalyticWorkspace(model, plans, worker);
        else
            SteppedWorkspace(model, plans, worker);
        out.shared_bytes = shared.bytes();
        out.per_worker_bytes = worker.bytes();
        out.work_per_image = work_per_image(model, plans, engine);
        out.workers = std::max(1, std::min(int32_t(std::max(1u, std::thread::hardware_concurrency())),
                                           max_batch));
        return TTFS_OK;
    } catch (const std::bad_alloc&) {
        error = "out of memory while sizing the CPU backend";
        return TTFS_ERR_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
        error = std::string("CPU backend: ") + e.what();
        return TTFS_ERR_INTERNAL;
    }
}

ttfs_status make_cpu_backend(std::shared_ptr<const Model> model, ttfs_engine engine,
                             int32_t max_batch, int32_t max_workers, std::unique_ptr<Backend>& out,
                             std::string& error) {
    if (!model || model->layers.size() < 2) {
        error = "CPU backend: expected a model with at least an input and an output layer";
        return TTFS_ERR_INVALID_ARGUMENT;
    }
    if (engine != TTFS_ENGINE_STEPPED && engine != TTFS_ENGINE_ANALYTIC) {
        error = "CPU backend: engine " + std::to_string(int(engine)) +
                " is not TTFS_ENGINE_STEPPED (0) or TTFS_ENGINE_ANALYTIC (1)";
        return TTFS_ERR_INVALID_ARGUMENT;
    }
    if (max_batch < 1) {
        error = "CPU backend: max_batch is " + std::to_string(max_batch) + ", expected >= 1";
        return TTFS_ERR_INVALID_ARGUMENT;
    }
    // The caller checks this too; repeated here because the closed form is simply wrong on
    // overlapping windows, and a wrong answer is worse than a refusal.
    std::string why;
    if (engine == TTFS_ENGINE_ANALYTIC && !windows_allow_analytic(*model, why)) {
        error = why;
        return TTFS_ERR_UNSUPPORTED;
    }
    Certify certify = Certify::kOn;
    const ttfs_status mode = certify_mode(certify, error);
    if (mode != TTFS_OK) return mode;
    const char* stats = std::getenv("TTFS_CERTIFY_STATS");
    const bool report = stats != nullptr && *stats != '\0' && std::string(stats) != "0";
    try {
        auto backend = std::make_unique<CpuBackend>(std::move(model), engine, certify, report, max_workers);
        backend->prepare(backend->workers_for(max_batch));
        out = std::move(backend);
        return TTFS_OK;
    } catch (const std::bad_alloc&) {
        error = "out of memory allocating the CPU backend's workspaces";
        return TTFS_ERR_OUT_OF_MEMORY;
    } catch (const std::length_error&) {
        error = "the model's CPU workspaces are larger than this machine can allocate";
        return TTFS_ERR_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
        error = std::string("CPU backend: ") + e.what();
        return TTFS_ERR_INTERNAL;
    }
}

}  // namespace ttfs
