"""export/convert.py on a tiny hand-made network whose fused and normalised weights are written
out by hand below, plus the reference CNN against Keras's own inference."""

import numpy as np
import pytest

from export.convert import (AnnLayer, ann_forward, collect_statistics, fuse_batch_norm, normalise,
                            to_model_spec)

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

# The tiny network: input 4x4x1 -> conv 2x2, 2 filters, VALID, bias -> BN -> ReLU (3x3x2)
# -> maxpool 2x2 (1x1x2) -> flatten (2) -> dense 2x3 (logits).
CONV_KERNEL = np.zeros((2, 2, 1, 2), dtype=np.float32)
CONV_KERNEL[:, :, 0, 0] = [[1.0, 2.0], [3.0, 4.0]]
CONV_KERNEL[:, :, 0, 1] = [[-1.0, 0.0], [0.0, 1.0]]
CONV_BIAS = np.array([0.5, 0.0], dtype=np.float32)
# BN chosen so that inv = gamma / sqrt(var + 1e-3) = [1.5, 1.0]: var + eps = [4, 0.25].
GAMMA = np.array([3.0, 0.5], dtype=np.float32)
BETA = np.array([1.0, -1.0], dtype=np.float32)
MEAN = np.array([0.5, -2.0], dtype=np.float32)
VARIANCE = np.array([3.999, 0.249], dtype=np.float32)
DENSE_KERNEL = np.array([[1.0, -1.0, 0.5], [2.0, 0.0, -1.0]], dtype=np.float32)
DENSE_BIAS = np.array([0.1, 0.2, 0.3], dtype=np.float32)

# By hand: W_f = W * inv per output channel; b_f = (b - mean) * inv + beta.
#   channel 0: inv 1.5, W_f = 1.5 * [[1, 2], [3, 4]], b_f = (0.5 - 0.5) * 1.5 + 1 = 1.0
#   channel 1: inv 1.0, W_f = [[-1, 0], [0, 1]],     b_f = (0 + 2) * 1.0 - 1 = 1.0
FUSED_KERNEL_0 = [[1.5, 3.0], [4.5, 6.0]]
FUSED_KERNEL_1 = [[-1.0, 0.0], [0.0, 1.0]]
FUSED_BIAS = [1.0, 1.0]


