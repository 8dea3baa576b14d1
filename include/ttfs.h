/* ttfs.h — the C ABI of libttfs, a time-to-first-spike (TTFS) spiking-network runtime.
 *
 * This is the library's only public header. Everything crosses it as plain C: opaque handles,
 * integer status codes, caller-allocated buffers whose sizes the caller states.
 *
 * Conventions that hold for every function below unless its comment says otherwise:
 * - The return value is a ttfs_status; TTFS_OK (0) means success. Results go through
 *   out-parameters, which are written only on success.
 * - On failure, ttfs_last_error() on the same thread describes what went wrong in words a user
 *   can act on. No C++ exception, abort() or exit() ever crosses this boundary.
 * - Handles are checked: a NULL, freed or wrong-kind handle gives TTFS_ERR_INVALID_HANDLE
 *   rather than a crash. A handle is an opaque id (a registry slot, the handle's kind and a
 *   generation count packed into the pointer's bits), not the address of anything: never
 *   dereference it. A freed handle stays refused for good, even when a later model or session
 *   reuses the freed one's memory or slot. (Passing a handle that another thread is freeing at
 *   the same moment is still the caller's error.)
 * - Buffer lengths are counts of elements (not bytes) unless a name ends in _bytes.
 * - Thread-safety: a ttfs_model is immutable after loading and may be shared by any number of
 *   threads and sessions. A ttfs_session must be used by one thread at a time; a call that finds
 *   it busy in another thread returns TTFS_ERR_BUSY. Everything else is thread-safe.
 *
 * The ABI is append-only: new functions and enum values may be added, existing ones never
 * change meaning. Structs carry a struct_size field that the caller sets.
 */
#ifndef TTFS_H
#define TTFS_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  define TTFS_API __declspec(dllexport)
#elif defined(__GNUC__)
#  define TTFS_API __attribute__((visibility("default")))
#else
#  define TTFS_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version ---------------------------------------------------------------------------- */

#define TTFS_VERSION_MAJOR 0
#define TTFS_VERSION_MINOR 1
#define TTFS_VERSION_PATCH 0
/* Bumped whenever a function or struct of this header changes in a way old callers would
 * notice. pyttfs refuses a library whose ABI version differs from the one it was written for. */
#define TTFS_ABI_VERSION 1

/* ---- Status codes ----------------------------------------------------------------------- */

typedef enum ttfs_status {
    TTFS_OK = 0,
    TTFS_ERR_INVALID_ARGUMENT = 1,    /* NULL pointer, bad enum value, wrong buffer length */
    TTFS_ERR_INVALID_HANDLE = 2,      /* NULL, freed or wrong-kind model/session handle */
    TTFS_ERR_OUT_OF_MEMORY = 3,
    TTFS_ERR_IO = 4,                  /* file cannot be opened or read */
    TTFS_ERR_UNSUPPORTED = 5,         /* e.g. the analytic engine on overlapping windows */
    TTFS_ERR_BACKEND_UNAVAILABLE = 6, /* CUDA asked for, but not compiled in or no device */
    TTFS_ERR_CUDA = 7,                /* a CUDA call failed; the message has CUDA's words */
    TTFS_ERR_NO_RESULTS = 8,          /* results asked for before a run, or not recorded */
    TTFS_ERR_BUSY = 9,                /* the session is running in another thread */
    TTFS_ERR_INTERNAL = 10,           /* a bug in libttfs; please report the message */
    TTFS_ERR_LIMIT = 11,              /* a session would need more memory or work per image than
                                         its limits allow (ttfs_session_options); the message
                                         has both numbers */
    TTFS_ERR_BAD_INPUT = 12,          /* an input value the network cannot code: NaN or
                                         infinite, or a float outside [0, 1] (see
                                         TTFS_SESSION_ALLOW_UNSCALED) */

    /* Model-file rejections, one per reason (docs/FORMAT.md lists when each is returned). */
    TTFS_ERR_TRUNCATED_HEADER = 100,
    TTFS_ERR_BAD_MAGIC = 101,
    TTFS_ERR_UNSUPPORTED_VERSION = 102,
    TTFS_ERR_TRUNCATED_DATA = 103,
    TTFS_ERR_TRAILING_BYTES = 104,
    TTFS_ERR_BAD_CRC = 105,
    TTFS_ERR_OFFSET_OUT_OF_RANGE = 106,
    TTFS_ERR_DIM_OVERFLOW = 107,
    TTFS_ERR_UNKNOWN_LAYER_TYPE = 108,
    TTFS_ERR_BAD_FIELD = 109,
    TTFS_ERR_SHAPE_CHAIN = 110,
    TTFS_ERR_BAD_VALUE = 111
} ttfs_status;

