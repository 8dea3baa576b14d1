// Planning (see plan.hpp): builds the LayerPlans of a session and bounds its work per image.

#include "cpu/plan.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace ttfs {
namespace cpu {

Fanout fanout_of(const WindowGeometry& g, Memory& memory) {
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

// The bound rows of a certified layer (see LayerPlan).
void plan_certified(const Layer& layer, const LayerPlan& input, LayerPlan& plan, Memory& memory) {
    const WindowGeometry& g = plan.geometry;
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
            plan.geometry = window_geometry(layer);  // the window geometry, as for conv2d
            plan.fanout = fanout_of(plan.geometry, memory);
            if (layer.pool_mode == TTFS_POOL_GATED) plan_gate(model.layers[li - 1], plan, memory);
        } else if (layer.kind == TTFS_LAYER_CONV2D || layer.kind == TTFS_LAYER_DENSE) {
            const WindowGeometry g = window_geometry(layer);
            plan.geometry = g;
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
        const WindowGeometry& g = plan.geometry;
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
    else if (mode == "check") certify = Certify::kCheck;
    else {
        error = "CPU backend: environment variable TTFS_CERTIFY is '" + mode +
                "'; expected 'on' (the default), 'off', 'recompute' or 'check'";
        return TTFS_ERR_INVALID_ARGUMENT;
    }
    return TTFS_OK;
}

}  // namespace cpu
}  // namespace ttfs