def tiny_keras_model():
    model = keras.Sequential([
        keras.Input((4, 4, 1), name="input"),
        keras.layers.Conv2D(2, (2, 2), name="conv1"),
        keras.layers.BatchNormalization(epsilon=1e-3, name="bn1"),
        keras.layers.ReLU(name="relu1"),
        keras.layers.MaxPooling2D((2, 2), name="pool1"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dropout(0.5, name="dropout"),
        keras.layers.Dense(3, name="fc1"),
    ], name="tiny")
    model.get_layer("conv1").set_weights([CONV_KERNEL, CONV_BIAS])
    model.get_layer("bn1").set_weights([GAMMA, BETA, MEAN, VARIANCE])
    model.get_layer("fc1").set_weights([DENSE_KERNEL, DENSE_BIAS])
    return model


def tiny_images(count, seed=0):
    return np.random.default_rng(seed).random((count, 4, 4, 1), dtype=np.float32)


def test_fuse_batch_norm_by_hand():
    layers = fuse_batch_norm(tiny_keras_model())
    assert [(layer.kind, layer.name) for layer in layers] == [
        ("conv2d", "conv1"), ("maxpool", "pool1"), ("flatten", "flatten"), ("dense", "fc1")]
    conv, pool, _, fc = layers
    assert conv.weights.dtype == np.float32 and conv.weights.shape == (2, 2, 1, 2)
    np.testing.assert_allclose(conv.weights[:, :, 0, 0], FUSED_KERNEL_0, rtol=1e-6)
    np.testing.assert_allclose(conv.weights[:, :, 0, 1], FUSED_KERNEL_1, rtol=1e-6)
    np.testing.assert_allclose(conv.bias, FUSED_BIAS, rtol=1e-6)
    assert conv.relu and conv.kernel == (2, 2) and conv.stride == (1, 1)
    assert conv.padding == "valid"
    # The BN is kept for the reference time-constant rule.
    assert conv.bn["name"] == "bn1" and conv.bn["epsilon"] == pytest.approx(1e-3)
    for key, value in (("gamma", GAMMA), ("beta", BETA), ("moving_mean", MEAN),
                       ("moving_variance", VARIANCE)):
        assert np.array_equal(conv.bn[key], value), key
    assert pool.kernel == (2, 2) and pool.stride == (2, 2)
    # No BN on the dense layer: weights unchanged, no ReLU.
    assert fc.bn is None and not fc.relu
    assert np.array_equal(fc.weights, DENSE_KERNEL) and np.array_equal(fc.bias, DENSE_BIAS)


def test_ann_forward_of_fused_layers_equals_keras_inference():
    model = tiny_keras_model()
    layers = fuse_batch_norm(model)
    images = tiny_images(20)
    activations = ann_forward(layers, images)
    assert sorted(activations) == ["conv1", "fc1", "input"]
    assert activations["conv1"].shape == (20, 3, 3, 2)
    assert np.array_equal(activations["input"], images)
    expected_logits = model(images, training=False).numpy()
    np.testing.assert_allclose(activations["fc1"], expected_logits, atol=1e-5, rtol=1e-5)
    relu = keras.Model(model.inputs[0], model.get_layer("relu1").output)
    np.testing.assert_allclose(activations["conv1"], relu(images, training=False).numpy(),
                               atol=1e-5, rtol=1e-5)
    # record=False: only the output layer, and uint8 input means byte / 255.
    logits = ann_forward(layers, images, record=False, batch_size=7)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-5, rtol=1e-5)
    bytes_ = (images * 255).astype(np.uint8)
    np.testing.assert_array_equal(
        ann_forward(layers, bytes_, record=False),
        ann_forward(layers, bytes_.astype(np.float32) / np.float32(255), record=False))


def test_ann_forward_by_hand_on_one_image():
    # Image rows [0 1 2 3; 4 5 6 7; 8 9 10 11; 12 13 14 15] / 16; conv1 channel 0 at (0,0):
    # relu(1.5*(0 + 2*1 + 3*4 + 4*5)/16 + 1) = relu(1.5 * 34/16 + 1) = 4.1875;
    # channel 1 at (0,0): relu((-0 + 5)/16 + 1) = 1.3125 (every position: (x[i+1,j+1]-x[i,j])
    # = 5/16, so 1.3125 everywhere). Channel 0 is largest at (2,2): 1.5*(10+2*11+3*14+4*15)/16+1
    # = 1.5*134/16 + 1 = 13.5625, but the 2x2 pool (VALID) only sees rows/cols 0..1:
    # at (1,1): 1.5*(5+2*6+3*9+4*10)/16 + 1 = 1.5*84/16 + 1 = 8.875.
    layers = fuse_batch_norm(tiny_keras_model())
    image = (np.arange(16, dtype=np.float32) / 16).reshape(1, 4, 4, 1)
    activations = ann_forward(layers, image)
    assert activations["conv1"][0, 0, 0, 0] == pytest.approx(4.1875, rel=1e-6)
    assert activations["conv1"][0, 2, 2, 0] == pytest.approx(13.5625, rel=1e-6)
    np.testing.assert_allclose(activations["conv1"][0, :, :, 1], np.full((3, 3), 1.3125), rtol=1e-6)
    # pooled = [8.875, 1.3125]; logits = pooled @ DENSE_KERNEL + DENSE_BIAS
    pooled = np.array([8.875, 1.3125])
    expected = [8.875 + 2 * 1.3125 + 0.1, -8.875 + 0.2, 0.5 * 8.875 - 1.3125 + 0.3]
    np.testing.assert_allclose(activations["fc1"][0], expected, rtol=1e-6)
    assert pooled.shape == (2,)


