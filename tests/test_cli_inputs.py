"""ttfs-infer's everyday inputs and per-image rows, against pyttfs and hand-made expectations.

Every file here is written by the test with an independent writer (numpy's np.save, gzip,
Pillow, struct), and every new input format and error is exercised through the real binary.
pyttfs.read_images is checked against the same writer's arrays (independent), and the CLI
against pyttfs on the same files: the potentials it prints are a function of the exact pixels
it ran, so equal potentials for every image mean it read the same array.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pyttfs
from export.ttfs_format import build_model, conv2d, dense, flatten, input_layer, maxpool, write_model
from test_cli import CLASSES, CLI, ERROR_LINE, SHAPE, write_idx_u8, write_labels, write_net

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

N = 12


@pytest.fixture(scope="module", autouse=True)
def cli_built():
    if not CLI.is_file():
        pytest.skip(f"{CLI} is not built (CMake option TTFS_BUILD_CLI=ON builds it next to libttfs)")


def cli(*args, stdin=None, check=True):
    result = subprocess.run([str(CLI), *map(str, args)], capture_output=True, timeout=60,
                            input=stdin)
    result.stdout_text = result.stdout.decode()
    result.stderr_text = result.stderr.decode()
    if check:
        assert result.returncode == 0, f"ttfs-infer {args}: {result.stderr_text}"
    return result


def cli_json(*args, stdin=None):
    return json.loads(cli(*args, "--json", stdin=stdin).stdout_text)


def expect_error(args, words, status=1, stdin=None):
    result = cli(*args, stdin=stdin, check=False)
    assert result.returncode == status, f"{args}: exit {result.returncode}: {result.stderr_text}"
    lines = result.stderr_text.splitlines()
    assert len(lines) == 1 and ERROR_LINE.fullmatch(lines[0]), result.stderr_text
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert result.stdout_text == ""
    return lines[0]


def reference(model_path, images, allow_unscaled=False):
    """pyttfs's predictions and potentials for an (n, h, w, c) array."""
    with pyttfs.Model(model_path) as model, \
            model.session(backend="cpu", max_batch=len(images), allow_unscaled=allow_unscaled,
                          record_spike_times=True) as session:
        result = session.run(images)
        times = session.spike_times(len(model.layers) - 1).reshape(len(images), -1)
    return result, times


def write_rgb_net(path):
    """8x8x3 input -> conv 3x3 (4) -> or-pool -> dense 5: a model for colour images."""
    rng = np.random.default_rng(11)
    layers = [input_layer((8, 8, 3)),
              conv2d("conv1", rng.normal(0.08, 0.3, (3, 3, 3, 4)), np.full(4, -0.02)),
              maxpool("pool1", mode="or"), flatten(),
              dense("fc", rng.normal(0.03, 0.25, (36, CLASSES)), np.full(CLASSES, -0.01))]
    write_model(build_model(layers, time_steps=240, readout="vmem"), path)
    return Path(path)


