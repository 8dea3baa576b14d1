"""Input values, dtypes and shapes: the C ABI's checks (ttfs_session_run_f32) and pyttfs's rules,
with messages in each caller's terms.

Expectations are hand-written: which values are refused, where, and what the message names.
Where inputs are accepted, the results are compared with the same images given as uint8 (the
library's own, long-tested path) or with the numpy reference simulator.
"""
from __future__ import annotations

from ctypes import POINTER, byref, c_float, c_int32, c_void_p

import numpy as np
import pytest

import pyttfs
from conftest import TINY, tiny_images, tiny_spec
from pyttfs import Status, TtfsError, lib

CPU, STEPPED, ANALYTIC = 1, 0, 1
ALLOW_UNSCALED = 2


def last_error() -> str:
    return lib.ttfs_last_error().decode()


@pytest.fixture
def tiny_session(tiny_model_path):
    model = c_void_p()
    assert lib.ttfs_model_load_file(str(tiny_model_path).encode(), byref(model)) == Status.OK

    def make(flags=0, max_batch=4):
        session = c_void_p()
        status = lib.ttfs_session_create(model, CPU, STEPPED, max_batch, flags, byref(session))
        assert status == Status.OK, last_error()
        made.append(session)
        return session

    made = []
    yield make
    for session in made:
        lib.ttfs_session_free(session)
    lib.ttfs_model_free(model)


def run_f32(session, images):
    images = np.ascontiguousarray(images, np.float32)
    predictions = np.full(len(images), -7, np.int32)
    status = lib.ttfs_session_run_f32(session, images.ctypes.data_as(POINTER(c_float)), images.size,
                                      len(images), predictions.ctypes.data_as(POINTER(c_int32)),
                                      predictions.size, None, 0)
    return status, predictions


# ---- The C ABI ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, place, words", [
    (np.nan, (2, 7, 9, 0), ["image 2, pixel (h 7, w 9, c 0) = nan", "finite"]),
    (np.inf, (0, 0, 0, 0), ["image 0, pixel (h 0, w 0, c 0) = inf", "finite"]),
    (-np.inf, (1, 3, 4, 0), ["image 1, pixel (h 3, w 4, c 0) = -inf"]),
    (255.0, (3, 5, 1, 0), ["image 3, pixel (h 5, w 1, c 0) = 255", "[0, 1]",
                           "TTFS_SESSION_ALLOW_UNSCALED", "ttfs_session_run_u8"]),
    (1.0000001, (0, 1, 1, 0), ["= 1.00000012", "[0, 1]"]),
    (-1e-7, (0, 1, 2, 0), ["= -1.00000001e-07", "[0, 1]"]),
])
def test_run_f32_refuses_values_it_cannot_code(tiny_session, value, place, words):
    session = tiny_session()
    images = tiny_images(4).astype(np.float32) / 255
    images[place] = value
    status, predictions = run_f32(session, images)
    assert status == Status.ERR_BAD_INPUT, last_error()
    assert lib.ttfs_status_name(status) == b"TTFS_ERR_BAD_INPUT"
    for word in words:
        assert word in last_error(), (word, last_error())
    assert last_error().startswith("ttfs_session_run_f32: ")
    assert (predictions == -7).all()  # nothing ran, nothing was written


def test_the_edges_of_the_range_are_accepted(tiny_session):
    session = tiny_session()
    images = np.zeros((2, 8, 10, 1), np.float32)
    images[1] = 1.0
    status, _ = run_f32(session, images)
    assert status == Status.OK, last_error()


def test_allow_unscaled_accepts_finite_values_only(tiny_session):
    session = tiny_session(flags=ALLOW_UNSCALED)
    images = tiny_images(4).astype(np.float32)  # 0..255, not divided
    status, predictions = run_f32(session, images)
    assert status == Status.OK, last_error()
    images[1, 2, 3, 0] = np.nan
    status, _ = run_f32(session, images)
    assert status == Status.ERR_BAD_INPUT and "finite" in last_error()
    # Unscaled values really run as given: the numpy reference on the same floats agrees.
    import reference_numpy

    ok = tiny_images(4).astype(np.float32)
    status, predictions = run_f32(session, ok)
    expected = reference_numpy.simulate(tiny_spec(), ok)
    np.testing.assert_array_equal(predictions, expected.predictions)


