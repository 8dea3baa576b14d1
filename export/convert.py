"""From a Keras CNN to the converted network: BN fusion, statistics, normalisation, model spec.

docs/ALGORITHM.md section 2. Everything after `fuse_batch_norm` is numpy only: the fused layers are
plain arrays, the ANN forward pass is an im2col convolution, and the per-neuron percentiles are
exact order statistics gathered in one streaming pass (no need to hold 55000 x 6912 floats).

    layers = fuse_batch_norm(keras_model)                    # W_f, b_f, BN kept per layer
    stats  = collect_statistics(layers, train_images_f32)     # per-neuron p99.9, lambda_l
    normed = normalise(layers, stats.lambdas)                 # W~, b~ (what the SNN runs on)
    spec   = to_model_spec(normed, (28, 28, 1))               # -> export.ttfs_format.ModelSpec
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

INPUT_NAME = "input"  # the statistics key (and model-file layer name) of the input pixels
NEURON_KINDS = ("conv2d", "dense")
DEFAULT_TAU = 20.0
DEFAULT_TD = 0.0


@dataclass
class AnnLayer:
    """One layer of the BN-fused (and later normalised) ANN.

    conv2d weights are HWIO [kh, kw, cin, cout], dense weights [in, out]; bias [out] or None.
    kernel/stride/padding: conv2d and maxpool only. relu: a ReLU follows (conv2d/dense).
    bn: the BatchNormalization folded into this layer, kept because the reference
    time-constant rule re-applies it (docs/ALGORITHM.md section 8): name, gamma, beta,
    moving_mean, moving_variance (float32 arrays) and epsilon (float); None if there was none.
    scale: the lambda_l this layer's outputs were divided by (set by `normalise`).
    """

    kind: str  # "conv2d" | "maxpool" | "flatten" | "dense"
    name: str
    weights: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    kernel: Tuple[int, int] = (0, 0)
    stride: Tuple[int, int] = (0, 0)
    padding: str = "valid"
    relu: bool = False
    bn: Optional[dict] = None
    scale: Optional[float] = None


# ----------------------------------------------------------------------------------------------
# BN fusion


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


def _bn_parameters(bn_layer, channels: int) -> dict:
    """gamma/beta/moving statistics of a Keras BatchNormalization (center/scale may be off)."""
    def values(variable, default):
        if variable is None:
            return np.full(channels, default, dtype=np.float32)
        return np.array(variable.numpy() if hasattr(variable, "numpy") else variable,
                        dtype=np.float32)

    params = {
        "name": bn_layer.name,
        "gamma": values(getattr(bn_layer, "gamma", None), 1.0),
        "beta": values(getattr(bn_layer, "beta", None), 0.0),
        "moving_mean": values(bn_layer.moving_mean, 0.0),
        "moving_variance": values(bn_layer.moving_variance, 1.0),
        "epsilon": float(bn_layer.epsilon),
    }
    for key in ("gamma", "beta", "moving_mean", "moving_variance"):
        if params[key].shape != (channels,):
            raise ValueError(f"BatchNormalization '{bn_layer.name}': {key} of shape "
                             f"{params[key].shape}; expected ({channels},), one per channel")
    return params


def fold_batch_norm(weights, bias, bn: dict) -> Tuple[np.ndarray, np.ndarray]:
    """W_f, b_f of docs/ALGORITHM.md section 2, per output channel (the last weight axis).

    inv = gamma * rsqrt(moving_variance + epsilon); W_f = W * inv; b_f = (b - mean) * inv + beta.
    Computed in float64 and rounded once to float32 (bias None counts as zeros).
    """
    weights = np.asarray(weights, dtype=np.float64)
    channels = weights.shape[-1]
    bias = np.zeros(channels) if bias is None else np.asarray(bias, dtype=np.float64)
    variance = np.asarray(bn["moving_variance"], dtype=np.float64)
    # float32 epsilon: Keras adds it to the float32 variance, so use that value, not 1e-3 exact.
    inv = np.asarray(bn["gamma"], np.float64) / np.sqrt(variance + np.float32(bn["epsilon"]))
    fused_weights = weights * inv
    fused_bias = (bias - np.asarray(bn["moving_mean"], np.float64)) * inv \
        + np.asarray(bn["beta"], np.float64)
    return fused_weights.astype(np.float32), fused_bias.astype(np.float32)


def fuse_batch_norm(model, input_scale: float = 1.0) -> List[AnnLayer]:
    """The Keras model as converter layers: batch norm fused, Dropout dropped, and every other
    foldable layer folded (export.lowering.lower_keras_model; this is its older name).

    Violations raise ValueError naming the layer, its class and what is supported.
    """
    from export.lowering import lower_keras_model

    return lower_keras_model(model, input_scale=input_scale)


def lower_keras_model(model, input_scale: float = 1.0):
    """See export.lowering.lower_keras_model."""
    from export.lowering import lower_keras_model as lower

    return lower(model, input_scale=input_scale)


# ----------------------------------------------------------------------------------------------
# ANN forward pass (numpy)


def _window_geometry(size: int, kernel: int, stride: int, padding: str) -> Tuple[int, int, int]:
    """(output size, pad before, pad after) along one axis, TensorFlow's rules."""
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return out, total // 2, total - total // 2
    if padding != "valid":
        raise ValueError(f"padding {padding!r}; expected 'valid' or 'same'")
    if size < kernel:
        raise ValueError(f"VALID window {kernel} larger than the input {size}")
    return (size - kernel) // stride + 1, 0, 0


