"""Dispatch modes: where an op runs.

- ``local``: in this process, by the same executor library the daemon uses (``ligerd._C``), loading
  kernels from the shared on-disk JIT cache. Works with no daemon at all (it warns once).
- ``remote``: in the daemon, on CUDA-IPC-mapped tensors, over the shared-memory ring. Not in this
  build yet (sessions, ring and IPC registry land with issue 3): asking for it raises
  DispatchUnavailableError.
- ``auto`` (default): remote where MPS is active for the device, local otherwise. While remote is
  not built, auto always picks local and the session says so: "local (remote dispatch not available
  in this build)".

Set with ``LIGERD_DISPATCH=local|remote|auto`` or ``ligerd.set_dispatch_mode(...)`` (the API wins).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Mapping, Optional

from ligerd._errors import (ConfigError, DaemonUnavailableError, DispatchUnavailableError,
                            warn_once)

MODES = ("local", "remote", "auto")
REMOTE_AVAILABLE = False  # flips when the session/ring/IPC data plane (issue 3, step 3) is built

_REMOTE_MISSING = ("ligerd: dispatch mode 'remote' is not available in this build: the daemon-side "
                   "data plane (sessions, shared-memory ring, CUDA IPC registry) is still being "
                   "built under issue 3. Use LIGERD_DISPATCH=local or auto (auto runs ops locally).")


def parse_mode(value: Optional[str], source: str = "LIGERD_DISPATCH") -> str:
    """Normalise a mode string; empty/None means ``auto``. Unknown values raise ConfigError."""
    if value is None:
        return "auto"
    if not isinstance(value, str):
        raise ConfigError(f"ligerd: dispatch mode must be a string, one of {MODES}; got {value!r} "
                          f"from {source}")
    mode = value.strip().lower()
    if not mode:
        return "auto"
    if mode not in MODES:
        raise ConfigError(f"ligerd: unknown dispatch mode {value!r} from {source}; "
                          f"expected one of {', '.join(MODES)}")
    return mode


_lock = threading.RLock()
_api_mode: Optional[str] = None
_session: Optional["Session"] = None


def requested_mode(env: Optional[Mapping[str, str]] = None) -> tuple:
    """(mode, source): the API setting if any, else ``LIGERD_DISPATCH``, else ``auto``."""
    if _api_mode is not None:
        return _api_mode, "set_dispatch_mode()"
    env = os.environ if env is None else env
    raw = env.get("LIGERD_DISPATCH")
    if raw is None or not raw.strip():
        return "auto", "default"
    return parse_mode(raw), f"LIGERD_DISPATCH={raw.strip()}"


def resolve(mode: str, source: str) -> tuple:
    """(effective mode, reason) for a requested mode."""
    if mode == "remote":
        if not REMOTE_AVAILABLE:
            raise DispatchUnavailableError(_REMOTE_MISSING)
        return "remote", f"remote (requested by {source})"  # pragma: no cover (not built yet)
    if mode == "local":
        return "local", f"local (requested by {source})"
    # auto
    if not REMOTE_AVAILABLE:
        return "local", "local (remote dispatch not available in this build)"
    return "local", "local (MPS not active)"  # pragma: no cover (decided per device once remote exists)


def set_dispatch_mode(mode: Optional[str]) -> None:
    """Choose ``"local"``, ``"remote"`` or ``"auto"`` for this process (None: back to the env/default).

    Takes effect for the next op (the current session is dropped). ``"remote"`` raises
    DispatchUnavailableError in this build."""
    global _api_mode, _session
    parsed = None if mode is None else parse_mode(mode, source="set_dispatch_mode()")
    if parsed == "remote" and not REMOTE_AVAILABLE:
        raise DispatchUnavailableError(_REMOTE_MISSING)
    with _lock:
        _api_mode = parsed
        _session = None


def get_dispatch_mode() -> str:
    """The requested mode (``local``/``remote``/``auto``), not yet resolved."""
    return requested_mode()[0]


@dataclass
class Session:
    """What this process uses: the effective mode, why, and the daemon (if one could be reached)."""
    requested: str
    mode: str
    reason: str
    daemon: Optional[object] = None
    daemon_error: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        d = self.daemon.describe() if self.daemon is not None else f"none ({self.daemon_error})"
        return f"dispatch: {self.reason}; daemon: {d}"


def _attach_daemon(session: Session) -> None:
    """Local mode: the daemon is optional (it owns compilation and telemetry, but the executor can
    JIT into the shared cache itself). Try to reach or start one; on failure warn once and go on."""
    from ligerd import _daemon
    try:
        session.daemon = _daemon.connect_or_start()
    except DaemonUnavailableError as e:
        session.daemon_error = str(e)
        warn_once("local-no-daemon",
                  f"ligerd: running ops locally without a daemon ({e}). Ops work; kernels are "
                  f"compiled into the shared cache by this process.", stacklevel=5)


def session() -> Session:
    """The process's session, created on first use (first op)."""
    global _session
    s = _session
    if s is not None:
        return s
    with _lock:
        if _session is None:
            requested, source = requested_mode()
            mode, reason = resolve(requested, source)
            s = Session(requested=requested, mode=mode, reason=reason)
            if mode == "local" and os.environ.get("LIGERD_NO_DAEMON", "").strip() not in ("", "0"):
                s.daemon_error = "LIGERD_NO_DAEMON is set"
            elif mode == "local":
                _attach_daemon(s)
            _session = s
        return _session


def session_info() -> dict:
    """A dict a user (or a log line) can print: requested and effective mode, reason, daemon."""
    s = session()
    return {
        "requested": s.requested,
        "mode": s.mode,
        "reason": s.reason,
        "daemon": s.daemon.describe() if s.daemon is not None else None,
        "daemon_error": s.daemon_error,
    }


def _reset_for_tests() -> None:
    global _api_mode, _session
    with _lock:
        if _session is not None and _session.daemon is not None and getattr(_session.daemon, "private", False):
            _session.daemon.stop()
        _api_mode = None
        _session = None
