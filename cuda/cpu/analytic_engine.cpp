// The analytic engine on the CPU (docs/ENGINES.md): each layer once, in file order. The input's
// first crossings; pools from their children's spike steps (`or`, `earliest`, `gated`); the
// output layer (and any layer under TTFS_CERTIFY=off) with the exact kernels at the steps where
// spikes arrive; hidden conv2d/dense layers by certified sums: fast dense sums with a rigorous
// error bound, a fire step read off each interval, exact potentials only where an interval
// cannot decide, and an `earliest` pool after such a layer decided from its children's
// intervals.

#include "cpu/analytic_engine.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>

#include "cpu/certified_kernels.hpp"

namespace ttfs {
namespace cpu {

namespace {

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

class AnalyticWorkspace final : public Workspace {
public:
    AnalyticWorkspace(const Model& model, const std::vector<LayerPlan>& plans, Memory& memory)
        : Workspace(model, plans, memory) {
        const size_t count = model.layers.size();
        spikes_.resize(count);
        last_relayed_.resize(count);
        pool_time_.resize(count);
        size_t most_units = 0, most_pairs = 0;
        for (size_t li = 0; li < count; ++li) {
            const Layer& layer = model.layers[li];
            const LayerPlan& plan = plans[li];
            most_units = std::max(most_units, size_t(layer.out.size()));
            if (layer.kind == TTFS_LAYER_FLATTEN) continue;  // plan.source reads through
            SpikeList& list = spikes_[li];
            list.first_step = plan.window_start;
            memory.take(list.begin, size_t(plan.window_len) + 1, 0);
            memory.take(list.unit, plan.most_spikes, 0);
            if (layer.kind == TTFS_LAYER_MAXPOOL && layer.pool_mode == TTFS_POOL_EARLIEST &&
                plans[li - 1].single_spike) {
                memory.take(pool_time_[li], size_t(layer.out.size()), kNever);
            } else if (layer.kind == TTFS_LAYER_MAXPOOL) {
                memory.take(list.unit_begin, size_t(layer.out.size()) + 1, 0);
                memory.take(list.step, plan.most_spikes, 0);
                memory.take(last_relayed_[li], size_t(layer.out.size()), kNever);
                most_pairs = std::max(most_pairs, plan.most_spikes);
            }
        }
        memory.take(fired_, most_units, 0);
        for (size_t li = 0; li < count; ++li) {
            if (model.layers[li].kind != TTFS_LAYER_MAXPOOL || model.layers[li].pool_mode != TTFS_POOL_GATED)
                continue;
            memory.take(gate_first_, most_units, kNever);
            memory.take(gate_touched_, most_units + 1, 0);  // + 1: written before it is known to be new
            break;
        }
        // Certified layers: the activation grid and its cell counts, their summed-area table,
        // the sums and bound factors of every position, the candidates, and the bins of the
        // exact recomputation (one per step of the input's spike window).
        size_t grid = 0, cells = 0, sums = 0, positions = 0, neurons = 0, widest = 0, longest = 0;
        size_t neurons_padded = 0;
        for (size_t li = 0; li < count; ++li) {
            const LayerPlan& plan = plans[li];
            if (!plan.certified) continue;
            const Projection& g = plan.projection;
            grid = std::max(grid, plan.grid_floats);
            cells = std::max(cells, size_t(plan.grid_h) * size_t(plan.grid_w + 1));
            positions = std::max(positions, size_t(g.positions()));
            sums = std::max(sums, size_t(g.positions()) * size_t(plan.bound_stride));
            neurons = std::max(neurons, size_t(g.positions()) * size_t(g.out_c));
            neurons_padded = std::max(neurons_padded, size_t(g.positions()) * size_t(plan.padded_c));
            widest = std::max(widest, size_t(plan.padded_c));
            longest = std::max(longest, size_t(plans[plans[li - 1].source].window_len));
        }
        memory.take(grid_, grid, 0.0f);
        memory.take(grid_bin_, grid, 0);
        size_t row_units = 0;
        for (size_t li = 0; li < count; ++li)
            if (plans[li].certified)
                row_units = std::max(row_units, size_t(plans[li].projection.in_w) * size_t(plans[li].projection.in_c));
        memory.take(row_bits_, row_units / 64 + 2, 0);
        memory.take(cell_nonzero_, cells, 0);
        memory.take(area_, cells, 0);
        memory.take(layer_sums_, sums, 0.0f);
        memory.take(scale_, positions, 0.0f);
        memory.take(most_, positions, 0);
        memory.take(interval_high_, neurons_padded, 0.0f);
        memory.take(interval_low_, neurons_padded, 0.0f);
        memory.take(high_, widest + kLanes, 0.0f);  // also window_sums()' row scratch
        memory.take(low_, widest + kLanes, 0.0f);
        memory.take(candidate_, std::max(neurons, neurons_padded), 0);
        memory.take(step_count_, (longest + 1) * kSpareBins, 0);
        memory.take(bins_, longest + kSpareBins, 0.0f);
        memory.take(bin_used_, longest + kSpareBins, 0);
        memory.take(checked_, count, 0);
        memory.take(recomputed_, count, 0);
        // + 1: relay_pool() writes every candidate pair before it knows whether to keep it.
        memory.take(pair_unit_, most_pairs + 1, 0);
        memory.take(pair_step_, most_pairs + 1, 0);
        memory.take(sorted_unit_, most_pairs, 0);
    }

