"""Time-constant training (docs/ALGORITHM.md section 8), after conversion and before export.

Per batch of images: the target activations x of each layer (from the ANN, `targets_fn`), one
SNN pass with the current constants (libttfs's analytic engine through pyttfs, or the
TensorFlow stepped simulator), then, per layer, tau_fire first (every trained layer), then
td_fire, then the chaining tau_integ(l) = tau_fire(l-1), td_integ(l) = td_fire(l-1).

Which constants train (the reference's choice, generalised): tau_fire of every neuron layer but
the output layer (input, conv1, conv2 in the MNIST network), td_fire of every neuron layer but
the input and the output layer (conv1, conv2). The output layer keeps its constants (20/0) and
td of the input stays 0.

rule="reference" is the reference code's update, quirks included (see `tau_update` and
`td_update`); rule="paper" changes exactly three things: spike times are relative to the fire
window (s = fst - fire_start - td), xhat = exp(-s/tau) for neurons that fired and 0 for silent
ones, and silent neurons carry no sentinel time (the td update takes the earliest spike among
the neurons that fired; an image with none counts as 99999.9 like the reference's sentinel).
Everything else (d1 over positive products, the xmin/2nd-percentile term, rates 10/100/1) is
shared. The targets differ by the caller's `targets_fn`: `reference_targets` (BN applied once
more on top of the fused, normalised convolution, as the reference did) or `paper_targets`.

All update arithmetic is float32, op by op in the reference's order (the reference kept the
constants as float32 TensorFlow tensors).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

F32 = np.float32
RULES = ("reference", "paper")
SNN_PASSES = ("native", "tf")
TMIN_SENTINEL = F32(99999.9)  # the reference's "no spike" value in the td update
RHO_PRECISION = F32(10.0)  # rho1: weight of the d1 (precision) term
RHO_MIN = F32(100.0)  # rho2: weight of the d2 (smallest value) term
RHO_DELAY = F32(1.0)
XMIN_PERCENTILE = 2.0


# ---- The update formulas --------------------------------------------------------------------


def _per_image_axes(a: np.ndarray) -> Tuple[int, ...]:
    return tuple(range(1, a.ndim))


def tau_update(rule: str, tau: float, td: float, first_spike_times: np.ndarray,
               targets: np.ndarray, *, fire_start: int, fire_duration: int,
               time_window: int) -> Tuple[np.float32, dict]:
    """One tau_fire update of one layer. Returns (new tau, diagnostics).

    first_spike_times: (n, ...) int, global steps, -1 = never fired. targets: (n, ...) the ANN
    activations x of the same neurons. fire_start: the layer's first fire step (d*T_s);
    fire_duration: T_d (the reference's never-fired sentinel); time_window: T_w.

    reference:  fst = T_d where never fired; s = fst - td (absolute step);
                xhat = 0 where fired, exp(-s/tau) where never fired
    paper:      s = fst - fire_start - td; xhat = exp(-s/tau) where fired, 0 where silent
    both:       d1 = mean of (x - xhat)*xhat*s over the entries where it is > 0 (0 if none)
                xmin = per image 2nd percentile (linear) of max(x, 0); mean over images
                xhmin = exp(-(T_d - td)/tau);  d2 = (xmin - xhmin)*xhmin*(T_w - td)
                tau += (d1/tau^2)*10 + (d2/tau^2)*100
    """
    if rule not in RULES:
        raise ValueError(f"rule {rule!r} is not one of {RULES}")
    tau, td = F32(tau), F32(td)
    fst = np.asarray(first_spike_times)
    x = np.asarray(targets, dtype=F32)
    if fst.shape != x.shape:
        raise ValueError(f"first_spike_times shape {fst.shape} != targets shape {x.shape}")
    fired = fst >= 0
    if rule == "reference":
        spike_time = np.where(fired, fst, fire_duration).astype(F32)
        s = (spike_time - td).astype(F32)
        decoded = np.exp(-(s / tau)).astype(F32)
        xhat = np.where(fired, F32(0.0), decoded).astype(F32)
    else:
        s = np.where(fired, (fst - fire_start).astype(F32) - td, F32(0.0)).astype(F32)
        xhat = np.where(fired, np.exp(-(s / tau)).astype(F32), F32(0.0)).astype(F32)
    product = ((x - xhat) * xhat * s).astype(F32)
    positive = product[product > 0]
    d1 = F32(positive.mean(dtype=F32)) if positive.size else F32(0.0)

    x_pos = np.where(x > 0, x, F32(0.0)).astype(F32)
    axes = _per_image_axes(x_pos)
    x_min_per_image = np.percentile(x_pos, XMIN_PERCENTILE, axis=axes).astype(F32)
    x_min = F32(x_min_per_image.mean(dtype=F32))
    x_hat_min = F32(np.exp(-((F32(fire_duration) - td) / tau)))
    d2 = F32(F32(x_min - x_hat_min) * x_hat_min * F32(F32(time_window) - td))

    tau_sq = F32(tau * tau)
    delta = F32(F32(d1 / tau_sq) * RHO_PRECISION + F32(d2 / tau_sq) * RHO_MIN)
    new_tau = F32(tau + delta)
    if not (np.isfinite(new_tau) and new_tau > 0):
        raise FloatingPointError(f"tau update gave tau_fire {new_tau} (from {tau}, d1 {d1}, "
                                 f"d2 {d2}); expected a finite value > 0")
    return new_tau, {"d1": float(d1), "d2": float(d2), "x_min": float(x_min),
                     "x_hat_min": float(x_hat_min), "delta": float(delta),
                     "fired_fraction": float(fired.mean()) if fired.size else 0.0}


def td_update(rule: str, tau: float, td: float, first_spike_times: np.ndarray, *,
              fire_start: int, fire_duration: int) -> Tuple[np.float32, dict]:
    """One td_fire update of one layer, with the layer's new tau. Returns (new td, diagnostics).

    reference:  fst as in tau_update (T_d where never fired); per image tmin = min of fst with
                fst == T_d counted as 99999.9 (so a spike at step T_d, conv1's first fire
                step, counts as none: the sentinel collision); tmin -= fire_start
    paper:      per image tmin = min over fired neurons of fst - fire_start (99999.9 if none)
    both:       xmax = exp(-(tmin - td)/tau); xhmax = exp(td/tau)
                td += mean over images of (xmax - xhmax)*xhmax/tau
    """
    if rule not in RULES:
        raise ValueError(f"rule {rule!r} is not one of {RULES}")
    tau, td = F32(tau), F32(td)
    fst = np.asarray(first_spike_times)
    fired = fst >= 0
    axes = _per_image_axes(fst)
    if rule == "reference":
        spike_time = np.where(fired, fst, fire_duration).astype(F32)
        candidate = np.where(spike_time == F32(fire_duration), TMIN_SENTINEL, spike_time)
        t_min = (candidate.min(axis=axes) - F32(fire_start)).astype(F32)
    else:
        candidate = np.where(fired, (fst - fire_start).astype(F32), TMIN_SENTINEL)
        t_min = candidate.min(axis=axes).astype(F32)
    x_max = np.exp(-((t_min - td) / tau)).astype(F32)
    x_max_hat = F32(np.exp(td / tau))
    per_image = ((x_max - x_max_hat) * x_max_hat / tau).astype(F32)
    delta = F32(F32(per_image.mean(dtype=F32)) * RHO_DELAY)
    new_td = F32(td + delta)
    if not np.isfinite(new_td):
        raise FloatingPointError(f"td update gave td_fire {new_td} (from {td}, tau {tau})")
    return new_td, {"delta": float(delta), "t_min_mean": float(t_min.mean())}


# ---- Which layers train, and the chaining ---------------------------------------------------


def trained_layers(spec) -> Tuple[List[str], List[str]]:
    """(layers whose tau_fire trains, layers whose td_fire trains) — see the module doc."""
    neurons = [l for l in spec.layers if l.kind in ("input", "conv2d", "dense")]
    hidden = neurons[:-1]  # the output layer keeps its constants
    return ([l.name for l in hidden], [l.name for l in hidden if l.kind != "input"])


def _with_constants(spec, tau: Dict[str, np.float32], td: Dict[str, np.float32]):
    """A copy of spec with the given tau_fire/td_fire and the integration constants chained:
    tau_integ(l) = tau_fire(l-1), td_integ(l) = td_fire(l-1) (docs/ALGORITHM.md section 4)."""
    layers = []
    previous = None
    for layer in spec.layers:
        if layer.kind in ("input", "conv2d", "dense"):
            nr = layer.neuron
            changes = {}
            if layer.name in tau:
                changes["tau_fire"] = float(tau[layer.name])
            if layer.name in td:
                changes["td_fire"] = float(td[layer.name])
            if previous is not None:
                changes["tau_integ"] = previous.tau_fire
                changes["td_integ"] = previous.td_fire
            nr = dataclasses.replace(nr, **changes)
            layer = dataclasses.replace(layer, neuron=nr)
            previous = nr
        layers.append(layer)
    return dataclasses.replace(spec, layers=layers)


# ---- SNN passes -----------------------------------------------------------------------------


def native_spike_times(spec, images_float32: np.ndarray, names: List[str], *,
                       backend: str = "cpu", engine: str = "analytic") -> Dict[str, np.ndarray]:
    """First-spike times of the named layers from libttfs (through pyttfs)."""
    import pyttfs
    from export.ttfs_format import to_bytes

    model = pyttfs.Model.from_bytes(to_bytes(spec))
    session = model.session(backend=backend, engine=engine,
                            max_batch=int(images_float32.shape[0]), record_spike_times=True)
    session.run(np.ascontiguousarray(images_float32, dtype=F32))
    return {name: np.asarray(session.spike_times(name)) for name in names}


def tf_spike_times(spec, images_float32: np.ndarray, names: List[str], *,
                   exp: str = "tf", simulator=None) -> Dict[str, np.ndarray]:
    """First-spike times of the named layers from the TensorFlow stepped simulator.
    simulator: an export.tf_reference.Simulator of this network to reuse (no recompiling)."""
    from export.tf_reference import Simulator

    if simulator is None:
        simulator = Simulator(spec, exp=exp)
    else:
        simulator.set_constants(spec)
    result = simulator.run(images_float32, batch_size=max(int(images_float32.shape[0]), 1),
                           progress=False)
    return {name: result.first_spike_times[name] for name in names}


# ---- Targets --------------------------------------------------------------------------------


def _window(value, default) -> Tuple[int, int]:
    """A kernel/stride pair; unset (None or AnnLayer's (0, 0) default) gives the default."""
    if value is None:
        return tuple(default)
    pair = (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)
    return pair if min(pair) >= 1 else tuple(default)


def _ann_targets(ann_layers, with_bn: bool) -> Callable[[np.ndarray], Dict[str, np.ndarray]]:
    import tensorflow as tf

    layers = list(ann_layers)

    def targets(images_float32):
        h = tf.constant(np.asarray(images_float32, dtype=F32))
        out = {}
        for layer in layers:
            kind = layer.kind
            if kind == "input":
                continue
            if kind == "conv2d":
                z = tf.nn.conv2d(h, tf.constant(np.asarray(layer.weights, F32)),
                                 _window(getattr(layer, "stride", None), (1, 1)),
                                 str(getattr(layer, "padding", "valid")).upper())
            elif kind == "dense":
                w = tf.constant(np.asarray(layer.weights, F32))
                z = tf.matmul(tf.reshape(h, [-1, w.shape[0]]), w)
            elif kind == "maxpool":
                kernel = _window(getattr(layer, "kernel", None), (2, 2))
                stride = _window(getattr(layer, "stride", None), kernel)
                h = tf.nn.max_pool2d(h, kernel, stride,
                                     str(getattr(layer, "padding", "valid")).upper())
                continue
            elif kind == "flatten":
                h = tf.reshape(h, [tf.shape(h)[0], -1])
                continue
            elif kind == "dropout":
                continue
            else:
                raise ValueError(f"ANN layer '{layer.name}': unknown kind {kind!r}; expected "
                                 f"conv2d, dense, maxpool, flatten")
            if getattr(layer, "bias", None) is not None:
                z = z + tf.constant(np.asarray(layer.bias, F32))
            bn = getattr(layer, "bn", None)
            if with_bn and bn is not None:
                # Keras BatchNormalization in inference mode, its operation order
                inv = tf.math.rsqrt(tf.constant(np.asarray(bn["moving_variance"], F32))
                                    + F32(bn.get("epsilon", 1e-3)))
                inv = inv * tf.constant(np.asarray(bn["gamma"], F32))
                z = z * inv + (tf.constant(np.asarray(bn["beta"], F32))
                               - tf.constant(np.asarray(bn["moving_mean"], F32)) * inv)
            if getattr(layer, "relu", False):
                z = tf.nn.relu(z)
            value = z.numpy()
            out[layer.name] = value.reshape(value.shape[0], 1, 1, -1) if value.ndim == 2 else value
            h = z
        return out

    return targets


def reference_targets(ann_layers) -> Callable[[np.ndarray], Dict[str, np.ndarray]]:
    """The reference rule's targets: per conv/dense layer ReLU(BN(conv(prev, W~) + b~)), BN in
    inference mode applied once more on top of the fused, normalised layer, each layer fed the
    previous target (conv2 gets maxpool(conv1 target)). ann_layers: the converted layers
    (weights W~, b~) with .bn holding the BN that was fused into each (None: none)."""
    return _ann_targets(ann_layers, with_bn=True)


def paper_targets(ann_layers) -> Callable[[np.ndarray], Dict[str, np.ndarray]]:
    """The paper rule's targets: the converted ANN's activations ReLU(conv(prev, W~) + b~)."""
    return _ann_targets(ann_layers, with_bn=False)


# ---- The training loop ----------------------------------------------------------------------


def _save(save_dir: Path, record: dict) -> Path:
    save_dir.mkdir(parents=True, exist_ok=True)
    path = save_dir / f"time_constants_{record['images_seen']:08d}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def train_time_constants(spec, images_uint8, targets_fn, *, rule: str = "reference",
                         batch_size: int = 100, passes: int = 6, save_every: int = 10000,
                         save_dir=None, snn: str = "native", progress: bool = True,
                         backend: str = "cpu", exp: str = "tf",
                         time_window: Optional[int] = None):
    """Train tau_fire/td_fire (docs/ALGORITHM.md section 8). Returns (trained ModelSpec, history).

    images_uint8: (n, h, w, c) uint8 (or float32 already scaled), used in order, `passes`
    times, in batches of batch_size (a last partial batch is used as it is). targets_fn:
    float32 images -> {layer name: (n, h, w, c) target activations} for every layer whose tau
    trains except the input (whose target is the pixels unless given). snn: "native"
    (libttfs analytic engine via pyttfs, `backend`) or "tf" (export.tf_reference, `exp`).
    time_window: T_w of the d2 term (default: each layer's fire window length, 80 in the
    reference). Every save_every images the constants go to save_dir as JSON.
    history: one dict per update: update, pass, images_seen, tau {layer: value}, td {layer:
    value}, and per layer the update's diagnostics.
    """
    from tqdm.auto import tqdm

    from export.tf_reference import to_float_images

    if rule not in RULES:
        raise ValueError(f"rule {rule!r} is not one of {RULES}")
    if snn not in SNN_PASSES:
        raise ValueError(f"snn {snn!r} is not one of {SNN_PASSES}")
    if batch_size < 1 or passes < 0:
        raise ValueError(f"batch_size {batch_size} must be >= 1 and passes {passes} >= 0")
    images = np.asarray(images_uint8)
    shape = tuple(int(v) for v in spec.layers[0].out_shape)
    if images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise ValueError(f"images: shape {images.shape}, expected (n,) + {shape}")
    tau_names, td_names = trained_layers(spec)
    by_name = {l.name: l for l in spec.layers}
    tau = {name: F32(by_name[name].neuron.tau_fire) for name in tau_names}
    # td of every tau-trained layer enters its tau update; only td_names' td changes
    td = {name: F32(by_name[name].neuron.td_fire) for name in tau_names}
    windows = {}
    for name in tau_names:
        start, end = (int(v) for v in by_name[name].neuron.fire_window)
        windows[name] = (start, end - start,
                         end - start if time_window is None else int(time_window))
    current = _with_constants(spec, tau, {k: td[k] for k in td_names})
    save_path = None if save_dir is None else Path(save_dir)

    simulator = None
    if snn == "tf":
        from export.tf_reference import Simulator
        simulator = Simulator(current, exp=exp)  # compiled once, constants swapped per update

    def spike_pass(model, x):
        if snn == "native":
            return native_spike_times(model, x, tau_names, backend=backend)
        return tf_spike_times(model, x, tau_names, simulator=simulator)

    n = images.shape[0]
    history = []
    images_seen = 0
    update = 0
    batches = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    bar = tqdm(total=passes * len(batches), disable=not progress, unit="batch",
               desc=f"time constants ({rule}, {snn})")
    for pass_index in range(passes):
        for lo, hi in batches:
            x = to_float_images(spec, images[lo:hi])
            targets = dict(targets_fn(x))
            for name in tau_names:  # the input layer's target is the pixels themselves
                if by_name[name].kind == "input":
                    targets.setdefault(name, x)
            missing = [name for name in tau_names if name not in targets]
            if missing:
                raise KeyError(f"targets_fn returned no targets for layer(s) {missing}; it "
                               f"returned {sorted(targets)}")
            times = spike_pass(current, x)
            diagnostics = {}
            for name in tau_names:  # tau first, every layer
                start, duration, window = windows[name]
                target = np.asarray(targets[name], dtype=F32).reshape(times[name].shape)
                tau[name], diagnostics[name] = tau_update(
                    rule, tau[name], td[name], times[name], target, fire_start=start,
                    fire_duration=duration, time_window=window)
            for name in td_names:  # then td, with the new tau
                start, duration, _ = windows[name]
                td[name], diag = td_update(rule, tau[name], td[name], times[name],
                                           fire_start=start, fire_duration=duration)
                diagnostics[name]["td_delta"] = diag["delta"]
            current = _with_constants(current, tau, {k: td[k] for k in td_names})
            update += 1
            previous_seen = images_seen
            images_seen += hi - lo
            record = {"update": update, "pass": pass_index, "images_seen": images_seen,
                      "rule": rule,
                      "tau": {k: float(v) for k, v in tau.items()},
                      "td": {k: float(td[k]) for k in td_names},
                      "diagnostics": diagnostics}
            history.append(record)
            if save_path is not None and save_every and \
                    images_seen // save_every > previous_seen // save_every:
                _save(save_path, {k: record[k] for k in
                                  ("update", "pass", "images_seen", "rule", "tau", "td")})
            bar.update(1)
            bar.set_postfix({f"tau_{k}": f"{float(v):.3f}" for k, v in tau.items()})
    bar.close()

    if isinstance(current.metadata, dict):
        metadata = copy.deepcopy(current.metadata)
        metadata["time_constant_training"] = {
            "rule": rule, "passes": passes, "batch_size": batch_size, "images": int(n),
            "updates": update, "snn": snn,
            "tau_fire": {k: float(v) for k, v in tau.items()},
            "td_fire": {k: float(td[k]) for k in td_names}}
        current = dataclasses.replace(current, metadata=metadata)
    return current, history