def save_png(path, array):
    array = np.asarray(array, np.uint8)
    mode = "L" if array.ndim == 2 or array.shape[-1] == 1 else "RGB"
    Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[-1] == 1 else array,
                    mode).save(path)
    return Path(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(17)
    images = rng.integers(0, 256, (N,) + SHAPE, dtype=np.uint8)
    images[rng.random(images.shape) < 0.4] = 0
    images[0] = 0  # a blank image: no output spike under first_spike readout
    labels = rng.integers(0, CLASSES, N)
    f = {"base": base, "images": images, "labels": labels,
         "vmem": write_net(base / "vmem.ttfs", "vmem"),
         "first_spike": write_net(base / "first_spike.ttfs", "first_spike"),
         "rgb_model": write_rgb_net(base / "rgb.ttfs"),
         "idx": write_idx_u8(base / "images.idx3", images[..., 0]),
         "labels_idx": write_labels(base / "labels.idx1", labels)}
    np.save(base / "labels.npy", labels.astype(np.int64))
    f["labels_npy"] = base / "labels.npy"
    return f


# ---- pyttfs.read_images against the writer's own arrays (independent) ------------------------

def test_read_images_gives_back_what_was_written(files):
    base, images = files["base"], files["images"]
    shape = SHAPE
    np.save(base / "u8.npy", images)
    np.save(base / "nhw.npy", images[..., 0])
    np.save(base / "i64.npy", images.astype(np.int64))
    np.save(base / "u16_be.npy", images.astype(">u2"))
    np.save(base / "f32.npy", images.astype(np.float32) / 255)
    (base / "images.idx3.gz").write_bytes(gzip.compress(files["idx"].read_bytes()))
    for name, dtype in [("u8.npy", np.uint8), ("nhw.npy", np.uint8), ("i64.npy", np.uint8),
                        ("u16_be.npy", np.uint8), ("images.idx3", np.uint8),
                        ("images.idx3.gz", np.uint8)]:
        got = pyttfs.read_images(base / name, shape)
        assert got.dtype == dtype and got.shape == (N,) + shape, name
        np.testing.assert_array_equal(got, images, err_msg=name)
    floats = pyttfs.read_images(base / "f32.npy", shape)
    assert floats.dtype == np.float32
    np.testing.assert_array_equal(floats, images.astype(np.float32) / 255)
    # (h, w) and (h, w, c) arrays are one image.
    np.save(base / "one_hw.npy", images[3, :, :, 0])
    np.testing.assert_array_equal(pyttfs.read_images(base / "one_hw.npy", shape), images[3:4])


def test_png_directory_order_and_channel_conversion(files, tmp_path):
    images = files["images"]
    directory = tmp_path / "pngs"
    directory.mkdir()
    # Names sort by their bytes: "img10" before "img2"; other files and hidden files ignored.
    names = [f"img{i}.png" for i in range(N)]
    for name, image in zip(names, images):
        save_png(directory / name, image)
    (directory / "notes.txt").write_text("not an image")
    save_png(directory / ".hidden.png", images[0])
    order = sorted(names, key=str.encode)
    assert [p.name for p in pyttfs.image_files(directory)] == order
    got = pyttfs.read_images(directory, SHAPE)
    expected = np.stack([images[int(name[3:-4])] for name in order])
    np.testing.assert_array_equal(got, expected)

    # RGB -> gray by integer BT.601 luma, worked out here by hand for a few pixels.
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)      # (19595 * 255 + 32768) >> 16 = 76
    rgb[0, 1] = (0, 255, 0)      # (38470 * 255 + 32768) >> 16 = 150
    rgb[0, 2] = (0, 0, 255)      # (7471 * 255 + 32768) >> 16 = 29
    rgb[0, 3] = (10, 200, 30)    # (195950 + 7694000 + 224130 + 32768) >> 16 = 124
    rgb[0, 4] = (255, 255, 255)  # 255
    save_png(tmp_path / "colour.png", rgb)
    gray = pyttfs.read_images(tmp_path / "colour.png", SHAPE)
    assert gray.shape == (1, 8, 8, 1)
    assert gray[0, 0, :5, 0].tolist() == [76, 150, 29, 124, 255]
    # Gray -> RGB repeats the value.
    colour = pyttfs.read_images(directory / names[1], (8, 8, 3))
    np.testing.assert_array_equal(colour[0], np.repeat(images[1], 3, axis=-1))


