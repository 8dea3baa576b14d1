/* fuzz_runner — runs generated model files through every engine, through the public C ABI only.
 *
 *   usage: fuzz_runner CASES [FIRST] [--backend cpu|cuda]
 *
 * CASES is a file written by tests/fuzz_models.py (write_cases): the 8 bytes "TTFSFUZ1", a u32
 * case count, then per case (little-endian):
 *
 *   u32 model_size, model_size bytes of a .ttfs file,
 *   u32 n, u32 h, u32 w, u32 c, n*h*w*c float32 images (HWC, already scaled),
 *   u64 max_memory_bytes, u64 max_work_per_image, u32 threads
 *
 * Each case from index FIRST on (default 0) is loaded, then run in four sessions, each with
 * the case's limits: stepped and analytic, each with and without recording spike times (the
 * analytic engine's fused `earliest`-pool path runs only without). Every session that is
 * created must run; everything that ran must agree bit for bit (predictions, potentials,
 * spike counts, and the spike times of the recorded runs); every potential must be finite;
 * spike counts must match the recorded times, every recorded time must lie inside its layer's
 * fire window, every prediction must name a class. One line per case, flushed at once (so a
 * parent that sees a case hang or crash knows which):
 *
 *   case K load STATUS                      the loader refused the model
 *   case K ran S0 S1 S2 S3 hash=H           session statuses (OK, or why refused) of stepped,
 *                                           stepped+record, analytic, analytic+record; H is an
 *                                           FNV-1a hash of the agreed results (0: none ran)
 *   case K FAIL what went wrong
 *
 * Exit status 0 after the last case (failures are lines, not exit codes), 2 on bad usage or
 * an unreadable CASES file. Includes nothing but ttfs.h, like any C user of the library.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttfs.h"

#define CONFIGS 4

static uint8_t* read_all(const char* path, size_t* size) {
    FILE* file = fopen(path, "rb");
    if (file == NULL) return NULL;
    size_t capacity = 1 << 20, used = 0;
    uint8_t* data = malloc(capacity);
    while (data != NULL) {
        if (used == capacity) {
            uint8_t* bigger = realloc(data, capacity * 2);
            if (bigger == NULL) {
                free(data);
                data = NULL;
                break;
            }
            data = bigger;
            capacity *= 2;
        }
        const size_t got = fread(data + used, 1, capacity - used, file);
        used += got;
        if (got == 0) break;
    }
    fclose(file);
    *size = used;
    return data;
}

/* A cursor over the cases file; every read is bounds-checked. */
typedef struct {
    const uint8_t* data;
    size_t size, at;
    int bad;
} Reader;

static const uint8_t* take(Reader* r, size_t bytes) {
    if (r->bad || bytes > r->size - r->at) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t* p = r->data + r->at;
    r->at += bytes;
    return p;
}

static uint64_t take_u(Reader* r, int bytes) {
    const uint8_t* p = take(r, (size_t)bytes);
    uint64_t value = 0;
    for (int i = 0; p != NULL && i < bytes; ++i) value |= (uint64_t)p[i] << (8 * i);
    return value;
}

typedef struct {
    const uint8_t* model;
    uint32_t model_size, n, h, w, c, threads;
    const uint8_t* images; /* n*h*w*c little-endian float32 */
    uint64_t max_memory, max_work;
} Case;

static int next_case(Reader* r, Case* k) {
    k->model_size = (uint32_t)take_u(r, 4);
    k->model = take(r, k->model_size);
    k->n = (uint32_t)take_u(r, 4);
    k->h = (uint32_t)take_u(r, 4);
    k->w = (uint32_t)take_u(r, 4);
    k->c = (uint32_t)take_u(r, 4);
    const uint64_t floats = (uint64_t)k->n * k->h * k->w * k->c;
    k->images = floats <= r->size ? take(r, (size_t)floats * 4) : take(r, r->size + 1);
    k->max_memory = take_u(r, 8);
    k->max_work = take_u(r, 8);
    k->threads = (uint32_t)take_u(r, 4);
    return !r->bad;
}

