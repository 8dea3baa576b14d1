"""The reference MNIST CNN, its training, and loading a user's own Keras model.

TensorFlow/Keras is imported inside the functions that need it, so this module (and
`check_supported`, which only looks at class names and configs) imports with numpy alone.

Layer names of `reference_cnn` (docs/ALGORITHM.md section 1), in order:

    input    InputLayer 28x28x1
    conv1    Conv2D 5x5, 12 filters, VALID, bias, linear        -> 24x24x12
    bn1      BatchNormalization (momentum 0.99, epsilon 1e-3)
    relu1    ReLU
    pool1    MaxPooling2D 2x2 stride 2                          -> 12x12x12
    conv2    Conv2D 5x5, 64 filters, VALID, bias, linear        -> 8x8x64
    bn2      BatchNormalization
    relu2    ReLU
    pool2    MaxPooling2D 2x2 stride 2                          -> 4x4x64
    flatten  Flatten (NHWC order: index = (h*4 + w)*64 + c)     -> 1024
    dropout  Dropout 0.5 (training only)
    fc1      Dense 1024 -> 10, bias, linear (logits)

The converted network keeps the names of the weight layers (conv1, conv2, fc1) and pools.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from export.datasets import to_float32

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10

SUPPORTED_LAYERS = ("InputLayer", "Conv2D", "BatchNormalization", "ReLU", "Activation",
                    "MaxPooling2D", "Flatten", "Dropout", "Dense")
_SUPPORTED_TEXT = ("supported layers: InputLayer, Conv2D, BatchNormalization, ReLU or "
                   "Activation('relu'), MaxPooling2D, Flatten, Dropout, Dense (Conv2D/Dense "
                   "activation linear or relu), in a single chain")


def _keras():
    import keras  # lazily: numpy-only users of export/ never pay for TensorFlow

    return keras


def reference_cnn(seed: Optional[int] = None):
    """The reference MNIST CNN (see the module docstring), untrained and built.

    ``seed`` fixes the Glorot-uniform kernels and the dropout masks (each layer gets its own
    derived seed, so no two kernels are drawn from the same stream); None draws from Keras's
    global generator (seeded by keras.utils.set_random_seed).
    """
    keras = _keras()
    layers = keras.layers

    def glorot(offset: int):
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + offset)

    def batch_norm(name: str):
        return layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=name)

    inputs = keras.Input(shape=INPUT_SHAPE, name="input")
    x = layers.Conv2D(12, (5, 5), strides=1, padding="valid", use_bias=True,
                      kernel_initializer=glorot(1), bias_initializer="zeros", name="conv1")(inputs)
    x = batch_norm("bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling2D((2, 2), strides=(2, 2), padding="valid", name="pool1")(x)
    x = layers.Conv2D(64, (5, 5), strides=1, padding="valid", use_bias=True,
                      kernel_initializer=glorot(2), bias_initializer="zeros", name="conv2")(x)
    x = batch_norm("bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D((2, 2), strides=(2, 2), padding="valid", name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.5, seed=None if seed is None else seed + 4, name="dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, activation=None, use_bias=True,
                           kernel_initializer=glorot(3), bias_initializer="zeros", name="fc1")(x)
    return keras.Model(inputs, outputs, name="t2fsnn_mnist_cnn")


# ----------------------------------------------------------------------------------------------
# Supported user models


def _activation_name(activation) -> str:
    name = getattr(activation, "__name__", None)
    if name is None:
        name = type(activation).__name__
    return name


def _layer_problem(layer) -> Optional[str]:
    """Why this layer cannot be converted, or None when it can."""
    kind = type(layer).__name__
    config = layer.get_config()
    if kind not in SUPPORTED_LAYERS:
        return "is not supported"
    if config.get("data_format", "channels_last") != "channels_last":
        return f"has data_format {config['data_format']!r}; expected 'channels_last'"
    if kind in ("Conv2D", "Dense"):
        activation = _activation_name(layer.activation)
        if activation not in ("linear", "relu"):
            return f"has activation {activation!r}; expected 'linear' or 'relu'"
    if kind == "Conv2D":
        if tuple(config.get("dilation_rate", (1, 1))) != (1, 1):
            return f"has dilation_rate {config['dilation_rate']}; expected (1, 1)"
        if config.get("groups", 1) != 1:
            return f"has groups {config['groups']}; expected 1"
    if kind in ("Conv2D", "MaxPooling2D") and config.get("padding") not in ("valid", "same"):
        return f"has padding {config.get('padding')!r}; expected 'valid' or 'same'"
    if kind == "Activation" and _activation_name(layer.activation) != "relu":
        return f"is Activation({_activation_name(layer.activation)!r}); expected 'relu'"
    if kind == "ReLU":
        if (config.get("max_value") is not None or config.get("negative_slope", 0.0) != 0.0
                or config.get("threshold", 0.0) != 0.0):
            return (f"is a clipped/leaky ReLU (max_value {config.get('max_value')}, "
                    f"negative_slope {config.get('negative_slope')}, threshold "
                    f"{config.get('threshold')}); expected a plain ReLU")
    if kind == "BatchNormalization":
        axis = config.get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        rank = len(layer.input.shape) if hasattr(layer, "input") else None
        if axis not in (-1, None if rank is None else rank - 1):
            return f"normalises axis {config.get('axis')}; expected the channel axis -1"
    return None


def check_supported(model) -> List:
    """The model's layers in order (InputLayer dropped) after checking they can be converted.

    Raises ValueError naming the first offending layer (name and class) and what is supported.
    """
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    for layer in layers:
        problem = _layer_problem(layer)
        if problem is not None:
            raise ValueError(f"model '{model.name}': layer '{layer.name}' "
                             f"({type(layer).__name__}) {problem}; {_SUPPORTED_TEXT}")
    if type(model).__name__ != "Sequential":
        # A functional model must be one straight chain: every layer fed by the one before.
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(f"model '{model.name}' has {len(model.inputs)} inputs and "
                             f"{len(model.outputs)} outputs; expected one of each "
                             f"({_SUPPORTED_TEXT})")
        previous = model.inputs[0]
        for layer in layers:
            if len(getattr(layer, "_inbound_nodes", [None])) != 1 or layer.input is not previous:
                raise ValueError(f"model '{model.name}': layer '{layer.name}' "
                                 f"({type(layer).__name__}) is not fed by the layer before it "
                                 f"(branches or shared layers); {_SUPPORTED_TEXT}")
            previous = layer.output
        if previous is not model.outputs[0]:
            raise ValueError(f"model '{model.name}': the last layer '{layers[-1].name}' is not "
                             f"the model's output; {_SUPPORTED_TEXT}")
    input_shape = tuple(model.inputs[0].shape[1:]) if model.inputs else None
    if input_shape is None or len(input_shape) != 3 or None in input_shape:
        raise ValueError(f"model '{model.name}': input shape {input_shape}; expected a fixed "
                         "image shape (h, w, c)")
    return layers


def load_user_model(path):
    """Load a saved .keras model made only of supported layers (see check_supported)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such Keras model file (expected a .keras file "
                                "written by model.save)")
    model = _keras().models.load_model(path, compile=False)
    try:
        check_supported(model)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return model


