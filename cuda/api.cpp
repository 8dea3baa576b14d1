// The C ABI boundary (include/ttfs.h): argument validation, loading, sessions, result buffers.
// Nothing in here computes spikes; it hands validated work to a Backend. Handles and errors
// live in api_handles.cpp.
//
// Every entry point runs its body inside guarded(), so no C++ exception crosses the boundary:
// std::bad_alloc becomes TTFS_ERR_OUT_OF_MEMORY, anything else TTFS_ERR_INTERNAL, and the
// message of the last failure on a thread is kept for ttfs_last_error().
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_handles.hpp"
#include "backend.hpp"
#include "build_config.h"
#include "model.hpp"
#include "ttfs.h"
#include "ttfs_format.h"
#include "ttfs_math.h"

using ttfs::api::acquire_session;
using ttfs::api::check_session;
using ttfs::api::fail;
using ttfs::api::guarded;
using ttfs::api::lookup_model;
using ttfs::api::null_argument;
using ttfs::api::SessionUse;

namespace {

// ---- Loading --------------------------------------------------------------------------------

ttfs_status load_model(const uint8_t* data, size_t size, const std::string& source,
                       ttfs_model** out) {
    auto model = std::make_shared<ttfs::Model>();
    std::string error;
    // The reader rejects size 0 itself; give it a real pointer so it never sees NULL.
    static const uint8_t empty = 0;
    ttfs_status status = ttfs::read_model(data != nullptr ? data : &empty, size, *model, error);
    if (status != TTFS_OK) {
        if (error.empty()) error = "the model was rejected without a message";
        return fail(status, source.empty() ? error : source + ": " + error);
    }
    return ttfs::api::register_model(std::move(model), out);
}

std::string errno_text(int error) { return std::generic_category().message(error); }

// What a file that is not a regular file is, for the message.
const char* file_type_text(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

// Reads a whole model file. Only regular files are read (a device such as /dev/zero, a FIFO or
// a directory is refused before any byte is read), the size is checked against the format's
// largest file first, and exactly that many bytes are read: a file that changes size while it
// is read is refused too. The file is opened non-blocking so that opening a FIFO cannot hang.
ttfs_status read_file(const char* path, std::vector<uint8_t>& bytes) {
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int error = errno;
        return fail(TTFS_ERR_IO, std::string("cannot open model file '") + path +
                                     "': " + errno_text(error));
    }
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat info;
    if (::fstat(fd, &info) != 0) {
        int error = errno;
        return fail(TTFS_ERR_IO, std::string("cannot read model file '") + path +
                                     "': " + errno_text(error));
    }
    if (!S_ISREG(info.st_mode))
        return fail(TTFS_ERR_IO, std::string("model file '") + path + "' is " +
                                     file_type_text(info.st_mode) +
                                     "; expected a regular file");
    const uint64_t size = uint64_t(info.st_size);
    if (info.st_size < 0 || size > uint64_t(TTFS_FMT_MAX_FILE_SIZE) ||
        size > uint64_t(std::numeric_limits<size_t>::max()))
        return fail(TTFS_ERR_IO, std::string("model file '") + path + "' is " +
                                     std::to_string(info.st_size) +
                                     " bytes, more than the largest model file the format "
                                     "allows (" + std::to_string(uint64_t(TTFS_FMT_MAX_FILE_SIZE)) +
                                     " bytes, docs/FORMAT.md); not a ttfs model file");
    bytes.resize(size_t(size));
    size_t used = 0;
    // One byte past the size: a read that finds it means the file grew.
    uint8_t extra = 0;
    for (;;) {
        uint8_t* into = used < bytes.size() ? bytes.data() + used : &extra;
        const size_t want = used < bytes.size() ? bytes.size() - used : 1;
        const ssize_t got = ::read(fd, into, want);
        if (got < 0) {
            int error = errno;
            if (error == EINTR) continue;
            return fail(TTFS_ERR_IO, std::string("cannot read model file '") + path +
                                         "': " + errno_text(error));
        }
        if (got == 0) break;
        if (used >= bytes.size())
            return fail(TTFS_ERR_IO, std::string("model file '") + path +
                                         "' grew while it was read (it was " +
                                         std::to_string(size) + " bytes when opened)");
        used += size_t(got);
    }
    if (used != bytes.size())
        return fail(TTFS_ERR_IO, std::string("model file '") + path + "' shrank while it was read (" +
                                     std::to_string(used) + " of the " + std::to_string(size) +
                                     " bytes it had when opened)");
    return TTFS_OK;
}

// ---- Sessions -------------------------------------------------------------------------------

const char* backend_name(int32_t backend) {
    switch (backend) {
        case TTFS_BACKEND_AUTO: return "auto";
        case TTFS_BACKEND_CPU: return "cpu";
        case TTFS_BACKEND_CUDA: return "cuda";
        default: return "?";
    }
}

// Physical memory in bytes, or 0 when the system does not say.
uint64_t physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    const long pages = sysconf(_SC_PHYS_PAGES);
    const long page_size = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page_size > 0) return uint64_t(pages) * uint64_t(page_size);
#endif
    return 0;
}

// Bytes of the session's result buffers for max_batch images: predictions, potentials, spike
// counts, spike times and the output trace when recorded, and the float copy of uint8 images
// (ttfs_session_run_u8).
uint64_t result_bytes(const ttfs_session& session) {
    const ttfs::Model& model = *session.model;
    const uint64_t batch = uint64_t(session.max_batch);
    ttfs::Tally elements;
    elements.add_product(batch, 1);                              // predictions
    elements.add_product(batch, uint64_t(model.num_classes()));  // potentials
    elements.add_product(batch, uint64_t(model.input().out.size()));  // uint8 staging
    elements.add_product(batch, uint64_t(session.trace_steps.size()), uint64_t(model.num_classes()));
    for (const ttfs::Layer& layer : model.layers) {
        if (!layer.has_neurons()) continue;
        elements.add_product(batch, 1);  // spike counts
        if (session.records_spike_times()) elements.add_product(batch, uint64_t(layer.out.size()));
    }
    return ttfs::Tally().add_product(elements.value(), 4).value();  // every element is 4 bytes
}