def test_resize_is_an_exact_area_mean(tmp_path):
    # 4x4 -> 2x2: each output is the mean of a 2x2 block (rounded half up).
    block = np.array([[0, 2, 10, 10], [4, 6, 10, 11], [255, 255, 1, 2], [255, 254, 3, 3]],
                     np.uint8)
    save_png(tmp_path / "four.png", block)
    got = pyttfs.read_images(tmp_path / "four.png", (2, 2, 1), resize=True)[0, :, :, 0]
    assert got.tolist() == [[3, 10], [255, 2]]  # 12/4, 41/4=10.25, 1019/4=254.75, 9/4=2.25
    # 3x3 -> 2x2: output (0, 0) covers rows/cols [0, 1.5): weights 1 and 0.5 per axis, area
    # 2.25: (9*1 + 18*.5 + 36*.5 + 72*.25) / 2.25 = (9 + 9 + 18 + 18) / 2.25 = 24.
    three = np.array([[9, 18, 0], [36, 72, 0], [0, 0, 0]], np.uint8)
    save_png(tmp_path / "three.png", three)
    got = pyttfs.read_images(tmp_path / "three.png", (2, 2, 1), resize=True)[0, :, :, 0]
    assert got[0, 0] == 24
    # Without resize=True a size mismatch is an error that says what to do.
    with pytest.raises(pyttfs.ImageReadError, match="4x4 but the model expects 2x2.*resize"):
        pyttfs.read_images(tmp_path / "four.png", (2, 2, 1))


# ---- The CLI reads the same arrays -------------------------------------------------------------

def rows_of(path_or_text, jsonl):
    text = path_or_text if isinstance(path_or_text, str) else Path(path_or_text).read_text()
    if jsonl:
        return [json.loads(line) for line in text.splitlines()]
    return list(csv.DictReader(io.StringIO(text)))


def cli_potentials(model, images_arg, n, *extra, stdin=None):
    """Per-image top-k rows with k = all classes -> (n, classes) scores by class."""
    result = cli(model, images_arg, "--output", "-", "--top-k", CLASSES, "--json", *extra,
                 stdin=stdin)
    rows = rows_of(result.stdout_text, jsonl=False)
    assert len(rows) == n
    scores = np.zeros((n, CLASSES), np.float32)
    for row in rows:
        for k in range(1, CLASSES + 1):
            scores[int(row["index"]), int(row[f"class_{k}"])] = np.float32(row[f"score_{k}"])
    summary = json.loads(result.stderr_text)  # with --output -, the summary goes to stderr
    assert summary["n"] == n
    return scores, rows


@pytest.mark.parametrize("name", ["u8.npy", "nhw.npy", "i64.npy", "u16_be.npy", "i8.npy",
                                  "f32.npy", "f64.npy", "images.idx3.gz", "png_dir", "jpeg_dir"])
def test_cli_and_read_images_agree(files, name):
    base, images = files["base"], files["images"]
    np.save(base / "u8.npy", images)
    np.save(base / "nhw.npy", images[..., 0])
    np.save(base / "i64.npy", images.astype(np.int64))
    np.save(base / "u16_be.npy", images.astype(">u2"))
    np.save(base / "i8.npy", np.minimum(images, 127).astype(np.int8))  # int8 holds 0..127
    np.save(base / "f32.npy", images.astype(np.float32) / np.float32(255))
    np.save(base / "f64.npy", images.astype(np.float64) / 255)
    (base / "images.idx3.gz").write_bytes(gzip.compress(files["idx"].read_bytes()))
    for kind, suffix, options in (("png_dir", "png", {}), ("jpeg_dir", "jpg", {"quality": 80})):
        directory = base / kind
        if not directory.exists():
            directory.mkdir()
            for i, image in enumerate(images):
                Image.fromarray(image[..., 0], "L").save(directory / f"{i:03d}.{suffix}", **options)
    path = base / name
    array = pyttfs.read_images(path, SHAPE)
    if name in ("u8.npy", "nhw.npy", "i64.npy", "u16_be.npy", "images.idx3.gz", "png_dir"):
        np.testing.assert_array_equal(array, images)  # lossless formats: the written pixels
    if name == "i8.npy":
        np.testing.assert_array_equal(array, np.minimum(images, 127))
    expected, _ = reference(files["vmem"], array)
    scores, rows = cli_potentials(files["vmem"], path, N)
    np.testing.assert_array_equal(scores, expected.potentials)
    assert [int(r["prediction"]) for r in rows] == expected.predictions.tolist()
    if name.endswith("_dir"):
        assert [r["file"] for r in rows] == [p.name for p in pyttfs.image_files(path)]


