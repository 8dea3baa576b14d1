"""The `gated` pool mode: the spike-count-gated max pool of the T2FSNN reference.

What it computes (docs/ENGINES.md, "Spikes through maxpool and flatten"): at every step t, after
the neuron layer below has fired, each child of a pool window has a spike counter -- 0 before
it fires, the threshold vth(t) of its layer at its fire step, 1 afterwards -- and the pooled
unit passes the spike of step t of the child with the largest counter, the first in window
order (kernel row, then kernel column; positions inside the input only) among equal counters.

1. Hand-computed networks, each run through the four implementations (the library's stepped
   and analytic engines, tests/reference_numpy.py and export/tf_reference.py): the expected
   pooled spike steps are worked out in the comments from the threshold formula, the
   thresholds around each fire step are asserted, and the output potential is written out as
   the float32 operations of docs/ENGINES.md for that spike train. No expectation here comes
   from running an engine. Cases where `gated` differs from `earliest` (a later child whose
   threshold is above 1; a tie at exactly 1 decided by window order; a threshold of exactly 0)
   and where it equals it (every threshold after the first step below 1).
2. A real model: models/mnist.ttfs has td_fire <= 0 and vth0 = 1 in every layer, so with its
   pools made `gated` every result must be bit-identical to its `earliest` pools.
3. The model file: the writer and the reader accept `gated` only directly above a neuron layer.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import reference_numpy as ref  # noqa: E402

from export.ttfs_format import (CONST, NeuronParams, build_model, conv2d, dense,  # noqa: E402
                                flatten, from_bytes, input_layer, maxpool, read_model, to_bytes,
                                with_crc)

try:
    import pyttfs
    from pyttfs._lib import PoolMode
except OSError as exc:  # pyttfs.LibraryError: libttfs not built or not found
    pytest.skip(f"libttfs is not available: {exc}", allow_module_level=True)

f32 = np.float32
NEVER = -1
IMPLEMENTATIONS = ("stepped", "analytic", "numpy", "tf")
REPO = HERE.parent


def decay(elapsed, td, tau, vth0=1.0):
    """vth0 * exp(-(elapsed - td) / tau) with float32 operands and operations."""
    exponent = -(f32(elapsed) - f32(td)) / f32(tau)
    return f32(f32(vth0) * f32(np.exp(np.float64(exponent))))


def run(spec, images, implementation):
    """(first-spike times per neuron layer name, output potentials) of one implementation."""
    spec = from_bytes(to_bytes(spec))  # the float32 constants of the file, for every side
    names = [layer.name for layer in spec.layers if layer.kind in ("input", "conv2d", "dense")]
    if implementation in ("stepped", "analytic"):
        model = pyttfs.Model.from_bytes(to_bytes(spec))
        # (pixels above 1 on purpose: a child must reach a threshold above 1 to pass a gate)
        with model.session(backend="cpu", engine=implementation, max_batch=len(images),
                           record_spike_times=True, allow_unscaled=True) as session:
            result = session.run(images)
            return {n: session.spike_times(n) for n in names}, np.array(result.potentials)
    if implementation == "numpy":
        result = ref.simulate(spec, images)
        times = {spec.layers[i].name: t for i, t in result.spike_times.items()}
        return times, result.potentials
    tf_reference = pytest.importorskip("export.tf_reference",
                                       reason="the TF reference simulator needs TensorFlow")
    result = tf_reference.simulate(spec, images, exp="float64", progress=False)
    return result.first_spike_times, result.output_potentials


# ---- 1. a 2x2 window over the input ------------------------------------------------------------
# input 2x2x1 (tau 20, td and vth0 per case, fire window [0, 80)) -> 2x2 pool -> flatten ->
# out (dense 1 -> 1, weight 0.5, no bias; integrates [0, 80) with the input's constants chained:
# k(t) = exp(-(t - td)/20) for t >= 1, k(0) = 1; vmem readout). The pooled unit's spike train
# is read off the output potential: V = 0.5 at step 0, plus 0.5 * k(t) for every later step t
# at which the pooled unit spikes.

def window_net(mode, td, vth0=1.0):
    layers = [input_layer((2, 2, 1), neuron=NeuronParams(tau_fire=20.0, td_fire=td, vth0=vth0)),
              maxpool("pool", (2, 2), mode=mode), flatten(), dense("out", [[0.5]])]
    return build_model(layers, time_steps=160, time_fire_start=80, time_fire_duration=80)


def potential_of(train, td):
    """V of `out` for pooled spikes at the steps of `train` (the first one at step 0)."""
    assert train[0] == 0
    v = (f32(0.0) + f32(0.5) + f32(0.0)) * f32(1.0)  # t = 0: the spike, then the (zero) bias
    for t in train[1:]:
        v = v + f32(0.5) * decay(t, td, 20.0)
    return v


# (case, td, vth0, pixels in window order, the children's fire steps, pooled spikes per mode)
WINDOW_CASES = [
    # td = 3: vth(t) = exp(-(t - 3)/20) = 1.1618, 1.1052, 1.0513, 1 (exactly), 0.9512 at t = 0..4.
    # Children fire at 0, 2, 4 and never. t = 2: the new child's counter 1.0513 beats the 1 of
    # the child that fired at 0: it passes. t = 4: 0.9512 < 1: the child of step 0 wins, and it
    # does not spike at 4: nothing passes.
    ("later child above 1 passes", 3.0, 1.0, [1.2, 1.08, 0.96, 0.0], [0, 2, 4, NEVER],
     {"gated": [0, 2], "earliest": [0], "or": [0, 2, 4]}),
    # vth(3) = vth0 * exp(-0/20) = 1 exactly: the child firing at 3 ties with the child of step
    # 0 (counter 1); the first of the two in window order wins.
    ("tie at 1, new child first", 3.0, 1.0, [1.0, 1.2, 0.0, 0.0], [3, 0, NEVER, NEVER],
     {"gated": [0, 3], "earliest": [0], "or": [0, 3]}),
    ("tie at 1, old child first", 3.0, 1.0, [1.2, 1.0, 0.0, 0.0], [0, 3, NEVER, NEVER],
     {"gated": [0], "earliest": [0], "or": [0, 3]}),
    # Window order is row-major: (0, 1) comes before (1, 0).
    ("tie at 1, row before column", 3.0, 1.0, [0.0, 1.0, 1.2, 0.0], [NEVER, 3, 0, NEVER],
     {"gated": [0, 3], "earliest": [0], "or": [0, 3]}),
    ("tie at 1, column after row", 3.0, 1.0, [0.0, 1.2, 1.0, 0.0], [NEVER, 0, 3, NEVER],
     {"gated": [0], "earliest": [0], "or": [0, 3]}),
    # vth0 = 1.5, td = 0: vth(t) = 1.5 exp(-t/20) is above 1 up to t = 8 (1.0055) and below from
    # t = 9 (0.9564): td_fire <= 0 alone does not make `gated` equal `earliest`. Children fire
    # at 0, 2 (1.36: 1.4268 > 1.36 >= 1.3573) and 9 (1.0: 1.0055 > 1.0 >= 0.9564).
    ("vth0 above 1 with td 0", 0.0, 1.5, [1.6, 1.36, 1.0, 0.0], [0, 2, 9, NEVER],
     {"gated": [0, 2], "earliest": [0], "or": [0, 2, 9]}),
    # td = 0, vth0 = 1: vth(t) = exp(-t/20) < 1 after step 0, so a later child never beats the
    # counter 1 of the first: exactly `earliest`. Children fire at 0, 2 (0.93: 0.9512 > 0.93 >=
    # 0.9048) and 4 (0.85: 0.8607 > 0.85 >= 0.8187).
    ("td 0 equals earliest", 0.0, 1.0, [1.2, 0.93, 0.85, 0.0], [0, 2, 4, NEVER],
     {"gated": [0], "earliest": [0], "or": [0, 2, 4]}),
    # td = 0.5: vth(0) = 1.0253 > 1, but at step 0 no child has fired before; from step 1 on
    # vth <= exp(-0.5/20) = 0.9753 < 1: still exactly `earliest`. Children fire at 0, 2 (0.95:
    # 0.9753 > 0.95 >= 0.9277) and 4 (0.85: 0.8825 > 0.85 >= 0.8395).
    ("td 0.5 equals earliest", 0.5, 1.0, [1.2, 0.95, 0.85, 0.0], [0, 2, 4, NEVER],
     {"gated": [0], "earliest": [0], "or": [0, 2, 4]}),
]


def test_hand_thresholds_behind_window_cases():
    vth = [decay(t, 3.0, 20.0) for t in range(5)]
    assert vth[0] > vth[1] > vth[2] > f32(1.0) == vth[3] > vth[4]
    assert f32(1.2) >= vth[0] and vth[1] > f32(1.08) >= vth[2] and vth[3] > f32(0.96) >= vth[4]
    assert vth[2] > f32(1.0) and f32(1.0) >= vth[3] and vth[4] < f32(1.0)
    assert decay(1, 0.0, 20.0, 1.5) > f32(1.36) >= decay(2, 0.0, 20.0, 1.5) > f32(1.0)
    assert decay(8, 0.0, 20.0, 1.5) > f32(1.0) >= decay(9, 0.0, 20.0, 1.5)
    assert decay(1, 0.0, 20.0) > f32(0.93) >= decay(2, 0.0, 20.0)
    assert decay(3, 0.0, 20.0) > f32(0.85) >= decay(4, 0.0, 20.0)
    assert decay(0, 0.5, 20.0) > f32(1.0) > decay(1, 0.5, 20.0)
    assert decay(1, 0.5, 20.0) > f32(0.95) >= decay(2, 0.5, 20.0)
    assert decay(3, 0.5, 20.0) > f32(0.85) >= decay(4, 0.5, 20.0)


# One run per network (td, vth0): the cases of a network are the images of one batch.
WINDOW_NETS = sorted({(c[1], c[2]) for c in WINDOW_CASES})
# (`or` and `earliest` in the TF simulator are tested in tests/test_tf_reference.py)
MODE_RUNS = [(m, i) for m in ("gated", "earliest", "or") for i in IMPLEMENTATIONS
             if i != "tf" or m == "gated"]


@pytest.mark.parametrize("mode, implementation", MODE_RUNS)
@pytest.mark.parametrize("net", WINDOW_NETS, ids=[f"td{td}-vth0{v}" for td, v in WINDOW_NETS])
def test_pooled_spike_train(net, mode, implementation):
    td, vth0 = net
    cases = [c for c in WINDOW_CASES if (c[1], c[2]) == net]
    images = np.array([c[3] for c in cases], np.float32).reshape(-1, 2, 2, 1)
    times, potentials = run(window_net(mode, td, vth0), images, implementation)
    for b, (name, _, _, _, fire_steps, trains) in enumerate(cases):
        np.testing.assert_array_equal(times["input"][b].reshape(-1), fire_steps, err_msg=name)
        # (k(t) uses the input's td and tau 20 without vth0: the kernel is not the threshold
        # when vth0 != 1; the output never fires under vmem readout)
        expected = potential_of(trains[mode], td)
        np.testing.assert_allclose(potentials[b].reshape(-1), [expected], rtol=2e-6, atol=0,
                                   err_msg=name)


def test_window_cases_tell_the_modes_apart():
    # the potentials of different spike trains are far apart, so the comparison above decides
    for _, td, _, _, _, trains in WINDOW_CASES:
        values = {tuple(train): potential_of(train, td) for train in trains.values()}
        ordered = sorted(values.values())
        assert all(b - a > 0.01 for a, b in zip(ordered, ordered[1:]))


# ---- 1b. a threshold of exactly 0, and SAME padding -------------------------------------------
# input 1x2x1 (tau 20, td 0) -> hidden conv 1x1 (weight 1, bias -0.5; tau_fire 1, td_fire -200,
# so every threshold vth0 * exp(-(j + 200)) underflows to exactly 0) -> pool -> flatten -> out.
# A black pixel never fires; a pixel of 1.0 fires at 0 (1.0 >= exp(0) = 1), so its hidden
# neuron has V = -0.5 + 1 * 1 = 0.5 >= 0 and fires at the first step of its window, 80, and the
# other hidden neuron has V = -0.5 < 0 and never fires. At step 80 nobody fired before and all
# counters are 0 (the unfired neuron's and vth(80) = 0 of the firing one): the first child in
# window order wins. out's integration constants are set to tau 20, td 0 (not chained from the
# hidden layer, whose kernel would be 0 too), so a pooled spike at 80, the first step of out's
# window, adds w * exp(0) = w exactly.

def zero_threshold_net(mode, pool):
    size, padding = pool
    hidden = NeuronParams(tau_fire=1.0, td_fire=-200.0)
    out_units = 2 if padding == "same" else 1
    layers = [input_layer((1, 2, 1), neuron=NeuronParams(tau_fire=20.0)),
              conv2d("hidden", np.ones((1, 1, 1, 1), np.float32), [-0.5], neuron=hidden),
              maxpool("pool", size, stride=(1, 1), padding=padding, mode=mode), flatten(),
              dense("out", np.array([[0.5], [0.25]][:out_units], np.float32))]
    spec = build_model(layers, time_steps=240, time_fire_start=80, time_fire_duration=80)
    spec.layers[-1].neuron.tau_integ, spec.layers[-1].neuron.td_integ = 20.0, 0.0
    return spec


ZERO_CASES = [
    # (1, 2) VALID window over both hidden neurons: one pooled unit.
    ("first child silent", ((1, 2), "valid"), [0.0, 1.0],
     {"gated": [0.0], "earliest": [0.5], "or": [0.5]}),
    ("first child fires", ((1, 2), "valid"), [1.0, 0.0],
     {"gated": [0.5], "earliest": [0.5], "or": [0.5]}),
    # (1, 3) SAME, stride 1: two pooled units, windows [-1, 2) and [0, 3); the padding column
    # -1 is no child (it would otherwise be first in order with a counter of 0).
    ("padding is no child", ((1, 3), "same"), [1.0, 0.0],
     {"gated": [0.75], "earliest": [0.75], "or": [0.75]}),
    ("padding is no child, second fires", ((1, 3), "same"), [0.0, 1.0],
     {"gated": [0.0], "earliest": [0.75], "or": [0.75]}),
]


def test_hand_thresholds_behind_zero_cases():
    assert decay(0, -200.0, 1.0) == 0.0 and decay(79, -200.0, 1.0) == 0.0
    assert f32(1.0) >= decay(0, 0.0, 20.0) and decay(0, 0.0, 20.0) == 1.0


ZERO_POOLS = [((1, 2), "valid"), ((1, 3), "same")]


@pytest.mark.parametrize("mode, implementation", MODE_RUNS)
@pytest.mark.parametrize("pool", ZERO_POOLS, ids=["valid", "same"])
def test_zero_threshold_tie(pool, mode, implementation):
    cases = [c for c in ZERO_CASES if c[1] == pool]
    images = np.array([c[2] for c in cases], np.float32).reshape(-1, 1, 2, 1)
    times, potentials = run(zero_threshold_net(mode, pool), images, implementation)
    for b, (name, _, pixels, expected) in enumerate(cases):
        lit = [0 if x == 1.0 else NEVER for x in pixels]
        np.testing.assert_array_equal(times["input"][b].reshape(-1), lit, err_msg=name)
        np.testing.assert_array_equal(times["hidden"][b].reshape(-1),
                                      [80 if t == 0 else NEVER for t in lit], err_msg=name)
        # V = +0 + (0 + bias 0) * 1, then + S * 1 at step 80 (exact in float32)
        np.testing.assert_array_equal(potentials[b].reshape(-1),
                                      np.array(expected[mode], np.float32), err_msg=name)


# ---- 2. a real model: td_fire <= 0 and vth0 = 1 everywhere -> gated == earliest ---------------

def test_mnist_model_gated_equals_earliest():
    spec = read_model(REPO / "models" / "mnist.ttfs")
    pools = [layer for layer in spec.layers if layer.kind == "maxpool"]
    assert pools and all(layer.pool_mode == "earliest" for layer in pools)
    below = [spec.layers[spec.layers.index(p) - 1] for p in pools]
    # every threshold after the first step of the children's window is below 1
    assert all(n.neuron.vth0 == 1.0 and n.neuron.td_fire <= 0 for n in below)
    gated = copy.deepcopy(spec)
    for layer in gated.layers:
        if layer.kind == "maxpool":
            layer.pool_mode = "gated"
    images = np.fromfile(REPO / "models" / "mnist-test-100-images.idx", np.uint8)[16:]
    images = images.reshape(-1, 28, 28, 1)[:60]
    results = {}
    for name, s in (("earliest", spec), ("gated", gated)):
        model = pyttfs.Model.from_bytes(to_bytes(s))
        assert [l.pool_mode for l in model.layers if l.kind == "maxpool"] == [name, name]
        for engine in ("stepped", "analytic"):
            with model.session(backend="cpu", engine=engine, max_batch=len(images),
                               record_spike_times=True) as session:
                result = session.run(images)
                results[name, engine] = (
                    [session.spike_times(i) for i, l in enumerate(model.layers) if l.has_neurons],
                    result.predictions.copy(), result.potentials.copy())
    reference = results["earliest", "analytic"]
    for key, (times, predictions, potentials) in results.items():
        for a, b in zip(times, reference[0]):
            np.testing.assert_array_equal(a, b, err_msg=str(key))
        np.testing.assert_array_equal(predictions, reference[1], err_msg=str(key))
        np.testing.assert_array_equal(potentials.view(np.uint32), reference[2].view(np.uint32),
                                      err_msg=str(key))
    assert np.mean(reference[1] >= 0) == 1.0 and len(set(reference[1].tolist())) > 5


# ---- 3. the model file --------------------------------------------------------------------------

def pool_of_pool(mode):
    layers = [input_layer((4, 4, 1)), maxpool("pool1", (2, 2), mode="earliest"),
              maxpool("pool2", (2, 2), mode=mode), flatten(), dense("out", [[0.5]])]
    return build_model(layers, time_steps=160, time_fire_start=80, time_fire_duration=80)


def test_writer_accepts_gated_only_above_neurons():
    data = to_bytes(window_net("gated", 0.0))
    assert from_bytes(data).layers[1].pool_mode == "gated"
    with pytest.raises(ValueError, match="layer 2 'pool2'.*gated.*'pool1' is a maxpool"):
        to_bytes(pool_of_pool("gated"))


def test_reader_rejects_gated_above_a_pool():
    data = bytearray(to_bytes(pool_of_pool("earliest")))
    offset = CONST["HEADER_SIZE"] + 2 * CONST["LAYER_RECORD_SIZE"] + CONST["L_POOL_MODE"]
    assert data[offset] == CONST["POOL_EARLIEST"]
    data[offset] = CONST["POOL_GATED"]
    with pytest.raises(pyttfs.TtfsError) as caught:
        pyttfs.Model.from_bytes(with_crc(bytes(data)))
    assert caught.value.status == "TTFS_ERR_BAD_FIELD"
    message = caught.value.message
    assert "pool2" in message and "pool_mode" in message and "gated" in message \
        and "maxpool" in message, message


def test_layer_info_names_the_mode():
    model = pyttfs.Model.from_bytes(to_bytes(window_net("gated", 0.0)))
    assert model.layers[1].pool_mode == "gated"
    assert PoolMode.GATED == CONST["POOL_GATED"] == 2
