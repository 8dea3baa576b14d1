"""The evaluation's reporting: what export/evaluate.py measured, as files and tables.

Owned here: the file names under the results directory and `write_results`, which writes

    per_image.npz          the per-image arrays evaluate collected (predictions, spike counts, ...)
    accuracy_vs_time.png   accuracy against time, with a zoom around the final accuracy
    first_spike_histogram.png   first-spike times of the layers that can fire
    spikes_per_layer.png   spikes per image per neuron layer (and the reference run's)
    report.md              the summary table, then a section per measurement, with the plots
    results.json           every number of the `results` dict, plus the summary rows

and the plain-text summary table printed at the end (`format_table`). Everything here reads
the `results` dict that export/evaluate.py builds (see its module doc for what each number
means); nothing here runs an engine or checks a result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from export import efficiency

RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
PER_IMAGE_NPZ = "per_image.npz"
PLOT_ACCURACY = "accuracy_vs_time.png"
PLOT_HISTOGRAM = "first_spike_histogram.png"
PLOT_SPIKES = "spikes_per_layer.png"


def write_results(results_dir: Path, results: dict, per_image: Dict[str, np.ndarray],
                  ann_accuracy: float, integ_window: Tuple[int, int],
                  neuron_layers: Sequence[str], output_name: str) -> List[Tuple[str, str]]:
    """Write the results directory (the files above) and return the summary rows.

    per_image: the arrays of per_image.npz (record_steps among them); ann_accuracy: the ANN's
    accuracy on the evaluated images (the plots' and the summary's comparison line);
    integ_window: the output layer's integration window (shaded in the accuracy plot, and
    where the summary's telling steps are picked). Adds results["summary"]."""
    results_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(results_dir / PER_IMAGE_NPZ, **per_image)
    _plot_accuracy(results_dir / PLOT_ACCURACY, results, ann_accuracy, integ_window)
    _plot_histograms(results_dir / PLOT_HISTOGRAM, results, neuron_layers, output_name)
    _plot_spikes(results_dir / PLOT_SPIKES, results, neuron_layers)
    picked = _pick_steps(integ_window, results["time_steps"], per_image["record_steps"])
    summary = summary_rows(results, picked, ann_accuracy)
    (results_dir / REPORT_MD).write_text(_report_markdown(results, summary, picked))
    results["summary"] = [{"quantity": k, "value": v} for k, v in summary]
    (results_dir / RESULTS_JSON).write_text(json.dumps(results, indent=1) + "\n")
    return summary


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def summary_rows(results: dict, steps: Sequence[int], ann_accuracy: float) -> List[Tuple[str, str]]:
    snn = results["snn"]
    n = results["test_images"]
    rows = [("ANN accuracy (test)", f"{_pct(ann_accuracy)}" + (
        f" ({n} images; all {results['ann']['test_images']}: "
        f"{_pct(results['ann']['test_accuracy'])})"
        if "test_accuracy_on_evaluated_images" in results["ann"] else f" ({n} images)")),
            ("SNN accuracy, stepped / analytic",
             f"{_pct(snn['engines']['stepped']['accuracy'])} / "
             f"{_pct(snn['engines']['analytic']['accuracy'])} (identical bit for bit)"
             if snn["engines_identical"] else
             f"{_pct(snn['engines']['stepped']['accuracy'])} / refused (overlapping windows)")]
    ref = results["reference"]
    if ref is not None:
        layers = ref["spike_times"].values()
        neurons = sum(v["neurons"] for v in layers)
        differ = sum(v["mismatches"] for v in layers)
        ties = sum(v["direct_ties"] + v["after_an_earlier_tie"] for v in layers)
        pot = ref["output_potentials"]
        rows.append((f"TF reference agreement ({ref['images']} images)",
                     f"predictions {100 * ref['identical_predictions_fraction']:.2f} % "
                     f"identical; spike times {differ} of {neurons} differ ({ties} at or after "
                     f"a threshold tie); max |dV| {pot['max_abs_difference']:.2g} "
                     f"({pot['max_abs_difference_identical_spikes']:.2g} where spikes agree)"))
    reference_spikes = (results.get("reference_run") or {}).get("spikes_per_image", {})
    for name, value in results["spikes_per_image"].items():
        note = ""
        if name in reference_spikes:
            note = f" (reference run {reference_spikes[name]:.0f})"
        if name == results["output_layer"] and results["readout"] == "vmem":
            note = " (output layer: does not fire under vmem readout)"
        rows.append((f"spikes per image, {name}", f"{value:.1f}{note}"))
    rows.append((f"spikes per image, hidden ({' + '.join(results['hidden_layers'])})",
                 f"{results['hidden_spikes_per_image']:.1f}" + (
                     f" (reference run "
                     f"{results['reference_run']['hidden_spikes_per_image']:.0f})"
                     if reference_spikes else "")))
    rows += efficiency_summary_rows(results["efficiency"])
    over = results["accuracy_over_time"]
    for t in steps:
        a = over["accuracy"][over["steps"].index(t)]
        rows.append((f"accuracy at t = {t}", _pct(a)))
    no_spike = results["no_output_spike"]
    if no_spike["images_without_output_spike"] is None:
        rows.append(("images without an output spike", "cannot happen (vmem readout)"))
    else:
        rows.append(("images without an output spike",
                     f"{no_spike['images_without_output_spike']} (fallback accuracy "
                     f"{_pct(no_spike['fallback_accuracy'])})"))
        rows.append(("first output spike shared by several classes",
                     f"{no_spike['images_with_simultaneous_first_spikes']} (lowest index wins; "
                     f"accuracy {_pct(no_spike['simultaneous_first_spikes_accuracy'])})"))
    for engine in snn["engines"]:
        ips = snn["engines"][engine]["images_per_second"]
        rows.append((f"images/s, {engine} engine (CPU)",
                     "n/a" if ips is None else f"{ips:.0f}"))
    return rows


