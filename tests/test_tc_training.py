"""Time-constant training (export/tc_training.py, docs/ALGORITHM.md section 8).

(a) the update formulas on tiny batches worked out by hand (the expected values are written
    out below with math.exp in float64, step by step, from the formulas of section 8);
(b) the input layer's tau trajectory over several updates against an independent numpy
    computation: its spike times follow from the pixels in closed form, so the reference
    rule for the input layer alone can be replayed without any SNN;
(c) the native SNN pass (libttfs analytic engine) gives the TF stepped simulator's spike times
    on a training batch, except threshold ties (counted and printed) — skipped with the reason
    when pyttfs cannot load the library;
(d) snn="native" and snn="tf" give the same constants after a few updates (same skip);
plus the target helpers (BN on top for the reference rule, conv2 fed the pooled conv1
target), the chaining after training, JSON saves and error messages.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("tensorflow", reason="time-constant training needs TensorFlow")

import reference_numpy as ref  # noqa: E402

from export import tc_training as tc  # noqa: E402
from export.ttfs_format import (build_model, conv2d, dense, flatten, from_bytes,  # noqa: E402
                                input_layer, maxpool, to_bytes)

F32 = np.float32
E4 = math.exp(-4.0)  # exp(-(T_d - 0)/20) with T_d = 80: xhat of a never-fired neuron, td = 0


# ---- (a) the formulas, by hand --------------------------------------------------------------


def test_tau_update_reference_rule_by_hand():
    # 2 images x 3 neurons, tau 20, td 0, fire window [0, 80) (the input layer's place)
    fst = np.array([[10, -1, -1], [-1, 30, -1]]).reshape(2, 1, 1, 3)
    x = np.array([[0.6, 0.05, -0.2], [0.01, 0.5, 0.0]], F32).reshape(2, 1, 1, 3)
    new_tau, diag = tc.tau_update("reference", 20.0, 0.0, fst, x, fire_start=0,
                                  fire_duration=80, time_window=80)
    # never-fired neurons take the sentinel 80: s = 80, xhat = e^-4; fired ones xhat = 0.
    # products (x - xhat) xhat s: image 0: 0 | (0.05 - e^-4) e^-4 80 > 0 | (-0.2 - e^-4).. < 0
    #                             image 1: (0.01 - e^-4) e^-4 80 < 0 | 0 | (0 - e^-4).. < 0
    d1 = (0.05 - E4) * E4 * 80
    # 2nd percentile of max(x, 0): image 0 sorted (0, 0.05, 0.6) -> 0 + 0.04 * 0.05 = 0.002
    #                               image 1 sorted (0, 0.01, 0.5) -> 0.04 * 0.01 = 0.0004
    x_min = (0.002 + 0.0004) / 2
    d2 = (x_min - E4) * E4 * (80 - 0)
    expected = 20 + (10 * d1 + 100 * d2) / 20 ** 2
    assert diag["d1"] == pytest.approx(d1, rel=1e-5)
    assert diag["x_min"] == pytest.approx(x_min, rel=1e-5)
    assert diag["d2"] == pytest.approx(d2, rel=1e-5)
    assert float(new_tau) == pytest.approx(expected, rel=1e-6)
    assert isinstance(new_tau, np.float32)


def test_tau_update_reference_rule_uses_absolute_time_and_no_positive_product():
    # a conv layer (fire window [80, 160)), tau 18, td -2: everything fired, so every xhat is
    # 0 and d1 = 0 (no positive product); s would be absolute (fst - td), but is unused
    fst = np.array([[85, 90], [80, 100]]).reshape(2, 1, 1, 2)
    x = np.array([[0.9, 0.3], [1.2, 0.1]], F32).reshape(2, 1, 1, 2)
    new_tau, diag = tc.tau_update("reference", 18.0, -2.0, fst, x, fire_start=80,
                                  fire_duration=80, time_window=80)
    assert diag["d1"] == 0.0
    # xmin: image 0 (0.3, 0.9) -> 0.3 + 0.02 * 0.6 = 0.312; image 1 (0.1, 1.2) -> 0.122
    x_hat_min = math.exp(-(80 + 2) / 18)
    d2 = ((0.312 + 0.122) / 2 - x_hat_min) * x_hat_min * (80 + 2)
    assert float(new_tau) == pytest.approx(18 + 100 * d2 / 18 ** 2, rel=1e-6)


def test_tau_update_paper_rule_by_hand():
    # conv layer, fire window [80, 160), tau 20, td 0.5; relative spike times
    fst = np.array([[85, -1, 90]]).reshape(1, 1, 1, 3)
    x = np.array([[0.9, 0.3, 0.2]], F32).reshape(1, 1, 1, 3)
    new_tau, diag = tc.tau_update("paper", 20.0, 0.5, fst, x, fire_start=80,
                                  fire_duration=80, time_window=80)
    # s = (5 - 0.5, -, 10 - 0.5); xhat = exp(-s/20) for the fired, 0 for the silent one
    xh0, xh2 = math.exp(-4.5 / 20), math.exp(-9.5 / 20)
    assert (0.9 - xh0) * xh0 * 4.5 > 0 and (0.2 - xh2) * xh2 * 9.5 < 0  # only the first counts
    d1 = (0.9 - xh0) * xh0 * 4.5
    x_hat_min = math.exp(-(80 - 0.5) / 20)
    d2 = ((0.2 + 0.04 * 0.1) - x_hat_min) * x_hat_min * (80 - 0.5)  # sorted 0.2, 0.3, 0.9
    assert diag["d1"] == pytest.approx(d1, rel=1e-5)
    assert float(new_tau) == pytest.approx(20 + (10 * d1 + 100 * d2) / 400, rel=1e-6)


def test_td_update_reference_rule_by_hand():
    # conv layer, fire window [80, 160), tau 20, td 0.5
    fst = np.array([[85, 80, -1], [-1, -1, -1], [80, 81, 90]]).reshape(3, 1, 1, 3)
    new_td, _ = tc.td_update("reference", 20.0, 0.5, fst, fire_start=80, fire_duration=80)
    # a spike at step 80 equals the never-fired sentinel T_d = 80: it counts as 99999.9
    # image 0: tmin = 85 - 80 = 5; image 1: 99999.9 - 80 -> xmax = 0; image 2: 81 - 80 = 1
    xh = math.exp(0.5 / 20)
    x_max = [math.exp(-(5 - 0.5) / 20), 0.0, math.exp(-(1 - 0.5) / 20)]
    expected = 0.5 + sum((xm - xh) * xh / 20 for xm in x_max) / 3
    assert float(new_td) == pytest.approx(expected, rel=1e-6)


def test_td_update_paper_rule_by_hand():
    fst = np.array([[85, 80, -1], [-1, -1, -1]]).reshape(2, 1, 1, 3)
    new_td, _ = tc.td_update("paper", 20.0, 0.5, fst, fire_start=80, fire_duration=80)
    # relative times, no sentinel collision: image 0: tmin = 0; image 1: none -> xmax = 0
    xh = math.exp(0.5 / 20)
    x_max = [math.exp(0.5 / 20), 0.0]
    expected = 0.5 + sum((xm - xh) * xh / 20 for xm in x_max) / 2
    assert float(new_td) == pytest.approx(expected, rel=1e-6)


def test_update_errors_name_the_problem():
    with pytest.raises(ValueError, match="rule 'clean'"):
        tc.tau_update("clean", 20, 0, np.zeros((1, 2)), np.zeros((1, 2)), fire_start=0,
                      fire_duration=80, time_window=80)
    with pytest.raises(ValueError, match="shape"):
        tc.tau_update("reference", 20, 0, np.zeros((1, 2)), np.zeros((1, 3)), fire_start=0,
                      fire_duration=80, time_window=80)


# ---- a tiny model and its ANN ---------------------------------------------------------------


def tiny_model(seed=0):
    """input 8x8x1 -> conv 3x3x4 -> maxpool 2x2 `or` -> conv 2x2x4 -> flatten -> dense 3."""
    rng = np.random.default_rng(seed)
    layers = [input_layer((8, 8, 1)),
              conv2d("conv1", rng.normal(0.12, 0.25, (3, 3, 1, 4)), rng.normal(0, 0.05, 4)),
              maxpool("pool1", (2, 2)),
              conv2d("conv2", rng.normal(0.02, 0.3, (2, 2, 4, 4)), rng.normal(0, 0.05, 4)),
              flatten(),
              dense("fc1", rng.normal(0, 0.4, (16, 3)), rng.normal(0, 0.1, 3))]
    return from_bytes(to_bytes(build_model(layers, 400)))  # float32 constants as in a file


def tiny_images(n=40, seed=1):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8, 1))
    images[rng.random(images.shape) < 0.4] = 0
    return images.astype(np.uint8)


def ann_layers(spec, with_bn=False):
    """AnnLayer-like records of the spec's layers (what export.convert provides)."""
    out = []
    for i, layer in enumerate(spec.layers[1:]):
        bn = None
        if with_bn and layer.kind == "conv2d":
            c = layer.weights.shape[-1]
            bn = dict(gamma=np.linspace(0.8, 1.2, c), beta=np.linspace(-0.1, 0.1, c),
                      moving_mean=np.linspace(0.0, 0.2, c), moving_variance=np.linspace(0.5, 2, c),
                      epsilon=1e-3)
        out.append(SimpleNamespace(kind=layer.kind, name=layer.name, weights=layer.weights,
                                   bias=layer.bias, kernel=layer.kernel, stride=layer.stride,
                                   padding=layer.padding, relu=layer.kind == "conv2d", bn=bn))
    return out


