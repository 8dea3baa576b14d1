"""python -m export: convert a Keras CNN into a ttfs model file, step by step or all at once.

Each step has its own options (`python -m export STEP --help` lists exactly those); an option
that belongs to another step is refused with a message naming the steps that take it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence

DESCRIPTION = """\
Convert a CNN into a time-to-first-spike SNN (T2FSNN) and write a .ttfs model file.

Steps (each reads the run directory and writes its own files there; `all` runs them in order):
  train      train a CNN (the reference MNIST CNN, or --arch vgg) on --dataset, or take
             --keras-model -> ann.keras, train.json
  stats      per-neuron 99.9th percentiles of the BN-fused ANN, lambda per layer -> stats.json
  convert    fold batch norm, pooling and input scaling, normalise by the lambdas, initial
             constants -> converted.ttfs
  train-tc   train the per-layer time constants (tau, td) -> trained.ttfs, tc.json
  export     final model.ttfs, report.json/.md (ANN and SNN accuracy, lambdas, constants),
             and the test set as IDX files (data/) for ttfs-infer
  evaluate   libttfs over the test set with the stepped and analytic engines (identical), the
             TF reference simulator on a subset, spikes per layer, accuracy against time
             step, images/s -> results/ (report.md, results.json, PNG plots)
  all        every step above

