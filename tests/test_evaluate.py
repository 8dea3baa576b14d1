"""The evaluation step (export/evaluate.py, evaluate_output.py, evaluate_report.py).

1. The numpy post-process that replays the output layer's potential over time from recorded
   spike times, against the independent simulator tests/reference_numpy.py: for every record
   step t the reference is run for exactly t + 1 steps, and its output potentials and
   predictions must be what the post-process says about step t. Both pool modes, both
   readouts, a dense and a conv2d output layer, SAME-padded pooling.
2. A hand-computed case for the pool modes (`or` relays every distinct child spike step,
   `earliest` only the first; arrivals at t = 0 have k = 1, as the bias).
3. The readout at step t (first_spike: earliest class by t, ties to the lowest index, else the
   potential argmax) on hand-written times.
4. The engine check refuses a difference of one bit (+0.0 vs -0.0); the TF tie classifier
   accepts only one-step differences within rounding of the threshold.
5. step_evaluate end to end on a tiny `python -m export all` run (conftest.tiny_run_dir), for
   the vmem readout, a copy of the model switched to first_spike, and a copy with overlapping
   windows (the analytic engine refuses it; stepped only): files, results.json against
   numbers recomputed here with pyttfs, valid PNGs, the summary table on stdout.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import reference_numpy as ref
from export import evaluate as ev
from export import evaluate_output as evo
from export import evaluate_report as evr
from export.ttfs_format import (NeuronParams, build_model, conv2d, dense, flatten, input_layer,
                                maxpool, read_model, write_model)

F32 = np.float32


def _pyttfs():
    """pyttfs, or a skip when libttfs is not built (pyttfs raises LibraryError, an OSError)."""
    try:
        import pyttfs
    except (ImportError, OSError) as error:
        pytest.skip(f"libttfs is not available: {error}")
    return pyttfs
T_S = T_D = 20
STEPS = 60


# ---- 1. post-process vs reference_numpy ------------------------------------------------------


def _spec(pool_mode: str, readout: str, output: str, bias_shift: float = 0.0):
    """input 9x11 -> conv 3x3x4 -> maxpool 3x3 stride 2 SAME (4x5x4, padded before and
    after) -> [flatten -> dense 6] or [conv 2x3 stride 2 -> 2x2x3]; constants differ per
    layer. With a gated pool the conv layer's td_fire is +4, so its threshold is above 1 in
    the first steps of its window and a later child can still take a window over (gated then
    differs from earliest)."""
    rng = np.random.default_rng(3)
    layers = [input_layer((9, 11, 1), name="input", neuron=NeuronParams(tau_fire=14.5)),
              conv2d("conv", rng.normal(0.12, 0.3, size=(3, 3, 1, 4)),
                     rng.normal(0.0, 0.05, size=4),
                     neuron=NeuronParams(tau_fire=17.0, td_fire=4.0 if pool_mode == "gated"
                                         else -1.25, vth0=0.9)),
              maxpool("pool", size=(3, 3), stride=(2, 2), padding="same", mode=pool_mode)]
    out_neuron = NeuronParams(tau_fire=19.0, vth0=1.0)
    if output == "dense":
        layers += [flatten("flatten"),
                   dense("out", rng.normal(-0.02, 0.2, size=(80, 6)),
                         rng.normal(0.0, 0.1, size=6) + bias_shift, neuron=out_neuron)]
    else:
        layers += [conv2d("out", rng.normal(-0.02, 0.2, size=(2, 3, 4, 3)),
                          rng.normal(0.0, 0.1, size=3) + bias_shift, stride=(2, 2),
                          neuron=out_neuron)]
    return build_model(layers, time_steps=STEPS, readout=readout, time_fire_start=T_S,
                       time_fire_duration=T_D)


def _images(count: int = 12) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, size=(count, 9, 11, 1)).astype(np.uint8)


def _spec_for(pool_mode: str, readout: str, output: str):
    """Under first_spike, the output biases are shifted so that about half the images get an
    output spike: V is final before the fire window opens (and the bias enters it with weight
    1), so an image fires iff its largest output potential reaches the last threshold
    exp(-(T_d - 1) / tau); the shift puts the median image's largest potential there."""
    if readout == "vmem":
        return _spec(pool_mode, readout, output)
    silent = ref.simulate(_spec(pool_mode, "vmem", output), _images(), record=False)
    median = float(np.median(silent.potentials.max(axis=1)))
    return _spec(pool_mode, readout, output, bias_shift=math.exp(-(T_D - 1) / 19.0) - median)