def test_statistics_match_np_percentile_on_a_few_images():
    model = tiny_keras_model()
    layers = fuse_batch_norm(model)
    images = tiny_images(37, seed=3)
    stats = collect_statistics(layers, images, percentile=99.9, batch_size=5)
    assert stats.image_count == 37 and sorted(stats.lambdas) == ["conv1", "fc1", "input"]

    # Against Keras's own activations, written out with np.percentile (linear).
    relu = keras.Model(model.inputs[0], model.get_layer("relu1").output)
    keras_activations = {"input": images,
                         "conv1": relu(images, training=False).numpy(),
                         "fc1": model(images, training=False).numpy()}
    for name, values in keras_activations.items():
        per_neuron = np.percentile(values, 99.9, axis=0)
        assert stats.percentiles[name].shape == per_neuron.shape
        np.testing.assert_allclose(stats.percentiles[name], per_neuron, rtol=1e-5, atol=1e-6)
        assert stats.lambdas[name] == pytest.approx(per_neuron.max(), rel=1e-5)

    # Bit for bit against np.percentile of the same activations, for several percentiles
    # (the streaming top-k must pick exactly the order statistics numpy interpolates between).
    activations = ann_forward(layers, images)
    for percentile in (99.9, 99.0, 50.0, 12.5, 100.0, 0.0):
        stats = collect_statistics(layers, images, percentile=percentile, batch_size=4)
        for name, values in activations.items():
            expected = np.percentile(values, percentile, axis=0)
            assert np.array_equal(stats.percentiles[name], expected), (name, percentile)
            assert stats.lambdas[name] == float(expected.max())


def test_statistics_hand_checkable_case():
    # 1000 images with one pixel each, holding 1..1000 in shuffled order; a dense layer with
    # weights [1, 2] and ReLU makes neuron activations k and 2k. The 99.9th percentile (linear):
    # virtual index 0.999 * 999 = 998.001 between sorted[998] = 999 and sorted[999] = 1000, so
    # 999.001 for the input and neuron 0, 1998.002 for neuron 1 = lambda of the dense layer.
    values = np.random.default_rng(5).permutation(np.arange(1, 1001)).astype(np.float32)
    images = values.reshape(1000, 1, 1, 1)
    layers = [AnnLayer("flatten", "flatten"),
              AnnLayer("dense", "fc", np.array([[1.0, 2.0]], dtype=np.float32),
                       np.zeros(2, dtype=np.float32), relu=True)]
    stats = collect_statistics(layers, images, percentile=99.9, batch_size=64)
    assert stats.percentiles["input"].shape == (1, 1, 1)
    assert stats.percentiles["input"].item() == pytest.approx(999.001, rel=1e-7)
    np.testing.assert_allclose(stats.percentiles["fc"], [999.001, 1998.002], rtol=1e-7)
    assert stats.lambdas == pytest.approx({"input": 999.001, "fc": 1998.002}, rel=1e-7)
    assert stats.maxima == {"input": 1000.0, "fc": 2000.0}
    # Median: virtual index 499.5 -> (500 + 501) / 2.
    median = collect_statistics(layers, images, percentile=50.0, batch_size=100)
    assert median.lambdas["input"] == 500.5
    with pytest.raises(ValueError, match="percentile 101"):
        collect_statistics(layers, images, percentile=101)


@pytest.mark.parametrize("trend", [0.0, 1.0])
def test_statistics_streaming_merges_are_exact(trend):
    # 3000 images, 6 neurons, batches of 50: the tracker first fills, then queues candidates
    # above each neuron's threshold and merges them many times mid-stream. With an upward
    # trend every batch brings new top values (the worst case). Ties (rounded values) included.
    rng = np.random.default_rng(9)
    values = rng.standard_normal((3000, 6)) + trend * np.linspace(0, 3, 3000)[:, None]
    values = np.round(values, 1).astype(np.float32)
    images = values.reshape(3000, 1, 1, 6)
    identity = AnnLayer("dense", "identity", np.eye(6, dtype=np.float32), None)
    layers = [AnnLayer("flatten", "flatten"), identity]
    for percentile in (99.0, 99.9, 90.0, 75.0):
        stats = collect_statistics(layers, images, percentile=percentile, batch_size=50)
        expected = np.percentile(values, percentile, axis=0)
        assert np.array_equal(stats.percentiles["identity"], expected), percentile
        assert np.array_equal(stats.percentiles["input"].reshape(6), expected), percentile


