"""Efficiency figures of a spiking model: what it costs to run, next to what its ANN costs.

Every report of a result uses these (the evaluation step's report.md and results.json, the
export step's report, docs/RESULTS.md), so they are counted one way everywhere:

- spikes per image and per neuron, per neuron layer (the input layer's spikes are pixels
  firing; "hidden" layers are the neuron layers between the input and the output, what the
  reference counted);
- synaptic operations per image, per receiving layer: every spike that reaches a conv2d or
  dense layer, times its fan-out there (the number of that layer's neurons whose weights it
  adds to). Spikes reach a layer through the pooling between them as the pool mode relays
  them: an `earliest` pooled unit passes one spike, an `or` pooled unit passes one spike for
  every distinct step at which one of its children fires (up to the window's size), a
  `gated` one the spikes of the child with the largest spike counter (its first child's
  spike, and a later child's only while that child's threshold is above 1), so pooling can
  multiply the synaptic operations;
- the ANN's multiply-adds per image for the same layers (every in-bounds weight of every
  output, i.e. the sum of the fan-outs over the layer's input units), so the two compare
  like for like: an SNN in which every unit fired once would do as many synaptic operations
  as its ANN does multiply-adds;
- spikes on a blank (all-zero) image: neurons that fire on no input at all, i.e. whose
  normalised bias alone reaches a threshold of their fire window (docs/RESULTS.md, "quiet
  background").

numpy only (pyttfs for the blank-image run), so any network's report can use it.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from export import ttfs_format

NEURON_KINDS = ("input", "conv2d", "dense")
WEIGHT_KINDS = ("conv2d", "dense")
RELAY_KINDS = ("maxpool", "flatten")


# ---- Relaying spikes through pooling and flatten ---------------------------------------------


def window_view(x: np.ndarray, kernel, stride, padding: str, fill=0) -> List[np.ndarray]:
    """The kh*kw shifted views of x (n, h, w, c) that a conv2d / maxpool window reads, in
    kernel-row then kernel-column order; SAME padding as TensorFlow (the smaller half first).
    Padding positions hold `fill` (0 / False = no spike: nothing to a sum, nothing to an OR)."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh = ttfs_format.output_extent(h, kh, sh, padding)
    ow = ttfs_format.output_extent(w, kw, sw, padding)
    top = max((oh - 1) * sh + kh - h, 0) // 2 if padding == "same" else 0
    left = max((ow - 1) * sw + kw - w, 0) // 2 if padding == "same" else 0
    shape = (n, max(top + h, (oh - 1) * sh + kh), max(left + w, (ow - 1) * sw + kw), c)
    if shape == x.shape:  # VALID windows inside the map: no copy
        padded = x
    else:
        padded = np.full(shape, fill, dtype=x.dtype)
        padded[:, top:top + h, left:left + w, :] = x
    return [padded[:, r:r + (oh - 1) * sh + 1:sh, q:q + (ow - 1) * sw + 1:sw, :]
            for r in range(kh) for q in range(kw)]


def fire_thresholds(layer: ttfs_format.Layer) -> np.ndarray:
    """A neuron layer's threshold at each step of its fire window, float32 as libttfs tabulates
    it (docs/ENGINES.md, "Tables"): vth0 * exp(-(j - td_fire) / tau_fire)."""
    from export.evaluate_output import _kernel_table  # the C library's expf, as libttfs

    start, end = (int(v) for v in layer.neuron.fire_window)
    table = _kernel_table(layer.neuron.tau_fire, layer.neuron.td_fire, end - start)
    return (np.float32(layer.neuron.vth0) * table).astype(np.float32)


def _gated_pool(spikes: np.ndarray, layer: ttfs_format.Layer, step: int,
                source_times: np.ndarray, source: ttfs_format.Layer,
                passed: Dict[str, np.ndarray]) -> np.ndarray:
    """The spike-count-gated pool at `step`: per window, this step's spike of the child with
    the largest spike counter (0 before it fired, vth(step) at its fire step, 1 after), the
    first in window order among equals; positions outside the input are no children."""
    key = f"{layer.name}/thresholds"
    if key not in passed:
        passed[key] = fire_thresholds(source)
    start = int(source.neuron.fire_window[0])
    table = passed[key]
    views = window_view(spikes, layer.kernel, layer.stride, layer.padding, fill=False)
    if not 0 <= step - start < len(table):
        return np.zeros(views[0].shape, bool)  # nobody below can spike at this step
    vth = table[step - start]
    counter = np.where(source_times == step, vth,
                       np.where((source_times >= 0) & (source_times < step), np.float32(1.0),
                                np.float32(0.0))).astype(np.float32)
    counters = np.stack(window_view(counter, layer.kernel, layer.stride, layer.padding,
                                    fill=-np.inf))
    winner = np.argmax(counters, axis=0)[None]  # the first maximum in window order
    return np.take_along_axis(np.stack(views), winner, axis=0)[0]


