"""Seeded small random TTFS networks for engine parity tests.

``random_network(seed, overlapping=False)`` returns ``(spec, images)``: a ModelSpec built with
export.ttfs_format and a float32 batch (n, h, w, c). The same seed always gives the same network.

What varies: input 4..12 square with 1..3 channels; 1..3 conv2d layers (kernel 1..3 per axis,
stride 1..2, VALID or SAME, 1..6 filters, bias or none); optional maxpools after a conv (`or`
or `earliest`, and half of the `or` ones directly above a neuron layer `gated`, drawn from a
stream of their own so that every other draw stays what it was before `gated` existed; 2x2/2,
3x3/1, 2x2/1, 3x3/2, VALID or SAME); flatten; 1..2 dense layers (the
last is the output, 2..10 classes); readout; per neuron layer tau_fire 5..40, td_fire -5..5,
vth0 0.3..1.5 (integration constants chained by build_model); windows of the reference layout
with T_s = T_d in 5..30, T_s <= T_d - 2 when overlapping, T_s = T_d - 1 when touching;
time_steps just enough for every window, sometimes a few more.

Weights: random (slightly positive mean), then scaled on the batch itself through a rough
ANN model of the spiking net (a receiver decodes a spike into V/vth0 of the sender, clipped to
[exp(-(T_d-1-td)/tau), exp(td/tau)], zero when silent) so that a random 20-70 % of each
layer's neurons would fire; the real fraction is measured by the parity tests.

Images: all-zero, saturated (all 1.0), pixels from uint8 bytes as float32(byte)/float32(255)
(dense and sparse), and one raw float32 image in [0, 1).
"""

from __future__ import annotations

import numpy as np

from export.ttfs_format import (NeuronParams, build_model, conv2d, dense, flatten,
                                input_layer, maxpool)

try:
    import reference_numpy as _ref
except ImportError:  # tests imported as a package
    from tests import reference_numpy as _ref

F32 = np.float32

POOL_CHOICES = [((2, 2), (2, 2)), ((3, 3), (1, 1)), ((2, 2), (1, 1)), ((3, 3), (2, 2))]


def _f32(v):
    """A Python float holding exactly the float32 the file will store."""
    return float(F32(v))


def _neuron(rng):
    return NeuronParams(tau_fire=_f32(rng.uniform(5.0, 40.0)), td_fire=_f32(rng.uniform(-5.0, 5.0)),
                        vth0=_f32(rng.uniform(0.3, 1.5)))


def _images(rng, shape):
    h, w, c = shape
    bytes_dense = rng.integers(0, 256, size=(2, h, w, c), dtype=np.uint8)
    bytes_sparse = np.where(rng.random((2, h, w, c)) < 0.5, 0,
                            rng.integers(0, 256, size=(2, h, w, c))).astype(np.uint8)
    from_bytes = np.concatenate([bytes_dense, bytes_sparse]).astype(F32) / F32(255)
    return np.concatenate([
        np.zeros((1, h, w, c), F32),
        np.ones((1, h, w, c), F32),
        from_bytes.astype(F32),
        rng.random((1, h, w, c), dtype=F32),
    ]).astype(F32)


def _append_pool(rng, layers, activation, name, gate_rng):
    """A random maxpool after `layers`, and the rough ANN model's activation after it."""
    shape = activation.shape[1:]
    size_p, stride_p = POOL_CHOICES[int(rng.integers(0, len(POOL_CHOICES)))]
    pad_p = "same" if (rng.random() < 0.4 or min(shape[:2]) < size_p[0]) else "valid"
    mode = ["or", "earliest"][int(rng.integers(0, 2))]
    # half of the `or` pools directly above a neuron layer (gated reads its spike counters)
    if gate_rng.random() < 0.5 and mode == "or" and layers[-1].kind in ("input", "conv2d", "dense"):
        mode = "gated"
    layers.append(maxpool(name, size=size_p, stride=stride_p, padding=pad_p, mode=mode))
    patches = _ref.extract_patches(activation, size_p, stride_p, pad_p)
    n, oh, ow, _ = patches.shape
    return patches.reshape(n, oh, ow, size_p[0] * size_p[1], shape[2]).max(axis=3)


