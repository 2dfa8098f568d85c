import logging
import types

import pytest

import ligerd
from ligerd import _dispatch
from ligerd._errors import error_from_status


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


def test_remote_can_be_set():
    ligerd.set_dispatch_mode("remote")
    assert ligerd.get_dispatch_mode() == "remote"


def test_remote_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_dispatch, "_cuda_device_count", lambda: 0)
    ligerd.set_dispatch_mode("remote")
    with pytest.raises(ligerd.DispatchUnavailableError) as ei:
        _dispatch.session()
    msg = str(ei.value)
    assert "'remote'" in msg and "CUDA device" in msg and "set_dispatch_mode()" in msg


def test_remote_from_env_without_gpu_fails_at_first_op(monkeypatch):
    monkeypatch.setattr(_dispatch, "_cuda_device_count", lambda: 0)
    monkeypatch.setenv("LIGERD_DISPATCH", "remote")
    with pytest.raises(ligerd.DispatchUnavailableError, match="LIGERD_DISPATCH=remote"):
        _dispatch.session()


def test_remote_without_daemon_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_dispatch, "_cuda_device_count", lambda: 1)
    monkeypatch.setenv("LIGERD_DISPATCH", "remote")
    monkeypatch.setenv("LIGERD_AUTOSTART", "0")
    with pytest.raises(ligerd.DaemonUnavailableError) as ei:
        _dispatch.session()
    assert "'remote'" in str(ei.value) and "LIGERD_AUTOSTART=0" in str(ei.value)


def test_auto_without_gpu_is_local_and_says_why(monkeypatch):
    monkeypatch.setattr(_dispatch, "_cuda_device_count", lambda: 0)
    s = _dispatch.session()
    assert s.mode == "local" and s.reason == "local (auto: no CUDA device)"
    info = ligerd.dispatch_info()
    assert info["mode"] == "local" and info["requested"] == "auto" and info["daemon"] is None


def test_auto_is_local_and_says_why(monkeypatch):
    monkeypatch.setattr(_dispatch, "_cuda_device_count", lambda: 1)
    monkeypatch.setenv("LIGERD_NO_DAEMON", "1")
    s = _dispatch.session()
    assert s.mode == "local"
    assert s.reason == "local (auto: LIGERD_NO_DAEMON is set)"
    info = ligerd.session_info()
    assert info["mode"] == "local" and info["requested"] == "auto" and info["daemon"] is None


def test_auto_without_daemon_is_local(monkeypatch):
    monkeypatch.setattr(_dispatch, "_cuda_device_count", lambda: 1)
    monkeypatch.setenv("LIGERD_AUTOSTART", "0")
    with pytest.warns(ligerd.LigerdWarning, match="without a daemon"):
        s = _dispatch.session()
    assert s.mode == "local" and s.reason == "local (auto: no daemon)"


# ---------------------------------------------------------------------------------------------
# The remote wiring (_dispatch + _backend) against a fake ligerd._C and a fake daemon handle: what
# the daemon chose, the report, error mapping, a spent session replaced, a dead daemon sticky.


class FakeTensor:
    is_cuda = True

    def __init__(self, index=0):
        self.device = types.SimpleNamespace(index=index)


class FakeHandle:
    def __init__(self, device, mode, reason, sid):
        self.device, self.mode, self.reason, self.session_id = device, mode, reason, sid
        self.closed = False
        self.error = None  # (code, message): the daemon's recorded error


class FakeExt:
    def __init__(self, chosen="remote", reason="MPS active on the device: remote dispatch"):
        self.chosen, self.reason = chosen, reason
        self.opened, self.local, self.remote = [], [], []

    def open_session(self, socket_path, device, requested_mode, client_name):
        h = FakeHandle(device, self.chosen, self.reason, len(self.opened) + 1)
        self.opened.append((socket_path, device, requested_mode, h))
        return h

    def close_session(self, h):
        h.closed = True

    def session_check(self, h):
        if h.error is not None:
            raise error_from_status(*h.error, op=h.error[1].split(":")[0])

    def remote_launch(self, h, op, tensors, scalars):
        assert not h.closed
        self.session_check(h)
        self.remote.append((h.session_id, op))

    def launch(self, op, tensors, scalars):
        self.local.append(op)