def test_u8_runs_are_never_refused(tiny_session):
    session = tiny_session()
    images = np.full((4, 8, 10, 1), 255, np.uint8)
    from ctypes import c_uint8
    status = lib.ttfs_session_run_u8(session, images.ctypes.data_as(POINTER(c_uint8)), images.size,
                                     4, None, 0, None, 0)
    assert status == Status.OK, last_error()


# ---- pyttfs: dtypes, shapes, ranges ------------------------------------------------------------

@pytest.fixture
def session(tiny_model_path):
    with pyttfs.Model(tiny_model_path) as model, \
            model.session(backend="cpu", engine="stepped", max_batch=6) as s:
        yield s


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint32,
                                   np.uint64])
def test_integer_pixels_of_any_type_equal_uint8(session, dtype):
    images = tiny_images(5, seed=9)
    expected = session.run(images)
    got = session.run(images.astype(dtype) if np.iinfo(dtype).max >= 255
                      else np.minimum(images, 127).astype(dtype))
    if np.iinfo(dtype).max >= 255:
        np.testing.assert_array_equal(got.potentials, expected.potentials)
    else:  # int8 cannot hold 128..255: those images are different images
        np.testing.assert_array_equal(
            got.potentials, session.run(np.minimum(images, 127)).potentials)


@pytest.mark.parametrize("value, index", [(256, (1, 2, 3, 0)), (-1, (0, 0, 0, 0)),
                                          (70000, (4, 7, 9, 0))])
def test_integer_pixels_out_of_range(session, value, index):
    images = tiny_images(5).astype(np.int32)
    images[index] = value
    with pytest.raises(ValueError) as raised:
        session.run(images)
    message = str(raised.value)
    assert message.startswith("Session.run: ")
    assert f"images{list(index)} = {value}" in message and "0..255" in message


def test_one_channel_shapes(session):
    images = tiny_images(3, seed=2)
    expected = session.run(images)
    np.testing.assert_array_equal(session.run(images[..., 0]).potentials, expected.potentials)
    np.testing.assert_array_equal(session.run(images[1, :, :, 0]).potentials,
                                  expected.potentials[1:2])
    np.testing.assert_array_equal(session.run(images[1]).potentials, expected.potentials[1:2])
    with pytest.raises(ValueError, match=r"\(n, 8, 10, 1\).*\(n, 8, 10\) or \(8, 10\)"):
        session.run(images[:, :, :5])


def test_three_channel_models_refuse_two_dimensional_images(tmp_path):
    from export.ttfs_format import build_model, dense, flatten, input_layer, write_model

    rng = np.random.default_rng(1)
    path = tmp_path / "rgb.ttfs"
    write_model(build_model([input_layer((2, 3, 3)), flatten(), dense("fc", rng.normal(0, .3, (18, 2)))],
                            time_steps=160), path)
    with pyttfs.Model(path) as model, model.session(backend="cpu") as s:
        assert s.run(np.zeros((2, 3, 3), np.uint8)).predictions.shape == (1,)
        with pytest.raises(ValueError, match=r"expected \(n, 2, 3, 3\) or \(2, 3, 3\) for one image$"):
            s.run(np.zeros((4, 2, 3), np.uint8))


