"""The TensorFlow reference simulator: docs/ALGORITHM.md sections 3-6, one time step at a time.

This is the TTFS network the way the T2FSNN reference TensorFlow code ran it: float32
throughout, vectorised over the batch, every layer advanced once per step in the order of
section 4:

    step t:  input layer fires (x >= vth0*exp(-(f32(t - fire_start) - td)/tau), once, in its
             window; its membrane is x from t = 0)
             then each later layer in file order:
               maxpool  `or`: tf.nn.max_pool2d of this step's 0/1 spike map;
                        `earliest`: the same, masked to units that have not spiked yet;
                        `gated`: the reference's spike-count-gated pool, as it computed it:
                        tf.nn.max_pool_with_argmax of the children's spike counters (0 before
                        a neuron fired, vth(t) at its fire step, 1 after), then this step's
                        spike of the winning child (ties: the first in window order); windows
                        per image (the reference folded the batch into the rows)
               flatten  reshape (NHWC order)
               conv2d / dense: S = tf.nn.conv2d / matmul of this step's spike map, + bias at
                        t == 0 only; when t == 0 or t is in the integration window:
                        V = V + S * k(t), k(0) = 1, else
                        k(t) = exp(-(f32(t - integ_start) - td_integ)/tau_integ)
                        (separate multiply and add, as TensorFlow does them)
                        then in the fire window: V >= vth(t) fires once, V := 0
             the output layer does not fire under `vmem` readout

Each step is one call of a tf.function compiled for the pattern of work that step needs
(which layers receive spikes, integrate, fire); a step where nothing happens is skipped, which
changes no bit (a layer without input adds nothing). A run is a Python loop over the steps.

Thresholds and integration kernels are tables computed once per layer. `exp="tf"` (default)
evaluates them with TensorFlow's own float32 exp, as the reference did; TensorFlow's CPU exp is
not correctly rounded (about 1 in 9 table entries differ by one ulp from the correctly rounded
value). `exp="float64"` computes them in float64 and rounds once, which is what libttfs
(std::exp on float) and tests/reference_numpy.py compute in practice, so that a comparison with
them only has to cope with convolution summation order.

For the tie analysis (docs/ALGORITHM.md section 7: TensorFlow sums a convolution in another order
than libttfs, so a V within rounding of a threshold may fire one step apart) every firing
neuron layer records the membrane potential just before the fire check at the step it fired
(or at the last step of its window when it never fired) and at the check one step earlier;
`SimResult.fire_check` returns them with the thresholds they were compared against.
`record_vmem_steps` additionally keeps the whole pre-check membrane of every firing layer at
chosen steps.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out
import tensorflow as tf  # noqa: E402  (TensorFlow only here: export.ttfs_format stays numpy-only)

F32 = np.float32
NEURON_KINDS = ("input", "conv2d", "dense")
EXP_MODES = ("tf", "float64")


# ---- Tables ---------------------------------------------------------------------------------


def decay_table(amplitude: Optional[float], tau: float, td: float, length: int,
                exp: str = "tf") -> np.ndarray:
    """amplitude * exp(-(f32(j) - td) / tau) for j in [0, length), float32, op by op.

    amplitude None: the integration kernel (no amplitude, not even a multiply by 1)."""
    if exp not in EXP_MODES:
        raise ValueError(f"exp {exp!r} is not one of {EXP_MODES}")
    if not tau > 0:
        raise ValueError(f"time constant tau {tau!r} must be > 0")
    j = np.arange(max(int(length), 0), dtype=F32)
    arg = -((j - F32(td)) / F32(tau))  # float32 subtract, divide; negation is exact
    if exp == "tf":
        e = tf.exp(tf.constant(arg, dtype=tf.float32)).numpy()
    else:
        e = np.exp(arg.astype(np.float64)).astype(F32)
    if amplitude is None:
        return e.astype(F32)
    return (F32(amplitude) * e).astype(F32)


# ---- Result ---------------------------------------------------------------------------------


@dataclass
class SimResult:
    """Everything one simulation produced. Arrays are numpy, images along axis 0."""

    layer_names: List[str]  # every layer, file order
    neuron_layers: List[str]  # input, conv2d and dense layers, file order
    output_layer: str
    readout: str
    first_spike_times: Dict[str, np.ndarray]  # neuron layer -> (n, h, w, c) int32, -1 = never
    output_potentials: np.ndarray  # (n, classes) float32, output V after the last step
    potentials_over_time: np.ndarray  # (len(record_steps), n, classes) float32
    record_steps: np.ndarray  # (n_records,) int32: the steps after which V was recorded
    predictions: np.ndarray  # (n,) int32
    thresholds: Dict[str, np.ndarray]  # firing layer -> (fire_len,) float32 table
    fire_windows: Dict[str, Tuple[int, int]]  # firing layer -> [start, end)
    vmem_at_fire_check: Dict[str, np.ndarray]  # firing layer -> (n, h, w, c) float32
    vmem_at_previous_check: Dict[str, np.ndarray]  # firing layer -> (n, h, w, c), NaN if none
    vmem_before_check: Dict[str, Dict[int, np.ndarray]] = field(default_factory=dict)

    # -- readout over time -----------------------------------------------------------------

    def predictions_over_time(self) -> np.ndarray:
        """(n_records, n) int32: the prediction the readout would give at each record step."""
        out = []
        times = self.first_spike_times[self.output_layer].reshape(self.output_potentials.shape)
        for r, t in enumerate(self.record_steps):
            visible = np.where(times <= t, times, -1)  # spikes that happened by step t
            out.append(predict(self.readout, self.potentials_over_time[r], visible))
        return np.stack(out) if out else np.zeros((0, len(self.predictions)), np.int32)

    def accuracy_over_time(self, labels) -> Tuple[np.ndarray, np.ndarray]:
        """(record_steps, accuracy at each of them) for the given integer labels."""
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != self.predictions.shape[0]:
            raise ValueError(f"labels: {labels.shape[0]} labels for "
                             f"{self.predictions.shape[0]} images")
        preds = self.predictions_over_time()
        return self.record_steps.copy(), (preds == labels[None, :]).mean(axis=1)

    def accuracy(self, labels) -> float:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != self.predictions.shape[0]:
            raise ValueError(f"labels: {labels.shape[0]} labels for "
                             f"{self.predictions.shape[0]} images")
        return float((self.predictions == labels).mean())

    def spike_counts(self) -> Dict[str, np.ndarray]:
        """neuron layer -> (n,) number of its neurons that fired, per image."""
        return {name: (t >= 0).reshape(t.shape[0], -1).sum(axis=1)
                for name, t in self.first_spike_times.items()}

    def no_output_spike(self) -> np.ndarray:
        """(n,) bool: images whose output layer never fired (first_spike readout fallback)."""
        t = self.first_spike_times[self.output_layer]
        return ~(t >= 0).reshape(t.shape[0], -1).any(axis=1)

    # -- tie analysis ----------------------------------------------------------------------

    def threshold_at(self, layer: str, t: int) -> float:
        start, end = self.fire_windows[layer]
        if not start <= t < end:
            raise IndexError(f"layer {layer!r}: step {t} is outside its fire window "
                             f"[{start}, {end})")
        return float(self.thresholds[layer][t - start])

    def fire_check(self, layer: str, image: int, neuron) -> dict:
        """The fire decision of one neuron: first-spike step, and V and the threshold at the
        deciding check (the step it fired, else the last step of its window) and the check
        one step earlier. neuron: (h, w, c) or a flat index in HWC order."""
        if layer not in self.thresholds:
            raise KeyError(f"layer {layer!r} does not fire (firing layers: "
                           f"{sorted(self.thresholds)})")
        shape = self.first_spike_times[layer].shape[1:]
        pos = tuple(np.unravel_index(neuron, shape)) if np.isscalar(neuron) else tuple(neuron)
        start, end = self.fire_windows[layer]
        t_fire = int(self.first_spike_times[layer][(image,) + pos])
        t_check = t_fire if t_fire >= 0 else end - 1
        v = float(self.vmem_at_fire_check[layer][(image,) + pos])
        v_prev = float(self.vmem_at_previous_check[layer][(image,) + pos])
        return {
            "first_spike_time": t_fire,
            "step": t_check,
            "vmem": v,
            "threshold": self.threshold_at(layer, t_check) if end > start else float("nan"),
            "previous_step": t_check - 1 if t_check - 1 >= start else None,
            "previous_vmem": v_prev,
            "previous_threshold": (self.threshold_at(layer, t_check - 1)
                                   if t_check - 1 >= start else float("nan")),
        }

    def threshold_margins(self, layer: str) -> Tuple[np.ndarray, np.ndarray]:
        """Per neuron: (V - vth) at the deciding check, and at the check one step earlier
        (NaN where there is none). A spike-time difference from another engine is a tie when
        one of these is within float rounding of 0."""
        start, end = self.fire_windows[layer]
        fst = self.first_spike_times[layer]
        table = self.thresholds[layer]
        if len(table) == 0:  # an empty fire window: no check ever happened
            nothing = np.full(fst.shape, np.nan, F32)
            return nothing, nothing.copy()
        j = np.where(fst >= 0, fst - start, (end - start) - 1)
        margin = self.vmem_at_fire_check[layer] - table[np.clip(j, 0, len(table) - 1)]
        jp = j - 1
        prev_th = np.where(jp >= 0, table[np.clip(jp, 0, len(table) - 1)], np.nan)
        return margin.astype(F32), (self.vmem_at_previous_check[layer] - prev_th).astype(F32)


def predict(readout: str, potentials, output_times) -> np.ndarray:
    """docs/ALGORITHM.md section 6. potentials (n, classes); output_times (n, classes), -1 = none.

    vmem: argmax of V, ties to the lowest index. first_spike: the class that fired first,
    ties to the lowest index; images without any output spike fall back to the vmem argmax."""
    potentials = np.asarray(potentials)
    by_vmem = np.argmax(potentials, axis=1).astype(np.int32)  # argmax: first maximum
    if readout == "vmem":
        return by_vmem
    if readout != "first_spike":
        raise ValueError(f"readout {readout!r} is not 'vmem' or 'first_spike'")
    times = np.asarray(output_times).reshape(potentials.shape).astype(np.int64)
    fired = times >= 0
    earliest = np.argmin(np.where(fired, times, np.iinfo(np.int64).max), axis=1)
    return np.where(fired.any(axis=1), earliest, by_vmem).astype(np.int32)


# ---- The step program -----------------------------------------------------------------------


@dataclass
class _Plan:
    """What the simulator needs to know about one layer (from the ModelSpec)."""

    index: int
    name: str
    kind: str
    shape: Tuple[int, int, int]
    in_shape: Tuple[int, int, int] = (0, 0, 0)
    fires: bool = False
    fire_window: Tuple[int, int] = (0, 0)
    integ_window: Tuple[int, int] = (0, 0)
    thresholds: Optional[np.ndarray] = None
    kernels: Optional[np.ndarray] = None
    weights: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    kernel: Tuple[int, int] = (0, 0)
    stride: Tuple[int, int] = (1, 1)
    padding: str = "VALID"
    pool_mode: str = "or"

    def fires_at(self, t: int) -> bool:
        return self.fires and self.fire_window[0] <= t < self.fire_window[1]

    def integrates_at(self, t: int) -> bool:
        return t == 0 or self.integ_window[0] <= t < self.integ_window[1]


def _plans(spec, exp: str) -> List[_Plan]:
    layers = list(spec.layers)
    if not layers or layers[0].kind != "input":
        raise ValueError(f"layer 0 must be the input layer, got kind "
                         f"{layers[0].kind if layers else None!r}")
    if layers[-1].kind not in ("conv2d", "dense"):
        raise ValueError(f"the last layer '{layers[-1].name}' is the output layer and must be "
                         f"conv2d or dense, got {layers[-1].kind!r}")
    if spec.readout not in ("vmem", "first_spike"):
        raise ValueError(f"readout {spec.readout!r} is not 'vmem' or 'first_spike'")
    last = len(layers) - 1
    plans = []
    for i, layer in enumerate(layers):
        if layer.out_shape is None:
            raise ValueError(f"layer {i} '{layer.name}': out_shape is None; complete the spec "
                             f"with export.ttfs_format.build_model first")
        plan = _Plan(index=i, name=layer.name, kind=layer.kind,
                     shape=tuple(int(v) for v in layer.out_shape),
                     in_shape=plans[-1].shape if plans else (0, 0, 0))
        if layer.kind in NEURON_KINDS:
            nr = layer.neuron
            if nr is None or nr.fire_window is None:
                raise ValueError(f"layer {i} '{layer.name}': neuron parameters incomplete; "
                                 f"use build_model")
            plan.fires = not (i == last and spec.readout == "vmem")
            plan.fire_window = tuple(int(v) for v in nr.fire_window)
            fire_len = max(plan.fire_window[1] - plan.fire_window[0], 0)
            plan.thresholds = decay_table(nr.vth0, nr.tau_fire, nr.td_fire, fire_len, exp)
            if layer.kind != "input":
                plan.integ_window = tuple(int(v) for v in nr.integ_window)
                integ_len = max(plan.integ_window[1] - plan.integ_window[0], 0)
                plan.kernels = decay_table(None, nr.tau_integ, nr.td_integ, integ_len, exp)
                plan.weights = np.asarray(layer.weights, dtype=F32)
                plan.bias = None if layer.bias is None else np.asarray(layer.bias, dtype=F32)
        elif layer.kind not in ("maxpool", "flatten"):
            raise ValueError(f"layer {i} '{layer.name}': unknown kind {layer.kind!r}; expected "
                             f"one of input, conv2d, maxpool, flatten, dense")
        if layer.kind in ("conv2d", "maxpool"):
            plan.kernel = tuple(int(v) for v in layer.kernel)
            plan.stride = tuple(int(v) for v in layer.stride)
            if layer.padding not in ("valid", "same"):
                raise ValueError(f"layer {i} '{layer.name}': padding {layer.padding!r} is not "
                                 f"'valid' or 'same'")
            plan.padding = layer.padding.upper()
        if layer.kind == "maxpool":
            if layer.pool_mode not in ("or", "earliest", "gated"):
                raise ValueError(f"layer {i} '{layer.name}': pool_mode {layer.pool_mode!r} is "
                                 f"not 'or', 'earliest' or 'gated'")
            if layer.pool_mode == "gated" and plans[-1].kind not in NEURON_KINDS:
                raise ValueError(f"layer {i} '{layer.name}': a gated pool reads the spike "
                                 f"counters of the layer directly below it, which must be a "
                                 f"neuron layer; layer {i - 1} '{plans[-1].name}' is a "
                                 f"{plans[-1].kind}")
            plan.pool_mode = layer.pool_mode
        plans.append(plan)
    return plans


class _Program:
    """One compiled step function per pattern of work; the pattern is known from t alone."""

    def __init__(self, plans: List[_Plan]):
        self.plans = plans
        self._compiled = {}
        self.patch_convolutions = set()  # conv layers where tf.nn.conv2d failed verification
        self._verified_batch_sizes = set()
        self._weights = {p.index: tf.constant(p.weights) for p in plans if p.weights is not None}
        self._bias = {p.index: tf.constant(p.bias) for p in plans if p.bias is not None}
        # tables live in variables so that new constants need no retracing (Simulator.set_constants)
        self._thresholds = {p.index: tf.Variable(p.thresholds, trainable=False)
                            for p in plans if p.fires}
        self._kernels = {p.index: tf.Variable(p.kernels, trainable=False)
                         for p in plans if p.kernels is not None}

    def assign_tables(self, plans: List[_Plan]) -> None:
        for p in plans:
            if p.index in self._thresholds:
                self._thresholds[p.index].assign(p.thresholds)
            if p.index in self._kernels:
                self._kernels[p.index].assign(p.kernels)

    def activity(self, t: int) -> Tuple:
        """Per layer, what it does at step t: ("fire", bool) for the input, ("pool", bool) for
        relays (spikes present), ("neuron", integration, fire, k is 1) for conv/dense where
        integration is None, "bias", "spikes" or "spikes+bias" and k is 1 at t == 0 only.
        All-False means the step can be skipped."""
        pattern = []
        spikes = False
        for p in self.plans:
            if p.kind == "input":
                spikes = p.fires_at(t)
                pattern.append(("fire", spikes))
            elif p.kind in ("maxpool", "flatten"):
                pattern.append(("relay", spikes))
            else:
                integration = None
                if p.integrates_at(t):
                    has_bias = t == 0 and p.bias is not None
                    if spikes and has_bias:
                        integration = "spikes+bias"
                    elif spikes:
                        integration = "spikes"
                    elif has_bias:
                        integration = "bias"
                fires = p.fires_at(t)
                pattern.append(("neuron", integration, fires, t == 0 and integration is not None))
                spikes = fires
        return tuple(pattern)

    @staticmethod
    def idle(pattern) -> bool:
        return not any(any(v for v in entry[1:]) for entry in pattern)

    def step_function(self, pattern):
        fn = self._compiled.get(pattern)
        if fn is None:
            fn = tf.function(lambda state, t: self._step(pattern, state, t),
                             autograph=False, reduce_retracing=True)
            self._compiled[pattern] = fn
        return fn

    def _fire(self, p: _Plan, st: dict, t, checks: dict) -> tf.Tensor:
        """Fire check of a neuron layer at step t (inside its window)."""
        vth = tf.gather(self._thresholds[p.index], t - p.fire_window[0])
        v, fired = st["v"], st["fired"]
        checks[p.name] = v
        undecided = tf.logical_not(fired)  # neurons whose decision is still open at this check
        spike = tf.logical_and(v >= vth, undecided)  # >=, one spike per neuron, ever
        st["prev"] = tf.where(undecided, st["last"], st["prev"])
        st["last"] = tf.where(undecided, v, st["last"])
        st["fst"] = tf.where(spike, t, st["fst"])
        st["v"] = tf.where(spike, tf.zeros_like(v), v)
        st["fired"] = tf.logical_or(fired, spike)
        return tf.cast(spike, tf.float32)

    def _gated_pool(self, p: _Plan, below: dict, spikes, t) -> tf.Tensor:
        """The spike-count-gated pool at step t, after the fire check of the neuron layer
        below (`below`: its state): per window, the spike of this step of the child with the
        largest spike counter."""
        src = self.plans[p.index - 1]
        vth = tf.gather(self._thresholds[src.index], t - src.fire_window[0])
        fired_before = tf.where(below["fired"], tf.ones_like(spikes), tf.zeros_like(spikes))
        counter = tf.where(tf.equal(below["fst"], t), tf.fill(tf.shape(spikes), vth), fired_before)
        _, winner = tf.nn.max_pool_with_argmax(counter, [1, p.kernel[0], p.kernel[1], 1],
                                               [1, p.stride[0], p.stride[1], 1], p.padding,
                                               include_batch_in_index=True)
        return tf.reshape(tf.gather(tf.reshape(spikes, [-1]), tf.reshape(winner, [-1])),
                          tf.shape(winner))

    def _step(self, pattern, state, t):
        state = [dict(s) for s in state]
        checks = {}
        spikes = None
        for p, entry, st in zip(self.plans, pattern, state):
            if p.kind == "input":
                spikes = self._fire(p, st, t, checks) if entry[1] else None
            elif p.kind == "maxpool":
                if spikes is not None and p.pool_mode == "gated":
                    spikes = self._gated_pool(p, state[p.index - 1], spikes, t)
                elif spikes is not None:
                    pooled = tf.nn.max_pool2d(spikes, p.kernel, p.stride, p.padding)
                    if p.pool_mode == "earliest":
                        # true TTFS max-pooling: only the first child spike passes
                        pooled = tf.where(st["passed"], tf.zeros_like(pooled), pooled)
                        st["passed"] = tf.logical_or(st["passed"], pooled > 0)
                    spikes = pooled
            elif p.kind == "flatten":
                if spikes is not None:
                    spikes = tf.reshape(spikes, [-1, 1, 1, p.shape[2]])
            else:
                _, integration, fires, at_zero = entry
                if integration is not None:
                    synaptic = None
                    if "spikes" in integration:
                        w = self._weights[p.index]
                        if p.kind == "conv2d" and p.index in self.patch_convolutions:
                            synaptic = _patch_conv2d(spikes, w, p)
                        elif p.kind == "conv2d":
                            synaptic = tf.nn.conv2d(spikes, w, p.stride, p.padding)
                        else:
                            flat = tf.reshape(spikes, [-1, w.shape[0]])
                            synaptic = tf.reshape(tf.matmul(flat, w), [-1, 1, 1, w.shape[1]])
                    if "bias" in integration:  # the bias enters once, at t == 0
                        b = self._bias[p.index]
                        synaptic = b if synaptic is None else synaptic + b
                    if at_zero:  # k(0) = 1, whatever the window and constants
                        k = tf.constant(1.0, tf.float32)
                    else:
                        k = tf.gather(self._kernels[p.index], t - p.integ_window[0])
                    st["v"] = st["v"] + synaptic * k
                spikes = self._fire(p, st, t, checks) if fires else None
        return state, checks

    def verify_convolutions(self, batch: int) -> None:
        """Check tf.nn.conv2d on every conv layer against a float64 numpy convolution, once
        per batch size, on a random 0/1 map; a layer that fails uses _patch_conv2d instead.

        Why: TensorFlow 2.21's oneDNN convolution (on by default on x86 CPUs) returns wrong
        sums, sometimes uninitialised memory, for some shapes, e.g. one input channel, kernel
        width 3, stride (1, 2) on a narrow map, at batch sizes >= 2. TF_ENABLE_ONEDNN_OPTS=0
        (set before TensorFlow is imported) avoids it; this check catches it either way."""
        if batch in self._verified_batch_sizes:
            return
        self._verified_batch_sizes.add(batch)
        rng = np.random.default_rng(batch)
        for p in self.plans:
            if p.kind != "conv2d" or p.index in self.patch_convolutions:
                continue
            x = (rng.random((batch,) + p.in_shape) < 0.5).astype(F32)
            got = tf.nn.conv2d(x, self._weights[p.index], p.stride, p.padding).numpy()
            expected = _numpy_conv2d(x, p.weights, p.stride, p.padding)
            scale = 1.0 + float(np.abs(p.weights).sum(axis=(0, 1, 2)).max())
            if got.shape != expected.shape or \
                    not np.all(np.abs(got - expected) <= 1e-4 * scale):
                warnings.warn(
                    f"layer {p.index} '{p.name}': tf.nn.conv2d (input {p.in_shape}, kernel "
                    f"{p.kernel}, stride {p.stride}, {p.padding}, batch {batch}) disagrees "
                    f"with a direct convolution (a TensorFlow oneDNN bug; "
                    f"TF_ENABLE_ONEDNN_OPTS=0 avoids it); using extract_patches + matmul",
                    RuntimeWarning, stacklevel=3)
                self.patch_convolutions.add(p.index)
                self._compiled.clear()  # retrace with the other convolution

    def initial_state(self, x: tf.Tensor) -> list:
        n = tf.shape(x)[0]
        state = []
        for p in self.plans:
            st = {}
            full = tf.concat([[n], tf.constant(p.shape, tf.int32)], axis=0)
            if p.kind in NEURON_KINDS:
                st["v"] = x if p.kind == "input" else tf.zeros(full, tf.float32)
                st["fired"] = tf.zeros(full, tf.bool)
                st["fst"] = tf.fill(full, tf.constant(-1, tf.int32))
                st["last"] = tf.fill(full, tf.constant(np.nan, tf.float32))
                st["prev"] = tf.fill(full, tf.constant(np.nan, tf.float32))
            elif p.kind == "maxpool" and p.pool_mode == "earliest":
                st["passed"] = tf.zeros(full, tf.bool)
            state.append(st)
        return state


def _same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow's SAME padding along one axis: (before, after), the smaller half first."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _patch_conv2d(spikes, w, p: _Plan):
    """conv2d as explicit zero padding + tf.image.extract_patches + matmul (slower than
    tf.nn.conv2d; used where that failed verification)."""
    if p.padding == "SAME":
        (top, bottom), (left, right) = (_same_padding(p.in_shape[0], p.kernel[0], p.stride[0]),
                                        _same_padding(p.in_shape[1], p.kernel[1], p.stride[1]))
        spikes = tf.pad(spikes, [[0, 0], [top, bottom], [left, right], [0, 0]])
    patches = tf.image.extract_patches(spikes, [1, p.kernel[0], p.kernel[1], 1],
                                       [1, p.stride[0], p.stride[1], 1], [1, 1, 1, 1], "VALID")
    return tf.matmul(patches, tf.reshape(w, [-1, w.shape[-1]]))  # (kh, kw, c) patch order


def _numpy_conv2d(x: np.ndarray, w: np.ndarray, stride, padding: str) -> np.ndarray:
    """A direct float64 convolution (TensorFlow's VALID/SAME rules), for verification."""
    n, h, wd, c = x.shape
    kh, kw = w.shape[:2]
    sh, sw = stride
    if padding == "SAME":
        (top, bottom), (left, right) = _same_padding(h, kh, sh), _same_padding(wd, kw, sw)
        x = np.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)])
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    out = np.zeros((n, oh, ow, w.shape[3]))
    for r in range(kh):
        for q in range(kw):
            window = x[:, r:r + (oh - 1) * sh + 1:sh, q:q + (ow - 1) * sw + 1:sw, :]
            out += window.astype(np.float64) @ w[r, q].astype(np.float64)
    return out


