"""models/mnist.ttfs, the committed trained model: it classifies from the CLI with no training,
and it scores what docs/RESULTS.md says it scores."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pyttfs
from export.datasets import read_idx

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
MODEL = MODELS / "mnist.ttfs"


def _binary() -> Path:
    return Path(pyttfs.lib._name).parent / "ttfs-infer"


def _documented(quantity: str) -> float:
    """The first number of a row of the committed model's table in docs/RESULTS.md."""
    text = (REPO / "docs" / "RESULTS.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith(f"| {quantity} |"))
    value = row.split("|")[2].replace("*", "").strip()
    return float(re.match(r"[0-9][0-9 ]*(\.[0-9]+)?", value).group(0).replace(" ", ""))


def test_cli_classifies_one_committed_image_with_no_training():
    result = subprocess.run([_binary(), MODEL, MODELS / "mnist-test-100-images.idx",
                             "--index", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    label = int(read_idx(MODELS / "mnist-test-100-labels.idx")[0])
    assert re.search(rf"predicted class: {label}\b", result.stdout), result.stdout
    from_bin = subprocess.run([_binary(), MODEL, MODELS / "mnist-test-0.bin"],
                              capture_output=True, text=True, timeout=60)
    assert from_bin.returncode == 0 and f"predicted class: {label}" in from_bin.stdout


def test_committed_images_are_classified_by_both_engines_alike():
    images = read_idx(MODELS / "mnist-test-100-images.idx")[..., None]
    labels = read_idx(MODELS / "mnist-test-100-labels.idx")
    with pyttfs.Model(MODEL) as model:
        assert model.readout == "vmem"
        assert {l.pool_mode for l in model.layers if l.kind == "maxpool"} == {"earliest"}
        runs = []
        for engine in ("stepped", "analytic"):
            with model.session(backend="cpu", engine=engine, max_batch=100) as session:
                runs.append(session.run(images))
    assert np.array_equal(runs[0].predictions, runs[1].predictions)
    assert np.array_equal(runs[0].potentials.view(np.uint32), runs[1].potentials.view(np.uint32))
    assert (runs[0].predictions == labels).mean() >= 0.97


def test_the_committed_model_scores_what_the_results_page_says():
    pytest.importorskip("export.datasets")
    from export.datasets import MnistNotFoundError, load_mnist

    try:
        test = load_mnist().test
    except MnistNotFoundError as error:
        pytest.skip(f"no MNIST here: {error}")
    hidden = 0
    with pyttfs.Model(MODEL) as model, \
            model.session(backend="cpu", engine="analytic", max_batch=1000) as session:
        predictions = []
        for i in range(0, len(test), 1000):
            predictions.append(session.run(test.images[i:i + 1000]).predictions)
            hidden += int(session.spike_counts("conv1").sum() + session.spike_counts("conv2").sum())
        session.run(np.zeros((1, 28, 28, 1), np.uint8))
        blank = int(session.spike_counts("conv1")[0] + session.spike_counts("conv2")[0])
    accuracy = (np.concatenate(predictions) == test.labels).mean()
    assert 100 * accuracy == pytest.approx(
        _documented("SNN test accuracy (stepped = analytic)"), abs=1e-9)
    assert hidden / len(test) == pytest.approx(
        _documented("hidden spikes per image (conv1 + conv2)"), abs=0.05)
    assert blank == _documented("spikes on a blank image (hidden)") == 0
