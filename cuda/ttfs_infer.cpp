// ttfs-infer — run a .ttfs time-to-first-spike network on images from the command line.
//
// Uses nothing but the public C ABI (include/ttfs.h) for the network, so it doubles as a
// worked example of that ABI. Plain C++17: nvcc compiles it and its cli_* units when CUDA is
// on, the host compiler otherwise (cli_images.cpp: always the host compiler). PNG/JPEG
// decoding lives in cli_images.cpp (system libpng/libjpeg), gzip through the system zlib, each
// optional at build time.
//
//   ttfs-infer MODEL IMAGES [options]      run images (see kUsage in cli_options.cpp)
//   ttfs-infer MODEL --info [--json]       describe a model
//
// IMAGES is read in batches (never whole), so memory grows with --batch, not with the file.
// One image (a .bin, a single PNG/JPEG or .npy image, or --index into a set) prints its class
// potentials and prediction; a set is summarised (accuracy, throughput, spikes per image), and
// --output writes one row per image as it goes.
//
// The units: cli_options (command line, --help), cli_inputs (images and labels, through
// cli_stream; .npy headers in cli_npy, PNG/JPEG in cli_images), cli_session (the model and its
// session), cli_output (JSON, tables, --output rows; efficiency figures from
// infer_efficiency.h), cli_info (--info), cli_common (exit codes, CliError, string helpers). This file: the two modes (one image, a
// set) and main(), where every failure becomes one "ttfs-infer: error: ..." line.

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <unistd.h>     // isatty: the progress line is for people, not for pipes

#include "cli_common.hpp"
#include "cli_info.hpp"
#include "cli_inputs.hpp"
#include "cli_options.hpp"
#include "cli_output.hpp"
#include "cli_session.hpp"
#include "infer_efficiency.h"
#include "ttfs.h"

