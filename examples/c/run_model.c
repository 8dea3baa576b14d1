/* run_model.c: load a .ttfs model, run one image, print the prediction and spike counts.
 *
 *   cc run_model.c -Iinclude -Lbuild -lttfs -Wl,-rpath,$PWD/build -o run_model
 *   ./run_model models/mnist.ttfs models/mnist-test-0.bin
 *
 * IMAGE is a raw little-endian float32 file of h*w*c values in HWC order, scaled to [0, 1]. */
#include <stdio.h>
#include <stdlib.h>
#include "ttfs.h"

#define CHECK(call) do { ttfs_status s_ = (call); if (s_ != TTFS_OK) { \
    fprintf(stderr, "%s: %s\n", ttfs_status_name(s_), ttfs_last_error()); goto done; } } while (0)

int main(int argc, char** argv) {
    ttfs_model* model = NULL;
    ttfs_session* session = NULL;
    float* image = NULL;
    float* potentials = NULL;
    int32_t shape[3], classes, layers, prediction, count;
    int status = 1;
    if (argc != 3) {
        fprintf(stderr, "usage: run_model MODEL IMAGE.bin\n");
        return 2;
    }
    CHECK(ttfs_model_load_file(argv[1], &model));
    CHECK(ttfs_model_input_shape(model, shape));
    CHECK(ttfs_model_num_classes(model, &classes));
    CHECK(ttfs_model_layer_count(model, &layers));

    /* The image: exactly h*w*c float32 values. */
    size_t values = (size_t)shape[0] * shape[1] * shape[2];
    image = malloc(values * sizeof *image);
    potentials = malloc((size_t)classes * sizeof *potentials);
    FILE* file = fopen(argv[2], "rb");
    if (!image || !potentials || !file || fread(image, sizeof *image, values, file) != values ||
        fgetc(file) != EOF) {
        fprintf(stderr, "%s: expected %zu float32 values (%dx%dx%d)\n", argv[2], values,
                shape[0], shape[1], shape[2]);
        if (file) fclose(file);
        goto done;
    }
    fclose(file);

    /* One image per run; spike counts are always recorded, spike times need a flag. */
    CHECK(ttfs_session_create(model, TTFS_BACKEND_AUTO, TTFS_ENGINE_ANALYTIC, 1, 0, &session));
    CHECK(ttfs_session_run_f32(session, image, values, 1, &prediction, 1, potentials,
                               (size_t)classes));
    printf("prediction: %d\n", prediction);
    printf("potentials:");
    for (int32_t k = 0; k < classes; ++k) printf(" %.9g", potentials[k]);
    printf("\n");
    for (int32_t l = 0; l < layers; ++l) {
        ttfs_layer_info info = {0};
        info.struct_size = sizeof info;
        CHECK(ttfs_model_layer_info(model, l, &info));
        if (info.kind != TTFS_LAYER_INPUT && info.kind != TTFS_LAYER_CONV2D &&
            info.kind != TTFS_LAYER_DENSE)
            continue; /* maxpool and flatten have no neurons */
        CHECK(ttfs_session_spike_counts(session, l, &count, 1));
        printf("spikes %s: %d\n", info.name, count);
    }
    status = 0;
done:
    ttfs_session_free(session); /* NULL is a no-op */
    ttfs_model_free(model);
    free(image);
    free(potentials);
    return status;
}
