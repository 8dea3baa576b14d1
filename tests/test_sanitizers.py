"""The C test programs and ttfs-infer under AddressSanitizer, LeakSanitizer and UBSan, and the
threaded ones under ThreadSanitizer.

Builds a CPU-only debug build with -DTTFS_SANITIZE=address,undefined into build-asan/ of the
checkout (reused, and only rebuilt incrementally, once it exists), then runs there:
abi_smoke on its hand-worked model, fuzz_loader (mutated model files) for a few thousand
iterations, fuzz_runner on a few hundred structure-fuzzed models (tests/fuzz_models.py: every
engine, with their results compared to the regular build's), threads_stress, and ttfs-infer
on small IDX sets, good and bad. Then a ThreadSanitizer build (build-tsan/:
-DTTFS_SANITIZE=thread with -DTTFS_NO_VECTOR_CLONES=ON, as the per-instruction-set clones'
ifunc resolvers crash under TSan) runs threads_stress (tests/test_threads.py's concurrency from
C) and fuzzed models on two worker threads each. Any sanitizer report fails the test, leaks
included. Everything runs in subprocesses: nothing sanitized is loaded into pytest.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from export.ttfs_format import (build_model, conv2d, dense, flatten, input_layer, maxpool,
                                write_model)
import fuzz_models
from conftest import tiny_spec
from test_c_programs import write_abi_smoke_model

REPO = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO / "build-asan"
TSAN_BUILD_DIR = REPO / "build-tsan"
SANITIZERS = "address,undefined"
# Budgets that keep the whole file well under 4 minutes on two cores (the first build is the
# bulk of it; later runs rebuild only what changed).
BUILD_TIMEOUT_S = 170
RUN_TIMEOUT_S = 60
FUZZ_ITERATIONS = 3000
FUZZ_SEED = 20240611
# Structure-fuzzed models (tests/fuzz_models.py) under each sanitizer, from seed 1 000 000 on
# (cases the default run of tests/test_fuzz_models.py does not repeat).
ASAN_MODEL_CASES = 300
TSAN_MODEL_CASES = 60
MODEL_SEED = 1_000_000
# Their sessions' work limit: a sanitized debug build runs some 50-100 times slower than the
# regular one, so a tenth of the regular run's limit keeps every case within seconds (cases
# beyond it are refused, the same way in both builds).
SANITIZED_MAX_WORK = fuzz_models.CASE_MAX_WORK // 10

SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=23",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}
SANITIZER_MARKS = ("runtime error", "AddressSanitizer", "LeakSanitizer", "ThreadSanitizer")
TSAN_ENV = {"TSAN_OPTIONS": "halt_on_error=1:exitcode=66:second_deadlock_stack=1"}


def _run(command, timeout=RUN_TIMEOUT_S, env=None):
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def asan_build():
    """build-asan/, configured for the sanitizers and built (incrementally when it exists)."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not on the PATH; the sanitizer build needs it")
    started = time.monotonic()
    # Configuring an existing build directory only refreshes its cache, so it is always done:
    # it also corrects a build-asan/ that was configured with other options.
    configure = _run(["cmake", "-S", REPO, "-B", BUILD_DIR, "-DTTFS_CUDA=OFF",
                      f"-DTTFS_SANITIZE={SANITIZERS}", "-DCMAKE_BUILD_TYPE=Debug",
                      "-DTTFS_BUILD_TESTS=ON", "-DTTFS_BUILD_CLI=ON"], timeout=BUILD_TIMEOUT_S)
    assert configure.returncode == 0, f"configuring {BUILD_DIR} failed:\n{configure.stdout}{configure.stderr}"
    remaining = BUILD_TIMEOUT_S - (time.monotonic() - started)
    build = _run(["cmake", "--build", BUILD_DIR, "-j2"], timeout=max(remaining, 10))
    assert build.returncode == 0, f"building {BUILD_DIR} failed:\n{build.stdout[-6000:]}{build.stderr[-6000:]}"
    return BUILD_DIR


@pytest.fixture(scope="module")
def sanitizer_env():
    env = dict(os.environ)
    env.update(SANITIZER_ENV)
    # The sanitized binaries find their own libttfs through their RPATH; a library override
    # meant for pytest must not send them to an unsanitized copy.
    env.pop("LD_LIBRARY_PATH", None)
    env.pop("LD_PRELOAD", None)
    return env


