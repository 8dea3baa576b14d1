"""Batch inference on Ray Data: a ttfs model as one stage of a Ray Dataset pipeline.

Ray is an optional dependency (``pip install "pyttfs[ray]"``); ``import pyttfs`` never imports
this module or Ray.

    import ray, pyttfs.ray
    images = ray.data.read_images("digits/", mode="L", include_paths=True)
    results = pyttfs.ray.predict(images, "models/mnist.ttfs", workers=2, keep_images=False)
    results.write_parquet("predictions/")

predict() checks the model and the options on the driver, decides what each worker asks Ray
for (plan_workers: one GPU per worker on a cluster with GPUs), and adds a Dataset.map_batches
stage of Predictor actors. Each actor loads the model once, from the file's bytes (a libttfs
handle cannot be pickled, and the file need not exist on every node), and runs every batch it
is given through one pyttfs Session. The results are the same bits as a plain Session's.

Command line, on a local Ray or an existing cluster (``python -m pyttfs.ray --help``):

    python -m pyttfs.ray MODEL INPUT OUTPUT [--address ADDR] [--workers N]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

try:
    import ray
    import ray.data
    from ray.data.dataset import MaterializedDataset
except ImportError as error:  # only without the extra
    raise ImportError("pyttfs.ray needs Ray Data: pip install 'pyttfs[ray]' "
                      "(or 'ray[data]' next to pyttfs)") from error

from . import Model, Session, TtfsError, cuda_compiled, cuda_device_count, read_images, read_labels
from .images import IMAGE_SUFFIXES, _fit_image, decode_image

__all__ = ["ImageError", "Predictor", "WorkerPlan", "from_arrays", "main", "plan_workers",
           "predict"]

log = logging.getLogger("pyttfs.ray")

ModelSource = Union[str, os.PathLike, bytes]
Batch = Dict[str, np.ndarray]
BACKENDS = ("auto", "cpu", "cuda")
ENGINES = ("analytic", "stepped")


class ImageError(ValueError):
    """A batch cannot be run; the message names its rows (paths or indices) and carries the
    library's own message. (A row that cannot be decoded or has the wrong size raises
    pyttfs.ImageReadError, naming the row.)"""


def _load_model(model: ModelSource) -> Model:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return Model.from_bytes(model)
    return Model(model)


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} = {value!r}; expected an integer >= {minimum}")
    return int(value)


def _assigned_gpus() -> List[str]:
    """The GPU ids Ray gave this worker ([] outside a Ray worker)."""
    if not ray.is_initialized():
        return []
    return [str(gpu) for gpu in ray.get_gpu_ids()]


def _open_session(model: Model, backend: str, engine: str, max_batch: int, threads: int,
                  allow_unscaled: bool) -> Session:
    """A session on CUDA when asked for ("cuda", or "auto") and usable, else on the CPU; a
    worker that wanted a GPU and runs on the CPU says why in one log line."""
    if backend != "cpu":
        gpus = _assigned_gpus()
        reason = None
        if not cuda_compiled():
            reason = "libttfs was built without CUDA"
        elif cuda_device_count() == 0:
            reason = "libttfs finds no usable CUDA device"
        else:
            try:
                return model.session(backend="cuda", engine=engine, max_batch=max_batch,
                                     allow_unscaled=allow_unscaled)
            except TtfsError as error:
                reason = f"the CUDA session could not be created ({error})"
        if backend == "cuda" or gpus:
            log.warning("pyttfs.ray: %s (Ray gave this worker GPU %s, CUDA_VISIBLE_DEVICES=%r); "
                        "falling back to the CPU backend with %d thread(s)", reason,
                        ", ".join(gpus) or "none", os.environ.get("CUDA_VISIBLE_DEVICES"),
                        threads)
    return model.session(backend="cpu", engine=engine, max_batch=max_batch, threads=threads,
                         allow_unscaled=allow_unscaled)


class Predictor:
    """A callable class for ``Dataset.map_batches``: one model and one session per worker.

    model: the model file's bytes (what predict() passes) or a path readable on every node.
    image_column: (n, h, w, c) images, or (n, h, w) for a one-channel model, as Session.run
        takes them (uint8 pixels, other integers 0..255, or floats already scaled to [0, 1]); or
        a column whose rows differ in shape (ray.data.read_images on mixed files) or hold
        encoded PNG/JPEG bytes (ray.data.read_binary_files): decoded, converted to the model's
        channels and checked row by row as pyttfs.read_images does; resize=True resizes them
        like ttfs-infer --resize. allow_unscaled: see Session.run.
    backend: "cpu"; "cuda" or "auto": CUDA where libttfs can use a device, else the CPU with a
        log line saying why (see plan_workers for what the worker asks Ray for).
    engine: "analytic" or "stepped" (the same results, bit for bit). threads: the session's CPU
        threads. max_batch: the session's batch size; larger Ray batches run in slices.
    top_k: 0 adds `potentials` (n, classes) float32, the output layer's membrane potentials.
        K > 0 adds instead `top_k` (n, K) int32 classes by potential, best first (ties to the
        lower index, like the prediction), `top_k_potentials` and `confidence`: the softmax of
        the potentials at the predicted class (a score, not a calibrated probability).
    spike_counts: True adds `spikes_<layer>` (n,) int32, the neurons that fired, for every neuron
        layer; a list of layer names for those only.
    keep_images: False leaves the image column out of the results (the other input columns are
        always kept).

    Returns the input columns plus `prediction` (n,) int32 and the columns above.
    """

    def __init__(self, model: ModelSource, *, image_column: str = "image",
                 backend: str = "auto", engine: str = "analytic", threads: int = 1,
                 max_batch: int = 256, top_k: int = 0,
                 spike_counts: Union[bool, Sequence[str]] = False, keep_images: bool = True,
                 resize: bool = False, allow_unscaled: bool = False):
        if backend not in BACKENDS:
            raise ValueError(f"backend = {backend!r}; expected one of {', '.join(BACKENDS)}")
        if engine not in ENGINES:
            raise ValueError(f"engine = {engine!r}; expected one of {', '.join(ENGINES)}")
        threads = _positive_int(threads, "threads")
        max_batch = _positive_int(max_batch, "max_batch")
        with _load_model(model) as loaded:
            self.top_k = _positive_int(top_k, "top_k", minimum=0)
            if self.top_k > loaded.num_classes:
                raise ValueError(f"top_k = {top_k}; the model has {loaded.num_classes} classes")
            if self.top_k and loaded.readout != "vmem":
                raise ValueError(f"top_k ranks classes by output potential, which the model's "
                                 f"{loaded.readout!r} readout does not give (a class that fired "
                                 "reads 0); use the prediction")
            neuron_layers = [layer.name for layer in loaded.layers if layer.has_neurons]
            if spike_counts is True:
                self.spike_layers = neuron_layers
            elif not spike_counts:
                self.spike_layers = []
            else:
                self.spike_layers = [str(name) for name in spike_counts]
                unknown = [name for name in self.spike_layers if name not in neuron_layers]
                if unknown:
                    raise ValueError(f"spike_counts: no neuron layer "
                                     f"{', '.join(map(repr, unknown))}; the model's neuron "
                                     f"layers are {', '.join(neuron_layers)}")
            self.input_shape = tuple(loaded.input_shape)
            self.num_classes = loaded.num_classes
            self.session = _open_session(loaded, backend, engine, max_batch, threads,
                                         bool(allow_unscaled))
        self.image_column = image_column
        self.resize = bool(resize)
        self.keep_images = bool(keep_images)
        self.backend = self.session.backend

    def close(self) -> None:
        self.session.close()

    def __call__(self, batch: Batch) -> Batch:
        images = self._images(batch)
        n = len(images)
        predictions = np.empty(n, np.int32)
        potentials = np.empty((n, self.num_classes), np.float32)
        spikes = {name: np.empty(n, np.int32) for name in self.spike_layers}
        for start in range(0, n, self.session.max_batch):
            stop = min(n, start + self.session.max_batch)
            try:
                result = self.session.run(images[start:stop])
            except (ValueError, TtfsError) as error:
                raise ImageError(f"{_rows(batch, start, stop)}: {error}") from error
            predictions[start:stop] = result.predictions
            potentials[start:stop] = result.potentials
            for name, counts in spikes.items():
                counts[start:stop] = self.session.spike_counts(name)
        out = {name: values for name, values in batch.items()
               if self.keep_images or name != self.image_column}
        out["prediction"] = predictions
        if self.top_k:
            order = np.argsort(-potentials, axis=1, kind="stable")[:, :self.top_k]
            out["top_k"] = order.astype(np.int32)
            out["top_k_potentials"] = np.take_along_axis(potentials, order, axis=1)
            shifted = np.exp(potentials.astype(np.float64)
                             - potentials.max(axis=1, keepdims=True))
            chosen = np.take_along_axis(shifted, predictions[:, None].astype(np.int64), axis=1)
            out["confidence"] = (chosen[:, 0] / shifted.sum(axis=1)).astype(np.float32)
        else:
            out["potentials"] = potentials
        for name, counts in spikes.items():
            out[f"spikes_{name}"] = counts
        return out

    def _images(self, batch: Batch) -> np.ndarray:
        if self.image_column not in batch:
            raise KeyError(f"no column {self.image_column!r} in the batch (columns: "
                           f"{', '.join(batch)}); pass image_column=")
        column = batch[self.image_column]
        if column.dtype != object:
            return column  # Session.run takes it, or says why not
        rows = []  # rows of different shapes, or encoded files: one by one, as read_images
        for row, value in enumerate(column):
            source = _row_name(batch, row)
            if isinstance(value, bytes):
                image = decode_image(value, source)
            else:
                image = np.asarray(value)
                if image.ndim == 2:
                    image = image[:, :, np.newaxis]
            rows.append(_fit_image(image, self.input_shape, self.resize, source))
        return np.stack(rows)


def _row_name(batch: Batch, row: int) -> str:
    """One row of a batch in the user's terms: its path, else its index."""
    if "path" in batch:
        return str(batch["path"][row])
    for key in ("index", "id"):
        if key in batch:
            return f"image {batch[key][row]}"
    return f"row {row} of a batch"


