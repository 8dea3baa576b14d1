"""ttfs-infer, the command-line runner, against pyttfs and against answers worked out by hand.

The IDX files are written here with struct, byte by byte from the IDX specification, so the
CLI's reader is checked against an independent writer. The binary is the one next to the
library pyttfs loaded (TTFS_LIBRARY, or build/).
"""
from __future__ import annotations

import json
import os
import pty
import re
import resource
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pyttfs
from export.ttfs_format import (build_model, conv2d, dense, flatten, input_layer, maxpool,
                                read_model, to_bytes, write_model)
from test_c_programs import write_abi_smoke_model

CLI = Path(pyttfs.lib._name).resolve().parent / "ttfs-infer"
ERROR_LINE = re.compile(r"ttfs-infer: error: \S.*")

N_IMAGES = 40
SHAPE = (8, 8, 1)
CLASSES = 5


@pytest.fixture(scope="module", autouse=True)
def cli_built():
    if not CLI.is_file():
        pytest.skip(f"{CLI} is not built (CMake option TTFS_BUILD_CLI=ON builds it next to libttfs)")


def run_cli(*args, check=True, **kwargs):
    result = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True,
                            timeout=60, **kwargs)
    if check:
        assert result.returncode == 0, f"ttfs-infer {args} exited {result.returncode}:\n{result.stderr}"
        assert result.stderr == "", "stderr is not a TTY: no progress line, no notes expected"
    return result


def run_json(*args):
    result = run_cli(*args, "--json")
    assert len(result.stdout.strip().splitlines()) == 1, "--json prints one line"
    return json.loads(result.stdout)


# ---- Files, written independently of the CLI ---------------------------------------------------

def write_idx_u8(path, images, with_channels=False):
    """IDX3 (n, h, w), magic 0x00000803, or IDX4 (n, h, w, c), magic 0x00000804."""
    images = np.asarray(images, dtype=np.uint8)
    if with_channels:
        header = struct.pack(">I4I", 0x00000804, *images.shape)
    else:
        header = struct.pack(">I3I", 0x00000803, *images.shape[:3])
    Path(path).write_bytes(header + images.tobytes())
    return Path(path)


def write_idx_f32(path, values, with_channels=True):
    """IDX of big-endian float32: 0x00000D04 (n, h, w, c) or 0x00000D03 (n, h, w)."""
    values = np.asarray(values, dtype=np.float32)
    if with_channels:
        header = struct.pack(">I4I", 0x00000D04, *values.shape)
    else:
        header = struct.pack(">I3I", 0x00000D03, *values.shape[:3])
    Path(path).write_bytes(header + values.astype(">f4").tobytes())
    return Path(path)


def write_labels(path, labels):
    Path(path).write_bytes(struct.pack(">II", 0x00000801, len(labels))
                           + np.asarray(labels, dtype=np.uint8).tobytes())
    return Path(path)


def write_bin(path, image_f32):
    Path(path).write_bytes(np.asarray(image_f32, dtype="<f4").tobytes())
    return Path(path)


def scaled(images_u8):
    """The library's own scaling of uint8 pixels: float32(byte) / float32(255)."""
    return images_u8.astype(np.float32) / np.float32(255.0)


