// The CUDA backend: device memory for max_batch images allocated at creation, the model's
// weights and tables uploaded once, then per run: images in, one engine's kernels, results out
// (with the output trace when the session records it).
// The kernels live in analytic_kernels.cu, stepped_kernels.cu and readout_kernels.cu; this file
// owns memory, launch order and error reporting. Every CUDA call is checked, and failures
// become TTFS_ERR_CUDA with CUDA's own words and the call's name. Nothing throws out of here.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "analytic_kernels.cuh"
#include "backend.hpp"
#include "build_config.h"
#include "device_layer.cuh"
#include "engine_units.cuh"  // kSmallestStepChunk, for the work bound
#include "readout_kernels.cuh"
#include "stepped_kernels.cuh"

namespace ttfs {

namespace {

// Writes "<call> failed while <doing what>: <CUDA's message> (<error name>)" into error and
// returns false when code is not cudaSuccess. A non-sticky error is also cleared from the
// runtime's per-thread last error, so that a later launch check does not report it again.
bool cuda_ok(cudaError_t code, const char* call, const std::string& doing, std::string& error) {
    if (code == cudaSuccess) return true;
    (void)cudaGetLastError();
    error = std::string(call) + " failed while " + doing + ": " + cudaGetErrorString(code) + " (" +
            cudaGetErrorName(code) + ")";
    return false;
}

// a * b * c without overflow; false if it would not fit in size_t.
bool checked_product(size_t a, size_t b, size_t c, size_t& out) {
    size_t ab = 0;
    return !__builtin_mul_overflow(a, b, &ab) && !__builtin_mul_overflow(ab, c, &out);
}

// One cudaMalloc'd region, freed with the owner. Move-only.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_) { other.ptr_ = nullptr; }
    DeviceBuffer& operator=(DeviceBuffer&&) = delete;
    // A failed free cannot be reported from a destructor and only leaks device memory (it
    // happens when the context is already lost), so its status is deliberately dropped.
    ~DeviceBuffer() {
        if (ptr_ != nullptr) (void)cudaFree(ptr_);
    }

    // count elements of elem_bytes each; `what` names the buffer in an error message.
    ttfs_status allocate(size_t count, size_t elem_bytes, const std::string& what, std::string& error) {
        size_t bytes = 0;
        if (!checked_product(count, elem_bytes, 1, bytes)) {
            error = "device buffer for " + what + " is too large (size overflows)";
            return TTFS_ERR_OUT_OF_MEMORY;
        }
        if (bytes == 0) return TTFS_OK;
        if (!cuda_ok(cudaMalloc(&ptr_, bytes), "cudaMalloc",
                     "allocating " + std::to_string(bytes) + " bytes for " + what, error)) {
            ptr_ = nullptr;
            return TTFS_ERR_CUDA;
        }
        return TTFS_OK;
    }

    template <class T>
    T* as() const { return static_cast<T*>(ptr_); }

private:
    void* ptr_ = nullptr;
};

// A host vector copied into a new device buffer.
template <class T>
ttfs_status upload(const std::vector<T>& host, DeviceBuffer& device, const std::string& what,
                   std::string& error) {
    ttfs_status status = device.allocate(host.size(), sizeof(T), what, error);
    if (status != TTFS_OK || host.empty()) return status;
    if (!cuda_ok(cudaMemcpy(device.as<void>(), host.data(), host.size() * sizeof(T),
                            cudaMemcpyHostToDevice),
                 "cudaMemcpy", "uploading " + what, error))
        return TTFS_ERR_CUDA;
    return TTFS_OK;
}

// What the device holds for one layer; which buffers exist depends on the layer and engine.
struct LayerState {
    gpu::DeviceLayer desc;
    DeviceBuffer weights, bias, fire_threshold, integ_kernel;
    DeviceBuffer first_spike;     // neuron layers: [max_batch * size], -1 = never
    DeviceBuffer spike_counts;    // neuron layers: [max_batch]
    DeviceBuffer spike_steps;     // analytic maxpool: [max_batch * size * capacity]
    DeviceBuffer membrane;        // stepped conv2d/dense: [max_batch * size]
    DeviceBuffer spiked_now;      // stepped input/conv2d/dense/maxpool: [max_batch * size] bytes
    DeviceBuffer relayed_before;  // stepped `earliest` maxpool: [max_batch * size] bytes

