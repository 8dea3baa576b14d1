// The certified sums of a hidden conv2d/dense layer (certified_layer.hpp).

#include "cpu/certified_layer.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>

namespace ttfs {
namespace cpu {

namespace {

// The most roundings a bound may count: ops * u must stay below 0.01 (docs/ENGINES.md), so
// ops < 0.01 / u = 167 772.
constexpr int32_t kMostOps = 167772;

// The largest scratch any certified layer of the model needs.
struct CertifiedSizes {
    size_t grid = 0, cells = 0, sums = 0, positions = 0, neurons = 0, neurons_padded = 0;
    size_t widest = 0, longest = 0, row_units = 0, stride = 0, list_entries = 0,
           input_units = 0;

    CertifiedSizes(const std::vector<LayerPlan>& plans) {
        for (size_t li = 0; li < plans.size(); ++li) {
            const LayerPlan& plan = plans[li];
            if (!plan.certified) continue;
            const WindowGeometry& g = plan.geometry;
            grid = std::max(grid, plan.grid_floats);
            cells = std::max(cells, size_t(plan.grid_h) * size_t(plan.grid_w + 1));
            positions = std::max(positions, size_t(g.positions()));
            sums = std::max(sums, size_t(g.positions()) * size_t(plan.bound_stride));
            neurons = std::max(neurons, size_t(g.positions()) * size_t(g.out_c));
            neurons_padded = std::max(neurons_padded, size_t(g.positions()) * size_t(plan.padded_c));
            widest = std::max(widest, size_t(plan.padded_c));
            stride = std::max(stride, size_t(plan.bound_stride));
            longest = std::max(longest, size_t(plans[plans[li - 1].source].window_len));
            row_units = std::max(row_units, size_t(g.in_w) * size_t(g.in_c));
            input_units = std::max(input_units, size_t(g.in_h) * size_t(g.in_w) * size_t(g.in_c));
            const size_t grid_cells = size_t(plan.grid_h) * size_t(plan.grid_w);  // the most listed
            list_entries = std::max(list_entries, sparse_list_entries(grid_cells * size_t(g.in_c)));
        }
    }
};

}  // namespace

// ---- CertifiedSums ------------------------------------------------------------------------

// The activation grid and its cell counts, their prefix sums, the sums and bound factors of
// every position.
CertifiedSums::CertifiedSums(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory)
    : model_(model), plans_(plans) {
    const CertifiedSizes size(plans);
    memory.take(grid_, size.grid, 0.0f);
    memory.take(grid_bin_, size.grid, 0);
    memory.take(row_bits_, size.row_units / 64 + 2, 0);
    memory.take(spike_steps_, size.input_units + kLanes, 0);
    memory.take(list_offset_, size.list_entries, 0);
    memory.take(list_value_, size.list_entries, 0.0f);
    memory.take(cell_start_, size.cells, 0);  // (cells: more than the grid's + 1)
    memory.take(cell_nonzero_, size.cells, 0);
    memory.take(area_, size.cells, 0);
    memory.take(layer_sums_, size.sums, 0.0f);
    memory.take(scale_, size.positions, 0.0f);
    memory.take(most_, 2 * size.positions, 0);
    memory.take(row_, size.stride, 0.0f);
    memory.take(step_count_, (size.longest + 1) * kSpareBins, 0);
}

// A hidden conv2d/dense layer by certified sums (docs/ENGINES.md, "Certified sums"): each
// neuron's potential from a fast sum in any order with fused multiply-adds, plus a rigorous
// bound on how far that can be from the exact engine's potential. Where the first_crossing()
// of both ends of the interval agree, that is the neuron's fire step; elsewhere (a few
// neurons per image) ExactPotential forms the exact potential with the operations of the
// stepped engine. The result is the same bits either way.
bool CertifiedSums::form(size_t li, const LayerInput& in, Certify certify) {
    const Layer& layer = model_.layers[li];
    const LayerPlan& plan = plans_[li];
    const LayerPlan& input_plan = plans_[li - 1];
    const SpikeList& below = in.below;
    const WindowGeometry& g = plan.geometry;
    // Activations a = the sum of kernel_at(t) over each unit's integrated spike steps, in
    // the zero-padded grid; per grid cell the number of its units with a nonzero a (a
    // kernel value may underflow to 0: such a term adds nothing to the exact potential
    // either, as its whole bin is multiplied by 0).
    float* grid = grid_.data();
    std::fill(grid, grid + plan.grid_floats, 0.0f);
    int32_t* cell_nonzero = cell_nonzero_.data();
    const int32_t cells = plan.grid_h * plan.grid_w;
    std::fill(cell_nonzero, cell_nonzero + cells, 0);
    const UnitOrigin* origin = plan.fanout.origin.data();
    int32_t busiest = 0, bins = 1;  // the most spikes at one step; bins of V (t == 0's too)
    const int32_t* single = in.single;
    if (single != nullptr) {
        // Unit by unit, without branches: the activation is the kernel of the unit's step
        // (0 for a step not integrated and for a unit that did not spike: the spare bin);
        // spikes counted per step.
        // Each unit's bin for exact_potential() too, in grid_bin_: a spare bin where the
        // unit adds nothing (padding included), the spares taken in turn.
        const int32_t steps = below.steps(), first_step = below.first_step;
        const float* kernel = plan.bin_kernel.data();
        const int32_t* slot = plan.bin_slot.data();
        // (kSpareBins counters per step, taken in turn, so that increments of one step
        // do not wait for each other.)
        int32_t* per_step = step_count_.data();  // kSpareBins counters per step, in turn
        std::fill(per_step, per_step + (steps + 1) * kSpareBins, 0);
        int32_t* grid_bin = grid_bin_.data();
        std::fill(grid_bin, grid_bin + plan.grid_floats, steps);
        [[maybe_unused]] const bool count_cells = g.kernel_w * g.in_c > kLanes;  // see the bound factors below
        bool done = false;
#if TTFS_HAVE_AVX512_VARIANT
        if (use_avx512() && steps + 1 <= kGuessTable) {
            grid_rows_avx512(GridJob{single, g.in_h, g.in_w, g.in_c, g.pad_top, g.pad_left,
                                     plan.grid_w, first_step, steps, kernel, slot, grid, grid_bin,
                                     per_step, cell_nonzero, count_cells, row_bits_.data(),
                                     spike_steps_.data()});
            done = true;
        }
#endif
        for (int32_t h = 0; !done && h < g.in_h; ++h) {
            for (int32_t w = 0; w < g.in_w; ++w) {
                const int32_t cell = (h + g.pad_top) * plan.grid_w + w + g.pad_left;
                float* x = grid + ptrdiff_t(cell) * g.in_c;
                int32_t* bin = grid_bin + ptrdiff_t(cell) * g.in_c;
                const int32_t* t = single + (h * g.in_w + w) * g.in_c;
                int32_t nonzero = 0;
                for (int32_t c = 0; c < g.in_c; ++c) {
                    const uint32_t k = std::min(uint32_t(t[c] - first_step), uint32_t(steps));
                    ++per_step[k * kSpareBins + uint32_t(c & (kSpareBins - 1))];
                    x[c] = kernel[k];
                    nonzero += kernel[k] != 0.0f ? 1 : 0;
                    const int32_t b = slot[k];
                    bin[c] = b == steps ? steps + (c & (kSpareBins - 1)) : b;
                }
                cell_nonzero[cell] = nonzero;
            }
        }
        for (int32_t k = 0; k < steps; ++k) {
            int32_t spikes = 0;
            for (int32_t copy = 0; copy < kSpareBins; ++copy) spikes += per_step[k * kSpareBins + copy];
            if (spikes == 0 || slot[k] != k) continue;  // no spikes, or not integrated
            busiest = std::max(busiest, spikes);
            bins += k != plan.zero_bin ? 1 : 0;
        }
    }
    for (int32_t k = 0; single == nullptr && k < below.steps(); ++k) {
        const int32_t t = below.first_step + k, spikes = below.count(k);
        if (spikes == 0 || !layer.integrates_at(t)) continue;
        busiest = std::max(busiest, spikes);
        bins += t != 0 ? 1 : 0;
        const float kernel = layer.kernel_at(t);
        const int32_t counts = kernel != 0.0f ? 1 : 0;
        const int32_t* units = below.at(k);
        for (int32_t s = 0; s < spikes; ++s) {
            const UnitOrigin o = origin[units[s]];
            const int32_t cell = (o.h + g.pad_top) * plan.grid_w + o.w + g.pad_left;
            float& x = grid[ptrdiff_t(cell) * g.in_c + o.c];
            cell_nonzero[cell] += x == 0.0f ? counts : 0;
            x = add_rn(x, kernel);
        }
    }
    // Roundings behind the exact potential of any neuron (bin sums, the bias, the
    // multiply, the chain of V) and behind an activation (several steps of one unit).
    const double engine_ops = double(std::min(busiest, plan.fan_in)) + bins + 2;
    const double activation_ops = input_plan.single_spike ? 0.0 : double(bins);
    // The certified sums of every position.
    const int32_t width = plan.bound_stride;
    float* sums = layer_sums_.data();
    const SparseScratch sparse{list_offset_.data(), list_value_.data(), cell_start_.data()};
    const WindowSums job{grid, plan.grid_w, g.in_c, g.out_h, g.out_w, g.kernel_h, g.kernel_w,
                         g.stride_h, g.stride_w, plan.bound_weights.data(),
                         plan.bound_bias.data(), width, sums, row_.data(), &sparse};
    const SumsMade made = window_sums(job);
    const int32_t per_term = made.per_term;
    // Per position its bound's factor: gamma(ops) = ops * u / (1 - ops * u) <= 1.0102 *
    // ops * u while ops * u <= 0.01; 1.1 covers that, the activations' own error and the
    // rounding of the bound's sum. The nonzero terms of each kernel row of a window come
    // from prefix sums of the cell counts along each grid row; for short kernel rows the
    // row's length serves (a little looser, much cheaper).
    float* scale = scale_.data();
    const bool recompute_all = certify == Certify::kRecompute;
    // ops up to kMostOps (else -1: not boundable); ops and 1.1 * u are exact enough in float
    // (an integer below 2^24; 1.1f > 1.1).
    const auto capped = [](double ops) { return int32_t(std::min(double(1 << 30), ops)); };
    const int32_t most_ops = recompute_all ? -1 : kMostOps;
    const auto factor = [most_ops](int32_t ops) { return ops <= most_ops ? float(ops) * (1.1f * 0x1p-24f) : -1.0f; };
    const int32_t fixed_ops = capped(g.kernel_h + 1 + engine_ops + activation_ops);
    const int32_t row_len = g.kernel_w * g.in_c;
    if (row_len <= kLanes) {
        std::fill(scale, scale + g.positions(), factor(per_term * row_len + fixed_ops));
        return made.nonzero_only;
    }
    // Where each unit spikes at most once, the window's own count of nonzero activations nz
    // bounds V's roundings as well (docs/ENGINES.md, "Certified sums"): a term's bin shares
    // the nz units with V's other bins that have terms, so its bin sum and the chain of V
    // take at most nz + 1 roundings, the multiply and the bias 2 more (nz + 4 is kept).
    const bool window_count = input_plan.single_spike;
    const int32_t window_fixed_ops = capped(g.kernel_h + 1 + activation_ops);
    const int32_t engine_cap = capped(engine_ops);
    int32_t* prefix = area_.data();
    const int32_t prefix_w = plan.grid_w + 1;
    for (int32_t h = 0; h < plan.grid_h; ++h) {
        int32_t* line = prefix + h * prefix_w;
        line[0] = 0;
        for (int32_t w = 0; w < plan.grid_w; ++w) line[w + 1] = line[w] + cell_nonzero[h * plan.grid_w + w];
    }
    int32_t* most = most_.data();           // per output column: the most in one kernel row
    int32_t* total = most + g.positions();  // and in the whole window
    for (int32_t oh = 0; oh < g.out_h; ++oh) {
        std::fill(most, most + g.out_w, 0);
        std::fill(total, total + g.out_w, 0);
        for (int32_t kh = 0; kh < g.kernel_h; ++kh) {
            const int32_t* line = prefix + (oh * g.stride_h + kh) * prefix_w;
            for (int32_t ow = 0; ow < g.out_w; ++ow) {
                const int32_t left = ow * g.stride_w;
                const int32_t in_row = line[left + g.kernel_w] - line[left];
                most[ow] = std::max(most[ow], in_row);
                total[ow] += in_row;
            }
        }
        float* row_scale = scale + oh * g.out_w;
        for (int32_t ow = 0; ow < g.out_w; ++ow) {
            const int32_t ops = per_term * most[ow] +
                                (window_count ? window_fixed_ops + std::min(engine_cap, total[ow] + 4)
                                              : fixed_ops);
            row_scale[ow] = factor(ops);
        }
    }
    return made.nonzero_only;
}

// ---- ExactPotential -----------------------------------------------------------------------

// The bins of the exact recomputation: one per step of the input's spike window, and the
// spare ones.
ExactPotential::ExactPotential(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory)
    : model_(model), plans_(plans) {
    const CertifiedSizes size(plans);
    memory.take(bins_, size.longest + kSpareBins, 0.0f);
    memory.take(bin_used_, size.longest + kSpareBins, 0);
}

// The stepped engine's operations (docs/ENGINES.md: bins in canonical order, the bias at
// t == 0, then V chained over the steps ascending). Out of line: it runs for a few neurons
// per image.
__attribute__((noinline))
float ExactPotential::potential(size_t li, int32_t p, int32_t n, const LayerInput& in,
                                 const int32_t* grid_bin) {
    const Layer& layer = model_.layers[li];
    const LayerPlan& plan = plans_[li];
    const WindowGeometry& g = plan.geometry;
    const SpikeList& below = in.below;
    const int32_t* single = in.single;  // else each unit's steps, from the pool's list
    // bins[k] = S of step below.first_step + k; bin_slot sends a spike at a step the layer
    // does not integrate (and a unit that never spiked) to the spare bin at index steps.
    const int32_t steps = below.steps(), first_step = below.first_step;
    const int32_t* slot = plan.bin_slot.data();
    float* bins = bins_.data();
    uint8_t* used = bin_used_.data();
    const int32_t oh = p / g.out_w, ow = p % g.out_w;
    const int32_t in_c = g.in_c, in_w = g.in_w, kernel_w = g.kernel_w;
    const float* neuron_weights = plan.weights_by_neuron.data() + size_t(n) * size_t(plan.fan_in);
    if (single != nullptr) {
        // Each kernel row of the window is a run of kernel_w * in_c units in the grid, in
        // canonical order; CertifiedSums::form() left each unit's bin in grid_bin (a spare bin
        // for padding and for units that add nothing), so no branches.
        const int32_t row_len = kernel_w * in_c;
        for (int32_t kh = 0; kh < g.kernel_h; ++kh) {
            const int32_t* bin = grid_bin +
                                 (ptrdiff_t(oh * g.stride_h + kh) * plan.grid_w + ow * g.stride_w) * in_c;
            const float* w = neuron_weights + kh * row_len;
            for (int32_t r = 0; r < row_len; ++r) {
                bins[bin[r]] = add_rn(bins[bin[r]], w[r]);
                used[bin[r]] = 1;
            }
        }
    }
    const WindowInside win = window_inside(g, oh, ow);
    for (int32_t kh = win.kh_first; single == nullptr && kh < win.kh_end; ++kh) {
        for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
            const int32_t unit0 = ((win.ih0 + kh) * in_w + win.iw0 + kw) * in_c;
            const float* w = neuron_weights + (kh * kernel_w + kw) * in_c;
            for (int32_t c = 0; c < in_c; ++c) {
                const int32_t u = unit0 + c;
                for (int32_t e = below.unit_begin[size_t(u)]; e < below.unit_begin[size_t(u) + 1]; ++e) {
                    const int32_t b = slot[below.step[size_t(e)] - first_step];
                    bins[b] = add_rn(bins[b], w[c]);
                    used[b] = 1;
                }
            }
        }
    }
    // V = +0 + (S(0) + bias) * 1, then V + S(t) * k(t) over the later bins, ascending.
    const int32_t zero = plan.zero_bin;
    const float s0 = zero >= 0 ? bins[zero] : 0.0f;
    float v = ttfs::integrate(0.0f, add_rn(s0, layer.bias[size_t(n)]), layer.kernel_at(0));
    // The products first (independent of V), then the chain of adds: a bin without a step
    // of its own (or step 0's, already in) adds +0, which leaves V as it is (V is never -0),
    // so the chain needs no branches and waits only for the adds.
    const float* kernel = plan.bin_kernel.data();
    for (int32_t k = 0; k < steps; ++k) {
        const float product = mul_rn(bins[k], kernel[k]);
        bins[k] = used[k] && k != zero ? product : 0.0f;
    }
    for (int32_t k = 0; k < steps; ++k) {
        v = add_rn(v, bins[k]);
        bins[k] = 0.0f;
        used[k] = 0;
    }
    std::fill(bins + steps, bins + steps + kSpareBins, 0.0f);
    std::fill(used + steps, used + steps + kSpareBins, uint8_t(0));
    return v;
}

// ---- CertifiedLayer -----------------------------------------------------------------------

CertifiedLayer::CertifiedLayer(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory)
    : model_(model), plans_(plans), sums_(model, plans, memory), exact_(model, plans, memory) {
    const CertifiedSizes size(plans);
    memory.take(interval_high_, size.neurons_padded, 0.0f);
    memory.take(interval_low_, size.neurons_padded, 0.0f);
    memory.take(high_, size.widest + kLanes, 0.0f);
    memory.take(low_, size.widest + kLanes, 0.0f);
    memory.take(candidate_, std::max(size.neurons, size.neurons_padded), 0);
    for (std::vector<int64_t>* count : {&counts_.checked, &counts_.recomputed, &counts_.nonzero_only,
                                        &counts_.bound_checked, &counts_.bound_violated})
        memory.take(*count, model.layers.size(), 0);
}

// Bracket's view of layer li's thresholds and crossing index.
Bracket CertifiedLayer::bracket_of(size_t li) const {
    const Layer& layer = model_.layers[li];
    const LayerPlan& plan = plans_[li];
    const CrossingIndex& index = plan.crossing;
    return Bracket{layer.fire_threshold.data(), layer.fire_len(), layer.fire_start,
                   plan.lowest_threshold, index.usable ? index.bucket_start.data() : nullptr,
                   index.usable ? index.bucket_sure.data() : nullptr, index.shift,
                   index.first_bucket, index.last_bucket,
                   index.usable && layer.fire_len() <= kGuessTable && layer.vth0 > 0.0f &&
                       layer.tau_fire > 0.0f,
                   layer.td_fire, layer.tau_fire, std::log(layer.vth0)};
}

// The second bound of an undecided neuron (docs/ENGINES.md, "Certified sums"): the same
// interval, with E formed from the neuron's own |w| instead of the largest |w| of its channel
// group, in 16 partial sums (at most 2 * fan_in + 34 roundings, within the bound's budget while
// that is below 0.01 / u). False where it does not apply: a position that cannot be bounded.
bool CertifiedLayer::refined_interval(size_t li, int32_t p, int32_t n, float& high, float& low) const {
    const LayerPlan& plan = plans_[li];
    const WindowGeometry& g = plan.geometry;
    const float scale = sums_.scale()[p];
    if (!(scale >= 0.0f) || 2 * int64_t(plan.fan_in) + 34 > kMostOps) return false;
    const int32_t oh = p / g.out_w, ow = p % g.out_w;
    const int32_t row_len = g.kernel_w * g.in_c;
    const float* w = plan.weights_by_neuron.data() + size_t(n) * size_t(plan.fan_in);
    float lanes[kLanes] = {};
    for (int32_t kh = 0; kh < g.kernel_h; ++kh, w += row_len) {
        const float* a = sums_.grid() + (ptrdiff_t(oh * g.stride_h + kh) * plan.grid_w + ow * g.stride_w) * g.in_c;
        int32_t r = 0;
        for (; r + kLanes <= row_len; r += kLanes)
            for (int32_t l = 0; l < kLanes; ++l) lanes[l] += a[r + l] * std::fabs(w[r + l]);
        for (; r < row_len; ++r) lanes[r % kLanes] += a[r] * std::fabs(w[r]);
    }
    float magnitude = std::fabs(model_.layers[li].bias[size_t(n)]);
    for (int32_t l = 0; l < kLanes; ++l) magnitude += lanes[l];
    const float v = sums_.sums()[ptrdiff_t(p) * plan.bound_stride + n];
    const float eps = interval_eps(scale, magnitude, v);
    high = v + eps;
    low = v - eps;
    return true;
}

// TTFS_CERTIFY=check: every neuron's exact potential against the interval that bracket() and
// intervals() form around its certified sum (docs/ENGINES.md, "Certified sums"). Counts
// only; the decisions are those of "on".
void CertifiedLayer::check_bounds(size_t li, const LayerInput& in) {
    const LayerPlan& plan = plans_[li];
    const WindowGeometry& g = plan.geometry;
    const float* sums = sums_.sums();
    const float* scale = sums_.scale();
    for (int32_t p = 0; p < g.positions(); ++p) {
        if (!(scale[p] >= 0.0f)) continue;  // not boundable: always recomputed
        const float* v = sums + ptrdiff_t(p) * plan.bound_stride;
        const float* bound = v + plan.bound_base;
        for (int32_t n = 0; n < g.out_c; ++n) {
            const float eps = interval_eps(scale[p], bound[plan.bound_lane[size_t(n % kLanes)]], v[n]);
            const float high = v[n] + eps, low = v[n] - eps;
            if (!finite_ends(high, low)) continue;  // undecided: always recomputed
            const float exact_v = exact(li, p, n, in);
            ++counts_.bound_checked[li];
            bool holds = low <= exact_v && exact_v <= high;
            float refined_high, refined_low;  // the second bound must hold too
            if (refined_interval(li, p, n, refined_high, refined_low) && finite_ends(refined_high, refined_low))
                holds = holds && refined_low <= exact_v && exact_v <= refined_high;
            counts_.bound_violated[li] += holds ? 0 : 1;
        }
    }
}

// The fire step of every neuron of layer li: by the intervals, or for the undecided by the
// exact potential.
void CertifiedLayer::fire(size_t li, const LayerInput& in, int32_t* first) {
    const Layer& layer = model_.layers[li];
    const LayerPlan& plan = plans_[li];
    const WindowGeometry& g = plan.geometry;
    const int32_t width = plan.bound_stride, padded_c = plan.padded_c, out_c = g.out_c;
    const int32_t positions = g.positions();
    counts_.nonzero_only[li] += sums_.form(li, in, certify_) ? 1 : 0;
    if (certify_ == Certify::kCheck) check_bounds(li, in);
    // The verdicts; the undecided neurons' exact potentials.
    const Bracket decision = bracket_of(li);
    std::fill(first, first + layer.out.size(), kNever);
    int32_t* undecided = candidate_.data();
    const int32_t count = bracket(plan, layer, decision, sums_.sums(), width, positions, padded_c,
                                  out_c, sums_.scale(), high_.data(), low_.data(), first, undecided);
    int64_t recomputed = 0;
    for (int32_t c = 0; c < count; ++c) {
        const int32_t i = undecided[c];
        const int32_t p = i / out_c, n = i % out_c;
        float high, low;
        if (refined_interval(li, p, n, high, low)) {  // the second bound first, then exact
            const int32_t j = high < decision.lowest ? -1 : decide(plan, layer, decision, high, low);
            if (j != kUndecided) {
                if (j >= 0) first[i] = layer.fire_start + j;
                continue;
            }
        }
        const float v = exact(li, p, n, in);
        ++recomputed;
        const int32_t j = reaches(v, plan.lowest_threshold) ? crossing_from_lowest(plan, layer, v) : -1;
        if (j >= 0) first[i] = layer.fire_start + j;
    }
    counts_.checked[li] += int64_t(positions) * out_c;
    counts_.recomputed[li] += recomputed;
}

// docs/ENGINES.md, "Certified sums": first_crossing() does not increase with the potential, so
// a pool unit's step, the earliest of its children's, is the first_crossing() of the largest
// child potential, which lies between the largest low and the largest high end of the
// children's intervals. The layer's own spike count needs only which neurons reach the lowest
// threshold. Either question, where the intervals cannot answer it, is answered by the exact
// potentials of the neurons concerned.
int32_t CertifiedLayer::fire_into_pool(size_t li, const LayerInput& in, int32_t* time) {
    const Layer& layer = model_.layers[li];
    const LayerPlan& plan = plans_[li];
    const WindowGeometry& g = plan.geometry;
    const int32_t padded_c = plan.padded_c, out_c = g.out_c, positions = g.positions();
    counts_.nonzero_only[li] += sums_.form(li, in, certify_) ? 1 : 0;
    if (certify_ == Certify::kCheck) check_bounds(li, in);
    float* high = interval_high_.data();
    float* low = interval_low_.data();
    int32_t* undecided = candidate_.data();
    int32_t count = 0;
    const int32_t undecided_count =
        intervals(plan, sums_.sums(), plan.bound_stride, positions, padded_c, out_c,
                  sums_.scale(), plan.lowest_threshold, high, low, &count, undecided);
    int64_t recomputed = undecided_count;
    for (int32_t c = 0; c < undecided_count; ++c) {
        const int32_t i = undecided[c];  // p * padded_c + n
        const float v = exact(li, i / padded_c, i % padded_c, in);
        high[i] = low[i] = v;  // equal ends: exact
        count += reaches(v, plan.lowest_threshold) ? 1 : 0;
    }
    // The pool.
    const WindowGeometry& pg = plans_[li + 1].geometry;
    const int32_t open = pool_verdicts(plan, layer, bracket_of(li), pg, padded_c, high, low,
                                       time, undecided);
    for (int32_t k = 0; k < open; ++k) {
        const int32_t unit = undecided[k];
        const int32_t c = unit % pg.out_c, position = unit / pg.out_c;
        const int32_t j = settle_unit(li, in, pg, position / pg.out_w, position % pg.out_w, c, high,
                                      low, recomputed);
        time[unit] = j >= 0 ? layer.fire_start + j : kNever;
    }
    counts_.checked[li] += int64_t(positions) * out_c;
    counts_.recomputed[li] += recomputed;
    return count;
}

// The first_crossing() of the largest child potential of pool unit (oh, ow, c), where the
// children's intervals could not tell it: the child with the highest high end that is not
// exact yet is made exact, until the interval of the largest potential decides it (at the
// latest when every child that could be the largest is exact). Each round makes one more
// child exact, so there are at most as many rounds as children (+ 1 to see them all
// exact); the count, not the float comparisons, ends the loop. (The loader's potential
// bound keeps every potential finite, so the limit is never reached; were one NaN, its
// child would never count as exact, and the limit turns that into an internal error
// instead of an endless loop.)
int32_t CertifiedLayer::settle_unit(size_t li, const LayerInput& in, const WindowGeometry& pg, int32_t oh,
                                    int32_t ow, int32_t c, float* high, float* low, int64_t& recomputed) {
    const Layer& layer = model_.layers[li];
    const LayerPlan& plan = plans_[li];
    const Bracket b = bracket_of(li);
    const int32_t padded_c = plan.padded_c, out_w = plan.geometry.out_w;
    const WindowInside inside = window_inside(pg, oh, ow);
    const int64_t rounds = int64_t(std::max(0, inside.kh_end - inside.kh_first)) *
                               std::max(0, inside.kw_end - inside.kw_first) + 1;
    for (int64_t round = 0; round < rounds; ++round) {
        float most_high = -std::numeric_limits<float>::infinity(), most_low = most_high;
        int32_t widest = -1;  // the non-exact child with the highest high end
        const WindowInside win = window_inside(pg, oh, ow);
        for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
            for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
                const int32_t i = ((win.ih0 + kh) * out_w + win.iw0 + kw) * padded_c + c;
                most_low = std::max(most_low, low[i]);
                most_high = std::max(most_high, high[i]);
                if (high[i] != low[i] && (widest < 0 || !(high[i] <= high[widest]))) widest = i;
            }
        }
        if (!(most_high >= b.lowest)) return -1;  // no child reaches a threshold
        if (widest < 0) return crossing_from_lowest(plan, layer, most_high);  // all exact
        const int32_t j = decide(plan, layer, b, most_high, most_low);
        if (j != kUndecided) return j;
        high[widest] = low[widest] = exact(li, widest / padded_c, widest % padded_c, in);
        ++recomputed;
    }
    throw std::runtime_error("layer '" + layer.name + "': the earliest-pool unit (" + std::to_string(oh) +
                             ", " + std::to_string(ow) + ", " + std::to_string(c) +
                             ") was not settled after making all its children exact (a potential "
                             "that is not a number?)");
}

}  // namespace cpu
}  // namespace ttfs