@pytest.mark.parametrize("value, words", [
    (np.nan, ["images[2, 1, 4, 0] = nan", "finite"]),
    (np.inf, ["images[2, 1, 4, 0] = inf", "finite"]),
    (3.0, ["images[2, 1, 4, 0] = 3", "[0, 1]", "divided by 255", "allow_unscaled=True",
           "pass uint8 pixels"]),
    (-0.25, ["images[2, 1, 4, 0] = -0.25", "[0, 1]"]),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_values_out_of_range_are_refused_in_python_terms(session, value, words, dtype):
    images = (tiny_images(4) / 255).astype(dtype)
    images[2, 1, 4, 0] = value
    with pytest.raises(ValueError) as raised:
        session.run(images)
    message = str(raised.value)
    assert message.startswith("Session.run: ")
    for word in words:
        assert word in message, (word, message)
    assert "TTFS_" not in message and "ttfs_" not in message


def test_allow_unscaled_in_python(tiny_model_path):
    images = tiny_images(4, seed=8).astype(np.float32)  # 0..255 floats
    with pyttfs.Model(tiny_model_path) as model:
        with model.session(backend="cpu", allow_unscaled=True) as s:
            unscaled = s.run(images)
            images_nan = images.copy()
            images_nan[0, 0, 0, 0] = np.nan
            with pytest.raises(ValueError, match="finite"):
                s.run(images_nan)
        with model.session(backend="cpu") as s:
            scaled = s.run(images / 255)
    # The classic mistake changes the answers: that is why it is refused by default.
    assert not np.array_equal(unscaled.potentials, scaled.potentials)


def test_errors_name_python_arguments(tiny_model_path):
    with pyttfs.Model(tiny_model_path) as model, model.session(backend="cpu") as s:
        with pytest.raises(TtfsError) as raised:
            s.spike_counts("conv")  # before any run
        assert "Session.run" in raised.value.message and "ttfs_" not in raised.value.message
        s.run(tiny_images(2))
        with pytest.raises(TtfsError) as raised:
            s.spike_times("conv")
        assert raised.value.code == Status.ERR_NO_RESULTS
        assert "record_spike_times=True" in raised.value.message
        assert "TTFS_SESSION" not in raised.value.message
        with pytest.raises(ValueError, match=r"\('pool'\) is a maxpool layer"):
            s.spike_counts("pool")
        with pytest.raises(ValueError, match=r"Session.run: a batch of 65 images.*max_batch = 64"):
            s.run(np.zeros((65, 8, 10, 1), np.uint8))


@pytest.mark.parametrize("max_batch", [0, -1, 2**31, 2**32 + 1])
def test_max_batch_is_range_checked_before_it_can_wrap(tiny_model_path, max_batch):
    # 2**32 + 1 would reach C as 1 through ctypes' silent truncation.
    with pyttfs.Model(tiny_model_path) as model:
        with pytest.raises(ValueError, match=f"max_batch = {max_batch}; expected an integer from 1 "
                                             f"to {2**31 - 1}"):
            model.session(max_batch=max_batch)
        with pytest.raises(TypeError, match="max_batch"):
            model.session(max_batch=2.0)


@pytest.mark.parametrize("threads", [-1, 2**31, 2**32])
def test_threads_are_range_checked_before_they_can_wrap(tiny_model_path, threads):
    with pyttfs.Model(tiny_model_path) as model:
        with pytest.raises(ValueError, match=f"threads = {threads}"):
            model.session(threads=threads)


def test_a_huge_max_batch_is_refused_in_python_terms(tiny_model_path):
    with pyttfs.Model(tiny_model_path) as model:
        with pytest.raises(TtfsError) as raised:
            model.session(max_batch=2**31 - 1, record_spike_times=True)
    assert raised.value.code == Status.ERR_OUT_OF_MEMORY
    assert raised.value.message.startswith("Model.session: ")
    assert "record_spike_times" not in raised.value.message or "ttfs_" not in raised.value.message


def test_session_run_prepare_keeps_uint8_and_floats(session):
    assert session.prepare(tiny_images(2)).dtype == np.uint8
    assert session.prepare(tiny_images(2).astype(np.uint16)).dtype == np.uint8
    assert session.prepare(tiny_images(2) / 255.0).dtype == np.float32
    assert session.prepare(tiny_images(2)[..., 0]).shape == (2,) + TINY["input_shape"]
