"""A structure-aware fuzzer for libttfs: valid model files with hostile contents.

The mutation fuzzer (tests/c/fuzz_loader.c) flips bytes, so almost every file it makes is
rejected by the reader's structural checks and never reaches an engine. This one builds every
model through export/ttfs_format.py (numpy only): shapes chain, the layout and the CRC are
recomputed, so the files are well formed, and the hostility is in what a well-formed file may
say: extreme constants (1e30, FLT_MAX, denormals, huge or negative td, tiny tau), odd geometry
(1xN inputs, kernels far larger than their input under SAME padding, large strides, pools
right after the input and pools of pools, conv2d output layers), long, overlapping, empty or
whole-run windows, every pool mode (`or`, `earliest`, `gated`) and both readouts. Each case comes with images: all zeros,
all ones, uniform random, and an MNIST test image (models/mnist-test-100-images.idx) resampled
to the input's shape.

tests/c/fuzz_runner.c runs a batch of cases through the C ABI, every case in four sessions
(stepped and analytic, with and without recording spike times) under the case's memory and
work limits, and prints one line per case. run_fuzz() drives it: several processes at once,
each under an address-space limit (RLIMIT_AS) and a wall-clock limit per case, so a hang, a
crash or a runaway allocation is a reported failure of that case, not a stalled test run.

What must hold for every case (check_outcomes()):
- the loader refuses the model with a status and a message, or loads it; it loads exactly
  when export/ttfs_format.py's own validation accepts it (the writer refuses what the reader
  refuses, derived values included);
- a loaded model's sessions are created or refused cleanly (TTFS_ERR_LIMIT,
  TTFS_ERR_UNSUPPORTED for the analytic engine on overlapping windows);
- every session that was created runs, and all of them agree bit for bit (predictions,
  potentials, spike counts, recorded spike times), every potential is finite, and every
  recorded spike time lies inside its layer's fire window;
- no case hangs, crashes or runs out of its address space.

    .venv/bin/python tests/fuzz_models.py --cases 100000          # more cases, a summary
    TTFS_FUZZ_CASES=20000 .venv/bin/python -m pytest tests/test_fuzz_models.py

tests/test_fuzz_models.py runs 3000 cases in the default test run; tests/test_sanitizers.py
runs a few hundred under AddressSanitizer + UBSan and under ThreadSanitizer.
"""
from __future__ import annotations

import argparse
import collections
import os
import resource
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from export.ttfs_format import (NeuronParams, build_model, conv2d, dense, flatten,  # noqa: E402
                                input_layer, maxpool, to_bytes)

F32 = np.float32
F32_MAX = float(np.finfo(F32).max)
# Limits each case's sessions get: small enough that an accepted case runs in milliseconds, so a
# few thousand fit in a minute; a case beyond them is refused with TTFS_ERR_LIMIT, cleanly.
CASE_MAX_MEMORY = 256 << 20
CASE_MAX_WORK = 20_000_000
IMAGES_PER_CASE = 4

POSITIVE_EXTREMES = [1e-45, 1e-40, 1.1754944e-38, 1e-30, 1e-6, 1e4, 1e30, 1e38, F32_MAX]
SIGNED_EXTREMES = [0.0, 1e-45, -1e-45, 1e4, -1e4, 1e30, -1e30, F32_MAX, -F32_MAX, 88.0, -88.0,
                   1e6, -1e6]
WEIGHT_SCALES = [1e-45, 1e-38, 1e-30, 1e20, 1e30, 1e36, 1e38, F32_MAX]


@dataclass
class Case:
    seed: int
    model: bytes
    images: np.ndarray          # (n, h, w, c) float32 in [0, 1]
    writer_accepts: bool        # export/ttfs_format.py's validation passed
    threads: int
    tags: List[str] = field(default_factory=list)


_MNIST: Optional[np.ndarray] = None


def mnist_images() -> np.ndarray:
    global _MNIST
    if _MNIST is None:
        raw = (REPO / "models" / "mnist-test-100-images.idx").read_bytes()
        count, rows, cols = struct.unpack(">III", raw[4:16])
        _MNIST = np.frombuffer(raw[16:], np.uint8).reshape(count, rows, cols)
    return _MNIST


