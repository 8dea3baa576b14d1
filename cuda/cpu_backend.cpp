// CPU backend: the stepped and analytic engines of docs/ENGINES.md, threaded over the batch.
//
// Every float operation that decides a spike goes through cuda/ttfs_math.h and the tables of
// ttfs::Layer, in the order docs/ENGINES.md fixes, so the two engines give the same bits. Each
// image is computed by one thread from start to end, so results do not depend on the thread
// count or on which thread took which image.
#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "backend.hpp"
#include "ttfs_math.h"

namespace ttfs {

namespace {

constexpr int32_t kNever = -1;  // first_spike_time of a neuron that has not fired

// conv2d and dense share one geometry: dense is a 1x1 VALID conv over its (1, 1, n) input.
// Its [n, units] weights are then exactly HWIO [1, 1, n, units], and conv2d's canonical order
// (kernel row, kernel column, input channel) reduces to dense's (input index ascending).
struct Projection {
    int32_t in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left;

    int32_t positions() const { return out_h * out_w; }
    // First weight of (kernel row, kernel column, input channel); out_c consecutive floats.
    size_t weight_row(int32_t kh, int32_t kw, int32_t ic) const {
        return ((size_t(kh) * kernel_w + kw) * in_c + ic) * out_c;
    }
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

// One image's state, reused for every image a worker thread processes. Allocated once per
// session (sized from the model); run_image() never allocates.
class Workspace {
public:
    explicit Workspace(const Model& model) : model_(model) {
        const size_t count = model.layers.size();
        first_spike_time_.resize(count);
        membrane_.resize(count);
        for (size_t li = 0; li < count; ++li) {
            const Layer& layer = model.layers[li];
            if (!layer.has_neurons()) continue;
            first_spike_time_[li].assign(size_t(layer.out.size()), kNever);
            if (layer.kind != TTFS_LAYER_INPUT) membrane_[li].assign(size_t(layer.out.size()), 0.0f);
        }
    }
    virtual ~Workspace() = default;

    // Computes every neuron layer's first-spike times and the conv2d/dense membranes for one
    // image (input size floats, HWC, already scaled).
    virtual void run_image(const float* image) = 0;

    const std::vector<int32_t>& first_spike_time(size_t layer) const { return first_spike_time_[layer]; }
    const std::vector<float>& output_membrane() const { return membrane_.back(); }

protected:
    const Model& model_;
    std::vector<std::vector<int32_t>> first_spike_time_;  // neuron layers, HWC; -1 = never
    std::vector<std::vector<float>> membrane_;            // conv2d/dense, HWC
};

// ---- Stepped engine -------------------------------------------------------------------------

class SteppedWorkspace final : public Workspace {
public:
    explicit SteppedWorkspace(const Model& model) : Workspace(model) {
        const size_t count = model.layers.size();
        spiking_now_.resize(count);
        relayed_by_.resize(count);
        synaptic_sum_.resize(count);
        positions_with_input_.resize(count);
        last_marked_.resize(count);
        pool_relayed_.resize(count);
        // After the last step at which any layer may fire nothing arrives anywhere, and a
        // neuron without input at t != 0 is unchanged, so later steps can be skipped.
        active_steps_ = 1;
        for (size_t li = 0; li < count; ++li) {
            const Layer& layer = model.layers[li];
            // Flatten relays unchanged: HWC order is already the flat order.
            relayed_by_[li] = layer.kind == TTFS_LAYER_FLATTEN ? relayed_by_[li - 1] : li;
            if (layer.fires) active_steps_ = std::max(active_steps_, layer.fire_end);
            // Reserved to the largest possible size so that push_back never reallocates.
            spiking_now_[li].reserve(size_t(layer.out.size()));
            if (layer.kind == TTFS_LAYER_CONV2D || layer.kind == TTFS_LAYER_DENSE) {
                const Projection g = projection_of(layer);
                synaptic_sum_[li].assign(size_t(layer.out.size()), 0.0f);
                positions_with_input_[li].reserve(size_t(g.positions()));
                last_marked_[li].assign(size_t(g.positions()), kNever);
            } else if (layer.kind == TTFS_LAYER_MAXPOOL) {
                if (layer.pool_mode == TTFS_POOL_OR)
                    last_marked_[li].assign(size_t(layer.out.size()), kNever);
                else
                    pool_relayed_[li].assign(size_t(layer.out.size()), 0);
            }
        }
        active_steps_ = std::min(active_steps_, model.time_steps);
    }

