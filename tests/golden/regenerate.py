"""Make the golden files: two small real MNIST models and the TensorFlow reference's dumps.

    .venv/bin/python tests/golden/regenerate.py                 # retrain both models (~1 min)
    .venv/bin/python tests/golden/regenerate.py --reuse-models  # keep the models, redo the dumps

Needs TensorFlow, MNIST (export.datasets.load_mnist) and, for training, libttfs (the pipeline's
export step measures the SNN with it: set TTFS_LIBRARY or build into build/). Run it from the
checkout; it writes into tests/golden/ unless --out says otherwise. README.md beside this file
says what every file holds and how tests/test_golden.py and `python -m pyttfs diff` use them.

The dumps come from export.tf_reference.simulate(exp="tf"): TensorFlow's own float32
arithmetic (its exp for the tables, its convolution summation order), as the T2FSNN reference
ran. libttfs sums in another order, so a neuron whose potential V lies within rounding of a
threshold may fire one step apart; every dump therefore also holds what a tie analysis needs:
V at the deciding fire check and one check earlier, the threshold tables, and per neuron the
size of V's sum (A = |bias| + sum of |w| * k(t) over the spikes it integrated, N = the float
operations that formed it), from which TOLERANCES below bound the rounding.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: export/ lives in the checkout
    sys.path.insert(0, str(ROOT))

GOLDEN_FORMAT = "ttfs-golden-1"
IMAGE_COUNT = 32  # the first 32 MNIST test images
IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npy"
MANIFEST_FILE = "manifest.json"

# The committed models: stem -> pipeline options beyond the common ones. The first is the
# reference configuration (docs/ALGORITHM.md sections 5-6), the second the TTFS-native one.
MODELS = {
    "mnist_or_vmem": ["--pool-mode", "or", "--readout", "vmem"],
    "mnist_earliest_first_spike": ["--pool-mode", "earliest", "--readout", "first_spike"],
}
# Small and quick, but a real trained network (about 90 % SNN accuracy for the `or` model).
# Every choice that decides the model is spelled out, so a change of the pipeline's defaults
# cannot change the golden models; the evaluation step is cut short (the dumps are made here).
PIPELINE_OPTIONS = ["--epochs", "1", "--train-images", "5000", "--tc-images", "1000",
                    "--tc-passes", "1", "--tc-rule", "reference", "--stats-on", "train",
                    "--val-images", "500", "--test-images", "100", "--reference-images", "0",
                    "--no-progress"]

U = 2.0 ** -24  # unit roundoff of float32
TOLERANCES = {
    "unit_roundoff": U,
    "tie_bound": "|V - vth| <= 2 * u * ((N + 10) * A + 8 * |vth|), u = 2^-24",
    "tie_bound_reasoning": (
        "A spike-time mismatch at step te (the earlier of the two spike times) means the two "
        "sides disagree on the sign of V - vth at te, so the golden's |V - vth| at te is at "
        "most the difference between the two sides' V - vth. V is a float32 sum: the bias, "
        "then per arrival step t the sum S(t) of the c_t weights of the units that spiked at "
        "t, times k(t), added to V. Zero terms add exactly, so in any summation order "
        "(TensorFlow's blocked convolution, libttfs's canonical order, with or without FMA) "
        "S(t) is within (c_t - 1) * u * (its part of A) of the exact sum, and the multiply by "
        "k(t) and the addition into V cost u * A each: each side is within N * u * A of the "
        "exact V, with A = |bias| + sum over integrated spikes of |w| * k(t) and N = 1 + max_t "
        "c_t + (distinct arrival steps) (dump arrays magnitude/<layer>, rounded up to 8 "
        "significant bits, and terms/<layer>). The two sides' k(t) tables may differ by an ulp "
        "(TensorFlow's exp is not correctly rounded): the + 10 absorbs that and second-order "
        "terms. A threshold vth0 * exp(.) is one exp and one multiply, a few ulp from the true "
        "value on each side: 8 * |vth| * u. Two sides give the factor 2. For the input layer "
        "V = byte / 255 is exact on both sides (A = N = 0): only the threshold term remains. "
        "The golden's V at te is recorded when te is its deciding fire check (the step it "
        "fired, else the last step of the window) or the check before; a mismatch two or more "
        "steps apart is never a tie: V is constant inside the fire window (the windows do not "
        "overlap) and consecutive thresholds differ by a factor exp(-1/tau), about 5 %."),
    "potential_rtol": 1e-6,
    "potential_atol": 1e-9,
    "potential_rounding": "2 * u * (N + 10) * A of the output neuron",
    "potential_reasoning": (
        "For an image with no spike-time mismatch in any layer, both sides integrate the same "
        "spikes: |V_lib - V_golden| <= potential_rtol * |V_golden| + potential_atol + "
        "2 * u * (N + 10) * A. The rounding term is the same bound as for a tie (a potential "
        "that is a cancelling sum cannot be judged relative to itself); rtol and atol are a "
        "small margin above it. Images with a mismatch in some layer integrate different "
        "spikes and are not compared."),
    "prediction_rule": (
        "Predictions must agree for images with no spike-time mismatch, unless (vmem readout, "
        "or first_spike readout with no output spike) the two classes' golden potentials are "
        "within the potential tolerance of each other."),
}


# ---- integration magnitude (numpy only) ---------------------------------------------------------


def _same_padding(size: int, kernel: int, stride: int):
    """TensorFlow's SAME padding along one axis: (before, after), the smaller half first."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, kernel, stride, padding: str, fill):
    """Yields (r, q, view): for each kernel offset the (n, oh, ow, c, ...) slice of x that
    offset sees, x padded with `fill` for SAME."""
    (kh, kw), (sh, sw) = kernel, stride
    if padding == "same":
        (top, bottom), (left, right) = (_same_padding(x.shape[1], kh, sh),
                                        _same_padding(x.shape[2], kw, sw))
        widths = [(0, 0), (top, bottom), (left, right)] + [(0, 0)] * (x.ndim - 3)
        x = np.pad(x, widths, constant_values=fill)
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    for r in range(kh):
        for q in range(kw):
            yield r, q, x[:, r:r + (oh - 1) * sh + 1:sh, q:q + (ow - 1) * sw + 1:sw]