def _padded(x: np.ndarray, layer: AnnLayer, fill: float) -> Tuple[np.ndarray, int, int]:
    """x padded for SAME (with `fill`), and the output height and width."""
    (oh, top, bottom), (ow, left, right) = (
        _window_geometry(x.shape[1], layer.kernel[0], layer.stride[0], layer.padding),
        _window_geometry(x.shape[2], layer.kernel[1], layer.stride[1], layer.padding))
    if top or bottom or left or right:
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    return x, oh, ow


def _conv2d(layer: AnnLayer, x: np.ndarray) -> np.ndarray:
    kh, kw, cin, cout = layer.weights.shape
    if x.shape[3] != cin:
        raise ValueError(f"conv2d '{layer.name}': input has {x.shape[3]} channels; its "
                         f"weights expect {cin}")
    x, oh, ow = _padded(x, layer, 0.0)
    sh, sw = layer.stride
    n = x.shape[0]
    kernel = layer.weights.reshape(kh * kw * cin, cout)  # rows in HWIO order (kh, kw, cin)
    if cin <= 4:
        # Few input channels: gather one contiguous plane per (kh, kw, cin) tap and do a single
        # wide matmul; the row-wise im2col below would copy tiny strided rows (3x slower here).
        planes = np.ascontiguousarray(x.transpose(3, 0, 1, 2))
        columns = np.stack([planes[c, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
                            for i in range(kh) for j in range(kw) for c in range(cin)])
        y = (kernel.T @ columns.reshape(kh * kw * cin, -1)).T
    else:
        windows = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sh, ::sw][:, :oh, :ow]
        columns = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, kh * kw * cin)
        y = columns @ kernel
    return y.reshape(n, oh, ow, cout)


def _maxpool(layer: AnnLayer, x: np.ndarray) -> np.ndarray:
    x, oh, ow = _padded(x, layer, -np.inf)
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    # An elementwise maximum over the kh*kw shifted, strided views: much faster than reducing
    # over the two trailing axes of a sliding-window view.
    result = None
    for i in range(kh):
        for j in range(kw):
            view = x[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
            result = view.copy() if result is None else np.maximum(result, view, out=result)
    return result


def _layer_forward(layer: AnnLayer, x: np.ndarray) -> np.ndarray:
    if layer.kind == "conv2d":
        y = _conv2d(layer, x)
    elif layer.kind == "dense":
        if x.ndim != 2 or x.shape[1] != layer.weights.shape[0]:
            raise ValueError(f"dense '{layer.name}': input of shape {x.shape[1:]}; its weights "
                             f"expect ({layer.weights.shape[0]},)")
        y = x @ layer.weights
    elif layer.kind == "maxpool":
        return _maxpool(layer, x)
    elif layer.kind == "flatten":
        return x.reshape(x.shape[0], -1)  # NHWC order: (h * W + w) * C + c
    else:
        raise ValueError(f"layer '{layer.name}': unknown kind {layer.kind!r}; expected conv2d, "
                         "maxpool, flatten or dense")
    if layer.bias is not None:
        y = y + layer.bias
    if layer.relu:
        y = np.maximum(y, 0.0)
    return y.astype(np.float32, copy=False)


def _as_float_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype == np.uint8:
        from export.datasets import to_float32

        images = to_float32(images)
    images = images.astype(np.float32, copy=False)
    if images.ndim != 4:
        raise ValueError(f"images of shape {images.shape}; expected (n, h, w, c)")
    return images


def _batch_activations(layers: List[AnnLayer], x: np.ndarray) -> Dict[str, np.ndarray]:
    """Activations of one batch: the input, then conv/dense after ReLU (before pooling)."""
    activations = {INPUT_NAME: x}
    for layer in layers:
        x = _layer_forward(layer, x)
        if layer.kind in NEURON_KINDS:
            activations[layer.name] = x
    return activations


def _batches(count: int, batch_size: int, progress: Optional[bool], description: str):
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}; expected >= 1")
    starts = range(0, count, batch_size)
    if progress is None:
        progress = count >= 5000
    if progress:
        from tqdm import tqdm

        return tqdm(starts, desc=description, unit="batch")
    return starts