def assert_clean(result, what):
    output = result.stdout + result.stderr
    found = [mark for mark in SANITIZER_MARKS if mark in output]
    assert not found, f"{what}: sanitizer report ({', '.join(found)}):\n{output[-8000:]}"


def write_conv_model(path, readout):
    """A small network that reaches every kind of layer: conv (SAME), earliest and or pooling,
    flatten, dense; weights seeded, positive enough that most layers spike."""
    rng = np.random.default_rng(7)
    layers = [input_layer((6, 6, 1)),
              conv2d("conv1", rng.normal(0.15, 0.3, (3, 3, 1, 3)), rng.normal(0, 0.05, 3),
                     padding="same"),
              maxpool("pool1", mode="earliest"),
              conv2d("conv2", rng.normal(0.1, 0.3, (2, 2, 3, 4)), None),
              maxpool("pool2", size=(2, 2), stride=(1, 1), mode="or"),
              flatten(),
              dense("fc", rng.normal(0.05, 0.4, (4, 3)), rng.normal(0, 0.05, 3))]
    write_model(build_model(layers, time_steps=400, readout=readout), path)
    return path


def write_idx_images(path, images):
    n, h, w = images.shape[:3]
    with open(path, "wb") as out:
        out.write(struct.pack(">IIII", 0x00000803, n, h, w))
        out.write(images.astype(np.uint8).tobytes())


def write_idx_labels(path, labels):
    with open(path, "wb") as out:
        out.write(struct.pack(">II", 0x00000801, len(labels)))
        out.write(np.asarray(labels, dtype=np.uint8).tobytes())


# How to run each C test program under the sanitizers, by the name of its source in tests/c/.
def _abi_smoke_args(tmp_path):
    return [write_abi_smoke_model(tmp_path / "abi_smoke.ttfs")]


def _fuzz_loader_args(tmp_path):
    return [write_conv_model(tmp_path / "fuzz_seed.ttfs", "first_spike"), FUZZ_ITERATIONS, FUZZ_SEED]


def _fuzz_runner_args(tmp_path):
    cases = [fuzz_models.generate(seed) for seed in range(MODEL_SEED, MODEL_SEED + 12)]
    fuzz_models.write_cases(cases, tmp_path / "cases.bin", max_work=SANITIZED_MAX_WORK)
    return [tmp_path / "cases.bin"]


def write_tiny_model(path):
    from export.ttfs_format import write_model
    write_model(tiny_spec(), path)
    return path


def _threads_stress_args(tmp_path):
    return [write_tiny_model(tmp_path / "tiny.ttfs"), 3]


C_PROGRAM_ARGS = {"abi_smoke": _abi_smoke_args, "fuzz_loader": _fuzz_loader_args,
                  "fuzz_runner": _fuzz_runner_args, "threads_stress": _threads_stress_args}
C_PROGRAMS = sorted(set(C_PROGRAM_ARGS) | {p.stem for p in (REPO / "tests" / "c").glob("*.c")})


@pytest.mark.parametrize("name", C_PROGRAMS)
def test_c_program_is_clean_under_sanitizers(name, asan_build, sanitizer_env, tmp_path):
    source = REPO / "tests" / "c" / f"{name}.c"
    if not source.is_file():
        pytest.skip(f"{source} does not exist (yet): nothing to run for {name}")
    if name not in C_PROGRAM_ARGS:
        pytest.fail(f"{source} has no entry in C_PROGRAM_ARGS of {Path(__file__).name}: add how to "
                    f"run it so that it is checked under the sanitizers too")
    program = asan_build / "tests" / name
    assert program.is_file(), f"{program} was not built from {source}"
    result = _run([program, *C_PROGRAM_ARGS[name](tmp_path)], timeout=RUN_TIMEOUT_S,
                  env=sanitizer_env)
    assert_clean(result, name)
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stdout}{result.stderr}"