def efficiency_summary_rows(record: dict) -> List[Tuple[str, str]]:
    """The efficiency figures (export.efficiency) as summary rows."""
    rows = []
    blank = record.get("blank_image_spikes")
    if blank is not None:
        rows.append(("spikes on a blank image, hidden",
                     f"{blank['hidden']} (" + ", ".join(f"{k} {v}" for k, v in
                                                       blank["per_layer"].items()) + ")"))
    rows.append(("synaptic operations per image",
                 f"{record['synaptic_operations_total']:,.0f} (ANN: "
                 f"{record['ann_multiply_adds_total']:,} multiply-adds; ratio "
                 f"{record['synops_per_multiply_add']:.3f})"))
    return rows


def efficiency_markdown(record: dict) -> List[str]:
    """The report's efficiency section: the per-layer table and what it counts."""
    blank = record.get("blank_image_spikes")
    return ["## Efficiency", "",
            "Synaptic operations: every spike that reaches a conv2d or dense layer times its "
            "fan-out there, counted at the receiving layer (through the pools as the pool mode "
            "relays: an `or` pooled unit can deliver several spikes). The ANN column: its "
            "multiply-adds for the same layer. Spikes on a blank image: one all-zero image "
            "(neurons that fire on their bias alone).", "",
            *_md_table(efficiency.EFFICIENCY_HEADER, efficiency.efficiency_rows(record)), "",
            f"Synaptic operations per image: {record['synaptic_operations_total']:,.0f}, "
            f"{record['synops_per_multiply_add']:.3f} of the ANN's "
            f"{record['ann_multiply_adds_total']:,} multiply-adds."
            + ("" if blank is None else
               f" Hidden spikes on a blank image: {blank['hidden']}."), ""]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table for the terminal."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "-+-".join("-" * w for w in widths)
    out = [" | ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip(), line]
    out += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(out)


def _md_table(header: Sequence[str], rows: Sequence[Sequence]) -> List[str]:
    def cell(value) -> str:  # a bare | (as in |V - vth|) would split the cell
        return str(value).replace("|", "\\|")

    return ["| " + " | ".join(map(cell, header)) + " |",
            "|" + "|".join("---" for _ in header) + "|",
            *["| " + " | ".join(map(cell, r)) + " |" for r in rows]]


def _report_markdown(results: dict, summary, picked: Sequence[int]) -> str:
    snn = results["snn"]
    lines = ["# Evaluation", "",
             f"Model: `{results['model']}`  ", f"Dataset: {results['dataset']}  ",
             f"Test images: {results['test_images']}, readout `{results['readout']}`, pools "
             f"{results['pool_modes']}, {results['time_steps']} time steps", "",
             "## Summary", "", *_md_table(["quantity", "value"], summary), ""]
    if results["failures"]:
        lines += ["**Checks that FAILED:**", "", *[f"- {f}" for f in results["failures"]], ""]

    lines += ["## Engines (libttfs, CPU)", "",
              ("Both engines ran every batch; predictions, output potentials (bit patterns), "
               "spike counts and first-spike times of every neuron layer were identical."
               if snn["engines_identical"] else
               f"Only the stepped engine ran: the analytic engine refused the model "
               f"({snn['analytic_refused']})."), "",
              *_md_table(["engine", "accuracy", "seconds in run()", "images/s"],
                         [(e, _pct(v["accuracy"]), f"{v['seconds']:.3f}",
                           "n/a" if v["images_per_second"] is None
                           else f"{v['images_per_second']:.0f}")
                          for e, v in snn["engines"].items()]), ""]

    reference_spikes = (results.get("reference_run") or {}).get("spikes_per_image", {})
    lines += ["## Spikes per image", "",
              f"Hidden layers ({', '.join(results['hidden_layers'])}) are what the reference "
              f"counted: {results['hidden_spikes_per_image']:.1f} per image" + (
                  " (reference run: 1226 conv1 + 1090 conv2 = 2316, with its own trained "
                  "model)." if reference_spikes else "."), "",
              *_md_table(["layer", "spikes / image", "std", "reference run"],
                         [(k, f"{v:.1f}", f"{results['spikes_per_image_std'][k]:.1f}",
                           f"{reference_spikes[k]:.0f}" if k in reference_spikes else "")
                          for k, v in results["spikes_per_image"].items()]), "",
              f"![spikes per layer]({PLOT_SPIKES})", "",
              f"![first-spike times]({PLOT_HISTOGRAM})", "",
              *efficiency_markdown(results["efficiency"])]

    if results.get("per_class_accuracy"):
        lines += ["## SNN accuracy per class", "",
                  *_md_table(["class", "name", "accuracy"],
                             [(i, name, _pct(a)) for i, (name, a) in
                              enumerate(results["per_class_accuracy"].items())]), ""]

    over = results["accuracy_over_time"]
    check = results["trace_check"]
    lines += ["## Accuracy against time", "",
              "From the output layer's potentials after each step shown, recorded by libttfs's "
              "engines (the output trace, docs/C_API.md), and the readout at that step. Check: "
              f"at the last step {check['last_step_bit_identical_potentials']} of "
              f"{check['potentials']} potentials equal the run's bit for bit.", "",
              f"![accuracy vs time]({PLOT_ACCURACY})", "",
              *_md_table(["t", "accuracy"],
                         [(t, _pct(a)) for t, a in zip(over["steps"], over["accuracy"])
                          if t % 40 == 39 or t in picked]), ""]

    ref = results["reference"]
    if ref is not None:
        acc = ref["accuracy_over_time"]
        lines += [f"## Agreement with the TF reference simulator ({ref['images']} images, "
                  f"exp='tf', {ref['seconds']} s)", "",
                  f"- identical predictions: {100 * ref['identical_predictions_fraction']:.2f} % "
                  f"({ref['prediction_mismatches']} differ); accuracy libttfs "
                  f"{_pct(ref['libttfs_accuracy'])}, TF {_pct(ref['tf_accuracy'])}",
                  f"- max |output potential difference|: "
                  f"{ref['output_potentials']['max_abs_difference']:.3g} (images with identical "
                  f"spike times, {ref['output_potentials']['images_identical_spikes']}: "
                  f"{ref['output_potentials']['max_abs_difference_identical_spikes']:.3g})",
                  f"- max |output potential difference| over time, images with identical spike "
                  f"times: "
                  f"{ref['output_potentials']['max_abs_difference_over_time_identical_spikes']:.3g}",
                  f"- accuracy over time: {acc['differing_predictions']} (image, step) "
                  f"predictions differ; {acc['explained_by_spike_time_ties']} follow a spike-time"
                  f" tie, {acc['explained_by_potential_ties']} a potential tie, "
                  f"{acc['unexplained']} unexplained", "",
                  *_md_table(["layer", "identical spike times", "mismatches", "direct ties",
                              "after an earlier tie", "unexplained", "largest tie |V - vth|"],
                             [(k, f"{100 * v['identical_fraction']:.4f} %", v["mismatches"],
                               v["direct_ties"], v["after_an_earlier_tie"], v["unexplained"],
                               f"{v['largest_tie_margin']:.2g}")
                              for k, v in ref["spike_times"].items()]), "",
                  *_md_table(["t", "TF reference", "libttfs"],
                             [(t, _pct(a), _pct(b)) for t, a, b in
                              zip(acc["steps"], acc["tf_reference"], acc["libttfs"])
                              if t % 40 == 39 or t in picked or a != b]), ""]

    no_spike = results["no_output_spike"]
    lines += ["## Images without an output spike", ""]
    if no_spike["images_without_output_spike"] is None:
        lines += [no_spike["note"] + ".", ""]
    else:
        lines += [f"{no_spike['images_without_output_spike']} of {results['test_images']} images "
                  f"({_pct(no_spike['fraction'])}) had no output spike; the potential argmax "
                  f"predicted them with accuracy {_pct(no_spike['fallback_accuracy'])}.", "",
                  *_md_table(["fallback class", "images"],
                             [(c, v) for c, v in no_spike["fallback_predicted_classes"].items()
                              if v]), "",
                  f"{no_spike['images_with_simultaneous_first_spikes']} images had several "
                  f"classes fire at their first output step (the lowest index decides; "
                  f"accuracy on them {_pct(no_spike['simultaneous_first_spikes_accuracy'])}).",
                  "",
                  *_md_table(["classes firing at the first output step", "images"],
                             list(no_spike["classes_at_first_output_step_histogram"].items())),
                  ""]
    return "\n".join(lines)


def _pick_steps(integ_window: Tuple[int, int], time_steps: int,
                record_steps: np.ndarray) -> List[int]:
    """A few telling record steps: early, middle and end of the output's integration window
    (for MNIST 169, 189, 239: where the reference quoted 98.34 / 99.12 % and 'final'), and the
    last step."""
    start, end = integ_window
    wanted = [start + 9, start + 29, end - 1, time_steps - 1]
    chosen = []
    for t in wanted:
        if len(record_steps) == 0:
            break
        nearest = int(record_steps[np.argmin(np.abs(record_steps - t))])
        if nearest not in chosen:
            chosen.append(nearest)
    return chosen


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _zoom_range(over: dict, ann_accuracy: float) -> Tuple[Tuple[float, float], Tuple[int, int]]:
    """The zoomed panel's y range (in %) around the final SNN and the ANN accuracy, and its x
    range: from the first record step whose accuracy is inside that band to the last step."""
    steps = np.asarray(over["steps"])
    accuracy = 100 * np.asarray(over["accuracy"], np.float64)
    final, ann = float(accuracy[-1]), 100 * float(ann_accuracy)
    span = max(abs(final - ann), 0.1)
    low = min(final, ann) - max(2 * span, 0.3)
    high = min(max(final, ann) + max(span, 0.15), 100.05)
    inside = np.flatnonzero(accuracy >= low)
    first = int(steps[inside[0]]) if inside.size else int(steps[0])
    return (low, high), (max(first - 10, 0), int(steps[-1]) + 2)


def _plot_accuracy(path: Path, results: dict, ann_accuracy: float,
                   integ_window: Tuple[int, int]) -> None:
    """Accuracy against time: the whole run (left) and a zoom around the final accuracy
    (right), where the SNN and the ANN actually differ."""
    plt = _pyplot()
    over = results["accuracy_over_time"]
    steps = over["steps"]
    accuracy = [100 * a for a in over["accuracy"]]
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    start, end = integ_window
    for axis in (ax, zoom):
        axis.plot(steps, accuracy, marker=".",
                  label=f"SNN (libttfs, {results['test_images']} images), final "
                        f"{accuracy[-1]:.2f} %")
        axis.axhline(100 * ann_accuracy, color="black", linestyle="--",
                     label=f"ANN {100 * ann_accuracy:.2f} %")
        axis.axvspan(start, end, color="tab:orange", alpha=0.12,
                     label=f"output integration window [{start}, {end})")
        axis.set_xlabel("time step t")
        axis.grid(alpha=0.3)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy against time ({results['readout']} readout)")
    ax.set_ylim(0, 100.5)
    ax.legend(loc="lower right", fontsize=8)
    (low, high), (left, right) = _zoom_range(over, ann_accuracy)
    zoom.set_ylim(low, high)
    zoom.set_xlim(left, right)
    zoom.set_title(f"Zoom: SNN {accuracy[-1]:.2f} % vs ANN {100 * ann_accuracy:.2f} % "
                   f"({accuracy[-1] - 100 * ann_accuracy:+.2f} points)", fontsize=10)
    ax.indicate_inset_zoom(zoom, edgecolor="gray")  # the zoomed region, drawn on the left
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def firing_layers(results: dict, neuron_layers: Sequence[str], output_name: str) -> List[str]:
    """The neuron layers that can fire: not the output layer under vmem readout (it never
    fires), not a layer whose fire window is empty."""
    hist = results["first_spike_histograms"]
    return [name for name in neuron_layers
            if not (name == output_name and results["readout"] == "vmem")
            and hist[name]["window"][1] > hist[name]["window"][0]]


def _plot_histograms(path: Path, results: dict, neuron_layers: Sequence[str],
                     output_name: str) -> None:
    """First-spike times per layer, one panel per layer that can fire."""
    plt = _pyplot()
    hist = results["first_spike_histograms"]
    n = results["test_images"]
    layers = firing_layers(results, neuron_layers, output_name)
    silent = [name for name in neuron_layers if name not in layers]
    fig, axes = plt.subplots(max(len(layers), 1), 1, figsize=(7, 2.1 * max(len(layers), 1) + 0.4),
                             squeeze=False)
    for ax, name in zip(axes[:, 0], layers):
        start, end = hist[name]["window"]
        counts = np.asarray(hist[name]["counts"])
        ax.bar(np.arange(start, end), counts[start:end] / n, width=1.0)
        ax.set_title(f"{name}: {results['spikes_per_image'][name]:.1f} spikes/image, "
                     f"fire window [{start}, {end})", fontsize=9)
        ax.set_ylabel("spikes / image")
    axes[-1, 0].set_xlabel("first-spike time step")
    if silent:
        fig.suptitle("not shown (cannot fire): " + ", ".join(
            f"{name}" + (" (output, vmem readout)" if name == output_name else
                         " (empty fire window)") for name in silent), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_spikes(path: Path, results: dict, neuron_layers: Sequence[str]) -> None:
    plt = _pyplot()
    values = [results["spikes_per_image"][name] for name in neuron_layers]
    x = np.arange(len(neuron_layers))
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(x - 0.2, values, width=0.4, label="this model (libttfs)")
    for bar, v in zip(bars, values):
        ax.annotate(f"{v:.0f}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                    va="bottom", fontsize=8)
    reference_spikes = (results.get("reference_run") or {}).get("spikes_per_image", {})
    reference = [reference_spikes.get(name, np.nan) for name in neuron_layers]
    if any(np.isfinite(reference)):
        ax.bar(x + 0.2, reference, width=0.4, hatch="//", alpha=0.6,
               label="TF reference run (docs/ALGORITHM.md 9)")
    ax.set_xticks(x, neuron_layers)
    ax.set_ylabel("spikes per image")
    ax.set_title(f"Spikes per image ({results['test_images']} test images); hidden total "
                 f"{results['hidden_spikes_per_image']:.0f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