def ann_forward(layers: List[AnnLayer], images, record: bool = True, batch_size: int = 500,
                progress: Optional[bool] = None):
    """Run the (fused or normalised) ANN on float32 images (n, h, w, c), in batches.

    uint8 images are scaled to float32(byte)/255 first. With record=True: a dict from layer
    name to activations, "input" for the pixels and every conv2d/dense layer (after its ReLU,
    before any pooling; conv2d (n, h, w, c), dense (n, units)). With record=False: only the
    output layer's activations (n, ...), which keeps memory small on big sets.
    """
    images = _as_float_images(images)
    parts: Dict[str, List[np.ndarray]] = {}
    for start in _batches(len(images), batch_size, progress, "ANN forward"):
        activations = _batch_activations(layers, images[start:start + batch_size])
        if not record:
            activations = {"output": activations[layers[-1].name]}
        for name, values in activations.items():
            parts.setdefault(name, []).append(values)
    if not parts:  # no images
        return {} if record else np.zeros((0,), dtype=np.float32)
    result = {name: np.concatenate(values) for name, values in parts.items()}
    return result if record else result["output"]


# ----------------------------------------------------------------------------------------------
# Statistics: exact per-neuron percentiles in one streaming pass


def _percentile_ranks(count: int, percentile: float) -> Tuple[int, int, float]:
    """Ranks (ascending, 0-based) and weight numpy's linear percentile interpolates between.

    Mirrors np.percentile(method="linear") for a Python-float q: virtual index (n-1)*q with
    q = percentile/100 in float64, lower = floor, upper = lower+1, gamma = the fraction.
    """
    q = np.true_divide(percentile, 100)
    virtual = (count - 1) * q
    if virtual >= count - 1:
        return count - 1, count - 1, 0.0
    lower = int(np.floor(virtual))
    return lower, lower + 1, float(virtual - lower)


def _interpolate(lower: np.ndarray, upper: np.ndarray, gamma: float) -> np.ndarray:
    """numpy's _lerp in float32 with a weak (Python float) weight: bit-identical results."""
    difference = upper - lower
    if gamma >= 0.5:
        return upper - difference * np.float32(1.0 - gamma)
    return lower + difference * np.float32(gamma)