def _pool_spike_steps(steps: np.ndarray, layer) -> np.ndarray:
    """Spike steps of a maxpool layer's units: steps (n, h, w, c, slots), -1 = no spike.

    `or` relays every distinct step a child spikes at; `earliest` only the first
    (docs/ENGINES.md). Children outside the input (SAME) add nothing."""
    children = [view for _, _, view in _windows(steps, layer.kernel, layer.stride,
                                                layer.padding, -1)]
    gathered = np.concatenate(children, axis=-1)
    if layer.pool_mode == "earliest":
        big = np.iinfo(gathered.dtype).max
        first = np.where(gathered >= 0, gathered, big).min(axis=-1, keepdims=True)
        return np.where(first == big, -1, first)
    ordered = np.sort(gathered, axis=-1)
    repeated = np.zeros(ordered.shape, bool)
    repeated[..., 1:] = ordered[..., 1:] == ordered[..., :-1]
    return np.where(repeated, -1, ordered)


def _kernel_at(steps: np.ndarray, neuron) -> np.ndarray:
    """k(t) for the steps a layer integrates (1 at t == 0), 0 where it does not integrate."""
    start, end = neuron.integ_window
    t = steps.astype(np.float64)
    decayed = np.exp(-((t - start) - float(neuron.td_integ)) / float(neuron.tau_integ))
    integrates = (steps >= 0) & ((steps == 0) | ((steps >= start) & (steps < end)))
    return np.where(steps == 0, 1.0, np.where(integrates, decayed, 0.0)), integrates


