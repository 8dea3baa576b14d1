// The in-memory model: what format_reader.cpp produces from a validated .ttfs file and what
// every backend consumes. Immutable once built; shared between sessions via shared_ptr.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "ttfs.h"
#include "window_geometry.h"

namespace ttfs {

struct Shape {
    int32_t h = 0, w = 0, c = 0;
    int64_t size() const { return int64_t(h) * w * c; }
};

struct Layer {
    std::string name;
    ttfs_layer_kind kind = TTFS_LAYER_INPUT;
    int32_t depth = -1;  // neuron layers 0, 1, 2 ...; -1 otherwise
    Shape in, out;       // in == previous layer's out (input layer: in == out)

    // conv2d (kernel) and maxpool (pool size)
    int32_t kernel_h = 0, kernel_w = 0, stride_h = 0, stride_w = 0;
    ttfs_padding padding = TTFS_PADDING_VALID;
    int32_t pad_top = 0, pad_left = 0;  // derived: TensorFlow SAME split, 0 for VALID
    ttfs_pool_mode pool_mode = TTFS_POOL_OR;

    // conv2d: HWIO [kh, kw, in_c, out_c]; dense: [in, out]. bias: [out_c] (zeros when the file
    // has none).
    std::vector<float> weights, bias;

    // Neuron parameters (input, conv2d, dense).
    float tau_fire = 0, td_fire = 0, tau_integ = 0, td_integ = 0, vth0 = 0;
    int32_t integ_start = 0, integ_end = 0, fire_start = 0, fire_end = 0;
    float input_divisor = 0;  // input layer only

    // Derived by finalize_model():
    // fire_threshold[j] = vth0 * exp(-(float(j) - td_fire) / tau_fire), j in [0, fire_end-fire_start)
    // integ_kernel[i]   = exp(-(float(i) - td_integ) / tau_integ),     i in [0, integ_end-integ_start)
    // (the t == 0 integration uses weight exactly 1 whatever the table says; see kernel_at()).
    std::vector<float> fire_threshold, integ_kernel;
    bool fires = false;  // false for maxpool/flatten, and the output layer under vmem readout

    bool has_neurons() const {
        return kind == TTFS_LAYER_INPUT || kind == TTFS_LAYER_CONV2D || kind == TTFS_LAYER_DENSE;
    }
    // Does this (non-input) neuron layer integrate synaptic input arriving at global step t?
    bool integrates_at(int32_t t) const { return t == 0 || (t >= integ_start && t < integ_end); }
    // The kernel applied to input arriving at step t; only valid where integrates_at(t).
    float kernel_at(int32_t t) const { return t == 0 ? 1.0f : integ_kernel[size_t(t - integ_start)]; }
    int32_t fire_len() const { return fire_end - fire_start; }
};

// The window geometry of a conv2d, dense or maxpool layer (window_geometry.h): a dense layer
// is a 1x1 VALID convolution over its (1, 1, n) input. Both backends describe layers by it.
WindowGeometry window_geometry(const Layer& layer);

struct Model {
    uint32_t format_version = 0;
    int32_t time_steps = 0;
    ttfs_readout readout = TTFS_READOUT_VMEM;
    std::vector<Layer> layers;  // layers[0] is the input layer, layers.back() the output layer
    std::string metadata;       // JSON text, may be empty

    const Layer& input() const { return layers.front(); }
    const Layer& output() const { return layers.back(); }
    int32_t num_classes() const { return int32_t(layers.back().out.size()); }
};

// Computes the derived fields (tables, fires, padding split). Called by the reader after
// validation; test code that builds a Model by hand calls it too.
void finalize_model(Model& model);

// What can arrive from a layer's output, per image: the steps at which its units can spike
// (the fire window of the neuron layer it relays, through maxpool and flatten; empty when that
// layer does not fire) and how many spikes one unit and all units together can send. A neuron
// spikes at most once; an `earliest` pool unit once; any other pool unit at most once per
// distinct step of its children, so at most (children inside its window) x (spikes per child),
// and never more than its window has steps. Saturating arithmetic: no overflow.
struct SpikeBounds {
    int32_t window_start = 0, window_len = 0;
    int64_t per_unit = 0;  // most spikes one output unit sends
    int64_t total = 0;     // most spikes the whole layer sends
    int64_t children = 0;  // maxpool: most children inside one unit's window
    int64_t parents = 0;   // maxpool: most units whose window holds one child
};
std::vector<SpikeBounds> spike_bounds(const Model& model);

// a * b, saturated at INT64_MAX (both >= 0).
int64_t saturating_mul(int64_t a, int64_t b);

// A count that saturates at UINT64_MAX instead of wrapping: memory and work estimates of
// hostile models can exceed 64 bits, and a saturated count still compares as "too much".
class Tally {
public:
    Tally& add(uint64_t a) {
        if (__builtin_add_overflow(value_, a, &value_)) value_ = UINT64_MAX;
        return *this;
    }
    // Adds the product of the factors.
    template <typename... Factors>
    Tally& add_product(uint64_t first, Factors... rest) {
        uint64_t product = first;
        for (uint64_t factor : std::initializer_list<uint64_t>{uint64_t(rest)...})
            if (__builtin_mul_overflow(product, factor, &product)) product = UINT64_MAX;
        return add(product);
    }
    uint64_t value() const { return value_; }

private:
    uint64_t value_ = 0;
};

// Checks what the loader derives from the constants (docs/FORMAT.md, "Derived values"): every
// threshold and integration-kernel table entry finite, the uint8 input scaling finite, and for
// every conv2d/dense layer a bound on |membrane potential| over every step and every input
// within float32's range, so that no engine can form a non-finite potential. On failure returns
// TTFS_ERR_BAD_VALUE with `error` naming the layer, the field, the value and what was expected.
ttfs_status check_derived_values(const Model& model, std::string& error);

// True when every neuron layer's membrane potential is complete before its fire window opens,
// so the analytic engine applies. Otherwise false, with `why` naming the layers and windows.
bool windows_allow_analytic(const Model& model, std::string& why);

// Parse and validate a model file held in memory. On failure returns the status of
// docs/FORMAT.md and sets `error` to a message naming the field, the value and what was
// expected; `out` is then unspecified. Never throws (std::bad_alloc included).
ttfs_status read_model(const uint8_t* data, size_t size, Model& out, std::string& error);

}  // namespace ttfs