class _TopValues:
    """The `keep` largest values seen so far, per neuron, streamed over batches of images.

    Until `keep` images have been seen every value is kept. After that only values above the
    neuron's current keep-th largest (its threshold) can matter; they are rare (about
    keep/seen of a batch), so they are queued sparsely and merged in bulk now and then.
    A value equal to the threshold is skipped: swapping equal values leaves the kept multiset
    unchanged, so the result stays exactly the top `keep` order statistics.
    """

    def __init__(self, keep: int):
        self.keep = keep
        self.values: Optional[np.ndarray] = None  # (neurons, <= keep), unordered
        self.threshold: Optional[np.ndarray] = None  # (neurons,) smallest kept value
        self.queued_neurons: List[np.ndarray] = []
        self.queued_values: List[np.ndarray] = []
        self.queued = 0

    def add(self, batch: np.ndarray) -> None:
        rows = batch.reshape(batch.shape[0], -1)  # (images, neurons)
        if self.threshold is None:
            merged = rows.T if self.values is None else np.concatenate([self.values, rows.T], 1)
            if merged.shape[1] > self.keep:
                cut = merged.shape[1] - self.keep
                merged = np.partition(merged, cut, axis=1)[:, cut:]
            self.values = np.ascontiguousarray(merged)
            if self.values.shape[1] == self.keep:
                self.threshold = self.values.min(axis=1)
            return
        images, neurons = np.nonzero(rows > self.threshold)
        if neurons.size:
            self.queued_neurons.append(neurons)
            self.queued_values.append(rows[images, neurons])
            self.queued += neurons.size
            if self.queued > self.values.size:  # merge cost stays proportional to the queue
                self._merge()

    def _merge(self) -> None:
        count, keep = self.values.shape
        neuron_ids = np.concatenate([np.repeat(np.arange(count), keep)] + self.queued_neurons)
        values = np.concatenate([self.values.ravel()] + self.queued_values)
        order = np.lexsort((-values, neuron_ids))  # by neuron, then largest value first
        values, neuron_ids = values[order], neuron_ids[order]
        group_start = np.searchsorted(neuron_ids, np.arange(count))
        rank = np.arange(values.size) - group_start[neuron_ids]
        # Every neuron has at least `keep` entries (its kept ones), so this reshape is exact.
        self.values = values[rank < keep].reshape(count, keep)
        self.threshold = self.values[:, keep - 1]
        self.queued_neurons, self.queued_values, self.queued = [], [], 0

    def lowest_two(self) -> Tuple[np.ndarray, np.ndarray]:
        """The smallest and second smallest kept value per neuron (equal when keep is 1)."""
        if self.queued:
            self._merge()
        if self.values.shape[1] == 1:
            return self.values[:, 0], self.values[:, 0]
        two = np.partition(self.values, 1, axis=1)
        return two[:, 0], two[:, 1]


@dataclass
class ActivationStatistics:
    """Per-neuron percentiles and per-layer lambdas (docs/ALGORITHM.md section 2)."""

    percentile: float
    image_count: int
    percentiles: Dict[str, np.ndarray] = field(default_factory=dict)  # name -> (h, w, c)/(units,)
    lambdas: Dict[str, float] = field(default_factory=dict)  # max over neurons of percentiles
    maxima: Dict[str, float] = field(default_factory=dict)  # largest activation seen

    def summary(self) -> str:
        lines = [f"activation statistics over {self.image_count} images "
                 f"(per-neuron {self.percentile} percentile, lambda = max over neurons)",
                 f"  {'layer':<12} {'neurons':>8} {'lambda':>12} {'max activation':>15}"]
        for name, values in self.percentiles.items():
            lines.append(f"  {name:<12} {values.size:>8} {self.lambdas[name]:>12.6g} "
                         f"{self.maxima[name]:>15.6g}")
        return "\n".join(lines)


def collect_statistics(layers: List[AnnLayer], images, percentile: float = 99.9,
                       batch_size: int = 500, progress: Optional[bool] = None,
                       verbose: Optional[bool] = None) -> ActivationStatistics:
    """Per-neuron percentile of the activations over the images, and lambda per layer.

    Records "input" and every conv2d/dense layer (after ReLU, before pooling) like ann_forward.
    The percentile equals np.percentile(activations, percentile, axis=0) bit for bit (linear
    interpolation), but only the top (n - floor((n-1)q)) values per neuron are ever held, so
    all 55000 training images take megabytes, not gigabytes. verbose (default: with the
    progress bar, i.e. for >= 5000 images) prints the summary table at the end.
    """
    if not 0.0 <= float(percentile) <= 100.0:
        raise ValueError(f"percentile {percentile}; expected a value in [0, 100]")
    images = _as_float_images(images)
    count = len(images)
    if count == 0:
        raise ValueError("collect_statistics: no images; expected at least one")
    lower_rank, upper_rank, gamma = _percentile_ranks(count, percentile)
    keep = count - lower_rank  # ranks lower..n-1 are the `keep` largest values
    trackers: Dict[str, _TopValues] = {}
    shapes: Dict[str, Tuple[int, ...]] = {}
    maxima: Dict[str, float] = {}
    if progress is None:
        progress = count >= 5000
    for start in _batches(count, batch_size, progress, "statistics"):
        activations = _batch_activations(layers, images[start:start + batch_size])
        for name, values in activations.items():
            if not np.all(np.isfinite(values)):
                raise ValueError(f"layer '{name}': non-finite activations in images "
                                 f"{start}..{start + len(values) - 1}")
            trackers.setdefault(name, _TopValues(keep)).add(values)
            shapes[name] = values.shape[1:]
            maxima[name] = max(maxima.get(name, -math.inf), float(values.max()))
    stats = ActivationStatistics(percentile=float(percentile), image_count=count, maxima=maxima)
    for name, tracker in trackers.items():
        lowest, second = tracker.lowest_two()
        upper = second if upper_rank > lower_rank else lowest
        per_neuron = _interpolate(lowest, upper, gamma).reshape(shapes[name])
        stats.percentiles[name] = per_neuron.astype(np.float32, copy=False)
        stats.lambdas[name] = float(per_neuron.max())
    if verbose if verbose is not None else progress:
        print(stats.summary())
    return stats


