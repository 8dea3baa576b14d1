"""The CUDA backend: availability rules, and CPU == CUDA bit for bit.

What must hold (include/ttfs.h, docs/ENGINES.md):

- Without a CUDA device (or with a library built without CUDA), backend "cuda" is refused with
  TTFS_ERR_BACKEND_UNAVAILABLE and a message saying what to do; backend "auto" runs on the CPU
  and gives the CPU's results.
- With a device: for random networks (tests/random_nets.py) and a long-window MNIST-shaped one
  (tests/gpu/mnist_like.py), on both engines, the CUDA backend's first-spike times of every
  neuron layer, spike counts, predictions and output potentials (as bit patterns) equal the CPU
  backend's; CUDA analytic == CUDA stepped; the analytic engine refuses overlapping windows on
  CUDA as on the CPU; batches are independent of each other and of the batch size; the output
  trace equals the CPU's on both engines.
  A difference is reported with the layer, image, neuron and both steps or values.

Where the device tests run:
- on a GPU machine (tests/gpu/run_gpu_checks.sh sets TTFS_REQUIRE_CUDA=1, which turns "no
  device" into a failure instead of a skip);
- everywhere else, against the CUDA emulator (tests/gpu/emulator): the same cuda_backend.cu
  host code and the same kernel bodies (cuda/engine_units.cuh) built for the host, with a fake
  runtime that poisons new device memory and bounds-checks every copy and kernel.
  test_emulated_cuda_backend builds it into build-cuda-emu/ and runs this file against it in a
  subprocess. It cannot check nvcc's code generation or real concurrency; the GPU run does.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
for entry in (REPO, REPO / "tests", REPO / "tests" / "gpu"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import random_nets  # noqa: E402
from mnist_like import mnist_like_images, mnist_like_model  # noqa: E402
from parity import differences, neuron_layers  # noqa: E402

from export.ttfs_format import to_bytes  # noqa: E402

try:
    import pyttfs
except OSError as exc:  # pyttfs.LibraryError: libttfs not built or not found
    pytest.skip(f"libttfs is not available: {exc}", allow_module_level=True)

EMULATED = "CUDA emulated" in pyttfs.build_info()
HAS_DEVICE = pyttfs.cuda_compiled() and pyttfs.cuda_device_count() > 0
REQUIRE_DEVICE = os.environ.get("TTFS_REQUIRE_CUDA") == "1"
NO_DEVICE_REASON = ("no CUDA device (" + ("library built without CUDA" if not pyttfs.cuda_compiled()
                                          else "CUDA compiled in, but no GPU or driver") +
                    "); the CUDA emulator run (test_emulated_cuda_backend) covers these tests here")

N_NETS = 60       # non-overlapping windows (T_s = T_d)
N_TOUCHING = 10    # T_s = T_d - 1: still analytic
N_OVERLAPPING = 16  # stepped only
FUZZ_CASES = 150   # structure-fuzzed models through both backends
ENGINES = ("analytic", "stepped")


@pytest.fixture
def device():
    """Skips (or, under TTFS_REQUIRE_CUDA=1, fails) when there is no CUDA device."""
    if not HAS_DEVICE:
        if REQUIRE_DEVICE:
            pytest.fail(f"TTFS_REQUIRE_CUDA=1 but {NO_DEVICE_REASON.split(';')[0]}; "
                        f"build info: {pyttfs.build_info()}")
        pytest.skip(NO_DEVICE_REASON)


# ---- running and comparing -----------------------------------------------------------------

def run(model, backend, engine, images, max_batch=None, record=True, runs_on=None):
    """Everything a session reports for one batch, as numpy arrays. runs_on: the backend the
    session must report (default: backend itself)."""
    with model.session(backend=backend, engine=engine, max_batch=max_batch or len(images),
                       record_spike_times=record) as session:
        assert session.backend == (runs_on or backend)
        result = session.run(images)
        out = {"predictions": result.predictions.copy(), "potentials": result.potentials.copy()}
        for i in neuron_layers(model):
            out[f"counts {i}"] = session.spike_counts(i)
            if record:
                out[f"times {i}"] = session.spike_times(i)
    return out


def assert_same(model, expected, actual, expected_name, actual_name, label):
    problems = differences(model, expected, actual, expected_name, actual_name)
    assert not problems, f"{label}\n  " + "\n  ".join(problems)


def random_net(seed, **kind):
    spec, images = random_nets.random_network(seed, **kind)
    label = f"random net seed {seed} {kind or ''}: {random_nets.describe(spec)}"
    return pyttfs.Model.from_bytes(to_bytes(spec)), images, label


def long_window_net():
    """A small MNIST-shaped net with the reference's 80-step windows: arrivals spread over
    tens of steps, `or` pools relaying up to four spikes per unit."""
    spec, _ = mnist_like_model(seed=3, size=14, kernel=3, filters=(4, 8), t_window=80,
                               time_steps=320, calibration_images=32)
    images = mnist_like_images(12, size=14, seed=11)
    return pyttfs.Model.from_bytes(to_bytes(spec)), images, "long-window MNIST-shaped net"


def many_chunks_net():
    """input (1x1x48, fires [0, 400), tau_fire 80: pixel values 3-255 fire all over the window)
    -> dense 48->5 integrating [0, 400) (vmem readout): a neuron's arrivals span several of the
    analytic kernel's chunks (cuda/engine_units.cuh with_step_chunk(): 256 steps here)."""
    from export.ttfs_format import NeuronParams, build_model, dense, input_layer
    rng = np.random.default_rng(8)
    layers = [input_layer((1, 1, 48), neuron=NeuronParams(tau_fire=80.0, vth0=1.0)),
              dense("out", rng.normal(0.05, 0.3, size=(48, 5)).astype(np.float32),
                    rng.normal(0.0, 0.2, size=5).astype(np.float32))]
    spec = build_model(layers, time_steps=800, readout="vmem", time_fire_start=400,
                       time_fire_duration=400)
    images = rng.integers(3, 256, size=(16, 1, 1, 48)).astype(np.uint8)  # 3/255 fires at 355
    images[:, 0, 0, 0] = 255  # fires at step 0
    return pyttfs.Model.from_bytes(to_bytes(spec)), images, "many-chunks net"


