// cli_output.cpp — ttfs-infer's JSON, tables and per-image rows; see cli_output.hpp.

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "cli_output.hpp"
#include "infer_efficiency.h"
#include "ttfs.h"

namespace ttfs_cli {

namespace {

// The shortest decimal that reads back as exactly `value` (36.975, not 36.975000000000001).
std::string shortest_double(double value) {
    for (int digits = 15; digits < 17; ++digits) {
        std::string text = format("%.*g", digits, value);
        if (std::strtod(text.c_str(), nullptr) == value) return text;
    }
    return format("%.17g", value);
}

}  // namespace

std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (unsigned char ch : s) {
        switch (ch) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (ch < 0x20) out += format("\\u%04x", ch);
                else out += char(ch);
        }
    }
    return out + "\"";
}

// JSON has no NaN or infinity; a potential could in principle be either.
std::string json_number(double value) {
    return std::isfinite(value) ? shortest_double(value) : std::string("null");
}
// Nine significant digits are enough to give back the exact float32.
std::string json_float32(float value) {
    return std::isfinite(value) ? format("%.9g", double(value)) : std::string("null");
}

double images_per_second(const SetSummary& summary) {
    // A tiny run can finish within the clock's resolution; report a rate, never a division by 0.
    return double(summary.n) / std::max(summary.run_seconds, 1e-9);
}

std::string common_json_fields(const Options& options, const ModelInfo& info, const Runner& runner,
                               const SetSummary& summary) {
    std::string out;
    out += "\"model\": " + json_string(options.model_path);
    out += ", \"images\": " + json_string(options.images_path);
    out += ", \"labels\": " + (options.labels_path.empty() ? std::string("null") : json_string(options.labels_path));
    out += ", \"output\": " + (options.output_path.empty() ? std::string("null") : json_string(options.output_path));
    out += ", \"backend\": " + json_string(backend_name(runner.backend));
    out += ", \"engine\": " + json_string(engine_name(runner.engine));
    out += ", \"readout\": " + json_string(readout_name(info.readout));
    out += format(", \"n\": %" PRIu64, summary.n);
    out += ", \"accuracy\": " +
           (summary.labelled ? json_number(double(summary.correct) / double(summary.n)) : std::string("null"));
    out += ", \"correct\": " + (summary.labelled ? format("%" PRIu64, summary.correct) : std::string("null"));
    out += ", \"images_per_second\": " + json_number(images_per_second(summary));
    out += ", \"spikes_per_image\": {";
    for (size_t l = 0; l < info.neuron_layers.size(); ++l) {
        out += (l ? ", " : "") + json_string(info.neuron_layers[l].name) + ": " +
               json_number(double(summary.spike_totals[l]) / double(summary.n));
    }
    out += "}";
    out += ", \"no_output_spike\": " + (info.readout == TTFS_READOUT_FIRST_SPIKE
                                            ? format("%" PRIu64, summary.no_output_spike)
                                            : std::string("null"));
    return out;
}

