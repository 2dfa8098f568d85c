"""CPU tests of the ligerd Python package (no GPU, no CUDA torch needed).

They import the package from the source tree (python_client/), so they test what is checked in,
not whatever version is installed. Tests that need torch or grpcio skip with a reason when those
are missing."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python_client"))
sys.path.insert(0, str(ROOT / "tests" / "gpu"))  # rms_norm_ref.py, shared with the GPU tests

_LIGERD_ENV = ("LIGERD_DISPATCH", "LIGERD_SOCKET", "LIGERD_AUTOSTART", "LIGERD_BIN",
               "LIGERD_CACHE_DIR", "LIGERD_NO_DAEMON", "XDG_RUNTIME_DIR", "XDG_CACHE_HOME")


@pytest.fixture(autouse=True)
def clean_ligerd_state(monkeypatch, tmp_path):
    """Each test starts with no ligerd env settings, no session, no warnings remembered."""
    for name in _LIGERD_ENV:
        monkeypatch.delenv(name, raising=False)
    # Never let a test reach a real daemon of the user running the tests.
    monkeypatch.setenv("LIGERD_SOCKET", str(tmp_path / "no-daemon-here.sock"))
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))
    import ligerd._dispatch as d
    import ligerd._errors as e
    d._reset_for_tests()
    e._warned.clear()
    yield
    d._reset_for_tests()