def step_zero_net():
    """input (1x1x4, fires [0, 10)) -> dense 4->3 integrating [5, 15) (vmem readout): pixels
    fire at step 0 (integrated, with the bias), at steps 1-4 (before the window: not integrated)
    and inside the window, so the first chunk of arrivals starts after step 0 and still
    carries S(0)."""
    from export.ttfs_format import NeuronParams, build_model, dense, input_layer
    rng = np.random.default_rng(5)
    layers = [input_layer((1, 1, 4), neuron=NeuronParams(tau_fire=4.0, vth0=0.5, fire_window=(0, 10))),
              dense("out", rng.normal(0.0, 0.7, size=(4, 3)).astype(np.float32),
                    np.array([0.25, -0.125, 0.0625], np.float32),
                    neuron=NeuronParams(tau_fire=6.0, integ_window=(5, 15), fire_window=(15, 25)))]
    spec = build_model(layers, time_steps=25, readout="vmem")
    images = rng.choice(np.array([0, 20, 40, 90, 200, 255], np.uint8), size=(32, 1, 1, 4))
    return pyttfs.Model.from_bytes(to_bytes(spec)), images, "step-zero net"


# ---- no device -----------------------------------------------------------------------------

@pytest.mark.skipif(HAS_DEVICE, reason="a CUDA device is present")
def test_cuda_backend_without_device_is_unavailable():
    model, _, _ = random_net(0)
    for engine in ENGINES:
        with pytest.raises(pyttfs.TtfsError) as caught:
            model.session(backend="cuda", engine=engine)
        assert caught.value.status == "TTFS_ERR_BACKEND_UNAVAILABLE"
        assert caught.value.code == pyttfs.Status.ERR_BACKEND_UNAVAILABLE
        assert "cuda" in caught.value.message.lower() and "cpu" in caught.value.message.lower(), \
            caught.value.message


@pytest.mark.skipif(HAS_DEVICE, reason="a CUDA device is present")
def test_auto_without_device_runs_on_cpu_and_equals_cpu():
    for seed in range(4):
        model, images, label = random_net(seed)
        for engine in ENGINES:
            cpu = run(model, "cpu", engine, images)
            auto = run(model, "auto", engine, images, runs_on="cpu")
            assert_same(model, cpu, auto, "cpu", "auto", f"{label}, {engine}")