    void run_image(const float* image) override {
        reset();
        for (int32_t t = 0; t < active_steps_; ++t) {
            for (size_t li = 0; li < model_.layers.size(); ++li) {
                switch (model_.layers[li].kind) {
                    case TTFS_LAYER_INPUT: fire_inputs(li, image, t); break;
                    case TTFS_LAYER_MAXPOOL: relay_pool(li, t); break;
                    case TTFS_LAYER_FLATTEN: break;  // reads the layer below's list
                    case TTFS_LAYER_CONV2D:
                    case TTFS_LAYER_DENSE:
                        if (model_.layers[li].integrates_at(t)) {
                            gather_synaptic_input(li, t);
                            integrate_synaptic_input(li, t);
                        }
                        fire(li, t);
                        break;
                }
            }
        }
    }

private:
    void reset() {
        for (size_t li = 0; li < model_.layers.size(); ++li) {
            std::fill(first_spike_time_[li].begin(), first_spike_time_[li].end(), kNever);
            std::fill(membrane_[li].begin(), membrane_[li].end(), 0.0f);
            std::fill(synaptic_sum_[li].begin(), synaptic_sum_[li].end(), 0.0f);
            std::fill(last_marked_[li].begin(), last_marked_[li].end(), kNever);
            std::fill(pool_relayed_[li].begin(), pool_relayed_[li].end(), uint8_t(0));
            spiking_now_[li].clear();
            positions_with_input_[li].clear();
        }
    }

    // The input potential is the pixel itself (vmem := x at t = 0), never integrated.
    void fire_inputs(size_t li, const float* image, int32_t t) {
        const Layer& layer = model_.layers[li];
        std::vector<int32_t>& spiking = spiking_now_[li];
        std::vector<int32_t>& first = first_spike_time_[li];
        spiking.clear();
        if (!layer.fires || t < layer.fire_start || t >= layer.fire_end) return;
        const float threshold = layer.fire_threshold[size_t(t - layer.fire_start)];
        const int32_t count = int32_t(first.size());
        for (int32_t i = 0; i < count; ++i) {
            if (reaches(image[i], threshold) && first[i] == kNever) {
                first[i] = t;
                spiking.push_back(i);
            }
        }
    }

    // `or`: a unit spikes at every step one of its children spikes; `earliest`: only once.
    void relay_pool(size_t li, int32_t t) {
        const Layer& layer = model_.layers[li];
        std::vector<int32_t>& spiking = spiking_now_[li];
        spiking.clear();
        const bool is_or = layer.pool_mode == TTFS_POOL_OR;
        const int32_t channels = layer.in.c;
        for (int32_t child : spiking_now_[relayed_by_[li - 1]]) {
            const int32_t c = child % channels;
            const int32_t iw = (child / channels) % layer.in.w;
            const int32_t ih = child / channels / layer.in.w;
            const OutputRange rows = outputs_fed_by(ih, layer.pad_top, layer.kernel_h, layer.stride_h, layer.out.h);
            const OutputRange cols = outputs_fed_by(iw, layer.pad_left, layer.kernel_w, layer.stride_w, layer.out.w);
            for (int32_t oh = rows.first; oh <= rows.last; ++oh) {
                for (int32_t ow = cols.first; ow <= cols.last; ++ow) {
                    const int32_t unit = (oh * layer.out.w + ow) * channels + c;
                    if (is_or) {
                        if (last_marked_[li][unit] == t) continue;  // already spiking at t
                        last_marked_[li][unit] = t;
                    } else {
                        if (pool_relayed_[li][unit]) continue;
                        pool_relayed_[li][unit] = 1;
                    }
                    spiking.push_back(unit);
                }
            }
        }
        // A unit's children are not adjacent in HWC order (channels interleave, windows may
        // overlap), so the list comes out unordered; the next layer needs ascending HWC order.
        std::sort(spiking.begin(), spiking.end());
    }

