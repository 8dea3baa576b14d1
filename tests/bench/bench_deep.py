"""The deep network's speed: libttfs's analytic engine against Keras predict of the same ANN.

    TTFS_LIBRARY=build/libttfs.so .venv/bin/python tests/bench/bench_deep.py \\
        [--rounds 5] [--write docs/BENCHMARKS.md]

Not part of the default test run (a plain script, a few minutes). The model is the committed
Fashion-MNIST VGG-style network (models/fashion-mnist.ttfs: six 3x3 convolutions, three max
pools, two dense layers; 8 neuron layers after the input), or $TTFS_BENCH_DEEP_MODEL; the images
are the 10 000 Fashion-MNIST test images (uint8, as a user passes them; the Debian package
dataset-fashion-mnist, or $TTFS_FASHION_MNIST_DIR).

Contenders, each once per round, in turn (half a second apart, so that a round's timings see
the same load on a shared machine):

- libttfs CPU backend, analytic engine, batch 10 000, all cores (the session's default);
- Keras model.predict of the same network as an ANN (export.keras_model.vgg_cnn with the
  model's layout; the weights do not matter for speed), batch_size 10 000;
- the analytic engine on one thread, batch 10 000;
- the TF reference simulator (export.tf_reference) on 20 images, per image;
- the stepped engine on 500 images, per image.

Ratios are formed within a round; the table gives the median and range over the rounds. The
stepped and analytic engines are checked bit for bit on 1 000 of the images (predictions,
output potentials, spike counts of every layer). --write puts the run into the "Deep network"
section of docs/BENCHMARKS.md (tests/bench/report.py keeps that section when it regenerates
the rest).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pyttfs  # noqa: E402

MODEL = Path(os.environ.get("TTFS_BENCH_DEEP_MODEL", ROOT / "models" / "fashion-mnist.ttfs"))
MARKER = "<!-- deep-network: written by tests/bench/bench_deep.py -->"
END_MARKER = "<!-- end of deep-network -->"
COMMAND = ("TTFS_LIBRARY=build/libttfs.so .venv/bin/python tests/bench/bench_deep.py "
           "--write docs/BENCHMARKS.md")
BATCH = 10_000
TF_IMAGES = 20
STEPPED_IMAGES = 500
IDENTITY_IMAGES = 1_000
SETTLE_SECONDS = 0.5


def median_range(values, digits=2) -> str:
    return (f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f} .. "
            f"{max(values):.{digits}f})")


def keras_twin(spec):
    """The Keras ANN with the model file's layout: VGG-style 3x3 SAME convolutions with batch
    norm, 2x2 pools, dense layers (checked against the file's layer shapes)."""
    from export.keras_model import vgg_cnn

    layout, dense = [], []
    kinds = [layer.kind for layer in spec.layers]
    for layer in spec.layers[1:]:
        if layer.kind == "conv2d":
            if tuple(layer.kernel) != (3, 3) or layer.padding != "same":
                raise SystemExit(f"{MODEL}: layer '{layer.name}' is not a 3x3 SAME convolution; "
                                 "this benchmark times VGG-style models")
            layout.append(str(layer.out_shape[2]))
        elif layer.kind == "maxpool":
            layout.append("M")
        elif layer.kind == "dense":
            dense.append(int(layer.out_shape[2]))
    shape = tuple(int(v) for v in spec.layers[0].out_shape)
    model = vgg_cnn(shape, dense[-1], layout=",".join(layout), dense=dense[:-1], seed=0)
    keras_params = sum(int(np.prod(layer.kernel.shape)) for layer in model.layers
                       if type(layer).__name__ in ("Conv2D", "Dense"))  # kernels: no biases
    file_params = sum(int(np.prod(layer.weights.shape)) for layer in spec.layers
                      if layer.weights is not None)
    assert keras_params == file_params, (keras_params, file_params, kinds)
    return model, ",".join(layout), dense


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, help="put the run into this Markdown file")
    args = parser.parse_args(argv)

    from export import tf_reference
    from export.datasets import load_dataset, to_float32
    from export.ttfs_format import read_model

    if not MODEL.is_file():
        raise SystemExit(f"no model at {MODEL}: set TTFS_BENCH_DEEP_MODEL")
    spec = read_model(MODEL)
    images = np.ascontiguousarray(load_dataset("fashion-mnist").test.images[:BATCH])
    ann, layout, dense = keras_twin(spec)
    x = to_float32(images)
    simulator = tf_reference.Simulator(spec)
    tf_batch = images[:TF_IMAGES]
    few = images[:STEPPED_IMAGES]

    times = {key: [] for key in ("analytic", "keras", "analytic_1", "tf", "stepped")}
    loads = []
    with pyttfs.Model(MODEL) as model, \
            model.session(backend="cpu", engine="analytic", max_batch=BATCH) as analytic, \
            model.session(backend="cpu", engine="analytic", max_batch=BATCH,
                          threads=1) as analytic_1, \
            model.session(backend="cpu", engine="stepped", max_batch=STEPPED_IMAGES) as stepped:
        contenders = (("analytic", len(images), lambda: analytic.run(images)),
                      ("keras", len(x), lambda: ann.predict(x, batch_size=len(x), verbose=0)),
                      ("analytic_1", len(images), lambda: analytic_1.run(images)),
                      ("tf", len(tf_batch), lambda: simulator.run(tf_batch, progress=False)),
                      ("stepped", len(few), lambda: stepped.run(few)))
        for _, _, run in contenders:
            run()  # warm-up
        for index in range(args.rounds):
            loads.append(os.getloadavg())
            for name, count, run in contenders:
                time.sleep(SETTLE_SECONDS)  # TensorFlow's threads spin a while after work
                start = time.perf_counter()
                run()
                times[name].append(count / (time.perf_counter() - start))
            print(f"round {index + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s"
                                                      for k, v in times.items()), flush=True)
        # bit identity of the two engines on the benchmark's images
        names = [layer.name for layer in model.layers if layer.has_neurons]
        results = {}
        for engine in ("stepped", "analytic"):
            with model.session(backend="cpu", engine=engine, max_batch=IDENTITY_IMAGES) as s:
                r = s.run(images[:IDENTITY_IMAGES])
                results[engine] = (r.predictions.copy(), r.potentials.copy(),
                                   {n: s.spike_counts(n).copy() for n in names})
        identical = (np.array_equal(results["stepped"][0], results["analytic"][0])
                     and results["stepped"][1].tobytes() == results["analytic"][1].tobytes()
                     and all(np.array_equal(results["stepped"][2][n], results["analytic"][2][n])
                             for n in names))
        spikes = {n: float(results["analytic"][2][n].mean()) for n in names}

    ratios = {
        "keras": [a / k for a, k in zip(times["analytic"], times["keras"])],
        "tf": [a / t for a, t in zip(times["analytic"], times["tf"])],
        "stepped": [a / s for a, s in zip(times["analytic"], times["stepped"])],
    }
    text = render(args, spec, layout, dense, times, ratios, loads, identical, spikes)
    print(text)
    if args.write:
        write_section(args.write, text)
        print(f"wrote the deep-network section of {args.write}")
    return 0 if identical else 1


