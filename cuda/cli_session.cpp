// cli_session.cpp — the model description and the session of ttfs-infer; see cli_session.hpp.

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "cli_session.hpp"
#include "ttfs.h"

namespace ttfs_cli {

ModelInfo describe_model(const ttfs_model* model, const std::string& path) {
    ModelInfo info;
    ttfs_status status;
    int32_t layer_count = 0;
    if ((status = ttfs_model_layer_count(model, &layer_count)) != TTFS_OK)
        library_failure("cannot count the layers of " + quoted(path), status);
    if ((status = ttfs_model_input_shape(model, info.input_shape)) != TTFS_OK)
        library_failure("cannot get the input shape of " + quoted(path), status);
    if ((status = ttfs_model_num_classes(model, &info.classes)) != TTFS_OK)
        library_failure("cannot get the number of classes of " + quoted(path), status);
    if ((status = ttfs_model_readout(model, &info.readout)) != TTFS_OK)
        library_failure("cannot get the readout of " + quoted(path), status);
    if ((status = ttfs_model_time_steps(model, &info.time_steps)) != TTFS_OK)
        library_failure("cannot get the time steps of " + quoted(path), status);
    if ((status = ttfs_model_input_divisor(model, &info.divisor)) != TTFS_OK)
        library_failure("cannot get the input divisor of " + quoted(path), status);
    const char* metadata = nullptr;
    if ((status = ttfs_model_metadata(model, &metadata)) != TTFS_OK)
        library_failure("cannot get the metadata of " + quoted(path), status);
    info.metadata = metadata ? metadata : "";
    info.output_layer = layer_count - 1;
    for (int32_t i = 0; i < layer_count; ++i) {
        ttfs_layer_info layer;
        std::memset(&layer, 0, sizeof layer);
        layer.struct_size = sizeof layer;
        if ((status = ttfs_model_layer_info(model, i, &layer)) != TTFS_OK)
            library_failure(format("cannot describe layer %d of ", i) + quoted(path), status);
        info.layers.push_back(layer);
        if (layer.kind == TTFS_LAYER_INPUT || layer.kind == TTFS_LAYER_CONV2D || layer.kind == TTFS_LAYER_DENSE)
            info.neuron_layers.push_back({i, layer.name ? layer.name : format("layer%d", i)});
    }
    return info;
}

const char* backend_name(int32_t backend) {
    switch (backend) {
        case TTFS_BACKEND_CPU: return "cpu";
        case TTFS_BACKEND_CUDA: return "cuda";
        default: return "auto";
    }
}
const char* engine_name(int32_t engine) { return engine == TTFS_ENGINE_STEPPED ? "stepped" : "analytic"; }
const char* readout_name(int32_t readout) { return readout == TTFS_READOUT_FIRST_SPIKE ? "first_spike" : "vmem"; }

Runner create_runner(const ttfs_model* model, const Options& options, int32_t max_batch, uint32_t flags) {
    Runner runner;
    ttfs_session* session = nullptr;
    int32_t engine = options.engine;
    if (options.allow_unscaled) flags |= TTFS_SESSION_ALLOW_UNSCALED;
    ttfs_session_options session_options{};
    session_options.struct_size = sizeof session_options;
    session_options.flags = flags;
    session_options.max_memory_bytes = options.max_memory_bytes;
    session_options.max_work_per_image = options.max_work_per_image;
    ttfs_status status =
        ttfs_session_create_ex(model, options.backend, engine, max_batch, &session_options, &session);
    if (status == TTFS_ERR_UNSUPPORTED && !options.engine_given && engine == TTFS_ENGINE_ANALYTIC) {
        // The default engine cannot run overlapping windows; the stepped engine gives the same
        // answers where both apply, so use it rather than refuse a model the user did not
        // pick an engine for.
        std::string why = ttfs_last_error();
        std::fprintf(stderr, "ttfs-infer: note: using the stepped engine: %s\n", why.c_str());
        engine = TTFS_ENGINE_STEPPED;
        status = ttfs_session_create_ex(model, options.backend, engine, max_batch,
                                        &session_options, &session);
    }
    if (status == TTFS_ERR_LIMIT) {
        // The library names its own option fields; say which of ours raises the limit.
        std::string why = ttfs_last_error();
        fail(format("cannot create a %s session (engine %s, batch %d) for ",
                    backend_name(options.backend), engine_name(engine), max_batch) +
             quoted(options.model_path) + ": TTFS_ERR_LIMIT: " + why +
             " (ttfs-infer: --max-memory BYTES raises the memory limit, --max-work OPS the work "
             "limit; a smaller --batch needs less memory)");
    }
    if (status != TTFS_OK)
        library_failure(format("cannot create a %s session (engine %s, batch %d) for ",
                               backend_name(options.backend), engine_name(engine), max_batch) +
                            quoted(options.model_path),
                        status);
    runner.session.reset(session);
    if ((status = ttfs_session_backend(session, &runner.backend)) != TTFS_OK)
        library_failure("cannot query the session's backend", status);
    if ((status = ttfs_session_engine(session, &runner.engine)) != TTFS_OK)
        library_failure("cannot query the session's engine", status);
    if (options.threads_given && (status = ttfs_session_set_threads(session, options.threads)) != TTFS_OK)
        library_failure(format("cannot use %d threads", options.threads), status);
    return runner;
}

double run_batch(ttfs_session* session, ImageSource& images, uint64_t first, int32_t n,
                 std::vector<uint8_t>& u8_pixels, std::vector<float>& f32_pixels,
                 std::vector<int32_t>& predictions, std::vector<float>& potentials, int32_t classes) {
    predictions.resize(size_t(n));
    potentials.resize(size_t(n) * size_t(classes));
    images.read(n, u8_pixels, f32_pixels);
    ttfs_status status;
    const auto start = std::chrono::steady_clock::now();
    if (images.pixels() == Pixels::U8) {
        status = ttfs_session_run_u8(session, u8_pixels.data(), u8_pixels.size(), n, predictions.data(),
                                     predictions.size(), potentials.data(), potentials.size());
    } else {
        status = ttfs_session_run_f32(session, f32_pixels.data(), f32_pixels.size(), n, predictions.data(),
                                      predictions.size(), potentials.data(), potentials.size());
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (status != TTFS_OK)
        library_failure(format("running images %" PRIu64 "..%" PRIu64 " failed", first, first + uint64_t(n) - 1),
                        status);
    return seconds;
}

}  // namespace ttfs_cli