def test_ttfs_infer_is_clean_under_sanitizers(asan_build, sanitizer_env, tmp_path):
    cli = asan_build / "ttfs-infer"
    assert cli.is_file(), f"{cli} was not built"
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, (12, 6, 6), dtype=np.uint8)
    images[0] = 0  # an image with no spikes at all
    labels = rng.integers(0, 3, 12)
    idx, label_file = tmp_path / "images.idx", tmp_path / "labels.idx"
    write_idx_images(idx, images)
    write_idx_labels(label_file, labels)
    first_spike = write_conv_model(tmp_path / "first_spike.ttfs", "first_spike")
    vmem = write_conv_model(tmp_path / "vmem.ttfs", "vmem")

    runs = [
        [first_spike, idx, "--labels", label_file, "--batch", "5", "--engine", "stepped"],
        [first_spike, idx, "--labels", label_file, "--batch", "5", "--engine", "analytic", "--json"],
        [vmem, idx, "--labels", label_file, "--backend", "cpu", "--threads", "2"],
        [first_spike, idx, "--index", "3", "--labels", label_file, "--json"],
        [vmem, idx, "--index", "11"],
    ]
    # The everyday inputs and per-image rows: PNG/JPEG decoding (libpng/libjpeg), gzip, .npy.
    import gzip

    from PIL import Image

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i in range(3):
        Image.fromarray(images[i], "L").save(pictures / f"{i}.png")
    Image.fromarray(np.kron(images[4], np.ones((2, 2), np.uint8)), "L").save(tmp_path / "big.jpg")
    gz = tmp_path / "images.idx.gz"
    gz.write_bytes(gzip.compress(idx.read_bytes()))
    floats = tmp_path / "floats.npy"
    np.save(floats, images[..., None].astype(np.float64) / 255)
    runs += [
        [vmem, pictures, "--output", tmp_path / "rows.csv", "--top-k", "2"],
        [first_spike, tmp_path / "big.jpg", "--resize", "--json"],
        [first_spike, gz, "--labels", label_file, "--output", tmp_path / "rows.jsonl", "--batch", "5"],
        [vmem, floats, "--index", "2"],
        [vmem, "--info", "--json"],
    ]
    for args in runs:
        result = _run([cli, *args], env=sanitizer_env)
        assert_clean(result, f"ttfs-infer {args}")
        assert result.returncode == 0, f"ttfs-infer {args} exited {result.returncode}:\n{result.stderr}"
    broken_png = tmp_path / "broken.png"
    broken_png.write_bytes((pictures / "0.png").read_bytes()[:60])
    broken_jpeg = tmp_path / "broken.jpg"
    broken_jpeg.write_bytes(b"\xff\xd8\xff\xe0" + bytes(40))
    truncated_gz = tmp_path / "truncated.idx.gz"
    truncated_gz.write_bytes(gz.read_bytes()[:40])
    nan = tmp_path / "nan.npy"
    values = images[..., None].astype(np.float32) / 255
    values[5, 1, 1, 0] = np.nan
    np.save(nan, values)

    # Failures leave through the error path: it must be as clean as the happy one.
    corrupt = tmp_path / "corrupt.ttfs"
    data = bytearray(first_spike.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    failing = [
        [corrupt, idx],                                   # bad CRC
        [first_spike, label_file],                        # labels are not images
        [first_spike, idx, "--index", "12"],              # out of range
        [first_spike, idx, "--backend", "cuda"],          # CPU-only build
        [first_spike, idx, "--bogus"],                    # usage
        [vmem, broken_png],                               # libpng's error path (longjmp)
        [vmem, broken_jpeg],                              # libjpeg's error path (longjmp)
        [vmem, truncated_gz],                             # gzip data ends early
        [vmem, nan],                                      # NaN pixel
    ]
    for args in failing:
        result = _run([cli, *args], env=sanitizer_env)
        assert_clean(result, f"ttfs-infer {args}")
        assert result.returncode in (1, 2), f"ttfs-infer {args} exited {result.returncode}:\n{result.stderr}"
        assert result.stderr.startswith("ttfs-infer: error: "), result.stderr


# ---- structure-fuzzed models under AddressSanitizer + UBSan ----------------------------------

def release_outcomes(seeds):
    """The regular build's outcomes for the same cases (the library pytest loaded)."""
    program = fuzz_models.find_program()
    if not program.is_file():
        pytest.skip(f"{program} is not built")
    outcomes, _ = fuzz_models.run_fuzz(seeds, program, max_work=SANITIZED_MAX_WORK)
    return outcomes


def assert_same_outcomes(sanitized, regular, what):
    differ = [seed for seed in regular
              if (sanitized[seed].kind, sanitized[seed].detail, sanitized[seed].hash) !=
                 (regular[seed].kind, regular[seed].detail, regular[seed].hash)]
    assert not differ, (f"{what}: {len(differ)} cases differ from the regular build, e.g. seed "
                        f"{differ[0]}: {sanitized[differ[0]]} vs {regular[differ[0]]}")


def test_fuzzed_models_are_clean_under_asan(asan_build, sanitizer_env):
    seeds = list(range(MODEL_SEED, MODEL_SEED + ASAN_MODEL_CASES))
    reports = []
    # AddressSanitizer reserves terabytes of address space: no RLIMIT_AS here (the library's
    # own limits and ASan's allocator bound the memory).
    outcomes, cases = fuzz_models.run_fuzz(seeds, asan_build / "tests" / "fuzz_runner",
                                           address_space=None, case_timeout=300, env=sanitizer_env,
                                           stderr_sink=reports, max_work=SANITIZED_MAX_WORK)
    found = [mark for mark in SANITIZER_MARKS if any(mark in text for text in reports)]
    assert not found, f"sanitizer reports ({found}):\n" + "\n".join(reports)[-8000:]
    problems = fuzz_models.check_outcomes(outcomes, cases)
    assert not problems, "\n".join(problems[:20])
    assert sum(o.kind == "ran" for o in outcomes.values()) >= ASAN_MODEL_CASES // 4
    assert_same_outcomes(outcomes, release_outcomes(seeds), "ASan build")


# ---- ThreadSanitizer -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tsan_build():
    """build-tsan/: the library and the two threaded C programs under ThreadSanitizer."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not on the PATH; the sanitizer build needs it")
    started = time.monotonic()
    configure = _run(["cmake", "-S", REPO, "-B", TSAN_BUILD_DIR, "-DTTFS_CUDA=OFF",
                      "-DTTFS_SANITIZE=thread", "-DTTFS_NO_VECTOR_CLONES=ON",
                      "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DTTFS_BUILD_TESTS=ON",
                      "-DTTFS_BUILD_CLI=OFF"], timeout=BUILD_TIMEOUT_S)
    assert configure.returncode == 0, f"configuring {TSAN_BUILD_DIR} failed:\n{configure.stdout}{configure.stderr}"
    remaining = BUILD_TIMEOUT_S - (time.monotonic() - started)
    build = _run(["cmake", "--build", TSAN_BUILD_DIR, "-j2", "--target", "threads_stress", "fuzz_runner"],
                 timeout=max(remaining, 10))
    assert build.returncode == 0, f"building {TSAN_BUILD_DIR} failed:\n{build.stdout[-6000:]}{build.stderr[-6000:]}"
    return TSAN_BUILD_DIR


@pytest.fixture(scope="module")
def tsan_env():
    env = dict(os.environ)
    env.update(TSAN_ENV)
    env.pop("LD_LIBRARY_PATH", None)
    env.pop("LD_PRELOAD", None)
    return env


def test_threads_are_clean_under_tsan(tsan_build, tsan_env, tmp_path):
    result = _run([tsan_build / "tests" / "threads_stress", write_tiny_model(tmp_path / "tiny.ttfs"), 6],
                  timeout=RUN_TIMEOUT_S * 2, env=tsan_env)
    assert_clean(result, "threads_stress")
    assert result.returncode == 0, f"threads_stress exited {result.returncode}:\n{result.stdout}{result.stderr}"
    assert result.stdout.startswith("threads_stress: ok")


def test_fuzzed_models_on_worker_threads_are_clean_under_tsan(tsan_build, tsan_env):
    seeds = list(range(MODEL_SEED, MODEL_SEED + TSAN_MODEL_CASES))
    # Every case on two worker threads (the cases file says how many; force 2).
    cases = [fuzz_models.generate(seed) for seed in seeds]
    for case in cases:
        case.threads = 2
    reports = []
    outcomes, _ = fuzz_models.run_fuzz(seeds, tsan_build / "tests" / "fuzz_runner", address_space=None,
                                       case_timeout=300, env=tsan_env, stderr_sink=reports,
                                       cases=cases, max_work=SANITIZED_MAX_WORK)
    found = [mark for mark in SANITIZER_MARKS if any(mark in text for text in reports)]
    assert not found, f"sanitizer reports ({found}):\n" + "\n".join(reports)[-8000:]
    assert not fuzz_models.check_outcomes(outcomes, cases)
    assert_same_outcomes(outcomes, release_outcomes(seeds), "TSan build on two threads")