@pytest.mark.parametrize("output", ["dense", "conv2d"])
@pytest.mark.parametrize("readout", ["vmem", "first_spike"])
@pytest.mark.parametrize("pool_mode", ["or", "earliest", "gated"])
def test_potentials_over_time_match_the_numpy_reference(pool_mode, readout, output):
    spec = _spec_for(pool_mode, readout, output)
    images = _images()
    n = len(images)
    full = ref.simulate(spec, images, record=False)
    last = len(spec.layers) - 1
    out_times = full.spike_times[last].reshape(n, -1)
    if readout == "first_spike":  # both branches of the readout must be exercised
        fired = (out_times >= 0).any(axis=1)
        assert 0 < fired.sum() < n, f"{fired.sum()} of {n} images fired; tune _spec_for"

    stage = evo.output_stage(spec)
    assert stage.source == "conv" and [r.name for r in stage.relays][0] == "pool"
    records = evo.record_steps_for(STEPS)
    assert records.tolist() == [9, 19, 29, 39, 49, 59]
    trace = evo.output_potentials_over_time(stage, full.spike_times[1], out_times, records)
    over_time = evo.predictions_over_time(stage, trace, out_times)

    moved = 0
    for r, t in enumerate(records):
        upto = ref.simulate(spec, images, time_steps=int(t) + 1, record=False)
        magnitude = upto.final_magnitude[last].reshape(n, -1)
        rel = evo.relative_difference(trace.potentials[r], upto.potentials, magnitude)
        assert rel.max() <= ev.POTENTIAL_RTOL, f"t={t}: relative difference {rel.max():.3g}"
        np.testing.assert_array_equal(over_time[r], upto.predictions, err_msg=f"t={t}")
        moved += int(np.any(trace.potentials[r] != trace.potentials[max(r - 1, 0)]))
    assert moved >= 1, "the potentials never changed between record steps: a vacuous test"
    rel = evo.relative_difference(trace.final, full.potentials, full.final_magnitude[last]
                                 .reshape(n, -1))
    assert rel.max() <= ev.POTENTIAL_RTOL


def test_pool_modes_give_different_potentials():
    """The pool modes must differ on this network, or the test above could not tell a
    post-process that ignores the mode (gated against earliest on the same constants)."""
    images = _images()
    finals = {}
    for mode in ("or", "earliest", "gated"):
        spec = _spec(mode, "vmem", "dense")
        full = ref.simulate(spec, images, record=False)
        finals[mode] = evo.output_potentials_over_time(evo.output_stage(spec),
                                                      full.spike_times[1]).final
        if mode == "gated":
            spec.layers[2].pool_mode = "earliest"
            full = ref.simulate(spec, images, record=False)
            finals["earliest, gated's constants"] = evo.output_potentials_over_time(
                evo.output_stage(spec), full.spike_times[1]).final
    assert not np.allclose(finals["or"], finals["earliest"])
    assert not np.allclose(finals["gated"], finals["earliest, gated's constants"])


def test_post_process_matches_libttfs(tmp_path):
    """On libttfs's own spike times the replay gives libttfs's output potentials."""
    pyttfs = _pyttfs()
    images = _images()
    for readout in ("vmem", "first_spike"):
        spec = _spec_for("or", readout, "dense")
        path = tmp_path / f"{readout}.ttfs"
        write_model(spec, path)
        with pyttfs.Model(path) as model, model.session(backend="cpu", engine="stepped",
                                                        max_batch=len(images),
                                                        record_spike_times=True) as session:
            result = session.run(images)
            source, out = session.spike_times("conv"), session.spike_times("out")
        trace = evo.output_potentials_over_time(evo.output_stage(spec), source,
                                               out.reshape(len(images), -1))
        rel = evo.relative_difference(trace.final, result.potentials, trace.magnitude)
        assert rel.max() <= ev.POTENTIAL_RTOL
        np.testing.assert_array_equal(
            evo.predict_at(readout, trace.final, out.reshape(len(images), -1), STEPS - 1),
            result.predictions)