# ----------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainingHistory:
    """Per-epoch metrics (the keys of keras's History.history) and the epoch kept."""

    history: Dict[str, List[float]] = field(default_factory=dict)
    best_epoch: int = -1  # 1-based
    best_val_accuracy: float = float("nan")
    checkpoint: Optional[Path] = None
    seconds: float = 0.0


def _model_inputs(split, divisor: float = 255.0):
    images = np.asarray(split.images)
    x = to_float32(images, divisor) if images.dtype == np.uint8 else images.astype(np.float32)
    return x, np.asarray(split.labels).astype(np.int32)


def _reseed_layer_generators(model, seed: int) -> None:
    """Give every seeded layer (Dropout) a state derived from `seed`, so train(seed) alone fixes
    the dropout masks even when the model was built without a seed."""
    for index, layer in enumerate(model.layers):
        generator = getattr(layer, "seed_generator", None)
        state = getattr(generator, "state", None)
        if state is not None:
            state.assign(np.array([seed * 1009 + index + 1, 0], dtype=state.dtype))


def _shifted_batches(keras, x, y, batch_size: int, shift: int, seed: int):
    """Training batches, reshuffled every epoch, each image translated by a random whole
    number of pixels in [-shift, shift] along each axis (zero fill): data augmentation."""

    class ShiftedBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))
            self.padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))

        def __len__(self):
            return (len(x) + batch_size - 1) // batch_size

        def __getitem__(self, index):
            chosen = self.order[index * batch_size:(index + 1) * batch_size]
            h, w = x.shape[1:3]
            dy, dx = self.rng.integers(0, 2 * shift + 1, size=(2, len(chosen)))
            rows = dy[:, None] + np.arange(h)[None, :]
            cols = dx[:, None] + np.arange(w)[None, :]
            batch = self.padded[chosen[:, None, None], rows[:, :, None], cols[:, None, :]]
            return batch, y[chosen]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(x))

    return ShiftedBatches()