static uint64_t fnv(uint64_t hash, const void* data, size_t bytes) {
    const uint8_t* p = data;
    for (size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
    return hash;
}

/* One session's results. */
typedef struct {
    int ran;
    int32_t* predictions;
    float* potentials;
    int32_t* counts;  /* layers x n, 0 for layers without neurons */
    int32_t* times;   /* recorded runs: sum of neuron layer sizes x n */
} Results;

static void free_results(Results* r) {
    free(r->predictions);
    free(r->potentials);
    free(r->counts);
    free(r->times);
    memset(r, 0, sizeof *r);
}

static int failed = 0;
static char failure[512];

static void fail(const char* what) {
    if (!failed) snprintf(failure, sizeof failure, "%s", what);
    failed = 1;
}

/* Runs one configuration; returns its session status. */
static ttfs_status run_config(const ttfs_model* model, const Case* k, int backend, int engine, int record,
                              int32_t layers, const int32_t* sizes, int64_t total_neurons, int32_t classes,
                              Results* out) {
    ttfs_session_options options;
    memset(&options, 0, sizeof options);
    options.struct_size = sizeof options;
    options.flags = record ? TTFS_SESSION_RECORD_SPIKE_TIMES : 0;
    options.max_memory_bytes = k->max_memory;
    options.max_work_per_image = k->max_work;
    ttfs_session* session = NULL;
    ttfs_status status = ttfs_session_create_ex(model, backend, engine, (int32_t)k->n, &options, &session);
    if (status != TTFS_OK) return status;
    char what[256];
    if (k->threads > 0 && ttfs_session_set_threads(session, (int32_t)k->threads) != TTFS_OK) fail("set_threads failed");
    const size_t values = (size_t)k->n * k->h * k->w * k->c;
    float* images = malloc(values * sizeof(float) + 1);
    out->predictions = malloc((size_t)k->n * sizeof(int32_t));
    out->potentials = malloc((size_t)k->n * (size_t)classes * sizeof(float));
    out->counts = calloc((size_t)layers * k->n, sizeof(int32_t));
    out->times = record ? malloc((size_t)total_neurons * k->n * sizeof(int32_t) + 1) : NULL;
    if (images == NULL || out->predictions == NULL || out->potentials == NULL || out->counts == NULL ||
        (record && out->times == NULL)) {
        fail("out of memory in fuzz_runner");
        free(images);
        ttfs_session_free(session);
        return TTFS_OK;
    }
    memcpy(images, k->images, values * sizeof(float));
    status = ttfs_session_run_f32(session, images, values, (int32_t)k->n, out->predictions, k->n,
                                  out->potentials, (size_t)k->n * (size_t)classes);
    free(images);
    if (status != TTFS_OK) {
        snprintf(what, sizeof what, "engine %d record %d: run failed after the session was created: %s: %.150s",
                 engine, record, ttfs_status_name(status), ttfs_last_error());
        fail(what);
        ttfs_session_free(session);
        return TTFS_OK;
    }
    out->ran = 1;
    int64_t offset = 0;
    for (int32_t layer = 0; layer < layers; ++layer) {
        if (sizes[layer] == 0) continue;
        if (ttfs_session_spike_counts(session, layer, out->counts + (size_t)layer * k->n, k->n) != TTFS_OK)
            fail("spike_counts failed");
        if (record) {
            int32_t* times = out->times + offset * k->n;
            if (ttfs_session_spike_times(session, layer, times, (size_t)sizes[layer] * k->n) != TTFS_OK)
                fail("spike_times failed");
            ttfs_layer_info info;
            memset(&info, 0, sizeof info);
            info.struct_size = sizeof info;
            ttfs_model_layer_info(model, layer, &info);
            for (uint32_t image = 0; image < k->n; ++image) {
                int32_t fired = 0;
                for (int32_t u = 0; u < sizes[layer]; ++u) {
                    const int32_t t = times[(size_t)image * sizes[layer] + u];
                    if (t < 0) continue;
                    ++fired;
                    if (t < info.fire_window[0] || t >= info.fire_window[1]) {
                        snprintf(what, sizeof what, "layer %d: a first-spike time %d outside its fire window [%d, %d)",
                                 layer, t, info.fire_window[0], info.fire_window[1]);
                        fail(what);
                    }
                }
                if (fired != out->counts[(size_t)layer * k->n + image]) {
                    snprintf(what, sizeof what, "layer %d image %u: spike count %d but %d recorded times", layer,
                             image, out->counts[(size_t)layer * k->n + image], fired);
                    fail(what);
                }
            }
            offset += sizes[layer];
        }
    }
    for (size_t i = 0; i < (size_t)k->n * (size_t)classes; ++i)
        if (!isfinite(out->potentials[i])) fail("a potential is not finite");
    for (uint32_t image = 0; image < k->n; ++image)
        if (out->predictions[image] < 0 || out->predictions[image] >= classes) fail("a prediction is no class");
    if (ttfs_session_free(session) != TTFS_OK) fail("session_free failed");
    return TTFS_OK;
}

static void run_case(uint32_t index, const Case* k, int backend) {
    failed = 0;
    failure[0] = '\0';
    ttfs_model* model = NULL;
    ttfs_status status = ttfs_model_load_memory(k->model, k->model_size, &model);
    if (status != TTFS_OK) {
        if (ttfs_last_error()[0] == '\0') printf("case %u FAIL %s without a message\n", index, ttfs_status_name(status));
        else printf("case %u load %s\n", index, ttfs_status_name(status));
        return;
    }
    int32_t layers = 0, classes = 0, shape[3] = {0, 0, 0};
    ttfs_model_layer_count(model, &layers);
    ttfs_model_num_classes(model, &classes);
    ttfs_model_input_shape(model, shape);
    if ((uint32_t)shape[0] != k->h || (uint32_t)shape[1] != k->w || (uint32_t)shape[2] != k->c) {
        printf("case %u FAIL the images do not have the model's input shape\n", index);
        ttfs_model_free(model);
        return;
    }
    int32_t* sizes = calloc((size_t)layers + 1, sizeof(int32_t));
    int64_t total = 0;
    for (int32_t layer = 0; sizes != NULL && layer < layers; ++layer) {
        ttfs_layer_info info;
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        ttfs_model_layer_info(model, layer, &info);
        if (info.kind == TTFS_LAYER_INPUT || info.kind == TTFS_LAYER_CONV2D || info.kind == TTFS_LAYER_DENSE)
            sizes[layer] = info.shape[0] * info.shape[1] * info.shape[2];
        total += sizes[layer];
    }
    Results results[CONFIGS];
    memset(results, 0, sizeof results);
    ttfs_status statuses[CONFIGS];
    static const int engines[CONFIGS] = {TTFS_ENGINE_STEPPED, TTFS_ENGINE_STEPPED, TTFS_ENGINE_ANALYTIC,
                                         TTFS_ENGINE_ANALYTIC};
    for (int config = 0; config < CONFIGS && sizes != NULL; ++config) {
        statuses[config] = run_config(model, k, backend, engines[config], config % 2, layers, sizes, total, classes,
                                      &results[config]);
        if (statuses[config] != TTFS_OK && statuses[config] != TTFS_ERR_LIMIT &&
            statuses[config] != TTFS_ERR_UNSUPPORTED && statuses[config] != TTFS_ERR_OUT_OF_MEMORY) {
            char what[256];
            snprintf(what, sizeof what, "session refused with %s: %.150s", ttfs_status_name(statuses[config]),
                     ttfs_last_error());
            fail(what);
        }
    }
    if (sizes == NULL) fail("out of memory in fuzz_runner");
    /* Everything that ran agrees with the first that ran. */
    const Results* first = NULL;
    int first_config = -1;
    for (int config = 0; config < CONFIGS; ++config) {
        if (!results[config].ran) continue;
        if (first == NULL) {
            first = &results[config];
            first_config = config;
            continue;
        }
        const Results* r = &results[config];
        char what[256];
        if (memcmp(r->predictions, first->predictions, (size_t)k->n * sizeof(int32_t)) != 0 ||
            memcmp(r->potentials, first->potentials, (size_t)k->n * (size_t)classes * sizeof(float)) != 0 ||
            memcmp(r->counts, first->counts, (size_t)layers * k->n * sizeof(int32_t)) != 0) {
            snprintf(what, sizeof what, "results of configuration %d differ from configuration %d's", config,
                     first_config);
            fail(what);
        }
    }
    /* The recorded runs (stepped and analytic) agree on every spike time. */
    if (results[1].ran && results[3].ran &&
        memcmp(results[1].times, results[3].times, (size_t)total * k->n * sizeof(int32_t)) != 0)
        fail("recorded spike times differ between the stepped and analytic engines");
    uint64_t hash = 0;
    if (first != NULL) {
        hash = 14695981039346656037ull;
        hash = fnv(hash, first->predictions, (size_t)k->n * sizeof(int32_t));
        hash = fnv(hash, first->potentials, (size_t)k->n * (size_t)classes * sizeof(float));
        hash = fnv(hash, first->counts, (size_t)layers * k->n * sizeof(int32_t));
    }
    if (failed) {
        printf("case %u FAIL %s\n", index, failure);
    } else {
        printf("case %u ran", index);
        for (int config = 0; config < CONFIGS; ++config)
            printf(" %s", statuses[config] == TTFS_OK ? "OK" : ttfs_status_name(statuses[config]));
        printf(" hash=%016llx\n", (unsigned long long)hash);
    }
    for (int config = 0; config < CONFIGS; ++config) free_results(&results[config]);
    free(sizes);
    if (ttfs_model_free(model) != TTFS_OK) printf("case %u FAIL model_free failed\n", index);
}

int main(int argc, char** argv) {
    const char* path = NULL;
    uint32_t first = 0;
    int backend = TTFS_BACKEND_CPU;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
            ++i;
            if (strcmp(argv[i], "cuda") == 0) backend = TTFS_BACKEND_CUDA;
            else if (strcmp(argv[i], "cpu") != 0) path = NULL, argc = 0;
        } else if (path == NULL) {
            path = argv[i];
        } else {
            first = (uint32_t)strtoul(argv[i], NULL, 10);
        }
    }
    if (path == NULL) {
        fprintf(stderr, "usage: fuzz_runner CASES [FIRST] [--backend cpu|cuda]  (CASES: written by "
                        "tests/fuzz_models.py)\n");
        return 2;
    }
    size_t size = 0;
    uint8_t* data = read_all(path, &size);
    if (data == NULL || size < 12 || memcmp(data, "TTFSFUZ1", 8) != 0) {
        fprintf(stderr, "fuzz_runner: cannot read a cases file from %s\n", path);
        free(data);
        return 2;
    }
    Reader reader = {data, size, 8, 0};
    const uint32_t count = (uint32_t)take_u(&reader, 4);
    for (uint32_t index = 0; index < count; ++index) {
        Case k;
        if (!next_case(&reader, &k)) {
            fprintf(stderr, "fuzz_runner: case %u is cut short in %s\n", index, path);
            free(data);
            return 2;
        }
        if (index < first) continue;
        run_case(index, &k, backend);
        fflush(stdout);
    }
    printf("done %u cases\n", count);
    free(data);
    return 0;
}
