"""Efficiency figures (export/efficiency.py) against numbers worked out by hand.

- fan-outs of conv2d layers (VALID borders, SAME with stride 2, a stride larger than the
  kernel) and of dense layers, and the MNIST network's multiply-adds;
- synaptic operations of a hand-made network with hand-written spike times, for both pool
  modes (an `or` pooled unit delivers one spike per distinct child step);
- the spikes a pool delivers, against a direct count of distinct times per window;
- spikes on a blank image of a model whose biases decide alone which neurons fire.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from export import efficiency as eff
from export.ttfs_format import (NeuronParams, build_model, conv2d, dense, flatten, input_layer,
                                maxpool)


def _conv(name, kh, kw, cin, cout, stride=(1, 1), padding="valid", bias=None):
    return conv2d(name, np.ones((kh, kw, cin, cout), np.float32), bias, stride=stride,
                  padding=padding)


def test_conv_fan_out_by_hand():
    # 3x3 input, 2x2 kernel, VALID: a corner feeds 1 output position, an edge 2, the centre 4.
    layer = build_model([input_layer((3, 3, 1)), _conv("c", 2, 2, 1, 3),
                         flatten(), dense("d", np.ones((12, 2)))], time_steps=400).layers[1]
    fan = eff.fan_out(layer, (3, 3, 1))
    np.testing.assert_array_equal(fan[:, :, 0], 3 * np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]))


def test_conv_fan_out_same_padding_and_large_stride():
    # width 5, kernel 3, stride 2, SAME: 3 outputs, padding 1 before and 1 after; windows
    # cover columns {0,1}, {1,2,3}, {3,4}.
    spec = build_model([input_layer((1, 5, 2)), _conv("c", 1, 3, 2, 4, stride=(1, 2),
                                                      padding="same"),
                        flatten(), dense("d", np.ones((12, 1)))], time_steps=400)
    fan = eff.fan_out(spec.layers[1], (1, 5, 2))
    np.testing.assert_array_equal(fan[0, :, 0], 4 * np.array([1, 2, 1, 2, 1]))
    np.testing.assert_array_equal(fan[..., 0], fan[..., 1])
    # kernel 1, stride 2, VALID on width 4: columns 1 and 3 are read by no window.
    spec = build_model([input_layer((1, 4, 1)), _conv("c", 1, 1, 1, 2, stride=(1, 2)),
                        flatten(), dense("d", np.ones((4, 1)))], time_steps=400)
    np.testing.assert_array_equal(eff.fan_out(spec.layers[1], (1, 4, 1))[0, :, 0], [2, 0, 2, 0])
    assert eff.ann_multiply_adds(spec) == {"c": 4, "d": 4}


def test_mnist_multiply_adds_by_hand():
    spec = build_model([input_layer((28, 28, 1)), _conv("conv1", 5, 5, 1, 12),
                        maxpool("pool1"), _conv("conv2", 5, 5, 12, 64), maxpool("pool2"),
                        flatten(), dense("fc1", np.ones((1024, 10)))], time_steps=400)
    macs = eff.ann_multiply_adds(spec)
    assert macs == {"conv1": 24 * 24 * 12 * 5 * 5 * 1, "conv2": 8 * 8 * 64 * 5 * 5 * 12,
                    "fc1": 1024 * 10}
    assert sum(macs.values()) == 1_411_840


def _tiny(mode: str):
    """input 3x3 -> conv 2x2 (1 channel) -> maxpool 2x2 (1x1) -> flatten -> dense 2."""
    return build_model([input_layer((3, 3, 1), name="in"), _conv("conv", 2, 2, 1, 1),
                        maxpool("pool", mode=mode), flatten(),
                        dense("out", np.ones((1, 2)))], time_steps=400)


@pytest.mark.parametrize("mode, delivered", [("or", 2), ("earliest", 1)])
def test_synaptic_operations_by_hand(mode, delivered):
    spec = _tiny(mode)
    never = -1
    # image 0: every pixel fires (fan-outs 4 x 1 + 4 x 2 + 1 x 4 = 16); image 1: the centre
    # pixel only (fan-out 4); image 2: none
    pixels = np.array([np.arange(9).reshape(3, 3),
                       [[never, never, never], [never, 5, never], [never, never, never]],
                       np.full((3, 3), never)])
    # image 0: conv spikes at 90, 95, 90 and one silent: `or` passes steps 90 and 95 (two
    # spikes), `earliest` one; each reaches both output neurons. image 1: conv silent; image
    # 2: one conv spike.
    conv = np.array([[[90, 95], [90, never]], [[never, never], [never, never]],
                     [[never, never], [never, 99]]])
    times = {"in": pixels[..., None], "conv": conv[..., None], "out": np.full((3, 2), never)}
    ops = eff.synaptic_operations(spec, times)
    assert list(ops) == ["conv", "out"]
    np.testing.assert_array_equal(ops["conv"], [16, 4, 0])
    np.testing.assert_array_equal(ops["out"], [2 * delivered, 0, 2])
    assert eff.ann_multiply_adds(spec) == {"conv": 16, "out": 2}


def _distinct_times_per_window(times, k):
    """`or` pooling, counted directly: the distinct fire steps in each k x k window."""
    n, h, w, c = times.shape
    out = np.zeros((n, h // k, w // k, c), np.int32)
    for i, y, x, ch in itertools.product(range(n), range(h // k), range(w // k), range(c)):
        window = times[i, y * k:(y + 1) * k, x * k:(x + 1) * k, ch]
        out[i, y, x, ch] = len(set(window[window >= 0].tolist()))
    return out


def test_delivered_spikes_against_a_direct_count():
    rng = np.random.default_rng(7)
    times = rng.integers(80, 86, size=(3, 6, 6, 2)).astype(np.int32)
    times[rng.random(times.shape) < 0.4] = -1
    pools = {mode: maxpool("p", (3, 3), mode=mode) for mode in ("or", "earliest")}
    for layer in pools.values():
        layer.out_shape = (2, 2, 2)
    direct = _distinct_times_per_window(times, 3)
    np.testing.assert_array_equal(eff.delivered_spikes(times, [pools["or"]]), direct)
    np.testing.assert_array_equal(eff.delivered_spikes(times, [pools["earliest"]]),
                                  (direct > 0).astype(np.int32))
    np.testing.assert_array_equal(eff.delivered_spikes(times, []), (times >= 0).astype(np.int32))


def test_spikes_on_a_blank_image_follow_the_biases():
    pyttfs = pytest.importorskip("pyttfs")
    # T_d = 20, tau 20, td 0, vth0 1: the lowest threshold of a fire window is
    # exp(-19/20) = 0.387. On an all-zero image a neuron's potential is its bias alone, so
    # conv1 channel 0 (bias 0.5) fires at all 16 positions, channels 1 (-0.5) and 2 (0.3)
    # never; conv2 has zero weights, so its channel 0 (bias 0.6) fires everywhere whatever
    # conv1 did and channel 1 (0.1) never. The output (vmem readout) never fires.
    neuron = NeuronParams(tau_fire=20.0, td_fire=0.0)
    spec = build_model(
        [input_layer((4, 4, 1), name="in", neuron=neuron),
         conv2d("conv1", np.ones((1, 1, 1, 3)), [0.5, -0.5, 0.3], neuron=neuron),
         conv2d("conv2", np.zeros((1, 1, 3, 2)), [0.6, 0.1], neuron=neuron),
         flatten(), dense("out", np.ones((32, 2)), [1.0, 2.0], neuron=neuron)],
        time_steps=80, time_fire_start=20, time_fire_duration=20)
    from export.ttfs_format import to_bytes

    try:
        model = pyttfs.Model.from_bytes(to_bytes(spec))
    except OSError as error:
        pytest.skip(f"libttfs is not available: {error}")
    with model:
        blank = eff.blank_image_spikes(model)
    assert blank == {"in": 0, "conv1": 16, "conv2": 16, "out": 0}
    record = eff.efficiency_record(spec, {"in": 1.0, "conv1": 8.0, "conv2": 4.0, "out": 0.0},
                                   {"conv1": 10.0, "conv2": 20.0, "out": 30.0}, blank)
    assert record["blank_image_spikes"] == {"per_layer": blank, "hidden": 32}
    assert record["hidden_spikes_per_image"] == 12.0
    assert record["spikes"]["conv1"]["per_neuron"] == pytest.approx(8.0 / 48)
    assert record["ann_multiply_adds"] == {"conv1": 48, "conv2": 96, "out": 64}
    assert record["synops_per_multiply_add"] == pytest.approx(60.0 / 208)


def test_gated_pool_deliveries_by_hand():
    """A gated pool passes, per step, the spike of the child with the largest spike counter
    (0 before it fired, vth(t) at its fire step, 1 after; the first in window order among
    equals). With td_fire = 3 and tau 10 the threshold is above 1 for the first three steps of
    the fire window (exp(0.3), exp(0.2), exp(0.1)) and below from the fourth (exp(0) = 1 ties,
    exp(-0.1) < 1): a later child takes the window over only while its threshold is above the
    first child's counter of 1."""
    if "gated" not in __import__("export.ttfs_format", fromlist=["POOL_MODE_NAMES"]).POOL_MODE_NAMES:
        pytest.skip("the model format has no gated pool mode yet")
    neuron = NeuronParams(tau_fire=10.0, td_fire=3.0)
    spec = build_model([input_layer((2, 2, 1), name="in"),
                        conv2d("conv", np.ones((1, 1, 1, 1)), neuron=neuron),
                        maxpool("pool", mode="gated"), flatten(),
                        dense("out", np.ones((1, 3)))],
                       time_steps=80, time_fire_start=20, time_fire_duration=20)
    conv = spec.layers[1]
    start = conv.neuron.fire_window[0]  # 20
    never = -1
    # window order: (0,0), (0,1), (1,0), (1,1)
    cases = [
        ([start, start + 1, start + 2, never], 3),  # each later child fires while vth > 1
        ([start, start + 3, start + 5, never], 1),  # vth = 1 ties: the first child (fired) wins
        ([start + 4, start + 1, never, never], 1),  # the later child's vth(24) < 1: blocked
        ([start + 2, start + 2, start + 2, start + 2], 1),  # one step, one spike
        ([never, never, never, never], 0),
        ([start + 6, never, start + 1, never], 1),
    ]
    times = np.array([c for c, _ in cases]).reshape(len(cases), 2, 2, 1)
    delivered = eff.delivered_spikes(times, [spec.layers[2]], conv)
    np.testing.assert_array_equal(delivered.reshape(-1), [d for _, d in cases])
    ops = eff.synaptic_operations(spec, {"in": np.full((len(cases), 2, 2, 1), never),
                                         "conv": times, "out": np.full((len(cases), 3), never)})
    np.testing.assert_array_equal(ops["out"], [3 * d for _, d in cases])


def test_accuracy_against_spikes_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import json

    for name, accuracy, spikes in (("a", 0.991, 3000.0), ("b", 0.9945, 1900.0)):
        results = tmp_path / name / "results"
        results.mkdir(parents=True)
        (results / "results.json").write_text(json.dumps(
            {"snn": {"accuracy": accuracy}, "hidden_spikes_per_image": spikes}))
    out = tmp_path / "plot.png"
    assert eff.main([str(tmp_path / "a"), "--label", f"{tmp_path / 'b'}=B", str(tmp_path / "b"),
                     "--output", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "a: 99.10 %, 3000 hidden spikes" in printed and "B: 99.45 %, 1900" in printed
    assert eff.main([str(tmp_path / "missing"), "--output", str(out)]) == 1
    assert "no results.json" in capsys.readouterr().err
