"""Comparing two runs of a model bit for bit, with messages that name the layer, image and
neuron: shared by tests/test_cuda.py and tests/gpu/check_models.py. numpy only."""
from __future__ import annotations

import numpy as np


def neuron_layers(model):
    return [i for i, info in enumerate(model.layers) if info.has_neurons]


def differences(model, expected, actual, expected_name, actual_name):
    """Human-readable differences between two results (empty when bit-identical): dicts of
    "predictions", "potentials" and, per neuron layer i, "counts i" and optionally "times i"
    (first-spike times, compared where both have them), as Session.run() and the session's
    spike_counts() / spike_times() give them."""
    problems = []
    for i in neuron_layers(model):
        key = f"times {i}"
        if key not in expected or key not in actual:
            continue
        a, b = expected[key], actual[key]
        bad = np.argwhere(a != b)
        if len(bad):
            n, h, w, c = bad[0]
            problems.append(
                f"layer {i} '{model.layers[i].name}': {len(bad)} first-spike times differ; "
                f"first at image {n}, neuron (h={h}, w={w}, c={c}): {expected_name} step {a[n, h, w, c]}, "
                f"{actual_name} step {b[n, h, w, c]} (-1 = never fired)")
    for i in neuron_layers(model):
        a, b = expected[f"counts {i}"], actual[f"counts {i}"]
        if not np.array_equal(a, b):
            n = int(np.argmax(a != b))
            problems.append(f"layer {i} '{model.layers[i].name}': spike count of image {n}: "
                            f"{expected_name} {a[n]}, {actual_name} {b[n]}")
    a, b = expected["potentials"], actual["potentials"]
    bad = np.argwhere(a.view(np.uint32) != b.view(np.uint32))
    if len(bad):
        n, c = bad[0]
        problems.append(f"output potentials: {len(bad)} differ in their bits; first at image {n}, "
                        f"class {c}: {expected_name} {a[n, c]!r}, {actual_name} {b[n, c]!r}")
    a, b = expected["predictions"], actual["predictions"]
    if not np.array_equal(a, b):
        n = int(np.argmax(a != b))
        problems.append(f"predictions differ; first at image {n}: {expected_name} {a[n]}, "
                        f"{actual_name} {b[n]}")
    return problems
