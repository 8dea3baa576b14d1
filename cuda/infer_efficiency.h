// infer_efficiency.h — the efficiency figures `ttfs-infer --json` reports, from the C ABI alone.
//
// Counted the way export/efficiency.py counts them (docs/RESULTS.md uses its numbers):
// - synaptic operations per image, per receiving conv2d / dense layer: every spike that
//   reaches the layer times its fan-out there (how many of its neurons the spike's unit
//   feeds). Spikes reach it through the maxpool / flatten layers in between as the pool mode
//   relays them: an `earliest` pooled unit passes its first spike only, an `or` pooled unit
//   one spike per distinct step at which a child fires, a `gated` one (directly above a
//   neuron layer) the spike of the child with the largest spike counter at each step (0
//   before it fired, its threshold at its fire step, 1 after; the first in window order among
//   equals). Needs the session's recorded first-spike times (TTFS_SESSION_RECORD_SPIKE_TIMES).
// - the ANN's multiply-adds for the same layers: the sum of the fan-outs of their input units;
// - spikes on a blank image: one all-zero image through a separate one-image session.
// Fan-outs come from ttfs_model_layer_info (kernel, stride, padding, shapes). Errors throw
// std::runtime_error with the library's status name and message.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "ttfs.h"

namespace ttfs_efficiency {

constexpr int32_t kPoolGated = TTFS_POOL_GATED;

inline void check(ttfs_status status, const std::string& what) {
    if (status != TTFS_OK)
        throw std::runtime_error(what + ": " + ttfs_status_name(status) + ": " + ttfs_last_error());
}

// One maxpool between a neuron layer and the next weight layer.
struct Pool {
    int32_t in_h = 0, in_w = 0, channels = 0, out_h = 0, out_w = 0, kh = 0, kw = 0, sh = 0, sw = 0;
    int32_t top = 0, left = 0, mode = 0;
    int32_t fire_start = 0;         // gated: the fire window of the neuron layer below
    std::vector<float> thresholds;  // gated: its threshold at each step of that window
};

// The threshold table libttfs builds (docs/ENGINES.md, "Tables"), one rounding per operation.
inline std::vector<float> fire_thresholds(const ttfs_layer_info& layer) {
    std::vector<float> table;
    for (int32_t j = 0; j < layer.fire_window[1] - layer.fire_window[0]; ++j) {
        float elapsed = float(j) - layer.td_fire;
        float exponent = -elapsed / layer.tau_fire;
        float decay = std::exp(exponent);
        table.push_back(layer.vth0 * decay);
    }
    return table;
}

// One receiving conv2d / dense layer and where its spikes come from.
struct Stage {
    int32_t receiver = 0;
    std::string receiver_name;
    int32_t source = 0;                // the neuron layer whose spikes it receives
    int64_t source_units = 0;
    std::vector<Pool> pools;           // in order; flatten keeps the HWC unit order, so it is skipped
    std::vector<int64_t> fan_out;      // per relayed unit, HWC order
    int64_t multiply_adds = 0;         // the ANN's, for this layer
    bool countable = true;             // false: a pool mode this count does not know
    uint64_t synaptic_operations = 0;  // summed over the images seen
};

inline int32_t padding_before(int32_t size, int32_t kernel, int32_t stride, int32_t out, int32_t padding) {
    return padding == TTFS_PADDING_SAME ? std::max((out - 1) * stride + kernel - size, 0) / 2 : 0;
}

// For each input position along one axis: how many output positions' windows hold it.
inline std::vector<int64_t> covering(int32_t size, int32_t kernel, int32_t stride, int32_t out, int32_t before) {
    std::vector<int64_t> cover(size_t(size), 0);
    for (int32_t o = 0; o < out; ++o) {
        int32_t lo = o * stride - before;
        for (int32_t i = std::max(lo, 0); i < std::min(lo + kernel, size); ++i) ++cover[size_t(i)];
    }
    return cover;
}

class Counter {
public:
    explicit Counter(const ttfs_model* model) {
        int32_t count = 0;
        check(ttfs_model_layer_count(model, &count), "cannot count the layers");
        std::vector<ttfs_layer_info> layers(static_cast<size_t>(count));
        for (int32_t i = 0; i < count; ++i) {
            ttfs_layer_info& info = layers[size_t(i)];
            info = ttfs_layer_info();
            info.struct_size = sizeof info;
            check(ttfs_model_layer_info(model, i, &info), "cannot describe layer " + std::to_string(i));
        }
        int32_t source = -1;
        std::vector<Pool> pools;
        bool countable = true;
        for (int32_t i = 0; i < count; ++i) {
            const ttfs_layer_info& info = layers[size_t(i)];
            const int32_t* in = &(i > 0 ? layers[size_t(i - 1)] : info).shape[0];
            if ((info.kind == TTFS_LAYER_CONV2D || info.kind == TTFS_LAYER_DENSE) && source >= 0) {
                Stage stage;
                stage.receiver = i;
                stage.receiver_name = info.name ? info.name : "layer" + std::to_string(i);
                stage.source = source;
                const int32_t* s = &layers[size_t(source)].shape[0];
                stage.source_units = int64_t(s[0]) * s[1] * s[2];
                stage.pools = pools;
                stage.countable = countable;
                stage.fan_out = fan_out(info, in);
                for (int64_t f : stage.fan_out) stage.multiply_adds += f;
                stages_.push_back(stage);
            }
            if (info.kind == TTFS_LAYER_INPUT || info.kind == TTFS_LAYER_CONV2D || info.kind == TTFS_LAYER_DENSE) {
                source = i;
                pools.clear();
                countable = true;
                neuron_layers_.push_back(i);
                neuron_sizes_.push_back(int64_t(info.shape[0]) * info.shape[1] * info.shape[2]);
            } else if (info.kind == TTFS_LAYER_MAXPOOL) {
                Pool p;
                p.in_h = in[0], p.in_w = in[1], p.channels = in[2];
                p.out_h = info.shape[0], p.out_w = info.shape[1];
                p.kh = info.kernel[0], p.kw = info.kernel[1], p.sh = info.stride[0], p.sw = info.stride[1];
                p.mode = info.pool_mode;
                p.top = padding_before(p.in_h, p.kh, p.sh, p.out_h, info.padding);
                p.left = padding_before(p.in_w, p.kw, p.sw, p.out_w, info.padding);
                if (p.mode == kPoolGated && pools.empty() && source >= 0) {
                    p.fire_start = layers[size_t(source)].fire_window[0];
                    p.thresholds = fire_thresholds(layers[size_t(source)]);
                } else if (p.mode != TTFS_POOL_OR && p.mode != TTFS_POOL_EARLIEST) {
                    countable = false;  // a mode this count does not know, or a gated pool of a pool
                }
                pools.push_back(p);
            }
        }
    }

