"""Where things live: the daemon's socket, the JIT cache, the ligerd binary.

The default socket and cache paths follow the one rule of the C++ side (common/default_paths.h,
used by the daemon, ligerctl and the C++ client), so a client and a daemon started without flags
find each other and share one on-disk kernel cache. tests/python/test_paths.py checks the two agree
by running ``ligerctl paths`` under several environments:

    socket     $LIGERD_SOCKET, else $XDG_RUNTIME_DIR/ligerd/ligerd.sock, else /tmp/ligerd-<uid>/ligerd.sock
    cache dir  $LIGERD_CACHE_DIR, else $XDG_CACHE_HOME/ligerd, else $HOME/.cache/ligerd,
               else /tmp/ligerd-<uid>/cache

Clients look for a running daemon along ``socket_search_path()`` before starting a private one
(ligerd._daemon.connect_or_start; the C++ rule is common/default_paths.h's SocketSearchPath):

    1. ``$LIGERD_SOCKET`` when set: that socket only;
    2. the user's own daemon: ``$XDG_RUNTIME_DIR/ligerd/ligerd.sock``, else ``/tmp/ligerd-<uid>/ligerd.sock``;
    3. the node service: ``/run/ligerd/ligerd.sock`` (NODE_SOCKET_PATH; deploy/systemd, deploy/k8s).

A variable counts when it is set and not blank; its value is used without surrounding ASCII
whitespace and otherwise as given (no ``~`` expansion). XDG_* values that are not absolute are
ignored (XDG Base Directory spec). ``uid`` defaults to the effective uid.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import List, Mapping, Optional, Tuple

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


# Where the node service listens (deploy/systemd/ligerd-system.service, deploy/k8s).
NODE_SOCKET_PATH = Path("/run/ligerd/ligerd.sock")


def socket_search_path(env: Optional[Mapping[str, str]] = None, uid: Optional[int] = None) -> List[Path]:
    """The sockets a client tries, in order: ``[$LIGERD_SOCKET]`` alone when it is set, else
    ``[default_socket_path(), NODE_SOCKET_PATH]`` (once if they are the same path)."""
    if _env(env, "LIGERD_SOCKET"):
        return [default_socket_path(env, uid)]
    own = default_socket_path(env, uid)
    return [own] if own == NODE_SOCKET_PATH else [own, NODE_SOCKET_PATH]


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


def shared_cache_choice(daemon_cache_dir: str, daemon_uid: Optional[int],
                        env: Optional[Mapping[str, str]] = None,
                        uid: Optional[int] = None) -> Tuple[Optional[Path], Optional[int], str]:
    """Which cache local ops should use once the node's daemon is found: ``(path, trusted_owner,
    reason)``, or ``(None, None, reason)`` to keep :func:`cache_dir`.

    - ``$LIGERD_CACHE_DIR`` set: the user's choice stands;
    - the daemon runs as this user: its cache, read-write (one cache for the daemon and the job);
    - it runs as another user (the node service): its cache read-only, trusting that user as the
      owner (the C++ side checks again: owned by it or root, writable by no one else), when this
      user can read it (a member of the daemon's ``--socket_group``); else our own.
    """
    if _env(env, "LIGERD_CACHE_DIR"):
        return None, None, "LIGERD_CACHE_DIR is set"
    if not daemon_cache_dir or daemon_uid is None:
        return None, None, "the daemon did not say where its cache is"
    path = Path(daemon_cache_dir)
    me = os.geteuid() if uid is None else uid
    if daemon_uid == me:
        return path, None, f"the daemon's cache {path} (same user)"
    try:
        st = path.stat()
    except OSError as e:
        return None, None, f"the daemon's cache {path} cannot be read ({e.strerror})"
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (daemon_uid, 0) or st.st_mode & 0o022:
        return None, None, (f"the daemon's cache {path} is not a directory of uid {daemon_uid} that only "
                            f"its owner can write")
    if not os.access(path, os.R_OK | os.X_OK):
        return None, None, (f"the daemon's cache {path} is not readable by this user (join the daemon's "
                            f"--socket_group)")
    return path, daemon_uid, f"the node daemon's cache {path}, read-only (owned by uid {daemon_uid})"


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