# ---- Entry point ----------------------------------------------------------------------------


def to_float_images(spec, images) -> np.ndarray:
    """uint8 -> float32(byte) / float32(input_divisor); float images are taken as scaled."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        divisor = F32(spec.layers[0].input_divisor)
        if not divisor > 0:
            raise ValueError(f"input layer '{spec.layers[0].name}': input_divisor {divisor} "
                             f"must be > 0 to scale uint8 images")
        return (images.astype(F32) / divisor).astype(F32)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images: dtype {images.dtype}, expected uint8 or float32")
    return images.astype(F32, copy=False)


def simulate(spec, images, *, batch_size: int = 256, record_every: int = 10,
             progress: bool = True, exp: str = "tf",
             record_vmem_steps: Optional[Iterable[int]] = None,
             time_steps: Optional[int] = None) -> SimResult:
    """Simulate `spec` (an export.ttfs_format.ModelSpec) on images (n, h, w, c).

    images: uint8 (scaled by the input layer's divisor) or float32 already scaled.
    record_every: output potentials are recorded after steps record_every-1, 2*record_every-1,
    ... (the reference recorded t = 9, 19, ..., 399). exp: "tf" (TensorFlow's float32 exp, as
    the reference) or "float64" (correctly rounded tables, as libttfs). record_vmem_steps:
    steps at which to keep every firing layer's membrane just before its fire check
    (memory: n x layer size per step and layer). time_steps overrides spec.time_steps.
    To run one network many times with changing constants, keep a Simulator instead.
    """
    return Simulator(spec, exp=exp).run(
        images, batch_size=batch_size, record_every=record_every, progress=progress,
        record_vmem_steps=record_vmem_steps, time_steps=time_steps)


class Simulator:
    """The stepped simulation of one network, compiled once.

    set_constants() swaps in another spec of the same network (same layers, windows and
    weights; other tau/td/vth0), without recompiling: that is what time-constant training
    needs between its updates."""

    def __init__(self, spec, *, exp: str = "tf"):
        if exp not in EXP_MODES:
            raise ValueError(f"exp {exp!r} is not one of {EXP_MODES}")
        self.exp = exp
        self.spec = spec
        self.plans = _plans(spec, exp)
        self.program = _Program(self.plans)

    def set_constants(self, spec) -> None:
        plans = _plans(spec, self.exp)
        if len(plans) != len(self.plans):
            raise ValueError(f"set_constants: the spec has {len(plans)} layers, the compiled "
                             f"network {len(self.plans)}; build a new Simulator")
        for old, new in zip(self.plans, plans):
            same = (old.name == new.name
                    and old.kind == new.kind and old.shape == new.shape
                    and old.fires == new.fires and old.fire_window == new.fire_window
                    and old.integ_window == new.integ_window
                    and _same_array(old.weights, new.weights) and _same_array(old.bias, new.bias))
            if not same:
                raise ValueError(f"set_constants: layer {new.index} '{new.name}' differs from "
                                 f"'{old.name}' of the compiled network in more than its time "
                                 f"constants; build a new Simulator")
        self.program.assign_tables(plans)
        self.plans = plans
        self.program.plans = plans
        self.spec = spec

    def run(self, images, *, batch_size: int = 256, record_every: int = 10,
            progress: bool = True, record_vmem_steps: Optional[Iterable[int]] = None,
            time_steps: Optional[int] = None) -> SimResult:
        """See simulate()."""
        from tqdm.auto import tqdm

        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size} must be >= 1")
        if record_every < 1:
            raise ValueError(f"record_every {record_every} must be >= 1")
        spec, plans, program = self.spec, self.plans, self.program
        x_all = to_float_images(spec, images)
        if x_all.ndim != 4 or tuple(x_all.shape[1:]) != plans[0].shape:
            raise ValueError(f"images: shape {x_all.shape}, expected (n,) + {plans[0].shape} "
                             f"(the input layer '{plans[0].name}')")
        steps = int(spec.time_steps if time_steps is None else time_steps)
        record_steps = np.arange(record_every - 1, steps, record_every, dtype=np.int32)
        keep_steps = sorted(set(int(t) for t in (record_vmem_steps or ())))
        keep_set = set(keep_steps)
        patterns = [program.activity(t) for t in range(steps)]
        out_plan = plans[-1]
        classes = int(np.prod(out_plan.shape))
        firing = [p for p in plans if p.fires]
        n = x_all.shape[0]

        collected = {k: [] for k in ("fst", "last", "prev", "pot", "over_time")}
        kept = {p.name: {t: [] for t in keep_steps} for p in firing}
        bar = tqdm(total=n * steps, disable=not progress, unit="img-step",
                   desc="tf_reference", smoothing=0.1)
        for lo in range(0, n, batch_size):
            x = tf.constant(x_all[lo:lo + batch_size])
            nb = int(x.shape[0])
            program.verify_convolutions(nb)
            state = program.initial_state(x)
            over_time = []
            for t in range(steps):
                pattern = patterns[t]
                checks = {}
                if not program.idle(pattern):
                    state, checks = program.step_function(pattern)(state,
                                                                   tf.constant(t, tf.int32))
                if t in keep_set:
                    for p in firing:  # NaN where the layer made no fire check at t
                        v = checks.get(p.name)
                        kept[p.name][t].append(v.numpy() if v is not None
                                               else np.full((nb,) + p.shape, np.nan, F32))
                if (t + 1) % record_every == 0:
                    over_time.append(tf.reshape(state[-1]["v"], [nb, -1]).numpy())
                bar.update(nb)
            collected["fst"].append({p.name: state[p.index]["fst"].numpy()
                                     for p in plans if p.kind in NEURON_KINDS})
            collected["last"].append({p.name: state[p.index]["last"].numpy() for p in firing})
            collected["prev"].append({p.name: state[p.index]["prev"].numpy() for p in firing})
            collected["pot"].append(tf.reshape(state[-1]["v"], [nb, -1]).numpy())
            collected["over_time"].append(np.stack(over_time) if over_time
                                          else np.zeros((0, nb, classes), F32))
        bar.close()

        neuron_names = [p.name for p in plans if p.kind in NEURON_KINDS]

        def join(key, name):
            return np.concatenate([chunk[name] for chunk in collected[key]], axis=0)

        first_spike_times = {name: join("fst", name) for name in neuron_names}
        potentials = np.concatenate(collected["pot"], axis=0)
        out_times = first_spike_times[out_plan.name].reshape(n, -1)
        return SimResult(
            layer_names=[p.name for p in plans],
            neuron_layers=neuron_names,
            output_layer=out_plan.name,
            readout=spec.readout,
            first_spike_times=first_spike_times,
            output_potentials=potentials,
            potentials_over_time=np.concatenate(collected["over_time"], axis=1),
            record_steps=record_steps,
            predictions=predict(spec.readout, potentials, out_times),
            thresholds={p.name: p.thresholds for p in firing},
            fire_windows={p.name: p.fire_window for p in firing},
            vmem_at_fire_check={p.name: join("last", p.name) for p in firing},
            vmem_at_previous_check={p.name: join("prev", p.name) for p in firing},
            vmem_before_check={name: {t: np.concatenate(v, axis=0) for t, v in per.items()}
                               for name, per in kept.items()} if keep_steps else {},
        )


def _same_array(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and np.array_equal(a, b)
