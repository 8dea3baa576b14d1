// The exact kernels both engines share (exact_kernels.cpp): each operation as docs/ENGINES.md
// fixes it, so every engine that calls them forms the same bits.

#pragma once

#include <cstdint>

#include "cpu/plan.hpp"

namespace ttfs {
namespace cpu {

// Scatters one step's presynaptic spikes (units ascending in HWC order) into the synaptic sums
// of the neurons they feed (sums[position * padded_c + oc] = S(t), in canonical order, from +0),
// flags and lists the positions that received something in `touched`; returns how many.
int32_t scatter_spikes(const WindowGeometry& g, const Fanout& fan, int32_t padded_c,
                       const float* weights, const int32_t* units, int32_t count, float* sums,
                       uint8_t* flagged, int32_t* touched);

// Step 0: V = +0 + (S(0) + bias) * kernel for every neuron; leaves the sums +0, the flags clear.
void integrate_step_zero(int32_t positions, int32_t out_c, int32_t padded_c, const float* bias,
                         float kernel, float* sums, float* membrane, uint8_t* flagged);

// A later step: V = V + S(t) * kernel for the neurons of the touched positions only; leaves
// the sums +0, the flags clear.
void integrate_touched(const int32_t* touched, int32_t count, int32_t out_c, int32_t padded_c,
                       float kernel, float* sums, float* membrane, uint8_t* flagged);

// An `earliest` pool unit's step for every channel of output position (oh, ow): the minimum of
// its children's steps (kNever, as unsigned the largest, where none spiked).
void earliest_of_window(const WindowGeometry& g, const int32_t* child, int32_t oh, int32_t ow,
                        uint32_t* earliest);

// The potentials of a dense layer of at most kLanes neurons from its input's spikes listed by
// step (begin/unit as SpikeList), with the operations of docs/ENGINES.md.
void dense_by_step(const Layer& layer, const int32_t* begin, const int32_t* unit, int32_t steps,
                   int32_t first_step, const float* weights, float* potential);

}  // namespace cpu
}  // namespace ttfs