// Sizes the session's result buffers for max_batch images and points outputs at them. The
// budget has been checked: this fits.
ttfs_status allocate_results(ttfs_session& session) {
    const ttfs::Model& model = *session.model;
    const size_t batch = size_t(session.max_batch);
    session.predictions.assign(batch, 0);
    session.potentials.assign(batch * size_t(model.num_classes()), 0.0f);
    session.spike_counts.resize(model.layers.size());
    session.spike_times.resize(model.layers.size());
    session.outputs.predictions = session.predictions.data();
    session.outputs.potentials = session.potentials.data();
    session.outputs.spike_counts.assign(model.layers.size(), nullptr);
    session.outputs.spike_times.assign(model.layers.size(), nullptr);
    if (session.records_output_trace()) {
        session.output_trace.assign(batch * session.trace_steps.size() * size_t(model.num_classes()), 0.0f);
        session.outputs.output_trace = session.output_trace.data();
        session.outputs.trace_steps = session.trace_steps;
    }
    for (size_t i = 0; i < model.layers.size(); ++i) {
        const ttfs::Layer& layer = model.layers[i];
        if (!layer.has_neurons()) continue;
        session.spike_counts[i].assign(batch, 0);
        session.outputs.spike_counts[i] = session.spike_counts[i].data();
        if (session.records_spike_times()) {
            session.spike_times[i].assign(batch * size_t(layer.out.size()), -1);
            session.outputs.spike_times[i] = session.spike_times[i].data();
        }
    }
    return TTFS_OK;
}

const char* engine_name(int32_t engine) { return engine == TTFS_ENGINE_ANALYTIC ? "analytic" : "stepped"; }

// The session's budget on one backend (docs/C_API.md, "Limits"): refuses when its memory, with
// one worker thread, is above the machine's physical memory (TTFS_ERR_OUT_OF_MEMORY) or its
// limit, or when its work per image is above its limit (TTFS_ERR_LIMIT); otherwise records
// how many CPU workers the memory limit has room for, and what the session was sized for.
// Nothing is allocated yet.
ttfs_status check_budget(ttfs_session& session, int32_t backend, const ttfs::Requirements& need,
                         const char* function, std::string& error) {
    const uint64_t results = result_bytes(session);
    const uint64_t fixed = ttfs::Tally().add(results).add(need.shared_bytes).value();
    const uint64_t smallest = ttfs::Tally().add(fixed).add(need.per_worker_bytes).value();
    const bool cpu = backend == TTFS_BACKEND_CPU;
    auto memory_text = [&](uint64_t total) {
        std::ostringstream msg;
        msg << "the session needs " << total << " bytes of memory (result buffers for max_batch "
            << session.max_batch << ": " << results << (session.records_spike_times() ? ", spike times recorded" : "")
            << (session.records_output_trace() ? ", output trace recorded" : "")
            << "; " << (cpu ? "CPU backend tables: " : "CUDA device buffers and host copies: ")
            << need.shared_bytes;
        if (cpu) msg << "; a workspace per worker thread: " << need.per_worker_bytes << ", one thread";
        msg << ")";
        return msg.str();
    };
    const uint64_t physical = physical_memory_bytes();
    if (physical != 0 && smallest > physical) {
        error = std::string(function) + ": " + memory_text(smallest) + ", more than this machine's " +
                std::to_string(physical) + " bytes of memory; use a smaller max_batch" +
                (session.records_spike_times() ? " or do not record spike times" : "") +
                (session.records_output_trace() ? " or record the output trace at fewer steps" : "");
        return TTFS_ERR_OUT_OF_MEMORY;
    }
    const bool default_memory = session.max_memory_bytes == TTFS_DEFAULT_MAX_MEMORY_BYTES;
    if (smallest > session.max_memory_bytes) {
        error = std::string(function) + ": " + memory_text(smallest) + ", more than its limit of " +
                std::to_string(session.max_memory_bytes) + " bytes" +
                (default_memory ? " (TTFS_DEFAULT_MAX_MEMORY_BYTES)" : "") +
                "; raise ttfs_session_options.max_memory_bytes (pyttfs: max_memory_bytes=) or use a "
                "smaller max_batch";
        return TTFS_ERR_LIMIT;
    }
    if (need.work_per_image > session.max_work_per_image) {
        std::ostringstream msg;
        msg << function << ": the model may cost up to " << need.work_per_image
            << " basic operations per image on the " << engine_name(session.engine) << " engine ("
            << backend_name(backend) << " backend), more than the limit of " << session.max_work_per_image
            << (session.max_work_per_image == TTFS_DEFAULT_MAX_WORK_PER_IMAGE ? " (TTFS_DEFAULT_MAX_WORK_PER_IMAGE)" : "")
            << "; raise ttfs_session_options.max_work_per_image (pyttfs: max_work_per_image=)"
            << (session.engine == TTFS_ENGINE_STEPPED ? " or use the analytic engine" : "");
        error = msg.str();
        return TTFS_ERR_LIMIT;
    }
    // Workers: as many as a full batch uses by default, as far as the limit has room.
    uint64_t workers = uint64_t(std::max(1, need.workers));
    if (need.per_worker_bytes > 0) {
        uint64_t room = session.max_memory_bytes;
        if (physical != 0) room = std::min(room, physical);
        workers = std::min(workers, std::max<uint64_t>(1, (room - fixed) / need.per_worker_bytes));
    }
    session.max_workers = cpu ? int32_t(std::min<uint64_t>(workers, uint64_t(INT32_MAX))) : 1;
    session.memory_bytes = ttfs::Tally().add(fixed).add_product(need.per_worker_bytes, workers).value();
    session.work_per_image = need.work_per_image;
    return TTFS_OK;
}

// Sizes, checks and makes the backend of one kind (CPU or CUDA).
ttfs_status make_backend(ttfs_session& session, int32_t backend, const char* function, std::string& error) {
    ttfs::Requirements need;
    ttfs_status status = backend == TTFS_BACKEND_CUDA
                             ? ttfs::cuda_backend_requirements(*session.model, session.engine, session.max_batch,
                                                               session.trace_steps, need, error)
                             : ttfs::cpu_backend_requirements(*session.model, session.engine, session.max_batch, need, error);
    if (status == TTFS_OK) status = check_budget(session, backend, need, function, error);
    if (status != TTFS_OK) return status;
    session.backend_kind = static_cast<ttfs_backend>(backend);
    if (backend == TTFS_BACKEND_CUDA)
        return ttfs::make_cuda_backend(session.model, session.engine, session.max_batch, session.trace_steps,
                                       session.backend, error);
    return ttfs::make_cpu_backend(session.model, session.engine, session.max_batch, session.max_workers,
                                  session.backend, error);
}