    // Scatter this step's presynaptic spikes into the synaptic sums they feed.
    // The spikes come in ascending input (h, w, c) order, and for a fixed output position the
    // kernel row and column grow with the input row and column (kh = ih + pad - oh*stride), so
    // every neuron receives its weights in canonical (kernel row, column, channel) order.
    void gather_synaptic_input(size_t li, int32_t t) {
        const Layer& layer = model_.layers[li];
        const Projection g = projection_of(layer);
        std::vector<float>& sum = synaptic_sum_[li];
        std::vector<int32_t>& positions = positions_with_input_[li];
        std::vector<int32_t>& marked = last_marked_[li];
        positions.clear();
        for (int32_t unit : spiking_now_[relayed_by_[li - 1]]) {
            const int32_t ic = unit % g.in_c;
            const int32_t iw = (unit / g.in_c) % g.in_w;
            const int32_t ih = unit / g.in_c / g.in_w;
            const OutputRange rows = outputs_fed_by(ih, g.pad_top, g.kernel_h, g.stride_h, g.out_h);
            const OutputRange cols = outputs_fed_by(iw, g.pad_left, g.kernel_w, g.stride_w, g.out_w);
            for (int32_t oh = rows.first; oh <= rows.last; ++oh) {
                const int32_t kh = ih + g.pad_top - oh * g.stride_h;  // in [0, kernel_h)
                for (int32_t ow = cols.first; ow <= cols.last; ++ow) {
                    const int32_t kw = iw + g.pad_left - ow * g.stride_w;
                    const int32_t position = oh * g.out_w + ow;
                    if (marked[position] != t) {
                        marked[position] = t;
                        positions.push_back(position);
                    }
                    const float* weight = &layer.weights[g.weight_row(kh, kw, ic)];
                    float* s = &sum[size_t(position) * g.out_c];
                    for (int32_t oc = 0; oc < g.out_c; ++oc) s[oc] = add_rn(s[oc], weight[oc]);
                }
            }
        }
    }

    // V = V + S(t) * kernel_at(t), then S = +0 for the next step. At t == 0 every neuron
    // integrates, because the bias enters then (after the weights, with weight exactly 1).
    void integrate_synaptic_input(size_t li, int32_t t) {
        const Layer& layer = model_.layers[li];
        const int32_t out_c = layer.out.c;
        std::vector<float>& sum = synaptic_sum_[li];
        std::vector<float>& membrane = membrane_[li];
        const float kernel = layer.kernel_at(t);
        auto integrate_position = [&](int32_t position) {
            const size_t base = size_t(position) * out_c;
            for (int32_t oc = 0; oc < out_c; ++oc) {
                float s = sum[base + oc];
                if (t == 0) s = add_rn(s, layer.bias[size_t(oc)]);
                membrane[base + oc] = integrate(membrane[base + oc], s, kernel);
                sum[base + oc] = 0.0f;
            }
        };
        if (t == 0) {
            const int32_t positions = int32_t(layer.out.size() / out_c);
            for (int32_t p = 0; p < positions; ++p) integrate_position(p);
        } else {
            // Neurons without input at t != 0 are unchanged (V + 0*k == V): skip them.
            for (int32_t p : positions_with_input_[li]) integrate_position(p);
        }
    }

    // One spike per neuron, ever; the potential is reset to 0 and may integrate again later
    // (only possible when windows overlap).
    void fire(size_t li, int32_t t) {
        const Layer& layer = model_.layers[li];
        std::vector<int32_t>& spiking = spiking_now_[li];
        spiking.clear();
        if (!layer.fires || t < layer.fire_start || t >= layer.fire_end) return;
        const float threshold = layer.fire_threshold[size_t(t - layer.fire_start)];
        // The hottest loop of the engine: raw pointers and the rarely true test first.
        int32_t* first = first_spike_time_[li].data();
        float* membrane = membrane_[li].data();
        const int32_t count = int32_t(membrane_[li].size());
        for (int32_t i = 0; i < count; ++i) {
            if (reaches(membrane[i], threshold) && first[i] == kNever) {
                first[i] = t;
                membrane[i] = 0.0f;
                spiking.push_back(i);
            }
        }
    }

