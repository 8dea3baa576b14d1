"""pyttfs: run time-to-first-spike spiking networks (.ttfs model files) through libttfs.

    import pyttfs
    with pyttfs.Model("mnist.ttfs") as model, model.session(backend="auto") as session:
        result = session.run(images_uint8)          # (n, h, w, c)
        result.predictions, result.potentials

The library is found through $TTFS_LIBRARY, then next to this package (an installed wheel),
then in the checkout's build/ directory. Importing needs numpy only; pyttfs.read_images uses
Pillow for PNG/JPEG files. pyttfs.get_include() is the directory of the C header ttfs.h.
"""
from __future__ import annotations

from ctypes import byref, c_int32
from pathlib import Path

from ._lib import LibraryError, Status, TtfsError, _check, lib, library_path
from .images import ImageReadError, image_files, read_images, read_labels
from .model import LayerInfo, Model, Requirements, Result, Session

__all__ = [
    "ImageReadError",
    "LayerInfo",
    "LibraryError",
    "Model",
    "Requirements",
    "Result",
    "Session",
    "Status",
    "TtfsError",
    "build_info",
    "cuda_compiled",
    "cuda_device_count",
    "get_include",
    "image_files",
    "lib",
    "library_path",
    "read_images",
    "read_labels",
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


def get_include() -> str:
    """The directory holding ttfs.h, the C header of libttfs: inside an installed package,
    else the checkout's include/. Compile with -I$(that) and link against library_path."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "include", package.parent / "include"):
        if (candidate / "ttfs.h").is_file():
            return str(candidate)
    raise FileNotFoundError(f"ttfs.h is neither in {package / 'include'} (an installed package) "
                            f"nor in {package.parent / 'include'} (a checkout)")


__version__ = version()
