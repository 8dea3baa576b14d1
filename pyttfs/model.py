"""Model and Session: numpy in, numpy out, over the C ABI (include/ttfs.h)."""
from __future__ import annotations

import json
import os
import warnings
from ctypes import POINTER, byref, c_char_p, c_float, c_int32, c_uint8, c_void_p, sizeof
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from ._lib import (
    ALLOW_UNSCALED,
    RECORD_OUTPUT_TRACE,
    RECORD_SPIKE_TIMES,
    Backend,
    Engine,
    LayerInfoStruct,
    LayerKind,
    SessionOptionsStruct,
    SessionRequirementsStruct,
    Status,
    TtfsError,
    _check,
    lib,
)

INT32_MAX = 2**31 - 1

# The library words its messages for C callers; pyttfs callers get them in Python terms.
_PYTHON_TERMS = [
    ("ttfs_session_create_ex", "Model.session"),
    ("raise ttfs_session_options.max_memory_bytes (pyttfs: max_memory_bytes=)",
     "raise Model.session's max_memory_bytes"),
    ("raise ttfs_session_options.max_work_per_image (pyttfs: max_work_per_image=)",
     "raise Model.session's max_work_per_image"),
    ("ttfs_session_create", "Model.session"),
    ("ttfs_session_run_f32", "Session.run"),
    ("ttfs_session_run_u8", "Session.run"),
    ("ttfs_session_spike_times", "Session.spike_times"),
    ("ttfs_session_spike_counts", "Session.spike_counts"),
    ("ttfs_session_output_trace", "Session.output_trace"),
    ("options->output_trace_count", "the number of output_trace_steps"),
    ("options->output_trace_steps", "output_trace_steps"),
    ("ttfs_session_set_threads", "Session.set_threads"),
    ("ttfs_session_last_batch_size", "Session.last_batch_size"),
    ("create the session with TTFS_SESSION_ALLOW_UNSCALED",
     "create the session with allow_unscaled=True"),
    ("create it with the flag TTFS_SESSION_RECORD_SPIKE_TIMES",
     "create it with record_spike_times=True"),
    ("TTFS_SESSION_RECORD_SPIKE_TIMES", "record_spike_times=True"),
    ("TTFS_SESSION_ALLOW_UNSCALED", "allow_unscaled=True"),
    ("the flag TTFS_SESSION_RECORD_OUTPUT_TRACE and output_trace_steps", "output_trace_steps=[...]"),
    ("TTFS_SESSION_RECORD_OUTPUT_TRACE", "output_trace_steps"),
    ("pass uint8 pixels to ttfs_session_run_u8", "pass uint8 pixels"),
    ("(ttfs_session_run_f32/ttfs_session_run_u8)", "(Session.run)"),
]


def _python_terms(message: str) -> str:
    for c_words, python_words in _PYTHON_TERMS:
        message = message.replace(c_words, python_words)
    return message


def _check_py(code: int) -> None:
    """_check, with the library's message reworded for Python callers."""
    try:
        _check(code)
    except TtfsError as error:
        raise TtfsError(error.code, error.status, _python_terms(error.message)) from None


def _int_in_range(value, name: str, low: int, high: int, meaning: str = "") -> int:
    """An int argument checked before ctypes can silently wrap it into a C int32."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} = {value!r}; expected an integer{meaning}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} = {value!r}; expected an integer from {low} to {high}{meaning}")
    return int(value)

_KIND_NAMES = {
    LayerKind.INPUT: "input",
    LayerKind.CONV2D: "conv2d",
    LayerKind.MAXPOOL: "maxpool",
    LayerKind.FLATTEN: "flatten",
    LayerKind.DENSE: "dense",
}
_PADDING_NAMES = {0: "valid", 1: "same"}
_POOL_MODE_NAMES = {0: "or", 1: "earliest", 2: "gated"}
_READOUT_NAMES = {0: "vmem", 1: "first_spike"}
_BACKENDS = {"auto": Backend.AUTO, "cpu": Backend.CPU, "cuda": Backend.CUDA}
_ENGINES = {"stepped": Engine.STEPPED, "analytic": Engine.ANALYTIC}


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a model as the library read it from the file.

    kernel/stride/padding apply to conv2d and maxpool (kernel (0, 0) and padding None
    otherwise); pool_mode to maxpool only (None otherwise). The neuron constants and windows are
    0 for maxpool and flatten, which have no neurons. Windows are [start, end) in global steps.
    """

    name: str
    kind: str
    depth: int
    shape: tuple  # output (h, w, c)
    kernel: tuple
    stride: tuple
    padding: Optional[str]
    pool_mode: Optional[str]
    tau_fire: float
    td_fire: float
    tau_integ: float
    td_integ: float
    vth0: float
    integ_window: tuple
    fire_window: tuple

    @property
    def size(self) -> int:
        h, w, c = self.shape
        return h * w * c

    @property
    def has_neurons(self) -> bool:
        return self.kind in ("input", "conv2d", "dense")