    int32_t active_steps_ = 0;
    // Per layer: units of its output spiking at the current step, ascending HWC.
    std::vector<std::vector<int32_t>> spiking_now_;
    // Per layer: the layer whose spiking_now_ list is this layer's output (flatten relays).
    std::vector<size_t> relayed_by_;
    // conv2d/dense: S of the current step per neuron, +0 between steps.
    std::vector<std::vector<float>> synaptic_sum_;
    // conv2d/dense: output positions (h, w) that received a spike at the current step.
    std::vector<std::vector<int32_t>> positions_with_input_;
    // conv2d/dense: per position, and `or` pools: per unit, the last step it was listed.
    std::vector<std::vector<int32_t>> last_marked_;
    // `earliest` pools: 1 once a unit has relayed its one spike.
    std::vector<std::vector<uint8_t>> pool_relayed_;
};

// ---- Analytic engine ------------------------------------------------------------------------

class AnalyticWorkspace final : public Workspace {
public:
    explicit AnalyticWorkspace(const Model& model) : Workspace(model) {
        const size_t count = model.layers.size();
        capacity_.assign(count, 1);
        pool_steps_.resize(count);
        lowest_threshold_.assign(count, 0.0f);
        for (size_t li = 0; li < count; ++li) {
            const std::vector<float>& table = model.layers[li].fire_threshold;
            if (!table.empty()) lowest_threshold_[li] = *std::min_element(table.begin(), table.end());
        }
        size_t largest_bins = 0, largest_bin_floats = 0, largest_gather = 0;
        for (size_t li = 0; li < count; ++li) {
            const Layer& layer = model.layers[li];
            if (layer.kind == TTFS_LAYER_FLATTEN) {
                capacity_[li] = capacity_[li - 1];
            } else if (layer.kind == TTFS_LAYER_MAXPOOL) {
                // `or` relays every distinct child step: at most children x their capacity,
                // and never more than the number of steps. `earliest` relays one.
                const int64_t children = int64_t(std::min(layer.kernel_h, layer.in.h)) *
                                         std::min(layer.kernel_w, layer.in.w);
                const int64_t below = capacity_[li - 1];
                if (layer.pool_mode == TTFS_POOL_OR) {
                    largest_gather = std::max(largest_gather, size_t(children * below));
                    capacity_[li] = int32_t(std::min<int64_t>(children * below, model.time_steps));
                } else {
                    largest_gather = std::max<size_t>(largest_gather, 1);
                    capacity_[li] = 1;
                }
                pool_steps_[li].assign(size_t(layer.out.size()) * size_t(capacity_[li]), kNever);
            } else if (layer.kind == TTFS_LAYER_CONV2D || layer.kind == TTFS_LAYER_DENSE) {
                const size_t bins = size_t(1 + layer.integ_end - layer.integ_start);
                largest_bins = std::max(largest_bins, bins);
                largest_bin_floats = std::max(largest_bin_floats, bins * size_t(layer.out.c));
            }
        }
        bins_.assign(largest_bin_floats, 0.0f);
        bin_open_.assign(largest_bins, 0);
        arrival_steps_.reserve(largest_bins);
        child_steps_.reserve(largest_gather);
    }

