"""The evaluation step: how good is the exported SNN, and can its numbers be trusted?

    evaluate   -> results/report.md, results.json,   accuracy (both engines), spikes, accuracy
                  per_image.npz, *.png               over time, TF-reference agreement, plots

It reads run_dir/model.ttfs (the export step's model) and train.json (the ANN's accuracies) and:

1. runs libttfs on the CPU over the test images (all 10000 by default) with the stepped AND the
   analytic engine, batch by batch, and fails loudly unless the two agree bit for bit
   (predictions, output potentials as bit patterns, spike counts and first-spike times of every
   neuron layer, docs/ENGINES.md); images/s per engine is timed inside session.run only. A
   model with overlapping windows (T_s < T_d), which the analytic engine refuses, runs on the
   stepped engine alone, and the report says so;
2. counts spikes per image per neuron layer, and the total of the hidden layers only (what the
   TF reference counted: not the input, not the output; docs/ALGORITHM.md section 9: 1226 conv1 +
   1090 conv2 = 2316);
3. computes accuracy against time (t = 9, 19, ..., T-1) with a numpy post-process of the spike
   times libttfs recorded (`output_potentials_over_time`): the output layer's potential at t is
   its bias (t = 0) plus, for every arrival step t' <= t at which it integrates, the weights of
   the relayed spikes of the last hidden neuron layer times k(t'). Its final-step potentials
   must equal libttfs's to 1e-5 relative (checked on every image);
4. compares with the TensorFlow reference simulator (export.tf_reference, exp="tf") on the first
   --reference-images test images: identical predictions, identical spike times per layer
   (with every mismatch classified as a threshold tie or not), output-potential differences,
   and accuracy over time (equal except at ties);
5. says what the readout does when nothing fires: under first_spike, the images without an
   output spike and what the potential-argmax fallback made of them, and the images whose
   first output step has several classes firing (decided by the lowest index, a tie); under
   vmem, that the output layer never fires so that case cannot arise;
6. reports the efficiency figures of export/efficiency.py: spikes per neuron per layer,
   synaptic operations per image (each delivered spike times its fan-out) next to the ANN's
   multiply-adds, and the spikes of one all-zero image.

Everything lands in run_dir/results/ (or --results-dir): report.md with the tables and the
plots, results.json with every number, per_image.npz (predictions, spike counts, synaptic
operations, predictions over time per image), accuracy_vs_time.png (with a zoom on the final
accuracy), first_spike_histogram.png (the layers that can fire), spikes_per_layer.png.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from export import ttfs_format
from export import efficiency
from export.efficiency import relay_spikes
from export.efficiency import window_view as _window_view

F32 = np.float32
NEURON_KINDS = ("input", "conv2d", "dense")
RELAY_KINDS = ("maxpool", "flatten")

MODEL_FILE = "model.ttfs"
TRAIN_FILE = "train.json"
ANN_FILE = "ann.keras"
RESULTS_DIR = "results"
RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
PER_IMAGE_NPZ = "per_image.npz"
PLOT_ACCURACY = "accuracy_vs_time.png"
PLOT_HISTOGRAM = "first_spike_histogram.png"
PLOT_SPIKES = "spikes_per_layer.png"

RECORD_EVERY = 10  # the reference recorded the output after steps 9, 19, ..., 399

# What the TF reference run counted per image on the 10000 test images (docs/ALGORITHM.md section 9).
REFERENCE_SPIKES = {"conv1": 1226.0, "conv2": 1090.0}
REFERENCE_HIDDEN_TOTAL = 2316.0
REFERENCE_ACCURACY = {169: 0.9834, 189: 0.9912, 399: 0.9922}

# The post-process sums in BLAS order, libttfs in canonical order (docs/ENGINES.md): the two
# potentials may differ by the rounding of a float32 sum, bounded relative to the sum of the
# magnitudes of its terms (|bias| + sum |w| * k). 1e-5 is ~100 float32 ulps of that scale.
POTENTIAL_RTOL = 1e-5
# A first-spike time that differs between libttfs and TensorFlow (another convolution
# summation order, TF's own float32 exp) is a threshold tie when it is one step apart and the
# TF membrane potential was within this much of the threshold at the deciding check (vth0 = 1
# scale; consecutive thresholds are ~5e-2 apart at tau = 20, so this is 1/500 of a step).
TIE_ATOL = 1e-4


class EngineMismatchError(RuntimeError):
    """The stepped and analytic engines disagreed: a library bug, never a tie."""


class EvaluationError(RuntimeError):
    """A check of the evaluation failed (its results are still written for inspection)."""


# ---- CLI -------------------------------------------------------------------------------------


def add_arguments(group) -> None:
    """Declare the evaluation options on an argparse parser or argument group."""
    group.add_argument("--test-images", type=int, default=None, metavar="N",
                       help="evaluate on the first N test images (default: all 10000)")
    group.add_argument("--reference-images", type=int, default=200, metavar="N",
                       help="compare with the TensorFlow reference simulator on the first N "
                            "test images; 0 skips it (default: %(default)s)")
    group.add_argument("--results-dir", type=Path, default=None, metavar="DIR",
                       help="where report.md, results.json and the plots go (default: "
                            "RUN_DIR/results)")


# ---- The output layer's potential over time, from recorded spike times ------------------------


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


# ---- Running libttfs with both engines --------------------------------------------------------


@dataclasses.dataclass
class EngineBatch:
    """One engine's outputs for one batch."""

    predictions: np.ndarray
    potentials: np.ndarray
    spike_counts: Dict[str, np.ndarray]
    spike_times: Dict[str, np.ndarray]
    seconds: float


def _run_engine(session, images, neuron_layers: Sequence[str]) -> EngineBatch:
    started = time.perf_counter()
    result = session.run(images)
    seconds = time.perf_counter() - started  # inside session.run only
    return EngineBatch(predictions=result.predictions, potentials=result.potentials,
                       spike_counts={name: session.spike_counts(name) for name in neuron_layers},
                       spike_times={name: session.spike_times(name) for name in neuron_layers},
                       seconds=seconds)


