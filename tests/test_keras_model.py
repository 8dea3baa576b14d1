"""export/keras_model.py: the reference CNN's shape, user-model checks, a tiny seeded training."""

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

from export import keras_model  # noqa: E402
from export.datasets import Mnist, Split  # noqa: E402


def test_reference_cnn_layers_shapes_and_parameter_counts():
    model = keras_model.reference_cnn(seed=1)
    layers = {layer.name: layer for layer in model.layers}
    assert [layer.name for layer in model.layers] == [
        "input", "conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2", "flatten",
        "dropout", "fc1"]
    expected_shapes = {"conv1": (24, 24, 12), "bn1": (24, 24, 12), "pool1": (12, 12, 12),
                       "conv2": (8, 8, 64), "pool2": (4, 4, 64), "flatten": (1024,),
                       "fc1": (10,)}
    for name, shape in expected_shapes.items():
        assert tuple(layers[name].output.shape[1:]) == shape, name
    assert layers["conv1"].count_params() == 5 * 5 * 1 * 12 + 12
    assert layers["conv2"].count_params() == 5 * 5 * 12 * 64 + 64
    assert layers["fc1"].count_params() == 1024 * 10 + 10
    assert tuple(layers["conv1"].kernel.shape) == (5, 5, 1, 12)  # HWIO
    assert tuple(layers["fc1"].kernel.shape) == (1024, 10)  # [in, out]
    for name in ("bn1", "bn2"):
        config = layers[name].get_config()
        assert config["momentum"] == pytest.approx(0.99)
        assert config["epsilon"] == pytest.approx(1e-3)
    assert layers["dropout"].get_config()["rate"] == 0.5
    assert keras_model._activation_name(layers["fc1"].activation) == "linear"
    # Glorot-uniform kernels: |w| <= sqrt(6 / (fan_in + fan_out)), zero biases.
    for name, fan_in, fan_out in (("conv1", 25, 25 * 12), ("conv2", 25 * 12, 25 * 64),
                                  ("fc1", 1024, 10)):
        kernel = np.asarray(layers[name].kernel.numpy())
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit, name
        assert not np.any(layers[name].bias.numpy()), name
    # The same seed gives the same initial weights; kernels are drawn independently.
    again = keras_model.reference_cnn(seed=1)
    for a, b in zip(model.get_weights(), again.get_weights()):
        assert np.array_equal(a, b)


def small_supported_model():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(3, 3, activation="relu", name="c1"),
        keras.layers.MaxPooling2D(2, name="p1"),
        keras.layers.Conv2D(4, 2, padding="same", name="c2"),
        keras.layers.BatchNormalization(name="b2"),
        keras.layers.Activation("relu", name="a2"),
        keras.layers.Flatten(name="f"),
        keras.layers.Dropout(0.25, name="d"),
        keras.layers.Dense(5, name="out"),
    ], name="small")


def test_load_user_model_accepts_a_supported_model(tmp_path):
    model = small_supported_model()
    path = tmp_path / "small.keras"
    model.save(path)
    loaded = keras_model.load_user_model(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    assert np.allclose(loaded(x, training=False), model(x, training=False), atol=1e-6)


@pytest.mark.parametrize("bad_layer, class_name, reason", [
    (lambda: keras.layers.Conv2DTranspose(2, 2, name="avg"), "Conv2DTranspose", "not supported"),
    (lambda: keras.layers.LeakyReLU(name="avg"), "LeakyReLU", "not supported"),
    (lambda: keras.layers.Reshape((12, 6, 1), name="avg"), "Reshape", "not supported"),
    (lambda: keras.layers.Activation("sigmoid", name="avg"), "Activation", "sigmoid"),
    (lambda: keras.layers.ReLU(max_value=6.0, name="avg"), "ReLU", "max_value"),
    (lambda: keras.layers.Conv2D(2, 2, activation="tanh", name="avg"), "Conv2D", "tanh"),
])
def test_load_user_model_rejects_unsupported_layers(tmp_path, bad_layer, class_name, reason):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="c1"),
                              bad_layer(), keras.layers.Flatten(), keras.layers.Dense(3)])
    path = tmp_path / "bad.keras"
    model.save(path)
    with pytest.raises(ValueError) as error:
        keras_model.load_user_model(path)
    text = str(error.value)
    assert "'avg'" in text and class_name in text and reason in text
    assert str(path) in text
    assert "supported layers: InputLayer, Conv2D, Dense" in text
    assert "AveragePooling2D, GlobalAveragePooling2D" in text


def test_load_user_model_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.keras"):
        keras_model.load_user_model(tmp_path / "nothing.keras")


def tiny_mnist_like(train=300, val=100, seed=0):
    """Separable synthetic 'digits' (a bright bar whose row is the class), so one epoch learns."""
    rng = np.random.default_rng(seed)

    def split(count):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 40, (count, 28, 28, 1)).astype(np.uint8)
        for index, label in enumerate(labels):
            images[index, 2 + 2 * label:4 + 2 * label, 4:24, 0] = 255
        return Split(images, labels)

    return Mnist(train=split(train), val=split(val), test=split(val), source="synthetic")


