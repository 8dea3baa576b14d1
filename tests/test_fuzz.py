"""The mutation fuzz loop over the model loader (tests/c/fuzz_loader.c).

fuzz_loader mutates a valid model file thousands of times and loads each copy through the C
ABI; it exits 1 on any inconsistency (TTFS_OK without a model, a failure that wrote the model
pointer, a failure without a message, an unknown status) and crashes if the loader does. The
program is found next to the library pyttfs loaded (CMake builds tests/c/*.c into
<build>/tests/); tests/test_sanitizers.py runs it again under AddressSanitizer.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pyttfs
from export.ttfs_format import (NeuronParams, build_model, conv2d, dense, flatten, input_layer,
                                maxpool, write_model)

VALID = Path(__file__).resolve().parent / "corrupt" / "valid.ttfs"
ITERATIONS = 50000
SUMMARY = re.compile(r"fuzz: (\d+) files, (\d+) loaded \((\d+) ran, (\d+) mutations left the file "
                     r"unchanged\), rejected by status:(.*); (\d+) inconsistencies")


def fuzz_loader() -> Path:
    program = Path(pyttfs.lib._name).resolve().parent / "tests" / "fuzz_loader"
    if not program.is_file():
        pytest.skip(f"{program} is not built: CMake builds tests/c/*.c with the library when "
                    f"TTFS_BUILD_TESTS=ON (an installed wheel has no C test programs)")
    return program


def run_fuzz(model: Path, iterations: int, seed: int):
    result = subprocess.run([str(fuzz_loader()), str(model), str(iterations), str(seed)],
                            capture_output=True, text=True, timeout=100)
    return result


def parse_summary(result):
    assert result.returncode == 0, f"fuzz_loader exited {result.returncode}:\n{result.stdout}{result.stderr}"
    match = SUMMARY.fullmatch(result.stdout.strip().splitlines()[-1])
    assert match, f"unexpected summary line: {result.stdout!r}"
    files, loaded, ran, unchanged, statuses, inconsistencies = match.groups()
    rejected = {name: int(count) for name, count in re.findall(r"(TTFS_ERR_\w+) (\d+)", statuses)}
    return dict(files=int(files), loaded=int(loaded), ran=int(ran), unchanged=int(unchanged),
                rejected=rejected, inconsistencies=int(inconsistencies))


def test_fuzz_loader_on_the_corrupt_suite_seed():
    summary = parse_summary(run_fuzz(VALID, ITERATIONS, 20240611))
    assert summary["files"] == ITERATIONS and summary["inconsistencies"] == 0
    # Every file was either loaded or rejected with a known status, nothing else.
    assert summary["loaded"] + summary["unchanged"] + sum(summary["rejected"].values()) == ITERATIONS
    assert summary["loaded"] >= 1, "no mutated file loaded: the fuzz never reaches the queries"
    assert summary["ran"] >= 1
    # The mutations reach deep into the reader, not only its first checks.
    for status in ("TTFS_ERR_BAD_CRC", "TTFS_ERR_TRUNCATED_DATA", "TTFS_ERR_TRAILING_BYTES",
                   "TTFS_ERR_OFFSET_OUT_OF_RANGE", "TTFS_ERR_BAD_FIELD", "TTFS_ERR_SHAPE_CHAIN",
                   "TTFS_ERR_BAD_VALUE"):
        assert summary["rejected"].get(status, 0) > 0, f"no mutation was rejected with {status}"


def test_fuzz_loader_on_a_first_spike_model_with_same_padding(tmp_path):
    rng = np.random.default_rng(3)
    spec = build_model([input_layer((7, 7, 2), neuron=NeuronParams(tau_fire=15.0)),
                        conv2d("conv", rng.normal(size=(3, 3, 2, 3)), rng.normal(size=3),
                               stride=(2, 2), padding="same"),
                        maxpool("pool", (2, 2), padding="same", mode="earliest"),
                        flatten(),
                        dense("out", rng.normal(size=(12, 4)), None)],
                       time_steps=120, readout="first_spike", time_fire_start=30,
                       time_fire_duration=40)
    write_model(spec, tmp_path / "seed.ttfs")
    summary = parse_summary(run_fuzz(tmp_path / "seed.ttfs", 5000, 99))
    assert summary["inconsistencies"] == 0 and summary["loaded"] >= 1
    assert summary["loaded"] + summary["unchanged"] + sum(summary["rejected"].values()) == 5000


def test_fuzz_loader_is_deterministic_per_seed():
    first = run_fuzz(VALID, 2000, 5)
    again = run_fuzz(VALID, 2000, 5)
    other = run_fuzz(VALID, 2000, 6)
    assert first.stdout == again.stdout
    assert parse_summary(first) != parse_summary(other)


def test_fuzz_loader_refuses_bad_usage(tmp_path):
    program = fuzz_loader()
    usage = subprocess.run([str(program)], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "usage" in usage.stderr
    missing = subprocess.run([str(program), str(tmp_path / "missing.ttfs"), "10", "1"],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "cannot open" in missing.stderr
    # A seed that does not load is a setup error, not a fuzz result.
    (tmp_path / "broken.ttfs").write_bytes(VALID.read_bytes()[:-1])
    broken = subprocess.run([str(program), str(tmp_path / "broken.ttfs"), "10", "1"],
                            capture_output=True, text=True, timeout=30)
    assert broken.returncode == 2 and "TTFS_ERR" not in broken.stdout and "does not load" in broken.stderr
