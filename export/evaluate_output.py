"""The evaluation's view of the output layer over time: which steps are recorded, what the
readout predicts after a step, and the numpy replay that computes the output potentials.

Owned here (used by export/evaluate.py, tests/test_evaluate.py, export/efficiency.py):

- `output_stage(spec)` -> OutputStage: the output layer, the last hidden neuron layer below it
  and the pools/flattens that relay between them, with the output's kernel table k(t);
- `record_steps_for(T)`: t = 9, 19, ..., T-1 (the reference's record steps, and the last step);
- `output_potentials_over_time(stage, source_times, output_times)` -> PotentialTrace: the
  numpy replay of the output layer from the last hidden layer's recorded first-spike times:
  V(t) = bias (entered at t = 0) + sum over arrival steps t' <= t of S(t') * k(t'), summed in
  the engines' canonical order, with the first_spike readout's reset to 0; it also carries the
  terms' magnitude, the rounding scale that `relative_difference` divides by;
- `predict_at(readout, V, output_times, t)` and `predictions_over_time`: the readout
  (docs/ALGORITHM.md section 6) as it stands after step t;
- `_kernel_table(tau, td, length)`: libttfs's exp tables in float32 (the C library's expf),
  also used for the fire thresholds in export/efficiency.py.

The replay restates the engines' arithmetic (docs/ENGINES.md) in numpy; evaluate checks it
against libttfs's final potentials and against the TF reference's potentials over time.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from export import ttfs_format
from export.efficiency import relay_spikes
from export.efficiency import window_view as _window_view

F32 = np.float32
NEURON_KINDS = ("input", "conv2d", "dense")
RELAY_KINDS = ("maxpool", "flatten")

RECORD_EVERY = 10  # the reference recorded the output after steps 9, 19, ..., 399


def _c_expf():
    """The C library's float exp (what libttfs's std::exp(float) calls when it builds its
    tables on the host), or None where it cannot be loaded."""
    import ctypes
    import ctypes.util

    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        expf = libm.expf
    except (OSError, AttributeError):
        return None
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    return expf


_EXPF = _c_expf()
EXP_SOURCE = "C library expf" if _EXPF is not None else "float64 exp rounded to float32"


def _kernel_table(tau: float, td: float, length: int) -> np.ndarray:
    """exp(-(f32(i) - td) / tau) for i in [0, length), float32 op by op (docs/ENGINES.md
    'Tables'). The exp is the C library's expf, as in libttfs, so that the replay can match
    libttfs bit for bit (glibc's expf and a correctly rounded exp differ in about 1 entry in
    80); where no C library is at hand, float64 exp rounded once."""
    i = np.arange(max(int(length), 0), dtype=F32)
    arg = -((i - F32(td)) / F32(tau))
    if _EXPF is not None:
        return np.array([_EXPF(float(a)) for a in arg], dtype=F32)
    return np.exp(arg.astype(np.float64)).astype(F32)


@dataclasses.dataclass
class OutputStage:
    """The part of the network the post-process replays: the last hidden neuron layer's spikes,
    relayed through the pools/flattens after it, into the output layer."""

    source: str  # the last hidden neuron layer (its spikes are the input here)
    source_layer: ttfs_format.Layer  # that layer (a gated pool reads its thresholds)
    source_shape: Tuple[int, int, int]
    relays: List[ttfs_format.Layer]  # maxpool / flatten layers, in file order
    output: ttfs_format.Layer
    readout: str
    time_steps: int
    weights: np.ndarray  # float32, dense [in, out] or conv2d HWIO
    bias: Optional[np.ndarray]
    integ_window: Tuple[int, int]
    fire_window: Tuple[int, int]
    kernels: np.ndarray  # k(t) for t in the integration window

    @property
    def classes(self) -> int:
        return int(np.prod(self.output.out_shape))

    def kernel_at(self, t: int):
        """k(t): 1 at t == 0 (the bias step), the table inside the window, else None."""
        if t == 0:
            return F32(1.0)
        start, end = self.integ_window
        return self.kernels[t - start] if start <= t < end else None


def output_stage(spec: ttfs_format.ModelSpec) -> OutputStage:
    """Read what the post-process needs from a model spec (export.ttfs_format.read_model)."""
    layers = list(spec.layers)
    output = layers[-1]
    where = f"layer {len(layers) - 1} '{output.name}'"
    if output.kind not in ("conv2d", "dense"):
        raise ValueError(f"{where}: the output layer must be conv2d or dense, got {output.kind!r}")
    if output.neuron is None or output.neuron.integ_window is None \
            or output.neuron.fire_window is None or output.weights is None:
        raise ValueError(f"{where}: neuron parameters or weights missing (read the spec with "
                         f"export.ttfs_format.read_model)")
    i = len(layers) - 2
    relays = []
    while i >= 0 and layers[i].kind in RELAY_KINDS:
        relays.insert(0, layers[i])
        i -= 1
    if i < 0 or layers[i].kind not in NEURON_KINDS:
        raise ValueError(f"{where}: no neuron layer below the output layer (found "
                         f"{layers[i].kind if i >= 0 else None!r} at layer {i})")
    for position, relay in enumerate(relays):
        if relay.kind == "maxpool" and relay.pool_mode not in ("or", "earliest", "gated"):
            raise ValueError(f"layer '{relay.name}': pool_mode {relay.pool_mode!r} is not 'or', "
                             f"'earliest' or 'gated'")
        if relay.kind == "maxpool" and relay.pool_mode == "gated" and position != 0:
            raise ValueError(f"layer '{relay.name}': a gated pool must follow a neuron layer")
    nr = output.neuron
    start, end = (int(v) for v in nr.integ_window)
    return OutputStage(
        source=layers[i].name, source_layer=layers[i],
        source_shape=tuple(int(v) for v in layers[i].out_shape),
        relays=relays, output=output, readout=spec.readout, time_steps=int(spec.time_steps),
        weights=np.asarray(output.weights, F32),
        bias=None if output.bias is None else np.asarray(output.bias, F32).reshape(-1),
        integ_window=(start, end), fire_window=tuple(int(v) for v in nr.fire_window),
        kernels=_kernel_table(nr.tau_integ, nr.td_integ, end - start))


def _row_sums(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(R, C) float32: for each row of the boolean (R, K) map, the sum of the weight rows of its
    spiking units, added one after another in ascending unit (canonical) order as libttfs
    does (docs/ENGINES.md). Only the spiking units are gathered (a step carries a few percent
    of them), into a zero-padded (rows, most spikes, C) block whose reduction over the middle
    axis numpy performs in order (np.add.reduceat does not: it sums in another order)."""
    out = np.zeros((rows.shape[0], weights.shape[1]), F32)
    r, k = np.nonzero(rows)  # row-major: each row's units ascending
    if r.size == 0:
        return out
    counts = np.bincount(r, minlength=rows.shape[0])
    active = np.flatnonzero(counts)
    slot = np.empty(rows.shape[0], np.int64)
    slot[active] = np.arange(len(active))
    first = np.cumsum(counts) - counts  # where each row's units start in (r, k)
    block = np.zeros((len(active), int(counts.max()), weights.shape[1]), F32)
    block[slot[r], np.arange(r.size) - first[r]] = weights[k]
    out[active] = np.add.reduce(block, axis=1)  # x + 0.0 == x: the padding changes nothing
    return out


