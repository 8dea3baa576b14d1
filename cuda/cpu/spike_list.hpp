// How the analytic engine passes a layer's spikes to the next (SpikeList): for one image, the
// units spiking at each step of the layer's spike window, and for a pool also each unit's
// steps; and the counting sorts that build such lists without comparisons.

#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace ttfs {
namespace cpu {

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

// A layer's spikes listed by step from its units' steps (kNever: none): the units that
// spiked (inside the window, which is all of them) gathered first without branches, into
// `spiking` (scratch, one int per unit), then a counting sort of those by step (units
// ascending within a step).
inline void list_times_by_step(SpikeList& list, const std::vector<int32_t>& times, int32_t* spiking) {
    const int32_t* time = times.data();
    const int32_t units = int32_t(times.size());
    const uint32_t steps = uint32_t(list.steps());
    const int32_t first_step = list.first_step;
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

}  // namespace cpu
}  // namespace ttfs
