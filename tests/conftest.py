"""Shared fixtures: small model files written with export.ttfs_format (numpy only).

tiny_model_path   input 8x10x1 -> conv2d 3x2 kernel, 4 filters (VALID, bias) -> 6x9x4
                  -> maxpool 2x2/2 `or` -> 3x4x4 -> flatten -> 48 -> dense 48x5 (bias);
                  vmem readout; T_s = T_d = 20, 60 steps. Nothing square, so a swapped h/w
                  anywhere shows.
dense_model_path  input 1x1x6 -> dense 6x3 (bias); first_spike readout; T_s = T_d = 10, 20 steps.

Both use fixed seeds and constants chosen to be exact in float32 and different per layer, so a
test that reads a field back from the wrong layer or the wrong slot notices. TINY / DENSE below
are the hand-written facts about them that tests compare the library's answers against.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from export.ttfs_format import (NeuronParams, build_model, conv2d, dense, flatten, input_layer,
                                maxpool, write_model)

TINY_SEED = 20240611
DENSE_SEED = 7

# The line TTFS_CERTIFY_STATS prints per certified layer when a session is freed
# (cuda/cpu/cpu_backend.cpp): layer name, neurons decided, neurons recomputed exactly, images
# summed over nonzero activations only, and under TTFS_CERTIFY=check the neurons checked and
# those outside their interval.
CERTIFY_STATS_LINE = re.compile(
    r"^ttfs certified sums: layer (.+): (\d+) neurons, (\d+) recomputed exactly, "
    r"(\d+) images summed over nonzero activations only"
    r"(?:, bound checked on (\d+), violated by (\d+))?$")

# Neuron constants per layer (exact in float32). Integration constants chain from the layer
# below (build_model), so tau_integ(conv) == 15.5 etc.
TINY_NEURONS = {
    "input": dict(tau_fire=15.5, td_fire=0.0, vth0=1.0),
    "conv": dict(tau_fire=18.25, td_fire=-1.5, vth0=0.875),
    "fc": dict(tau_fire=21.0, td_fire=0.5, vth0=1.125),
}

# What the tiny model is, written out by hand (docs/ALGORITHM.md section 3 windows, T_s = T_d = 20):
# name, kind, depth, shape, kernel, stride, padding, pool_mode, integ_window, fire_window.
TINY = dict(
    time_steps=60,
    readout="vmem",
    input_shape=(8, 10, 1),
    classes=5,
    divisor=255.0,
    metadata={"made_by": "tests/conftest.py", "model": "tiny", "lambdas": [1.0, 2.5]},
    layers=[
        ("input", "input", 0, (8, 10, 1), (0, 0), (0, 0), None, None, (0, 0), (0, 20)),
        ("conv", "conv2d", 1, (6, 9, 4), (3, 2), (1, 1), "valid", None, (0, 20), (20, 40)),
        ("pool", "maxpool", -1, (3, 4, 4), (2, 2), (2, 2), "valid", "or", None, None),
        ("flatten", "flatten", -1, (1, 1, 48), (0, 0), (0, 0), None, None, None, None),
        ("fc", "dense", 2, (1, 1, 5), (0, 0), (0, 0), None, None, (20, 40), (40, 60)),
    ],
)

DENSE = dict(
    time_steps=20,
    readout="first_spike",
    input_shape=(1, 1, 6),
    classes=3,
    divisor=255.0,
    metadata={},
)


def tiny_spec():
    rng = np.random.default_rng(TINY_SEED)
    # Slightly positive weights so that a good share of conv neurons fire in their window.
    conv_w = rng.normal(0.15, 0.25, size=(3, 2, 1, 4)).astype(np.float32)
    conv_b = rng.normal(0.0, 0.05, size=4).astype(np.float32)
    fc_w = rng.normal(0.0, 0.4, size=(48, 5)).astype(np.float32)
    fc_b = rng.normal(0.0, 0.1, size=5).astype(np.float32)
    layers = [
        input_layer(shape=(8, 10, 1), name="input", divisor=255.0,
                    neuron=NeuronParams(**TINY_NEURONS["input"])),
        conv2d("conv", conv_w, conv_b, padding="valid", neuron=NeuronParams(**TINY_NEURONS["conv"])),
        maxpool("pool", size=(2, 2), mode="or"),
        flatten("flatten"),
        dense("fc", fc_w, fc_b, neuron=NeuronParams(**TINY_NEURONS["fc"])),
    ]
    return build_model(layers, time_steps=TINY["time_steps"], readout=TINY["readout"],
                       metadata=TINY["metadata"], time_fire_start=20, time_fire_duration=20)


def dense_spec():
    rng = np.random.default_rng(DENSE_SEED)
    weights = rng.normal(0.3, 0.5, size=(6, 3)).astype(np.float32)
    bias = np.array([0.0, 0.05, -0.05], dtype=np.float32)
    layers = [input_layer(shape=(1, 1, 6), name="pixels"), dense("classes", weights, bias)]
    return build_model(layers, time_steps=DENSE["time_steps"], readout=DENSE["readout"],
                       time_fire_start=10, time_fire_duration=10)


def tiny_images(count: int = 16, seed: int = 1) -> np.ndarray:
    """uint8 batch (count, 8, 10, 1): a bright blob at a random place on a dim random background,
    so different images give different spike patterns and predictions."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, size=(count, 8, 10, 1)).astype(np.int32)
    for image in images:
        y, x = rng.integers(0, 6), rng.integers(0, 8)
        image[y:y + 3, x:x + 3, 0] += rng.integers(120, 166)
    return np.clip(images, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model_path(model_dir):
    path = model_dir / "tiny.ttfs"
    write_model(tiny_spec(), path)
    return path


@pytest.fixture(scope="session")
def dense_model_path(model_dir):
    path = model_dir / "dense.ttfs"
    write_model(dense_spec(), path)
    return path


# ---- A tiny end-to-end conversion run (TensorFlow + MNIST), shared by the pipeline tests ----

TINY_RUN_ARGS = ["--epochs", "1", "--train-images", "300", "--stats-images", "300",
                 "--tc-images", "100", "--tc-passes", "1", "--tc-batch-size", "25", "--tc-save-every", "50", "--val-images", "100",
                 "--test-images", "300", "--reference-images", "10",
                 "--no-progress"]


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory):
    """`python -m export all` on a tiny configuration: one epoch on 300 images, time constants
    trained on 100. Runs once per test session (about 20 s); the accuracy is meaningless, the
    files and their consistency are what the tests check."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("tensorflow")
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-m", "export", "all", "--run-dir", str(run_dir),
                             *TINY_RUN_ARGS], cwd=repo, capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, f"python -m export all failed:\n{result.stdout}\n{result.stderr}"
    return run_dir