def relay_spikes(spikes: np.ndarray, relays: Sequence[ttfs_format.Layer],
                 passed: Dict[str, np.ndarray], *, step: Optional[int] = None,
                 source_times: Optional[np.ndarray] = None,
                 source: Optional[ttfs_format.Layer] = None) -> np.ndarray:
    """One step's boolean spike map (n, h, w, c) through maxpool / flatten layers.

    `or` pools spike whenever a child does; `earliest` pools pass only their first spike
    (`passed[name]` remembers which units have, so call this for every spike step in order);
    `gated` pools (only directly above a neuron layer) pass the spike of the child with the
    largest spike counter, which needs the step, the first-spike times of that neuron layer
    (source_times, (n, h, w, c), -1 = never) and the layer itself (source)."""
    spikes = np.asarray(spikes, bool)
    for index, layer in enumerate(relays):
        if layer.kind == "flatten":
            spikes = spikes.reshape(spikes.shape[0], 1, 1, -1)
            continue
        if layer.pool_mode == "gated":
            if index != 0 or step is None or source_times is None or source is None:
                raise ValueError(f"maxpool '{layer.name}': a gated pool reads the spike "
                                 f"counters of the neuron layer directly below it; pass step, "
                                 f"source_times and source (and put it first in relays)")
            spikes = _gated_pool(spikes, layer, int(step), np.asarray(source_times), source,
                                 passed)
            continue
        if layer.pool_mode not in ("or", "earliest"):
            raise ValueError(f"maxpool '{layer.name}': pool mode {layer.pool_mode!r} is not "
                             f"'or', 'earliest' or 'gated'")
        pooled = np.logical_or.reduce(window_view(spikes, layer.kernel, layer.stride,
                                                  layer.padding, fill=False))
        if layer.pool_mode == "earliest":
            seen = passed.setdefault(layer.name, np.zeros(pooled.shape, bool))
            pooled &= ~seen
            seen |= pooled
        spikes = pooled
    return spikes


def delivered_spikes(times: np.ndarray, relays: Sequence[ttfs_format.Layer],
                     source: Optional[ttfs_format.Layer] = None) -> np.ndarray:
    """How many spikes each unit of the relayed map delivers, per image.

    times: (n, h, w, c) first-spike times of a neuron layer (-1: never fired), as libttfs
    records them; source: that layer (needed by a gated pool). relays: the maxpool / flatten
    layers between it and the next weight layer. Returns (n, h', w', c') int32: with no relay,
    1 for every neuron that fired; through a pool, what the pool passes on, step by step
    (relay_spikes)."""
    times = np.asarray(times)
    if times.ndim != 4:
        raise ValueError(f"spike times: shape {times.shape}, expected (n, h, w, c)")
    fired = times >= 0
    if not relays:
        return fired.astype(np.int32)
    passed: Dict[str, np.ndarray] = {}
    counts = None
    for t in np.unique(times[fired]):
        relayed = relay_spikes(times == t, relays, passed, step=int(t), source_times=times,
                               source=source)
        counts = relayed.astype(np.int32) if counts is None else counts + relayed
    if counts is None:  # nothing fired: the relayed shape from an empty step
        counts = relay_spikes(np.zeros(times.shape, bool), relays, {}, step=-1,
                              source_times=times, source=source).astype(np.int32)
    return counts


# ---- The network's connections ----------------------------------------------------------------


def _in_shapes(spec: ttfs_format.ModelSpec) -> List[Tuple[int, int, int]]:
    """The input shape (h, w, c) of every layer (the input layer: its own shape)."""
    shapes = []
    previous = None
    for layer in spec.layers:
        shapes.append(tuple(layer.out_shape) if previous is None else previous)
        previous = tuple(int(v) for v in layer.out_shape)
    return shapes


