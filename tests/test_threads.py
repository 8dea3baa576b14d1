"""Threads: a model shared by many sessions, a session shared by mistake, models freed first.

ttfs.h promises: a model is immutable and shareable; a session is used by one thread at a time
and a call that finds it busy returns TTFS_ERR_BUSY; sessions keep what they need, so the model
may be freed before them. ctypes releases the GIL around every call, so these threads really
run inside the library at the same time.
"""
from __future__ import annotations

import threading
from ctypes import POINTER, byref, c_int32, c_uint8, c_void_p

import numpy as np
import pytest

import pyttfs
from conftest import tiny_images
from pyttfs import Status, TtfsError, lib

CPU, STEPPED, ANALYTIC = 1, 0, 1
THREADS = 4


def _run_all(session, batches):
    """Predictions, potentials and conv spike times of each batch, in order."""
    results = []
    for images in batches:
        result = session.run(images)
        results.append((result.predictions, result.potentials, session.spike_times("conv")))
    return results


def _assert_same(got, expected):
    assert len(got) == len(expected)
    for (p, v, t), (ep, ev, et) in zip(got, expected):
        np.testing.assert_array_equal(p, ep)
        np.testing.assert_array_equal(v, ev)
        np.testing.assert_array_equal(t, et)


@pytest.mark.parametrize("engine", ["stepped", "analytic"])
def test_sessions_sharing_one_model_agree_with_a_single_thread(tiny_model_path, engine):
    batches = [tiny_images(8, seed=100 + i) for i in range(6)]
    with pyttfs.Model(tiny_model_path) as model:
        with model.session(backend="cpu", engine=engine, max_batch=8,
                           record_spike_times=True, threads=1) as alone:
            expected = _run_all(alone, batches)
        # Each thread starts at a different batch so the threads are never in lockstep.
        outcomes, errors = {}, []
        start = threading.Barrier(THREADS)

        def worker(index):
            try:
                rotated = batches[index:] + batches[:index]
                with model.session(backend="cpu", engine=engine, max_batch=8,
                                   record_spike_times=True, threads=2) as session:
                    start.wait()
                    for _ in range(5):
                        outcomes[index] = _run_all(session, rotated)
            except Exception as error:  # reported from the main thread below
                errors.append(error)

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    assert not errors, errors
    for index in range(THREADS):
        _assert_same(outcomes[index], expected[index:] + expected[:index])
    assert len({int(r[0].sum()) for r in expected}) > 1, "batches too alike to tell apart"


def test_one_session_from_two_threads_is_busy_or_correct(tiny_model_path):
    """Two threads hammer one session: every call either succeeds with the right answer or is
    refused with BUSY; never a crash, never a mixed-up result."""
    images = tiny_images(256, seed=9)
    with pyttfs.Model(tiny_model_path) as model, \
            model.session(backend="cpu", engine="stepped", max_batch=256, threads=1) as session:
        expected = session.run(images)
        outcomes = {"ok": 0, "busy": 0}
        lock = threading.Lock()
        failures = []

        def hammer():
            for _ in range(40):
                try:
                    result = session.run(images)
                except TtfsError as error:
                    if error.code != Status.ERR_BUSY:
                        failures.append(error)
                    with lock:
                        outcomes["busy"] += 1
                    continue
                if not (np.array_equal(result.predictions, expected.predictions)
                        and np.array_equal(result.potentials, expected.potentials)):
                    failures.append("wrong results")
                with lock:
                    outcomes["ok"] += 1

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
        assert outcomes["ok"] >= 1  # every BUSY means the other thread's run was going through
        assert outcomes["ok"] + outcomes["busy"] == 80
        session.run(images[:1])  # the busy flag is released afterwards