    // Where the layer above reads this layer's spikes. A flatten layer points at the buffers
    // of the layer below it (HWC order already is the flat order).
    gpu::SpikeSteps steps_view;
    const uint8_t* spiked_now_view = nullptr;
};

class CudaBackend final : public Backend {
public:
    CudaBackend(std::shared_ptr<const Model> model, ttfs_engine engine, int32_t max_batch,
                std::vector<int32_t> trace_steps)
        : model_(std::move(model)), engine_(engine), max_batch_(max_batch),
          trace_steps_(std::move(trace_steps)) {}

    ~CudaBackend() override {
        // The member buffers are freed after this body, on the device they were made on (the
        // current device is per host thread). Failures here can only be dropped.
        if (device_ >= 0) (void)cudaSetDevice(device_);
        if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    }

    ttfs_status init(std::string& error);
    ttfs_status run(const float* images, int32_t n, const RunOutputs& out, std::string& error) override;

private:
    ttfs_status init_layer(size_t index, std::string& error);
    ttfs_status enqueue_analytic(int32_t n, std::string& error);
    ttfs_status enqueue_stepped(int32_t n, std::string& error);
    ttfs_status collect(int32_t n, const RunOutputs& out, std::string& error);

    std::shared_ptr<const Model> model_;
    ttfs_engine engine_;
    int32_t max_batch_;
    int device_ = -1;
    cudaStream_t stream_ = nullptr;
    DeviceBuffer images_;      // [max_batch * input size]
    DeviceBuffer potentials_;  // analytic: output layer [max_batch * classes]
    std::vector<LayerState> layers_;
    std::vector<int64_t> capacities_;  // per layer, step_capacities()
    // Host copies of the output layer's results, needed for the predictions.
    std::vector<float> host_potentials_;
    std::vector<int32_t> host_output_times_;
    // The output trace (RunOutputs::trace_steps; empty: none): the steps, on the device too,
    // and the rows [step][image][class] on the device and their host copy.
    std::vector<int32_t> trace_steps_;
    DeviceBuffer trace_steps_device_, trace_;
    std::vector<float> host_trace_;
};

// Per layer: how many spike steps the analytic engine keeps per unit (the capacity of
// SpikeSteps). A neuron fires once; an `earliest` pool unit relays once; an `or` unit relays
// each distinct step of its children, a `gated` unit some of them: at most (children inside
// its window) x (what one child relays), and never more than the window has steps
// (SpikeBounds, model.hpp). At least 1.
std::vector<int64_t> step_capacities(const Model& model) {
    const std::vector<SpikeBounds> bounds = spike_bounds(model);
    std::vector<int64_t> capacity(model.layers.size(), 1);
    for (size_t i = 1; i < model.layers.size(); ++i) {
        const Layer& layer = model.layers[i];
        if (layer.kind == TTFS_LAYER_FLATTEN) capacity[i] = capacity[i - 1];
        if (layer.kind == TTFS_LAYER_MAXPOOL && layer.pool_mode != TTFS_POOL_EARLIEST)
            capacity[i] = std::max<int64_t>(1, std::min(saturating_mul(bounds[i].children, capacity[i - 1]),
                                                        int64_t(bounds[i].window_len)));
    }
    return capacity;
}

gpu::DeviceLayer describe(const Layer& layer) {
    gpu::DeviceLayer d;
    static_cast<WindowGeometry&>(d) = window_geometry(layer);  // dense: a 1x1 convolution
    d.kind = layer.kind;
    d.pool_mode = layer.pool_mode;
    d.integ_start = layer.integ_start;
    d.integ_end = layer.integ_end;
    d.fire_start = layer.fire_start;
    d.fire_len = layer.fire_len();
    d.fires = layer.fires ? 1 : 0;
    return d;
}

ttfs_status CudaBackend::init(std::string& error) {
    int devices = 0;
    const cudaError_t count_status = cudaGetDeviceCount(&devices);
    if (count_status != cudaSuccess || devices == 0) {
        error = "no usable CUDA device";
        if (count_status != cudaSuccess) {
            error += std::string(": ") + cudaGetErrorString(count_status) + " (" +
                     cudaGetErrorName(count_status) + ")";
            (void)cudaGetLastError();  // not sticky; clear it so later calls start clean
        }
        error += "; use backend 'cpu' or 'auto'";
        return TTFS_ERR_BACKEND_UNAVAILABLE;
    }
    if (!cuda_ok(cudaGetDevice(&device_), "cudaGetDevice", "choosing the device", error) ||
        !cuda_ok(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags",
                 "creating the session's stream", error)) {
        device_ = -1;
        return TTFS_ERR_CUDA;
    }

    const Model& model = *model_;
    ttfs_status status = images_.allocate(size_t(max_batch_) * size_t(model.input().in.size()),
                                          sizeof(float), "the input images", error);
    if (status != TTFS_OK) return status;
    const size_t classes = size_t(model.num_classes());
    if (engine_ == TTFS_ENGINE_ANALYTIC) {
        status = potentials_.allocate(size_t(max_batch_) * classes, sizeof(float),
                                      "the output potentials", error);
        if (status != TTFS_OK) return status;
    }
    host_potentials_.assign(size_t(max_batch_) * classes, 0.0f);
    host_output_times_.assign(size_t(max_batch_) * classes, -1);
    if (!trace_steps_.empty()) {
        const size_t rows = trace_steps_.size() * size_t(max_batch_) * classes;
        if ((status = upload(trace_steps_, trace_steps_device_, "the output trace's steps", error)) != TTFS_OK ||
            (status = trace_.allocate(rows, sizeof(float), "the output trace", error)) != TTFS_OK)
            return status;
        host_trace_.assign(rows, 0.0f);
    }

    layers_.resize(model.layers.size());
    capacities_ = step_capacities(model);
    for (size_t i = 0; i < model.layers.size(); ++i) {
        status = init_layer(i, error);
        if (status != TTFS_OK) return status;
    }
    return TTFS_OK;
}

ttfs_status CudaBackend::init_layer(size_t index, std::string& error) {
    const Layer& layer = model_->layers[index];
    LayerState& state = layers_[index];
    // The kernels index a unit within one image in 32 bits (the reader allows up to 2^28).
    if (layer.in.size() > INT32_MAX || layer.out.size() > INT32_MAX) {
        error = "layer '" + layer.name + "' has more than 2^31 units per image; the CUDA backend "
                "indexes them in 32 bits";
        return TTFS_ERR_UNSUPPORTED;
    }
    state.desc = describe(layer);
    const std::string name = "layer '" + layer.name + "'";
    const size_t units = size_t(layer.out.size());
    const size_t batch = size_t(max_batch_);
    const bool stepped = engine_ == TTFS_ENGINE_STEPPED;
    ttfs_status status = TTFS_OK;

    if (layer.has_neurons()) {
        if ((status = upload(layer.weights, state.weights, "the weights of " + name, error)) != TTFS_OK ||
            (status = upload(layer.bias, state.bias, "the bias of " + name, error)) != TTFS_OK ||
            (status = upload(layer.fire_threshold, state.fire_threshold,
                             "the threshold table of " + name, error)) != TTFS_OK ||
            (status = upload(layer.integ_kernel, state.integ_kernel,
                             "the integration kernel table of " + name, error)) != TTFS_OK ||
            (status = state.first_spike.allocate(batch * units, sizeof(int32_t),
                                                 "the first-spike times of " + name, error)) != TTFS_OK ||
            (status = state.spike_counts.allocate(batch, sizeof(int32_t),
                                                  "the spike counts of " + name, error)) != TTFS_OK)
            return status;
        state.desc.weights = state.weights.as<float>();
        state.desc.bias = state.bias.as<float>();
        state.desc.fire_threshold = state.fire_threshold.as<float>();
        state.desc.integ_kernel = state.integ_kernel.as<float>();
        state.steps_view = {state.first_spike.as<int32_t>(), 1};
        if (stepped) {
            if (layer.kind != TTFS_LAYER_INPUT &&
                (status = state.membrane.allocate(batch * units, sizeof(float),
                                                  "the membrane potentials of " + name, error)) != TTFS_OK)
                return status;
            if ((status = state.spiked_now.allocate(batch * units, 1, "the spike map of " + name,
                                                    error)) != TTFS_OK)
                return status;
            state.spiked_now_view = state.spiked_now.as<uint8_t>();
        }
        return TTFS_OK;
    }

    const LayerState& below = layers_[index - 1];  // layer 0 is the input layer, so index >= 1
    if (layer.kind == TTFS_LAYER_FLATTEN) {
        state.steps_view = below.steps_view;
        state.spiked_now_view = below.spiked_now_view;
        return TTFS_OK;
    }

    // maxpool. A gated one reads the threshold table of the neuron layer below (the reader
    // guarantees that the layer below a gated pool has neurons).
    if (layer.pool_mode == TTFS_POOL_GATED) {
        const Layer& children = model_->layers[index - 1];
        state.desc.gate_threshold = below.fire_threshold.as<float>();
        state.desc.gate_fire_start = children.fire_start;
        state.desc.gate_fire_len = children.fire_len();
    }
    if (stepped) {
        if ((status = state.spiked_now.allocate(batch * units, 1, "the spike map of " + name, error)) !=
                TTFS_OK ||
            (layer.pool_mode == TTFS_POOL_EARLIEST &&
             (status = state.relayed_before.allocate(batch * units, 1, "the relay flags of " + name,
                                                     error)) != TTFS_OK))
            return status;
        state.spiked_now_view = state.spiked_now.as<uint8_t>();
        return TTFS_OK;
    }
    const int64_t capacity = capacities_[index];
    size_t entries = 0;
    if (!checked_product(batch, units, size_t(capacity), entries)) {
        error = "device buffer for the spike steps of " + name + " is too large (size overflows)";
        return TTFS_ERR_OUT_OF_MEMORY;
    }
    if ((status = state.spike_steps.allocate(entries, sizeof(int32_t), "the spike steps of " + name,
                                             error)) != TTFS_OK)
        return status;
    state.steps_view = {state.spike_steps.as<int32_t>(), int32_t(capacity)};
    return TTFS_OK;
}

ttfs_status CudaBackend::enqueue_analytic(int32_t n, std::string& error) {
    const Model& model = *model_;
    const size_t last = model.layers.size() - 1;
    for (size_t i = 0; i < model.layers.size(); ++i) {
        const Layer& layer = model.layers[i];
        LayerState& state = layers_[i];
        cudaError_t launched = cudaSuccess;
        switch (layer.kind) {
        case TTFS_LAYER_INPUT:
            launched = gpu::launch_input_first_spikes(state.desc, images_.as<float>(), n,
                                                      state.first_spike.as<int32_t>(), stream_);
            break;
        case TTFS_LAYER_MAXPOOL:
            launched = gpu::launch_pool_spike_steps(state.desc, layers_[i - 1].steps_view, n,
                                                    state.spike_steps.as<int32_t>(),
                                                    state.steps_view.capacity, stream_);
            break;
        case TTFS_LAYER_FLATTEN:
            continue;
        case TTFS_LAYER_CONV2D:
        case TTFS_LAYER_DENSE: {
            gpu::TraceRows trace;  // the output layer's, when recorded
            if (i == last && !trace_steps_.empty())
                trace = {trace_steps_device_.as<int32_t>(), int32_t(trace_steps_.size()), trace_.as<float>(),
                         int64_t(n) * layer.out.size()};
            launched = gpu::launch_neuron_layer_analytic(
                state.desc, layers_[i - 1].steps_view, n, state.first_spike.as<int32_t>(),
                i == last ? potentials_.as<float>() : nullptr, trace, stream_);
            break;
        }
        }
        if (launched != cudaSuccess) {
            cuda_ok(launched, "kernel launch", "running layer '" + layer.name + "' (analytic)", error);
            return TTFS_ERR_CUDA;
        }
    }
    return TTFS_OK;
}

ttfs_status CudaBackend::enqueue_stepped(int32_t n, std::string& error) {
    const Model& model = *model_;
    const size_t count = model.layers.size();

    // Fresh state for the first n images: V = +0.0f, nobody fired, no spikes in flight.
    for (size_t i = 0; i < count; ++i) {
        const Layer& layer = model.layers[i];
        LayerState& state = layers_[i];
        const size_t units = size_t(n) * size_t(layer.out.size());
        const std::string doing = "resetting layer '" + layer.name + "'";
        if (layer.has_neurons() &&
            !cuda_ok(cudaMemsetAsync(state.first_spike.as<void>(), 0xff, units * sizeof(int32_t), stream_),
                     "cudaMemsetAsync", doing, error))
            return TTFS_ERR_CUDA;
        if (state.membrane.as<void>() != nullptr &&
            !cuda_ok(cudaMemsetAsync(state.membrane.as<void>(), 0, units * sizeof(float), stream_),
                     "cudaMemsetAsync", doing, error))
            return TTFS_ERR_CUDA;
        if (state.spiked_now.as<void>() != nullptr &&
            !cuda_ok(cudaMemsetAsync(state.spiked_now.as<void>(), 0, units, stream_), "cudaMemsetAsync",
                     doing, error))
            return TTFS_ERR_CUDA;
        if (state.relayed_before.as<void>() != nullptr &&
            !cuda_ok(cudaMemsetAsync(state.relayed_before.as<void>(), 0, units, stream_),
                     "cudaMemsetAsync", doing, error))
            return TTFS_ERR_CUDA;
    }

    // The host knows from the windows alone whether a layer can spike at step t, and enqueues
    // only the layers that can change: a conv2d/dense layer with no possible arrivals at
    // t != 0 is unchanged (V + 0*k == V). A spike map is read only at a step where the layer
    // below ran (and rewrote all of it) or at t == 0, when it still holds the zeros written
    // above, so stale maps of idle layers never need clearing.
    std::vector<uint8_t> may_spike(count, 0);
    size_t traced = 0;  // the output trace's rows copied
    const size_t trace_row = size_t(n) * size_t(model.num_classes());
    for (int32_t t = 0; t < model.time_steps; ++t) {
        for (size_t i = 0; i < count; ++i) {
            const Layer& layer = model.layers[i];
            LayerState& state = layers_[i];
            const bool in_fire_window = layer.fires && t >= layer.fire_start && t < layer.fire_end;
            cudaError_t launched = cudaSuccess;
            switch (layer.kind) {
            case TTFS_LAYER_INPUT:
                may_spike[i] = in_fire_window;
                if (in_fire_window)
                    launched = gpu::launch_input_fire_step(state.desc, images_.as<float>(), n, t,
                                                           state.first_spike.as<int32_t>(),
                                                           state.spiked_now.as<uint8_t>(), stream_);
                break;
            case TTFS_LAYER_MAXPOOL:
                may_spike[i] = may_spike[i - 1];
                if (may_spike[i])
                    launched = gpu::launch_pool_relay_step(state.desc, layers_[i - 1].spiked_now_view,
                                                           layers_[i - 1].first_spike.as<int32_t>(), n, t,
                                                           state.relayed_before.as<uint8_t>(),
                                                           state.spiked_now.as<uint8_t>(), stream_);
                break;
            case TTFS_LAYER_FLATTEN:
                may_spike[i] = may_spike[i - 1];  // relays the map of the layer below as it is
                break;
            case TTFS_LAYER_CONV2D:
            case TTFS_LAYER_DENSE: {
                may_spike[i] = in_fire_window;
                const bool integrate_now = layer.integrates_at(t) && (t == 0 || may_spike[i - 1]);
                if (integrate_now || in_fire_window)
                    launched = gpu::launch_neuron_step(
                        state.desc, layers_[i - 1].spiked_now_view, n, t, integrate_now, in_fire_window,
                        state.membrane.as<float>(), state.first_spike.as<int32_t>(),
                        state.spiked_now.as<uint8_t>(), stream_);
                break;
            }
            }
            // (the message is only built on failure: this loop runs for every step and layer)
            if (launched != cudaSuccess) {
                cuda_ok(launched, "kernel launch",
                        "running layer '" + layer.name + "' at step " + std::to_string(t) + " (stepped)",
                        error);
                return TTFS_ERR_CUDA;
            }
        }
        // Step t is complete: the output trace's row, if t is one of its steps.
        if (traced < trace_steps_.size() && trace_steps_[traced] == t) {
            if (!cuda_ok(cudaMemcpyAsync(trace_.as<float>() + traced * trace_row,
                                         layers_[count - 1].membrane.as<float>(), trace_row * sizeof(float),
                                         cudaMemcpyDeviceToDevice, stream_),
                         "cudaMemcpyAsync", "recording the output trace at step " + std::to_string(t), error))
                return TTFS_ERR_CUDA;
            ++traced;
        }
    }
    return TTFS_OK;
}

// Copies the results of the first n images into the host buffers of `out`, waits for the
// stream, then derives the predictions on the host.
ttfs_status CudaBackend::collect(int32_t n, const RunOutputs& out, std::string& error) {
    const Model& model = *model_;
    const size_t last = model.layers.size() - 1;
    const size_t classes = size_t(model.num_classes());

    for (size_t i = 0; i < model.layers.size(); ++i) {
        const Layer& layer = model.layers[i];
        if (!layer.has_neurons()) continue;
        const LayerState& state = layers_[i];
        const size_t units = size_t(n) * size_t(layer.out.size());
        int32_t* counts = i < out.spike_counts.size() ? out.spike_counts[i] : nullptr;
        if (counts != nullptr) {
            if (!cuda_ok(gpu::launch_count_spikes(state.first_spike.as<int32_t>(), layer.out.size(), n,
                                                  state.spike_counts.as<int32_t>(), stream_),
                         "kernel launch", "counting the spikes of layer '" + layer.name + "'", error) ||
                !cuda_ok(cudaMemcpyAsync(counts, state.spike_counts.as<int32_t>(), size_t(n) * sizeof(int32_t),
                                         cudaMemcpyDeviceToHost, stream_),
                         "cudaMemcpyAsync", "copying the spike counts of layer '" + layer.name + "'", error))
                return TTFS_ERR_CUDA;
        }
        int32_t* times = i < out.spike_times.size() ? out.spike_times[i] : nullptr;
        if (i == last) times = host_output_times_.data();  // copied to out below
        if (times != nullptr &&
            !cuda_ok(cudaMemcpyAsync(times, state.first_spike.as<int32_t>(), units * sizeof(int32_t),
                                     cudaMemcpyDeviceToHost, stream_),
                     "cudaMemcpyAsync", "copying the first-spike times of layer '" + layer.name + "'", error))
            return TTFS_ERR_CUDA;
    }
    const float* device_potentials = engine_ == TTFS_ENGINE_ANALYTIC ? potentials_.as<float>()
                                                                      : layers_[last].membrane.as<float>();
    const size_t trace_values = trace_steps_.size() * size_t(n) * classes;
    if (trace_values > 0 &&
        !cuda_ok(cudaMemcpyAsync(host_trace_.data(), trace_.as<float>(), trace_values * sizeof(float),
                                 cudaMemcpyDeviceToHost, stream_),
                 "cudaMemcpyAsync", "copying the output trace", error))
        return TTFS_ERR_CUDA;
    if (!cuda_ok(cudaMemcpyAsync(host_potentials_.data(), device_potentials, size_t(n) * classes * sizeof(float),
                                 cudaMemcpyDeviceToHost, stream_),
                 "cudaMemcpyAsync", "copying the output potentials", error) ||
        !cuda_ok(cudaStreamSynchronize(stream_), "cudaStreamSynchronize", "running the batch", error))
        return TTFS_ERR_CUDA;

    // The loader's potential bound makes a non-finite potential impossible; one here is a bug,
    // reported as such rather than passed on with a class-0 prediction.
    for (size_t k = 0; k < size_t(n) * classes; ++k) {
        if (std::isfinite(host_potentials_[k])) continue;
        error = "image " + std::to_string(k / classes) + ": the output potential of class " +
                std::to_string(k % classes) + " is " + std::to_string(host_potentials_[k]) +
                ", not a finite number, although the model passed the loader's potential bound "
                "(docs/FORMAT.md); please report the model";
        return TTFS_ERR_INTERNAL;
    }
    int32_t* output_times = last < out.spike_times.size() ? out.spike_times[last] : nullptr;
    if (output_times != nullptr)
        std::memcpy(output_times, host_output_times_.data(), size_t(n) * classes * sizeof(int32_t));
    if (out.potentials != nullptr)
        std::memcpy(out.potentials, host_potentials_.data(), size_t(n) * classes * sizeof(float));
    // The output trace: [step][image][class] on the device, [image][step][class] for the caller.
    const size_t steps = trace_steps_.size();
    if (out.output_trace != nullptr && out.trace_steps.size() == steps)
        for (size_t r = 0; r < steps; ++r)
            for (int32_t image = 0; image < n; ++image)
                std::memcpy(out.output_trace + (size_t(image) * steps + r) * classes,
                            host_trace_.data() + (r * size_t(n) + size_t(image)) * classes,
                            classes * sizeof(float));

    // docs/ENGINES.md, Outputs: vmem readout = argmax of V (ties: lowest index); first_spike
    // readout = the earliest class (ties: lowest index), else the argmax of V.
    for (int32_t image = 0; image < n; ++image) {
        const float* potential = host_potentials_.data() + size_t(image) * classes;
        const int32_t* fired_at = host_output_times_.data() + size_t(image) * classes;
        int32_t prediction = -1;
        if (model.readout == TTFS_READOUT_FIRST_SPIKE) {
            for (size_t c = 0; c < classes; ++c)
                if (fired_at[c] >= 0 && (prediction < 0 || fired_at[c] < fired_at[prediction]))
                    prediction = int32_t(c);
        }
        if (prediction < 0) {
            prediction = 0;
            for (size_t c = 1; c < classes; ++c)
                if (potential[c] > potential[prediction]) prediction = int32_t(c);
        }
        if (out.predictions != nullptr) out.predictions[image] = prediction;
    }
    return TTFS_OK;
}

ttfs_status CudaBackend::run(const float* images, int32_t n, const RunOutputs& out, std::string& error) {
    try {
        if (n < 1 || n > max_batch_) {
            error = "batch of " + std::to_string(n) + " images, expected 1 .. " + std::to_string(max_batch_);
            return TTFS_ERR_INVALID_ARGUMENT;
        }
        if (!cuda_ok(cudaSetDevice(device_), "cudaSetDevice", "selecting the session's device", error))
            return TTFS_ERR_CUDA;
        // Launches are checked with cudaGetLastError(); an error left on this thread by some
        // earlier, unrelated CUDA call must not be reported as ours.
        (void)cudaGetLastError();
        const size_t input_values = size_t(n) * size_t(model_->input().in.size());
        if (!cuda_ok(cudaMemcpyAsync(images_.as<float>(), images, input_values * sizeof(float),
                                     cudaMemcpyHostToDevice, stream_),
                     "cudaMemcpyAsync", "copying the input images", error))
            return TTFS_ERR_CUDA;
        ttfs_status status =
            engine_ == TTFS_ENGINE_ANALYTIC ? enqueue_analytic(n, error) : enqueue_stepped(n, error);
        if (status == TTFS_OK) status = collect(n, out, error);
        if (status != TTFS_OK)
            (void)cudaStreamSynchronize(stream_);  // leave no work in flight on the session's buffers
        return status;
    } catch (const std::bad_alloc&) {
        error = "out of host memory while running a batch on the CUDA backend";
        return TTFS_ERR_OUT_OF_MEMORY;
    } catch (...) {
        error = "unexpected C++ exception in the CUDA backend's run";
        return TTFS_ERR_INTERNAL;
    }
}

}  // namespace

