"""Compare libttfs with a golden dump of the TensorFlow reference, layer by layer.

    python -m pyttfs diff MODEL GOLDEN [--engine stepped|analytic] [--backend cpu|auto|cuda]
                          [--images N] [--json]

GOLDEN is a dump written by tests/golden/regenerate.py (tests/golden/README.md lists its
arrays): the reference's first-spike times of every neuron layer for a few images (which it
holds), the membrane potential V at each neuron's deciding fire check and one check earlier,
the threshold tables, the size of every potential's float sum (A, N), and the output
potentials. MODEL runs on those images with record_spike_times, and every first-spike time is
compared.

TensorFlow sums a convolution in another order than libttfs, so a neuron whose V lies within
rounding of a threshold may fire one step apart (docs/ALGORITHM.md section 7). Such a mismatch is a
threshold tie when the golden's |V - vth| at the earlier of the two steps is within
tie_bound(); it then explains every later difference of that image, so deeper layers of an
image with a mismatch are not judged ("not compared"), nor are its potentials. Anything else
is a disagreement.

Exit status: 0 when everything agrees up to ties, 1 when a disagreement exists, 2 on bad input
(a missing or unreadable file, a golden without the expected arrays, a model whose layers are
not the golden's), with one line on stderr. numpy only: no TensorFlow here.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

GOLDEN_FORMAT = "ttfs-golden-1"
U = 2.0 ** -24  # unit roundoff of float32
# Tolerances of tests/golden/manifest.json (its "tolerances" entry says why).
POTENTIAL_RTOL = 1e-6
POTENTIAL_ATOL = 1e-9
NEURON_KINDS = ("input", "conv2d", "dense")
MISMATCHES_LISTED = 20  # text output: the first mismatches listed in full
MISMATCHES_IN_JSON = 1000  # --json: a wrong model can mismatch in 100 000s of neurons


class DiffInputError(ValueError):
    """Bad input for a diff: the message is the one line the command prints (exit status 2)."""


def tie_bound(vth, magnitude, terms) -> float:
    """The largest |V - vth| a threshold tie may show: 2 u ((N + 10) A + 8 |vth|).

    Each side's V is within N u A of the exact sum in any summation order (A = |bias| + sum of
    |w| k(t) over the integrated spikes, N = 1 + the most spikes at one step + the arrival
    steps); + 10 covers an ulp of difference in the k(t) tables; each side's threshold is a
    few ulp from the true value (8 |vth| u); two sides give the factor 2."""
    return 2.0 * U * ((float(terms) + 10.0) * float(magnitude) + 8.0 * abs(float(vth)))


def potential_tolerance(golden_v, magnitude, terms):
    """|V_lib - V_golden| allowed for an output potential of an image without mismatches."""
    return (POTENTIAL_RTOL * np.abs(np.float64(golden_v)) + POTENTIAL_ATOL
            + 2.0 * U * (np.float64(terms) + 10.0) * np.float64(magnitude))


# ---- the golden dump ----------------------------------------------------------------------------


@dataclass
class Golden:
    """One golden dump, validated. Per-layer dicts are keyed by layer name."""

    path: str
    images: np.ndarray  # (n, h, w, c) uint8
    labels: Optional[np.ndarray]
    readout: str
    layer_names: List[str]
    layer_kinds: List[str]
    layer_shapes: List[Tuple[int, int, int]]
    neuron_layers: List[str]
    firing_layers: List[str]
    first_spike_times: Dict[str, np.ndarray]  # (n, h, w, c) int32, -1 = never fired
    vmem_at_fire_check: Dict[str, np.ndarray]  # firing layers: V before the deciding check
    vmem_at_previous_check: Dict[str, np.ndarray]  # ... and one check earlier (NaN: none)
    thresholds: Dict[str, np.ndarray]  # firing layers: (fire_len,) float32
    fire_windows: Dict[str, Tuple[int, int]]
    magnitude: Dict[str, np.ndarray]  # conv2d/dense layers: A per neuron
    terms: Dict[str, np.ndarray]  # conv2d/dense layers: N per neuron
    output_potentials: np.ndarray  # (n, classes) float32
    predictions: np.ndarray  # (n,) int32
    model_file: str = ""
    model_sha256: str = ""
    source: str = ""

    @property
    def count(self) -> int:
        return int(self.images.shape[0])

    @property
    def output_layer(self) -> str:
        return self.layer_names[-1]

    def take(self, count: int) -> "Golden":
        """The same dump restricted to its first `count` images."""
        def first(d):
            return {k: v[:count] for k, v in d.items()}
        return Golden(
            path=self.path, images=self.images[:count],
            labels=None if self.labels is None else self.labels[:count],
            readout=self.readout, layer_names=self.layer_names, layer_kinds=self.layer_kinds,
            layer_shapes=self.layer_shapes, neuron_layers=self.neuron_layers,
            firing_layers=self.firing_layers,
            first_spike_times=first(self.first_spike_times),
            vmem_at_fire_check=first(self.vmem_at_fire_check),
            vmem_at_previous_check=first(self.vmem_at_previous_check),
            thresholds=self.thresholds, fire_windows=self.fire_windows,
            magnitude=first(self.magnitude), terms=first(self.terms),
            output_potentials=self.output_potentials[:count],
            predictions=self.predictions[:count], model_file=self.model_file,
            model_sha256=self.model_sha256, source=self.source)


def _text(archive, key: str, path) -> str:
    value = archive[key]
    if value.ndim != 0 or value.dtype.kind != "U":
        raise DiffInputError(f"golden {path}: array '{key}' should be one string, found "
                             f"{value.dtype} of shape {value.shape}")
    return str(value)


def _names(archive, key: str, path) -> List[str]:
    value = archive[key]
    if value.ndim != 1 or value.dtype.kind != "U":
        raise DiffInputError(f"golden {path}: array '{key}' should be a list of names, found "
                             f"{value.dtype} of shape {value.shape}")
    return [str(v) for v in value]


def load_golden(path) -> Golden:
    """Reads and checks a golden dump; DiffInputError (one line) for anything unexpected."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DiffInputError(f"golden {path}: no such file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DiffInputError(f"golden {path}: not a readable .npz file "
                             f"({type(error).__name__}: {error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DiffInputError(f"golden {path}: a single .npy array, expected a .npz dump "
                             "written by tests/golden/regenerate.py")
    with archive:
        return _read_golden(archive, path)


