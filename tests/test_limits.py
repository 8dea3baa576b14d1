"""Session limits: memory and work are known before anything is allocated (docs/C_API.md,
"Limits"; ttfs_session_create_ex, ttfs_session_options, ttfs_session_get_requirements).

Regressions of issue 9, rebuilt byte for byte from the issue's description:
- the 716-byte model: two `or` pools with 4096x4096 SAME kernels on a 48x48 input (output
  shape unchanged). Spike lists were sized by kernel area (units x ceil(k/s)^2 spikes per
  layer, per worker thread): gigabytes for a file of 716 bytes. Now a pooled unit has room for
  at most min(its window's children x their spikes, the window's steps) spikes.
- the 456-byte model: a 256x256 input, 2^20 steps, every window spanning the whole run,
  first-spike readout: minutes per image on the stepped engine. Now refused with
  TTFS_ERR_LIMIT by default (the work per image is bounded), with the numbers in the message.
Runs that could take the machine are made in a subprocess with an address-space limit and a
timeout.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from ctypes import byref, c_int32, c_void_p, sizeof
from pathlib import Path

import numpy as np
import pytest

import pyttfs
from export.ttfs_format import (NeuronParams, build_model, conv2d, input_layer, maxpool,
                                read_model, to_bytes)
from pyttfs import Status, lib
from pyttfs._lib import SessionOptionsStruct, SessionRequirementsStruct

REPO = Path(__file__).resolve().parent.parent
CPU, STEPPED, ANALYTIC = 1, 0, 1


def or_pool_model(side=48, kernel=4096, window=80, pools=2):
    """The 716-byte model (with the defaults): input -> `or` pool -> `or` pool -> conv 1x1,
    windows of `window` steps (the input fires in [0, window))."""
    layers = [input_layer((side, side, 1))]
    layers += [maxpool(f"p{k + 1}", (kernel, kernel), (1, 1), padding="same", mode="or")
               for k in range(pools)]
    layers += [conv2d("out", np.ones((1, 1, 1, 2), np.float32), None)]
    return build_model(layers, time_steps=2 * window, readout="vmem", time_fire_start=window,
                       time_fire_duration=window)


def runaway_model(side=256, steps=2 ** 20):
    """The 456-byte model (with the defaults): input -> conv 1x1 (the output layer), every
    window [0, steps), first-spike readout. Overlapping windows: stepped engine only."""
    layers = [input_layer((side, side, 1), neuron=NeuronParams(fire_window=(0, steps))),
              conv2d("out", np.ones((1, 1, 1, 1), np.float32), None,
                     neuron=NeuronParams(integ_window=(0, steps), fire_window=(0, steps)))]
    return build_model(layers, time_steps=steps, readout="first_spike")


def test_the_regression_models_have_the_issues_sizes():
    assert len(to_bytes(or_pool_model())) == 716
    assert len(to_bytes(runaway_model())) == 456


# Loads the model given as bytes on stdin, runs both engines on a few random images under an
# address-space limit, prints the requirements and whether the engines agree.
CHILD = r"""
import resource, sys, numpy as np, pyttfs
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
model = pyttfs.Model.from_bytes(sys.stdin.buffer.read())
images = np.random.default_rng(0).integers(0, 256, (2,) + tuple(model.input_shape)).astype(np.uint8)
results = {}
for engine in ('analytic', 'stepped'):
    for record in (False, True):
        with model.session(backend='cpu', engine=engine, max_batch=2, threads=2,
                           record_spike_times=record) as session:
            r = session.run(images)
            results[engine, record] = r.potentials.copy()
            print('requirements', engine, record, session.requirements.memory_bytes,
                  session.requirements.work_per_image)
