"""Images per second of the CPU and CUDA backends on an MNIST-shaped random model.

    model: 28x28x1 -> conv 5x5x12 -> pool 2 `or` -> conv 5x5x64 -> pool 2 `or` -> flatten
           -> dense 10; T_s = T_d = 80, T = 400 (tests/gpu/mnist_like.py, weights scaled so
           that a realistic share of neurons fires)
    runs:  CPU analytic (all cores), CUDA analytic (batch 1 .. 65536), CUDA stepped

Each configuration gets one untimed warm-up run, then timed runs of the same batch until at
least --seconds have passed (at least two runs). Throughput includes copying images in and
results out (what a caller sees), not session creation. The same run checks that, on the first
1024 images, CUDA analytic, CUDA stepped and CPU analytic give bit-identical potentials and
equal predictions. Ratios between configurations are measured in this run; absolute numbers
depend on the machine.

    TTFS_LIBRARY=build-gpu/libttfs.so python tests/gpu/bench_gpu.py [--quick] [--json PATH]

Prints a table; writes JSON to --json, or to $OUT/bench_gpu.json when $OUT is set. Exit status
1 when a run fails or the results differ. --quick uses small batches (for a dry run of the
script itself, e.g. against the CUDA emulator).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

from mnist_like import mnist_like_images, mnist_like_model  # noqa: E402

from export.ttfs_format import to_bytes  # noqa: E402

FULL_PLAN = [("cpu", "analytic", (256, 1024)),
             ("cuda", "analytic", (1, 64, 1024, 8192, 65536)),
             ("cuda", "stepped", (64, 1024))]
QUICK_PLAN = [("cpu", "analytic", (16,)),
              ("cuda", "analytic", (1, 16, 64)),
              ("cuda", "stepped", (4,))]
PARITY_IMAGES = 1024


def measure(model, backend, engine, images, seconds):
    """Runs one configuration; returns (row dict, the last result)."""
    batch = len(images)
    with model.session(backend=backend, engine=engine, max_batch=batch) as session:
        if session.backend != backend:
            raise RuntimeError(f"asked for backend {backend!r}, the session runs on {session.backend!r}")
        result = session.run(images)  # warm-up: first-touch of buffers, module loading
        runs, elapsed = 0, 0.0
        while runs < 2 or elapsed < seconds:
            start = time.perf_counter()
            result = session.run(images)
            elapsed += time.perf_counter() - start
            runs += 1
    row = dict(backend=backend, engine=engine, batch=batch, runs=runs, seconds=elapsed,
               images_per_second=batch * runs / elapsed, ms_per_batch=1000.0 * elapsed / runs)
    return row, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small batches (dry run)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per configuration (default 1.0, --quick 0.1)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    args = parser.parse_args(argv)
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    seconds = args.seconds if args.seconds is not None else (0.1 if args.quick else 1.0)
    json_path = args.json
    if json_path is None and os.environ.get("OUT"):
        json_path = Path(os.environ["OUT"]) / "bench_gpu.json"

    import pyttfs  # after argparse, so --help works without the library

    print(f"library: {pyttfs.library_path}\n{pyttfs.build_info()}")
    if pyttfs.cuda_device_count() < 1:
        print("FAIL bench_gpu: no CUDA device (the benchmark needs one)")
        return 1

    spec, _ = mnist_like_model(seed=0)
    model = pyttfs.Model.from_bytes(to_bytes(spec))
    largest = max(max(batches) for _, _, batches in plan)
    images = mnist_like_images(largest, seed=1)
    # every configuration runs at least this many images once, so all can be compared
    parity_count = min([PARITY_IMAGES] + [max(batches) for _, _, batches in plan])

    rows, failures, parity_results = [], [], {}
    print(f"\n{'backend':8} {'engine':9} {'batch':>7} {'runs':>5} {'ms/batch':>11} {'images/s':>12}")
    for backend, engine, batches in plan:
        for batch in batches:
            try:
                row, result = measure(model, backend, engine, images[:batch], seconds)
            except Exception as error:  # report and go on with the other configurations
                failures.append(f"{backend} {engine} batch {batch}: {error}")
                print(f"{backend:8} {engine:9} {batch:>7}  FAILED: {error}")
                continue
            rows.append(row)
            print(f"{backend:8} {engine:9} {batch:>7} {row['runs']:>5} {row['ms_per_batch']:>11.3f} "
                  f"{row['images_per_second']:>12.1f}")
            if batch >= parity_count and (backend, engine) not in parity_results:
                parity_results[backend, engine] = result

    # Bit-identical results on the first parity_count images.
    parity = {}
    baseline_key = ("cpu", "analytic")
    if baseline_key in parity_results:
        base = parity_results[baseline_key]
        for key, result in parity_results.items():
            if key == baseline_key:
                continue
            same_bits = np.array_equal(result.potentials[:parity_count].view(np.uint32),
                                       base.potentials[:parity_count].view(np.uint32))
            same_predictions = np.array_equal(result.predictions[:parity_count],
                                              base.predictions[:parity_count])
            name = f"{key[0]} {key[1]} vs cpu analytic"
            parity[name] = bool(same_bits and same_predictions)
            if not parity[name]:
                differing = int((result.potentials[:parity_count] != base.potentials[:parity_count]).sum())
                failures.append(f"{name}: {differing} potentials differ on the first {parity_count} images")
    else:
        failures.append("no CPU analytic run to compare the CUDA results against")
    for name, ok in parity.items():
        print(f"{'PASS' if ok else 'FAIL'} parity {name} ({parity_count} images, bit-identical potentials)")

    def throughput(backend, engine, batch):
        for row in rows:
            if (row["backend"], row["engine"], row["batch"]) == (backend, engine, batch):
                return row["images_per_second"]
        return None

    ratios = {}
    cpu_best = max((r["images_per_second"] for r in rows if r["backend"] == "cpu"), default=None)
    cuda_best = max((r["images_per_second"] for r in rows
                     if (r["backend"], r["engine"]) == ("cuda", "analytic")), default=None)
    if cpu_best and cuda_best:
        ratios["cuda analytic best / cpu analytic best"] = cuda_best / cpu_best
    stepped = max((r["batch"] for r in rows if (r["backend"], r["engine"]) == ("cuda", "stepped")),
                  default=None)
    if stepped and throughput("cuda", "analytic", stepped):
        ratios[f"cuda analytic / cuda stepped at batch {stepped}"] = \
            throughput("cuda", "analytic", stepped) / throughput("cuda", "stepped", stepped)
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.1f}x")

    report = dict(build_info=pyttfs.build_info(), host=platform.node(), cpu_count=os.cpu_count(),
                  model="28x28x1 conv5x5x12 pool2 conv5x5x64 pool2 dense10, T_s=T_d=80, T=400",
                  quick=args.quick, seconds_per_configuration=seconds, results=rows,
                  parity=parity, ratios=ratios, failures=failures)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {json_path}")
    if failures:
        print("FAIL bench_gpu:\n  " + "\n  ".join(failures))
        return 1
    print("PASS bench_gpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
