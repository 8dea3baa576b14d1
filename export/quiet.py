"""Quiet background: keep the hidden neurons of the converted network silent on blank input.

Why: after BN fusion and normalisation, a hidden neuron whose bias b~ reaches the lowest
threshold of its fire window fires even when nothing reaches it: on every blank position of
every image, at one fixed step. Several conv1 channels of our MNIST ANNs do that (an all-zero
image makes them fire 2 300-2 900 conv1 neurons), which is about half of all conv1 spikes
(docs/RESULTS.md, "Quiet background").

How (`python -m export train --quiet-background EPOCHS`):

1. fold every BatchNormalization into the Conv2D/Dense before it (the same function: the
   converter fuses it the same way, docs/ALGORITHM.md section 2), so the layer's bias is the bias
   the spiking network gets, up to the positive normalisation factor;
2. clip the biases of the hidden Conv2D/Dense layers to <= 0. Then an all-zero image leaves
   every hidden potential at b~ <= 0 below every (positive) threshold: no hidden neuron
   fires, at any depth, because the layers below are silent too;
3. fine-tune for a few epochs with those biases held <= 0 (a constraint applied after every
   optimiser step), a cosine-decaying learning rate, the training run's augmentation, and
   optionally an L1 penalty on the hidden activations (per image, mean over the batch), which
   makes more activations exactly 0: fewer spikes.

The result is saved without the constraint and the penalty: a plain Keras model (Conv2D with
bias, ReLU, MaxPooling2D, Flatten, Dropout, Dense) that the rest of the pipeline converts like
any user model. TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import time
from typing import List, Optional

import numpy as np


def _keras():
    import keras

    return keras


def _weight_layers(layers) -> List:
    return [layer for layer in layers if type(layer).__name__ in ("Conv2D", "Dense")]


def rebuild(model, *, nonpositive_bias: bool, activity_l1: float = 0.0):
    """A copy of the (supported, single-chain) Keras model with every BatchNormalization folded
    into the Conv2D/Dense before it and dropped, the same layer names otherwise.

    nonpositive_bias: the hidden Conv2D/Dense layers (all but the last weight layer) get their
    biases clipped to <= 0 and a constraint that keeps them there while training.
    activity_l1: > 0 adds an L1 penalty activity_l1 * sum |a| (per image) on the output of
    every hidden layer's ReLU."""
    from export.convert import _bn_parameters, fold_batch_norm
    from export.keras_model import check_supported

    keras = _keras()
    chain = check_supported(model)
    last_weight = _weight_layers(chain)[-1].name
    folded = {}  # weight layer name -> (kernel, bias) after folding its BN
    owner = None
    for layer in chain:
        kind = type(layer).__name__
        if kind in ("Conv2D", "Dense"):
            bias = layer.bias.numpy() if getattr(layer, "bias", None) is not None else None
            folded[layer.name] = (np.array(layer.kernel.numpy(), np.float32),
                                  np.zeros(layer.kernel.shape[-1], np.float32) if bias is None
                                  else np.array(bias, np.float32))
            owner = layer.name
        elif kind == "BatchNormalization":
            kernel, bias = folded[owner]
            folded[owner] = fold_batch_norm(kernel, bias,
                                            _bn_parameters(layer, kernel.shape[-1]))

    class NonPositive(keras.constraints.Constraint):
        def __call__(self, w):
            return keras.ops.minimum(w, 0.0)

    class PerImageL1(keras.regularizers.Regularizer):
        # Keras divides an activity penalty by the batch size: this is l1 * sum |a| per image.
        def __init__(self, l1: float):
            self.l1 = float(l1)

        def __call__(self, x):
            return self.l1 * keras.ops.sum(keras.ops.abs(x))

        def get_config(self):
            return {"l1": self.l1}

    penalty = PerImageL1(activity_l1) if activity_l1 > 0 else None
    first = model.layers[0]
    x = inputs = keras.Input(shape=tuple(int(v) for v in model.inputs[0].shape[1:]),
                             name=first.name if type(first).__name__ == "InputLayer" else None)
    built = []
    for layer in chain:
        kind = type(layer).__name__
        config = layer.get_config()
        hidden = kind in ("Conv2D", "Dense") and layer.name != last_weight
        if kind == "BatchNormalization":
            continue
        if kind in ("Conv2D", "Dense"):
            config.update(use_bias=True, bias_constraint=None, kernel_constraint=None,
                          kernel_regularizer=None, bias_regularizer=None,
                          activity_regularizer=None)
            new = type(layer).from_config(config)
            if hidden and nonpositive_bias:
                new.bias_constraint = NonPositive()
            if hidden and penalty is not None and config.get("activation") == "relu":
                new.activity_regularizer = penalty
        elif kind in ("ReLU", "Activation"):
            config.pop("activity_regularizer", None)
            new = type(layer).from_config(config)
            if penalty is not None and built and built[-1][0] != last_weight:
                new.activity_regularizer = penalty
        else:
            new = type(layer).from_config(config)
        x = new(x)
        if kind in ("Conv2D", "Dense"):
            kernel, bias = folded[layer.name]
            if hidden and nonpositive_bias:
                bias = np.minimum(bias, 0.0).astype(np.float32)
            new.set_weights([kernel, bias])
            built.append((layer.name, new))
    return keras.Model(inputs, x, name=model.name)