@dataclass(frozen=True)
class Result:
    """One run's outputs: predictions (n,) int32 class indices and potentials (n, classes)
    float32 output-layer membrane potentials at the last time step."""

    predictions: np.ndarray
    potentials: np.ndarray


@dataclass(frozen=True)
class Requirements:
    """What a session was sized for, and the limits it was created under (docs/C_API.md,
    "Limits"): memory_bytes with the worker threads a full batch uses by default, an upper
    bound on the basic operations per image, and the CPU worker threads the memory limit has
    room for."""

    memory_bytes: int
    work_per_image: int
    max_workers: int
    max_memory_bytes: int
    max_work_per_image: int


def _int_out(function, handle) -> int:
    value = c_int32()
    _check(function(handle, byref(value)))
    return value.value


def _choice(value, table: dict, what: str) -> int:
    if isinstance(value, str) and value.lower() in table:
        return int(table[value.lower()])
    if isinstance(value, int) and value in table.values():
        return int(value)
    raise ValueError(f"{what} = {value!r}; expected one of {', '.join(map(repr, table))}")


class _Closing:
    """close() (defined by each subclass) on leaving a with-block and when garbage-collected."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # never raise from a finaliser (e.g. at interpreter exit)
            pass


class Model(_Closing):
    """A validated model file. Immutable; any number of sessions (and threads) may share it.

    Model(path) loads a .ttfs file; Model.from_bytes(data) loads one from memory.
    """

    def __init__(self, path: Union[str, os.PathLike]):
        handle = c_void_p()
        _check(lib.ttfs_model_load_file(os.fsencode(path), byref(handle)))
        self._adopt(handle, os.fspath(path))

    @classmethod
    def from_bytes(cls, data) -> "Model":
        payload = bytes(data)  # the library copies; this keeps the buffer alive for the call
        handle = c_void_p()
        _check(lib.ttfs_model_load_memory(payload, len(payload), byref(handle)))
        model = cls.__new__(cls)
        model._adopt(handle, None)
        return model

    def _adopt(self, handle: c_void_p, path: Optional[str]) -> None:
        self._handle = handle.value
        self._free = lib.ttfs_model_free  # kept so __del__ works while the interpreter exits
        self.path = path
        # Everything a model says about itself is fixed, so it is read once, here.
        count = _int_out(lib.ttfs_model_layer_count, self._handle)
        self.layers = [self._layer(i) for i in range(count)]
        shape = (c_int32 * 3)()
        _check(lib.ttfs_model_input_shape(self._handle, shape))
        self.input_shape = tuple(shape)
        self.num_classes = _int_out(lib.ttfs_model_num_classes, self._handle)
        self.time_steps = _int_out(lib.ttfs_model_time_steps, self._handle)
        self.readout = _READOUT_NAMES[_int_out(lib.ttfs_model_readout, self._handle)]
        divisor = c_float()
        _check(lib.ttfs_model_input_divisor(self._handle, byref(divisor)))
        self.input_divisor = divisor.value
        text = c_char_p()
        _check(lib.ttfs_model_metadata(self._handle, byref(text)))
        raw = (text.value or b"").decode("utf-8", errors="replace")
        self.metadata_json = raw
        self.metadata = {}
        if raw.strip():
            # Free-form information for people; a model whose metadata is not JSON still runs.
            try:
                self.metadata = json.loads(raw)
            except ValueError as error:
                warnings.warn(f"{path or 'model'}: metadata is not valid JSON ({error}); the raw "
                              "text is in Model.metadata_json", stacklevel=3)

    def _layer(self, index: int) -> LayerInfo:
        info = LayerInfoStruct()
        info.struct_size = sizeof(LayerInfoStruct)
        _check(lib.ttfs_model_layer_info(self._handle, index, byref(info)))
        kind = _KIND_NAMES.get(info.kind, str(info.kind))
        windowed = kind in ("conv2d", "maxpool")
        return LayerInfo(
            name=info.name.decode("utf-8"),
            kind=kind,
            depth=info.depth,
            shape=tuple(info.shape),
            kernel=tuple(info.kernel),
            stride=tuple(info.stride),
            padding=_PADDING_NAMES.get(info.padding) if windowed else None,
            pool_mode=_POOL_MODE_NAMES.get(info.pool_mode) if kind == "maxpool" else None,
            tau_fire=info.tau_fire,
            td_fire=info.td_fire,
            tau_integ=info.tau_integ,
            td_integ=info.td_integ,
            vth0=info.vth0,
            integ_window=tuple(info.integ_window),
            fire_window=tuple(info.fire_window),
        )

    @property
    def closed(self) -> bool:
        return self._handle is None

    def layer_index(self, layer: Union[int, str]) -> int:
        """The index of a layer given by index (negative counts from the end) or by name."""
        return _layer_index(self.layers, layer)

    def session(self, backend: str = "auto", engine: str = "analytic", max_batch: int = 64,
                record_spike_times: bool = False, threads: int = 0,
                allow_unscaled: bool = False, max_memory_bytes: Optional[int] = None,
                max_work_per_image: Optional[int] = None,
                output_trace_steps=None) -> "Session":
        """A session running this model. backend: "auto" (CUDA when a device is present, else
        CPU), "cpu" or "cuda"; engine: "analytic" or "stepped" (any window layout);
        allow_unscaled: accept float inputs outside [0, 1] (see Session.run).
        max_memory_bytes, max_work_per_image: the session's limits (None: the library's
        defaults, 8 GiB and 2^34 operations per image; docs/C_API.md "Limits"); a session that
        would exceed them is refused with TtfsError ERR_LIMIT, whose message has the numbers.
        output_trace_steps: steps after which the output layer's potentials are recorded
        (strictly increasing, in [0, time_steps)); Session.output_trace() returns them."""
        return Session(self, backend=backend, engine=engine, max_batch=max_batch,
                       record_spike_times=record_spike_times, threads=threads,
                       allow_unscaled=allow_unscaled, max_memory_bytes=max_memory_bytes,
                       max_work_per_image=max_work_per_image,
                       output_trace_steps=output_trace_steps)

    def close(self) -> None:
        """Frees the library's model. Sessions made from it keep working."""
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            self._free(handle)

    def __repr__(self) -> str:
        source = self.path if self.path is not None else "<memory>"
        return (f"Model({source!r}, input_shape={self.input_shape}, classes={self.num_classes}, "
                f"layers={len(self.layers)}, readout={self.readout!r})")


