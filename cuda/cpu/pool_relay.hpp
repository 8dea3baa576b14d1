// maxpool layers in the analytic engine (docs/ENGINES.md, "Spikes through maxpool and
// flatten"): from the spikes of a pool's children to the pool's own, for every pool mode, with
// the per-image scratch that takes (PoolRelay, one per workspace). The certified sums decide an
// `earliest` pool straight after a certified layer themselves (certified_layer.hpp).

#pragma once

#include <cstdint>
#include <vector>

#include "cpu/plan.hpp"
#include "cpu/spike_list.hpp"
#include "model.hpp"

namespace ttfs {
namespace cpu {

class PoolRelay {
public:
    // Scratch for every pool of the model (memory: see Memory).
    PoolRelay(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory);

    // Pool layer li from its children's spikes listed by step (`below`): its spikes by unit
    // and by step into `out`. child_time: the first-spike times of the neuron layer below
    // (read by a `gated` pool, whose children are always such neurons).
    void relay(size_t li, const SpikeList& below, const int32_t* child_time, SpikeList& out);

    // An `earliest` pool whose children spike at most once (child: their steps, kNever for
    // none): each unit's step, the earliest of its children's, into time.
    void relay_earliest(size_t li, const int32_t* child, int32_t* time) const;

private:
    int32_t gated_pairs(size_t li, const SpikeList& below, const int32_t* child_time,
                        int32_t* unit_begin, int32_t* per_step);
    static bool first_child_spikes(const WindowGeometry& g, const int32_t* child_time, int32_t oh,
                                   int32_t ow, int32_t c, int32_t t, bool fired_by_t);

    const Model& model_;
    const std::vector<LayerPlan>& plans_;
    // Per pool and unit the step it last relayed (kNever between images); the (unit, step)
    // pairs of relay() as found, and their units sorted.
    std::vector<std::vector<int32_t>> last_relayed_;
    std::vector<int32_t> pair_unit_, pair_step_, sorted_unit_;
    // gated_pairs(): per unit the step of its first child spike (kNever between images), and
    // the units that have one.
    std::vector<int32_t> gate_first_, gate_touched_;
};

}  // namespace cpu
}  // namespace ttfs