def case_images(rng, shape) -> np.ndarray:
    h, w, c = shape
    digit = mnist_images()[int(rng.integers(0, len(mnist_images())))]
    rows = (np.arange(h) * digit.shape[0] // h) if h > 1 else np.array([14])
    cols = (np.arange(w) * digit.shape[1] // w) if w > 1 else np.array([14])
    resampled = digit[np.ix_(rows, cols)].astype(F32) / F32(255)
    real = np.repeat(resampled[:, :, None], c, axis=2)
    return np.stack([np.zeros(shape, F32), np.ones(shape, F32),
                     rng.random(shape, dtype=F32), real]).astype(F32)


def _pick(rng, values):
    return values[int(rng.integers(0, len(values)))]


def _f32(value) -> float:
    """A Python float holding exactly the float32 the file will store (finite inputs)."""
    return float(F32(value))


class _Knobs:
    """Per case: how hostile each kind of field is."""

    def __init__(self, rng):
        self.rng = rng
        self.extreme = float(rng.choice([0.0, 0.05, 0.15, 0.4]))

    def chance(self, p=None) -> bool:
        return bool(self.rng.random() < (self.extreme if p is None else p))


def _neuron(knobs: _Knobs, tags: List[str], integrates: bool) -> NeuronParams:
    rng = knobs.rng
    params = dict(tau_fire=_f32(rng.uniform(3.0, 40.0)), td_fire=_f32(rng.uniform(-5.0, 5.0)),
                  vth0=_f32(rng.uniform(0.3, 1.5)))
    if integrates:
        params.update(tau_integ=_f32(rng.uniform(3.0, 40.0)), td_integ=_f32(rng.uniform(-5.0, 5.0)))
    for name in list(params):
        if not knobs.chance():
            continue
        value = _pick(rng, POSITIVE_EXTREMES if name.startswith(("tau", "vth0")) else SIGNED_EXTREMES)
        params[name] = _f32(value)
        tags.append(f"extreme {name}")
    return NeuronParams(**params)


def _weights(knobs: _Knobs, shape, fan_in: int, tags: List[str]):
    rng = knobs.rng
    w = rng.normal(0.5, 1.0, shape) * rng.uniform(0.5, 3.0) / np.sqrt(max(fan_in, 1))
    if knobs.chance(0.1):
        w = np.zeros(shape)
        tags.append("zero weights")
    elif knobs.chance():
        scale = _pick(rng, WEIGHT_SCALES)
        w = w * scale if scale < 1e30 else np.sign(w) * min(scale, F32_MAX) * rng.random(shape)
        tags.append(f"weights x {scale:.3g}")
    with np.errstate(over="ignore"):
        weights = np.clip(w, -F32_MAX, F32_MAX).astype(F32)
    bias = None
    if rng.random() < 0.7:
        bias = (rng.normal(0.0, 0.2, shape[-1])).astype(F32)
        if knobs.chance():
            bias = (np.sign(rng.normal(size=shape[-1])) * _pick(rng, POSITIVE_EXTREMES)).astype(F32)
            tags.append("extreme bias")
    return weights, bias


def _window_extent(knobs: _Knobs, size: int, tags: List[str]):
    """A kernel (or pool) extent and stride along one axis of `size` units."""
    rng = knobs.rng
    if knobs.chance(0.08):
        tags.append("kernel beyond the input")
        return int(_pick(rng, [size + 1, 2 * size + 3, 257, 4096, 1 << 20])), int(rng.integers(1, 3))
    return int(rng.integers(1, min(size, 5) + 1)), int(rng.integers(1, 4))


def generate(seed: int) -> Case:
    """One case, the same for the same seed."""
    rng = np.random.default_rng([seed, 0x7EAF])
    knobs = _Knobs(rng)
    tags: List[str] = []
    if knobs.chance(0.1):
        shape = (int(_pick(rng, [1, 1, 2, 40])), int(_pick(rng, [1, 3, 64, 1])), int(rng.integers(1, 3)))
        tags.append("odd input shape")
    else:
        shape = (int(rng.integers(2, 17)), int(rng.integers(2, 17)), int(rng.integers(1, 4)))
    layers = [input_layer(shape, divisor=255.0, neuron=_neuron(knobs, tags, integrates=False))]
    if knobs.chance(0.05):
        layers[0].input_divisor = _f32(_pick(rng, [1.0, 1e-30, 1e-36, 1e-45, 1e30]))
        tags.append("extreme input_divisor")
    h, w, c = shape
    layer_count = 0

    def add_pool():
        nonlocal h, w
        kh, sh = _window_extent(knobs, h, tags)
        kw, sw = _window_extent(knobs, w, tags)
        padding = "same" if (rng.random() < 0.4 or h < kh or w < kw) else "valid"
        # A `gated` pool reads its children's spike counters: only right above a neuron layer.
        above_neurons = layers[-1].kind in ("input", "conv2d", "dense")
        mode = _pick(rng, ["or", "earliest"] + (["gated"] if above_neurons else []))
        layers.append(maxpool(f"pool{len(layers)}", (kh, kw), (sh, sw), padding=padding, mode=mode))
        tags.append(f"{mode} pool")
        if padding == "same":
            h, w = -(-h // sh), -(-w // sw)
        else:
            h, w = (h - kh) // sh + 1, (w - kw) // sw + 1

    if rng.random() < 0.15:
        add_pool()
        tags.append("pool after the input")
    for _ in range(int(rng.integers(0, 4))):
        kh, sh = _window_extent(knobs, h, tags)
        kw, sw = _window_extent(knobs, w, tags)
        padding = "same" if (rng.random() < 0.5 or h < kh or w < kw) else "valid"
        filters = int(rng.integers(1, 7))
        # A kernel far beyond the input is stored in full: keep such tensors small.
        if kh * kw * c * filters > 200_000:
            kh, kw = min(kh, h + 2), min(kw, w + 2)
        weights, bias = _weights(knobs, (kh, kw, c, filters), kh * kw * c, tags)
        layers.append(conv2d(f"conv{len(layers)}", weights, bias, stride=(sh, sw), padding=padding,
                             neuron=_neuron(knobs, tags, integrates=True)))
        if padding == "same":
            h, w = -(-h // sh), -(-w // sw)
        else:
            h, w = (h - kh) // sh + 1, (w - kw) // sw + 1
        c = filters
        layer_count += 1
        for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.5 else 0):
            add_pool()
    if rng.random() < 0.12 and h * w * c <= 64:
        # The output layer is a conv2d: its h x w x c neurons are the classes.
        filters = int(rng.integers(1, 4))
        weights, bias = _weights(knobs, (1, 1, c, filters), c, tags)
        layers.append(conv2d("out", weights, bias, neuron=_neuron(knobs, tags, integrates=True)))
        tags.append("conv2d output")
    else:
        layers.append(flatten())
        inputs = h * w * c
        for _ in range(int(rng.integers(0, 2))):
            units = int(rng.integers(2, 17))
            weights, bias = _weights(knobs, (inputs, units), inputs, tags)
            layers.append(dense(f"fc{len(layers)}", weights, bias,
                                neuron=_neuron(knobs, tags, integrates=True)))
            inputs = units
        classes = int(rng.integers(1, 13))
        weights, bias = _weights(knobs, (inputs, classes), inputs, tags)
        layers.append(dense("out", weights, bias, neuron=_neuron(knobs, tags, integrates=True)))

    depth = sum(1 for layer in layers if layer.kind in ("input", "conv2d", "dense")) - 1
    layout = _pick(rng, ["reference"] * 6 + ["touching", "overlapping", "long", "whole run",
                                             "random"])
    tags.append(f"{layout} windows")
    t_d = int(rng.integers(1, 41))
    t_s = t_d
    if layout == "touching":
        t_s = max(t_d - 1, 1)
    elif layout == "overlapping":
        t_s = int(rng.integers(1, max(t_d - 1, 2)))
    elif layout == "long":
        t_d = t_s = int(_pick(rng, [200, 1000, 4096, 65536, 262144]))
    time_steps = depth * t_s + t_d + (int(rng.integers(0, 50)) if rng.random() < 0.3 else 0)
    if layout == "whole run":
        time_steps = int(_pick(rng, [50, 400, 4096, 1 << 16, 1 << 20]))
    time_steps = min(max(time_steps, 1), 1 << 20)
    readout = _pick(rng, ["vmem", "first_spike"])
    spec = build_model(layers, time_steps, readout=readout, time_fire_start=t_s,
                       time_fire_duration=t_d, metadata={"generator": "tests/fuzz_models.py",
                                                         "seed": int(seed)})
    for layer in spec.layers:
        if layer.neuron is None:
            continue
        neuron = layer.neuron
        if layout == "whole run":
            neuron.fire_window = (0, time_steps)
            if layer.kind != "input":
                neuron.integ_window = (0, time_steps)
        elif layout == "random":
            for name in ("integ_window", "fire_window") if layer.kind != "input" else ("fire_window",):
                a, b = sorted(int(v) for v in rng.integers(0, time_steps + 1, 2))
                setattr(neuron, name, (a, b))
    try:
        model = to_bytes(spec)
        accepted = True
    except ValueError as error:
        model = to_bytes(spec, check=False)
        accepted = False
        tags.append(f"writer refuses: {str(error)[:60]}")
    threads = int(_pick(rng, [1, 1, 2, 0]))
    return Case(seed=seed, model=model, images=case_images(rng, shape), writer_accepts=accepted,
                threads=threads, tags=tags)


def generate_many(seeds: List[int]) -> List[Case]:
    """generate() for many seeds, on every core (the same cases as one by one)."""
    if len(seeds) < 200 or (os.cpu_count() or 1) < 2:
        return [generate(seed) for seed in seeds]
    import concurrent.futures
    import multiprocessing
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(os.cpu_count() or 2, 4),
            mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(generate, seeds, chunksize=64))


# ---- The cases file tests/c/fuzz_runner.c reads ------------------------------------------------

def write_cases(cases: List[Case], path: Path, max_memory=CASE_MAX_MEMORY, max_work=CASE_MAX_WORK):
    with open(path, "wb") as out:
        out.write(b"TTFSFUZ1" + struct.pack("<I", len(cases)))
        for case in cases:
            n, h, w, c = case.images.shape
            out.write(struct.pack("<I", len(case.model)) + case.model)
            out.write(struct.pack("<IIII", n, h, w, c))
            out.write(np.ascontiguousarray(case.images, dtype="<f4").tobytes())
            out.write(struct.pack("<QQI", max_memory, max_work, case.threads))


# ---- Running --------------------------------------------------------------------------------

@dataclass
class Outcome:
    seed: int
    kind: str        # "load", "ran", "FAIL", "hang", "crash"
    detail: str      # the status, the session statuses, or what went wrong
    hash: str = ""   # fuzz_runner's hash of the agreed results ("" if nothing ran)


def _limit_address_space(limit):
    def apply():
        os.setsid()  # its own process group, so a timeout kills it and nothing else
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def run_fuzz(seeds: List[int], program: Path, *, processes: int = 2, case_timeout: float = 30.0,
             address_space: Optional[int] = 3 << 30, env: Optional[Dict[str, str]] = None,
             extra_args=(), stderr_sink: Optional[list] = None, progress=None,
             max_memory=CASE_MAX_MEMORY, max_work=CASE_MAX_WORK, cases: Optional[List[Case]] = None):
    """Runs the cases of `seeds` through `program` (fuzz_runner) in `processes` parallel
    chunks; a case that prints nothing for case_timeout seconds is a hang, a process that dies
    is a crash of the case it was on; both restart the chunk after that case. stderr of every
    process is appended to stderr_sink (sanitizer reports). cases: the generated cases of
    `seeds`, when the caller has them already (generated here otherwise). Returns the outcomes
    by seed and the cases."""
    if cases is None:
        cases = generate_many(seeds)
    outcomes: Dict[int, Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="ttfs-fuzz-") as scratch:
        chunks = [list(range(i, len(cases), processes)) for i in range(processes)]
        files = []
        for index, chunk in enumerate(chunks):
            path = Path(scratch) / f"chunk{index}.cases"
            write_cases([cases[i] for i in chunk], path, max_memory, max_work)
            files.append(path)
        # state per chunk: next case index within the chunk, process, deadline
        pending = {index: 0 for index, chunk in enumerate(chunks) if chunk}
        running = {}
        selector = selectors.DefaultSelector()

        def start(index):
            err = open(Path(scratch) / f"chunk{index}.{pending[index]}.err", "w+")
            process = subprocess.Popen([str(program), str(files[index]), str(pending[index]), *extra_args],
                                       stdout=subprocess.PIPE, stderr=err, env=env,
                                       preexec_fn=_limit_address_space(address_space))
            running[index] = (process, err, time.monotonic() + case_timeout, b"")
            selector.register(process.stdout, selectors.EVENT_READ, index)

        def finish(index, kind):
            process, err, _, _ = running.pop(index)
            selector.unregister(process.stdout)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            process.stdout.close()
            err.seek(0)
            text = err.read()
            err.close()
            if stderr_sink is not None and text.strip():
                stderr_sink.append(text)
            chunk = chunks[index]
            if kind is not None and pending[index] < len(chunk):
                seed = cases[chunk[pending[index]]].seed
                tail = " ".join(text.strip().splitlines()[-3:])[:300]
                outcomes[seed] = Outcome(seed, kind, f"exit {process.returncode}: {tail}")
                pending[index] += 1
                if progress:
                    progress(1)
            if pending[index] < len(chunk):
                start(index)

        for index in list(pending):
            start(index)
        while running:
            events = selector.select(timeout=1.0)
            now = time.monotonic()
            for key, _ in events:
                index = key.data
                process, err, deadline, buffer = running[index]
                data = os.read(key.fileobj.fileno(), 65536)
                if not data:
                    finish(index, "crash" if process.wait() != 0 or pending[index] < len(chunks[index]) else None)
                    continue
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    words = line.decode(errors="replace").split()
                    if len(words) >= 3 and words[0] == "case":
                        chunk_position = int(words[1])
                        seed = cases[chunks[index][chunk_position]].seed
                        kind = words[2]
                        detail = " ".join(words[3:])
                        found_hash = ""
                        if kind == "ran" and detail.startswith(("OK", "TTFS")) and "hash=" in detail:
                            detail, found_hash = detail.rsplit(" hash=", 1)
                        outcomes[seed] = Outcome(seed, kind, detail, found_hash)
                        pending[index] = chunk_position + 1
                        if progress:
                            progress(1)
                running[index] = (process, err, now + case_timeout, buffer)
            for index in list(running):
                if index in running and time.monotonic() > running[index][2]:
                    finish(index, "hang")
    return outcomes, cases


def check_outcomes(outcomes: Dict[int, Outcome], cases) -> List[str]:
    """The problems found, one line each (empty: every case behaved)."""
    problems = []
    for case in cases:
        outcome = outcomes.get(case.seed)
        if outcome is None:
            problems.append(f"seed {case.seed}: no outcome reported")
            continue
        if outcome.kind in ("FAIL", "hang", "crash"):
            problems.append(f"seed {case.seed}: {outcome.kind}: {outcome.detail} ({', '.join(case.tags)})")
        elif outcome.kind == "load" and case.writer_accepts:
            problems.append(f"seed {case.seed}: the loader refuses ({outcome.detail}) a model the "
                            f"writer accepts ({', '.join(case.tags)})")
        elif outcome.kind == "ran" and not case.writer_accepts:
            problems.append(f"seed {case.seed}: the loader accepts a model the writer refuses "
                            f"({', '.join(case.tags)})")
    return problems


def summarize(outcomes: Dict[int, Outcome]) -> Dict[str, int]:
    """Counts by class: load:<status>, ran (at least one session ran), refused (every
    session refused by its limits or the engine), session:<config>:<status>, failures."""
    counts = collections.Counter()
    configs = ("stepped", "stepped+record", "analytic", "analytic+record")
    for outcome in outcomes.values():
        if outcome.kind == "load":
            counts[f"load {outcome.detail}"] += 1
        elif outcome.kind == "ran":
            statuses = outcome.detail.split()
            counts["ran" if "OK" in statuses else "refused by every session"] += 1
            for config, status in zip(configs, statuses):
                counts[f"session {config} {status}"] += 1
        else:
            counts[outcome.kind] += 1
    return dict(sorted(counts.items()))


def find_program(build: Optional[Path] = None) -> Path:
    if build is None:
        import pyttfs
        build = Path(pyttfs.lib._name).resolve().parent
    return build / "tests" / "fuzz_runner"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the structure-aware model fuzzer "
                                                 "(tests/fuzz_models.py) and print a summary.")
    parser.add_argument("--cases", type=int, default=3000, help="number of cases (default 3000)")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first case")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--build", type=Path, default=None,
                        help="build directory with libttfs.so and tests/fuzz_runner "
                             "(default: the library pyttfs loads)")
    parser.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    program = find_program(args.build)
    if not program.is_file():
        print(f"{program} is not built (CMake builds tests/c/*.c with the library)", file=sys.stderr)
        return 2
    from tqdm import tqdm
    seeds = list(range(args.first_seed, args.first_seed + args.cases))
    started = time.monotonic()
    with tqdm(total=len(seeds), unit="case", desc="fuzz") as bar:
        outcomes, cases = run_fuzz(seeds, program, processes=args.processes,
                                   extra_args=("--backend", args.backend), progress=bar.update)
    problems = check_outcomes(outcomes, cases)
    print(f"{len(seeds)} cases in {time.monotonic() - started:.1f} s:")
    for name, count in summarize(outcomes).items():
        print(f"  {count:7d}  {name}")
    for line in problems[:50]:
        print("PROBLEM", line)
    print(f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
