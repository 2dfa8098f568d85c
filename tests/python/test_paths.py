import os
import stat
import subprocess
from pathlib import Path

import pytest

from ligerd import _paths

_REPO = Path(__file__).resolve().parents[2]
_PATH_VARS = ("LIGERD_SOCKET", "LIGERD_CACHE_DIR", "XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "HOME")


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


def test_blank_padded_relative_and_tilde_values():
    # Blank counts as unset; surrounding whitespace goes; XDG_* must be absolute; no ~ expansion.
    assert _paths.default_socket_path({"LIGERD_SOCKET": " /x/y.sock\n"}) == Path("/x/y.sock")
    assert _paths.default_socket_path({"XDG_RUNTIME_DIR": "run/user/5"}, uid=7) == Path("/tmp/ligerd-7/ligerd.sock")
    assert _paths.default_socket_path({"LIGERD_SOCKET": "~/s.sock"}) == Path("~/s.sock")
    assert _paths.cache_dir({"XDG_CACHE_HOME": "cache", "HOME": "/h"}) == Path("/h/.cache/ligerd")
    assert _paths.cache_dir({"LIGERD_CACHE_DIR": "\t"}, uid=3) == Path("/tmp/ligerd-3/cache")
    assert _paths.cache_dir({"LIGERD_CACHE_DIR": "~/c"}) == Path("~/c")


def test_uid_defaults_to_the_effective_uid():
    assert _paths.default_socket_path({}) == Path(f"/tmp/ligerd-{os.geteuid()}/ligerd.sock")
    assert _paths.cache_dir({}) == Path(f"/tmp/ligerd-{os.geteuid()}/cache")


def _ligerctl() -> Path:
    """The built ligerctl: $LIGERD_BUILD_DIR's (scripts/test.sh sets it), else build/release's."""
    build = os.environ.get("LIGERD_BUILD_DIR", "").strip()
    exe = Path(build or _REPO / "build" / "release", "client", "ligerctl")
    if not exe.is_file():
        pytest.skip("no built ligerctl (set LIGERD_BUILD_DIR to a build directory with client/ligerctl)")
    return exe


# Environments for the C++/Python agreement test: every rung of both rules, and the edge cases.
_ENVIRONMENTS = [
    {},  # HOME unset too: the private /tmp directory
    {"HOME": "/home/u"},
    {"XDG_RUNTIME_DIR": "/run/user/5", "XDG_CACHE_HOME": "/xc", "HOME": "/h"},
    {"LIGERD_SOCKET": "/x/y.sock", "LIGERD_CACHE_DIR": "/c", "XDG_RUNTIME_DIR": "/run/user/5",
     "XDG_CACHE_HOME": "/xc", "HOME": "/h"},
    {"LIGERD_SOCKET": "", "XDG_RUNTIME_DIR": "  ", "LIGERD_CACHE_DIR": "\t", "XDG_CACHE_HOME": "", "HOME": "/h"},
    {"XDG_RUNTIME_DIR": "run/user/5", "XDG_CACHE_HOME": "cache", "HOME": "/h/"},
    {"LIGERD_SOCKET": " /x/y.sock\n", "LIGERD_CACHE_DIR": "/c/ "},
    {"XDG_RUNTIME_DIR": "/run/user/5/", "XDG_CACHE_HOME": "/xc/"},
    {"LIGERD_SOCKET": "~/s.sock", "LIGERD_CACHE_DIR": "~/c", "HOME": "/h"},
    {"LIGERD_SOCKET": "relative.sock", "HOME": "/"},
]


def _case_id(case) -> str:
    return ",".join(f"{k}={v!r}" for k, v in case.items()) or "empty"


@pytest.mark.parametrize("case", _ENVIRONMENTS, ids=_case_id)
def test_cpp_and_python_defaults_agree(case):
    """`ligerctl paths` prints the C++ defaults (common/default_paths.h, which the daemon uses too);
    ligerd._paths must name the same paths (compared as paths: /c/ and /c are one directory)."""
    env = {k: v for k, v in os.environ.items() if k not in _PATH_VARS}
    env.update(case)
    out = subprocess.run([str(_ligerctl()), "paths"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    printed = dict(line.partition(": ")[::2] for line in out.stdout.splitlines())
    assert Path(printed["socket"]) == _paths.default_socket_path(case)
    assert [Path(p) for p in printed["search"].split(":")] == _paths.socket_search_path(case)
    assert Path(printed["cache_dir"]) == _paths.cache_dir(case)


def test_find_binary(tmp_path):
    exe = tmp_path / "ligerd"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    assert _paths.find_daemon_binary({"LIGERD_BIN": str(exe)}) == str(exe)
    # LIGERD_BIN naming nothing is "absent", not a fallback to PATH (the user asked for that one)
    assert _paths.find_daemon_binary({"LIGERD_BIN": str(tmp_path / "nope"), "PATH": str(tmp_path)}) is None
    assert _paths.find_daemon_binary({"PATH": str(tmp_path)}) == str(exe)
    assert _paths.find_daemon_binary({"PATH": str(tmp_path / "empty")}) in (None, str(_paths.package_dir() / "bin" / "ligerd"))