@pytest.fixture
def fake_remote(monkeypatch):
    """Returns a function(mode, chosen=..., reason=...) -> FakeExt with a session in ``mode``."""
    from ligerd import _backend, _daemon, _extension

    def make(mode, **kw):
        ext = FakeExt(**kw)
        monkeypatch.setattr(_backend, "_C", ext)
        monkeypatch.setattr(_extension, "_ext", ext)
        monkeypatch.setattr(_dispatch, "_cuda_device_count", lambda: 2)
        monkeypatch.setattr(_daemon, "connect_or_start", lambda env=None: _daemon.DaemonHandle("/fake.sock"))
        ligerd.set_dispatch_mode(mode)
        return ext
    return make


def test_auto_remote_when_daemon_says_so(fake_remote, caplog):
    from ligerd import _backend
    ext = fake_remote("auto")
    with caplog.at_level(logging.INFO, logger="ligerd"):
        _backend.launch("rms_norm_fwd", [FakeTensor(0), None], [1.0])
        _backend.launch("rms_norm_fwd", [FakeTensor(0), None], [1.0])
    assert [(p, d, m) for p, d, m, _ in ext.opened] == [("/fake.sock", 0, "auto")]
    assert ext.remote == [(1, "rms_norm_fwd")] * 2 and ext.local == []
    assert sum("cuda:0 run remote" in r.getMessage() for r in caplog.records) == 1  # reported once
    info = ligerd.dispatch_info()
    assert info["mode"] == "auto"
    assert info["devices"] == {0: {"mode": "remote", "session_id": 1,
                                   "reason": "remote (MPS active on the device: remote dispatch)"}}


def test_auto_local_when_daemon_says_so(fake_remote):
    from ligerd import _backend
    ext = fake_remote("auto", chosen="local", reason="MPS inactive on the device: local dispatch ...")
    _backend.launch("rms_norm_fwd", [FakeTensor(1)], [])
    _backend.launch("rms_norm_fwd", [FakeTensor(1)], [])
    assert ext.local == ["rms_norm_fwd"] * 2 and ext.remote == []
    assert len(ext.opened) == 1 and ext.opened[0][3].closed  # a local answer needs no session
    assert ligerd.dispatch_info()["devices"][1]["mode"] == "local"


def test_one_session_per_device(fake_remote):
    from ligerd import _backend
    ext = fake_remote("remote", reason="remote dispatch requested; MPS active")
    for dev in (0, 1, 0, 1):
        _backend.launch("rms_norm_fwd", [None, FakeTensor(dev)], [])
    assert [(d, m) for _, d, m, _ in ext.opened] == [(0, "remote"), (1, "remote")]
    assert [sid for sid, _ in ext.remote] == [1, 2, 1, 2]


def test_remote_without_mps_warns_once(fake_remote):
    from ligerd import _backend
    fake_remote("remote", reason="remote dispatch requested; MPS inactive, so each op pays ...")
    with pytest.warns(ligerd.LigerdWarning, match="MPS inactive"):
        _backend.launch("rms_norm_fwd", [FakeTensor(0)], [])
    info = ligerd.dispatch_info()["devices"][0]
    assert info["mode"] == "remote" and "set_dispatch_mode()" in info["reason"]


def test_cpu_tensor_goes_to_executor_checks(fake_remote):
    from ligerd import _backend
    ext = fake_remote("remote")
    cpu = FakeTensor()
    cpu.is_cuda = False
    _backend.launch("rms_norm_fwd", [cpu], [])  # the real _C.launch raises OpInputError here
    assert ext.local == ["rms_norm_fwd"] and ext.opened == []


def test_async_error_spends_the_session(fake_remote):
    from ligerd import _backend
    ext = fake_remote("remote")
    _backend.launch("rms_norm_fwd", [FakeTensor(0)], [])
    h1 = ext.opened[0][3]
    h1.error = (3, "rms_norm_bwd: tensor 4: extent beyond the allocation")
    with pytest.raises(ligerd.OpInputError) as ei:
        _backend.launch("rms_norm_fwd", [FakeTensor(0)], [])
    assert ei.value.op == "rms_norm_bwd" and "rms_norm_bwd" in str(ei.value)
    assert h1.closed
    _backend.launch("rms_norm_fwd", [FakeTensor(0)], [])  # a fresh session
    assert len(ext.opened) == 2 and ext.remote[-1] == (2, "rms_norm_fwd")


