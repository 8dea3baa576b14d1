"""The committed models on a GPU: CUDA gives the CPU's bits on real MNIST and Fashion-MNIST.

For models/mnist.ttfs and models/fashion-mnist.ttfs, on their test images:

- CUDA analytic == CPU analytic on every image: predictions, output potentials as bit patterns
  and the spike count of every neuron layer;
- CUDA stepped == CPU analytic on the first --stepped-images images, the same three;
- first-spike times of every neuron layer, CPU analytic == CUDA analytic == CUDA stepped, on the
  first --times-images images;
- accuracy against the labels (the same for all three when the above holds) and images per
  second of each run (images copied in and results out included, session creation not).

    TTFS_LIBRARY=build-gpu/libttfs.so python tests/gpu/check_models.py [--data DIR] [--json PATH]

DIR holds the full test sets as IDX files, gzipped or not: mnist-test-images.idx,
mnist-test-labels.idx, fashion-mnist-test-images.idx, fashion-mnist-test-labels.idx (each may
end in .gz). Without it (or for a set it lacks) the 100 test images committed beside each model
in models/ are used. Writes JSON to --json, or to $OUT/check_models.json when $OUT is set.
Exit status 1 when a run fails or any result differs; each difference is reported with the
model, layer and first image.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from parity import differences, neuron_layers  # noqa: E402

MODELS = ("mnist", "fashion-mnist")  # models/<name>.ttfs and its committed test images
DEFAULT_BATCH = 2048


def test_set(name: str, data: Path | None):
    """(images path, labels path) of a model's test set: the full one in data, else the
    committed 100 images."""
    if data is not None:
        for suffix in (".idx.gz", ".idx"):
            images = data / f"{name}-test-images{suffix}"
            labels = data / f"{name}-test-labels{suffix}"
            if images.is_file() and labels.is_file():
                return images, labels
    committed = REPO / "models"
    return committed / f"{name}-test-100-images.idx", committed / f"{name}-test-100-labels.idx"


def cpu_name() -> str:
    """The host's processor, for reading the CPU-vs-GPU ratios ('unknown' where not said)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    except OSError:
        pass
    return f"unknown, {os.cpu_count()} logical CPUs"


def session_batch(model, backend, engine, wanted, record):
    """The largest batch, wanted or half of it again and again, that the session's memory
    limit accepts (a deep model's full test set does not fit in one CUDA session)."""
    import pyttfs
    batch = wanted
    while True:
        try:
            with model.session(backend=backend, engine=engine, max_batch=batch,
                               record_spike_times=record):
                return batch
        except pyttfs.TtfsError as error:
            if error.status != "TTFS_ERR_LIMIT" or batch == 1:
                raise
            batch //= 2


def run_all(model, backend, engine, images, batch, record=False):
    """Runs images in batches through one session; returns (results, seconds spent in run()
    and copying its outputs, the batch used). results: "predictions", "potentials" and per
    neuron layer i "counts i" (and with record, "times i"), as parity.differences() reads them."""
    parts = {}

    def keep(key, array):
        parts.setdefault(key, []).append(array)

    batch = session_batch(model, backend, engine, min(batch, len(images)), record)
    with model.session(backend=backend, engine=engine, max_batch=batch,
                       record_spike_times=record) as session:
        session.run(images[:min(batch, 64)])  # warm-up: module loading, first touch
        seconds = 0.0
        for start in range(0, len(images), batch):
            began = time.perf_counter()
            result = session.run(images[start:start + batch])
            keep("predictions", result.predictions.copy())
            keep("potentials", result.potentials.copy())
            seconds += time.perf_counter() - began
            for i in neuron_layers(model):
                keep(f"counts {i}", session.spike_counts(i))
                if record:
                    keep(f"times {i}", session.spike_times(i))
    return {key: np.concatenate(arrays) for key, arrays in parts.items()}, seconds, batch


