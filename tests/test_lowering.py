"""export/lowering.py: every fold of a Keras layer into the model file's four layer kinds, and
every refusal.

Each accepted model is checked twice against independent expectations:
1. Keras's own inference of the model (on the pixel range it expects) against the converted
   ANN (export.convert.ann_forward of the lowered layers on [0, 1] inputs);
2. the converted SNN in libttfs (stepped and analytic engines, bit for bit) against the numpy
   reference simulator tests/reference_numpy.py (spike times of every layer and the output
   potentials, threshold ties excepted, as in tests/test_engine_parity.py).
Each refusal names the layer, its class and why."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

from export.convert import ann_forward, collect_statistics, normalise, to_model_spec  # noqa: E402
from export.lowering import lower_keras_model  # noqa: E402
from export.ttfs_format import from_bytes, to_bytes  # noqa: E402

try:
    import pyttfs
    import reference_numpy as ref
    from test_engine_parity import Net, compare_with_reference, run_library
except ImportError:  # tests imported as a package
    from tests import reference_numpy as ref
    from tests.test_engine_parity import Net, compare_with_reference, run_library

L = keras.layers
RNG_SEED = 1234


def randomise_bn(model, seed, negative_gamma=False, zero_shift=()):
    """Non-trivial batch-norm statistics; gamma > 0 unless asked; zero_shift: BN layer names
    whose shift beta - mean*gamma/sqrt(var + eps) is made exactly zero (a pure scale)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        c = int(layer.gamma.shape[0])
        gamma = rng.uniform(0.6, 1.4, c).astype(np.float32)
        if negative_gamma:
            gamma[0] = -gamma[0]
        beta = rng.normal(0.0, 0.3, c).astype(np.float32)
        mean = rng.normal(0.1, 0.2, c).astype(np.float32)
        var = rng.uniform(0.5, 2.0, c).astype(np.float32)
        if layer.name in zero_shift:
            beta = np.zeros(c, np.float32)
            mean = np.zeros(c, np.float32)
        layer.set_weights([gamma, beta, mean, var])
    return model


def sequential(shape, layers, name="m"):
    keras.utils.set_random_seed(RNG_SEED)
    return keras.Sequential([keras.Input(shape)] + layers, name=name)


def images(shape, count=6, seed=0):
    return np.random.default_rng(seed).random((count,) + tuple(shape), dtype=np.float32)


def check_ann(model, input_scale=1.0, count=6):
    """Lower the model; its ANN must equal Keras's inference. Returns the lowered layers."""
    lowered = lower_keras_model(model, input_scale=input_scale)
    shape = tuple(int(v) for v in model.inputs[0].shape[1:])
    x = images(shape, count)
    expected = model(x * np.float32(input_scale), training=False).numpy()
    got = ann_forward(lowered, x, record=False)  # an output ReLU is applied here as in Keras
    if lowered.output_softmax:  # dropped by the conversion (argmax unchanged): apply it here
        e = np.exp(got - got.max(axis=1, keepdims=True))
        got = e / e.sum(axis=1, keepdims=True)
    scale = max(float(np.abs(expected).max()), 1e-3)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5 * scale)
    return lowered


def check_snn(lowered, input_shape, count=5, window=12):
    """The converted SNN: both engines bit-identical, and equal to the numpy reference."""
    x = images(input_shape, 40, seed=3)
    stats = collect_statistics(lowered, x, percentile=99.0, progress=False, verbose=False)
    spec = to_model_spec(normalise(lowered, stats.lambdas), input_shape, pool_mode="earliest",
                         time_fire_start=window, time_fire_duration=window, tau=window / 4)
    data = to_bytes(spec)
    spec = from_bytes(data)
    model = pyttfs.Model.from_bytes(data)
    test_images = x[:count]
    net = Net("lowered", spec, test_images, model, ref.simulate(spec, test_images))
    for engine in ("stepped", "analytic"):
        net.runs[engine] = run_library(model, engine, test_images)
    stepped, analytic = net.runs["stepped"], net.runs["analytic"]
    for i in stepped.spike_times:
        np.testing.assert_array_equal(stepped.spike_times[i], analytic.spike_times[i])
    assert stepped.potentials.tobytes() == analytic.potentials.tobytes()
    comparison = compare_with_reference(net, stepped)
    assert not comparison.problems, "\n".join(comparison.problems[:5])
    fired = sum(int((t >= 0).sum()) for i, t in stepped.spike_times.items() if i > 0)
    assert fired > 0, "no hidden neuron fired: the comparison would be empty"
    check_snn.last_run = stepped
    return spec


