"""Peak memory does not grow with the number of time steps (issue: performance, item 2).

The same MNIST-shaped network (tests/gpu/mnist_like.py: conv 5x5x12, pool, conv 5x5x64, pool,
dense 10) is built twice: with 80-step windows (320 time steps) and with 20 000-step windows
(80 000 time steps, 250 times as many). Each runs in a fresh subprocess (load, session, a batch
through both engines), which reports its peak resident memory (ru_maxrss). Engines that kept
anything per time step and neuron would need at least time_steps x neurons bytes for the long
one (80 000 x 11 700 = about 0.9 GB even at one byte each); the libttfs engines keep per-layer
state, spike lists sized by the windows and threshold tables of one float per window step, so
the two peaks must agree within a few megabytes (the long windows' own tables and lists: 4 x
20 000 floats and ints per layer).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHORT_WINDOW, LONG_WINDOW = 80, 20_000
# Allowed difference of the two peaks: the long model's per-window tables and lists (a few
# hundred kilobytes per layer and workspace) plus allocator noise; a per-step state of even one
# bit per neuron would exceed it a hundred times over.
ALLOWED_GROWTH = 24 << 20

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in kilobytes: Linux")

WORKER = r"""
import json, resource, sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, {gpu!r})
import numpy as np
import pyttfs
from mnist_like import mnist_like_images, mnist_like_model
from export.ttfs_format import to_bytes
window = int(sys.argv[1])
spec, _ = mnist_like_model(seed=3, t_window=window, time_steps=4 * window, calibration_images=8)
data = to_bytes(spec)
images = mnist_like_images(8, seed=4)
results = {{}}
with pyttfs.Model.from_bytes(data) as model:
    for engine, count in (("analytic", 8), ("stepped", 2)):
        with model.session(backend="cpu", engine=engine, max_batch=count, threads=1) as session:
            result = session.run(images[:count])
            results[engine] = result.predictions.tolist()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"peak": peak, "time_steps": 4 * window, "predictions": results}}))
"""


def peak_for(window: int) -> dict:
    script = WORKER.format(repo=str(REPO), gpu=str(REPO / "tests" / "gpu"))
    done = subprocess.run([sys.executable, "-c", script, str(window)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 0, f"worker failed for window {window}:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_time_steps():
    pytest.importorskip("pyttfs")
    short, long = peak_for(SHORT_WINDOW), peak_for(LONG_WINDOW)
    assert long["time_steps"] == 250 * short["time_steps"]
    # Both engines ran the long model to the end and agree with each other.
    assert long["predictions"]["analytic"][:2] == long["predictions"]["stepped"]
    growth = long["peak"] - short["peak"]
    print(f"peak resident memory: {short['peak'] / 2**20:.1f} MiB at {short['time_steps']} steps, "
          f"{long['peak'] / 2**20:.1f} MiB at {long['time_steps']} steps")
    assert growth < ALLOWED_GROWTH, (
        f"peak memory grew by {growth / 2**20:.1f} MiB from {short['time_steps']} to "
        f"{long['time_steps']} time steps (allowed {ALLOWED_GROWTH >> 20} MiB)")