ttfs_status create_backend(ttfs_session& session, int32_t requested, const char* function) {
    std::string error;
    ttfs_status status;
    int32_t kind = TTFS_BACKEND_CPU;
    if (requested == TTFS_BACKEND_CUDA) {
        if (ttfs::cuda_compiled() && ttfs::cuda_device_count() == 0)
            return fail(TTFS_ERR_BACKEND_UNAVAILABLE,
                        std::string(function) + ": backend 'cuda' asked for, but no usable CUDA "
                        "device was found (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides "
                        "them); use backend 'cpu' or 'auto'");
        kind = TTFS_BACKEND_CUDA;
        status = make_backend(session, kind, function, error);
    } else if (requested == TTFS_BACKEND_AUTO && ttfs::cuda_device_count() > 0) {
        kind = TTFS_BACKEND_CUDA;
        status = make_backend(session, kind, function, error);
        if (status != TTFS_OK) {
            // auto promises a working session whenever the CPU can run it (within its limits).
            error.clear();
            session.backend.reset();
            kind = TTFS_BACKEND_CPU;
            status = make_backend(session, kind, function, error);
        }
    } else {
        status = make_backend(session, kind, function, error);
    }
    if (status == TTFS_OK && session.backend == nullptr)
        return fail(TTFS_ERR_INTERNAL, std::string(function) + ": the " + backend_name(kind) +
                                           " backend reported success but made no backend");
    if (status == TTFS_ERR_LIMIT || (status == TTFS_ERR_OUT_OF_MEMORY && error.rfind(function, 0) == 0))
        return fail(status, error);  // the budget's message, complete
    if (status != TTFS_OK) {
        if (error.empty()) error = "the backend failed without a message";
        return fail(status, std::string(function) + ": backend '" + backend_name(kind) + "': " + error);
    }
    return TTFS_OK;
}

// ---- Running --------------------------------------------------------------------------------