def test_normalise_by_hand():
    layers = fuse_batch_norm(tiny_keras_model())
    normed = normalise(layers, {"input": 2.0, "conv1": 4.0, "fc1": 8.0})
    conv, pool, _, fc = normed
    # conv1: W~ = W_f * 2 / 4, b~ = b_f / 4; fc1: W~ = W * 4 / 8, b~ = b / 8.
    np.testing.assert_allclose(conv.weights[:, :, 0, 0], [[0.75, 1.5], [2.25, 3.0]], rtol=1e-6)
    np.testing.assert_allclose(conv.weights[:, :, 0, 1], [[-0.5, 0.0], [0.0, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(conv.bias, [0.25, 0.25], rtol=1e-6)
    np.testing.assert_allclose(fc.weights, [[0.5, -0.5, 0.25], [1.0, 0.0, -0.5]], rtol=1e-6)
    np.testing.assert_allclose(fc.bias, [0.0125, 0.025, 0.0375], rtol=1e-6)
    assert (conv.scale, pool.scale, fc.scale) == (4.0, None, 8.0)
    assert conv.weights.dtype == np.float32 and fc.bias.dtype == np.float32
    # The input layers are untouched.
    np.testing.assert_allclose(layers[0].weights[:, :, 0, 0], FUSED_KERNEL_0, rtol=1e-6)
    with pytest.raises(ValueError, match="no entry for layer 'fc1'"):
        normalise(layers, {"input": 1.0, "conv1": 4.0})
    with pytest.raises(ValueError, match="lambda of layer 'conv1' is 0.0"):
        normalise(layers, {"input": 1.0, "conv1": 0.0, "fc1": 1.0})


def test_normalisation_invariant():
    # The normalised ANN computes the original one's outputs divided by lambda_out (and every
    # hidden layer's divided by its lambda), given its input divided by lambda_in.
    layers = fuse_batch_norm(tiny_keras_model())
    images = tiny_images(50, seed=1)
    stats = collect_statistics(layers, images)
    lambdas = dict(stats.lambdas, input=0.8)  # a lambda_in other than 1 too
    normed = normalise(layers, lambdas)
    original = ann_forward(layers, images)
    scaled = ann_forward(normed, images / np.float32(0.8))
    for name in ("conv1", "fc1"):
        np.testing.assert_allclose(scaled[name], original[name] / lambdas[name], rtol=1e-5,
                                   atol=1e-6)


def test_reference_cnn_forward_equals_keras():
    from export import keras_model

    model = keras_model.reference_cnn(seed=11)
    rng = np.random.default_rng(11)
    for name in ("bn1", "bn2"):  # non-trivial moving statistics, as after training
        layer = model.get_layer(name)
        channels = layer.gamma.shape[0]
        layer.set_weights([rng.uniform(0.5, 2.0, channels).astype(np.float32),
                           rng.uniform(-0.5, 0.5, channels).astype(np.float32),
                           rng.uniform(-0.2, 0.2, channels).astype(np.float32),
                           rng.uniform(0.01, 0.3, channels).astype(np.float32)])
    layers = fuse_batch_norm(model)
    assert [layer.name for layer in layers] == ["conv1", "pool1", "conv2", "pool2", "flatten",
                                                "fc1"]
    assert layers[0].bn["name"] == "bn1" and layers[2].bn["name"] == "bn2"
    images = rng.integers(0, 256, (6, 28, 28, 1)).astype(np.uint8)
    x = images.astype(np.float32) / np.float32(255.0)
    expected = model(x, training=False).numpy()
    got = ann_forward(layers, images, batch_size=4)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got["fc1"], expected, atol=1e-5 * scale, rtol=1e-5)
    relu2 = keras.Model(model.inputs[0], model.get_layer("relu2").output)(x, training=False).numpy()
    np.testing.assert_allclose(got["conv2"], relu2, atol=1e-5 * relu2.max(), rtol=1e-5)


def test_fuse_rejects_unfusable_layouts():
    # (folds that are exact, BN after the ReLU among them, are tested in test_lowering.py)
    bn_at_the_end = keras.Sequential([
        keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 2, activation="relu", name="c"),
        keras.layers.Flatten(), keras.layers.Dense(2, activation="relu", name="out"),
        keras.layers.BatchNormalization(name="late_bn")])
    with pytest.raises(ValueError, match=r"'late_bn' \(BatchNormalization\).*no weight layer "
                                         r"follows"):
        fuse_batch_norm(bn_at_the_end)
    dense_on_image = keras.Sequential([keras.Input((4, 4, 1)),
                                       keras.layers.Dense(2, name="early_dense")])
    with pytest.raises(ValueError, match=r"'early_dense' \(Dense\).*Flatten"):
        fuse_batch_norm(dense_on_image)


def test_fuse_warns_about_hidden_layers_without_relu():
    linear_hidden = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 2, name="c"),
                                      keras.layers.Flatten(), keras.layers.Dense(2, name="out")])
    with pytest.warns(UserWarning, match=r"\['c'\] have no ReLU"):
        layers = fuse_batch_norm(linear_hidden)
    assert [layer.relu for layer in layers] == [False, False, False]


