"""The opt-in compatibility route (python_client/compat, docs/compat.md) as the CPU tests see it:
the `liger-kernel` distribution built with pip into a temporary --target folder (never installed
in the running environment), and code run in a subprocess with that folder and python_client/ on
PYTHONPATH, as an installed shim would be seen. tests/python/test_compat_route.py and
test_trl_route.py use it (test modules cannot import each other under importlib mode).

A test module takes the fixture by importing it:

    from ligerd.testing.compat_shim import run, shim_dir  # noqa: F401  (shim_dir: a fixture)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# python_client/ of the source tree this module is in (the CPU suite imports ligerd from there).
PYTHON_CLIENT = Path(__file__).resolve().parents[2]
COMPAT = PYTHON_CLIENT / "compat"


def build_shim(target: Path, scratch: Path, compat: Path = COMPAT) -> Path:
    """Builds python_client/compat (or `compat`: the GPU tests, which import the built ligerd,
    name the source tree's) into the --target folder `target`, from a copy in `scratch` so that
    the build leaves nothing in the tree."""
    if not (compat / "pyproject.toml").is_file():
        raise FileNotFoundError(f"compat shim sources not found at {compat} (a source checkout "
                                "of ligerd is needed: python_client/compat)")
    subprocess.run(["cp", "-r", str(compat), str(scratch)], check=True)
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(target), str(scratch / "compat")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    return target


@pytest.fixture(scope="module")
def shim_dir(tmp_path_factory):
    """A folder holding the built `liger_kernel` shim (one build per test module)."""
    return build_shim(tmp_path_factory.mktemp("liger_kernel_shim"),
                      tmp_path_factory.mktemp("shim_src"))


def install_no_deps(target: Path, requirements: list[str]) -> Path:
    """pip-installs `requirements` (exact pins) from the package index into the --target folder
    `target` without their dependencies, for a framework whose own pins exclude this
    environment's transformers/TRL (tests/python/test_llamafactory_route.py,
    test_axolotl_route.py): its code is seen unchanged through run()'s `paths`, never installed
    here. A failed install fails the test, saying why (the CPU suite installs from PyPI anyway)."""
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                        "--no-deps", "--target", str(target), *requirements],
                       capture_output=True, text=True)
    assert p.returncode == 0, (f"could not install {requirements} from the package index "
                               f"(pip install --no-deps --target):\n{p.stdout}{p.stderr}")
    return target


def run(shim_dir: Path, code: str, timeout: float = 600, paths: tuple = ()) -> str:
    """Runs `code` (dedented) in a fresh interpreter that sees the shim and ligerd's sources and
    nothing else of the repository (plus the folders `paths`, first), with local dispatch and no
    CUDA device; asserts it exits 0 and returns its stdout."""
    path = [str(p) for p in paths] + [str(shim_dir), str(PYTHON_CLIENT)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path),
               LIGERD_DISPATCH="local", PYTHONWARNINGS="default", CUDA_VISIBLE_DEVICES="")
    # Run from an empty folder: nothing of the repository is importable but what PYTHONPATH names.
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, env=env, cwd=shim_dir.parent, timeout=timeout)
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p.stdout


def run_result(code: str, out: Path, *, device: str, path=(), env=None, timeout: float = 600) -> dict:
    """Runs `code` (dedented; OUT and DEVICE are defined before it) in a fresh interpreter from the
    empty folder `out` (nothing of the repository importable but what PYTHONPATH names), with
    `path` then ligerd on PYTHONPATH (on the CPU: the source tree's, no CUDA device; on the GPU:
    what PYTHONPATH already names, the built package), local dispatch unless LIGERD_DISPATCH says
    otherwise, and `env` added; asserts it exits 0 and returns the JSON of its ``RESULT`` line."""
    code = f"OUT = {str(out)!r}\nDEVICE = {device!r}\n" + textwrap.dedent(code)
    path = [str(p) for p in path]
    env = dict(os.environ, LIGERD_DISPATCH=os.environ.get("LIGERD_DISPATCH", "local"), PYTHONWARNINGS="ignore",
               **(env or {}))
    if device == "cpu":
        path.append(str(PYTHON_CLIENT))
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(out),
                       timeout=timeout)
    assert p.returncode == 0, f"stdout:\n{p.stdout[-6000:]}\nstderr:\n{p.stderr[-8000:]}"
    return json.loads(p.stdout.split("RESULT ", 1)[1].splitlines()[0])
