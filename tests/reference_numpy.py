"""An independent, pure-numpy, time-stepped TTFS simulator: the test suite's second opinion.

Written from docs/ALGORITHM.md sections 3-6 and docs/FORMAT.md only (never from the library's
sources), so that agreement with libttfs means something. It takes an
``export.ttfs_format.ModelSpec`` (read by attribute only) and a batch of images and simulates
every time step, vectorised over the batch, in float32 with one rounding per operation:

    step t:  input layer: V = x at t == 0; fires when V >= vth0*exp(-(f32(t - fs) - td)/tau)
             per later layer in file order:
               maxpool: `or` = max of the 0/1 spike map over the window (positions inside the
                        input only); `earliest` = the same, but a unit passes only its first spike;
                        `gated` (the T2FSNN reference's spike-count-gated pool) = the spike of the
                        child with the largest spike counter (0 before it fired, vth(t) at its
                        fire step, 1 after; read after this step's fire check), the first in
                        window order (kernel row, column; inside the input) among equals
               flatten: reshape (HWC order)
               conv2d / dense: S = synaptic sum of this step's spikes (+ bias at t == 0 only)
                        if t == 0 or t in the integration window: V = V + S * k(t)
                          k(0) = 1, else k(t) = exp(-(f32(t - integ_start) - td_integ)/tau_integ)
                        if the layer fires and t in its fire window: neurons not yet fired with
                          V >= vth(t) spike, record t, V = 0
             the output layer does not fire under `vmem` readout

Exponentials are evaluated in float64 and rounded once to float32 (the correctly rounded
float32 exp in all but astronomically rare cases), independently of numpy's float32 exp.

Synaptic sums: ``sum_order="canonical"`` adds the weights of spiking presynaptic units one by
one in kernel-row, kernel-column, input-channel order (dense: input index order), starting from
+0.0; ``sum_order="matmul"`` lets BLAS sum them in whatever order it likes. The second is the
"different summation order" a tie analysis must cope with.

For the tie analysis every firing neuron layer also records, at every step of its fire window:
the membrane potential just before the fire check, the threshold, and a rounding-error scale
for V: ``magnitude`` = |bias| + sum over integrated steps of (sum of |w| of the spiking
presynaptic units) * k(t), and ``terms`` = the number of additions that produced V (one per
spiking presynaptic unit, plus the bias, plus one per integrated step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

F32 = np.float32
NEURON_KINDS = ("input", "conv2d", "dense")


def exp_f32(arg32):
    """float32 exp of a float32 argument, computed in float64 and rounded once."""
    return np.exp(np.asarray(arg32, dtype=np.float64)).astype(F32)


def decay_table(amplitude, tau, td, length):
    """amplitude * exp(-(f32(j) - td) / tau) for j in [0, length), float32 op by op."""
    j = np.arange(length, dtype=F32)
    arg = -(j - F32(td)) / F32(tau)  # float32: subtract, negate (exact), divide
    assert arg.dtype == F32
    e = exp_f32(arg)
    if amplitude is None:
        return e
    return (F32(amplitude) * e).astype(F32)


def same_padding(size, kernel, stride):
    """TensorFlow SAME: out = ceil(size/stride); returns (out, pad_before, pad_after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def window_geometry(in_hw, kernel, stride, padding):
    """Output size and padding per axis for conv2d / maxpool."""
    geo = []
    for size, k, s in zip(in_hw, kernel, stride):
        if padding == "same":
            geo.append(same_padding(size, k, s))
        elif padding == "valid":
            if size < k:
                raise ValueError(f"VALID window {k} larger than input {size}")
            geo.append(((size - k) // s + 1, 0, 0))
        else:
            raise ValueError(f"unknown padding {padding!r}")
    return geo


def extract_patches(x, kernel, stride, padding, fill=0):
    """x (n,H,W,C) -> (n, oh, ow, kh*kw*C) in kernel-row, kernel-column, channel order.

    Positions outside the input (SAME padding) hold `fill`: 0, which for 0/1 spike maps means
    "no spike": it adds nothing to a sum and nothing to a max."""
    n, h, w, c = x.shape
    (oh, pt, pb), (ow, pl, pr) = window_geometry((h, w), kernel, stride, padding)
    kh, kw = kernel
    sh, sw = stride
    xp = np.full((n, h + pt + pb + kh, w + pl + pr + kw, c), fill, dtype=x.dtype)
    xp[:, pt:pt + h, pl:pl + w, :] = x
    cols = []
    for r in range(kh):
        for q in range(kw):
            cols.append(xp[:, r:r + (oh - 1) * sh + 1:sh, q:q + (ow - 1) * sw + 1:sw, :])
    patches = np.stack(cols, axis=3)  # (n, oh, ow, kh*kw, C)
    return patches.reshape(n, oh, ow, kh * kw * c)


@dataclass
class FireRecord:
    """What a firing neuron layer looked like at each step of its fire window."""

    fire_start: int
    threshold: np.ndarray  # (fire_len,) float32
    vmem: np.ndarray  # (n, fire_len, h, w, c) float32, just before the fire check
    magnitude: np.ndarray  # (n, fire_len, h, w, c) float32 rounding-error scale (see module doc)
    terms: np.ndarray  # (n, fire_len, h, w, c) int32

    def at(self, t):
        """(vmem, threshold, magnitude, terms) at global step t (inside the fire window)."""
        j = t - self.fire_start
        if not 0 <= j < self.threshold.shape[0]:
            raise IndexError(f"step {t} outside the fire window starting at {self.fire_start}")
        return self.vmem[:, j], self.threshold[j], self.magnitude[:, j], self.terms[:, j]


@dataclass
class ReferenceResult:
    spike_times: dict  # neuron layer index -> (n, h, w, c) int32, -1 = never fired
    potentials: np.ndarray  # (n, classes) float32, output layer V after the last step
    predictions: np.ndarray  # (n,) int32
    fire_records: dict = field(default_factory=dict)  # neuron layer index -> FireRecord
    layer_names: list = field(default_factory=list)
    # rounding-error scale of each neuron layer's V after the last step (see FireRecord)
    final_magnitude: dict = field(default_factory=dict)  # layer index -> (n, h, w, c) float32
    final_terms: dict = field(default_factory=dict)  # layer index -> (n, h, w, c) int32

    def layer_index(self, layer):
        return self.layer_names.index(layer) if isinstance(layer, str) else int(layer)


def to_float_images(spec, images):
    """uint8 -> float32(byte) / float32(divisor); float input is taken as already scaled."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        divisor = F32(spec.layers[0].input_divisor)
        return (images.astype(F32) / divisor).astype(F32)
    return images.astype(F32, copy=False)


def predict(readout, potentials, output_times):
    """Readout of docs/ALGORITHM.md section 6. output_times: (n, classes), -1 = never fired."""
    potentials = np.asarray(potentials)
    by_vmem = np.argmax(potentials, axis=1).astype(np.int32)  # first maximum = lowest index
    if readout == "vmem":
        return by_vmem
    times = np.where(output_times < 0, np.iinfo(np.int64).max, output_times.astype(np.int64))
    earliest = np.argmin(times, axis=1).astype(np.int32)  # first minimum = lowest index
    return np.where((output_times >= 0).any(axis=1), earliest, by_vmem).astype(np.int32)


class _NeuronLayerState:
    def __init__(self, layer, n, is_output, readout, record, time_steps):
        self.layer = layer
        self.shape = tuple(int(v) for v in layer.out_shape)
        nr = layer.neuron
        self.fire_start, self.fire_end = (int(v) for v in nr.fire_window)
        self.fires = not (is_output and readout == "vmem")
        fire_len = max(self.fire_end - self.fire_start, 0)
        self.threshold = decay_table(nr.vth0, nr.tau_fire, nr.td_fire, fire_len)
        if layer.kind != "input":
            self.integ_start, self.integ_end = (int(v) for v in nr.integ_window)
            self.kernel_table = decay_table(
                None, nr.tau_integ, nr.td_integ, max(self.integ_end - self.integ_start, 0))
        self.vmem = np.zeros((n,) + self.shape, dtype=F32)
        self.fired = np.zeros((n,) + self.shape, dtype=bool)
        self.first_spike = np.full((n,) + self.shape, -1, dtype=np.int32)
        self.magnitude = np.zeros((n,) + self.shape, dtype=F32)
        self.terms = np.zeros((n,) + self.shape, dtype=np.int32)
        self.record = None
        if record and self.fires and fire_len > 0:
            full = (n, fire_len) + self.shape
            self.record = FireRecord(self.fire_start, self.threshold,
                                     np.zeros(full, F32), np.zeros(full, F32),
                                     np.zeros(full, np.int32))

    def kernel_at(self, t):
        """k(t), or None when the layer does not integrate at t."""
        if t == 0:
            return F32(1.0)
        if self.integ_start <= t < self.integ_end:
            return self.kernel_table[t - self.integ_start]
        return None

    def fire(self, t):
        """Fire check at step t; returns this step's 0/1 spike map (float32)."""
        if not (self.fires and self.fire_start <= t < self.fire_end):
            return np.zeros_like(self.vmem)
        j = t - self.fire_start
        if self.record is not None:
            self.record.vmem[:, j] = self.vmem
            self.record.magnitude[:, j] = self.magnitude
            self.record.terms[:, j] = self.terms
        now = (self.vmem >= self.threshold[j]) & ~self.fired
        self.fired |= now
        self.first_spike[now] = t
        self.vmem[now] = F32(0.0)
        return now.astype(F32)


def _synaptic_sum(layer, spikes, sum_order):
    """(S without bias, sum of |w| of spiking inputs, number of spiking inputs) per neuron."""
    n = spikes.shape[0]
    w = np.asarray(layer.weights, dtype=F32)
    if layer.kind == "conv2d":
        patches = extract_patches(spikes, tuple(layer.kernel), tuple(layer.stride),
                                  layer.padding)
        wf = w.reshape(-1, w.shape[-1])  # HWIO flattened = kernel row, column, input channel
    else:  # dense
        patches = spikes.reshape(n, 1, 1, -1)
        wf = w
    active = np.flatnonzero(patches.reshape(-1, patches.shape[-1]).any(axis=0))
    out_shape = patches.shape[:3] + (wf.shape[1],)
    if sum_order == "canonical":
        s = np.zeros(out_shape, dtype=F32)
        for p in active:  # ascending canonical index; inactive columns would add only zeros
            s = (s + patches[..., p:p + 1] * wf[p]).astype(F32, copy=False)
    elif sum_order == "matmul":
        s = np.matmul(patches, wf).astype(F32, copy=False)
    else:
        raise ValueError(f"unknown sum_order {sum_order!r}")
    abs_sum = np.matmul(patches, np.abs(wf)).astype(F32)
    count = np.broadcast_to(patches.sum(axis=-1, keepdims=True), out_shape).astype(np.int32)
    return s, abs_sum, count


def _pool(spikes, layer, passed):
    patches = extract_patches(spikes, tuple(layer.kernel), tuple(layer.stride), layer.padding)
    n, oh, ow, _ = patches.shape
    c = spikes.shape[3]
    kk = layer.kernel[0] * layer.kernel[1]
    pooled = patches.reshape(n, oh, ow, kk, c).max(axis=3)
    if layer.pool_mode == "earliest":
        pooled = np.where(passed, F32(0.0), pooled).astype(F32)
        passed |= pooled > 0
    elif layer.pool_mode != "or":
        raise ValueError(f"unknown pool mode {layer.pool_mode!r}")
    return pooled


def _gated_pool(spikes, layer, children, t):
    """The spike-count-gated pool at step t; `children` is the state of the neuron layer
    directly below, after its fire check of step t."""
    patches = extract_patches(spikes, tuple(layer.kernel), tuple(layer.stride), layer.padding)
    n, oh, ow, _ = patches.shape
    c = spikes.shape[3]
    kk = layer.kernel[0] * layer.kernel[1]
    if not (children.fires and children.fire_start <= t < children.fire_end):
        return np.zeros((n, oh, ow, c), F32)  # nobody below can spike at t
    vth = children.threshold[t - children.fire_start]
    counter = np.where(children.first_spike == t, vth,
                       np.where(children.fired, F32(1.0), F32(0.0))).astype(F32)
    # Positions outside the input are no children: -inf never wins the argmax.
    counters = extract_patches(counter, tuple(layer.kernel), tuple(layer.stride), layer.padding,
                               fill=-np.inf).reshape(n, oh, ow, kk, c)
    winner = np.argmax(counters, axis=3)[:, :, :, None, :]  # the first maximum in window order
    return np.take_along_axis(patches.reshape(n, oh, ow, kk, c), winner, axis=3)[:, :, :, 0, :]


def simulate(spec, images, *, sum_order="canonical", record=True, time_steps=None):
    """Run the model of `spec` on images (n, h, w, c), uint8 or float32 (already scaled).

    Returns a ReferenceResult. time_steps overrides spec.time_steps (for "does anything change
    after the last window" checks)."""
    layers = list(spec.layers)
    if layers[0].kind != "input":
        raise ValueError("layer 0 must be the input layer")
    if layers[-1].kind not in ("conv2d", "dense"):
        raise ValueError("the output layer must be conv2d or dense")
    x = to_float_images(spec, images)
    n = x.shape[0]
    if tuple(x.shape[1:]) != tuple(int(v) for v in layers[0].out_shape):
        raise ValueError(f"images {x.shape[1:]} do not match input {layers[0].out_shape}")
    steps = int(spec.time_steps if time_steps is None else time_steps)
    last = len(layers) - 1
    states = {}
    passed = {}
    for i, layer in enumerate(layers):
        if layer.kind in NEURON_KINDS:
            states[i] = _NeuronLayerState(layer, n, i == last, spec.readout, record, steps)
        elif layer.kind == "maxpool":
            passed[i] = np.zeros((n,) + tuple(int(v) for v in layer.out_shape), dtype=bool)
    for t in range(steps):
        spikes = None
        for i, layer in enumerate(layers):
            kind = layer.kind
            if kind == "input":
                st = states[i]
                if t == 0:
                    st.vmem[...] = x
                spikes = st.fire(t)
            elif kind == "maxpool" and layer.pool_mode == "gated":
                if layers[i - 1].kind not in NEURON_KINDS:
                    raise ValueError(f"layer {i}: a gated pool needs a neuron layer below it")
                spikes = _gated_pool(spikes, layer, states[i - 1], t)
            elif kind == "maxpool":
                spikes = _pool(spikes, layer, passed[i])
            elif kind == "flatten":
                spikes = spikes.reshape(n, 1, 1, -1)
            elif kind in ("conv2d", "dense"):
                st = states[i]
                k = st.kernel_at(t)
                if k is not None and (t == 0 or spikes.any()):
                    s, abs_sum, count = _synaptic_sum(layer, spikes, sum_order)
                    terms = count
                    if t == 0 and layer.bias is not None:
                        bias = np.asarray(layer.bias, dtype=F32).reshape(1, 1, 1, -1)
                        s = (s + bias).astype(F32)
                        abs_sum = (abs_sum + np.abs(bias)).astype(F32)
                        terms = terms + 1
                    st.vmem = (st.vmem + (s * k).astype(F32)).astype(F32)
                    st.magnitude = (st.magnitude + (abs_sum * k).astype(F32)).astype(F32)
                    st.terms = st.terms + terms + 1
                spikes = st.fire(t)
            else:
                raise ValueError(f"layer {i}: unknown kind {kind!r}")
    out = states[last]
    potentials = out.vmem.reshape(n, -1).copy()
    predictions = predict(spec.readout, potentials, out.first_spike.reshape(n, -1))
    return ReferenceResult(
        spike_times={i: st.first_spike for i, st in states.items()},
        potentials=potentials,
        predictions=predictions,
        fire_records={i: st.record for i, st in states.items() if st.record is not None},
        layer_names=[layer.name for layer in layers],
        final_magnitude={i: st.magnitude for i, st in states.items()},
        final_terms={i: st.terms for i, st in states.items()},
    )
