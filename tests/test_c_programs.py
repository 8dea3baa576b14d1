"""Runs the C test programs that CMake builds from tests/c/*.c into <build>/tests/.

abi_smoke checks every function of the C ABI against answers worked out by hand for the tiny
network written by write_abi_smoke_model() (the arithmetic is at the top of tests/c/abi_smoke.c).
The programs are found next to the library pyttfs loaded (TTFS_LIBRARY or build/); an installed
wheel has no C test programs, so the tests skip there with the reason.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from export.ttfs_format import build_model, dense, flatten, input_layer, write_model

# The network tests/c/abi_smoke.c expects: 2x2x1 input -> flatten -> dense 4 -> 3. Every weight
# is a small dyadic number, so the potentials of images made of 0 and 255 pixels are exact
# float32 sums that can be worked out by hand.
ABI_SMOKE_WEIGHTS = np.array([[0.5, -0.25, 0.0],
                              [0.25, 0.5, -1.0],
                              [-0.5, 0.25, 0.75],
                              [1.0, 0.0, 0.5]], dtype=np.float32)
ABI_SMOKE_BIAS = np.array([0.125, -0.125, 0.25], dtype=np.float32)

CHECKS_PASSED = re.compile(r"abi_smoke: (\d+) checks passed")


def write_abi_smoke_model(path, weights=ABI_SMOKE_WEIGHTS, bias=ABI_SMOKE_BIAS) -> Path:
    """Writes the abi_smoke network (reference windows T_s = T_d = 80, 160 steps, vmem)."""
    spec = build_model([input_layer((2, 2, 1), divisor=255.0),
                        flatten("flatten"),
                        dense("fc", weights, bias)],
                       time_steps=160, readout="vmem", metadata={"test": "abi_smoke"})
    write_model(spec, path)
    return Path(path)


def c_program_dir() -> Path:
    import pyttfs  # imported here so that test_sanitizers can reuse the helpers without it

    return Path(pyttfs.lib._name).resolve().parent / "tests"


def c_program(name: str) -> Path:
    program = c_program_dir() / name
    if not program.is_file():
        pytest.skip(f"{program} is not built: the C test programs are built with the library "
                    f"by CMake when TTFS_BUILD_TESTS=ON (not in a wheel)")
    return program


def test_abi_smoke_passes_on_the_hand_worked_network(tmp_path):
    model = write_abi_smoke_model(tmp_path / "abi_smoke.ttfs")
    result = subprocess.run([str(c_program("abi_smoke")), str(model)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"abi_smoke failed:\n{result.stdout}{result.stderr}"
    last_line = result.stdout.strip().splitlines()[-1]
    match = CHECKS_PASSED.fullmatch(last_line)
    assert match, f"unexpected last line {last_line!r}"
    # Every section ran: library info, loading, layers, sessions, two engines, lifetimes.
    assert int(match.group(1)) >= 150


def test_abi_smoke_fails_on_a_network_with_other_answers(tmp_path):
    # The smoke test must be able to fail: one weight changed changes the potentials it checks.
    weights = ABI_SMOKE_WEIGHTS.copy()
    weights[2, 2] = 0.5
    model = write_abi_smoke_model(tmp_path / "other.ttfs", weights=weights)
    result = subprocess.run([str(c_program("abi_smoke")), str(model)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert re.search(r"abi_smoke: .*abi_smoke\.c:\d+: check failed", result.stderr), result.stderr
    assert "checks passed" not in result.stdout


def test_abi_smoke_without_a_model_is_a_usage_error():
    result = subprocess.run([str(c_program("abi_smoke"))], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: abi_smoke MODEL")