def test_to_model_spec():
    from export import ttfs_format

    layers = fuse_batch_norm(tiny_keras_model())
    with pytest.raises(ValueError, match="'conv1' .*not normalised"):
        to_model_spec(layers, (4, 4, 1))
    normed = normalise(layers, {"input": 1.0, "conv1": 4.0, "fc1": 8.0})
    spec = to_model_spec(normed, (4, 4, 1), pool_mode="earliest", readout="first_spike",
                         time_fire_start=10, time_fire_duration=10, time_steps=50,
                         tau={"input": 17.5, "conv1": 19.5}, td={"conv1": -3.5}, vth0=0.75,
                         metadata={"note": "tiny"})
    assert spec.time_steps == 50 and spec.readout == "first_spike"
    assert [(layer.kind, layer.name) for layer in spec.layers] == [
        ("input", "input"), ("conv2d", "conv1"), ("maxpool", "pool1"), ("flatten", "flatten"),
        ("dense", "fc1")]
    inp, conv, pool, _, fc = spec.layers
    assert inp.out_shape == (4, 4, 1) and inp.input_divisor == 255.0
    assert conv.out_shape == (3, 3, 2) and fc.out_shape == (1, 1, 3)
    assert pool.pool_mode == "earliest" and pool.kernel == (2, 2)
    assert np.array_equal(conv.weights, normed[0].weights)
    assert np.array_equal(fc.bias, normed[3].bias)
    # tau/td per layer; integration constants chained from the layer below; vth0 everywhere.
    assert (inp.neuron.tau_fire, inp.neuron.td_fire) == (17.5, 0.0)
    assert (conv.neuron.tau_fire, conv.neuron.td_fire) == (19.5, -3.5)
    assert (conv.neuron.tau_integ, conv.neuron.td_integ) == (17.5, 0.0)
    assert (fc.neuron.tau_fire, fc.neuron.td_fire) == (20.0, 0.0)
    assert (fc.neuron.tau_integ, fc.neuron.td_integ) == (19.5, -3.5)
    assert conv.neuron.vth0 == 0.75 and fc.neuron.vth0 == 0.75
    # Reference windows with T_s = T_d = 10: depth 1 integrates [0, 10), fires [10, 20).
    assert conv.neuron.integ_window == (0, 10) and conv.neuron.fire_window == (10, 20)
    assert spec.metadata["note"] == "tiny" and spec.metadata["lambdas"] == {"conv1": 4.0,
                                                                              "fc1": 8.0}
    assert spec.metadata["pool_mode"] == "earliest"
    assert len(ttfs_format.to_bytes(spec)) > 0  # the writer accepts it
    with pytest.raises(ValueError, match=r"unknown layers \['conv9'\]"):
        to_model_spec(normed, (4, 4, 1), tau={"conv9": 1.0})


def test_numpy_only_parts_do_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; import export.convert, export.datasets, export.keras_model; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