// Checks everything about a run's arguments that does not depend on the pixel type.
ttfs_status check_run(const ttfs_session& session, const void* images, size_t images_len,
                      int32_t n, const int32_t* predictions, size_t predictions_len,
                      const float* potentials, size_t potentials_len, const char* function) {
    if (images == nullptr) return null_argument(function, "images");
    if (n < 1 || n > session.max_batch) {
        std::ostringstream msg;
        msg << function << ": n = " << n << " images; expected 1 <= n <= max_batch ("
            << session.max_batch << ", set at ttfs_session_create)";
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    const ttfs::Shape& shape = session.model->input().out;
    const size_t expected_images = size_t(n) * size_t(shape.size());
    if (images_len != expected_images) {
        std::ostringstream msg;
        msg << function << ": images_len = " << images_len << "; expected exactly n * h * w * c = "
            << n << " * " << shape.h << " * " << shape.w << " * " << shape.c << " = "
            << expected_images;
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    if (predictions != nullptr && predictions_len < size_t(n)) {
        std::ostringstream msg;
        msg << function << ": predictions_len = " << predictions_len << "; expected at least n = "
            << n;
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    const size_t classes = size_t(session.model->num_classes());
    if (potentials != nullptr && potentials_len < size_t(n) * classes) {
        std::ostringstream msg;
        msg << function << ": potentials_len = " << potentials_len
            << "; expected at least n * classes = " << n << " * " << classes << " = "
            << size_t(n) * classes;
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    return TTFS_OK;
}

// The start of the first block of 1024 values holding one outside [lo, hi] (NaN fails both
// comparisons), or count when there is none. Written so that the compiler vectorises the inner
// loop (an integer OR, no early exit inside a block): at most 0.25 ms per 1 000 MNIST images,
// against 140 ms or more of inference on one core (at most 0.2 %, as measured).
size_t first_block_outside(const float* values, size_t count, float lo, float hi) {
    constexpr size_t block = 1024;
    for (size_t start = 0; start < count; start += block) {
        const size_t end = std::min(count, start + block);
        int32_t outside = 0;
        for (size_t i = start; i < end; ++i) {
            const float value = values[i];
            outside |= (value >= lo ? 0 : 1) | (value <= hi ? 0 : 1);
        }
        if (outside != 0) return start;
    }
    return count;
}

// NaN and infinity are always refused; values outside [0, 1] unless the session allows them.
// Only a failing batch is searched for the first bad value that the message names.
ttfs_status check_pixels(const ttfs_session& session, const float* images, size_t images_len,
                         const char* function) {
    const bool unscaled = session.allows_unscaled();
    const float lo = unscaled ? -std::numeric_limits<float>::max() : 0.0f;
    const float hi = unscaled ? std::numeric_limits<float>::max() : 1.0f;
    size_t bad = first_block_outside(images, images_len, lo, hi);
    if (bad == images_len) return TTFS_OK;
    while (bad < images_len && images[bad] >= lo && images[bad] <= hi) ++bad;  // within the block
    const ttfs::Shape& shape = session.model->input().out;
    const size_t per_image = size_t(shape.size());
    const size_t image = bad / per_image, within = bad % per_image;
    const size_t y = within / (size_t(shape.w) * size_t(shape.c));
    const size_t x = within / size_t(shape.c) % size_t(shape.w), c = within % size_t(shape.c);
    const float value = images[bad];
    std::ostringstream msg;
    msg.precision(9);
    msg << function << ": image " << image << ", pixel (h " << y << ", w " << x << ", c " << c
        << ") = " << value;
    if (value != value || value - value != 0.0f) {
        msg << "; every input value must be a finite number (check how the images were "
               "decoded or normalised)";
    } else {
        const float divisor = session.model->input().input_divisor;
        msg << "; float inputs must be scaled to [0, 1] (pixels divided by the model's input "
               "divisor, "
            << divisor << "): divide the values, pass uint8 pixels to ttfs_session_run_u8, or "
                          "create the session with TTFS_SESSION_ALLOW_UNSCALED to run them as "
                          "they are";
    }
    return fail(TTFS_ERR_BAD_INPUT, msg.str());
}

ttfs_status run_batch(ttfs_session& session, const float* images, int32_t n,
                      int32_t* predictions, float* potentials, const char* function) {
    session.last_batch = 0;  // a failed run leaves no (partial) results behind
    std::string error;
    ttfs_status status = session.backend->run(images, n, session.outputs, error);
    if (status != TTFS_OK) {
        if (error.empty()) error = "the backend failed without a message";
        return fail(status, std::string(function) + ": " + error);
    }
    session.last_batch = n;
    if (predictions != nullptr) std::copy_n(session.predictions.data(), n, predictions);
    if (potentials != nullptr)
        std::copy_n(session.potentials.data(), size_t(n) * size_t(session.model->num_classes()),
                    potentials);
    return TTFS_OK;
}

// Validation shared by the spike-time and spike-count queries; returns the layer on success.
const ttfs::Layer* check_layer_query(const ttfs_session& session, int32_t layer, const void* out,
                                     bool spike_times, const char* function,
                                     ttfs_status& status) {
    if (out == nullptr) {
        status = null_argument(function, "out");
        return nullptr;
    }
    const auto count = int32_t(session.model->layers.size());
    if (layer < 0 || layer >= count) {
        std::ostringstream msg;
        msg << function << ": layer = " << layer << "; expected 0 <= layer < " << count;
        status = fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
        return nullptr;
    }
    const ttfs::Layer& info = session.model->layers[size_t(layer)];
    if (!info.has_neurons()) {
        std::ostringstream msg;
        msg << function << ": layer " << layer << " ('" << info.name << "') is a "
            << (info.kind == TTFS_LAYER_MAXPOOL ? "maxpool" : "flatten")
            << " layer, which has no neurons; expected an input, conv2d or dense layer";
        status = fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
        return nullptr;
    }
    if (spike_times && !session.records_spike_times()) {
        status = fail(TTFS_ERR_NO_RESULTS,
                      std::string(function) +
                          ": the session does not record spike times; create it with the flag "
                          "TTFS_SESSION_RECORD_SPIKE_TIMES");
        return nullptr;
    }
    if (session.last_batch == 0) {
        status = fail(TTFS_ERR_NO_RESULTS,
                      std::string(function) + ": the session has no results yet; run a batch "
                                              "first (ttfs_session_run_f32/ttfs_session_run_u8)");
        return nullptr;
    }
    return &info;
}

ttfs_status check_out_len(size_t out_len, size_t needed, const char* function, int32_t layer) {
    if (out_len >= needed) return TTFS_OK;
    std::ostringstream msg;
    msg << function << ": out_len = " << out_len << " for layer " << layer
        << "; expected at least " << needed;
    return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
}

// ---- Build information ----------------------------------------------------------------------

#define TTFS_STR2(x) #x
#define TTFS_STR(x) TTFS_STR2(x)
constexpr const char* version_text =
    TTFS_STR(TTFS_VERSION_MAJOR) "." TTFS_STR(TTFS_VERSION_MINOR) "." TTFS_STR(TTFS_VERSION_PATCH);

std::string make_build_info() {
    std::ostringstream text;
    text << "ttfs " << version_text << " (ABI " << TTFS_ABI_VERSION << "), " << TTFS_BUILD_COMPILER
         << ", CUDA compiled: " << (ttfs::cuda_compiled() ? "yes" : "no") << " ("
         << ttfs::cuda_build_description() << "), devices: " << ttfs::cuda_device_count();
    return text.str();
}

// One scalar (or pointer) out of a model or a session: check the handle, then the out-pointer,
// then write what `get` reads. Every simple query below goes through these two.
template <typename T, typename Get>
ttfs_status query_model(const char* function, const ttfs_model* model, T* out,
                        const char* out_name, Get get) {
    return guarded(function, [&]() -> ttfs_status {
        ttfs_status status = TTFS_OK;
        auto data = lookup_model(model, function, status);
        if (!data) return status;
        if (out == nullptr) return null_argument(function, out_name);
        *out = get(*data);
        return TTFS_OK;
    });
}

template <typename T, typename Get>
ttfs_status query_session(const char* function, const ttfs_session* session, T* out,
                          const char* out_name, Get get) {
    return guarded(function, [&]() -> ttfs_status {
        ttfs_status status = TTFS_OK;
        const ttfs_session* s = check_session(session, function, status);
        if (s == nullptr) return status;
        if (out == nullptr) return null_argument(function, out_name);
        *out = get(*s);
        return TTFS_OK;
    });
}

// The last batch's per-layer results into the caller's buffer: first-spike times (n x layer
// size) or spike counts (n). Both queries check the same things in the same order.
ttfs_status copy_layer_results(const char* function, const ttfs_session* session, int32_t layer,
                               int32_t* out, size_t out_len, bool spike_times) {
    return guarded(function, [&]() -> ttfs_status {
        SessionUse use;
        ttfs_status status = acquire_session(session, function, use);
        if (status != TTFS_OK) return status;
        const ttfs_session& s = *use.get();
        const ttfs::Layer* info = check_layer_query(s, layer, out, spike_times, function, status);
        if (info == nullptr) return status;
        const size_t needed = size_t(s.last_batch) * (spike_times ? size_t(info->out.size()) : 1);
        status = check_out_len(out_len, needed, function, layer);
        if (status != TTFS_OK) return status;
        const auto& source = spike_times ? s.spike_times : s.spike_counts;
        std::copy_n(source[size_t(layer)].data(), needed, out);
        return TTFS_OK;
    });
}

// The output trace's steps as the caller gave them (ttfs_session_options), not yet checked;
// `given` is false for ttfs_session_create, which has no options.
struct TraceRequest {
    bool given = false;
    const int32_t* steps = nullptr;
    int32_t count = 0;
};

// Checks the output trace's steps against the flags and the model and copies them: with
// TTFS_SESSION_RECORD_OUTPUT_TRACE 1 .. time_steps strictly increasing steps in
// [0, time_steps), without it none.
ttfs_status read_trace_steps(const char* function, const ttfs::Model& model, uint32_t flags,
                             const TraceRequest& trace, std::vector<int32_t>& steps) {
    const int32_t time_steps = model.time_steps;
    std::ostringstream msg;
    msg << function << ": ";
    if ((flags & TTFS_SESSION_RECORD_OUTPUT_TRACE) == 0) {
        if (trace.count == 0 && trace.steps == nullptr) return TTFS_OK;
        msg << "options->output_trace_count = " << trace.count
            << (trace.steps != nullptr ? " and output_trace_steps is set" : "")
            << ", but flags lack TTFS_SESSION_RECORD_OUTPUT_TRACE; set the flag to record the "
               "output trace, or leave both fields 0";
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    if (!trace.given) {
        msg << "TTFS_SESSION_RECORD_OUTPUT_TRACE needs the steps to record; create the session "
               "with ttfs_session_create_ex and set options->output_trace_steps and "
               "output_trace_count";
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    if (trace.count < 1 || trace.count > time_steps) {
        msg << "options->output_trace_count = " << trace.count << "; expected 1 to " << time_steps
            << " steps (the model has " << time_steps
            << " time steps, and each may be recorded once)";
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    if (trace.steps == nullptr) {
        msg << "options->output_trace_steps is NULL with output_trace_count = " << trace.count
            << "; expected an array of that many steps";
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    for (int32_t r = 0; r < trace.count; ++r) {
        const int32_t t = trace.steps[r];
        if (t < 0 || t >= time_steps) {
            msg << "options->output_trace_steps[" << r << "] = " << t << "; expected a step in [0, "
                << time_steps << ") (the model has " << time_steps << " time steps)";
            return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
        }
        if (r > 0 && t <= trace.steps[r - 1]) {
            msg << "options->output_trace_steps[" << r << "] = " << t << " after output_trace_steps["
                << r - 1 << "] = " << trace.steps[r - 1] << "; expected strictly increasing steps";
            return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
        }
    }
    steps.assign(trace.steps, trace.steps + trace.count);
    return TTFS_OK;
}

// ttfs_session_create(_ex) after the options are read.
ttfs_status create_session(const char* function, const ttfs_model* model, int32_t backend,
                           int32_t engine, int32_t max_batch, uint32_t flags, uint64_t max_memory_bytes,
                           uint64_t max_work_per_image, const TraceRequest& trace, ttfs_session** out) {
    ttfs_status status = TTFS_OK;
    auto data = lookup_model(model, function, status);
    if (!data) return status;
    if (out == nullptr) return null_argument(function, "out");
    if (backend != TTFS_BACKEND_AUTO && backend != TTFS_BACKEND_CPU &&
        backend != TTFS_BACKEND_CUDA) {
        std::ostringstream msg;
        msg << function << ": backend = " << backend
            << "; expected TTFS_BACKEND_AUTO (0), TTFS_BACKEND_CPU (1) or TTFS_BACKEND_CUDA (2)";
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    if (engine != TTFS_ENGINE_STEPPED && engine != TTFS_ENGINE_ANALYTIC) {
        std::ostringstream msg;
        msg << function << ": engine = " << engine
            << "; expected TTFS_ENGINE_STEPPED (0) or TTFS_ENGINE_ANALYTIC (1)";
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    if (max_batch < 1) {
        std::ostringstream msg;
        msg << function << ": max_batch = " << max_batch << "; expected at least 1";
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    constexpr uint32_t known_flags = TTFS_SESSION_RECORD_SPIKE_TIMES | TTFS_SESSION_ALLOW_UNSCALED |
                                     TTFS_SESSION_RECORD_OUTPUT_TRACE;
    if ((flags & ~known_flags) != 0) {
        std::ostringstream msg;
        msg << function << ": flags = 0x" << std::hex << flags
            << "; expected 0 or a bitwise or of TTFS_SESSION_RECORD_SPIKE_TIMES (0x1), "
               "TTFS_SESSION_ALLOW_UNSCALED (0x2) and TTFS_SESSION_RECORD_OUTPUT_TRACE (0x4)";
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    std::vector<int32_t> trace_steps;
    status = read_trace_steps(function, *data, flags, trace, trace_steps);
    if (status != TTFS_OK) return status;
    if (engine == TTFS_ENGINE_ANALYTIC) {
        std::string why;
        if (!ttfs::windows_allow_analytic(*data, why))
            return fail(TTFS_ERR_UNSUPPORTED, std::string(function) + ": " + why);
    }

    auto session = std::make_unique<ttfs_session>();
    session->model = std::move(data);
    session->engine = static_cast<ttfs_engine>(engine);
    session->max_batch = max_batch;
    session->flags = flags;
    session->max_memory_bytes = max_memory_bytes;
    session->max_work_per_image = max_work_per_image;
    session->trace_steps = std::move(trace_steps);
    // The budget is checked before anything is allocated: results after the backend.
    status = create_backend(*session, backend, function);
    if (status != TTFS_OK) return status;
    status = allocate_results(*session);
    if (status != TTFS_OK) return status;
    return ttfs::api::register_session(session, out);
}

// The fields of a caller's ttfs_session_options that lie within its struct_size (the rest keep
// their defaults); bytes past the fields this library knows must be zero.
ttfs_status read_options(const ttfs_session_options* options, const char* function, uint32_t& flags,
                         uint64_t& max_memory_bytes, uint64_t& max_work_per_image, TraceRequest& trace) {
    if (options == nullptr) return TTFS_OK;
    const size_t size = options->struct_size;
    constexpr size_t minimum = offsetof(ttfs_session_options, flags) + sizeof(uint32_t);
    if (size < minimum) {
        std::ostringstream msg;
        msg << function << ": options->struct_size = " << size << "; expected at least " << minimum
            << " (set it to sizeof(ttfs_session_options) = " << sizeof(ttfs_session_options) << ")";
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    const auto* bytes = reinterpret_cast<const unsigned char*>(options);
    for (size_t k = sizeof(ttfs_session_options); k < size; ++k) {
        if (bytes[k] == 0) continue;
        std::ostringstream msg;
        msg << function << ": options->struct_size = " << size << " and byte " << k
            << " is not zero, but this libttfs knows only the first " << sizeof(ttfs_session_options)
            << " bytes of ttfs_session_options (options from a newer ttfs.h that it cannot honour)";
        return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
    }
    flags = options->flags;
    auto within = [&](size_t offset, size_t field) { return offset + field <= size; };
    if (within(offsetof(ttfs_session_options, max_memory_bytes), sizeof(uint64_t)) && options->max_memory_bytes != 0)
        max_memory_bytes = options->max_memory_bytes;
    if (within(offsetof(ttfs_session_options, max_work_per_image), sizeof(uint64_t)) &&
        options->max_work_per_image != 0)
        max_work_per_image = options->max_work_per_image;
    trace.given = true;
    if (within(offsetof(ttfs_session_options, output_trace_steps), sizeof(const int32_t*)))
        trace.steps = options->output_trace_steps;
    if (within(offsetof(ttfs_session_options, output_trace_count), sizeof(int32_t)))
        trace.count = options->output_trace_count;
    return TTFS_OK;
}

}  // namespace

// ---- Library information ----------------------------------------------------------------------

extern "C" {

TTFS_API const char* ttfs_version_string(void) { return version_text; }

TTFS_API int32_t ttfs_abi_version(void) { return TTFS_ABI_VERSION; }

TTFS_API int32_t ttfs_cuda_compiled(void) { return ttfs::cuda_compiled() ? 1 : 0; }

TTFS_API ttfs_status ttfs_cuda_device_count(int32_t* count) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        if (count == nullptr) return null_argument(function, "count");
        *count = ttfs::cuda_device_count();
        return TTFS_OK;
    });
}

TTFS_API const char* ttfs_build_info(void) {
    // Computed once (thread-safe static initialisation); a failure leaves a fixed line.
    static const std::string* info = []() -> const std::string* {
        try {
            return new std::string(make_build_info());
        } catch (...) {
            return nullptr;
        }
    }();
    return info != nullptr ? info->c_str() : "ttfs (build information unavailable)";
}

TTFS_API const char* ttfs_status_name(int32_t status) {
    switch (status) {
#define TTFS_NAME(code) \
    case code: return #code;
        TTFS_NAME(TTFS_OK)
        TTFS_NAME(TTFS_ERR_INVALID_ARGUMENT)
        TTFS_NAME(TTFS_ERR_INVALID_HANDLE)
        TTFS_NAME(TTFS_ERR_OUT_OF_MEMORY)
        TTFS_NAME(TTFS_ERR_IO)
        TTFS_NAME(TTFS_ERR_UNSUPPORTED)
        TTFS_NAME(TTFS_ERR_BACKEND_UNAVAILABLE)
        TTFS_NAME(TTFS_ERR_CUDA)
        TTFS_NAME(TTFS_ERR_NO_RESULTS)
        TTFS_NAME(TTFS_ERR_BUSY)
        TTFS_NAME(TTFS_ERR_INTERNAL)
        TTFS_NAME(TTFS_ERR_LIMIT)
        TTFS_NAME(TTFS_ERR_BAD_INPUT)
        TTFS_NAME(TTFS_ERR_TRUNCATED_HEADER)
        TTFS_NAME(TTFS_ERR_BAD_MAGIC)
        TTFS_NAME(TTFS_ERR_UNSUPPORTED_VERSION)
        TTFS_NAME(TTFS_ERR_TRUNCATED_DATA)
        TTFS_NAME(TTFS_ERR_TRAILING_BYTES)
        TTFS_NAME(TTFS_ERR_BAD_CRC)
        TTFS_NAME(TTFS_ERR_OFFSET_OUT_OF_RANGE)
        TTFS_NAME(TTFS_ERR_DIM_OVERFLOW)
        TTFS_NAME(TTFS_ERR_UNKNOWN_LAYER_TYPE)
        TTFS_NAME(TTFS_ERR_BAD_FIELD)
        TTFS_NAME(TTFS_ERR_SHAPE_CHAIN)
        TTFS_NAME(TTFS_ERR_BAD_VALUE)
#undef TTFS_NAME
        default: return "unknown status";
    }
}

TTFS_API const char* ttfs_last_error(void) { return ttfs::api::last_error(); }

// ---- Models -----------------------------------------------------------------------------------

TTFS_API ttfs_status ttfs_model_load_file(const char* path, ttfs_model** out) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        if (path == nullptr) return null_argument(function, "path");
        if (out == nullptr) return null_argument(function, "out");
        std::vector<uint8_t> bytes;
        ttfs_status status = read_file(path, bytes);
        if (status != TTFS_OK) return status;
        return load_model(bytes.data(), bytes.size(), path, out);
    });
}

TTFS_API ttfs_status ttfs_model_load_memory(const void* data, size_t size_bytes, ttfs_model** out) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        if (data == nullptr && size_bytes != 0) return null_argument(function, "data");
        if (out == nullptr) return null_argument(function, "out");
        return load_model(static_cast<const uint8_t*>(data), size_bytes, "", out);
    });
}

TTFS_API ttfs_status ttfs_model_free(ttfs_model* model) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        return model == nullptr ? TTFS_OK : ttfs::api::free_model(model, function);
    });
}

TTFS_API ttfs_status ttfs_model_layer_count(const ttfs_model* model, int32_t* count) {
    return query_model(__func__, model, count, "count",
                       [](const ttfs::Model& model) { return int32_t(model.layers.size()); });
}

TTFS_API ttfs_status ttfs_model_layer_info(const ttfs_model* model, int32_t layer,
                                           ttfs_layer_info* info) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        ttfs_status status = TTFS_OK;
        auto data = lookup_model(model, function, status);
        if (!data) return status;
        if (info == nullptr) return null_argument(function, "info");
        const auto count = int32_t(data->layers.size());
        if (layer < 0 || layer >= count) {
            std::ostringstream msg;
            msg << function << ": layer = " << layer << "; expected 0 <= layer < " << count;
            return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
        }
        // The oldest caller knows at least struct_size and kind.
        constexpr size_t minimum = offsetof(ttfs_layer_info, kind) + sizeof(info->kind);
        if (info->struct_size < minimum) {
            std::ostringstream msg;
            msg << function << ": info->struct_size = " << info->struct_size
                << "; expected at least " << minimum << " (set it to sizeof(ttfs_layer_info) = "
                << sizeof(ttfs_layer_info) << ")";
            return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
        }

        const ttfs::Layer& src = data->layers[size_t(layer)];
        ttfs_layer_info full;
        std::memset(&full, 0, sizeof full);
        full.struct_size = info->struct_size;
        full.kind = src.kind;
        full.depth = src.depth;
        full.shape[0] = src.out.h;
        full.shape[1] = src.out.w;
        full.shape[2] = src.out.c;
        const bool windowed = src.kind == TTFS_LAYER_CONV2D || src.kind == TTFS_LAYER_MAXPOOL;
        full.kernel[0] = windowed ? src.kernel_h : 0;
        full.kernel[1] = windowed ? src.kernel_w : 0;
        full.stride[0] = windowed ? src.stride_h : 0;
        full.stride[1] = windowed ? src.stride_w : 0;
        full.padding = windowed ? src.padding : TTFS_PADDING_VALID;
        full.pool_mode = src.kind == TTFS_LAYER_MAXPOOL ? src.pool_mode : TTFS_POOL_OR;
        if (src.has_neurons()) {
            full.tau_fire = src.tau_fire;
            full.td_fire = src.td_fire;
            full.tau_integ = src.tau_integ;
            full.td_integ = src.td_integ;
            full.vth0 = src.vth0;
            full.integ_window[0] = src.integ_start;
            full.integ_window[1] = src.integ_end;
            full.fire_window[0] = src.fire_start;
            full.fire_window[1] = src.fire_end;
        }
        full.name = src.name.c_str();  // owned by the model, which outlives the handle's use

        // Write only the fields that lie wholly inside the caller's struct_size.
        struct Field {
            size_t end;
        };
        const Field ends[] = {
            {offsetof(ttfs_layer_info, kind) + sizeof full.kind},
            {offsetof(ttfs_layer_info, depth) + sizeof full.depth},
            {offsetof(ttfs_layer_info, shape) + sizeof full.shape},
            {offsetof(ttfs_layer_info, kernel) + sizeof full.kernel},
            {offsetof(ttfs_layer_info, stride) + sizeof full.stride},
            {offsetof(ttfs_layer_info, padding) + sizeof full.padding},
            {offsetof(ttfs_layer_info, pool_mode) + sizeof full.pool_mode},
            {offsetof(ttfs_layer_info, tau_fire) + sizeof full.tau_fire},
            {offsetof(ttfs_layer_info, td_fire) + sizeof full.td_fire},
            {offsetof(ttfs_layer_info, tau_integ) + sizeof full.tau_integ},
            {offsetof(ttfs_layer_info, td_integ) + sizeof full.td_integ},
            {offsetof(ttfs_layer_info, vth0) + sizeof full.vth0},
            {offsetof(ttfs_layer_info, integ_window) + sizeof full.integ_window},
            {offsetof(ttfs_layer_info, fire_window) + sizeof full.fire_window},
            {offsetof(ttfs_layer_info, name) + sizeof full.name},
        };
        size_t end = 0;
        for (const Field& field : ends)
            if (field.end <= info->struct_size) end = std::max(end, field.end);
        const size_t begin = offsetof(ttfs_layer_info, kind);
        std::memcpy(reinterpret_cast<char*>(info) + begin, reinterpret_cast<const char*>(&full) + begin,
                    end - begin);
        return TTFS_OK;
    });
}