def _synaptic(stage: OutputStage, spikes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n, classes) sum of the weights of this step's spiking units below (HWC order)."""
    n = spikes.shape[0]
    if stage.output.kind == "dense":
        return _row_sums(spikes.reshape(n, -1), weights)
    views = _window_view(spikes, stage.output.kernel, stage.output.stride, stage.output.padding,
                         fill=False)
    patches = np.concatenate(views, axis=3)  # (n, oh, ow, kh*kw*c): HWIO row order
    sums = _row_sums(patches.reshape(-1, patches.shape[-1]),
                     weights.reshape(-1, weights.shape[-1]))
    return sums.reshape(n, -1)  # (n, oh*ow*cout): HWC order


@dataclasses.dataclass
class PotentialTrace:
    """The output layer's potential as replayed from spike times."""

    record_steps: np.ndarray  # (R,) int32
    potentials: np.ndarray  # (R, n, classes) float32, after each record step
    final: np.ndarray  # (n, classes) float32, after the last step
    magnitude: np.ndarray  # (n, classes) |bias| + sum |w| * k of the final potential's terms
    magnitudes: np.ndarray  # (R, n, classes) the same after each record step


def record_steps_for(time_steps: int, every: int = RECORD_EVERY) -> np.ndarray:
    """t = every-1, 2*every-1, ... (the reference's 9, 19, ..., 399), and always the last
    step, so that the last point of accuracy-over-time is the final accuracy."""
    steps = np.arange(every - 1, time_steps, every, dtype=np.int32)
    if time_steps >= 1 and (len(steps) == 0 or steps[-1] != time_steps - 1):
        steps = np.append(steps, np.int32(time_steps - 1))
    return steps