def test_rgb_images_on_a_colour_model_and_gray_images_converted(files, tmp_path):
    rng = np.random.default_rng(4)
    colour = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    directory = tmp_path / "rgb"
    directory.mkdir()
    for i, image in enumerate(colour):
        save_png(directory / f"{i}.png", image)
    array = pyttfs.read_images(directory, (8, 8, 3))
    np.testing.assert_array_equal(array, colour)
    expected, _ = reference(files["rgb_model"], colour)
    result = cli(files["rgb_model"], directory, "--output", "-", "--top-k", CLASSES)
    rows = rows_of(result.stdout_text, jsonl=False)
    assert [int(r["prediction"]) for r in rows] == expected.predictions.tolist()
    # The same colour files on the one-channel model: luma, as read_images computes it.
    gray = pyttfs.read_images(directory, SHAPE)
    assert gray.shape == (3, 8, 8, 1)
    expected_gray, _ = reference(files["vmem"], gray)
    scores, _ = cli_potentials(files["vmem"], directory, 3)
    np.testing.assert_array_equal(scores, expected_gray.potentials)


def test_resize_option(files, tmp_path):
    big = np.kron(files["images"][5, :, :, 0], np.ones((3, 3), np.uint8))  # 24x24
    save_png(tmp_path / "big.png", big)
    expect_error([files["vmem"], tmp_path / "big.png"], ["24x24", "8x8", "--resize"])
    array = pyttfs.read_images(tmp_path / "big.png", SHAPE, resize=True)
    np.testing.assert_array_equal(array[0], files["images"][5])  # 3x3 blocks average back
    document = cli_json(files["vmem"], tmp_path / "big.png", "--resize")
    expected, _ = reference(files["vmem"], array)
    np.testing.assert_array_equal(np.float32(document["potentials"]), expected.potentials[0])
    # An array file cannot be resized: its images must already fit.
    expect_error([files["vmem"], files["idx"], "--resize"], ["--resize", "PNG/JPEG"], status=2)


def test_standard_input(files):
    images = files["images"]
    buffer = io.BytesIO()
    np.save(buffer, images)
    expected, _ = reference(files["vmem"], images)
    scores, _ = cli_potentials(files["vmem"], "-", N, stdin=buffer.getvalue())
    np.testing.assert_array_equal(scores, expected.potentials)
    gz = gzip.compress(files["idx"].read_bytes())
    scores, _ = cli_potentials(files["vmem"], "-", N, stdin=gz)
    np.testing.assert_array_equal(scores, expected.potentials)
    png = io.BytesIO()
    Image.fromarray(images[2, :, :, 0], "L").save(png, format="PNG")
    document = cli_json(files["vmem"], "-", stdin=png.getvalue())
    np.testing.assert_array_equal(np.float32(document["potentials"]), expected.potentials[2])
    # --index on a stream that cannot seek: the images before it are read and dropped.
    document = cli_json(files["vmem"], "-", "--index", 7, stdin=gz)
    np.testing.assert_array_equal(np.float32(document["potentials"]), expected.potentials[7])


def test_gzipped_labels_and_npy_labels(files):
    base = files["base"]
    expected, _ = reference(files["vmem"], files["images"])
    correct = int(np.sum(expected.predictions == files["labels"]))
    gz = base / "labels.idx1.gz"
    gz.write_bytes(gzip.compress(files["labels_idx"].read_bytes()))
    for labels in (files["labels_idx"], gz, files["labels_npy"]):
        document = cli_json(files["vmem"], files["idx"], "--labels", labels)
        assert document["correct"] == correct, labels


# ---- Per-image rows ---------------------------------------------------------------------------