TTFS_API ttfs_status ttfs_model_input_shape(const ttfs_model* model, int32_t shape[3]) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        ttfs_status status = TTFS_OK;
        auto data = lookup_model(model, function, status);
        if (!data) return status;
        if (shape == nullptr) return null_argument(function, "shape");
        const ttfs::Shape& in = data->input().out;
        shape[0] = in.h;
        shape[1] = in.w;
        shape[2] = in.c;
        return TTFS_OK;
    });
}

TTFS_API ttfs_status ttfs_model_num_classes(const ttfs_model* model, int32_t* classes) {
    return query_model(__func__, model, classes, "classes",
                       [](const ttfs::Model& model) { return model.num_classes(); });
}

TTFS_API ttfs_status ttfs_model_time_steps(const ttfs_model* model, int32_t* time_steps) {
    return query_model(__func__, model, time_steps, "time_steps",
                       [](const ttfs::Model& model) { return model.time_steps; });
}

TTFS_API ttfs_status ttfs_model_readout(const ttfs_model* model, int32_t* readout) {
    return query_model(__func__, model, readout, "readout",
                       [](const ttfs::Model& model) { return int32_t(model.readout); });
}

TTFS_API ttfs_status ttfs_model_input_divisor(const ttfs_model* model, float* divisor) {
    return query_model(__func__, model, divisor, "divisor",
                       [](const ttfs::Model& model) { return model.input().input_divisor; });
}