# ----------------------------------------------------------------------------------------------
# Normalisation and the model spec


def normalise(layers: List[AnnLayer], lambdas) -> List[AnnLayer]:
    """Data-based normalisation: W~ = W_f * lambda_prev / lambda_l, b~ = b_f / lambda_l.

    ``lambdas``: a mapping from "input" and every conv2d/dense name to lambda (or an
    ActivationStatistics). lambda_prev of the first neuron layer is lambda["input"]; pooling
    and flatten pass the scale through. The last layer is normalised too. Each result layer
    records its lambda as ``scale``. Computed in float64, rounded once to float32. Returns new
    layers; the given ones are not modified.
    """
    if isinstance(lambdas, ActivationStatistics):
        lambdas = lambdas.lambdas

    def lookup(name: str) -> float:
        if name not in lambdas:
            raise ValueError(f"lambdas have no entry for layer '{name}' (have "
                             f"{sorted(lambdas)}); expected one per conv2d/dense and 'input'")
        value = float(lambdas[name])
        if not (math.isfinite(value) and value > 0.0):
            raise ValueError(f"lambda of layer '{name}' is {value}; expected a finite value > 0 "
                             "(a layer that never activates cannot be normalised)")
        return value

    previous = lookup(INPUT_NAME)
    result = []
    for layer in layers:
        layer = copy.deepcopy(layer)
        if layer.kind in NEURON_KINDS:
            current = lookup(layer.name)
            layer.weights = (layer.weights.astype(np.float64) * previous / current) \
                .astype(np.float32)
            if layer.bias is not None:
                layer.bias = (layer.bias.astype(np.float64) / current).astype(np.float32)
            layer.scale = current
            previous = current
        result.append(layer)
    return result


MIN_TIME_STEPS = 400  # the reference's T; deeper networks get more


def time_steps_needed(output_depth: int, time_fire_start: int, time_fire_duration: int,
                      readout: str = "vmem") -> int:
    """The last step the output layer at `output_depth` uses, plus one (docs/ALGORITHM.md section 3
    windows): the end of its integration window under vmem readout (it never fires), of its
    fire window under first_spike readout."""
    start = (output_depth - 1) * time_fire_start if readout != "first_spike" else \
        output_depth * time_fire_start
    return start + time_fire_duration


def time_steps_for(output_depth: int, time_fire_start: int = 80, time_fire_duration: int = 80,
                   readout: str = "vmem") -> int:
    """The automatic T: max(400, D*T_s + T_d) for an output layer at depth D (400 for the
    MNIST CNN, D = 3; 720 for the VGG-style network, D = 8), which covers its fire window
    under either readout."""
    return max(MIN_TIME_STEPS, output_depth * time_fire_start + time_fire_duration,
               time_steps_needed(output_depth, time_fire_start, time_fire_duration, readout))


def _per_layer(value, name: str, default: float) -> float:
    """A per-layer constant: one number for every layer, or a mapping with a default."""
    if isinstance(value, Mapping):
        return float(value.get(name, default))
    return float(value)