    const std::vector<Stage>& stages() const { return stages_; }
    const std::vector<int32_t>& neuron_layers() const { return neuron_layers_; }
    const std::vector<int64_t>& neuron_sizes() const { return neuron_sizes_; }

    // Adds the last batch's synaptic operations (n images) of every countable stage.
    void add_batch(const ttfs_session* session, int32_t n) {
        for (Stage& stage : stages_) {
            if (!stage.countable) continue;
            times_.resize(size_t(n) * size_t(stage.source_units));
            check(ttfs_session_spike_times(session, stage.source, times_.data(), times_.size()),
                  "cannot read the spike times of layer " + std::to_string(stage.source));
            for (int32_t image = 0; image < n; ++image)
                stage.synaptic_operations += count_image(stage, times_.data() + size_t(image) * size_t(stage.source_units));
        }
    }

    // Spikes per neuron layer on one all-zero image, with the given backend and engine.
    static std::vector<int64_t> blank_image_spikes(const ttfs_model* model, int32_t backend, int32_t engine,
                                                   const std::vector<int32_t>& neuron_layers) {
        int32_t shape[3];
        check(ttfs_model_input_shape(model, shape), "cannot get the input shape");
        ttfs_session* session = nullptr;
        check(ttfs_session_create(model, backend, engine, 1, 0u, &session),
              "cannot create a session for the blank image");
        std::vector<int64_t> spikes;
        try {
            std::vector<float> zeros(size_t(shape[0]) * size_t(shape[1]) * size_t(shape[2]), 0.0f);
            check(ttfs_session_run_f32(session, zeros.data(), zeros.size(), 1, nullptr, 0, nullptr, 0),
                  "cannot run the blank image");
            for (int32_t layer : neuron_layers) {
                int32_t fired = 0;
                check(ttfs_session_spike_counts(session, layer, &fired, 1),
                      "cannot read the blank image's spike counts");
                spikes.push_back(fired);
            }
        } catch (...) {
            ttfs_session_free(session);
            throw;
        }
        ttfs_session_free(session);
        return spikes;
    }

private:
    static std::vector<int64_t> fan_out(const ttfs_layer_info& info, const int32_t* in) {
        size_t units = size_t(in[0]) * size_t(in[1]) * size_t(in[2]);
        if (info.kind == TTFS_LAYER_DENSE)
            return std::vector<int64_t>(units, int64_t(info.shape[0]) * info.shape[1] * info.shape[2]);
        std::vector<int64_t> rows = covering(in[0], info.kernel[0], info.stride[0], info.shape[0],
                                             padding_before(in[0], info.kernel[0], info.stride[0], info.shape[0], info.padding));
        std::vector<int64_t> cols = covering(in[1], info.kernel[1], info.stride[1], info.shape[1],
                                             padding_before(in[1], info.kernel[1], info.stride[1], info.shape[1], info.padding));
        std::vector<int64_t> fan(units);
        for (int32_t y = 0; y < in[0]; ++y)
            for (int32_t x = 0; x < in[1]; ++x)
                for (int32_t c = 0; c < in[2]; ++c)
                    fan[(size_t(y) * size_t(in[1]) + size_t(x)) * size_t(in[2]) + size_t(c)] =
                        rows[size_t(y)] * cols[size_t(x)] * info.shape[2];
        return fan;
    }