TTFS_API ttfs_status ttfs_model_metadata(const ttfs_model* model, const char** json) {
    return query_model(__func__, model, json, "json",
                       [](const ttfs::Model& model) { return model.metadata.c_str(); });
}

// ---- Sessions -----------------------------------------------------------------------------------

TTFS_API ttfs_status ttfs_session_create(const ttfs_model* model, int32_t backend, int32_t engine,
                                         int32_t max_batch, uint32_t flags, ttfs_session** out) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        return create_session(function, model, backend, engine, max_batch, flags,
                              TTFS_DEFAULT_MAX_MEMORY_BYTES, TTFS_DEFAULT_MAX_WORK_PER_IMAGE,
                              TraceRequest{}, out);
    });
}

TTFS_API ttfs_status ttfs_session_create_ex(const ttfs_model* model, int32_t backend, int32_t engine,
                                            int32_t max_batch, const ttfs_session_options* options,
                                            ttfs_session** out) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        uint32_t flags = 0;
        uint64_t max_memory = TTFS_DEFAULT_MAX_MEMORY_BYTES, max_work = TTFS_DEFAULT_MAX_WORK_PER_IMAGE;
        TraceRequest trace;
        const ttfs_status status = read_options(options, function, flags, max_memory, max_work, trace);
        if (status != TTFS_OK) return status;
        return create_session(function, model, backend, engine, max_batch, flags, max_memory, max_work,
                              trace, out);
    });
}

