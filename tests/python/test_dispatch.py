import pytest

import ligerd
from ligerd import _dispatch


@pytest.mark.parametrize("raw,mode", [(None, "auto"), ("", "auto"), ("  ", "auto"), ("local", "local"),
                                      ("LOCAL", "local"), (" Auto ", "auto"), ("remote", "remote")])
def test_parse(raw, mode):
    assert _dispatch.parse_mode(raw) == mode


@pytest.mark.parametrize("raw", ["lcoal", "gpu", "1", 3])
def test_parse_rejects(raw):
    with pytest.raises(ligerd.ConfigError) as ei:
        _dispatch.parse_mode(raw)
    assert "dispatch mode" in str(ei.value)


def test_env_and_api(monkeypatch):
    monkeypatch.setenv("LIGERD_DISPATCH", "local")
    assert _dispatch.requested_mode() == ("local", "LIGERD_DISPATCH=local")
    ligerd.set_dispatch_mode("auto")
    assert _dispatch.requested_mode() == ("auto", "set_dispatch_mode()")
    ligerd.set_dispatch_mode(None)
    assert ligerd.get_dispatch_mode() == "local"
    monkeypatch.delenv("LIGERD_DISPATCH")
    assert _dispatch.requested_mode() == ("auto", "default")


def test_remote_is_not_built():
    with pytest.raises(ligerd.DispatchUnavailableError) as ei:
        ligerd.set_dispatch_mode("remote")
    assert "issue 3" in str(ei.value) and "remote" in str(ei.value)
    assert ligerd.get_dispatch_mode() == "auto"  # unchanged


def test_remote_from_env_fails_at_first_op(monkeypatch):
    monkeypatch.setenv("LIGERD_DISPATCH", "remote")
    with pytest.raises(ligerd.DispatchUnavailableError):
        _dispatch.session()


def test_auto_is_local_and_says_why(monkeypatch):
    monkeypatch.setenv("LIGERD_NO_DAEMON", "1")
    s = _dispatch.session()
    assert s.mode == "local"
    assert s.reason == "local (remote dispatch not available in this build)"
    info = ligerd.session_info()
    assert info["mode"] == "local" and info["requested"] == "auto" and info["daemon"] is None


def test_local_without_daemon_warns_once(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGERD_DISPATCH", "local")
    monkeypatch.setenv("LIGERD_AUTOSTART", "0")
    with pytest.warns(ligerd.LigerdWarning, match="without a daemon"):
        s = _dispatch.session()
    assert s.mode == "local" and s.daemon is None
    assert "LIGERD_AUTOSTART=0" in s.daemon_error
    assert s.reason == "local (requested by LIGERD_DISPATCH=local)"
    # same session object afterwards, no second warning
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _dispatch.session() is s


def test_set_mode_resets_session(monkeypatch):
    monkeypatch.setenv("LIGERD_NO_DAEMON", "1")
    s1 = _dispatch.session()
    ligerd.set_dispatch_mode("local")
    s2 = _dispatch.session()
    assert s1 is not s2 and s2.requested == "local"
