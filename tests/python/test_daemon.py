"""Finding a daemon, autostarting a private one, and failing fast (with fakes; no real ligerd)."""

import os
import socket
import stat
import sys
import time
from concurrent import futures
from pathlib import Path

import pytest

import ligerd
from ligerd import _daemon, _dispatch, _health

grpc = pytest.importorskip("grpc", reason="grpcio is not installed; daemon tests need it")



def serve_health(socket_path, status=_health.SERVING):
    handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: status, request_deserializer=_health.decode_request,
            response_serializer=_health.encode_response)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("unix://" + str(socket_path))
    server.start()
    return server


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """An executable 'ligerd' that runs ligerd.testing.fake_daemon with this interpreter."""
    exe = tmp_path / "bin" / "ligerd"
    exe.parent.mkdir()
    package_root = Path(ligerd.__file__).resolve().parents[1]
    exe.write_text(f"#!/bin/sh\nPYTHONPATH={package_root} exec {sys.executable} "
                   f"-m ligerd.testing.fake_daemon \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("LIGERD_BIN", str(exe))
    return exe


def test_existing_daemon_is_used(tmp_path, monkeypatch):
    sock = tmp_path / "d.sock"
    server = serve_health(sock)
    try:
        monkeypatch.setenv("LIGERD_SOCKET", str(sock))
        h = _daemon.connect_or_start()
        assert not h.private and h.socket_path == str(sock)
        assert h.health() == _health.SERVING
        h.stop()  # not ours: must not touch it
        assert h.health() == _health.SERVING
    finally:
        server.stop(0)


def test_health_check_status_values(tmp_path):
    sock = tmp_path / "d.sock"
    server = serve_health(sock, status=_health.NOT_SERVING)
    try:
        assert _health.check(str(sock)) == _health.NOT_SERVING
        with pytest.raises(ligerd.DaemonUnavailableError, match="NOT_SERVING"):
            _daemon.connect(str(sock))
    finally:
        server.stop(0)


def test_autostart_private_daemon(fake_bin, monkeypatch):
    t = time.monotonic()
    with pytest.warns(ligerd.LigerdWarning, match="started a private ligerd"):
        h = _daemon.connect_or_start()
    assert time.monotonic() - t < 3.0
    try:
        assert h.private and h.pid > 0
        assert h.health() == _health.SERVING
        d = Path(h.private_dir)
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        assert h in _daemon._private
    finally:
        h.stop()
    assert h.proc.poll() is not None, "private daemon still running after stop()"
    assert not Path(h.private_dir).exists()


def test_autostart_warns_once_through_session(fake_bin, monkeypatch):
    monkeypatch.setenv("LIGERD_DISPATCH", "local")
    with pytest.warns(ligerd.LigerdWarning) as rec:
        s = _dispatch.session()
    assert s.daemon is not None and s.daemon.private
    assert sum("private ligerd" in str(w.message) for w in rec) == 1
    assert "private ligerd" in ligerd.session_info()["daemon"]
    pid = s.daemon.pid
    _daemon._stop_private_daemons()  # what atexit runs
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.05)


def test_autostart_off_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("LIGERD_AUTOSTART", "0")
    t = time.monotonic()
    with pytest.raises(ligerd.DaemonUnavailableError) as ei:
        _daemon.connect_or_start()
    assert time.monotonic() - t < 2.0
    msg = str(ei.value)
    assert "LIGERD_AUTOSTART=0" in msg and "no-daemon-here.sock" in msg


def test_no_binary_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGERD_BIN", str(tmp_path / "missing-ligerd"))
    with pytest.raises(ligerd.DaemonUnavailableError, match="no ligerd binary"):
        _daemon.connect_or_start()


def test_daemon_that_exits_reports_its_output(fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_LIGERD_MODE", "exit")
    t = time.monotonic()
    with pytest.raises(ligerd.DaemonUnavailableError) as ei:
        _daemon.connect_or_start()
    assert time.monotonic() - t < 2.5
    assert "exited with status 3" in str(ei.value)
    assert "cannot open the GPU" in str(ei.value)


@pytest.mark.parametrize("mode", ["silent", "not_serving", "slow"])
def test_daemon_that_never_serves_times_out(fake_bin, monkeypatch, mode):
    monkeypatch.setenv("FAKE_LIGERD_MODE", mode)
    monkeypatch.setenv("FAKE_LIGERD_DELAY", "5")
    t = time.monotonic()
    with pytest.raises(ligerd.DaemonUnavailableError) as ei:
        _daemon.connect_or_start()
    elapsed = time.monotonic() - t
    assert elapsed < 3.5, f"took {elapsed:.2f} s"
    assert "private ligerd" in str(ei.value)
    assert not _daemon._private


def test_dead_daemon_errors_fast(tmp_path):
    sock = tmp_path / "d.sock"
    server = serve_health(sock)
    h = _daemon.connect(str(sock))
    server.stop(0)
    t = time.monotonic()
    with pytest.raises(ligerd.DaemonUnavailableError):
        h.ensure_serving()
    assert time.monotonic() - t < 2.0


def test_wedged_socket_hits_the_deadline(tmp_path):
    """A socket that accepts connections but never speaks HTTP/2: the deadline must end the wait."""
    path = str(tmp_path / "wedged.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(16)
    try:
        t = time.monotonic()
        with pytest.raises(ligerd.DaemonUnavailableError):
            _health.check(path, timeout=0.5)
        assert time.monotonic() - t < 2.0
    finally:
        s.close()


def test_stale_socket_file(tmp_path):
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # file stays, nobody listens
    t = time.monotonic()
    with pytest.raises(ligerd.DaemonUnavailableError):
        _health.check(path, timeout=1.0)
    assert time.monotonic() - t < 2.0


def test_autostart_env_values():
    assert _daemon.autostart_enabled({})
    assert _daemon.autostart_enabled({"LIGERD_AUTOSTART": "1"})
    for off in ("0", "false", "OFF", "no"):
        assert not _daemon.autostart_enabled({"LIGERD_AUTOSTART": off})


def _real_daemon_binary():
    build = os.environ.get("LIGERD_BUILD_DIR", "").strip()
    exe = Path(build, "server", "ligerd") if build else None
    if exe is None or not exe.is_file():
        pytest.skip("no built ligerd (set LIGERD_BUILD_DIR to a build directory with server/ligerd)")
    return exe


def test_real_daemon_autostart_and_stop(monkeypatch, tmp_path):
    """The real ligerd binary as the private daemon: SERVING well within 2 s (it serves the
    control plane even without a GPU), health over the hand-written stubs, stopped cleanly."""
    monkeypatch.setenv("LIGERD_BIN", str(_real_daemon_binary()))
    monkeypatch.setenv("LIGERD_CACHE_DIR", str(tmp_path / "cache"))
    t = time.monotonic()
    with pytest.warns(ligerd.LigerdWarning, match="private ligerd"):
        h = _daemon.connect_or_start()
    assert time.monotonic() - t < 2.0
    try:
        assert h.health() == _health.SERVING
        assert f"--cache_dir={tmp_path / 'cache'}" in " ".join(h.proc.args)
    finally:
        h.stop()
    assert h.proc.returncode == 0, Path(h.private_dir, "ligerd.log")