// The efficiency figures (infer_efficiency.h) as JSON fields, each starting with ", ".
std::string efficiency_json_fields(const ttfs_model* model, const ModelInfo& info, const Runner& runner,
                                   const SetSummary& summary, const ttfs_efficiency::Counter& counter) {
    const std::vector<int64_t>& sizes = counter.neuron_sizes();
    std::string out = ", \"spikes_per_neuron\": {";
    double hidden = 0;
    for (size_t l = 0; l < info.neuron_layers.size(); ++l) {
        double per_image = double(summary.spike_totals[l]) / double(summary.n);
        out += (l ? ", " : "") + json_string(info.neuron_layers[l].name) + ": " +
               json_number(per_image / double(sizes[l]));
        if (l > 0 && l + 1 < info.neuron_layers.size()) hidden += per_image;  // not input, not output
    }
    out += "}, \"hidden_spikes_per_image\": " + json_number(hidden);
    std::string synops = "{", macs = "{";
    double synops_total = 0;
    int64_t macs_total = 0;
    bool countable = true;
    for (size_t s = 0; s < counter.stages().size(); ++s) {
        const ttfs_efficiency::Stage& stage = counter.stages()[s];
        synops += (s ? ", " : "") + json_string(stage.receiver_name) + ": " +
                  (stage.countable ? json_number(double(stage.synaptic_operations) / double(summary.n))
                                   : std::string("null"));
        macs += (s ? ", " : "") + json_string(stage.receiver_name) + ": " + format("%" PRId64, stage.multiply_adds);
        synops_total += double(stage.synaptic_operations) / double(summary.n);
        macs_total += stage.multiply_adds;
        countable = countable && stage.countable;
    }
    out += ", \"synaptic_operations_per_image\": " + synops + "}";
    out += ", \"synaptic_operations_total\": " + (countable ? json_number(synops_total) : std::string("null"));
    out += ", \"ann_multiply_adds\": " + macs + "}";
    out += format(", \"ann_multiply_adds_total\": %" PRId64, macs_total);
    std::vector<int64_t> blank =
        ttfs_efficiency::Counter::blank_image_spikes(model, runner.backend, runner.engine, counter.neuron_layers());
    out += ", \"blank_image_spikes\": {";
    int64_t blank_hidden = 0;
    for (size_t l = 0; l < blank.size(); ++l) {
        out += (l ? ", " : "") + json_string(info.neuron_layers[l].name) + ": " + format("%" PRId64, blank[l]);
        if (l > 0 && l + 1 < blank.size()) blank_hidden += blank[l];
    }
    out += format("}, \"blank_image_hidden_spikes\": %" PRId64, blank_hidden);
    return out;
}

void print_spikes_table(std::FILE* out, const ModelInfo& info, const SetSummary& summary) {
    size_t width = 5;
    for (const NeuronLayer& layer : info.neuron_layers) width = std::max(width, layer.name.size());
    std::fprintf(out, "spikes per image:\n");
    for (size_t l = 0; l < info.neuron_layers.size(); ++l)
        std::fprintf(out, "  %-*s  %.2f\n", int(width), info.neuron_layers[l].name.c_str(),
                     double(summary.spike_totals[l]) / double(summary.n));
}

// Accumulates one batch's spike counts (per neuron layer) into the summary.
void add_spike_counts(ttfs_session* session, const ModelInfo& info, int32_t n, SetSummary& summary,
                      std::vector<int32_t>& counts) {
    counts.resize(size_t(n));
    for (size_t l = 0; l < info.neuron_layers.size(); ++l) {
        const NeuronLayer& layer = info.neuron_layers[l];
        ttfs_status status = ttfs_session_spike_counts(session, layer.index, counts.data(), counts.size());
        if (status != TTFS_OK) library_failure("cannot read the spike counts of layer " + quoted(layer.name), status);
        for (int32_t count : counts) summary.spike_totals[l] += uint64_t(count);
        if (layer.index == info.output_layer && info.readout == TTFS_READOUT_FIRST_SPIKE)
            for (int32_t count : counts) summary.no_output_spike += count == 0;
    }
}

// ---- --output rows --------------------------------------------------------------------------

