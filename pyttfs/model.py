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
    RECORD_SPIKE_TIMES,
    Backend,
    Engine,
    LayerInfoStruct,
    LayerKind,
    _check,
    lib,
)

_KIND_NAMES = {
    LayerKind.INPUT: "input",
    LayerKind.CONV2D: "conv2d",
    LayerKind.MAXPOOL: "maxpool",
    LayerKind.FLATTEN: "flatten",
    LayerKind.DENSE: "dense",
}
_PADDING_NAMES = {0: "valid", 1: "same"}
_POOL_MODE_NAMES = {0: "or", 1: "earliest"}
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
                record_spike_times: bool = False, threads: int = 0) -> "Session":
        """A session running this model. backend: "auto" (CUDA when a device is present, else
        CPU), "cpu" or "cuda"; engine: "analytic" or "stepped" (any window layout)."""
        return Session(self, backend=backend, engine=engine, max_batch=max_batch,
                       record_spike_times=record_spike_times, threads=threads)

    def close(self) -> None:
        """Frees the library's model. Sessions made from it keep working."""
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            self._free(handle)

    def __repr__(self) -> str:
        source = self.path if self.path is not None else "<memory>"
        return (f"Model({source!r}, input_shape={self.input_shape}, classes={self.num_classes}, "
                f"layers={len(self.layers)}, readout={self.readout!r})")


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
                 max_batch: int = 64, record_spike_times: bool = False, threads: int = 0):
        if model.closed:
            raise ValueError("the model is closed; create sessions before Model.close()")
        backend_code = _choice(backend, _BACKENDS, "backend")
        engine_code = _choice(engine, _ENGINES, "engine")
        if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) \
                or max_batch < 1:
            raise ValueError(f"max_batch = {max_batch!r}; expected an integer >= 1")
        self._handle = None
        self._free = lib.ttfs_session_free  # kept so __del__ works while the interpreter exits
        handle = c_void_p()
        flags = RECORD_SPIKE_TIMES if record_spike_times else 0
        _check(lib.ttfs_session_create(model._handle, backend_code, engine_code, int(max_batch),
                                       flags, byref(handle)))
        self._handle = handle.value
        # Plain copies of the model's facts, so the session does not keep the Model object alive.
        self.layers = model.layers
        self.input_shape = model.input_shape
        self.num_classes = model.num_classes
        self.max_batch = int(max_batch)
        self.record_spike_times = bool(record_spike_times)
        backend_names = {int(v): k for k, v in _BACKENDS.items()}
        engine_names = {int(v): k for k, v in _ENGINES.items()}
        self.backend = backend_names[_int_out(lib.ttfs_session_backend, self._handle)]
        self.engine = engine_names[_int_out(lib.ttfs_session_engine, self._handle)]
        if threads:
            self.set_threads(threads)

    def _live_handle(self) -> int:
        if self._handle is None:
            raise ValueError("the session is closed")
        return self._handle

    def set_threads(self, threads: int) -> None:
        """CPU worker threads; 0 = one per hardware thread. Ignored by the CUDA backend."""
        _check(lib.ttfs_session_set_threads(self._live_handle(), int(threads)))

    def run(self, images) -> Result:
        """Runs a batch. images: (n, h, w, c) or one (h, w, c) image; uint8 pixels (scaled by
        the model's input divisor) or floats already scaled."""
        handle = self._live_handle()
        array = np.asarray(images)
        if array.dtype == np.uint8:
            array = np.ascontiguousarray(array)
            run, pointer_type = lib.ttfs_session_run_u8, c_uint8
        elif np.issubdtype(array.dtype, np.floating):
            array = np.ascontiguousarray(array, dtype=np.float32)
            run, pointer_type = lib.ttfs_session_run_f32, c_float
        else:
            raise ValueError(f"images have dtype {array.dtype}; expected uint8 pixels or "
                             "floating-point values already divided by the input divisor")
        if array.ndim == 3:
            array = array[np.newaxis]
        if array.ndim != 4 or tuple(array.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"images have shape {np.asarray(images).shape}; expected "
                             f"(n, {', '.join(map(str, self.input_shape))}) or "
                             f"{tuple(self.input_shape)} for one image")
        n = array.shape[0]
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"a batch of {n} images; expected 1 to max_batch = {self.max_batch} "
                             "(split the batch, or create the session with a larger max_batch)")
        predictions = np.empty(n, dtype=np.int32)
        potentials = np.empty((n, self.num_classes), dtype=np.float32)
        _check(run(handle, array.ctypes.data_as(POINTER(pointer_type)), array.size, n,
                   predictions.ctypes.data_as(POINTER(c_int32)), predictions.size,
                   potentials.ctypes.data_as(POINTER(c_float)), potentials.size))
        return Result(predictions=predictions, potentials=potentials)

    def last_batch_size(self) -> int:
        """Images in the last successful run (TtfsError ERR_NO_RESULTS before the first)."""
        return _int_out(lib.ttfs_session_last_batch_size, self._live_handle())

    def spike_times(self, layer: Union[int, str]) -> np.ndarray:
        """First-spike times of a neuron layer for the last batch: (n, h, w, c) int32 global
        steps, -1 where a neuron never fired. Needs record_spike_times=True."""
        handle = self._live_handle()
        index = _layer_index(self.layers, layer)
        n = self.last_batch_size()
        out = np.empty((n,) + tuple(self.layers[index].shape), dtype=np.int32)
        _check(lib.ttfs_session_spike_times(handle, index, out.ctypes.data_as(POINTER(c_int32)),
                                            out.size))
        return out

    def spike_counts(self, layer: Union[int, str]) -> np.ndarray:
        """Neurons of a neuron layer that fired, per image of the last batch: (n,) int32."""
        handle = self._live_handle()
        index = _layer_index(self.layers, layer)
        n = self.last_batch_size()
        out = np.empty(n, dtype=np.int32)
        _check(lib.ttfs_session_spike_counts(handle, index, out.ctypes.data_as(POINTER(c_int32)),
                                             out.size))
        return out

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