def test_device_count_and_build_info_agree():
    count = pyttfs.cuda_device_count()
    assert isinstance(count, int) and count >= 0
    info = pyttfs.build_info()
    assert f"devices: {count}" in info, info
    if pyttfs.cuda_compiled():
        # cuda_build_description(): "CUDA <version>, architectures <list>"
        assert "CUDA" in info and "architectures" in info, info
    else:
        assert count == 0


# ---- with a device (real or emulated) ------------------------------------------------------

@pytest.mark.parametrize("seed", range(N_NETS))
def test_parity_random_nets(device, seed):
    model, images, label = random_net(seed)
    check_parity(model, images, label)


@pytest.mark.parametrize("seed", range(N_TOUCHING))
def test_parity_touching_windows(device, seed):
    model, images, label = random_net(seed, touching=True)
    check_parity(model, images, label)


def test_parity_long_windows(device):
    model, images, label = long_window_net()
    results = check_parity(model, images, label)
    # The net must exercise what it is here for: spikes in every hidden layer, arrivals spread
    # over more than 32 steps.
    for i in neuron_layers(model)[:-1]:
        times = results["cuda", "analytic"][f"times {i}"]
        assert (times >= 0).mean() > 0.05, f"layer {model.layers[i].name} almost silent"
    conv1 = results["cuda", "analytic"][f"times {model.layer_index('conv1')}"]
    fired = conv1[conv1 >= 0]  # the arrival steps of conv2
    assert fired.max() - fired.min() >= 32, (fired.min(), fired.max())


def test_parity_large_batch(device):
    """Hundreds of images per launch: many blocks per kernel, images far from the first."""
    model, _, label = long_window_net()
    images = mnist_like_images(300, size=14, seed=12)
    check_parity(model, images, f"{label}, batch of {len(images)}")


def gated_nets():
    """Random nets with `gated` pools (after a conv; with relays=True also after the input)."""
    nets = []
    for kind in ({}, {"relays": True}):
        seeds = [s for s in range(200)
                 if any(layer.pool_mode == "gated"
                        for layer in random_nets.random_network(s, **kind)[0].layers)]
        nets += [(s, kind) for s in seeds[:6]]
    return nets


@pytest.mark.parametrize("seed, kind", gated_nets())
def test_parity_gated_pools(device, seed, kind):
    model, images, label = random_net(seed, **kind)
    check_parity(model, images, label)


def test_parity_gated_long_windows(device):
    """The long-window net with `gated` pools below convs whose thresholds exp(-(j - 10)/tau)
    are above 1 for the first 10 steps of their windows (td_fire = 10): pooled units relay
    later children too."""
    spec, _ = mnist_like_model(seed=3, size=14, kernel=3, filters=(4, 8), t_window=80,
                               time_steps=320, calibration_images=32)
    for index, layer in enumerate(spec.layers):
        if layer.kind == "maxpool":
            layer.pool_mode = "gated"
            spec.layers[index - 1].neuron.td_fire = 10.0
    gated = pyttfs.Model.from_bytes(to_bytes(spec))
    images = mnist_like_images(12, size=14, seed=11)
    results = check_parity(gated, images, "long-window MNIST-shaped net, gated pools, td 10")
    for index, layer in enumerate(spec.layers):
        if layer.kind == "maxpool":
            spec.layers[index].pool_mode = "earliest"
    earliest = pyttfs.Model.from_bytes(to_bytes(spec))
    other = run(earliest, "cpu", "analytic", images)
    assert differences(gated, results["cpu", "analytic"], other, "gated", "earliest"), \
        "gated and earliest pools give the same results: the test exercises nothing gated"


def traces(model, images, steps):
    """The output trace of every (backend, engine), with the run's potentials."""
    out = {}
    for backend in ("cpu", "cuda"):
        for engine in ("stepped", "analytic"):
            with model.session(backend=backend, engine=engine, max_batch=len(images),
                               output_trace_steps=steps) as session:
                result = session.run(images)
                out[backend, engine] = (session.output_trace(), result.potentials.copy())
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_output_trace_parity(device, seed):
    """The output trace (docs/C_API.md) on CUDA, both engines, equals the CPU's bit for bit at
    every step; random nets of both readouts (first_spike: the resets)."""
    model, images, label = random_net(seed)
    steps = np.arange(model.time_steps)
    out = traces(model, images, steps)
    expected, potentials = out["cpu", "stepped"]
    np.testing.assert_array_equal(expected[:, -1].view(np.uint32), potentials.view(np.uint32))
    for key, (trace, _) in out.items():
        np.testing.assert_array_equal(trace.view(np.uint32), expected.view(np.uint32),
                                      err_msg=f"{label}: {key}")


