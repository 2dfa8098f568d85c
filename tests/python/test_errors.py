import pytest

import ligerd
from ligerd import _errors


def test_family():
    assert issubclass(ligerd.OpInputError, ligerd.LigerdError)
    assert issubclass(ligerd.OpInputError, ValueError)
    assert issubclass(ligerd.DaemonUnavailableError, ligerd.LigerdError)
    assert issubclass(ligerd.KernelError, ligerd.LigerdError)
    assert issubclass(ligerd.DispatchUnavailableError, NotImplementedError)
    assert issubclass(ligerd.LigerdError, RuntimeError)


@pytest.mark.parametrize("code,cls", [
    (3, ligerd.OpInputError), (11, ligerd.OpInputError), (9, ligerd.KernelError),
    (14, ligerd.DaemonUnavailableError), (4, ligerd.DaemonUnavailableError),
    (13, ligerd.KernelError), (2, ligerd.KernelError), (8, ligerd.KernelError),
    (5, ligerd.KernelError), (12, ligerd.DispatchUnavailableError),
])
def test_status_mapping(code, cls):
    e = _errors.error_from_status(code, "tensor W: expected 5120 elements", op="rms_norm_fwd")
    assert type(e) is cls
    assert e.code == code and e.op == "rms_norm_fwd"
    assert "rms_norm_fwd" in str(e) and "tensor W" in str(e)
    assert _errors.STATUS_NAMES[code] in str(e)


def test_message_not_doubled():
    e = _errors.error_from_status(3, "rms_norm_fwd: X is on cpu", op="rms_norm_fwd")
    assert str(e).count("rms_norm_fwd") == 1


def test_warn_once():
    with pytest.warns(ligerd.LigerdWarning):
        assert _errors.warn_once("k", "hello")
    assert not _errors.warn_once("k", "hello")
