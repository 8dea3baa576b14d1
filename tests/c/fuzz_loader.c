/* fuzz_loader — a mutation fuzz loop over the model loader, through the public C ABI only.
 *
 *   usage: fuzz_loader MODEL ITERATIONS SEED
 *
 * MODEL is a valid .ttfs file (tests/corrupt/valid.ttfs). Each iteration copies it, applies one
 * to four mutations (bit flips; bytes set to 0x00/0xFF/0x7F/0x80; u32/u64 fields of the header,
 * a layer record or a tensor record set to boundary values; float32 weights set to NaN/Inf;
 * truncation; extension; chunk duplication), re-fixes file_size and the CRC about half the time
 * so the mutation reaches the checks behind them, and calls ttfs_model_load_memory. A model that
 * loads is queried (every layer's info, shapes, metadata) and, when small enough, run once on a
 * zero image on the CPU (analytic engine, or stepped where the windows overlap).
 *
 * The loader must never crash, hang or leak (run it under AddressSanitizer for the last one)
 * and must be consistent. Exit status: 0 when every call was consistent, 1 on an inconsistency
 * (TTFS_OK without a model, a failure that wrote *out, a failure with an empty message, an
 * unknown status), 2 on bad usage or an unreadable MODEL. The last line is a summary:
 *
 *   fuzz: 20000 files, 312 loaded (301 ran), rejected by status: TTFS_ERR_BAD_CRC 9000, ...
 *
 * Field offsets below are docs/FORMAT.md's; this file includes nothing but ttfs.h, like any
 * C user of the library.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttfs.h"

/* docs/FORMAT.md, format_version 1. */
enum {
    HEADER_SIZE = 128,
    LAYER_RECORD = 128,
    TENSOR_RECORD = 64,
    H_FILE_SIZE = 16,
    H_LAYER_COUNT = 24,
    H_TENSOR_COUNT = 40,
    H_TENSOR_TABLE = 48,
    T_DATA_OFFSET = 40,
    T_DATA_SIZE = 48,
    MAX_STATUS = 128,
    /* A loaded model is run only below this much work (neurons x time steps for the stepped
     * engine), so a mutated time_steps of 2^20 cannot stall the loop. */
    MAX_RUN_NEURONS = 1 << 20,
};
static const uint64_t MAX_STEPPED_WORK = 20000000u;

static const uint32_t header_u32_fields[] = {8, 12, 24, 28, 40, 44, 72, 76, 80};
static const uint32_t header_u64_fields[] = {16, 32, 48, 56, 64};
static const uint32_t tensor_u32_fields[] = {0, 4};
static const uint32_t tensor_u64_fields[] = {8, 16, 24, 32, 40, 48, 56};

static const uint32_t u32_boundaries[] = {
    0u, 1u, 2u, 3u, 4u, 5u, 6u, 63u, 64u, 65u, 127u, 128u, 129u, 399u, 400u, 401u, 1024u, 1025u,
    2048u, 2049u, 1048576u, 1048577u, 268435456u, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu, 0xFFFFFFFEu,
    0x7FC00000u /* NaN */, 0x7F800000u /* +Inf */, 0xFF800000u /* -Inf */, 0xBF800000u /* -1.0f */,
    0x80000000u /* -0.0f */, 0x3F800000u /* 1.0f */, 0x00000001u /* denormal */};

static uint64_t rng_state;

/* splitmix64: small, fast, and the same sequence on every platform for a given SEED. */
static uint64_t next_random(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t bound) { return bound ? next_random() % bound : 0; }

static uint32_t crc_table[256];