def test_output_trace_parity_long_windows(device):
    """Arrivals spread over the output layer's window [160, 240), trace steps inside it and at
    its edges, and a batch of 12 (the trace's [step][image] rows on the device)."""
    model, images, label = long_window_net()
    steps = [0, 31, 100, 159, 160, 161, 175, 191, 192, 200, 223, 224, 239, 240, 319]
    out = traces(model, images, steps)
    expected, _ = out["cpu", "stepped"]
    for early, late in ((3, 6), (6, 9), (9, 12)):  # 159 / 175 / 200 / 239
        assert np.any(expected[:, early] != expected[:, late]), "the trace does not move"
    for key, (trace, _) in out.items():
        np.testing.assert_array_equal(trace.view(np.uint32), expected.view(np.uint32),
                                      err_msg=f"{label}: {key}")


def test_parity_and_trace_over_many_chunks(device):
    """Arrivals over a 400-step window: the analytic kernel bins them in several chunks (at
    most 256 steps each) and must equal the stepped engines, and the output trace at the
    chunk edges of every chunk size up to 256 must be the CPU's."""
    model, images, label = many_chunks_net()
    results = check_parity(model, images, label)
    fired = results["cpu", "stepped"]["times 0"]
    assert fired.min() == 0 and fired.max() > 300 and (fired >= 0).all(), \
        f"{label}: the pixels must fire all over [0, 400), from step 0"
    steps = [0, 1, 31, 32, 63, 64, 65, 127, 128, 129, 200, 255, 256, 257, 383, 384, 399, 400, 799]
    out = traces(model, images, steps)
    expected, _ = out["cpu", "stepped"]
    assert np.any(expected[:, 3] != expected[:, 13]), "the trace does not move"
    for key, (trace, _) in out.items():
        np.testing.assert_array_equal(trace.view(np.uint32), expected.view(np.uint32),
                                      err_msg=f"{label}: {key}")


def check_parity(model, images, label):
    results = {}
    for engine in ENGINES:
        results["cpu", engine] = run(model, "cpu", engine, images)
        results["cuda", engine] = run(model, "cuda", engine, images)
        assert_same(model, results["cpu", engine], results["cuda", engine], f"cpu {engine}",
                    f"cuda {engine}", label)
    assert_same(model, results["cuda", "stepped"], results["cuda", "analytic"], "cuda stepped",
                "cuda analytic", label)
    return results


@pytest.mark.parametrize("seed", range(N_OVERLAPPING))
def test_overlapping_windows_stepped_parity_and_analytic_refusal(device, seed):
    model, images, label = random_net(seed, overlapping=True)
    assert_same(model, run(model, "cpu", "stepped", images), run(model, "cuda", "stepped", images),
                "cpu stepped", "cuda stepped", label)
    with pytest.raises(pyttfs.TtfsError) as caught:
        model.session(backend="cuda", engine="analytic")
    assert caught.value.status == "TTFS_ERR_UNSUPPORTED", label


@pytest.mark.parametrize("engine", ENGINES)
def test_batches_are_independent(device, engine):
    """Results do not depend on the batch size, on what ran before in the session, or on
    recording spike times."""
    model, images, label = random_net(5)
    n = len(images)
    expected = run(model, "cpu", engine, images)
    with model.session(backend="cuda", engine=engine, max_batch=3 * n,
                       record_spike_times=True) as session:
        # A large batch first (every image three times), then smaller ones reusing the buffers.
        big = session.run(np.concatenate([images, images[::-1], images]))
        for copy, order in ((0, slice(None)), (1, slice(None, None, -1)), (2, slice(None))):
            part = slice(copy * n, (copy + 1) * n)
            got = big.potentials[part][order]
            assert np.array_equal(got.view(np.uint32), expected["potentials"].view(np.uint32)), \
                f"{label}: copy {copy} of a batch of {3 * n}"
        for size in (n, 1, 2):
            result = session.run(images[:size])
            got = {"predictions": result.predictions, "potentials": result.potentials}
            for i in neuron_layers(model):
                got[f"times {i}"] = session.spike_times(i)
                got[f"counts {i}"] = session.spike_counts(i)
            want = {key: value[:size] for key, value in expected.items()}
            assert_same(model, want, got, "cpu", f"cuda batch of {size}", label)
    not_recorded = run(model, "cuda", engine, images, record=False)
    assert_same(model, expected, not_recorded, "cpu", "cuda without spike times", label)