# ---- targets --------------------------------------------------------------------------------


def np_conv_valid(x, w):
    patches = ref.extract_patches(x.astype(np.float64), w.shape[:2], (1, 1), "valid")
    return patches @ w.reshape(-1, w.shape[-1]).astype(np.float64)


def test_reference_and_paper_targets():
    spec = tiny_model()
    x = tiny_images(3).astype(F32) / F32(255)
    layers = ann_layers(spec, with_bn=True)
    got_ref = tc.reference_targets(layers)(x)
    got_paper = tc.paper_targets(layers)(x)

    def bn(z, p):
        return (z - p["moving_mean"]) / np.sqrt(p["moving_variance"] + 1e-3) * p["gamma"] \
            + p["beta"]

    c1, c2 = spec.layers[1], spec.layers[3]
    # reference: ReLU(BN(conv + b)), conv2 fed maxpool of conv1's (BN'd) target
    t1 = np.maximum(bn(np_conv_valid(x, c1.weights) + c1.bias, layers[0].bn), 0)
    pooled = t1.reshape(3, 3, 2, 3, 2, 4).max(axis=(2, 4))
    t2 = np.maximum(bn(np_conv_valid(pooled, c2.weights) + c2.bias, layers[2].bn), 0)
    np.testing.assert_allclose(got_ref["conv1"], t1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_ref["conv2"], t2, rtol=1e-5, atol=1e-6)
    # paper: ReLU(conv + b), no BN
    p1 = np.maximum(np_conv_valid(x, c1.weights) + c1.bias, 0)
    p2 = np.maximum(np_conv_valid(p1.reshape(3, 3, 2, 3, 2, 4).max(axis=(2, 4)), c2.weights)
                    + c2.bias, 0)
    np.testing.assert_allclose(got_paper["conv1"], p1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_paper["conv2"], p2, rtol=1e-5, atol=1e-6)
    assert got_paper["fc1"].shape == (3, 1, 1, 3)