/* ---- Enumerations (values equal those stored in the model file) ------------------------- */

typedef enum ttfs_layer_kind {
    TTFS_LAYER_INPUT = 1,
    TTFS_LAYER_CONV2D = 2,
    TTFS_LAYER_MAXPOOL = 3,
    TTFS_LAYER_FLATTEN = 4,
    TTFS_LAYER_DENSE = 5
} ttfs_layer_kind;

typedef enum ttfs_padding { TTFS_PADDING_VALID = 0, TTFS_PADDING_SAME = 1 } ttfs_padding;
/* How a maxpool unit relays the spikes of its window (docs/ENGINES.md): `or` at every step a
 * child spikes; `earliest` only the first child spike; `gated` the spike-count-gated pool of the
 * T2FSNN reference (per step, the child with the largest spike counter passes its spike). */
typedef enum ttfs_pool_mode {
    TTFS_POOL_OR = 0,
    TTFS_POOL_EARLIEST = 1,
    TTFS_POOL_GATED = 2
} ttfs_pool_mode;
typedef enum ttfs_readout { TTFS_READOUT_VMEM = 0, TTFS_READOUT_FIRST_SPIKE = 1 } ttfs_readout;

typedef enum ttfs_backend {
    TTFS_BACKEND_AUTO = 0, /* CUDA when compiled in and a device is present, else CPU */
    TTFS_BACKEND_CPU = 1,
    TTFS_BACKEND_CUDA = 2
} ttfs_backend;

typedef enum ttfs_engine {
    TTFS_ENGINE_STEPPED = 0,  /* one time step at a time, any window layout */
    TTFS_ENGINE_ANALYTIC = 1  /* closed form per layer; needs non-overlapping windows */
} ttfs_engine;

/* Session flags (bitwise or). */
#define TTFS_SESSION_RECORD_SPIKE_TIMES 1u /* keep every layer's first-spike times of the last
                                             batch (max_batch x layer size int32 per layer) */
#define TTFS_SESSION_ALLOW_UNSCALED 2u     /* let ttfs_session_run_f32 take finite values
                                             outside [0, 1] (NaN and infinity stay errors) */
#define TTFS_SESSION_RECORD_OUTPUT_TRACE 4u /* keep the output layer's potentials after chosen
                                              steps of the last batch (ttfs_session_output_trace);
                                              the steps are ttfs_session_options'
                                              output_trace_steps: ttfs_session_create_ex only */

/* The limits a session must fit in unless its options raise them (docs/C_API.md, "Limits"):
 * the memory it allocates (result buffers for max_batch images, the backend's tables, and a
 * workspace per CPU worker thread, or the CUDA device buffers), and an upper bound on the
 * basic operations one image can cost, both computed from the model before anything is
 * allocated. The defaults keep a hostile model from taking the machine or running for
 * minutes per image; every model the export pipeline writes is far inside them. */
#define TTFS_DEFAULT_MAX_MEMORY_BYTES ((uint64_t)8 << 30)   /* 8 GiB */
#define TTFS_DEFAULT_MAX_WORK_PER_IMAGE ((uint64_t)1 << 34) /* about 1.7e10 operations */

/* ---- Library information ---------------------------------------------------------------- */

/* "MAJOR.MINOR.PATCH". Static storage; never NULL. */
TTFS_API const char* ttfs_version_string(void);
/* TTFS_ABI_VERSION of the compiled library. */
TTFS_API int32_t ttfs_abi_version(void);
/* 1 if the CUDA backend was compiled in, else 0. */
TTFS_API int32_t ttfs_cuda_compiled(void);
/* Number of usable CUDA devices: 0 when CUDA is not compiled in, or there is no driver or no
 * device (never an error for that reason). Writes *count. */
TTFS_API ttfs_status ttfs_cuda_device_count(int32_t* count);
/* One line describing the build: version, ABI, compiler, CUDA compiled in and architectures,
 * devices found. Static storage valid until the library is unloaded; never NULL. */
