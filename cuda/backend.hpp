// The interface between the API layer (api.cpp) and the compute backends.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model.hpp"

namespace ttfs {

// Where a run writes its results. All pointers are host memory owned by the session, sized for
// the session's max_batch; a backend writes the first n images' worth.
struct RunOutputs {
    int32_t* predictions = nullptr;  // [n]
    float* potentials = nullptr;     // [n * num_classes]
    // Per layer index (size == model.layers.size()); nullptr for maxpool/flatten layers.
    std::vector<int32_t*> spike_counts;  // [n] neurons that fired, per image
    std::vector<int32_t*> spike_times;   // [n * layer size], -1 = never; all nullptr when the
                                         // session does not record spike times
    // The output trace (TTFS_SESSION_RECORD_OUTPUT_TRACE): the output layer's potentials after
    // each step of trace_steps (strictly increasing, each in [0, time_steps)), as they stand
    // once that step is complete; [n * trace_steps.size() * num_classes], image-major, then
    // step, then class. nullptr (and trace_steps empty) when the session does not record it.
    float* output_trace = nullptr;
    std::vector<int32_t> trace_steps;
};

class Backend {
public:
    virtual ~Backend() = default;
    // images: n * input size float32, HWC, already scaled. 1 <= n <= max_batch (checked by the
    // caller). Returns TTFS_OK or a status with `error` set. Must not throw.
    virtual ttfs_status run(const float* images, int32_t n, const RunOutputs& out,
                            std::string& error) = 0;
    // CPU worker threads (0 = hardware concurrency); backends without threads ignore it.
    virtual void set_threads(int32_t threads) { (void)threads; }
};

// What a session on a backend will allocate and compute, known before anything is allocated:
// the session's budget (ttfs_session_create_ex, docs/C_API.md "Limits").
struct Requirements {
    uint64_t shared_bytes = 0;      // allocated once per session (CPU plans; CUDA device buffers,
                                    // uploads and host copies)
    uint64_t per_worker_bytes = 0;  // CPU: one workspace per worker thread; CUDA: 0
    uint64_t work_per_image = 0;    // an upper bound on the basic operations per image
    int32_t workers = 1;            // worker threads a batch of max_batch uses by default
};

// CPU backend (cuda/cpu/cpu_backend.cpp and the units beside it). engine: TTFS_ENGINE_STEPPED or TTFS_ENGINE_ANALYTIC; the
// caller has already checked windows_allow_analytic() for the analytic engine. The backend
// never runs more than max_workers worker threads (each needs a workspace).
ttfs_status cpu_backend_requirements(const Model& model, ttfs_engine engine, int32_t max_batch,
                                     Requirements& out, std::string& error);
ttfs_status make_cpu_backend(std::shared_ptr<const Model> model, ttfs_engine engine,
                             int32_t max_batch, int32_t max_workers, std::unique_ptr<Backend>& out,
                             std::string& error);

// CUDA backend (cuda_backend.cu, or cuda_stub.cpp when CUDA is not compiled in, which returns
// TTFS_ERR_BACKEND_UNAVAILABLE). Never throws; CUDA errors become TTFS_ERR_CUDA. trace_steps:
// the output trace's steps (RunOutputs::trace_steps; empty: none), for which it keeps device
// buffers.
ttfs_status cuda_backend_requirements(const Model& model, ttfs_engine engine, int32_t max_batch,
                                      const std::vector<int32_t>& trace_steps, Requirements& out,
                                      std::string& error);
ttfs_status make_cuda_backend(std::shared_ptr<const Model> model, ttfs_engine engine,
                              int32_t max_batch, const std::vector<int32_t>& trace_steps,
                              std::unique_ptr<Backend>& out, std::string& error);

// Usable CUDA devices: 0 without CUDA, driver or device. Never fails.
int32_t cuda_device_count();
bool cuda_compiled();
// e.g. "CUDA 13.0, architectures 80-real;90-real;75-virtual" or "CUDA not compiled in".
const char* cuda_build_description();

}  // namespace ttfs
