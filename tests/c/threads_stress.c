/* threads_stress — the concurrency tests/test_threads.py exercises, from plain C with pthreads,
 * so that ThreadSanitizer sees every thread (tests/test_sanitizers.py runs it in a TSan build).
 *
 *   usage: threads_stress MODEL [ROUNDS]
 *
 * MODEL is any model whose input the program fills with its own pixel patterns (the tiny model
 * of tests/conftest.py is used). What runs at the same time:
 *   1. several threads, each with its own sessions (stepped and analytic, two CPU worker
 *      threads each) on one shared model, comparing every run with a single-threaded reference;
 *   2. two threads on one session: each call succeeds with the reference's answer or is refused
 *      with TTFS_ERR_BUSY;
 *   3. a free racing a run: refused with TTFS_ERR_BUSY while the run is in progress, after which
 *      the runner's next call finds TTFS_ERR_INVALID_HANDLE;
 *   4. loads, queries and frees of models and sessions racing each other and calls on stale
 *      handles (which must be refused, whatever was created since).
 * Prints "threads_stress: ok (N runs)" and exits 0, or names the failure and exits 1.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttfs.h"

#define WORKERS 4
#define BATCH 8

static const char* model_path;
static int rounds = 20;
static size_t pixels;  /* h * w * c */
static int32_t classes;
static float* images;  /* BATCH images */
static float* expected_potentials[2];  /* per engine */
static int32_t* expected_predictions[2];
static atomic_int failures;
static atomic_long runs;

#define FAIL(...)                                              \
    do {                                                       \
        fprintf(stderr, "threads_stress: " __VA_ARGS__);       \
        fprintf(stderr, " (last error: %s)\n", ttfs_last_error()); \
        atomic_fetch_add(&failures, 1);                        \
    } while (0)

static const int kEngines[2] = {TTFS_ENGINE_STEPPED, TTFS_ENGINE_ANALYTIC};

static int run_once(ttfs_session* session, int engine_index, ttfs_status* status_out) {
    int32_t predictions[BATCH];
    float* potentials = malloc((size_t)BATCH * (size_t)classes * sizeof(float));
    if (potentials == NULL) return 0;
    const ttfs_status status = ttfs_session_run_f32(session, images, (size_t)BATCH * pixels, BATCH, predictions,
                                                    BATCH, potentials, (size_t)BATCH * (size_t)classes);
    *status_out = status;
    int same = 1;
    if (status == TTFS_OK) {
        atomic_fetch_add(&runs, 1);
        same = memcmp(predictions, expected_predictions[engine_index], sizeof predictions) == 0 &&
               memcmp(potentials, expected_potentials[engine_index], (size_t)BATCH * classes * sizeof(float)) == 0;
    }
    free(potentials);
    return same;
}

static ttfs_session* make_session(const ttfs_model* model, int engine_index, int32_t threads) {
    ttfs_session* session = NULL;
    if (ttfs_session_create(model, TTFS_BACKEND_CPU, kEngines[engine_index], BATCH, TTFS_SESSION_RECORD_SPIKE_TIMES,
                            &session) != TTFS_OK) {
        FAIL("session_create failed");
        return NULL;
    }
    if (ttfs_session_set_threads(session, threads) != TTFS_OK) FAIL("set_threads failed");
    return session;
}

/* 1. Own sessions on a shared model. */
static void* own_sessions(void* arg) {
    const ttfs_model* model = arg;
    for (int round = 0; round < rounds; ++round) {
        const int engine = round % 2;
        ttfs_session* session = make_session(model, engine, 2);
        if (session == NULL) return NULL;
        ttfs_status status;
        for (int k = 0; k < 3; ++k)
            if (!run_once(session, engine, &status) || status != TTFS_OK) FAIL("own session: wrong result or %s",
                                                                              ttfs_status_name(status));
        if (ttfs_session_free(session) != TTFS_OK) FAIL("own session: free failed");
    }
    return NULL;
}

/* 2. Two threads on one session. */
static void* shared_session(void* arg) {
    ttfs_session* session = arg;
    for (int round = 0; round < rounds * 2; ++round) {
        ttfs_status status;
        if (!run_once(session, 1, &status)) FAIL("shared session: wrong result");
        if (status != TTFS_OK && status != TTFS_ERR_BUSY) FAIL("shared session: %s", ttfs_status_name(status));
        int32_t n = 0;
        status = ttfs_session_last_batch_size(session, &n);
        if (status != TTFS_OK && status != TTFS_ERR_BUSY) FAIL("shared session query: %s", ttfs_status_name(status));
    }
    return NULL;
}

/* 3. A run racing its session's free. */
typedef struct {
    ttfs_session* session;
    atomic_int started;
    atomic_int last_status;
} Race;

static void* runner(void* arg) {
    Race* race = arg;
    for (;;) {
        ttfs_status status;
        const int same = run_once(race->session, 0, &status);
        atomic_store(&race->started, 1);
        if (status != TTFS_OK) {
            atomic_store(&race->last_status, status);
            return NULL;
        }
        if (!same) FAIL("racing run: wrong result");
    }
}

