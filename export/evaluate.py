"""The evaluation step: how good is the exported SNN, and can its numbers be trusted?

This module runs and checks: the engines, the TF reference, the comparisons, the `results`
dict with every number. export/evaluate_output.py holds the output layer over time (record
steps, readout at step t), export/evaluate_report.py turns `results` into the files and the
summary table.

    evaluate   -> results/report.md, results.json,   accuracy (both engines), spikes, accuracy
                  per_image.npz, *.png               over time, TF-reference agreement, plots

It reads run_dir/model.ttfs (the export step's model) and train.json (the ANN's accuracies) and:

1. runs libttfs on the CPU over the test images (all 10000 by default) with the stepped AND the
   analytic engine, batch by batch, and fails loudly unless the two agree bit for bit
   (predictions, output potentials and output traces as bit patterns, spike counts and
   first-spike times of every neuron layer, docs/ENGINES.md); images/s per engine is timed inside session.run only. A
   model with overlapping windows (T_s < T_d), which the analytic engine refuses, runs on the
   stepped engine alone, and the report says so;
2. counts spikes per image per neuron layer, and the total of the hidden layers only (what the
   TF reference counted: not the input, not the output; docs/ALGORITHM.md section 9: 1226 conv1 +
   1090 conv2 = 2316);
3. computes accuracy against time (t = 9, 19, ..., T-1) from the output layer's potentials
   after those steps, recorded by libttfs's engines themselves (the output trace,
   docs/C_API.md), and the readout at each step (export/evaluate_output.py); the trace's last
   step must be the run's output potentials, bit for bit (checked on every image);
4. compares with the TensorFlow reference simulator (export.tf_reference, exp="tf") on the first
   --reference-images test images: identical predictions, identical spike times per layer
   (with every mismatch classified as a threshold tie or not), output-potential differences
   at the last step and over time, and accuracy over time (equal except at ties);
5. says what the readout does when nothing fires: under first_spike, the images without an
   output spike and what the potential-argmax fallback made of them, and the images whose
   first output step has several classes firing (decided by the lowest index, a tie); under
   vmem, that the output layer never fires so that case cannot arise;
6. reports the efficiency figures of export/efficiency.py: spikes per neuron per layer,
   synaptic operations per image (each delivered spike times its fan-out) next to the ANN's
   multiply-adds, and the spikes of one all-zero image.

Everything lands in run_dir/results/ (or --results-dir), written by export/evaluate_report.py:
report.md with the tables and the plots, results.json with every number, per_image.npz
(predictions, spike counts, synaptic operations, predictions over time per image),
accuracy_vs_time.png (with a zoom on the final accuracy), first_spike_histogram.png (the
layers that can fire), spikes_per_layer.png.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from export import efficiency, evaluate_report, ttfs_format
from export.evaluate_output import (RECORD_EVERY, OutputStage, output_stage,
                                    predictions_over_time, record_steps_for)

F32 = np.float32

MODEL_FILE = "model.ttfs"
TRAIN_FILE = "train.json"
ANN_FILE = "ann.keras"
RESULTS_DIR = "results"

# What the TF reference run counted per image on the 10000 test images (docs/ALGORITHM.md section 9).
REFERENCE_SPIKES = {"conv1": 1226.0, "conv2": 1090.0}
REFERENCE_HIDDEN_TOTAL = 2316.0
REFERENCE_ACCURACY = {169: 0.9834, 189: 0.9912, 399: 0.9922}

# TF sums in its own order with its own exp, libttfs in canonical order (docs/ENGINES.md): two
# potentials may differ by the rounding of a float32 sum, so two classes whose potentials are
# within 1e-5 of the largest |V| (at least 1) are a potential tie. 1e-5 is ~100 float32 ulps.
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


# ---- Running libttfs with both engines --------------------------------------------------------


@dataclasses.dataclass
class EngineBatch:
    """One engine's outputs for one batch."""

    predictions: np.ndarray
    potentials: np.ndarray
    spike_counts: Dict[str, np.ndarray]
    spike_times: Dict[str, np.ndarray]
    trace: np.ndarray  # (n, record steps, classes): the output trace
    seconds: float


