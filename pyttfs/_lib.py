"""Finds and loads libttfs, and declares every C prototype of include/ttfs.h in one table.

Nothing else in pyttfs calls ctypes.CDLL or sets argtypes: a function missing from _PROTOTYPES
cannot be called, and a signature that drifts from the header is fixed in one place.
"""
from __future__ import annotations

import ctypes
import enum
import os
from ctypes import (POINTER, c_char_p, c_float, c_int32, c_size_t, c_uint8, c_uint32, c_uint64,
                    c_void_p)
from pathlib import Path

ABI_VERSION = 1  # TTFS_ABI_VERSION of the ttfs.h this module was written against
LIBRARY_ENV = "TTFS_LIBRARY"
LIBRARY_NAME = "libttfs.so"

_PACKAGE_DIR = Path(__file__).resolve().parent

_BUILD_HINT = (
    "Build it with:  cmake -S . -B build && cmake --build build -j  (in the ttfs checkout; add "
    "-DTTFS_CUDA=OFF for a CPU-only build), or install the package with  pip install .  , or "
    f"point {LIBRARY_ENV} at a libttfs.so"
)


class LibraryError(OSError):
    """libttfs could not be found or loaded, or is not the version pyttfs was written for."""


class Status(enum.IntEnum):
    """ttfs_status (include/ttfs.h)."""

    OK = 0
    ERR_INVALID_ARGUMENT = 1
    ERR_INVALID_HANDLE = 2
    ERR_OUT_OF_MEMORY = 3
    ERR_IO = 4
    ERR_UNSUPPORTED = 5
    ERR_BACKEND_UNAVAILABLE = 6
    ERR_CUDA = 7
    ERR_NO_RESULTS = 8
    ERR_BUSY = 9
    ERR_INTERNAL = 10
    ERR_LIMIT = 11
    ERR_BAD_INPUT = 12
    ERR_TRUNCATED_HEADER = 100
    ERR_BAD_MAGIC = 101
    ERR_UNSUPPORTED_VERSION = 102
    ERR_TRUNCATED_DATA = 103
    ERR_TRAILING_BYTES = 104
    ERR_BAD_CRC = 105
    ERR_OFFSET_OUT_OF_RANGE = 106
    ERR_DIM_OVERFLOW = 107
    ERR_UNKNOWN_LAYER_TYPE = 108
    ERR_BAD_FIELD = 109
    ERR_SHAPE_CHAIN = 110
    ERR_BAD_VALUE = 111


class LayerKind(enum.IntEnum):
    INPUT = 1
    CONV2D = 2
    MAXPOOL = 3
    FLATTEN = 4
    DENSE = 5


class PoolMode(enum.IntEnum):  # ttfs_pool_mode
    OR = 0
    EARLIEST = 1
    GATED = 2


class Backend(enum.IntEnum):
    AUTO = 0
    CPU = 1
    CUDA = 2


class Engine(enum.IntEnum):
    STEPPED = 0
    ANALYTIC = 1


RECORD_SPIKE_TIMES = 1  # TTFS_SESSION_RECORD_SPIKE_TIMES
ALLOW_UNSCALED = 2  # TTFS_SESSION_ALLOW_UNSCALED
RECORD_OUTPUT_TRACE = 4  # TTFS_SESSION_RECORD_OUTPUT_TRACE


class LayerInfoStruct(ctypes.Structure):
    """ttfs_layer_info; the caller sets struct_size = ctypes.sizeof(LayerInfoStruct)."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("kind", c_int32),
        ("depth", c_int32),
        ("shape", c_int32 * 3),
        ("kernel", c_int32 * 2),
        ("stride", c_int32 * 2),
        ("padding", c_int32),
        ("pool_mode", c_int32),
        ("tau_fire", c_float),
        ("td_fire", c_float),
        ("tau_integ", c_float),
        ("td_integ", c_float),
        ("vth0", c_float),
        ("integ_window", c_int32 * 2),
        ("fire_window", c_int32 * 2),
        ("name", c_char_p),
    ]


class SessionOptionsStruct(ctypes.Structure):
    """ttfs_session_options; struct_size = ctypes.sizeof(SessionOptionsStruct), 0 = default."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("flags", c_uint32),
        ("max_memory_bytes", c_uint64),
        ("max_work_per_image", c_uint64),
        ("output_trace_steps", POINTER(c_int32)),
        ("output_trace_count", c_int32),
    ]


