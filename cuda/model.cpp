// Derived model fields (threshold and kernel tables), layers' window geometry and the
// analytic-engine window check.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
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

WindowGeometry window_geometry(const Layer& layer) {
    WindowGeometry g;
    if (layer.kind == TTFS_LAYER_DENSE) {
        g.in_h = g.in_w = 1;
        g.in_c = int32_t(layer.in.size());
        g.out_h = g.out_w = 1;
        g.out_c = int32_t(layer.out.size());
        g.kernel_h = g.kernel_w = g.stride_h = g.stride_w = 1;
        return g;
    }
    g.in_h = layer.in.h;
    g.in_w = layer.in.w;
    g.in_c = layer.in.c;
    g.out_h = layer.out.h;
    g.out_w = layer.out.w;
    g.out_c = layer.out.c;
    g.kernel_h = layer.kernel_h;
    g.kernel_w = layer.kernel_w;
    g.stride_h = layer.stride_h;
    g.stride_w = layer.stride_w;
    g.pad_top = layer.pad_top;
    g.pad_left = layer.pad_left;
    return g;
}

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

int64_t saturating_mul(int64_t a, int64_t b) {
    int64_t product = 0;
    if (__builtin_mul_overflow(a, b, &product)) return std::numeric_limits<int64_t>::max();
    return product;
}

std::vector<SpikeBounds> spike_bounds(const Model& model) {
    std::vector<SpikeBounds> bounds(model.layers.size());
    for (size_t i = 0; i < model.layers.size(); ++i) {
        const Layer& layer = model.layers[i];
        SpikeBounds& b = bounds[i];
        const int64_t units = layer.out.size();
        if (layer.has_neurons()) {
            if (layer.fires && layer.fire_len() > 0) {
                b.window_start = layer.fire_start;
                b.window_len = layer.fire_len();
                b.per_unit = 1;
            }
            b.total = units * b.per_unit;
            continue;
        }
        const SpikeBounds& below = bounds[i - 1];
        b.window_start = below.window_start;
        b.window_len = below.window_len;
        if (layer.kind == TTFS_LAYER_FLATTEN) {
            b.per_unit = below.per_unit;
            b.total = below.total;
            continue;
        }
        // maxpool. A window holds at most min(kernel, input) children per axis; a child lies in
        // the windows of at most ceil(kernel / stride) units per axis (and no more than exist).
        b.children = int64_t(std::min(layer.kernel_h, layer.in.h)) * std::min(layer.kernel_w, layer.in.w);
        const int64_t rows = std::min<int64_t>((int64_t(layer.kernel_h) + layer.stride_h - 1) / layer.stride_h, layer.out.h);
        const int64_t cols = std::min<int64_t>((int64_t(layer.kernel_w) + layer.stride_w - 1) / layer.stride_w, layer.out.w);
        b.parents = rows * cols;
        if (layer.pool_mode == TTFS_POOL_EARLIEST)
            b.per_unit = std::min<int64_t>(below.per_unit, 1);
        else  // `or`: once per distinct step of its children
            b.per_unit = std::min<int64_t>(saturating_mul(b.children, below.per_unit), b.window_len);
        b.total = std::min(saturating_mul(units, b.per_unit), saturating_mul(below.total, b.parents));
    }
    return bounds;
}

namespace {

std::string number_text(double value) {
    std::ostringstream text;
    text.precision(9);
    text << value;
    return text.str();
}

}  // namespace