def render(args, spec, layout, dense, times, ratios, loads, identical, spikes) -> str:
    from importlib import metadata

    rows = [("libttfs analytic, batch 10 000, all cores", "analytic"),
            ("Keras model.predict (the same network as an ANN), batch_size 10 000", "keras"),
            ("libttfs analytic, batch 10 000, 1 thread", "analytic_1"),
            (f"TF reference simulator (export.tf_reference), {TF_IMAGES} images", "tf"),
            (f"libttfs stepped, batch {STEPPED_IMAGES}, all cores", "stepped")]
    depth = max(layer.depth for layer in spec.layers)
    keras_rate = statistics.median(times["keras"])
    analytic_rate = statistics.median(times["analytic"])
    lines = [
        f"### Run of {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}: {args.rounds} rounds",
        "",
        f"`{MODEL.relative_to(ROOT) if MODEL.is_relative_to(ROOT) else MODEL}`: conv layout "
        f"{layout}, dense {dense}; {depth} neuron layers after the input, {spec.time_steps} "
        f"time steps. {_cpu()}, {os.cpu_count()} logical CPUs, load average "
        f"{', '.join(f'{load[0]:.1f}' for load in loads)} at the start of each round; "
        f"tensorflow {metadata.version('tensorflow-cpu') if _has('tensorflow-cpu') else '?'}, "
        f"Python {platform.python_version()}.",
        "",
        "| contender | images/s, median (range over rounds) |",
        "|---|---|",
        *[f"| {label} | {median_range(times[key], 0)} |" for label, key in rows],
        "",
        "| ratio, formed within each round | median (range) | target |",
        "|---|---|---|",
        f"| analytic / Keras predict, batch 10 000 | {median_range(ratios['keras'])} x | >= 1 x: "
        f"{'met' if statistics.median(ratios['keras']) >= 1.0 else 'NOT met'} |",
        f"| analytic / TF reference simulator | {median_range(ratios['tf'], 0)} x | |",
        f"| analytic / stepped | {median_range(ratios['stepped'], 1)} x | |",
        "",
        f"Stepped and analytic engines bit-identical on {IDENTITY_IMAGES} of these images "
        f"(predictions, output potentials, spike counts of every layer): "
        f"{'yes' if identical else 'NO'}. Spikes per image (analytic, those images): "
        + ", ".join(f"{k} {v:.0f}" for k, v in spikes.items()) + ".",
        "",
        f"At the median, Keras predict runs the ANN at {keras_rate:.0f} images/s and the "
        f"analytic engine the SNN at {analytic_rate:.0f}.",
    ]
    return "\n".join(lines) + "\n"


