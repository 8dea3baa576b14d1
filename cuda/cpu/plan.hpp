// Planning: what the CPU engines know about each layer beyond ttfs::Layer, computed once per
// session and then shared read-only by the worker threads (LayerPlan): the window geometry
// (WindowGeometry), where an input unit's spikes go (Fanout), the crossing index that finds a
// potential's fire step in O(1), padded weights, the bound rows of the certified sums, the
// gates of `gated` pools; and what a session will cost before anything is allocated (Memory,
// work_per_image). Also the TTFS_CERTIFY mode.

#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "cpu/simd.hpp"
#include "model.hpp"
#include "ttfs_math.h"
#include "window_geometry.h"

namespace ttfs {
namespace cpu {

// An allocator of storage aligned to 64 bytes (a cache line), for the arrays the AVX-512
// kernels read 16 floats at a time: a row that starts on a line boundary is read without any
// load that straddles two lines (which costs about a quarter of the window sums' speed).
template <typename T>
struct LineAligned {
    using value_type = T;
    static constexpr std::align_val_t kAlignment{64};
    LineAligned() = default;
    template <typename U>
    LineAligned(const LineAligned<U>&) {}
    T* allocate(size_t count) { return static_cast<T*>(::operator new(count * sizeof(T), kAlignment)); }
    void deallocate(T* p, size_t) { ::operator delete(p, kAlignment); }
    template <typename U>
    bool operator==(const LineAligned<U>&) const { return true; }
    template <typename U>
    bool operator!=(const LineAligned<U>&) const { return false; }
};
template <typename T>
using LineVector = std::vector<T, LineAligned<T>>;

// Plans and workspaces take their memory through a Memory, so that a session can learn what
// they will allocate, byte for byte, before anything is allocated (the memory budget of
// ttfs_session_create_ex): counting, take() only adds up the bytes and leaves the vector
// empty; the constructors then run the same code either way. (Each vector's own header and
// the arrays of vectors of vectors, a few dozen bytes per layer, are left out.)
class Memory {
public:
    explicit Memory(bool counting) : counting_(counting) {}
    template <typename T, typename A, typename V>
    void take(std::vector<T, A>& vector, size_t count, const V& value) {
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

Fanout fanout_of(const WindowGeometry& g, Memory& memory);

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

// Bytes of a crossing index at most: two int32 per bucket (kMostBuckets, see below).
constexpr size_t kCrossingIndexBytes = 2 * 4096 * sizeof(int32_t);

CrossingIndex crossing_index_of(const std::vector<float>& table);

// What the engines need to know about a layer beyond ttfs::Layer, computed once per session
// and shared read-only by the worker threads.
struct LayerPlan {
    size_t source = 0;  // the layer whose spikes are this layer's output (flatten: the one below)
    // conv2d, dense, maxpool
    WindowGeometry geometry{};
    Fanout fanout;
    // conv2d, dense
    int32_t padded_c = 0;                // out_c rounded up to whole kLanes chunks
    LineVector<float> padded_weights;   // HWIO with out channels padded to padded_c; empty when
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
    LineVector<float> bound_weights, bound_bias;
    // The input as a grid padded with zeros (SAME padding; plus slack for the last block of
    // window_sums()): grid_h x grid_w cells of in_c floats, grid_floats in all.
    int32_t grid_h = 0, grid_w = 0;
    size_t grid_floats = 0;
    // Per step k of the input's spike window (first step + k): the bin an input spike there
    // goes to (k, or the spare bin `window length` where the layer does not integrate; the
    // spare bin's own entry maps to itself), the kernel of that step (0 where none), and the
    // bin of step 0 (-1 when outside the window). Used by the exact recomputation.
    LineVector<float> weights_by_neuron;  // [out_c][fan_in]: a neuron's window weights together
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

// How the analytic engine forms hidden layers' potentials (environment TTFS_CERTIFY, read when
// a session is created; docs/ENGINES.md): kOn = certified sums with exact recomputation where
// they cannot decide; kOff = exact sums for every neuron (the event-driven scatter);
// kRecompute = certified path, but every neuron recomputed exactly (tests the recomputation);
// kCheck = as kOn, and every neuron's exact potential checked against its interval (tests the
// bound).
enum class Certify { kOn, kOff, kRecompute, kCheck };

// first_crossing(v, layer.fire_threshold) for a v at or above the table's lowest entry (the
// caller has checked), through the crossing index where the table has one.
inline int32_t crossing_from_lowest(const LayerPlan& plan, const Layer& layer, float v) {
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

// With a counting Memory: every size and flag, none of the tables (fan-out, padded and bound
// weights, crossing index), and their bytes counted.
std::vector<LayerPlan> plan_model(const Model& model, ttfs_engine engine, Certify certify, Memory& memory);

// The plans with their tables, allocated.
std::vector<LayerPlan> make_plans(const Model& model, ttfs_engine engine, Certify certify);

// An upper bound on the basic operations (a compare, an add of one weight, a table step) one
// image can cost, from the model and the plans (docs/C_API.md, "Limits"). What it counts, per
// layer: threshold checks (every neuron at every step of its fire window: the stepped engine
// does that, the analytic engine's scan can in the worst case); synaptic events (every spike
// that can arrive, times the output positions whose windows hold it, times the channels);
// pool relays; for certified layers the dense window sums, an exact recomputation of every
// neuron and, after an `earliest` pool, every settling round; for the stepped engine the loop
// over steps and layers.
uint64_t work_per_image(const Model& model, const std::vector<LayerPlan>& plans, ttfs_engine engine);

// TTFS_CERTIFY (docs/ENGINES.md), read when a session is created.
ttfs_status certify_mode(Certify& certify, std::string& error);

}  // namespace cpu
}  // namespace ttfs
