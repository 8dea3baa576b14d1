"""Scaling of pyttfs.ray against a plain pyttfs Session, measured in one run.

    TTFS_LIBRARY=build/libttfs.so .venv/bin/python tests/bench/bench_ray.py \\
        [--images 200000] [--rounds 3] [--batch-size 1024] [--write docs/BENCHMARKS.md]

Not part of the default test run (a plain script, a few minutes). The MNIST test set (10 000
images) is repeated to --images images, held as uint8 arrays, and run on the CPU backend's
analytic engine, in turn, round after round, by:

- a plain Session (the baseline), 1 thread and 2 threads, batch by batch over the images;
- pyttfs.ray.predict on a local Ray with this machine's CPUs: 1 worker x 1 thread, 2 workers x
  1 thread, 1 worker x 2 threads; the input already in Ray's object store (pyttfs.ray.from_arrays,
  timed once, apart), the results materialized there (no images in them);

Each Ray run also records, inside its workers, when the first batch started and the time spent
in Session.run and in the whole predictor call, so the wall time splits into: the job's
start-up, the engine, the predictor's own work (stacking images, building the output columns),
and Ray Data's streaming (scheduling, moving blocks between the object store and the workers and
converting them to and from numpy batches).
Ratios are formed within each round; the table gives the median and range over the rounds.
--write adds the run to the "Ray Data" section of docs/BENCHMARKS.md (tests/bench/report.py keeps
that section when it regenerates the rest).
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

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402

import pyttfs  # noqa: E402
import pyttfs.ray as pray  # noqa: E402

MODEL = ROOT / "models" / "mnist.ttfs"
MARKER = "<!-- ray-data: written by tests/bench/bench_ray.py -->"
COMMAND = ("TTFS_LIBRARY=build/libttfs.so .venv/bin/python tests/bench/bench_ray.py "
           "--write docs/BENCHMARKS.md")
RAY_CONFIGS = ((1, 1), (2, 1), (1, 2))  # (workers, threads per worker)


class TimedPredictor(pray.Predictor):
    """The predictor, plus three columns for this benchmark: the worker's pid and, spread
    evenly over the batch's rows, the seconds spent in Session.run and in the whole call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        run = self.session.run
        self.run_seconds = 0.0

        def timed_run(images):
            started = time.perf_counter()
            try:
                return run(images)
            finally:
                self.run_seconds += time.perf_counter() - started

        self.session.run = timed_run

    def __call__(self, batch):
        clock, started, self.run_seconds = time.time(), time.perf_counter(), 0.0
        out = super().__call__(batch)
        n = len(out["prediction"])
        out["call_seconds"] = np.full(n, (time.perf_counter() - started) / n)
        out["run_seconds"] = np.full(n, self.run_seconds / n)
        out["worker"] = np.full(n, os.getpid())
        out["call_start"] = np.full(n, clock)  # wall clock: the driver's, on one machine
        return out


def plain(images: np.ndarray, threads: int, batch: int) -> tuple:
    """Seconds for a plain session over all images, and its predictions."""
    with pyttfs.Model(MODEL) as model, model.session(backend="cpu", max_batch=batch,
                                                     threads=threads) as session:
        predictions = np.empty(len(images), np.int32)
        started = time.perf_counter()
        for start in range(0, len(images), batch):
            predictions[start:start + batch] = session.run(images[start:start + batch]).predictions
        return time.perf_counter() - started, predictions


def on_ray(dataset, workers: int, threads: int, batch: int) -> dict:
    """One pyttfs.ray job: wall seconds, and the per-worker seconds recorded inside it."""
    data = MODEL.read_bytes()
    clock, started = time.time(), time.perf_counter()
    results = dataset.map_batches(
        TimedPredictor, fn_constructor_kwargs=dict(model=data, backend="cpu", threads=threads,
                                                   max_batch=batch, keep_images=False),
        batch_size=batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads).materialize()
    wall = time.perf_counter() - started
    columns = {}
    for part in results.iter_batches(batch_format="numpy", batch_size=None):
        for name in ("index", "prediction", "run_seconds", "call_seconds", "worker",
                     "call_start"):
            columns.setdefault(name, []).append(part[name])
    columns = {name: np.concatenate(values) for name, values in columns.items()}
    order = np.argsort(columns["index"])
    busiest = max(columns["call_seconds"][columns["worker"] == pid].sum()
                  for pid in np.unique(columns["worker"]))
    return dict(wall=wall, predictions=columns["prediction"][order], images=len(order),
                run=columns["run_seconds"].sum() / workers,
                call=columns["call_seconds"].sum() / workers, busiest=busiest,
                startup=columns["call_start"].min() - clock)