def _rows(batch: Batch, start: int, stop: int) -> str:
    """The rows [start, stop) of a batch in the user's terms: paths, else indices."""
    for key in ("path", "index", "id"):
        if key in batch:
            values = [str(value) for value in batch[key][start:stop]]
            shown = ", ".join(values[:3]) + (f", ... ({len(values)} rows)" if len(values) > 3
                                             else "")
            return f"image {shown}" if len(values) == 1 else f"images {shown}"
    return f"rows {start}..{stop - 1} of a batch"


@dataclass(frozen=True)
class WorkerPlan:
    """What predict() asks Ray for: `workers` actors with num_cpus (None: Ray Data's default,
    one CPU) and num_gpus each, whose sessions are created with `backend`; note: why the plan
    differs from what was asked."""

    workers: int
    num_cpus: Optional[float]
    num_gpus: float
    backend: str
    note: str = ""


def plan_workers(cluster: Mapping[str, float], backend: str = "auto",
                 workers: Optional[int] = None, threads: int = 1,
                 reserve_cpus: int = 0) -> WorkerPlan:
    """Resources per worker from the cluster's (ray.cluster_resources()).

    "cpu": `threads` CPUs per worker. "auto": one GPU per worker when the cluster has GPUs,
    else as "cpu". "cuda": one GPU per worker; a ValueError on a cluster without GPUs.
    workers defaults to one per GPU, or to as many as the CPUs hold after `reserve_cpus` (kept
    for the stages before the model, such as reading files: actors holding every CPU would
    starve them). More GPU workers than GPUs are cut to the GPU count (see note). Raises
    ValueError when the cluster cannot hold the CPU workers: Ray would wait for them forever.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend = {backend!r}; expected one of {', '.join(BACKENDS)}")
    threads = _positive_int(threads, "threads")
    if workers is not None:
        workers = _positive_int(workers, "workers")
    cpus = float(cluster.get("CPU", 0))
    gpus = int(cluster.get("GPU", 0))
    described = f"the cluster has {cpus:g} CPU and {gpus} GPU"
    if backend == "cuda" and gpus == 0:
        raise ValueError(f"backend = 'cuda' asks Ray for one GPU per worker, but {described}; "
                         "use backend 'auto' or 'cpu'")
    if backend == "cuda" or (backend == "auto" and gpus > 0):
        count, note = workers or gpus, ""
        if count > gpus:
            note = f"{count} workers asked for, {gpus} started: one GPU each ({described})"
            count = gpus
        return WorkerPlan(workers=count, num_cpus=None, num_gpus=1, backend="cuda", note=note)
    available = cpus - reserve_cpus
    count = workers or max(1, int(available // threads))
    if count * threads > available:
        reserved = (f", and the stages before them need {reserve_cpus} more"
                    if reserve_cpus else "")
        raise ValueError(f"{count} worker(s) x {threads} thread(s) need {count * threads} CPUs"
                         f"{reserved}, but {described}; ask for fewer workers or threads")
    return WorkerPlan(workers=count, num_cpus=threads, num_gpus=0, backend="cpu")


def predict(dataset: "ray.data.Dataset", model: ModelSource, *, workers: Optional[int] = None,
            threads: int = 1, batch_size: int = 256, backend: str = "auto",
            engine: str = "analytic", image_column: str = "image", top_k: int = 0,
            spike_counts: Union[bool, Sequence[str]] = False, keep_images: bool = True,
            resize: bool = False, allow_unscaled: bool = False) -> "ray.data.Dataset":
    """The dataset with a Predictor stage added (lazy, like every Dataset transform).

    model: a .ttfs path (read here, on the driver) or the file's bytes. The model and the
    options are checked here first, so a corrupt file or a bad option fails at once with the
    library's message. workers, threads, backend: see plan_workers; batch_size: rows per Ray
    batch and the session's max_batch. The other options: see Predictor.
    """
    data = model if isinstance(model, (bytes, bytearray, memoryview)) else Path(model).read_bytes()
    options = dict(image_column=image_column, engine=engine, threads=threads,
                   max_batch=_positive_int(batch_size, "batch_size"), top_k=top_k,
                   spike_counts=spike_counts, keep_images=keep_images, resize=resize,
                   allow_unscaled=allow_unscaled)
    if not isinstance(model, (bytes, bytearray, memoryview)):
        Model(model).close()  # the library's message names the file
    Predictor(data, backend="cpu", **options).close()
    if not ray.is_initialized():
        ray.init()
    # A materialized dataset (from_arrays, from_numpy) needs no CPU before the model; anything
    # lazy (read_images, ...) runs tasks that need one.
    reserve = 0 if isinstance(dataset, MaterializedDataset) else 1
    plan = plan_workers(ray.cluster_resources(), backend, workers, threads, reserve)
    if plan.note:
        log.warning("pyttfs.ray: %s", plan.note)
    log.info("pyttfs.ray: %d worker(s), each %s CPU and %g GPU; backend %s, engine %s, "
             "batches of %d", plan.workers, "1" if plan.num_cpus is None else f"{plan.num_cpus:g}",
             plan.num_gpus, plan.backend, engine, batch_size)
    resources = {"num_gpus": plan.num_gpus}
    if plan.num_cpus is not None:
        resources["num_cpus"] = plan.num_cpus
    return dataset.map_batches(
        Predictor, fn_constructor_kwargs=dict(model=bytes(data), backend=plan.backend, **options),
        batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.workers), **resources)


def from_arrays(images: np.ndarray, labels: Optional[np.ndarray] = None,
                rows_per_block: Optional[int] = None) -> "ray.data.Dataset":
    """A Dataset with columns `index` (int64), `image` and, given labels, `label` (int64), built
    on the driver from in-memory arrays (images: (n, h, w[, c])) and put into Ray's object store.
    rows_per_block defaults to at least 16 blocks (work for that many workers) of at most 8 MB."""
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    images = np.asarray(images)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),):
            raise ValueError(f"labels of shape {labels.shape} for {len(images)} images; "
                             f"expected ({len(images)},)")
        labels = labels.astype(np.int64)
    if rows_per_block is None:
        per_image = max(1, images[:1].nbytes)
        rows_per_block = max(1, min(-(-len(images) // 16), (8 << 20) // per_image))
    rows_per_block = _positive_int(rows_per_block, "rows_per_block")
    tables = []
    for start in range(0, len(images), rows_per_block):
        stop = min(len(images), start + rows_per_block)
        columns = {"index": pa.array(np.arange(start, stop, dtype=np.int64)),
                   "image": ArrowTensorArray.from_numpy(np.ascontiguousarray(images[start:stop]))}
        if labels is not None:
            columns["label"] = pa.array(labels[start:stop])
        tables.append(pa.table(columns))
    return ray.data.from_arrow(tables)


# ---- Command line --------------------------------------------------------------------------

def _input_dataset(source: Path, labels: Optional[Path], label_dirs: bool, model: Model):
    """A function making the input Dataset once Ray runs, and the column of its images. A file
    is read here, by pyttfs.read_images (so that a bad file fails before Ray starts); a folder
    is read by the workers, as encoded bytes that the predictor decodes."""
    if source.is_dir():
        if labels is not None:
            raise ValueError("--labels goes with a file of images; for a folder whose "
                             "sub-folders are named by class use --label-dirs")
        extensions = [suffix[1:] for suffix in IMAGE_SUFFIXES]

        def files() -> "ray.data.Dataset":
            dataset = ray.data.read_binary_files(
                str(source), include_paths=True,
                file_extensions=extensions + [e.upper() for e in extensions])
            return dataset.map_batches(_labels_from_folders, batch_format="numpy") \
                if label_dirs else dataset

        return files, "bytes"
    if label_dirs:
        raise ValueError("--label-dirs goes with a folder of images")
    array = read_images(source, model)
    label_array = None if labels is None else read_labels(labels)
    if label_array is not None and len(label_array) != len(array):
        raise ValueError(f"{labels}: {len(label_array)} labels for the {len(array)} images of "
                         f"{source}")
    return (lambda: from_arrays(array, label_array)), "image"


def _labels_from_folders(batch: Batch) -> Batch:
    """`label` = the name of each image's folder, a class index (--label-dirs)."""
    names = [Path(str(path)).parent.name for path in batch["path"]]
    if not all(name.isdigit() for name in names):
        bad = next(path for path, name in zip(batch["path"], names) if not name.isdigit())
        raise ValueError(f"--label-dirs: {bad} is not in a folder named by a class index")
    batch["label"] = np.array([int(name) for name in names], dtype=np.int64)
    return batch


