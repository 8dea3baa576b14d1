// The stepped engine on the CPU (docs/ENGINES.md, "Stepped engine"): at every step, the input
// layer's fire check, then per layer in file order the pools' relays (`or`, `earliest`,
// `gated`) and the conv2d/dense layers' scatter, integration and fire check; the output trace
// after each chosen step. The reference inside the library: the operations of docs/ENGINES.md
// one by one, for any window layout.

#include "cpu/stepped_engine.hpp"

#include <algorithm>
#include <cstddef>
#include <limits>

namespace ttfs {
namespace cpu {

namespace {

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
            if (tracing()) trace_before(t + 1);  // step t is complete
        }
        // Later steps change nothing (see active_steps_).
        if (tracing()) trace_before(std::numeric_limits<int32_t>::max());
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
        const WindowGeometry& g = plans_[li].geometry;
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

}  // namespace

std::unique_ptr<Workspace> make_stepped_workspace(const Model& model, const std::vector<LayerPlan>& plans,
                                                  Memory& memory) {
    return std::make_unique<SteppedWorkspace>(model, plans, memory);
}

}  // namespace cpu
}  // namespace ttfs
