"""Command line: python -m pyttfs info | diff MODEL GOLDEN"""
from __future__ import annotations

import argparse
import sys


def _info(_args: argparse.Namespace) -> int:
    import pyttfs

    print(f"pyttfs {pyttfs.version()}")
    print(f"library: {pyttfs.library_path}")
    print(f"build: {pyttfs.build_info()}")
    print(f"CUDA compiled: {'yes' if pyttfs.cuda_compiled() else 'no'}")
    print(f"CUDA devices: {pyttfs.cuda_device_count()}")
    return 0


def _diff(args: argparse.Namespace) -> int:
    from pyttfs import diff

    try:
        report = diff.diff(args.model, args.golden, engine=args.engine, backend=args.backend,
                           images=args.images)
    except diff.DiffInputError as error:
        # one line, and 2: exit 1 means "the runs disagree", never "could not compare"
        print(f"python -m pyttfs diff: error: {error}", file=sys.stderr)
        return 2
    print(diff.format_json(report) if args.json else diff.format_report(report))
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyttfs",
                                     description="ttfs spiking-network runtime (libttfs)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="print version, library path and build information")
    info.set_defaults(handler=_info)
    compare = commands.add_parser(
        "diff", help="compare a model's first-spike times and potentials with a golden dump",
        description="Run MODEL with libttfs on the images of GOLDEN (a dump written by "
                    "tests/golden/regenerate.py from the TensorFlow reference) and report, "
                    "layer by layer, where the two first disagree and whether each mismatch "
                    "is a threshold tie. Exit 0: agree up to ties; 1: a disagreement; "
                    "2: bad input.")
    compare.add_argument("model", help="the .ttfs model file")
    compare.add_argument("golden", help="the golden dump (.npz)")
    compare.add_argument("--engine", choices=("stepped", "analytic"), default="stepped",
                         help="(default: %(default)s)")
    compare.add_argument("--backend", choices=("cpu", "auto", "cuda"), default="cpu",
                         help="(default: %(default)s)")
    compare.add_argument("--images", type=int, default=None, metavar="N",
                         help="compare the first N images only (default: all of the golden's)")
    compare.add_argument("--json", action="store_true",
                         help="print one JSON object instead of the report")
    compare.set_defaults(handler=_diff)
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except OSError as error:  # pyttfs.LibraryError: no library, or the wrong one
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