def _cpu() -> str:
    """The CPU model and whether it has AVX-512 (the analytic engine's kernels use it)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    return f"{model} ({'AVX-512' if 'avx512f' in flags else 'no AVX-512'})"


def _has(package: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(package)
        return True
    except metadata.PackageNotFoundError:
        return False


HEADER = f"""{MARKER}
## Deep network: the Fashion-MNIST VGG-style model

Written by `tests/bench/bench_deep.py` (the latest run replaces the previous one):

    {COMMAND}

The committed `models/fashion-mnist.ttfs` (docs/RESULTS.md, "Fashion-MNIST results") on the 10 000
Fashion-MNIST test images, uint8. Contenders in turn, once per round; ratios formed within a
round. Keras predict runs the same network as an ANN (its batch norms unfused, as a user has it).
"""


def write_section(path: Path, run: str) -> None:
    """Replace the section between MARKER and END_MARKER (or add it before the Ray Data
    section, or at the end), keeping the hand-written notes that follow END_MARKER's
    section-notes marker if any."""
    text = path.read_text() if path.exists() else ""
    notes = ""
    if MARKER in text:
        start = text.index(MARKER)
        end = text.index(END_MARKER) + len(END_MARKER) if END_MARKER in text else len(text)
        old = text[start:end]
        if "<!-- notes -->" in old:
            notes = old[old.index("<!-- notes -->"):old.index(END_MARKER)
                        if END_MARKER in old else len(old)].rstrip("\n") + "\n\n"
        text = text[:start] + text[end:].lstrip("\n")
    section = HEADER + "\n" + run + "\n" + notes + END_MARKER + "\n"
    ray = "<!-- ray-data:"
    if ray in text:
        index = text.index(ray)
        text = text[:index].rstrip("\n") + "\n\n" + section + "\n" + text[index:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
