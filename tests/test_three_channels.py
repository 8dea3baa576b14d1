"""Three-channel input through the whole pipeline: `python -m export all` on a generated
image-folder dataset of 32x32 RGB PNGs (the CIFAR-10 shape), a CNN trained for one short epoch,
converted, exported, evaluated with both engines and the TF reference, and run by ttfs-infer.

The accuracy is meaningless (a few training steps); what is checked is that every shape, file
and record carries the three channels and the dataset's class names."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
Image = pytest.importorskip("PIL.Image")

import pyttfs  # noqa: E402
from export import ttfs_format  # noqa: E402
from export.datasets import read_idx  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("red", "green", "blue")  # the colour channels 0, 1, 2
SORTED = ("blue", "green", "red")  # labels follow the sorted folder names


def make_tree(root: Path, per_class: dict, seed: int = 0) -> None:
    """32x32 RGB images: a bright square of the class's colour on a noisy background."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
                y, x = rng.integers(2, 18, 2)
                image[y:y + 12, x:x + 12, label] = rng.integers(180, 256)
                Image.fromarray(image, mode="RGB").save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgb")
    make_tree(root / "data", {"train": 24, "test": 6})
    run_dir = root / "run"
    result = subprocess.run(
        [sys.executable, "-m", "export", "all", "--run-dir", str(run_dir), "--dataset",
         str(root / "data"), "--epochs", "1", "--batch-size", "16", "--stats-images", "60",
         "--tc-images", "40", "--tc-passes", "1", "--tc-batch-size", "20", "--val-images", "7",
         "--test-images", "18", "--reference-images", "2", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return root, run_dir, result.stdout


def test_the_model_takes_32x32x3_and_knows_the_classes(rgb_run):
    root, run_dir, stdout = rgb_run
    assert "train 65, val 7, test 18 images of 32x32x3, 3 classes" in stdout
    spec = ttfs_format.read_model(run_dir / "model.ttfs")
    assert tuple(spec.layers[0].out_shape) == (32, 32, 3)
    assert spec.layers[1].weights.shape == (5, 5, 3, 12)  # HWIO: three input channels
    assert tuple(spec.layers[-1].out_shape) == (1, 1, 3)
    assert spec.metadata["classes"] == list(SORTED)
    assert spec.metadata["dataset"] == "data, image folders"
    report = json.loads((run_dir / "report.json").read_text())
    assert [row["name"] for row in report["per_class_validation"]] == list(SORTED)
    results = json.loads((run_dir / "results" / "results.json").read_text())
    assert results["snn"]["engines_identical"] is True
    assert list(results["per_class_accuracy"]) == list(SORTED)
    assert results["reference"]["images"] == 2
    assert "| 2 | red |" in (run_dir / "results" / "report.md").read_text()


def test_the_exported_test_set_is_the_png_pixels_and_runs_in_ttfs_infer(rgb_run):
    root, run_dir, _ = rgb_run
    images = read_idx(run_dir / "data" / "test-images.idx")
    labels = read_idx(run_dir / "data" / "test-labels.idx")
    assert images.shape == (18, 32, 32, 3) and images.dtype == np.uint8
    first = np.asarray(Image.open(root / "data" / "test" / "blue" / "000.png"))
    np.testing.assert_array_equal(images[0], first)
    assert labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    binary = Path(pyttfs.lib._name).parent / "ttfs-infer"
    out = subprocess.run([binary, run_dir / "model.ttfs", run_dir / "data" / "test-images.idx",
                          "--labels", run_dir / "data" / "test-labels.idx", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["n"] == 18
    with pyttfs.Model(run_dir / "model.ttfs") as model, \
            model.session(backend="cpu", engine="analytic", max_batch=18) as session:
        predictions = session.run(images).predictions
    assert summary["accuracy"] == pytest.approx(float((predictions == labels).mean()))
