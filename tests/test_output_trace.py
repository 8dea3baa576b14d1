"""The output trace (TTFS_SESSION_RECORD_OUTPUT_TRACE, ttfs_session_output_trace; pyttfs
Session(output_trace_steps=...).output_trace()): the output layer's potentials after chosen
steps, computed by the engines.

1. Against the independent numpy simulator tests/reference_numpy.py: for every recorded step t
   the reference runs exactly t + 1 steps, and its output potentials must be the trace's row
   for t (to the rounding of a float32 sum, the reference summing with its own exp tables).
   All three pool modes, both readouts (first_spike: resets to 0 from the spike on), a dense
   and a conv2d output layer, SAME-padded pooling.
2. A hand-computed case: the trace after steps 1, 4 and 39 of a 2x2 -> pool -> dense net.
3. Both engines give the same bits, for any thread count; the last step equals the
   potentials of ttfs_session_run_*; the committed MNIST model at every one of its steps.
4. Bad step lists are refused with a message naming the field, the value and what was
   expected: out of range, not strictly increasing, too many, none, without the flag, the
   flag without options; the trace asked for without the flag or before a run; out_len short.
"""
from __future__ import annotations

import math
from ctypes import POINTER, byref, c_float, c_int32, c_void_p, sizeof
from pathlib import Path

import numpy as np
import pytest

import reference_numpy as ref
from export.ttfs_format import (NeuronParams, build_model, conv2d, dense, flatten, input_layer,
                                maxpool, write_model)

pyttfs = pytest.importorskip("pyttfs", exc_type=OSError)
from pyttfs._lib import (RECORD_OUTPUT_TRACE, RECORD_SPIKE_TIMES, SessionOptionsStruct,  # noqa: E402
                         Status, lib)

F32 = np.float32
REPO = Path(__file__).resolve().parents[1]
T_S = T_D = 20
STEPS = 60
RECORD = [0, 9, 19, 20, 29, 39, 40, 49, 59]  # both sides of each window boundary
# The reference builds its exp tables in float64 and sums with numpy: its potentials may differ
# from the library's by the rounding of a float32 sum, bounded relative to the magnitude of its
# terms (|bias| + sum |w| * k). 1e-5 is ~100 float32 ulps of that scale.
POTENTIAL_RTOL = 1e-5


def _network(pool_mode: str, readout: str, output: str, bias_shift: float = 0.0):
    """input 9x11 -> conv 3x3x4 -> maxpool 3x3 stride 2 SAME (4x5x4) -> [flatten -> dense 6]
    or [conv 2x3 stride 2 -> 2x2x3]. A gated pool's conv layer has td_fire +4, so that a later
    child can still take a window over (gated then differs from earliest)."""
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


def _network_for(pool_mode: str, readout: str, output: str):
    """Under first_spike the output biases are shifted so that about half the images get an
    output spike (the median image's largest potential at the last threshold)."""
    if readout == "vmem":
        return _network(pool_mode, readout, output)
    silent = ref.simulate(_network(pool_mode, "vmem", output), _images(), record=False)
    median = float(np.median(silent.potentials.max(axis=1)))
    return _network(pool_mode, readout, output, bias_shift=math.exp(-(T_D - 1) / 19.0) - median)


def _trace(path, engine, images, steps, threads=1, **options):
    with pyttfs.Model(path) as model, model.session(backend="cpu", engine=engine,
                                                    max_batch=len(images), threads=threads,
                                                    output_trace_steps=steps,
                                                    **options) as session:
        result = session.run(images)
        return session.output_trace(), result


def _relative(ours, theirs, magnitude):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = np.maximum(np.maximum(np.abs(theirs), np.asarray(magnitude, np.float64)), 1e-30)
    return np.abs(ours - theirs) / scale


# ---- 1. against the numpy reference -----------------------------------------------------------


@pytest.mark.parametrize("output", ["dense", "conv2d"])
@pytest.mark.parametrize("readout", ["vmem", "first_spike"])
@pytest.mark.parametrize("pool_mode", ["or", "earliest", "gated"])
def test_trace_matches_the_numpy_reference(tmp_path, pool_mode, readout, output):
    spec = _network_for(pool_mode, readout, output)
    path = tmp_path / "net.ttfs"
    write_model(spec, path)
    images = _images()
    n = len(images)
    last = len(spec.layers) - 1
    if readout == "first_spike":  # both the reset and the no-spike case must occur
        fired = (ref.simulate(spec, images, record=False).spike_times[last]
                 .reshape(n, -1) >= 0).any(axis=1)
        assert 0 < fired.sum() < n, f"{fired.sum()} of {n} images fired; tune _network_for"
    traces = {engine: _trace(path, engine, images, RECORD)[0] for engine in ("stepped", "analytic")}
    np.testing.assert_array_equal(traces["stepped"].view(np.uint32),
                                  traces["analytic"].view(np.uint32))
    trace = traces["stepped"]
    moved = 0
    for r, t in enumerate(RECORD):
        upto = ref.simulate(spec, images, time_steps=t + 1, record=False)
        magnitude = upto.final_magnitude[last].reshape(n, -1)
        rel = _relative(trace[:, r], upto.potentials, magnitude)
        assert rel.max() <= POTENTIAL_RTOL, f"t={t}: relative difference {rel.max():.3g}"
        moved += int(r > 0 and np.any(trace[:, r] != trace[:, r - 1]))
    assert moved >= 2, "the potentials hardly changed between recorded steps: a vacuous test"
    if readout == "first_spike":  # a reset shows as an exact 0 from the spike step on
        times = ref.simulate(spec, images, record=False).spike_times[last].reshape(n, -1)
        for r, t in enumerate(RECORD):
            reset = (times >= 0) & (times <= t)
            assert np.all(trace[:, r][reset] == 0.0)


