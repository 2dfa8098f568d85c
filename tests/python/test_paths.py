import os
import stat
from pathlib import Path

from ligerd import _paths


def test_socket_env_wins():
    env = {"LIGERD_SOCKET": "/x/y.sock", "XDG_RUNTIME_DIR": "/run/user/5"}
    assert _paths.default_socket_path(env) == Path("/x/y.sock")


def test_socket_xdg_runtime_dir():
    assert _paths.default_socket_path({"XDG_RUNTIME_DIR": "/run/user/5"}) == \
        Path("/run/user/5/ligerd/ligerd.sock")


def test_socket_tmp_fallback_uses_uid():
    assert _paths.default_socket_path({}, uid=1234) == Path("/tmp/ligerd-1234/ligerd.sock")
    assert _paths.default_socket_path({"XDG_RUNTIME_DIR": "  "}, uid=7) == Path("/tmp/ligerd-7/ligerd.sock")


def test_cache_dir_defaults():
    assert _paths.cache_dir({"LIGERD_CACHE_DIR": "/c"}) == Path("/c")
    assert _paths.cache_dir({"XDG_CACHE_HOME": "/xc"}) == Path("/xc/ligerd")
    assert _paths.cache_dir({"HOME": "/home/u"}) == Path("/home/u/.cache/ligerd")
    assert _paths.cache_dir({"LIGERD_CACHE_DIR": "", "XDG_CACHE_HOME": "", "HOME": "/h"}) == Path("/h/.cache/ligerd")
    assert _paths.cache_dir({}, uid=42) == Path("/tmp/ligerd-42/cache")


def test_find_binary(tmp_path):
    exe = tmp_path / "ligerd"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    assert _paths.find_daemon_binary({"LIGERD_BIN": str(exe)}) == str(exe)
    # LIGERD_BIN naming nothing is "absent", not a fallback to PATH (the user asked for that one)
    assert _paths.find_daemon_binary({"LIGERD_BIN": str(tmp_path / "nope"), "PATH": str(tmp_path)}) is None
    assert _paths.find_daemon_binary({"PATH": str(tmp_path)}) == str(exe)
    assert _paths.find_daemon_binary({"PATH": str(tmp_path / "empty")}) in (None, str(_paths.package_dir() / "bin" / "ligerd"))
