/* abi_smoke — exercises every function of the C ABI from plain C11, against answers worked out
 * by hand.
 *
 *   usage: abi_smoke MODEL
 *
 * MODEL must be the network tests/test_c_programs.py writes (write_abi_smoke_model):
 *
 *   input "input" 2x2x1, divisor 255, tau_fire 20, td_fire 0, vth0 1, fires [0, 80)
 *   flatten "flatten" -> 1x1x4
 *   dense "fc" 4 -> 3, integrates [0, 80) with tau_integ 20, td_integ 0; fire window [80, 160)
 *   time_steps 160, readout vmem, metadata {"test": "abi_smoke"}
 *
 *        W (in x out)            bias
 *     [ 0.5,  -0.25,  0.0 ]     [0.125, -0.125, 0.25]
 *     [ 0.25,  0.5,  -1.0 ]
 *     [-0.5,   0.25,  0.75]
 *     [ 1.0,   0.0,   0.5 ]
 *
 * Why the answers below are exact: a pixel of 255 is x = 1.0, which meets the input threshold
 * vth0 * exp(-0/20) = 1 at t = 0, so it spikes at t = 0 where the dense layer integrates with
 * weight exactly 1; a pixel of 0 never spikes. The output potential is then bias + the sum of
 * the weights of the lit pixels, and every weight is a small dyadic number, so float32 sums
 * are exact. A pixel of 128 is x = 0.50196, which first meets exp(-j/20) at j = 14
 * (exp(-13/20) = 0.522 > x > exp(-14/20) = 0.4966): it spikes at t = 14 and its weights enter
 * the output scaled by k = exp(-14/20).
 *
 * Prints "abi_smoke: N checks passed" and exits 0, or names the failing line and exits 1.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttfs.h"

static int checks_passed = 0;

#define CHECK(condition)                                                                     \
    do {                                                                                     \
        if (!(condition)) {                                                                  \
            fprintf(stderr, "abi_smoke: %s:%d: check failed: %s (last error: \"%s\")\n",     \
                    __FILE__, __LINE__, #condition, ttfs_last_error());                      \
            exit(1);                                                                         \
        }                                                                                    \
        ++checks_passed;                                                                     \
    } while (0)

/* A call that must return exactly `expected`; on a mismatch both codes are printed by name. */
#define CHECK_STATUS(call, expected)                                                         \
    do {                                                                                     \
        ttfs_status got_ = (call);                                                           \
        if (got_ != (expected)) {                                                            \
            fprintf(stderr, "abi_smoke: %s:%d: %s returned %s, expected %s (last error: "    \
                    "\"%s\")\n", __FILE__, __LINE__, #call, ttfs_status_name(got_),          \
                    ttfs_status_name(expected), ttfs_last_error());                          \
            exit(1);                                                                         \
        }                                                                                    \
        ++checks_passed;                                                                     \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, TTFS_OK)

/* A failed call must leave a message a user can act on. */
#define CHECK_FAILS_WITH(call, expected)                                                     \
    do {                                                                                     \
        CHECK_STATUS(call, expected);                                                        \
        CHECK(ttfs_last_error()[0] != '\0');                                                 \
    } while (0)

enum { PIXELS = 4, CLASSES = 3, IMAGES = 5, LAYERS = 3, INPUT_LAYER = 0, FLATTEN_LAYER = 1,
       OUTPUT_LAYER = 2 };

/* The batch every session runs: lit pixels, lit pixels, a tie, a mid-grey pixel, nothing. */
static const uint8_t kImages[IMAGES][PIXELS] = {
    {255, 0, 255, 0},
    {0, 255, 0, 255},
    {0, 255, 0, 0},
    {128, 0, 0, 0},
    {0, 0, 0, 0},
};
static const int32_t kInputSpikeTimes[IMAGES][PIXELS] = {
    {0, -1, 0, -1},
    {-1, 0, -1, 0},
    {-1, 0, -1, -1},
    {14, -1, -1, -1},
    {-1, -1, -1, -1},
};
static const int32_t kInputSpikeCounts[IMAGES] = {2, 2, 1, 1, 0};
/* Image 2 ties classes 0 and 1 at 0.375: the lowest index wins. */
static const int32_t kPredictions[IMAGES] = {2, 0, 0, 0, 2};