def integration_bounds(spec, first_spike_times: Dict[str, np.ndarray]) -> Dict[str, tuple]:
    """Per conv2d/dense layer: (A, N), each (n, h, w, c), of every neuron's potential V.

    A = |bias| + sum over the spikes it integrated of |w| * k(t). N = 1 (the bias) + the most
    spikes it integrated at one step + the number of distinct steps they arrived at: each
    step's sum S(t) of c_t weights is off by at most (c_t - 1) * u * (its share of A) in any
    summation order, and the multiply by k(t) and the D additions into V by u * A each, so V
    is within N * u * A of the exact sum. first_spike_times: the golden's own spike times per
    neuron layer, so A and N describe the sums the golden formed. float64.
    """
    bounds = {}
    steps = None  # spike steps arriving at the current layer: (n, h, w, c, slots)
    for layer in spec.layers:
        if layer.kind == "input":
            steps = first_spike_times[layer.name][..., None].astype(np.int32)
        elif layer.kind == "maxpool":
            steps = _pool_spike_steps(steps, layer)
        elif layer.kind == "flatten":
            steps = steps.reshape(steps.shape[0], 1, 1, -1, steps.shape[-1])
        else:
            k, integrates = _kernel_at(steps, layer.neuron)
            weight_sum = k.sum(axis=-1)  # per presynaptic unit: sum of k(t) over its spikes
            w = np.abs(np.asarray(layer.weights, np.float64))
            bias = np.zeros(w.shape[-1]) if layer.bias is None else \
                np.abs(np.asarray(layer.bias, np.float64))
            if layer.kind == "dense":
                w = w.reshape(1, 1, *w.shape)
                kernel, stride, padding = (1, 1), (1, 1), "valid"
            else:
                kernel, stride, padding = layer.kernel, layer.stride, layer.padding
            magnitude = 0.0
            for r, q, view in _windows(weight_sum, kernel, stride, padding, 0.0):
                magnitude = magnitude + view @ w[r, q]
            most_at_one_step = 0.0
            distinct_steps = 0.0
            for t in np.unique(steps[integrates]):
                # spikes of the receptive field at step t (the same for every output channel)
                at_t = np.sum((steps == t) & integrates, axis=-1).astype(np.float64)
                spikes_at_t = 0.0
                for r, q, view in _windows(at_t, kernel, stride, padding, 0.0):
                    spikes_at_t = spikes_at_t + view.sum(axis=-1, keepdims=True)
                most_at_one_step = np.maximum(most_at_one_step, spikes_at_t)
                distinct_steps = distinct_steps + (spikes_at_t > 0)
            magnitude = magnitude + bias
            terms = np.broadcast_to(1 + most_at_one_step + distinct_steps, magnitude.shape)
            out_shape = (steps.shape[0],) + tuple(layer.out_shape)
            bounds[layer.name] = (magnitude.reshape(out_shape),
                                  terms.reshape(out_shape).astype(np.int32))
            steps = first_spike_times[layer.name][..., None].astype(np.int32)
    return bounds