# ---- (b) the input layer's trajectory from the pixels alone ---------------------------------


def input_tau_trajectory(pixels, tau0, batch_size, passes, fire_duration=80):
    """The reference rule for the input layer alone, independently in float64: a pixel x
    fires at the first j in [0, T_d) with x >= exp(-j/tau), else it holds the sentinel T_d."""
    tau = tau0
    trajectory = []
    n = pixels.shape[0]
    for _ in range(passes):
        for lo in range(0, n, batch_size):
            x = pixels[lo:lo + batch_size].reshape(min(batch_size, n - lo), -1).astype(np.float64)
            # the float32 threshold table the simulator compares against
            table = np.exp(-(np.arange(fire_duration, dtype=F32) / F32(tau)).astype(np.float64))
            table = table.astype(F32).astype(np.float64)
            crosses = x[..., None] >= table  # (n, pixels, steps)
            fired = crosses.any(axis=-1)
            fst = np.where(fired, crosses.argmax(axis=-1), fire_duration).astype(np.float64)
            xhat = np.where(fired, 0.0, np.exp(-fst / tau))
            product = (x - xhat) * xhat * fst
            d1 = product[product > 0].mean() if (product > 0).any() else 0.0
            x_min = np.percentile(np.maximum(x, 0), 2, axis=1).mean()
            x_hat_min = math.exp(-fire_duration / tau)
            d2 = (x_min - x_hat_min) * x_hat_min * fire_duration
            tau = tau + (10 * d1 + 100 * d2) / tau ** 2
            trajectory.append(tau)
    return np.array(trajectory)