# ---- accepted: the fold gives the same network ------------------------------------------------

def model_bn_after_relu_into_valid_conv():
    return randomise_bn(sequential((8, 8, 1), [
        L.Conv2D(4, 3, activation="relu", name="c1"), L.BatchNormalization(name="bn1"),
        L.Conv2D(5, 3, padding="valid", name="c2"), L.ReLU(), L.Flatten(), L.Dense(3)]), 1)


def model_bn_after_relu_through_maxpool():
    return randomise_bn(sequential((10, 10, 2), [
        L.Conv2D(4, 3, activation="relu", padding="same", name="c1"),
        L.BatchNormalization(name="bn1"), L.MaxPooling2D(2, name="p1"),
        L.Conv2D(5, 2, name="c2", activation="relu"), L.Flatten(), L.Dense(3)]), 2)


def model_bn_after_relu_into_dense():
    return randomise_bn(sequential((6, 6, 1), [
        L.Conv2D(3, 3, activation="relu", name="c1"), L.BatchNormalization(name="bn1"),
        L.Flatten(name="f"), L.Dropout(0.5), L.Dense(8, activation="relu", name="d1"),
        L.BatchNormalization(name="bn2"), L.Dense(3, name="out")]), 3)


def model_scale_only_bn_before_same_conv():
    return randomise_bn(sequential((7, 7, 1), [
        L.Conv2D(3, 3, activation="relu", padding="same", name="c1"),
        L.BatchNormalization(name="bn1"), L.Conv2D(4, 3, padding="same", name="c2"),
        L.ReLU(), L.Flatten(), L.Dense(3)]), 4, zero_shift=("bn1",))


def model_rescaling_first():
    return sequential((8, 8, 1), [
        L.Rescaling(1.0 / 255, name="rescale"), L.Conv2D(4, 3, padding="same", name="c1",
                                                         activation="relu"),
        L.MaxPooling2D(2), L.Flatten(), L.Dense(3)])


def model_rescaling_with_offset_valid():
    return sequential((8, 8, 3), [
        L.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale"),
        L.Conv2D(4, 3, padding="valid", name="c1", activation="relu"), L.Flatten(), L.Dense(3)])


def model_avgpool_into_conv():
    return sequential((12, 12, 1), [
        L.Conv2D(3, 3, activation="relu", name="c1"), L.AveragePooling2D(2, name="avg"),
        L.Conv2D(4, 2, name="c2", activation="relu"), L.Flatten(), L.Dense(3)])


def model_overlapping_avgpool_into_strided_conv():
    return sequential((11, 11, 2), [
        L.Conv2D(3, 2, activation="relu", name="c1"),
        L.AveragePooling2D(3, strides=1, name="avg"),
        L.Conv2D(4, 2, strides=2, name="c2", activation="relu"), L.Flatten(), L.Dense(3)])


def model_same_avgpool_into_dense():
    return sequential((7, 7, 1), [
        L.Conv2D(3, 2, activation="relu", name="c1"),  # 6x6
        L.AveragePooling2D(4, strides=3, padding="same", name="avg"),  # pads: border windows
        L.Flatten(name="f"), L.Dense(3, name="out")])


def model_gap_into_dense():
    return randomise_bn(sequential((6, 5, 1), [
        L.Conv2D(4, 3, activation="relu", name="c1"), L.GlobalAveragePooling2D(name="gap"),
        L.Dropout(0.2), L.BatchNormalization(name="bn"), L.Dense(3, name="out")]), 5)


def model_global_max_pool():
    return sequential((6, 6, 1), [
        L.Conv2D(4, 3, activation="relu", name="c1"), L.GlobalMaxPooling2D(name="gmp"),
        L.Dense(3, name="out")])


def model_zero_padding_as_same():
    return sequential((8, 8, 1), [
        L.ZeroPadding2D(1, name="zp1"), L.Conv2D(3, 3, name="c1", activation="relu"),
        L.ZeroPadding2D(((0, 1), (0, 1)), name="zp2"),
        L.Conv2D(4, 3, strides=2, name="c2", activation="relu"),
        L.ZeroPadding2D(1, name="zp3"), L.MaxPooling2D(3, strides=1, name="p"),
        L.Flatten(), L.Dense(3)])


