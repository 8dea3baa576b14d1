"""Checks of the numpy reference simulator itself, on cases small enough to work out by hand.

The specs here are plain namespaces with every window written out, so these tests depend on
neither the model-file writer nor the library: they pin the reference to docs/ALGORITHM.md before
the reference is used to judge libttfs.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest

try:  # tests/ on sys.path (pytest's default rootdir-less import mode)
    import reference_numpy as ref
except ImportError:  # tests imported as a package
    from tests import reference_numpy as ref

F32 = np.float32


def neuron(tau=20.0, td=0.0, vth0=1.0, tau_i=None, td_i=None, integ=None, fire=None):
    return SimpleNamespace(tau_fire=tau, td_fire=td, tau_integ=tau_i, td_integ=td_i,
                           vth0=vth0, integ_window=integ, fire_window=fire)


def inp(shape, tau=20.0, td=0.0, vth0=1.0, fire=(0, 80)):
    return SimpleNamespace(kind="input", name="input", out_shape=shape,
                           neuron=neuron(tau, td, vth0, fire=fire), input_divisor=255.0)


def dense(w, b, shape_out, tau=20.0, td=0.0, vth0=1.0, tau_i=20.0, td_i=0.0,
          integ=(0, 80), fire=(80, 160), name="fc"):
    return SimpleNamespace(kind="dense", name=name, out_shape=shape_out, weights=np.asarray(w, F32),
                           bias=None if b is None else np.asarray(b, F32),
                           neuron=neuron(tau, td, vth0, tau_i, td_i, integ, fire))


def conv(w, b, shape_out, stride=(1, 1), padding="valid", integ=(0, 80), fire=(80, 160),
         tau_i=20.0, td_i=0.0, name="conv"):
    w = np.asarray(w, F32)
    return SimpleNamespace(kind="conv2d", name=name, out_shape=shape_out, weights=w,
                           bias=None if b is None else np.asarray(b, F32),
                           kernel=w.shape[:2], stride=stride, padding=padding,
                           neuron=neuron(20.0, 0.0, 1.0, tau_i, td_i, integ, fire))


def pool(shape_out, size=(2, 2), stride=(2, 2), padding="valid", mode="or"):
    return SimpleNamespace(kind="maxpool", name="pool", out_shape=shape_out, kernel=size,
                           stride=stride, padding=padding, pool_mode=mode)


def flat(n):
    return SimpleNamespace(kind="flatten", name="flatten", out_shape=(1, 1, n))


def spec(layers, time_steps, readout="vmem"):
    return SimpleNamespace(layers=layers, time_steps=time_steps, readout=readout)


def kf(t, start, td, tau):
    """k(t) as the reference defines it, step by step in float32 (exp rounded from float64)."""
    arg = -(F32(t - start) - F32(td)) / F32(tau)
    return F32(math.exp(float(arg)))


def single_pixel_time(x, tau=20.0, td=0.0, vth0=1.0, window=80):
    s = spec([inp((1, 1, 1), tau, td, vth0, fire=(0, window)),
              flat(1), dense([[1.0]], None, (1, 1, 1))], window + 80)
    r = ref.simulate(s, np.full((1, 1, 1, 1), x, F32))
    return int(r.spike_times[0][0, 0, 0, 0])


# ---- input layer ----------------------------------------------------------------------------

def test_single_pixel_firing_time_by_hand():
    # 0.5 >= exp(-t/20) first at t = ceil(20 ln 2) = ceil(13.86) = 14
    assert single_pixel_time(0.5) == 14
    assert single_pixel_time(1.0) == 0  # x >= vth0 at t = 0
    assert single_pixel_time(0.0) == -1  # silence
    # vth0 = 0.5 and x = 0.5: '>=' fires at t = 0 exactly
    assert single_pixel_time(0.5, vth0=0.5) == 0
    # td shifts the threshold: vth(t) = exp(-(t - 5)/20); 0.5 first at t = 5 + 14 = 19
    assert single_pixel_time(0.5, td=5.0) == 19
    # below the last threshold exp(-79/20) of an 80-step window: never; t = 80 is not a spike
    last = math.exp(-79 / 20)
    assert single_pixel_time(F32(last * 1.001)) == 79
    assert single_pixel_time(F32(last * 0.999)) == -1


def test_pixel_exactly_at_threshold_fires_that_step():
    vth = ref.decay_table(1.0, 10.0, 0.0, 30)
    x = np.array(vth[[3, 7, 12]], F32).reshape(1, 1, 1, 3)
    s = spec([inp((1, 1, 3), tau=10.0, fire=(0, 30)), flat(3),
              dense(np.ones((3, 1)), None, (1, 1, 1), integ=(0, 30), fire=(30, 60))], 60)
    r = ref.simulate(s, x)
    assert r.spike_times[0].ravel().tolist() == [3, 7, 12]
    # one ulp below the threshold fires one step later
    x2 = np.nextafter(x, F32(0))
    assert ref.simulate(s, x2).spike_times[0].ravel().tolist() == [4, 8, 13]


# ---- one dense unit -------------------------------------------------------------------------

def test_one_unit_dense_potential_by_hand():
    # x = (1.0, 0.5): pixel 0 fires at 0 (weight 1), pixel 1 at 7 (0.5 >= exp(-0.7) = 0.4966)
    w, b = np.array([[0.75], [-0.3]], F32), np.array([0.125], F32)
    s = spec([inp((1, 1, 2), tau=10.0, fire=(0, 30)), flat(2),
              dense(w, b, (1, 1, 1), tau_i=10.0, td_i=1.5, integ=(0, 30), fire=(30, 60))], 60)
    r = ref.simulate(s, np.array([1.0, 0.5], F32).reshape(1, 1, 1, 2))
    assert r.spike_times[0].ravel().tolist() == [0, 7]
    # float32, operation by operation: t = 0: S = 0 + w0, S = S + b, V = 0 + S*1;
    # t = 7: V = V + w1 * k(7), k(7) = exp(-(7 - 1.5)/10)
    v = F32(F32(F32(0.0) + w[0, 0]) + b[0])
    v = F32(v + F32(w[1, 0] * kf(7, 0, 1.5, 10.0)))
    assert r.potentials.shape == (1, 1)
    assert r.potentials[0, 0].view(np.uint32) == v.view(np.uint32)
    expected = 0.75 + 0.125 - 0.3 * math.exp(-(7 - 1.5) / 10)
    assert r.potentials[0, 0] == pytest.approx(expected, rel=1e-6)
    assert r.predictions.tolist() == [0]


def test_deeper_layer_first_integration_step_has_kernel_exp_td_over_tau():
    # layer 2 integrates [10, 20); a spike of layer 1 at its first fire step 10 is weighted
    # exp(+td/tau), not 1 (only t == 0 gets 1), and layer 2's bias enters at t == 0.
    s = spec([inp((1, 1, 1), tau=5.0, fire=(0, 10)), flat(1),
              dense([[2.0]], None, (1, 1, 1), tau=5.0, td=2.0, tau_i=5.0, td_i=0.0,
                    integ=(0, 10), fire=(10, 20), name="fc1"),
              dense([[1.0]], [0.25], (1, 1, 1), tau_i=5.0, td_i=2.0, integ=(10, 20),
                    fire=(20, 30), name="fc2")], 30)
    r = ref.simulate(s, np.ones((1, 1, 1, 1), F32))
    # fc1: V = 2 at t = 0 (input spike at 0, weight 1); threshold exp(-(j-2)/5) = 1.49 at j=0
    assert r.spike_times[2].ravel().tolist() == [10]
    expected = F32(F32(0.25) + F32(1.0) * kf(10, 10, 2.0, 5.0))
    assert r.potentials[0, 0] == expected
    assert r.potentials[0, 0] == pytest.approx(0.25 + math.exp(2.0 / 5.0), rel=1e-6)


def test_dense_unit_fires_under_first_spike_readout_and_resets():
    s = spec([inp((1, 1, 1), tau=10.0, fire=(0, 20)), flat(1),
              dense([[0.5]], None, (1, 1, 1), tau=10.0, integ=(0, 20),
                    fire=(20, 40))], 40, readout="first_spike")
    r = ref.simulate(s, np.ones((1, 1, 1, 1), F32))
    # V = 0.5; fires at 20 + ceil(10 ln 2) = 20 + 7
    assert r.spike_times[2].ravel().tolist() == [27]
    assert r.potentials[0, 0] == 0.0  # reset
    rec = r.fire_records[2]
    v, th, mag, terms = rec.at(27)
    assert v[0, 0, 0, 0] == F32(0.5) and th == ref.decay_table(1.0, 10.0, 0.0, 20)[7]
    assert mag[0, 0, 0, 0] == F32(0.5) and terms[0, 0, 0, 0] == 2
    v26, th26, _, _ = rec.at(26)
    assert v26[0, 0, 0, 0] < th26
    with pytest.raises(IndexError):
        rec.at(40)


def test_output_layer_does_not_fire_under_vmem_readout():
    s = spec([inp((1, 1, 1), fire=(0, 20)), flat(1),
              dense([[5.0]], None, (1, 1, 1), integ=(0, 20), fire=(20, 40))], 40)
    r = ref.simulate(s, np.ones((1, 1, 1, 1), F32))
    assert r.spike_times[2].ravel().tolist() == [-1]
    assert r.potentials[0, 0] == F32(5.0)
    assert 2 not in r.fire_records


def test_no_integration_outside_the_window():
    # the pixel fires at 7, after layer 1's integration window [0, 5) closed: only the bias
    s = spec([inp((1, 1, 1), tau=10.0, fire=(0, 20)), flat(1),
              dense([[1.0]], [0.5], (1, 1, 1), integ=(0, 5), fire=(20, 40))], 40)
    r = ref.simulate(s, np.full((1, 1, 1, 1), 0.5, F32))
    assert r.spike_times[0].ravel().tolist() == [7]
    assert r.potentials[0, 0] == F32(0.5)


# ---- pooling --------------------------------------------------------------------------------

def pool_net(mode, pixels):
    s = spec([inp((2, 2, 1), tau=10.0, fire=(0, 30)), pool((1, 1, 1), mode=mode), flat(1),
              dense([[1.0]], None, (1, 1, 1), tau_i=10.0, integ=(0, 30), fire=(30, 60))], 60)
    return ref.simulate(s, np.array(pixels, F32).reshape(1, 2, 2, 1))


def test_or_pool_relays_every_distinct_child_time_earliest_only_the_first():
    # children fire at 0, 7, 14 and never
    pixels = [1.0, 0.5, 0.25, 0.0]
    r = pool_net("or", pixels)
    assert r.spike_times[0].ravel().tolist() == [0, 7, 14, -1]
    v = F32(F32(0.0) + F32(1.0))
    v = F32(v + kf(7, 0, 0.0, 10.0))
    v = F32(v + kf(14, 0, 0.0, 10.0))
    assert r.potentials[0, 0] == v
    assert r.potentials[0, 0] == pytest.approx(1 + math.exp(-0.7) + math.exp(-1.4), rel=1e-6)
    assert pool_net("earliest", pixels).potentials[0, 0] == F32(1.0)
    # two children at the same step count once (a max, not a sum) in both modes
    same = [0.5, 0.5, 0.0, 0.25]  # 7, 7, never, 14
    assert pool_net("or", same).potentials[0, 0] == F32(kf(7, 0, 0, 10.0) + kf(14, 0, 0, 10.0))
    assert pool_net("earliest", same).potentials[0, 0] == kf(7, 0, 0, 10.0)


def test_same_maxpool_counts_only_positions_inside_the_input():
    # 3x3 input, pool 2x2 stride 2 SAME -> 2x2; padding after only; the corner window holds
    # one pixel. Weights pick out each pooled unit.
    s = spec([inp((3, 3, 1), tau=10.0, fire=(0, 30)),
              pool((2, 2, 1), padding="same", mode="or"), flat(4),
              dense(np.eye(4), None, (1, 1, 4), integ=(0, 30), fire=(30, 60))], 60)
    img = np.zeros((1, 3, 3, 1), F32)
    img[0, 2, 2, 0] = 1.0  # only the bottom-right pixel: only pooled unit (1,1) sees it
    r = ref.simulate(s, img)
    assert r.potentials.ravel().tolist() == [0.0, 0.0, 0.0, 1.0]
    img = np.zeros((1, 3, 3, 1), F32)
    img[0, 1, 1, 0] = 1.0  # centre pixel: in window (0,0) only (windows are rows 0-1, 2)
    assert ref.simulate(s, img).potentials.ravel().tolist() == [1.0, 0.0, 0.0, 0.0]


# ---- convolution geometry -------------------------------------------------------------------

def test_same_padding_puts_the_smaller_half_before():
    assert ref.same_padding(3, 2, 2) == (2, 0, 1)
    assert ref.same_padding(4, 3, 1) == (4, 1, 1)
    assert ref.same_padding(4, 2, 1) == (4, 0, 1)
    assert ref.same_padding(5, 4, 1) == (5, 1, 2)
    assert ref.same_padding(7, 3, 2) == (4, 1, 1)
    assert ref.same_padding(6, 1, 2) == (3, 0, 0)


def direct_conv(x, w, stride, padding):
    """Per-neuron python loops, float32, canonical order; the sum of weights of x != 0."""
    n, h, wd, c = x.shape
    kh, kw, _, co = w.shape
    (oh, pt, _), (ow, pl, _) = ref.window_geometry((h, wd), (kh, kw), stride, padding)
    out = np.zeros((n, oh, ow, co), F32)
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for o in range(co):
                    acc = F32(0.0)
                    for r in range(kh):
                        for q in range(kw):
                            for ci in range(c):
                                y, xx = i * stride[0] + r - pt, j * stride[1] + q - pl
                                if 0 <= y < h and 0 <= xx < wd and x[b, y, xx, ci] != 0:
                                    acc = F32(acc + w[r, q, ci, o])
                    out[b, i, j, o] = acc
    return out


@pytest.mark.parametrize("hw,k,stride,padding", [
    ((5, 5), (3, 3), (1, 1), "valid"), ((5, 6), (2, 3), (2, 1), "same"),
    ((4, 4), (3, 3), (2, 2), "same"), ((7, 5), (1, 2), (2, 2), "valid")])
def test_conv_output_layer_matches_direct_loops_bit_for_bit(hw, k, stride, padding):
    rng = np.random.default_rng(1)
    c, co = 2, 3
    w = rng.normal(size=k + (c, co)).astype(F32)
    (oh, _, _), (ow, _, _) = ref.window_geometry(hw, k, stride, padding)
    s = spec([inp(hw + (c,), fire=(0, 10)),
              conv(w, None, (oh, ow, co), stride, padding, integ=(0, 10), fire=(10, 20))], 20)
    x = (rng.random((2,) + hw + (c,)) < 0.5).astype(F32)  # pixels 1.0 fire at 0, 0.0 never
    r = ref.simulate(s, x)
    expected = direct_conv(x, w, stride, padding).reshape(2, -1)
    assert r.potentials.view(np.uint32).tolist() == expected.view(np.uint32).tolist()
    r2 = ref.simulate(s, x, sum_order="matmul")
    np.testing.assert_allclose(r2.potentials, expected, rtol=1e-5, atol=1e-5)


def test_magnitude_and_terms_bound_the_sum():
    w = np.array([[3.0], [-2.5], [0.5]], F32)
    s = spec([inp((1, 1, 3), fire=(0, 10)), flat(3),
              dense(w, [-1.0], (1, 1, 1), integ=(0, 10), fire=(10, 20))], 20,
             readout="first_spike")
    r = ref.simulate(s, np.ones((1, 1, 1, 3), F32))
    v, th, mag, terms = r.fire_records[2].at(10)
    assert v[0, 0, 0, 0] == F32(0.0)  # 3 - 2.5 + 0.5 - 1
    assert mag[0, 0, 0, 0] == F32(7.0)
    assert terms[0, 0, 0, 0] == 5  # 3 weights + bias + the one integrated step


# ---- readout and inputs ---------------------------------------------------------------------

def test_predictions_ties_and_fallback():
    pot = np.array([[1.0, 3.0, 3.0], [0.0, 0.0, 0.0], [2.0, 1.0, 0.0]], F32)
    assert ref.predict("vmem", pot, None).tolist() == [1, 0, 0]
    times = np.array([[12, 10, 10], [-1, -1, -1], [-1, 15, -1]])
    assert ref.predict("first_spike", pot, times).tolist() == [1, 0, 1]
    times = np.array([[-1, -1, -1], [-1, -1, -1], [-1, -1, -1]])
    assert ref.predict("first_spike", pot, times).tolist() == [1, 0, 0]


def test_uint8_images_are_divided_in_float32():
    s = spec([inp((1, 1, 3), fire=(0, 80)), flat(3),
              dense(np.ones((3, 1)), None, (1, 1, 1))], 160)
    b = np.array([0, 128, 255], np.uint8).reshape(1, 1, 1, 3)
    xf = ref.to_float_images(s, b)
    assert xf.dtype == F32
    assert xf.ravel().tolist() == [0.0, F32(128) / F32(255), 1.0]
    r8, rf = ref.simulate(s, b), ref.simulate(s, xf)
    assert np.array_equal(r8.spike_times[0], rf.spike_times[0])
    assert r8.spike_times[0].ravel().tolist() == [-1, 14, 0]  # 128/255 = 0.502 -> 14


def test_nothing_changes_after_the_last_window():
    s = spec([inp((1, 1, 2), tau=10.0, fire=(0, 20)), flat(2),
              dense([[1.0, -0.5], [0.5, 1.0]], [0.1, 0.0], (1, 1, 2), integ=(0, 20),
                    fire=(20, 40))], 40, readout="first_spike")
    x = np.array([[0.9, 0.3]], F32).reshape(1, 1, 1, 2)
    a, b = ref.simulate(s, x), ref.simulate(s, x, time_steps=55)
    assert np.array_equal(a.potentials, b.potentials)
    assert all(np.array_equal(a.spike_times[i], b.spike_times[i]) for i in a.spike_times)