def prepare_images(images, input_shape) -> np.ndarray:
    """images (any accepted dtype and shape) -> contiguous (n, h, w, c) uint8 or float32."""
    array = np.asarray(images)
    h, w, c = (int(v) for v in input_shape)
    given = array.shape
    if array.dtype == np.uint8:
        pass
    elif array.dtype.kind in "iu":
        if array.size:
            low, high = array.min(), array.max()
            if low < 0 or high > 255:
                bad = tuple(int(i) for i in np.argwhere((array < 0) | (array > 255))[0])
                raise ValueError(
                    f"Session.run: images{list(bad)} = {array[bad]}; {array.dtype} images must "
                    f"hold pixels 0..255 (found {low}..{high}): scale them to 0..255, or pass "
                    "floats in [0, 1]")
        array = array.astype(np.uint8)
    elif array.dtype.kind == "f":
        array = array.astype(np.float32, copy=False)
    else:
        raise ValueError(f"Session.run: images have dtype {array.dtype}; expected uint8 pixels, "
                         "another integer type holding 0..255, or floats in [0, 1]")
    if array.shape == (h, w, c):
        array = array[np.newaxis]
    elif c == 1 and array.shape == (h, w):
        array = array[np.newaxis, :, :, np.newaxis]
    elif c == 1 and array.ndim == 3 and array.shape[1:] == (h, w):
        array = array[..., np.newaxis]
    elif not (array.ndim == 4 and array.shape[1:] == (h, w, c)):
        one_channel = f", (n, {h}, {w}) or ({h}, {w})" if c == 1 else ""
        raise ValueError(f"Session.run: images have shape {given}; expected (n, {h}, {w}, {c}) "
                         f"or ({h}, {w}, {c}) for one image{one_channel}")
    return np.ascontiguousarray(array)