# ---- 2. by hand -------------------------------------------------------------------------------


def _k(t: int, tau: float = 20.0) -> F32:
    return F32(math.exp(-t / tau))  # td = 0; k(0) is 1 by definition, not by this formula


def test_trace_by_hand(tmp_path):
    """input 2x2 -> maxpool 2x2 -> flatten -> dense 1x2, integrating [0, 20) with
    k(t) = exp(-t/20), k(0) = 1. Image 0: pixels fire at 2, 5, 9 and never; image 1 at 0, 3, 3
    and never (`or` relays one spike at 3; `earliest` only the first)."""
    w = np.array([[0.5, -0.25]], F32)
    b = np.array([0.125, 0.0625], F32)

    def pixel(t):  # just above the threshold at t, well below the one at t - 1
        return F32(math.exp(-t / 20.0) * 1.001)

    x = np.zeros((2, 2, 2, 1), F32)
    x[0, :, :, 0] = [[pixel(2), pixel(5)], [pixel(9), 0.0]]
    x[1, :, :, 0] = [[1.0, pixel(3)], [pixel(3), 0.0]]
    expected = {  # rows: after steps 1, 4, 39
        "or": [[b, w[0] + b],
               [b + w[0] * _k(2), (w[0] + b) + w[0] * _k(3)],
               [b + w[0] * _k(2) + w[0] * _k(5) + w[0] * _k(9), (w[0] + b) + w[0] * _k(3)]],
        "earliest": [[b, w[0] + b], [b + w[0] * _k(2), w[0] + b], [b + w[0] * _k(2), w[0] + b]],
    }
    for mode, rows in expected.items():
        spec = build_model([input_layer((2, 2, 1), name="px"), maxpool("pool", size=(2, 2), mode=mode),
                            flatten(), dense("out", w, b)],
                           time_steps=40, time_fire_start=20, time_fire_duration=20)
        path = tmp_path / f"{mode}.ttfs"
        write_model(spec, path)
        for engine in ("stepped", "analytic"):
            trace, _ = _trace(path, engine, x, [1, 4, 39])
            for r in range(3):
                np.testing.assert_allclose(trace[:, r], np.array([rows[r][0], rows[r][1]], F32),
                                           rtol=1e-6, err_msg=f"{mode} {engine} row {r}")


# ---- 3. the engines agree, and the last step is the run's result ------------------------------


def test_engines_agree_on_the_mnist_model_at_every_step():
    from export.datasets import load_mnist

    path = REPO / "models" / "mnist.ttfs"
    images = np.ascontiguousarray(load_mnist().test.images[:24]).reshape(-1, 28, 28, 1)
    with pyttfs.Model(path) as model:
        steps = np.arange(model.time_steps)
    runs = {(engine, threads): _trace(path, engine, images, steps, threads=threads)
            for engine in ("stepped", "analytic") for threads in (1, 3)}
    trace, result = runs[("stepped", 1)]
    for key, (other, other_result) in runs.items():
        np.testing.assert_array_equal(other.view(np.uint32), trace.view(np.uint32), err_msg=str(key))
        np.testing.assert_array_equal(other_result.potentials.view(np.uint32),
                                      result.potentials.view(np.uint32))
    np.testing.assert_array_equal(trace[:, -1].view(np.uint32), result.potentials.view(np.uint32))
    assert np.any(trace[:, 0] != trace[:, -1]), "nothing changed over time: a vacuous test"
    # A subset of the steps gives the same rows.
    subset = [3, 100, 199, 250, 399]
    part, _ = _trace(path, "analytic", images, subset, record_spike_times=True)
    np.testing.assert_array_equal(part.view(np.uint32), trace[:, subset].view(np.uint32))


# ---- 4. bad requests --------------------------------------------------------------------------