`python -m export STEP --help` shows the options of one step. The dataset given to `train` is
recorded in the run directory; later steps use it unless given --dataset themselves.
"""


def _run_group(parser, d) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--run-dir", type=Path, default=d.run_dir,
                   help="directory holding every step's files (default: %(default)s)")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    g.add_argument("--reference-recipe", action="store_true",
                   help="the reference's documented MNIST commands as they run (its main.py "
                        "defaults, docs/ALGORITHM.md): 500 epochs at batch 100 keeping the best "
                        "validation epoch, statistics on the test images, `or` pooling, vmem "
                        "readout, the reference time-constant rule. Options given explicitly "
                        "still win: add --pool-mode gated for the reference's other pooling "
                        "path (its run script and config file)")


def _data_group(parser, d) -> None:
    from export.datasets import DATASET_HELP

    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default=d.dataset, metavar="SPEC",
                   help=f"{DATASET_HELP} (default: mnist for `train`; later steps: the "
                        "dataset recorded by `train`)")
    g.add_argument("--data-dir", default=d.data_dir, metavar="DIR",
                   help="for mnist / fashion-mnist: the directory holding their four IDX files "
                        "(default: $TTFS_MNIST_DIR / $TTFS_FASHION_MNIST_DIR, then the places "
                        "export/datasets.py lists)")
    g.add_argument("--mnist", dest="data_dir", metavar="DIR", help=argparse.SUPPRESS)
    g.add_argument("--validation-size", type=int, default=d.validation_size, metavar="N",
                   help="the last N training images form the validation split (default: 5000 "
                        "for mnist / fashion-mnist, else the dataset's own split or 10 %%)")
    g.add_argument("--train-images", type=int, default=d.train_images, metavar="N",
                   help="use only the first N training images (default: all)")


def _train_group(parser, d) -> None:
    from export.keras_model import VGG_LAYOUT

    g = parser.add_argument_group("train")
    g.add_argument("--keras-model", default=d.keras_model, metavar="FILE",
                   help="use this saved Keras model (.keras, or .h5 from Keras 2 or 3) instead "
                        "of training one")
    g.add_argument("--keras-input-scale", default=d.keras_input_scale,
                   choices=("auto", "1", "255"),
                   help="the pixel range the Keras model expects: 1 for [0, 1] inputs, 255 for "
                        "0-255 pixels; auto: 255 when it starts with a Rescaling layer, else 1. "
                        "The SNN always takes [0, 1] inputs; this scale (and any Rescaling) is "
                        "folded into the first weight layer (default: %(default)s)")
    g.add_argument("--arch", choices=("reference", "vgg"), default=d.arch,
                   help="the network to train: the reference MNIST CNN of docs/ALGORITHM.md "
                        "(for the dataset's input shape and classes), or a VGG-style CNN (see "
                        "--vgg-layout) (default: %(default)s)")
    g.add_argument("--vgg-layout", default=d.vgg_layout, metavar="LAYOUT",
                   help="--arch vgg: 3x3 SAME conv widths and M for a 2x2 max pool, "
                        f"comma-separated (default: {VGG_LAYOUT})")
    g.add_argument("--vgg-dense", default=d.vgg_dense, metavar="UNITS",
                   help="--arch vgg: hidden dense layers before the output, comma-separated, "
                        "or none (default: %(default)s)")
    g.add_argument("--vgg-dropout", type=float, default=d.vgg_dropout, metavar="RATE",
                   help="--arch vgg: dropout rate before each dense layer (default: "
                        "%(default)s)")
    g.add_argument("--epochs", type=int, default=d.epochs, help="(default: %(default)s; the "
                   "reference recipe ran 500 and kept the best validation epoch)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="(default: %(default)s)")
    g.add_argument("--learning-rate", type=float, default=d.learning_rate,
                   help="Adam learning rate (default: %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    g.add_argument("--augment-shift", type=int, default=d.augment_shift, metavar="PIXELS",
                   help="translate each training image by up to PIXELS per axis, anew every "
                        "epoch (default: %(default)s, the reference: no augmentation)")
    g.add_argument("--augment-flip", action="store_true",
                   help="mirror each training image left-right with probability 1/2, anew every "
                        "epoch (default: off)")
    g.add_argument("--keep", choices=("best", "last"), default=d.keep,
                   help="weights to keep: the best validation epoch (the reference) or the "
                        "last epoch (default: %(default)s)")
    g.add_argument("--cosine-decay", action="store_true",
                   help="cosine learning-rate decay to 0 over the epochs (default: constant, "
                        "as the reference)")
    g.add_argument("--quiet-background", type=int, default=d.quiet_background,
                   metavar="EPOCHS",
                   help="keep hidden neurons silent on blank input: fold batch norm, clip the "
                        "hidden layers' biases to <= 0 and fine-tune EPOCHS epochs keeping "
                        "them there (export/quiet.py; also after --keras-model) (default: "
                        "%(default)s, off)")
    g.add_argument("--quiet-learning-rate", type=float, default=d.quiet_learning_rate,
                   help="peak learning rate of that fine-tune, decayed along a cosine "
                        "(default: %(default)s)")
    g.add_argument("--quiet-activity-l1", type=float, default=d.quiet_activity_l1,
                   help="L1 penalty per image on the hidden activations during that "
                        "fine-tune: fewer active neurons, fewer spikes (default: %(default)s)")


def _stats_group(parser, d) -> None:
    g = parser.add_argument_group("stats")
    g.add_argument("--stats-on", choices=("train", "test"), default=d.stats_on,
                   help="images for the statistics: train (default, no test leakage) or test "
                        "(what the reference did)")
    g.add_argument("--stats-images", type=int, default=d.stats_images,
                   help="use only the first N images of that split (default: all)")
    g.add_argument("--percentile", type=float, default=d.percentile,
                   help="(default: %(default)s)")


def _convert_group(parser, d) -> None:
    g = parser.add_argument_group("convert")
    from export.ttfs_format import POOL_MODE_NAMES

    g.add_argument("--pool-mode", choices=POOL_MODE_NAMES, default=d.pool_mode,
                   help="max-pooling of spikes (docs/ALGORITHM.md section 5): `or` passes every "
                        "step at which a child fires (the reference with f_spike_max_pool off, "
                        "the default of its main.py); `gated` lets the child with the largest "
                        "spike counter pass its spike (the reference with f_spike_max_pool on, "
                        "set by its run script and config file); `earliest` passes only the "
                        "first child spike (true TTFS pooling; equal to gated when td_fire <= 0 "
                        "and vth0 <= 1). Which of the two reference paths made the published "
                        "99.22 %% is not recorded (default: %(default)s)")
    g.add_argument("--readout", choices=("vmem", "first_spike"), default=d.readout,
                   help="prediction from the output potentials (reference) or the first "
                        "output spike (default: %(default)s)")
    g.add_argument("--time-fire-start", type=int, default=d.time_fire_start,
                   help="T_s (default: %(default)s)")
    g.add_argument("--time-fire-duration", type=int, default=d.time_fire_duration,
                   help="T_d (default: %(default)s)")
    g.add_argument("--time-steps", type=int, default=d.time_steps,
                   help="T (default: 400, or as many as a deeper network's windows need: "
                        "max(400, D*T_s + T_d) for an output layer at depth D)")
    g.add_argument("--vth0", type=float, default=d.vth0,
                   help="threshold amplitude (default: %(default)s)")
    g.add_argument("--tau", type=float, default=d.tau,
                   help="initial tau_fire of every neuron layer, before time-constant training "
                        "(default: %(default)s; with T_d = 4*tau the coded values span the "
                        "same range, exp(-4), in finer steps)")


def _train_tc_group(parser, d) -> None:
    g = parser.add_argument_group("train-tc")
    g.add_argument("--tc-rule", choices=("reference", "paper"), default=d.tc_rule,
                   help="update rule: the reference code's, quirks included, or the paper's "
                        "(default: %(default)s)")
    g.add_argument("--tc-passes", type=int, default=d.tc_passes, help="(default: %(default)s)")
    g.add_argument("--tc-images", type=int, default=d.tc_images,
                   help="first N training images, in order (default: %(default)s)")
    g.add_argument("--tc-batch-size", type=int, default=d.tc_batch_size,
                   help="(default: %(default)s)")
    g.add_argument("--tc-save-every", type=int, default=d.tc_save_every,
                   help="save the constants every N images (default: %(default)s)")
    g.add_argument("--tc-snn", choices=("native", "tf"), default=d.tc_snn,
                   help="SNN pass inside training: libttfs (fast) or the TensorFlow stepped "
                        "simulator (default: %(default)s)")


def _export_group(parser, d) -> None:
    g = parser.add_argument_group("export")
    g.add_argument("--val-images", type=int, default=d.val_images,
                   help="SNN validation accuracy on the first N validation images "
                        "(default: all)")


def _evaluate_group(parser, d) -> None:
    from export.evaluate import add_arguments

    add_arguments(parser.add_argument_group("evaluate"))


GROUPS: Dict[str, Callable] = {
    "run": _run_group, "data": _data_group, "train": _train_group, "stats": _stats_group,
    "convert": _convert_group, "train-tc": _train_tc_group, "export": _export_group,
    "evaluate": _evaluate_group,
}
# The option groups each step reads (`all` reads every one).
STEP_GROUPS: Dict[str, Sequence[str]] = {
    "train": ("run", "data", "train"),
    "stats": ("run", "data", "stats"),
    "convert": ("run", "convert"),
    "train-tc": ("run", "data", "train-tc"),
    "export": ("run", "data", "export"),
    "evaluate": ("run", "data", "evaluate"),
    "all": tuple(GROUPS),
}
HELPS = {"train": "train a CNN on --dataset (or take --keras-model)",
         "stats": "activation statistics and lambdas",
         "convert": "fold BN, pooling and input scaling; normalise",
         "train-tc": "time-constant training",
         "export": "final model file and report",
         "evaluate": "libttfs over the test set, TF agreement, summary and plots",
         "all": "every step in order"}


def _add_step_options(parser: argparse.ArgumentParser, step: str) -> argparse.ArgumentParser:
    from export.pipeline import Options

    d = Options()
    for group in STEP_GROUPS[step]:
        GROUPS[group](parser, d)
    return parser


def _step_parser(step: str, prog: str = "python -m export") -> argparse.ArgumentParser:
    """A parser with exactly the options of one step."""
    return _add_step_options(argparse.ArgumentParser(prog=f"{prog} {step}",
                                                     description=HELPS[step]), step)


def _option_owners() -> Dict[str, List[str]]:
    """Every option string -> the steps (besides `all`) that take it."""
    owners: Dict[str, List[str]] = {}
    for step in STEP_GROUPS:
        if step == "all":
            continue
        for action in _step_parser(step)._actions:
            for string in action.option_strings:
                if string.startswith("--") and string != "--help":
                    owners.setdefault(string, []).append(step)
    return owners


def _parser() -> argparse.ArgumentParser:
    """The top-level parser: `python -m export --help` lists the steps."""
    parser = argparse.ArgumentParser(prog="python -m export", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for name in STEP_GROUPS:
        _add_step_options(sub.add_parser(name, help=HELPS[name], description=HELPS[name]), name)
    return parser


def _explicit_options(argv) -> set:
    """Option names (as Options fields) that appear on the command line."""
    words = sys.argv[1:] if argv is None else argv
    return {w[2:].split("=", 1)[0].replace("-", "_") for w in words if w.startswith("--")}


def _reject_foreign(step: str, parser: argparse.ArgumentParser, extra: List[str]) -> None:
    """Say which steps take an option this step does not use (or that none does)."""
    owners = _option_owners()
    for word in extra:
        if not word.startswith("-"):
            parser.error(f"unexpected argument {word!r}")
        name = word.split("=", 1)[0]
        matches = [o for o in owners if o.startswith(name)] if name not in owners else [name]
        if len(matches) == 1 and step != "all":
            steps = owners[matches[0]]
            parser.error(f"{matches[0]} is not an option of the `{step}` step (it does not use "
                         f"it); it belongs to: {', '.join(steps + ['all'])}. "
                         f"`python -m export {step} --help` lists this step's options")
        parser.error(f"unknown option {name}; `python -m export {step} --help` lists this "
                     "step's options")


def parse(argv=None):
    """(step name, Options) from a command line; options outside the step are refused."""
    from export.pipeline import REFERENCE_RECIPE, Options

    words = list(sys.argv[1:] if argv is None else argv)
    args, extra = _parser().parse_known_args(words)
    step = args.step
    if extra:
        _reject_foreign(step, _step_parser(step), extra)
    values = vars(args)
    if args.reference_recipe:
        given = _explicit_options(words[1:])
        values.update({k: v for k, v in REFERENCE_RECIPE.items() if k not in given})
    fields = set(Options.__dataclass_fields__)
    return step, Options(**{k: v for k, v in values.items() if k in fields})


def main(argv=None) -> int:
    from export.datasets import DatasetNotFoundError
    from export.evaluate import EngineMismatchError, EvaluationError
    from export.pipeline import STEPS, run_all

    step, options = parse(argv)
    try:
        if step == "all":
            run_all(options)
        else:
            STEPS[step](options)
    except (FileNotFoundError, ValueError, KeyError, EvaluationError, EngineMismatchError,
            DatasetNotFoundError, ImportError) as error:
        print(f"python -m export {step}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