def median_range(values) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f} .. {max(values):.2f})"


def rate(images: int, seconds) -> str:
    return f"{images / statistics.median(seconds):,.0f}".replace(",", " ")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--write", type=Path, default=None,
                        help="add this run to the Ray Data section of this Markdown file")
    parser.add_argument("--replace", action="store_true",
                        help="with --write: drop the runs already there")
    args = parser.parse_args(argv)

    from export.datasets import load_mnist

    test = load_mnist().test.images
    with pyttfs.Model(MODEL) as model:
        test = test.reshape(len(test), *model.input_shape)
    repeats = -(-args.images // len(test))
    images = np.ascontiguousarray(np.concatenate([test] * repeats)[:args.images])
    batch = args.batch_size
    print(f"{len(images)} images ({repeats} x the MNIST test set), batch {batch}", flush=True)

    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    init_seconds = time.perf_counter() - started
    ray.data.DataContext.get_current().enable_progress_bars = False
    started = time.perf_counter()
    dataset = pray.from_arrays(images)
    put_seconds = time.perf_counter() - started
    print(f"ray.init: {init_seconds:.1f} s; from_arrays (into the object store): "
          f"{put_seconds:.2f} s", flush=True)

    times = {key: [] for key in ["plain 1", "plain 2"]
             + [f"ray {w}x{t}" for w, t in RAY_CONFIGS]}
    splits = {f"ray {w}x{t}": [] for w, t in RAY_CONFIGS}
    loads = []
    for round_index in range(args.rounds):
        loads.append(os.getloadavg())
        for threads in (1, 2):
            seconds, expected = plain(images, threads, batch)
            times[f"plain {threads}"].append(seconds)
        for workers, threads in RAY_CONFIGS:
            key = f"ray {workers}x{threads}"
            job = on_ray(dataset, workers, threads, batch)
            if not np.array_equal(job["predictions"], expected) or job["images"] != len(images):
                raise SystemExit(f"{key}: the predictions differ from the plain session's")
            times[key].append(job["wall"])
            splits[key].append(job)
        print(f"round {round_index + 1}: " + ", ".join(f"{key} {values[-1]:.2f} s"
                                                        for key, values in times.items()),
              flush=True)

    text = render(args, len(images), repeats, batch, init_seconds, put_seconds, times, splits,
                  loads)
    print(text)
    if args.write:
        write_section(args.write, text, args.replace)
        print(f"added the run to the Ray Data section of {args.write}")
    ray.shutdown()
    return 0


HEADER = f"""{MARKER}
## Ray Data: pyttfs.ray against a plain session

Written by `tests/bench/bench_ray.py`, one subsection per run (`--write` adds a run, `--replace`
starts the section again):

    {COMMAND}

The MNIST test set repeated, uint8, through `models/mnist.ttfs` on the CPU backend's analytic
engine. Contenders, every one once per round, in turn: a plain `Session` (1 and 2 threads,
batch by batch) and `pyttfs.ray` jobs on a local Ray with this machine's CPUs (1 worker x 1
thread, 2 workers x 1 thread, 1 worker x 2 threads), whose input is put into Ray's object store
once beforehand (`pyttfs.ray.from_arrays`, timed apart) and whose results are materialized there.
Each job's predictions are checked against the plain session's. Ratios are formed within a round
(a Ray job against the plain session with as many threads); the tables give the median and the
range over the rounds. The machine is shared with other jobs: absolute rates move with its load.

Where a job's time goes: inside the workers, each batch records the seconds spent in
`Session.run` and in the whole predictor call (per worker: the sum over its batches, averaged
over the workers). What is left of the wall time beyond the busiest worker's calls is Ray Data:
the job's start-up (from the call that starts the job to the first batch entering a worker:
actors created, the model loaded, the first block moved) and the rest, streaming: moving blocks
between the object store and the workers, converting them to and from numpy batches,
scheduling each batch and collecting the results.

Reading the tables: on one machine, Ray's costs are a start-up per job and a streaming cost per
batch, neither of which grows with the engine's work per image; the predictor's own work
(stacking rows, building the output columns) is negligible. So their share of a job shrinks as the job grows and grows as
the engine gets faster: on a machine busy with other work, where the engine itself runs several
times slower than on a quiet one, the ratios flatter Ray. Serialisation is part of the streaming
column: the input blocks (Arrow tensors, 784 bytes an image) sit in the object store's shared
memory on the same machine, and each result row (index, prediction, 10 potentials) is about 50
bytes; on a cluster, blocks also cross the network.
"""


def render(args, n, repeats, batch, init_seconds, put_seconds, times, splits, loads) -> str:
    baseline = {1: times["plain 1"], 2: times["plain 2"]}
    rows = [("plain Session, 1 thread", "plain 1", None),
            ("plain Session, 2 threads", "plain 2", None)]
    rows += [(f"pyttfs.ray, {w} worker{'s' if w > 1 else ''} x {t} thread{'s' if t > 1 else ''}",
              f"ray {w}x{t}", w * t) for w, t in RAY_CONFIGS]
    spaced = f"{n:,}".replace(",", " ")
    lines = [
        f"### Run of {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}: {spaced} images, "
        f"batches of {batch}, {args.rounds} rounds",
        "",
        f"{spaced} images ({repeats} x the test set, {n * 784 / 1e6:.0f} MB); "
        f"{os.cpu_count()} logical CPUs, load average "
        f"{', '.join(f'{load[0]:.1f}' for load in loads)} at the start of each round; ray "
        f"{ray.__version__}, Python {platform.python_version()}. `ray.init`: {init_seconds:.1f} s; "
        f"`from_arrays` into the object store: {put_seconds:.2f} s.",
        "",
        "| contender | images/s (median) | seconds per round (median, range) | "
        "Ray / plain with as many threads, per round |",
        "|---|---|---|---|",
    ]
    for label, key, cpus in rows:
        if cpus is None:
            ratio = "baseline"
        else:
            ratios = [p / r for p, r in zip(baseline[cpus], times[key])]
            ratio = f"{median_range(ratios)} x"
        lines.append(f"| {label} | {rate(n, times[key])} | {median_range(times[key])} | {ratio} |")
    lines += [
        "",
        "| job (medians, seconds) | wall | Session.run | rest of the predictor call | "
        "Ray Data: start-up | Ray Data: streaming |",
        "|---|---|---|---|---|---|",
    ]
    for label, key, _ in rows[2:]:
        jobs = splits[key]
        wall = statistics.median(j["wall"] for j in jobs)
        run = statistics.median(j["run"] for j in jobs)
        rest = statistics.median(j["call"] - j["run"] for j in jobs)
        startup = statistics.median(j["startup"] for j in jobs)
        streaming = statistics.median(j["wall"] - j["busiest"] - j["startup"] for j in jobs)
        lines.append(f"| {label} | {wall:.2f} | {run:.2f} | {rest:.3f} | {startup:.2f} | "
                     f"{streaming:.2f} |")
    return "\n".join(lines) + "\n"


def write_section(path: Path, run: str, replace: bool) -> None:
    """Adds a run to the Ray Data section (everything from MARKER on), or starts it again."""
    text = path.read_text() if path.exists() else ""
    runs = ""
    if MARKER in text:
        text, section = text[:text.index(MARKER)], text[text.index(MARKER):]
        if not replace and "\n### " in section:
            runs = section[section.index("\n### ") + 1:].rstrip("\n") + "\n\n"
    path.write_text(text.rstrip("\n") + "\n\n" + HEADER + "\n" + runs + run)


if __name__ == "__main__":
    sys.exit(main())
