"""Command line: python -m pyttfs info"""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyttfs",
                                     description="ttfs spiking-network runtime (libttfs)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="print version, library path and build information")
    info.set_defaults(handler=_info)
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