namespace ttfs_cli {
namespace {

// Where the summary goes: standard output, unless the per-image rows are going there.
std::FILE* report_stream(const Options& options) { return options.output_path == "-" ? stderr : stdout; }

std::string images_shown(const Options& options) {
    return options.images_path == "-" ? std::string("standard input") : quoted(options.images_path);
}

int run_single(const ttfs_model* model, const ModelInfo& info, const Options& options, ImageSource& images,
               LabelSource* labels) {
    uint64_t index = options.has_index ? options.index : 0;
    if (images.single() && index != 0)
        fail(format("--index %" PRIu64 " is out of range: ", index) + images_shown(options) +
             " holds one image (index 0)");
    if (index >= images.count())
        fail(format("--index %" PRIu64 " is out of range: ", index) + images_shown(options) +
             format(" holds %" PRIu64 " images (0 .. %" PRIu64 ")", images.count(), images.count() - 1));
    bool first_spike = info.readout == TTFS_READOUT_FIRST_SPIKE;
    Runner runner = create_runner(model, options, 1,
                                  first_spike || options.json ? TTFS_SESSION_RECORD_SPIKE_TIMES : 0u);
    std::unique_ptr<RowWriter> rows;
    if (!options.output_path.empty()) rows.reset(new RowWriter(options, info, images.has_files(), labels != nullptr));

    std::vector<uint8_t> u8_pixels;
    std::vector<float> f32_pixels, potentials;
    std::vector<int32_t> predictions, counts;
    SetSummary summary;
    summary.n = 1;
    summary.spike_totals.assign(info.neuron_layers.size(), 0);
    images.skip(index);
    summary.run_seconds = run_batch(runner.session.get(), images, index, 1, u8_pixels, f32_pixels,
                                    predictions, potentials, info.classes);
    add_spike_counts(runner.session.get(), info, 1, summary, counts);
    ttfs_efficiency::Counter efficiency(model);
    if (options.json) efficiency.add_batch(runner.session.get(), 1);

    std::vector<int32_t> spike_times;
    if (first_spike) {
        spike_times.resize(size_t(info.classes));
        ttfs_status status = ttfs_session_spike_times(runner.session.get(), info.output_layer,
                                                      spike_times.data(), spike_times.size());
        if (status != TTFS_OK) library_failure("cannot read the output layer's spike times", status);
    }
    int label = -1;
    if (labels) {
        std::vector<int32_t> label_values;
        labels->skip(index);
        labels->read(1, info.classes, label_values);
        label = label_values[0];
        summary.labelled = true;
        summary.correct = predictions[0] == label;
    }
    if (rows) {
        rows->write(index, images.file_of(index), predictions[0], potentials.data(),
                    first_spike ? spike_times.data() : nullptr, label);
        rows->finish();
    }

    std::FILE* out = report_stream(options);
    if (options.json) {
        std::string text = "{" + common_json_fields(options, info, runner, summary) +
                           efficiency_json_fields(model, info, runner, summary, efficiency);
        text += format(", \"index\": %" PRIu64 ", \"predicted\": %d", index, predictions[0]);
        text += ", \"label\": " + (label >= 0 ? format("%d", label) : std::string("null"));
        text += ", \"potentials\": [";
        for (int32_t k = 0; k < info.classes; ++k) text += (k ? ", " : "") + json_float32(potentials[size_t(k)]);
        text += "], \"spike_times\": ";
        if (first_spike) {
            text += "[";
            for (int32_t k = 0; k < info.classes; ++k) text += (k ? ", " : "") + format("%d", spike_times[size_t(k)]);
            text += "]";
        } else {
            text += "null";  // the output layer never fires under vmem readout
        }
        std::fprintf(out, "%s}\n", text.c_str());
        return kExitOk;
    }

    std::fprintf(out, "model: %s\n", options.model_path.c_str());
    const std::string file = images.file_of(index);
    if (images.single())
        std::fprintf(out, "image: %s\n", options.images_path == "-" ? "standard input" : options.images_path.c_str());
    else
        std::fprintf(out, "image: %s [index %" PRIu64 " of %" PRIu64 "%s%s]\n",
                     options.images_path == "-" ? "standard input" : options.images_path.c_str(), index, images.count(),
                     file.empty() ? "" : ", ", file.c_str());
    std::fprintf(out, "backend: %s\nengine: %s\nreadout: %s\n", backend_name(runner.backend), engine_name(runner.engine),
                 readout_name(info.readout));
    std::fprintf(out, "class  potential%s\n", first_spike ? "        first spike" : "");
    for (int32_t k = 0; k < info.classes; ++k) {
        if (!first_spike) {
            std::fprintf(out, "%5d  %.9g\n", k, double(potentials[size_t(k)]));
        } else if (spike_times[size_t(k)] >= 0) {
            std::fprintf(out, "%5d  %-15.9g  %d\n", k, double(potentials[size_t(k)]), spike_times[size_t(k)]);
        } else {
            std::fprintf(out, "%5d  %-15.9g  none\n", k, double(potentials[size_t(k)]));
        }
    }
    if (first_spike && summary.no_output_spike)
        std::fprintf(out, "no output spike: prediction from the largest potential\n");
    print_spikes_table(out, info, summary);
    std::fprintf(out, "predicted class: %d\n", predictions[0]);
    if (label >= 0) std::fprintf(out, "label: %d\n", label);
    return kExitOk;
}

int run_set(const ttfs_model* model, const ModelInfo& info, const Options& options, ImageSource& images,
            LabelSource* labels) {
    const uint64_t total = images.count();
    const int32_t batch = int32_t(std::min<uint64_t>(uint64_t(options.batch), total));
    std::unique_ptr<RowWriter> rows;
    if (!options.output_path.empty()) rows.reset(new RowWriter(options, info, images.has_files(), labels != nullptr));
    // Per-image scores under first_spike readout need the output layer's spike times; the
    // efficiency figures of --json need every layer's.
    const bool record = rows && rows->needs_spike_times();
    Runner runner = create_runner(model, options, batch,
                                  record || options.json ? TTFS_SESSION_RECORD_SPIKE_TIMES : 0u);
    const bool progress = isatty(STDERR_FILENO) != 0;
    ttfs_efficiency::Counter efficiency(model);

    std::vector<uint8_t> u8_pixels;
    std::vector<float> f32_pixels, potentials;
    std::vector<int32_t> predictions, counts, label_values, spike_times;
    SetSummary summary;
    summary.labelled = labels != nullptr;
    summary.spike_totals.assign(info.neuron_layers.size(), 0);
    for (uint64_t first = 0; first < total; first += uint64_t(batch)) {
        int32_t n = int32_t(std::min<uint64_t>(uint64_t(batch), total - first));
        summary.run_seconds += run_batch(runner.session.get(), images, first, n, u8_pixels, f32_pixels,
                                         predictions, potentials, info.classes);
        add_spike_counts(runner.session.get(), info, n, summary, counts);
        if (options.json) efficiency.add_batch(runner.session.get(), n);
        if (labels) {
            labels->read(n, info.classes, label_values);
            for (int32_t i = 0; i < n; ++i) summary.correct += predictions[size_t(i)] == label_values[size_t(i)];
        }
        if (rows) {
            if (record) {
                spike_times.resize(size_t(n) * size_t(info.classes));
                ttfs_status status = ttfs_session_spike_times(runner.session.get(), info.output_layer,
                                                              spike_times.data(), spike_times.size());
                if (status != TTFS_OK) library_failure("cannot read the output layer's spike times", status);
            }
            for (int32_t i = 0; i < n; ++i) {
                const uint64_t index = first + uint64_t(i);
                rows->write(index, images.file_of(index), predictions[size_t(i)],
                            potentials.data() + size_t(i) * size_t(info.classes),
                            record ? spike_times.data() + size_t(i) * size_t(info.classes) : nullptr,
                            labels ? label_values[size_t(i)] : -1);
            }
        }
        summary.n += uint64_t(n);
        if (progress) {
            std::fprintf(stderr, "\rttfs-infer: %" PRIu64 " / %" PRIu64 " images", summary.n, total);
            std::fflush(stderr);
        }
    }
    if (progress) std::fprintf(stderr, "\r%60s\r", "");  // leave the terminal clean
    images.check_end();
    if (rows) rows->finish();

    std::FILE* out = report_stream(options);
    if (options.json) {
        std::fprintf(out, "{%s%s, \"batch\": %d}\n", common_json_fields(options, info, runner, summary).c_str(),
                     efficiency_json_fields(model, info, runner, summary, efficiency).c_str(), batch);
        return kExitOk;
    }
    std::fprintf(out, "model: %s\n", options.model_path.c_str());
    std::fprintf(out, "images: %s (%s)\n", options.images_path == "-" ? "standard input" : options.images_path.c_str(),
                 images.description().c_str());
    std::fprintf(out, "backend: %s\nengine: %s\nreadout: %s\n", backend_name(runner.backend), engine_name(runner.engine),
                 readout_name(info.readout));
    std::fprintf(out, "n: %" PRIu64 "\n", summary.n);
    if (summary.labelled)
        std::fprintf(out, "accuracy: %.2f %% (%" PRIu64 " of %" PRIu64 ")\n",
                     100.0 * double(summary.correct) / double(summary.n), summary.correct, summary.n);
    std::fprintf(out, "images per second: %.1f (inference only, batch %d)\n", images_per_second(summary), batch);
    print_spikes_table(out, info, summary);
    if (info.readout == TTFS_READOUT_FIRST_SPIKE)
        std::fprintf(out, "no output spike: %" PRIu64 " of %" PRIu64 " images (predicted from the largest potential)\n",
                     summary.no_output_spike, summary.n);
    if (!options.output_path.empty() && options.output_path != "-")
        std::fprintf(out, "per-image results: %s\n", options.output_path.c_str());
    return kExitOk;
}

// ---- main -----------------------------------------------------------------------------------

int run(int argc, char** argv) {
    Options options;
    if (!parse_options(argc, argv, options)) return kExitOk;  // --help or --version
    if (ttfs_abi_version() != TTFS_ABI_VERSION)
        fail(format("libttfs has ABI version %d but ttfs-infer was built for %d; use the matching library",
                    ttfs_abi_version(), TTFS_ABI_VERSION));

    ttfs_model* loaded = nullptr;
    ttfs_status status = ttfs_model_load_file(options.model_path.c_str(), &loaded);
    if (status != TTFS_OK) library_failure("cannot load model " + quoted(options.model_path), status);
    ModelHandle model(loaded);
    ModelInfo info = describe_model(model.get(), options.model_path);
    if (options.info) return run_info(info, options);

    std::unique_ptr<ImageSource> images = open_images(options, info.input_shape);
    std::unique_ptr<LabelSource> labels;
    if (!options.labels_path.empty())
        labels.reset(new LabelSource(options.labels_path, images->count(), images_shown(options)));

    if (images->single() || options.has_index) return run_single(model.get(), info, options, *images, labels.get());
    return run_set(model.get(), info, options, *images, labels.get());
}

// Messages must stay one line: the contract is one "ttfs-infer: error:" line per failure.
std::string one_line(std::string message) {
    std::replace(message.begin(), message.end(), '\n', ' ');
    std::replace(message.begin(), message.end(), '\r', ' ');
    return message;
}

}  // namespace
}  // namespace ttfs_cli

using namespace ttfs_cli;  // run, CliError, the exit codes

int main(int argc, char** argv) {
    try {
        int code = run(argc, argv);
        if (std::fflush(stdout) != 0) {
            std::fprintf(stderr, "ttfs-infer: error: cannot write the output: %s\n", std::strerror(errno));
            return kExitFailure;
        }
        return code;
    } catch (const CliError& error) {
        std::fflush(stdout);
        std::fprintf(stderr, "ttfs-infer: error: %s\n", one_line(error.what()).c_str());
        return error.exit_code;
    } catch (const std::bad_alloc&) {
        std::fflush(stdout);
        std::fprintf(stderr, "ttfs-infer: error: out of memory (try a smaller --batch)\n");
        return kExitFailure;
    } catch (const std::exception& error) {
        std::fflush(stdout);
        std::fprintf(stderr, "ttfs-infer: error: %s\n", one_line(error.what()).c_str());
        return kExitFailure;
    }
}