def _read_golden(archive, path: str) -> Golden:
    files = set(archive.files)

    def need(key: str) -> np.ndarray:
        if key not in files:
            raise DiffInputError(f"golden {path}: missing array '{key}' (not a dump written by "
                                 "tests/golden/regenerate.py?)")
        try:
            return archive[key]
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
            raise DiffInputError(f"golden {path}: array '{key}' is unreadable "
                                 f"({type(error).__name__}: {error})") from None

    def shaped(key: str, shape, kind: str) -> np.ndarray:
        value = need(key)
        if value.dtype.kind not in kind or tuple(value.shape) != tuple(shape):
            raise DiffInputError(f"golden {path}: array '{key}' is {value.dtype} of shape "
                                 f"{tuple(value.shape)}, expected shape {tuple(shape)}")
        return value

    need("format")
    found_format = _text(archive, "format", path)
    if found_format != GOLDEN_FORMAT:
        raise DiffInputError(f"golden {path}: format '{found_format}', expected "
                             f"'{GOLDEN_FORMAT}'")
    images = need("images")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] < 1:
        raise DiffInputError(f"golden {path}: array 'images' is {images.dtype} of shape "
                             f"{images.shape}, expected uint8 (n >= 1, h, w, c)")
    n = images.shape[0]
    need("layer_names")
    names = _names(archive, "layer_names", path)
    need("layer_kinds")
    kinds = _names(archive, "layer_kinds", path)
    shapes = shaped("layer_shapes", (len(names), 3), "iu")
    if len(kinds) != len(names) or len(names) < 2:
        raise DiffInputError(f"golden {path}: {len(names)} layer names and {len(kinds)} kinds")
    need("neuron_layers")
    neuron_layers = _names(archive, "neuron_layers", path)
    need("firing_layers")
    firing_layers = _names(archive, "firing_layers", path)
    shape_of = {name: tuple(int(v) for v in s) for name, s in zip(names, shapes)}
    expected_neurons = [nm for nm, kind in zip(names, kinds) if kind in NEURON_KINDS]
    if neuron_layers != expected_neurons or not set(firing_layers) <= set(neuron_layers):
        raise DiffInputError(f"golden {path}: neuron_layers {neuron_layers} / firing_layers "
                             f"{firing_layers} do not match the layer kinds {kinds}")
    need("readout")
    readout = _text(archive, "readout", path)
    classes = int(np.prod(shape_of[names[-1]]))

    def times(name):
        value = shaped(f"first_spike_times/{name}", (n,) + shape_of[name], "iu")
        return value.astype(np.int32)

    golden = Golden(
        path=path,
        images=images,
        labels=archive["labels"].astype(np.int64) if "labels" in files else None,
        readout=readout,
        layer_names=names,
        layer_kinds=kinds,
        layer_shapes=[shape_of[nm] for nm in names],
        neuron_layers=neuron_layers,
        firing_layers=firing_layers,
        first_spike_times={nm: times(nm) for nm in neuron_layers},
        vmem_at_fire_check={nm: shaped(f"vmem_at_fire_check/{nm}", (n,) + shape_of[nm], "f")
                            for nm in firing_layers},
        vmem_at_previous_check={nm: shaped(f"vmem_at_previous_check/{nm}",
                                           (n,) + shape_of[nm], "f") for nm in firing_layers},
        thresholds={},
        fire_windows={},
        magnitude={nm: shaped(f"magnitude/{nm}", (n,) + shape_of[nm], "f")
                   for nm, kind in zip(names, kinds) if kind in ("conv2d", "dense")},
        terms={nm: shaped(f"terms/{nm}", (n,) + shape_of[nm], "iu")
               for nm, kind in zip(names, kinds) if kind in ("conv2d", "dense")},
        output_potentials=shaped("output_potentials", (n, classes), "f"),
        predictions=shaped("predictions", (n,), "iu").astype(np.int64),
        model_file=_text(archive, "model_file", path) if "model_file" in files else "",
        model_sha256=_text(archive, "model_sha256", path) if "model_sha256" in files else "",
        source=_text(archive, "source", path) if "source" in files else "",
    )
    for name in firing_layers:
        window = shaped(f"fire_window/{name}", (2,), "iu")
        start, end = int(window[0]), int(window[1])
        golden.fire_windows[name] = (start, end)
        golden.thresholds[name] = shaped(f"thresholds/{name}", (max(end - start, 0),), "f")
    return golden