def write_net(path, readout):
    """conv 3x3 -> or-pool -> flatten -> dense 5. Seeded weights, positive enough that every
    layer spikes for most images; negative biases so that a blank image stays silent."""
    rng = np.random.default_rng(3)
    layers = [input_layer(SHAPE),
              conv2d("conv1", rng.normal(0.12, 0.35, (3, 3, 1, 4)), np.full(4, -0.02)),
              maxpool("pool1", mode="or"),
              flatten(),
              dense("fc", rng.normal(0.03, 0.25, (36, CLASSES)), np.full(CLASSES, -0.01))]
    write_model(build_model(layers, time_steps=240, readout=readout), path)
    return Path(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (N_IMAGES,) + SHAPE, dtype=np.uint8)
    images[rng.random(images.shape) < 0.4] = 0  # sparse, like digits
    images[0] = 0                               # nothing fires: no output spike either
    files = {
        "vmem": write_net(base / "vmem.ttfs", "vmem"),
        "first_spike": write_net(base / "first_spike.ttfs", "first_spike"),
        "idx3": write_idx_u8(base / "images.idx3", images[..., 0]),
        "idx4": write_idx_u8(base / "images.idx4", images, with_channels=True),
        "f32_idx4": write_idx_f32(base / "images.f32.idx4", scaled(images)),
        "f32_idx3": write_idx_f32(base / "images.f32.idx3", scaled(images), with_channels=False),
    }
    # Labels: half of them the vmem model's own prediction, the rest random, so the accuracy
    # lies strictly between 0 and 1 and a wrong count shows.
    with pyttfs.Model(files["vmem"]) as model:
        predictions = model.session(backend="cpu", max_batch=N_IMAGES).run(images).predictions
    labels = np.where(np.arange(N_IMAGES) % 2 == 0, predictions, rng.integers(0, CLASSES, N_IMAGES))
    files["labels"] = write_labels(base / "labels.idx1", labels)
    return {"dir": base, "images": images, "label_values": labels, **files}


def pyttfs_reference(model_path, images, engine="analytic"):
    """Predictions, potentials, spike counts per neuron layer and output spike times, from
    pyttfs in one batch."""
    with pyttfs.Model(model_path) as model:
        session = model.session(backend="cpu", engine=engine, max_batch=len(images),
                                record_spike_times=True)
        result = session.run(images)
        counts = {layer.name: session.spike_counts(i) for i, layer in enumerate(model.layers)
                  if layer.has_neurons}
        output_times = session.spike_times(len(model.layers) - 1).reshape(len(images), -1)
    return result, counts, output_times


# ---- Text output parsing ----------------------------------------------------------------------

def parse_single(stdout):
    """(potentials by class, first-spike column or None, predicted class, label or None)."""
    potentials, spikes = [], []
    for line in stdout.splitlines():
        match = re.fullmatch(r"\s*(\d+)\s+(\S+)(?:\s+(\d+|none))?\s*", line)
        if match:
            assert int(match.group(1)) == len(potentials), f"classes out of order: {line!r}"
            potentials.append(float(match.group(2)))
            spikes.append(match.group(3))
    predicted = re.search(r"^predicted class: (\d+)$", stdout, re.M)
    label = re.search(r"^label: (\d+)$", stdout, re.M)
    assert predicted, stdout
    spike_column = None if all(s is None for s in spikes) else [-1 if s == "none" else int(s) for s in spikes]
    return (np.array(potentials, dtype=np.float32), spike_column, int(predicted.group(1)),
            int(label.group(1)) if label else None)


# ---- One image ----------------------------------------------------------------------------------

def test_one_bin_image_prints_the_potentials_and_class_pyttfs_computes(data):
    for i in (1, 2, 3):
        image = scaled(data["images"][i])
        path = write_bin(data["dir"] / f"image{i}.bin", image)
        result = run_cli(data["vmem"], path, "--backend", "cpu")
        potentials, spikes, predicted, label = parse_single(result.stdout)
        expected, _, _ = pyttfs_reference(data["vmem"], image[np.newaxis])
        # Nine significant digits give back the exact float32.
        np.testing.assert_array_equal(potentials, expected.potentials[0])
        assert predicted == expected.predictions[0]
        assert spikes is None and label is None  # vmem readout, no labels


