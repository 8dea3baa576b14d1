"""Reading images and labels the way ttfs-infer reads them.

read_images(path, input_shape) returns exactly the array that `ttfs-infer MODEL path` runs:
the same formats, the same channel conversion, the same optional resizing and the same checks,
so a Python user and a command-line user get the same answers from the same files.

Formats (told apart by their first bytes; a raw .bin by its name):
- PNG and JPEG images: one file, or a directory of them (*.png, *.jpg, *.jpeg in byte order of
  their names; other files and hidden files are ignored). Decoded to 8-bit gray or RGB; alpha
  is dropped; 16-bit PNG samples keep their high byte.
- IDX (uint8 0x0803/0x0804, big-endian float32 0x0D03/0x0D04), plain or gzipped.
- NumPy .npy: uint8, other integer dtypes whose values fit 0..255, float32/float64.
- raw little-endian float32 (*.bin): exactly one image of the model's input shape.
- "-": standard input, in any of the formats above except a directory or a raw .bin.

Channels: a gray image given to a 3-channel model is repeated into R, G and B; a colour image
given to a 1-channel model becomes gray by ITU-R BT.601 luma in integer arithmetic,
(19595 R + 38470 G + 7471 B + 32768) >> 16 (the same numbers Pillow's "L" conversion uses).
Resizing (resize=True, images only): each output pixel is the area-weighted mean of the source
pixels it covers, computed exactly in integers and rounded half up.

Pillow is used to decode PNG and JPEG; it is imported only when an image file is read.
"""
from __future__ import annotations

import gzip
import io
import os
import struct
import sys
from pathlib import Path
from typing import Optional, Union

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
GZIP_MAGIC = b"\x1f\x8b"
NPY_MAGIC = b"\x93NUMPY"

PathLike = Union[str, os.PathLike]


class ImageReadError(ValueError):
    """A file that cannot be read as images (or labels): the message names the file, what was
    found and what was expected."""


def _shape_of(input_shape) -> Optional[tuple]:
    if input_shape is None:
        return None
    shape = getattr(input_shape, "input_shape", input_shape)  # a Model or a Session
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape = {shape}; expected (h, w, c) or a pyttfs Model")
    return shape


def _text(shape) -> str:
    return "x".join(str(v) for v in shape)


# ---- Channel conversion and resizing (the CLI does the same, in C++) --------------------------

def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (..., 1) uint8 by integer BT.601 luma, rounded."""
    rgb = rgb.astype(np.uint32)
    luma = (19595 * rgb[..., 0] + 38470 * rgb[..., 1] + 7471 * rgb[..., 2] + 32768) >> 16
    return luma.astype(np.uint8)[..., np.newaxis]


def convert_channels(image: np.ndarray, channels: int, source: str) -> np.ndarray:
    """(h, w, c) uint8 with c in (1, 3) -> (h, w, channels)."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 3 and channels == 1:
        return to_gray(image)
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    raise ImageReadError(f"{source}: a {have}-channel image cannot be given to a model with "
                         f"{channels} input channels (images convert between 1 and 3 channels)")


