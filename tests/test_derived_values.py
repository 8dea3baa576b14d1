"""What the loader derives from a model's constants must be finite (docs/FORMAT.md, "Derived
values"): threshold and kernel tables, the scaled input, and a bound on every membrane
potential. A model that passes can never make an engine form a non-finite potential.

Regressions of issue 9: finite but extreme constants (td_integ 1e30 or FLT_MAX on models/mnist.ttfs)
made the kernel table overflow to Inf, the exact potential became NaN, and the analytic
engine's settling loop for a certified layer followed by an `earliest` pool never ended
(default session, real images); similar constants gave NaN or Inf output potentials and a
class-0 prediction. Those runs are done in a subprocess with a timeout, so a regression fails
rather than hangs the suite.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyttfs
from export.ttfs_format import (NeuronParams, build_model, dense, flatten, input_layer, read_model,
                                to_bytes)

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "models" / "mnist.ttfs"
FLT_MAX = float(np.finfo(np.float32).max)


def mnist_images(count=8):
    raw = (REPO / "models" / "mnist-test-100-images.idx").read_bytes()[16:]
    return np.frombuffer(raw, np.uint8).reshape(-1, 28, 28, 1)[:count]


def mnist_with(layer, field, value):
    spec = read_model(MNIST)
    for entry in spec.layers:
        if entry.name == layer:
            setattr(entry.neuron, field, value)
    return spec


def rejection(data):
    with pytest.raises(pyttfs.TtfsError) as caught:
        pyttfs.Model.from_bytes(data)
    return caught.value


# A child process: load the model file and run both engines on the first 4 MNIST test images,
# as the default session does (no spike-time recording); prints the outcome.
CHILD = r"""
import sys, numpy as np, pyttfs
raw = open(sys.argv[2], 'rb').read()[16:]
images = np.frombuffer(raw, np.uint8).reshape(-1, 28, 28, 1)[:4]
try:
    model = pyttfs.Model(sys.argv[1])
except pyttfs.TtfsError as error:
    print('rejected', error.status, error.message)
    sys.exit(0)
for engine in ('analytic', 'stepped'):
    with model.session(backend='cpu', engine=engine, max_batch=4) as session:
        result = session.run(images)
        print('ran', engine, bool(np.isfinite(result.potentials).all()))
