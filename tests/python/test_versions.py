"""The supported torch and transformers ranges are stated once (ligerd/_supported.py), and the
places that repeat them (python_client/pyproject.toml, scripts/test-requirements.txt) agree; the
installed releases are in range (the CPU suite tests the newest ones from PyPI)."""

import re
from pathlib import Path

import pytest

from ligerd import _supported

ROOT = Path(__file__).resolve().parents[2]
TORCH = _supported.requirement("torch", _supported.TORCH)
TRANSFORMERS = _supported.requirement("transformers", _supported.TRANSFORMERS)


def _requirements(text: str):
    """Every quoted or line-wise requirement naming torch or transformers."""
    return set(re.findall(r"\b((?:torch|transformers)(?:[<>=!~]=?[\w.]+,?)+)", text))


def test_pyproject_states_the_ranges():
    text = (ROOT / "python_client" / "pyproject.toml").read_text()
    assert _requirements(text) == {TORCH, TRANSFORMERS}


def test_test_requirements_state_the_ranges():
    text = (ROOT / "scripts" / "test-requirements.txt").read_text()
    assert _requirements(text) == {TORCH, TRANSFORMERS}


@pytest.mark.parametrize("version,ok", [
    ("5.17", True), ("5.17.0", True), ("5.25.0", True), ("5.99.1.dev0", True), ("5.25.0+local", True),
    ("5.16.2", False), ("4.57.1", False), ("6.0.0", False), ("6.0.0.dev0", False)])
def test_transformers_range(version, ok):
    assert _supported.in_range(version, _supported.TRANSFORMERS) is ok


def test_not_a_version_is_refused():
    with pytest.raises(ValueError, match="not a version"):
        _supported.release("nightly")


def test_installed_releases_are_supported():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    assert _supported.in_range(torch.__version__, _supported.TORCH), torch.__version__
    assert _supported.in_range(transformers.__version__, _supported.TRANSFORMERS), transformers.__version__
