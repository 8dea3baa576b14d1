"""Leak check: loading, freeing, creating sessions and running, many times over, must leave the
process's resident memory where it was after a warm-up. Also covers the failing paths (a
rejected file, refused handles), whose clean-up is easiest to forget."""
from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, byref, c_float, c_int32, c_void_p

import numpy as np
import pytest

from export.ttfs_format import build_model, dense, flatten, input_layer, to_bytes
from pyttfs import Status, lib

PAGE = os.sysconf("SC_PAGE_SIZE")
ROUNDS = 1000
# Each round below allocates well over 100 KiB (model + result buffers); leaking even one of
# them would add 100 MiB over ROUNDS rounds. 8 MiB leaves room for allocator noise only.
ALLOWED_GROWTH = 8 << 20

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda pad: 0


malloc_trim = _malloc_trim()


def resident_bytes() -> int:
    # Hand free heap pages back first, so that memory other tests freed earlier neither hides
    # growth nor counts as it.
    malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@pytest.fixture(scope="module")
def model_bytes():
    rng = np.random.default_rng(5)
    layers = [input_layer(shape=(16, 16, 1), name="input"), flatten(),
              dense("hidden", rng.normal(0.02, 0.05, (256, 120))),
              dense("out", rng.normal(0.0, 0.2, (120, 10)))]
    data = to_bytes(build_model(layers, time_steps=30, time_fire_start=10, time_fire_duration=10))
    assert len(data) > 120_000
    return data


def one_round(data: bytes, corrupt: bytes, images: np.ndarray) -> None:
    model = c_void_p()
    assert lib.ttfs_model_load_memory(data, len(data), byref(model)) == Status.OK
    session = c_void_p()
    assert lib.ttfs_session_create(model, 1, 1, 32, 1, byref(session)) == Status.OK
    predictions = np.empty(2, np.int32)
    assert lib.ttfs_session_run_f32(session, images.ctypes.data_as(POINTER(c_float)),
                                    images.size, 2, predictions.ctypes.data_as(POINTER(c_int32)),
                                    2, None, 0) == Status.OK
    assert lib.ttfs_model_free(model) == Status.OK  # before the session, on purpose
    assert lib.ttfs_session_free(session) == Status.OK
    assert lib.ttfs_session_free(session) == Status.ERR_INVALID_HANDLE
    rejected = c_void_p()
    assert lib.ttfs_model_load_memory(corrupt, len(corrupt), byref(rejected)) == Status.ERR_BAD_CRC


def test_load_run_free_does_not_grow_memory(model_bytes):
    corrupt = bytearray(model_bytes)
    corrupt[-1] ^= 0x5A  # the stored CRC no longer matches
    corrupt = bytes(corrupt)
    images = np.random.default_rng(0).random((2, 16, 16, 1), dtype=np.float32)
    for _ in range(100):  # warm-up: allocator arenas, worker threads, lazy initialisation
        one_round(model_bytes, corrupt, images)
    before = resident_bytes()
    for _ in range(ROUNDS):
        one_round(model_bytes, corrupt, images)
    growth = resident_bytes() - before
    assert growth < ALLOWED_GROWTH, f"resident memory grew by {growth} bytes over {ROUNDS} rounds"


def test_the_check_can_see_a_leak(model_bytes):
    """The measurement itself works: the same number of rounds that never free their model
    grows resident memory past the bound the leak test allows."""
    before = resident_bytes()
    kept = []
    for _ in range(ROUNDS):
        model = c_void_p()
        assert lib.ttfs_model_load_memory(model_bytes, len(model_bytes), byref(model)) == Status.OK
        kept.append(model)
    grown = resident_bytes() - before
    for model in kept:
        assert lib.ttfs_model_free(model) == Status.OK
    assert grown > ALLOWED_GROWTH, grown