def check_engines_identical(stepped: EngineBatch, analytic: EngineBatch, first_image: int) -> None:
    """Raise EngineMismatchError naming the first difference: the engines must agree bit for
    bit (docs/ENGINES.md), so any difference is a bug, never a tie."""

    def fail(what: str, index) -> None:
        raise EngineMismatchError(
            f"stepped and analytic engines differ: {what} at image "
            f"{first_image + int(index[0])}" + (f", element {tuple(int(i) for i in index[1:])}"
                                                if len(index) > 1 else ""))

    if not np.array_equal(stepped.predictions, analytic.predictions):
        i = np.flatnonzero(stepped.predictions != analytic.predictions)[0]
        fail(f"prediction ({stepped.predictions[i]} vs {analytic.predictions[i]})", (i,))
    bits_s = np.ascontiguousarray(stepped.potentials, F32).view(np.uint32)
    bits_a = np.ascontiguousarray(analytic.potentials, F32).view(np.uint32)
    if not np.array_equal(bits_s, bits_a):
        idx = np.argwhere(bits_s != bits_a)[0]
        fail(f"output potential bits ({stepped.potentials[tuple(idx)]!r} vs "
             f"{analytic.potentials[tuple(idx)]!r})", idx)
    for name, counts in stepped.spike_counts.items():
        if not np.array_equal(counts, analytic.spike_counts[name]):
            i = np.flatnonzero(counts != analytic.spike_counts[name])[0]
            fail(f"spike count of layer '{name}' ({counts[i]} vs "
                 f"{analytic.spike_counts[name][i]})", (i,))
    for name, times in stepped.spike_times.items():
        if not np.array_equal(times, analytic.spike_times[name]):
            idx = np.argwhere(times != analytic.spike_times[name])[0]
            fail(f"first-spike time in layer '{name}' ({times[tuple(idx)]} vs "
                 f"{analytic.spike_times[name][tuple(idx)]})", idx)


# ---- Comparison with the TF reference ---------------------------------------------------------


def _spike_time_ties(lib_times: np.ndarray, tf_result, layer: str, window: Tuple[int, int]):
    """Classify the neurons whose first-spike time differs between libttfs and TF.

    Returns (mismatch mask, direct-tie mask, largest |V - vth| among the direct ties). A direct
    tie: the two times are one step apart (never = the window's end) and TF's potential was
    within TIE_ATOL of the threshold at its deciding check or the check before."""
    tf_times = tf_result.first_spike_times[layer]
    mismatch = lib_times != tf_times
    if layer not in tf_result.thresholds:  # a layer that does not fire: nothing to tie
        return mismatch, np.zeros_like(mismatch), 0.0
    end = window[1]
    lib_eff = np.where(lib_times >= 0, lib_times, end).astype(np.int64)
    tf_eff = np.where(tf_times >= 0, tf_times, end).astype(np.int64)
    margin, previous = tf_result.threshold_margins(layer)
    near = np.fmin(np.abs(margin), np.abs(previous))  # fmin: NaN (no earlier check) ignored
    tie = mismatch & (np.abs(lib_eff - tf_eff) == 1) & (near <= TIE_ATOL)
    largest = float(near[tie].max()) if tie.any() else 0.0
    return mismatch, tie, largest


def compare_with_reference(spec, stage: OutputStage, images: np.ndarray, labels: np.ndarray,
                           lib_times: Dict[str, np.ndarray], lib_predictions: np.ndarray,
                           lib_potentials: np.ndarray, lib_over_time: np.ndarray,
                           neuron_layers: Sequence[str], windows: Dict[str, Tuple[int, int]],
                           progress: bool) -> dict:
    """libttfs vs export.tf_reference (exp="tf") on the same images: see the module doc."""
    from export.tf_reference import simulate

    n = len(images)
    started = time.perf_counter()
    tf = simulate(spec, images, exp="tf", progress=progress, record_every=RECORD_EVERY)
    seconds = time.perf_counter() - started

    # Spike times per layer; a mismatch is a direct tie, or follows one in an earlier layer of
    # the same image (its inputs differed), or is unexplained.
    layers = {}
    image_had_mismatch = np.zeros(n, bool)
    for name in neuron_layers:
        mismatch, tie, largest = _spike_time_ties(lib_times[name], tf, name, windows[name])
        per_image = mismatch.reshape(n, -1)
        downstream = per_image & ~tie.reshape(n, -1) & image_had_mismatch[:, None]
        unexplained = per_image & ~tie.reshape(n, -1) & ~downstream
        layers[name] = {
            "neurons": int(per_image.size),
            "identical_fraction": float(1.0 - per_image.mean()),
            "mismatches": int(per_image.sum()),
            "direct_ties": int(tie.sum()),
            "after_an_earlier_tie": int(downstream.sum()),
            "unexplained": int(unexplained.sum()),
            "largest_tie_margin": largest,
            "images_with_mismatch": int(per_image.any(axis=1).sum()),
        }
        image_had_mismatch |= per_image.any(axis=1)

    # Output potentials, final step: all images, and only those with identical spike times
    # (where only summation order and exp rounding can differ).
    diff = np.abs(lib_potentials.astype(np.float64) - tf.output_potentials.astype(np.float64))
    clean = ~image_had_mismatch
    potentials = {
        "max_abs_difference": float(diff.max()) if diff.size else 0.0,
        "max_abs_difference_identical_spikes": float(diff[clean].max()) if clean.any() else 0.0,
        "images_identical_spikes": int(clean.sum()),
    }

    # The post-process replayed on TF's own spike times must give TF's potentials over time:
    # this checks the replay at every record step, independently of libttfs.
    tf_out_times = tf.first_spike_times[stage.output.name].reshape(n, -1)
    replay = output_potentials_over_time(stage, tf.first_spike_times[stage.source], tf_out_times,
                                         record_steps=tf.record_steps)
    replay_rel = relative_difference(replay.potentials, tf.potentials_over_time,
                                     replay.magnitudes)
    replay_final_rel = relative_difference(replay.final, tf.output_potentials, replay.magnitude)

    # Accuracy over time: ours (libttfs spike times + post-process) vs TF's own. A differing
    # prediction is explained by a spike-time tie in that image, or by a potential near-tie
    # (the two classes' potentials within rounding of each other).
    steps, tf_accuracy = tf.accuracy_over_time(labels)
    tf_preds = tf.predictions_over_time()
    common = np.intersect1d(steps, record_steps_for(stage.time_steps))
    ours_rows = [int(np.flatnonzero(record_steps_for(stage.time_steps) == t)[0]) for t in common]
    tf_rows = [int(np.flatnonzero(steps == t)[0]) for t in common]
    ours = lib_over_time[ours_rows]
    theirs = tf_preds[tf_rows]
    differ = ours != theirs
    spike_tie = differ & image_had_mismatch[None, :]
    pot = tf.potentials_over_time[tf_rows]
    rows, cols = np.nonzero(differ & ~spike_tie)
    gap = np.abs(pot[rows, cols, ours[rows, cols]] - pot[rows, cols, theirs[rows, cols]])
    scale = np.maximum(np.abs(pot[rows, cols]).max(axis=1), 1.0)
    potential_tie = int((gap <= POTENTIAL_RTOL * scale).sum())
    ours_accuracy = (ours == labels[None, :]).mean(axis=1)
    return {
        "images": n,
        "seconds": round(seconds, 2),
        "identical_predictions_fraction": float((lib_predictions == tf.predictions).mean()),
        "prediction_mismatches": int((lib_predictions != tf.predictions).sum()),
        "tf_accuracy": float((tf.predictions == labels).mean()),
        "libttfs_accuracy": float((lib_predictions == labels).mean()),
        "spike_times": layers,
        "output_potentials": potentials,
        "replay_on_tf_spikes": {"max_relative_difference_over_time":
                                float(replay_rel.max()) if replay_rel.size else 0.0,
                                "max_relative_difference_final":
                                float(replay_final_rel.max()) if replay_final_rel.size else 0.0},
        "accuracy_over_time": {
            "steps": [int(t) for t in common],
            "tf_reference": [float(a) for a in tf_accuracy[tf_rows]],
            "libttfs_postprocess": [float(a) for a in ours_accuracy],
            "differing_predictions": int(differ.sum()),
            "explained_by_spike_time_ties": int(spike_tie.sum()),
            "explained_by_potential_ties": potential_tie,
            "unexplained": int(differ.sum() - spike_tie.sum() - potential_tie),
        },
    }


