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
                    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
                    "GlobalMaxPooling2D", "ZeroPadding2D", "Rescaling", "Flatten", "Dense",
                    "Softmax")
# Layers that are the identity at inference: dropped.
IDENTITY_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianDropout",
                   "GaussianNoise", "AlphaDropout", "RandomFlip", "RandomTranslation",
                   "RandomRotation", "RandomZoom", "RandomContrast", "RandomBrightness")
_SUPPORTED_TEXT = ("supported layers: InputLayer, Conv2D, Dense (activation linear or relu; "
                   "softmax on the output layer), BatchNormalization, Rescaling, ReLU or "
                   "Activation('relu'), "
                   "MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, "
                   "GlobalMaxPooling2D, ZeroPadding2D, Flatten, and Dropout or random "
                   "augmentation layers (dropped), in a single chain (Sequential or functional, "
                   "nested models allowed)")


def _keras():
    import keras  # lazily: numpy-only users of export/ never pay for TensorFlow

    return keras


def reference_cnn(seed: Optional[int] = None, input_shape=INPUT_SHAPE,
                  num_classes: int = NUM_CLASSES):
    """The reference MNIST CNN (see the module docstring), untrained and built.

    ``seed`` fixes the Glorot-uniform kernels and the dropout masks (each layer gets its own
    derived seed, so no two kernels are drawn from the same stream); None draws from Keras's
    global generator (seeded by keras.utils.set_random_seed). Other datasets get the same
    layers for their own ``input_shape`` (at least 16x16) and ``num_classes``.
    """
    keras = _keras()
    layers = keras.layers
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3 or min(input_shape[:2]) < 16:
        raise ValueError(f"reference CNN: input shape {input_shape}; expected (h, w, c) with h "
                         "and w >= 16 (two 5x5 VALID convolutions and two 2x2 pools)")

    def glorot(offset: int):
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + offset)

    def batch_norm(name: str):
        return layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=name)

    inputs = keras.Input(shape=input_shape, name="input")
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
    outputs = layers.Dense(num_classes, activation=None, use_bias=True,
                           kernel_initializer=glorot(3), bias_initializer="zeros", name="fc1")(x)
    return keras.Model(inputs, outputs, name="t2fsnn_mnist_cnn")


VGG_LAYOUT = "32,32,M,64,64,M,128,128,M"
VGG_DENSE = (256,)
VGG_DROPOUT = 0.4


def parse_vgg_layout(layout: str) -> List:
    """'32,32,M,64,...' -> [32, 32, 'M', 64, ...]: conv widths and 'M' for a 2x2 max pool."""
    items = []
    for word in str(layout).replace(" ", "").split(","):
        if word.upper() == "M":
            items.append("M")
        elif word.isdigit() and int(word) > 0:
            items.append(int(word))
        else:
            raise ValueError(f"VGG layout {layout!r}: item {word!r}; expected positive conv "
                             "widths and M for a 2x2 max pool, comma-separated (e.g. "
                             f"{VGG_LAYOUT})")
    if not any(isinstance(item, int) for item in items):
        raise ValueError(f"VGG layout {layout!r} has no convolution; expected e.g. {VGG_LAYOUT}")
    return items


def vgg_cnn(input_shape=INPUT_SHAPE, num_classes: int = NUM_CLASSES, layout: str = VGG_LAYOUT,
            dense=VGG_DENSE, dropout: float = VGG_DROPOUT, seed: Optional[int] = None):
    """A VGG-style CNN: 3x3 SAME convolutions without bias, each followed by BatchNormalization
    and ReLU, 2x2 max pools where the layout says M, then Flatten, and per hidden dense layer
    Dropout, Dense (no bias), BatchNormalization, ReLU; finally Dropout and the output Dense.

    The default layout is six convolutions in three blocks (32-32, 64-64, 128-128 channels)
    and one hidden dense layer of 256: the Fashion-MNIST reference network of docs/RESULTS.md.
    Layer names: conv1.., bn1.., relu1.., pool1.., flatten, fc1.. (hidden), output.
    """
    keras = _keras()
    layers = keras.layers
    items = parse_vgg_layout(layout)
    dense = [int(v) for v in dense]
    counter = iter(range(1, 10_000))

    def init():
        return keras.initializers.HeNormal(seed=None if seed is None else seed + next(counter))

    def batch_norm(name: str):
        return layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=name)

    inputs = keras.Input(shape=tuple(int(v) for v in input_shape), name="input")
    x = inputs
    conv = pool = 0
    for item in items:
        if item == "M":
            pool += 1
            if min(int(v) for v in x.shape[1:3]) < 2:
                raise ValueError(f"VGG layout {layout!r}: pool{pool} gets a {x.shape[1]}x"
                                 f"{x.shape[2]} input; expected at least 2x2 (fewer M)")
            x = layers.MaxPooling2D((2, 2), strides=(2, 2), padding="valid",
                                    name=f"pool{pool}")(x)
            continue
        conv += 1
        x = layers.Conv2D(item, (3, 3), padding="same", use_bias=False,
                          kernel_initializer=init(), name=f"conv{conv}")(x)
        x = batch_norm(f"bn{conv}")(x)
        x = layers.ReLU(name=f"relu{conv}")(x)
    x = layers.Flatten(name="flatten")(x)
    for index, units in enumerate(dense, start=1):
        x = layers.Dropout(dropout, seed=None if seed is None else seed + 500 + index,
                           name=f"dropout{index}")(x)
        x = layers.Dense(units, use_bias=False, kernel_initializer=init(), name=f"fc{index}")(x)
        x = batch_norm(f"bn_fc{index}")(x)
        x = layers.ReLU(name=f"relu_fc{index}")(x)
    x = layers.Dropout(dropout, seed=None if seed is None else seed + 999,
                       name=f"dropout{len(dense) + 1}")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(
        seed=None if seed is None else seed + 1000), name="output")(x)
    return keras.Model(inputs, outputs, name="vgg_cnn")