def test_train_keeps_best_validation_weights_and_is_deterministic(tmp_path):
    data = tiny_mnist_like()
    checkpoint = tmp_path / "best.keras"
    model = keras_model.reference_cnn(seed=3)
    history = keras_model.train(model, data, epochs=2, batch_size=100, seed=7,
                                checkpoint=checkpoint, verbose=0)
    accuracies = history.history["val_accuracy"]
    assert len(accuracies) == 2 and len(history.history["loss"]) == 2
    assert history.best_epoch == int(np.argmax(accuracies)) + 1
    assert history.best_val_accuracy == pytest.approx(max(accuracies))
    assert checkpoint.is_file()

    # The model in memory and the checkpoint both hold the best epoch's weights.
    saved = keras_model.load_user_model(checkpoint)
    for a, b in zip(model.get_weights(), saved.get_weights()):
        assert np.array_equal(a, b)
    accuracy = keras_model.evaluate(saved, data.val.images, data.val.labels)
    assert accuracy == pytest.approx(history.best_val_accuracy, abs=1e-6)
    assert keras_model.evaluate(model, data.val.images, data.val.labels) == accuracy

    # Same seeds, same weights.
    again = keras_model.reference_cnn(seed=3)
    keras_model.train(again, data, epochs=2, batch_size=100, seed=7, verbose=0)
    for a, b in zip(model.get_weights(), again.get_weights()):
        assert np.array_equal(a, b)


def test_evaluate_counts_argmax_hits():
    # A model whose logits are the flattened first 10 pixels: the label is where the 255 is.
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, use_bias=False)])
    kernel = np.zeros((784, 10), dtype=np.float32)
    kernel[np.arange(10), np.arange(10)] = 1.0
    model.layers[-1].set_weights([kernel])
    images = np.zeros((4, 28, 28, 1), dtype=np.uint8)
    for index, hot in enumerate([3, 0, 9, 5]):
        images[index, 0, hot, 0] = 255
    assert keras_model.evaluate(model, images, np.array([3, 0, 9, 1])) == 0.75


def test_augmentation_translates_each_image_within_the_shift_and_keeps_labels():
    rng = np.random.default_rng(5)
    x = rng.random((37, 28, 28, 1), dtype=np.float32) + 0.5  # no zeros, so fill shows
    y = np.arange(37) % 10
    batches = keras_model._shifted_batches(keras, x, y, batch_size=10, shift=2, seed=0)
    assert len(batches) == 4
    seen = []
    shifts = set()
    for index in range(len(batches)):
        images, labels = batches[index]
        for image, label in zip(images, labels):
            # find the original and the (dy, dx) that gives this image, by brute force
            matches = []
            for source in np.flatnonzero(y == label):
                padded = np.pad(x[source], ((2, 2), (2, 2), (0, 0)))
                for dy in range(5):
                    for dx in range(5):
                        if np.array_equal(padded[dy:dy + 28, dx:dx + 28], image):
                            matches.append((source, dy - 2, dx - 2))
            assert len(matches) == 1, f"batch {index}: not a translation of one image"
            seen.append(matches[0][0])
            shifts.add(matches[0][1:])
    assert sorted(seen) == list(range(37)), "every image once per epoch"
    assert len(shifts) > 5, f"shifts barely vary: {shifts}"


def test_training_with_augmentation_and_cosine_decay_is_seeded():
    data = tiny_mnist_like()
    runs = []
    for _ in range(2):
        model = keras_model.reference_cnn(seed=3)
        history = keras_model.train(model, data, epochs=2, batch_size=100, seed=7, verbose=0,
                                    augment_shift=2, cosine_decay=True)
        runs.append(model.get_weights())
        assert len(history.history["val_accuracy"]) == 2
    for a, b in zip(*runs):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="augment_shift"):
        keras_model.train(keras_model.reference_cnn(seed=3), data, epochs=1, augment_shift=-1,
                          verbose=0)


def test_keep_last_keeps_the_final_epoch(tmp_path):
    data = tiny_mnist_like()
    checkpoint = tmp_path / "last.keras"
    model = keras_model.reference_cnn(seed=3)
    history = keras_model.train(model, data, epochs=3, batch_size=100, seed=7, verbose=0,
                                checkpoint=checkpoint, keep="last")
    assert history.best_epoch == 3
    assert history.best_val_accuracy == pytest.approx(history.history["val_accuracy"][-1])
    saved = keras_model.load_user_model(checkpoint)
    for a, b in zip(model.get_weights(), saved.get_weights()):
        assert np.array_equal(a, b)
    assert keras_model.evaluate(model, data.val.images, data.val.labels) == \
        pytest.approx(history.history["val_accuracy"][-1], abs=1e-6)