static void expected_potentials(float out[IMAGES][CLASSES]) {
    /* Mid-grey pixel 0 of image 3 enters at t = 14 with k = exp(-(14 - 0) / 20). */
    const float k = expf(-14.0f / 20.0f);
    const float exact[IMAGES][CLASSES] = {
        {0.125f, -0.125f, 1.0f},   /* 0.5 - 0.5 + 0.125 | -0.25 + 0.25 - 0.125 | 0 + 0.75 + 0.25 */
        {1.375f, 0.375f, -0.25f},  /* 0.25 + 1 + 0.125  | 0.5 + 0 - 0.125      | -1 + 0.5 + 0.25 */
        {0.375f, 0.375f, -0.75f},  /* 0.25 + 0.125      | 0.5 - 0.125          | -1 + 0.25 */
        {0.125f + 0.5f * k, -0.125f - 0.25f * k, 0.25f},
        {0.125f, -0.125f, 0.25f},  /* the bias alone */
    };
    memcpy(out, exact, sizeof exact);
}

static int near(float got, float expected) { return fabsf(got - expected) <= 1e-6f; }

static unsigned char* read_whole_file(const char* path, size_t* size) {
    FILE* file = fopen(path, "rb");
    if (!file) return NULL;
    unsigned char* data = NULL;
    long length = -1;
    if (fseek(file, 0, SEEK_END) == 0) length = ftell(file);
    if (length > 0 && fseek(file, 0, SEEK_SET) == 0) {
        data = malloc((size_t)length + 1); /* +1: room for the trailing-byte check */
        if (data && fread(data, 1, (size_t)length, file) != (size_t)length) {
            free(data);
            data = NULL;
        }
    }
    fclose(file);
    *size = (size_t)length;
    return data;
}

static void check_library_info(void) {
    char version[64];
    snprintf(version, sizeof version, "%d.%d.%d", TTFS_VERSION_MAJOR, TTFS_VERSION_MINOR,
             TTFS_VERSION_PATCH);
    CHECK(strcmp(ttfs_version_string(), version) == 0);
    CHECK(ttfs_abi_version() == TTFS_ABI_VERSION);
    const char* build = ttfs_build_info();
    CHECK(build != NULL && strstr(build, version) != NULL);
    int32_t compiled = ttfs_cuda_compiled();
    CHECK(compiled == 0 || compiled == 1);
    int32_t devices = -1;
    CHECK_OK(ttfs_cuda_device_count(&devices));
    CHECK(devices >= 0);
    if (!compiled) CHECK(devices == 0);
    CHECK_FAILS_WITH(ttfs_cuda_device_count(NULL), TTFS_ERR_INVALID_ARGUMENT);
    CHECK(strcmp(ttfs_status_name(TTFS_ERR_BAD_CRC), "TTFS_ERR_BAD_CRC") == 0);
    CHECK(strcmp(ttfs_status_name(TTFS_OK), "TTFS_OK") == 0);
    CHECK(strcmp(ttfs_status_name(12345), "unknown status") == 0);
    CHECK(ttfs_last_error() != NULL);
}

