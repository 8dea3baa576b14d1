"""Throughput of the CPU engines against TensorFlow, as ratios measured in one run.

Not part of the default test run (files named bench_*.py are not collected). One command runs
the benchmarks (python_files makes pytest collect this file):

    TTFS_LIBRARY=build/libttfs.so .venv/bin/python -m pytest tests/bench/bench_engines.py \\
        -o python_files='bench_*.py' -p no:cacheprovider --benchmark-json=bench.json

and ``.venv/bin/python tests/bench/report.py`` runs that and writes docs/BENCHMARKS.md.

What is measured, on the MNIST test images (uint8, as a user passes them), with a trained
model (models/mnist.ttfs, the committed MNIST model, or $TTFS_BENCH_MODEL):

- libttfs CPU backend, stepped and analytic engines, at batch 1, 100 and 10 000, all cores
  (the session's default thread count); a round runs several batches for the small sizes;
- the TensorFlow reference simulator (export.tf_reference: Simulator.run, the body of
  simulate(), compiled once and warmed up) on 200 images, reported per image;
- Keras model.predict of the same network as an ANN (export.keras_model.reference_cnn; the
  weights do not matter for speed) on the 10 000 images at batch_size 10 000, and at Keras's
  default batch_size 32 for comparison.

Every throughput is images / median round time; comparisons are ratios of throughputs of this
run. Other jobs on a shared machine do not slow every benchmark alike, so the target ratios are
measured once more with the contenders taking turns round by round (test_interleaved_ratios).
The last tests check that the engines were bit-identical on the benchmark batch and print the
ratios against the targets.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pyttfs = pytest.importorskip("pyttfs")

DEFAULT_MODEL = ROOT / "models" / "mnist.ttfs"
ENGINE_BATCHES = (1, 100, 10_000)
IMAGES_PER_ROUND = {1: 300, 100: 2_000, 10_000: 10_000}  # a round runs this many images
ROUNDS = {"stepped": 3, "analytic": 5}
TF_REFERENCE_IMAGES = 200
KERAS_BATCHES = (10_000, 32)
IDENTITY_SPIKE_TIME_IMAGES = 1_000  # spike times of all layers are compared on these

# Targets (the task's): analytic at batch 10 000 against the others, same run.
TARGETS = (
    ("analytic_10000", "tf_reference", 300.0,
     "analytic engine, batch 10 000 vs the TensorFlow reference simulator"),
    ("analytic_10000", "keras_10000", 1.0,
     "analytic engine, batch 10 000 vs Keras model.predict, batch_size 10 000"),
)

# Median images/s of every benchmark of this run, by name (filled as the benchmarks run).
THROUGHPUT: dict = {}
INTERLEAVED_ROUNDS = 5
SETTLE_SECONDS = 0.5


def images_per_second(benchmark, images: int) -> float:
    rate = images / benchmark.stats.stats.median
    benchmark.extra_info["images_per_round"] = images
    benchmark.extra_info["images_per_second"] = rate
    return rate


def ratio_lines(throughput: dict) -> list:
    """(description, ratio, target, met) for each target whose two throughputs are known."""
    rows = []
    for mine, theirs, target, what in TARGETS:
        if mine in throughput and theirs in throughput:
            ratio = throughput[mine] / throughput[theirs]
            rows.append((what, ratio, target, ratio >= target))
    return rows


def interleaved_lines(extra_info: dict) -> list:
    """The same, from test_interleaved_ratios: the median over rounds of each round's ratio."""
    rows = []
    for mine, theirs, target, what in TARGETS:
        rounds = extra_info.get(f"ratio_{theirs}")
        if rounds:
            ratio = float(np.median(rounds))
            rows.append((what, ratio, target, ratio >= target, min(rounds), max(rounds)))
    return rows


# ---- Fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_path():
    path = Path(os.environ.get("TTFS_BENCH_MODEL", DEFAULT_MODEL))
    if not path.is_file():
        pytest.skip(f"no model at {path}: train one (python -m export all) and set "
                    "TTFS_BENCH_MODEL to its model.ttfs")
    return path


@pytest.fixture(scope="module")
def model(model_path):
    with pyttfs.Model(model_path) as m:
        yield m


@pytest.fixture(scope="module")
def images():
    from export.datasets import load_mnist

    test = load_mnist().test.images
    assert len(test) >= max(ENGINE_BATCHES), "the benchmark needs 10 000 test images"
    return np.ascontiguousarray(test[:max(ENGINE_BATCHES)]).reshape(-1, 28, 28, 1)