TTFS_API ttfs_status ttfs_session_get_requirements(const ttfs_session* session,
                                                   ttfs_session_requirements* out) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        ttfs_status status = TTFS_OK;
        const ttfs_session* s = check_session(session, function, status);
        if (s == nullptr) return status;
        if (out == nullptr) return null_argument(function, "out");
        constexpr size_t minimum = offsetof(ttfs_session_requirements, max_workers) + sizeof(int32_t);
        if (out->struct_size < minimum) {
            std::ostringstream msg;
            msg << function << ": out->struct_size = " << out->struct_size << "; expected at least "
                << minimum << " (set it to sizeof(ttfs_session_requirements) = "
                << sizeof(ttfs_session_requirements) << ")";
            return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
        }
        ttfs_session_requirements full;
        std::memset(&full, 0, sizeof full);
        full.struct_size = out->struct_size;
        full.max_workers = s->max_workers;
        full.memory_bytes = s->memory_bytes;
        full.work_per_image = s->work_per_image;
        full.max_memory_bytes = s->max_memory_bytes;
        full.max_work_per_image = s->max_work_per_image;
        // Whole fields only, within the caller's struct_size.
        const size_t ends[] = {offsetof(ttfs_session_requirements, max_workers) + sizeof full.max_workers,
                               offsetof(ttfs_session_requirements, memory_bytes) + sizeof full.memory_bytes,
                               offsetof(ttfs_session_requirements, work_per_image) + sizeof full.work_per_image,
                               offsetof(ttfs_session_requirements, max_memory_bytes) + sizeof full.max_memory_bytes,
                               offsetof(ttfs_session_requirements, max_work_per_image) + sizeof full.max_work_per_image};
        size_t end = 0;
        for (size_t e : ends)
            if (e <= out->struct_size) end = std::max(end, e);
        const size_t begin = offsetof(ttfs_session_requirements, max_workers);
        std::memcpy(reinterpret_cast<char*>(out) + begin, reinterpret_cast<const char*>(&full) + begin,
                    end - begin);
        return TTFS_OK;
    });
}