def softmax(values):
    values = np.asarray(values, np.float64)
    e = np.exp(values - values.max())
    return e / e.sum()


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_rows_vmem(files, tmp_path, suffix):
    out = tmp_path / f"rows.{suffix}"
    summary = cli_json(files["vmem"], files["idx"], "--labels", files["labels_idx"],
                       "--output", out, "--top-k", 2, "--batch", 5)
    expected, _ = reference(files["vmem"], files["images"])
    rows = rows_of(out, jsonl=suffix == "jsonl")
    assert len(rows) == N and summary["n"] == N and summary["output"] == str(out)
    for i, row in enumerate(rows):
        potentials = expected.potentials[i]
        ranking = sorted(range(CLASSES), key=lambda k: (-potentials[k], k))[:2]
        if suffix == "jsonl":
            assert set(row) == {"index", "prediction", "confidence", "top_k", "label", "correct"}
            classes = [entry["class"] for entry in row["top_k"]]
            scores = [entry["score"] for entry in row["top_k"]]
            label, correct = row["label"], row["correct"]
        else:
            assert list(row) == ["index", "prediction", "confidence", "class_1", "score_1",
                                 "class_2", "score_2", "label", "correct"]
            classes = [int(row["class_1"]), int(row["class_2"])]
            scores = [float(row["score_1"]), float(row["score_2"])]
            label, correct = int(row["label"]), row["correct"] == "1"
        assert int(row["index"]) == i
        assert int(row["prediction"]) == expected.predictions[i] == ranking[0]
        assert classes == ranking
        np.testing.assert_array_equal(np.float32(scores), potentials[ranking])
        assert float(row["confidence"]) == pytest.approx(softmax(potentials)[ranking[0]],
                                                         rel=1e-7)
        assert label == files["labels"][i] and correct == (label == expected.predictions[i])


def test_rows_first_spike_score_the_value_a_spike_codes(files, tmp_path):
    out = tmp_path / "rows.jsonl"
    cli(files["first_spike"], files["idx"], "--output", out, "--top-k", CLASSES)
    expected, times = reference(files["first_spike"], files["images"])
    with pyttfs.Model(files["first_spike"]) as model:
        fc = model.layers[-1]
    fired_rows = 0
    for i, row in enumerate(rows_of(out, jsonl=True)):
        # A class that fired scores its threshold at the spike step (float32 arithmetic, as the
        # library's table is made); one that did not, its potential.
        values = np.array([
            np.float32(fc.vth0) * np.exp(-(np.float32(t - fc.fire_window[0]) - np.float32(fc.td_fire))
                                         / np.float32(fc.tau_fire), dtype=np.float32)
            if t >= 0 else expected.potentials[i][k] for k, t in enumerate(times[i])], np.float32)
        fired_rows += int((times[i] >= 0).any())
        assert row["prediction"] == expected.predictions[i]
        assert row["top_k"][0]["class"] == expected.predictions[i]
        got = {entry["class"]: entry["score"] for entry in row["top_k"]}
        np.testing.assert_allclose([got[k] for k in range(CLASSES)], values, rtol=1e-6)
    assert 0 < fired_rows < N, "the fixture needs images with and without output spikes"


def test_rows_for_one_image_and_to_stdout(files, tmp_path):
    result = cli(files["vmem"], files["idx"], "--index", 4, "--output", "-")
    rows = rows_of(result.stdout_text, jsonl=False)
    assert len(rows) == 1 and rows[0]["index"] == "4"
    assert "predicted class:" in result.stderr_text  # the report moved to standard error


# ---- Bad input: one clear line each ------------------------------------------------------------