# ---- running the model --------------------------------------------------------------------------


@dataclass
class LibraryRun:
    """What libttfs gave on the golden's images."""

    engine: str
    backend: str
    spike_times: Dict[str, np.ndarray]  # neuron layer name -> (n, h, w, c) int32
    potentials: np.ndarray  # (n, classes) float32
    predictions: np.ndarray  # (n,) int32


def check_model_matches(model, golden: Golden, model_path: str) -> None:
    """DiffInputError unless the model has the golden's layers (names, kinds, shapes) and
    readout, so that the comparison is about the same network."""
    model_layers = [(info.name, info.kind, tuple(info.shape)) for info in model.layers]
    golden_layers = list(zip(golden.layer_names, golden.layer_kinds, golden.layer_shapes))
    if len(model_layers) != len(golden_layers):
        raise DiffInputError(f"model {model_path} has {len(model_layers)} layers "
                             f"({', '.join(n for n, _, _ in model_layers)}), the golden "
                             f"{golden.path} {len(golden_layers)} "
                             f"({', '.join(golden.layer_names)})")
    for index, (mine, theirs) in enumerate(zip(model_layers, golden_layers)):
        if mine != theirs:
            raise DiffInputError(f"model {model_path} layer {index} is '{mine[0]}' {mine[1]} "
                                 f"{mine[2]}, the golden's is '{theirs[0]}' {theirs[1]} "
                                 f"{theirs[2]}")
    if model.readout != golden.readout:
        raise DiffInputError(f"model {model_path} has readout {model.readout}, the golden "
                             f"{golden.path} was made with readout {golden.readout}")