    void run_image(const float* image) override {
        std::fill(known_count_.begin(), known_count_.end(), -1);
        for (size_t li = 0; li < model_.layers.size(); ++li) {
            switch (model_.layers[li].kind) {
                case TTFS_LAYER_INPUT: fire(li, image, nullptr); break;
                case TTFS_LAYER_MAXPOOL:
                    if (pool_time_[li].empty())
                        relay_pool(li);
                    else
                        relay_earliest(li);
                    break;
                case TTFS_LAYER_FLATTEN: break;
                case TTFS_LAYER_CONV2D:
                case TTFS_LAYER_DENSE:
                    if (plans_[li].certified && plans_[li].fuses_pool && !recording_) {
                        certified_sums(li);
                        certified_pool(li);
                        ++li;  // the pool is done
                    } else if (plans_[li].certified) {
                        certified_sums(li);
                        certified_layer(li);
                    } else {
                        integrate(li);
                        fire(li, membrane_[li].data(), membrane_[li].data());
                    }
                    break;
            }
        }
    }

    void set_certify(Certify certify) { certify_ = certify; }
    // Per layer: neurons decided by certified sums so far, and those recomputed exactly.
    const std::vector<int64_t>& checked() const { return checked_; }
    const std::vector<int64_t>& recomputed() const { return recomputed_; }

private:
    // A hidden conv2d/dense layer by certified sums (docs/ENGINES.md, "Certified sums"): each
    // neuron's potential from a fast sum in any order with fused multiply-adds, plus a
    // rigorous bound on how far that can be from the exact engine's potential. Where the
    // first_crossing() of both ends of the interval agree, that is the neuron's fire step;
    // elsewhere (a few neurons per image) exact_first_crossing() forms the exact potential
    // with the operations of the stepped engine. The result is the same bits either way.
    // The certified sums of every position of layer li (layer_sums_) and the factor of each
    // position's bound (scale_; -1 where the position cannot be bounded).
    void certified_sums(size_t li) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const LayerPlan& input_plan = plans_[li - 1];
        const SpikeList& below = spikes_[input_plan.source];
        const Projection& g = plan.projection;
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
        const int32_t* single = single_times(li);
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
                                         per_step, cell_nonzero, count_cells, row_bits_.data()});
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
        const WindowSums job{grid, plan.grid_w, g.in_c, g.out_h, g.out_w, g.kernel_h, g.kernel_w,
                             g.stride_h, g.stride_w, plan.bound_weights.data(),
                             plan.bound_bias.data(), width, sums, high_.data()};
        const int32_t per_term = window_sums(job);
        // Per position its bound's factor: gamma(ops) = ops * u / (1 - ops * u) <= 1.0102 *
        // ops * u while ops * u <= 0.01; 1.1 covers that, the activations' own error and the
        // rounding of the bound's sum. The nonzero terms of each kernel row of a window come
        // from prefix sums of the cell counts along each grid row; for short kernel rows the
        // row's length serves (a little looser, much cheaper).
        float* scale = scale_.data();
        const bool recompute_all = certify_ == Certify::kRecompute;
        // ops < 0.01 / u = 167 772 (else -1: not boundable); ops and 1.1 * u are exact enough
        // in float (an integer below 2^24; 1.1f > 1.1).
        const int32_t fixed_ops = int32_t(std::min(double(1 << 30), g.kernel_h + 1 + engine_ops + activation_ops));
        const int32_t most_ops = recompute_all ? -1 : 167772;
        const int32_t row_len = g.kernel_w * g.in_c;
        if (row_len <= kLanes) {
            const int32_t ops = per_term * row_len + fixed_ops;
            std::fill(scale, scale + g.positions(), ops <= most_ops ? float(ops) * (1.1f * 0x1p-24f) : -1.0f);
            return;
        }
        int32_t* prefix = area_.data();
        const int32_t prefix_w = plan.grid_w + 1;
        for (int32_t h = 0; h < plan.grid_h; ++h) {
            int32_t* line = prefix + h * prefix_w;
            line[0] = 0;
            for (int32_t w = 0; w < plan.grid_w; ++w) line[w + 1] = line[w] + cell_nonzero[h * plan.grid_w + w];
        }
        int32_t* most = most_.data();
        for (int32_t oh = 0; oh < g.out_h; ++oh) {
            std::fill(most, most + g.out_w, 0);
            for (int32_t kh = 0; kh < g.kernel_h; ++kh) {
                const int32_t* line = prefix + (oh * g.stride_h + kh) * prefix_w;
                for (int32_t ow = 0; ow < g.out_w; ++ow) {
                    const int32_t left = ow * g.stride_w;
                    most[ow] = std::max(most[ow], line[left + g.kernel_w] - line[left]);
                }
            }
            float* row_scale = scale + oh * g.out_w;
            for (int32_t ow = 0; ow < g.out_w; ++ow) {
                const int32_t ops = per_term * most[ow] + fixed_ops;
                row_scale[ow] = ops <= most_ops ? float(ops) * (1.1f * 0x1p-24f) : -1.0f;
            }
        }
    }

