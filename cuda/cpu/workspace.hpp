// The state of one image in either engine (Workspace): first-spike times and membranes per
// layer, the synaptic sums of the current step, the scatter-and-integrate step both engines
// share, and the writing of the output trace. One per worker thread, allocated when the
// session is created, reused for every image.

#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cpu/exact_kernels.hpp"
#include "cpu/plan.hpp"
#include "model.hpp"

namespace ttfs {
namespace cpu {

// One image's state, reused for every image a worker thread processes. Allocated once per
// session (sized from the model, through `memory`: see Memory); run_image() never allocates.
class Workspace {
public:
    Workspace(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory)
        : model_(model), plans_(plans) {
        const size_t count = model.layers.size();
        memory.take(known_count_, count, -1);
        first_spike_time_.resize(count);
        membrane_.resize(count);
        size_t largest_sums = 0;
        int32_t most_positions = 0;
        for (size_t li = 0; li < count; ++li) {
            const Layer& layer = model.layers[li];
            if (!layer.has_neurons()) continue;
            memory.take(first_spike_time_[li], size_t(layer.out.size()), kNever);
            if (layer.kind == TTFS_LAYER_INPUT) continue;
            memory.take(membrane_[li], size_t(layer.out.size()), 0.0f);
            const LayerPlan& plan = plans[li];
            largest_sums = std::max(largest_sums,
                                    size_t(plan.geometry.positions()) * size_t(plan.padded_c));
            most_positions = std::max(most_positions, plan.geometry.positions());
        }
        // One set of synaptic sums serves every layer: each layer leaves them all +0.
        memory.take(synaptic_sum_, largest_sums, 0.0f);
        memory.take(flagged_, size_t(most_positions), 0);
        memory.take(touched_, size_t(most_positions), 0);
    }
    virtual ~Workspace() = default;

    // Computes every neuron layer's first-spike times and the conv2d/dense membranes for one
    // image (input size floats, HWC, already scaled).
    virtual void run_image(const float* image) = 0;

    const std::vector<int32_t>& first_spike_time(size_t layer) const { return first_spike_time_[layer]; }
    // The number of neurons of layer li that fired on the last image.
    int32_t spike_count(size_t li) const {
        if (li < known_count_.size() && known_count_[li] >= 0) return known_count_[li];
        const std::vector<int32_t>& first = first_spike_time_[li];
        return int32_t(first.size() - size_t(std::count(first.begin(), first.end(), kNever)));
    }
    // Whether the caller reads every layer's first-spike times (else only spike counts,
    // potentials and predictions), for the images run from now on.
    void set_recording(bool record) { recording_ = record; }
    const std::vector<float>& output_membrane() const { return membrane_.back(); }
    // Where the next run_image() writes its output trace (RunOutputs::output_trace): one row of
    // the output layer's potentials per step of `steps`, into `rows` (caller's memory, one
    // image's part); rows == nullptr: no trace.
    void set_trace(const std::vector<int32_t>& steps, float* rows) {
        trace_steps_ = &steps;
        trace_rows_ = rows;
        trace_next_ = 0;
    }

protected:
    bool tracing() const { return trace_rows_ != nullptr; }
    // Writes the trace rows of the chosen steps before `t` that are not written yet: the output
    // layer's potentials as they stand now (an engine calls it once everything up to step t - 1
    // is done and nothing of step t or later has happened).
    __attribute__((noinline)) void trace_before(int32_t t) {
        const std::vector<int32_t>& steps = *trace_steps_;
        const std::vector<float>& potential = membrane_.back();
        for (; trace_next_ < steps.size() && steps[trace_next_] < t; ++trace_next_)
            std::copy(potential.begin(), potential.end(), trace_rows_ + trace_next_ * potential.size());
    }

    // Scatter and integrate of one step for a conv2d/dense layer (integrates_at(t) holds):
    // `units` are the presynaptic units spiking at t, ascending.
    void integrate_step(size_t li, int32_t t, const int32_t* units, int32_t count) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const WindowGeometry& g = plan.geometry;
        const int32_t touched = scatter_spikes(g, plan.fanout, plan.padded_c, plan.weights(layer),
                                               units, count, synaptic_sum_.data(),
                                               flagged_.data(), touched_.data());
        if (t == 0)
            integrate_step_zero(g.positions(), g.out_c, plan.padded_c, layer.bias.data(),
                                layer.kernel_at(0), synaptic_sum_.data(), membrane_[li].data(),
                                flagged_.data());
        else
            integrate_touched(touched_.data(), touched, g.out_c, plan.padded_c, layer.kernel_at(t),
                              synaptic_sum_.data(), membrane_[li].data(), flagged_.data());
    }

    const Model& model_;
    const std::vector<LayerPlan>& plans_;
    bool recording_ = true;
    // Per layer: its spike count when a layer computes it without first-spike times, else -1.
    std::vector<int32_t> known_count_;
    std::vector<std::vector<int32_t>> first_spike_time_;  // neuron layers, HWC; -1 = never
    std::vector<std::vector<float>> membrane_;            // conv2d/dense, HWC
    // Scratch of integrate_step(): S of the current step per neuron (positions x padded_c), +0
    // between steps; per output position a flag "received input at this step"; the flagged
    // positions.
    std::vector<float> synaptic_sum_;
    std::vector<uint8_t> flagged_;
    std::vector<int32_t> touched_;
    // The output trace of the image being run (set_trace): its steps, its rows, the next row.
    const std::vector<int32_t>* trace_steps_ = nullptr;
    float* trace_rows_ = nullptr;
    size_t trace_next_ = 0;
};

}  // namespace cpu
}  // namespace ttfs