def to_model_spec(layers: List[AnnLayer], input_shape, *, pool_mode: str = "or",
                  readout: str = "vmem", time_fire_start: int = 80, time_fire_duration: int = 80,
                  time_steps: Optional[int] = None, tau: Union[float, Mapping[str, float]] = DEFAULT_TAU,
                  td: Union[float, Mapping[str, float]] = DEFAULT_TD, vth0: float = 1.0,
                  input_divisor: float = 255.0, metadata=None, require_normalised: bool = True):
    """The converted network as an export.ttfs_format.ModelSpec, ready for write_model.

    Neuron layers (the input "input", every conv2d/dense) get tau_fire = tau, td_fire = td
    (a number for all, or a mapping from layer name to value; names it lacks get 20.0 / 0.0),
    the threshold amplitude vth0, and integration constants chained from the layer below by
    build_model, with the reference windows of time_fire_start/time_fire_duration. Pools use
    `pool_mode` ("or" | "earliest" | "gated"). With require_normalised (default) every conv2d/dense must
    come from `normalise`: raw ANN weights are the classic porting bug (silent outputs).
    metadata (a dict) is merged over a record of these choices and the layers' lambdas.
    time_steps None: automatic, time_steps_for(output depth, ...); a given value that cuts
    off the output layer's windows is an error.
    """
    from export import ttfs_format as fmt

    depth = sum(1 for layer in layers if layer.kind in NEURON_KINDS)
    needed = time_steps_needed(depth, time_fire_start, time_fire_duration, readout)
    if time_steps is None:
        time_steps = time_steps_for(depth, time_fire_start, time_fire_duration, readout)
    elif time_steps < needed:
        raise ValueError(f"time_steps {time_steps} cuts off the output layer (depth {depth}): "
                         f"its {'fire' if readout == 'first_spike' else 'integration'} window "
                         f"ends at step {needed} (T_s {time_fire_start}, T_d "
                         f"{time_fire_duration}); expected time_steps >= {needed}, or leave it "
                         "unset (automatic)")

    known = {INPUT_NAME} | {layer.name for layer in layers}
    for what, value in (("tau", tau), ("td", td)):
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"{what} names unknown layers {unknown}; expected names among "
                                 f"{sorted(known)}")

    def neuron(name: str):
        return fmt.NeuronParams(tau_fire=_per_layer(tau, name, DEFAULT_TAU),
                                td_fire=_per_layer(td, name, DEFAULT_TD), vth0=float(vth0))

    spec_layers = [fmt.input_layer(shape=tuple(int(v) for v in input_shape), name=INPUT_NAME,
                                   divisor=input_divisor, neuron=neuron(INPUT_NAME))]
    for layer in layers:
        if layer.kind in NEURON_KINDS and require_normalised and layer.scale is None:
            raise ValueError(f"layer '{layer.name}' ({layer.kind}) is not normalised; expected "
                             "normalise(layers, lambdas) first (raw ANN weights leave most "
                             "outputs silent), or pass require_normalised=False")
        if layer.kind == "conv2d":
            spec_layers.append(fmt.conv2d(layer.name, layer.weights, layer.bias,
                                          stride=layer.stride, padding=layer.padding,
                                          neuron=neuron(layer.name)))
        elif layer.kind == "dense":
            spec_layers.append(fmt.dense(layer.name, layer.weights, layer.bias,
                                         neuron=neuron(layer.name)))
        elif layer.kind == "maxpool":
            spec_layers.append(fmt.maxpool(layer.name, size=layer.kernel, stride=layer.stride,
                                           padding=layer.padding, mode=pool_mode))
        elif layer.kind == "flatten":
            spec_layers.append(fmt.flatten(layer.name))
        else:
            raise ValueError(f"layer '{layer.name}': unknown kind {layer.kind!r}; expected "
                             "conv2d, maxpool, flatten or dense")

    record = {
        "converter": "export.convert",
        "pool_mode": pool_mode,
        "readout": readout,
        "lambdas": {layer.name: layer.scale for layer in layers if layer.kind in NEURON_KINDS},
        "batch_norm_fused": [layer.name for layer in layers if layer.bn is not None],
    }
    if metadata is None:
        metadata = record
    elif isinstance(metadata, Mapping):
        metadata = {**record, **metadata}
    return fmt.build_model(spec_layers, time_steps, readout=readout, metadata=metadata,
                           time_fire_start=time_fire_start,
                           time_fire_duration=time_fire_duration)