def test_index_into_an_idx_file_with_labels(data):
    i = 7
    result = run_cli(data["vmem"], data["idx3"], "--index", i, "--labels", data["labels"])
    potentials, _, predicted, label = parse_single(result.stdout)
    expected, _, _ = pyttfs_reference(data["vmem"], data["images"][i:i + 1])
    np.testing.assert_array_equal(potentials, expected.potentials[0])
    assert predicted == expected.predictions[0]
    assert label == data["label_values"][i]

    document = run_json(data["vmem"], data["idx3"], "--index", i, "--labels", data["labels"])
    assert document["n"] == 1 and document["index"] == i
    assert document["predicted"] == expected.predictions[0]
    assert document["label"] == data["label_values"][i]
    assert document["accuracy"] == float(expected.predictions[0] == data["label_values"][i])
    np.testing.assert_array_equal(np.float32(document["potentials"]), expected.potentials[0])
    assert document["spike_times"] is None  # vmem readout: the output layer never fires


def test_first_spike_readout_reports_output_spike_times(data):
    expected, _, times = pyttfs_reference(data["first_spike"], data["images"])
    fired = [i for i in range(N_IMAGES) if (times[i] >= 0).any()]
    assert fired and 0 not in fired, "the fixture needs images with and without output spikes"
    for i in (0, fired[0]):
        document = run_json(data["first_spike"], data["idx4"], "--index", i)
        assert document["spike_times"] == times[i].tolist()
        assert document["predicted"] == expected.predictions[i]
        np.testing.assert_array_equal(np.float32(document["potentials"]), expected.potentials[i])
        _, spikes, predicted, _ = parse_single(run_cli(data["first_spike"], data["idx4"], "--index", i).stdout)
        assert spikes == times[i].tolist() and predicted == expected.predictions[i]


def test_hand_worked_first_spike_times(tmp_path):
    # The abi_smoke network (tests/c/abi_smoke.c) with first_spike readout. Image
    # (0, 255, 0, 255) lights inputs 1 and 3 at t = 0, so the output potentials are exact sums:
    #   class 0: 0.25 + 1.0 + 0.125 = 1.375 >= vth0 = 1          -> fires at t = 80
    #   class 1: 0.5 + 0.0 - 0.125  = 0.375: exp(-19/20) = 0.387 > 0.375 >= exp(-20/20) = 0.368
    #                                                             -> fires at t = 80 + 20 = 100
    #   class 2: -1.0 + 0.5 + 0.25  = -0.25                       -> never fires
    # Fired neurons are reset to 0; the earliest spike (class 0) is the prediction.
    model = write_abi_smoke_model(tmp_path / "abi.ttfs")
    spec_path = tmp_path / "abi_first_spike.ttfs"
    spec = read_model(model)
    spec.readout = "first_spike"
    write_model(spec, spec_path)
    image = write_bin(tmp_path / "image.bin", np.float32([[[0.0], [1.0]], [[0.0], [1.0]]]))
    for engine in ("stepped", "analytic"):
        document = run_json(spec_path, image, "--engine", engine)
        assert document["spike_times"] == [80, 100, -1]
        assert document["potentials"] == [0.0, 0.0, -0.25]
        assert document["predicted"] == 0
        assert document["spikes_per_image"] == {"input": 2.0, "fc": 2.0}


# ---- Image sets ---------------------------------------------------------------------------------