# ---- the dump -----------------------------------------------------------------------------------


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def dump_arrays(spec, result, images, labels, model_file: str, model_sha256: str) -> dict:
    """The arrays of one golden dump (README.md lists them), from a tf_reference SimResult."""
    firing = list(result.thresholds)
    neuron_layers = list(result.neuron_layers)
    arrays = {
        "format": np.array(GOLDEN_FORMAT),
        "source": np.array("export.tf_reference.simulate(exp='tf')"),
        "model_file": np.array(model_file),
        "model_sha256": np.array(model_sha256),
        "images": np.ascontiguousarray(images, dtype=np.uint8),
        "labels": np.asarray(labels, dtype=np.int32),
        "readout": np.array(spec.readout),
        "time_steps": np.array(spec.time_steps, dtype=np.int32),
        "layer_names": np.array([layer.name for layer in spec.layers]),
        "layer_kinds": np.array([layer.kind for layer in spec.layers]),
        "layer_shapes": np.array([layer.out_shape for layer in spec.layers], dtype=np.int32),
        "neuron_layers": np.array(neuron_layers),
        "firing_layers": np.array(firing),
        "output_potentials": result.output_potentials.astype(np.float32),
        "potentials_over_time": result.potentials_over_time.astype(np.float32),
        "record_steps": result.record_steps.astype(np.int32),
        "predictions": result.predictions.astype(np.int32),
    }
    for name in neuron_layers:
        times = result.first_spike_times[name]
        assert times.min() >= -1 and times.max() < 2 ** 15, name  # fits int16
        arrays[f"first_spike_times/{name}"] = times.astype(np.int16)
    for name in firing:
        arrays[f"vmem_at_fire_check/{name}"] = result.vmem_at_fire_check[name].astype(np.float32)
        arrays[f"vmem_at_previous_check/{name}"] = \
            result.vmem_at_previous_check[name].astype(np.float32)
        arrays[f"thresholds/{name}"] = result.thresholds[name].astype(np.float32)
        arrays[f"fire_window/{name}"] = np.array(result.fire_windows[name], dtype=np.int32)
    for name, (magnitude, terms) in integration_bounds(spec, result.first_spike_times).items():
        arrays[f"magnitude/{name}"] = round_up_to_8_bits(magnitude)
        arrays[f"terms/{name}"] = terms.astype(np.int32)
    return arrays


def round_up_to_8_bits(values: np.ndarray) -> np.ndarray:
    """float32 rounded up (towards +inf) to 8 significant bits: what a bound needs of A, and the
    16 low bits of noise it drops would otherwise make up a sixth of a dump."""
    bits = np.asarray(values, dtype=np.float64).astype(np.float32).view(np.uint32)
    if np.any(bits >> 31):
        raise ValueError("magnitudes are sums of absolute values and cannot be negative")
    rounded = ((bits.astype(np.uint64) + 0xFFFF) & 0xFFFF0000).astype(np.uint32)
    up = rounded.view(np.float32)
    # float32(values) may itself have rounded down; one more step up keeps it a bound
    return np.where(up.astype(np.float64) < values,
                    (rounded + np.uint32(0x10000)).view(np.float32), up)


