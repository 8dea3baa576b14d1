// The stepped engine on the GPU (docs/ENGINES.md, "Stepped engine"): for each time step the
// host enqueues, layer by layer, a kernel that relays or integrates the spikes of the current
// step. Spikes of one step travel as a 0/1 byte map per layer ([image][unit]). Every launcher
// enqueues on `stream` and returns the launch's cudaError_t.
#pragma once

#include <cuda_runtime.h>

#include "device_layer.cuh"

namespace ttfs {
namespace gpu {

// Input layer at step t (inside its fire window): a pixel that has not fired and reaches
// fire_threshold[t - fire_start] spikes: first_spike = t, spiked_now = 1; others spiked_now = 0.
cudaError_t launch_input_fire_step(const DeviceLayer& input, const float* images,
                                   int32_t images_count, int32_t t, int32_t* first_spike,
                                   uint8_t* spiked_now, cudaStream_t stream);

// maxpool at step t: `or` relays when any child spiked now; `earliest` relays only the first
// time (relayed_before, one byte per unit, remembers it; unused otherwise and may be nullptr);
// `gated` relays when the child with the largest spike counter spiked now (below_first_spike:
// the first-spike times of the neuron layer below, after its step t; unused otherwise and may
// be nullptr).
cudaError_t launch_pool_relay_step(const DeviceLayer& pool, const uint8_t* below_spiked_now,
                                   const int32_t* below_first_spike, int32_t images_count,
                                   int32_t t, uint8_t* relayed_before, uint8_t* spiked_now,
                                   cudaStream_t stream);

// conv2d / dense at step t: when `integrate_now`, V = V + S(t) * kernel_at(t) (S with the bias at
// t == 0; steps t != 0 where no presynaptic unit spiked leave V unchanged, as V + 0*k == V);
// when `fire_now`, a neuron that has not fired and reaches fire_threshold[t - fire_start]
// fires (first_spike = t, V = 0). Writes spiked_now for every neuron.
cudaError_t launch_neuron_step(const DeviceLayer& layer, const uint8_t* below_spiked_now,
                               int32_t images_count, int32_t t, bool integrate_now, bool fire_now,
                               float* membrane, int32_t* first_spike, uint8_t* spiked_now,
                               cudaStream_t stream);

}  // namespace gpu
}  // namespace ttfs
