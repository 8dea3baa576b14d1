"""The wheel: `pip wheel .` builds libttfs into the pyttfs package, and an installed wheel works
on its own, from outside the checkout, with no TTFS_LIBRARY or PYTHONPATH to help it: the
Python package, the `ttfs-infer` console script, and the C header a C program compiles against.

Slow (it compiles the library once, CPU-only), but part of the default run: a wheel that
cannot find its own library is the first thing a user would hit.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import pyttfs
from conftest import tiny_images

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

# Runs inside the fresh virtualenv, in a directory outside the checkout.
INSTALLED_SCRIPT = r"""
import importlib.util, json, sys
import numpy as np
import pyttfs
model_path, images_path, out_path = sys.argv[1:4]
images = np.load(images_path)
with pyttfs.Model(model_path) as model, model.session(backend="cpu", engine="stepped",
                                                      max_batch=len(images)) as session:
    result = session.run(images)
json.dump({
    "pyttfs_file": pyttfs.__file__,
    "library": str(pyttfs.library_path),
    "version": pyttfs.version(),
    "export_importable": importlib.util.find_spec("export") is not None,
    "predictions": result.predictions.tolist(),
    "potentials": result.potentials.tolist(),
    "include": pyttfs.get_include(),
    "read_back": pyttfs.read_images(images_path, model).tolist() == images.tolist(),
}, open(out_path, "w"))
"""


def _clean_env() -> dict:
    env = dict(os.environ)
    for name in ("TTFS_LIBRARY", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-w", str(dist),
               "--config-settings=cmake.define.TTFS_CUDA=OFF"]
    if importlib.util.find_spec("scikit_build_core") is not None:
        command.append("--no-build-isolation")  # already installed here: no download, faster
    _run(command, env=_clean_env(), timeout=900)
    wheels = list(dist.glob("pyttfs-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contents(wheel):
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    assert "pyttfs/libttfs.so" in names
    assert "pyttfs/ttfs-infer" in names
    assert (archive.getinfo("pyttfs/ttfs-infer").external_attr >> 16) & 0o111, "not executable"
    for module in ("__init__.py", "__main__.py", "_lib.py", "model.py", "images.py", "_cli.py"):
        assert f"pyttfs/{module}" in names
    assert "pyttfs/include/ttfs.h" in names
    assert archive.read("pyttfs/include/ttfs.h") == (REPO / "include" / "ttfs.h").read_bytes()
    top_level = {name.split("/")[0] for name in names}
    assert "export" not in top_level and "tests" not in top_level
    assert top_level == {"pyttfs", f"pyttfs-{pyttfs.version()}.dist-info"}, top_level
    # One wheel for every Python 3: the library is loaded with ctypes, not as an extension.
    assert re.fullmatch(rf"pyttfs-{re.escape(pyttfs.version())}-py3-none-linux_\w+\.whl",
                        wheel.name), wheel.name
    metadata = archive.read(
        f"pyttfs-{pyttfs.version()}.dist-info/METADATA").decode()
    assert "Requires-Dist: numpy" in metadata
    assert "requires-dist: pillow" in metadata.lower()
    entry_points = archive.read(f"pyttfs-{pyttfs.version()}.dist-info/entry_points.txt").decode()
    assert re.search(r"^ttfs-infer = pyttfs\._cli:ttfs_infer$", entry_points, re.M), entry_points


def test_installed_wheel_runs_outside_the_checkout(wheel, tmp_path, tiny_model_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    # numpy comes through the wheel's own dependency list; without a package index fall back
    # to this interpreter's numpy (still a separate environment for pyttfs itself).
    installed = subprocess.run(pip + ["install", str(wheel)], capture_output=True, text=True,
                               env=_clean_env(), timeout=600)
    if installed.returncode != 0:
        _run([sys.executable, "-m", "venv", "--clear", "--without-pip",
              "--system-site-packages", str(venv)], timeout=120)
        _run(pip + ["install", "--no-deps", "--no-index", str(wheel)], env=_clean_env(),
             timeout=600)

    images = tiny_images(6, seed=21)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    np.save(outside / "images.npy", images)
    (outside / "use_pyttfs.py").write_text(INSTALLED_SCRIPT)
    _run([str(python), "use_pyttfs.py", str(tiny_model_path), "images.npy", "out.json"],
         cwd=outside, env=_clean_env(), timeout=120)
    report = json.loads((outside / "out.json").read_text())

    site = venv.resolve()
    assert Path(report["pyttfs_file"]).resolve().is_relative_to(site), report["pyttfs_file"]
    assert Path(report["library"]).resolve() == Path(report["pyttfs_file"]).resolve().parent / "libttfs.so"
    assert report["version"] == pyttfs.version()
    assert report["export_importable"] is False

    # The same run through the checkout's pyttfs (whatever library it was pointed at).
    with pyttfs.Model(tiny_model_path) as model, \
            model.session(backend="cpu", engine="stepped", max_batch=6) as session:
        expected = session.run(images)
    assert report["predictions"] == expected.predictions.tolist()
    np.testing.assert_array_equal(np.array(report["potentials"], np.float32), expected.potentials)
    assert report["read_back"] is True
    include = Path(report["include"]).resolve()
    assert include.is_relative_to(site) and (include / "ttfs.h").is_file()

    # The console script runs the wheel's own ttfs-infer on the same images.
    script = venv / "bin" / "ttfs-infer"
    assert script.is_file()
    ran = _run([str(script), str(tiny_model_path), "images.npy", "--output", "-", "--top-k", "1"],
               cwd=outside, env=_clean_env(), timeout=120)
    rows = ran.stdout.strip().splitlines()
    assert rows[0].startswith("index,prediction,confidence")
    assert [int(row.split(",")[1]) for row in rows[1:]] == expected.predictions.tolist()
    assert "images per second" in ran.stderr  # the summary, beside the rows on stdout
    version = _run([str(script), "--version"], cwd=outside, env=_clean_env(), timeout=60)
    assert version.stdout.startswith(f"ttfs-infer {pyttfs.version()} (")

    # A C program compiles against the shipped header and links the installed library.
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        pytest.skip("no C compiler (cc) to build a program against the installed header")
    library_dir = Path(report["library"]).parent
    program = outside / "run_model"
    _run([compiler, "-Wall", "-Werror", str(REPO / "examples" / "c" / "run_model.c"),
          f"-I{include}", f"-L{library_dir}", "-lttfs", f"-Wl,-rpath,{library_dir}", "-o",
          str(program)], timeout=120)
    (outside / "image.bin").write_bytes((images[2].astype(np.float32) / np.float32(255))
                                        .astype("<f4").tobytes())
    printed = _run([str(program), str(tiny_model_path), "image.bin"], cwd=outside,
                   env=_clean_env(), timeout=60).stdout
    assert re.search(r"^prediction: (\d+)$", printed, re.M).group(1) == str(expected.predictions[2])
    potentials = np.float32(re.search(r"^potentials: (.*)$", printed, re.M).group(1).split())
    np.testing.assert_array_equal(potentials, expected.potentials[2])
