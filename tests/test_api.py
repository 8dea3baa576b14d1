"""The C ABI boundary (include/ttfs.h, cuda/api.cpp) through raw ctypes, and pyttfs on top.

Error paths are driven through pyttfs.lib directly so that the library, not the Python
wrapper, is what refuses the bad call. Expectations come from ttfs.h and from the hand-written
facts about the fixture models in conftest.py, never from the library's own output.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import threading
from ctypes import POINTER, byref, c_char_p, c_float, c_int32, c_uint8, c_void_p, sizeof
from pathlib import Path

import numpy as np
import pytest

import pyttfs
from conftest import DENSE, TINY, TINY_NEURONS, dense_spec, tiny_images, tiny_spec
from export.ttfs_format import build_model, dense, input_layer, to_bytes, write_model
from pyttfs import Status, TtfsError, lib
from pyttfs._lib import LayerInfoStruct

REPO = Path(__file__).resolve().parent.parent
AUTO, CPU, CUDA = 0, 1, 2
STEPPED, ANALYTIC = 0, 1
RECORD = 1


def last_error() -> str:
    return lib.ttfs_last_error().decode()


def load(path) -> int:
    handle = c_void_p()
    status = lib.ttfs_model_load_file(os.fsencode(path), byref(handle))
    assert status == Status.OK, last_error()
    return handle.value


def create(model: int, backend=CPU, engine=STEPPED, max_batch=4, flags=0) -> int:
    handle = c_void_p()
    status = lib.ttfs_session_create(model, backend, engine, max_batch, flags, byref(handle))
    assert status == Status.OK, last_error()
    return handle.value


def run_u8(session: int, images: np.ndarray, n=None, images_len=None, predictions=None,
           predictions_len=None, potentials=None, potentials_len=None) -> int:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    n = images.shape[0] if n is None else n
    return lib.ttfs_session_run_u8(
        session, images.ctypes.data_as(POINTER(c_uint8)),
        images.size if images_len is None else images_len, n,
        None if predictions is None else predictions.ctypes.data_as(POINTER(c_int32)),
        (0 if predictions is None else predictions.size) if predictions_len is None else predictions_len,
        None if potentials is None else potentials.ctypes.data_as(POINTER(c_float)),
        (0 if potentials is None else potentials.size) if potentials_len is None else potentials_len)


@pytest.fixture
def tiny(tiny_model_path):
    handle = load(tiny_model_path)
    yield handle
    lib.ttfs_model_free(handle)


@pytest.fixture
def session(tiny):
    handle = create(tiny, max_batch=4, flags=RECORD)
    yield handle
    lib.ttfs_session_free(handle)


def expect(status, code, *fragments):
    """The call failed with `code` and its message mentions every fragment."""
    assert status == code, f"got {lib.ttfs_status_name(status).decode()}: {last_error()}"
    message = last_error()
    assert message, "a failed call must leave a message"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ---- Library information ---------------------------------------------------------------------


def test_version_matches_cmake_project_and_header():
    cmake = (REPO / "CMakeLists.txt").read_text()
    project_version = re.search(r"project\(ttfs VERSION ([0-9.]+)", cmake).group(1)
    header = (REPO / "include" / "ttfs.h").read_text()
    parts = [re.search(rf"#define TTFS_VERSION_{p} (\d+)", header).group(1)
             for p in ("MAJOR", "MINOR", "PATCH")]
    assert lib.ttfs_version_string().decode() == project_version == ".".join(parts)
    assert pyttfs.version() == project_version
    assert lib.ttfs_abi_version() == int(re.search(r"#define TTFS_ABI_VERSION (\d+)", header).group(1))


def test_build_info_describes_this_build():
    info = pyttfs.build_info()
    assert "\n" not in info
    assert info.startswith(f"ttfs {pyttfs.version()} (ABI 1), ")
    compiled = lib.ttfs_cuda_compiled()
    assert compiled in (0, 1)
    assert f"CUDA compiled: {'yes' if compiled else 'no'}" in info
    assert f"devices: {pyttfs.cuda_device_count()}" in info
    assert lib.ttfs_build_info() == lib.ttfs_build_info()  # computed once, same text


def test_cuda_device_count_null_and_value():
    expect(lib.ttfs_cuda_device_count(None), Status.ERR_INVALID_ARGUMENT, "count")
    count = c_int32(-7)
    assert lib.ttfs_cuda_device_count(byref(count)) == Status.OK
    assert count.value >= 0
    if not lib.ttfs_cuda_compiled():
        assert count.value == 0


def test_status_names_follow_the_header():
    header = (REPO / "include" / "ttfs.h").read_text()
    declared = dict((name, int(value)) for name, value in
                    re.findall(r"^\s*(TTFS_(?:OK|ERR_\w+))\s*=\s*(\d+)", header, re.M))
    assert len(declared) == 25
    for name, value in declared.items():
        assert lib.ttfs_status_name(value).decode() == name
        assert Status(value).name == name[len("TTFS_"):]  # the Python enum mirrors the header
    for unknown in (-1, 13, 99, 112, 2**31 - 1):
        assert lib.ttfs_status_name(unknown) == b"unknown status"


def test_last_error_is_per_thread(tmp_path):
    missing = tmp_path / "main-thread-missing.ttfs"
    handle = c_void_p()
    assert lib.ttfs_model_load_file(os.fsencode(missing), byref(handle)) == Status.ERR_IO
    seen = {}

    def other_thread():
        seen["before"] = last_error()
        lib.ttfs_model_free(0xdead0)  # fails in this thread only
        seen["after"] = last_error()

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert seen["before"] == ""
    assert "0xdead0" in seen["after"]
    assert str(missing) in last_error()  # untouched by the other thread's failure


# ---- Loading -------------------------------------------------------------------------------------


def test_missing_file_is_io_error_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-model.ttfs"
    handle = c_void_p(0x1234)
    expect(lib.ttfs_model_load_file(os.fsencode(missing), byref(handle)), Status.ERR_IO,
           str(missing), "No such file")
    assert handle.value == 0x1234  # out is untouched on failure
    with pytest.raises(TtfsError) as raised:
        pyttfs.Model(missing)
    assert raised.value.code == Status.ERR_IO and raised.value.status == "TTFS_ERR_IO"
    assert str(missing) in raised.value.message


def test_directory_is_io_error(tmp_path):
    handle = c_void_p()
    expect(lib.ttfs_model_load_file(os.fsencode(tmp_path), byref(handle)), Status.ERR_IO,
           str(tmp_path))


def test_reader_errors_are_prefixed_with_the_path(tmp_path):
    short = tmp_path / "short.ttfs"
    short.write_bytes(b"TTFSNET\0" + bytes(10))
    handle = c_void_p()
    status = lib.ttfs_model_load_file(os.fsencode(short), byref(handle))
    assert status == Status.ERR_TRUNCATED_HEADER, last_error()
    assert last_error().startswith(f"{short}: ")
    empty = tmp_path / "empty.ttfs"
    empty.write_bytes(b"")
    assert lib.ttfs_model_load_file(os.fsencode(empty), byref(handle)) == Status.ERR_TRUNCATED_HEADER


def test_load_null_arguments(tiny_model_path):
    handle = c_void_p()
    expect(lib.ttfs_model_load_file(None, byref(handle)), Status.ERR_INVALID_ARGUMENT, "path")
    expect(lib.ttfs_model_load_file(os.fsencode(tiny_model_path), None),
           Status.ERR_INVALID_ARGUMENT, "out")
    expect(lib.ttfs_model_load_memory(None, 16, byref(handle)), Status.ERR_INVALID_ARGUMENT, "data")
    data = tiny_model_path.read_bytes()
    expect(lib.ttfs_model_load_memory(data, len(data), None), Status.ERR_INVALID_ARGUMENT, "out")
    # Zero bytes are a (truncated) file, not a NULL-pointer misuse.
    assert lib.ttfs_model_load_memory(None, 0, byref(handle)) == Status.ERR_TRUNCATED_HEADER


def test_load_memory_copies_the_bytes(tiny_model_path):
    data = bytearray(tiny_model_path.read_bytes())
    buffer = (ctypes.c_char * len(data)).from_buffer(data)
    handle = c_void_p()
    assert lib.ttfs_model_load_memory(buffer, len(data), byref(handle)) == Status.OK, last_error()
    data[:] = bytes(len(data))  # the caller keeps ownership; the model must not depend on it
    count = c_int32()
    assert lib.ttfs_model_layer_count(handle, byref(count)) == Status.OK
    assert count.value == len(TINY["layers"])
    info = LayerInfoStruct(struct_size=sizeof(LayerInfoStruct))
    assert lib.ttfs_model_layer_info(handle, 1, byref(info)) == Status.OK
    assert info.name == b"conv" and tuple(info.shape) == (6, 9, 4)
    assert lib.ttfs_model_free(handle) == Status.OK


def test_corrupt_bytes_from_memory_have_no_path_prefix(tiny_model_path):
    data = bytearray(tiny_model_path.read_bytes())
    data[0] ^= 0xFF
    handle = c_void_p()
    status = lib.ttfs_model_load_memory(bytes(data), len(data), byref(handle))
    assert status == Status.ERR_BAD_MAGIC, last_error()
    assert handle.value is None


# ---- Handles ---------------------------------------------------------------------------------------

MODEL_QUERIES = [
    ("ttfs_model_layer_count", lambda h: lib.ttfs_model_layer_count(h, byref(c_int32()))),
    ("ttfs_model_layer_info", lambda h: lib.ttfs_model_layer_info(
        h, 0, byref(LayerInfoStruct(struct_size=sizeof(LayerInfoStruct))))),
    ("ttfs_model_input_shape", lambda h: lib.ttfs_model_input_shape(h, (c_int32 * 3)())),
    ("ttfs_model_num_classes", lambda h: lib.ttfs_model_num_classes(h, byref(c_int32()))),
    ("ttfs_model_time_steps", lambda h: lib.ttfs_model_time_steps(h, byref(c_int32()))),
    ("ttfs_model_readout", lambda h: lib.ttfs_model_readout(h, byref(c_int32()))),
    ("ttfs_model_input_divisor", lambda h: lib.ttfs_model_input_divisor(h, byref(c_float()))),
    ("ttfs_model_metadata", lambda h: lib.ttfs_model_metadata(h, byref(c_char_p()))),
    ("ttfs_session_create", lambda h: lib.ttfs_session_create(h, CPU, STEPPED, 1, 0,
                                                              byref(c_void_p()))),
]

_images = np.zeros((1, 8, 10, 1), np.uint8)
SESSION_CALLS = [
    ("ttfs_session_backend", lambda h: lib.ttfs_session_backend(h, byref(c_int32()))),
    ("ttfs_session_engine", lambda h: lib.ttfs_session_engine(h, byref(c_int32()))),
    ("ttfs_session_set_threads", lambda h: lib.ttfs_session_set_threads(h, 1)),
    ("ttfs_session_run_u8", lambda h: run_u8(h, _images)),
    ("ttfs_session_run_f32", lambda h: lib.ttfs_session_run_f32(
        h, (c_float * 80)(), 80, 1, None, 0, None, 0)),
    ("ttfs_session_last_batch_size", lambda h: lib.ttfs_session_last_batch_size(h, byref(c_int32()))),
    ("ttfs_session_spike_times", lambda h: lib.ttfs_session_spike_times(h, 0, (c_int32 * 80)(), 80)),
    ("ttfs_session_spike_counts", lambda h: lib.ttfs_session_spike_counts(h, 0, (c_int32 * 4)(), 4)),
]


def _bad_handles(tiny_model_path):
    """NULL, a freed model, a freed session, and a pointer to real memory that is no handle."""
    model = load(tiny_model_path)
    freed_session = create(model)
    assert lib.ttfs_session_free(freed_session) == Status.OK
    assert lib.ttfs_model_free(model) == Status.OK
    not_a_handle = ctypes.create_string_buffer(256)
    return {"NULL": None, "freed model": model, "freed session": freed_session,
            "made-up": ctypes.addressof(not_a_handle), "odd value": 0x10}, not_a_handle


@pytest.mark.parametrize("name,call", MODEL_QUERIES, ids=[n for n, _ in MODEL_QUERIES])
def test_model_calls_refuse_bad_handles(name, call, tiny_model_path, tiny):
    bad, _keep = _bad_handles(tiny_model_path)
    for what, handle in bad.items():
        expect(call(handle), Status.ERR_INVALID_HANDLE, name, "model handle")
    live_session = create(tiny)
    try:
        expect(call(live_session), Status.ERR_INVALID_HANDLE, "is a session, not a model")
    finally:
        lib.ttfs_session_free(live_session)
    assert call(tiny) == Status.OK, last_error()  # and the call itself works


@pytest.mark.parametrize("name,call", SESSION_CALLS, ids=[n for n, _ in SESSION_CALLS])
def test_session_calls_refuse_bad_handles(name, call, tiny_model_path, tiny):
    bad, _keep = _bad_handles(tiny_model_path)
    for what, handle in bad.items():
        expect(call(handle), Status.ERR_INVALID_HANDLE, name, "session handle")
    expect(call(tiny), Status.ERR_INVALID_HANDLE, "is a model, not a session")


def test_free_null_is_ok_and_double_free_is_refused(tiny_model_path):
    assert lib.ttfs_model_free(None) == Status.OK
    assert lib.ttfs_session_free(None) == Status.OK
    model = load(tiny_model_path)
    session = create(model)
    assert lib.ttfs_session_free(session) == Status.OK
    expect(lib.ttfs_session_free(session), Status.ERR_INVALID_HANDLE, "nothing was freed")
    assert lib.ttfs_model_free(model) == Status.OK
    expect(lib.ttfs_model_free(model), Status.ERR_INVALID_HANDLE, "nothing was freed")


def test_freeing_with_the_wrong_kind_frees_nothing(tiny):
    session = create(tiny)
    expect(lib.ttfs_model_free(session), Status.ERR_INVALID_HANDLE, "ttfs_session_free")
    expect(lib.ttfs_session_free(tiny), Status.ERR_INVALID_HANDLE, "ttfs_model_free")
    backend = c_int32()
    assert lib.ttfs_session_backend(session, byref(backend)) == Status.OK  # still alive
    assert lib.ttfs_model_num_classes(tiny, byref(c_int32())) == Status.OK
    assert lib.ttfs_session_free(session) == Status.OK


# ---- NULL out-pointers ----------------------------------------------------------------------------


def test_null_out_pointers(tiny, session):
    calls = {
        "count": lambda: lib.ttfs_model_layer_count(tiny, None),
        "info": lambda: lib.ttfs_model_layer_info(tiny, 0, None),
        "shape": lambda: lib.ttfs_model_input_shape(tiny, None),
        "classes": lambda: lib.ttfs_model_num_classes(tiny, None),
        "time_steps": lambda: lib.ttfs_model_time_steps(tiny, None),
        "readout": lambda: lib.ttfs_model_readout(tiny, None),
        "divisor": lambda: lib.ttfs_model_input_divisor(tiny, None),
        "json": lambda: lib.ttfs_model_metadata(tiny, None),
        "out": lambda: lib.ttfs_session_create(tiny, CPU, STEPPED, 1, 0, None),
        "backend": lambda: lib.ttfs_session_backend(session, None),
        "engine": lambda: lib.ttfs_session_engine(session, None),
        "n": lambda: lib.ttfs_session_last_batch_size(session, None),
        "images": lambda: lib.ttfs_session_run_f32(session, None, 80, 1, None, 0, None, 0),
    }
    for name, call in calls.items():
        expect(call(), Status.ERR_INVALID_ARGUMENT, name, "NULL")
    expect(lib.ttfs_session_run_u8(session, None, 80, 1, None, 0, None, 0),
           Status.ERR_INVALID_ARGUMENT, "images")
    assert run_u8(session, tiny_images(1)) == Status.OK, last_error()
    expect(lib.ttfs_session_spike_times(session, 0, None, 80), Status.ERR_INVALID_ARGUMENT, "out")
    expect(lib.ttfs_session_spike_counts(session, 0, None, 1), Status.ERR_INVALID_ARGUMENT, "out")


# ---- Session creation --------------------------------------------------------------------------


@pytest.mark.parametrize("backend,engine,max_batch,flags,fragment", [
    (3, STEPPED, 1, 0, "backend = 3"),
    (-1, STEPPED, 1, 0, "backend = -1"),
    (CPU, 2, 1, 0, "engine = 2"),
    (CPU, -1, 1, 0, "engine = -1"),
    (CPU, STEPPED, 0, 0, "max_batch = 0"),
    (CPU, STEPPED, -5, 0, "max_batch = -5"),
    (CPU, STEPPED, 1, 8, "flags = 0x8"),
    (CPU, STEPPED, 1, 4, "TTFS_SESSION_RECORD_OUTPUT_TRACE needs the steps to record"),
    (CPU, STEPPED, 1, 0x80000001, "flags = 0x80000001"),
])
def test_session_create_rejects_bad_arguments(tiny, backend, engine, max_batch, flags, fragment):
    out = c_void_p(0x55)
    expect(lib.ttfs_session_create(tiny, backend, engine, max_batch, flags, byref(out)),
           Status.ERR_INVALID_ARGUMENT, fragment)
    assert out.value == 0x55


def test_absurd_max_batch_is_out_of_memory_not_a_crash(tiny):
    out = c_void_p()
    status = lib.ttfs_session_create(tiny, CPU, STEPPED, 2**31 - 1, RECORD, byref(out))
    assert status == Status.ERR_OUT_OF_MEMORY, last_error()
    assert last_error()


@pytest.mark.skipif(pyttfs.cuda_device_count() > 0, reason="a CUDA device is present")
def test_cuda_backend_without_a_device_is_unavailable_and_auto_uses_the_cpu(tiny):
    out = c_void_p()
    expect(lib.ttfs_session_create(tiny, CUDA, STEPPED, 1, 0, byref(out)),
           Status.ERR_BACKEND_UNAVAILABLE, "CUDA", "'cpu'")
    assert out.value is None
    session = create(tiny, backend=AUTO)
    backend = c_int32(-1)
    assert lib.ttfs_session_backend(session, byref(backend)) == Status.OK
    assert backend.value == CPU
    assert lib.ttfs_session_free(session) == Status.OK
    with pytest.raises(TtfsError) as raised:
        pyttfs.Model.from_bytes(to_bytes(tiny_spec())).session(backend="cuda")
    assert raised.value.status == "TTFS_ERR_BACKEND_UNAVAILABLE"


def test_analytic_engine_on_overlapping_windows_is_unsupported(tmp_path):
    rng = np.random.default_rng(3)
    layers = [input_layer(shape=(1, 1, 4), name="pixels"),
              dense("hidden", rng.normal(0.3, 0.2, (4, 3))),
              dense("out", rng.normal(0.0, 0.5, (3, 2)))]
    # T_s < T_d ("early firing"): each layer still integrates while it may already fire.
    spec = build_model(layers, time_steps=40, time_fire_start=5, time_fire_duration=10)
    path = tmp_path / "overlap.ttfs"
    write_model(spec, path)
    model = load(path)
    try:
        out = c_void_p()
        expect(lib.ttfs_session_create(model, CPU, ANALYTIC, 1, 0, byref(out)),
               Status.ERR_UNSUPPORTED, "hidden", "stepped")
        stepped = create(model, engine=STEPPED)  # the stepped engine takes any layout
        engine = c_int32(-1)
        assert lib.ttfs_session_engine(stepped, byref(engine)) == Status.OK
        assert engine.value == STEPPED
        lib.ttfs_session_free(stepped)
    finally:
        lib.ttfs_model_free(model)


# ---- Running ----------------------------------------------------------------------------------------


def test_run_rejects_bad_lengths_and_batch_sizes(session):
    images = tiny_images(4)
    predictions = np.full(4, -7, np.int32)
    potentials = np.full((4, 5), -7.0, np.float32)
    cases = [
        (dict(images_len=4 * 80 - 1), "images_len = 319", "4 * 8 * 10 * 1 = 320"),
        (dict(images_len=4 * 80 + 1), "images_len = 321", "320"),
        (dict(n=3), "images_len = 320", "3 * 8 * 10 * 1 = 240"),
        (dict(n=0, images_len=0), "n = 0"),
        (dict(n=-1, images_len=0), "n = -1"),
        (dict(predictions=predictions, predictions_len=3), "predictions_len = 3", "at least n = 4"),
        (dict(potentials=potentials, potentials_len=19), "potentials_len = 19", "20"),
    ]
    for kwargs, *fragments in cases:
        expect(run_u8(session, images, **kwargs), Status.ERR_INVALID_ARGUMENT, *fragments)
    five = tiny_images(5)
    expect(run_u8(session, five), Status.ERR_INVALID_ARGUMENT, "n = 5", "max_batch (4")
    # Nothing was written by the failed calls.
    assert (predictions == -7).all() and (potentials == -7.0).all()
    expect(lib.ttfs_session_last_batch_size(session, byref(c_int32())), Status.ERR_NO_RESULTS)


def test_run_writes_only_the_first_n_and_null_outputs_are_allowed(session, tiny_model_path):
    images = tiny_images(4)
    assert run_u8(session, images) == Status.OK, last_error()  # predictions/potentials NULL
    predictions = np.full(6, -7, np.int32)  # longer than needed: the tail stays untouched
    potentials = np.full((6, 5), -7.0, np.float32)
    assert run_u8(session, images[:2], predictions=predictions, potentials=potentials) == Status.OK
    assert (predictions[2:] == -7).all() and (potentials[2:] == -7.0).all()
    assert ((predictions[:2] >= 0) & (predictions[:2] < 5)).all()
    n = c_int32()
    assert lib.ttfs_session_last_batch_size(session, byref(n)) == Status.OK and n.value == 2


def test_results_through_the_abi_match_the_numpy_reference(tiny_model_path):
    """Plumbing check: predictions, potentials, every layer's spike times and counts land in the
    right buffers, for the right layer, in image-major HWC order."""
    import reference_numpy

    images = tiny_images(6, seed=11)
    expected = reference_numpy.simulate(tiny_spec(), images)
    with pyttfs.Model(tiny_model_path) as model, \
            model.session(backend="cpu", engine="stepped", max_batch=8,
                          record_spike_times=True) as session:
        result = session.run(images)
        np.testing.assert_array_equal(result.predictions, expected.predictions)
        np.testing.assert_array_equal(result.potentials, expected.potentials)
        for index, layer in enumerate(model.layers):
            if not layer.has_neurons:
                continue
            times = session.spike_times(index)
            np.testing.assert_array_equal(times, expected.spike_times[index], err_msg=layer.name)
            np.testing.assert_array_equal(session.spike_counts(layer.name),
                                          (expected.spike_times[index] >= 0).reshape(6, -1).sum(1))
    assert (expected.spike_times[1] >= 0).any(), "fixture too quiet to test anything"


def test_u8_input_is_divided_by_the_model_divisor(tiny_model_path):
    images = tiny_images(4, seed=5)
    scaled = images.astype(np.float32) / np.float32(TINY["divisor"])  # docs/ALGORITHM.md section 1
    with pyttfs.Model(tiny_model_path) as model, \
            model.session(backend="cpu", engine="stepped", max_batch=4,
                          record_spike_times=True) as session:
        from_bytes = session.run(images)
        times_u8 = session.spike_times("input")
        from_floats = session.run(scaled)
        np.testing.assert_array_equal(session.spike_times("input"), times_u8)
    np.testing.assert_array_equal(from_bytes.predictions, from_floats.predictions)
    np.testing.assert_array_equal(from_bytes.potentials, from_floats.potentials)


# ---- Spike queries ----------------------------------------------------------------------------------


def test_spike_queries_before_a_run_and_without_recording(tiny, session):
    out = (c_int32 * (4 * 80))()
    expect(lib.ttfs_session_spike_times(session, 0, out, len(out)), Status.ERR_NO_RESULTS, "run")
    expect(lib.ttfs_session_spike_counts(session, 0, out, len(out)), Status.ERR_NO_RESULTS)
    unrecorded = create(tiny, flags=0)
    try:
        assert run_u8(unrecorded, tiny_images(2)) == Status.OK, last_error()
        expect(lib.ttfs_session_spike_times(unrecorded, 1, out, len(out)), Status.ERR_NO_RESULTS,
               "TTFS_SESSION_RECORD_SPIKE_TIMES")
        counts = (c_int32 * 2)()
        assert lib.ttfs_session_spike_counts(unrecorded, 1, counts, 2) == Status.OK  # always kept
    finally:
        lib.ttfs_session_free(unrecorded)


def test_spike_queries_reject_layers_without_neurons_and_short_buffers(session):
    assert run_u8(session, tiny_images(3)) == Status.OK, last_error()
    big = (c_int32 * 1000)()
    for layer, kind in ((2, "maxpool"), (3, "flatten")):
        expect(lib.ttfs_session_spike_times(session, layer, big, 1000),
               Status.ERR_INVALID_ARGUMENT, kind, "no neurons")
        expect(lib.ttfs_session_spike_counts(session, layer, big, 1000),
               Status.ERR_INVALID_ARGUMENT, kind)
    for layer in (-1, 5, 1000):
        expect(lib.ttfs_session_spike_times(session, layer, big, 1000),
               Status.ERR_INVALID_ARGUMENT, f"layer = {layer}")
    # conv: 3 images x 6*9*4 neurons.
    expect(lib.ttfs_session_spike_times(session, 1, big, 647),
           Status.ERR_INVALID_ARGUMENT, "out_len = 647", "at least 648")
    assert lib.ttfs_session_spike_times(session, 1, big, 648) == Status.OK
    expect(lib.ttfs_session_spike_counts(session, 1, big, 2), Status.ERR_INVALID_ARGUMENT, "out_len = 2")


# ---- Model queries --------------------------------------------------------------------------------


def test_model_queries_equal_what_was_written(tiny):
    count = c_int32()
    assert lib.ttfs_model_layer_count(tiny, byref(count)) == Status.OK
    assert count.value == len(TINY["layers"])
    shape = (c_int32 * 3)()
    assert lib.ttfs_model_input_shape(tiny, shape) == Status.OK
    assert tuple(shape) == TINY["input_shape"]
    value = c_int32()
    assert lib.ttfs_model_num_classes(tiny, byref(value)) == Status.OK and value.value == 5
    assert lib.ttfs_model_time_steps(tiny, byref(value)) == Status.OK and value.value == 60
    assert lib.ttfs_model_readout(tiny, byref(value)) == Status.OK and value.value == 0  # vmem
    divisor = c_float()
    assert lib.ttfs_model_input_divisor(tiny, byref(divisor)) == Status.OK
    assert divisor.value == 255.0
    text = c_char_p()
    assert lib.ttfs_model_metadata(tiny, byref(text)) == Status.OK
    assert json.loads(text.value.decode()) == TINY["metadata"]

    kinds = {"input": 1, "conv2d": 2, "maxpool": 3, "flatten": 4, "dense": 5}
    # Integration constants chain from the neuron layer below (docs/ALGORITHM.md section 4).
    chained = {"input": (0.0, 0.0), "conv": (15.5, 0.0), "fc": (18.25, -1.5)}
    for index, (name, kind, depth, out_shape, kernel, stride, padding, pool_mode, integ,
                fire) in enumerate(TINY["layers"]):
        info = LayerInfoStruct(struct_size=sizeof(LayerInfoStruct))
        assert lib.ttfs_model_layer_info(tiny, index, byref(info)) == Status.OK, last_error()
        assert info.struct_size == sizeof(LayerInfoStruct)  # an input field, left alone
        assert info.name.decode() == name
        assert (info.kind, info.depth) == (kinds[kind], depth)
        assert tuple(info.shape) == out_shape
        assert tuple(info.kernel) == kernel and tuple(info.stride) == stride
        assert info.padding == (1 if padding == "same" else 0)
        assert info.pool_mode == (1 if pool_mode == "earliest" else 0)
        if name in TINY_NEURONS:
            neuron = TINY_NEURONS[name]
            assert (info.tau_fire, info.td_fire, info.vth0) == (
                neuron["tau_fire"], neuron["td_fire"], neuron["vth0"])
            assert (info.tau_integ, info.td_integ) == chained[name]
            assert tuple(info.integ_window) == integ and tuple(info.fire_window) == fire
        else:
            assert (info.tau_fire, info.td_fire, info.tau_integ, info.td_integ, info.vth0) == (0,) * 5
            assert tuple(info.integ_window) == (0, 0) and tuple(info.fire_window) == (0, 0)
    info = LayerInfoStruct(struct_size=sizeof(LayerInfoStruct))
    for bad in (-1, 5):
        expect(lib.ttfs_model_layer_info(tiny, bad, byref(info)), Status.ERR_INVALID_ARGUMENT,
               f"layer = {bad}")


def test_layer_info_honours_struct_size(tiny):
    size_of = sizeof(LayerInfoStruct)
    raw = (c_uint8 * (size_of + 32))()

    def query(struct_size: int) -> bytes:
        ctypes.memset(raw, 0xAB, len(raw))
        view = LayerInfoStruct.from_buffer(raw)
        view.struct_size = struct_size
        status = lib.ttfs_model_layer_info(tiny, 1, ctypes.cast(raw, POINTER(LayerInfoStruct)))
        assert status == Status.OK, last_error()
        return bytes(raw)

    # Too small to hold even struct_size and kind.
    for too_small in (0, 4, 7):
        ctypes.memset(raw, 0xAB, len(raw))
        LayerInfoStruct.from_buffer(raw).struct_size = too_small
        expect(lib.ttfs_model_layer_info(tiny, 1, ctypes.cast(raw, POINTER(LayerInfoStruct))),
               Status.ERR_INVALID_ARGUMENT, f"struct_size = {too_small}")
        assert bytes(raw)[4:] == b"\xab" * (len(raw) - 4)

    # An old caller that knows only struct_size, kind, depth and shape.
    old = LayerInfoStruct.kernel.offset
    written = query(old)
    assert written[old:] == b"\xab" * (len(raw) - old)
    view = LayerInfoStruct.from_buffer_copy(written[:size_of])
    assert (view.struct_size, view.kind, view.depth, tuple(view.shape)) == (old, 2, 1, (6, 9, 4))
    # A struct_size that ends inside a field does not get that field.
    partial = LayerInfoStruct.tau_fire.offset + 2
    assert query(partial)[LayerInfoStruct.tau_fire.offset:] == \
        b"\xab" * (len(raw) - LayerInfoStruct.tau_fire.offset)
    # A newer caller with a bigger struct: our fields are written, its extra ones are not.
    written = query(size_of + 32)
    assert written[size_of:] == b"\xab" * 32
    assert LayerInfoStruct.from_buffer_copy(written[:size_of]).name == b"conv"


def test_layer_names_stay_valid_while_the_model_lives(tiny):
    info = LayerInfoStruct(struct_size=sizeof(LayerInfoStruct))
    names = []
    for index in range(len(TINY["layers"])):
        assert lib.ttfs_model_layer_info(tiny, index, byref(info)) == Status.OK
        # The raw pointer (reading info.name would copy the text into a Python bytes).
        names.append(c_void_p.from_buffer(info, LayerInfoStruct.name.offset).value)
    assert [ctypes.string_at(p).decode() for p in names] == [row[0] for row in TINY["layers"]]


def test_dense_model_queries(dense_model_path):
    with pyttfs.Model(dense_model_path) as model:
        assert model.readout == DENSE["readout"]
        assert model.input_shape == DENSE["input_shape"]
        assert model.num_classes == DENSE["classes"]
        assert model.time_steps == DENSE["time_steps"]
        assert model.metadata == {}
        assert [layer.kind for layer in model.layers] == ["input", "dense"]
        assert model.layers[1].fire_window == (10, 20)


# ---- pyttfs on top ------------------------------------------------------------------------------------


def test_python_model_mirrors_the_file(tiny_model_path):
    with pyttfs.Model(tiny_model_path) as model:
        assert model.input_shape == TINY["input_shape"]
        assert model.num_classes == TINY["classes"]
        assert model.time_steps == TINY["time_steps"]
        assert model.readout == TINY["readout"]
        assert model.input_divisor == TINY["divisor"]
        assert model.metadata == TINY["metadata"]
        summary = [(l.name, l.kind, l.depth, l.shape, l.kernel, l.stride, l.padding, l.pool_mode)
                   for l in model.layers]
        assert summary == [row[:8] for row in TINY["layers"]]
        assert model.layers[4].tau_integ == 18.25 and model.layers[4].td_integ == -1.5
        assert model.layer_index("pool") == 2 and model.layer_index(-1) == 4
        with pytest.raises(ValueError, match="'nope'.*'conv'"):
            model.layer_index("nope")
        with pytest.raises(IndexError):
            model.layer_index(5)
        with pytest.raises(dataclasses_frozen_error()):
            model.layers[0].name = "renamed"
    assert model.closed
    with pytest.raises(ValueError, match="closed"):
        model.session()


def dataclasses_frozen_error():
    import dataclasses
    return dataclasses.FrozenInstanceError


def test_python_session_validates_inputs(tiny_model_path):
    with pyttfs.Model(tiny_model_path) as model, model.session(backend="cpu", max_batch=3) as s:
        assert (s.backend, s.engine) == ("cpu", "analytic")
        with pytest.raises(ValueError, match=r"\(n, 8, 10, 1\)"):
            s.run(np.zeros((2, 10, 8, 1), np.uint8))
        with pytest.raises(ValueError, match="dtype bool"):
            s.run(np.zeros((2, 8, 10, 1), bool))
        with pytest.raises(ValueError, match=r"int64 images must hold pixels 0\.\.255"):
            s.run(np.full((2, 8, 10, 1), 256, np.int64))
        with pytest.raises(ValueError, match="max_batch = 3"):
            s.run(np.zeros((4, 8, 10, 1), np.uint8))
        with pytest.raises(ValueError, match="1 to max_batch"):
            s.run(np.zeros((0, 8, 10, 1), np.uint8))
        one = s.run(tiny_images(1)[0])  # a single (h, w, c) image
        assert one.predictions.shape == (1,) and one.potentials.shape == (1, 5)
        assert one.predictions.dtype == np.int32 and one.potentials.dtype == np.float32
        # float64 input is converted, not rejected; non-contiguous input is copied.
        floats = (tiny_images(3).astype(np.float64) / 255.0)[:, ::-1, :, :]
        assert s.run(floats).predictions.shape == (3,)
        with pytest.raises(TtfsError) as raised:
            s.spike_times("conv")  # not recorded
        assert raised.value.code == Status.ERR_NO_RESULTS
        assert s.spike_counts("conv").shape == (3,)
        with pytest.raises(ValueError, match="backend"):
            model.session(backend="gpu")
        with pytest.raises(ValueError, match="engine"):
            model.session(engine="fast")
        with pytest.raises(ValueError, match="max_batch"):
            model.session(max_batch=0)
    s.close()  # idempotent
    assert s.closed
    with pytest.raises(ValueError, match="closed"):
        s.run(tiny_images(1))


def test_set_threads(tiny_model_path):
    with pyttfs.Model(tiny_model_path) as model, model.session(backend="cpu", threads=2) as s:
        s.set_threads(0)
        s.set_threads(1)
        # Checked in Python terms before ctypes could wrap the value into a C int32.
        with pytest.raises(ValueError, match="threads = -1"):
            s.set_threads(-1)
        with pytest.raises(ValueError, match="threads = 4294967297"):
            s.set_threads(2**32 + 1)  # would be 1 as a C int32
        # The library still refuses a negative count from a C caller.
        status = lib.ttfs_session_set_threads(s._handle, -1)
        assert status == Status.ERR_INVALID_ARGUMENT and "threads = -1" in last_error()


def test_model_from_bytes_and_error_attributes(tiny_model_path):
    data = tiny_model_path.read_bytes()
    with pyttfs.Model.from_bytes(data) as model:
        assert model.path is None and model.num_classes == 5
    with pytest.raises(TtfsError) as raised:
        pyttfs.Model.from_bytes(data[:-1])
    error = raised.value
    assert isinstance(error.code, int) and error.code >= 100  # a file rejection
    assert error.status == lib.ttfs_status_name(error.code).decode()
    assert str(error).startswith(error.status + ": ") and error.message


def test_objects_left_open_at_interpreter_exit_are_harmless(tiny_model_path):
    script = (
        "import pyttfs, numpy as np\n"
        f"m = pyttfs.Model({str(tiny_model_path)!r})\n"
        "s = m.session(backend='cpu', max_batch=2)\n"
        "s.run(np.zeros((2, 8, 10, 1), np.uint8))\n"
        "cycle = [m, s]; cycle.append(cycle)\n"  # freed by the final garbage collection
        "print('done')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done" and result.stderr == ""


# ---- Loader -------------------------------------------------------------------------------------------


def test_missing_library_names_every_place_looked(tmp_path):
    missing = tmp_path / "nowhere" / "libttfs.so"
    env = dict(os.environ, TTFS_LIBRARY=str(missing))
    result = subprocess.run([sys.executable, "-c", "import pyttfs"], capture_output=True,
                            text=True, cwd=REPO, env=env, timeout=60)
    assert result.returncode != 0
    assert "LibraryError" in result.stderr and str(missing) in result.stderr
    assert "cmake" in result.stderr  # says how to build it


def test_abi_mismatch_is_refused():
    from pyttfs import _lib

    class OtherLibrary:
        @staticmethod
        def ttfs_abi_version():
            return _lib.ABI_VERSION + 1

        @staticmethod
        def ttfs_version_string():
            return b"9.9.9"

    with pytest.raises(_lib.LibraryError, match="ABI version 2"):
        _lib._check_abi(OtherLibrary(), Path("/somewhere/libttfs.so"))
    assert issubclass(_lib.LibraryError, OSError)


def test_every_header_function_has_a_prototype():
    header = (REPO / "include" / "ttfs.h").read_text()
    declared = set(re.findall(r"TTFS_API\s+[\w\s\*]+?\b(ttfs_\w+)\s*\(", header))
    from pyttfs import _lib
    assert declared == {name for name, _, _ in _lib._PROTOTYPES}
    for name in declared:
        assert getattr(lib, name).argtypes is not None, name


def test_cli_info():
    result = subprocess.run([sys.executable, "-m", "pyttfs", "info"], capture_output=True,
                            text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"pyttfs {pyttfs.version()}" in result.stdout
    assert pyttfs.build_info() in result.stdout


def test_relative_library_path_is_taken_from_the_working_directory(tmp_path):
    library = Path(pyttfs.library_path)
    env = dict(os.environ, TTFS_LIBRARY=os.path.relpath(library, tmp_path),
               PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", "import pyttfs; print(pyttfs.library_path)"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == library.resolve()


def test_metadata_that_is_not_json_still_loads():
    spec = dense_spec()
    spec.metadata = "made by hand, not JSON"
    with pytest.warns(UserWarning, match="not valid JSON"):
        model = pyttfs.Model.from_bytes(to_bytes(spec))
    with model:
        assert model.metadata == {} and model.metadata_json == "made by hand, not JSON"