def random_network(seed, overlapping=False, touching=False, relays=False, wide=False, sparse=False,
                   gray=False):
    """overlapping: T_s <= T_d - 2, so that a layer integrates spikes after its first fire step
    (only the stepped engine accepts it). touching: T_s = T_d - 1, the last integrated spike
    arrives exactly at the first fire step, before the fire check: still non-overlapping.
    relays: also a maxpool straight after the input and pools of pools (a relayed unit then
    carries the spikes of several pool windows). wide: convolutions of 97-150 channels (the
    analytic engine's certified sums take rows that wide two registers at a time, over blocks
    of positions that may span output rows and end short). sparse: two or three convolutions
    of 40-70 channels, kernels up to 5 wide, of which 5-30 % of neurons fire (the AVX-512
    variant sums such layers over their nonzero activations only). gray: a single-channel input
    16-30 pixels wide whose first convolution has 2-15 filters, kernels 3 or 5 wide and column
    stride 1 (the AVX-512 variant sums such a layer's blocks of positions in one output row
    with each activation broadcast once)."""
    key = [seed, 7919 if overlapping else 0, 104729 if touching else 0, 15485863 if relays else 0]
    if wide:
        key.append(32452843)
    if sparse:
        key.append(49979687)
    if gray:
        key.append(67867967)
    rng = np.random.default_rng(key)
    gate_rng = np.random.default_rng(key + [2])  # which pools are `gated`
    size = int(rng.integers(16, 31)) if gray else int(rng.integers(4, 13))
    channels = 1 if gray else int(rng.integers(1, 4))
    t_d = int(rng.integers(5, 31))
    if overlapping:
        t_s = int(rng.integers(max(2, t_d // 4), t_d - 1))
    elif touching:
        t_s = t_d - 1
    else:
        t_s = t_d
    readout = ["vmem", "first_spike"][int(rng.integers(0, 2))]
    images = _images(rng, (size, size, channels))

    input_neuron = _neuron(rng)
    layers = [input_layer((size, size, channels), neuron=input_neuron)]
    # A rough ANN model of the spiking net alongside, in "decoded value" units (what a receiver
    # recovers from a spike time: V / vth0 of the sender, clipped to the sender's range)
    activation = _decode(images.astype(np.float64) / input_neuron.vth0, input_neuron, t_d)
    shape = (size, size, channels)
    if relays and min(shape[:2]) >= 3:
        activation = _append_pool(rng, layers, activation, "pool0", gate_rng)
        shape = activation.shape[1:]
    n_conv = int(rng.integers(2 if sparse else 1, 4))
    widest_kernel = 6 if sparse else 4
    for ci in range(n_conv):
        k = (int(rng.integers(1, widest_kernel)), int(rng.integers(1, widest_kernel)))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        if gray and ci == 0:
            k, stride = (int(rng.integers(1, 6)), int(rng.choice([3, 5]))), (stride[0], 1)
        padding = "same" if (rng.random() < 0.5 or min(shape[:2]) < max(k)) else "valid"
        filters = (int(rng.integers(97, 151)) if wide else int(rng.integers(40, 71)) if sparse
                   else int(rng.integers(2, 16)) if gray and ci == 0 else int(rng.integers(1, 7)))
        layer_neuron = _neuron(rng)
        weights, bias, activation = _scaled_weights(
            rng, activation, (k[0], k[1], shape[2], filters), layer_neuron, t_d,
            lambda a, w: _conv_ann(a, w, stride, padding), firing=(0.05, 0.3) if sparse else (0.2, 0.7))
        layers.append(conv2d(f"conv{ci + 1}", weights, bias, stride=stride, padding=padding,
                             neuron=layer_neuron))
        shape = activation.shape[1:]
        if rng.random() < 0.45 and min(shape[:2]) >= 2:
            activation = _append_pool(rng, layers, activation, f"pool{ci + 1}", gate_rng)
            shape = activation.shape[1:]
            if relays and min(shape[:2]) >= 2 and rng.random() < 0.6:
                activation = _append_pool(rng, layers, activation, f"pool{ci + 1}b", gate_rng)
                shape = activation.shape[1:]
    layers.append(flatten())
    activation = activation.reshape(activation.shape[0], -1)
    n_dense = int(rng.integers(1, 3))
    for di in range(n_dense):
        last = di == n_dense - 1
        units = int(rng.integers(2, 11)) if last else int(rng.integers(4, 17))
        layer_neuron = _neuron(rng)
        weights, bias, activation = _scaled_weights(
            rng, activation, (activation.shape[1], units), layer_neuron, t_d,
            lambda a, w: a @ w)
        layers.append(dense("out" if last else f"fc{di + 1}", weights, bias, neuron=layer_neuron))

    output_depth = sum(1 for layer in layers if layer.kind in ("input", "conv2d", "dense")) - 1
    time_steps = output_depth * t_s + t_d + int(rng.integers(0, 4) if rng.random() < 0.3 else 0)
    spec = build_model(layers, time_steps, readout=readout,
                       metadata={"generator": "tests/random_nets.py", "seed": int(seed),
                                 "overlapping": bool(overlapping), "relays": bool(relays),
                                 "T_s": t_s, "T_d": t_d},
                       time_fire_start=t_s, time_fire_duration=t_d)
    return spec, images


def _conv_ann(a, w, stride, padding):
    patches = _ref.extract_patches(a, w.shape[:2], stride, padding)
    return patches @ w.reshape(-1, w.shape[-1])


def _decode(value, neuron, t_d):
    """What a receiver recovers from a neuron whose V / vth0 is `value`: silent below the last
    threshold exp(-(T_d - 1 - td)/tau), saturated above the first, exp(td/tau)."""
    floor = np.exp(-(t_d - 1 - neuron.td_fire) / neuron.tau_fire)
    top = np.exp(neuron.td_fire / neuron.tau_fire)
    return np.where(value >= floor, np.minimum(value, top), 0.0)


def _scaled_weights(rng, activation, wshape, neuron, t_d, apply, firing=(0.2, 0.7)):
    """Random weights scaled so that a random fraction (in `firing`) of this layer's neurons
    over the batch would fire; returns (weights, bias, decoded activation of this layer)."""
    fan_in = int(np.prod(wshape[:-1]))
    fraction = rng.uniform(*firing)
    for attempt in range(20):
        w = rng.normal(0.1 + 0.1 * attempt, 1.0, size=wshape) / np.sqrt(fan_in)
        b = rng.normal(0.0, 0.3, size=wshape[-1]) if rng.random() < 0.6 else None
        pre = apply(activation, w) + (0.0 if b is None else b)
        positive = pre[pre > 0]
        if positive.size:
            break
    else:
        positive = np.ones(1)
    # the (1 - fraction/2) quantile lands mid-range (geometrically) between the last and the
    # first threshold, so that firing neurons spread over the window instead of piling up at
    # its first step; the smallest positive value stands in when too few are positive
    pivot = max(float(np.quantile(pre, 1.0 - fraction / 2)), float(positive.min()), 1e-6)
    floor = np.exp(-(t_d - 1 - neuron.td_fire) / neuron.tau_fire)
    top = np.exp(neuron.td_fire / neuron.tau_fire)
    scale = neuron.vth0 * np.sqrt(floor * top) / pivot
    weights = (w * scale).astype(F32)
    bias = None if b is None else (b * scale).astype(F32)
    return weights, bias, _decode(pre * scale / neuron.vth0, neuron, t_d)


def describe(spec):
    """One line per network, for failure messages."""
    parts = []
    for layer in spec.layers:
        if layer.kind == "input":
            parts.append(f"input{tuple(layer.out_shape)}")
        elif layer.kind == "conv2d":
            parts.append(f"conv{tuple(layer.kernel)}/s{tuple(layer.stride)}/{layer.padding}"
                         f"->{tuple(layer.out_shape)}")
        elif layer.kind == "maxpool":
            parts.append(f"pool-{layer.pool_mode}{tuple(layer.kernel)}/s{tuple(layer.stride)}/"
                         f"{layer.padding}->{tuple(layer.out_shape)}")
        elif layer.kind == "flatten":
            parts.append(f"flatten->{layer.out_shape[2]}")
        else:
            parts.append(f"dense->{layer.out_shape[2]}")
    meta = spec.metadata if isinstance(spec.metadata, dict) else {}
    return (" | ".join(parts) + f" ; T={spec.time_steps} Ts={meta.get('T_s')} "
            f"Td={meta.get('T_d')} readout={spec.readout}")