def _first_cause(error: BaseException) -> BaseException:
    """The user's exception inside Ray's wrappers (RayTaskError, UserCodeException): the
    library's message without the worker's traceback."""
    seen, current = set(), error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, ray.exceptions.RayError) and \
                isinstance(current, (ValueError, TtfsError, KeyError)):
            return current
        current = getattr(current, "cause", None) or current.__cause__
    return error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pyttfs.ray",
        description="Run a .ttfs model over many images on Ray Data: a local Ray by default, "
                    "an existing cluster with --address. Workers on nodes with GPUs use the "
                    "CUDA backend. Writes one row per image (path or index, label when known, "
                    "prediction, potentials or top-k) with Ray's writers and prints a summary.")
    parser.add_argument("model", type=Path, help="the .ttfs model file")
    parser.add_argument("input", type=Path,
                        help="a folder of PNG/JPEG images (searched recursively, read by the "
                             "workers), or a file read as pyttfs.read_images reads it: one "
                             "PNG/JPEG image, a .npy array, an IDX file (gzipped or not)")
    parser.add_argument("output", help="the folder Ray writes the results to")
    parser.add_argument("--address", default=None,
                        help="an existing Ray cluster (as for ray.init; default: start a local "
                             "Ray on this machine, or $RAY_ADDRESS)")
    parser.add_argument("--workers", type=int, default=None,
                        help="model workers (default: one per GPU, or CPUs / threads)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per worker (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="images per batch (default: %(default)s)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: CUDA on nodes with GPUs (default: %(default)s)")
    parser.add_argument("--engine", choices=ENGINES, default="analytic",
                        help="(default: %(default)s)")
    parser.add_argument("--labels", type=Path, default=None,
                        help="labels for a file input (IDX1 or .npy, as pyttfs.read_labels "
                             "reads them): prints the accuracy")
    parser.add_argument("--label-dirs", action="store_true",
                        help="an image folder has one sub-folder per class, named by the class "
                             "index: prints the accuracy")
    parser.add_argument("--top-k", type=int, default=0,
                        help="write the K best classes and a confidence instead of all "
                             "potentials")
    parser.add_argument("--spike-counts", action="store_true",
                        help="write the spike count of every neuron layer")
    parser.add_argument("--resize", action="store_true",
                        help="resize images of another size to the model's (area average, as "
                             "ttfs-infer --resize); without it they are an error")
    parser.add_argument("--allow-unscaled", action="store_true",
                        help="accept float inputs outside [0, 1] (see Session.run)")
    parser.add_argument("--format", choices=("parquet", "json"), default="parquet",
                        help="Ray's writer for the output: Parquet (float32 potentials exact) "
                             "or JSON Lines (15 decimal places) (default: %(default)s)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler()  # this module's lines (the plan, fallbacks) on stderr
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    level, log.level = log.level, logging.INFO
    # A failing batch raises the predictor's own exception (the library's message) rather than
    # Ray Data's UserCodeException, whose text is the worker's traceback.
    context = ray.data.DataContext.get_current()
    original, context.raise_original_map_exception = context.raise_original_map_exception, True
    try:
        return _run(args)
    finally:
        context.raise_original_map_exception = original
        log.removeHandler(handler)
        log.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        if not args.input.exists():
            raise ValueError(f"{args.input}: no such file or folder")
        with Model(args.model) as model:
            make_dataset, column = _input_dataset(args.input, args.labels, args.label_dirs,
                                                  model)
        if not ray.is_initialized():
            if args.address is None:
                ray.init(include_dashboard=False)  # a local Ray for this command
            else:
                ray.init(address=args.address)
        dataset = make_dataset()
        results = predict(dataset, args.model, workers=args.workers, threads=args.threads,
                          batch_size=args.batch_size, backend=args.backend, engine=args.engine,
                          top_k=args.top_k, spike_counts=args.spike_counts,
                          image_column=column, keep_images=False, resize=args.resize,
                          allow_unscaled=args.allow_unscaled).materialize()
        seconds = time.perf_counter() - started
        count, correct, labelled = 0, 0, False
        for batch in results.iter_batches(batch_format="numpy", batch_size=None):
            count += len(batch["prediction"])
            if "label" in batch:
                labelled = True
                correct += int(np.count_nonzero(batch["prediction"] == batch["label"]))
        written = time.perf_counter()
        if args.format == "json":
            # pandas' largest precision, 15 decimal places (its default is 10); Parquet keeps
            # the float32 bits themselves.
            results.write_json(args.output, double_precision=15)
        else:
            results.write_parquet(args.output)
        written = time.perf_counter() - written
    except ray.exceptions.RayError as error:  # before ValueError: Ray's errors derive from both
        # Ray Data appends its retry advice to the message ("\nFailed to apply UDF ..."): cut.
        message = str(_first_cause(error)).split("\nFailed to apply ", 1)[0]
        print(f"python -m pyttfs.ray: the job failed: {message}", file=sys.stderr)
        return 1
    except (ValueError, OSError, TtfsError) as error:  # ImageReadError is a ValueError
        print(f"python -m pyttfs.ray: error: {error}", file=sys.stderr)
        return 2
    print(f"images: {count} in {seconds:.1f} s: {count / seconds:.0f} images/s (reading, Ray's "
          "start-up and the workers' included; writing not)")
    if labelled:
        print(f"accuracy: {100.0 * correct / max(count, 1):.2f} % ({correct} / {count})")
    print(f"output: {args.output} ({args.format}, written in {written:.1f} s)")
    return 0


if __name__ == "__main__":
    from pyttfs.ray import main as _main  # the importable module's classes, not __main__'s

    sys.exit(_main())