def _covering(size: int, kernel: int, stride: int, out: int, before: int) -> np.ndarray:
    """For each input position along one axis, how many output positions' windows hold it."""
    cover = np.zeros(size, np.int64)
    for o in range(out):
        lo = o * stride - before
        cover[max(lo, 0):min(lo + kernel, size)] += 1
    return cover


def fan_out(layer: ttfs_format.Layer, in_shape: Sequence[int]) -> np.ndarray:
    """(h, w, c) int64: how many of this conv2d / dense layer's neurons each input unit
    feeds (its synapses). A dense layer: all of them. A conv2d layer: the output positions
    whose window covers the unit, times the output channels; fewer at the borders (VALID)
    and none for a unit no window reads (a stride larger than the kernel)."""
    h, w, c = (int(v) for v in in_shape)
    if layer.kind == "dense":
        return np.full((h, w, c), int(np.prod(layer.out_shape)), np.int64)
    if layer.kind != "conv2d":
        raise ValueError(f"layer '{layer.name}': {layer.kind} has no synapses")
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    oh, ow, cout = (int(v) for v in layer.out_shape)
    top = max((oh - 1) * sh + kh - h, 0) // 2 if layer.padding == "same" else 0
    left = max((ow - 1) * sw + kw - w, 0) // 2 if layer.padding == "same" else 0
    rows = _covering(h, kh, sh, oh, top)
    cols = _covering(w, kw, sw, ow, left)
    return np.broadcast_to((rows[:, None] * cols[None, :] * cout)[:, :, None], (h, w, c)).copy()


def synapse_stages(spec: ttfs_format.ModelSpec) -> List[dict]:
    """For every conv2d / dense layer: the neuron layer whose spikes it receives, the relays
    between them, and the fan-out of the relayed units. In file order."""
    stages = []
    shapes = _in_shapes(spec)
    source, source_layer, relays = None, None, []
    for index, layer in enumerate(spec.layers):
        if layer.kind in WEIGHT_KINDS:
            if source is None:
                raise ValueError(f"layer '{layer.name}': no neuron layer below it")
            stages.append({"layer": layer.name, "source": source, "relays": list(relays),
                           "source_layer": source_layer,
                           "fan_out": fan_out(layer, shapes[index])})
        if layer.kind in NEURON_KINDS:
            source, source_layer, relays = layer.name, layer, []
        elif layer.kind in RELAY_KINDS:
            relays.append(layer)
    return stages


def ann_multiply_adds(spec: ttfs_format.ModelSpec) -> Dict[str, int]:
    """Multiply-adds of one ANN forward pass per conv2d / dense layer: the in-bounds weights of
    every output (= the sum of the fan-outs of its input units). Pooling and the ReLUs are not
    counted (no multiply-adds)."""
    return {stage["layer"]: int(stage["fan_out"].sum()) for stage in synapse_stages(spec)}


def synaptic_operations(spec: ttfs_format.ModelSpec, spike_times: Mapping[str, np.ndarray],
                        stages: Optional[List[dict]] = None) -> Dict[str, np.ndarray]:
    """Synaptic operations per image, per receiving conv2d / dense layer: (n,) int64.

    spike_times: first-spike times of the neuron layers, (n, h, w, c) or (n, h*w*c) int32
    with -1 for never fired (pyttfs Session.spike_times). Each delivered spike counts its
    fan-out (see the module doc); the output layer under vmem readout never fires, so it
    sends nothing."""
    stages = synapse_stages(spec) if stages is None else stages
    shapes = {layer.name: tuple(int(v) for v in layer.out_shape) for layer in spec.layers}
    out = {}
    for stage in stages:
        if stage["source"] not in spike_times:
            raise KeyError(f"spike times of layer '{stage['source']}' are needed (they feed "
                           f"'{stage['layer']}')")
        times = np.asarray(spike_times[stage["source"]])
        times = times.reshape((times.shape[0],) + shapes[stage["source"]])
        counts = delivered_spikes(times, stage["relays"], stage["source_layer"])
        fan = stage["fan_out"].reshape(counts.shape[1:])
        out[stage["layer"]] = np.einsum("nhwc,hwc->n", counts.astype(np.int64), fan)
    return out


# ---- Spikes on a blank image ------------------------------------------------------------------


