// cli_session.hpp — ttfs-infer's side of the C ABI: the model's description (ModelInfo, read
// once through ttfs_model_* calls), the session it runs (Runner: backend and engine as
// actually used; the analytic engine falls back to stepped, with a note, when the user did
// not choose it and the windows overlap), and one batch through it. Not part of libttfs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cli_inputs.hpp"
#include "cli_options.hpp"
#include "ttfs.h"

namespace ttfs_cli {

struct ModelDeleter {
    void operator()(ttfs_model* model) const { ttfs_model_free(model); }
};
struct SessionDeleter {
    void operator()(ttfs_session* session) const { ttfs_session_free(session); }
};
using ModelHandle = std::unique_ptr<ttfs_model, ModelDeleter>;
using SessionHandle = std::unique_ptr<ttfs_session, SessionDeleter>;

struct NeuronLayer {
    int32_t index;
    std::string name;
};

struct ModelInfo {
    int32_t input_shape[3] = {0, 0, 0};
    int32_t classes = 0;
    int32_t readout = TTFS_READOUT_VMEM;
    int32_t output_layer = 0;
    int32_t time_steps = 0;
    float divisor = 0;
    std::string metadata;
    std::vector<ttfs_layer_info> layers;
    std::vector<NeuronLayer> neuron_layers;  // input, conv2d, dense: the layers that spike
};

ModelInfo describe_model(const ttfs_model* model, const std::string& path);

const char* backend_name(int32_t backend);
const char* engine_name(int32_t engine);
const char* readout_name(int32_t readout);

struct Runner {
    SessionHandle session;
    int32_t backend = TTFS_BACKEND_CPU;  // as actually used, never auto
    int32_t engine = TTFS_ENGINE_ANALYTIC;
};

// A session for `model` as the options ask (flags: TTFS_SESSION_*); its errors name the option
// that would help (--max-memory, --max-work, --batch).
Runner create_runner(const ttfs_model* model, const Options& options, int32_t max_batch, uint32_t flags);

// One batch through the session; returns the seconds spent inside the library.
double run_batch(ttfs_session* session, ImageSource& images, uint64_t first, int32_t n,
                 std::vector<uint8_t>& u8_pixels, std::vector<float>& f32_pixels,
                 std::vector<int32_t>& predictions, std::vector<float>& potentials, int32_t classes);

}  // namespace ttfs_cli