// What a CUDA session allocates (device buffers, host copies) and an upper bound on the basic
// operations per image (docs/C_API.md, "Limits"), before anything is allocated. The work
// follows the kernels: an analytic neuron walks its receptive field (fan-in x the spike steps
// each unit keeps) once per chunk of arrivals (at least 128 steps); an analytic pool unit walks its window
// once per step it relays; the stepped engine runs every layer over all its units at every
// step it may act.
ttfs_status cuda_backend_requirements(const Model& model, ttfs_engine engine, int32_t max_batch,
                                      const std::vector<int32_t>& trace_steps, Requirements& out,
                                      std::string& error) {
    try {
        const bool stepped = engine == TTFS_ENGINE_STEPPED;
        const uint64_t batch = uint64_t(max_batch), classes = uint64_t(model.num_classes());
        const std::vector<int64_t> capacity = step_capacities(model);
        const std::vector<SpikeBounds> bounds = spike_bounds(model);
        Tally bytes, work;
        bytes.add_product(batch, classes, 8);                                   // host copies
        bytes.add_product(batch, uint64_t(model.input().out.size()), 4);        // images
        if (!stepped) bytes.add_product(batch, classes, 4);                     // potentials
        bytes.add_product(uint64_t(trace_steps.size()), 4);                      // output trace:
        bytes.add_product(uint64_t(trace_steps.size()), batch, classes, 8);     // device + host
        for (size_t i = 0; i < model.layers.size(); ++i) {
            const Layer& layer = model.layers[i];
            const uint64_t units = uint64_t(layer.out.size());
            const uint64_t fire_len = uint64_t(std::max(1, layer.fire_len()));
            work.add(units);
            if (layer.has_neurons()) {
                bytes.add_product(uint64_t(layer.weights.size() + layer.bias.size() + layer.fire_threshold.size() +
                                           layer.integ_kernel.size()), 4);
                bytes.add_product(batch, units, 4).add_product(batch, 4);       // first spikes, counts
                if (stepped) {
                    if (layer.kind != TTFS_LAYER_INPUT) bytes.add_product(batch, units, 4);  // membranes
                    bytes.add_product(batch, units);                                       // spike map
                }
                if (layer.fires) work.add_product(units, fire_len);
            }
            if (i == 0 || layer.kind == TTFS_LAYER_FLATTEN) continue;
            const SpikeBounds& in = bounds[i - 1];
            const uint64_t in_capacity = uint64_t(capacity[i - 1]);
            if (layer.kind == TTFS_LAYER_MAXPOOL) {
                // A gated unit also walks its window to find the winning child.
                const uint64_t children = uint64_t(bounds[i].children) *
                                          (layer.pool_mode == TTFS_POOL_GATED ? 2 : 1);
                if (stepped) {
                    bytes.add_product(batch, units, layer.pool_mode == TTFS_POOL_EARLIEST ? 2 : 1);
                    work.add_product(uint64_t(std::max(1, in.window_len)), units, children);
                } else {
                    bytes.add_product(batch, units, uint64_t(capacity[i]), 4);
                    work.add_product(units, uint64_t(capacity[i]) + 1, children, in_capacity);
                }
                continue;
            }
            const uint64_t fan_in = uint64_t(layer.kind == TTFS_LAYER_DENSE ? layer.in.size()
                                                                           : int64_t(layer.kernel_h) * layer.kernel_w * layer.in.c);
            if (stepped) {
                // Steps at which it integrates: step 0 and the part of its window where the
                // layer below may spike.
                const int64_t first = std::max<int64_t>(in.window_start, layer.integ_start);
                const int64_t last = std::min<int64_t>(int64_t(in.window_start) + in.window_len, layer.integ_end);
                work.add_product(uint64_t(std::max<int64_t>(0, last - first) + 1), units, fan_in);
            } else {
                work.add_product(units, fan_in, in_capacity, uint64_t(in.window_len) / gpu::kSmallestStepChunk + 2);
            }
        }
        if (stepped) work.add_product(uint64_t(model.time_steps), uint64_t(model.layers.size()));
        out.shared_bytes = bytes.value();
        out.per_worker_bytes = 0;
        out.work_per_image = work.value();
        out.workers = 1;
        return TTFS_OK;
    } catch (const std::bad_alloc&) {
        error = "out of host memory while sizing a CUDA session";
        return TTFS_ERR_OUT_OF_MEMORY;
    }
}