def model_output_relu():
    return sequential((5, 5, 1), [
        L.Conv2D(3, 3, activation="relu", name="c1"), L.Flatten(),
        L.Dense(3, activation="relu", name="out")])


def model_output_softmax_and_dense_bn():
    return randomise_bn(sequential((5, 5, 1), [
        L.Flatten(name="f"), L.Dense(6, name="d1"), L.BatchNormalization(name="bn1"),
        L.ReLU(), L.Dense(3, name="out"), L.Softmax(name="probabilities")]), 6)


def model_functional_nested():
    keras.utils.set_random_seed(RNG_SEED)
    augment = keras.Sequential([L.RandomFlip("horizontal"), L.RandomTranslation(0.1, 0.1)],
                               name="augment")
    inputs = keras.Input((8, 8, 1))
    x = augment(inputs)
    block = keras.Sequential([L.Conv2D(3, 3, activation="relu", name="c1"),
                              L.MaxPooling2D(2, name="p1")], name="block")
    x = block(x)
    x = L.Flatten(name="f")(x)
    outputs = L.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs, name="nested")


ACCEPTED = {
    "BN after ReLU -> VALID conv": (model_bn_after_relu_into_valid_conv, 1.0,
                                    ["conv2d", "conv2d", "flatten", "dense"]),
    "BN after ReLU -> max pool -> conv": (model_bn_after_relu_through_maxpool, 1.0,
                                          ["conv2d", "maxpool", "conv2d", "flatten", "dense"]),
    "BN after ReLU -> dense; BN on dense": (model_bn_after_relu_into_dense, 1.0,
                                            ["conv2d", "flatten", "dense", "dense"]),
    "scale-only BN -> SAME conv": (model_scale_only_bn_before_same_conv, 1.0,
                                   ["conv2d", "conv2d", "flatten", "dense"]),
    "Rescaling(1/255) and 0-255 input": (model_rescaling_first, 255.0,
                                         ["conv2d", "maxpool", "flatten", "dense"]),
    "Rescaling with offset -> VALID conv": (model_rescaling_with_offset_valid, 255.0,
                                            ["conv2d", "flatten", "dense"]),
    "AveragePooling2D -> conv": (model_avgpool_into_conv, 1.0,
                                 ["conv2d", "conv2d", "flatten", "dense"]),
    "overlapping avg pool -> strided conv": (model_overlapping_avgpool_into_strided_conv, 1.0,
                                             ["conv2d", "conv2d", "flatten", "dense"]),
    "SAME avg pool -> dense": (model_same_avgpool_into_dense, 1.0, ["conv2d", "flatten", "dense"]),
    "GlobalAveragePooling2D -> BN -> dense": (model_gap_into_dense, 1.0,
                                              ["conv2d", "flatten", "dense"]),
    "GlobalMaxPooling2D": (model_global_max_pool, 1.0,
                           ["conv2d", "maxpool", "flatten", "dense"]),
    "ZeroPadding2D as SAME": (model_zero_padding_as_same, 1.0,
                              ["conv2d", "conv2d", "maxpool", "flatten", "dense"]),
    "ReLU on the output": (model_output_relu, 1.0, ["conv2d", "flatten", "dense"]),
    "softmax output, BN on dense": (model_output_softmax_and_dense_bn, 1.0,
                                    ["flatten", "dense", "dense"]),
    "functional, nested, augmentation": (model_functional_nested, 1.0,
                                         ["conv2d", "maxpool", "flatten", "dense"]),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_fold_gives_the_keras_network_and_the_engines_agree(case):
    build, input_scale, kinds = ACCEPTED[case]
    model = build()
    lowered = check_ann(model, input_scale)
    assert [layer.kind for layer in lowered] == kinds
    check_snn(lowered, tuple(int(v) for v in model.inputs[0].shape[1:]))


def test_the_folds_are_what_the_module_says():
    """Hand-checkable facts about a few folds (not only that the outputs agree)."""
    # AveragePooling2D 2x2/2 then a 2x2 conv: one 4x4 conv with stride 2, each weight / 4
    model = model_avgpool_into_conv()
    lowered = lower_keras_model(model)
    conv = lowered[1]
    w = model.get_layer("c2").kernel.numpy()
    assert conv.kernel == (4, 4) and conv.stride == (2, 2) and conv.padding == "valid"
    np.testing.assert_allclose(conv.weights[0:2, 0:2], np.broadcast_to(w[0, 0] / 4,
                                                                      (2, 2) + w.shape[2:]),
                               rtol=1e-6)
    np.testing.assert_allclose(conv.weights[2:4, 2:4], np.broadcast_to(w[1, 1] / 4,
                                                                      (2, 2) + w.shape[2:]),
                               rtol=1e-6)
    assert any("AveragePooling2D 'avg'" in note for note in lowered.notes)
    # GlobalAveragePooling2D over 4x3: each dense weight spread over 12 positions, / 12
    model = model_gap_into_dense()
    lowered = lower_keras_model(model)
    dense = lowered[-1]
    assert dense.weights.shape == (4 * 3 * 4, 3)
    rows = dense.weights.reshape(4, 3, 4, 3)
    np.testing.assert_allclose(rows, np.broadcast_to(rows[0, 0], rows.shape), rtol=1e-6)
    # Rescaling(1/255) with a 0-255 input scale: the weights are unchanged (255 * 1/255 = 1)
    model = model_rescaling_first()
    lowered = lower_keras_model(model, input_scale=255.0)
    np.testing.assert_allclose(lowered[0].weights, model.get_layer("c1").kernel.numpy(),
                               rtol=1e-6)
    # ZeroPadding2D(1) + 3x3 VALID = SAME; ((0,1),(0,1)) + 3x3 stride 2 VALID = SAME
    lowered = lower_keras_model(model_zero_padding_as_same())
    assert [layer.padding for layer in lowered[:3]] == ["same", "same", "same"]
    # the output ReLU is kept in the ANN and noted
    lowered = lower_keras_model(model_output_relu())
    assert lowered.output_relu and any("ReLU" in note for note in lowered.notes)
    lowered = lower_keras_model(model_output_softmax_and_dense_bn())
    assert any("softmax" in note for note in lowered.notes) and not lowered.output_relu


def test_legacy_keras2_h5_file(tmp_path):
    """A model saved by Keras 2 (tf_keras, legacy HDF5) loads and converts; its outputs,
    computed by Keras 2 when it was saved (tests/data/make_keras2_h5.py), are the reference."""
    from pathlib import Path

    from export.keras_model import load_user_model

    data = Path(__file__).parent / "data"
    expected = np.load(data / "keras2_cnn_expected.npz")
    assert str(expected["keras_version"]).startswith("2.")
    model = load_user_model(data / "keras2_cnn.h5")
    lowered = lower_keras_model(model)
    assert [layer.kind for layer in lowered] == ["conv2d", "maxpool", "conv2d", "flatten",
                                                 "dense"]
    got = ann_forward(lowered, expected["x"], record=False)
    np.testing.assert_allclose(got, expected["y"], rtol=1e-5, atol=1e-6)
    # and a Keras 3 .h5 round trip
    model.save(tmp_path / "again.h5")
    again = lower_keras_model(load_user_model(tmp_path / "again.h5"))
    np.testing.assert_array_equal(ann_forward(again, expected["x"], record=False), got)


# ---- refused: each with the layer, its class and why -----------------------------------------

def refused_shift_before_same_conv():
    return randomise_bn(sequential((7, 7, 1), [
        L.Conv2D(3, 3, activation="relu", padding="same", name="c1"),
        L.BatchNormalization(name="bn1"), L.Conv2D(4, 3, padding="same", name="c2"),
        L.Flatten(), L.Dense(3)]), 7)


def refused_negative_scale_through_maxpool():
    return randomise_bn(sequential((8, 8, 1), [
        L.Conv2D(3, 3, activation="relu", name="c1"), L.BatchNormalization(name="bn1"),
        L.MaxPooling2D(2, name="p1"), L.Flatten(), L.Dense(3)]), 8, negative_gamma=True)


def refused_relu_after_post_bn():
    return randomise_bn(sequential((6, 6, 1), [
        L.Conv2D(3, 3, activation="relu", name="c1"), L.BatchNormalization(name="bn1"),
        L.ReLU(name="again"), L.Flatten(), L.Dense(3)]), 9)


REFUSED = {
    "BN shift before a padding conv": (
        refused_shift_before_same_conv,
        r"'c2' \(Conv2D\) \(SAME padding, 3x3 kernel on a 7x7 input\) reads zero padding after "
        r"BatchNormalization 'bn1' \(after the ReLU of 'c1'\).*wrong at the image borders"),
    "negative BN scale through a max pool": (
        refused_negative_scale_through_maxpool,
        r"'p1' \(MaxPooling2D\) follows BatchNormalization 'bn1'.*scales channel\(s\) \[0\] by "
        r"a negative factor"),
    "ReLU after a post-activation BN": (
        refused_relu_after_post_bn,
        r"'again' \(ReLU\) follows BatchNormalization 'bn1'.*cannot be folded across a ReLU"),
    "ZeroPadding2D that is neither VALID nor SAME": (
        lambda: sequential((8, 8, 1), [L.ZeroPadding2D(2, name="zp"),
                                       L.Conv2D(3, 3, name="c1"), L.Flatten(), L.Dense(3)]),
        r"'c1' \(Conv2D\) after ZeroPadding2D 'zp' \(padding \(\(2, 2\), \(2, 2\)\)\).*neither "
        r"VALID nor SAME padding \(SAME would pad 1 rows"),
    "SAME avg pool (padding) before a conv": (
        lambda: sequential((7, 7, 1), [L.AveragePooling2D(2, padding="same", name="avg"),
                                       L.Conv2D(3, 2, name="c1"), L.Flatten(), L.Dense(3)]),
        r"'c1' \(Conv2D\) follows AveragePooling2D 'avg' with SAME padding that pads"),
    "avg pool before a padding conv": (
        lambda: sequential((8, 8, 1), [L.AveragePooling2D(2, name="avg"),
                                       L.Conv2D(3, 3, padding="same", name="c1"), L.Flatten(),
                                       L.Dense(3)]),
        r"'c1' \(Conv2D\) reads zero padding \(SAME\) after AveragePooling2D 'avg'"),
    "avg pool then max pool": (
        lambda: sequential((8, 8, 1), [L.Conv2D(3, 3, activation="relu"),
                                       L.AveragePooling2D(2, name="avg"),
                                       L.MaxPooling2D(1, name="mp"), L.Flatten(), L.Dense(3)]),
        r"'mp' \(MaxPooling2D\) follows AveragePooling2D 'avg' \(avgpool\): a linear map cannot "
        r"be folded across a max pool"),
    "Rescaling offset before a SAME conv": (
        lambda: sequential((6, 6, 1), [L.Rescaling(2.0, offset=-1.0, name="rs"),
                                       L.Conv2D(3, 3, padding="same", name="c1"), L.Flatten(),
                                       L.Dense(3)]),
        r"'c1' \(Conv2D\) .*reads zero padding after Rescaling 'rs'"),
    "BN after the output ReLU": (
        lambda: sequential((4, 4, 1), [L.Flatten(), L.Dense(3, activation="relu", name="out"),
                                       L.BatchNormalization(name="late")]),
        r"'late' \(BatchNormalization\) comes after the ReLU of 'out' at the end of the "
        r"network: no weight layer follows"),
    "softmax in a hidden layer": (
        lambda: sequential((4, 4, 1), [L.Flatten(), L.Dense(4, activation="softmax", name="h"),
                                       L.Dense(3)]),
        r"'h' \(Dense\) is a softmax inside the network"),
    "a layer outside the list": (
        lambda: sequential((6, 6, 1), [L.DepthwiseConv2D(3, name="dw"), L.Flatten(),
                                       L.Dense(3)]),
        r"'dw' \(DepthwiseConv2D\) is not supported; supported layers: InputLayer, Conv2D"),
    "dilated conv": (
        lambda: sequential((8, 8, 1), [L.Conv2D(2, 3, dilation_rate=2, name="dil"),
                                       L.Flatten(), L.Dense(3)]),
        r"'dil' \(Conv2D\) has dilation_rate"),
    "a GAP after the output layer": (
        lambda: sequential((6, 6, 1), [L.Conv2D(3, 3, name="c_out"),
                                       L.GlobalAveragePooling2D(name="gap")]),
        r"GlobalAveragePooling2D 'gap' comes after the output layer 'c_out': no weight layer "
        r"follows"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_name_the_layer_its_class_and_why(case):
    build, message = REFUSED[case]
    with pytest.raises(ValueError, match=message):
        lower_keras_model(build())


def test_branching_functional_model_is_refused():
    inputs = keras.Input((6, 6, 1))
    a = L.Conv2D(2, 3, name="left")(inputs)
    b = L.Conv2D(2, 3, name="right")(inputs)
    x = L.Add(name="join")([a, b])
    model = keras.Model(inputs, L.Dense(3)(L.Flatten()(x)), name="branchy")
    with pytest.raises(ValueError, match=r"'branchy': layer '(right|join)' \((Conv2D|Add)\)"):
        lower_keras_model(model)


def test_refusal_through_load_user_model_names_the_file(tmp_path):
    from export.keras_model import load_user_model

    model = sequential((6, 6, 1), [L.Conv2D(2, 3, activation="tanh", name="t"), L.Flatten(),
                                   L.Dense(3)])
    model.save(tmp_path / "tanh.keras")
    with pytest.raises(ValueError, match=r"tanh\.keras: model 'm': layer 't' \(Conv2D\) has "
                                         r"activation 'tanh'; expected 'linear' or 'relu'"):
        load_user_model(tmp_path / "tanh.keras")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"junk\.h5: Keras cannot load it"):
        load_user_model(tmp_path / "junk.h5")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"model\.onnx: suffix '\.onnx'; expected a Keras model "
                                         r"file ending in \.keras, \.h5, \.hdf5"):
        load_user_model(tmp_path / "model.onnx")


# ---- depth -----------------------------------------------------------------------------------

def test_a_network_of_19_neuron_layers_end_to_end():
    """17 convolutions and a dense layer (output depth 18): windows for every depth, the model
    file, both engines bit for bit, the numpy reference, and time-constant training that moves
    the constants of every hidden layer."""
    from export.tc_training import paper_targets, train_time_constants, trained_layers

    keras.utils.set_random_seed(5)
    model = sequential((6, 6, 1), [L.Conv2D(3, 3, padding="same", activation="relu",
                                            name=f"c{i}") for i in range(1, 18)]
                       + [L.Flatten(), L.Dense(3, name="out")], name="deep")
    lowered = check_ann(model)
    window = 12
    spec = check_snn(lowered, (6, 6, 1), window=window)
    neurons = [layer for layer in spec.layers if layer.neuron is not None]
    assert len(neurons) == 19 and max(layer.depth for layer in spec.layers) == 18
    deepest_hidden = len(spec.layers) - 3  # c17, before the flatten and the output
    assert spec.layers[deepest_hidden].name == "c17"
    assert (check_snn.last_run.spike_times[deepest_hidden] >= 0).any(), "c17 never fired"
    # max(400, D*T_s + T_d) with D = 18, T_s = T_d = 12: 400; the windows by hand
    assert spec.time_steps == 400
    for layer in neurons[1:]:
        d = layer.depth
        assert tuple(layer.neuron.integ_window) == ((d - 1) * window, d * window)
        assert tuple(layer.neuron.fire_window) == (d * window, (d + 1) * window)
    # deeper than 400 steps: the automatic T grows, a given T that is too small is refused
    x = images((6, 6, 1), 20, seed=4)
    stats = collect_statistics(lowered, x, percentile=99.0, progress=False, verbose=False)
    normed = normalise(lowered, stats.lambdas)
    assert to_model_spec(normed, (6, 6, 1)).time_steps == 18 * 80 + 80
    with pytest.raises(ValueError, match=r"time_steps 400 cuts off the output layer \(depth "
                                         r"18\): its integration window ends at step 1440"):
        to_model_spec(normed, (6, 6, 1), time_steps=400)
    # time-constant training reaches every hidden layer
    tau_names, td_names = trained_layers(spec)
    assert tau_names == ["input"] + [f"c{i}" for i in range(1, 18)]
    trained, history = train_time_constants(spec, x, paper_targets(normed), rule="paper",
                                            batch_size=10, passes=1, progress=False)
    before = {layer.name: layer.neuron for layer in spec.layers if layer.neuron is not None}
    for layer in trained.layers:
        if layer.name in tau_names:
            assert layer.neuron.tau_fire != before[layer.name].tau_fire, layer.name
        if layer.name in td_names:
            assert layer.neuron.td_fire != before[layer.name].td_fire, layer.name
    assert len(history) == 2
