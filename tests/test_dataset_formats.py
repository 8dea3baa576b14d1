"""export/datasets.py beyond MNIST: Fashion-MNIST, IDX directories, .npz files, image folders,
one entry point (load_dataset), and a test for every rejection.

Every dataset here is written by hand in a temporary directory (pixel values chosen so a
transposed axis, a swapped channel or a lost label shows); the real Fashion-MNIST files are used
only where present (the Debian package dataset-fashion-mnist; `make` installs it)."""

import gzip

import numpy as np
import pytest

from export import datasets
from export.datasets import (DatasetNotFoundError, FashionMnistNotFoundError, load_dataset,
                             load_fashion_mnist, load_idx_directory, load_image_folder, load_npz,
                             read_idx, write_idx_images, write_idx_labels, write_split_idx)

FASHION_DIR = datasets.FASHION_MNIST_SYSTEM_DIR
HAVE_FASHION = all((FASHION_DIR / (stem + ".gz")).is_file()
                   for stem in datasets.IDX_FILES.values())
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION, reason=f"Fashion-MNIST is not installed in {FASHION_DIR} (apt-get install "
                             "dataset-fashion-mnist; `make` tries it)")


@pytest.fixture
def no_fashion(tmp_path, monkeypatch):
    """No environment override, an empty HOME, and no system copy."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.delenv(datasets.ENV_FASHION_MNIST_DIR, raising=False)
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "not-installed")
    return home


def image_set(count, h, w, c, seed, classes=10):
    """uint8 images whose pixel (i, y, x, ch) encodes its own position, and labels."""
    rng = np.random.default_rng(seed)
    images = ((np.arange(count)[:, None, None, None] * 7 + np.arange(h)[None, :, None, None] * 3
               + np.arange(w)[None, None, :, None] * 5 + np.arange(c)[None, None, None, :] * 11
               ) % 256).astype(np.uint8)
    return images, rng.integers(0, classes, count).astype(np.uint8)


def write_mnist_names(directory, train, test, gz=False):
    directory.mkdir(parents=True, exist_ok=True)
    parts = {"train-images-idx3-ubyte": train[0][..., 0], "t10k-images-idx3-ubyte": test[0][..., 0]}
    for name, images in parts.items():
        write_idx_images(directory / name, images)
    write_idx_labels(directory / "train-labels-idx1-ubyte", train[1])
    write_idx_labels(directory / "t10k-labels-idx1-ubyte", test[1])
    if gz:
        for path in list(directory.iterdir()):
            with gzip.open(str(path) + ".gz", "wb") as stream:
                stream.write(path.read_bytes())
            path.unlink()


# ---- Fashion-MNIST ---------------------------------------------------------------------------


@needs_fashion
def test_fashion_mnist_from_the_debian_package(no_fashion, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", FASHION_DIR)
    data = load_dataset("fashion-mnist")
    assert data.name == "Fashion-MNIST" and "dataset-fashion-mnist" in data.kind
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    assert data.input_shape == (28, 28, 1) and data.train.images.dtype == np.uint8
    # Published facts about Fashion-MNIST: 6000 training and 1000 test images per class, and
    # the first labels of each file (ankle boot, T-shirt/top, ...).
    labels = np.concatenate([data.train.labels, data.val.labels])
    assert np.bincount(labels, minlength=10).tolist() == [6000] * 10
    assert np.bincount(data.test.labels, minlength=10).tolist() == [1000] * 10
    assert data.train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert data.test.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert data.class_names == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert data.scaling()["divisor"] == 255.0
    with pytest.raises(ValueError):  # shared by every caller: read-only
        data.train.images[0, 0, 0, 0] = 1


def test_missing_fashion_mnist_says_exactly_how_to_get_it(no_fashion):
    with pytest.raises(FashionMnistNotFoundError) as error:
        load_dataset("fashion-mnist")
    assert isinstance(error.value, FileNotFoundError)
    text = str(error.value)
    for expected in ("apt-get install dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist",
                     "--data-dir", "TTFS_FASHION_MNIST_DIR", "train-images-idx3-ubyte",
                     "t10k-labels-idx1-ubyte", ".keras/datasets/fashion-mnist"):
        assert expected in text, expected


def test_fashion_mnist_from_an_option_or_the_environment(no_fashion, tmp_path, monkeypatch):
    train = image_set(12, 28, 28, 1, seed=1)
    test = image_set(4, 28, 28, 1, seed=2)
    write_mnist_names(tmp_path / "env", train, test, gz=True)
    monkeypatch.setenv(datasets.ENV_FASHION_MNIST_DIR, str(tmp_path / "env"))
    data = load_fashion_mnist(validation_size=2)
    assert "TTFS_FASHION_MNIST_DIR" in data.source and data.class_names[9] == "Ankle boot"
    np.testing.assert_array_equal(data.train.images, train[0][:10])
    np.testing.assert_array_equal(data.val.labels, train[1][10:])
    np.testing.assert_array_equal(data.test.images, test[0])
    # --data-dir beats the environment; a directory without the files is an error, no fallback
    other = (image_set(12, 28, 28, 1, seed=3), image_set(4, 28, 28, 1, seed=4))
    write_mnist_names(tmp_path / "opt", *other)
    data = load_dataset("fashion-mnist", data_dir=tmp_path / "opt", validation_size=2)
    np.testing.assert_array_equal(data.test.images, other[1][0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FashionMnistNotFoundError, match="missing train-images-idx3-ubyte"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "empty")


# ---- IDX directories -------------------------------------------------------------------------


def test_idx_directory_any_size_three_channels_and_class_names(tmp_path):
    train = image_set(20, 5, 7, 3, seed=5, classes=3)
    test = image_set(6, 5, 7, 3, seed=6, classes=3)
    directory = tmp_path / "shapes"
    directory.mkdir()
    write_idx_images(directory / "train-images.idx", train[0])  # 4-D: magic 0x0804
    write_idx_labels(directory / "train-labels.idx", train[1])
    write_idx_images(directory / "test-images.idx", test[0])
    write_idx_labels(directory / "test-labels.idx", test[1])
    with gzip.open(directory / "test-images.idx.gz", "wb") as stream:  # gzipped works too
        stream.write((directory / "test-images.idx").read_bytes())
    (directory / "test-images.idx").unlink()
    (directory / "classes.txt").write_text("circle\nsquare\ntriangle\n")
    data = load_dataset(str(directory))
    assert data.input_shape == (5, 7, 3) and data.class_names == ("circle", "square", "triangle")
    # 10 % of 20 training images, the last ones, form the validation split
    assert (len(data.train), len(data.val), len(data.test)) == (18, 2, 6)
    np.testing.assert_array_equal(data.train.images, train[0][:18])
    np.testing.assert_array_equal(data.val.images, train[0][18:])
    np.testing.assert_array_equal(data.test.images, test[0])
    np.testing.assert_array_equal(data.test.labels, test[1])
    assert data.train.images[3, 2, 4, 1] == (3 * 7 + 2 * 3 + 4 * 5 + 11) % 256
    # written back for the CLI: the same arrays
    paths = write_split_idx(tmp_path / "out", data.test)
    np.testing.assert_array_equal(read_idx(paths["images"]), test[0])


def test_idx_directory_with_mnist_names_and_a_validation_file(tmp_path):
    train = image_set(10, 28, 28, 1, seed=7)
    test = image_set(3, 28, 28, 1, seed=8)
    write_mnist_names(tmp_path / "d", train, test, gz=True)
    val = image_set(4, 28, 28, 1, seed=9)
    write_idx_images(tmp_path / "d" / "val-images.idx", val[0][..., 0])
    write_idx_labels(tmp_path / "d" / "val-labels.idx", val[1])
    data = load_idx_directory(tmp_path / "d")
    assert (len(data.train), len(data.val), len(data.test)) == (10, 4, 3)
    np.testing.assert_array_equal(data.val.images, val[0])
    assert data.num_classes == int(max(train[1].max(), test[1].max(), val[1].max())) + 1


@pytest.mark.parametrize("problem, message", [
    ("count", r"train-labels\.idx: labels has 9 labels but .*train-images\.idx has 10 images"),
    ("range", r"test labels has label 3 at index 1, out of range for 3 classes; expected 0\.\.2"),
    ("size", r"test images are 5x6x1 but train images are 5x7x1"),
    ("missing", r"no test labels file"),
    ("corrupt", r"test-labels\.idx: 10 bytes .* expected exactly"),
    ("channels", r"has 2 channels; expected 1 \(grayscale\) or 3 \(RGB\)"),
])
def test_idx_directory_rejections(tmp_path, problem, message):
    d = tmp_path / "bad"
    d.mkdir()
    images, labels = image_set(10, 5, 7, 1, seed=1, classes=3)
    test_images, test_labels = image_set(4, 5, 7, 1, seed=2, classes=3)
    if problem == "count":
        labels = labels[:9]
    if problem == "range":
        test_labels = test_labels.copy()
        test_labels[1] = 3
        (d / "classes.txt").write_text("a\nb\nc\n")
    if problem == "size":
        test_images = test_images[:, :, :6]
    if problem == "channels":
        images = np.repeat(images, 2, axis=3)
    write_idx_images(d / "train-images.idx", images[..., 0] if images.shape[3] == 1 else images)
    write_idx_labels(d / "train-labels.idx", labels)
    write_idx_images(d / "test-images.idx", test_images[..., 0])
    if problem != "missing":
        write_idx_labels(d / "test-labels.idx", test_labels)
    if problem == "corrupt":
        (d / "test-labels.idx").write_bytes((d / "test-labels.idx").read_bytes()[:10])
    error_type = DatasetNotFoundError if problem == "missing" else ValueError
    with pytest.raises(error_type, match=message) as error:
        load_dataset(str(d))
    assert str(d) in str(error.value)


# ---- .npz ------------------------------------------------------------------------------------


def test_npz_uint8_float_and_keras_style_labels(tmp_path):
    # CIFAR-10 as Keras gives it: uint8 (n, 32, 32, 3), labels (n, 1)
    x_train, y_train = image_set(30, 32, 32, 3, seed=3)
    x_test, y_test = image_set(5, 32, 32, 3, seed=4)
    np.savez(tmp_path / "cifar_like.npz", x_train=x_train, y_train=y_train[:, None],
             x_test=x_test, y_test=y_test[:, None],
             class_names=np.array(["airplane", "automobile", "bird", "cat", "deer", "dog",
                                   "frog", "horse", "ship", "truck"]))
    data = load_dataset(str(tmp_path / "cifar_like.npz"))
    assert data.input_shape == (32, 32, 3) and data.class_names[9] == "truck"
    assert (len(data.train), len(data.val)) == (27, 3)
    np.testing.assert_array_equal(data.val.labels, y_train[27:])
    np.testing.assert_array_equal(data.test.images, x_test)
    assert data.scaling()["divisor"] == 255.0

    # floats already in [0, 1] stay floats (the network takes them as they are) ...
    floats = (x_test[..., :1].astype(np.float32) / 255.0)
    np.savez(tmp_path / "floats.npz", x_train=floats, y_train=y_test, x_test=floats,
             y_test=y_test, x_val=floats[:2], y_val=y_test[:2])
    data = load_npz(tmp_path / "floats.npz")
    assert data.train.images.dtype == np.float32 and data.scaling()["divisor"] == 1.0
    np.testing.assert_array_equal(data.train.images, floats)
    assert len(data.val) == 2 and len(data.train) == 5  # its own validation split
    np.testing.assert_array_equal(data.train.as_float32(), floats)  # not divided again
    # ... and whole-number floats 0..255 are bytes
    np.savez(tmp_path / "bytes.npz", x_train=x_train.astype(np.float64), y_train=y_train,
             x_test=x_test.astype(np.float32), y_test=y_test.astype(np.float32))
    data = load_npz(tmp_path / "bytes.npz")
    assert data.train.images.dtype == np.uint8
    np.testing.assert_array_equal(data.train.images[:27], x_train[:27])


@pytest.mark.parametrize("change, message", [
    (dict(y_train="short"), r"y_train has 9 labels but x_train has 10 images"),
    (dict(y_test="negative"), r"y_test has label -1 \(at index 0\); expected class indices >= 0"),
    (dict(class_names=["a", "b"]), r"train labels has label \d at index \d+, out of range for 2 "
                                   r"classes; expected 0\.\.1"),
    (dict(x_train="scaled"), r"x_train of dtype float32 with values 0\.5\.\.300\.5; expected "
                             r"floats in \[0, 1\]"),
    (dict(x_train="nan"), r"x_train holds NaN or infinite pixels"),
    (dict(y_train="onehot"), r"y_train of shape \(10, 4\); expected class indices of shape "
                             r"\(n,\) \(one-hot rows\? use y\.argmax\(axis=1\)\)"),
    (dict(drop="y_test"), r"missing keys \['y_test'\]"),
    (dict(x_test="other_size"), r"test images are 3x3x1 but train images are 4x4x1"),
    (dict(x_train="empty"), r"x_train holds no images"),
])
def test_npz_rejections(tmp_path, change, message):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.integers(0, 256, (10, 4, 4), dtype=np.uint8),
                  y_train=np.arange(10) % 4,
                  x_test=rng.integers(0, 256, (3, 4, 4), dtype=np.uint8), y_test=np.arange(3))
    for key, value in change.items():
        if key == "drop":
            del arrays[value]
        elif value == "short":
            arrays[key] = arrays[key][:9]
        elif value == "negative":
            arrays[key] = arrays[key] - 1
        elif value == "scaled":
            arrays[key] = arrays[key].astype(np.float32) + 0.5
            arrays[key][0, 0, 0] = 300.5
            arrays[key][0, 0, 1] = 0.5
        elif value == "nan":
            arrays[key] = arrays[key].astype(np.float32) / 255
            arrays[key][1, 2, 3] = np.nan
        elif value == "onehot":
            arrays[key] = np.eye(4)[arrays[key]]
        elif value == "other_size":
            arrays[key] = arrays[key][:, :3, :3]
        elif value == "empty":
            arrays[key] = arrays[key][:0]
            arrays["y_train"] = arrays["y_train"][:0]
        elif key == "class_names":
            arrays[key] = np.array(value)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message) as error:
        load_dataset(str(tmp_path / "bad.npz"))
    assert "bad.npz" in str(error.value)


# ---- image folders ---------------------------------------------------------------------------

Image = pytest.importorskip("PIL.Image")


def write_tree(root, split, classes, count, size=(6, 5), mode="L", fmt="png", seed=0):
    """count images per class: pixel (y, x) = 10*class + 3*y + x (+ 50 per colour channel)."""
    pixels = {}
    for label, name in enumerate(classes):
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            h, w = size
            base = (10 * label + 3 * np.arange(h)[:, None] + np.arange(w)[None, :] + i) % 200
            if mode == "L":
                array = base.astype(np.uint8)
            else:
                array = np.stack([base, base + 20, base + 50], axis=2).astype(np.uint8)
            path = folder / f"img{i:02d}.{fmt}"
            if fmt == "jpg":
                Image.fromarray(array, mode=mode).save(path, quality=100, subsampling=0)
            else:
                Image.fromarray(array, mode=mode).save(path)
            pixels[path] = (array, label)
    return pixels


def test_image_folder_grayscale_png(tmp_path):
    classes = ["boot", "coat", "shirt"]
    train = write_tree(tmp_path, "train", classes, 10)
    test = write_tree(tmp_path, "test", classes, 2)
    (tmp_path / "train" / "coat" / "notes.txt").write_text("not an image")  # ignored
    data = load_dataset(str(tmp_path))
    assert data.class_names == tuple(classes) and data.input_shape == (6, 5, 1)
    assert (len(data.train), len(data.val), len(data.test)) == (27, 3, 6)
    # The test split in file order: class by class, file name order.
    expected = np.stack([a for a, _ in test.values()])[..., None]
    np.testing.assert_array_equal(data.test.images, expected)
    assert data.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # Train and validation together hold every training image exactly once (a fixed shuffle:
    # the validation split is not just the last class).
    seen = np.concatenate([data.train.images, data.val.images])[..., 0]
    labels = np.concatenate([data.train.labels, data.val.labels])
    originals = {(a.tobytes(), l) for a, l in train.values()}
    assert {(im.tobytes(), int(l)) for im, l in zip(seen, labels)} == originals
    assert len(set(data.val.labels.tolist())) > 1 or len(data.val) == 1
    again = load_dataset(str(tmp_path))
    np.testing.assert_array_equal(again.val.images, data.val.images)  # deterministic


def test_image_folder_colour_jpeg_mixed_with_grayscale_and_a_val_folder(tmp_path):
    jpegs = write_tree(tmp_path, "train", ["cat", "dog"], 3, size=(8, 8), mode="RGB", fmt="jpg")
    write_tree(tmp_path, "train", ["dog"], 1, size=(8, 8), mode="L", fmt="png")
    test = write_tree(tmp_path, "test", ["cat", "dog"], 1, size=(8, 8), mode="RGB", fmt="png")
    write_tree(tmp_path, "val", ["cat"], 2, size=(8, 8), mode="RGB", fmt="png")
    data = load_image_folder(tmp_path)
    assert data.input_shape == (8, 8, 3) and data.class_names == ("cat", "dog")
    assert (len(data.train), len(data.val), len(data.test)) == (7, 2, 2)
    np.testing.assert_array_equal(data.test.images, np.stack([a for a, _ in test.values()]))
    # the grayscale PNG became RGB with three equal channels
    gray = [im for im in data.train.images if np.array_equal(im[..., 0], im[..., 2])]
    assert len(gray) == 1
    # JPEG at quality 100 is close to the written pixels, channel for channel
    written = {a.tobytes(): a for a, label in jpegs.values()}
    cats = data.train.images[data.train.labels == 0].astype(int)
    for image in cats:
        best = min(np.abs(image - a.astype(int)).max() for a in written.values())
        assert best <= 6, best


@pytest.mark.parametrize("problem, message", [
    ("empty", r"train/coat: empty class folder \(no \.png/\.jpg/\.jpeg files\); expected at "
              r"least one image per class"),
    ("sizes", r"image of 7x5 \(height x width\), but .* is 6x5; expected one size"),
    ("unknown_test_class", r"test: class folder\(s\) \['hat'\] do not exist under"),
    ("no_test", r"no test/ folder; expected an image-folder tree"),
    ("unreadable", r"broken\.png: cannot be read as an image"),
    ("transparent", r"has transparent pixels"),
    ("sixteen_bit", r"16/32-bit\); expected 8-bit grayscale or RGB"),
])
def test_image_folder_rejections(tmp_path, problem, message):
    write_tree(tmp_path, "train", ["boot", "coat"], 2)
    if problem != "no_test":
        write_tree(tmp_path, "test", ["boot", "coat"], 1)
    folder = tmp_path / "train" / "coat"
    if problem == "empty":
        for path in folder.iterdir():
            path.unlink()
    elif problem == "sizes":
        Image.fromarray(np.zeros((7, 5), np.uint8)).save(folder / "zz.png")
    elif problem == "unknown_test_class":
        write_tree(tmp_path, "test", ["hat"], 1)
    elif problem == "unreadable":
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    elif problem == "transparent":
        rgba = np.zeros((6, 5, 4), np.uint8)
        rgba[..., 3] = 128
        Image.fromarray(rgba, mode="RGBA").save(folder / "zz.png")
    elif problem == "sixteen_bit":
        Image.fromarray(np.zeros((6, 5), np.uint16)).save(folder / "zz.png")
    error_type = DatasetNotFoundError if problem == "no_test" else ValueError
    with pytest.raises(error_type, match=message):
        load_dataset(str(tmp_path))


# ---- one entry point -------------------------------------------------------------------------


def test_load_dataset_names_what_it_expects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"--dataset nowhere: no such file or "
                                                   r"directory, and not one of mnist, "
                                                   r"fashion-mnist; expected .*\.npz"):
        load_dataset("nowhere")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"a file that is not \.npz"):
        load_dataset(str(tmp_path / "data.csv"))
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 junk")
    with pytest.raises(ValueError, match=r"x\.npz: cannot be read as \.npz"):
        load_dataset(str(tmp_path / "x.npz"))
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match=r"--data-dir .* only used with --dataset mnist or "
                                         r"fashion-mnist"):
        load_dataset(str(tmp_path / "d"), data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"no train images, train labels, test images, "
                                                   r"test labels file"):
        load_dataset(str(tmp_path / "d"))