def blank_image_spikes(model) -> Dict[str, int]:
    """Spikes per neuron layer on one all-zero image (libttfs, CPU, analytic engine; the
    stepped engine for a model whose windows overlap). model: a pyttfs.Model or a path."""
    import pyttfs

    owned = not isinstance(model, pyttfs.Model)
    handle = pyttfs.Model(model) if owned else model
    try:
        try:
            session = handle.session(backend="cpu", engine="analytic", max_batch=1)
        except pyttfs.TtfsError as error:
            if error.code != pyttfs.Status.ERR_UNSUPPORTED:
                raise
            session = handle.session(backend="cpu", engine="stepped", max_batch=1)
        with session:
            session.run(np.zeros((1, *handle.input_shape), np.float32))
            return {layer.name: int(session.spike_counts(layer.name)[0])
                    for layer in handle.layers if layer.has_neurons}
    finally:
        if owned:
            handle.close()


# ---- One record for the reports ---------------------------------------------------------------


def neuron_layer_sizes(spec: ttfs_format.ModelSpec) -> Dict[str, int]:
    return {layer.name: int(np.prod(layer.out_shape)) for layer in spec.layers
            if layer.kind in NEURON_KINDS}


def hidden_layers(spec: ttfs_format.ModelSpec) -> List[str]:
    """The neuron layers between the input and the output (what the reference counted)."""
    return list(neuron_layer_sizes(spec))[1:-1]


def efficiency_record(spec: ttfs_format.ModelSpec, spikes_per_image: Mapping[str, float],
                      synops_per_image: Mapping[str, float],
                      blank_spikes: Optional[Mapping[str, int]] = None) -> dict:
    """The efficiency figures of one evaluated model, as results.json / report.json hold them.

    spikes_per_image: mean spikes per image per neuron layer; synops_per_image: mean synaptic
    operations per image per receiving layer (synaptic_operations, averaged); blank_spikes:
    blank_image_spikes (optional)."""
    sizes = neuron_layer_sizes(spec)
    hidden = hidden_layers(spec)
    macs = ann_multiply_adds(spec)
    synops_total = float(sum(synops_per_image.values()))
    macs_total = int(sum(macs.values()))
    record = {
        "spikes": {name: {"neurons": sizes[name],
                          "per_image": float(spikes_per_image[name]),
                          "per_neuron": float(spikes_per_image[name]) / sizes[name]}
                   for name in sizes if name in spikes_per_image},
        "hidden_layers": hidden,
        "hidden_spikes_per_image": float(sum(spikes_per_image[n] for n in hidden
                                             if n in spikes_per_image)),
        "synaptic_operations_per_image": {name: float(v) for name, v in synops_per_image.items()},
        "synaptic_operations_total": synops_total,
        "ann_multiply_adds": macs,
        "ann_multiply_adds_total": macs_total,
        "synops_per_multiply_add": synops_total / macs_total if macs_total else None,
        "blank_image_spikes": None,
    }
    if blank_spikes is not None:
        record["blank_image_spikes"] = {
            "per_layer": {name: int(v) for name, v in blank_spikes.items()},
            "hidden": int(sum(blank_spikes[n] for n in hidden if n in blank_spikes))}
    return record


def efficiency_rows(record: dict) -> List[Tuple[str, ...]]:
    """(layer, neurons, spikes / image, spikes / neuron, blank-image spikes, synaptic ops /
    image, ANN multiply-adds) rows, and a total row, for a Markdown or text table."""
    blank = (record.get("blank_image_spikes") or {}).get("per_layer", {})
    synops = record["synaptic_operations_per_image"]
    macs = record["ann_multiply_adds"]
    rows = []
    for name, s in record["spikes"].items():
        rows.append((name, str(s["neurons"]), f"{s['per_image']:.1f}", f"{s['per_neuron']:.3f}",
                     str(blank[name]) if name in blank else "n/a",
                     f"{synops[name]:,.0f}" if name in synops else "",
                     f"{macs[name]:,}" if name in macs else ""))
    blank_hidden = (record.get("blank_image_spikes") or {}).get("hidden")
    rows.append((f"hidden ({' + '.join(record['hidden_layers'])})", "",
                 f"{record['hidden_spikes_per_image']:.1f}", "",
                 "n/a" if blank_hidden is None else str(blank_hidden),
                 f"{record['synaptic_operations_total']:,.0f} (all layers)",
                 f"{record['ann_multiply_adds_total']:,} (all layers)"))
    return rows