def write_npz(path, arrays: dict) -> None:
    """np.savez_compressed, but byte-reproducible: fixed member order and timestamps, so the
    same arrays give the same sha256 (np.savez stamps the current time into the zip)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def simulate(spec, images):
    from export import tf_reference

    # one batch: the reference's convolution then runs once per step over all the images
    return tf_reference.simulate(spec, images, exp="tf", progress=False,
                                 batch_size=max(len(images), 1))


# ---- the models ---------------------------------------------------------------------------------


def pipeline_command(run_dir, stem: str) -> list:
    return [sys.executable, "-m", "export", "all", "--run-dir", str(run_dir),
            *PIPELINE_OPTIONS, *MODELS[stem]]


def train_model(stem: str, work: Path, out: Path) -> None:
    run_dir = work / stem
    command = pipeline_command(run_dir, stem)
    print(f"[{stem}] {' '.join(shlex.quote(c) for c in command)}", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    from export.ttfs_format import read_model, write_model

    spec = read_model(run_dir / "model.ttfs")
    metadata = dict(spec.metadata or {})
    metadata["made_by"] = "tests/golden/regenerate.py"
    spec.metadata = metadata
    write_model(spec, out / f"{stem}.ttfs")


def _compare_with_libttfs(model_path: Path, images, arrays) -> Optional[dict]:
    """The numbers libttfs gives against the new dump (for the manifest); None without it."""
    try:
        import pyttfs
    except OSError as error:
        print(f"  (libttfs not available, no comparison: {error})")
        return None
    measured = {}
    with pyttfs.Model(model_path) as model:
        for engine in ("stepped", "analytic"):
            with model.session(backend="cpu", engine=engine, max_batch=len(images),
                               record_spike_times=True) as session:
                result = session.run(images)
                mismatches = 0
                for name in arrays["neuron_layers"]:
                    mismatches += int(np.sum(session.spike_times(str(name))
                                             != arrays[f"first_spike_times/{name}"]))
                difference = np.abs(result.potentials.astype(np.float64)
                                    - arrays["output_potentials"])
                measured[engine] = {
                    "spike_time_mismatches": mismatches,
                    "max_potential_difference": float(difference.max()),
                    "predictions_agree": int(np.sum(result.predictions == arrays["predictions"])),
                }
    return measured


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reuse-models", action="store_true",
                        help="keep the committed models (in tests/golden/), only redo the dumps")
    parser.add_argument("--out", type=Path, default=HERE,
                        help="where to write (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="pipeline run directories (default: a temporary directory)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    if args.reuse_models:
        for stem in MODELS:
            source = HERE / f"{stem}.ttfs"
            if not source.is_file():
                print(f"regenerate.py: error: --reuse-models, but {source} does not exist",
                      file=sys.stderr)
                return 2
            if source.resolve() != (out / source.name).resolve():
                shutil.copyfile(source, out / source.name)
    else:
        with tempfile.TemporaryDirectory(prefix="ttfs-golden-") as scratch:
            work = args.work_dir.resolve() if args.work_dir else Path(scratch)
            for stem in MODELS:
                train_model(stem, work, out)

    import tensorflow as tf

    from export.datasets import load_mnist
    from export.ttfs_format import read_model

    mnist = load_mnist()
    images = np.ascontiguousarray(mnist.test.images[:IMAGE_COUNT], dtype=np.uint8)
    labels = np.asarray(mnist.test.labels[:IMAGE_COUNT], dtype=np.int32)
    np.save(out / IMAGES_FILE, images, allow_pickle=False)
    np.save(out / LABELS_FILE, labels, allow_pickle=False)

    files = [IMAGES_FILE, LABELS_FILE]
    models = {}
    for stem in MODELS:
        model_file = f"{stem}.ttfs"
        spec = read_model(out / model_file)
        print(f"[{stem}] TensorFlow reference on {len(images)} images", flush=True)
        result = simulate(spec, images)
        arrays = dump_arrays(spec, result, images, labels, model_file,
                             sha256_of(out / model_file))
        write_npz(out / f"{stem}.npz", arrays)
        files += [model_file, f"{stem}.npz"]
        counts = {name: int(np.sum(result.first_spike_times[name] >= 0))
                  for name in result.neuron_layers}
        models[stem] = {
            "model": model_file,
            "dump": f"{stem}.npz",
            "pipeline": MODELS[stem],
            "readout": spec.readout,
            "pool_mode": next((layer.pool_mode for layer in spec.layers
                               if layer.kind == "maxpool"), None),
            "golden_accuracy": float(np.mean(result.predictions == labels)),
            "golden_spikes": counts,
            "libttfs_cpu_at_generation": _compare_with_libttfs(out / model_file, images, arrays),
        }
        print(f"[{stem}] accuracy {models[stem]['golden_accuracy']:.3f}, spikes {counts}, "
              f"libttfs: {models[stem]['libttfs_cpu_at_generation']}", flush=True)

    command = ["python", "tests/golden/regenerate.py"] + (list(argv) if argv is not None
                                                          else sys.argv[1:])
    manifest = {
        "format": GOLDEN_FORMAT,
        "command": " ".join(shlex.quote(c) for c in command),
        "pipeline_command": " ".join(["python", "-m", "export", "all", "--run-dir", "<tmp>",
                                      *PIPELINE_OPTIONS, "<model options>"]),
        "models_reused": bool(args.reuse_models),
        "images": f"the first {IMAGE_COUNT} MNIST test images ({mnist.source.split(' /')[0]})",
        "versions": {"tensorflow": tf.__version__, "numpy": np.__version__,
                     "python": platform.python_version(),
                     "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
                     "machine": platform.machine()},
        "tolerances": TOLERANCES,
        "models": models,
        "files": {name: {"sha256": sha256_of(out / name), "bytes": (out / name).stat().st_size}
                  for name in files},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(files)} files and {MANIFEST_FILE} to {out} in "
          f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