@pytest.fixture(scope="module")
def bad(files):
    base = files["base"]
    images = files["images"]
    p = {}

    def npy(name, array):
        np.save(base / name, array)
        p[name] = base / name

    nan = (images / 255).astype(np.float32)
    nan[3, 2, 5, 0] = np.nan
    npy("nan.npy", nan)
    inf = (images / 255).astype(np.float32)
    inf[1, 0, 0, 0] = np.inf
    npy("inf.npy", inf)
    npy("unscaled.npy", images.astype(np.float32))  # 0..255 floats: the classic mistake
    negative = (images / 255).astype(np.float32)
    negative[2, 1, 1, 0] = -0.5
    npy("negative.npy", negative)
    big_ints = images.astype(np.int32)
    big_ints[6, 7, 7, 0] = 300
    npy("int300.npy", big_ints)
    npy("wrong_shape.npy", np.zeros((4, 7, 8), np.uint8))
    npy("bool.npy", np.zeros((4, 8, 8), bool))
    npy("float16.npy", np.zeros((4, 8, 8), np.float16))
    npy("float_labels.npy", files["labels"].astype(np.float32))
    np.save(base / "fortran.npy", np.asfortranarray(np.zeros((2, 8, 8, 1), np.float32)))
    p["fortran.npy"] = base / "fortran.npy"
    npy("labels_2d.npy", files["labels"].astype(np.int64).reshape(-1, 1))
    # Hand-made .npy headers: a format version numpy never wrote, and a dimension past 64 bits.
    def raw_npy(name, version, header):
        text = header.encode("latin1")
        (base / name).write_bytes(b"\x93NUMPY" + bytes([version, 0]) + len(text).to_bytes(2, "little")
                                  + text)
        p[name] = base / name
    raw_npy("version9.npy", 9, "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 8, 8), }")
    raw_npy("version9_labels.npy", 9, "{'descr': '|u1', 'fortran_order': False, 'shape': (8,), }")
    raw_npy("huge_dim.npy", 1,
            "{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999999999999999, 8, 8), }")
    raw_npy("no_shape.npy", 1, "{'descr': '|u1', 'fortran_order': False, }")
    gz = gzip.compress(files["idx"].read_bytes())
    (base / "truncated.idx.gz").write_bytes(gz[: len(gz) // 2])
    p["truncated.idx.gz"] = base / "truncated.idx.gz"
    (base / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    p["broken.png"] = base / "broken.png"
    (base / "mystery.dat").write_bytes(b"GIF89a" + bytes(20))
    p["mystery.dat"] = base / "mystery.dat"
    cmyk = base / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(cmyk)
    p["cmyk.jpg"] = cmyk
    small = base / "small.png"
    save_png(small, images[0, :7, :7])
    p["small.png"] = small
    return p


BAD = [
    ("NaN pixel", ["{vmem}", "{nan.npy}"], 1, ["nan.npy", "image 3", "h 2, w 5, c 0", "finite"]),
    ("infinite pixel", ["{vmem}", "{inf.npy}"], 1, ["image 1", "inf", "finite"]),
    ("NaN even when unscaled is allowed", ["{vmem}", "{nan.npy}", "--allow-unscaled"], 1,
     ["finite"]),
    ("unscaled floats", ["{vmem}", "{unscaled.npy}"], 1,
     ["[0, 1]", "divide by 255", "--allow-unscaled"]),
    ("negative float", ["{vmem}", "{negative.npy}"], 1, ["image 2", "-0.5", "[0, 1]"]),
    ("int out of range", ["{vmem}", "{int300.npy}"], 1, ["image 6", "= 300", "0..255"]),
    ("npy shape", ["{vmem}", "{wrong_shape.npy}"], 1, ["(4, 7, 8)", "(n, 8, 8, 1)"]),
    ("npy bool", ["{vmem}", "{bool.npy}"], 1, ["|b1", "uint8"]),
    ("npy float16", ["{vmem}", "{float16.npy}"], 1, ["<f2", "float32"]),
    ("npy fortran order", ["{vmem}", "{fortran.npy}"], 1, ["Fortran"]),
    ("npy float labels", ["{vmem}", "{idx}", "--labels", "{float_labels.npy}"], 1,
     ["float_labels.npy", "<f4", "expected integers"]),
    ("npy 2-D labels", ["{vmem}", "{idx}", "--labels", "{labels_2d.npy}"], 1,
     ["labels_2d.npy", "(12, 1)", "one dimension (n,)"]),
    ("npy version", ["{vmem}", "{version9.npy}"], 1, ["version9.npy", "version 9", "1, 2 or 3"]),
    ("npy labels version", ["{vmem}", "{idx}", "--labels", "{version9_labels.npy}"], 1,
     ["labels file", "version9_labels.npy", "version 9"]),
    ("npy dimension too large", ["{vmem}", "{huge_dim.npy}"], 1, ["huge_dim.npy", "too large"]),
    ("npy header without shape", ["{vmem}", "{no_shape.npy}"], 1, ["no_shape.npy", "'shape'"]),
    ("truncated gzip", ["{vmem}", "{truncated.idx.gz}"], 1, ["truncated.idx.gz", "truncated"]),
    ("broken png", ["{vmem}", "{broken.png}"], 1, ["broken.png", "PNG"]),
    ("unknown format", ["{vmem}", "{mystery.dat}"], 1, ["47494638", "PNG or JPEG", ".npy", "IDX"]),
    ("cmyk jpeg", ["{vmem}", "{cmyk.jpg}"], 1, ["cmyk.jpg", "CMYK"]),
    ("image size", ["{vmem}", "{small.png}"], 1, ["7x7", "8x8", "--resize"]),
    ("top-k over classes", ["{vmem}", "{idx}", "--output", "-", "--top-k", "6"], 2,
     ["--top-k 6", "5 classes"]),
    ("top-k without output", ["{vmem}", "{idx}", "--top-k", "2"], 2, ["--output"]),
    ("both on stdin", ["{vmem}", "-", "--labels", "-"], 2, ["standard input"]),
    ("info with images", ["{vmem}", "{idx}", "--info"], 2, ["--info"]),
    ("png on a 2-channel model", ["{two_channel}", "{small.png}"], 1, ["2 input channels"]),
]


@pytest.mark.parametrize("case, args, status, words", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_one_error_line(case, args, status, words, files, bad, tmp_path_factory):
    paths = {k: v for k, v in files.items() if isinstance(v, Path)}
    paths.update(bad)
    if "{two_channel}" in args:
        path = tmp_path_factory.mktemp("two") / "two.ttfs"
        rng = np.random.default_rng(0)
        write_model(build_model([input_layer((7, 7, 2)), flatten(),
                                 dense("fc", rng.normal(0, 0.2, (98, 3)))], time_steps=160), path)
        paths["two_channel"] = path
    argv = []
    for arg in args:
        for key, value in paths.items():
            arg = arg.replace("{" + key + "}", str(value))
        argv.append(arg)
    expect_error(argv, words, status=status)


def test_allow_unscaled_runs_the_values_as_given(files, bad):
    values = np.load(bad["unscaled.npy"])
    expected, _ = reference(files["vmem"], values, allow_unscaled=True)
    scores, _ = cli_potentials(files["vmem"], bad["unscaled.npy"], N, "--allow-unscaled")
    np.testing.assert_array_equal(scores, expected.potentials)
    # ... and the unscaled run really differs from the scaled one (the check matters).
    scaled, _ = reference(files["vmem"], values / np.float32(255))
    assert not np.array_equal(scaled.potentials, expected.potentials)


# ---- --info -------------------------------------------------------------------------------------

def test_info_describes_the_tiny_model(tiny_model_path):
    from conftest import TINY, TINY_NEURONS

    document = cli_json(tiny_model_path, "--info")
    data = tiny_model_path.read_bytes()
    assert document["format_version"] == 1
    assert document["file_size"] == len(data)
    assert int(document["crc32"], 16) == __import__("zlib").crc32(data[:-4])
    assert document["time_steps"] == TINY["time_steps"] and document["readout"] == TINY["readout"]
    assert document["input_shape"] == list(TINY["input_shape"]) and document["classes"] == 5
    assert document["metadata"] == TINY["metadata"]
    assert len(document["layers"]) == len(TINY["layers"])
    for got, (name, kind, depth, shape, kernel, stride, padding, pool, integ, fire) in zip(
            document["layers"], TINY["layers"]):
        assert (got["name"], got["kind"], got["depth"], tuple(got["shape"])) == (name, kind, depth, shape)
        if kind in ("conv2d", "maxpool"):
            assert (tuple(got["kernel"]), tuple(got["stride"]), got["padding"]) == (kernel, stride, padding)
        assert got.get("pool_mode") == pool
        if fire is not None:
            assert tuple(got["fire_window"]) == fire
            assert got["tau_fire"] == TINY_NEURONS[name]["tau_fire"]
            assert got["td_fire"] == TINY_NEURONS[name]["td_fire"]
        if integ is not None:
            assert tuple(got["integ_window"]) == integ
    text = cli(tiny_model_path, "--info").stdout_text
    for word in ("format version 1", "CRC-32 " + document["crc32"], "conv2d", "[20,40)",
                 "2x2 /2x2 valid or", "made_by"):
        assert word in text, word


def test_python_info_says_the_same(tiny_model_path):
    import subprocess as sp
    import sys

    document = cli_json(tiny_model_path, "--info")
    result = sp.run([sys.executable, "-m", "pyttfs", "info", str(tiny_model_path), "--json"],
                    capture_output=True, text=True, timeout=60,
                    cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    python = json.loads(result.stdout)
    for key in ("model", "format_version", "crc32", "file_size", "time_steps", "readout",
                "input_shape", "classes", "metadata"):
        assert python[key] == document[key], key
    for a, b in zip(python["layers"], document["layers"]):
        assert set(a) == set(b)
        for key in a:
            if isinstance(a[key], float):
                assert np.float32(a[key]) == np.float32(b[key]), key
            else:
                assert a[key] == b[key], key
    assert math.isclose(python["input_divisor"], document["input_divisor"])


def test_python_info_of_a_damaged_file_is_one_error_line():
    import subprocess as sp
    import sys

    damaged = Path(__file__).resolve().parent / "corrupt" / "bad_crc.ttfs"
    result = sp.run([sys.executable, "-m", "pyttfs", "info", str(damaged)], capture_output=True,
                    text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("python -m pyttfs info: error: TTFS_ERR_BAD_CRC: ")
    assert str(damaged) in result.stderr


def test_a_build_without_image_libraries_says_so(files, tmp_path):
    """ttfs-infer compiled without libpng, libjpeg and zlib (CMake did not find them) still
    builds, runs arrays, and names what it cannot read."""
    import shutil

    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler on the PATH")
    repo = Path(__file__).resolve().parent.parent
    library_dir = Path(pyttfs.library_path).resolve().parent
    program = tmp_path / "ttfs-infer-plain"
    sources = [str(repo / "cuda" / "ttfs_infer.cpp")] + sorted(
        str(path) for path in (repo / "cuda").glob("cli_*.cpp"))  # its units (CMakeLists.txt)
    subprocess.run([compiler, "-std=c++17", "-O1", f"-I{repo / 'include'}", f"-I{repo / 'cuda'}",
                    *sources, f"-L{library_dir}", "-lttfs", f"-Wl,-rpath,{library_dir}", "-o",
                    str(program)],
                   check=True, timeout=300)
    save_png(tmp_path / "digit.png", files["images"][1])
    Image.fromarray(files["images"][1, :, :, 0], "L").save(tmp_path / "digit.jpg")
    (tmp_path / "images.idx.gz").write_bytes(gzip.compress(files["idx"].read_bytes()))
    for name, words in (("digit.png", ["built without PNG support", "libpng"]),
                        ("digit.jpg", ["built without JPEG support", "libjpeg"]),
                        ("images.idx.gz", ["gzipped", "built without zlib"])):
        result = subprocess.run([str(program), str(files["vmem"]), str(tmp_path / name)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and ERROR_LINE.fullmatch(result.stderr.strip()), result.stderr
        for word in words:
            assert word in result.stderr, (word, result.stderr)
    plain = subprocess.run([str(program), str(files["vmem"]), str(files["idx"]), "--json"],
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0 and json.loads(plain.stdout)["n"] == N