def output_potentials_over_time(stage: OutputStage, source_times: np.ndarray,
                                output_times: Optional[np.ndarray] = None,
                                record_steps: Optional[np.ndarray] = None) -> PotentialTrace:
    """Replay the output layer from the first-spike times of the last hidden neuron layer.

    source_times: (n, h, w, c) int32, -1 = never fired (as libttfs / tf_reference record them).
    output_times: (n, classes) first-spike times of the output layer, needed under first_spike
    readout: a neuron that fired was reset to 0 at that step (docs/ALGORITHM.md section 7).
    V(t) = bias (entered at t = 0, k = 1) + sum over arrival steps t' <= t at which the output
    integrates of S(t') * k(t'), added in ascending t' as the engines do."""
    source_times = np.asarray(source_times)
    if tuple(source_times.shape[1:]) != stage.source_shape:
        raise ValueError(f"source_times: shape {source_times.shape}, expected (n,) + "
                         f"{stage.source_shape} (layer '{stage.source}')")
    n = source_times.shape[0]
    classes = stage.classes
    steps = np.unique(source_times[(source_times >= 0) & (source_times < stage.time_steps)])
    resets = None
    if stage.readout == "first_spike":
        if output_times is None:
            raise ValueError(f"first_spike readout: output_times of '{stage.output.name}' are "
                             f"needed (a neuron that fired was reset to 0)")
        resets = np.asarray(output_times).reshape(n, classes)
        steps = np.union1d(steps, resets[resets >= 0])
    steps = np.union1d(steps, [0]).astype(np.int64)  # the bias enters at t = 0
    records = record_steps_for(stage.time_steps) if record_steps is None \
        else np.asarray(record_steps, np.int32)
    abs_weights = np.abs(stage.weights)
    v = np.zeros((n, classes), F32)
    magnitude = np.zeros((n, classes), F32)
    passed: Dict[str, np.ndarray] = {}
    recorded, recorded_magnitude = [], []
    for t in steps:
        while len(recorded) < len(records) and records[len(recorded)] < t:
            recorded.append(v.copy())
            recorded_magnitude.append(magnitude.copy())
        spikes = source_times == t
        relayed = relay_spikes(spikes, stage.relays, passed, step=int(t),
                               source_times=source_times, source=stage.source_layer) \
            if spikes.any() else None
        k = stage.kernel_at(int(t))
        if k is not None and (relayed is not None or t == 0):
            s = np.zeros((n, classes), F32) if relayed is None \
                else _synaptic(stage, relayed, stage.weights)
            a = np.zeros((n, classes), F32) if relayed is None \
                else _synaptic(stage, relayed, abs_weights)
            if t == 0 and stage.bias is not None:
                bias = np.tile(stage.bias, classes // stage.bias.size)  # conv: per channel, HWC
                s = (s + bias).astype(F32)
                a = (a + np.abs(bias)).astype(F32)
            v = (v + (s * k).astype(F32)).astype(F32)  # multiply, then add: no FMA
            magnitude = (magnitude + (a * k).astype(F32)).astype(F32)
        if resets is not None:
            fired = resets == t
            v[fired] = F32(0.0)
            magnitude[fired] = F32(0.0)
    while len(recorded) < len(records):
        recorded.append(v.copy())
        recorded_magnitude.append(magnitude.copy())
    empty = np.zeros((0, n, classes), F32)
    return PotentialTrace(records, np.stack(recorded) if recorded else empty, v, magnitude,
                          np.stack(recorded_magnitude) if recorded else empty)


def predict_at(readout: str, potentials: np.ndarray, output_times: Optional[np.ndarray],
               t: int) -> np.ndarray:
    """The readout (docs/ALGORITHM.md section 6) as it stands after step t. vmem: argmax of V(t),
    ties to the lowest index. first_spike: the earliest class fired by t (ties: lowest index),
    else the argmax of V(t)."""
    potentials = np.asarray(potentials)
    by_vmem = np.argmax(potentials, axis=1).astype(np.int32)
    if readout == "vmem":
        return by_vmem
    if readout != "first_spike":
        raise ValueError(f"readout {readout!r} is not 'vmem' or 'first_spike'")
    times = np.asarray(output_times).reshape(potentials.shape).astype(np.int64)
    visible = (times >= 0) & (times <= t)
    earliest = np.argmin(np.where(visible, times, np.iinfo(np.int64).max), axis=1)
    return np.where(visible.any(axis=1), earliest, by_vmem).astype(np.int32)


def predictions_over_time(stage: OutputStage, trace: PotentialTrace,
                          output_times: Optional[np.ndarray]) -> np.ndarray:
    """(R, n) int32: the prediction after each record step."""
    out = [predict_at(stage.readout, trace.potentials[r], output_times, int(t))
           for r, t in enumerate(trace.record_steps)]
    return np.stack(out) if out else np.zeros((0, trace.final.shape[0]), np.int32)


def relative_difference(ours: np.ndarray, theirs: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
    """|ours - theirs| / the rounding scale of the sum (its terms' magnitude, at least |V|;
    1e-30 keeps an all-zero potential, e.g. a reset one, at 0 / tiny = 0)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = np.maximum(np.maximum(np.abs(theirs), np.asarray(magnitude, np.float64)), 1e-30)
    return np.abs(ours - theirs) / scale
