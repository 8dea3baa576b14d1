"""Two builds of libttfs against each other, taking turns: images/s of both engines, and
whether they give the same bits. For changes that must not change results or speed (a
refactor, a compiler flag):

    .venv/bin/python tests/bench/compare_builds.py OLD/libttfs.so NEW/libttfs.so \\
        [--rounds 7] [--images 10000] [--stepped-images 2000] [--threads 0] \\
        [--backend cpu|cuda] [--model M.ttfs] [--images-file IMAGES]

Each build runs in a worker process of its own (pyttfs loads one library per process), with
the same sessions (models/mnist.ttfs, or --model; on the CPU backend, or --backend cuda for two
CUDA builds on a GPU) and the same test images as uint8 (MNIST's, or --images-file: IDX, .npy,
a folder of PNG/JPEG, whatever pyttfs.images.read_images reads). The
workers take turns round by round, engine by engine (old, new, old, new, ...), so that other
jobs on a shared machine slow both alike; the table shows the median images/s of each, the
median of the per-round ratios new/old and their range (--cpu-time: per second of the
process's CPU time, which other jobs do not inflate; best with --threads 1). Before timing, every worker runs the
images once with spike times recorded and hashes predictions, output potentials (bit
patterns), spike counts and first-spike times of every layer: the two builds must agree, engine
by engine, or the script stops with exit code 1.

Two things on a shared 2-core machine move the ratio by about 10 % without any change of code
(docs/STATUS.md, "Speed"), so by default the script holds them fixed for both workers: with
--threads 1 both run on the same CPU (--cpu, -1: anywhere; a worker left to float may spend a
whole run on the busier CPU), and every allocation of 4 KiB or more is page-aligned
(--heap page: GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4096; the analytic engine's speed
depends on where its buffers land relative to each other, and the default allocator's choice
changes with unrelated allocations elsewhere in the library). Even so, some pairs of builds sit
in a 10 % slower or faster layout for a whole run; a ratio near 0.9 or 1.1 wants a second run
(another --images, or the old build through this checkout's pyttfs where it can: --old-root
changes the old worker's heap too).

Not part of the test run (nothing under tests/bench/ is collected).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "mnist.ttfs"
ENGINES = ("analytic", "stepped")


# ---- the worker (one per build) ---------------------------------------------------------------

def worker(model_path: str, images_count: int, stepped_images: int, threads: int,
           root: str, backend: str, images_file: str) -> None:
    """Answers one line of JSON per command read from stdin: `digest ENGINE`, `time ENGINE`.
    root: the checkout whose pyttfs (and export.datasets) it imports; images_file: "" for the
    MNIST test images."""
    sys.path.insert(0, root)
    import numpy as np

    import pyttfs

    model = pyttfs.Model(model_path)
    if images_file:
        from pyttfs.images import read_images
        images = read_images(images_file, model)[:images_count]
    else:
        from export.datasets import load_mnist
        images = load_mnist().test.images[:images_count].reshape(-1, 28, 28, 1)
    images = np.ascontiguousarray(images)
    counts = {"analytic": len(images), "stepped": min(stepped_images, len(images))}
    # threads: CPU worker threads (the CUDA backend takes none)
    options = dict(backend=backend, threads=threads if backend == "cpu" else 0)
    sessions = {engine: model.session(engine=engine, max_batch=counts[engine], **options)
                for engine in ENGINES}
    for line in sys.stdin:
        command, engine = line.split()
        batch = images[:counts[engine]]
        if command == "digest":
            with model.session(engine=engine, max_batch=len(batch), record_spike_times=True,
                               **options) as session:
                result = session.run(batch)
                digest = hashlib.sha256(result.predictions.tobytes())
                digest.update(np.ascontiguousarray(result.potentials).view(np.uint32).tobytes())
                for info in model.layers:
                    if info.has_neurons:
                        digest.update(session.spike_counts(info.name).tobytes())
                        digest.update(session.spike_times(info.name).tobytes())
            answer = {"digest": digest.hexdigest()}
        else:
            started, cpu_started = time.perf_counter(), time.process_time()
            sessions[engine].run(batch)
            answer = {"wall": len(batch) / (time.perf_counter() - started),
                      "cpu": len(batch) / (time.process_time() - cpu_started)}
        print(json.dumps(answer), flush=True)


# ---- the driver -------------------------------------------------------------------------------

class Build:
    def __init__(self, library: Path, options, root: Path) -> None:
        self.library = library
        env = dict(os.environ, TTFS_LIBRARY=str(library))
        if options.heap == "page":
            env["GLIBC_TUNABLES"] = ":".join(
                filter(None, [env.get("GLIBC_TUNABLES"), "glibc.malloc.mmap_threshold=4096"]))
        cpu = options.cpu

        def pin() -> None:
            if cpu >= 0:
                os.sched_setaffinity(0, {cpu})

        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(options.model), str(options.images),
             str(options.stepped_images), str(options.threads), str(root), options.backend,
             str(options.images_file.resolve()) if options.images_file else ""],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=pin)

    def ask(self, command: str, engine: str) -> dict:
        self.process.stdin.write(f"{command} {engine}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker for {self.library} ended (see its error above)")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the reference build's libttfs.so")
    parser.add_argument("new", type=Path, help="the build to compare with it")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--images", type=int, default=10_000,
                        help="test images per analytic run (default: %(default)s)")
    parser.add_argument("--images-file", type=Path, default=None, metavar="PATH",
                        help="the images (IDX, .npy, a folder of PNG/JPEG; default: the MNIST "
                             "test set)")
    parser.add_argument("--backend", choices=("cpu", "cuda"), default="cpu",
                        help="cpu (default), or cuda: two CUDA builds on a GPU")
    parser.add_argument("--stepped-images", type=int, default=2_000,
                        help="images per stepped run (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="0: one per hardware thread")
    parser.add_argument("--cpu-time", action="store_true",
                        help="images per second of the process's CPU time instead of wall time: "
                             "steadier on a loaded machine (other jobs' time is not counted), "
                             "best with --threads 1")
    parser.add_argument("--old-root", type=Path, default=ROOT, metavar="DIR",
                        help="the checkout whose pyttfs the old build's worker imports (default: "
                             "this one); give the old build's own checkout when it predates a "
                             "function this pyttfs declares")
    parser.add_argument("--cpu", type=int, default=None,
                        help="the CPU both workers run on; -1: anywhere (default: the last CPU "
                             "with --threads 1, else anywhere)")
    parser.add_argument("--heap", choices=("page", "default"), default="page",
                        help="page: every allocation of 4 KiB or more page-aligned in both "
                             "workers (default); default: the allocator's own choice")
    options = parser.parse_args()
    if options.cpu is None:
        options.cpu = (os.cpu_count() or 1) - 1 if options.threads == 1 else -1
    for library in (options.old, options.new):
        if not library.is_file():
            parser.error(f"{library} is not a file")
    if options.images_file is not None and not options.images_file.exists():
        parser.error(f"--images-file {options.images_file}: no such file or folder")

    builds = {"old": Build(options.old.resolve(), options, options.old_root.resolve()),
              "new": Build(options.new.resolve(), options, ROOT)}
    try:
        same = True
        for engine in ENGINES:
            digests = {name: build.ask("digest", engine)["digest"] for name, build in builds.items()}
            agree = digests["old"] == digests["new"]
            same = same and agree
            print(f"{engine}: results {'identical' if agree else 'DIFFER'} "
                  f"(sha256 {digests['old'][:16]} / {digests['new'][:16]})", flush=True)
        rates = {(name, engine): [] for name in builds for engine in ENGINES}
        for round_index in range(options.rounds):
            for engine in ENGINES:
                order = ("old", "new") if round_index % 2 == 0 else ("new", "old")
                for name in order:
                    answer = builds[name].ask("time", engine)
                    rates[name, engine].append(answer["cpu" if options.cpu_time else "wall"])
        clock = "CPU" if options.cpu_time else "wall"
        print(f"\nimages per {clock} second, {options.rounds} rounds taking turns ({options.images} images analytic, "
              f"{options.stepped_images} stepped; {options.model.name}, {options.backend} backend; "
              f"{'CPU ' + str(options.cpu) if options.cpu >= 0 else 'any CPU'}, heap {options.heap})")
        print(f"{'engine':10} {'old':>10} {'new':>10} {'new/old':>8}  per-round ratio range")
        for engine in ENGINES:
            old, new = rates["old", engine], rates["new", engine]
            ratios = [b / a for a, b in zip(old, new)]
            print(f"{engine:10} {statistics.median(old):10.0f} {statistics.median(new):10.0f} "
                  f"{statistics.median(ratios):8.3f}  {min(ratios):.3f} .. {max(ratios):.3f}")
        return 0 if same else 1
    finally:
        for build in builds.values():
            build.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6],
               sys.argv[7], sys.argv[8])
    else:
        sys.exit(main())