/* 4. Handle churn and stale handles. */
static void* churn(void* arg) {
    (void)arg;
    ttfs_model* stale_models[4] = {NULL, NULL, NULL, NULL};
    ttfs_session* stale_sessions[4] = {NULL, NULL, NULL, NULL};
    for (int round = 0; round < rounds * 3; ++round) {
        ttfs_model* model = NULL;
        if (ttfs_model_load_file(model_path, &model) != TTFS_OK) {
            FAIL("churn: load failed");
            return NULL;
        }
        ttfs_session* session = NULL;
        if (ttfs_session_create(model, TTFS_BACKEND_CPU, kEngines[round % 2], 1, 0, &session) != TTFS_OK)
            FAIL("churn: session_create failed");
        int32_t count = 0;
        for (int k = 0; k < 4; ++k) {
            if (stale_models[k] != NULL && ttfs_model_layer_count(stale_models[k], &count) != TTFS_ERR_INVALID_HANDLE)
                FAIL("churn: a stale model handle was accepted");
            if (stale_sessions[k] != NULL && ttfs_session_free(stale_sessions[k]) != TTFS_ERR_INVALID_HANDLE)
                FAIL("churn: a stale session handle was accepted");
        }
        if (ttfs_model_layer_count(model, &count) != TTFS_OK) FAIL("churn: query failed");
        if (ttfs_session_free(session) != TTFS_OK) FAIL("churn: session free failed");
        if (ttfs_model_free(model) != TTFS_OK) FAIL("churn: model free failed");
        stale_models[round % 4] = model;
        stale_sessions[round % 4] = session;
    }
    return NULL;
}

int main(int argc, char** argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: threads_stress MODEL [ROUNDS]\n");
        return 2;
    }
    model_path = argv[1];
    if (argc == 3) rounds = atoi(argv[2]);
    ttfs_model* model = NULL;
    if (ttfs_model_load_file(model_path, &model) != TTFS_OK) {
        fprintf(stderr, "threads_stress: cannot load %s: %s\n", model_path, ttfs_last_error());
        return 2;
    }
    int32_t shape[3];
    ttfs_model_input_shape(model, shape);
    ttfs_model_num_classes(model, &classes);
    pixels = (size_t)shape[0] * shape[1] * shape[2];
    images = malloc((size_t)BATCH * pixels * sizeof(float));
    for (size_t i = 0; i < (size_t)BATCH * pixels; ++i) images[i] = (float)((i * 37 + i / pixels * 11) % 256) / 255.0f;

    /* References, single-threaded. */
    for (int engine = 0; engine < 2; ++engine) {
        expected_predictions[engine] = malloc(BATCH * sizeof(int32_t));
        expected_potentials[engine] = malloc((size_t)BATCH * classes * sizeof(float));
        ttfs_session* session = make_session(model, engine, 1);
        if (session == NULL ||
            ttfs_session_run_f32(session, images, (size_t)BATCH * pixels, BATCH, expected_predictions[engine], BATCH,
                                 expected_potentials[engine], (size_t)BATCH * classes) != TTFS_OK) {
            fprintf(stderr, "threads_stress: the reference run failed: %s\n", ttfs_last_error());
            return 1;
        }
        ttfs_session_free(session);
    }

    pthread_t threads[WORKERS + 3];
    ttfs_session* shared = make_session(model, 1, 2);
    Race race = {make_session(model, 0, 1), 0, TTFS_OK};
    for (int i = 0; i < WORKERS; ++i) pthread_create(&threads[i], NULL, own_sessions, model);
    pthread_create(&threads[WORKERS], NULL, shared_session, shared);
    pthread_create(&threads[WORKERS + 1], NULL, shared_session, shared);
    pthread_create(&threads[WORKERS + 2], NULL, churn, NULL);
    pthread_t racing;
    pthread_create(&racing, NULL, runner, &race);
    while (!atomic_load(&race.started)) {
    }
    for (;;) {
        const ttfs_status status = ttfs_session_free(race.session);
        if (status == TTFS_OK) break;
        if (status != TTFS_ERR_BUSY) {
            FAIL("free during a run: %s", ttfs_status_name(status));
            break;
        }
    }
    pthread_join(racing, NULL);
    if (atomic_load(&race.last_status) != TTFS_ERR_INVALID_HANDLE)
        FAIL("the runner ended with %s, expected TTFS_ERR_INVALID_HANDLE", ttfs_status_name(atomic_load(&race.last_status)));
    for (int i = 0; i < WORKERS + 3; ++i) pthread_join(threads[i], NULL);
    if (ttfs_session_free(shared) != TTFS_OK) FAIL("shared session free failed");
    /* The model may go before its sessions; here it goes last. */
    if (ttfs_model_free(model) != TTFS_OK) FAIL("model free failed");
    for (int engine = 0; engine < 2; ++engine) {
        free(expected_predictions[engine]);
        free(expected_potentials[engine]);
    }
    free(images);
    if (atomic_load(&failures) != 0) {
        fprintf(stderr, "threads_stress: %d failures\n", atomic_load(&failures));
        return 1;
    }
    printf("threads_stress: ok (%ld runs)\n", atomic_load(&runs));
    return 0;
}
