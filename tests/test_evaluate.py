"""The evaluation step (export/evaluate.py, evaluate_output.py, evaluate_report.py). The
output layer's potentials over time come from libttfs's output trace, tested against the numpy
reference in tests/test_output_trace.py.

1. The readout at step t (first_spike: earliest class by t, ties to the lowest index, else the
   potential argmax) on hand-written times.
2. The engine check refuses a difference of one bit (+0.0 vs -0.0); the TF tie classifier
   accepts only one-step differences within rounding of the threshold.
3. step_evaluate end to end on a tiny `python -m export all` run (conftest.tiny_run_dir), for
   the vmem readout, a copy of the model switched to first_spike, and a copy with overlapping
   windows (the analytic engine refuses it; stepped only): files, results.json against
   numbers recomputed here with pyttfs, valid PNGs, the summary table on stdout.
"""
from __future__ import annotations

import argparse
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from export import evaluate as ev
from export import evaluate_output as evo
from export import evaluate_report as evr
from export.ttfs_format import read_model, write_model

F32 = np.float32


def _pyttfs():
    """pyttfs, or a skip when libttfs is not built (pyttfs raises LibraryError, an OSError)."""
    try:
        import pyttfs
    except (ImportError, OSError) as error:
        pytest.skip(f"libttfs is not available: {error}")
    return pyttfs


# ---- 1. readout at step t ---------------------------------------------------------------------


def test_first_spike_readout_at_step():
    v = np.array([[0.1, 0.9, 0.3], [0.2, 0.7, 0.7], [0.5, 0.1, 0.0]], F32)
    times = np.array([[-1, 5, 3], [-1, -1, -1], [7, 7, -1]], np.int32)
    assert evo.predict_at("first_spike", v, times, 4).tolist() == [2, 1, 0]  # 1: argmax tie -> 1
    assert evo.predict_at("first_spike", v, times, 2).tolist() == [1, 1, 0]  # nothing fired yet
    assert evo.predict_at("first_spike", v, times, 7).tolist() == [2, 1, 0]  # 7, 7: lowest index
    assert evo.predict_at("vmem", v, times, 7).tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="readout 'spikes'"):
        evo.predict_at("spikes", v, times, 7)


# ---- 2. engine check -------------------------------------------------------------------------


def _batch(potential: float) -> ev.EngineBatch:
    return ev.EngineBatch(predictions=np.array([0, 1], np.int32),
                          potentials=np.array([[potential, 1.0], [0.5, 2.0]], F32),
                          spike_counts={"c": np.array([3, 4], np.int32)},
                          spike_times={"c": np.array([[1, -1], [2, 3]], np.int32)},
                          trace=np.array([[[0.25, 0.5]], [[0.5, 2.0]]], F32), seconds=0.0)


def test_engine_check_is_bitwise():
    ev.check_engines_identical(_batch(0.0), _batch(0.0), 0)
    with pytest.raises(ev.EngineMismatchError, match=r"potential bits .* at image 1000"):
        ev.check_engines_identical(_batch(0.0), _batch(-0.0), 1000)  # equal as floats
    other = _batch(0.0)
    other.spike_times["c"][1, 0] = 5
    with pytest.raises(ev.EngineMismatchError, match=r"layer 'c' \(2 vs 5\) at image 8"):
        ev.check_engines_identical(_batch(0.0), other, 7)
    other = _batch(0.0)
    other.trace[1, 0, 1] = np.nextafter(F32(2.0), F32(3.0))
    with pytest.raises(ev.EngineMismatchError, match=r"output trace bits .* at image 4, element \(0, 1\)"):
        ev.check_engines_identical(_batch(0.0), other, 3)


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


# ---- 3. step_evaluate end to end ---------------------------------------------------------------

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
    check = saved["trace_check"]
    assert check["last_step_bit_identical_potentials"] == check["potentials"] == 200 * 10
    over_time = per_image["predictions_over_time"]
    assert over_time.shape == (len(over["steps"]), 200)
    np.testing.assert_array_equal(over_time[-1], predictions)
    assert np.any(over_time[0] != predictions), "the prediction never changed over time"

    reference = saved["reference"]
    assert reference["images"] == 20
    # TF's potentials over time, where the spike times are identical: rounding only
    assert reference["output_potentials"]["max_abs_difference_over_time_identical_spikes"] <= 1e-4
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