def _bad_value_message(array: np.ndarray, allow_unscaled: bool, divisor: float) -> str:
    """Names the first value the library refused (ERR_BAD_INPUT), in Session.run's terms."""
    finite = np.isfinite(array)
    bad = ~finite if allow_unscaled else ~(finite & (array >= 0) & (array <= 1))
    where = np.argwhere(bad)
    if not len(where):  # the library and numpy disagree: report the library's words
        return "Session.run: " + _python_terms(
            lib.ttfs_last_error().decode(errors="replace"))
    index = tuple(int(i) for i in where[0])
    value = array[index]
    if not np.isfinite(value):
        return (f"Session.run: images{list(index)} = {value}; every input value must be a "
                "finite number (check how the images were decoded or normalised)")
    return (f"Session.run: images{list(index)} = {value:g}; float images must be scaled to "
            f"[0, 1] (pixels divided by {divisor:g}): divide them, pass uint8 pixels, or "
            "create the session with allow_unscaled=True to run them as they are")


def _trace_steps(steps) -> np.ndarray:
    """output_trace_steps as the contiguous int32 array the library reads; the library checks
    the values (range, order, count) and names the bad one."""
    array = np.asarray(steps)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"output_trace_steps has shape {array.shape}; expected a non-empty "
                         "sequence of steps (strictly increasing, in [0, time_steps))")
    if array.dtype.kind not in "iu":
        raise TypeError(f"output_trace_steps has dtype {array.dtype}; expected integer steps")
    if array.min() < -2**31 or array.max() > INT32_MAX:
        raise ValueError(f"output_trace_steps holds {array.min()} .. {array.max()}; expected "
                         "steps in [0, time_steps)")
    return np.ascontiguousarray(array, dtype=np.int32)


def _layer_index(layers: list, layer: Union[int, str]) -> int:
    if isinstance(layer, str):
        for index, info in enumerate(layers):
            if info.name == layer:
                return index
        names = ", ".join(repr(info.name) for info in layers)
        raise ValueError(f"no layer named {layer!r}; the model's layers are {names}")
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        index = int(layer)
        if -len(layers) <= index < len(layers):
            return index % len(layers)
        raise IndexError(f"layer index {index} out of range for a model with {len(layers)} layers")
    raise TypeError(f"layer must be an index or a name, not {type(layer).__name__}")