TTFS_API const char* ttfs_build_info(void);
/* Symbolic name of a status code ("TTFS_ERR_BAD_CRC"); "unknown status" for others. */
TTFS_API const char* ttfs_status_name(int32_t status);
/* Message of the last failed call on this thread ("" if none). The pointer stays valid until
 * the next ttfs_ call on this thread. Never NULL. */
TTFS_API const char* ttfs_last_error(void);

/* ---- Models ----------------------------------------------------------------------------- */

typedef struct ttfs_model ttfs_model;
typedef struct ttfs_session ttfs_session;

/* Load and fully validate a model file (docs/FORMAT.md). On success *out is a new model the
 * caller frees with ttfs_model_free. On failure *out is untouched and the status says why.
 * Only regular files are read (a directory, device, FIFO or socket gives TTFS_ERR_IO before
 * any byte is read), and a file larger than the format allows (TTFS_FMT_MAX_FILE_SIZE, 4 GiB)
 * is refused from its size. */
TTFS_API ttfs_status ttfs_model_load_file(const char* path, ttfs_model** out);
/* The same from memory; the bytes are copied, the caller keeps ownership of data. */
TTFS_API ttfs_status ttfs_model_load_memory(const void* data, size_t size_bytes, ttfs_model** out);
/* Free a model. NULL is a no-op (TTFS_OK); an unknown or already freed handle gives
 * TTFS_ERR_INVALID_HANDLE and frees nothing. Sessions created from the model stay valid: they
 * keep what they need. */
TTFS_API ttfs_status ttfs_model_free(ttfs_model* model);

/* Layers are numbered 0 .. count-1 in file order; layer 0 is the input layer and the last one
 * is the output layer. */
TTFS_API ttfs_status ttfs_model_layer_count(const ttfs_model* model, int32_t* count);

typedef struct ttfs_layer_info {
    uint32_t struct_size; /* in: the caller sets sizeof(ttfs_layer_info) */
    int32_t kind;         /* ttfs_layer_kind */
    int32_t depth;        /* neuron layers 0, 1, 2 ...; -1 for maxpool and flatten */
    int32_t shape[3];     /* output h, w, c */
    int32_t kernel[2];    /* conv2d kernel or maxpool size (h, w); 0 otherwise */
    int32_t stride[2];
    int32_t padding;      /* ttfs_padding */
    int32_t pool_mode;    /* ttfs_pool_mode */
    float tau_fire, td_fire, tau_integ, td_integ, vth0; /* 0 for layers without neurons */
    int32_t integ_window[2]; /* [start, end) in global time steps */
    int32_t fire_window[2];  /* [start, end) */
    const char* name;     /* owned by the model, valid while the model lives */
} ttfs_layer_info;

/* Fill *info for one layer. info->struct_size must be at least the size of the version of
 * this struct the caller was compiled with (fields beyond it are not written). */
TTFS_API ttfs_status ttfs_model_layer_info(const ttfs_model* model, int32_t layer,
                                           ttfs_layer_info* info);
/* Input shape (h, w, c) into shape[0..2]. */
TTFS_API ttfs_status ttfs_model_input_shape(const ttfs_model* model, int32_t shape[3]);
/* Number of classes: the size of the output layer. */
TTFS_API ttfs_status ttfs_model_num_classes(const ttfs_model* model, int32_t* classes);
TTFS_API ttfs_status ttfs_model_time_steps(const ttfs_model* model, int32_t* time_steps);
/* ttfs_readout */
TTFS_API ttfs_status ttfs_model_readout(const ttfs_model* model, int32_t* readout);
/* The divisor that turns uint8 pixels into floats (255.0 for x = byte / 255.0). */
TTFS_API ttfs_status ttfs_model_input_divisor(const ttfs_model* model, float* divisor);
/* The file's metadata JSON as a NUL-terminated string ("" if none), owned by the model. */
TTFS_API ttfs_status ttfs_model_metadata(const ttfs_model* model, const char** json);

/* ---- Sessions --------------------------------------------------------------------------- */