first = results['analytic', False]
print('identical', all(np.array_equal(v.view(np.uint32), first.view(np.uint32)) for v in results.values()))
print('finite', bool(np.isfinite(first).all()))
"""


def run_child(data: bytes, address_space=3 << 30, timeout=240):
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(address_space)], input=data,
                              capture_output=True, timeout=timeout, cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the model did not run within {timeout} s")
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    return out


def test_or_pools_with_huge_kernels_get_spike_lists_for_what_can_arrive():
    """The 716-byte model: 2304 units per pool, each with at most 48 x 48 children spiking
    once, within an 80-step window: at most 80 spikes per unit, 184 320 per layer (before:
    2304 x 4096^2 = 3.9e10 per layer and thread). The whole session is a few MB, and runs
    under a 3 GiB address-space limit, identically on both engines."""
    output = run_child(to_bytes(or_pool_model()))
    sizes = [int(line.split()[3]) for line in output.splitlines() if line.startswith("requirements")]
    assert len(sizes) == 4 and max(sizes) < 16 << 20, output
    assert "identical True" in output and "finite True" in output


def test_the_runaway_model_is_refused_by_its_work_with_the_numbers():
    with pyttfs.Model.from_bytes(to_bytes(runaway_model())) as model:
        with pytest.raises(pyttfs.TtfsError) as caught:
            model.session(backend="cpu", engine="stepped", max_batch=1)
        error = caught.value
        assert error.code == Status.ERR_LIMIT and error.status == "TTFS_ERR_LIMIT"
        # 65 536 input pixels checked at each of 2^20 steps, and as many output neurons:
        # at least 2 x 2^36 operations per image.
        work = int(error.message.split("up to ")[1].split()[0])
        assert work >= 2 * 2 ** 36
        assert str(pyttfs._lib.DEFAULT_MAX_WORK_PER_IMAGE) in error.message
        assert "max_work_per_image" in error.message
        # Raising the limit creates it (it is not run: it would take minutes per image).
        with model.session(backend="cpu", engine="stepped", max_batch=1,
                           max_work_per_image=work) as session:
            assert session.requirements.work_per_image == work
            assert session.requirements.max_work_per_image == work


def test_a_small_runaway_model_runs_within_its_limit_and_as_worked_out():
    """The same shape at 8x8 and 64 steps: every pixel of 255 is 1.0 >= vth0 = 1 at step 0, so
    it spikes at 0 and the 1x1 conv (weight 1, integrating from step 0 with weight exactly
    1) reaches 1.0 at step 0: threshold vth0 * exp(0) = 1, so every output fires at step 0
    and the first-spike readout picks class 0 (ties: lowest index)."""
    with pyttfs.Model.from_bytes(to_bytes(runaway_model(side=8, steps=64))) as model:
        with model.session(backend="cpu", engine="stepped", max_batch=1,
                           record_spike_times=True) as session:
            result = session.run(np.full((1, 8, 8, 1), 255, np.uint8))
            assert result.predictions[0] == 0
            np.testing.assert_array_equal(session.spike_times("out"), 0)


def test_memory_limit_refuses_with_the_numbers_and_can_be_raised(tiny_model_path):
    with pyttfs.Model(tiny_model_path) as model:
        with model.session(backend="cpu", engine="analytic", max_batch=64,
                           record_spike_times=True) as session:
            need = session.requirements
        assert need.max_memory_bytes == pyttfs._lib.DEFAULT_MAX_MEMORY_BYTES
        assert 0 < need.memory_bytes < need.max_memory_bytes
        with pytest.raises(pyttfs.TtfsError) as caught:
            model.session(backend="cpu", engine="analytic", max_batch=64, record_spike_times=True,
                          max_memory_bytes=1000)
        assert caught.value.code == Status.ERR_LIMIT
        message = caught.value.message
        assert "bytes of memory" in message and "limit of 1000 bytes" in message
        assert "max_memory_bytes" in message and "max_batch 64" in message
        # Exactly enough for one worker thread: accepted, with one worker.
        one = int(message.split("needs ")[1].split()[0])
        with model.session(backend="cpu", engine="analytic", max_batch=64, record_spike_times=True,
                           max_memory_bytes=one, threads=4) as session:
            assert session.requirements.max_workers == 1
            assert session.requirements.memory_bytes == one
            session.run(np.zeros((64, 8, 10, 1), np.uint8))  # four threads asked, one runs
        with pytest.raises(pyttfs.TtfsError):
            model.session(backend="cpu", max_batch=64, record_spike_times=True,
                          max_memory_bytes=one - 1)


def test_the_budget_is_what_the_session_really_takes(tmp_path):
    """Measured: the resident memory a session adds (created and run once, so every buffer is
    touched) stays within its memory_bytes, plus a little for the allocator and threads; and
    memory_bytes is not a wild overestimate of a session dominated by its result buffers."""
    code = r"""
import resource, sys, numpy as np, pyttfs
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize()
model = pyttfs.Model(sys.argv[1])
images = np.zeros((4000, 28, 28, 1), np.uint8)
before = rss()
with model.session(backend='cpu', engine=sys.argv[2], max_batch=4000, threads=2,
                   record_spike_times=True) as session:
    session.run(images)
    print(rss() - before, session.requirements.memory_bytes)