def test_labelled_set_summary_matches_pyttfs(data):
    expected, counts, _ = pyttfs_reference(data["vmem"], data["images"])
    document = run_json(data["vmem"], data["idx3"], "--labels", data["labels"], "--backend", "cpu")
    assert document["n"] == N_IMAGES
    accuracy = float(np.mean(expected.predictions == data["label_values"]))
    assert 0.0 < accuracy < 1.0
    assert document["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert document["correct"] == int(np.sum(expected.predictions == data["label_values"]))
    assert document["images_per_second"] > 0
    assert document["backend"] == "cpu" and document["engine"] == "analytic"
    assert document["model"] == str(data["vmem"])
    assert document["no_output_spike"] is None
    assert set(document["spikes_per_image"]) == {"input", "conv1", "fc"}
    for name, per_image in counts.items():
        assert document["spikes_per_image"][name] == pytest.approx(per_image.mean(), rel=1e-12)
    assert document["spikes_per_image"]["conv1"] > 0  # the comparison is not 0 == 0

    text = run_cli(data["vmem"], data["idx3"], "--labels", data["labels"]).stdout
    assert re.search(rf"^n: {N_IMAGES}$", text, re.M)
    assert re.search(rf"^accuracy: {100 * accuracy:.2f} %", text, re.M)
    assert re.search(r"^images per second: \d", text, re.M)
    assert re.search(rf"^\s+conv1\s+{counts['conv1'].mean():.2f}$", text, re.M)


def test_unlabelled_set_has_no_accuracy(data):
    document = run_json(data["vmem"], data["idx3"])
    assert document["accuracy"] is None and document["n"] == N_IMAGES
    assert "accuracy" not in run_cli(data["vmem"], data["idx3"]).stdout


def test_first_spike_set_counts_images_without_an_output_spike(data):
    expected, counts, _ = pyttfs_reference(data["first_spike"], data["images"])
    silent = int(np.sum(counts["fc"] == 0))
    assert 0 < silent < N_IMAGES
    document = run_json(data["first_spike"], data["idx3"], "--labels", data["labels"])
    assert document["no_output_spike"] == silent
    assert document["accuracy"] == pytest.approx(np.mean(expected.predictions == data["label_values"]))
    text = run_cli(data["first_spike"], data["idx3"]).stdout
    assert re.search(rf"^no output spike: {silent} of {N_IMAGES} images", text, re.M)


def set_results(document):
    return {key: document[key] for key in ("n", "accuracy", "correct", "spikes_per_image",
                                           "no_output_spike")}


def test_engines_agree(data):
    for model in (data["vmem"], data["first_spike"]):
        stepped = run_json(model, data["idx3"], "--labels", data["labels"], "--engine", "stepped")
        analytic = run_json(model, data["idx3"], "--labels", data["labels"], "--engine", "analytic")
        assert stepped["engine"] == "stepped" and analytic["engine"] == "analytic"
        assert set_results(stepped) == set_results(analytic)
        one = [run_json(model, data["idx3"], "--index", 5, "--engine", engine)
               for engine in ("stepped", "analytic")]
        assert one[0]["potentials"] == one[1]["potentials"]
        assert one[0]["spike_times"] == one[1]["spike_times"]


def test_float_and_uint8_files_give_the_same_results(data):
    reference = set_results(run_json(data["vmem"], data["idx3"], "--labels", data["labels"]))
    for name in ("idx4", "f32_idx4", "f32_idx3"):
        document = run_json(data["vmem"], data[name], "--labels", data["labels"])
        assert set_results(document) == reference, name
    single = [run_json(data["vmem"], data[name], "--index", 9)["potentials"]
              for name in ("idx3", "f32_idx4")]
    assert single[0] == single[1]


def test_small_batches_give_the_same_results(data):
    reference = set_results(run_json(data["first_spike"], data["idx3"], "--labels", data["labels"]))
    for batch in (1, 7, N_IMAGES, 1000):
        document = run_json(data["first_spike"], data["idx3"], "--labels", data["labels"],
                            "--batch", batch, "--threads", 1)
        assert set_results(document) == reference, f"--batch {batch}"
        assert document["batch"] == min(batch, N_IMAGES)


def test_one_image_from_a_huge_file_reads_only_that_image(data):
    # A 4 GiB sparse IDX file: running one image must not read (or allocate) the whole file.
    path = data["dir"] / "huge.idx3"
    count = 1 << 26  # 64 Mi images of 8x8 bytes
    with open(path, "wb") as out:
        out.write(struct.pack(">IIII", 0x00000803, count, 8, 8))
        out.truncate(16 + count * 64)
    try:
        limit = 1 << 30  # 1 GiB of address space: far less than the file

        def limit_memory():
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        result = run_cli(data["vmem"], path, "--index", count - 1, "--json", "--threads", 1,
                         preexec_fn=limit_memory)
        blank, _, _ = pyttfs_reference(data["vmem"], np.zeros((1,) + SHAPE, np.uint8))
        assert json.loads(result.stdout)["predicted"] == blank.predictions[0]
    finally:
        path.unlink()


def test_progress_line_only_on_a_terminal(data):
    parent, child = pty.openpty()
    try:
        result = subprocess.run([str(CLI), str(data["vmem"]), str(data["idx3"]), "--batch", "8"],
                                stdout=subprocess.PIPE, stderr=child, timeout=60)
        os.close(child)
        child = None
        progress = b""
        while True:
            try:
                chunk = os.read(parent, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            progress += chunk
    finally:
        if child is not None:
            os.close(child)
        os.close(parent)
    assert result.returncode == 0
    assert b"\r" in progress and f"{N_IMAGES} / {N_IMAGES} images".encode() in progress
    assert b"\r" not in result.stdout


def test_default_engine_falls_back_to_stepped_when_windows_overlap(data, tmp_path):
    # T_s < T_d: each layer starts firing before its integration is complete, which only the
    # stepped engine can simulate.
    rng = np.random.default_rng(3)
    layers = [input_layer(SHAPE), flatten(), dense("fc", rng.normal(0.05, 0.2, (64, CLASSES)))]
    model = tmp_path / "overlap.ttfs"
    write_model(build_model(layers, time_steps=200, readout="first_spike", time_fire_start=40,
                            time_fire_duration=80), model)
    result = run_cli(model, data["idx3"], "--json", check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("ttfs-infer: note: using the stepped engine")
    document = json.loads(result.stdout)
    assert document["engine"] == "stepped"
    expected, counts, _ = pyttfs_reference(model, data["images"], engine="stepped")
    assert document["spikes_per_image"]["fc"] == pytest.approx(counts["fc"].mean(), rel=1e-12)

    refused = run_cli(model, data["idx3"], "--engine", "analytic", check=False)
    assert refused.returncode == 1
    assert ERROR_LINE.fullmatch(refused.stderr.strip()) and "TTFS_ERR_UNSUPPORTED" in refused.stderr


# ---- Bad input ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_files(data):
    base = data["dir"]
    good = data["idx3"].read_bytes()
    corrupt_model = bytearray(data["vmem"].read_bytes())
    corrupt_model[len(corrupt_model) // 2] ^= 0x40
    wrong_labels = write_labels(base / "wrong_count.idx1", data["label_values"][:-1])
    bad_label_value = data["label_values"].copy()
    bad_label_value[3] = CLASSES  # one past the last class
    paths = {
        "corrupt_model": base / "corrupt.ttfs",
        "bad_magic": base / "bad_magic.idx",
        "truncated": base / "truncated.idx3",
        "trailing": base / "trailing.idx3",
        "empty_set": base / "empty.idx3",
        "tiny": base / "tiny.idx",
        "wrong_size": write_idx_u8(base / "7x7.idx3", np.zeros((3, 7, 7), np.uint8)),
        "wrong_channels": write_idx_u8(base / "8x8x3.idx4", np.zeros((3, 8, 8, 3), np.uint8),
                                       with_channels=True),
        "short_bin": write_bin(base / "short.bin", np.zeros(63, np.float32)),
        "odd_bin": base / "odd.bin",
        "good_bin": write_bin(base / "good.bin", np.zeros(64, np.float32)),
        "wrong_labels": wrong_labels,
        "bad_label_magic": base / "bad_label_magic.idx1",
        "bad_label_value": write_labels(base / "bad_value.idx1", bad_label_value),
    }
    paths["corrupt_model"].write_bytes(bytes(corrupt_model))
    paths["bad_magic"].write_bytes(b"\x00\x00\x09\x03" + good[4:])
    paths["truncated"].write_bytes(good[:-1])
    paths["trailing"].write_bytes(good + b"\x00")
    paths["empty_set"].write_bytes(struct.pack(">IIII", 0x00000803, 0, 8, 8))
    paths["tiny"].write_bytes(b"\x00\x00")
    paths["odd_bin"].write_bytes(b"\x00" * 257)
    paths["bad_label_magic"].write_bytes(struct.pack(">II", 0x00000803, N_IMAGES) + bytes(N_IMAGES))
    return paths


# (case, arguments with {placeholders}, exit status, words the message must contain)
BAD_INPUTS = [
    ("missing model", ["{dir}/nope.ttfs", "{idx3}"], 1, ["nope.ttfs"]),
    ("missing images", ["{vmem}", "{dir}/nope.idx"], 1, ["nope.idx", "cannot open"]),
    ("directory without images", ["{vmem}", "{dir}"], 1, ["holds no .png, .jpg or .jpeg"]),
    ("corrupt model", ["{corrupt_model}", "{idx3}"], 1, ["TTFS_ERR_BAD_CRC", "corrupt.ttfs"]),
    ("images as model", ["{idx3}", "{idx3}"], 1, ["TTFS_ERR_"]),
    ("bad magic", ["{vmem}", "{bad_magic}"], 1, ["0x00000903", "0x00000803"]),
    ("file too short for a magic", ["{vmem}", "{tiny}"], 1, ["tiny.idx"]),
    ("truncated images", ["{vmem}", "{truncated}"], 1, ["truncated"]),
    ("trailing bytes", ["{vmem}", "{trailing}"], 1, ["trailing"]),
    ("no images", ["{vmem}", "{empty_set}"], 1, ["no images"]),
    ("wrong image size", ["{vmem}", "{wrong_size}"], 1, ["7x7x1", "8x8x1"]),
    ("wrong channels", ["{vmem}", "{wrong_channels}"], 1, ["8x8x3", "8x8x1"]),
    ("bin too short", ["{vmem}", "{short_bin}"], 1, ["252 bytes", "63 float32", "256 bytes"]),
    ("bin with a partial value", ["{vmem}", "{odd_bin}"], 1, ["257 bytes", "256 bytes"]),
    ("index past the end", ["{vmem}", "{idx3}", "--index", "40"], 1, ["--index 40", "40 images"]),
    ("index into a bin", ["{vmem}", "{good_bin}", "--index", "1"], 1, ["--index 1"]),
    ("negative index", ["{vmem}", "{idx3}", "--index", "-1"], 2, ["--index", "-1"]),
    ("index not a number", ["{vmem}", "{idx3}", "--index", "3x"], 2, ["'3x'"]),
    ("label count", ["{vmem}", "{idx3}", "--labels", "{wrong_labels}"], 1, ["39 labels", "40 images"]),
    ("label magic", ["{vmem}", "{idx3}", "--labels", "{bad_label_magic}"], 1, ["0x00000801"]),
    ("label value", ["{vmem}", "{idx3}", "--labels", "{bad_label_value}"], 1, ["label 5", "image 3"]),
    ("missing labels", ["{vmem}", "{idx3}", "--labels", "{dir}/nope.idx1"], 1, ["nope.idx1"]),
    ("unknown option", ["{vmem}", "{idx3}", "--fast"], 2, ["--fast"]),
    ("option without value", ["{vmem}", "{idx3}", "--batch"], 2, ["--batch"]),
    ("zero batch", ["{vmem}", "{idx3}", "--batch", "0"], 2, ["--batch", "'0'"]),
    ("bad backend", ["{vmem}", "{idx3}", "--backend", "gpu"], 2, ["'gpu'"]),
    ("bad engine", ["{vmem}", "{idx3}", "--engine=exact"], 2, ["'exact'"]),
    ("negative threads", ["{vmem}", "{idx3}", "--threads", "-2"], 2, ["--threads"]),
    ("no arguments", [], 2, ["MODEL"]),
    ("one argument", ["{vmem}"], 2, ["MODEL"]),
    ("three arguments", ["{vmem}", "{idx3}", "{idx3}"], 2, ["3 positional"]),
]


@pytest.mark.parametrize("case, args, status, words", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_error_line(case, args, status, words, data, bad_files):
    paths = {**{k: v for k, v in data.items() if isinstance(v, Path)}, **bad_files}
    argv = [arg.format(**paths) for arg in args]
    result = run_cli(*argv, check=False)
    assert result.returncode == status, f"{case}: exit {result.returncode}\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and ERROR_LINE.fullmatch(lines[0]), f"{case}: {result.stderr!r}"
    for word in words:
        assert word in lines[0], f"{case}: {word!r} not in {lines[0]!r}"
    assert result.stdout == ""


def test_unavailable_backend_is_an_error(data):
    if pyttfs.cuda_device_count() > 0:
        pytest.skip("a CUDA device is present: the cuda backend is available here")
    result = run_cli(data["vmem"], data["idx3"], "--backend", "cuda", check=False)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert ERROR_LINE.fullmatch(result.stderr.strip())
    assert "TTFS_ERR_BACKEND_UNAVAILABLE" in result.stderr


def test_help_and_version():
    help_text = run_cli("--help").stdout
    assert help_text.startswith("usage: ttfs-infer MODEL IMAGES")
    for option in ("--labels", "--index", "--backend", "--engine", "--batch", "--threads", "--json"):
        assert option in help_text
    version = run_cli("--version").stdout
    assert version.startswith(f"ttfs-infer {pyttfs.version()} (")


# ---- Efficiency figures in --json --------------------------------------------------------------

GOLDEN = Path(__file__).resolve().parent / "golden"


def _gated_copy(tmp_path, mode="gated"):
    """The `or` golden model with gated pools, td_fire = +10 in conv1 and conv2 (thresholds
    above 1 in the first ten steps of their windows) and conv1's weights tripled (many
    potentials above 1): a later child often takes a window over, so gated differs from
    earliest."""
    spec = read_model(GOLDEN / "mnist_or_vmem.ttfs")
    below = None
    for layer in spec.layers:
        if layer.kind == "maxpool":
            layer.pool_mode = mode
        if layer.name == "conv1":
            layer.weights = layer.weights * 3
        if layer.neuron is not None:
            if layer.name in ("conv1", "conv2"):
                layer.neuron.td_fire = 10.0
            if below is not None:
                layer.neuron.td_integ = below.neuron.td_fire
            below = layer
    write_model(spec, tmp_path / f"{mode}.ttfs")
    return tmp_path / f"{mode}.ttfs"


@pytest.mark.parametrize("name", ["mnist_or_vmem", "mnist_earliest_first_spike", "gated"])
def test_json_efficiency_figures(tmp_path, name):
    """Synaptic operations as export/efficiency.py counts them (an independent count: step by
    step through the pools in numpy, against lists of distinct steps in C++), the MNIST
    network's multiply-adds worked out by hand, and spikes on a blank image as pyttfs gives
    them for an all-zero image."""
    from export import efficiency

    model_path = _gated_copy(tmp_path) if name == "gated" else GOLDEN / f"{name}.ttfs"
    images = np.load(GOLDEN / "images.npy")[:30]
    path = write_idx_u8(tmp_path / "images.idx", images[..., 0])
    spec = read_model(model_path)
    with pyttfs.Model(model_path) as model:
        with model.session(backend="cpu", max_batch=len(images),
                           record_spike_times=True) as session:
            session.run(images)
            layers = [info.name for info in model.layers if info.has_neurons]
            times = {layer: session.spike_times(layer) for layer in layers}
            counts = {layer: session.spike_counts(layer).mean() for layer in layers}
        blank = efficiency.blank_image_spikes(model)
    expected = {k: float(v.mean()) for k, v in efficiency.synaptic_operations(spec, times).items()}
    if name == "gated":  # the same spikes through earliest pools: fewer deliveries
        earliest = read_model(_gated_copy(tmp_path, "earliest"))
        fewer = efficiency.synaptic_operations(earliest, times)
        assert fewer["conv2"].mean() < expected["conv2"]
    for args in ((), ("--batch", "7"), ("--index", "3")):
        document = run_json(model_path, path, *args)
        if args[:1] == ("--index",):
            one = {k: float(v[0]) for k, v in efficiency.synaptic_operations(
                spec, {k: v[3:4] for k, v in times.items()}).items()}
            assert document["synaptic_operations_per_image"] == pytest.approx(one, rel=1e-12)
            continue
        assert document["synaptic_operations_per_image"] == pytest.approx(expected, rel=1e-12)
        assert document["synaptic_operations_total"] == pytest.approx(sum(expected.values()))
        assert document["spikes_per_neuron"]["conv1"] == pytest.approx(counts["conv1"] / 6912)
        assert document["hidden_spikes_per_image"] == pytest.approx(counts["conv1"]
                                                                     + counts["conv2"])
    assert document["ann_multiply_adds"] == {"conv1": 24 * 24 * 12 * 25,
                                             "conv2": 8 * 8 * 64 * 25 * 12, "fc1": 1024 * 10}
    assert document["ann_multiply_adds_total"] == 1_411_840
    assert document["blank_image_spikes"] == blank
    assert document["blank_image_hidden_spikes"] == blank["conv1"] + blank["conv2"]


# ---- Session limits ------------------------------------------------------------------------------


def test_limits_refuse_with_the_options_that_raise_them_and_the_options_raise_them(tmp_path):
    """The library's work and memory limits (docs/C_API.md, "Limits") reach the command line:
    a refusal names the CLI option that raises the limit, and that option does raise it."""
    from test_limits import runaway_model  # the 456-byte model of issue 9: work 2^37+ per image

    model = tmp_path / "runaway.ttfs"
    model.write_bytes(to_bytes(runaway_model()))
    image = tmp_path / "image.bin"
    write_bin(image, np.full((256, 256, 1), 0.0, np.float32))
    refused = run_cli(model, image, "--engine", "stepped", check=False)
    assert refused.returncode == 1
    assert "TTFS_ERR_LIMIT" in refused.stderr and "--max-work" in refused.stderr, refused.stderr
    # A limit of one operation refuses even the tiny test network; the same run goes through
    # with the library's defaults.
    net = tmp_path / "net.ttfs"
    write_net(net, "vmem")
    small = tmp_path / "small.bin"
    write_bin(small, np.full(SHAPE, 0.5, np.float32))
    run_cli(net, small)
    tight = run_cli(net, small, "--max-work", "1", check=False)
    assert tight.returncode == 1 and "TTFS_ERR_LIMIT" in tight.stderr
    tight = run_cli(net, small, "--max-memory", "1", check=False)
    assert tight.returncode == 1 and "TTFS_ERR_LIMIT" in tight.stderr
    assert "--max-memory" in tight.stderr
    # The runaway model's work per image, as the library computes it: a limit one below is
    # refused, a limit of exactly that gets past the check (a tiny side keeps the run short).
    small_runaway = tmp_path / "runaway16.ttfs"
    small_runaway.write_bytes(to_bytes(runaway_model(side=16, steps=2 ** 12)))
    with pyttfs.Model(small_runaway) as loaded:
        with loaded.session(backend="cpu", engine="stepped", max_batch=1,
                            max_work_per_image=2 ** 62) as wide:
            work = wide.requirements.work_per_image
    image16 = tmp_path / "image16.bin"
    write_bin(image16, np.full((16, 16, 1), 0.0, np.float32))
    below = run_cli(small_runaway, image16, "--engine", "stepped", "--batch", "1",
                    "--max-work", str(work - 1), check=False)
    assert below.returncode == 1 and "TTFS_ERR_LIMIT" in below.stderr, below.stderr
    run_cli(small_runaway, image16, "--engine", "stepped", "--batch", "1",
            "--max-work", str(work))
    for bad in ("0", "-5", "lots"):
        usage = run_cli(net, small, "--max-work", bad, check=False)
        assert usage.returncode == 2 and "--max-work expects an integer" in usage.stderr