def test_dead_daemon_stays_reported(fake_remote):
    from ligerd import _backend
    ext = fake_remote("remote")
    _backend.launch("rms_norm_fwd", [FakeTensor(0)], [])
    ext.opened[0][3].error = (14, "ligerd on /fake.sock stopped answering; session 1 is gone")
    for _ in range(2):
        with pytest.raises(ligerd.DaemonUnavailableError):
            _backend.launch("rms_norm_fwd", [FakeTensor(0)], [])
    assert len(ext.opened) == 1 and not ext.opened[0][3].closed


def test_synchronize_raises_in_the_step_the_daemon_died(fake_remote, monkeypatch):
    # ligerd.synchronize(): torch's synchronize of every device with a session, then each
    # session's check, so a dead daemon is reported where its undefined results were waited for.
    import torch
    from ligerd import _backend
    synced = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    ext = fake_remote("remote")
    for dev in (0, 1):
        _backend.launch("rms_norm_fwd", [FakeTensor(dev)], [])
    ligerd.synchronize()  # both daemons answer: no error
    assert synced == [None, 0, 1]
    ext.opened[1][3].error = (14, "ligerd on /fake.sock stopped answering; session 2 is gone")
    ligerd.synchronize(0)  # device 0's session is fine
    with pytest.raises(ligerd.DaemonUnavailableError, match="session 2 is gone"):
        ligerd.synchronize()
    with pytest.raises(ligerd.DaemonUnavailableError):
        ligerd.synchronize("cuda:1")


def test_synchronize_without_cuda_is_a_no_op(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ligerd.synchronize()


def test_set_mode_closes_sessions(fake_remote):
    from ligerd import _backend
    ext = fake_remote("remote")
    _backend.launch("rms_norm_fwd", [FakeTensor(0)], [])
    ligerd.set_dispatch_mode("local")
    assert ext.opened[0][3].closed


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


def test_local_fast_path_once_every_device_settled(fake_remote, monkeypatch):
    """auto with every CUDA device answered local: launch skips the per-op device lookup; a new
    session (set_dispatch_mode) is never served by the old session's fast path."""
    from ligerd import _backend
    ext = fake_remote("auto", chosen="local", reason="MPS inactive on the device: local dispatch")
    _backend.launch("rms_norm_fwd", [FakeTensor(0)], [])
    assert _backend._local_fast[0] is not _dispatch.session()  # cuda:1 could still go remote
    _backend.launch("rms_norm_fwd", [FakeTensor(1)], [])
    assert _backend._local_fast[0] is _dispatch.session()
    with monkeypatch.context() as m:
        m.setattr(_dispatch.Session, "device", lambda *a: pytest.fail("per-op lookup on the fast path"))
        _backend.launch("rms_norm_fwd", [FakeTensor(0)], [1])
    assert ext.local == ["rms_norm_fwd"] * 3 and ext.remote == []
    ext.chosen = "remote"
    ligerd.set_dispatch_mode("remote")
    _backend.launch("rms_norm_fwd", [FakeTensor(0)], [])
    assert ext.remote == [(3, "rms_norm_fwd")] and ext.local == ["rms_norm_fwd"] * 3


def test_local_mode_fast_path(monkeypatch):
    from ligerd import _backend
    monkeypatch.setenv("LIGERD_NO_DAEMON", "1")
    ext = FakeExt()
    monkeypatch.setattr(_backend, "_C", ext)
    ligerd.set_dispatch_mode("local")
    _backend.launch("rms_norm_fwd", [FakeTensor(0)], [])
    assert _backend._local_fast[0] is _dispatch.session()
    _backend.launch("rms_norm_bwd", [FakeTensor(0)], [])
    assert ext.local == ["rms_norm_fwd", "rms_norm_bwd"] and ext.opened == []