    void run_image(const float* image) override {
        for (size_t li = 0; li < model_.layers.size(); ++li) {
            switch (model_.layers[li].kind) {
                case TTFS_LAYER_INPUT: fire_inputs(li, image); break;
                case TTFS_LAYER_MAXPOOL: relay_pool(li); break;
                case TTFS_LAYER_FLATTEN: break;  // spike_steps() reads through to the layer below
                case TTFS_LAYER_CONV2D:
                case TTFS_LAYER_DENSE: integrate_and_fire(li); break;
            }
        }
    }

private:
    // A unit's spike steps: capacity_ entries, ascending, the unused tail -1. Neuron layers
    // have capacity 1 and the list is the first-spike time itself.
    const int32_t* spike_steps(size_t li) const {
        const Layer& layer = model_.layers[li];
        if (layer.kind == TTFS_LAYER_FLATTEN) return spike_steps(li - 1);
        if (layer.kind == TTFS_LAYER_MAXPOOL) return pool_steps_[li].data();
        return first_spike_time_[li].data();
    }

    void fire_inputs(size_t li, const float* image) {
        const Layer& layer = model_.layers[li];
        std::vector<int32_t>& first = first_spike_time_[li];
        for (size_t i = 0; i < first.size(); ++i) {
            first[i] = kNever;
            // Dark pixels are below the lowest threshold: skip their scan.
            if (!layer.fires || !reaches(image[i], lowest_threshold_[li])) continue;
            const int32_t j = first_crossing(image[i], layer.fire_threshold.data(), layer.fire_len());
            if (j >= 0) first[i] = layer.fire_start + j;
        }
    }

    // Per pool unit: the sorted distinct spike steps of its children (`or`), or the earliest
    // of them (`earliest`), -1 padded to the layer's capacity.
    void relay_pool(size_t li) {
        const Layer& layer = model_.layers[li];
        const int32_t* below = spike_steps(li - 1);
        const int32_t below_capacity = capacity_[li - 1];
        const int32_t capacity = capacity_[li];
        const bool is_or = layer.pool_mode == TTFS_POOL_OR;
        int32_t* out = pool_steps_[li].data();
        for (int32_t oh = 0; oh < layer.out.h; ++oh) {
            for (int32_t ow = 0; ow < layer.out.w; ++ow) {
                for (int32_t c = 0; c < layer.out.c; ++c) {
                    // Children: the window positions inside the input (SAME padding adds none).
                    child_steps_.clear();
                    int32_t earliest = kNever;
                    for (int32_t kh = 0; kh < layer.kernel_h; ++kh) {
                        const int32_t ih = oh * layer.stride_h - layer.pad_top + kh;
                        if (ih < 0 || ih >= layer.in.h) continue;
                        for (int32_t kw = 0; kw < layer.kernel_w; ++kw) {
                            const int32_t iw = ow * layer.stride_w - layer.pad_left + kw;
                            if (iw < 0 || iw >= layer.in.w) continue;
                            const int32_t* steps =
                                below + size_t((ih * layer.in.w + iw) * layer.in.c + c) * below_capacity;
                            if (!is_or) {
                                // A child's list is ascending: its first entry is its earliest.
                                if (steps[0] != kNever && (earliest == kNever || steps[0] < earliest))
                                    earliest = steps[0];
                                continue;
                            }
                            for (int32_t k = 0; k < below_capacity && steps[k] != kNever; ++k)
                                child_steps_.push_back(steps[k]);
                        }
                    }
                    if (is_or) {
                        std::sort(child_steps_.begin(), child_steps_.end());
                        child_steps_.erase(std::unique(child_steps_.begin(), child_steps_.end()),
                                           child_steps_.end());
                    } else if (earliest != kNever) {
                        child_steps_.push_back(earliest);
                    }
                    int32_t* unit = out + size_t((oh * layer.out.w + ow) * layer.out.c + c) * capacity;
                    for (int32_t k = 0; k < capacity; ++k)
                        unit[k] = size_t(k) < child_steps_.size() ? child_steps_[size_t(k)] : kNever;
                }
            }
        }
    }

    // Bins hold S(t) without the bias, one row of out_c floats per step that can be integrated:
    // row 0 for t == 0, row 1 + t - integ_start for t in the integration window.
    static size_t bin_row(const Layer& layer, int32_t t) {
        return t == 0 ? 0 : size_t(1 + t - layer.integ_start);
    }