static void check_loading(const char* path) {
    ttfs_model* model = (ttfs_model*)&checks_passed; /* a sentinel a failed load must not touch */
    ttfs_model* const sentinel = model;
    CHECK_FAILS_WITH(ttfs_model_load_file(NULL, &model), TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_model_load_file(path, NULL), TTFS_ERR_INVALID_ARGUMENT);
    const char* missing = "/nonexistent/abi_smoke_missing.ttfs";
    CHECK_FAILS_WITH(ttfs_model_load_file(missing, &model), TTFS_ERR_IO);
    CHECK(strstr(ttfs_last_error(), "abi_smoke_missing.ttfs") != NULL); /* names the file */
    CHECK(model == sentinel);

    size_t size = 0;
    unsigned char* bytes = read_whole_file(path, &size);
    CHECK(bytes != NULL && size > 256);
    CHECK_FAILS_WITH(ttfs_model_load_memory(NULL, size, &model), TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_model_load_memory(bytes, 100, &model), TTFS_ERR_TRUNCATED_HEADER);
    CHECK_FAILS_WITH(ttfs_model_load_memory(bytes, size - 1, &model), TTFS_ERR_TRUNCATED_DATA);
    bytes[size] = 0;
    CHECK_FAILS_WITH(ttfs_model_load_memory(bytes, size + 1, &model), TTFS_ERR_TRAILING_BYTES);
    bytes[0] ^= 0x20u;
    CHECK_FAILS_WITH(ttfs_model_load_memory(bytes, size, &model), TTFS_ERR_BAD_MAGIC);
    bytes[0] ^= 0x20u;
    bytes[size - 8] ^= 0x01u; /* inside the last tensor: only the CRC can notice */
    CHECK_FAILS_WITH(ttfs_model_load_memory(bytes, size, &model), TTFS_ERR_BAD_CRC);
    bytes[size - 8] ^= 0x01u;
    CHECK(model == sentinel);

    /* The bytes are copied: the model must survive the buffer. */
    ttfs_model* from_memory = NULL;
    CHECK_OK(ttfs_model_load_memory(bytes, size, &from_memory));
    memset(bytes, 0, size);
    free(bytes);
    int32_t count = 0, classes = 0;
    CHECK_OK(ttfs_model_layer_count(from_memory, &count));
    CHECK(count == LAYERS);
    CHECK_OK(ttfs_model_num_classes(from_memory, &classes));
    CHECK(classes == CLASSES);
    CHECK_OK(ttfs_model_free(from_memory));
}

static void check_layer_queries(const ttfs_model* model) {
    int32_t count = 0;
    CHECK_OK(ttfs_model_layer_count(model, &count));
    CHECK(count == LAYERS);
    CHECK_FAILS_WITH(ttfs_model_layer_count(NULL, &count), TTFS_ERR_INVALID_HANDLE);
    CHECK_FAILS_WITH(ttfs_model_layer_count(model, NULL), TTFS_ERR_INVALID_ARGUMENT);

    ttfs_layer_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK_OK(ttfs_model_layer_info(model, INPUT_LAYER, &info));
    CHECK(info.kind == TTFS_LAYER_INPUT && info.depth == 0);
    CHECK(info.shape[0] == 2 && info.shape[1] == 2 && info.shape[2] == 1);
    CHECK(info.name != NULL && strcmp(info.name, "input") == 0);
    CHECK(info.tau_fire == 20.0f && info.td_fire == 0.0f && info.vth0 == 1.0f);
    CHECK(info.tau_integ == 0.0f && info.td_integ == 0.0f);
    CHECK(info.integ_window[0] == 0 && info.integ_window[1] == 0);
    CHECK(info.fire_window[0] == 0 && info.fire_window[1] == 80);

    CHECK_OK(ttfs_model_layer_info(model, FLATTEN_LAYER, &info));
    CHECK(info.kind == TTFS_LAYER_FLATTEN && info.depth == -1);
    CHECK(info.shape[0] == 1 && info.shape[1] == 1 && info.shape[2] == PIXELS);
    CHECK(strcmp(info.name, "flatten") == 0);
    CHECK(info.tau_fire == 0.0f && info.vth0 == 0.0f);

    CHECK_OK(ttfs_model_layer_info(model, OUTPUT_LAYER, &info));
    CHECK(info.kind == TTFS_LAYER_DENSE && info.depth == 1);
    CHECK(info.shape[0] == 1 && info.shape[1] == 1 && info.shape[2] == CLASSES);
    CHECK(strcmp(info.name, "fc") == 0);
    CHECK(info.tau_integ == 20.0f && info.td_integ == 0.0f); /* chained from the input layer */
    CHECK(info.integ_window[0] == 0 && info.integ_window[1] == 80);
    CHECK(info.fire_window[0] == 80 && info.fire_window[1] == 160);

    CHECK_FAILS_WITH(ttfs_model_layer_info(model, -1, &info), TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_model_layer_info(model, LAYERS, &info), TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_model_layer_info(model, 0, NULL), TTFS_ERR_INVALID_ARGUMENT);
    info.struct_size = 4; /* smaller than any version of the struct */
    CHECK_FAILS_WITH(ttfs_model_layer_info(model, 0, &info), TTFS_ERR_INVALID_ARGUMENT);

    int32_t shape[3] = {0, 0, 0}, classes = 0, steps = 0, readout = -1;
    float divisor = 0.0f;
    const char* metadata = NULL;
    CHECK_OK(ttfs_model_input_shape(model, shape));
    CHECK(shape[0] == 2 && shape[1] == 2 && shape[2] == 1);
    CHECK_OK(ttfs_model_num_classes(model, &classes));
    CHECK(classes == CLASSES);
    CHECK_OK(ttfs_model_time_steps(model, &steps));
    CHECK(steps == 160);
    CHECK_OK(ttfs_model_readout(model, &readout));
    CHECK(readout == TTFS_READOUT_VMEM);
    CHECK_OK(ttfs_model_input_divisor(model, &divisor));
    CHECK(divisor == 255.0f);
    CHECK_OK(ttfs_model_metadata(model, &metadata));
    CHECK(metadata != NULL && strstr(metadata, "abi_smoke") != NULL);
    CHECK_FAILS_WITH(ttfs_model_input_shape(NULL, shape), TTFS_ERR_INVALID_HANDLE);
    CHECK_FAILS_WITH(ttfs_model_num_classes(model, NULL), TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_model_metadata(model, NULL), TTFS_ERR_INVALID_ARGUMENT);
}