"""
    for engine in ("analytic", "stepped"):
        done = subprocess.run([sys.executable, "-c", code, str(REPO / "models" / "mnist.ttfs"), engine],
                              capture_output=True, text=True, timeout=300, cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert done.returncode == 0, done.stderr
        grew, budget = map(int, done.stdout.split())
        assert grew <= budget + (16 << 20), (engine, grew, budget)
        assert grew >= budget // 2, (engine, grew, budget)


def test_the_spike_lists_of_or_pools_are_bounded_by_their_windows():
    """A pooled unit has at most as many distinct spike steps as its window's children, and
    never more than the window has steps. One `or` pool over a 16x16 input: growing its kernel
    past the input changes nothing; a longer window adds room for spikes only until the unit
    has a step per child (256), beyond that only the per-step offsets grow."""
    def memory(kernel, window, pools=1):
        spec = or_pool_model(side=16, kernel=kernel, window=window, pools=pools)
        with pyttfs.Model.from_bytes(to_bytes(spec)) as model, \
                model.session(backend="cpu", engine="analytic", max_batch=1, threads=1) as session:
            return session.requirements.memory_bytes
    assert memory(64, 80) == memory(4096, 80) == memory(1 << 20, 80)
    assert memory(4096, 256) - memory(4096, 80) > 256 * (256 - 80) * 4  # room for the spikes
    per_step_only = memory(4096, 2000) - memory(4096, 1000)
    assert per_step_only < 64 << 10, per_step_only
    # A pool of that pool: its units see children spiking up to 256 times each, so the window
    # (up to 256 x 256 steps) bounds them.
    assert memory(4096, 2000, pools=2) - memory(4096, 1000, pools=2) > 256 * 1000 * 4


def options(**fields):
    struct = SessionOptionsStruct(struct_size=sizeof(SessionOptionsStruct))
    for name, value in fields.items():
        setattr(struct, name, value)
    return struct


def create_ex(model, opts, engine=ANALYTIC, max_batch=4):
    out = c_void_p()
    pointer = None if opts is None else ctypes.cast(ctypes.pointer(opts), ctypes.POINTER(SessionOptionsStruct))
    status = lib.ttfs_session_create_ex(model, CPU, engine, max_batch, pointer, byref(out))
    return status, out.value


def test_session_options_struct_is_append_only(tiny_model_path):
    handle = c_void_p()
    assert lib.ttfs_model_load_file(str(tiny_model_path).encode(), byref(handle)) == Status.OK
    model = handle.value
    try:
        status, session = create_ex(model, None)  # NULL: defaults
        assert status == Status.OK, pyttfs._lib.last_error()
        lib.ttfs_session_free(session)
        # The oldest struct: struct_size and flags only; the limits keep their defaults.
        small = options(flags=1)
        small.struct_size = 8
        status, session = create_ex(model, small)
        assert status == Status.OK, pyttfs._lib.last_error()
        out = SessionRequirementsStruct(struct_size=sizeof(SessionRequirementsStruct))
        assert lib.ttfs_session_get_requirements(session, byref(out)) == Status.OK
        assert out.max_memory_bytes == pyttfs._lib.DEFAULT_MAX_MEMORY_BYTES
        times = (c_int32 * 80)()
        assert lib.ttfs_session_run_f32(session, (ctypes.c_float * 80)(), 80, 1, None, 0, None, 0) == 0
        assert lib.ttfs_session_spike_times(session, 0, times, 80) == Status.OK  # flags honoured
        lib.ttfs_session_free(session)
        # Too small to hold flags.
        tiny_struct = options()
        tiny_struct.struct_size = 4
        status, _ = create_ex(model, tiny_struct)
        assert status == Status.ERR_INVALID_ARGUMENT and "struct_size" in pyttfs._lib.last_error()
        # A newer caller's larger struct: fine while its unknown tail is zero, refused otherwise.
        class Newer(ctypes.Structure):
            _fields_ = SessionOptionsStruct._fields_ + [("future_option", ctypes.c_uint64)]
        newer = Newer(struct_size=sizeof(Newer))
        status, session = create_ex(model, newer)
        assert status == Status.OK, pyttfs._lib.last_error()
        lib.ttfs_session_free(session)
        newer.future_option = 1
        status, _ = create_ex(model, newer)
        assert status == Status.ERR_INVALID_ARGUMENT
        assert "newer" in pyttfs._lib.last_error()
        # Requirements: struct_size checked, fields beyond it untouched.
        partial = SessionRequirementsStruct(struct_size=8, memory_bytes=12345)
        status, session = create_ex(model, options())
        assert lib.ttfs_session_get_requirements(session, byref(partial)) == Status.OK
        assert partial.max_workers >= 1 and partial.memory_bytes == 12345
        partial.struct_size = 4
        assert lib.ttfs_session_get_requirements(session, byref(partial)) == Status.ERR_INVALID_ARGUMENT
        lib.ttfs_session_free(session)
    finally:
        lib.ttfs_model_free(model)


def test_mnist_is_far_inside_the_default_limits():
    """The committed model, as the benchmarks run it (batch 10 000, spike times recorded):
    well inside both limits, so the defaults cost real models nothing."""
    with pyttfs.Model(REPO / "models" / "mnist.ttfs") as model:
        for engine in ("analytic", "stepped"):
            with model.session(backend="cpu", engine=engine, max_batch=10000,
                               record_spike_times=True) as session:
                need = session.requirements
            assert need.memory_bytes * 8 < need.max_memory_bytes
            assert need.work_per_image * 100 < need.max_work_per_image


def test_pyttfs_checks_the_limit_arguments(tiny_model_path):
    with pyttfs.Model(tiny_model_path) as model:
        for bad in (0, -1, 2 ** 64):
            with pytest.raises(ValueError, match="max_memory_bytes"):
                model.session(max_memory_bytes=bad)
            with pytest.raises(ValueError, match="max_work_per_image"):
                model.session(max_work_per_image=bad)
        for bad in (1.5, True, "8G"):
            with pytest.raises(TypeError, match="max_memory_bytes"):
                model.session(max_memory_bytes=bad)