    // Bracket's view of layer li's thresholds and crossing index.
    Bracket bracket_of(size_t li) const {
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

    // The fire step of every neuron of certified layer li from certified_sums(): by the
    // intervals, or for the undecided by the exact potential.
    void certified_layer(size_t li) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const Projection& g = plan.projection;
        const int32_t width = plan.bound_stride, padded_c = plan.padded_c, out_c = g.out_c;
        const int32_t positions = g.positions();
        const float* sums = layer_sums_.data();
        const float* scale = scale_.data();
        // The verdicts; the undecided neurons' exact potentials; the spikes.
        const Bracket decision = bracket_of(li);
        int32_t* first = first_spike_time_[li].data();
        std::fill(first, first + layer.out.size(), kNever);
        int32_t* undecided = candidate_.data();
        const int32_t count = bracket(plan, layer, decision, sums, width, positions, padded_c, out_c,
                                      scale, high_.data(), low_.data(), first, undecided);
        for (int32_t c = 0; c < count; ++c) {
            const int32_t i = undecided[c];
            const int32_t j = exact_first_crossing(li, i / out_c, i % out_c);
            if (j >= 0) first[i] = layer.fire_start + j;
        }
        checked_[li] += int64_t(positions) * out_c;
        recomputed_[li] += count;
        if (plan.list_by_step) list_by_step(li);
    }

    // The spikes of neuron layer li listed by step, from its first-spike times.
    void list_by_step(size_t li) { list_times_by_step(spikes_[li], first_spike_time_[li]); }

    // The exact potential of neuron n of output position p, formed with the stepped engine's
    // operations (docs/ENGINES.md: bins in canonical order, the bias at t == 0, then V chained
    // over the steps ascending), and its first_crossing(), or -1.
    int32_t exact_first_crossing(size_t li, int32_t p, int32_t n) {
        const float v = exact_potential(li, p, n);
        return reaches(v, plans_[li].lowest_threshold) ? crossing_from_lowest(plans_[li], model_.layers[li], v) : -1;
    }