def test_input_tau_trajectory_depends_only_on_pixels():
    spec = tiny_model()
    images = tiny_images(40)
    x = images.astype(F32) / F32(255)
    trained, history = tc.train_time_constants(
        spec, images, tc.paper_targets(ann_layers(spec)), rule="reference", batch_size=10,
        passes=2, snn="tf", exp="float64", progress=False)
    got = np.array([h["tau"]["input"] for h in history])
    expected = input_tau_trajectory(x, 20.0, 10, 2)
    assert len(got) == 8
    assert abs(got[-1] - 20.0) > 1e-3, "the trajectory should move for this check to mean much"
    np.testing.assert_allclose(got, expected, rtol=2e-6)


def test_training_chains_and_keeps_the_output_constants(tmp_path):
    spec = tiny_model()
    images = tiny_images(30)
    trained, history = tc.train_time_constants(
        spec, images, tc.paper_targets(ann_layers(spec)), rule="paper", batch_size=10,
        passes=1, snn="tf", save_every=20, save_dir=tmp_path, progress=False)
    by = {layer.name: layer.neuron for layer in trained.layers if layer.neuron is not None}
    assert [h["update"] for h in history] == [1, 2, 3]
    assert [h["images_seen"] for h in history] == [10, 20, 30]
    assert set(history[-1]["tau"]) == {"input", "conv1", "conv2"}
    assert set(history[-1]["td"]) == {"conv1", "conv2"}
    assert by["input"].td_fire == 0.0 and by["input"].tau_fire == history[-1]["tau"]["input"]
    assert (by["fc1"].tau_fire, by["fc1"].td_fire) == (20.0, 0.0)
    for lower, upper in (("input", "conv1"), ("conv1", "conv2"), ("conv2", "fc1")):
        assert by[upper].tau_integ == by[lower].tau_fire
        assert by[upper].td_integ == by[lower].td_fire
    assert by["conv1"].tau_fire == history[-1]["tau"]["conv1"]
    assert by["conv2"].td_fire == history[-1]["td"]["conv2"]
    assert trained.metadata["time_constant_training"]["rule"] == "paper"
    # saved every 20 images: after images 20 (update 2) only
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert saved == ["time_constants_00000020.json"]
    record = json.loads((tmp_path / saved[0]).read_text())
    assert record["tau"] == history[1]["tau"] and record["td"] == history[1]["td"]
    # the trained spec is a valid model file with the training recorded
    assert from_bytes(to_bytes(trained)).layers[1].neuron.tau_fire == \
        pytest.approx(by["conv1"].tau_fire)


def test_training_errors_name_the_problem():
    spec = tiny_model()
    images = tiny_images(4)
    with pytest.raises(KeyError, match=r"conv2"):
        tc.train_time_constants(spec, images, lambda x: {"conv1": np.zeros((4, 6, 6, 4))},
                                passes=1, snn="tf", progress=False)
    with pytest.raises(ValueError, match="snn 'gpu'"):
        tc.train_time_constants(spec, images, lambda x: {}, snn="gpu", progress=False)
    with pytest.raises(ValueError, match=r"images: shape"):
        tc.train_time_constants(spec, images[:, :4], lambda x: {}, snn="tf", progress=False)


# ---- (c), (d) native vs TF ------------------------------------------------------------------


def load_pyttfs():
    try:
        import pyttfs
    except (ImportError, OSError) as exc:  # pyttfs.LibraryError is an OSError
        pytest.skip(f"pyttfs cannot load libttfs: {exc}")
    return pyttfs


U = 2.0 ** -24


