// One image's results (outputs.hpp).

#include "cpu/outputs.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace ttfs {
namespace cpu {

int32_t argmax_lowest(const float* values, int32_t count) {
    int32_t best = 0;
    for (int32_t i = 1; i < count; ++i)
        if (values[i] > values[best]) best = i;  // strict: ties keep the lowest index
    return best;
}

// Writes one image's results. Returns the index of an output potential that is not a finite
// number, or -1 (the loader's bound makes that impossible; the caller reports it as a bug
// rather than passing on a NaN and a class-0 prediction).
int32_t write_image_outputs(const Model& model, const Workspace& ws, int32_t image,
                            const RunOutputs& out) {
    for (size_t li = 0; li < model.layers.size(); ++li) {
        if (!model.layers[li].has_neurons()) continue;
        const std::vector<int32_t>& first = ws.first_spike_time(li);
        if (li < out.spike_counts.size() && out.spike_counts[li] != nullptr)
            out.spike_counts[li][image] = ws.spike_count(li);
        if (li < out.spike_times.size() && out.spike_times[li] != nullptr)
            std::copy(first.begin(), first.end(), out.spike_times[li] + size_t(image) * first.size());
    }
    const int32_t classes = model.num_classes();
    const std::vector<float>& potential = ws.output_membrane();
    for (int32_t k = 0; k < classes; ++k)
        if (!std::isfinite(potential[size_t(k)])) return k;
    if (out.potentials != nullptr)
        std::copy(potential.begin(), potential.end(), out.potentials + size_t(image) * classes);
    if (out.predictions == nullptr) return -1;
    int32_t prediction = -1;
    if (model.readout == TTFS_READOUT_FIRST_SPIKE) {
        const std::vector<int32_t>& first = ws.first_spike_time(model.layers.size() - 1);
        for (int32_t k = 0; k < classes; ++k)
            if (first[k] != kNever && (prediction < 0 || first[k] < first[prediction])) prediction = k;
    }
    if (prediction < 0) prediction = argmax_lowest(potential.data(), classes);  // vmem, or no spike
    out.predictions[image] = prediction;
    return -1;
}

}  // namespace cpu
}  // namespace ttfs