# ---- 2. a hand-computed case ------------------------------------------------------------------


def _k(t: int, tau: float = 20.0) -> F32:
    return F32(math.exp(-t / tau))  # td = 0; k(0) is 1 by definition, not by this formula


def test_pool_modes_by_hand():
    """input 2x2 -> maxpool 2x2 -> flatten -> dense 1x2. The output integrates [0, 20) with
    k(t) = exp(-t/20) (k(0) = 1). Image 0: pixels fire at 2, 5, 9 and never. Image 1: at 0,
    3, 3 and never (two children at one step: `or` relays ONE spike at 3)."""
    w = np.array([[0.5, -0.25]], F32)
    b = np.array([0.125, 0.0625], F32)
    layers = [input_layer((2, 2, 1), name="px"), maxpool("pool", size=(2, 2)), flatten(),
              dense("out", w, b)]
    x = np.zeros((2, 2, 2, 1), F32)

    def pixel(t):  # just above the threshold at t, well below the one at t - 1
        return F32(math.exp(-t / 20.0) * 1.001)

    x[0, :, :, 0] = [[pixel(2), pixel(5)], [pixel(9), 0.0]]
    x[1, :, :, 0] = [[1.0, pixel(3)], [pixel(3), 0.0]]
    times = np.array([[[2, 5], [9, -1]], [[0, 3], [3, -1]]], np.int32)[..., None]
    spec_or = build_model(layers, time_steps=40, time_fire_start=20, time_fire_duration=20)
    # the input's own spike times are what the reference simulator records for these pixels
    np.testing.assert_array_equal(ref.simulate(spec_or, x, record=False).spike_times[0], times)

    expected = {
        "or": [b + w[0] * _k(2) + w[0] * _k(5) + w[0] * _k(9), (w[0] + b) + w[0] * _k(3)],
        "earliest": [b + w[0] * _k(2), w[0] + b],
    }
    for mode, rows in expected.items():
        spec = build_model([layers[0], maxpool("pool", size=(2, 2), mode=mode), *layers[2:]],
                           time_steps=40, time_fire_start=20, time_fire_duration=20)
        trace = evo.output_potentials_over_time(evo.output_stage(spec), times,
                                               record_steps=np.array([1, 4, 39]))
        np.testing.assert_allclose(trace.final, np.array(rows, F32), rtol=1e-6, err_msg=mode)
        # after step 1 only image 1's t = 0 spike (and both biases) have arrived
        np.testing.assert_allclose(trace.potentials[0], [b, w[0] + b], rtol=1e-6)
        if mode == "or":  # by step 4: image 0 has its t = 2 spike, image 1 its step-3 spike
            np.testing.assert_allclose(trace.potentials[1], [b + w[0] * _k(2), rows[1]],
                                       rtol=1e-6)


# ---- 3. readout at step t ---------------------------------------------------------------------


def test_first_spike_readout_at_step():
    v = np.array([[0.1, 0.9, 0.3], [0.2, 0.7, 0.7], [0.5, 0.1, 0.0]], F32)
    times = np.array([[-1, 5, 3], [-1, -1, -1], [7, 7, -1]], np.int32)
    assert evo.predict_at("first_spike", v, times, 4).tolist() == [2, 1, 0]  # 1: argmax tie -> 1
    assert evo.predict_at("first_spike", v, times, 2).tolist() == [1, 1, 0]  # nothing fired yet
    assert evo.predict_at("first_spike", v, times, 7).tolist() == [2, 1, 0]  # 7, 7: lowest index
    assert evo.predict_at("vmem", v, times, 7).tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="readout 'spikes'"):
        evo.predict_at("spikes", v, times, 7)


# ---- 4. engine check -------------------------------------------------------------------------