"""


def run_child(path, timeout=60):
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(path),
                               str(REPO / "models" / "mnist-test-100-images.idx")],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading and running {path.name} did not finish within {timeout} s (the hang)")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
@pytest.mark.parametrize("value", [1e30, FLT_MAX])
def test_the_hanging_models_are_rejected_at_load(tmp_path, layer, value):
    """Issue 9's hang: td_integ 1e30 / FLT_MAX on a certified layer followed by an `earliest`
    pool. The kernel table overflows; the loader now says so, naming layer and field."""
    path = tmp_path / f"{layer}-{value:g}.ttfs"
    path.write_bytes(to_bytes(mnist_with(layer, "td_integ", value), check=False))
    output = run_child(path)
    assert output.startswith("rejected TTFS_ERR_BAD_VALUE"), output
    assert f"layer '{layer}'" in output and "td_integ" in output and "integration kernel" in output
    with pytest.raises(ValueError, match="integration kernel"):  # the writer refuses it too
        to_bytes(mnist_with(layer, "td_integ", value))


@pytest.mark.parametrize("field,value,word", [
    ("td_fire", 1e30, "threshold"),
    ("td_fire", FLT_MAX, "threshold"),
    ("vth0", FLT_MAX, None),          # finite thresholds: accepted (checked below)
])
def test_threshold_tables_must_be_finite(field, value, word):
    data = to_bytes(mnist_with("conv2", field, value), check=False)
    if word is None:
        pyttfs.Model.from_bytes(data).close()
        return
    error = rejection(data)
    assert error.status == "TTFS_ERR_BAD_VALUE"
    assert "layer 'conv2'" in error.message and field in error.message and word in error.message
    with pytest.raises(ValueError, match="threshold"):  # the writer refuses it too
        to_bytes(mnist_with("conv2", field, value))


def tiny_dense(weight, bias=0.0, divisor=255.0, td_integ=None):
    """input 1x1x2 -> dense 2 -> 1 (vmem readout). A pixel of 255 is x = 1.0, which meets the
    input threshold vth0 * exp(0) = 1 at step 0, where the dense layer integrates with weight
    exactly 1: its potential is then exactly bias + w0 + w1 (in float32)."""
    layers = [input_layer((1, 1, 2), divisor=divisor, neuron=NeuronParams(tau_fire=10.0)),
              dense("out", np.array([[weight], [weight]], np.float32), np.array([bias], np.float32),
                    neuron=NeuronParams(tau_fire=10.0, td_integ=td_integ))]
    return build_model(layers, time_steps=20, readout="vmem", time_fire_start=10,
                       time_fire_duration=10)


def test_the_potential_bound_accepts_just_below_float_max_and_refuses_just_above():
    """Hand-worked: with td_integ 0 every kernel is at most exp(0) = 1 and each input spikes at
    most once, so |V| <= |bias| + w0 + w1 (times a rounding factor of 1 + ~5e-7 for 7 roundings)."""
    below = np.float32(1.6e38)  # 2 x 1.6e38 = 3.2e38 < FLT_MAX = 3.40282e38
    with pyttfs.Model.from_bytes(to_bytes(tiny_dense(below))) as model:
        for engine in ("stepped", "analytic"):
            with model.session(backend="cpu", engine=engine, max_batch=1) as session:
                result = session.run(np.full((1, 1, 1, 2), 255, np.uint8))
            # Both pixels spike at step 0: V = +0 + ((+0 + w + w) + 0) * 1, exact in float32.
            assert result.potentials[0, 0] == np.float32(2) * below
    above = np.float32(1.75e38)  # 3.5e38 > FLT_MAX: w + w would be +Inf
    error = rejection(to_bytes(tiny_dense(above), check=False))
    assert error.status == "TTFS_ERR_BAD_VALUE"
    assert "layer 'out'" in error.message and "potentials could reach" in error.message
    assert "3.5" in error.message and "float32" in error.message
    with pytest.raises(ValueError, match="potentials"):
        to_bytes(tiny_dense(above))


def test_nan_answers_are_gone():
    """Issue 9's NaN answers, made by hand: pixels 255, 255 spike at step 0 and add 3e38 twice
    to class 0 (+Inf); pixels 128, 128 spike at step 14 and add -3e38 twice (-Inf * kernel):
    Inf + -Inf = NaN, and the argmax then reported class 0 (the previous library did exactly
    that on both engines). The loader now refuses the model: the weights' magnitudes add up
    to 1.2e39, beyond float32."""
    weights = np.array([[3e38, 0.125], [3e38, 0.125], [-3e38, 0.125], [-3e38, 0.125]], np.float32)
    spec = build_model([input_layer((1, 1, 4)), dense("out", weights, np.zeros(2, np.float32))],
                       time_steps=40, readout="vmem", time_fire_start=20, time_fire_duration=20)
    error = rejection(to_bytes(spec, check=False))
    assert error.status == "TTFS_ERR_BAD_VALUE"
    assert "layer 'out'" in error.message and "could reach 1.2" in error.message
    # The same network with class 0's weights a million times smaller runs, finite and as
    # worked out:
    # class 1 = 0.125 + 0.125 (step 0) + (0.125 + 0.125) * exp(-14 / 20).
    smaller = weights.copy()
    smaller[:, 0] /= np.float32(1e6)
    spec.layers[1].weights = smaller
    with pyttfs.Model.from_bytes(to_bytes(spec)) as model:
        for engine in ("stepped", "analytic"):
            with model.session(backend="cpu", engine=engine, max_batch=1) as session:
                result = session.run(np.array([255, 255, 128, 128], np.uint8).reshape(1, 1, 1, 4))
            # glibc's expf, like the library's tables, rounds exp once: float64, then float32.
            kernel = np.float32(np.exp(np.float64(np.float32(-14) / np.float32(20))))
            expected = np.float32(0.25) + np.float32(0.25) * kernel
            assert result.potentials[0, 1] == expected
            assert np.isfinite(result.potentials).all()


def test_input_divisor_must_keep_pixels_finite():
    error = rejection(to_bytes(tiny_dense(0.5, divisor=1e-45), check=False))
    assert error.status == "TTFS_ERR_BAD_VALUE" and "input_divisor" in error.message
    # The smallest divisor that keeps 255 / divisor finite loads.
    pyttfs.Model.from_bytes(to_bytes(tiny_dense(0.5, divisor=1e-36))).close()


@pytest.mark.parametrize("layer,field,value", [
    ("conv1", "td_fire", -1e30),   # thresholds underflow to 0: every potential >= 0 fires at once
    ("conv1", "tau_fire", 1e-45),  # thresholds 1, then 0
    ("conv1", "tau_integ", 1e-45),  # kernels 1, then 0
    ("conv2", "td_integ", -FLT_MAX),  # every kernel 0
    ("conv1", "vth0", 1e-45),       # denormal thresholds
])
def test_extreme_but_finite_constants_run_finite_and_identically(layer, field, value):
    """Constants the bound accepts: both engines finish, agree bit for bit, and every potential
    is finite (with and without spike-time recording: the fused `earliest`-pool path too)."""
    images = mnist_images(8)
    with pyttfs.Model.from_bytes(to_bytes(mnist_with(layer, field, value))) as model:
        results = []
        for engine in ("stepped", "analytic"):
            for record in (False, True):
                with model.session(backend="cpu", engine=engine, max_batch=8,
                                   record_spike_times=record) as session:
                    results.append(session.run(images))
    for result in results:
        assert np.isfinite(result.potentials).all()
        np.testing.assert_array_equal(result.predictions, results[0].predictions)
        np.testing.assert_array_equal(result.potentials.view(np.uint32),
                                      results[0].potentials.view(np.uint32))
