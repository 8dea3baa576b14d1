"""The conversion pipeline, step by step, over one run directory.

Each step reads what the previous steps left in the run directory and writes its own files, so
a step can be re-run alone (after changing its options) without redoing the earlier ones:

    train      -> ann.keras, train.json          the ANN (trained here, or a user's .keras)
    stats      -> stats.json                     per-layer lambdas (docs/ALGORITHM.md section 2)
    convert    -> converted.ttfs                 BN-fused, normalised, initial time constants
    train-tc   -> trained.ttfs, tc.json,         trained time constants (section 8), with the
                  time_constants/*.json          constants saved every N images
    export     -> model.ttfs, report.json,       the final model, the conversion report, and the
                  report.md, data/               test set as IDX files plus one image as .bin
    evaluate   -> results/                       libttfs over the test set with both engines, the
                                                 TF reference on a subset, summary and plots
                                                 (export/evaluate.py)

`python -m export all` runs them in order. TensorFlow is imported by the steps that need it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from export import ttfs_format

ANN_FILE = "ann.keras"
TRAIN_FILE = "train.json"
STATS_FILE = "stats.json"
CONVERTED_FILE = "converted.ttfs"
TRAINED_FILE = "trained.ttfs"
TC_FILE = "tc.json"
MODEL_FILE = "model.ttfs"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"


@dataclasses.dataclass
class Options:
    """Every choice of the pipeline, with the defaults `python -m export --help` shows.

    The defaults are the demo configuration of docs/RESULTS.md (15 epochs, `earliest` pooling,
    the paper's time-constant rule); REFERENCE_RECIPE holds the reference's documented
    commands (its main.py defaults, `or` pooling).
    """

    run_dir: Path = Path("runs/mnist")
    dataset: Optional[str] = None  # export.datasets.load_dataset spec; None: what train used
    data_dir: Optional[str] = None  # mnist / fashion-mnist IDX directory; default: see datasets
    validation_size: Optional[int] = None  # default: 5000 (MNIST, Fashion-MNIST) or 10 %
    keras_model: Optional[str] = None  # a user's saved .keras / .h5 instead of training
    keras_input_scale: str = "auto"  # "auto" | "1" | "255": the pixel range the ANN expects
    arch: str = "reference"  # "reference" (the MNIST CNN) | "vgg" (export.keras_model.vgg_cnn)
    vgg_layout: str = "32,32,M,64,64,M,128,128,M"
    vgg_dense: str = "256"
    vgg_dropout: float = 0.4
    epochs: int = 15
    batch_size: int = 100
    learning_rate: float = 1e-3
    seed: int = 0
    augment_shift: int = 0  # random translation of training images, pixels (0: reference)
    augment_flip: bool = False  # random left-right mirroring of training images
    cosine_decay: bool = False  # cosine learning-rate decay (False: reference, constant)
    keep: str = "best"  # "best" validation epoch (reference) or the "last" epoch
    train_images: Optional[int] = None  # use only the first N training images (tests, demos)
    quiet_background: int = 0  # fine-tune epochs with hidden biases <= 0 (export/quiet.py); 0: off
    quiet_learning_rate: float = 1e-4
    quiet_activity_l1: float = 0.0  # L1 penalty per image on the hidden activations
    stats_on: str = "train"  # "train" (no test leakage) or "test" (the reference's choice)
    stats_images: Optional[int] = None
    percentile: float = 99.9
    pool_mode: str = "earliest"
    readout: str = "vmem"
    time_fire_start: int = 80
    time_fire_duration: int = 80
    time_steps: Optional[int] = None  # None: max(400, D*T_s + T_d), D the output depth
    vth0: float = 1.0
    tau: float = 20.0  # initial tau_fire of every neuron layer (docs/ALGORITHM.md: 20)
    tc_rule: str = "paper"
    tc_passes: int = 6
    tc_images: int = 10000
    tc_batch_size: int = 100
    tc_save_every: int = 10000
    tc_snn: str = "native"
    val_images: Optional[int] = None  # SNN validation accuracy on the first N (default: all)
    test_images: Optional[int] = None  # evaluate: the first N test images (default: all)
    reference_images: int = 200  # evaluate: compare with the TF reference on the first N
    results_dir: Optional[Path] = None  # evaluate: default run_dir/results
    progress: bool = True


# The reference's documented MNIST commands as they run (docs/ALGORITHM.md sections 1-8): the
# defaults of its main.py, every value pinned here so that a change of our defaults cannot
# change the recipe. 500 epochs of Adam 1e-3 at batch 100 with no augmentation, the best
# validation epoch kept; statistics (99.9th percentile per neuron) on the 10 000 test images;
# `or` pooling (its f_spike_max_pool flag off, main.py's default); vmem readout; windows
# 80/80 over 400 steps, threshold amplitude 1; the reference time-constant rule over training
# images 0-9999, 6 passes of batch 100. Not reproduced: the reference's statistics also took in
# one zero row and one batch of the untrained network (an accident, docs/ALGORITHM.md section 2).
# The other reference path, the spike-count-gated pool (f_spike_max_pool on, set by its run
# script and config file), is this recipe with --pool-mode gated.
REFERENCE_RECIPE = {"arch": "reference", "epochs": 500, "batch_size": 100,
                    "learning_rate": 1e-3, "augment_shift": 0, "augment_flip": False,
                    "cosine_decay": False, "keep": "best", "quiet_background": 0,
                    "stats_on": "test",
                    "stats_images": None, "percentile": 99.9, "pool_mode": "or",
                    "readout": "vmem", "time_fire_start": 80, "time_fire_duration": 80,
                    "time_steps": 400, "vth0": 1.0, "tau": 20.0, "tc_rule": "reference",
                    "tc_passes": 6,
                    "tc_images": 10000, "tc_batch_size": 100, "tc_save_every": 10000}


def _say(message: str) -> None:
    print(message, flush=True)


def _require(path: Path, step: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `python -m export {step}` first "
                                f"(or `python -m export all`)")
    return path


def _write_json(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def dataset_spec(options: Options) -> tuple:
    """(dataset spec, data_dir) for a step: the options' own, else what `train` recorded in
    train.json, else MNIST."""
    if options.dataset is not None:
        return options.dataset, options.data_dir
    train_path = Path(options.run_dir) / TRAIN_FILE
    if train_path.is_file():
        record = _read_json(train_path)
        if "dataset_spec" in record:
            return record["dataset_spec"], options.data_dir or record.get("data_dir")
    return "mnist", options.data_dir


def load_data(options: Options, for_train: bool = False):
    """The dataset of this run (see dataset_spec; `train` defaults to MNIST), with
    --train-images applied."""
    from export.datasets import load_dataset

    spec, data_dir = ((options.dataset or "mnist", options.data_dir) if for_train
                      else dataset_spec(options))
    data = load_dataset(spec, data_dir=data_dir, validation_size=options.validation_size,
                        progress=options.progress)
    if options.train_images is not None:
        data = dataclasses.replace(data, train=data.train.take(options.train_images))
    return data


_data = load_data


def keras_input_scale(options: Options) -> float:
    """The pixel scale the run's Keras model expects (recorded by `train`): 1.0 or 255.0."""
    train_path = Path(options.run_dir) / TRAIN_FILE
    if train_path.is_file():
        return float(_read_json(train_path).get("keras_input_scale", 1.0))
    return 1.0


def _ann_layers(options: Options):
    """The trained ANN of the run directory, lowered to the converter's layers (BN, pooling,
    input scaling folded)."""
    from export.convert import lower_keras_model
    from export.keras_model import load_user_model

    model = load_user_model(_require(options.run_dir / ANN_FILE, "train"))
    return model, lower_keras_model(model, input_scale=keras_input_scale(options))


def _normalised_layers(options: Options):
    from export.convert import normalise

    stats = _read_json(_require(options.run_dir / STATS_FILE, "stats"))
    model, fused = _ann_layers(options)
    return model, normalise(fused, stats["lambdas"])


# ---- Steps ----------------------------------------------------------------------------------


def _check_model_fits(model, data, where: str) -> None:
    """The Keras model's input shape and class count against the dataset's."""
    input_shape = tuple(int(v) for v in model.inputs[0].shape[1:])
    if input_shape != data.input_shape:
        raise ValueError(f"{where}: takes {'x'.join(map(str, input_shape))} inputs, but the "
                         f"dataset {data.name} has {'x'.join(map(str, data.input_shape))} "
                         "images; expected the same height, width and channels")
    outputs = int(model.outputs[0].shape[-1])
    if outputs != data.num_classes:
        raise ValueError(f"{where}: has {outputs} outputs, but the dataset {data.name} has "
                         f"{data.num_classes} classes ({', '.join(data.class_names)}); expected "
                         "one output per class")


def _vgg_dense(text: str):
    text = str(text).strip().lower()
    if text in ("", "none", "0"):
        return ()
    try:
        units = tuple(int(v) for v in text.split(","))
    except ValueError:
        units = ()
    if not units or min(units) < 1:
        raise ValueError(f"--vgg-dense {text!r}: expected positive unit counts, comma-separated, "
                         "or none")
    return units


def step_train(options: Options) -> dict:
    """Train the reference CNN or the VGG-style CNN (or take the user's Keras model) on the
    dataset and record its accuracy."""
    from export.keras_model import (evaluate, load_user_model, reference_cnn, starts_with_rescaling,
                                    train, vgg_cnn)

    options.run_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(options, for_train=True)
    spec, data_dir = options.dataset or "mnist", options.data_dir
    target = options.run_dir / ANN_FILE
    record: dict = {"dataset": data.source, "dataset_kind": data.kind,
                    "dataset_spec": spec, "data_dir": data_dir,
                    "dataset_info": data.describe()}
    _say(f"[train] {data.summary()}")
    if options.keras_model:
        _say(f"[train] using the user's model {options.keras_model}")
        model = load_user_model(options.keras_model)
        _check_model_fits(model, data, f"{options.keras_model}")
        if options.keras_input_scale == "auto":
            scale = 255.0 if starts_with_rescaling(model) else 1.0
        else:
            scale = float(options.keras_input_scale)
        model.save(target)
        record.update(source=str(options.keras_model), epochs=0, keras_input_scale=scale)
    else:
        if options.keras_input_scale not in ("auto", "1"):
            raise ValueError(f"--keras-input-scale {options.keras_input_scale}: only for "
                             "--keras-model (the networks trained here take [0, 1] inputs)")
        if options.arch == "vgg":
            if not 0.0 <= options.vgg_dropout < 1.0:
                raise ValueError(f"--vgg-dropout {options.vgg_dropout}: expected a rate in "
                                 "[0, 1)")
            model = vgg_cnn(data.input_shape, data.num_classes, layout=options.vgg_layout,
                            dense=_vgg_dense(options.vgg_dense), dropout=options.vgg_dropout,
                            seed=options.seed)
            arch = f"VGG-style CNN ({options.vgg_layout}; dense {options.vgg_dense})"
        elif options.arch == "reference":
            model = reference_cnn(seed=options.seed, input_shape=data.input_shape,
                                  num_classes=data.num_classes)
            arch = "reference CNN"
        else:
            raise ValueError(f"--arch {options.arch!r}: expected reference or vgg")
        _say(f"[train] {arch}, {options.epochs} epoch(s), batch {options.batch_size}, "
             f"learning rate {options.learning_rate}, seed {options.seed}, "
             f"{len(data.train)} training images")
        history = train(model, data, epochs=options.epochs, batch_size=options.batch_size,
                        learning_rate=options.learning_rate, seed=options.seed,
                        checkpoint=target, verbose=1 if options.progress else 2,
                        augment_shift=options.augment_shift, augment_flip=options.augment_flip,
                        cosine_decay=options.cosine_decay, keep=options.keep)
        record.update(source="reference_cnn" if options.arch == "reference" else "vgg_cnn",
                      arch=options.arch, epochs=options.epochs,
                      batch_size=options.batch_size, learning_rate=options.learning_rate,
                      augment_shift=options.augment_shift, augment_flip=options.augment_flip,
                      cosine_decay=options.cosine_decay, keep=options.keep,
                      seed=options.seed, train_images=len(data.train),
                      best_epoch=history.best_epoch,
                      seconds=round(history.seconds, 1),
                      history={k: [float(v) for v in vs] for k, vs in history.history.items()},
                      keras_input_scale=1.0)
        if options.arch == "vgg":
            record.update(vgg_layout=options.vgg_layout, vgg_dense=options.vgg_dense,
                          vgg_dropout=options.vgg_dropout)
    if options.quiet_background:
        from export.quiet import fine_tune

        _say(f"[train] quiet background: hidden biases <= 0, fine-tune "
             f"{options.quiet_background} epoch(s) at learning rate "
             f"{options.quiet_learning_rate} (cosine), activity L1 "
             f"{options.quiet_activity_l1}, shifts {options.augment_shift}")
        model, quiet = fine_tune(model, data, epochs=options.quiet_background,
                                 learning_rate=options.quiet_learning_rate,
                                 batch_size=options.batch_size, seed=options.seed,
                                 augment_shift=options.augment_shift,
                                 activity_l1=options.quiet_activity_l1,
                                 verbose=1 if options.progress else 2)
        model.save(target)
        record["quiet_background"] = quiet
        _say(f"[train] quiet background: test accuracy {100 * quiet['before']['test_accuracy']:.2f}"
             f" % before, {100 * quiet['clipped']['test_accuracy']:.2f} % with the biases "
             f"clipped, {100 * quiet['after']['test_accuracy']:.2f} % after fine-tuning")
    scale = record["keras_input_scale"]
    record["val_accuracy"] = evaluate(model, data.val.images, data.val.labels, input_scale=scale)
    record["test_accuracy"] = evaluate(model, data.test.images, data.test.labels,
                                       input_scale=scale)
    _write_json(options.run_dir / TRAIN_FILE, record)
    _say(f"[train] ANN accuracy: validation {100 * record['val_accuracy']:.2f} %, "
         f"test {100 * record['test_accuracy']:.2f} % -> {target}")
    return record


def step_stats(options: Options) -> dict:
    """Per-neuron percentiles of the BN-fused ANN and the per-layer lambdas."""
    from export.convert import collect_statistics

    if options.stats_on not in ("train", "test"):
        raise ValueError(f"--stats-on {options.stats_on!r}: expected 'train' or 'test'")
    data = _data(options)
    split = data.train if options.stats_on == "train" else data.test
    if options.stats_images is not None:
        split = split.take(options.stats_images)
    _, fused = _ann_layers(options)
    _say(f"[stats] {options.percentile} percentile per neuron over {len(split)} "
         f"{options.stats_on} images")
    stats = collect_statistics(fused, split.images, percentile=options.percentile,
                               progress=options.progress, verbose=True)
    record = {"on": options.stats_on, "images": len(split), "percentile": options.percentile,
              "lambdas": {k: float(v) for k, v in stats.lambdas.items()},
              "maxima": {k: float(v) for k, v in stats.maxima.items()}}
    _write_json(options.run_dir / STATS_FILE, record)
    return record


def _metadata(options: Options, **extra) -> dict:
    meta = {"producer": "ttfs export", "pool_mode": options.pool_mode,
            "readout": options.readout, "time_fire_start": options.time_fire_start,
            "time_fire_duration": options.time_fire_duration,
            "time_steps": options.time_steps, "stats_on": options.stats_on}
    meta.update(extra)
    return meta


def _dataset_record(options: Options) -> dict:
    """What train.json says about the dataset (MNIST for runs made before it said more)."""
    from export.datasets import MNIST_CLASS_NAMES

    train_path = options.run_dir / TRAIN_FILE
    record = _read_json(train_path) if train_path.is_file() else {}
    info = dict(record.get("dataset_info") or {})
    info.setdefault("name", "MNIST")
    info.setdefault("kind", record.get("dataset_kind", ""))
    info.setdefault("classes", list(MNIST_CLASS_NAMES))
    info.setdefault("scaling", {"stored": "uint8 0..255", "divisor": 255.0,
                                "network_input": "float32(byte) / 255, in [0, 1]"})
    return info


def _model_facts(options: Options, lowered) -> dict:
    """Metadata every model file of the run carries: dataset, classes, input scaling, folds.
    No paths of the machine that made it (a model file may be shared)."""
    info = _dataset_record(options)
    weight_layers = [l.name for l in lowered if l.kind in ("conv2d", "dense")]
    scale = float(getattr(lowered, "input_scale", 1.0))
    return {
        "dataset": f"{info['name']}, {info['kind']}" if info.get("kind") else info["name"],
        "classes": list(info["classes"]),
        "input_scaling": {
            "network_input": info["scaling"]["network_input"],
            "uint8_divisor": 255.0,
            "keras_model_input_scale": scale,
            "note": ("the Keras model expects 0-255 pixels; that scale is folded into "
                     f"'{weight_layers[0]}'" if scale != 1.0 else
                     "the Keras model takes the same [0, 1] inputs as the SNN")},
        "conversion_notes": list(getattr(lowered, "notes", [])),
        "output_relu": bool(getattr(lowered, "output_relu", False)),
    }


def _spec_choices(spec) -> dict:
    """The conversion choices as the model file holds them (not as today's options say), so a
    step re-run with other options cannot mislabel a model converted earlier."""
    pool_modes = sorted({layer.pool_mode for layer in spec.layers if layer.kind == "maxpool"})
    meta = spec.metadata if isinstance(spec.metadata, dict) else {}
    return {"pool_mode": pool_modes[0] if len(pool_modes) == 1 else pool_modes,
            "readout": spec.readout,
            "time_fire_start": meta.get("time_fire_start"),
            "time_fire_duration": meta.get("time_fire_duration"),
            "time_steps": spec.time_steps}


def step_convert(options: Options) -> ttfs_format.ModelSpec:
    """BN fusion, normalisation, and the untrained SNN (tau 20, td 0) as converted.ttfs."""
    from export.convert import time_steps_for, to_model_spec

    from export.convert import normalise

    stats = _read_json(_require(options.run_dir / STATS_FILE, "stats"))
    model, lowered = _ann_layers(options)
    layers = normalise(lowered, stats["lambdas"])
    input_shape = tuple(int(v) for v in model.input_shape[1:])
    steps = options.time_steps
    if steps is None:
        depth = sum(1 for layer in layers if layer.kind in ("conv2d", "dense"))
        steps = time_steps_for(depth, options.time_fire_start, options.time_fire_duration,
                               options.readout)
    spec = to_model_spec(layers, input_shape, pool_mode=options.pool_mode,
                         readout=options.readout, time_fire_start=options.time_fire_start,
                         time_fire_duration=options.time_fire_duration,
                         time_steps=steps, vth0=options.vth0, tau=options.tau,
                         metadata=_metadata(options, lambdas=stats["lambdas"], time_steps=steps,
                                            **_model_facts(options, lowered)))
    path = options.run_dir / CONVERTED_FILE
    ttfs_format.write_model(spec, path)
    depth = max(layer.depth for layer in spec.layers)
    _say(f"[convert] {len(spec.layers)} layers ({depth + 1} with neurons, output depth {depth}), "
         f"pool mode {options.pool_mode}, readout {options.readout}, {spec.time_steps} time "
         f"steps -> {path}")
    for note in getattr(lowered, "notes", []):
        _say(f"[convert] {note}")
    return spec


def step_train_tc(options: Options) -> ttfs_format.ModelSpec:
    """Time-constant training on the first tc_images training images, tc_passes times."""
    from export.tc_training import paper_targets, reference_targets, train_time_constants

    spec = ttfs_format.read_model(_require(options.run_dir / CONVERTED_FILE, "convert"))
    _, layers = _normalised_layers(options)
    data = _data(options)
    images = data.train.take(min(options.tc_images, len(data.train))).images
    targets = (reference_targets if options.tc_rule == "reference" else paper_targets)(layers)
    _say(f"[train-tc] rule {options.tc_rule}, {len(images)} images x {options.tc_passes} "
         f"passes, batch {options.tc_batch_size}, SNN pass: {options.tc_snn}")
    started = time.perf_counter()
    trained, history = train_time_constants(
        spec, images, targets, rule=options.tc_rule, batch_size=options.tc_batch_size,
        passes=options.tc_passes, save_every=options.tc_save_every,
        save_dir=options.run_dir / "time_constants", snn=options.tc_snn,
        progress=options.progress)
    seconds = time.perf_counter() - started
    constants = _constants(trained)
    trained.metadata = dict(trained.metadata or {}, tc_rule=options.tc_rule,
                            tc_passes=options.tc_passes, tc_images=len(images))
    ttfs_format.write_model(trained, options.run_dir / TRAINED_FILE)
    _write_json(options.run_dir / TC_FILE,
                {"rule": options.tc_rule, "passes": options.tc_passes, "images": len(images),
                 "batch_size": options.tc_batch_size, "updates": len(history),
                 "seconds": round(seconds, 1), "constants": constants,
                 "trajectory": [{"update": h["update"], "tau": h["tau"], "td": h["td"]}
                                for h in history]})
    _say("[train-tc] trained constants: " + ", ".join(
        f"{name} tau {c['tau_fire']:.4g} td {c['td_fire']:.4g}" for name, c in constants.items()))
    return trained


def _constants(spec) -> Dict[str, dict]:
    return {layer.name: {"tau_fire": float(layer.neuron.tau_fire),
                         "td_fire": float(layer.neuron.td_fire)}
            for layer in spec.layers if layer.neuron is not None}


def snn_accuracy(model_path: Path, images: np.ndarray, labels: np.ndarray, *,
                 engine: str = "analytic", batch: int = 1000, progress: bool = True) -> dict:
    """Run libttfs over a labelled set; accuracy, mean spikes per layer, mean synaptic
    operations per receiving layer (export.efficiency), images per second."""
    import pyttfs
    from tqdm.auto import tqdm

    from export import efficiency

    predictions = np.empty(len(images), np.int32)
    spikes: Dict[str, float] = {}
    synops: Dict[str, float] = {}
    silent = 0
    seconds = 0.0
    spec = ttfs_format.read_model(model_path)
    stages = efficiency.synapse_stages(spec)
    with pyttfs.Model(model_path) as model, \
            model.session(backend="cpu", engine=engine, max_batch=batch,
                          record_spike_times=True) as session:
        neuron_layers = [l.name for l in model.layers if l.depth >= 0]
        output = model.layers[-1].name
        for lo in tqdm(range(0, len(images), batch), disable=not progress, unit="batch",
                       desc=f"SNN ({engine})"):
            chunk = images[lo:lo + batch]
            started = time.perf_counter()
            result = session.run(chunk)
            seconds += time.perf_counter() - started
            predictions[lo:lo + len(chunk)] = result.predictions
            times = {name: session.spike_times(name) for name in neuron_layers}
            for name in neuron_layers:
                spikes[name] = spikes.get(name, 0.0) + float(session.spike_counts(name).sum())
            for name, ops in efficiency.synaptic_operations(spec, times, stages).items():
                synops[name] = synops.get(name, 0.0) + float(ops.sum())
            silent += int((session.spike_counts(output) == 0).sum())
        readout = model.readout
    n = len(images)
    return {"n": n, "accuracy": float((predictions == labels).mean()),
            "spikes_per_image": {k: v / n for k, v in spikes.items()},
            "synaptic_operations_per_image": {k: v / n for k, v in synops.items()},
            "images_per_second": n / seconds if seconds > 0 else float("nan"),
            "no_output_spike": silent if readout == "first_spike" else None,
            "predictions": predictions}


def step_export(options: Options) -> dict:
    """The final model file, its report, and the test set in the CLI's formats."""
    from export import efficiency
    from export.datasets import write_image_bin, write_split_idx

    trained = ttfs_format.read_model(_require(options.run_dir / TRAINED_FILE, "train-tc"))
    carried = trained.metadata if isinstance(trained.metadata, dict) else {}
    train_record = _read_json(_require(options.run_dir / TRAIN_FILE, "train"))
    stats = _read_json(_require(options.run_dir / STATS_FILE, "stats"))
    tc = _read_json(_require(options.run_dir / TC_FILE, "train-tc"))
    choices = _spec_choices(trained)
    trained.metadata = {
        "producer": "ttfs export", **choices, "stats_on": stats["on"],
        "stats_images": stats["images"], "lambdas": stats["lambdas"], "tc_rule": tc["rule"],
        "tc_passes": tc["passes"], "tc_images": tc["images"],
        "ann_val_accuracy": train_record["val_accuracy"],
        "ann_test_accuracy": train_record["test_accuracy"],
        # no paths of the machine that made it inside a model file that may be shared
        "dataset": carried.get("dataset", "MNIST, " + train_record.get("dataset_kind", ""))}
    for key in ("classes", "input_scaling", "conversion_notes", "output_relu"):
        if key in carried:
            trained.metadata[key] = carried[key]
    classes = list(carried.get("classes") or _dataset_record(options)["classes"])
    model_path = options.run_dir / MODEL_FILE
    ttfs_format.write_model(trained, model_path)

    data = _data(options)
    val = data.val if options.val_images is None else data.val.take(options.val_images)
    _say(f"[export] SNN validation accuracy over {len(val)} images (libttfs, analytic, CPU)")
    snn_val = snn_accuracy(model_path, val.images, val.labels, progress=options.progress)

    data_dir = options.run_dir / "data"
    data_dir.mkdir(exist_ok=True)
    files = write_split_idx(data_dir, data.test, prefix="test")
    write_image_bin(data_dir / "test-0.bin", data.test.as_float32()[0])

    report = {
        "model": str(model_path),
        "dataset": train_record["dataset"],
        "ann": {"val_accuracy": train_record["val_accuracy"],
                "test_accuracy": train_record["test_accuracy"],
                "epochs": train_record.get("epochs"),
                "best_epoch": train_record.get("best_epoch")},
        "choices": {**choices, "tc_rule": tc["rule"], "stats_on": stats["on"]},
        "lambdas": stats["lambdas"],
        "time_constants": tc["constants"],
        "snn_validation": {k: v for k, v in snn_val.items() if k != "predictions"},
        "efficiency": efficiency.efficiency_record(
            trained, snn_val["spikes_per_image"], snn_val["synaptic_operations_per_image"],
            efficiency.blank_image_spikes(model_path)),
        "classes": classes,
        "per_class_validation": per_class_accuracy(snn_val["predictions"], val.labels, classes),
        "input_scaling": carried.get("input_scaling"),
        "conversion_notes": carried.get("conversion_notes", []),
        "files": {k: str(v) for k, v in files.items()},
    }
    _write_json(options.run_dir / REPORT_JSON, report)
    (options.run_dir / REPORT_MD).write_text(_report_markdown(report))
    _say(f"[export] {model_path}: SNN validation accuracy "
         f"{100 * snn_val['accuracy']:.2f} % (ANN {100 * train_record['val_accuracy']:.2f} %)")
    return report


def per_class_accuracy(predictions, labels, classes) -> List[dict]:
    """Per class: its name, how many images, and the share predicted right."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    rows = []
    for index, name in enumerate(classes):
        mask = labels == index
        rows.append({"class": index, "name": str(name), "images": int(mask.sum()),
                     "accuracy": float((predictions[mask] == index).mean()) if mask.any()
                     else None})
    return rows


def _report_markdown(report: dict) -> str:
    from export import efficiency

    snn = report["snn_validation"]
    lines = [
        "# Conversion report", "",
        f"Model: `{report['model']}`  ",
        f"Dataset: {report['dataset']}", "",
        "| | validation | test |", "|---|---|---|",
        f"| ANN accuracy | {100 * report['ann']['val_accuracy']:.2f} % | "
        f"{100 * report['ann']['test_accuracy']:.2f} % |",
        f"| SNN accuracy (libttfs, analytic) | {100 * snn['accuracy']:.2f} % "
        f"({snn['n']} images) | see `ttfs-infer` |", "",
        "## Choices", "",
        *[f"- {k}: `{v}`" for k, v in report["choices"].items()], "",
        "## Lambdas (max over neurons of the per-neuron 99.9th percentile)", "",
        "| layer | lambda |", "|---|---|",
        *[f"| {k} | {v:.6g} |" for k, v in report["lambdas"].items()], "",
        "## Time constants", "",
        "| layer | tau_fire | td_fire |", "|---|---|---|",
        *[f"| {k} | {v['tau_fire']:.6g} | {v['td_fire']:.6g} |"
          for k, v in report["time_constants"].items()], "",
        "## Spikes and synaptic operations per image (validation)", "",
        "Synaptic operations: each spike reaching a conv2d / dense layer times its fan-out "
        "there (export/efficiency.py), next to the ANN's multiply-adds.", "",
        "| " + " | ".join(efficiency.EFFICIENCY_HEADER) + " |",
        "|" + "---|" * len(efficiency.EFFICIENCY_HEADER),
        *["| " + " | ".join(row) + " |"
          for row in efficiency.efficiency_rows(report["efficiency"])], "",
        "## SNN validation accuracy per class", "",
        "| class | name | images | accuracy |", "|---|---|---|---|",
        *[f"| {r['class']} | {r['name']} | {r['images']} | "
          + ("n/a" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f} %") + " |"
          for r in report.get("per_class_validation", [])], "",
    ]
    scaling = report.get("input_scaling")
    if scaling:
        lines += ["## Input", "", f"- network input: {scaling['network_input']} (uint8 images "
                  f"are divided by {scaling['uint8_divisor']:g})", f"- {scaling['note']}", ""]
    if report.get("conversion_notes"):
        lines += ["## What the conversion folded", "",
                  *[f"- {note}" for note in report["conversion_notes"]], ""]
    if snn.get("no_output_spike") is not None:
        lines += [f"Images with no output spike (first_spike readout; the potential argmax "
                  f"decided them): {snn['no_output_spike']}", ""]
    return "\n".join(lines)


def step_evaluate(options: Options) -> dict:
    from export.evaluate import step_evaluate as evaluate

    return evaluate(options)


STEPS = {"train": step_train, "stats": step_stats, "convert": step_convert,
         "train-tc": step_train_tc, "export": step_export, "evaluate": step_evaluate}


def run_all(options: Options) -> dict:
    started = time.perf_counter()
    for name, step in STEPS.items():
        _say(f"==> {name}")
        result = step(options)
    _say(f"==> done in {time.perf_counter() - started:.0f} s; report: "
         f"{options.run_dir / REPORT_MD}")
    return result