ttfs_status make_cuda_backend(std::shared_ptr<const Model> model, ttfs_engine engine, int32_t max_batch,
                              const std::vector<int32_t>& trace_steps, std::unique_ptr<Backend>& out,
                              std::string& error) {
    try {
        if (model == nullptr || max_batch < 1 ||
            (engine != TTFS_ENGINE_STEPPED && engine != TTFS_ENGINE_ANALYTIC)) {
            error = "make_cuda_backend: needs a model, max_batch >= 1 and a known engine";
            return TTFS_ERR_INVALID_ARGUMENT;
        }
        std::unique_ptr<CudaBackend> backend(new CudaBackend(std::move(model), engine, max_batch, trace_steps));
        const ttfs_status status = backend->init(error);
        if (status != TTFS_OK) return status;
        out = std::move(backend);
        return TTFS_OK;
    } catch (const std::bad_alloc&) {
        error = "out of host memory while creating a CUDA session";
        return TTFS_ERR_OUT_OF_MEMORY;
    } catch (...) {
        error = "unexpected C++ exception while creating a CUDA session";
        return TTFS_ERR_INTERNAL;
    }
}

int32_t cuda_device_count() {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
        (void)cudaGetLastError();  // no driver or no device: report 0, leave no error behind
        return 0;
    }
    return int32_t(count);
}

bool cuda_compiled() { return true; }

const char* cuda_build_description() {
    return "CUDA " TTFS_BUILD_CUDA_VERSION ", architectures " TTFS_BUILD_CUDA_ARCHS;
}

}  // namespace ttfs
