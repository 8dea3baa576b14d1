// The C ABI's handles and errors (api_handles.cpp), shared by the entry points of api.cpp:
// the thread's last error message, guarded() (no exception crosses the boundary), and the
// registry that turns ttfs_model* / ttfs_session* values into live objects or a clear refusal.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "backend.hpp"
#include "model.hpp"
#include "ttfs.h"

// A session's state. The ttfs_session* values handed to callers are registry ids (see
// "Registries of live handles" below), never pointers to this struct; ttfs_model has no
// definition at all: the registry holds the model itself.
struct ttfs_session {
    std::shared_ptr<const ttfs::Model> model;  // keeps the model alive after ttfs_model_free
    std::unique_ptr<ttfs::Backend> backend;
    ttfs_backend backend_kind = TTFS_BACKEND_CPU;
    ttfs_engine engine = TTFS_ENGINE_STEPPED;
    int32_t max_batch = 0;
    uint32_t flags = 0;
    // The budget (ttfs_session_create_ex): the limits, and what the session was sized for.
    uint64_t max_memory_bytes = TTFS_DEFAULT_MAX_MEMORY_BYTES;
    uint64_t max_work_per_image = TTFS_DEFAULT_MAX_WORK_PER_IMAGE;
    uint64_t memory_bytes = 0;
    uint64_t work_per_image = 0;
    int32_t max_workers = 1;

    // Result buffers sized for max_batch; outputs points into them for the backend.
    std::vector<int32_t> predictions;
    std::vector<float> potentials;
    std::vector<std::vector<int32_t>> spike_counts;  // per layer; empty for maxpool/flatten
    std::vector<std::vector<int32_t>> spike_times;   // per layer; empty unless recorded
    std::vector<int32_t> trace_steps;  // the output trace's steps; empty unless recorded
    std::vector<float> output_trace;   // [max_batch * trace steps * classes]
    ttfs::RunOutputs outputs;
    std::vector<float> staging;  // uint8 images converted to float32, allocated on first use

    int32_t last_batch = 0;  // images in the last successful run; 0 = no results yet
    // Set while a call uses the session; taken under the registry mutex (see acquire_session)
    // so that ttfs_session_free cannot delete a session another thread is inside.
    std::atomic<bool> busy{false};

    bool records_spike_times() const { return (flags & TTFS_SESSION_RECORD_SPIKE_TIMES) != 0; }
    bool allows_unscaled() const { return (flags & TTFS_SESSION_ALLOW_UNSCALED) != 0; }
    bool records_output_trace() const { return (flags & TTFS_SESSION_RECORD_OUTPUT_TRACE) != 0; }
};

namespace ttfs {
namespace api {

// ---- Errors ---------------------------------------------------------------------------------

// Sets the thread's last error message (ttfs_last_error) and returns status. Never throws.
ttfs_status fail(ttfs_status status, const std::string& message) noexcept;

// fail() for the exception handlers: builds "function: text detail" without letting a second
// exception (say, std::bad_alloc while out of memory) escape.
ttfs_status fail_noexcept(ttfs_status status, const char* function, const char* text,
                          const char* detail = "") noexcept;

// The thread's last error message.
const char* last_error() noexcept;

// Runs an entry point's body; turns every exception into a status and a message.
template <typename Body>
ttfs_status guarded(const char* function, Body&& body) noexcept {
    try {
        return body();
    } catch (const std::bad_alloc&) {
        return fail_noexcept(TTFS_ERR_OUT_OF_MEMORY, function, "out of memory");
    } catch (const std::exception& e) {
        return fail_noexcept(TTFS_ERR_INTERNAL, function,
                             "internal error (a bug in libttfs; please report it): ", e.what());
    } catch (...) {
        return fail_noexcept(TTFS_ERR_INTERNAL, function,
                             "unknown internal error (a bug in libttfs; please report it)");
    }
}

// ---- Handles --------------------------------------------------------------------------------

// The handle as printed in messages ("NULL" or its value).
std::string handle_text(const void* handle);

// A new handle for a loaded model / a created session, in *out; TTFS_ERR_OUT_OF_MEMORY (the
// object not taken) when every slot is in use.
ttfs_status register_model(std::shared_ptr<const ttfs::Model> model, ttfs_model** out);
ttfs_status register_session(std::unique_ptr<ttfs_session>& session, ttfs_session** out);

// The model behind a handle, or nullptr (with the error set) if the handle is not a live model.
// The shared_ptr is copied under the lock, so a concurrent ttfs_model_free cannot pull the model
// out from under the caller.
std::shared_ptr<const ttfs::Model> lookup_model(const ttfs_model* handle, const char* function,
                                                ttfs_status& status);

// Marks a session busy for the duration of one call; releases it on scope exit.
class SessionUse {
public:
    SessionUse() = default;
    SessionUse(const SessionUse&) = delete;
    SessionUse& operator=(const SessionUse&) = delete;
    ~SessionUse() {
        if (session_ != nullptr) session_->busy.store(false, std::memory_order_release);
    }
    ttfs_session* get() const { return session_; }
    void adopt(ttfs_session* session) { session_ = session; }

private:
    ttfs_session* session_ = nullptr;
};

// Checks the handle and takes the session's busy flag, both under the registry lock.
ttfs_status acquire_session(const ttfs_session* handle, const char* function, SessionUse& use);

// Immutable session fields (backend, engine) need the handle check but not the busy flag.
const ttfs_session* check_session(const ttfs_session* handle, const char* function,
                                  ttfs_status& status);

// Ends a live handle (ttfs_model_free, ttfs_session_free): the slot is released under the lock
// and the object destroyed after it. A handle that is not live (or of the other kind, or a
// session in use by another thread) is refused and nothing is freed.
ttfs_status free_model(ttfs_model* model, const char* function);
ttfs_status free_session(ttfs_session* session, const char* function);

ttfs_status null_argument(const char* function, const char* name);

}  // namespace api
}  // namespace ttfs