def run_library(model, golden: Golden, engine: str, backend: str,
                batch: int = 64) -> LibraryRun:
    images = golden.images
    spike_times = {name: [] for name in golden.neuron_layers}
    potentials, predictions = [], []
    with model.session(backend=backend, engine=engine, max_batch=min(batch, len(images)),
                       record_spike_times=True) as session:
        for lo in range(0, len(images), batch):
            result = session.run(images[lo:lo + batch])
            potentials.append(result.potentials)
            predictions.append(result.predictions)
            for name in golden.neuron_layers:
                spike_times[name].append(session.spike_times(name))
        used_backend = session.backend
    return LibraryRun(engine=engine, backend=used_backend,
                      spike_times={k: np.concatenate(v) for k, v in spike_times.items()},
                      potentials=np.concatenate(potentials),
                      predictions=np.concatenate(predictions))


# ---- the comparison -----------------------------------------------------------------------------


@dataclass
class Check:
    """One fire check of the golden: the step, V just before it and the threshold."""

    step: int
    vmem: float
    threshold: float


@dataclass
class Mismatch:
    """One neuron whose first-spike time differs, and the verdict on it."""

    layer: str
    layer_index: int
    image: int
    neuron: Tuple[int, int, int]  # (h, w, c)
    library_time: int  # -1 = never fired
    golden_time: int
    tie: bool
    reason: str  # why it is, or is not, a tie
    step: Optional[int] = None  # te: the earlier of the two spike times
    vmem: Optional[float] = None  # the golden's V at te, the threshold there, their gap
    threshold: Optional[float] = None
    gap: Optional[float] = None
    bound: Optional[float] = None  # tie_bound at te
    magnitude: Optional[float] = None  # A and N of the neuron's potential
    terms: Optional[int] = None
    checks: List[Check] = field(default_factory=list)  # golden's deciding and previous check


@dataclass
class LayerTally:
    name: str
    kind: str
    compared: int = 0  # neuron x image pairs compared
    golden_spikes: int = 0  # of those, how many fired in the golden
    mismatches: int = 0
    ties: int = 0
    not_ties: int = 0
    not_compared: int = 0  # pairs of images with a mismatch in a layer below


@dataclass
class Problem:
    """A disagreement that is not a spike time: a potential or a prediction."""

    what: str  # "potential" | "prediction"
    image: int
    detail: str
    cls: Optional[int] = None


@dataclass
class DiffReport:
    model: str
    golden: str
    engine: str
    backend: str
    images: int
    readout: str
    layers: List[LayerTally]
    mismatches: List[Mismatch]  # in layer order, then image, then neuron
    problems: List[Problem]
    images_with_mismatch: int
    potentials_compared: int
    potential_max_difference: float  # over every image
    potential_max_at: Tuple[int, int]  # (image, class)
    potential_max_difference_compared: float  # over the images without a mismatch
    predictions_agree: int
    notes: List[str] = field(default_factory=list)

    @property
    def ties(self) -> int:
        return sum(1 for m in self.mismatches if m.tie)

    @property
    def not_ties(self) -> int:
        return sum(1 for m in self.mismatches if not m.tie)

    @property
    def agrees(self) -> bool:
        return self.not_ties == 0 and not self.problems

    @property
    def exit_code(self) -> int:
        return 0 if self.agrees else 1

    @property
    def verdict(self) -> str:
        if not self.agrees:
            return "DISAGREE"
        return "agree up to threshold ties" if self.mismatches else "agree"

    def first_mismatch(self, ties: Optional[bool] = None) -> Optional[Mismatch]:
        for mismatch in self.mismatches:
            if ties is None or mismatch.tie == ties:
                return mismatch
        return None

    def to_dict(self) -> dict:
        record = asdict(replace(self, mismatches=self.mismatches[:MISMATCHES_IN_JSON]))
        record.update(verdict=self.verdict, exit_code=self.exit_code, ties=self.ties,
                      not_ties=self.not_ties, mismatches_total=len(self.mismatches))
        first, first_not_tie = self.first_mismatch(), self.first_mismatch(ties=False)
        record["first_mismatch"] = None if first is None else asdict(first)
        record["first_non_tie_mismatch"] = None if first_not_tie is None else asdict(
            first_not_tie)
        return _plain(record)