def _area_weights(source: int, target: int) -> np.ndarray:
    """(target, source) int64: how much of source pixel i output pixel o covers, in units of
    1/target of a source pixel; every row sums to `source`."""
    o = np.arange(target, dtype=np.int64)[:, np.newaxis]
    i = np.arange(source, dtype=np.int64)[np.newaxis, :]
    low = np.maximum(i * target, o * source)
    high = np.minimum((i + 1) * target, (o + 1) * source)
    return np.maximum(high - low, 0)


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, c) uint8 -> (height, width, c) uint8: area-weighted means, exact integer sums,
    rounded half up."""
    source_h, source_w, channels = image.shape
    if (source_h, source_w) == (height, width):
        return image
    rows = _area_weights(source_h, height)     # (height, H)
    cols = _area_weights(source_w, width)      # (width, W)
    values = image.astype(np.int64)
    out = np.empty((height, width, channels), np.uint8)
    area = source_h * source_w
    for c in range(channels):
        total = rows @ values[:, :, c] @ cols.T   # exact: int64, at most 255 * H * W
        out[:, :, c] = (2 * total + area) // (2 * area)
    return out


# ---- PNG / JPEG ----------------------------------------------------------------------------------

def decode_image(data: bytes, source: str) -> np.ndarray:
    """PNG or JPEG bytes -> (h, w, 1) or (h, w, 3) uint8, alpha dropped."""
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - Pillow is a dependency of pyttfs
        raise ImportError("reading PNG/JPEG images needs Pillow (pip install Pillow)") from error
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            if mode == "1":
                array = np.asarray(image.convert("L"))
            elif mode == "P":
                array = np.asarray(image.convert("RGB"))
            elif mode in ("L", "RGB"):
                array = np.asarray(image)
            elif mode == "LA":
                array = np.asarray(image)[..., 0]
            elif mode == "RGBA":
                array = np.asarray(image)[..., :3]
            elif mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit gray: keep the high byte, as the CLI's PNG reader does.
                array = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
            else:
                raise ImageReadError(f"{source}: image mode {mode} is not supported; expected "
                                     "gray or RGB (with or without alpha, or a palette)")
    except ImageReadError:
        raise
    except Exception as error:  # Pillow's own errors for broken files
        raise ImageReadError(f"{source}: cannot decode the image: {error}") from None
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    return array


def _fit_image(image: np.ndarray, shape: Optional[tuple], resize: bool, source: str) -> np.ndarray:
    if shape is None:
        return image
    image = convert_channels(image, shape[2], source)
    if image.shape[:2] != shape[:2]:
        if not resize:
            raise ImageReadError(
                f"{source}: the image is {image.shape[0]}x{image.shape[1]} but the model expects "
                f"{shape[0]}x{shape[1]} inputs; resize it, or ask for resize=True "
                "(ttfs-infer --resize)")
        image = resize_area(image, shape[0], shape[1])
    return image


def image_files(directory: PathLike) -> list:
    """The image files of a directory in the order ttfs-infer and read_images use: names
    ending in .png, .jpg or .jpeg (any case), not hidden, sorted by their bytes."""
    directory = Path(directory)
    return sorted((directory / entry.name for entry in os.scandir(directory)
                   if not entry.name.startswith(".") and entry.is_file()
                   and entry.name.lower().endswith(IMAGE_SUFFIXES)),
                  key=lambda p: os.fsencode(p.name))


def _image_directory(directory: Path, shape, resize) -> np.ndarray:
    paths = image_files(directory)
    if not paths:
        raise ImageReadError(f"{directory}: the directory holds no .png, .jpg or .jpeg files")
    images = []
    for path in paths:
        image = _fit_image(decode_image(path.read_bytes(), str(path)), shape, resize, str(path))
        if images and image.shape != images[0].shape:
            raise ImageReadError(f"{path}: the image is {_text(image.shape)} but {paths[0]} is "
                                 f"{_text(images[0].shape)}; pass the model's input shape to "
                                 "convert them alike")
        images.append(image)
    return np.stack(images)


# ---- Arrays: IDX, .npy, raw .bin -----------------------------------------------------------------

def _pixels_from_integers(values: np.ndarray, source: str) -> np.ndarray:
    """Integer arrays other than uint8 are pixels too when every value fits 0..255."""
    if values.size:
        low, high = values.min(), values.max()
        if low < 0 or high > 255:
            bad = np.argwhere((values < 0) | (values > 255))[0]
            raise ImageReadError(
                f"{source}: value {values[tuple(bad)]} at index {tuple(int(i) for i in bad)}; "
                f"{values.dtype} images must hold pixels 0..255 (values {low}..{high} found)")
    return values.astype(np.uint8)


def _arrange(values: np.ndarray, shape: Optional[tuple], source: str) -> np.ndarray:
    """Any accepted array shape -> (n, h, w, c), by the rules Session.run uses."""
    if shape is not None:
        h, w, c = shape
        if values.shape == (h, w, c):
            return values[np.newaxis]
        if c == 1 and values.shape == (h, w):
            return values[np.newaxis, :, :, np.newaxis]
        if values.ndim == 4 and values.shape[1:] == (h, w, c):
            return values
        if c == 1 and values.ndim == 3 and values.shape[1:] == (h, w):
            return values[..., np.newaxis]
        one_channel = f", (n, {h}, {w}), ({h}, {w})" if c == 1 else ""
        raise ImageReadError(f"{source}: the array has shape {values.shape}; the model expects "
                             f"(n, {h}, {w}, {c}), ({h}, {w}, {c}){one_channel}")
    if values.ndim == 4:
        return values
    if values.ndim == 3:
        return values[..., np.newaxis]
    if values.ndim == 2:
        return values[np.newaxis, :, :, np.newaxis]
    raise ImageReadError(f"{source}: the array has shape {values.shape}; expected (n, h, w, c), "
                         "(n, h, w) or (h, w)")


def _from_npy(data: bytes, source: str) -> np.ndarray:
    try:
        values = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as error:
        raise ImageReadError(f"{source}: not a readable .npy array: {error}") from None
    return _npy_values(values, source)


def _npy_values(values: np.ndarray, source: str) -> np.ndarray:
    kind = values.dtype.kind
    if values.dtype == np.uint8:
        return np.ascontiguousarray(values)
    if kind in "iu":
        return _pixels_from_integers(values, source)
    if kind == "f" and values.dtype.itemsize in (4, 8):
        return np.ascontiguousarray(values, dtype=np.float32)
    raise ImageReadError(f"{source}: dtype {values.dtype} is not supported; expected uint8 "
                         "pixels, another integer type holding 0..255, or float32/float64 "
                         "values in [0, 1]")


def _from_idx(data: bytes, source: str) -> np.ndarray:
    if len(data) < 4:
        raise ImageReadError(f"{source}: {len(data)} bytes; too short for an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in (0x08, 0x0D) or ndim not in (3, 4):
        raise ImageReadError(f"{source}: magic 0x{data[:4].hex().upper()}; expected an IDX "
                             "image file (0x00000803/0x00000804 uint8, 0x00000D03/0x00000D04 "
                             "float32)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ImageReadError(f"{source}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if dims[0] == 0:
        raise ImageReadError(f"{source}: holds no images (count 0)")
    item = 1 if dtype_code == 0x08 else 4
    expected = header + int(np.prod(dims, dtype=np.int64)) * item
    if len(data) != expected:
        raise ImageReadError(f"{source}: {len(data)} bytes; expected {expected} for "
                             f"{dims[0]} images of {_text(dims[1:])}")
    dtype = np.uint8 if item == 1 else np.dtype(">f4")
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    values = values.astype(np.uint8 if item == 1 else np.float32)
    return values if ndim == 4 else values[..., np.newaxis]


def read_bytes(path: PathLike) -> bytes:
    """A file's bytes ("-" = standard input), gunzipped when they are gzip data."""
    if str(path) == "-":
        data = sys.stdin.buffer.read()
        source = "standard input"
    else:
        data = Path(path).read_bytes()
        source = str(path)
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise ImageReadError(f"{source}: broken gzip data: {error}") from None
    return data