# ----------------------------------------------------------------------------------------------
# Supported user models


def _activation_name(activation) -> str:
    name = getattr(activation, "__name__", None)
    if name is None:
        name = type(activation).__name__
    return name


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _layer_problem(layer) -> Optional[str]:
    """Why this layer cannot be converted, or None when it can."""
    kind = type(layer).__name__
    config = layer.get_config()
    if kind not in SUPPORTED_LAYERS and kind not in IDENTITY_LAYERS:
        return "is not supported"
    if config.get("data_format", "channels_last") not in ("channels_last", None):
        return f"has data_format {config['data_format']!r}; expected 'channels_last'"
    if kind in ("Conv2D", "Dense"):
        activation = _activation_name(layer.activation)
        if activation not in ("linear", "relu", "softmax"):  # softmax: output layer only
            return f"has activation {activation!r}; expected 'linear' or 'relu'"
    if kind == "Conv2D":
        if tuple(_pair(config.get("dilation_rate", (1, 1)))) != (1, 1):
            return f"has dilation_rate {config['dilation_rate']}; expected (1, 1)"
        if config.get("groups", 1) != 1:
            return f"has groups {config['groups']}; expected 1"
    if kind in ("Conv2D", "MaxPooling2D", "AveragePooling2D") \
            and config.get("padding") not in ("valid", "same"):
        return f"has padding {config.get('padding')!r}; expected 'valid' or 'same'"
    if kind == "Activation" and _activation_name(layer.activation) not in ("relu", "linear",
                                                                           "softmax"):
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


def _is_model(layer) -> bool:
    return type(layer).__name__ in ("Sequential", "Functional", "Model") or \
        (hasattr(layer, "layers") and hasattr(layer, "inputs") and
         type(layer).__name__ not in SUPPORTED_LAYERS)


def _check_chain(model, layers) -> None:
    """A functional model must be one straight chain: every layer fed by the one before."""
    if type(model).__name__ == "Sequential":
        return
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


def _flat_layers(model) -> List:
    """The model's layers in order, nested Sequential/functional sub-models expanded, InputLayer
    dropped; every model on the way checked to be a single chain."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    _check_chain(model, layers)
    flat = []
    for layer in layers:
        if _is_model(layer):
            flat.extend(_flat_layers(layer))
        else:
            flat.append(layer)
    return flat


def check_supported(model) -> List:
    """The model's layers in order (InputLayer dropped, nested models expanded) after checking
    they can be converted, one by one (what a layer does in context, e.g. a BatchNormalization
    that cannot be folded, is checked by export.convert.lower_keras_model).

    Raises ValueError naming the first offending layer (name and class) and what is supported.
    """
    layers = _flat_layers(model)
    for layer in layers:
        problem = _layer_problem(layer)
        if problem is not None:
            raise ValueError(f"model '{model.name}': layer '{layer.name}' "
                             f"({type(layer).__name__}) {problem}; {_SUPPORTED_TEXT}")
    input_shape = tuple(model.inputs[0].shape[1:]) if model.inputs else None
    if input_shape is None or len(input_shape) != 3 or None in input_shape:
        raise ValueError(f"model '{model.name}': input shape {input_shape}; expected a fixed "
                         "image shape (h, w, c)")
    return layers


def starts_with_rescaling(model) -> bool:
    """Whether the first layer that does something at inference is a Rescaling: the sign of a
    model that expects 0-255 pixels (Keras tutorials put Rescaling(1./255) first)."""
    for layer in _flat_layers(model):
        kind = type(layer).__name__
        if kind in IDENTITY_LAYERS:
            continue
        return kind == "Rescaling"
    return False


MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_user_model(path):
    """Load a saved Keras model (.keras; .h5 from Keras 3 or legacy Keras 2) made only of
    supported layers (see check_supported)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such Keras model file (expected a .keras or .h5 "
                                "file written by model.save)")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ValueError(f"{path}: suffix {path.suffix!r}; expected a Keras model file ending "
                         f"in {', '.join(MODEL_SUFFIXES)}")
    try:
        model = _keras().models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many kinds for files it cannot read
        raise ValueError(f"{path}: Keras cannot load it ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}); expected a "
                         "model saved by Keras's model.save (.keras, or .h5 from Keras 2 or "
                         "3)") from None
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


