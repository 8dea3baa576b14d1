"""`python -m export all` end to end on a tiny configuration, and its CLI.

The run itself is the session fixture `tiny_run_dir` (tests/conftest.py). These tests check
that every step left its files, that the report agrees with what the model file holds and what
libttfs and ttfs-infer compute from it, and that the CLI explains itself and fails clearly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyttfs
from export import ttfs_format

REPO = Path(__file__).resolve().parent.parent


def _infer_binary() -> Path:
    return Path(pyttfs.lib._name).parent / "ttfs-infer"


def test_every_step_left_its_files(tiny_run_dir):
    for name in ("ann.keras", "train.json", "stats.json", "converted.ttfs", "trained.ttfs",
                 "tc.json", "model.ttfs", "report.json", "report.md",
                 "data/test-images.idx", "data/test-labels.idx", "data/test-0.bin"):
        assert (tiny_run_dir / name).is_file(), f"{name} missing from {tiny_run_dir}"
    # Batches of 25, --tc-save-every 50, 100 images: the constants after 50 and after 100.
    snapshots = sorted(p.name for p in (tiny_run_dir / "time_constants").glob("*.json"))
    assert snapshots == ["time_constants_00000050.json", "time_constants_00000100.json"]


def test_model_file_records_the_choices_and_trained_constants(tiny_run_dir):
    spec = ttfs_format.read_model(tiny_run_dir / "model.ttfs")
    report = json.loads((tiny_run_dir / "report.json").read_text())
    tc = json.loads((tiny_run_dir / "tc.json").read_text())
    meta = spec.metadata
    # The tiny run uses the defaults: earliest pooling, vmem readout, the paper's rule.
    assert meta["pool_mode"] == "earliest" and meta["readout"] == "vmem"
    assert meta["tc_rule"] == "paper"
    # the model file names where MNIST came from, but no path of the machine that made it
    assert meta["dataset"].startswith("MNIST, ")
    import re

    texts = []

    def strings(value):
        if isinstance(value, dict):
            for v in value.values():
                strings(v)
        elif isinstance(value, list):
            for v in value:
                strings(v)
        elif isinstance(value, str):
            texts.append(value)

    strings(meta)
    paths = [t for t in texts if re.search(r"(^|\s)(/|~/|\./)[\w.-]+/", t)]
    assert not paths, f"paths in the model's metadata: {paths}"
    assert meta["classes"] == [str(d) for d in range(10)]
    assert meta["input_scaling"]["uint8_divisor"] == 255.0
    assert [l.pool_mode for l in spec.layers if l.kind == "maxpool"] == ["earliest", "earliest"]
    assert spec.readout == "vmem"
    # The constants in the file are the trained ones, and integration constants are chained.
    neurons = [l for l in spec.layers if l.neuron is not None]
    for below, layer in zip(neurons, neurons[1:]):
        assert np.float32(layer.neuron.tau_integ) == np.float32(below.neuron.tau_fire)
        assert np.float32(layer.neuron.td_integ) == np.float32(below.neuron.td_fire)
    for layer in neurons:
        expected = tc["constants"][layer.name]
        assert np.float32(layer.neuron.tau_fire) == np.float32(expected["tau_fire"])
        assert np.float32(layer.neuron.td_fire) == np.float32(expected["td_fire"])
    assert report["time_constants"] == tc["constants"]
    # The time constants moved from their initial 20 (one pass over 100 images suffices).
    assert neurons[0].neuron.tau_fire != 20.0


def test_weights_are_the_normalised_ones(tiny_run_dir):
    """The classic porting bug is exporting the raw ANN weights: check the model holds the
    fused, normalised weights (W~ = W_f * lambda_prev / lambda_l) computed here from the
    Keras model and the recorded lambdas."""
    from export.convert import fuse_batch_norm
    from export.keras_model import load_user_model

    stats = json.loads((tiny_run_dir / "stats.json").read_text())
    lambdas = stats["lambdas"]
    fused = {l.name: l for l in fuse_batch_norm(load_user_model(tiny_run_dir / "ann.keras"))}
    spec = ttfs_format.read_model(tiny_run_dir / "model.ttfs")
    previous = lambdas["input"]
    for layer in spec.layers:
        if layer.kind not in ("conv2d", "dense"):
            continue
        f = fused[layer.name]
        scale = lambdas[layer.name]
        np.testing.assert_allclose(layer.weights, f.weights * previous / scale, rtol=1e-5,
                                   atol=1e-7, err_msg=layer.name)
        np.testing.assert_allclose(layer.bias, f.bias / scale, rtol=1e-5, atol=1e-7,
                                   err_msg=layer.name)
        previous = scale


def test_report_accuracy_is_what_libttfs_computes(tiny_run_dir):
    from export.datasets import load_mnist

    report = json.loads((tiny_run_dir / "report.json").read_text())
    val = load_mnist().val.take(report["snn_validation"]["n"])
    with pyttfs.Model(tiny_run_dir / "model.ttfs") as model, \
            model.session(backend="cpu", engine="stepped", max_batch=len(val)) as session:
        predictions = session.run(val.images).predictions
    accuracy = float((predictions == val.labels).mean())
    assert report["snn_validation"]["accuracy"] == pytest.approx(accuracy, abs=0)


def test_ttfs_infer_runs_the_exported_model(tiny_run_dir):
    binary = _infer_binary()
    model = tiny_run_dir / "model.ttfs"
    data = tiny_run_dir / "data"
    one = subprocess.run([binary, model, data / "test-images.idx", "--index", "0"],
                         capture_output=True, text=True, timeout=60)
    assert one.returncode == 0, one.stderr
    assert "predicted class:" in one.stdout
    from_bin = subprocess.run([binary, model, data / "test-0.bin"], capture_output=True,
                              text=True, timeout=60)
    assert from_bin.returncode == 0, from_bin.stderr
    assert one.stdout.split("predicted class:")[1].split()[0] == \
        from_bin.stdout.split("predicted class:")[1].split()[0]
    full = subprocess.run([binary, model, data / "test-images.idx", "--labels",
                           data / "test-labels.idx", "--json", "--batch", "500"],
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    summary = json.loads(full.stdout)
    assert summary["n"] == 10000
    assert 0.0 <= summary["accuracy"] <= 1.0


def test_each_step_shows_and_takes_only_its_own_options(capsys):
    """`python -m export STEP --help` lists that step's options and no other step's; an option
    of another step is refused, naming the steps that take it."""
    from export.__main__ import parse

    own = {"train": ["--epochs", "--arch", "--augment-flip", "--keras-model", "--dataset"],
           "stats": ["--percentile", "--stats-on", "--dataset"],
           "convert": ["--pool-mode", "--time-steps", "--tau"],
           "train-tc": ["--tc-rule", "--tc-passes", "--dataset"],
           "export": ["--val-images", "--dataset"],
           "evaluate": ["--test-images", "--reference-images", "--dataset"]}
    everything = {option for options in own.values() for option in options}
    for step, options in own.items():
        with pytest.raises(SystemExit) as exit_:
            parse([step, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert f"python -m export {step}" in text
        import re

        declared = set(re.findall(r"^\s+(--[a-z0-9-]+)", text, re.M))  # the option list
        for option in options:
            assert option in declared, (step, option)
        for option in everything - set(options):
            assert option not in declared, (step, option)
    with pytest.raises(SystemExit) as exit_:
        parse(["stats", "--epochs", "3"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "--epochs is not an option of the `stats` step" in error
    assert "it belongs to: train, all" in error
    with pytest.raises(SystemExit):
        parse(["convert", "--dataset", "fashion-mnist"])
    assert "belongs to: train, stats, train-tc, export, evaluate, all" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["train", "--no-such-option"])
    assert "unknown option --no-such-option" in capsys.readouterr().err
    # `all` takes every step's options
    _, options = parse(["all", "--epochs", "2", "--tau", "30", "--test-images", "5"])
    assert (options.epochs, options.tau, options.test_images) == (2, 30.0, 5)


def test_cli_help_explains_every_step():
    result = subprocess.run([sys.executable, "-m", "export", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for step in ("train", "stats", "convert", "train-tc", "export", "all"):
        assert step in result.stdout
    step_help = subprocess.run([sys.executable, "-m", "export", "train-tc", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
    assert "--tc-rule" in step_help.stdout and "reference" in step_help.stdout


def test_a_step_without_its_inputs_says_which_step_to_run(tmp_path):
    result = subprocess.run([sys.executable, "-m", "export", "convert", "--run-dir",
                             str(tmp_path / "empty")], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 1
    assert "stats.json does not exist" in result.stderr
    assert "python -m export stats" in result.stderr


def test_default_options_are_the_demo_configuration_and_the_reference_recipe_is_one_flag():
    from export.__main__ import parse

    step, options = parse(["all"])
    assert step == "all"
    assert (options.epochs, options.pool_mode, options.readout, options.stats_on,
            options.tc_rule) == (15, "earliest", "vmem", "train", "paper")
    _, reference = parse(["all", "--reference-recipe"])
    assert (reference.epochs, reference.pool_mode, reference.stats_on, reference.tc_rule) == \
        (500, "or", "test", "reference")
    # the rest of the reference's documented commands (docs/ALGORITHM.md sections 1-8)
    assert (reference.batch_size, reference.learning_rate, reference.keep,
            reference.augment_shift, reference.cosine_decay, reference.quiet_background) == \
        (100, 1e-3, "best", 0, False, 0)
    assert (reference.percentile, reference.stats_images, reference.readout, reference.vth0,
            reference.tau, reference.time_fire_start, reference.time_fire_duration,
            reference.time_steps) == (99.9, None, "vmem", 1.0, 20.0, 80, 80, 400)
    assert (reference.tc_passes, reference.tc_images, reference.tc_batch_size) == (6, 10000, 100)
    # an option given explicitly wins over the recipe: the gated variant is one more flag
    _, mixed = parse(["all", "--reference-recipe", "--epochs", "3", "--pool-mode=earliest"])
    assert (mixed.epochs, mixed.pool_mode, mixed.stats_on) == (3, "earliest", "test")
    _, gated = parse(["all", "--reference-recipe", "--pool-mode", "gated"])
    assert (gated.epochs, gated.pool_mode, gated.tc_rule) == (500, "gated", "reference")


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras 3 + numpy 2
def test_a_users_keras_model_goes_through_the_whole_pipeline(tmp_path):
    """--keras-model: a network other than the reference (no batch norm, a 3x3 conv with a
    separate ReLU activation, SAME padding, dropout) is converted layer for layer."""
    import keras

    from export.keras_model import load_user_model

    keras.utils.set_random_seed(4)
    user = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, padding="same", name="c1"),
        keras.layers.Activation("relu", name="a1"),
        keras.layers.MaxPooling2D(2, name="p1"),
        keras.layers.Flatten(name="f"),
        keras.layers.Dropout(0.2, name="d"),
        keras.layers.Dense(10, name="out"),
    ])
    path = tmp_path / "user.keras"
    user.save(path)
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "export", "all", "--run-dir", str(run_dir), "--keras-model",
         str(path), "--train-images", "300", "--stats-images", "300", "--tc-images", "100",
         "--tc-passes", "1", "--val-images", "100", "--test-images", "100",
         "--reference-images", "5", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    spec = ttfs_format.read_model(run_dir / "model.ttfs")
    assert [(l.kind, l.name) for l in spec.layers] == [
        ("input", "input"), ("conv2d", "c1"), ("maxpool", "p1"), ("flatten", "f"),
        ("dense", "out")]
    conv = spec.layers[1]
    assert conv.padding == "same" and conv.out_shape == (28, 28, 8)
    # the weights are the user's, normalised by the recorded lambdas (no batch norm to fuse)
    stats = json.loads((run_dir / "stats.json").read_text())
    kernel, bias = load_user_model(path).get_layer("c1").get_weights()
    scale = stats["lambdas"]["input"] / stats["lambdas"]["c1"]
    np.testing.assert_allclose(conv.weights, kernel * scale, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(conv.bias, bias / stats["lambdas"]["c1"], rtol=1e-5, atol=1e-7)
    assert (run_dir / "results" / "report.md").is_file()