    // One image: each unit's delivered spike steps (a list of up to `capacity` distinct steps),
    // through the pools, then sum(count * fan-out).
    uint64_t count_image(const Stage& stage, const int32_t* times) {
        size_t capacity = 1;
        list_.assign(times, times + stage.source_units);
        length_.resize(size_t(stage.source_units));
        for (size_t u = 0; u < length_.size(); ++u) length_[u] = times[u] >= 0 ? 1 : 0;
        for (const Pool& p : stage.pools) {
            size_t next_capacity = p.mode == TTFS_POOL_OR ? capacity * size_t(p.kh) * size_t(p.kw) : 1;
            size_t units = size_t(p.out_h) * size_t(p.out_w) * size_t(p.channels);
            next_list_.assign(units * next_capacity, -1);
            next_length_.assign(units, 0);
            for (int32_t oy = 0; oy < p.out_h; ++oy)
                for (int32_t ox = 0; ox < p.out_w; ++ox)
                    for (int32_t c = 0; c < p.channels; ++c) {
                        size_t out = (size_t(oy) * size_t(p.out_w) + size_t(ox)) * size_t(p.channels) + size_t(c);
                        int32_t* steps = next_list_.data() + out * next_capacity;
                        int32_t found = 0;
                        if (p.mode == kPoolGated) {
                            next_length_[out] = gated_window(p, oy, ox, c, steps);
                            continue;
                        }
                        for (int32_t r = 0; r < p.kh; ++r)
                            for (int32_t q = 0; q < p.kw; ++q) {
                                int32_t y = oy * p.sh - p.top + r, x = ox * p.sw - p.left + q;
                                if (y < 0 || y >= p.in_h || x < 0 || x >= p.in_w) continue;
                                size_t in = (size_t(y) * size_t(p.in_w) + size_t(x)) * size_t(p.channels) + size_t(c);
                                for (int32_t k = 0; k < length_[in]; ++k) {
                                    int32_t t = list_[in * capacity + size_t(k)];
                                    if (p.mode == TTFS_POOL_EARLIEST) {
                                        if (found == 0 || t < steps[0]) steps[0] = t;
                                        found = 1;
                                    } else if (std::find(steps, steps + found, t) == steps + found) {
                                        steps[found++] = t;
                                    }
                                }
                            }
                        next_length_[out] = found;
                    }
            list_.swap(next_list_);
            length_.swap(next_length_);
            capacity = next_capacity;
        }
        uint64_t operations = 0;
        for (size_t u = 0; u < length_.size(); ++u) operations += uint64_t(length_[u]) * uint64_t(stage.fan_out[u]);
        return operations;
    }

    // A gated window (children are neurons: one time each): the steps at which the child with
    // the largest spike counter fires, the first in window order winning ties.
    int32_t gated_window(const Pool& p, int32_t oy, int32_t ox, int32_t c, int32_t* steps) const {
        int32_t children[64];
        std::vector<int32_t> many;
        int32_t* times = children;
        if (p.kh * p.kw > 64) {
            many.resize(size_t(p.kh) * size_t(p.kw));
            times = many.data();
        }
        int32_t m = 0;
        for (int32_t r = 0; r < p.kh; ++r)
            for (int32_t q = 0; q < p.kw; ++q) {
                int32_t y = oy * p.sh - p.top + r, x = ox * p.sw - p.left + q;
                if (y < 0 || y >= p.in_h || x < 0 || x >= p.in_w) continue;
                times[m++] = list_[(size_t(y) * size_t(p.in_w) + size_t(x)) * size_t(p.channels) + size_t(c)];
            }
        int32_t found = 0;
        for (int32_t i = 0; i < m; ++i) {
            int32_t t = times[i];
            bool seen = false;  // each distinct step once
            for (int32_t k = 0; k < i; ++k) seen = seen || times[k] == t;
            if (t < 0 || seen) continue;
            int32_t j = t - p.fire_start;
            float vth = j >= 0 && j < int32_t(p.thresholds.size()) ? p.thresholds[size_t(j)] : 0.0f;
            int32_t winner = -1;
            float best = 0.0f;
            for (int32_t k = 0; k < m; ++k) {
                float counter = times[k] < 0 || times[k] > t ? 0.0f : times[k] == t ? vth : 1.0f;
                if (winner < 0 || counter > best) {
                    winner = k;
                    best = counter;
                }
            }
            if (times[winner] == t) steps[found++] = t;
        }
        return found;
    }

    std::vector<Stage> stages_;
    std::vector<int32_t> neuron_layers_;
    std::vector<int64_t> neuron_sizes_;
    std::vector<int32_t> times_, list_, next_list_, length_, next_length_;
};

}  // namespace ttfs_efficiency