def _model_inputs(split, input_scale: float = 1.0):
    """float32 inputs in [0, 1] (bytes / 255) times the Keras model's input scale (255 for a
    model trained on 0-255 pixels), and int32 labels."""
    x = scaled_inputs(split.images, input_scale)
    return x, np.asarray(split.labels).astype(np.int32)


def scaled_inputs(images, input_scale: float = 1.0) -> np.ndarray:
    """What the Keras model is fed: the [0, 1] network input (uint8 / 255, floats as they are)
    times input_scale (1 for models trained on [0, 1] pixels, 255 for 0-255 pixels)."""
    x = to_float32(np.asarray(images))
    if input_scale != 1.0:
        x = x * np.float32(input_scale)
    return x


def _reseed_layer_generators(model, seed: int) -> None:
    """Give every seeded layer (Dropout) a state derived from `seed`, so train(seed) alone fixes
    the dropout masks even when the model was built without a seed."""
    for index, layer in enumerate(model.layers):
        generator = getattr(layer, "seed_generator", None)
        state = getattr(generator, "state", None)
        if state is not None:
            state.assign(np.array([seed * 1009 + index + 1, 0], dtype=state.dtype))


def _shifted_batches(keras, x, y, batch_size: int, shift: int, seed: int, flip: bool = False):
    """Training batches, reshuffled every epoch, each image translated by a random whole
    number of pixels in [-shift, shift] along each axis (zero fill) and, with flip, mirrored
    left-right with probability 1/2: data augmentation."""

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
            if flip:
                mirror = self.rng.random(len(chosen)) < 0.5
                cols = np.where(mirror[:, None], cols[:, ::-1], cols)
            batch = self.padded[chosen[:, None, None], rows[:, :, None], cols[:, None, :]]
            return batch, y[chosen]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(x))

    return ShiftedBatches()


def train(model, data, epochs: int, batch_size: int = 100, learning_rate: float = 1e-3,
          seed: int = 0, checkpoint=None, verbose: int = 1, augment_shift: int = 0,
          cosine_decay: bool = False, keep: str = "best", augment_flip: bool = False,
          input_scale: float = 1.0) -> TrainingHistory:
    """Train with Adam on softmax cross-entropy of the logits; keep the best-validation epoch.

    The reference recipe is the default (constant learning rate, no augmentation). Two
    options go beyond it: augment_shift > 0 translates every training image by up to that many
    pixels per axis, anew each epoch; cosine_decay lowers the learning rate along a cosine
    from learning_rate to 0 over the epochs. keep="last" keeps the weights of the final epoch
    instead of the best-validation one (natural with cosine_decay, whose last epochs are the
    most converged); best_epoch then names the final epoch. augment_flip mirrors each training
    image left-right with probability 1/2 (anew every epoch). input_scale multiplies the [0, 1]
    pixels before the model sees them (255 for a model that expects 0-255 pixels).

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
    x_train, y_train = _model_inputs(data.train, input_scale)
    x_val, y_val = _model_inputs(data.val, input_scale)

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
    if augment_shift or augment_flip:
        batches = _shifted_batches(keras, x_train, y_train, batch_size, augment_shift, seed,
                                   flip=augment_flip)
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


def predict_logits(model, images, batch_size: int = 1000, progress: Optional[bool] = None,
                   input_scale: float = 1.0):
    """The model's outputs in inference mode (BN moving statistics, no dropout), batched.

    uint8 images are scaled by 1/255 first; float32 images are used as they are; then both are
    multiplied by input_scale (255 for a model that expects 0-255 pixels).
    """
    x = scaled_inputs(images, input_scale)
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


def evaluate(model, images, labels, batch_size: int = 1000, input_scale: float = 1.0) -> float:
    """Top-1 accuracy (0..1) of the model's logits, argmax with ties to the lowest index."""
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"evaluate: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("evaluate: no images")
    logits = predict_logits(model, images, batch_size, input_scale=input_scale)
    return float(np.mean(np.argmax(logits, axis=1) == labels))