EFFICIENCY_HEADER = ("layer", "neurons", "spikes / image", "spikes / neuron",
                     "spikes on a blank image", "synaptic ops into the layer / image",
                     "ANN multiply-adds of the layer / image")


# ---- Accuracy against hidden spikes, across configurations ------------------------------------

# The reference's published result (docs/RESULTS.md): 99.22 % with 1226 + 1090 hidden spikes.
REFERENCE_POINT = (0.9922, 2316.0)


def load_point(path) -> Tuple[str, float, float]:
    """(name, SNN test accuracy, hidden spikes per image) of an evaluated run: a run
    directory, its results/ directory, or a results.json."""
    import json
    from pathlib import Path

    path = Path(path)
    candidates = [path, path / "results.json", path / "results" / "results.json"]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{path}: no results.json there (run `python -m export "
                                f"evaluate` first)")
    results = json.loads(found.read_text())
    try:
        accuracy = float(results["snn"]["accuracy"])
        spikes = float(results["hidden_spikes_per_image"])
    except KeyError as error:
        raise KeyError(f"{found}: field {error} is missing") from None
    name = path.name if path.is_dir() and path.name != "results" else found.parent.parent.name
    return name, accuracy, spikes


def plot_accuracy_vs_spikes(points: Sequence[Tuple[str, float, float]], path, *,
                            goal: Optional[Tuple[float, float]] = (0.994, 2000.0),
                            title: str = "SNN test accuracy against hidden spikes per image") -> None:
    """One marker per configuration (name, accuracy 0..1, hidden spikes per image), the
    reference's published point, and the goal region (accuracy >= goal[0] with at most goal[1]
    spikes) shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    markers = "osD^vP<>Xhd"  # 11 markers against 10 colours: no pair repeats before 110 points
    for index, (name, accuracy, spikes) in enumerate(points):
        # a marker and a legend entry per point: labels written next to close points overlap
        ax.scatter(spikes, 100 * accuracy, s=45, zorder=3, marker=markers[index % len(markers)],
                   color=plt.cm.tab10(index % 10),
                   label=f"{name}: {100 * accuracy:.2f} %, {spikes:,.0f}")
    ref_acc, ref_spikes = REFERENCE_POINT
    ax.scatter(ref_spikes, 100 * ref_acc, marker="*", s=160, color="black", zorder=4,
               label=f"reference (published): {100 * ref_acc:.2f} %, {ref_spikes:,.0f}")
    accuracies = [100 * a for _, a, _ in points] + [100 * ref_acc]
    spikes_all = [s for _, _, s in points] + [ref_spikes]
    low = min(accuracies) - 0.1
    high = max(max(accuracies), 100 * goal[0] if goal else 0) + 0.1
    if goal is not None:
        ax.fill_between([0, goal[1]], 100 * goal[0], high, color="tab:green", alpha=0.12,
                        label=f"goal: >= {100 * goal[0]:.1f} % with <= {goal[1]:,.0f} spikes")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_xlim(0, max(spikes_all) * 1.08)
    ax.set_ylim(low, high)
    ax.set_xlabel("hidden spikes per image (test set)")
    ax.set_ylabel("SNN test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    """python -m export.efficiency RUN_DIR... --output PNG [--name RUN_DIR=LABEL ...]"""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m export.efficiency",
        description="Plot SNN test accuracy against hidden spikes per image for evaluated runs "
                    "(each RUN is a run directory, its results/ or a results.json), with the "
                    "reference's published point.")
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--output", required=True, help="the PNG to write")
    parser.add_argument("--label", action="append", default=[], metavar="RUN=LABEL",
                        help="the label of one RUN in the plot (default: its directory name)")
    args = parser.parse_intermixed_args(argv)
    labels = {}
    for item in args.label:
        run, sep, label = item.partition("=")
        if not sep:
            parser.error(f"--label {item!r}: expected RUN=LABEL")
        labels[run] = label
    points = []
    for run in args.runs:
        try:
            name, accuracy, spikes = load_point(run)
        except (FileNotFoundError, KeyError, ValueError) as error:
            print(f"python -m export.efficiency: error: {error}", file=sys.stderr)
            return 1
        points.append((labels.get(run, name), accuracy, spikes))
        print(f"{labels.get(run, name)}: {100 * accuracy:.2f} %, {spikes:.0f} hidden spikes")
    plot_accuracy_vs_spikes(points, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