static void check_session_creation(const ttfs_model* model) {
    ttfs_session* session = NULL;
    CHECK_FAILS_WITH(ttfs_session_create(NULL, TTFS_BACKEND_CPU, TTFS_ENGINE_STEPPED, 1, 0, &session),
                     TTFS_ERR_INVALID_HANDLE);
    CHECK_FAILS_WITH(ttfs_session_create(model, TTFS_BACKEND_CPU, TTFS_ENGINE_STEPPED, 0, 0, &session),
                     TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_session_create(model, 9, TTFS_ENGINE_STEPPED, 1, 0, &session),
                     TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_session_create(model, TTFS_BACKEND_CPU, 7, 1, 0, &session),
                     TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_session_create(model, TTFS_BACKEND_CPU, TTFS_ENGINE_STEPPED, 1, 0, NULL),
                     TTFS_ERR_INVALID_ARGUMENT);
    CHECK(session == NULL);

    int32_t devices = 0, backend = -1;
    CHECK_OK(ttfs_cuda_device_count(&devices));
    if (devices == 0) {
        CHECK_FAILS_WITH(ttfs_session_create(model, TTFS_BACKEND_CUDA, TTFS_ENGINE_STEPPED, 1, 0, &session),
                         TTFS_ERR_BACKEND_UNAVAILABLE);
        CHECK(session == NULL);
    }
    /* auto never reports itself: it is CUDA with a device, else the CPU. */
    CHECK_OK(ttfs_session_create(model, TTFS_BACKEND_AUTO, TTFS_ENGINE_ANALYTIC, 1, 0, &session));
    CHECK_OK(ttfs_session_backend(session, &backend));
    CHECK(backend == (devices > 0 ? TTFS_BACKEND_CUDA : TTFS_BACKEND_CPU));
    CHECK_OK(ttfs_session_free(session));
}

/* Runs the batch on one CPU session and checks every output against the hand-worked answers.
 * potentials_out receives the run's potentials so engines can be compared bit for bit. */