    float* open_bin(const Layer& layer, int32_t t) {
        const size_t row = bin_row(layer, t);
        float* bin = &bins_[row * size_t(layer.out.c)];
        if (!bin_open_[row]) {
            bin_open_[row] = 1;
            arrival_steps_.push_back(t);
            std::fill(bin, bin + layer.out.c, 0.0f);  // every synaptic sum starts at +0
        }
        return bin;
    }

    // Per output position: bin the presynaptic spikes by arrival step, in canonical order
    // (kernel row, kernel column, input channel), then complete each neuron's potential in
    // ascending step order exactly as the stepped engine adds it up, and read off the first
    // threshold crossing.
    void integrate_and_fire(size_t li) {
        const Layer& layer = model_.layers[li];
        const Projection g = projection_of(layer);
        const int32_t* below = spike_steps(li - 1);
        const int32_t capacity = capacity_[li - 1];
        std::vector<int32_t>& first = first_spike_time_[li];
        std::vector<float>& membrane = membrane_[li];
        for (int32_t oh = 0; oh < g.out_h; ++oh) {
            for (int32_t ow = 0; ow < g.out_w; ++ow) {
                arrival_steps_.clear();
                open_bin(layer, 0);  // t == 0 always integrates: the bias enters then
                for (int32_t kh = 0; kh < g.kernel_h; ++kh) {
                    const int32_t ih = oh * g.stride_h - g.pad_top + kh;
                    if (ih < 0 || ih >= g.in_h) continue;
                    for (int32_t kw = 0; kw < g.kernel_w; ++kw) {
                        const int32_t iw = ow * g.stride_w - g.pad_left + kw;
                        if (iw < 0 || iw >= g.in_w) continue;
                        for (int32_t ic = 0; ic < g.in_c; ++ic) {
                            const int32_t* steps = below + size_t((ih * g.in_w + iw) * g.in_c + ic) * capacity;
                            for (int32_t k = 0; k < capacity && steps[k] != kNever; ++k) {
                                if (!layer.integrates_at(steps[k])) continue;  // arrives outside the window
                                float* bin = open_bin(layer, steps[k]);
                                const float* weight = &layer.weights[g.weight_row(kh, kw, ic)];
                                for (int32_t oc = 0; oc < g.out_c; ++oc) bin[oc] = add_rn(bin[oc], weight[oc]);
                            }
                        }
                    }
                }
                std::sort(arrival_steps_.begin(), arrival_steps_.end());  // [0] is t == 0
                // V = +0 + (S(0) + bias) * 1, then V + S(t) * k(t) for later t ascending: the
                // stepped engine's operations for each neuron, here all channels side by side.
                const size_t base = size_t(oh * g.out_w + ow) * g.out_c;
                float* v = &membrane[base];
                for (int32_t oc = 0; oc < g.out_c; ++oc)
                    v[oc] = integrate(0.0f, add_rn(bins_[size_t(oc)], layer.bias[size_t(oc)]), layer.kernel_at(0));
                for (size_t a = 1; a < arrival_steps_.size(); ++a) {
                    const int32_t t = arrival_steps_[a];
                    const float kernel = layer.kernel_at(t);
                    const float* bin = &bins_[bin_row(layer, t) * size_t(g.out_c)];
                    for (int32_t oc = 0; oc < g.out_c; ++oc) v[oc] = integrate(v[oc], bin[oc], kernel);
                }
                for (int32_t oc = 0; oc < g.out_c; ++oc) {
                    first[base + oc] = kNever;
                    // Below the lowest threshold no entry can be reached: skip the scan.
                    if (!layer.fires || !reaches(v[oc], lowest_threshold_[li])) continue;
                    const int32_t j = first_crossing(v[oc], layer.fire_threshold.data(), layer.fire_len());
                    if (j >= 0) {
                        first[base + oc] = layer.fire_start + j;
                        v[oc] = 0.0f;  // reset on firing
                    }
                }
                for (int32_t t : arrival_steps_) bin_open_[bin_row(layer, t)] = 0;
            }
        }
    }

