// Derived model fields (threshold and kernel tables) and the analytic-engine window check.
#include <algorithm>
#include <cmath>
#include <sstream>

#include "model.hpp"
#include "ttfs_math.h"

namespace ttfs {

namespace {

// exp(-(float(i) - td) / tau) in float32, one rounding per operation, exactly as
// docs/ALGORITHM.md section 4 writes it. These tables are computed once on the host and used by
// every engine and backend, so they all compare against the same bits.
float decay(int32_t i, float td, float tau) {
    float elapsed = float(i) - td;
    float exponent = -elapsed / tau;
    return std::exp(exponent);
}

}  // namespace

void finalize_model(Model& model) {
    const size_t last = model.layers.size() - 1;
    for (size_t i = 0; i < model.layers.size(); ++i) {
        Layer& layer = model.layers[i];
        if (layer.kind == TTFS_LAYER_CONV2D || layer.kind == TTFS_LAYER_MAXPOOL) {
            const int same = layer.padding == TTFS_PADDING_SAME;
            layer.pad_top = padding_before(layer.in.h, layer.kernel_h, layer.stride_h, same);
            layer.pad_left = padding_before(layer.in.w, layer.kernel_w, layer.stride_w, same);
        }
        if (layer.kind != TTFS_LAYER_INPUT && layer.has_neurons() && layer.bias.empty())
            layer.bias.assign(size_t(layer.out.c), 0.0f);

        layer.fire_threshold.clear();
        layer.integ_kernel.clear();
        layer.fires = false;
        if (!layer.has_neurons()) continue;
        layer.fires = !(i == last && model.readout == TTFS_READOUT_VMEM);
        for (int32_t j = 0; j < layer.fire_end - layer.fire_start; ++j)
            layer.fire_threshold.push_back(mul_rn(layer.vth0, decay(j, layer.td_fire, layer.tau_fire)));
        if (layer.kind != TTFS_LAYER_INPUT)
            for (int32_t j = 0; j < layer.integ_end - layer.integ_start; ++j)
                layer.integ_kernel.push_back(decay(j, layer.td_integ, layer.tau_integ));
    }
}

bool windows_allow_analytic(const Model& model, std::string& why) {
    // A neuron layer's potential changes at t == 0 and whenever spikes of the neuron layer
    // below arrive inside its integration window. The closed form needs all of those steps to
    // come no later than the first step at which the layer may fire (at that step the stepped
    // engine integrates before it checks the threshold).
    const Layer* below = nullptr;
    for (const Layer& layer : model.layers) {
        if (!layer.has_neurons()) continue;
        if (below != nullptr && layer.fires) {
            int32_t first = std::max(below->fire_start, layer.integ_start);
            int32_t last = std::min(below->fire_end, layer.integ_end) - 1;  // inclusive
            if (first <= last && last > layer.fire_start) {
                std::ostringstream msg;
                msg << "the analytic engine needs non-overlapping windows, but layer '"
                    << layer.name << "' fires from step " << layer.fire_start
                    << " while it still integrates spikes of layer '" << below->name
                    << "' until step " << last << " (fire window of '" << below->name << "' ["
                    << below->fire_start << ", " << below->fire_end << "), integration window of '"
                    << layer.name << "' [" << layer.integ_start << ", " << layer.integ_end
                    << ")); use the stepped engine";
                why = msg.str();
                return false;
            }
        }
        below = &layer;
    }
    return true;
}

}  // namespace ttfs