# ---- The step ---------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, flush=True)


def _ann_accuracy_on(run_dir: Path, images, labels) -> Optional[float]:
    """The ANN's accuracy on exactly these images (when evaluating a subset), or None."""
    path = run_dir / ANN_FILE
    if not path.exists():
        return None
    from export.keras_model import evaluate, load_user_model

    return evaluate(load_user_model(path), images, labels)


def _pick_steps(stage: OutputStage, record_steps: np.ndarray) -> List[int]:
    """A few telling record steps: early, middle and end of the output's integration window
    (for MNIST 169, 189, 239: where the reference quoted 98.34 / 99.12 % and 'final'), and the
    last step."""
    start, end = stage.integ_window
    wanted = [start + 9, start + 29, end - 1, stage.time_steps - 1]
    chosen = []
    for t in wanted:
        if len(record_steps) == 0:
            break
        nearest = int(record_steps[np.argmin(np.abs(record_steps - t))])
        if nearest not in chosen:
            chosen.append(nearest)
    return chosen


def step_evaluate(options, *, test_images: Optional[int] = None,
                  reference_images: Optional[int] = None, results_dir=None,
                  batch: int = 1000, threads: int = 0) -> dict:
    """Evaluate run_dir/model.ttfs on the run's test set; see the module doc.

    options: export.pipeline.Options (run_dir, dataset, data_dir, progress are used); may also
    carry test_images / reference_images / results_dir (keyword arguments win)."""
    import pyttfs
    from tqdm.auto import tqdm

    from export.pipeline import load_data

    run_dir = Path(options.run_dir)
    if test_images is None:
        test_images = getattr(options, "test_images", None)
    if reference_images is None:
        reference_images = getattr(options, "reference_images", 200)
    if results_dir is None:
        results_dir = getattr(options, "results_dir", None)
    results_dir = Path(results_dir) if results_dir is not None else run_dir / RESULTS_DIR
    progress = bool(getattr(options, "progress", True))
    if test_images is not None and test_images < 1:
        raise ValueError(f"--test-images {test_images}: expected >= 1")
    if reference_images < 0:
        raise ValueError(f"--reference-images {reference_images}: expected >= 0")
    if batch < 1:
        raise ValueError(f"batch {batch}: expected >= 1")

    model_path = run_dir / MODEL_FILE
    train_path = run_dir / TRAIN_FILE
    for path, step in ((model_path, "export"), (train_path, "train")):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run `python -m export {step}` "
                                    f"first (or `python -m export all`)")
    train_record = json.loads(train_path.read_text())
    for key in ("test_accuracy", "val_accuracy"):
        if key not in train_record:
            raise KeyError(f"{train_path}: field '{key}' is missing")
    spec = ttfs_format.read_model(model_path)
    stage = output_stage(spec)
    synapses = efficiency.synapse_stages(spec)

    data = load_data(options)
    mnist = data.name == "MNIST"  # the reference run's numbers are MNIST numbers
    full_test = len(data.test)
    test = data.test if test_images is None else data.test.take(min(test_images, full_test))
    n = len(test)
    images, labels = test.images, test.labels.astype(np.int64)
    reference_images = min(reference_images, n)
    _say(f"[evaluate] {model_path}: {n} test images, stepped and analytic engines (CPU, "
         f"batches of {batch}), TF reference on the first {reference_images}")

    records = record_steps_for(stage.time_steps)
    with pyttfs.Model(model_path) as model:
        infos = {info.name: info for info in model.layers}
        neuron_layers = [info.name for info in model.layers if info.has_neurons]
        output_name = model.layers[-1].name
        if output_name != stage.output.name:
            raise ValueError(f"{model_path}: libttfs names the output layer '{output_name}', "
                             f"the file reader '{stage.output.name}'")
        windows = {name: tuple(infos[name].fire_window) for name in neuron_layers}
        readout = model.readout
        size = min(batch, n)
        sessions = {"stepped": model.session(backend="cpu", engine="stepped", max_batch=size,
                                             record_spike_times=True, threads=threads)}
        analytic_refused = None
        try:
            sessions["analytic"] = model.session(backend="cpu", engine="analytic",
                                                 max_batch=size, record_spike_times=True,
                                                 threads=threads)
        except pyttfs.TtfsError as error:
            if error.code != pyttfs.Status.ERR_UNSUPPORTED:
                raise
            # overlapping windows (T_s < T_d): only the stepped engine can run this model
            analytic_refused = str(error)
            _say(f"[evaluate] the analytic engine refuses this model ({error}); stepped only")
    engines = list(sessions)
    try:
        predictions = np.empty(n, np.int32)
        potentials = np.empty((n, stage.classes), F32)
        counts = {name: np.empty(n, np.int32) for name in neuron_layers}
        synops = {s["layer"]: np.empty(n, np.int64) for s in synapses}
        histograms = {name: np.zeros(stage.time_steps, np.int64) for name in neuron_layers}
        over_time = np.empty((len(records), n), np.int32)
        output_fired = np.zeros(n, bool)
        first_shared = np.zeros(n, np.int32)  # classes that fire at an image's first output step
        seconds = {engine: 0.0 for engine in engines}
        worst_relative = 0.0
        final_mismatch = final_mismatch_ties = 0
        bit_identical = 0  # final potentials equal to libttfs's bit for bit
        kept_times = {name: [] for name in neuron_layers}  # the reference subset
        for lo in tqdm(range(0, n, size), disable=not progress, unit="batch",
                       desc="libttfs " + " + ".join(engines)):
            chunk = images[lo:lo + size]
            ran = {engine: _run_engine(sessions[engine], chunk, neuron_layers)
                   for engine in engines}
            if len(ran) == 2:
                check_engines_identical(ran["stepped"], ran["analytic"], lo)
            for engine, outputs in ran.items():
                seconds[engine] += outputs.seconds
            primary = ran[engines[-1]]  # analytic if it ran: identical to stepped, as checked
            hi = lo + len(chunk)
            predictions[lo:hi] = primary.predictions
            potentials[lo:hi] = primary.potentials
            for name in neuron_layers:
                times = primary.spike_times[name]
                counts[name][lo:hi] = primary.spike_counts[name]
                fired = times[times >= 0]
                histograms[name] += np.bincount(fired, minlength=stage.time_steps)[
                    :stage.time_steps]
                if not np.array_equal((times >= 0).reshape(len(chunk), -1).sum(axis=1),
                                      primary.spike_counts[name]):
                    raise EvaluationError(f"layer '{name}', images {lo}..{hi - 1}: spike counts "
                                          f"disagree with the recorded spike times")
                if lo < reference_images:
                    kept_times[name].append(times[:reference_images - lo])
            for name, ops in efficiency.synaptic_operations(spec, primary.spike_times,
                                                             synapses).items():
                synops[name][lo:hi] = ops
            out_times = primary.spike_times[output_name].reshape(len(chunk), -1)
            output_fired[lo:hi] = (out_times >= 0).any(axis=1)
            earliest = np.where(out_times >= 0, out_times, np.iinfo(np.int32).max).min(axis=1)
            first_shared[lo:hi] = ((out_times == earliest[:, None]) & (out_times >= 0)).sum(axis=1)
            trace = output_potentials_over_time(stage, primary.spike_times[stage.source],
                                                out_times, records)
            over_time[:, lo:hi] = predictions_over_time(stage, trace, out_times)
            rel = relative_difference(trace.final, primary.potentials, trace.magnitude)
            worst_relative = max(worst_relative, float(rel.max()) if rel.size else 0.0)
            bit_identical += int((trace.final.view(np.uint32)
                                  == primary.potentials.view(np.uint32)).sum())
            final = predict_at(readout, trace.final, out_times, stage.time_steps - 1)
            differ = final != primary.predictions
            final_mismatch += int(differ.sum())
            if differ.any():  # only a near-tie of two potentials may flip the argmax
                rows = np.flatnonzero(differ)
                pot = primary.potentials[rows]
                gap = np.abs(pot[np.arange(len(rows)), final[rows]]
                             - pot[np.arange(len(rows)), primary.predictions[rows]])
                final_mismatch_ties += int((gap <= POTENTIAL_RTOL * np.maximum(
                    trace.magnitude[rows].max(axis=1), 1e-30)).sum())
    finally:
        for session in sessions.values():
            session.close()

    failures = []
    if worst_relative > POTENTIAL_RTOL:
        failures.append(f"post-process: final output potentials differ from libttfs's by "
                        f"{worst_relative:.3g} relative (> {POTENTIAL_RTOL})")
    if final_mismatch != final_mismatch_ties:
        failures.append(f"post-process: {final_mismatch - final_mismatch_ties} final "
                        f"predictions differ from libttfs's without a potential tie")

    accuracy = float((predictions == labels).mean())
    accuracy_over_time = (over_time == labels[None, :]).mean(axis=1)
    hidden = [name for name in neuron_layers[1:-1]]  # not the input, not the output
    spikes_per_image = {name: float(counts[name].mean()) for name in neuron_layers}
    hidden_total = float(sum(spikes_per_image[name] for name in hidden))

    ann = {"test_accuracy": float(train_record["test_accuracy"]),
           "val_accuracy": float(train_record["val_accuracy"]),
           "test_images": full_test}
    if n < full_test:
        subset = _ann_accuracy_on(run_dir, images, labels)
        ann["test_accuracy_on_evaluated_images"] = subset
    ann_compare = ann.get("test_accuracy_on_evaluated_images")
    if ann_compare is None:
        ann_compare = ann["test_accuracy"]

    if readout == "first_spike":
        silent = ~output_fired
        fallback = predictions[silent]
        no_spike = {
            "readout": readout,
            "images_without_output_spike": int(silent.sum()),
            "fraction": float(silent.mean()),
            "fallback_accuracy": float((fallback == labels[silent]).mean()) if silent.any()
            else None,
            "fallback_predicted_classes": {str(c): int(v) for c, v in
                                           enumerate(np.bincount(fallback,
                                                                 minlength=stage.classes))},
            # several classes crossing at the same first step: the lowest index wins, which
            # is a readout tie, not a decision (docs/ALGORITHM.md section 6)
            "images_with_simultaneous_first_spikes": int((first_shared > 1).sum()),
            "simultaneous_first_spikes_accuracy": float(
                (predictions[first_shared > 1] == labels[first_shared > 1]).mean())
            if (first_shared > 1).any() else None,
            "classes_at_first_output_step_histogram": {
                str(c): int(v) for c, v in enumerate(np.bincount(first_shared)) if v},
        }
    else:
        no_spike = {"readout": readout, "images_without_output_spike": None,
                    "note": "vmem readout: the output layer never fires and the prediction is "
                            "the argmax of its potential, so 'no output spike' cannot happen"}

    reference = None
    if reference_images > 0:
        _say(f"[evaluate] TF reference simulator (exp='tf') on {reference_images} images")
        reference = compare_with_reference(
            spec, stage, images[:reference_images], labels[:reference_images],
            {name: np.concatenate(kept_times[name]) for name in neuron_layers},
            predictions[:reference_images], potentials[:reference_images],
            over_time[:, :reference_images], neuron_layers, windows, progress)
        replay = reference["replay_on_tf_spikes"]
        if max(replay.values()) > POTENTIAL_RTOL:
            failures.append(f"post-process replayed on TF's spike times differs from TF's "
                            f"potentials by {max(replay.values()):.3g} relative "
                            f"(> {POTENTIAL_RTOL})")
        if reference["accuracy_over_time"]["unexplained"]:
            failures.append(f"accuracy over time: {reference['accuracy_over_time']['unexplained']}"
                            f" predictions differ from the TF reference's without a tie")
        unexplained = {k: v["unexplained"] for k, v in reference["spike_times"].items()
                       if v["unexplained"]}
        if unexplained:
            failures.append(f"spike times differ from the TF reference without a threshold tie: "
                            f"{unexplained}")

    results = {
        "model": str(model_path),
        "dataset": data.source,
        "test_images": n,
        "readout": readout,
        "output_layer": output_name,
        "pool_modes": {layer.name: layer.pool_mode for layer in spec.layers
                       if layer.kind == "maxpool"},
        "time_steps": stage.time_steps,
        "ann": ann,
        "snn": {
            "accuracy": accuracy,
            "engines": {engine: {"accuracy": accuracy, "seconds": round(seconds[engine], 4),
                                 "images_per_second": n / seconds[engine]
                                 if seconds[engine] > 0 else None}
                        for engine in engines},
            # check_engines_identical raised otherwise; None: there was only one engine
            "engines_identical": True if len(engines) == 2 else None,
            "analytic_refused": analytic_refused,
            "identical_checks": ["predictions", "output potentials (bit patterns)",
                                 "spike counts per layer", "first-spike times per layer"],
            "batch": size,
            "threads": threads,
        },
        "spikes_per_image": spikes_per_image,
        "spikes_per_image_std": {name: float(counts[name].std()) for name in neuron_layers},
        "hidden_layers": hidden,
        "hidden_spikes_per_image": hidden_total,
        "classes": list(data.class_names),
        "per_class_accuracy": {name: (float((predictions[labels == c] == c).mean())
                                      if (labels == c).any() else None)
                               for c, name in enumerate(data.class_names)},
        "reference_run": None if not mnist else {
                          "spikes_per_image": REFERENCE_SPIKES,
                          "hidden_spikes_per_image": REFERENCE_HIDDEN_TOTAL,
                          "accuracy_at": {str(k): v for k, v in REFERENCE_ACCURACY.items()},
                          "source": "docs/ALGORITHM.md section 9 (TF reference, its trained model)"},
        "accuracy_over_time": {"steps": [int(t) for t in records],
                               "accuracy": [float(a) for a in accuracy_over_time]},
        "postprocess_check": {"max_relative_difference_final": worst_relative,
                              "tolerance": POTENTIAL_RTOL,
                              "bit_identical_potentials": bit_identical,
                              "potentials": int(n * stage.classes),
                              "kernel_exp": EXP_SOURCE,
                              "final_prediction_mismatches": final_mismatch,
                              "final_prediction_mismatches_at_ties": final_mismatch_ties},
        "no_output_spike": no_spike,
        "first_spike_histograms": {name: {"window": list(windows[name]),
                                          "counts": histograms[name].tolist(),
                                          "never_fired": int(n * infos[name].size
                                                             - histograms[name].sum())}
                                   for name in neuron_layers},
        "reference": reference,
        "efficiency": efficiency.efficiency_record(
            spec, spikes_per_image, {name: float(v.mean()) for name, v in synops.items()},
            efficiency.blank_image_spikes(model_path)),
        "failures": failures,
    }

    results_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(results_dir / PER_IMAGE_NPZ, labels=labels, predictions=predictions,
                        potentials=potentials, record_steps=records,
                        predictions_over_time=over_time,
                        **{f"spike_counts_{name}": counts[name] for name in neuron_layers},
                        **{f"synaptic_operations_{name}": v for name, v in synops.items()})
    _plot_accuracy(results_dir / PLOT_ACCURACY, results, ann_compare, stage)
    _plot_histograms(results_dir / PLOT_HISTOGRAM, results, neuron_layers, output_name)
    _plot_spikes(results_dir / PLOT_SPIKES, results, neuron_layers)
    picked = _pick_steps(stage, records)
    summary = summary_rows(results, picked, ann_compare)
    (results_dir / REPORT_MD).write_text(_report_markdown(results, summary, picked))
    results["summary"] = [{"quantity": k, "value": v} for k, v in summary]
    (results_dir / RESULTS_JSON).write_text(json.dumps(results, indent=1) + "\n")

    _say(f"[evaluate] results in {results_dir}")
    _say(format_table(["quantity", "value"], summary))
    if failures:
        raise EvaluationError("evaluation checks failed (results written to "
                              f"{results_dir}):\n  " + "\n  ".join(failures))
    return results