def test_arrivals_at_step_zero_before_a_later_window(device):
    """S(0) enters with the bias even when the layer's window starts later (the analytic kernel
    then starts its first chunk at the window): CUDA == CPU stepped, both engines."""
    model, images, label = step_zero_net()
    expected = run(model, "cpu", "stepped", images)
    fired = expected["times 0"]
    assert (fired == 0).any() and ((fired > 0) & (fired < 5)).any() and (fired >= 5).any(), \
        f"{label}: the images must fire at step 0, before the window and inside it"
    for engine in ENGINES:
        assert_same(model, expected, run(model, "cuda", engine, images), "cpu stepped",
                    f"cuda {engine}", label)


def test_uint8_input_matches_float_input(device):
    model, images, label = long_window_net()
    with model.session(backend="cuda", engine="analytic", max_batch=len(images)) as session:
        from_bytes = session.run(images).potentials.copy()
        divisor = np.float32(255.0)
        from_floats = session.run(images.astype(np.float32) / divisor).potentials
    assert np.array_equal(from_bytes.view(np.uint32), from_floats.view(np.uint32)), label


# ---- limits (ttfs_session_create_ex): the CUDA backend's budget -----------------------------

def or_pool_net(side=16, kernel=4096, pools=1):
    """input -> `or` pools with kernels far larger than the input (SAME, shape unchanged) ->
    conv 1x1 (the 716-byte model of issue 9 has side 48 and two pools)."""
    from export.ttfs_format import build_model, conv2d, input_layer, maxpool
    layers = [input_layer((side, side, 1))]
    layers += [maxpool(f"p{k + 1}", (kernel, kernel), (1, 1), padding="same", mode="or")
               for k in range(pools)]
    layers += [conv2d("out", np.ones((1, 1, 1, 2), np.float32), None)]
    return pyttfs.Model.from_bytes(to_bytes(build_model(layers, time_steps=160, readout="vmem")))


def test_cuda_or_pool_buffers_are_sized_by_what_can_arrive(device):
    """A pool unit's spike steps on the device: at most min(children x their steps, window
    steps), never kernel area: the kernel's size past the input changes nothing."""
    sizes = []
    for kernel in (64, 4096, 1 << 20):
        model = or_pool_net(kernel=kernel)
        with model.session(backend="cuda", engine="analytic", max_batch=8) as session:
            sizes.append(session.requirements.memory_bytes)
    assert sizes[0] == sizes[1] == sizes[2] and sizes[0] < 1 << 20, sizes
    # And the results are the CPU's, bit for bit.
    model = or_pool_net(kernel=4096)
    images = np.random.default_rng(3).integers(0, 256, (6, 16, 16, 1)).astype(np.uint8)
    for engine in ENGINES:
        assert_same(model, run(model, "cpu", engine, images), run(model, "cuda", engine, images),
                    f"cpu {engine}", f"cuda {engine}", "or pools with 4096x4096 kernels")


def test_cuda_sessions_respect_the_limits(device):
    model = or_pool_net(side=48, pools=2)  # the 716-byte model
    with pytest.raises(pyttfs.TtfsError) as caught:
        model.session(backend="cuda", engine="analytic", max_batch=1)
    assert caught.value.status == "TTFS_ERR_LIMIT", caught.value.message
    assert "cuda backend" in caught.value.message and "max_work_per_image" in caught.value.message
    with pytest.raises(pyttfs.TtfsError) as caught:
        model.session(backend="cuda", engine="stepped", max_batch=64, max_memory_bytes=4096)
    assert caught.value.status == "TTFS_ERR_LIMIT"
    assert "CUDA device buffers" in caught.value.message and "limit of 4096 bytes" in caught.value.message
    # auto promises a session whenever the CPU can run it: the CPU's bound is within the limit.
    with model.session(backend="auto", engine="analytic", max_batch=1) as session:
        assert session.backend == "cpu"


