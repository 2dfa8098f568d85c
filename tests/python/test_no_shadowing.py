"""Nothing in the repository can hide an installed package. A script puts its own folder first on
sys.path (`python3 bench/run_kernels.py` -> bench/), and the CPU suite puts python_client/ there;
a module or package in such a folder whose name is also an installed distribution's (HF's
`kernels`, which bench/kernels/ once hid from transformers) or a generic name a PyPI package may
take (`common`, `ops`, `tests`, `utils`, ...) would be imported instead of it."""

import importlib.machinery
import importlib.metadata
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Folders that reach sys.path: those holding a script run as `python3 <folder>/<script>.py`,
# and the package root of the CPU suite (tests/python/pytest.ini).
SCRIPT_FOLDERS = sorted({p.parent for p in ROOT.glob("**/*.py")
                         if ".git" not in p.parts and "build" not in p.parts[len(ROOT.parts):][:1]
                         and p.read_text(errors="replace").find('if __name__ == "__main__"') >= 0})
PATH_FOLDERS = sorted(set(SCRIPT_FOLDERS) | {ROOT / "python_client"})

# Names taken on PyPI that a repository folder must never use for a module or package, whether
# installed here or not (a user may have them).
GENERIC = {"kernels", "ops", "common", "tests", "test", "utils", "util", "helpers", "bench",
           "benchmark", "benchmarks", "harness", "examples", "scripts", "server", "client", "proto",
           "deploy", "transformers", "torch", "liger_kernel", "setup_utils", "conftest_helpers"}
# Names that are ours (ligerd's packages) or are scripts never imported by another module.
OURS = {"ligerd", "ligerd_bench", "setup", "conftest"}


def importable_names(folder: Path):
    """Module and regular-package names that `folder` on sys.path makes importable."""
    names = set()
    for p in folder.iterdir():
        if p.suffix == ".py":
            names.add(p.stem)
        elif p.is_dir() and (p / "__init__.py").is_file():
            names.add(p.name)
    return names


def installed_names():
    """Top-level import names of the installed distributions."""
    try:
        return set(importlib.metadata.packages_distributions())
    except Exception:  # noqa: BLE001
        return set()


def test_the_scan_sees_the_script_folders():
    rel = {str(f.relative_to(ROOT)) for f in PATH_FOLDERS}
    assert {"bench", "examples", "python_client"} <= rel, rel


@pytest.mark.parametrize("folder", PATH_FOLDERS, ids=lambda f: str(f.relative_to(ROOT)) or ".")
def test_no_module_hides_an_installed_or_generic_package(folder):
    repo_paths = {str(ROOT), *(str(f) for f in PATH_FOLDERS)}
    clean_path = [p for p in sys.path if p and str(Path(p).resolve()) not in repo_paths]
    installed = installed_names()
    clashes = []
    for name in sorted(importable_names(folder) - OURS):
        if name in GENERIC or name in installed or name in sys.stdlib_module_names:
            clashes.append(name)
        elif importlib.machinery.PathFinder.find_spec(name, clean_path) is not None:
            clashes.append(name)
    assert not clashes, (f"{folder.relative_to(ROOT)}/ makes {clashes} importable, which would hide "
                         f"an installed package of that name: rename them")


def test_the_old_clash_would_be_caught(tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    (tmp_path / "common.py").write_text("")
    assert {"kernels", "common"} <= importable_names(tmp_path) & GENERIC