@pytest.fixture(scope="module")
def engine_results():
    """The analytic and stepped results on the batch-10 000 benchmark batch."""
    return {}


# ---- libttfs CPU engines ---------------------------------------------------------------------

@pytest.mark.parametrize("batch", ENGINE_BATCHES)
@pytest.mark.parametrize("engine", ("stepped", "analytic"))
def test_cpu_engine(benchmark, model, images, engine, batch, engine_results):
    total = IMAGES_PER_ROUND[batch]
    with model.session(backend="cpu", engine=engine, max_batch=batch) as session:
        batches = [images[lo:lo + batch] for lo in range(0, total, batch)]

        def run_round():
            result = None
            for chunk in batches:
                result = session.run(chunk)
            return result

        run_round()  # warm-up: first touch of the workspaces and result buffers
        benchmark.group = "libttfs CPU"
        benchmark.extra_info.update(engine=engine, batch=batch, threads="all cores")
        result = benchmark.pedantic(run_round, rounds=ROUNDS[engine], iterations=1)
        THROUGHPUT[f"{engine}_{batch}"] = images_per_second(benchmark, total)
        if batch == max(ENGINE_BATCHES):
            engine_results[engine] = result


# The analytic engine at batch 10 000 in two other settings: recording every layer's spike
# times (which turns off the certified layer + `earliest` pool shortcut), and with every
# potential formed exactly (TTFS_CERTIFY=off, read when the session is created: the event-driven
# engine without certified sums). docs/ENGINES.md, "Certified sums".
ANALYTIC_VARIANTS = {
    "recording": ("records spike times", {}, True),
    "exact": ("TTFS_CERTIFY=off", {"TTFS_CERTIFY": "off"}, False),
}


@pytest.mark.parametrize("variant", sorted(ANALYTIC_VARIANTS))
def test_cpu_analytic_variant(benchmark, model, images, variant, monkeypatch):
    what, environment, record = ANALYTIC_VARIANTS[variant]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    batch = max(ENGINE_BATCHES)
    with model.session(backend="cpu", engine="analytic", max_batch=batch,
                       record_spike_times=record) as session:
        session.run(images[:batch])  # warm-up
        benchmark.group = "libttfs CPU"
        benchmark.extra_info.update(engine="analytic", batch=batch, variant=what)
        benchmark.pedantic(lambda: session.run(images[:batch]), rounds=3, iterations=1)
    THROUGHPUT[f"analytic_{batch}_{variant}"] = images_per_second(benchmark, batch)


# ---- TensorFlow ------------------------------------------------------------------------------

def test_tf_reference(benchmark, model_path, images):
    from export import tf_reference
    from export.ttfs_format import read_model

    batch = images[:TF_REFERENCE_IMAGES]
    simulator = tf_reference.Simulator(read_model(model_path))
    simulator.run(batch, progress=False)  # warm-up: traces and compiles the step functions
    benchmark.group = "TensorFlow"
    benchmark.extra_info.update(what="export.tf_reference Simulator.run", images=len(batch))
    benchmark.pedantic(lambda: simulator.run(batch, progress=False), rounds=3, iterations=1)
    THROUGHPUT["tf_reference"] = images_per_second(benchmark, len(batch))


@pytest.mark.parametrize("batch_size", KERAS_BATCHES)
def test_keras_predict(benchmark, images, batch_size):
    from export.datasets import to_float32
    from export.keras_model import reference_cnn

    ann = reference_cnn(seed=0)
    x = to_float32(images).reshape(-1, 28, 28, 1)
    ann.predict(x[:batch_size], batch_size=batch_size, verbose=0)  # warm-up: builds the graph
    benchmark.group = "TensorFlow"
    benchmark.extra_info.update(what="Keras model.predict, reference CNN", batch_size=batch_size)
    benchmark.pedantic(lambda: ann.predict(x, batch_size=batch_size, verbose=0), rounds=5,
                       iterations=1)
    THROUGHPUT[f"keras_{batch_size}"] = images_per_second(benchmark, len(x))