def _create(model_handle, flags, steps=None, count=None):
    options = SessionOptionsStruct(struct_size=sizeof(SessionOptionsStruct), flags=flags)
    keep = None
    if steps is not None:
        keep = np.ascontiguousarray(steps, dtype=np.int32)
        options.output_trace_steps = keep.ctypes.data_as(POINTER(c_int32))
        options.output_trace_count = len(keep) if count is None else count
    elif count is not None:
        options.output_trace_count = count
    handle = c_void_p()
    status = lib.ttfs_session_create_ex(model_handle, 1, 0, 2, byref(options), byref(handle))
    if status == Status.OK:
        lib.ttfs_session_free(handle)
    return status, lib.ttfs_last_error().decode()


@pytest.mark.parametrize("flags, steps, count, words", [
    (RECORD_OUTPUT_TRACE, [5, 3], None,
     "output_trace_steps[1] = 3 after output_trace_steps[0] = 5; expected strictly increasing"),
    (RECORD_OUTPUT_TRACE, [5, 5], None, "output_trace_steps[1] = 5 after"),
    (RECORD_OUTPUT_TRACE, [0, 60], None, "output_trace_steps[1] = 60; expected a step in [0, 60)"),
    (RECORD_OUTPUT_TRACE, [-1], None, "output_trace_steps[0] = -1; expected a step in [0, 60)"),
    (RECORD_OUTPUT_TRACE, list(range(61)), None,
     "output_trace_count = 61; expected 1 to 60 steps"),
    (RECORD_OUTPUT_TRACE, None, None, "output_trace_count = 0; expected 1 to 60 steps"),
    (RECORD_OUTPUT_TRACE, None, 3, "output_trace_steps is NULL with output_trace_count = 3"),
    (RECORD_SPIKE_TIMES, [1, 2], None,
     "output_trace_count = 2 and output_trace_steps is set, but flags lack "
     "TTFS_SESSION_RECORD_OUTPUT_TRACE"),
])
def test_bad_step_lists_are_refused(tiny_model_path, flags, steps, count, words):
    with pyttfs.Model(tiny_model_path) as model:
        status, message = _create(model._handle, flags, steps, count)
        assert status == Status.ERR_INVALID_ARGUMENT, message
        assert words in message and message.startswith("ttfs_session_create_ex: "), message
        # pyttfs passes the library's words on, in its own terms
        if steps is not None and flags == RECORD_OUTPUT_TRACE:
            with pytest.raises(pyttfs.TtfsError, match=r"Model\.session: .*output_trace_steps"):
                model.session(backend="cpu", output_trace_steps=steps)


def test_trace_needs_options_flag_and_a_run(tiny_model_path):
    with pyttfs.Model(tiny_model_path) as model:
        handle = c_void_p()
        status = lib.ttfs_session_create(model._handle, 1, 0, 2, RECORD_OUTPUT_TRACE, byref(handle))
        assert status == Status.ERR_INVALID_ARGUMENT
        assert "needs the steps to record; create the session with ttfs_session_create_ex" in \
            lib.ttfs_last_error().decode()
        with pytest.raises(ValueError, match="non-empty"):
            model.session(backend="cpu", output_trace_steps=[])
        with pytest.raises(TypeError, match="integer steps"):
            model.session(backend="cpu", output_trace_steps=[1.5])
        out = np.zeros(100, F32)
        with model.session(backend="cpu", max_batch=2) as plain:
            plain.run(np.zeros((1, 8, 10, 1), np.uint8))
            status = lib.ttfs_session_output_trace(plain._handle, out.ctypes.data_as(POINTER(c_float)),
                                                   out.size)
            assert status == Status.ERR_NO_RESULTS
            assert "does not record the output trace" in lib.ttfs_last_error().decode()
            with pytest.raises(pyttfs.TtfsError, match="output_trace_steps="):
                plain.output_trace()
        with model.session(backend="cpu", max_batch=2, output_trace_steps=[4, 30]) as traced:
            status = lib.ttfs_session_output_trace(traced._handle, out.ctypes.data_as(POINTER(c_float)),
                                                   out.size)
            assert status == Status.ERR_NO_RESULTS and "no results yet" in lib.ttfs_last_error().decode()
            traced.run(np.zeros((2, 8, 10, 1), np.uint8))
            status = lib.ttfs_session_output_trace(traced._handle, out.ctypes.data_as(POINTER(c_float)),
                                                   19)
            assert status == Status.ERR_INVALID_ARGUMENT
            assert "out_len = 19; expected at least 20 (2 images x 2 steps x 5 classes)" in \
                lib.ttfs_last_error().decode()
            assert traced.output_trace().shape == (2, 2, 5)


def test_trace_is_counted_in_the_memory_limit(tiny_model_path):
    with pyttfs.Model(tiny_model_path) as model:
        with model.session(backend="cpu", max_batch=100) as plain:
            base = plain.requirements.memory_bytes
        with model.session(backend="cpu", max_batch=100, output_trace_steps=range(60)) as traced:
            assert traced.requirements.memory_bytes == base + 100 * 60 * 5 * 4