def test_cuda_refuses_the_runaway_model(device):
    from export.ttfs_format import NeuronParams, build_model, conv2d, input_layer
    steps = 2 ** 20
    layers = [input_layer((256, 256, 1), neuron=NeuronParams(fire_window=(0, steps))),
              conv2d("out", np.ones((1, 1, 1, 1), np.float32), None,
                     neuron=NeuronParams(integ_window=(0, steps), fire_window=(0, steps)))]
    model = pyttfs.Model.from_bytes(to_bytes(build_model(layers, time_steps=steps,
                                                         readout="first_spike")))
    with pytest.raises(pyttfs.TtfsError) as caught:
        model.session(backend="cuda", engine="stepped", max_batch=1)
    assert caught.value.status == "TTFS_ERR_LIMIT" and "stepped engine (cuda backend)" in caught.value.message


def test_fuzzed_models_agree_between_cpu_and_cuda(device):
    """Structure-fuzzed models (tests/fuzz_models.py) through the CUDA backend: the loader's
    verdicts are the same, every session is created or refused cleanly within the limits, and
    where both backends ran a model their results are the same bits."""
    import fuzz_models
    program = fuzz_models.find_program()
    if not program.is_file():
        pytest.skip(f"{program} is not built")
    seeds = list(range(2_000_000, 2_000_000 + FUZZ_CASES))
    cases = fuzz_models.generate_many(seeds)
    on_cpu, _ = fuzz_models.run_fuzz(seeds, program, cases=cases, extra_args=("--backend", "cpu"))
    # No address-space limit for the CUDA runs: the CUDA driver reserves far more virtual
    # address space than the 3 GiB the CPU runs are held to, and under that limit it finds no
    # device (seen on an H200: every session refused as TTFS_ERR_BACKEND_UNAVAILABLE). The
    # sessions' own limits (fuzz_models.CASE_MAX_MEMORY) still hold.
    on_cuda, _ = fuzz_models.run_fuzz(seeds, program, cases=cases, extra_args=("--backend", "cuda"),
                                      case_timeout=120, address_space=None)
    for outcomes, name in ((on_cpu, "cpu"), (on_cuda, "cuda")):
        problems = fuzz_models.check_outcomes(outcomes, cases)
        assert not problems, f"{name}: " + "\n".join(problems[:20])
    both = 0
    for seed in seeds:
        cpu, cuda = on_cpu[seed], on_cuda[seed]
        assert cpu.kind == cuda.kind, (seed, cpu, cuda)
        if cpu.kind == "load":
            assert cpu.detail == cuda.detail, (seed, cpu, cuda)
        elif "OK" in cpu.detail and "OK" in cuda.detail:
            assert cpu.hash == cuda.hash, f"seed {seed}: cpu {cpu} vs cuda {cuda}"
            both += 1
    assert both >= FUZZ_CASES // 5, both


# ---- emulator-only: failures of the CUDA runtime -------------------------------------------

emulator_only = pytest.mark.skipif(not EMULATED, reason="needs the CUDA emulator's fault injection")


@emulator_only
def test_device_allocation_failure_is_a_cuda_error(monkeypatch):
    model, _, _ = random_net(1)
    monkeypatch.setenv("TTFS_EMULATED_MALLOC_LIMIT", "16")
    with pytest.raises(pyttfs.TtfsError) as caught:
        model.session(backend="cuda", engine="analytic", max_batch=8)
    assert caught.value.status == "TTFS_ERR_CUDA"
    message = caught.value.message
    assert "cudaMalloc" in message and "out of memory" in message and "bytes for" in message, message
    # auto promises a working session: it falls back to the CPU.
    with model.session(backend="auto", max_batch=8) as session:
        assert session.backend == "cpu"


@emulator_only
def test_no_device_reported_by_the_runtime(monkeypatch):
    monkeypatch.setenv("TTFS_EMULATED_DEVICES", "0")
    assert pyttfs.cuda_device_count() == 0
    model, images, _ = random_net(2)
    with pytest.raises(pyttfs.TtfsError) as caught:
        model.session(backend="cuda")
    assert caught.value.status == "TTFS_ERR_BACKEND_UNAVAILABLE"
    with model.session(backend="auto", max_batch=len(images)) as session:
        assert session.backend == "cpu"
        session.run(images)


# ---- the emulator run ----------------------------------------------------------------------

EMULATOR_SOURCE = REPO / "tests" / "gpu" / "emulator"
EMULATOR_BUILD = REPO / "build-cuda-emu"