def _batch(potential: float) -> ev.EngineBatch:
    return ev.EngineBatch(predictions=np.array([0, 1], np.int32),
                          potentials=np.array([[potential, 1.0], [0.5, 2.0]], F32),
                          spike_counts={"c": np.array([3, 4], np.int32)},
                          spike_times={"c": np.array([[1, -1], [2, 3]], np.int32)}, seconds=0.0)


def test_engine_check_is_bitwise():
    ev.check_engines_identical(_batch(0.0), _batch(0.0), 0)
    with pytest.raises(ev.EngineMismatchError, match=r"potential bits .* at image 1000"):
        ev.check_engines_identical(_batch(0.0), _batch(-0.0), 1000)  # equal as floats
    other = _batch(0.0)
    other.spike_times["c"][1, 0] = 5
    with pytest.raises(ev.EngineMismatchError, match=r"layer 'c' \(2 vs 5\) at image 8"):
        ev.check_engines_identical(_batch(0.0), other, 7)


class _FakeTfResult:
    """The two things _spike_time_ties reads from a tf_reference.SimResult."""

    def __init__(self, times, margin, previous):
        self.first_spike_times = {"c": np.array(times, np.int32)}
        self.thresholds = {"c": np.ones(10, F32)}
        self._margins = (np.array(margin, F32), np.array(previous, F32))

    def threshold_margins(self, layer):
        return self._margins


def test_spike_time_ties_are_one_step_and_within_rounding():
    # neuron: 0 same | 1 one step, V at vth | 2 one step, V far | 3 lib never, TF at the last
    # step (19 = end - 1), at vth | 4 lib at 19, TF never, at vth | 5 three steps, at vth
    lib = np.array([12, 13, 15, -1, 19, 11], np.int32)
    tf = _FakeTfResult([12, 14, 16, 19, -1, 14], margin=[0.3, 1e-7, 0.2, 5e-8, -2e-7, 0.0],
                       previous=[0.4, 0.1, 0.3, 0.2, 0.1, np.nan])
    mismatch, tie, largest = ev._spike_time_ties(lib, tf, "c", (10, 20))
    assert mismatch.tolist() == [False, True, True, True, True, True]
    assert tie.tolist() == [False, True, False, True, True, False]
    assert largest == pytest.approx(2e-7)


def test_cli_arguments_reach_the_options():
    """`python -m export evaluate` declares the evaluation options and they land in Options."""
    from export.__main__ import _parser
    from export.pipeline import Options

    args = _parser().parse_args(["evaluate", "--test-images", "50", "--reference-images", "0",
                                 "--results-dir", "out"])
    assert (args.test_images, args.reference_images, args.results_dir) == (50, 0, Path("out"))
    defaults = _parser().parse_args(["evaluate"])
    assert (defaults.test_images, defaults.reference_images, defaults.results_dir) == \
        (Options.test_images, Options.reference_images, Options.results_dir) == (None, 200, None)


# ---- 5. step_evaluate end to end ---------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert chunk == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100, (path, width, height)
    assert data.endswith(b"\x00\x00\x00\x00IEND\xaeB`\x82"), f"{path}: no IEND chunk at the end"


def _pyttfs_numbers(model_path, images):
    """Predictions, spike counts per neuron layer, output spike times, recomputed here."""
    pyttfs = _pyttfs()

    with pyttfs.Model(model_path) as model, \
            model.session(backend="cpu", engine="stepped", max_batch=len(images),
                          record_spike_times=True) as session:
        result = session.run(images)
        layers = [info.name for info in model.layers if info.has_neurons]
        counts = {name: session.spike_counts(name) for name in layers}
        out = session.spike_times(layers[-1]).reshape(len(images), -1)
    return result.predictions, counts, out


def _overlapping(spec, start: int = 60, duration: int = 80):
    """The same network with early firing (T_s < T_d): windows overlap, so only the stepped
    engine may run it (docs/ALGORITHM.md section 3)."""
    for layer in spec.layers:
        if layer.neuron is None:
            continue
        d = layer.depth
        layer.neuron.fire_window = (d * start, min(d * start + duration, spec.time_steps))
        if d > 0:
            layer.neuron.integ_window = ((d - 1) * start, (d - 1) * start + duration)
    return spec


