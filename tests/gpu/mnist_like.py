"""A random network with the MNIST model's shape and windows, plus MNIST-like images.

    input HxWx1 -> conv kxk, F1 (VALID, bias) -> maxpool 2x2 `or` -> conv kxk, F2 -> maxpool 2x2
    `or` -> flatten -> dense 10 ; T_s = T_d (80 by default), T = 400, vmem readout

The default sizes are those of docs/ALGORITHM.md section 1 (28x28x1, 5x5x12, 5x5x64). Weights are
random, then scaled per layer through a rough ANN model of the spiking net (a receiver decodes a
spike into the sender's V / vth0, clipped to the sender's threshold range) so that a realistic
share of each layer's neurons fires, spread over the fire window: the benchmark then does the
work a trained network would make it do, and the parity tests see long windows (arrivals
spread over tens of steps) and `or` pools relaying several spikes.

Used by tests/gpu/bench_gpu.py and tests/test_cuda.py. numpy only.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from export.ttfs_format import (NeuronParams, build_model, conv2d, dense, flatten,  # noqa: E402
                                input_layer, maxpool)

F32 = np.float32


def mnist_like_images(count: int, size: int = 28, seed: int = 0) -> np.ndarray:
    """uint8 (count, size, size, 1): three bright strokes on black per image, about 15-20 % lit
    pixels like handwritten digits (the input layer's activity is what matters, not shapes)."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 1), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    margin = size * 0.2
    for begin in range(0, count, 4096):  # vectorised over images, in bounded chunks
        n = min(4096, count - begin)
        images = np.zeros((n, size, size), np.float32)
        for _ in range(3):  # a thick segment between two random points
            p0 = rng.uniform(margin, size - margin, size=(n, 2, 1, 1)).astype(np.float32)
            d = rng.uniform(margin, size - margin, size=(n, 2, 1, 1)).astype(np.float32) - p0
            width = rng.uniform(0.8, 1.6, size=(n, 1, 1)).astype(np.float32)
            length2 = np.maximum((d ** 2).sum(axis=1), 1e-3)
            u = np.clip(((yy - p0[:, 0]) * d[:, 0] + (xx - p0[:, 1]) * d[:, 1]) / length2, 0.0, 1.0)
            dist = np.hypot(yy - (p0[:, 0] + u * d[:, 0]), xx - (p0[:, 1] + u * d[:, 1]))
            np.maximum(images, np.clip(1.5 - dist / width, 0.0, 1.0), out=images)
        out[begin:begin + n, ..., 0] = np.round(images * 255.0).astype(np.uint8)
    return out


def _decode(value, neuron, t_d):
    """What a receiver recovers from a sender whose V / vth0 is `value`."""
    floor = np.exp(-(t_d - 1 - neuron.td_fire) / neuron.tau_fire)
    top = np.exp(neuron.td_fire / neuron.tau_fire)
    return np.where(value >= floor, np.minimum(value, top), 0.0)


def _conv_valid(a, w):
    """(n, h, w, c) x HWIO -> (n, oh, ow, f), stride 1, VALID."""
    kh, kw = w.shape[:2]
    patches = np.lib.stride_tricks.sliding_window_view(a, (kh, kw), axis=(1, 2))
    # patches: (n, oh, ow, c, kh, kw) -> (n, oh, ow, kh, kw, c)
    patches = patches.transpose(0, 1, 2, 4, 5, 3)
    return patches.reshape(patches.shape[:3] + (-1,)) @ w.reshape(-1, w.shape[-1])


def _pool2(a):
    n, h, w, c = a.shape
    a = a[:, : h // 2 * 2, : w // 2 * 2]
    return a.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _scale(rng, pre, neuron, t_d, fraction):
    """Scale so that about `fraction` of the neurons would fire, spread over the window."""
    pivot = max(float(np.quantile(pre, 1.0 - fraction / 2)), 1e-6)
    floor = np.exp(-(t_d - 1 - neuron.td_fire) / neuron.tau_fire)
    top = np.exp(neuron.td_fire / neuron.tau_fire)
    return neuron.vth0 * np.sqrt(floor * top) / pivot


def mnist_like_model(seed: int = 0, size: int = 28, kernel: int = 5, filters=(12, 64),
                     classes: int = 10, t_window: int = 80, time_steps: int = 400,
                     calibration_images: int = 64):
    """Returns (ModelSpec, calibration images uint8)."""
    rng = np.random.default_rng(seed)
    images = mnist_like_images(calibration_images, size, seed=seed + 1)
    neurons = [NeuronParams(tau_fire=float(F32(rng.uniform(17.0, 22.0))),
                            td_fire=float(F32(rng.uniform(-3.0, 1.0))), vth0=1.0)
               for _ in range(4)]
    neurons[-1] = NeuronParams(tau_fire=20.0, td_fire=0.0, vth0=1.0)

    activation = _decode(images.astype(np.float64) / 255.0, neurons[0], t_window)
    layers = [input_layer((size, size, 1), name="input", divisor=255.0, neuron=neurons[0])]
    channels = 1
    for index, out_channels in enumerate(filters):
        w = rng.normal(0.02, 1.0, size=(kernel, kernel, channels, out_channels)) / kernel / np.sqrt(channels)
        b = rng.normal(0.0, 0.1, size=out_channels)
        pre = _conv_valid(activation, w) + b
        scale = _scale(rng, pre, neurons[index + 1], t_window, fraction=0.35)
        layers.append(conv2d(f"conv{index + 1}", (w * scale).astype(F32), (b * scale).astype(F32),
                             padding="valid", neuron=neurons[index + 1]))
        layers.append(maxpool(f"pool{index + 1}", size=(2, 2), mode="or"))
        activation = _pool2(_decode(pre * scale / neurons[index + 1].vth0, neurons[index + 1], t_window))
        channels = out_channels
    layers.append(flatten("flatten"))
    flat = activation.reshape(len(activation), -1)
    w = rng.normal(0.0, 1.0, size=(flat.shape[1], classes)) / np.sqrt(flat.shape[1])
    scale = _scale(rng, flat @ w, neurons[-1], t_window, fraction=0.5)
    layers.append(dense("fc1", (w * scale).astype(F32), np.zeros(classes, F32), neuron=neurons[-1]))
    spec = build_model(layers, time_steps, readout="vmem",
                       metadata={"generator": "tests/gpu/mnist_like.py", "seed": int(seed)},
                       time_fire_start=t_window, time_fire_duration=t_window)
    return spec, images
