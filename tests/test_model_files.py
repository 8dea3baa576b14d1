"""The model reader reads regular files only, checks the size first and reads no more than the
format's largest file (docs/FORMAT.md, TTFS_FMT_MAX_FILE_SIZE).

Before, a model path like /dev/zero was read until memory ran out, and a FIFO blocked forever.
Each case here is refused with TTFS_ERR_IO and a message naming the path and what it is. The
calls that could hang run in a subprocess with a timeout, so a regression fails instead of
stalling the suite.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from ctypes import byref, c_void_p
from pathlib import Path

import numpy as np
import pytest

import pyttfs
from export.ttfs_format import CONST
from pyttfs import Status, lib

MAX_FILE = CONST["TTFS_FMT_MAX_FILE_SIZE"]


def load_status(path):
    handle = c_void_p()
    status = lib.ttfs_model_load_file(os.fsencode(path), byref(handle))
    if status == Status.OK:
        lib.ttfs_model_free(handle)
    return status, pyttfs._lib.last_error()


def load_in_subprocess(path, timeout=30):
    """(status, message) of loading `path` in a fresh interpreter; fails on a hang."""
    code = ("import os, sys; from ctypes import byref, c_void_p; import pyttfs; "
            "h = c_void_p(); s = pyttfs.lib.ttfs_model_load_file(os.fsencode(sys.argv[1]), byref(h)); "
            "print(s); print(pyttfs._lib.last_error())")
    repo = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                              text=True, timeout=timeout, cwd=repo,
                              env=dict(os.environ, PYTHONPATH=str(repo)))
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path} did not return within {timeout} s")
    assert done.returncode == 0, done.stderr
    status, message = done.stdout.split("\n", 1)
    return int(status), message.strip()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero on this system")
def test_dev_zero_is_refused_before_reading():
    status, message = load_in_subprocess("/dev/zero")
    assert status == Status.ERR_IO, message
    assert "/dev/zero" in message and "character device" in message and "regular file" in message


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    status, message = load_in_subprocess(fifo)
    assert status == Status.ERR_IO, message
    assert str(fifo) in message and "FIFO" in message and "regular file" in message


def test_a_directory_is_refused(tmp_path):
    status, message = load_status(tmp_path)
    assert status == Status.ERR_IO
    assert str(tmp_path) in message and "directory" in message and "regular file" in message


def test_a_file_larger_than_the_format_allows_is_refused_by_its_size(tmp_path):
    """A sparse file one byte past the limit: refused from its size alone, so nothing is
    allocated or read (the test would need 4 GiB of memory otherwise)."""
    big = tmp_path / "big.ttfs"
    with open(big, "wb") as out:
        out.truncate(MAX_FILE + 1)
    status, message = load_in_subprocess(big)
    assert status == Status.ERR_IO, message
    assert str(MAX_FILE + 1) in message and str(MAX_FILE) in message


def test_memory_larger_than_the_format_allows_is_refused_before_the_crc(tmp_path, tiny_model_path):
    """ttfs_model_load_memory on a mapping of a sparse file whose header claims its (too large)
    size: refused from the header, before the CRC would read every page."""
    big = tmp_path / "big-memory.ttfs"
    header = bytearray(tiny_model_path.read_bytes()[:CONST["TTFS_FMT_HEADER_SIZE"]])
    size = MAX_FILE + 64
    header[CONST["TTFS_FMT_H_FILE_SIZE"]:CONST["TTFS_FMT_H_FILE_SIZE"] + 8] = size.to_bytes(8, "little")
    with open(big, "wb") as out:
        out.write(header)
        out.truncate(size)
    mapped = np.memmap(big, dtype=np.uint8, mode="r", shape=(size,))
    handle = c_void_p()
    status = lib.ttfs_model_load_memory(mapped.ctypes.data, size, byref(handle))
    message = pyttfs._lib.last_error()
    del mapped
    assert status == Status.ERR_BAD_FIELD, message
    assert "file_size" in message and str(size) in message and str(MAX_FILE) in message


def test_regular_files_and_links_to_them_still_load(tmp_path, tiny_model_path):
    link = tmp_path / "link.ttfs"
    link.symlink_to(tiny_model_path)
    assert load_status(link)[0] == Status.OK
    assert load_status(tiny_model_path)[0] == Status.OK
    assert stat.S_ISREG(os.stat(link).st_mode)


def test_an_unreadable_file_is_an_io_error(tmp_path, tiny_model_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    locked = tmp_path / "locked.ttfs"
    locked.write_bytes(tiny_model_path.read_bytes())
    locked.chmod(0)
    status, message = load_status(locked)
    assert status == Status.ERR_IO and str(locked) in message