def test_busy_is_reported_while_a_run_is_in_progress(tiny_model_path):
    """Deterministic BUSY: poll a cheap query while another thread runs a large batch."""
    images = np.ascontiguousarray(tiny_images(4096, seed=3))
    with pyttfs.Model(tiny_model_path) as model, \
            model.session(backend="cpu", engine="stepped", max_batch=4096, threads=1) as session:
        handle = session._handle
        running = threading.Event()
        finished = threading.Event()
        statuses = []

        def runner():
            running.set()
            # The poller's own calls hold the session for an instant, so the runner may be
            # refused too; it retries until it has had 10 runs.
            while statuses.count(Status.OK) < 10 and len(statuses) < 100_000:
                statuses.append(lib.ttfs_session_run_u8(
                    handle, images.ctypes.data_as(POINTER(c_uint8)), images.size, 4096,
                    None, 0, None, 0))
            finished.set()

        thread = threading.Thread(target=runner)
        thread.start()
        running.wait()
        seen = set()
        n = c_int32()
        while not finished.is_set():
            seen.add(lib.ttfs_session_last_batch_size(handle, byref(n)))
        thread.join()
        assert statuses.count(Status.OK) == 10
        assert set(statuses) <= {Status.OK, Status.ERR_BUSY}
        assert Status.ERR_BUSY in seen
        assert seen <= {Status.OK, Status.ERR_BUSY, Status.ERR_NO_RESULTS}
        assert "another thread" in pyttfs._lib.last_error()  # the last failure was BUSY


def test_free_during_a_run_is_refused_until_the_run_ends(tiny_model_path):
    images = np.ascontiguousarray(tiny_images(4096, seed=4))
    model = pyttfs.Model(tiny_model_path)
    out = c_void_p()
    assert lib.ttfs_session_create(model._handle, CPU, STEPPED, 4096, 0, byref(out)) == Status.OK
    handle = out.value
    statuses = []
    started = threading.Event()

    def runner():
        started.set()
        while True:  # until the main thread's free gets through
            status = lib.ttfs_session_run_u8(handle, images.ctypes.data_as(POINTER(c_uint8)),
                                             images.size, 4096, None, 0, None, 0)
            statuses.append(status)
            if status != Status.OK:
                return

    thread = threading.Thread(target=runner)
    thread.start()
    started.wait()
    while not statuses:  # let at least one run complete first
        pass
    free_statuses = []
    while True:
        status = lib.ttfs_session_free(handle)
        free_statuses.append(status)
        if status == Status.OK:
            break
        assert status == Status.ERR_BUSY, lib.ttfs_last_error()
    thread.join()
    # The runner saw its session disappear between two runs, as a refused handle.
    assert statuses[-1] == Status.ERR_INVALID_HANDLE
    assert set(statuses[:-1]) == {Status.OK}
    model.close()


def test_sessions_outlive_their_model(tiny_model_path):
    batches = [tiny_images(4, seed=200 + i) for i in range(3)]
    model = pyttfs.Model(tiny_model_path)
    with model.session(backend="cpu", engine="stepped", max_batch=4,
                       record_spike_times=True) as reference:
        expected = _run_all(reference, batches)
    sessions = [model.session(backend="cpu", engine=engine, max_batch=4, record_spike_times=True)
                for engine in ("stepped", "analytic", "stepped")]
    model.close()  # frees the library's model; the sessions keep its data
    assert model.closed
    del model
    outcomes, errors = {}, []

    def worker(index):
        try:
            outcomes[index] = _run_all(sessions[index], batches)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for index in range(len(sessions)):
        _assert_same(outcomes[index], expected)
    for session in sessions:
        session.close()


def test_loading_and_querying_models_from_many_threads(tiny_model_path):
    """Loads, queries and frees race each other through the handle registries."""
    data = tiny_model_path.read_bytes()
    errors = []

    def worker():
        try:
            for _ in range(50):
                with pyttfs.Model.from_bytes(data) as model:
                    assert model.num_classes == 5 and len(model.layers) == 5
                    with model.session(backend="cpu", max_batch=1) as session:
                        assert session.backend == "cpu"
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