@pytest.fixture(scope="module")
def emulator_library():
    """build-cuda-emu/libttfs.so: the CUDA emulator (see the module docstring), built once."""
    if EMULATED:
        pytest.skip("this is the emulator run itself")
    if HAS_DEVICE:
        pytest.skip("a real CUDA device is present: the device tests ran on it")
    cmake = shutil.which("cmake")
    if cmake is None or shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("cmake or a C++ compiler is missing: cannot build the CUDA emulator")
    for command in ([cmake, "-S", str(EMULATOR_SOURCE), "-B", str(EMULATOR_BUILD)],
                    [cmake, "--build", str(EMULATOR_BUILD), "-j", str(os.cpu_count() or 2)]):
        built = subprocess.run(command, capture_output=True, text=True)
        assert built.returncode == 0, (f"building the CUDA emulator failed: {' '.join(command)}\n"
                                       f"{built.stdout[-4000:]}\n{built.stderr[-4000:]}")
    return EMULATOR_BUILD / "libttfs.so"


def test_emulated_cuda_backend(tmp_path, emulator_library):
    """Builds the CUDA emulator and runs this file against it: the device tests above then run
    the real backend code on the host (see the module docstring)."""
    report = tmp_path / "emulated.xml"
    env = dict(os.environ, TTFS_LIBRARY=str(emulator_library), TTFS_REQUIRE_CUDA="1")
    env.pop("TTFS_EMULATED_DEVICES", None)
    env.pop("TTFS_EMULATED_MALLOC_LIMIT", None)
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-p", "no:randomly", str(Path(__file__).resolve()),
                             f"--junitxml={report}"],
                            cwd=REPO, env=env, capture_output=True, text=True)
    output = tested.stdout[-6000:] + tested.stderr[-3000:]
    print(output)
    assert tested.returncode == 0, f"the CUDA emulator run failed:\n{output}"

    # The run must really have exercised the device tests, not skipped them.
    cases = ElementTree.parse(report).getroot().iter("testcase")
    ran = {case.get("name").split("[")[0] for case in cases
           if case.find("skipped") is None and case.find("failure") is None
           and case.find("error") is None}
    for name in ("test_parity_random_nets", "test_parity_touching_windows",
                 "test_parity_long_windows", "test_parity_large_batch",
                 "test_parity_gated_pools", "test_parity_gated_long_windows",
                 "test_batches_are_independent",
                 "test_overlapping_windows_stepped_parity_and_analytic_refusal",
                 "test_device_allocation_failure_is_a_cuda_error",
                 "test_cuda_or_pool_buffers_are_sized_by_what_can_arrive",
                 "test_cuda_sessions_respect_the_limits", "test_cuda_refuses_the_runaway_model",
                 "test_fuzzed_models_agree_between_cpu_and_cuda", "test_output_trace_parity",
                 "test_output_trace_parity_long_windows"):
        assert name in ran, f"{name} did not pass in the emulator run:\n{output}"


def test_gpu_scripts_run_on_the_emulator(tmp_path, emulator_library):
    """tests/gpu/bench_gpu.py --quick, tests/gpu/check_models.py and tests/bench/compare_builds.py
    --backend cuda on a few images, against the emulator: the scripts a GPU run depends on work
    and report PASS, so that device time is not spent finding a broken script."""
    env = dict(os.environ, TTFS_LIBRARY=str(emulator_library), OUT=str(tmp_path))
    for script, arguments, report in (
            ("bench_gpu.py", ["--quick", "--seconds", "0.01"], "bench_gpu.json"),
            ("check_models.py", ["--images", "3", "--stepped-images", "1", "--times-images", "1"],
             "check_models.json")):
        done = subprocess.run([sys.executable, str(REPO / "tests" / "gpu" / script), *arguments],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        output = done.stdout[-4000:] + done.stderr[-2000:]
        assert done.returncode == 0, f"{script} failed:\n{output}"
        assert f"PASS {script[:-3]}" in done.stdout, output
        assert not json.loads((tmp_path / report).read_text())["failures"], output
    # tests/bench/compare_builds.py --backend cuda: two CUDA builds' bits and speed, taking turns
    done = subprocess.run([sys.executable, str(REPO / "tests" / "bench" / "compare_builds.py"),
                           str(emulator_library), str(emulator_library), "--backend", "cuda",
                           "--rounds", "1", "--images", "3", "--stepped-images", "1",
                           "--images-file", str(REPO / "models" / "mnist-test-100-images.idx")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0 and done.stdout.count("results identical") == 2, output
    assert "cuda backend" in done.stdout, output