# ---- Tables, report, plots --------------------------------------------------------------------


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def summary_rows(results: dict, steps: Sequence[int], ann_accuracy: float) -> List[Tuple[str, str]]:
    snn = results["snn"]
    n = results["test_images"]
    rows = [("ANN accuracy (test)", f"{_pct(ann_accuracy)}" + (
        f" ({n} images; all {results['ann']['test_images']}: "
        f"{_pct(results['ann']['test_accuracy'])})"
        if "test_accuracy_on_evaluated_images" in results["ann"] else f" ({n} images)")),
            ("SNN accuracy, stepped / analytic",
             f"{_pct(snn['engines']['stepped']['accuracy'])} / "
             f"{_pct(snn['engines']['analytic']['accuracy'])} (identical bit for bit)"
             if snn["engines_identical"] else
             f"{_pct(snn['engines']['stepped']['accuracy'])} / refused (overlapping windows)")]
    ref = results["reference"]
    if ref is not None:
        layers = ref["spike_times"].values()
        neurons = sum(v["neurons"] for v in layers)
        differ = sum(v["mismatches"] for v in layers)
        ties = sum(v["direct_ties"] + v["after_an_earlier_tie"] for v in layers)
        pot = ref["output_potentials"]
        rows.append((f"TF reference agreement ({ref['images']} images)",
                     f"predictions {100 * ref['identical_predictions_fraction']:.2f} % "
                     f"identical; spike times {differ} of {neurons} differ ({ties} at or after "
                     f"a threshold tie); max |dV| {pot['max_abs_difference']:.2g} "
                     f"({pot['max_abs_difference_identical_spikes']:.2g} where spikes agree)"))
    reference_spikes = (results.get("reference_run") or {}).get("spikes_per_image", {})
    for name, value in results["spikes_per_image"].items():
        note = ""
        if name in reference_spikes:
            note = f" (reference run {reference_spikes[name]:.0f})"
        if name == results["output_layer"] and results["readout"] == "vmem":
            note = " (output layer: does not fire under vmem readout)"
        rows.append((f"spikes per image, {name}", f"{value:.1f}{note}"))
    rows.append((f"spikes per image, hidden ({' + '.join(results['hidden_layers'])})",
                 f"{results['hidden_spikes_per_image']:.1f}" + (
                     f" (reference run {REFERENCE_HIDDEN_TOTAL:.0f})" if reference_spikes
                     else "")))
    rows += efficiency_summary_rows(results["efficiency"])
    over = results["accuracy_over_time"]
    for t in steps:
        a = over["accuracy"][over["steps"].index(t)]
        rows.append((f"accuracy at t = {t}", _pct(a)))
    no_spike = results["no_output_spike"]
    if no_spike["images_without_output_spike"] is None:
        rows.append(("images without an output spike", "cannot happen (vmem readout)"))
    else:
        rows.append(("images without an output spike",
                     f"{no_spike['images_without_output_spike']} (fallback accuracy "
                     f"{_pct(no_spike['fallback_accuracy'])})"))
        rows.append(("first output spike shared by several classes",
                     f"{no_spike['images_with_simultaneous_first_spikes']} (lowest index wins; "
                     f"accuracy {_pct(no_spike['simultaneous_first_spikes_accuracy'])})"))
    for engine in snn["engines"]:
        ips = snn["engines"][engine]["images_per_second"]
        rows.append((f"images/s, {engine} engine (CPU)",
                     "n/a" if ips is None else f"{ips:.0f}"))
    return rows


