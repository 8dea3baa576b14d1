"""examples/: the C program of docs/C_API.md and the Rust program (hand-written extern "C" over
include/ttfs.h, no crates) are built against the library under test, run on the committed MNIST
model and one of its test images, and must print what pyttfs computes for the same image.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pyttfs

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "mnist.ttfs"
IMAGE = REPO / "models" / "mnist-test-0.bin"
LIBRARY_DIR = Path(pyttfs.library_path).resolve().parent


def expected_output():
    """prediction, potentials, {layer: spike count} from pyttfs (analytic engine, CPU)."""
    with pyttfs.Model(MODEL) as model, model.session(backend="cpu", max_batch=1) as session:
        result = session.run(pyttfs.read_images(IMAGE, model))
        counts = {layer.name: int(session.spike_counts(i)[0])
                  for i, layer in enumerate(model.layers) if layer.has_neurons}
    return int(result.predictions[0]), result.potentials[0], counts


def parse(stdout: str):
    prediction = int(re.search(r"^prediction: (\d+)$", stdout, re.M).group(1))
    potentials = np.float32(re.search(r"^potentials: (.*)$", stdout, re.M).group(1).split())
    counts = {name: int(n) for name, n in re.findall(r"^spikes (\S+): (\d+)$", stdout, re.M)}
    return prediction, potentials, counts


def check_program(command):
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    prediction, potentials, counts = parse(result.stdout)
    want_prediction, want_potentials, want_counts = expected_output()
    assert prediction == want_prediction
    np.testing.assert_array_equal(potentials, want_potentials)  # 9 digits: exact float32
    assert counts == want_counts and counts["conv1"] > 0
    # And a bad image is an error, not a crash.
    bad = subprocess.run(command[:-1] + [str(MODEL)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "float32 values" in bad.stderr


def test_c_example_is_the_program_in_the_docs():
    source = (REPO / "examples" / "c" / "run_model.c").read_text()
    docs = (REPO / "docs" / "C_API.md").read_text()
    block = re.search(r"```c\n(.*?)```", docs, re.S).group(1)
    assert block == source


def test_c_example(tmp_path):
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        pytest.skip("no C compiler (cc) on the PATH")
    program = tmp_path / "run_model"
    subprocess.run([compiler, "-Wall", "-Wextra", "-Werror", str(REPO / "examples" / "c" / "run_model.c"),
                    f"-I{pyttfs.get_include()}", f"-L{LIBRARY_DIR}", "-lttfs",
                    f"-Wl,-rpath,{LIBRARY_DIR}", "-o", str(program)], check=True, timeout=120)
    check_program([str(program), str(MODEL), str(IMAGE)])


def test_rust_example(tmp_path):
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not installed: the Rust example cannot be built here")
    env = dict(os.environ, TTFS_LIB_DIR=str(LIBRARY_DIR), CARGO_TARGET_DIR=str(tmp_path / "target"))
    built = subprocess.run([cargo, "build", "--offline", "--release", "--quiet"],
                           cwd=REPO / "examples" / "rust", env=env, capture_output=True, text=True,
                           timeout=600)
    assert built.returncode == 0, built.stderr
    check_program([str(tmp_path / "target" / "release" / "run_model"), str(MODEL), str(IMAGE)])