def test_interleaved_ratios(benchmark, model, model_path, images):
    """The target comparisons once more, with the contenders taking turns: each round times
    the analytic engine on the 10 000 images, Keras predict on them (batch_size 10 000) and
    the TF reference simulator on 200, one after the other (half a second apart), so that a
    round's three timings see the same load on a shared machine. The ratios are formed per round; extra_info keeps
    them (ratio_tf_reference, ratio_keras_10000) for report.py, which reports their median."""
    import time

    from export import tf_reference
    from export.datasets import to_float32
    from export.keras_model import reference_cnn
    from export.ttfs_format import read_model

    simulator = tf_reference.Simulator(read_model(model_path))
    tf_batch = images[:TF_REFERENCE_IMAGES]
    ann = reference_cnn(seed=0)
    x = to_float32(images).reshape(-1, 28, 28, 1)
    rounds = {"analytic_10000": [], "tf_reference": [], "keras_10000": []}
    with model.session(backend="cpu", engine="analytic", max_batch=len(images)) as session:
        contenders = (("analytic_10000", len(images), lambda: session.run(images)),
                      ("keras_10000", len(x), lambda: ann.predict(x, batch_size=len(x), verbose=0)),
                      ("tf_reference", len(tf_batch), lambda: simulator.run(tf_batch, progress=False)))
        for _, _, run in contenders:
            run()  # warm-up

        def one_round():
            for name, count, run in contenders:
                # TensorFlow's worker threads spin for a while after their work is done: let
                # them settle, so that no contender starts on a busy machine.
                time.sleep(SETTLE_SECONDS)
                start = time.perf_counter()
                run()
                rounds[name].append(count / (time.perf_counter() - start))

        benchmark.group = "interleaved (one round = all three)"
        benchmark.pedantic(one_round, rounds=INTERLEAVED_ROUNDS, iterations=1)
    mine = rounds["analytic_10000"]
    for theirs in ("tf_reference", "keras_10000"):
        benchmark.extra_info[f"ratio_{theirs}"] = [a / b for a, b in zip(mine, rounds[theirs])]
    benchmark.extra_info["images_per_second"] = {k: float(np.median(v)) for k, v in rounds.items()}
    benchmark.extra_info["load_average"] = list(os.getloadavg())
    for what, ratio, target, met, low, high in interleaved_lines(benchmark.extra_info):
        print(f"interleaved: {what}: median {ratio:.2f} x over {INTERLEAVED_ROUNDS} rounds "
              f"({low:.2f} .. {high:.2f}); target >= {target:g} x: {'met' if met else 'NOT met'}")


# ---- Checks on this run ----------------------------------------------------------------------

def test_benchmark_batch_is_bit_identical(model, images, engine_results):
    """The engines that were timed agree bit for bit on the timed batch: predictions and
    output potentials of all 10 000 images, spike counts of every neuron layer, and the
    first-spike times of every neuron layer on the first 1 000 images."""
    if set(engine_results) != {"stepped", "analytic"}:
        pytest.skip("needs both batch-10 000 engine benchmarks of this run")
    stepped, analytic = engine_results["stepped"], engine_results["analytic"]
    np.testing.assert_array_equal(analytic.predictions, stepped.predictions)
    np.testing.assert_array_equal(analytic.potentials.view(np.uint32),
                                  stepped.potentials.view(np.uint32))
    few = images[:IDENTITY_SPIKE_TIME_IMAGES]
    neuron_layers = [layer.name for layer in model.layers if layer.has_neurons]
    recorded = {}
    for engine in ("stepped", "analytic"):
        with model.session(backend="cpu", engine=engine, max_batch=len(images)) as session:
            session.run(images)  # spike counts are always recorded
            counts = {name: session.spike_counts(name) for name in neuron_layers}
        # Spike times of 10 000 images would take about half a gigabyte: the first 1 000.
        with model.session(backend="cpu", engine=engine, max_batch=len(few),
                           record_spike_times=True) as session:
            session.run(few)
            times = {name: session.spike_times(name) for name in neuron_layers}
        recorded[engine] = (counts, times)
    for name in neuron_layers:
        np.testing.assert_array_equal(recorded["analytic"][0][name], recorded["stepped"][0][name],
                                      err_msg=f"spike counts of layer {name}")
        np.testing.assert_array_equal(recorded["analytic"][1][name], recorded["stepped"][1][name],
                                      err_msg=f"spike times of layer {name}")


def test_ratios_against_targets():
    """Prints this run's ratios (with -s or -rP); fails only if a ratio could not be formed."""
    rows = ratio_lines(THROUGHPUT)
    if not rows:
        pytest.skip("needs the analytic batch-10 000, TF reference and Keras benchmarks")
    for what, ratio, target, met in rows:
        print(f"{what}: {ratio:.1f} x (target >= {target:g} x: {'met' if met else 'NOT met'})")