def train(model, data, epochs: int, batch_size: int = 100, learning_rate: float = 1e-3,
          seed: int = 0, checkpoint=None, verbose: int = 1, augment_shift: int = 0,
          cosine_decay: bool = False, keep: str = "best") -> TrainingHistory:
    """Train with Adam on softmax cross-entropy of the logits; keep the best-validation epoch.

    The reference recipe is the default (constant learning rate, no augmentation). Two
    options go beyond it: augment_shift > 0 translates every training image by up to that many
    pixels per axis, anew each epoch; cosine_decay lowers the learning rate along a cosine
    from learning_rate to 0 over the epochs. keep="last" keeps the weights of the final epoch
    instead of the best-validation one (natural with cosine_decay, whose last epochs are the
    most converged); best_epoch then names the final epoch.

    ``data`` has ``.train`` and ``.val`` splits (an export.datasets.Mnist, or anything with
    ``.images`` uint8 or float32 (n, h, w, c) and ``.labels``). After training the model holds
    the weights of the epoch with the highest validation accuracy (the first such epoch on
    ties); with ``checkpoint`` (a path ending in .keras) that model is also saved there
    whenever it improves. Seeded with keras.utils.set_random_seed(seed): same seed, same
    weights.
    """
    keras = _keras()
    if epochs < 1:
        raise ValueError(f"epochs {epochs}; expected >= 1")
    checkpoint = None if checkpoint is None else Path(checkpoint)
    if checkpoint is not None and checkpoint.suffix != ".keras":
        raise ValueError(f"checkpoint {checkpoint}: expected a path ending in .keras")
    keras.utils.set_random_seed(seed)
    _reseed_layer_generators(model, seed)
    x_train, y_train = _model_inputs(data.train)
    x_val, y_val = _model_inputs(data.val)

    if keep not in ("best", "last"):
        raise ValueError(f"keep {keep!r}; expected 'best' or 'last'")
    if augment_shift < 0:
        raise ValueError(f"augment_shift {augment_shift}; expected >= 0")
    steps_per_epoch = (len(x_train) + batch_size - 1) // batch_size
    rate = (keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps_per_epoch)
            if cosine_decay else learning_rate)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    result = TrainingHistory(checkpoint=checkpoint)

    class KeepBestValidation(keras.callbacks.Callback):
        """Remembers (and saves) the weights of the best validation accuracy so far, and with
        keep="last" those of the final epoch, whatever its accuracy."""

        best_weights = None

        def on_epoch_end(self, epoch, logs=None):
            accuracy = float((logs or {}).get("val_accuracy", float("nan")))
            final = keep == "last" and epoch + 1 == epochs
            if (math.isnan(result.best_val_accuracy) or accuracy > result.best_val_accuracy
                    or final):
                result.best_val_accuracy = accuracy
                result.best_epoch = epoch + 1
                self.best_weights = self.model.get_weights()
                if checkpoint is not None:
                    checkpoint.parent.mkdir(parents=True, exist_ok=True)
                    self.model.save(checkpoint)

    keeper = KeepBestValidation()
    start = time.monotonic()
    if augment_shift:
        batches = _shifted_batches(keras, x_train, y_train, batch_size, augment_shift, seed)
        history = model.fit(batches, epochs=epochs, validation_data=(x_val, y_val),
                            callbacks=[keeper], verbose=verbose)
    else:
        history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs,
                            validation_data=(x_val, y_val), shuffle=True, callbacks=[keeper],
                            verbose=verbose)
    result.seconds = time.monotonic() - start
    result.history = {key: [float(v) for v in values] for key, values in history.history.items()}
    if keeper.best_weights is not None:
        model.set_weights(keeper.best_weights)
    if verbose:
        print(f"trained {epochs} epoch(s) on {len(x_train)} images in {result.seconds:.1f} s; "
              f"kept epoch {result.best_epoch} (validation accuracy "
              f"{100 * result.best_val_accuracy:.2f} % on {len(x_val)} images)"
              + (f", saved to {checkpoint}" if checkpoint is not None else ""))
    return result


def predict_logits(model, images, batch_size: int = 1000, progress: Optional[bool] = None):
    """The model's outputs in inference mode (BN moving statistics, no dropout), batched.

    uint8 images are scaled by 1/255 first; float32 images are used as they are.
    """
    images = np.asarray(images)
    x = to_float32(images) if images.dtype == np.uint8 else images.astype(np.float32)
    batches = range(0, len(x), batch_size)
    if progress is None:
        progress = len(batches) > 10
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="evaluate", unit="batch")
    outputs = [np.asarray(model(x[i:i + batch_size], training=False)) for i in batches]
    if not outputs:
        return np.zeros((0,) + tuple(model.outputs[0].shape[1:]), dtype=np.float32)
    return np.concatenate(outputs)


def evaluate(model, images, labels, batch_size: int = 1000) -> float:
    """Top-1 accuracy (0..1) of the model's logits, argmax with ties to the lowest index."""
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"evaluate: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("evaluate: no images")
    logits = predict_logits(model, images, batch_size)
    return float(np.mean(np.argmax(logits, axis=1) == labels))
