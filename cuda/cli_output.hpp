// cli_output.hpp — what ttfs-infer writes: JSON values, the --json fields shared by a single
// image and a set (with the efficiency figures of infer_efficiency.h), the spikes table of the
// text summary, and the --output rows (CSV, or JSON Lines for *.jsonl). Not part of libttfs.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cli_options.hpp"
#include "cli_session.hpp"
#include "infer_efficiency.h"
#include "ttfs.h"

namespace ttfs_cli {

std::string json_string(const std::string& s);
// JSON has no NaN or infinity (null); otherwise the shortest decimal that reads back exactly.
std::string json_number(double value);
// Nine significant digits: enough to give back the exact float32.
std::string json_float32(float value);

struct SetSummary {
    uint64_t n = 0;
    uint64_t correct = 0;
    bool labelled = false;
    double run_seconds = 0;
    std::vector<uint64_t> spike_totals;  // per neuron layer, over all images
    uint64_t no_output_spike = 0;        // first_spike readout only
};

double images_per_second(const SetSummary& summary);

std::string common_json_fields(const Options& options, const ModelInfo& info, const Runner& runner,
                               const SetSummary& summary);

// The efficiency figures (infer_efficiency.h) as JSON fields, each starting with ", ".
std::string efficiency_json_fields(const ttfs_model* model, const ModelInfo& info, const Runner& runner,
                                   const SetSummary& summary, const ttfs_efficiency::Counter& counter);

void print_spikes_table(std::FILE* out, const ModelInfo& info, const SetSummary& summary);

// Accumulates one batch's spike counts (per neuron layer) into the summary.
void add_spike_counts(ttfs_session* session, const ModelInfo& info, int32_t n, SetSummary& summary,
                      std::vector<int32_t>& counts);

// One row per image for --output: CSV or JSON Lines, written as each batch finishes.
class RowWriter {
public:
    RowWriter(const Options& options, const ModelInfo& info, bool files, bool labelled);
    ~RowWriter();

    bool needs_spike_times() const { return info_.readout == TTFS_READOUT_FIRST_SPIKE; }

    // A class's score: its potential, or (first_spike readout) for a class that fired, the
    // threshold at its spike step: the value that spike time codes (docs/ALGORITHM.md).
    float score(const float* potentials, const int32_t* times, int32_t k) const;

    void write(uint64_t index, const std::string& file, int32_t prediction, const float* potentials,
               const int32_t* times, int32_t label);

    void finish();

private:
    static std::string csv_field(const std::string& text);

    std::string path_;
    const ModelInfo& info_;
    bool files_, labelled_, jsonl_ = false;
    int32_t top_k_ = 1;
    std::FILE* out_ = nullptr;
    int32_t fire_start_ = 0;
    float tau_ = 1, td_ = 0, vth0_ = 1;
    std::vector<float> scores_;
    std::vector<int32_t> order_;
};

}  // namespace ttfs_cli