def read_images(path: PathLike, input_shape=None, resize: bool = False) -> np.ndarray:
    """The images in `path` as an (n, h, w, c) array: uint8 pixels (PNG, JPEG, uint8 IDX,
    integer .npy) or float32 values (float IDX, float .npy, raw .bin).

    input_shape: the model's (h, w, c), or a pyttfs Model / Session. Given, images are
    converted to the model's channels, checked against its size (resized when resize=True,
    images only) and arrays of shape (h, w, c), (n, h, w) or (h, w) are arranged as
    (n, h, w, c) — exactly what `ttfs-infer MODEL path` runs. A raw .bin needs it.
    """
    shape = _shape_of(input_shape)
    source = "standard input" if str(path) == "-" else str(path)
    if str(path) != "-" and Path(path).is_dir():
        return _image_directory(Path(path), shape, resize)
    if str(path) != "-" and str(path).endswith(".bin"):
        if shape is None:
            raise ValueError(f"{source}: a raw .bin image has no header; pass the model's "
                             "input_shape")
        data = Path(path).read_bytes()
        expected = 4 * shape[0] * shape[1] * shape[2]
        if len(data) != expected:
            raise ImageReadError(f"{source}: {len(data)} bytes; expected {expected}: exactly "
                                 f"one {_text(shape)} float32 image")
        return np.frombuffer(data, dtype="<f4").astype(np.float32).reshape((1,) + shape)
    data = read_bytes(path)
    if data.startswith(PNG_MAGIC) or data.startswith(JPEG_MAGIC):
        return _fit_image(decode_image(data, source), shape, resize, source)[np.newaxis]
    if data.startswith(NPY_MAGIC):
        values = _arrange(_from_npy(data, source), shape, source)
    elif data[:2] == b"\x00\x00":
        values = _arrange(_from_idx(data, source), shape, source)
    else:
        raise ImageReadError(f"{source}: starts with bytes {data[:4].hex()}; expected a PNG or "
                             "JPEG image, an IDX file (optionally gzipped), a .npy array or a "
                             "raw float32 image named *.bin")
    return values  # arrays must have the model's size already: resizing is for image files


def read_labels(path: PathLike) -> np.ndarray:
    """Labels as int64: IDX1 uint8 (0x00000801, optionally gzipped) or a 1-D integer .npy."""
    source = "standard input" if str(path) == "-" else str(path)
    data = read_bytes(path)
    if data.startswith(NPY_MAGIC):
        values = np.load(io.BytesIO(data), allow_pickle=False)
        if values.ndim != 1 or values.dtype.kind not in "iu":
            raise ImageReadError(f"{source}: labels must be a 1-D integer array, not "
                                 f"{values.dtype} {values.shape}")
        return values.astype(np.int64)
    if len(data) < 8 or struct.unpack(">I", data[:4])[0] != 0x00000801:
        raise ImageReadError(f"{source}: expected IDX1 uint8 labels (magic 0x00000801) or a "
                             ".npy integer array")
    count = struct.unpack(">I", data[4:8])[0]
    if len(data) != 8 + count:
        raise ImageReadError(f"{source}: {len(data)} bytes; expected {8 + count} for its "
                             f"{count} labels")
    return np.frombuffer(data, np.uint8, offset=8).astype(np.int64)


__all__ = ["ImageReadError", "convert_channels", "decode_image", "image_files", "read_images",
           "read_labels", "resize_area", "to_gray"]
