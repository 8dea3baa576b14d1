"""Handles are ids that cannot alias (include/ttfs.h, docs/C_API.md).

A freed model or session handle must be refused by every call even when the next model or
session reuses the freed object's memory (or its registry slot): before handles were ids, a
stale handle then freed the new model and its owner's own free failed. Each test frees and
reloads in a loop, keeps the stale handles, and uses them: every use is TTFS_ERR_INVALID_HANDLE
and the live objects are untouched. tests/c/abi_smoke.c does the same from C.
"""
from __future__ import annotations

from ctypes import POINTER, byref, c_int32, c_uint8, c_void_p

import numpy as np
import pytest

import pyttfs
from conftest import TINY, tiny_images
from pyttfs import Status, TtfsError, lib

CPU, STEPPED, ANALYTIC = 1, 0, 1
ROUNDS = 300


def load(path) -> int:
    handle = c_void_p()
    assert lib.ttfs_model_load_file(str(path).encode(), byref(handle)) == Status.OK, \
        pyttfs._lib.last_error()
    return handle.value


def create(model: int) -> int:
    handle = c_void_p()
    assert lib.ttfs_session_create(model, CPU, ANALYTIC, 2, 0, byref(handle)) == Status.OK, \
        pyttfs._lib.last_error()
    return handle.value


def layer_count(model) -> int:
    count = c_int32(-1)
    status = lib.ttfs_model_layer_count(model, byref(count))
    return status if status != Status.OK else int(count.value) + 1000


def test_stale_model_handles_are_refused_after_reuse(tiny_model_path):
    stale = []
    for _ in range(ROUNDS):
        model = load(tiny_model_path)
        assert lib.ttfs_model_free(model) == Status.OK
        stale.append(model)
        fresh = load(tiny_model_path)
        assert fresh not in stale
        # Every stale handle so far, including the one whose slot `fresh` probably took.
        for old in stale[-3:]:
            assert layer_count(old) == Status.ERR_INVALID_HANDLE
            assert lib.ttfs_model_free(old) == Status.ERR_INVALID_HANDLE
            assert "not a live model" in pyttfs._lib.last_error()
        assert layer_count(fresh) == 1000 + len(TINY["layers"])  # untouched by the stale frees
        assert lib.ttfs_model_free(fresh) == Status.OK
        stale.append(fresh)
    assert len(set(stale)) == len(stale)


def test_stale_session_handles_are_refused_after_reuse(tiny_model_path):
    model = load(tiny_model_path)
    images = np.ascontiguousarray(tiny_images(2, seed=5))
    try:
        stale = []
        for _ in range(ROUNDS // 3):
            session = create(model)
            assert lib.ttfs_session_free(session) == Status.OK
            stale.append(session)
            fresh = create(model)
            assert fresh not in stale
            n = c_int32()
            for old in stale[-3:]:
                assert lib.ttfs_session_last_batch_size(old, byref(n)) == Status.ERR_INVALID_HANDLE
                assert lib.ttfs_session_free(old) == Status.ERR_INVALID_HANDLE
                # A stale session is not taken for a model either (nor the other way round).
                assert lib.ttfs_model_free(old) == Status.ERR_INVALID_HANDLE
            status = lib.ttfs_session_run_u8(fresh, images.ctypes.data_as(POINTER(c_uint8)), images.size, 2,
                                             None, 0, None, 0)
            assert status == Status.OK, pyttfs._lib.last_error()
            assert lib.ttfs_session_free(fresh) == Status.OK
            stale.append(fresh)
    finally:
        assert lib.ttfs_model_free(model) == Status.OK


def test_a_model_handle_is_never_a_session_handle(tiny_model_path):
    """Kinds are part of the id: a live model's id is refused by session calls and vice versa,
    with a message saying which kind it is."""
    model = load(tiny_model_path)
    session = create(model)
    n = c_int32()
    assert lib.ttfs_session_last_batch_size(model, byref(n)) == Status.ERR_INVALID_HANDLE
    assert "is a model, not a session" in pyttfs._lib.last_error()
    assert lib.ttfs_model_layer_count(session, byref(n)) == Status.ERR_INVALID_HANDLE
    assert "is a session, not a model" in pyttfs._lib.last_error()
    assert lib.ttfs_session_free(session) == Status.OK
    assert lib.ttfs_model_free(model) == Status.OK


def test_pyttfs_objects_over_reused_handles(tiny_model_path):
    """The same through pyttfs: a Model closed and another loaded; the first one's handle value
    (kept by a caller that holds raw handles) is refused, the second keeps working."""
    images = tiny_images(3, seed=8)
    with pyttfs.Model(tiny_model_path) as reference, \
            reference.session(backend="cpu", max_batch=3) as session:
        expected = session.run(images)
    for _ in range(50):
        first = pyttfs.Model(tiny_model_path)
        stale_value = first._handle
        first.close()
        second = pyttfs.Model(tiny_model_path)
        with pytest.raises(TtfsError) as caught:
            pyttfs._lib._check(lib.ttfs_model_free(stale_value))
        assert caught.value.code == Status.ERR_INVALID_HANDLE
        with second.session(backend="cpu", max_batch=3) as session:
            result = session.run(images)
        np.testing.assert_array_equal(result.predictions, expected.predictions)
        np.testing.assert_array_equal(result.potentials, expected.potentials)
        second.close()  # its own free still works: the stale free did not take it
        assert second.closed