class SessionRequirementsStruct(ctypes.Structure):
    """ttfs_session_requirements; the caller sets struct_size."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("max_workers", c_int32),
        ("memory_bytes", c_uint64),
        ("work_per_image", c_uint64),
        ("max_memory_bytes", c_uint64),
        ("max_work_per_image", c_uint64),
    ]


# The default limits of a session (TTFS_DEFAULT_MAX_MEMORY_BYTES, ..._WORK_PER_IMAGE).
DEFAULT_MAX_MEMORY_BYTES = 8 << 30
DEFAULT_MAX_WORK_PER_IMAGE = 1 << 34

# Handles are plain c_void_p so that tests can pass made-up or wrong-kind values on purpose;
# the library checks every handle it is given.
_handle = c_void_p
_handle_out = POINTER(c_void_p)
_status = c_int32

# name, restype, argtypes — in the order of include/ttfs.h.
_PROTOTYPES = [
    ("ttfs_version_string", c_char_p, []),
    ("ttfs_abi_version", c_int32, []),
    ("ttfs_cuda_compiled", c_int32, []),
    ("ttfs_cuda_device_count", _status, [POINTER(c_int32)]),
    ("ttfs_build_info", c_char_p, []),
    ("ttfs_status_name", c_char_p, [c_int32]),
    ("ttfs_last_error", c_char_p, []),
    ("ttfs_model_load_file", _status, [c_char_p, _handle_out]),
    ("ttfs_model_load_memory", _status, [c_void_p, c_size_t, _handle_out]),
    ("ttfs_model_free", _status, [_handle]),
    ("ttfs_model_layer_count", _status, [_handle, POINTER(c_int32)]),
    ("ttfs_model_layer_info", _status, [_handle, c_int32, POINTER(LayerInfoStruct)]),
    ("ttfs_model_input_shape", _status, [_handle, POINTER(c_int32)]),
    ("ttfs_model_num_classes", _status, [_handle, POINTER(c_int32)]),
    ("ttfs_model_time_steps", _status, [_handle, POINTER(c_int32)]),
    ("ttfs_model_readout", _status, [_handle, POINTER(c_int32)]),
    ("ttfs_model_input_divisor", _status, [_handle, POINTER(c_float)]),
    ("ttfs_model_metadata", _status, [_handle, POINTER(c_char_p)]),
    ("ttfs_session_create", _status, [_handle, c_int32, c_int32, c_int32, c_uint32, _handle_out]),
    ("ttfs_session_create_ex", _status,
     [_handle, c_int32, c_int32, c_int32, POINTER(SessionOptionsStruct), _handle_out]),
    ("ttfs_session_get_requirements", _status, [_handle, POINTER(SessionRequirementsStruct)]),
    ("ttfs_session_free", _status, [_handle]),
    ("ttfs_session_backend", _status, [_handle, POINTER(c_int32)]),
    ("ttfs_session_engine", _status, [_handle, POINTER(c_int32)]),
    ("ttfs_session_set_threads", _status, [_handle, c_int32]),
    ("ttfs_session_run_f32", _status,
     [_handle, POINTER(c_float), c_size_t, c_int32, POINTER(c_int32), c_size_t,
      POINTER(c_float), c_size_t]),
    ("ttfs_session_run_u8", _status,
     [_handle, POINTER(c_uint8), c_size_t, c_int32, POINTER(c_int32), c_size_t,
      POINTER(c_float), c_size_t]),
    ("ttfs_session_last_batch_size", _status, [_handle, POINTER(c_int32)]),
    ("ttfs_session_spike_times", _status, [_handle, c_int32, POINTER(c_int32), c_size_t]),
    ("ttfs_session_spike_counts", _status, [_handle, c_int32, POINTER(c_int32), c_size_t]),
    ("ttfs_session_output_trace", _status, [_handle, POINTER(c_float), c_size_t]),
]


def candidate_paths() -> list[tuple[str, Path]]:
    """Where the library is looked for, in order, each with the reason it is looked at."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        # An explicit path is the only candidate: quietly loading some other copy would hide
        # the mistake.
        return [(f"${LIBRARY_ENV}", Path(override))]
    return [
        ("installed package", _PACKAGE_DIR / LIBRARY_NAME),
        ("checkout build directory", _PACKAGE_DIR.parent / "build" / LIBRARY_NAME),
    ]


def _load() -> tuple[ctypes.CDLL, Path]:
    tried = []
    for reason, path in candidate_paths():
        if not path.is_file():
            tried.append(f"  {path} ({reason}): no such file")
            continue
        try:
            # An absolute path: dlopen would search the system's library path for a bare name.
            library = ctypes.CDLL(str(path.resolve()))
        except OSError as error:
            tried.append(f"  {path} ({reason}): cannot be loaded: {error}")
            continue
        return library, path.resolve()
    raise LibraryError(
        "pyttfs cannot find libttfs. Looked in:\n" + "\n".join(tried) + "\n" + _BUILD_HINT
    )


def _declare(library: ctypes.CDLL, path: Path) -> None:
    for name, restype, argtypes in _PROTOTYPES:
        try:
            function = getattr(library, name)
        except AttributeError:
            raise LibraryError(
                f"{path} has no function {name}; it is not a libttfs matching pyttfs "
                f"(ABI {ABI_VERSION}). {_BUILD_HINT}"
            ) from None
        function.restype = restype
        function.argtypes = argtypes


def _check_abi(library: ctypes.CDLL, path: Path) -> None:
    found = library.ttfs_abi_version()
    if found != ABI_VERSION:
        version = library.ttfs_version_string().decode(errors="replace")
        raise LibraryError(
            f"{path} is libttfs {version} with ABI version {found}, but this pyttfs was written "
            f"for ABI version {ABI_VERSION}; install matching versions. {_BUILD_HINT}"
        )


lib, library_path = _load()
_declare(lib, library_path)
_check_abi(lib, library_path)


class TtfsError(Exception):
    """A libttfs call failed. code: the ttfs_status number; status: its name
    ("TTFS_ERR_BAD_CRC"); message: the library's description (ttfs_last_error)."""

    def __init__(self, code: int, status: str, message: str):
        super().__init__(f"{status}: {message}" if message else status)
        self.code = int(code)
        self.status = status
        self.message = message


def status_name(code: int) -> str:
    return lib.ttfs_status_name(int(code)).decode()


def last_error() -> str:
    return lib.ttfs_last_error().decode(errors="replace")


def _check(code: int) -> None:
    """Raises TtfsError for a failed call; must run on the thread that made the call (the
    library's last error is thread-local)."""
    if code != Status.OK:
        raise TtfsError(code, status_name(code), last_error())