    // Out of line: it runs for a few neurons per image.
    __attribute__((noinline)) float exact_potential(size_t li, int32_t p, int32_t n) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const Projection& g = plan.projection;
        const SpikeList& below = spikes_[plans_[li - 1].source];
        const int32_t* single = single_times(li);  // else each unit's steps, from the pool's list
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
            // canonical order; certified_sums() left each unit's bin in grid_bin_ (a spare bin
            // for padding and for units that add nothing), so no branches.
            const int32_t row_len = kernel_w * in_c;
            for (int32_t kh = 0; kh < g.kernel_h; ++kh) {
                const int32_t* bin = grid_bin_.data() +
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

    // Certified layer li and the `earliest` pool li + 1 after it, when first-spike times are not
    // recorded (docs/ENGINES.md, "Certified sums"). first_crossing() does not increase with the
    // potential, so a pool unit's step, the earliest of its children's, is the first_crossing()
    // of the largest child potential, which lies between the largest low and the largest high
    // end of the children's intervals. The layer's own spike count needs only which neurons
    // reach the lowest threshold. Either question, where the intervals cannot answer it, is
    // answered by the exact potentials of the neurons concerned. The layer's first-spike times
    // are not formed.
    void certified_pool(size_t li) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const Projection& g = plan.projection;
        const int32_t padded_c = plan.padded_c, out_c = g.out_c, positions = g.positions();
        float* high = interval_high_.data();
        float* low = interval_low_.data();
        int32_t* undecided = candidate_.data();
        int32_t count = 0;
        const int32_t undecided_count =
            intervals(plan, layer_sums_.data(), plan.bound_stride, positions, padded_c, out_c,
                      scale_.data(), plan.lowest_threshold, high, low, &count, undecided);
        int64_t recomputed = undecided_count;
        for (int32_t c = 0; c < undecided_count; ++c) {
            const int32_t i = undecided[c];  // p * padded_c + n
            const float v = exact_potential(li, i / padded_c, i % padded_c);
            high[i] = low[i] = v;  // equal ends: exact
            count += reaches(v, plan.lowest_threshold) ? 1 : 0;
        }
        known_count_[li] = count;
        // The pool.
        const size_t pool = li + 1;
        const Projection& pg = plans_[pool].projection;
        int32_t* time = pool_time_[pool].data();
        const int32_t open = pool_verdicts(plan, layer, bracket_of(li), pg, padded_c, high, low,
                                           time, undecided);
        for (int32_t k = 0; k < open; ++k) {
            const int32_t unit = undecided[k];
            const int32_t c = unit % pg.out_c, position = unit / pg.out_c;
            const int32_t j = settle_unit(li, pg, position / pg.out_w, position % pg.out_w, c, high,
                                          low, recomputed);
            time[unit] = j >= 0 ? layer.fire_start + j : kNever;
        }
        checked_[li] += int64_t(positions) * out_c;
        recomputed_[li] += recomputed;
        if (plans_[pool].list_by_step) list_pool_by_step(pool);
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
    int32_t settle_unit(size_t li, const Projection& pg, int32_t oh, int32_t ow, int32_t c,
                        float* high, float* low, int64_t& recomputed) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const Bracket b = bracket_of(li);
        const int32_t padded_c = plan.padded_c, out_w = plan.projection.out_w;
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
            high[widest] = low[widest] = exact_potential(li, widest / padded_c, widest % padded_c);
            ++recomputed;
        }
        throw std::runtime_error("layer '" + layer.name + "': the earliest-pool unit (" + std::to_string(oh) +
                                 ", " + std::to_string(ow) + ", " + std::to_string(c) +
                                 ") was not settled after making all its children exact (a potential "
                                 "that is not a number?)");
    }

    // An `earliest` pool's spikes listed by step, from its units' steps.
    void list_pool_by_step(size_t li) { list_times_by_step(spikes_[li], pool_time_[li]); }

    // A layer's spikes listed by step from its units' steps (kNever: none): the units that
    // spiked (inside the window, which is all of them) gathered first without branches, then
    // a counting sort of those by step (units ascending within a step).
    void list_times_by_step(SpikeList& list, const std::vector<int32_t>& times) {
        const int32_t* time = times.data();
        const int32_t units = int32_t(times.size());
        const uint32_t steps = uint32_t(list.steps());
        const int32_t first_step = list.first_step;
        int32_t* spiking = fired_.data();
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

    // The complete potential of a neuron layer: first_spike_time = fire_start + first_crossing
    // (or -1); a neuron that fires is reset to 0 (`reset`: conv2d/dense; null for the input,
    // whose potential is the pixel). Then its spikes are listed by step.
    void fire(size_t li, const float* potential, float* reset) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        int32_t* first = first_spike_time_[li].data();
        const int32_t units = int32_t(first_spike_time_[li].size());
        std::fill(first, first + units, kNever);
        SpikeList& list = spikes_[li];
        std::fill(list.begin.begin(), list.begin.end(), 0);
        if (!layer.fires) return;
        // Candidates: the neurons at or above the lowest threshold, listed without branching
        // (whether a neuron fires is close to a coin toss in a busy layer).
        const float lowest = plan.lowest_threshold;
        int32_t* candidate = fired_.data();
        int32_t candidates = 0;
        for (int32_t i = 0; i < units; ++i) {
            candidate[candidates] = i;
            candidates += reaches(potential[i], lowest) ? 1 : 0;
        }
        int32_t* per_step = list.begin.data() + 1;  // spikes at step k, counted in begin[k + 1]
        int32_t fired = 0;
        for (int32_t c = 0; c < candidates; ++c) {
            const int32_t i = candidate[c];
            const int32_t j = crossing_from_lowest(plan, layer, potential[i]);
            if (j < 0) continue;
            first[i] = layer.fire_start + j;
            if (reset != nullptr) reset[i] = 0.0f;
            ++per_step[j];
            candidate[fired++] = i;  // the firing neurons, still ascending
        }
        if (!plan.list_by_step) return;
        place_by_step(list, [&](auto place) {
            for (int32_t s = 0; s < fired; ++s) place(candidate[s], first[candidate[s]] - layer.fire_start);
        });
    }

    // The spike step of every unit of the layer whose spikes layer `li` receives, when each
    // of them spikes at most once (a neuron layer, or an `earliest` pool of such); else null.
    const int32_t* single_times(size_t li) const {
        const size_t source = plans_[li - 1].source;
        if (model_.layers[source].has_neurons()) return first_spike_time_[source].data();
        return pool_time_[source].empty() ? nullptr : pool_time_[source].data();
    }

    // An `earliest` pool whose children spike at most once: each unit spikes at the earliest
    // step of its children (the relay of docs/ENGINES.md, as a minimum per unit), then the
    // spikes are listed by step.
    void relay_earliest(size_t li) {
        const Projection& g = plans_[li].projection;
        const int32_t* child = single_times(li);
        int32_t* time = pool_time_[li].data();
        for (int32_t oh = 0; oh < g.out_h; ++oh) {
            for (int32_t ow = 0; ow < g.out_w; ++ow) {
                uint32_t* earliest = reinterpret_cast<uint32_t*>(time + (oh * g.out_w + ow) * g.out_c);
                earliest_of_window(g, child, oh, ow, earliest);
            }
        }
        if (plans_[li].list_by_step) list_pool_by_step(li);
    }

    // The pool's spikes from its children's, which arrive listed by step: each child spike at
    // step t is relayed by the units whose window holds the child, once per unit and step
    // (`or`), only by units that have not relayed yet (`earliest`), or once per unit and step
    // where the gate of a `gated` pool lets it through (gated_pairs()). The (unit, step) pairs
    // come out in step order; two stable counting sorts, by unit and then by step, give both
    // lists (by unit: each unit's steps ascending; by step: each step's units ascending)
    // without a comparison sort, and without data-dependent branches, as whether a pair is
    // new is close to a coin toss.
    void relay_pool(size_t li) {
        const Layer& layer = model_.layers[li];
        const LayerPlan& plan = plans_[li];
        const Projection& g = plan.projection;
        const UnitOrigin* origin = plan.fanout.origin.data();
        const OutputRange* rows_fed = plan.fanout.rows.data();
        const OutputRange* cols_fed = plan.fanout.cols.data();
        const SpikeList& below = spikes_[plans_[li - 1].source];
        SpikeList& list = spikes_[li];
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
        if (gated) pairs = gated_pairs(li, unit_begin, per_step);
        for (int32_t k = 0; !gated && k < below.steps(); ++k) {
            const int32_t t = below.first_step + k;
            const int32_t* children = below.at(k);
            for (int32_t s = 0, count = below.count(k); s < count; ++s) {
                const UnitOrigin o = origin[children[s]];
                const OutputRange rows = rows_fed[o.h], cols = cols_fed[o.w];
                for (int32_t oh = rows.first; oh <= rows.last; ++oh) {
                    for (int32_t ow = cols.first; ow <= cols.last; ++ow) {
                        const int32_t u = (oh * g.out_w + ow) * g.out_c + o.c;
                        // `or`: new unless already relayed at t; `earliest`: unless ever.
                        const bool fresh = is_or ? last[u] != t : last[u] == kNever;
                        pair_unit[pairs] = u;
                        pair_step[pairs] = t;
                        pairs += fresh ? 1 : 0;
                        last[u] = fresh ? t : last[u];
                        ++unit_begin[fresh ? u + 1 : 0];  // unit_begin[0] counts the rest
                        ++(fresh ? per_step[k] : dropped);
                    }
                }
            }
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

    // relay_pool()'s (unit, step) pairs for a `gated` pool (see Gate), in step order, counted
    // per unit and per step as there; returns the number of pairs. The children are the
    // neurons of the layer below (the only kind a gated pool may read), so each spikes once,
    // at its first-spike time. Per unit, the step of its first child spike tells whether a
    // child fired before the current step (E not empty); only an exact tie of the threshold
    // with 0 or 1 needs a look at the window (first_child_spikes()).
    int32_t gated_pairs(size_t li, int32_t* unit_begin, int32_t* per_step) {
        const LayerPlan& plan = plans_[li];
        const Projection& g = plan.projection;
        const UnitOrigin* origin = plan.fanout.origin.data();
        const OutputRange* rows_fed = plan.fanout.rows.data();
        const OutputRange* cols_fed = plan.fanout.cols.data();
        const SpikeList& below = spikes_[li - 1];
        const int32_t* child_time = first_spike_time_[li - 1].data();
        const uint8_t* gate = plan.gate.data();
        int32_t* last = last_relayed_[li].data();  // per unit: its last step, or kNever
        int32_t* first_child = gate_first_.data();  // per unit: its first child's step, or kNever
        int32_t* touched = gate_touched_.data();    // the units whose first_child was set
        int32_t* pair_unit = pair_unit_.data();
        int32_t* pair_step = pair_step_.data();
        int32_t pairs = 0, touched_count = 0;
        for (int32_t k = 0; k < below.steps(); ++k) {
            const int32_t t = below.first_step + k;
            const Gate code = Gate(gate[k]);
            const int32_t* children = below.at(k);
            for (int32_t s = 0, count = below.count(k); s < count; ++s) {
                const UnitOrigin o = origin[children[s]];
                const OutputRange rows = rows_fed[o.h], cols = cols_fed[o.w];
                for (int32_t oh = rows.first; oh <= rows.last; ++oh) {
                    for (int32_t ow = cols.first; ow <= cols.last; ++ow) {
                        const int32_t u = (oh * g.out_w + ow) * g.out_c + o.c;
                        const int32_t before = first_child[u];
                        touched[touched_count] = u;
                        touched_count += before == kNever ? 1 : 0;
                        first_child[u] = before == kNever ? t : before;
                        const bool earlier = before != kNever && before != t;  // E not empty
                        bool open = true;
                        if (code == kGateFirst)
                            open = !earlier;
                        else if (code == kGateTieOne)
                            open = !earlier || first_child_spikes(g, child_time, oh, ow, o.c, t, true);
                        else if (code == kGateTieZero)
                            open = !earlier && first_child_spikes(g, child_time, oh, ow, o.c, t, false);
                        const bool fresh = open && last[u] != t;
                        pair_unit[pairs] = u;
                        pair_step[pairs] = t;
                        pairs += fresh ? 1 : 0;
                        last[u] = fresh ? t : last[u];
                        ++unit_begin[fresh ? u + 1 : 0];  // unit_begin[0] counts the rest
                        per_step[k] += fresh ? 1 : 0;
                    }
                }
            }
        }
        for (int32_t i = 0; i < touched_count; ++i) first_child[touched[i]] = kNever;  // next image
        return pairs;
    }

    // Whether the first child in window order of pool unit (oh, ow, c) — among the children
    // that have fired by step t when `fired_by_t`, else among all — fires at t.
    static bool first_child_spikes(const Projection& g, const int32_t* child_time, int32_t oh, int32_t ow,
                                   int32_t c, int32_t t, bool fired_by_t) {
        const WindowInside win = window_inside(g, oh, ow);
        for (int32_t kh = win.kh_first; kh < win.kh_end; ++kh) {
            for (int32_t kw = win.kw_first; kw < win.kw_end; ++kw) {
                const int32_t time = child_time[((win.ih0 + kh) * g.in_w + win.iw0 + kw) * g.in_c + c];
                if (!fired_by_t || (time != kNever && time <= t)) return time == t;
            }
        }
        return false;
    }

    // V = +0 + (S(0) + bias) * 1, then V + S(t) * k(t) for each later step with arrivals,
    // ascending: the stepped engine's operations for every neuron, only at the steps where
    // something arrives.
    void integrate(size_t li) {
        const Layer& layer = model_.layers[li];
        const SpikeList& below = spikes_[plans_[li - 1].source];
        if (layer.kind == TTFS_LAYER_DENSE && plans_[li].padded_c == kLanes) {
            dense_by_step(layer, below.begin.data(), below.unit.data(), below.steps(),
                          below.first_step, plans_[li].weights(layer), membrane_[li].data());
            return;
        }
        const int32_t zero = -below.first_step;  // step 0's index in the list, if inside
        const bool spikes_at_zero = zero >= 0 && zero < below.steps();
        integrate_step(li, 0, spikes_at_zero ? below.at(zero) : nullptr,
                       spikes_at_zero ? below.count(zero) : 0);
        for (int32_t k = 0; k < below.steps(); ++k) {
            const int32_t t = below.first_step + k;
            if (t == 0 || below.count(k) == 0 || !layer.integrates_at(t)) continue;
            integrate_step(li, t, below.at(k), below.count(k));
        }
    }

    std::vector<SpikeList> spikes_;  // per layer but flatten
    std::vector<int32_t> fired_;     // scratch: a layer's candidate, then firing, neurons
    // maxpool scratch: per unit the step it last relayed (kNever between images); the (unit,
    // step) pairs of relay_pool() as found, and their units sorted.
    std::vector<std::vector<int32_t>> last_relayed_;
    std::vector<int32_t> pair_unit_, pair_step_, sorted_unit_;
    // `earliest` pools of single spikes: per unit its step, or kNever (relay_earliest()).
    std::vector<std::vector<int32_t>> pool_time_;
    // gated_pairs() scratch: per unit the step of its first child spike (kNever between
    // images), and the units that have one.
    std::vector<int32_t> gate_first_, gate_touched_;
    // certified_layer() and exact_first_crossing() scratch (see the constructor).
    Certify certify_ = Certify::kOn;
    std::vector<float> grid_, layer_sums_, scale_, high_, low_, bins_;
    std::vector<float> interval_high_, interval_low_;  // certified_pool(): per neuron, padded
    std::vector<int32_t> cell_nonzero_, area_, candidate_, step_count_;
    std::vector<int32_t> grid_bin_;  // per grid unit its bin in exact_potential()
    std::vector<uint64_t> row_bits_;  // grid_rows_avx512() scratch
    std::vector<int32_t> most_;      // certified_sums(): per output column, its bound's count
    std::vector<uint8_t> bin_used_;
    std::vector<int64_t> checked_, recomputed_;
};

}  // namespace

std::unique_ptr<Workspace> make_analytic_workspace(const Model& model, const std::vector<LayerPlan>& plans,
                                                   Memory& memory, Certify certify) {
    auto workspace = std::make_unique<AnalyticWorkspace>(model, plans, memory);
    workspace->set_certify(certify);
    return workspace;
}

const std::vector<int64_t>& certified_checked(const Workspace& analytic) {
    return static_cast<const AnalyticWorkspace&>(analytic).checked();
}

const std::vector<int64_t>& certified_recomputed(const Workspace& analytic) {
    return static_cast<const AnalyticWorkspace&>(analytic).recomputed();
}

}  // namespace cpu
}  // namespace ttfs