ttfs_status check_derived_values(const Model& model, std::string& error) {
    auto fail = [&](const Layer& layer, const std::string& what) {
        error = "layer '" + layer.name + "': " + what;
        return TTFS_ERR_BAD_VALUE;
    };
    for (const Layer& layer : model.layers) {
        if (!layer.has_neurons()) continue;
        for (size_t j = 0; j < layer.fire_threshold.size(); ++j) {
            if (std::isfinite(layer.fire_threshold[j])) continue;
            return fail(layer, "the threshold at fire step " + std::to_string(j) + " (global step " +
                                   std::to_string(layer.fire_start + int64_t(j)) + ") is " +
                                   number_text(layer.fire_threshold[j]) + ": vth0 * exp(-(" +
                                   std::to_string(j) + " - td_fire) / tau_fire) with vth0 " +
                                   number_text(layer.vth0) + ", td_fire " + number_text(layer.td_fire) +
                                   ", tau_fire " + number_text(layer.tau_fire) +
                                   " overflows float32; expected a finite threshold at every step of "
                                   "the fire window (td_fire far too large for tau_fire)");
        }
        for (size_t j = 0; j < layer.integ_kernel.size(); ++j) {
            if (std::isfinite(layer.integ_kernel[j])) continue;
            return fail(layer, "the integration kernel at step " + std::to_string(j) +
                                   " of the integration window (global step " +
                                   std::to_string(layer.integ_start + int64_t(j)) + ") is " +
                                   number_text(layer.integ_kernel[j]) + ": exp(-(" + std::to_string(j) +
                                   " - td_integ) / tau_integ) with td_integ " + number_text(layer.td_integ) +
                                   ", tau_integ " + number_text(layer.tau_integ) +
                                   " overflows float32; expected a finite kernel at every step of the "
                                   "integration window (td_integ far too large for tau_integ)");
        }
        if (layer.kind == TTFS_LAYER_INPUT) {
            // The largest uint8 pixel must scale to a finite input (ttfs_session_run_u8).
            const float brightest = float(255) / layer.input_divisor;
            if (!std::isfinite(brightest))
                return fail(layer, "input_divisor is " + number_text(layer.input_divisor) +
                                       ": a pixel of 255 would scale to " + number_text(brightest) +
                                       "; expected a divisor that keeps 255 / input_divisor finite");
        }
    }

    // A bound on every potential an engine can form (docs/FORMAT.md, "Derived values"). Every
    // potential is a chain of float32 adds over terms w * k(t) (a weight at one of its unit's
    // spike steps times that step's kernel) and the bias; its partial sums, as computed, never
    // exceed (the sum of the terms' magnitudes) * (1 + 2^-24)^(roundings per term). If that is
    // below FLT_MAX for every neuron, nothing overflows, and with finite operands no NaN can
    // appear: the potentials are finite by construction, in every engine and backend.
    const std::vector<SpikeBounds> bounds = spike_bounds(model);
    for (size_t i = 1; i < model.layers.size(); ++i) {
        const Layer& layer = model.layers[i];
        if (layer.kind != TTFS_LAYER_CONV2D && layer.kind != TTFS_LAYER_DENSE) continue;
        const SpikeBounds& in = bounds[i - 1];
        // Integrated steps with possible arrivals: step 0 and the integration window, inside
        // the input's spike window. A unit adds at most once per step.
        const int64_t first = std::max<int64_t>(in.window_start, layer.integ_start);
        const int64_t last = std::min<int64_t>(int64_t(in.window_start) + in.window_len, layer.integ_end);
        int64_t steps = std::max<int64_t>(0, last - first);
        const bool zero_in_window = in.window_len > 0 && in.window_start == 0;
        if (zero_in_window && !(layer.integ_start == 0 && layer.integ_end > 0)) ++steps;
        const int64_t per_unit = std::min(in.per_unit, steps);
        double kernel = 1.0;  // t == 0 integrates with weight exactly 1
        for (float k : layer.integ_kernel) kernel = std::max(kernel, double(k));
        const size_t out_c = size_t(layer.out.c);
        const size_t rows = out_c == 0 ? 0 : layer.weights.size() / out_c;
        std::vector<double> sum(out_c, 0.0);
        for (size_t r = 0; r < rows; ++r)
            for (size_t n = 0; n < out_c; ++n) sum[n] += std::fabs(double(layer.weights[r * out_c + n]));
        double most = 0.0;
        size_t worst = 0;
        for (size_t n = 0; n < out_c; ++n) {
            const double bound = std::fabs(double(layer.bias[n])) + sum[n] * kernel * double(per_unit);
            if (bound > most || n == 0) {
                most = bound;
                worst = n;
            }
        }
        // Roundings a term passes through: the adds of its step's synaptic sum (at most one per
        // presynaptic unit), the multiply by the kernel, the adds of the chain over the steps,
        // the bias add. ln(1 + u) < u, and 1.01 covers the rounding of this double arithmetic.
        const double roundings = double(rows) + double(steps) + 3.0;
        const double growth = std::exp(roundings * 0x1p-24 * 1.01);
        const double reach = most * growth;
        if (!(reach <= double(FLT_MAX)))
            return fail(layer, "its membrane potentials could reach " + number_text(reach) +
                                   " (neuron " + std::to_string(worst) + ": |bias| " +
                                   number_text(std::fabs(double(layer.bias[worst]))) +
                                   " + the sum of its |weights| " + number_text(sum[worst]) +
                                   " x the largest integration kernel " + number_text(kernel) + " x " +
                                   std::to_string(per_unit) + " spike(s) per input unit" +
                                   (growth > 1.0 + 1e-6 ? ", x " + number_text(growth) + " for rounding" : std::string()) +
                                   "), beyond float32's largest value " + number_text(double(FLT_MAX)) +
                                   "; expected weights, biases and kernels that keep every potential finite");
    }
    return TTFS_OK;
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
