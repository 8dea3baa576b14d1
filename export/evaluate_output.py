"""The evaluation's view of the output layer over time: which steps are recorded and what the
readout predicts after a step. The potentials over time themselves are computed by libttfs
(the output trace, docs/C_API.md): evaluate asks its sessions for them at the record steps.

Owned here (used by export/evaluate.py, tests/test_evaluate.py, export/efficiency.py):

- `output_stage(spec)` -> OutputStage: the output layer's facts the evaluation reads (classes,
  readout, time steps, windows), checked;
- `record_steps_for(T)`: t = 9, 19, ..., T-1 (the reference's record steps, and the last step);
- `predict_at(readout, V, output_times, t)` and `predictions_over_time`: the readout
  (docs/ALGORITHM.md section 6) as it stands after step t;
- `_kernel_table(tau, td, length)`: libttfs's exp tables in float32 (the C library's expf),
  used for the fire thresholds in export/efficiency.py.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np

from export import ttfs_format

F32 = np.float32

RECORD_EVERY = 10  # the reference recorded the output after steps 9, 19, ..., 399


def _c_expf():
    """The C library's float exp (what libttfs's std::exp(float) calls when it builds its
    tables on the host), or None where it cannot be loaded."""
    import ctypes
    import ctypes.util

    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        expf = libm.expf
    except (OSError, AttributeError):
        return None
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    return expf


_EXPF = _c_expf()


def _kernel_table(tau: float, td: float, length: int) -> np.ndarray:
    """exp(-(f32(i) - td) / tau) for i in [0, length), float32 op by op (docs/ENGINES.md
    'Tables'). The exp is the C library's expf, as in libttfs, so that the tables match
    libttfs's bit for bit (glibc's expf and a correctly rounded exp differ in about 1 entry in
    80); where no C library is at hand, float64 exp rounded once."""
    i = np.arange(max(int(length), 0), dtype=F32)
    arg = -((i - F32(td)) / F32(tau))
    if _EXPF is not None:
        return np.array([_EXPF(float(a)) for a in arg], dtype=F32)
    return np.exp(arg.astype(np.float64)).astype(F32)


@dataclasses.dataclass
class OutputStage:
    """The output layer as the evaluation sees it."""

    output: ttfs_format.Layer
    readout: str
    time_steps: int
    integ_window: Tuple[int, int]
    fire_window: Tuple[int, int]

    @property
    def classes(self) -> int:
        return int(np.prod(self.output.out_shape))


def output_stage(spec: ttfs_format.ModelSpec) -> OutputStage:
    """Read the output layer's facts from a model spec (export.ttfs_format.read_model)."""
    layers = list(spec.layers)
    output = layers[-1]
    where = f"layer {len(layers) - 1} '{output.name}'"
    if output.kind not in ("conv2d", "dense"):
        raise ValueError(f"{where}: the output layer must be conv2d or dense, got {output.kind!r}")
    if output.neuron is None or output.neuron.integ_window is None \
            or output.neuron.fire_window is None:
        raise ValueError(f"{where}: neuron parameters missing (read the spec with "
                         f"export.ttfs_format.read_model)")
    nr = output.neuron
    return OutputStage(output=output, readout=spec.readout, time_steps=int(spec.time_steps),
                       integ_window=tuple(int(v) for v in nr.integ_window),
                       fire_window=tuple(int(v) for v in nr.fire_window))


def record_steps_for(time_steps: int, every: int = RECORD_EVERY) -> np.ndarray:
    """t = every-1, 2*every-1, ... (the reference's 9, 19, ..., 399), and always the last
    step, so that the last point of accuracy-over-time is the final accuracy."""
    steps = np.arange(every - 1, time_steps, every, dtype=np.int32)
    if time_steps >= 1 and (len(steps) == 0 or steps[-1] != time_steps - 1):
        steps = np.append(steps, np.int32(time_steps - 1))
    return steps


def predict_at(readout: str, potentials: np.ndarray, output_times: Optional[np.ndarray],
               t: int) -> np.ndarray:
    """The readout (docs/ALGORITHM.md section 6) as it stands after step t. vmem: argmax of V(t),
    ties to the lowest index. first_spike: the earliest class fired by t (ties: lowest index),
    else the argmax of V(t)."""
    potentials = np.asarray(potentials)
    by_vmem = np.argmax(potentials, axis=1).astype(np.int32)
    if readout == "vmem":
        return by_vmem
    if readout != "first_spike":
        raise ValueError(f"readout {readout!r} is not 'vmem' or 'first_spike'")
    times = np.asarray(output_times).reshape(potentials.shape).astype(np.int64)
    visible = (times >= 0) & (times <= t)
    earliest = np.argmin(np.where(visible, times, np.iinfo(np.int64).max), axis=1)
    return np.where(visible.any(axis=1), earliest, by_vmem).astype(np.int32)


def predictions_over_time(readout: str, record_steps: np.ndarray, potentials: np.ndarray,
                          output_times: Optional[np.ndarray]) -> np.ndarray:
    """(R, n) int32: the prediction after each record step, from the output trace
    potentials (n, R, classes) that libttfs recorded at record_steps."""
    potentials = np.asarray(potentials)
    out = [predict_at(readout, potentials[:, r], output_times, int(t))
           for r, t in enumerate(record_steps)]
    return np.stack(out) if out else np.zeros((0, potentials.shape[0]), np.int32)
