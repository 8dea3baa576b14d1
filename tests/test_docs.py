"""The repository stands on its own: every doc that code, docs, help texts and tests cite
exists in it, and nothing points outside the checkout."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def tracked_text_files():
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in names:
        path = REPO / name
        if path.suffix in (".py", ".md", ".cpp", ".h", ".hpp", ".cu", ".cuh", ".c", ".rs",
                           ".toml", ".txt", ".sh", ".in") or path.name in ("Makefile", "run"):
            yield name, path.read_text(errors="replace")


def test_every_cited_doc_exists():
    cited = {}
    for name, text in tracked_text_files():
        for doc in re.findall(r"\bdocs/[A-Za-z_]+\.md\b", text):
            cited.setdefault(doc, name)
        # A bare "ALGORITHM.md" (no docs/) once pointed at a page outside the repository.
        for match in re.finditer(r"(?<![/\w])ALGORITHM\.md", text if name != "tests/test_docs.py" else ""):
            line = text[:match.start()].count("\n") + 1
            assert name.startswith("docs/"), f"{name}:{line} cites {match.group(0)} without docs/"
    assert "docs/ALGORITHM.md" in cited
    missing = {doc: where for doc, where in cited.items() if not (REPO / doc).is_file()}
    assert not missing, f"cited but not in the repository: {missing}"


# A relative path that climbs with ../ (what a page of a neighbouring checkout would be cited by).
CLIMBING_PATH = re.compile(r"(?:\.\./)+[A-Za-z0-9_][\w.-]*(?:/[\w.-]+)*")


def _inside(target: Path, root: Path) -> bool:
    return root in target.parents and target.parent.is_dir()


def test_nothing_points_outside_the_checkout():
    """No file cites a path outside the repository: a relative path that climbs out of it, or
    into a folder it does not have, from the file's own folder and from every folder above it
    (where a command that uses the path may run), or this machine's work directory. A user has
    only the checkout."""
    root = REPO.resolve()
    for name, text in tracked_text_files():
        if name == "tests/test_docs.py":
            continue
        assert "/work/" not in text, name
        bases = [(REPO / name).parent.resolve()]
        while bases[-1] != root:
            bases.append(bases[-1].parent)
        for match in CLIMBING_PATH.finditer(text):
            line = text[:match.start()].count("\n") + 1
            assert any(_inside((base / match.group(0)).resolve(), root) for base in bases), \
                f"{name}:{line} cites {match.group(0)}, outside the checkout"


ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
# The directories whose every source file the map must name (not their subdirectories:
# cuda/cpu/ is listed on its own).
MAPPED_DIRECTORIES = ("cuda", "cuda/cpu", "export", "pyttfs")


def _architecture_paths():
    """Every repository path docs/ARCHITECTURE.md names in backquotes (`like/this.cpp`)."""
    text = ARCHITECTURE.read_text()
    return {token for token in re.findall(r"`([A-Za-z0-9_.][A-Za-z0-9_./-]*)`", text)
            if "/" in token}


def test_architecture_names_only_paths_that_exist():
    missing = sorted(path for path in _architecture_paths() if not (REPO / path).exists())
    assert not missing, f"docs/ARCHITECTURE.md names paths that do not exist: {missing}"


def test_architecture_names_every_source_file():
    named = _architecture_paths()
    tracked = subprocess.run(["git", "ls-files", *MAPPED_DIRECTORIES], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    sources = [name for name in tracked if str(Path(name).parent) in MAPPED_DIRECTORIES]
    assert len(sources) > 60, sources  # the listing worked: the map covers dozens of files
    unnamed = sorted(name for name in sources if name not in named)
    assert not unnamed, (f"source files that docs/ARCHITECTURE.md does not name (add a line "
                         f"saying what each owns): {unnamed}")


def test_readme_links_the_architecture_map():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    assert "docs/ARCHITECTURE.md" in layout
