// The analytic engine on the CPU (docs/ENGINES.md): each layer once, in file order. The input's
// first crossings; pools from their children's spike steps (pool_relay.hpp); the output layer
// (and any layer under TTFS_CERTIFY=off) with the exact kernels at the steps where spikes
// arrive; hidden conv2d/dense layers by certified sums (certified_layer.hpp). What a layer
// leaves for the next: its first-spike times (neuron layers), an `earliest` pool's unit steps,
// and its spikes listed by step (spike_list.hpp) where the next layer reads them that way. The
// output trace: the output layer's potentials between its arrival steps, then its resets.

#include "cpu/analytic_engine.hpp"

#include <algorithm>
#include <cstddef>
#include <limits>

#include "cpu/certified_layer.hpp"
#include "cpu/pool_relay.hpp"
#include "cpu/spike_list.hpp"

namespace ttfs {
namespace cpu {

namespace {

class AnalyticWorkspace final : public Workspace {
public:
    AnalyticWorkspace(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory);

    void run_image(const float* image) override;

    void set_certify(Certify certify) { certified_.set_certify(certify); }
    const CertifiedLayer& certified() const { return certified_; }

private:
    void fire(size_t li, const float* potential, float* reset);
    void integrate(size_t li);
    void traced_output(size_t li);
    const int32_t* single_times(size_t li) const;
    LayerInput input_of(size_t li) const { return {spikes_[plans_[li - 1].source], single_times(li)}; }
    void list_by_step(SpikeList& list, const std::vector<int32_t>& times) {
        list_times_by_step(list, times, fired_.data());
    }

    std::vector<SpikeList> spikes_;  // per layer but flatten
    // `earliest` pools whose children spike once: per unit its step, or kNever.
    std::vector<std::vector<int32_t>> pool_time_;
    std::vector<int32_t> fired_;     // scratch: a layer's candidate, then firing, neurons
    PoolRelay relay_;
    CertifiedLayer certified_;
};

AnalyticWorkspace::AnalyticWorkspace(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory)
    : Workspace(model, plans, memory), relay_(model, plans, memory), certified_(model, plans, memory) {
    const size_t count = model.layers.size();
    spikes_.resize(count);
    pool_time_.resize(count);
    size_t most_units = 0;
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
        }
    }
    memory.take(fired_, most_units, 0);
}

void AnalyticWorkspace::run_image(const float* image) {
    std::fill(known_count_.begin(), known_count_.end(), -1);
    for (size_t li = 0; li < model_.layers.size(); ++li) {
        const LayerPlan& plan = plans_[li];
        switch (model_.layers[li].kind) {
            case TTFS_LAYER_INPUT: fire(li, image, nullptr); break;
            case TTFS_LAYER_MAXPOOL:
                if (pool_time_[li].empty()) {
                    relay_.relay(li, spikes_[plans_[li - 1].source], first_spike_time_[li - 1].data(),
                                 spikes_[li]);
                } else {
                    relay_.relay_earliest(li, single_times(li), pool_time_[li].data());
                    if (plan.list_by_step) list_by_step(spikes_[li], pool_time_[li]);
                }
                break;
            case TTFS_LAYER_FLATTEN: break;
            case TTFS_LAYER_CONV2D:
            case TTFS_LAYER_DENSE:
                if (plan.certified && plan.fuses_pool && !recording_) {
                    const size_t pool = li + 1;
                    known_count_[li] = certified_.fire_into_pool(li, input_of(li), pool_time_[pool].data());
                    if (plans_[pool].list_by_step) list_by_step(spikes_[pool], pool_time_[pool]);
                    ++li;  // the pool is done
                } else if (plan.certified) {
                    certified_.fire(li, input_of(li), first_spike_time_[li].data());
                    if (plan.list_by_step) list_by_step(spikes_[li], first_spike_time_[li]);
                } else if (tracing() && li + 1 == model_.layers.size()) {
                    traced_output(li);
                } else {
                    integrate(li);
                    fire(li, membrane_[li].data(), membrane_[li].data());
                }
                break;
        }
    }
}

// The complete potential of a neuron layer: first_spike_time = fire_start + first_crossing
// (or -1); a neuron that fires is reset to 0 (`reset`: conv2d/dense; null for the input,
// whose potential is the pixel). Then its spikes are listed by step.
void AnalyticWorkspace::fire(size_t li, const float* potential, float* reset) {
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

// The output layer (li) when the output trace is recorded: integrate()'s operations by the
// step-by-step path (never dense_by_step(), which keeps the potentials in registers), with a
// trace row written whenever a chosen step is passed, then the fire check. A neuron that
// fired at step f was reset to 0 then and receives nothing afterwards (the windows do not
// overlap), so its entries at steps f and later are 0, as in the stepped engine. Out of line:
// the untraced path stays as it is.
__attribute__((noinline)) void AnalyticWorkspace::traced_output(size_t li) {
    const Layer& layer = model_.layers[li];
    const SpikeList& below = spikes_[plans_[li - 1].source];
    const int32_t zero = -below.first_step;
    const bool spikes_at_zero = zero >= 0 && zero < below.steps();
    integrate_step(li, 0, spikes_at_zero ? below.at(zero) : nullptr,
                   spikes_at_zero ? below.count(zero) : 0);
    for (int32_t k = 0; k < below.steps(); ++k) {
        const int32_t t = below.first_step + k;
        if (t == 0 || below.count(k) == 0 || !layer.integrates_at(t)) continue;
        trace_before(t);  // every step before t is complete
        integrate_step(li, t, below.at(k), below.count(k));
    }
    trace_before(std::numeric_limits<int32_t>::max());  // the potentials are complete
    fire(li, membrane_[li].data(), membrane_[li].data());
    const std::vector<int32_t>& steps = *trace_steps_;
    const std::vector<int32_t>& first = first_spike_time_[li];
    const size_t classes = first.size();
    for (size_t c = 0; c < classes; ++c) {
        if (first[c] == kNever) continue;
        for (size_t r = 0; r < steps.size(); ++r)
            if (steps[r] >= first[c]) trace_rows_[r * classes + c] = 0.0f;
    }
}

// The spike step of every unit of the layer whose spikes layer `li` receives, when each of them
// spikes at most once (a neuron layer, or an `earliest` pool of such); else null.
const int32_t* AnalyticWorkspace::single_times(size_t li) const {
    const size_t source = plans_[li - 1].source;
    if (model_.layers[source].has_neurons()) return first_spike_time_[source].data();
    return pool_time_[source].empty() ? nullptr : pool_time_[source].data();
}

// V = +0 + (S(0) + bias) * 1, then V + S(t) * k(t) for each later step with arrivals,
// ascending: the stepped engine's operations for every neuron, only at the steps where
// something arrives.
void AnalyticWorkspace::integrate(size_t li) {
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

}  // namespace

std::unique_ptr<Workspace> make_analytic_workspace(const Model& model, const std::vector<LayerPlan>& plans,
                                                   Memory& memory, Certify certify) {
    auto workspace = std::make_unique<AnalyticWorkspace>(model, plans, memory);
    workspace->set_certify(certify);
    return workspace;
}

const CertifiedCounts& certified_counts(const Workspace& analytic) {
    return static_cast<const AnalyticWorkspace&>(analytic).certified().counts();
}

}  // namespace cpu
}  // namespace ttfs