TTFS_API ttfs_status ttfs_session_free(ttfs_session* session) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        return session == nullptr ? TTFS_OK : ttfs::api::free_session(session, function);
    });
}

TTFS_API ttfs_status ttfs_session_backend(const ttfs_session* session, int32_t* backend) {
    return query_session(__func__, session, backend, "backend",
                         [](const ttfs_session& s) { return int32_t(s.backend_kind); });
}

TTFS_API ttfs_status ttfs_session_engine(const ttfs_session* session, int32_t* engine) {
    return query_session(__func__, session, engine, "engine",
                         [](const ttfs_session& s) { return int32_t(s.engine); });
}

TTFS_API ttfs_status ttfs_session_set_threads(ttfs_session* session, int32_t threads) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        SessionUse use;
        ttfs_status status = acquire_session(session, function, use);
        if (status != TTFS_OK) return status;
        if (threads < 0) {
            std::ostringstream msg;
            msg << function << ": threads = " << threads
                << "; expected 0 (one per hardware thread) or a positive count";
            return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
        }
        use.get()->backend->set_threads(threads);
        return TTFS_OK;
    });
}

TTFS_API ttfs_status ttfs_session_run_f32(ttfs_session* session, const float* images,
                                          size_t images_len, int32_t n, int32_t* predictions,
                                          size_t predictions_len, float* potentials,
                                          size_t potentials_len) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        SessionUse use;
        ttfs_status status = acquire_session(session, function, use);
        if (status != TTFS_OK) return status;
        ttfs_session& s = *use.get();
        status = check_run(s, images, images_len, n, predictions, predictions_len, potentials,
                           potentials_len, function);
        if (status != TTFS_OK) return status;
        status = check_pixels(s, images, images_len, function);  // like check_run: nothing ran
        if (status != TTFS_OK) return status;
        return run_batch(s, images, n, predictions, potentials, function);
    });
}

TTFS_API ttfs_status ttfs_session_run_u8(ttfs_session* session, const uint8_t* images,
                                         size_t images_len, int32_t n, int32_t* predictions,
                                         size_t predictions_len, float* potentials,
                                         size_t potentials_len) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        SessionUse use;
        ttfs_status status = acquire_session(session, function, use);
        if (status != TTFS_OK) return status;
        ttfs_session& s = *use.get();
        status = check_run(s, images, images_len, n, predictions, predictions_len, potentials,
                           potentials_len, function);
        if (status != TTFS_OK) return status;
        // Sized for max_batch on first use so later runs never reallocate.
        const size_t input_size = size_t(s.model->input().out.size());
        if (s.staging.size() < size_t(s.max_batch) * input_size)
            s.staging.resize(size_t(s.max_batch) * input_size);
        const float divisor = s.model->input().input_divisor;
        for (size_t i = 0; i < images_len; ++i) s.staging[i] = ttfs::scale_pixel(images[i], divisor);
        return run_batch(s, s.staging.data(), n, predictions, potentials, function);
    });
}

TTFS_API ttfs_status ttfs_session_last_batch_size(const ttfs_session* session, int32_t* n) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        SessionUse use;
        ttfs_status status = acquire_session(session, function, use);
        if (status != TTFS_OK) return status;
        if (n == nullptr) return null_argument(function, "n");
        if (use.get()->last_batch == 0)
            return fail(TTFS_ERR_NO_RESULTS, std::string(function) +
                                                 ": the session has no results yet; run a batch "
                                                 "first (ttfs_session_run_f32/ttfs_session_run_u8)");
        *n = use.get()->last_batch;
        return TTFS_OK;
    });
}

TTFS_API ttfs_status ttfs_session_spike_times(const ttfs_session* session, int32_t layer,
                                              int32_t* out, size_t out_len) {
    return copy_layer_results(__func__, session, layer, out, out_len, true);
}

TTFS_API ttfs_status ttfs_session_spike_counts(const ttfs_session* session, int32_t layer,
                                               int32_t* out, size_t out_len) {
    return copy_layer_results(__func__, session, layer, out, out_len, false);
}

TTFS_API ttfs_status ttfs_session_output_trace(const ttfs_session* session, float* out, size_t out_len) {
    const char* const function = __func__;
    return guarded(function, [&]() -> ttfs_status {
        SessionUse use;
        ttfs_status status = acquire_session(session, function, use);
        if (status != TTFS_OK) return status;
        const ttfs_session& s = *use.get();
        if (out == nullptr) return null_argument(function, "out");
        if (!s.records_output_trace())
            return fail(TTFS_ERR_NO_RESULTS,
                        std::string(function) +
                            ": the session does not record the output trace; create it with the "
                            "flag TTFS_SESSION_RECORD_OUTPUT_TRACE and options->output_trace_steps");
        if (s.last_batch == 0)
            return fail(TTFS_ERR_NO_RESULTS,
                        std::string(function) + ": the session has no results yet; run a batch "
                                                "first (ttfs_session_run_f32/ttfs_session_run_u8)");
        const size_t needed =
            size_t(s.last_batch) * s.trace_steps.size() * size_t(s.model->num_classes());
        if (out_len < needed) {
            std::ostringstream msg;
            msg << function << ": out_len = " << out_len << "; expected at least " << needed << " ("
                << s.last_batch << " images x " << s.trace_steps.size() << " steps x "
                << s.model->num_classes() << " classes)";
            return fail(TTFS_ERR_INVALID_ARGUMENT, msg.str());
        }
        std::copy_n(s.output_trace.data(), needed, out);
        return TTFS_OK;
    });
}

}  // extern "C"
