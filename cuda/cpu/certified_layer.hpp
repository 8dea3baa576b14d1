// The certified sums of a hidden conv2d/dense layer in the analytic engine (docs/ENGINES.md,
// "Certified sums"), by responsibility:
// - CertifiedSums: the activation grid from the spikes the layer receives, the fast window
//   sums of every position and the factor of each position's error bound;
// - ExactPotential: one neuron's potential formed exactly, with the stepped engine's
//   operations, where an interval cannot decide;
// - CertifiedLayer: the decisions: every neuron's fire step from its interval (or its exact
//   potential), and for a layer followed by an `earliest` pool (when spike times are not
//   recorded) the pool's units straight from their children's intervals.
// The kernels they call (sums, intervals, verdicts; portable and AVX-512) are in
// certified_kernels.hpp. Each object is one workspace's scratch (one per worker thread).

#pragma once

#include <cstdint>
#include <vector>

#include "cpu/certified_kernels.hpp"
#include "cpu/plan.hpp"
#include "cpu/spike_list.hpp"
#include "model.hpp"

namespace ttfs {
namespace cpu {

// What a certified layer receives: the spikes of the layer below listed by step (with each
// unit's steps when it is a pool), and each unit's single step where every unit spikes at most
// once (null otherwise).
struct LayerInput {
    const SpikeList& below;
    const int32_t* single;
};

// What the certified sums did so far, per layer (TTFS_CERTIFY_STATS).
struct CertifiedCounts {
    // Neurons decided by certified sums, and those recomputed exactly.
    std::vector<int64_t> checked, recomputed;
    // Images whose sums were formed over the nonzero activations only.
    std::vector<int64_t> nonzero_only;
    // With TTFS_CERTIFY=check: neurons whose exact potential was compared with their interval,
    // and those outside it (a bound that does not hold: a bug).
    std::vector<int64_t> bound_checked, bound_violated;
};

class CertifiedSums {
public:
    CertifiedSums(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory);

    // Layer li's certified sums (sums(): bound_stride floats per position, the neurons' then
    // the bound lanes) and the factor of each position's bound (scale(): -1 where a position
    // cannot be bounded, and everywhere under TTFS_CERTIFY=recompute).
    // Returns whether the sums ran over the nonzero activations only.
    bool form(size_t li, const LayerInput& in, Certify certify);
    const float* sums() const { return layer_sums_.data(); }
    const float* scale() const { return scale_.data(); }
    // Per unit of the grid, its bin in ExactPotential (single-spike inputs).
    const int32_t* grid_bin() const { return grid_bin_.data(); }
    const float* grid() const { return grid_.data(); }

private:
    const Model& model_;
    const std::vector<LayerPlan>& plans_;
    LineVector<float> grid_, layer_sums_, scale_;
    std::vector<float> row_;          // window_sums()' scratch
    std::vector<int32_t> grid_bin_;   // per grid unit its bin in exact_potential()
    std::vector<int32_t> cell_nonzero_, area_, step_count_;
    std::vector<uint64_t> row_bits_;  // grid_rows_avx512() scratch
    std::vector<int32_t> spike_steps_;  // grid_rows_avx512() scratch
    // window_sums()' lists of nonzero activations (SparseScratch).
    LineVector<int32_t> list_offset_, cell_start_;
    LineVector<float> list_value_;
    // Per output column of one output row: the most nonzero activations in one kernel row of
    // its window, then (from index positions on) those in the whole window.
    std::vector<int32_t> most_;
};

class ExactPotential {
public:
    ExactPotential(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory);

    // The exact potential of neuron n of output position p of layer li (grid_bin: from
    // CertifiedSums, for single-spike inputs).
    float potential(size_t li, int32_t p, int32_t n, const LayerInput& in, const int32_t* grid_bin);

private:
    const Model& model_;
    const std::vector<LayerPlan>& plans_;
    std::vector<float> bins_;
    std::vector<uint8_t> bin_used_;
};

class CertifiedLayer {
public:
    CertifiedLayer(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory);

    void set_certify(Certify certify) { certify_ = certify; }

    // The fire step of every neuron of layer li into first (kNever: none).
    void fire(size_t li, const LayerInput& in, int32_t* first);

    // Layer li and the `earliest` pool li + 1 after it: the pool's unit steps into pool_time
    // (kNever: none); returns layer li's spike count (its first-spike times are not formed).
    int32_t fire_into_pool(size_t li, const LayerInput& in, int32_t* pool_time);

    const CertifiedCounts& counts() const { return counts_; }

private:
    Bracket bracket_of(size_t li) const;
    void check_bounds(size_t li, const LayerInput& in);
    bool refined_interval(size_t li, int32_t p, int32_t n, float& high, float& low) const;
    float exact(size_t li, int32_t p, int32_t n, const LayerInput& in) {
        return exact_.potential(li, p, n, in, sums_.grid_bin());
    }
    int32_t settle_unit(size_t li, const LayerInput& in, const WindowGeometry& pg, int32_t oh,
                        int32_t ow, int32_t c, float* high, float* low, int64_t& recomputed);

    const Model& model_;
    const std::vector<LayerPlan>& plans_;
    Certify certify_ = Certify::kOn;
    CertifiedSums sums_;
    ExactPotential exact_;
    LineVector<float> high_, low_;                     // bracket(): one position's ends
    LineVector<float> interval_high_, interval_low_;   // fire_into_pool(): per neuron, padded
    std::vector<int32_t> candidate_;                   // the undecided neurons or pool units
    CertifiedCounts counts_;
};

}  // namespace cpu
}  // namespace ttfs