@pytest.mark.parametrize("variant", ["vmem", "first_spike", "overlapping"])
def test_step_evaluate_on_a_tiny_run(tiny_run_dir, tmp_path, capsys, variant):
    _pyttfs()
    pytest.importorskip("matplotlib")
    from export.datasets import load_mnist
    from export.pipeline import Options

    run_dir = tiny_run_dir
    readout = "first_spike" if variant == "first_spike" else "vmem"
    if variant != "vmem":  # the same network, read out by the first output spike / overlapping
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        for name in ("train.json", "ann.keras"):
            shutil.copy(tiny_run_dir / name, run_dir / name)
        spec = read_model(tiny_run_dir / "model.ttfs")
        spec.readout = readout
        write_model(_overlapping(spec) if variant == "overlapping" else spec,
                    run_dir / "model.ttfs")
    out_dir = tmp_path / "results"
    results = ev.step_evaluate(Options(run_dir=run_dir, progress=False), test_images=200,
                               reference_images=20, results_dir=out_dir)
    printed = capsys.readouterr().out

    for name in (evr.REPORT_MD, evr.RESULTS_JSON, evr.PER_IMAGE_NPZ, evr.PLOT_ACCURACY,
                 evr.PLOT_HISTOGRAM, evr.PLOT_SPIKES):
        assert (out_dir / name).is_file(), name
    for name in (evr.PLOT_ACCURACY, evr.PLOT_HISTOGRAM, evr.PLOT_SPIKES):
        _assert_png(out_dir / name)
    saved = json.loads((out_dir / evr.RESULTS_JSON).read_text())
    assert saved["failures"] == [] and results["failures"] == []
    assert saved["test_images"] == 200 and saved["readout"] == readout

    test = load_mnist().test.take(200)
    labels = test.labels.astype(np.int64)
    predictions, counts, out_times = _pyttfs_numbers(run_dir / "model.ttfs", test.images)
    accuracy = float((predictions == labels).mean())

    snn = saved["snn"]
    if variant == "overlapping":
        assert snn["engines_identical"] is None and list(snn["engines"]) == ["stepped"]
        assert "UNSUPPORTED" in snn["analytic_refused"], snn["analytic_refused"]
    else:
        assert snn["engines_identical"] is True and snn["analytic_refused"] is None
        assert snn["engines"]["stepped"]["accuracy"] == snn["engines"]["analytic"]["accuracy"]
    assert snn["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert all(e["images_per_second"] > 0 for e in snn["engines"].values())
    per_image = np.load(out_dir / evr.PER_IMAGE_NPZ)
    np.testing.assert_array_equal(per_image["predictions"], predictions)
    for name, c in counts.items():
        assert saved["spikes_per_image"][name] == pytest.approx(float(c.mean()), rel=1e-12)
        np.testing.assert_array_equal(per_image[f"spike_counts_{name}"], c)
        histogram = saved["first_spike_histograms"][name]
        assert sum(histogram["counts"]) == int(c.sum())
    hidden = list(counts)[1:-1]
    assert saved["hidden_layers"] == hidden
    assert saved["hidden_spikes_per_image"] == pytest.approx(
        sum(float(counts[name].mean()) for name in hidden), rel=1e-12)

    over = saved["accuracy_over_time"]
    assert over["steps"][-1] == saved["time_steps"] - 1
    assert over["accuracy"][-1] == pytest.approx(accuracy, abs=1e-12)  # the final step
    assert saved["postprocess_check"]["max_relative_difference_final"] <= ev.POTENTIAL_RTOL

    reference = saved["reference"]
    assert reference["images"] == 20
    assert reference["replay_on_tf_spikes"]["max_relative_difference_over_time"] \
        <= ev.POTENTIAL_RTOL
    assert reference["accuracy_over_time"]["unexplained"] == 0
    if reference["prediction_mismatches"] == 0:
        assert reference["accuracy_over_time"]["tf_reference"][-1] == pytest.approx(
            float((predictions[:20] == labels[:20]).mean()))

    no_spike = saved["no_output_spike"]
    if readout == "vmem":
        assert no_spike["images_without_output_spike"] is None
        assert counts[list(counts)[-1]].sum() == 0  # the output layer never fired
    else:
        silent = ~(out_times >= 0).any(axis=1)
        assert no_spike["images_without_output_spike"] == int(silent.sum())
        if silent.any():
            assert no_spike["fallback_accuracy"] == pytest.approx(
                float((predictions[silent] == labels[silent]).mean()))
        assert sum(no_spike["fallback_predicted_classes"].values()) == int(silent.sum())
        first = np.where(out_times >= 0, out_times, 1 << 30).min(axis=1, keepdims=True)
        shared = ((out_times == first).sum(axis=1) > 1) & ~silent
        assert no_spike["images_with_simultaneous_first_spikes"] == int(shared.sum())

    if variant == "vmem":
        _check_efficiency(saved, per_image, run_dir / "model.ttfs", test.images)
        assert evr.firing_layers(saved, list(counts), list(counts)[-1]) == list(counts)[:-1]

    report = (out_dir / evr.REPORT_MD).read_text()
    assert "## Efficiency" in report and "spikes on a blank image" in printed
    for plot in (evr.PLOT_ACCURACY, evr.PLOT_HISTOGRAM, evr.PLOT_SPIKES):
        assert f"]({plot})" in report
    assert "SNN accuracy, stepped / analytic" in printed
    assert (f"{100 * accuracy:.2f} % / refused" if variant == "overlapping" else
            f"{100 * accuracy:.2f} % / {100 * accuracy:.2f} % (identical") in printed
    assert "images/s, stepped engine" in printed
    assert ("images/s, analytic engine" in printed) == (variant != "overlapping")


def _valid_cover(size: int, kernel: int) -> np.ndarray:
    """Output positions of a VALID stride-1 window that read each input position."""
    y = np.arange(size)
    return np.minimum(y, size - kernel) - np.maximum(y - kernel + 1, 0) + 1


def _check_efficiency(saved, per_image, model_path, images):
    """The tiny run's efficiency figures (reference CNN: conv1 5x5x12 on 28x28, earliest
    pools 2x2, conv2 5x5x64 on 12x12), recounted here from the spike times: a spike reaching
    conv1 or conv2 adds to (output positions whose window holds it) x (output channels)."""
    pyttfs = _pyttfs()
    with pyttfs.Model(model_path) as model:
        with model.session(backend="cpu", engine="stepped", max_batch=len(images),
                           record_spike_times=True) as session:
            session.run(images)
            pixels = session.spike_times("input").reshape(len(images), 28, 28) >= 0
            conv1 = session.spike_times("conv1").reshape(len(images), 24, 24, 12) >= 0
        with model.session(backend="cpu", engine="stepped", max_batch=1) as session:
            session.run(np.zeros((1, 28, 28, 1), np.uint8))
            blank = {info.name: int(session.spike_counts(info.name)[0])
                     for info in model.layers if info.has_neurons}
    fan1 = np.outer(_valid_cover(28, 5), _valid_cover(28, 5)) * 12
    pooled = conv1.reshape(len(images), 12, 2, 12, 2, 12).any(axis=(2, 4))  # earliest: one
    fan2 = np.outer(_valid_cover(12, 5), _valid_cover(12, 5))[..., None] * 64
    np.testing.assert_array_equal(per_image["synaptic_operations_conv1"],
                                  (pixels * fan1).sum(axis=(1, 2)))
    np.testing.assert_array_equal(per_image["synaptic_operations_conv2"],
                                  (pooled * fan2).sum(axis=(1, 2, 3)))
    record = saved["efficiency"]
    assert record["blank_image_spikes"]["per_layer"] == blank
    assert record["ann_multiply_adds_total"] == 24 * 24 * 12 * 25 + 8 * 8 * 64 * 300 + 10240
    assert record["synaptic_operations_per_image"]["conv1"] == pytest.approx(
        float((pixels * fan1).sum(axis=(1, 2)).mean()))


def test_step_evaluate_names_the_missing_file(tmp_path):
    from export.pipeline import Options

    with pytest.raises(FileNotFoundError, match=r"model\.ttfs does not exist: run `python -m "
                                                r"export export`"):
        ev.step_evaluate(Options(run_dir=tmp_path, progress=False))
