"""Quiet background (export/quiet.py): folding batch norm changes nothing, the clipped and
fine-tuned network keeps its hidden biases <= 0, and its SNN fires no hidden spike on a blank
image while the same network with its biases as trained does."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from export import efficiency, quiet  # noqa: E402
from export.keras_model import reference_cnn  # noqa: E402


def _trained_looking_cnn():
    """The reference CNN with batch-norm statistics and biases as training leaves them: some
    fused conv biases positive (the channels that fire on blank input)."""
    model = reference_cnn(seed=3)
    rng = np.random.default_rng(11)
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0.2, 0.3, c),
                               rng.normal(0.0, 0.2, c), rng.uniform(0.5, 2.0, c)])
        elif kind in ("Conv2D", "Dense"):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0.0, 0.2, bias.shape)])
    return model


def test_folding_batch_norm_keeps_the_function():
    model = _trained_looking_cnn()
    images = np.random.default_rng(0).random((16, 28, 28, 1)).astype(np.float32)
    folded = quiet.rebuild(model, nonpositive_bias=False)
    assert [type(l).__name__ for l in folded.layers].count("BatchNormalization") == 0
    assert [l.name for l in folded.layers] == [l.name for l in model.layers
                                               if type(l).__name__ != "BatchNormalization"]
    np.testing.assert_allclose(np.asarray(folded(images, training=False)),
                               np.asarray(model(images, training=False)), atol=2e-5)


def _blank_hidden_spikes(model, tmp_path):
    """Convert the Keras model (statistics on random images) and count the SNN's hidden spikes
    on an all-zero image with libttfs."""
    pyttfs = pytest.importorskip("pyttfs")
    from export.convert import collect_statistics, fuse_batch_norm, normalise, to_model_spec
    from export.ttfs_format import write_model

    layers = fuse_batch_norm(model)
    images = np.random.default_rng(1).random((64, 28, 28, 1)).astype(np.float32)
    stats = collect_statistics(layers, images, progress=False, verbose=False)
    spec = to_model_spec(normalise(layers, stats.lambdas), (28, 28, 1), pool_mode="earliest")
    write_model(spec, tmp_path / "m.ttfs")
    try:
        blank = efficiency.blank_image_spikes(tmp_path / "m.ttfs")
    except pyttfs.LibraryError as error:
        pytest.skip(f"libttfs is not available: {error}")
    return blank["conv1"] + blank["conv2"], spec


def test_clipped_biases_silence_a_blank_image(tmp_path):
    model = _trained_looking_cnn()
    loud, spec = _blank_hidden_spikes(model, tmp_path)
    # the fused conv1 biases that are positive after normalisation fire at all 576 positions
    positive = int((spec.layers[1].bias >= spec.layers[1].neuron.vth0 * np.exp(
        -(79 - spec.layers[1].neuron.td_fire) / spec.layers[1].neuron.tau_fire)).sum())
    assert positive > 0 and loud >= 576 * positive
    clipped = quiet.rebuild(model, nonpositive_bias=True)
    for name in ("conv1", "conv2"):
        assert clipped.get_layer(name).bias.numpy().max() <= 0.0
    np.testing.assert_array_equal(clipped.get_layer("fc1").bias.numpy(),
                                  model.get_layer("fc1").bias.numpy())  # the output keeps its own
    silent, _ = _blank_hidden_spikes(clipped, tmp_path)
    assert silent == 0


def test_fine_tune_keeps_the_biases_non_positive():
    from export.datasets import MnistNotFoundError, load_mnist

    try:
        data = load_mnist()
    except MnistNotFoundError as error:
        pytest.skip(f"no MNIST here: {error}")
    import dataclasses

    data = dataclasses.replace(data, train=data.train.take(300), val=data.val.take(200),
                               test=data.test.take(200))
    tuned, record = quiet.fine_tune(_trained_looking_cnn(), data, epochs=1,
                                    learning_rate=1e-2, activity_l1=1e-4, verbose=0)
    assert record["positive_biases_clipped"]["conv1"] > 0
    assert all(v <= 0.0 for v in record["largest_hidden_bias"].values())
    for name in ("conv1", "conv2"):
        assert tuned.get_layer(name).bias.numpy().max() <= 0.0
        assert tuned.get_layer(name).bias_constraint is None  # saved as a plain model
    assert set(record) >= {"before", "clipped", "after", "seconds"}
