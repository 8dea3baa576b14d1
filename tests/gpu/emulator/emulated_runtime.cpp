// The CUDA emulator: host implementations of the runtime calls declared in
// include/cuda_runtime.h and of the kernel launchers of cuda/{analytic,stepped,readout}_kernels.cuh.
//
// Why: a machine without a GPU can still run the CUDA backend's real host code
// (cuda/cuda_backend.cu, compiled as C++) and the kernels' real bodies (cuda/engine_units.cuh),
// so tests/test_cuda.py checks them against the CPU backend everywhere. What it cannot check:
// nvcc's code generation, real concurrency, launch limits, device memory sizes.
//
// To make mistakes visible rather than lucky, the emulator
// - fills new "device" memory with 0x5A bytes (a real cudaMalloc returns garbage too: an
//   uninitialised spike time reads as a huge valid step, a potential as 1.5e16);
// - checks every pointer range a copy, a memset or a kernel touches against the live
//   allocations and fails the call with cudaErrorInvalidValue (and a line on stderr) if a
//   range is not inside one;
// - runs each launch's units in descending index order, so a unit that depended on another
//   unit of the same launch having run first would show.
// Environment (read at each call, so tests can change it):
//   TTFS_EMULATED_DEVICES=n       device count (default 1; 0 = cudaErrorNoDevice)
//   TTFS_EMULATED_MALLOC_LIMIT=b  cudaMalloc of more than b bytes fails (cudaErrorMemoryAllocation)
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <new>
#include <set>

#include "analytic_kernels.cuh"
#include "cuda_runtime.h"
#include "engine_units.cuh"
#include "readout_kernels.cuh"
#include "stepped_kernels.cuh"

namespace {

std::mutex registry_mutex;
std::map<uintptr_t, size_t> allocations;  // base address -> bytes
std::set<uintptr_t> streams;
thread_local cudaError_t last_error = cudaSuccess;
thread_local int current_device = 0;

cudaError_t fail(cudaError_t error) {
    last_error = error;
    return error;
}

long env_long(const char* name, long fallback) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') return fallback;
    return std::strtol(text, nullptr, 10);
}

int emulated_devices() { return int(env_long("TTFS_EMULATED_DEVICES", 1)); }

// True when [pointer, pointer + bytes) lies inside one live allocation.
bool inside_allocation(const void* pointer, size_t bytes) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(pointer);
    std::lock_guard<std::mutex> lock(registry_mutex);
    auto it = allocations.upper_bound(begin);
    if (it == allocations.begin()) return false;
    --it;
    return begin >= it->first && begin - it->first <= it->second && bytes <= it->second - (begin - it->first);
}

bool check_range(const void* pointer, size_t bytes, const char* call, const char* what) {
    if (bytes == 0 || inside_allocation(pointer, bytes)) return true;
    std::fprintf(stderr, "CUDA emulator: %s touches %zu bytes of %s at %p outside any device allocation\n",
                 call, bytes, what, pointer);
    return false;
}

bool known_stream(cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(registry_mutex);
    return stream == nullptr || streams.count(reinterpret_cast<uintptr_t>(stream)) != 0;
}

}  // namespace

const char* cudaGetErrorString(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    }
    return "unrecognized error code";
}

const char* cudaGetErrorName(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    }
    return "cudaErrorUnknown";
}

cudaError_t cudaGetLastError(void) {
    const cudaError_t error = last_error;
    last_error = cudaSuccess;
    return error;
}

cudaError_t cudaGetDeviceCount(int* count) {
    const int devices = emulated_devices();
    *count = devices > 0 ? devices : 0;
    return devices > 0 ? cudaSuccess : fail(cudaErrorNoDevice);
}

