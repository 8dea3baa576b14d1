"""The TensorFlow reference simulator (export/tf_reference.py).

1. Hand-computed tiny cases: a pixel's fire step, a 1-unit dense layer's potential
   bias + w*k(t), a hidden layer's fire step and what the layer above decodes from it, `or` vs
   `earliest` pooling, first_spike readout with ties and the no-spike fallback, the records
   for the tie analysis. The expected values are worked out with math.exp/math.log in float64
   and every case keeps well away from a threshold, so float32 rounding cannot move a step.
2. Agreement with the independent numpy simulator tests/reference_numpy.py on seeded random
   networks (tests/random_nets.py): spike times equal except threshold ties, potentials to
   1e-5 relative (1e-6 plus the sum's own rounding bound near zero).
3. Agreement with libttfs (analytic engine, CPU) — skipped with the reason when pyttfs cannot
   load the library.

Tie criterion (as tests/test_engine_parity.py, with TensorFlow in place of the library): a
spike-time mismatch at the earlier of the two steps te is a tie when the numpy reference's V
(just before the check) and threshold satisfy |V - vth| <= 2^-23 ((N + 10) A + 8 |vth|)
+ |vth_tf - vth_numpy|, A = the magnitude of the sum that produced V, N = its number of
additions; the last term covers TensorFlow's own float32 exp under exp="tf". After the first
mismatching layer of an image its deeper layers and its potentials are not compared.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("tensorflow", reason="the TF reference simulator needs TensorFlow")

import random_nets  # noqa: E402
import reference_numpy as ref  # noqa: E402

from export import tf_reference as tfr  # noqa: E402
from export.ttfs_format import (NeuronParams, build_model, conv2d, dense, flatten,  # noqa: E402
                                from_bytes, input_layer, maxpool, to_bytes)

F32 = np.float32
U = 2.0 ** -24


def fire_step(value, tau, td=0.0, vth0=1.0, window=80):
    """First j in [0, window) with value >= vth0*exp(-(j - td)/tau), from the closed form
    j = ceil(td - tau*ln(value/vth0)); None if it is past the window. Asserts the case is
    not within 1e-4 of a step boundary, so float32 rounding cannot change the answer."""
    if value <= 0:
        return None
    exact = td - tau * math.log(value / vth0)
    if exact <= 0:  # at or above the first threshold (x = vth0 = 1, td = 0: exactly equal)
        return 0
    assert abs(exact - round(exact)) > 1e-4, f"test case too close to a tie: {exact}"
    j = max(math.ceil(exact), 0)
    return j if j < window else None


def sim(spec, images, **kw):
    kw.setdefault("progress", False)
    return tfr.simulate(spec, images, **kw)


# ---- 1. hand-computed cases -----------------------------------------------------------------


@pytest.mark.parametrize("tau", [20.0, 17.5])
def test_pixel_fire_step(tau):
    pixels = np.array([255, 128, 64, 5, 4, 0], np.uint8)
    layers = [input_layer((1, 6, 1), neuron=NeuronParams(tau_fire=tau)),
              flatten(), dense("out", np.ones((6, 1), F32))]
    spec = build_model(layers, 400)
    result = sim(spec, pixels.reshape(1, 1, 6, 1))
    got = result.first_spike_times["input"].reshape(-1)
    expected = [fire_step(b / 255.0, tau) for b in pixels]
    expected = [-1 if e is None else e for e in expected]
    assert got.tolist() == expected
    if tau == 20.0:  # written out: 1.0 at t=0; 128/255 = 0.502 >= e^-0.7 = 0.4966 at t=14;
        # 64/255 = 0.251 at t=28; 5/255 = 0.0196 >= e^-3.95 = 0.0193 at the last step, 79;
        # 4/255 is below every threshold of the window; 0 never fires
        assert got.tolist() == [0, 14, 28, 79, -1, -1]


def dense_chain(pixel_tau=20.0, integ=None):
    """input 1x1x1 -> dense 1 unit (output, vmem readout)."""
    neuron = None if integ is None else NeuronParams(tau_integ=integ[0], td_integ=integ[1])
    layers = [input_layer((1, 1, 1), neuron=NeuronParams(tau_fire=pixel_tau)), flatten(),
              dense("out", np.array([[0.75]], F32), np.array([0.125], F32), neuron=neuron)]
    return build_model(layers, 400)


@pytest.mark.parametrize("integ", [None, (15.0, 2.0)])
def test_dense_potential_is_bias_plus_weighted_kernel(integ):
    spec = dense_chain(integ=integ)
    tau_i, td_i = (20.0, 0.0) if integ is None else integ
    images = np.array([255, 128, 0], np.uint8).reshape(3, 1, 1, 1)
    result = sim(spec, images, record_every=10)
    # the pixel fires at 0 (k = 1 exactly, whatever the constants), 14, never
    k14 = math.exp(-(14 - 0 - td_i) / tau_i)
    expected = np.array([0.125 + 0.75, 0.125 + 0.75 * k14, 0.125])
    np.testing.assert_allclose(result.output_potentials[:, 0], expected, rtol=2e-7)
    # recorded after steps 9, 19, ...: the 14-step spike shows from t = 19 on
    assert result.record_steps[:3].tolist() == [9, 19, 29]
    assert result.potentials_over_time.shape == (40, 3, 1)
    np.testing.assert_allclose(result.potentials_over_time[0, :, 0], [0.875, 0.125, 0.125],
                               rtol=2e-7)
    np.testing.assert_allclose(result.potentials_over_time[1:, :, 0],
                               np.broadcast_to(expected, (39, 3)), rtol=2e-7)
    assert result.predictions.tolist() == [0, 0, 0]
    assert result.first_spike_times["out"].reshape(-1).tolist() == [-1, -1, -1]


def test_uint8_is_scaled_by_the_divisor():
    spec = dense_chain()
    images = np.arange(0, 256, 17, dtype=np.uint8).reshape(-1, 1, 1, 1)
    a = sim(spec, images)
    b = sim(spec, images.astype(F32) / F32(255.0))
    np.testing.assert_array_equal(a.first_spike_times["input"], b.first_spike_times["input"])
    np.testing.assert_array_equal(a.output_potentials, b.output_potentials)


def test_hidden_layer_fire_step_and_decoding():
    # input -> hidden (1 unit, fires in [80, 160)) -> out (vmem readout)
    hidden = NeuronParams(tau_fire=16.0, td_fire=1.5)
    layers = [input_layer((1, 1, 1)), flatten(),
              dense("hidden", np.array([[0.9]], F32), np.array([-0.05], F32), neuron=hidden),
              dense("out", np.array([[2.0]], F32), np.array([0.25], F32))]
    spec = build_model(layers, 400)
    result = sim(spec, np.array([[[[128]]]], np.uint8))
    t_in = 14
    v_hidden = -0.05 + 0.9 * math.exp(-t_in / 20.0)  # hidden integrates with the input's tau
    j = fire_step(v_hidden, 16.0, 1.5)
    assert result.first_spike_times["hidden"].item() == 80 + j
    # out integrates [80, 160) with tau_integ = 16, td_integ = 1.5 (chained from hidden)
    k = math.exp(-(j - 1.5) / 16.0)
    np.testing.assert_allclose(result.output_potentials.item(), 0.25 + 2.0 * k, rtol=2e-7)
    # the records for the tie analysis: V at the deciding check and one step before
    check = result.fire_check("hidden", 0, 0)
    assert check["first_spike_time"] == 80 + j and check["step"] == 80 + j
    assert check["vmem"] == pytest.approx(v_hidden, rel=2e-7)
    assert check["previous_vmem"] == pytest.approx(v_hidden, rel=2e-7)
    assert check["vmem"] >= check["threshold"]
    assert check["previous_vmem"] < check["previous_threshold"]
    assert check["threshold"] == pytest.approx(math.exp(-(j - 1.5) / 16.0), rel=2e-7)
    margin, previous = result.threshold_margins("hidden")
    assert margin.item() >= 0 > previous.item()


def test_record_vmem_steps_keeps_the_membrane_before_the_check():
    spec = build_model([input_layer((1, 1, 2)), flatten(),
                        dense("hidden", np.eye(2, dtype=F32)), dense("out", np.eye(2, dtype=F32))],
                       400)
    result = sim(spec, np.array([[[[128, 255]]]], np.uint8), record_vmem_steps=[5, 80])
    kept = result.vmem_before_check
    # at step 5 the input still holds the pixel that fires at 14 (the other fired at 0: reset)
    np.testing.assert_allclose(kept["input"][5].reshape(-1), [128 / 255, 0.0], rtol=1e-7)
    assert np.isnan(kept["hidden"][5]).all()  # hidden makes no fire check before 80
    np.testing.assert_allclose(kept["hidden"][80].reshape(-1),
                               [math.exp(-14 / 20), 1.0], rtol=2e-7)


@pytest.mark.parametrize("mode", ["or", "earliest"])
def test_pool_or_vs_earliest(mode):
    # 2x2 pixels fire at 0, 14, 14, 28 -> one pooled unit -> out (w = 1, b = 0)
    layers = [input_layer((2, 2, 1)), maxpool("pool", (2, 2), mode=mode), flatten(),
              dense("out", np.ones((1, 1), F32))]
    spec = build_model(layers, 400)
    result = sim(spec, np.array([255, 128, 128, 64], np.uint8).reshape(1, 2, 2, 1))
    assert result.first_spike_times["input"].reshape(-1).tolist() == [0, 14, 14, 28]
    if mode == "or":  # one spike per distinct child time: the two at 14 count once
        expected = 1.0 + math.exp(-14 / 20) + math.exp(-28 / 20)
    else:  # only the earliest child spike passes
        expected = 1.0
    assert result.output_potentials.item() == pytest.approx(expected, rel=2e-7)


def test_first_spike_readout_ties_and_fallback():
    # out = 3 classes fed by one pixel: V = b + w * k(t_pixel); fire window [80, 160)
    w = np.array([[-0.3, -0.6, -0.6]], F32)
    b = np.array([0.1, 0.5, 0.5], F32)
    layers = [input_layer((1, 1, 1)), flatten(), dense("out", w, b)]
    spec = build_model(layers, 400, readout="first_spike")
    images = np.array([0, 255], np.uint8).reshape(2, 1, 1, 1)
    result = sim(spec, images)
    times = result.first_spike_times["out"].reshape(2, 3)
    # image 0 (no pixel spike): V = b; 0.5 fires at 80 + 14, 0.1 at 80 + 47
    assert times[0].tolist() == [80 + fire_step(0.1, 20), 94, 94]
    assert result.predictions[0] == 1  # classes 1 and 2 tie: the lowest index wins
    np.testing.assert_array_equal(result.output_potentials[0], [0, 0, 0])  # all reset
    # image 1: V = b + w = (-0.2, -0.1, -0.1): nothing fires, argmax of V (tie: lowest)
    assert times[1].tolist() == [-1, -1, -1]
    assert result.no_output_spike().tolist() == [False, True]
    assert result.predictions[1] == 1
    # over time: before step 94 image 0 has no output spike yet -> vmem fallback
    steps, acc = result.accuracy_over_time([1, 1])
    assert acc[steps.tolist().index(89)] == 1.0
    assert result.predictions_over_time()[steps.tolist().index(99)].tolist() == [1, 1]


def test_accuracy_over_time_follows_the_potential():
    spec = build_model([input_layer((1, 1, 1)), flatten(),
                        dense("out", np.array([[1.0, -1.0]], F32), np.array([0.0, 0.25], F32))],
                       100)
    result = sim(spec, np.array([[[[128]]]], np.uint8), record_every=10)
    # V = (0, 0.25) until the pixel's spike at 14, then (0.497, -0.247)
    steps, acc = result.accuracy_over_time([0])
    assert steps.tolist() == list(range(9, 100, 10))
    assert acc.tolist() == [0.0] + [1.0] * 9
    with pytest.raises(ValueError, match="labels"):
        result.accuracy_over_time([0, 1])


def test_bad_inputs_are_named():
    spec = dense_chain()
    with pytest.raises(ValueError, match=r"images: shape"):
        sim(spec, np.zeros((1, 2, 2, 1), np.uint8))
    with pytest.raises(ValueError, match="exp"):
        sim(spec, np.zeros((1, 1, 1, 1), np.uint8), exp="double")
    with pytest.raises(ValueError, match="dtype"):
        sim(spec, np.zeros((1, 1, 1, 1), np.int32))


# ---- 2. agreement with tests/reference_numpy.py ---------------------------------------------


def tie_bound(vth, magnitude, terms):
    return 2.0 * U * ((np.float64(terms) + 10.0) * np.float64(magnitude)
                      + 8.0 * abs(np.float64(vth)))


def compare(spec, images, tf_result, numpy_result, other_times=None, other="numpy"):
    """TF's spike times against other_times (layer index -> times; default: the numpy
    reference's), mismatches judged with the numpy reference's fire records.
    Returns (neurons compared, ties, problems, mask of images without any mismatch)."""
    names = [layer.name for layer in spec.layers]
    other_times = numpy_result.spike_times if other_times is None else other_times
    n = images.shape[0]
    clean = np.ones(n, bool)
    compared, ties, problems = 0, [], []
    for index, layer in enumerate(spec.layers):
        if layer.kind not in tfr.NEURON_KINDS:
            continue
        a = tf_result.first_spike_times[layer.name]
        b = np.asarray(other_times[index])
        compared += int(a[clean].size)
        record = numpy_result.fire_records.get(index)
        for img in np.flatnonzero(clean):
            diff = np.argwhere(a[img] != b[img])
            for pos in map(tuple, diff):
                ta, tb = int(a[img][pos]), int(b[img][pos])
                te = min(t for t in (ta, tb) if t >= 0)
                where = f"{names[index]} image {img} neuron {pos}: tf {ta} {other} {tb}"
                if record is None:
                    problems.append(where + " (layer does not fire)")
                    continue
                v, vth, mag, terms = record.at(te)
                vth_tf = tf_result.threshold_at(layer.name, te)
                gap = abs(float(v[img][pos]) - float(vth))
                bound = tie_bound(vth, mag[img][pos], terms[img][pos]) + abs(vth_tf - float(vth))
                (ties if gap <= bound else problems).append(
                    f"{where}, |V - vth| = {gap:.3g}, bound {bound:.3g}")
            if len(diff):
                clean[img] = False
    return compared, ties, problems, clean


NETS = [3, 11, 19, 27, 35]


@pytest.mark.parametrize("exp", ["float64", "tf"])
@pytest.mark.parametrize("seed", NETS)
def test_agrees_with_numpy_reference(seed, exp):
    spec, images = random_nets.random_network(seed)
    spec = from_bytes(to_bytes(spec))  # the float32 constants a model file holds
    tf_result = sim(spec, images, batch_size=3, exp=exp)  # several batches, a partial one
    numpy_result = ref.simulate(spec, images, sum_order="canonical")
    compared, ties, problems, clean = compare(spec, images, tf_result, numpy_result)
    assert not problems, "\n".join([random_nets.describe(spec)] + problems)
    assert len(ties) <= max(2, compared // 1000), "\n".join(ties)
    pot_tf = tf_result.output_potentials[clean].astype(np.float64)
    pot_np = numpy_result.potentials[clean].astype(np.float64)
    floor = 1e-6 * max(float(np.abs(pot_np).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(pot_tf, pot_np, rtol=1e-5, atol=floor)
    if spec.readout == "vmem" or clean.all():
        np.testing.assert_array_equal(tf_result.predictions[clean], numpy_result.predictions[clean])


@pytest.mark.filterwarnings("ignore:.*tf.nn.conv2d.*:RuntimeWarning")
def test_convolution_shapes_tensorflow_gets_wrong():
    # TF 2.21's oneDNN conv2d returns wrong sums (even uninitialised memory) for one input
    # channel, kernel width 3, stride (1, 2) on narrow maps at batch >= 2; the simulator
    # verifies each conv layer per batch size and falls back to extract_patches + matmul
    rng = np.random.default_rng(44)
    layers = [input_layer((4, 3, 1)),
              conv2d("conv1", rng.normal(0.3, 0.5, (1, 3, 1, 3)), rng.normal(0, 0.1, 3),
                     stride=(1, 2), padding="valid"),
              conv2d("conv2", rng.normal(0.2, 0.5, (2, 3, 3, 2)), stride=(1, 2), padding="same"),
              flatten(), dense("out", rng.normal(0, 0.5, (8, 3)))]
    spec = from_bytes(to_bytes(build_model(layers, 400)))
    images = rng.integers(0, 256, (6, 4, 3, 1)).astype(np.uint8)
    tf_result = sim(spec, images, batch_size=4, exp="float64")
    numpy_result = ref.simulate(spec, images, sum_order="canonical")
    compared, ties, problems, clean = compare(spec, images, tf_result, numpy_result)
    assert not problems and not ties, "\n".join(problems + ties)
    np.testing.assert_allclose(tf_result.output_potentials, numpy_result.potentials,
                               rtol=1e-5, atol=1e-6)
    # the fallback convolution itself, on a shape oneDNN gets wrong
    plan = tfr._plans(spec, "float64")[1]
    x = (rng.random((5,) + plan.in_shape) < 0.5).astype(F32)
    got = tfr._patch_conv2d(tfr.tf.constant(x), tfr.tf.constant(plan.weights), plan).numpy()
    np.testing.assert_allclose(got, tfr._numpy_conv2d(x, plan.weights, plan.stride, "VALID"),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", [5, 6])
def test_agrees_with_numpy_reference_overlapping_windows(seed):
    # T_s < T_d: layers integrate while they fire; only a stepped simulation handles it
    spec, images = random_nets.random_network(seed, overlapping=True)
    spec = from_bytes(to_bytes(spec))
    tf_result = sim(spec, images, exp="float64")
    numpy_result = ref.simulate(spec, images, sum_order="canonical")
    compared, ties, problems, clean = compare(spec, images, tf_result, numpy_result)
    assert not problems, "\n".join([random_nets.describe(spec)] + problems)
    np.testing.assert_allclose(tf_result.output_potentials[clean],
                               numpy_result.potentials[clean], rtol=1e-5, atol=1e-6)


def test_mnist_shaped_network_agrees_with_numpy_reference():
    # the MNIST layer stack (5x5 convs, 2x2 `or` pools, 1024 -> 10), random weights scaled so
    # layers fire partly, 4 images: the sizes where TF's convolution order differs most
    rng = np.random.default_rng(2024)
    layers = [input_layer((28, 28, 1)),
              conv2d("conv1", rng.normal(0.03, 0.15, (5, 5, 1, 12)), rng.normal(0, 0.05, 12)),
              maxpool("pool1"),
              conv2d("conv2", rng.normal(0.004, 0.05, (5, 5, 12, 64)), rng.normal(0, 0.05, 64)),
              maxpool("pool2"), flatten(),
              dense("fc1", rng.normal(0, 0.1, (1024, 10)), rng.normal(0, 0.05, 10))]
    spec = from_bytes(to_bytes(build_model(layers, 400)))
    images = rng.integers(0, 256, (4, 28, 28, 1)).astype(np.uint8)
    images[images < 160] = 0
    tf_result = sim(spec, images)
    numpy_result = ref.simulate(spec, images, sum_order="canonical")
    for name in ("conv1", "conv2"):
        fired = (tf_result.first_spike_times[name] >= 0).mean()
        assert 0.02 < fired < 0.98, f"{name}: {fired:.2%} fired; the test needs a mix"
    compared, ties, problems, clean = compare(spec, images, tf_result, numpy_result)
    assert not problems, "\n".join(problems)
    print(f"MNIST-shaped net: {compared} neuron spike times compared, {len(ties)} ties")
    np.testing.assert_allclose(tf_result.output_potentials[clean],
                               numpy_result.potentials[clean], rtol=1e-5, atol=1e-6)


# ---- 3. agreement with libttfs --------------------------------------------------------------


def load_pyttfs():
    try:
        import pyttfs
    except (ImportError, OSError) as exc:  # pyttfs.LibraryError is an OSError
        pytest.skip(f"pyttfs cannot load libttfs: {exc}")
    return pyttfs


@pytest.mark.parametrize("seed", NETS[:3])
def test_agrees_with_native_library(seed):
    pyttfs = load_pyttfs()
    spec, images = random_nets.random_network(seed)
    data = to_bytes(spec)
    spec = from_bytes(data)
    model = pyttfs.Model.from_bytes(data)
    session = model.session(backend="cpu", engine="analytic", max_batch=len(images),
                            record_spike_times=True)
    run = session.run(images)
    tf_result = sim(spec, images, exp="float64")
    numpy_result = ref.simulate(spec, images, sum_order="canonical")
    native = {index: session.spike_times(index) for index, layer in enumerate(spec.layers)
              if layer.kind in tfr.NEURON_KINDS}
    # the library sums in canonical order like the numpy reference, whose fire records judge
    # whether each TF-vs-library mismatch is a threshold tie
    compared, ties, problems, clean = compare(spec, images, tf_result, numpy_result, native,
                                              other="libttfs")
    assert not problems, "\n".join([random_nets.describe(spec)] + problems)
    assert len(ties) <= max(2, compared // 1000), "\n".join(ties)
    np.testing.assert_allclose(tf_result.output_potentials[clean],
                               np.asarray(run.potentials)[clean], rtol=1e-5, atol=1e-6)


# Random nets (tests/random_nets.py) with `gated` pools that pass spikes an `earliest` pool
# would drop (checked below): the simulator's tf.nn.max_pool_with_argmax of the spike counters
# against the numpy reference's argmax and the library's engines.
GATED_NETS = [1, 34]


@pytest.mark.parametrize("seed", GATED_NETS)
def test_gated_pool_agrees_with_numpy_reference_and_library(seed):
    pyttfs = load_pyttfs()
    spec, images = random_nets.random_network(seed)
    data = to_bytes(spec)
    spec = from_bytes(data)
    assert any(layer.pool_mode == "gated" for layer in spec.layers), random_nets.describe(spec)
    tf_result = sim(spec, images, exp="float64")
    numpy_result = ref.simulate(spec, images, sum_order="canonical")
    earliest = from_bytes(data)
    for layer in earliest.layers:
        layer.pool_mode = "earliest" if layer.pool_mode == "gated" else layer.pool_mode
    dropped = ref.simulate(earliest, images, sum_order="canonical")
    assert not np.array_equal(dropped.potentials, numpy_result.potentials), \
        f"seed {seed}: gated gives what earliest gives; pick a net where they differ"
    compared, ties, problems, _ = compare(spec, images, tf_result, numpy_result)
    assert not problems, "\n".join([random_nets.describe(spec)] + problems)
    assert len(ties) <= max(2, compared // 1000), "\n".join(ties)
    model = pyttfs.Model.from_bytes(data)
    for engine in ("stepped", "analytic"):
        with model.session(backend="cpu", engine=engine, max_batch=len(images),
                           record_spike_times=True) as session:
            run = session.run(images)
            native = {index: session.spike_times(index) for index, layer in enumerate(spec.layers)
                      if layer.kind in tfr.NEURON_KINDS}
        compared, ties, problems, clean = compare(spec, images, tf_result, numpy_result, native,
                                                  other="libttfs")
        assert not problems, "\n".join([engine] + problems)
        assert len(ties) <= max(2, compared // 1000), "\n".join(ties)
        np.testing.assert_allclose(tf_result.output_potentials[clean],
                                   np.asarray(run.potentials)[clean], rtol=1e-5, atol=1e-6)
