"""Importing a script or a package by its path, without putting its folder on sys.path (where the
folder's other files could hide installed packages): how the CPU suite imports the benchmark code
(bench/) and the demo (examples/) that are not part of the ligerd package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Optional


def load(name: str, path: Path, package_dir: Optional[Path] = None):
    """The module `name` from `path` (a package's __init__.py with `package_dir` given, whose
    submodules then import as `name.<sub>`), imported once and kept in sys.modules."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(package_dir)] if package_dir else None)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_bench(root: Path):
    """bench/ligerd_bench as the package `ligerd_bench` (root: the repository)."""
    bench = Path(root) / "bench" / "ligerd_bench"
    return load("ligerd_bench", bench / "__init__.py", bench)