    std::vector<int32_t> capacity_;                // per layer: spike steps per unit
    std::vector<float> lowest_threshold_;           // neuron layers: min of fire_threshold
    std::vector<std::vector<int32_t>> pool_steps_;  // maxpool: units x capacity, -1 padded
    std::vector<float> bins_;                       // scratch: bin rows x out_c
    std::vector<uint8_t> bin_open_;                 // scratch: per bin row, holds this position's sums
    std::vector<int32_t> arrival_steps_;            // scratch: steps with an open bin
    std::vector<int32_t> child_steps_;              // scratch: a pool unit's children's steps
};

// ---- Outputs --------------------------------------------------------------------------------

int32_t argmax_lowest(const float* values, int32_t count) {
    int32_t best = 0;
    for (int32_t i = 1; i < count; ++i)
        if (values[i] > values[best]) best = i;  // strict: ties keep the lowest index
    return best;
}

void write_image_outputs(const Model& model, const Workspace& ws, int32_t image,
                         const RunOutputs& out) {
    for (size_t li = 0; li < model.layers.size(); ++li) {
        if (!model.layers[li].has_neurons()) continue;
        const std::vector<int32_t>& first = ws.first_spike_time(li);
        if (li < out.spike_counts.size() && out.spike_counts[li] != nullptr)
            out.spike_counts[li][image] =
                int32_t(first.size() - size_t(std::count(first.begin(), first.end(), kNever)));
        if (li < out.spike_times.size() && out.spike_times[li] != nullptr)
            std::copy(first.begin(), first.end(), out.spike_times[li] + size_t(image) * first.size());
    }
    const int32_t classes = model.num_classes();
    const std::vector<float>& potential = ws.output_membrane();
    if (out.potentials != nullptr)
        std::copy(potential.begin(), potential.end(), out.potentials + size_t(image) * classes);
    if (out.predictions == nullptr) return;
    int32_t prediction = -1;
    if (model.readout == TTFS_READOUT_FIRST_SPIKE) {
        const std::vector<int32_t>& first = ws.first_spike_time(model.layers.size() - 1);
        for (int32_t k = 0; k < classes; ++k)
            if (first[k] != kNever && (prediction < 0 || first[k] < first[prediction])) prediction = k;
    }
    if (prediction < 0) prediction = argmax_lowest(potential.data(), classes);  // vmem, or no spike
    out.predictions[image] = prediction;
}

// ---- The backend ----------------------------------------------------------------------------

class CpuBackend final : public Backend {
public:
    CpuBackend(std::shared_ptr<const Model> model, ttfs_engine engine)
        : model_(std::move(model)), engine_(engine) {}

    // Workspaces are created here for the default thread count, and later only if the thread
    // count grows; a run never allocates per image or per neuron.
    void prepare(int32_t workers) {
        while (int32_t(workspaces_.size()) < workers) {
            if (engine_ == TTFS_ENGINE_ANALYTIC)
                workspaces_.push_back(std::make_unique<AnalyticWorkspace>(*model_));
            else
                workspaces_.push_back(std::make_unique<SteppedWorkspace>(*model_));
        }
    }

    int32_t workers_for(int32_t n) const {
        int32_t threads = requested_threads_;
        if (threads <= 0) threads = int32_t(std::max(1u, std::thread::hardware_concurrency()));
        return std::max(1, std::min(threads, n));
    }

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
            auto work = [&](Workspace& ws) noexcept {
                try {
                    for (int32_t i = next_image.fetch_add(1); i < n; i = next_image.fetch_add(1)) {
                        ws.run_image(images + size_t(i) * input_size);
                        write_image_outputs(*model_, ws, i, out);
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
    int32_t requested_threads_ = 0;
    std::vector<std::unique_ptr<Workspace>> workspaces_;  // one per worker thread
};

}  // namespace

ttfs_status make_cpu_backend(std::shared_ptr<const Model> model, ttfs_engine engine,
                             int32_t max_batch, std::unique_ptr<Backend>& out, std::string& error) {
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
    try {
        auto backend = std::make_unique<CpuBackend>(std::move(model), engine);
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