def test_native_spike_times_equal_tf_on_a_training_batch():
    load_pyttfs()
    spec = tiny_model(seed=3)
    images = tiny_images(40, seed=4)
    x = images.astype(F32) / F32(255)
    names = ["input", "conv1", "conv2"]
    native = tc.native_spike_times(spec, x, names + ["fc1"])
    from export.tf_reference import simulate
    tf_result = simulate(spec, x, progress=False)  # exp="tf": TensorFlow's own thresholds
    records = ref.simulate(spec, x, sum_order="canonical")  # canonical sums, like libttfs
    index = {layer.name: i for i, layer in enumerate(spec.layers)}
    clean = np.ones(len(x), bool)
    ties, problems, compared = [], [], 0
    for name in names:
        a, b = tf_result.first_spike_times[name], native[name]
        assert a.shape == b.shape
        fired = (b >= 0).mean()
        assert name == "input" or 0.05 < fired < 0.95, f"{name}: {fired:.0%} fired"
        compared += int(a[clean].size)
        for img in np.flatnonzero(clean):
            for pos in map(tuple, np.argwhere(a[img] != b[img])):
                te = min(t for t in (int(a[img][pos]), int(b[img][pos])) if t >= 0)
                v, vth, mag, terms = records.fire_records[index[name]].at(te)
                gap = abs(float(v[img][pos]) - float(vth))
                bound = 2 * U * ((terms[img][pos] + 10) * mag[img][pos] + 8 * abs(vth)) \
                    + abs(tf_result.threshold_at(name, te) - float(vth))
                (ties if gap <= bound else problems).append(
                    f"{name} image {img} {pos}: tf {a[img][pos]} native {b[img][pos]} "
                    f"|V - vth| {gap:.3g} bound {bound:.3g}")
                clean[img] = False
    print(f"\nnative vs TF on a training batch: {compared} spike times, {len(ties)} ties")
    assert not problems, "\n".join(problems)
    assert len(ties) <= max(2, compared // 1000), "\n".join(ties)


def test_native_and_tf_training_give_the_same_constants():
    load_pyttfs()
    spec = tiny_model(seed=3)
    images = tiny_images(40, seed=4)
    targets = tc.reference_targets(ann_layers(spec, with_bn=True))
    kwargs = dict(rule="reference", batch_size=10, passes=1, progress=False)
    _, native = tc.train_time_constants(spec, images, targets, snn="native", **kwargs)
    _, stepped = tc.train_time_constants(spec, images, targets, snn="tf", **kwargs)
    for a, b in zip(native, stepped):
        for kind in ("tau", "td"):
            for name in a[kind]:
                # equal up to threshold ties (a tie moves one spike one step: a tiny change)
                assert a[kind][name] == pytest.approx(b[kind][name], rel=1e-5, abs=1e-6), \
                    f"update {a['update']}: {kind} {name}"
    exact = sum(a[k][n] == b[k][n] for a, b in zip(native, stepped) for k in ("tau", "td")
                for n in a[k])
    print(f"\nnative vs tf training: {exact} of "
          f"{sum(len(a['tau']) + len(a['td']) for a in native)} constants bit-identical")


def test_input_tau_reaches_the_reference_value_on_mnist():
    # The reference trained on MNIST training images 0-9999 in order, batch 100, 6 passes, and
    # ended with tau_in = 17.45 (docs/ALGORITHM.md section 8). The input layer's spike times follow
    # from the pixels (first j with x >= exp(-j/tau), thresholds as the float32 table the
    # simulators use), so its 600 updates can be replayed without any SNN.
    from export import datasets

    try:
        mnist = datasets.load_mnist()
    except datasets.MnistNotFoundError as exc:
        pytest.skip(f"MNIST is not available offline: {exc}")
    from export.tf_reference import decay_table

    pixels = (mnist.train.images[:10000].astype(F32) / F32(255)).reshape(10000, -1)
    tau = F32(20.0)
    for _ in range(6):
        for lo in range(0, 10000, 100):
            x = pixels[lo:lo + 100]
            table = decay_table(1.0, tau, 0.0, 80, exp="float64")  # decreasing in j
            # first j with table[j] <= x; 80 (past the window) = never fired
            j = np.searchsorted(-table, -x, side="left")
            fst = np.where(j < 80, j, -1)
            tau, _ = tc.tau_update("reference", tau, 0.0, fst, x, fire_start=0,
                                   fire_duration=80, time_window=80)
    assert float(tau) == pytest.approx(17.45, abs=0.005)
