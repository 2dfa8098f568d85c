"""CPU tests of the ligerd Python package (no GPU, no CUDA torch needed).

They import the package from the source tree (pytest.ini puts python_client/ on sys.path), so they
test what is checked in, not whatever version is installed; helpers shared with the GPU suite
(float64 references, the reference executor, stand-ins) are in ``ligerd.testing``. The skip policy
(only GPU-only tests may skip) is scripts/test_report.py's, over this suite's JUnit XML."""

import os

import pytest

_LIGERD_ENV = ("LIGERD_DISPATCH", "LIGERD_SOCKET", "LIGERD_AUTOSTART", "LIGERD_BIN",
               "LIGERD_CACHE_DIR", "LIGERD_NO_DAEMON", "XDG_RUNTIME_DIR", "XDG_CACHE_HOME")


@pytest.fixture
def launcher(monkeypatch):
    """The executor replaced by its float64 reference (ligerd.testing.ref_executor), each launch
    described by its tensors' shapes, pointers and strides. A module may define its own."""
    from ligerd.testing import ref_executor
    return ref_executor.install(monkeypatch, describe=ref_executor.shape_ptr_stride)


@pytest.fixture
def clean_patches():
    """Liger-style patches reverted before and after the test."""
    from ligerd import transformers as lt
    lt.revert_liger_kernel_patches()
    yield
    lt.revert_liger_kernel_patches()


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