def check_model(name, data, batch, stepped_images, times_images, most_images=None):
    import pyttfs
    from pyttfs.images import read_images, read_labels

    model_path = REPO / "models" / f"{name}.ttfs"
    images_path, labels_path = test_set(name, data)
    model = pyttfs.Model(model_path)
    images = read_images(images_path, model)
    labels = read_labels(labels_path)
    if len(labels) != len(images):
        raise ValueError(f"{labels_path}: {len(labels)} labels for {len(images)} images in "
                         f"{images_path}")
    images, labels = images[:most_images], labels[:most_images]
    n = len(images)
    print(f"\n== {model_path.relative_to(REPO)}: {n} images from {images_path.name}")

    problems, rows = [], []

    def measure(label, backend, engine, count, record=False):
        result, seconds, used_batch = run_all(model, backend, engine, images[:count], batch, record)
        accuracy = float((result["predictions"] == labels[:count]).mean())
        rows.append(dict(model=name, run=label, images=count, batch=used_batch, seconds=seconds,
                         images_per_second=count / seconds, accuracy=accuracy))
        print(f"  {label:28} {count:>6} images  batch {used_batch:>5}  {count / seconds:>12.1f} "
              f"images/s  accuracy {100 * accuracy:.2f} %")
        return result

    def compare(base, other, base_name, other_name):
        """parity.differences() over the images `other` ran, each line naming the model."""
        first = {key: value[:len(other["predictions"])] for key, value in base.items()}
        problems.extend(f"{name}: {problem}"
                        for problem in differences(model, first, other, base_name, other_name))

    cpu = measure("cpu analytic", "cpu", "analytic", n)
    compare(cpu, measure("cuda analytic", "cuda", "analytic", n), "cpu analytic", "cuda analytic")
    stepped = min(n, stepped_images)
    compare(cpu, measure("cuda stepped", "cuda", "stepped", stepped), "cpu analytic",
            "cuda stepped")
    timed = min(n, times_images)
    with_times = {label: measure(f"{label} (spike times)", *label.split(), timed, record=True)
                  for label in ("cpu analytic", "cuda analytic", "cuda stepped")}
    for label in ("cuda analytic", "cuda stepped"):
        compare(with_times["cpu analytic"], with_times[label], "cpu analytic", label)
    print(f"  {'PASS' if not problems else 'FAIL'} {name}: CUDA analytic == CPU on {n} "
          f"images, CUDA stepped == CPU on {stepped}, spike times equal on {timed}")
    for problem in problems:
        print(f"    {problem}")
    return rows, problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="folder with the full test sets as IDX files (see above)")
    parser.add_argument("--images", type=int, default=None,
                        help="only the first this many test images (default: all)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                        help=f"images per run (default {DEFAULT_BATCH}; halved while a session "
                             "would exceed its memory limit)")
    parser.add_argument("--stepped-images", type=int, default=2000,
                        help="images the CUDA stepped engine runs (default 2000)")
    parser.add_argument("--times-images", type=int, default=256,
                        help="images whose first-spike times are compared (default 256)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    args = parser.parse_args(argv)
    json_path = args.json
    if json_path is None and os.environ.get("OUT"):
        json_path = Path(os.environ["OUT"]) / "check_models.json"
    if args.data is not None and not args.data.is_dir():
        print(f"FAIL check_models: --data {args.data}: not a folder")
        return 1

    import pyttfs  # after argparse, so --help works without the library

    print(f"library: {pyttfs.library_path}\n{pyttfs.build_info()}\nCPU: {cpu_name()}")
    if pyttfs.cuda_device_count() < 1:
        print("FAIL check_models: no CUDA device (these checks need one)")
        return 1
    rows, failures = [], []
    for name in MODELS:
        try:
            model_rows, problems = check_model(name, args.data, args.batch, args.stepped_images,
                                               args.times_images, args.images)
        except Exception as error:  # report and go on with the other model
            failures.append(f"{name}: {type(error).__name__}: {error}")
            print(f"  FAILED: {failures[-1]}")
            continue
        rows += model_rows
        failures += problems
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        report = dict(build_info=pyttfs.build_info(), cpu=cpu_name(), results=rows,
                      failures=failures)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {json_path}")
    if failures:
        print(f"FAIL check_models: {len(failures)} problem(s)")
        return 1
    print("PASS check_models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