class Session(_Closing):
    """Runs a model on one backend. Use it from one thread at a time; create one per thread
    (they may share the Model). A call that finds it busy raises TtfsError ERR_BUSY."""

    def __init__(self, model: Model, backend: str = "auto", engine: str = "analytic",
                 max_batch: int = 64, record_spike_times: bool = False, threads: int = 0,
                 allow_unscaled: bool = False, max_memory_bytes: Optional[int] = None,
                 max_work_per_image: Optional[int] = None, output_trace_steps=None):
        self._handle = None
        self._free = lib.ttfs_session_free  # kept so __del__ works while the interpreter exits
        if model.closed:
            raise ValueError("the model is closed; create sessions before Model.close()")
        backend_code = _choice(backend, _BACKENDS, "backend")
        engine_code = _choice(engine, _ENGINES, "engine")
        max_batch = _int_in_range(max_batch, "max_batch", 1, INT32_MAX)
        threads = _int_in_range(threads, "threads", 0, INT32_MAX,
                                " (0 = one per hardware thread)")
        options = SessionOptionsStruct(struct_size=sizeof(SessionOptionsStruct))
        options.flags = (RECORD_SPIKE_TIMES if record_spike_times else 0) | \
            (ALLOW_UNSCALED if allow_unscaled else 0)
        for name, value in (("max_memory_bytes", max_memory_bytes),
                            ("max_work_per_image", max_work_per_image)):
            if value is not None:
                setattr(options, name, _int_in_range(value, name, 1, 2 ** 64 - 1, " (None: the default)"))
        trace_steps = None
        if output_trace_steps is not None:
            trace_steps = _trace_steps(output_trace_steps)
            options.flags |= RECORD_OUTPUT_TRACE
            options.output_trace_steps = trace_steps.ctypes.data_as(POINTER(c_int32))
            options.output_trace_count = trace_steps.size
        handle = c_void_p()
        _check_py(lib.ttfs_session_create_ex(model._handle, backend_code, engine_code, max_batch,
                                             byref(options), byref(handle)))
        self._handle = handle.value
        # Plain copies of the model's facts, so the session does not keep the Model object alive.
        self.layers = model.layers
        self.input_shape = model.input_shape
        self.num_classes = model.num_classes
        self.max_batch = max_batch
        self.record_spike_times = bool(record_spike_times)
        self.allow_unscaled = bool(allow_unscaled)
        # The library checked them: strictly increasing steps in [0, time_steps).
        self.output_trace_steps = trace_steps
        self.input_divisor = model.input_divisor
        backend_names = {int(v): k for k, v in _BACKENDS.items()}
        engine_names = {int(v): k for k, v in _ENGINES.items()}
        self.backend = backend_names[_int_out(lib.ttfs_session_backend, self._handle)]
        self.engine = engine_names[_int_out(lib.ttfs_session_engine, self._handle)]
        if threads:
            self.set_threads(threads)

    @property
    def requirements(self) -> Requirements:
        """What the session was sized for and its limits (ttfs_session_get_requirements)."""
        out = SessionRequirementsStruct(struct_size=sizeof(SessionRequirementsStruct))
        _check(lib.ttfs_session_get_requirements(self._live_handle(), byref(out)))
        return Requirements(memory_bytes=out.memory_bytes, work_per_image=out.work_per_image,
                            max_workers=out.max_workers, max_memory_bytes=out.max_memory_bytes,
                            max_work_per_image=out.max_work_per_image)

    def _live_handle(self) -> int:
        if self._handle is None:
            raise ValueError("the session is closed")
        return self._handle

    def set_threads(self, threads: int) -> None:
        """CPU worker threads; 0 = one per hardware thread. Ignored by the CUDA backend. Never
        more than requirements.max_workers (one workspace each within the memory limit)."""
        threads = _int_in_range(threads, "threads", 0, INT32_MAX, " (0 = one per hardware thread)")
        _check_py(lib.ttfs_session_set_threads(self._live_handle(), threads))

    def prepare(self, images) -> np.ndarray:
        """The (n, h, w, c) contiguous uint8 or float32 array that run() hands to the library,
        by run()'s rules; raises ValueError for anything run() would refuse before running."""
        return prepare_images(images, self.input_shape)

    def run(self, images) -> Result:
        """Runs a batch of images.

        images: (n, h, w, c) or one (h, w, c) image; for a one-channel model also (n, h, w) or
        one (h, w) image. Pixel types:
        - uint8: pixels, divided by the model's input divisor;
        - other integer types (int32, int64, uint16, ...): pixels too, when every value is in
          0..255 (else ValueError);
        - float16/32/64: values already scaled to [0, 1]. NaN and infinity are always an error;
          values outside [0, 1] (typically unscaled 0..255 floats) are an error unless the
          session was created with allow_unscaled=True.
        """
        handle = self._live_handle()
        array = self.prepare(images)
        n = array.shape[0]
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"Session.run: a batch of {n} images; expected 1 to max_batch = "
                             f"{self.max_batch} (split the batch, or create the session with a "
                             "larger max_batch)")
        if array.dtype == np.uint8:
            run, pointer_type = lib.ttfs_session_run_u8, c_uint8
        else:
            run, pointer_type = lib.ttfs_session_run_f32, c_float
        predictions = np.empty(n, dtype=np.int32)
        potentials = np.empty((n, self.num_classes), dtype=np.float32)
        code = run(handle, array.ctypes.data_as(POINTER(pointer_type)), array.size, n,
                   predictions.ctypes.data_as(POINTER(c_int32)), predictions.size,
                   potentials.ctypes.data_as(POINTER(c_float)), potentials.size)
        if code == Status.ERR_BAD_INPUT:
            # The library checked every value in one fast pass; only now, on the failure path,
            # is the array searched again to name the bad value in Python terms.
            raise ValueError(_bad_value_message(array, self.allow_unscaled, self.input_divisor))
        _check_py(code)
        return Result(predictions=predictions, potentials=potentials)

    def last_batch_size(self) -> int:
        """Images in the last successful run (TtfsError ERR_NO_RESULTS before the first)."""
        handle = self._live_handle()
        value = c_int32()
        _check_py(lib.ttfs_session_last_batch_size(handle, byref(value)))
        return value.value

    def spike_times(self, layer: Union[int, str]) -> np.ndarray:
        """First-spike times of a neuron layer for the last batch: (n, h, w, c) int32 global
        steps, -1 where a neuron never fired. Needs record_spike_times=True."""
        handle = self._live_handle()
        index = _layer_index(self.layers, layer)
        self._check_neurons(index, "spike_times")
        if not self.record_spike_times:
            raise TtfsError(Status.ERR_NO_RESULTS, "TTFS_ERR_NO_RESULTS",
                            "Session.spike_times: this session does not record spike times; "
                            "create it with record_spike_times=True")
        n = self.last_batch_size()
        out = np.empty((n,) + tuple(self.layers[index].shape), dtype=np.int32)
        _check_py(lib.ttfs_session_spike_times(handle, index,
                                               out.ctypes.data_as(POINTER(c_int32)), out.size))
        return out

    def spike_counts(self, layer: Union[int, str]) -> np.ndarray:
        """Neurons of a neuron layer that fired, per image of the last batch: (n,) int32."""
        handle = self._live_handle()
        index = _layer_index(self.layers, layer)
        self._check_neurons(index, "spike_counts")
        n = self.last_batch_size()
        out = np.empty(n, dtype=np.int32)
        _check_py(lib.ttfs_session_spike_counts(handle, index,
                                                out.ctypes.data_as(POINTER(c_int32)), out.size))
        return out

    def output_trace(self) -> np.ndarray:
        """The output layer's potentials after each of output_trace_steps for the last batch:
        (n, len(output_trace_steps), classes) float32, computed by the engines (the same bits on
        both). At step time_steps - 1 they equal run()'s potentials; under first_spike readout a
        class that fired at step f reads 0 from f on. Needs output_trace_steps=."""
        handle = self._live_handle()
        if self.output_trace_steps is None:
            raise TtfsError(Status.ERR_NO_RESULTS, "TTFS_ERR_NO_RESULTS",
                            "Session.output_trace: this session does not record the output "
                            "trace; create it with output_trace_steps=[...]")
        n = self.last_batch_size()
        out = np.empty((n, self.output_trace_steps.size, self.num_classes), dtype=np.float32)
        _check_py(lib.ttfs_session_output_trace(handle, out.ctypes.data_as(POINTER(c_float)),
                                                out.size))
        return out

    def _check_neurons(self, index: int, method: str) -> None:
        layer = self.layers[index]
        if not layer.has_neurons:
            raise ValueError(f"Session.{method}: layer {index} ({layer.name!r}) is a {layer.kind} "
                             "layer, which has no neurons; expected an input, conv2d or dense "
                             "layer")

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """Frees the session; idempotent. Raises TtfsError ERR_BUSY (and stays open) while
        another thread is inside a call on it."""
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            status = self._free(handle)
            if status != 0:
                self._handle = handle
                _check(status)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"max_batch={self.max_batch}"
        return f"Session(backend={self.backend!r}, engine={self.engine!r}, {state})"