static void check_runs(const ttfs_model* model, int32_t engine, float potentials_out[IMAGES][CLASSES]) {
    ttfs_session* session = NULL;
    CHECK_OK(ttfs_session_create(model, TTFS_BACKEND_CPU, engine, IMAGES,
                                 TTFS_SESSION_RECORD_SPIKE_TIMES, &session));
    int32_t backend = -1, engine_used = -1, n = -1;
    CHECK_OK(ttfs_session_backend(session, &backend));
    CHECK(backend == TTFS_BACKEND_CPU);
    CHECK_OK(ttfs_session_engine(session, &engine_used));
    CHECK(engine_used == engine);
    CHECK_OK(ttfs_session_set_threads(session, 2));
    CHECK_FAILS_WITH(ttfs_session_set_threads(session, -1), TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_session_backend(session, NULL), TTFS_ERR_INVALID_ARGUMENT);

    /* Nothing to report before the first run. */
    int32_t counts[IMAGES], times[IMAGES * PIXELS], predictions[IMAGES];
    float potentials[IMAGES][CLASSES], expected[IMAGES][CLASSES];
    CHECK_FAILS_WITH(ttfs_session_last_batch_size(session, &n), TTFS_ERR_NO_RESULTS);
    CHECK_FAILS_WITH(ttfs_session_spike_counts(session, INPUT_LAYER, counts, IMAGES), TTFS_ERR_NO_RESULTS);

    /* Argument errors of a run. */
    const uint8_t* pixels = &kImages[0][0];
    const size_t pixels_len = IMAGES * PIXELS;
    CHECK_FAILS_WITH(ttfs_session_run_u8(session, NULL, pixels_len, IMAGES, predictions, IMAGES,
                                         &potentials[0][0], IMAGES * CLASSES), TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_session_run_u8(session, pixels, pixels_len - 1, IMAGES, predictions, IMAGES,
                                         &potentials[0][0], IMAGES * CLASSES), TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_session_run_u8(session, pixels, pixels_len, 0, predictions, IMAGES,
                                         &potentials[0][0], IMAGES * CLASSES), TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_session_run_u8(session, pixels, pixels_len + PIXELS, IMAGES + 1, NULL, 0,
                                         NULL, 0), TTFS_ERR_INVALID_ARGUMENT); /* over max_batch */
    CHECK_FAILS_WITH(ttfs_session_run_u8(session, pixels, pixels_len, IMAGES, predictions, IMAGES - 1,
                                         &potentials[0][0], IMAGES * CLASSES), TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_session_run_u8(session, pixels, pixels_len, IMAGES, predictions, IMAGES,
                                         &potentials[0][0], IMAGES * CLASSES - 1), TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_session_run_u8(NULL, pixels, pixels_len, IMAGES, predictions, IMAGES,
                                         &potentials[0][0], IMAGES * CLASSES), TTFS_ERR_INVALID_HANDLE);

    /* The uint8 run against the hand-worked answers. */
    memset(predictions, 0xff, sizeof predictions);
    CHECK_OK(ttfs_session_run_u8(session, pixels, pixels_len, IMAGES, predictions, IMAGES,
                                 &potentials[0][0], IMAGES * CLASSES));
    expected_potentials(expected);
    for (int i = 0; i < IMAGES; ++i) {
        CHECK(predictions[i] == kPredictions[i]);
        for (int k = 0; k < CLASSES; ++k) CHECK(near(potentials[i][k], expected[i][k]));
    }
    /* Images 0-2 and 4 involve only dyadic sums: exact, not merely near. */
    CHECK(potentials[0][2] == 1.0f && potentials[1][0] == 1.375f && potentials[2][1] == 0.375f);
    CHECK(potentials[4][0] == 0.125f && potentials[4][1] == -0.125f && potentials[4][2] == 0.25f);
    memcpy(potentials_out, potentials, sizeof potentials);

    CHECK_OK(ttfs_session_last_batch_size(session, &n));
    CHECK(n == IMAGES);
    CHECK_OK(ttfs_session_spike_counts(session, INPUT_LAYER, counts, IMAGES));
    for (int i = 0; i < IMAGES; ++i) CHECK(counts[i] == kInputSpikeCounts[i]);
    CHECK_OK(ttfs_session_spike_counts(session, OUTPUT_LAYER, counts, IMAGES));
    for (int i = 0; i < IMAGES; ++i) CHECK(counts[i] == 0); /* vmem readout: the output never fires */
    CHECK_OK(ttfs_session_spike_times(session, INPUT_LAYER, times, IMAGES * PIXELS));
    for (int i = 0; i < IMAGES; ++i) {
        for (int p = 0; p < PIXELS; ++p) {
            CHECK(times[i * PIXELS + p] == kInputSpikeTimes[i][p]);
        }
    }
    CHECK_OK(ttfs_session_spike_times(session, OUTPUT_LAYER, times, IMAGES * CLASSES));
    for (int i = 0; i < IMAGES * CLASSES; ++i) CHECK(times[i] == -1);
    CHECK_FAILS_WITH(ttfs_session_spike_times(session, FLATTEN_LAYER, times, IMAGES * PIXELS),
                     TTFS_ERR_INVALID_ARGUMENT); /* flatten has no neurons */
    CHECK_FAILS_WITH(ttfs_session_spike_times(session, LAYERS, times, IMAGES * PIXELS),
                     TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_session_spike_times(session, INPUT_LAYER, times, IMAGES * PIXELS - 1),
                     TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_session_spike_times(session, INPUT_LAYER, NULL, IMAGES * PIXELS),
                     TTFS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS_WITH(ttfs_session_spike_counts(session, INPUT_LAYER, counts, IMAGES - 1),
                     TTFS_ERR_INVALID_ARGUMENT);

    /* float32 input of the same pixels, scaled as the library scales bytes: the same bits. */
    float scaled[IMAGES * PIXELS], potentials_f32[IMAGES][CLASSES];
    int32_t predictions_f32[IMAGES];
    for (int i = 0; i < IMAGES * PIXELS; ++i) scaled[i] = (float)pixels[i] / 255.0f;
    CHECK_FAILS_WITH(ttfs_session_run_f32(session, scaled, pixels_len + 1, IMAGES, NULL, 0, NULL, 0),
                     TTFS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ttfs_session_run_f32(session, scaled, pixels_len, IMAGES, predictions_f32, IMAGES,
                                  &potentials_f32[0][0], IMAGES * CLASSES));
    CHECK(memcmp(predictions_f32, predictions, sizeof predictions) == 0);
    CHECK(memcmp(potentials_f32, potentials, sizeof potentials) == 0);

    /* A smaller batch: only its images are reported; NULL outputs are allowed. */
    CHECK_OK(ttfs_session_run_f32(session, scaled + 3 * PIXELS, 2 * PIXELS, 2, NULL, 0, NULL, 0));
    CHECK_OK(ttfs_session_last_batch_size(session, &n));
    CHECK(n == 2);
    CHECK_OK(ttfs_session_spike_counts(session, INPUT_LAYER, counts, 2));
    CHECK(counts[0] == kInputSpikeCounts[3] && counts[1] == kInputSpikeCounts[4]);

    CHECK_OK(ttfs_session_free(session));

    /* Without TTFS_SESSION_RECORD_SPIKE_TIMES there are counts but no times. */
    CHECK_OK(ttfs_session_create(model, TTFS_BACKEND_CPU, engine, 1, 0, &session));
    CHECK_OK(ttfs_session_run_u8(session, kImages[0], PIXELS, 1, predictions, 1, NULL, 0));
    CHECK(predictions[0] == kPredictions[0]);
    CHECK_OK(ttfs_session_spike_counts(session, INPUT_LAYER, counts, 1));
    CHECK(counts[0] == kInputSpikeCounts[0]);
    CHECK_FAILS_WITH(ttfs_session_spike_times(session, INPUT_LAYER, times, PIXELS), TTFS_ERR_NO_RESULTS);
    CHECK_OK(ttfs_session_free(session));
}

static void check_lifetimes(const char* path) {
    ttfs_model* model = NULL;
    ttfs_session* session = NULL;
    CHECK_OK(ttfs_model_load_file(path, &model));
    CHECK_OK(ttfs_session_create(model, TTFS_BACKEND_CPU, TTFS_ENGINE_STEPPED, 1, 0, &session));

    /* A model handle is not a session handle. */
    int32_t n = 0;
    CHECK_FAILS_WITH(ttfs_session_last_batch_size((const ttfs_session*)(const void*)model, &n),
                     TTFS_ERR_INVALID_HANDLE);

    /* The session keeps what it needs: it runs after its model is freed. */
    CHECK_OK(ttfs_model_free(model));
    int32_t prediction = -1;
    CHECK_OK(ttfs_session_run_u8(session, kImages[1], PIXELS, 1, &prediction, 1, NULL, 0));
    CHECK(prediction == kPredictions[1]);

    /* Double frees are reported, not crashes; freeing NULL is fine. */
    CHECK_FAILS_WITH(ttfs_model_free(model), TTFS_ERR_INVALID_HANDLE);
    CHECK_OK(ttfs_session_free(session));
    CHECK_FAILS_WITH(ttfs_session_free(session), TTFS_ERR_INVALID_HANDLE);
    CHECK_FAILS_WITH(ttfs_session_run_u8(session, kImages[1], PIXELS, 1, &prediction, 1, NULL, 0),
                     TTFS_ERR_INVALID_HANDLE);
    CHECK_OK(ttfs_model_free(NULL));
    CHECK_OK(ttfs_session_free(NULL));
}

/* Handles are ids that never alias: after a handle is freed, whatever is loaded or created
 * next (which may reuse the same memory and registry slot) gets another handle, and the stale
 * one is refused by every call, its free included, without touching the new object. */
static void check_stale_handles(const char* path) {
    enum { ROUNDS = 200 };
    for (int round = 0; round < ROUNDS; ++round) {
        ttfs_model* stale = NULL;
        ttfs_session* stale_session = NULL;
        CHECK_OK(ttfs_model_load_file(path, &stale));
        CHECK_OK(ttfs_session_create(stale, TTFS_BACKEND_CPU, TTFS_ENGINE_ANALYTIC, 1, 0, &stale_session));
        CHECK_OK(ttfs_session_free(stale_session));
        CHECK_OK(ttfs_model_free(stale));

        ttfs_model* fresh = NULL;
        ttfs_session* fresh_session = NULL;
        CHECK_OK(ttfs_model_load_file(path, &fresh));
        CHECK_OK(ttfs_session_create(fresh, TTFS_BACKEND_CPU, TTFS_ENGINE_ANALYTIC, 1, 0, &fresh_session));
        CHECK(fresh != stale && fresh_session != stale_session);

        int32_t count = 0, prediction = -1;
        CHECK_FAILS_WITH(ttfs_model_layer_count(stale, &count), TTFS_ERR_INVALID_HANDLE);
        CHECK_FAILS_WITH(ttfs_session_run_u8(stale_session, kImages[1], PIXELS, 1, &prediction, 1, NULL, 0),
                         TTFS_ERR_INVALID_HANDLE);
        CHECK_FAILS_WITH(ttfs_session_free(stale_session), TTFS_ERR_INVALID_HANDLE);
        CHECK_FAILS_WITH(ttfs_model_free(stale), TTFS_ERR_INVALID_HANDLE);

        /* The new objects were not touched by the stale calls. */
        CHECK_OK(ttfs_model_layer_count(fresh, &count));
        CHECK(count == 3);
        CHECK_OK(ttfs_session_run_u8(fresh_session, kImages[1], PIXELS, 1, &prediction, 1, NULL, 0));
        CHECK(prediction == kPredictions[1]);
        CHECK_OK(ttfs_session_free(fresh_session));
        CHECK_OK(ttfs_model_free(fresh));
    }
}

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: abi_smoke MODEL  (the network tests/test_c_programs.py writes)\n");
        return 2;
    }
    const char* path = argv[1];
    check_library_info();
    check_loading(path);

    ttfs_model* model = NULL;
    CHECK_OK(ttfs_model_load_file(path, &model));
    check_layer_queries(model);
    check_session_creation(model);

    /* Both engines must match the hand-worked answers and each other, bit for bit. */
    float stepped[IMAGES][CLASSES], analytic[IMAGES][CLASSES];
    check_runs(model, TTFS_ENGINE_STEPPED, stepped);
    check_runs(model, TTFS_ENGINE_ANALYTIC, analytic);
    CHECK(memcmp(stepped, analytic, sizeof stepped) == 0);
    CHECK_OK(ttfs_model_free(model));

    check_lifetimes(path);
    check_stale_handles(path);
    printf("abi_smoke: %d checks passed\n", checks_passed);
    return 0;
}