cudaError_t cudaGetDevice(int* device) {
    *device = current_device;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= emulated_devices()) return fail(cudaErrorInvalidDevice);
    current_device = device;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void** pointer, size_t bytes) {
    const long limit = env_long("TTFS_EMULATED_MALLOC_LIMIT", -1);
    if (pointer == nullptr) return fail(cudaErrorInvalidValue);
    if ((limit >= 0 && bytes > size_t(limit)) || emulated_devices() <= 0) return fail(cudaErrorMemoryAllocation);
    void* memory = std::malloc(bytes == 0 ? 1 : bytes);
    if (memory == nullptr) return fail(cudaErrorMemoryAllocation);
    std::memset(memory, 0x5A, bytes);
    {
        std::lock_guard<std::mutex> lock(registry_mutex);
        allocations[reinterpret_cast<uintptr_t>(memory)] = bytes;
    }
    *pointer = memory;
    return cudaSuccess;
}

cudaError_t cudaFree(void* pointer) {
    if (pointer == nullptr) return cudaSuccess;
    {
        std::lock_guard<std::mutex> lock(registry_mutex);
        if (allocations.erase(reinterpret_cast<uintptr_t>(pointer)) == 0) return fail(cudaErrorInvalidValue);
    }
    std::free(pointer);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* destination, const void* source, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
    if (!known_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
    const bool to_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    const bool from_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if ((to_device && !check_range(destination, bytes, "cudaMemcpy", "the destination")) ||
        (from_device && !check_range(source, bytes, "cudaMemcpy", "the source")))
        return fail(cudaErrorInvalidValue);
    if (bytes != 0) std::memcpy(destination, source, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* destination, const void* source, size_t bytes, cudaMemcpyKind kind) {
    return cudaMemcpyAsync(destination, source, bytes, kind, nullptr);
}

cudaError_t cudaMemsetAsync(void* pointer, int value, size_t bytes, cudaStream_t stream) {
    if (!known_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
    if (!check_range(pointer, bytes, "cudaMemset", "the buffer")) return fail(cudaErrorInvalidValue);
    if (bytes != 0) std::memset(pointer, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
    // A stream is a token: the address of a byte of host memory, unique while it lives.
    char* token = new (std::nothrow) char;
    if (token == nullptr) return fail(cudaErrorMemoryAllocation);
    std::lock_guard<std::mutex> lock(registry_mutex);
    streams.insert(reinterpret_cast<uintptr_t>(token));
    *stream = reinterpret_cast<cudaStream_t>(token);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    {
        std::lock_guard<std::mutex> lock(registry_mutex);
        if (streams.erase(reinterpret_cast<uintptr_t>(stream)) == 0) return fail(cudaErrorInvalidResourceHandle);
    }
    delete reinterpret_cast<char*>(stream);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    // Work ran when it was enqueued; a launch error was already returned by the launcher.
    return known_stream(stream) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

// ---- kernel launchers: the per-unit functions, every unit, in descending order ---------------

namespace ttfs {
namespace gpu {

namespace {

// The element ranges a kernel reads and writes, checked before it "runs".
bool launch_ranges_ok(const char* kernel, std::initializer_list<std::pair<const void*, size_t>> ranges) {
    for (const auto& range : ranges)
        if (!check_range(range.first, range.second, kernel, "a kernel argument")) return false;
    return true;
}

bool layer_tables_ok(const DeviceLayer& layer, const char* kernel) {
    const size_t integ_len = layer.integ_end > layer.integ_start ? size_t(layer.integ_end - layer.integ_start) : 0;
    const bool weighted = layer.kind == TTFS_LAYER_CONV2D || layer.kind == TTFS_LAYER_DENSE;
    return launch_ranges_ok(kernel, {{layer.fire_threshold, size_t(layer.fire_len) * sizeof(float)}}) &&
           (!weighted ||
            launch_ranges_ok(kernel, {{layer.weights, size_t(layer.kernel_h) * layer.kernel_w * layer.in_c *
                                                          layer.out_c * sizeof(float)},
                                      {layer.bias, size_t(layer.out_c) * sizeof(float)},
                                      {layer.integ_kernel, integ_len * sizeof(float)}}));
}

// A gated pool's threshold table is device memory of its length; at step t (t >= 0: the
// stepped engine) t is inside the window it covers.
bool gate_ok(const DeviceLayer& pool, int32_t t, const char* kernel) {
    if (t >= 0 && (t < pool.gate_fire_start || t - pool.gate_fire_start >= pool.gate_fire_len)) {
        std::fprintf(stderr, "CUDA emulator: %s: gated pool at step %d outside the children's fire window\n",
                     kernel, t);
        return false;
    }
    return launch_ranges_ok(kernel, {{pool.gate_threshold, size_t(pool.gate_fire_len) * sizeof(float)}});
}

}  // namespace

cudaError_t launch_input_first_spikes(const DeviceLayer& input, const float* images, int32_t images_count,
                                      int32_t* first_spike, cudaStream_t stream) {
    const int64_t total = int64_t(images_count) * input.out_size();
    if (!known_stream(stream)) return cudaErrorInvalidResourceHandle;
    if (!layer_tables_ok(input, "input_first_spikes") ||
        !launch_ranges_ok("input_first_spikes", {{images, total * sizeof(float)},
                                                  {first_spike, total * sizeof(int32_t)}}))
        return cudaErrorInvalidValue;
    for (int64_t idx = total - 1; idx >= 0; --idx) first_spike[idx] = analytic_input_unit(input, images[idx]);
    return cudaSuccess;
}

cudaError_t launch_pool_spike_steps(const DeviceLayer& pool, SpikeSteps below, int32_t images_count,
                                    int32_t* out_steps, int32_t out_capacity, cudaStream_t stream) {
    const int64_t total = int64_t(images_count) * pool.out_size();
    if (!known_stream(stream)) return cudaErrorInvalidResourceHandle;
    if (!launch_ranges_ok("pool_spike_steps",
                          {{below.steps, images_count * pool.in_size() * below.capacity * sizeof(int32_t)},
                           {out_steps, total * out_capacity * sizeof(int32_t)}}) ||
        (pool.pool_mode == TTFS_POOL_GATED && (below.capacity != 1 || !gate_ok(pool, -1, "pool_spike_steps"))))
        return cudaErrorInvalidValue;
    for (int64_t idx = total - 1; idx >= 0; --idx) analytic_pool_unit(pool, below, idx, out_steps, out_capacity);
    return cudaSuccess;
}

cudaError_t launch_neuron_layer_analytic(const DeviceLayer& layer, SpikeSteps below, int32_t images_count,
                                         int32_t* first_spike, float* potential, const TraceRows& trace,
                                         cudaStream_t stream) {
    const int64_t total = int64_t(images_count) * layer.out_size();
    if (!known_stream(stream)) return cudaErrorInvalidResourceHandle;
    if (!layer_tables_ok(layer, "neuron_layer_analytic") ||
        !launch_ranges_ok("neuron_layer_analytic",
                          {{below.steps, images_count * layer.in_size() * below.capacity * sizeof(int32_t)},
                           {first_spike, total * sizeof(int32_t)}}) ||
        (potential != nullptr && !launch_ranges_ok("neuron_layer_analytic", {{potential, total * sizeof(float)}})) ||
        (trace.count > 0 &&
         (trace.row_stride != total ||
          !launch_ranges_ok("neuron_layer_analytic", {{trace.steps, size_t(trace.count) * sizeof(int32_t)},
                                                      {trace.rows, size_t(trace.count) * total * sizeof(float)}}))))
        return cudaErrorInvalidValue;
    with_step_chunk(layer, [&](auto chunk) {
        for (int64_t idx = total - 1; idx >= 0; --idx)
            analytic_neuron_unit<decltype(chunk)::value>(layer, below, idx, first_spike, potential, trace);
    });
    return cudaSuccess;
}

cudaError_t launch_input_fire_step(const DeviceLayer& input, const float* images, int32_t images_count,
                                   int32_t t, int32_t* first_spike, uint8_t* spiked_now, cudaStream_t stream) {
    const int64_t total = int64_t(images_count) * input.out_size();
    if (!known_stream(stream)) return cudaErrorInvalidResourceHandle;
    if (t < input.fire_start || t - input.fire_start >= input.fire_len) {
        std::fprintf(stderr, "CUDA emulator: input_fire_step at step %d outside the fire window\n", t);
        return cudaErrorInvalidValue;
    }
    if (!layer_tables_ok(input, "input_fire_step") ||
        !launch_ranges_ok("input_fire_step", {{images, total * sizeof(float)},
                                               {first_spike, total * sizeof(int32_t)},
                                               {spiked_now, size_t(total)}}))
        return cudaErrorInvalidValue;
    for (int64_t idx = total - 1; idx >= 0; --idx) stepped_input_unit(input, images, idx, t, first_spike, spiked_now);
    return cudaSuccess;
}

cudaError_t launch_pool_relay_step(const DeviceLayer& pool, const uint8_t* below_spiked_now,
                                   const int32_t* below_first_spike, int32_t images_count, int32_t t,
                                   uint8_t* relayed_before, uint8_t* spiked_now, cudaStream_t stream) {
    const int64_t total = int64_t(images_count) * pool.out_size();
    if (!known_stream(stream)) return cudaErrorInvalidResourceHandle;
    if (!launch_ranges_ok("pool_relay_step", {{below_spiked_now, size_t(images_count * pool.in_size())},
                                               {spiked_now, size_t(total)}}) ||
        (pool.pool_mode == TTFS_POOL_EARLIEST &&
         !launch_ranges_ok("pool_relay_step", {{relayed_before, size_t(total)}})) ||
        (pool.pool_mode == TTFS_POOL_GATED && !gate_ok(pool, t, "pool_relay_step")) ||
        (pool.pool_mode == TTFS_POOL_GATED &&
         !launch_ranges_ok("pool_relay_step",
                           {{below_first_spike, size_t(images_count * pool.in_size()) * sizeof(int32_t)}})))
        return cudaErrorInvalidValue;
    for (int64_t idx = total - 1; idx >= 0; --idx)
        stepped_pool_unit(pool, below_spiked_now, below_first_spike, idx, t, relayed_before, spiked_now);
    return cudaSuccess;
}

cudaError_t launch_neuron_step(const DeviceLayer& layer, const uint8_t* below_spiked_now, int32_t images_count,
                               int32_t t, bool integrate_now, bool fire_now, float* membrane, int32_t* first_spike,
                               uint8_t* spiked_now, cudaStream_t stream) {
    const int64_t total = int64_t(images_count) * layer.out_size();
    if (!known_stream(stream)) return cudaErrorInvalidResourceHandle;
    if (fire_now && (t < layer.fire_start || t - layer.fire_start >= layer.fire_len)) {
        std::fprintf(stderr, "CUDA emulator: neuron_step fires at step %d outside the fire window\n", t);
        return cudaErrorInvalidValue;
    }
    if (!layer_tables_ok(layer, "neuron_step") ||
        !launch_ranges_ok("neuron_step", {{below_spiked_now, size_t(images_count * layer.in_size())},
                                           {membrane, total * sizeof(float)},
                                           {first_spike, total * sizeof(int32_t)},
                                           {spiked_now, size_t(total)}}))
        return cudaErrorInvalidValue;
    for (int64_t idx = total - 1; idx >= 0; --idx)
        stepped_neuron_unit(layer, below_spiked_now, idx, t, integrate_now, fire_now, membrane, first_spike,
                            spiked_now);
    return cudaSuccess;
}

cudaError_t launch_count_spikes(const int32_t* first_spike, int64_t layer_size, int32_t images_count,
                                int32_t* counts, cudaStream_t stream) {
    if (!known_stream(stream)) return cudaErrorInvalidResourceHandle;
    if (!launch_ranges_ok("count_spikes", {{first_spike, images_count * layer_size * sizeof(int32_t)},
                                            {counts, images_count * sizeof(int32_t)}}))
        return cudaErrorInvalidValue;
    for (int32_t image = images_count - 1; image >= 0; --image) {
        int32_t fired = 0;
        for (int64_t i = 0; i < layer_size; ++i) fired += first_spike[image * layer_size + i] >= 0 ? 1 : 0;
        counts[image] = fired;
    }
    return cudaSuccess;
}

}  // namespace gpu
}  // namespace ttfs