static void init_crc32(void) {
    for (uint32_t n = 0; n < 256; ++n) {
        uint32_t c = n;
        for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

/* zlib's CRC-32, as the format uses. */
static uint32_t crc32_of(const uint8_t* data, size_t size) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < size; ++i) crc = crc_table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

static uint64_t get_le(const uint8_t* data, size_t size, size_t offset, unsigned bytes) {
    uint64_t value = 0;
    if (offset > size || bytes > size - offset) return 0;
    for (unsigned i = 0; i < bytes; ++i) value |= (uint64_t)data[offset + i] << (8 * i);
    return value;
}

static void put_le(uint8_t* data, size_t size, size_t offset, uint64_t value, unsigned bytes) {
    if (offset > size || bytes > size - offset) return;
    for (unsigned i = 0; i < bytes; ++i) data[offset + i] = (uint8_t)(value >> (8 * i));
}

/* Where the fields of the seed model lie (read from the seed itself). */
typedef struct {
    size_t size;
    uint32_t layer_count, tensor_count;
    uint64_t tensor_table;
    uint64_t data_begin, data_end; /* the span of all tensor data */
} Layout;

typedef struct {
    uint8_t* bytes;
    size_t size, capacity;
} Buffer;

static int reserve(Buffer* buffer, size_t size) {
    if (size <= buffer->capacity) return 1;
    uint8_t* grown = realloc(buffer->bytes, size);
    if (grown == NULL) return 0;
    buffer->bytes = grown;
    buffer->capacity = size;
    return 1;
}

static uint64_t u64_boundary(const Buffer* file, uint64_t original) {
    const uint64_t size = file->size;
    const uint64_t values[] = {0u, 1u, 63u, 64u, 65u, 128u, size, size - 4, size + 64, original + 1,
                               original - 1, original + 64, original - 64, 1ull << 32, (1ull << 32) + 1,
                               1ull << 40, 1ull << 63, UINT64_MAX, UINT64_MAX - 63, 0xFFFFFFFFull};
    return values[below(sizeof values / sizeof values[0])];
}

static uint32_t u32_boundary(uint32_t original) {
    const uint64_t pick = below(sizeof u32_boundaries / sizeof u32_boundaries[0] + 2);
    if (pick == sizeof u32_boundaries / sizeof u32_boundaries[0]) return original + 1;
    if (pick == sizeof u32_boundaries / sizeof u32_boundaries[0] + 1) return original - 1;
    return u32_boundaries[pick];
}

/* One mutation of `file`; returns its name for the optional trace. */
static const char* mutate(Buffer* file, const Layout* seed) {
    static const uint8_t special_bytes[] = {0x00, 0xFF, 0x7F, 0x80};
    const uint64_t kind = below(10);
    if (file->size == 0 && kind != 7) return "nothing (empty)";
    switch (kind) {
        case 0: { /* flip one bit */
            file->bytes[below(file->size)] ^= (uint8_t)(1u << below(8));
            return "bit flip";
        }
        case 1: { /* a special byte, anywhere */
            file->bytes[below(file->size)] = special_bytes[below(4)];
            return "byte overwrite";
        }
        case 2: { /* a header field */
            if (below(2)) {
                const uint32_t at = header_u32_fields[below(sizeof header_u32_fields / sizeof header_u32_fields[0])];
                put_le(file->bytes, file->size, at, u32_boundary((uint32_t)get_le(file->bytes, file->size, at, 4)), 4);
            } else {
                const uint32_t at = header_u64_fields[below(sizeof header_u64_fields / sizeof header_u64_fields[0])];
                put_le(file->bytes, file->size, at, u64_boundary(file, get_le(file->bytes, file->size, at, 8)), 8);
            }
            return "header field";
        }
        case 3:
        case 4: { /* a layer record field: every field after the name is 4 bytes wide */
            const uint64_t at = HEADER_SIZE + LAYER_RECORD * below(seed->layer_count) + 32 + 4 * below(24);
            put_le(file->bytes, file->size, (size_t)at,
                   u32_boundary((uint32_t)get_le(file->bytes, file->size, (size_t)at, 4)), 4);
            return "layer field";
        }
        case 5: { /* a tensor record field */
            if (seed->tensor_count == 0) return "no tensor";
            const uint64_t base = seed->tensor_table + TENSOR_RECORD * below(seed->tensor_count);
            if (below(3) == 0) {
                const uint64_t at = base + tensor_u32_fields[below(2)];
                put_le(file->bytes, file->size, (size_t)at,
                       u32_boundary((uint32_t)get_le(file->bytes, file->size, (size_t)at, 4)), 4);
            } else {
                const uint64_t at = base + tensor_u64_fields[below(sizeof tensor_u64_fields / sizeof tensor_u64_fields[0])];
                put_le(file->bytes, file->size, (size_t)at,
                       u64_boundary(file, get_le(file->bytes, file->size, (size_t)at, 8)), 8);
            }
            return "tensor field";
        }
        case 6: { /* a weight: NaN, Inf or a harmless new value */
            if (seed->data_end <= seed->data_begin) return "no tensor data";
            const uint64_t at = seed->data_begin + 4 * below((seed->data_end - seed->data_begin) / 4);
            put_le(file->bytes, file->size, (size_t)at, u32_boundaries[below(sizeof u32_boundaries / sizeof u32_boundaries[0])], 4);
            return "tensor value";
        }
        case 7: { /* extend by 1 .. 128 bytes, zeros or random */
            const size_t extra = 1 + (size_t)below(128);
            if (!reserve(file, file->size + extra)) return "extension (no memory)";
            const int random_fill = (int)below(2);
            for (size_t i = 0; i < extra; ++i) file->bytes[file->size + i] = random_fill ? (uint8_t)next_random() : 0;
            file->size += extra;
            return "extension";
        }
        case 8: { /* truncate: anywhere, or by a few bytes */
            file->size = below(2) ? (size_t)below(file->size) : file->size - (size_t)below(file->size < 8 ? file->size : 8);
            return "truncation";
        }
        default: { /* duplicate a chunk: copy over another place, or insert a copy */
            const size_t length = 1 + (size_t)below(file->size < 256 ? file->size : 256);
            const size_t from = (size_t)below(file->size - length + 1);
            if (below(2)) {
                const size_t to = (size_t)below(file->size - length + 1);
                memmove(file->bytes + to, file->bytes + from, length);
                return "chunk copy";
            }
            if (!reserve(file, file->size + length)) return "chunk insert (no memory)";
            const size_t to = (size_t)below(file->size + 1);
            for (size_t i = file->size; i > to; --i) file->bytes[i - 1 + length] = file->bytes[i - 1];
            /* The source may have moved if it lay after the insertion point. */
            memmove(file->bytes + to, file->bytes + (from >= to ? from + length : from), length);
            file->size += length;
            return "chunk insert";
        }
    }
}

static int inconsistencies = 0;

static void report(long iteration, const char* what) {
    ++inconsistencies;
    fprintf(stderr, "fuzz: iteration %ld: INCONSISTENT: %s\n", iteration, what);
}

/* Query everything a loaded model offers, and run it once when it is small. Returns 1 if it ran. */
static int exercise(long iteration, ttfs_model* model) {
    int32_t count = 0, shape[3] = {0, 0, 0}, classes = 0, steps = 0, readout = -1;
    float divisor = 0;
    const char* metadata = NULL;
    if (ttfs_model_layer_count(model, &count) != TTFS_OK || count < 2) {
        report(iteration, "a loaded model has no usable layer count");
        return 0;
    }
    uint64_t neurons = 0;
    for (int32_t i = 0; i < count; ++i) {
        ttfs_layer_info info;
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        if (ttfs_model_layer_info(model, i, &info) != TTFS_OK || info.name == NULL) {
            report(iteration, "ttfs_model_layer_info failed on a loaded model");
            return 0;
        }
        if (info.shape[0] < 1 || info.shape[1] < 1 || info.shape[2] < 1) report(iteration, "a layer with an empty shape loaded");
        neurons += (uint64_t)info.shape[0] * (uint64_t)info.shape[1] * (uint64_t)info.shape[2];
    }
    ttfs_layer_info beyond;
    beyond.struct_size = sizeof beyond;
    if (ttfs_model_layer_info(model, count, &beyond) == TTFS_OK) report(iteration, "layer_info accepted index == count");
    if (ttfs_model_input_shape(model, shape) != TTFS_OK || ttfs_model_num_classes(model, &classes) != TTFS_OK ||
        ttfs_model_time_steps(model, &steps) != TTFS_OK || ttfs_model_readout(model, &readout) != TTFS_OK ||
        ttfs_model_input_divisor(model, &divisor) != TTFS_OK || ttfs_model_metadata(model, &metadata) != TTFS_OK ||
        metadata == NULL) {
        report(iteration, "a model query failed on a loaded model");
        return 0;
    }
    if (!(divisor > 0) || classes < 1 || steps < 1 || (readout != TTFS_READOUT_VMEM && readout != TTFS_READOUT_FIRST_SPIKE))
        report(iteration, "a loaded model reports an impossible divisor, class count, time_steps or readout");
    if (neurons > MAX_RUN_NEURONS) return 0;

    ttfs_session* session = NULL;
    int32_t engine = TTFS_ENGINE_ANALYTIC;
    ttfs_status status = ttfs_session_create(model, TTFS_BACKEND_CPU, engine, 1, TTFS_SESSION_RECORD_SPIKE_TIMES, &session);
    if (status == TTFS_ERR_UNSUPPORTED && neurons * (uint64_t)steps <= MAX_STEPPED_WORK) {
        engine = TTFS_ENGINE_STEPPED;
        status = ttfs_session_create(model, TTFS_BACKEND_CPU, engine, 1, TTFS_SESSION_RECORD_SPIKE_TIMES, &session);
    }
    if (status != TTFS_OK) {
        if (ttfs_last_error()[0] == '\0') report(iteration, "ttfs_session_create failed without a message");
        return 0;
    }
    ttfs_session_set_threads(session, 1);
    const size_t pixels = (size_t)shape[0] * (size_t)shape[1] * (size_t)shape[2];
    float* image = calloc(pixels, sizeof *image);
    float* potentials = calloc((size_t)classes, sizeof *potentials);
    int32_t prediction = -1;
    int ran = 0;
    if (image != NULL && potentials != NULL) {
        status = ttfs_session_run_f32(session, image, pixels, 1, &prediction, 1, potentials, (size_t)classes);
        if (status == TTFS_OK) {
            ran = 1;
            if (prediction < 0 || prediction >= classes) report(iteration, "a run predicted a class out of range");
            /* (A zero image can make input spikes: a denormal vth0 underflows the threshold to 0.) */
            int32_t spikes = -1;
            if (ttfs_session_spike_counts(session, 0, &spikes, 1) != TTFS_OK || spikes < 0)
                report(iteration, "spike_counts failed after a successful run");
        } else if (ttfs_last_error()[0] == '\0') {
            report(iteration, "ttfs_session_run_f32 failed without a message");
        }
    }
    free(image);
    free(potentials);
    if (ttfs_session_free(session) != TTFS_OK) report(iteration, "ttfs_session_free failed");
    return ran;
}

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL ITERATIONS SEED\n", argv[0]);
        return 2;
    }
    const long iterations = strtol(argv[2], NULL, 10);
    rng_state = strtoull(argv[3], NULL, 10);
    init_crc32();

    FILE* stream = fopen(argv[1], "rb");
    if (stream == NULL) {
        fprintf(stderr, "fuzz: cannot open %s\n", argv[1]);
        return 2;
    }
    Buffer seed = {NULL, 0, 0};
    uint8_t chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, stream)) > 0) {
        if (!reserve(&seed, seed.size + got)) return 2;
        memcpy(seed.bytes + seed.size, chunk, got);
        seed.size += got;
    }
    fclose(stream);

    ttfs_model* model = NULL;
    if (ttfs_model_load_memory(seed.bytes, seed.size, &model) != TTFS_OK) {
        fprintf(stderr, "fuzz: the seed model %s does not load: %s\n", argv[1], ttfs_last_error());
        return 2;
    }
    ttfs_model_free(model);

    Layout layout;
    layout.size = seed.size;
    layout.layer_count = (uint32_t)get_le(seed.bytes, seed.size, H_LAYER_COUNT, 4);
    layout.tensor_count = (uint32_t)get_le(seed.bytes, seed.size, H_TENSOR_COUNT, 4);
    layout.tensor_table = get_le(seed.bytes, seed.size, H_TENSOR_TABLE, 8);
    layout.data_begin = layout.data_end = 0;
    if (layout.tensor_count > 0) {
        layout.data_begin = get_le(seed.bytes, seed.size, (size_t)(layout.tensor_table + T_DATA_OFFSET), 8);
        const uint64_t last = layout.tensor_table + TENSOR_RECORD * (uint64_t)(layout.tensor_count - 1);
        layout.data_end = get_le(seed.bytes, seed.size, (size_t)(last + T_DATA_OFFSET), 8) +
                          get_le(seed.bytes, seed.size, (size_t)(last + T_DATA_SIZE), 8);
    }

    long loaded = 0, loaded_unchanged = 0, ran = 0, by_status[MAX_STATUS] = {0};
    Buffer file = {NULL, 0, 0};
    /* Sentinel: a failed load must leave *out as it was. */
    static int sentinel_storage;
    ttfs_model* const sentinel = (ttfs_model*)(void*)&sentinel_storage;
    for (long iteration = 0; iteration < iterations; ++iteration) {
        if (!reserve(&file, seed.size)) return 2;
        memcpy(file.bytes, seed.bytes, seed.size);
        file.size = seed.size;
        const int mutations = 1 + (int)below(4);
        for (int m = 0; m < mutations; ++m) mutate(&file, &layout);
        if (below(2) && file.size >= 128 + 4) {
            /* Re-fix what a careless writer would: file_size (sometimes) and the CRC. */
            if (below(2)) put_le(file.bytes, file.size, H_FILE_SIZE, file.size, 8);
            put_le(file.bytes, file.size, file.size - 4, crc32_of(file.bytes, file.size - 4), 4);
        }

        model = sentinel;
        const ttfs_status status = ttfs_model_load_memory(file.bytes, file.size, &model);
        if (status == TTFS_OK) {
            if (model == NULL || model == sentinel) {
                report(iteration, "TTFS_OK but no model was written");
                continue;
            }
            if (file.size == seed.size && memcmp(file.bytes, seed.bytes, seed.size) == 0)
                ++loaded_unchanged;
            else
                ++loaded;
            ran += exercise(iteration, model);
            if (ttfs_model_free(model) != TTFS_OK) report(iteration, "ttfs_model_free failed on a loaded model");
            continue;
        }
        if (model != sentinel) report(iteration, "a failed load wrote *out");
        if (ttfs_last_error()[0] == '\0') report(iteration, "a failed load left an empty message");
        if (strcmp(ttfs_status_name(status), "unknown status") == 0 || (int)status < 0 || (int)status >= MAX_STATUS) {
            report(iteration, "a failed load returned an unknown status");
            continue;
        }
        ++by_status[status];
    }

    printf("fuzz: %ld files, %ld loaded (%ld ran, %ld mutations left the file unchanged), rejected by status:",
           iterations, loaded, ran, loaded_unchanged);
    const char* separator = " ";
    for (int s = 0; s < MAX_STATUS; ++s)
        if (by_status[s] > 0) {
            printf("%s%s %ld", separator, ttfs_status_name(s), by_status[s]);
            separator = ", ";
        }
    printf("; %d inconsistencies\n", inconsistencies);
    free(seed.bytes);
    free(file.bytes);
    return inconsistencies ? 1 : 0;
}