/* Create a session that runs `model` on `backend` with `engine` for batches of up to
 * max_batch images (>= 1). flags: 0 or a bitwise or of TTFS_SESSION_RECORD_SPIKE_TIMES and
 * TTFS_SESSION_ALLOW_UNSCALED (TTFS_SESSION_RECORD_OUTPUT_TRACE needs the steps of
 * ttfs_session_create_ex's options: TTFS_ERR_INVALID_ARGUMENT here). The session keeps its
 * own reference to the model's data, so the model may be freed first.
 * Errors: TTFS_ERR_UNSUPPORTED for the analytic engine on a model whose windows overlap (the
 * message names the layers); TTFS_ERR_BACKEND_UNAVAILABLE for TTFS_BACKEND_CUDA without CUDA
 * or without a device (TTFS_BACKEND_AUTO then quietly uses the CPU); TTFS_ERR_LIMIT or
 * TTFS_ERR_OUT_OF_MEMORY when the session would exceed the default limits (see
 * ttfs_session_create_ex, which can raise them). */
TTFS_API ttfs_status ttfs_session_create(const ttfs_model* model, int32_t backend, int32_t engine,
                                         int32_t max_batch, uint32_t flags, ttfs_session** out);
/* Options of ttfs_session_create_ex. Zero-initialise the struct, set struct_size to
 * sizeof(ttfs_session_options), then the fields you need; a field left 0 takes its default.
 * Fields are only ever appended: the library reads the ones that lie within struct_size, and
 * refuses (TTFS_ERR_INVALID_ARGUMENT) a larger struct whose bytes past the ones it knows are
 * not zero (options from a newer header that this library cannot honour). */
typedef struct ttfs_session_options {
    uint32_t struct_size;        /* in: sizeof(ttfs_session_options) */
    uint32_t flags;              /* TTFS_SESSION_* flags, as for ttfs_session_create */
    uint64_t max_memory_bytes;   /* 0: TTFS_DEFAULT_MAX_MEMORY_BYTES */
    uint64_t max_work_per_image; /* 0: TTFS_DEFAULT_MAX_WORK_PER_IMAGE */
    /* With TTFS_SESSION_RECORD_OUTPUT_TRACE (else NULL and 0): the global time steps after
     * which the output layer's potentials are recorded, strictly increasing, each in
     * [0, time_steps), 1 .. time_steps of them. Read (copied) by ttfs_session_create_ex. */
    const int32_t* output_trace_steps;
    int32_t output_trace_count;
} ttfs_session_options;

/* ttfs_session_create with options (NULL: all defaults, flags 0). Before it allocates
 * anything it computes the session's memory and its work per image from the model, the
 * backend, the engine and max_batch, and refuses with TTFS_ERR_LIMIT (the message has the
 * numbers and the limit to raise) when either is above its limit, or TTFS_ERR_OUT_OF_MEMORY
 * when the memory is above this machine's physical memory. The CPU backend runs no more
 * worker threads than the memory limit has room for (one workspace each). Other errors as
 * for ttfs_session_create. */
TTFS_API ttfs_status ttfs_session_create_ex(const ttfs_model* model, int32_t backend, int32_t engine,
                                            int32_t max_batch, const ttfs_session_options* options,
                                            ttfs_session** out);

/* What a session was sized for (ttfs_session_get_requirements). */
typedef struct ttfs_session_requirements {
    uint32_t struct_size;        /* in: sizeof(ttfs_session_requirements) */
    int32_t max_workers;         /* CPU worker threads the memory limit has room for (CUDA: 1) */
    uint64_t memory_bytes;       /* its memory with the worker threads a full batch uses by
                                    default: results, backend tables, workspaces or device
                                    buffers */
    uint64_t work_per_image;     /* the bound on basic operations per image */
    uint64_t max_memory_bytes;   /* the limits it was created under */
    uint64_t max_work_per_image;
} ttfs_session_requirements;

/* Fill *out (struct_size as for ttfs_model_layer_info: fields beyond it are not written). */
TTFS_API ttfs_status ttfs_session_get_requirements(const ttfs_session* session,
                                                   ttfs_session_requirements* out);