def _plain(value):
    """JSON-ready: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _judge(golden: Golden, layer: str, image: int, position: tuple, library_time: int,
           golden_time: int) -> dict:
    """The verdict on one spike-time mismatch (the fields of Mismatch beyond where it is)."""
    if layer not in golden.thresholds:
        return dict(tie=False, reason="this layer never fires in the golden (the output "
                                      "layer under vmem readout), so no time can be a tie")
    start, end = golden.fire_windows[layer]
    table = golden.thresholds[layer]
    at = (image,) + position
    check_step = golden_time if golden_time >= 0 else end - 1
    checks = []
    if start <= check_step < end:
        checks.append(Check(check_step, float(golden.vmem_at_fire_check[layer][at]),
                            float(table[check_step - start])))
    if start <= check_step - 1 < end:
        checks.append(Check(check_step - 1, float(golden.vmem_at_previous_check[layer][at]),
                            float(table[check_step - 1 - start])))
    magnitude = float(golden.magnitude[layer][at]) if layer in golden.magnitude else 0.0
    terms = int(golden.terms[layer][at]) if layer in golden.terms else 0
    verdict = dict(checks=checks, magnitude=magnitude, terms=terms)
    step = min(t for t in (library_time, golden_time) if t >= 0)
    verdict["step"] = step
    if not start <= step < end:
        return dict(verdict, tie=False, reason=f"step {step} is outside the fire window "
                                               f"[{start}, {end})")
    check = next((c for c in checks if c.step == step), None)
    if check is None or not math.isfinite(check.vmem):
        return dict(verdict, tie=False, reason=(
            f"{check_step - step} steps before the golden's deciding check at {check_step}: V "
            f"is constant in the fire window and the thresholds fall by exp(-1/tau) per step, "
            f"so a gap of two or more steps is never a rounding tie"))
    gap = abs(check.vmem - check.threshold)
    bound = tie_bound(check.threshold, magnitude, terms)
    tie = gap <= bound
    return dict(verdict, tie=tie, vmem=check.vmem, threshold=check.threshold, gap=gap,
                bound=bound, reason=(
                    f"golden |V - vth| at step {step} is {gap:.3g} "
                    f"{'<=' if tie else '>'} tie bound {bound:.3g} (N {terms}, A {magnitude:.4g})"))


def compare(golden: Golden, run: LibraryRun, model: str = "") -> DiffReport:
    """Judges every first-spike time, then the potentials and predictions of the images whose
    spike times all agree."""
    n = golden.count
    index_of = {name: i for i, name in enumerate(golden.layer_names)}
    tallies = {name: LayerTally(name, golden.layer_kinds[index_of[name]])
               for name in golden.neuron_layers}
    mismatches: List[Mismatch] = []
    diverged = np.zeros(n, bool)
    for name in golden.neuron_layers:  # layer order: a mismatch explains what lies deeper
        expected = golden.first_spike_times[name]
        got = run.spike_times[name]
        tally = tallies[name]
        size = int(np.prod(expected.shape[1:]))
        judged = ~diverged
        tally.not_compared = int(np.sum(diverged)) * size
        tally.compared = int(np.sum(judged)) * size
        tally.golden_spikes = int(np.sum(expected[judged] >= 0))
        differs = (got != expected) & judged[:, None, None, None]
        for image, h, w, c in np.argwhere(differs):
            position = (int(h), int(w), int(c))
            verdict = _judge(golden, name, int(image), position, int(got[image, h, w, c]),
                             int(expected[image, h, w, c]))
            mismatches.append(Mismatch(layer=name, layer_index=index_of[name], image=int(image),
                                       neuron=position,
                                       library_time=int(got[image, h, w, c]),
                                       golden_time=int(expected[image, h, w, c]), **verdict))
            tally.mismatches += 1
            tally.ties += verdict["tie"]
            tally.not_ties += not verdict["tie"]
        diverged |= np.any(differs, axis=(1, 2, 3))

    output = golden.output_layer
    golden_v = golden.output_potentials.astype(np.float64)
    lib_v = run.potentials.astype(np.float64)
    difference = np.abs(lib_v - golden_v)
    magnitude = golden.magnitude[output].reshape(n, -1)
    terms = golden.terms[output].reshape(n, -1)
    tolerance = potential_tolerance(golden_v, magnitude, terms)
    problems: List[Problem] = []
    same = ~diverged
    for image, cls in np.argwhere((difference > tolerance) & same[:, None]):
        problems.append(Problem("potential", int(image), cls=int(cls), detail=(
            f"library {lib_v[image, cls]!r}, golden {golden_v[image, cls]!r}, |diff| "
            f"{difference[image, cls]:.3g} > tolerance {tolerance[image, cls]:.3g}")))
    output_times = golden.first_spike_times[output].reshape(n, -1)
    for image in np.flatnonzero((run.predictions != golden.predictions) & same):
        a, g = int(run.predictions[image]), int(golden.predictions[image])
        by_potential = golden.readout == "vmem" or not np.any(output_times[image] >= 0)
        close = abs(golden_v[image, a] - golden_v[image, g]) <= \
            tolerance[image, a] + tolerance[image, g]
        if not (by_potential and close):
            problems.append(Problem("prediction", int(image), detail=(
                f"library {a}, golden {g} (golden potentials {golden_v[image, a]!r} and "
                f"{golden_v[image, g]!r})")))
    worst = np.unravel_index(int(np.argmax(difference)), difference.shape)
    return DiffReport(
        model=model, golden=golden.path, engine=run.engine, backend=run.backend, images=n,
        readout=golden.readout, layers=[tallies[name] for name in golden.neuron_layers],
        mismatches=mismatches, problems=problems,
        images_with_mismatch=int(np.sum(diverged)),
        potentials_compared=int(np.sum(same)) * golden_v.shape[1],
        potential_max_difference=float(difference.max()),
        potential_max_at=(int(worst[0]), int(worst[1])),
        potential_max_difference_compared=float(difference[same].max()) if same.any() else 0.0,
        predictions_agree=int(np.sum(run.predictions == golden.predictions)))


def diff(model_path, golden_path, engine: str = "stepped", backend: str = "cpu",
         images: Optional[int] = None) -> DiffReport:
    """Loads both, runs the model on the golden's images and compares (DiffInputError on bad
    input; pyttfs.LibraryError when libttfs cannot be loaded)."""
    golden = load_golden(golden_path)
    if images is not None:
        if not 1 <= images <= golden.count:
            raise DiffInputError(f"--images {images}: the golden {golden.path} holds "
                                 f"{golden.count} images; expected 1 to {golden.count}")
        golden = golden.take(images)
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise DiffInputError(f"model {model_path}: no such file")
    import pyttfs  # here, so that reading a golden needs no library

    try:
        model = pyttfs.Model(model_path)
    except pyttfs.TtfsError as error:
        raise DiffInputError(f"model {model_path}: {error}") from None
    with model:
        check_model_matches(model, golden, model_path)
        if tuple(golden.images.shape[1:]) != tuple(model.input_shape):
            raise DiffInputError(f"golden {golden.path}: images of shape "
                                 f"{golden.images.shape[1:]}, model input {model.input_shape}")
        try:
            run = run_library(model, golden, engine, backend)
        except (pyttfs.TtfsError, ValueError) as error:
            raise DiffInputError(f"model {model_path}: cannot run it with engine {engine}, "
                                 f"backend {backend}: {error}") from None
    report = compare(golden, run, model=model_path)
    if golden.model_sha256:
        digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
        if digest != golden.model_sha256:
            report.notes.append(f"the model's sha256 differs from that of "
                                f"{golden.model_file or 'the model'} the golden was made from")
    return report


# ---- output -------------------------------------------------------------------------------------


def _time(t: int) -> str:
    return "never" if t < 0 else str(t)


def describe_mismatch(m: Mismatch) -> List[str]:
    h, w, c = m.neuron
    lines = [f"layer {m.layer} (layer {m.layer_index}), image {m.image}, neuron (h={h}, w={w}, "
             f"c={c}): libttfs first spike {_time(m.library_time)}, golden "
             f"{_time(m.golden_time)}"]
    for check in m.checks:
        lines.append(f"  golden at step {check.step}: V = {check.vmem!r}, threshold "
                     f"{check.threshold!r}, V - vth = {check.vmem - check.threshold:.3g}")
    lines.append(f"  {'a threshold tie' if m.tie else 'NOT a tie'}: {m.reason}")
    return lines


def format_report(report: DiffReport) -> str:
    lines = [f"model   {report.model}", f"golden  {report.golden} ({report.images} images, "
             f"readout {report.readout})", f"run     engine {report.engine}, backend "
             f"{report.backend}"]
    lines += [f"note    {note}" for note in report.notes]
    lines.append("")
    first = report.first_mismatch()
    shown = [first]
    if first is None:
        lines.append("first-spike times: every neuron of every layer agrees")
    else:
        lines.append("first disagreement: " + "\n".join(describe_mismatch(first)))
        first_not_tie = report.first_mismatch(ties=False)
        if first_not_tie is not None and first_not_tie is not first:
            lines.append("first mismatch that is not a tie: "
                         + "\n".join(describe_mismatch(first_not_tie)))
            shown.append(first_not_tie)
    lines.append("")
    header = ("layer", "kind", "compared", "golden spikes", "mismatches", "ties", "non-tie",
              "not compared")
    rows = [header] + [(t.name, t.kind, t.compared, t.golden_spikes, t.mismatches, t.ties,
                        t.not_ties, t.not_compared) for t in report.layers]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    for row in rows:
        lines.append("  ".join(str(v).ljust(widths[i]) if i < 2 else str(v).rjust(widths[i])
                               for i, v in enumerate(row)).rstrip())
    lines.append("(compared: neuron x image pairs; not compared: images with a mismatch in a "
                 "layer below)")
    lines.append("")
    image, cls = report.potential_max_at
    lines.append(f"output potentials: max |libttfs - golden| {report.potential_max_difference:.3g}"
                 f" (image {image}, class {cls}); {report.potentials_compared} compared "
                 f"(images without a mismatch), max there "
                 f"{report.potential_max_difference_compared:.3g}")
    lines.append(f"predictions: {report.predictions_agree} of {report.images} agree")
    for problem in report.problems[:MISMATCHES_LISTED]:
        where = f"image {problem.image}" + (f" class {problem.cls}" if problem.cls is not None
                                            else "")
        lines.append(f"  {problem.what} of {where}: {problem.detail}")
    listed = [m for m in report.mismatches if all(m is not s for s in shown)]
    listed = listed[:MISMATCHES_LISTED]
    if listed:
        lines.append("")
        lines.append(f"other mismatches ({len(report.mismatches)} in all; "
                     f"{len(listed)} more listed):")
        for m in listed:
            lines.append("  " + "\n  ".join(describe_mismatch(m)))
    lines.append("")
    lines.append(f"result: {report.verdict} ({report.ties} ties, {report.not_ties} non-tie "
                 f"mismatches, {len(report.problems)} potential/prediction problems)")
    return "\n".join(lines)


def format_json(report: DiffReport) -> str:
    return json.dumps(report.to_dict(), sort_keys=False)