def _run_engine(session, images, neuron_layers: Sequence[str]) -> EngineBatch:
    started = time.perf_counter()
    result = session.run(images)
    seconds = time.perf_counter() - started  # inside session.run only
    return EngineBatch(predictions=result.predictions, potentials=result.potentials,
                       spike_counts={name: session.spike_counts(name) for name in neuron_layers},
                       spike_times={name: session.spike_times(name) for name in neuron_layers},
                       trace=session.output_trace(), seconds=seconds)


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
    trace_s = np.ascontiguousarray(stepped.trace, F32).view(np.uint32)
    trace_a = np.ascontiguousarray(analytic.trace, F32).view(np.uint32)
    if not np.array_equal(trace_s, trace_a):
        idx = np.argwhere(trace_s != trace_a)[0]
        fail(f"output trace bits ({stepped.trace[tuple(idx)]!r} vs "
             f"{analytic.trace[tuple(idx)]!r})", idx)
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
                           lib_potentials: np.ndarray, lib_trace: np.ndarray,
                           lib_over_time: np.ndarray,
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

    # Accuracy over time: ours (libttfs's output trace) vs TF's own. A differing prediction is
    # explained by a spike-time tie in that image, or by a potential near-tie (the two classes'
    # potentials within rounding of each other).
    steps, tf_accuracy = tf.accuracy_over_time(labels)
    tf_preds = tf.predictions_over_time()
    common = np.intersect1d(steps, record_steps_for(stage.time_steps))
    ours_rows = [int(np.flatnonzero(record_steps_for(stage.time_steps) == t)[0]) for t in common]
    tf_rows = [int(np.flatnonzero(steps == t)[0]) for t in common]
    # The potentials over time themselves, where the spike times are identical.
    over_time_diff = np.abs(np.asarray(lib_trace, np.float64)[:, ours_rows][clean]
                            - np.swapaxes(tf.potentials_over_time[tf_rows], 0, 1)[clean])
    potentials["max_abs_difference_over_time_identical_spikes"] = \
        float(over_time_diff.max()) if over_time_diff.size else 0.0
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
        "accuracy_over_time": {
            "steps": [int(t) for t in common],
            "tf_reference": [float(a) for a in tf_accuracy[tf_rows]],
            "libttfs": [float(a) for a in ours_accuracy],
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
                                             record_spike_times=True, threads=threads,
                                             output_trace_steps=records)}
        analytic_refused = None
        try:
            sessions["analytic"] = model.session(backend="cpu", engine="analytic",
                                                 max_batch=size, record_spike_times=True,
                                                 threads=threads, output_trace_steps=records)
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
        trace_last_identical = 0  # potentials whose trace at the last step is the run's, bit for bit
        kept_times = {name: [] for name in neuron_layers}  # the reference subset
        kept_trace = []
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
            over_time[:, lo:hi] = predictions_over_time(readout, records, primary.trace, out_times)
            trace_last_identical += int((primary.trace[:, -1].view(np.uint32)
                                         == primary.potentials.view(np.uint32)).sum())
            if lo < reference_images:
                kept_trace.append(primary.trace[:reference_images - lo])
    finally:
        for session in sessions.values():
            session.close()

    failures = []
    if trace_last_identical != n * stage.classes:
        failures.append(f"output trace: at the last step {n * stage.classes - trace_last_identical}"
                        f" potentials differ from the run's (a libttfs bug)")
    if not np.array_equal(over_time[-1], predictions):
        failures.append("accuracy over time: the last step's predictions differ from the run's")

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
            np.concatenate(kept_trace), over_time[:, :reference_images], neuron_layers, windows,
            progress)
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
        "trace_check": {"last_step_bit_identical_potentials": trace_last_identical,
                        "potentials": int(n * stage.classes)},
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

    per_image = dict(labels=labels, predictions=predictions, potentials=potentials,
                     record_steps=records, predictions_over_time=over_time,
                     **{f"spike_counts_{name}": counts[name] for name in neuron_layers},
                     **{f"synaptic_operations_{name}": v for name, v in synops.items()})
    summary = evaluate_report.write_results(results_dir, results, per_image, ann_compare,
                                            stage.integ_window, neuron_layers, output_name)

    _say(f"[evaluate] results in {results_dir}")
    _say(evaluate_report.format_table(["quantity", "value"], summary))
    if failures:
        raise EvaluationError("evaluation checks failed (results written to "
                              f"{results_dir}):\n  " + "\n  ".join(failures))
    return results

