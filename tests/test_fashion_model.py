"""models/fashion-mnist.ttfs, the committed VGG-style Fashion-MNIST model (docs/RESULTS.md,
"Fashion-MNIST"): on its 100 committed test images the stepped and analytic engines agree bit
for bit (spike times of every layer, output potentials), the TF reference simulator agrees up to
threshold ties, the CLI classifies from the committed files, and, where the Fashion-MNIST files
are installed, the model scores on the 10 000 test images what the results page says (accuracy,
hidden spikes per image, spikes on a blank image)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyttfs
from conftest import CERTIFY_STATS_LINE
from export import ttfs_format
from export.datasets import FASHION_MNIST_CLASS_NAMES, read_idx

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
MODEL = MODELS / "fashion-mnist.ttfs"
IMAGES = MODELS / "fashion-mnist-test-100-images.idx"
LABELS = MODELS / "fashion-mnist-test-100-labels.idx"
TF_IMAGES = 3  # the TF reference simulator steps every layer through every time step: slow


@pytest.fixture(scope="module")
def committed():
    images = read_idx(IMAGES)[..., None]
    labels = read_idx(LABELS)
    return images, labels


def _documented(quantity: str) -> float:
    """The first number of a row of the Fashion-MNIST section of docs/RESULTS.md."""
    text = (REPO / "docs" / "RESULTS.md").read_text()
    section = text[text.index("# Fashion-MNIST"):]
    row = next(line for line in section.splitlines() if line.startswith(f"| {quantity} |"))
    value = row.split("|")[2].replace("*", "").strip()
    return float(re.match(r"[0-9][0-9 ]*(\.[0-9]+)?", value).group(0).replace(" ", ""))


def test_the_model_is_the_deep_vgg_network_with_its_classes():
    spec = ttfs_format.read_model(MODEL)
    kinds = [layer.kind for layer in spec.layers]
    assert kinds.count("conv2d") == 6 and kinds.count("maxpool") == 3
    assert kinds.count("dense") == 2 and max(layer.depth for layer in spec.layers) == 8
    assert all(layer.padding == "same" and tuple(layer.kernel) == (3, 3)
               for layer in spec.layers if layer.kind == "conv2d")
    assert spec.metadata["classes"] == list(FASHION_MNIST_CLASS_NAMES)
    assert spec.metadata["dataset"].startswith("Fashion-MNIST")
    # every fire/integration window inside the model's time steps (none cut off)
    for layer in spec.layers:
        if layer.neuron is not None:
            assert layer.neuron.fire_window[1] <= spec.time_steps


def test_engines_are_bit_identical_on_the_committed_images(committed):
    """With spike times recorded (every layer's times compared) and without (the analytic
    engine's fused pools: spike counts compared)."""
    images, labels = committed
    with pyttfs.Model(MODEL) as model:
        names = [layer.name for layer in model.layers if layer.has_neurons]
        for record in (True, False):
            runs = {}
            for engine in ("stepped", "analytic"):
                with model.session(backend="cpu", engine=engine, max_batch=len(images),
                                   record_spike_times=record) as session:
                    result = session.run(images)
                    per_layer = {name: (session.spike_times(name) if record
                                        else session.spike_counts(name)).copy()
                                 for name in names}
                    runs[engine] = (result.predictions.copy(), result.potentials.copy(),
                                    per_layer)
            stepped, analytic = runs["stepped"], runs["analytic"]
            np.testing.assert_array_equal(stepped[0], analytic[0])
            assert stepped[1].tobytes() == analytic[1].tobytes()
            for name in names:
                np.testing.assert_array_equal(stepped[2][name], analytic[2][name],
                                              err_msg=f"{name} record={record}")
            assert (analytic[0] == labels).mean() >= 0.9


CHECK_IMAGES = 32  # TTFS_CERTIFY=check forms every neuron's potential exactly: slow


def test_certified_bound_holds_on_every_neuron_of_the_deep_network(committed, tmp_path):
    """The analytic engine's certified intervals (docs/ENGINES.md, "Certified sums") on this
    network's 240-step windows and thousands of spikes per layer: TTFS_CERTIFY=check forms
    every hidden neuron's exact potential and counts those outside their interval."""
    images, _ = committed
    np.save(tmp_path / "images.npy", images[:CHECK_IMAGES])
    script = ("import sys, numpy as np, pyttfs\n"
              "x = np.load(sys.argv[2])\n"
              "with pyttfs.Model(sys.argv[1]) as model:\n"
              "    for record in (False, True):\n"
              "        with model.session(backend='cpu', engine='analytic', max_batch=len(x),\n"
              "                           record_spike_times=record) as session:\n"
              "            session.run(x)\n"
              "        print('@@session', file=sys.stderr, flush=True)\n")
    env = dict(os.environ, TTFS_CERTIFY="check", TTFS_CERTIFY_STATS="1")
    out = subprocess.run([sys.executable, "-c", script, str(MODEL), str(tmp_path / "images.npy")],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    found = [(m.group(1), m.group(2), m.group(5), m.group(6))
             for m in map(CERTIFY_STATS_LINE.match, out.stderr.splitlines()) if m]
    hidden = ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc1"]
    assert [name for name, *_ in found] == hidden * 2, out.stderr[-3000:]
    for name, neurons, checked, violated in found:
        assert checked is not None, f"{name}: no bound counts under TTFS_CERTIFY=check"
        assert int(checked) == int(neurons) > 0, (name, neurons, checked)
        assert int(violated) == 0, f"{name}: {violated} of {checked} exact potentials outside"


def test_tf_reference_agrees_up_to_threshold_ties(committed):
    """Every spike-time difference between libttfs and the TF reference simulator is a
    threshold tie (one step apart, TF's potential within float rounding of the threshold) or
    follows one in an earlier layer of the same image; predictions agree."""
    pytest.importorskip("tensorflow")
    from export.evaluate import _spike_time_ties
    from export.tf_reference import simulate

    images, _ = committed
    images = images[:TF_IMAGES]
    spec = ttfs_format.read_model(MODEL)
    tf = simulate(spec, images, exp="tf", progress=False)
    with pyttfs.Model(MODEL) as model, \
            model.session(backend="cpu", engine="analytic", max_batch=len(images),
                          record_spike_times=True) as session:
        result = session.run(images)
        names = [layer.name for layer in model.layers if layer.has_neurons]
        windows = {layer.name: tuple(layer.fire_window) for layer in model.layers
                   if layer.has_neurons}
        lib_times = {name: session.spike_times(name).copy() for name in names}
    diverged = np.zeros(len(images), bool)
    compared = 0
    for name in names:
        mismatch, tie, _ = _spike_time_ties(lib_times[name], tf, name, windows[name])
        per_image = mismatch.reshape(len(images), -1)
        unexplained = per_image & ~tie.reshape(len(images), -1) & ~diverged[:, None]
        assert not unexplained.any(), f"layer {name}: {int(unexplained.sum())} spike times " \
                                      "differ from TF without a threshold tie"
        diverged |= per_image.any(axis=1)
        compared += per_image.size
    assert compared > 0
    same = result.predictions[~diverged] == tf.predictions[~diverged]
    assert same.all()


def test_cli_classifies_a_committed_image():
    binary = Path(pyttfs.lib._name).parent / "ttfs-infer"
    out = subprocess.run([binary, MODEL, IMAGES, "--index", "0"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    label = int(read_idx(LABELS)[0])
    assert re.search(rf"predicted class: {label}\b", out.stdout), out.stdout


def test_committed_images_are_the_first_test_images_and_the_score_is_documented(committed):
    from export.datasets import FashionMnistNotFoundError, load_fashion_mnist

    try:
        test = load_fashion_mnist().test
    except FashionMnistNotFoundError as error:
        pytest.skip(f"Fashion-MNIST is not installed here (apt-get install "
                    f"dataset-fashion-mnist): {str(error).splitlines()[0]}")
    images, labels = committed
    np.testing.assert_array_equal(images, test.images[:len(images)])
    np.testing.assert_array_equal(labels, test.labels[:len(labels)])
    hidden = 0
    with pyttfs.Model(MODEL) as model, \
            model.session(backend="cpu", engine="analytic", max_batch=1000) as session:
        names = [layer.name for layer in model.layers if layer.has_neurons][1:-1]
        predictions = []
        for i in range(0, len(test), 1000):
            predictions.append(session.run(test.images[i:i + 1000]).predictions)
            hidden += sum(int(session.spike_counts(name).sum()) for name in names)
        session.run(np.zeros((1, 28, 28, 1), np.uint8))
        blank = sum(int(session.spike_counts(name)[0]) for name in names)
    accuracy = (np.concatenate(predictions) == test.labels).mean()
    assert 100 * accuracy == pytest.approx(
        _documented("SNN test accuracy (stepped = analytic)"), abs=1e-9)
    assert hidden / len(test) == pytest.approx(_documented("hidden spikes per image"), abs=0.05)
    assert blank == _documented("spikes on a blank image (hidden)")
