// maxpool layers in the analytic engine (pool_relay.hpp).

#include "cpu/pool_relay.hpp"

#include <algorithm>
#include <cstddef>

#include "cpu/exact_kernels.hpp"

namespace ttfs {
namespace cpu {

namespace {

// fed(k, t, oh, ow, c, u) for every child spike of `below` (step t = first_step + k, in step
// order) and every unit u = (oh, ow, c) of pool layer `plan` whose window holds that child.
template <class Fed>
TTFS_INLINE void for_each_fed_unit(const LayerPlan& plan, const SpikeList& below, Fed&& fed) {
    const WindowGeometry& g = plan.geometry;
    const UnitOrigin* origin = plan.fanout.origin.data();
    const OutputRange* rows_fed = plan.fanout.rows.data();
    const OutputRange* cols_fed = plan.fanout.cols.data();
    for (int32_t k = 0; k < below.steps(); ++k) {
        const int32_t t = below.first_step + k;
        const int32_t* children = below.at(k);
        for (int32_t s = 0, count = below.count(k); s < count; ++s) {
            const UnitOrigin o = origin[children[s]];
            const OutputRange rows = rows_fed[o.h], cols = cols_fed[o.w];
            for (int32_t oh = rows.first; oh <= rows.last; ++oh)
                for (int32_t ow = cols.first; ow <= cols.last; ++ow)
                    fed(k, t, oh, ow, o.c, (oh * g.out_w + ow) * g.out_c + o.c);
        }
    }
}

}  // namespace

PoolRelay::PoolRelay(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory)
    : model_(model), plans_(plans) {
    const size_t count = model.layers.size();
    last_relayed_.resize(count);
    size_t most_units = 0, most_pairs = 0;
    bool gated = false;
    for (size_t li = 0; li < count; ++li) {
        const Layer& layer = model.layers[li];
        most_units = std::max(most_units, size_t(layer.out.size()));
        gated = gated || (layer.kind == TTFS_LAYER_MAXPOOL && layer.pool_mode == TTFS_POOL_GATED);
        if (layer.kind != TTFS_LAYER_MAXPOOL ||
            (layer.pool_mode == TTFS_POOL_EARLIEST && plans[li - 1].single_spike))
            continue;  // relay_earliest() needs no scratch
        memory.take(last_relayed_[li], size_t(layer.out.size()), kNever);
        most_pairs = std::max(most_pairs, plans[li].most_spikes);
    }
    if (gated) {
        memory.take(gate_first_, most_units, kNever);
        memory.take(gate_touched_, most_units + 1, 0);  // + 1: written before it is known to be new
    }
    // + 1: relay() writes every candidate pair before it knows whether to keep it.
    memory.take(pair_unit_, most_pairs + 1, 0);
    memory.take(pair_step_, most_pairs + 1, 0);
    memory.take(sorted_unit_, most_pairs, 0);
}

// Each unit spikes at the earliest step of its children (the relay of docs/ENGINES.md, as a
// minimum per unit).
void PoolRelay::relay_earliest(size_t li, const int32_t* child, int32_t* time) const {
    const WindowGeometry& g = plans_[li].geometry;
    for (int32_t oh = 0; oh < g.out_h; ++oh) {
        for (int32_t ow = 0; ow < g.out_w; ++ow) {
            uint32_t* earliest = reinterpret_cast<uint32_t*>(time + (oh * g.out_w + ow) * g.out_c);
            earliest_of_window(g, child, oh, ow, earliest);
        }
    }
}

// Each child spike at step t is relayed by the units whose window holds the child, once per
// unit and step (`or`), only by units that have not relayed yet (`earliest`), or once per unit
// and step where the gate of a `gated` pool lets it through (gated_pairs()). The (unit, step)
// pairs come out in step order; two stable counting sorts, by unit and then by step, give both
// lists (by unit: each unit's steps ascending; by step: each step's units ascending) without a
// comparison sort, and without data-dependent branches, as whether a pair is new is close to a
// coin toss.
void PoolRelay::relay(size_t li, const SpikeList& below, const int32_t* child_time, SpikeList& list) {
    const Layer& layer = model_.layers[li];
    const LayerPlan& plan = plans_[li];
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
    if (gated) {
        pairs = gated_pairs(li, below, child_time, unit_begin, per_step);
    } else {
        for_each_fed_unit(plan, below, [&](int32_t k, int32_t t, int32_t, int32_t, int32_t, int32_t u) {
            // `or`: new unless already relayed at t; `earliest`: unless ever.
            const bool fresh = is_or ? last[u] != t : last[u] == kNever;
            pair_unit[pairs] = u;
            pair_step[pairs] = t;
            pairs += fresh ? 1 : 0;
            last[u] = fresh ? t : last[u];
            ++unit_begin[fresh ? u + 1 : 0];  // unit_begin[0] counts the rest
            ++(fresh ? per_step[k] : dropped);
        });
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

// relay()'s (unit, step) pairs for a `gated` pool (see Gate), in step order, counted per unit
// and per step as there; returns the number of pairs. The children are the neurons of the
// layer below (the only kind a gated pool may read), so each spikes once, at its first-spike
// time. Per unit, the step of its first child spike tells whether a child fired before the
// current step (E not empty); only an exact tie of the threshold with 0 or 1 needs a look at
// the window (first_child_spikes()).
int32_t PoolRelay::gated_pairs(size_t li, const SpikeList& below, const int32_t* child_time,
                               int32_t* unit_begin, int32_t* per_step) {
    const LayerPlan& plan = plans_[li];
    const WindowGeometry& g = plan.geometry;
    const uint8_t* gate = plan.gate.data();
    int32_t* last = last_relayed_[li].data();  // per unit: its last step, or kNever
    int32_t* first_child = gate_first_.data();  // per unit: its first child's step, or kNever
    int32_t* touched = gate_touched_.data();    // the units whose first_child was set
    int32_t* pair_unit = pair_unit_.data();
    int32_t* pair_step = pair_step_.data();
    int32_t pairs = 0, touched_count = 0;
    for_each_fed_unit(plan, below, [&](int32_t k, int32_t t, int32_t oh, int32_t ow, int32_t c, int32_t u) {
        const Gate code = Gate(gate[k]);
        const int32_t before = first_child[u];
        touched[touched_count] = u;
        touched_count += before == kNever ? 1 : 0;
        first_child[u] = before == kNever ? t : before;
        const bool earlier = before != kNever && before != t;  // E not empty
        bool open = true;
        if (code == kGateFirst)
            open = !earlier;
        else if (code == kGateTieOne)
            open = !earlier || first_child_spikes(g, child_time, oh, ow, c, t, true);
        else if (code == kGateTieZero)
            open = !earlier && first_child_spikes(g, child_time, oh, ow, c, t, false);
        const bool fresh = open && last[u] != t;
        pair_unit[pairs] = u;
        pair_step[pairs] = t;
        pairs += fresh ? 1 : 0;
        last[u] = fresh ? t : last[u];
        ++unit_begin[fresh ? u + 1 : 0];  // unit_begin[0] counts the rest
        per_step[k] += fresh ? 1 : 0;
    });
    for (int32_t i = 0; i < touched_count; ++i) first_child[touched[i]] = kNever;  // next image
    return pairs;
}

// Whether the first child in window order of pool unit (oh, ow, c) — among the children that
// have fired by step t when `fired_by_t`, else among all — fires at t.
bool PoolRelay::first_child_spikes(const WindowGeometry& g, const int32_t* child_time, int32_t oh,
                                   int32_t ow, int32_t c, int32_t t, bool fired_by_t) {
    const WindowInside win = window_inside(g, oh, ow);
    for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
        for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
            const int32_t time = child_time[((win.ih0 + kh) * g.in_w + win.iw0 + kw) * g.in_c + c];
            if (!fired_by_t || (time != kNever && time <= t)) return time == t;
        }
    }
    return false;
}

}  // namespace cpu
}  // namespace ttfs
