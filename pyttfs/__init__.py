"""pyttfs: run time-to-first-spike spiking networks (.ttfs model files) through libttfs.

    import pyttfs
    with pyttfs.Model("mnist.ttfs") as model, model.session(backend="auto") as session:
        result = session.run(images_uint8)          # (n, h, w, c)
        result.predictions, result.potentials

The library is found through $TTFS_LIBRARY, then next to this package (an installed wheel),
then in the checkout's build/ directory. numpy is the only dependency.
"""
from __future__ import annotations

from ctypes import byref, c_int32

from ._lib import LibraryError, Status, TtfsError, _check, lib, library_path
from .model import LayerInfo, Model, Result, Session

__all__ = [
    "LayerInfo",
    "LibraryError",
    "Model",
    "Result",
    "Session",
    "Status",
    "TtfsError",
    "build_info",
    "cuda_compiled",
    "cuda_device_count",
    "lib",
    "library_path",
    "version",
]


def version() -> str:
    """The library's version, "MAJOR.MINOR.PATCH"."""
    return lib.ttfs_version_string().decode()


def build_info() -> str:
    """One line: version, ABI, compiler, whether CUDA is compiled in (and for which
    architectures), and how many CUDA devices were found."""
    return lib.ttfs_build_info().decode()


def cuda_compiled() -> bool:
    return bool(lib.ttfs_cuda_compiled())


def cuda_device_count() -> int:
    """Usable CUDA devices; 0 without CUDA, driver or device."""
    count = c_int32()
    _check(lib.ttfs_cuda_device_count(byref(count)))
    return count.value


__version__ = version()