RowWriter::RowWriter(const Options& options, const ModelInfo& info, bool files, bool labelled)
    : path_(options.output_path), info_(info), files_(files), labelled_(labelled) {
    jsonl_ = ends_with(lower(path_), ".jsonl");
    top_k_ = std::min(options.top_k, info.classes);
    if (options.top_k_given && options.top_k > info.classes)
        usage_error(format("--top-k %d is more than the model's %d classes", options.top_k, info.classes));
    if (path_ == "-") {
        out_ = stdout;
    } else {
        out_ = std::fopen(path_.c_str(), "w");
        if (!out_) fail("cannot write output file " + quoted(path_) + ": " + std::strerror(errno));
    }
    const ttfs_layer_info& output = info.layers.back();
    fire_start_ = output.fire_window[0];
    tau_ = output.tau_fire;
    td_ = output.td_fire;
    vth0_ = output.vth0;
    if (!jsonl_) {
        std::string header = "index";
        if (files_) header += ",file";
        header += ",prediction,confidence";
        for (int32_t k = 1; k <= top_k_; ++k) header += format(",class_%d,score_%d", k, k);
        if (labelled_) header += ",label,correct";
        std::fprintf(out_, "%s\n", header.c_str());
    }
}

RowWriter::~RowWriter() {
    if (out_ && out_ != stdout) std::fclose(out_);
}

float RowWriter::score(const float* potentials, const int32_t* times, int32_t k) const {
    if (times && times[k] >= 0)
        return vth0_ * std::exp(-(float(times[k] - fire_start_) - td_) / tau_);
    return potentials[k];
}

void RowWriter::write(uint64_t index, const std::string& file, int32_t prediction, const float* potentials,
                      const int32_t* times, int32_t label) {
    scores_.resize(size_t(info_.classes));
    order_.resize(size_t(info_.classes));
    for (int32_t k = 0; k < info_.classes; ++k) scores_[size_t(k)] = score(potentials, times, k);
    std::iota(order_.begin(), order_.end(), 0);
    // Highest score first; ties by the lower class, as the prediction breaks them.
    std::stable_sort(order_.begin(), order_.end(), [&](int32_t a, int32_t b) {
        return scores_[size_t(a)] > scores_[size_t(b)];
    });
    double top = -std::numeric_limits<double>::infinity();
    for (float v : scores_) top = std::max(top, double(v));
    double total = 0;
    for (float v : scores_) total += std::exp(double(v) - top);
    const double confidence = std::exp(double(scores_[size_t(prediction)]) - top) / total;
    std::string line;
    if (jsonl_) {
        line = format("{\"index\": %" PRIu64, index);
        if (files_) line += ", \"file\": " + json_string(file);
        line += format(", \"prediction\": %d, \"confidence\": ", prediction) + json_number(confidence);
        line += ", \"top_k\": [";
        for (int32_t k = 0; k < top_k_; ++k) {
            const int32_t cls = order_[size_t(k)];
            line += (k ? ", " : "") + format("{\"class\": %d, \"score\": ", cls) + json_float32(scores_[size_t(cls)]) + "}";
        }
        line += "]";
        if (labelled_) line += format(", \"label\": %d, \"correct\": %s", label, label == prediction ? "true" : "false");
        line += "}";
    } else {
        line = format("%" PRIu64, index);
        if (files_) line += "," + csv_field(file);
        line += format(",%d,", prediction) + format("%.9g", confidence);
        for (int32_t k = 0; k < top_k_; ++k) {
            const int32_t cls = order_[size_t(k)];
            line += format(",%d,%.9g", cls, double(scores_[size_t(cls)]));
        }
        if (labelled_) line += format(",%d,%d", label, label == prediction ? 1 : 0);
    }
    if (std::fprintf(out_, "%s\n", line.c_str()) < 0)
        fail("cannot write output file " + quoted(path_) + ": " + std::strerror(errno));
}

void RowWriter::finish() {
    if (std::fflush(out_) != 0 || std::ferror(out_))
        fail("cannot write output file " + quoted(path_) + ": " + std::strerror(errno));
    if (out_ != stdout) {
        std::FILE* file = out_;
        out_ = nullptr;
        if (std::fclose(file) != 0) fail("cannot write output file " + quoted(path_) + ": " + std::strerror(errno));
    }
}

std::string RowWriter::csv_field(const std::string& text) {
    if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
    std::string out = "\"";
    for (char ch : text) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return out + "\"";
}
}  // namespace ttfs_cli
