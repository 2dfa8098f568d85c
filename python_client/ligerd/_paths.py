"""Where things live: the daemon's socket, the JIT cache, the ligerd binary.

The default socket and cache paths follow the one rule of the C++ side (common/default_paths.h,
used by the daemon, ligerctl and the C++ client), so a client and a daemon started without flags
find each other and share one on-disk kernel cache. tests/python/test_paths.py checks the two agree
by running ``ligerctl paths`` under several environments:

    socket     $LIGERD_SOCKET, else $XDG_RUNTIME_DIR/ligerd/ligerd.sock, else /tmp/ligerd-<uid>/ligerd.sock
    cache dir  $LIGERD_CACHE_DIR, else $XDG_CACHE_HOME/ligerd, else $HOME/.cache/ligerd,
               else /tmp/ligerd-<uid>/cache

A variable counts when it is set and not blank; its value is used without surrounding ASCII
whitespace and otherwise as given (no ``~`` expansion). XDG_* values that are not absolute are
ignored (XDG Base Directory spec). ``uid`` defaults to the effective uid.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping, Optional

# What absl::StripAsciiWhitespace strips (str.strip() with no argument also strips non-ASCII).
_ASCII_WHITESPACE = " \t\n\v\f\r"


def _env(env: Optional[Mapping[str, str]], name: str) -> str:
    env = os.environ if env is None else env
    return (env.get(name) or "").strip(_ASCII_WHITESPACE)


def _xdg(env: Optional[Mapping[str, str]], name: str) -> str:
    value = _env(env, name)
    return value if value.startswith("/") else ""


def _private_tmp_dir(uid: Optional[int]) -> Path:
    return Path(f"/tmp/ligerd-{os.geteuid() if uid is None else uid}")


def default_socket_path(env: Optional[Mapping[str, str]] = None, uid: Optional[int] = None) -> Path:
    """``$LIGERD_SOCKET``, else ``$XDG_RUNTIME_DIR/ligerd/ligerd.sock``, else ``/tmp/ligerd-<uid>/ligerd.sock``."""
    explicit = _env(env, "LIGERD_SOCKET")
    if explicit:
        return Path(explicit)
    runtime = _xdg(env, "XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "ligerd" / "ligerd.sock"
    return _private_tmp_dir(uid) / "ligerd.sock"


def cache_dir(env: Optional[Mapping[str, str]] = None, uid: Optional[int] = None) -> Path:
    """``$LIGERD_CACHE_DIR``, else ``$XDG_CACHE_HOME/ligerd``, else ``$HOME/.cache/ligerd``, else
    ``/tmp/ligerd-<uid>/cache``: the daemon's default, so both share one cache."""
    explicit = _env(env, "LIGERD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = _xdg(env, "XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "ligerd"
    home = _env(env, "HOME")
    if home:
        return Path(home) / ".cache" / "ligerd"
    return _private_tmp_dir(uid) / "cache"


def package_dir() -> Path:
    return Path(__file__).resolve().parent


def find_daemon_binary(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The ``ligerd`` executable to autostart: ``$LIGERD_BIN``, then PATH, then ``<package>/bin/ligerd``.

    ``$LIGERD_BIN`` that names no executable file is reported as absent (the caller's error says so)."""
    explicit = _env(env, "LIGERD_BIN")
    if explicit:
        p = Path(explicit).expanduser()
        return str(p) if p.is_file() and os.access(p, os.X_OK) else None
    path_env = (os.environ if env is None else env).get("PATH")
    found = shutil.which("ligerd", path=path_env)
    if found:
        return found
    bundled = package_dir() / "bin" / "ligerd"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    return None