/* Free a session. NULL is a no-op; unknown or freed handles give TTFS_ERR_INVALID_HANDLE. */
TTFS_API ttfs_status ttfs_session_free(ttfs_session* session);
/* The backend actually used (CPU or CUDA, never AUTO) and the engine. */
TTFS_API ttfs_status ttfs_session_backend(const ttfs_session* session, int32_t* backend);
TTFS_API ttfs_status ttfs_session_engine(const ttfs_session* session, int32_t* engine);
/* CPU backend worker threads; 0 (the default) = one per hardware thread. Ignored by CUDA.
 * Never more than the session's memory limit has room for (one workspace each: max_workers
 * of ttfs_session_get_requirements); a larger count runs that many. */
TTFS_API ttfs_status ttfs_session_set_threads(ttfs_session* session, int32_t threads);

/* Run a batch of n images (1 <= n <= max_batch).
 * images: n x h x w x c float32 values in HWC order, already scaled (x = byte / divisor);
 *         images_len must equal exactly n * h * w * c. Every value must be finite and in
 *         [0, 1], else TTFS_ERR_BAD_INPUT and nothing runs (the message names the first bad
 *         value: image, h, w, c). Values above 1 are the classic mistake of 0..255 floats fed
 *         without dividing; a session created with TTFS_SESSION_ALLOW_UNSCALED accepts any
 *         finite value (the network then codes whatever it is given).
 * predictions: n int32 predicted classes, or NULL (then predictions_len is ignored).
 * potentials: n x classes float32 output-layer membrane potentials at the last time step, or
 *         NULL. Under first_spike readout a class neuron that fired was reset to 0 and, with
 *         non-overlapping windows, receives nothing afterwards, so it reports 0; with
 *         overlapping windows (stepped engine only) it reports what it integrated after the
 *         reset, as the reference simulation does.
 * Prediction: vmem readout = argmax of the potential (ties: lowest index); first_spike readout
 * = the class that fired first (ties: lowest index), or the argmax of the potential for an
 * image whose output layer never fired. */
TTFS_API ttfs_status ttfs_session_run_f32(ttfs_session* session, const float* images,
                                          size_t images_len, int32_t n,
                                          int32_t* predictions, size_t predictions_len,
                                          float* potentials, size_t potentials_len);
/* The same for uint8 images; each byte becomes float32(byte) / input_divisor (every byte is
 * a valid input, so this call never returns TTFS_ERR_BAD_INPUT). */
TTFS_API ttfs_status ttfs_session_run_u8(ttfs_session* session, const uint8_t* images,
                                         size_t images_len, int32_t n,
                                         int32_t* predictions, size_t predictions_len,
                                         float* potentials, size_t potentials_len);

/* Number of images in the last successful run (TTFS_ERR_NO_RESULTS before the first). */
TTFS_API ttfs_status ttfs_session_last_batch_size(const ttfs_session* session, int32_t* n);
/* First-spike times of one neuron layer (input, conv2d or dense) for the last batch:
 * n x layer size int32 global time steps, -1 for a neuron that never fired, image-major, each
 * image's neurons in HWC order. out_len must be at least n * h * w * c. Needs the session flag
 * TTFS_SESSION_RECORD_SPIKE_TIMES (else TTFS_ERR_NO_RESULTS). maxpool and flatten layers have
 * no neurons: TTFS_ERR_INVALID_ARGUMENT. */
TTFS_API ttfs_status ttfs_session_spike_times(const ttfs_session* session, int32_t layer,
                                              int32_t* out, size_t out_len);
/* Number of neurons of one neuron layer that fired, per image of the last batch: n int32.
 * Always recorded. */
TTFS_API ttfs_status ttfs_session_spike_counts(const ttfs_session* session, int32_t layer,
                                               int32_t* out, size_t out_len);
/* The output trace of the last batch: n x output_trace_count x classes float32, image-major,
 * then step (in the order of output_trace_steps), then class (the output layer's HWC order).
 * Entry (i, r, k) is class k's membrane potential once step output_trace_steps[r] is complete
 * (its integration and fire check done), computed by the engines themselves and the same bits
 * on both engines; at step time_steps - 1 it equals the potentials ttfs_session_run_* returns.
 * Under first_spike readout a class neuron that fired at step f reports 0 from f on (its
 * reset). out_len must be at least n * output_trace_count * classes. Needs the session flag
 * TTFS_SESSION_RECORD_OUTPUT_TRACE (else TTFS_ERR_NO_RESULTS). */
TTFS_API ttfs_status ttfs_session_output_trace(const ttfs_session* session, float* out,
                                               size_t out_len);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TTFS_H */
