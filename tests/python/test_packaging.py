"""`pip install ./python_client` as the README says it, into a fresh virtual environment: the
scikit-build-core build of python_client/pyproject.toml gives a package that imports from
site-packages (not from this checkout), carries ligerd._C built against this torch, and bundles
the daemon and ligerctl in ligerd/bin/, where the client finds a daemon to autostart.

The environment sees the system's site-packages (torch, grpcio: downloading torch again for one
test would cost gigabytes) but nothing of the repository: the check runs from an empty folder with
PYTHONPATH unset. The CMake tree is kept in build/wheel-test/ so a second run rebuilds nothing."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))}\nstdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    pytest.importorskip("scikit_build_core", reason="scikit-build-core (scripts/test-requirements.txt)")
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", "--system-site-packages", env_dir])
    py = env_dir / "bin" / "python"
    build_dir = ROOT / "build" / "wheel-test"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    _run([py, "-m", "pip", "install", "--disable-pip-version-check", "--no-build-isolation", "--no-deps",
          "-C", f"build-dir={build_dir}", ROOT / "python_client"], env=env, timeout=3000)
    return py


def _in_venv(py, code: str, tmp_path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LIGERD_BIN")}
    env["PATH"] = "/usr/bin:/bin"  # no ligerd on PATH: the bundled one must be found
    return _run([py, "-c", textwrap.dedent(code)], env=env, cwd=tmp_path, timeout=300)


def test_installed_package_is_self_contained(venv, tmp_path):
    out = _in_venv(venv, f"""
        import importlib.metadata as md, os, subprocess
        import ligerd, ligerd._C
        from ligerd import _paths
        root = {str(ROOT)!r}
        assert not ligerd.__file__.startswith(root), ligerd.__file__          # site-packages
        assert "site-packages" in ligerd._C.__file__, ligerd._C.__file__
        assert md.version("ligerd") == ligerd.__version__, (md.version("ligerd"), ligerd.__version__)
        daemon = _paths.find_daemon_binary()
        assert daemon == str(_paths.package_dir() / "bin" / "ligerd"), daemon
        for exe in (daemon, str(_paths.package_dir() / "bin" / "ligerctl")):
            p = subprocess.run([exe, "--helpfull"], capture_output=True, text=True)
            assert "--socket" in p.stdout + p.stderr, (exe, p.returncode, p.stdout[-500:], p.stderr[-500:])
        # the package never claims Liger-Kernel's name (docs/compat.md)
        try:
            md.version("liger_kernel")
            claimed = "liger_kernel" in (md.distribution("ligerd").read_text("top_level.txt") or "")
        except md.PackageNotFoundError:
            claimed = False
        assert not claimed
        print("ok", ligerd.__version__)
    """, tmp_path)
    assert out.startswith("ok ")


def test_extension_matches_this_torch(venv, tmp_path):
    out = _in_venv(venv, """
        import torch, ligerd
        from ligerd import _extension
        ext = _extension.load()
        print("ok", torch.__version__, ext is not None)
    """, tmp_path)
    assert out.split()[0] == "ok" and out.split()[-1] == "True", out
