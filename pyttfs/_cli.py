"""The `ttfs-infer` console script of an installed pyttfs: runs the ttfs-infer binary that the
wheel ships next to libttfs.so (pyttfs/ttfs-infer), with the same arguments."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def binary() -> Path:
    """The ttfs-infer program next to the library pyttfs would load."""
    return Path(__file__).resolve().parent / "ttfs-infer"


def ttfs_infer() -> None:
    program = binary()
    if not program.is_file():
        sys.stderr.write(f"ttfs-infer: error: {program} is missing; this pyttfs was not installed "
                         "from a wheel (build the checkout with CMake: build/ttfs-infer)\n")
        sys.exit(1)
    # exec: the program's exit status, signals and standard streams are the caller's own.
    os.execv(str(program), [str(program), *sys.argv[1:]])