def fine_tune(model, data, *, epochs: int, learning_rate: float = 1e-4, batch_size: int = 100,
              seed: int = 0, augment_shift: int = 0, activity_l1: float = 0.0,
              verbose: int = 1):
    """Steps 1-3 of the module doc. Returns (plain Keras model, record): the record holds what
    was done and the accuracies before and after (validation and test, Keras)."""
    from export.keras_model import evaluate, train

    if epochs < 1:
        raise ValueError(f"quiet-background epochs {epochs}; expected >= 1")
    if not learning_rate > 0:
        raise ValueError(f"quiet-background learning rate {learning_rate}; expected > 0")
    if activity_l1 < 0:
        raise ValueError(f"quiet-background activity L1 {activity_l1}; expected >= 0")
    record = {"epochs": epochs, "learning_rate": learning_rate, "activity_l1": activity_l1,
              "before": {"val_accuracy": evaluate(model, data.val.images, data.val.labels),
                         "test_accuracy": evaluate(model, data.test.images, data.test.labels)}}
    tuned = rebuild(model, nonpositive_bias=True, activity_l1=activity_l1)
    hidden = _weight_layers(tuned.layers)[:-1]
    record["positive_biases_clipped"] = {
        layer.name: int((folded_bias(model, layer.name) > 0).sum()) for layer in hidden}
    record["clipped"] = {"val_accuracy": evaluate(tuned, data.val.images, data.val.labels),
                         "test_accuracy": evaluate(tuned, data.test.images, data.test.labels)}
    started = time.monotonic()
    train(tuned, data, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
          seed=seed, verbose=verbose, augment_shift=augment_shift, cosine_decay=True,
          keep="last")
    record["seconds"] = round(time.monotonic() - started, 1)
    plain = rebuild(tuned, nonpositive_bias=False)
    biases = {layer.name: float(np.max(plain.get_layer(layer.name).bias.numpy()))
              for layer in hidden}
    if any(value > 0 for value in biases.values()):  # the constraint holds after every step
        raise RuntimeError(f"quiet background: positive biases after fine-tuning: {biases}")
    record["largest_hidden_bias"] = biases
    record["after"] = {"val_accuracy": evaluate(plain, data.val.images, data.val.labels),
                       "test_accuracy": evaluate(plain, data.test.images, data.test.labels)}
    return plain, record


def folded_bias(model, name: str) -> np.ndarray:
    """The bias of weight layer `name` with the BatchNormalization after it folded in."""
    from export.convert import fuse_batch_norm

    for layer in fuse_batch_norm(model):
        if layer.name == name:
            return np.zeros(layer.weights.shape[-1], np.float32) if layer.bias is None \
                else np.asarray(layer.bias)
    raise KeyError(f"no weight layer '{name}'")
