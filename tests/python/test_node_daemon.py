"""One node daemon for every job (issue 17): clients find the node service's socket along a
documented search path before starting a private daemon, and local ops share the found daemon's
JIT cache and tuning DB (read-only when it belongs to another user). Fakes only; no real ligerd."""

import os
from concurrent import futures
from pathlib import Path

import pytest

import ligerd
from ligerd import _daemon, _dispatch, _extension, _health, _paths

grpc = pytest.importorskip("grpc", reason="grpcio is not installed; daemon tests need it")


def _varint(n: int) -> bytes:
    return _health._encode_varint(n)


def encode_info(socket_path: str, cache_dir: str, pid: int) -> bytes:
    """A GetInfoResponse with socket_path (8), cache_dir (9) and pid (11), as the daemon sends."""
    out = b""
    for field, text in ((8, socket_path), (9, cache_dir)):
        data = text.encode()
        out += bytes([field << 3 | 2]) + _varint(len(data)) + data
    return out + bytes([11 << 3]) + _varint(pid)


def serve(socket_path, cache_dir="/nonexistent/cache"):
    """A fake daemon: health SERVING, and Info naming `cache_dir`."""
    health = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: _health.SERVING, request_deserializer=_health.decode_request,
            response_serializer=_health.encode_response)})
    info = grpc.method_handlers_generic_handler("ligerd.v1.Info", {
        "GetInfo": grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: encode_info(str(socket_path), str(cache_dir), 4242),
            request_deserializer=lambda b: b, response_serializer=lambda b: b)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((health, info))
    server.add_insecure_port("unix://" + str(socket_path))
    server.start()
    return server


@pytest.fixture
def node_socket(tmp_path, monkeypatch):
    """The node service's socket path, moved into tmp (the real one is /run/ligerd/ligerd.sock)."""
    path = tmp_path / "run-ligerd" / "ligerd.sock"
    path.parent.mkdir()
    monkeypatch.setattr(_paths, "NODE_SOCKET_PATH", path)
    for var in ("LIGERD_SOCKET", "LIGERD_CACHE_DIR", "LIGERD_NO_DAEMON", "LIGERD_DISPATCH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))  # the user's own: no daemon there
    monkeypatch.setenv("LIGERD_AUTOSTART", "0")
    _dispatch._reset_for_tests()
    yield path
    _dispatch._reset_for_tests()
    monkeypatch.setattr(_extension, "_cache", None)


def test_search_path_order():
    assert _paths.NODE_SOCKET_PATH == Path("/run/ligerd/ligerd.sock")
    # Explicit: that socket alone, nothing else is tried.
    assert _paths.socket_search_path({"LIGERD_SOCKET": "/x.sock", "XDG_RUNTIME_DIR": "/run/user/5"}) == [Path("/x.sock")]
    # The user's own daemon first, then the node service.
    assert _paths.socket_search_path({"XDG_RUNTIME_DIR": "/run/user/5"}) == [
        Path("/run/user/5/ligerd/ligerd.sock"), Path("/run/ligerd/ligerd.sock")]
    assert _paths.socket_search_path({}, uid=7) == [Path("/tmp/ligerd-7/ligerd.sock"), Path("/run/ligerd/ligerd.sock")]
    assert _paths.socket_search_path({"XDG_RUNTIME_DIR": "/run"}) == [Path("/run/ligerd/ligerd.sock")]


def test_node_daemon_is_found_before_autostart(node_socket):
    server = serve(node_socket)
    try:
        h = _daemon.connect_or_start()
        assert not h.private and h.socket_path == str(node_socket)
        assert h.owner_uid == os.geteuid()
    finally:
        server.stop(0)


def test_own_daemon_wins_over_the_node_daemon(node_socket, tmp_path):
    own = tmp_path / "xdg" / "ligerd" / "ligerd.sock"
    own.parent.mkdir(parents=True)
    servers = [serve(node_socket), serve(own)]
    try:
        assert _daemon.connect_or_start().socket_path == str(own)
    finally:
        for s in servers:
            s.stop(0)


def test_explicit_socket_is_not_replaced_by_the_node_daemon(node_socket, tmp_path, monkeypatch):
    server = serve(node_socket)
    try:
        monkeypatch.setenv("LIGERD_SOCKET", str(tmp_path / "nothing.sock"))
        with pytest.raises(ligerd.DaemonUnavailableError, match="nothing.sock"):
            _daemon.connect_or_start()
    finally:
        server.stop(0)


def test_nothing_found_says_where_it_looked(node_socket):
    with pytest.raises(ligerd.DaemonUnavailableError) as e:
        _daemon.connect_or_start()
    assert str(node_socket) in str(e.value) and "xdg" in str(e.value)


def test_info_is_decoded(node_socket, tmp_path):
    server = serve(node_socket, cache_dir=tmp_path / "c")
    try:
        facts = _health.info(str(node_socket))
        assert facts == {"socket_path": str(node_socket), "cache_dir": str(tmp_path / "c"), "pid": 4242}
    finally:
        server.stop(0)


def test_shared_cache_choice(tmp_path):
    me = os.geteuid()
    node = tmp_path / "node-cache"
    node.mkdir(mode=0o750)
    node.chmod(0o750)
    # The user's explicit choice stands.
    assert _paths.shared_cache_choice(str(node), me, {"LIGERD_CACHE_DIR": "/mine"})[0] is None
    # Same user: the daemon's cache, read-write.
    assert _paths.shared_cache_choice(str(node), me, {}) [:2] == (node, None)
    # The node service of another user (here: we pose as uid me+1 reading uid me's cache):
    # read-only, trusting the daemon's uid.
    path, owner, reason = _paths.shared_cache_choice(str(node), me, {}, uid=me + 1)
    assert (path, owner) == (node, me) and "read-only" in reason
    # Not owned by the daemon's user (nor root), writable by others, missing: our own cache.
    if me == 0:  # root's directory is always trusted: give it to a third user for this case
        os.chown(node, 65532, -1)
        assert _paths.shared_cache_choice(str(node), 65531, {}, uid=65530)[0] is None
        os.chown(node, 0, -1)
    else:
        assert _paths.shared_cache_choice(str(node), me + 2, {}, uid=me + 1)[0] is None
    node.chmod(0o770)
    assert _paths.shared_cache_choice(str(node), me, {}, uid=me + 1)[0] is None
    assert _paths.shared_cache_choice(str(tmp_path / "gone"), me, {}, uid=me + 1)[0] is None
    assert _paths.shared_cache_choice("", me, {})[0] is None


def test_local_ops_use_the_node_daemons_cache(node_socket, tmp_path, monkeypatch):
    cache = tmp_path / "node-cache"
    cache.mkdir(mode=0o700)
    server = serve(node_socket, cache_dir=cache)
    try:
        monkeypatch.setenv("LIGERD_DISPATCH", "local")
        info = ligerd.dispatch_info()
        assert info["daemon"] == f"ligerd on {node_socket}"
        assert str(cache) in info["cache"]
        assert _extension._cache == (cache, None)  # same user: read-write
    finally:
        server.stop(0)


def test_explicit_cache_dir_is_kept_with_a_node_daemon(node_socket, tmp_path, monkeypatch):
    server = serve(node_socket, cache_dir=tmp_path / "node-cache")
    try:
        monkeypatch.setenv("LIGERD_DISPATCH", "local")
        monkeypatch.setenv("LIGERD_CACHE_DIR", str(tmp_path / "mine"))
        monkeypatch.setattr(_extension, "_cache", None)
        info = ligerd.dispatch_info()
        assert "LIGERD_CACHE_DIR is set" in info["cache"]
        assert _extension._cache is None
    finally:
        server.stop(0)