def efficiency_summary_rows(record: dict) -> List[Tuple[str, str]]:
    """The efficiency figures (export.efficiency) as summary rows."""
    rows = []
    blank = record.get("blank_image_spikes")
    if blank is not None:
        rows.append(("spikes on a blank image, hidden",
                     f"{blank['hidden']} (" + ", ".join(f"{k} {v}" for k, v in
                                                       blank["per_layer"].items()) + ")"))
    rows.append(("synaptic operations per image",
                 f"{record['synaptic_operations_total']:,.0f} (ANN: "
                 f"{record['ann_multiply_adds_total']:,} multiply-adds; ratio "
                 f"{record['synops_per_multiply_add']:.3f})"))
    return rows


def efficiency_markdown(record: dict) -> List[str]:
    """The report's efficiency section: the per-layer table and what it counts."""
    blank = record.get("blank_image_spikes")
    return ["## Efficiency", "",
            "Synaptic operations: every spike that reaches a conv2d or dense layer times its "
            "fan-out there, counted at the receiving layer (through the pools as the pool mode "
            "relays: an `or` pooled unit can deliver several spikes). The ANN column: its "
            "multiply-adds for the same layer. Spikes on a blank image: one all-zero image "
            "(neurons that fire on their bias alone).", "",
            *_md_table(efficiency.EFFICIENCY_HEADER, efficiency.efficiency_rows(record)), "",
            f"Synaptic operations per image: {record['synaptic_operations_total']:,.0f}, "
            f"{record['synops_per_multiply_add']:.3f} of the ANN's "
            f"{record['ann_multiply_adds_total']:,} multiply-adds."
            + ("" if blank is None else
               f" Hidden spikes on a blank image: {blank['hidden']}."), ""]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table for the terminal."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "-+-".join("-" * w for w in widths)
    out = [" | ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip(), line]
    out += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(out)


def _md_table(header: Sequence[str], rows: Sequence[Sequence]) -> List[str]:
    def cell(value) -> str:  # a bare | (as in |V - vth|) would split the cell
        return str(value).replace("|", "\\|")

    return ["| " + " | ".join(map(cell, header)) + " |",
            "|" + "|".join("---" for _ in header) + "|",
            *["| " + " | ".join(map(cell, r)) + " |" for r in rows]]


def _report_markdown(results: dict, summary, picked: Sequence[int]) -> str:
    snn = results["snn"]
    lines = ["# Evaluation", "",
             f"Model: `{results['model']}`  ", f"Dataset: {results['dataset']}  ",
             f"Test images: {results['test_images']}, readout `{results['readout']}`, pools "
             f"{results['pool_modes']}, {results['time_steps']} time steps", "",
             "## Summary", "", *_md_table(["quantity", "value"], summary), ""]
    if results["failures"]:
        lines += ["**Checks that FAILED:**", "", *[f"- {f}" for f in results["failures"]], ""]

    lines += ["## Engines (libttfs, CPU)", "",
              ("Both engines ran every batch; predictions, output potentials (bit patterns), "
               "spike counts and first-spike times of every neuron layer were identical."
               if snn["engines_identical"] else
               f"Only the stepped engine ran: the analytic engine refused the model "
               f"({snn['analytic_refused']})."), "",
              *_md_table(["engine", "accuracy", "seconds in run()", "images/s"],
                         [(e, _pct(v["accuracy"]), f"{v['seconds']:.3f}",
                           "n/a" if v["images_per_second"] is None
                           else f"{v['images_per_second']:.0f}")
                          for e, v in snn["engines"].items()]), ""]

    reference_spikes = (results.get("reference_run") or {}).get("spikes_per_image", {})
    lines += ["## Spikes per image", "",
              f"Hidden layers ({', '.join(results['hidden_layers'])}) are what the reference "
              f"counted: {results['hidden_spikes_per_image']:.1f} per image" + (
                  " (reference run: 1226 conv1 + 1090 conv2 = 2316, with its own trained "
                  "model)." if reference_spikes else "."), "",
              *_md_table(["layer", "spikes / image", "std", "reference run"],
                         [(k, f"{v:.1f}", f"{results['spikes_per_image_std'][k]:.1f}",
                           f"{reference_spikes[k]:.0f}" if k in reference_spikes else "")
                          for k, v in results["spikes_per_image"].items()]), "",
              f"![spikes per layer]({PLOT_SPIKES})", "",
              f"![first-spike times]({PLOT_HISTOGRAM})", "",
              *efficiency_markdown(results["efficiency"])]

    if results.get("per_class_accuracy"):
        lines += ["## SNN accuracy per class", "",
                  *_md_table(["class", "name", "accuracy"],
                             [(i, name, _pct(a)) for i, (name, a) in
                              enumerate(results["per_class_accuracy"].items())]), ""]

    over = results["accuracy_over_time"]
    check = results["postprocess_check"]
    lines += ["## Accuracy against time", "",
              "From libttfs's recorded spike times, replayed into the output layer with numpy "
              f"(kernel tables: {check['kernel_exp']}). Check: final potentials equal libttfs's "
              f"to {check['max_relative_difference_final']:.2g} relative (tolerance "
              f"{check['tolerance']}), {check['bit_identical_potentials']} of "
              f"{check['potentials']} bit for bit; final predictions differing: "
              f"{check['final_prediction_mismatches']} (at potential ties: "
              f"{check['final_prediction_mismatches_at_ties']}).", "",
              f"![accuracy vs time]({PLOT_ACCURACY})", "",
              *_md_table(["t", "accuracy"],
                         [(t, _pct(a)) for t, a in zip(over["steps"], over["accuracy"])
                          if t % 40 == 39 or t in picked]), ""]

    ref = results["reference"]
    if ref is not None:
        acc = ref["accuracy_over_time"]
        lines += [f"## Agreement with the TF reference simulator ({ref['images']} images, "
                  f"exp='tf', {ref['seconds']} s)", "",
                  f"- identical predictions: {100 * ref['identical_predictions_fraction']:.2f} % "
                  f"({ref['prediction_mismatches']} differ); accuracy libttfs "
                  f"{_pct(ref['libttfs_accuracy'])}, TF {_pct(ref['tf_accuracy'])}",
                  f"- max |output potential difference|: "
                  f"{ref['output_potentials']['max_abs_difference']:.3g} (images with identical "
                  f"spike times, {ref['output_potentials']['images_identical_spikes']}: "
                  f"{ref['output_potentials']['max_abs_difference_identical_spikes']:.3g})",
                  f"- post-process on TF's own spike times vs TF's potentials over time: "
                  f"{ref['replay_on_tf_spikes']['max_relative_difference_over_time']:.2g} "
                  f"relative",
                  f"- accuracy over time: {acc['differing_predictions']} (image, step) "
                  f"predictions differ; {acc['explained_by_spike_time_ties']} follow a spike-time"
                  f" tie, {acc['explained_by_potential_ties']} a potential tie, "
                  f"{acc['unexplained']} unexplained", "",
                  *_md_table(["layer", "identical spike times", "mismatches", "direct ties",
                              "after an earlier tie", "unexplained", "largest tie |V - vth|"],
                             [(k, f"{100 * v['identical_fraction']:.4f} %", v["mismatches"],
                               v["direct_ties"], v["after_an_earlier_tie"], v["unexplained"],
                               f"{v['largest_tie_margin']:.2g}")
                              for k, v in ref["spike_times"].items()]), "",
                  *_md_table(["t", "TF reference", "libttfs + post-process"],
                             [(t, _pct(a), _pct(b)) for t, a, b in
                              zip(acc["steps"], acc["tf_reference"], acc["libttfs_postprocess"])
                              if t % 40 == 39 or t in picked or a != b]), ""]

    no_spike = results["no_output_spike"]
    lines += ["## Images without an output spike", ""]
    if no_spike["images_without_output_spike"] is None:
        lines += [no_spike["note"] + ".", ""]
    else:
        lines += [f"{no_spike['images_without_output_spike']} of {results['test_images']} images "
                  f"({_pct(no_spike['fraction'])}) had no output spike; the potential argmax "
                  f"predicted them with accuracy {_pct(no_spike['fallback_accuracy'])}.", "",
                  *_md_table(["fallback class", "images"],
                             [(c, v) for c, v in no_spike["fallback_predicted_classes"].items()
                              if v]), "",
                  f"{no_spike['images_with_simultaneous_first_spikes']} images had several "
                  f"classes fire at their first output step (the lowest index decides; "
                  f"accuracy on them {_pct(no_spike['simultaneous_first_spikes_accuracy'])}).",
                  "",
                  *_md_table(["classes firing at the first output step", "images"],
                             list(no_spike["classes_at_first_output_step_histogram"].items())),
                  ""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _zoom_range(over: dict, ann_accuracy: float) -> Tuple[Tuple[float, float], Tuple[int, int]]:
    """The zoomed panel's y range (in %) around the final SNN and the ANN accuracy, and its x
    range: from the first record step whose accuracy is inside that band to the last step."""
    steps = np.asarray(over["steps"])
    accuracy = 100 * np.asarray(over["accuracy"], np.float64)
    final, ann = float(accuracy[-1]), 100 * float(ann_accuracy)
    span = max(abs(final - ann), 0.1)
    low = min(final, ann) - max(2 * span, 0.3)
    high = min(max(final, ann) + max(span, 0.15), 100.05)
    inside = np.flatnonzero(accuracy >= low)
    first = int(steps[inside[0]]) if inside.size else int(steps[0])
    return (low, high), (max(first - 10, 0), int(steps[-1]) + 2)


def _plot_accuracy(path: Path, results: dict, ann_accuracy: float, stage: OutputStage) -> None:
    """Accuracy against time: the whole run (left) and a zoom around the final accuracy
    (right), where the SNN and the ANN actually differ."""
    plt = _pyplot()
    over = results["accuracy_over_time"]
    steps = over["steps"]
    accuracy = [100 * a for a in over["accuracy"]]
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    start, end = stage.integ_window
    for axis in (ax, zoom):
        axis.plot(steps, accuracy, marker=".",
                  label=f"SNN (libttfs, {results['test_images']} images), final "
                        f"{accuracy[-1]:.2f} %")
        axis.axhline(100 * ann_accuracy, color="black", linestyle="--",
                     label=f"ANN {100 * ann_accuracy:.2f} %")
        axis.axvspan(start, end, color="tab:orange", alpha=0.12,
                     label=f"output integration window [{start}, {end})")
        axis.set_xlabel("time step t")
        axis.grid(alpha=0.3)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy against time ({results['readout']} readout)")
    ax.set_ylim(0, 100.5)
    ax.legend(loc="lower right", fontsize=8)
    (low, high), (left, right) = _zoom_range(over, ann_accuracy)
    zoom.set_ylim(low, high)
    zoom.set_xlim(left, right)
    zoom.set_title(f"Zoom: SNN {accuracy[-1]:.2f} % vs ANN {100 * ann_accuracy:.2f} % "
                   f"({accuracy[-1] - 100 * ann_accuracy:+.2f} points)", fontsize=10)
    ax.indicate_inset_zoom(zoom, edgecolor="gray")  # the zoomed region, drawn on the left
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def firing_layers(results: dict, neuron_layers: Sequence[str], output_name: str) -> List[str]:
    """The neuron layers that can fire: not the output layer under vmem readout (it never
    fires), not a layer whose fire window is empty."""
    hist = results["first_spike_histograms"]
    return [name for name in neuron_layers
            if not (name == output_name and results["readout"] == "vmem")
            and hist[name]["window"][1] > hist[name]["window"][0]]


def _plot_histograms(path: Path, results: dict, neuron_layers: Sequence[str],
                     output_name: str) -> None:
    """First-spike times per layer, one panel per layer that can fire."""
    plt = _pyplot()
    hist = results["first_spike_histograms"]
    n = results["test_images"]
    layers = firing_layers(results, neuron_layers, output_name)
    silent = [name for name in neuron_layers if name not in layers]
    fig, axes = plt.subplots(max(len(layers), 1), 1, figsize=(7, 2.1 * max(len(layers), 1) + 0.4),
                             squeeze=False)
    for ax, name in zip(axes[:, 0], layers):
        start, end = hist[name]["window"]
        counts = np.asarray(hist[name]["counts"])
        ax.bar(np.arange(start, end), counts[start:end] / n, width=1.0)
        ax.set_title(f"{name}: {results['spikes_per_image'][name]:.1f} spikes/image, "
                     f"fire window [{start}, {end})", fontsize=9)
        ax.set_ylabel("spikes / image")
    axes[-1, 0].set_xlabel("first-spike time step")
    if silent:
        fig.suptitle("not shown (cannot fire): " + ", ".join(
            f"{name}" + (" (output, vmem readout)" if name == output_name else
                         " (empty fire window)") for name in silent), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_spikes(path: Path, results: dict, neuron_layers: Sequence[str]) -> None:
    plt = _pyplot()
    values = [results["spikes_per_image"][name] for name in neuron_layers]
    x = np.arange(len(neuron_layers))
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(x - 0.2, values, width=0.4, label="this model (libttfs)")
    for bar, v in zip(bars, values):
        ax.annotate(f"{v:.0f}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                    va="bottom", fontsize=8)
    reference_spikes = (results.get("reference_run") or {}).get("spikes_per_image", {})
    reference = [reference_spikes.get(name, np.nan) for name in neuron_layers]
    if any(np.isfinite(reference)):
        ax.bar(x + 0.2, reference, width=0.4, hatch="//", alpha=0.6,
               label="TF reference run (docs/ALGORITHM.md 9)")
    ax.set_xticks(x, neuron_layers)
    ax.set_ylabel("spikes per image")
    ax.set_title(f"Spikes per image ({results['test_images']} test images); hidden total "
                 f"{results['hidden_spikes_per_image']:.0f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
