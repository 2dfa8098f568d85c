"""Dispatch modes: where an op runs.

- ``local``: in this process, by the same executor library the daemon uses (``ligerd._C``), loading
  kernels from the shared on-disk JIT cache. Works with no daemon at all (it warns once).
- ``remote``: in the daemon, on CUDA-IPC-mapped tensors, over the session's shared-memory ring,
  ordered against torch's current stream by flags on the GPU (``ligerd._C.remote_launch``). Needs
  a daemon (one is autostarted as for local) and a CUDA device. Without MPS it still works, only
  each op pays a GPU context switch; the daemon says so and we warn once.
- ``auto`` (default): the daemon decides per device at the first op on it (OpenSession with
  DISPATCH_AUTO): remote where MPS is active on the device, local otherwise. With no daemon, or no
  CUDA device, auto is local.

Caches: with a daemon found on the node (not a private one), local ops load kernels from and read
tuned configs in the daemon's cache directory (Info.cache_dir): read-write when the daemon runs as
this user, read-only when it is the node service of another user and this user can read it (a
member of its ``--socket_group``); ``LIGERD_CACHE_DIR`` overrides (ligerd._paths.shared_cache_choice).

Set with ``LIGERD_DISPATCH=local|remote|auto`` or ``ligerd.set_dispatch_mode(...)`` (the API wins).
The choice and its reason are logged once per device (logger ``ligerd``) and returned by
``ligerd.dispatch_info()``.

A remote session is per (process, device), opened lazily at the first op on the device. Errors in
the daemon are asynchronous, like CUDA's: the first one is recorded in the session's shared memory
and raised (naming the op that failed) by the next op at the latest. Such a session is then
closed and the next op opens a fresh one; a daemon that died is reported as
DaemonUnavailableError by every later op (no reconnect behind the user's back).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

from ligerd import _extension, _telemetry
from ligerd._errors import (ConfigError, DaemonUnavailableError, DispatchUnavailableError,
                            LigerdError, warn_once)

log = logging.getLogger("ligerd")

MODES = ("local", "remote", "auto")


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
    """(process-wide mode, reason) for a requested mode; ``auto`` is settled per device later."""
    if mode == "remote":
        return "remote", f"remote (requested by {source})"
    if mode == "local":
        return "local", f"local (requested by {source})"
    return "auto", "auto: remote where MPS is active on the device, local otherwise (decided by the daemon)"


def set_dispatch_mode(mode: Optional[str]) -> None:
    """Choose ``"local"``, ``"remote"`` or ``"auto"`` for this process (None: back to the env/default).

    Takes effect for the next op: the current session (and its remote sessions) is closed."""
    global _api_mode, _session
    parsed = None if mode is None else parse_mode(mode, source="set_dispatch_mode()")
    with _lock:
        _api_mode = parsed
        old, _session = _session, None
    if old is not None:
        old.close_devices()


def get_dispatch_mode() -> str:
    """The requested mode (``local``/``remote``/``auto``), not yet resolved."""
    return requested_mode()[0]


@dataclass
class DeviceDispatch:
    """How ops on one CUDA device run: ``handle`` is the ligerd._C.RemoteSession when remote."""
    device: int
    mode: str
    reason: str
    handle: Optional[object] = None


@dataclass
class Session:
    """What this process uses: the mode (``auto`` until a device's first op settles it), why, the
    daemon (if one could be reached) and the per-device choices."""
    requested: str
    mode: str
    reason: str
    source: str = ""
    daemon: Optional[object] = None
    daemon_error: Optional[str] = None
    devices: Dict[int, DeviceDispatch] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        d = self.daemon.describe() if self.daemon is not None else f"none ({self.daemon_error})"
        per = "; ".join(f"cuda:{k}: {v.reason}" for k, v in sorted(self.devices.items()))
        return f"dispatch: {self.reason}; daemon: {d}" + (f"; {per}" if per else "")

    def device(self, index: int) -> DeviceDispatch:
        """The dispatch for CUDA device ``index``, opening its session at the first op on it."""
        d = self.devices.get(index)
        if d is not None:
            return d
        with _lock:
            d = self.devices.get(index)
            if d is None:
                d = _open_device(self, index)
                self.devices[index] = d
            return d

    def all_devices_local(self) -> bool:
        """True once every CUDA device of this process has settled on local dispatch (so no op can
        go remote any more; ``ligerd._backend.launch`` then skips the per-op lookup)."""
        if self.mode == "local":
            return True
        n = self.extra.get("cuda_devices")
        if n is None:
            n = self.extra["cuda_devices"] = _cuda_device_count()
        return n > 0 and len(self.devices) >= n and all(
            d.handle is None for d in self.devices.values())

    def drop_device(self, index: int) -> None:
        """Close a device's remote session (after the daemon recorded an error on it)."""
        with _lock:
            d = self.devices.pop(index, None)
        if d is not None and d.handle is not None:
            _close_handle(d.handle)

    def close_devices(self) -> None:
        for index in list(self.devices):
            self.drop_device(index)


def _close_handle(handle) -> None:
    try:
        _extension.load().close_session(handle)
    except LigerdError:
        pass  # best effort: the daemon tears the session down when this process exits anyway


def _cuda_device_count() -> int:
    """CUDA devices torch sees (0 without torch or a GPU). A function so CPU tests can fake it."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _open_device(s: Session, index: int) -> DeviceDispatch:
    """Ask the daemon how to run ops on ``index`` (OpenSession); a local answer closes the session
    again (local needs no session: the executor only shares the daemon's kernel cache)."""
    if s.mode == "local":
        return DeviceDispatch(index, "local", s.reason)
    ext = _extension.load()
    try:
        # The session's client name is the job name: remote and reported ops share one `job` label.
        handle = ext.open_session(s.daemon.socket_path, index, s.mode, _telemetry.job())
    except LigerdError as e:
        if s.mode == "remote":
            raise
        warn_once(f"auto-open-failed-{index}",
                  f"ligerd: cuda:{index}: could not open a session with {s.daemon.describe()} ({e}); "
                  f"running ops locally", stacklevel=6)
        return DeviceDispatch(index, "local", f"local (auto: opening a session failed: {e})")
    _register_atexit()
    reason = f"{handle.mode} ({handle.reason})"
    if s.mode == "remote":
        reason = f"{handle.mode} (requested by {s.source}; daemon: {handle.reason})"
    msg = f"ligerd: ops on cuda:{index} run {reason}"
    log.info(msg)
    if s.mode == "remote" and (handle.mode != "remote" or "MPS inactive" in handle.reason):
        warn_once(f"remote-degraded-{index}", msg, stacklevel=6)
    if handle.mode == "remote":
        _prepare_in_process_executor(ext, index)
        return DeviceDispatch(index, "remote", reason, handle)
    ext.close_session(handle)
    return DeviceDispatch(index, "local", reason)


def _prepare_in_process_executor(ext, index: int) -> None:
    """Creates this process's executor for ``index`` now, when its remote session opens (outside
    any capture): while a CUDA graph is being captured, ops of a remote session run in this
    process (ligerd/_backend.py), and the first of them would otherwise create the executor
    (find the driver, open the JIT cache and the tuning DB) inside the capture, on whatever thread
    launched it. Best effort: a failure is logged, and a captured op that needs the executor
    reports it."""
    init = getattr(ext, "init_device", None)
    if init is None:
        return
    try:
        init(index)
    except (LigerdError, RuntimeError) as e:
        log.info("ligerd: cuda:%d: the in-process executor (for ops captured into CUDA graphs) "
                 "could not be created yet: %s", index, e)


_atexit_registered = False


def _register_atexit() -> None:
    # Registered after ligerd._daemon's handler (imported when the daemon was found), so it runs
    # first (atexit is LIFO): sessions are closed while the daemon and CUDA are still up.
    global _atexit_registered
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_close_all)


def _close_all() -> None:
    s = _session
    if s is not None:
        s.close_devices()


def _share_node_cache(s: Session) -> None:
    """Point local executors at the found daemon's cache (see the module docstring); the choice
    and its reason go to ``dispatch_info()["cache"]`` and the log."""
    from ligerd import _health, _paths
    d = s.daemon
    if d is None or getattr(d, "private", False):
        s.extra["cache"] = f"{_paths.cache_dir()} (own)"
        return
    try:
        facts = _health.info(d.socket_path)
    except DaemonUnavailableError as e:
        s.extra["cache"] = f"{_paths.cache_dir()} (own; the daemon's Info failed: {e})"
        return
    path, owner, reason = _paths.shared_cache_choice(facts.get("cache_dir", ""), d.owner_uid)
    if path is None:
        s.extra["cache"] = f"{_paths.cache_dir()} (own: {reason})"
    else:
        s.extra["cache"] = reason
        _extension.use_cache_dir(path, owner)
    log.info("ligerd: local ops use %s", s.extra["cache"])


def _attach_daemon(session: Session) -> None:
    """Local mode: the daemon is optional (it owns compilation and telemetry, but the executor can
    JIT into the shared cache itself). Try to reach or start one; on failure warn once and go on."""
    from ligerd import _daemon
    try:
        session.daemon = _daemon.connect_or_start()
        _share_node_cache(session)
    except DaemonUnavailableError as e:
        session.daemon_error = str(e)
        warn_once("local-no-daemon",
                  f"ligerd: running ops locally without a daemon ({e}). Ops work; kernels are "
                  f"compiled into the shared cache by this process.", stacklevel=5)


def _no_daemon_env() -> bool:
    return os.environ.get("LIGERD_NO_DAEMON", "").strip() not in ("", "0")


def _new_session() -> Session:
    requested, source = requested_mode()
    mode, reason = resolve(requested, source)
    s = Session(requested=requested, mode=mode, reason=reason, source=source)
    if mode == "local":
        if _no_daemon_env():
            s.daemon_error = "LIGERD_NO_DAEMON is set"
        else:
            _attach_daemon(s)
        return s
    if _cuda_device_count() == 0:
        if mode == "remote":
            raise DispatchUnavailableError(
                f"ligerd: dispatch mode 'remote' (from {source}) needs a CUDA device in this process, "
                f"and torch sees none (torch.cuda.is_available() is False). Use "
                f"LIGERD_DISPATCH=local or auto on machines without a GPU.")
        s.mode, s.reason = "local", "local (auto: no CUDA device)"
        s.daemon_error = "not needed without a CUDA device"
        return s
    if _no_daemon_env():
        if mode == "remote":
            raise DaemonUnavailableError(
                f"ligerd: dispatch mode 'remote' (from {source}) needs a daemon, but LIGERD_NO_DAEMON is set")
        s.mode, s.reason, s.daemon_error = "local", "local (auto: LIGERD_NO_DAEMON is set)", "LIGERD_NO_DAEMON is set"
        return s
    if mode == "remote":
        from ligerd import _daemon
        try:
            s.daemon = _daemon.connect_or_start()
        except DaemonUnavailableError as e:
            raise DaemonUnavailableError(
                f"ligerd: dispatch mode 'remote' (from {source}) needs a daemon: {e}") from None
        _share_node_cache(s)
        return s
    _attach_daemon(s)  # auto: a daemon decides per device; without one, local
    if s.daemon is None:
        s.mode, s.reason = "local", "local (auto: no daemon)"
    return s


def session() -> Session:
    """The process's session, created on first use (first op)."""
    global _session
    s = _session
    if s is not None:
        return s
    with _lock:
        if _session is None:
            _session = _new_session()
        return _session


def device_of(tensors) -> Optional[int]:
    """Index of the first CUDA tensor's device, None if there is none (the executor's own checks
    then raise OpInputError naming the op, in either mode)."""
    for t in tensors:
        if t is not None and getattr(t, "is_cuda", False):
            return t.device.index
    return None


def dispatch_info() -> dict:
    """A dict a user (or a log line) can print: requested and effective mode, reason, daemon, and
    per device (once an op ran there) the mode the daemon chose and why."""
    s = session()
    return {
        "requested": s.requested,
        "mode": s.mode,
        "reason": s.reason,
        "daemon": s.daemon.describe() if s.daemon is not None else None,
        "daemon_error": s.daemon_error,
        "cache": s.extra.get("cache"),
        "devices": {i: {"mode": d.mode, "reason": d.reason,
                        "session_id": getattr(d.handle, "session_id", None)}
                    for i, d in sorted(s.devices.items())},
    }


session_info = dispatch_info  # the name used before per-device dispatch


def synchronize(device=None) -> None:
    """``torch.cuda.synchronize(device)`` (None: the current device and every device this process
    ran ops on), then raise if a remote session on those devices lost its daemon or recorded an
    asynchronous error: DaemonUnavailableError or KernelError, as the next op would. Without CUDA
    (the CPU reference launcher) there is nothing to wait for.

    Why: ops are queued on the GPU ahead of the host. When the daemon dies, the client releases
    the GPU work that waited on it (never a hang), so that work, and whatever the job queued
    behind it (an optimizer update), ran on undefined op results; a plain synchronize returns as
    usual. Called once per step where the loop synchronizes anyway (when it logs the loss), it
    raises in the very step whose results are undefined, so the job can restore the state from
    before that step (docs/node-service.md, "When the daemon dies")."""
    import torch

    if not torch.cuda.is_available():
        return
    s = _session
    only = None if device is None else torch.cuda._utils._get_device_index(device, optional=True)
    torch.cuda.synchronize(only)
    if s is None:
        return
    for index, d in sorted(s.devices.items()):
        if d.handle is not None and (only is None or index == only):
            if only is None:
                torch.cuda.synchronize(index)
            _extension.load().session_check(d.handle)


def _daemon_socket() -> Optional[str]:
    """Where telemetry reports go: the daemon of this process's session, if it has one."""
    s = _session
    return str(s.daemon.socket_path) if s is not None and s.daemon is not None else None


_telemetry.daemon_socket = _daemon_socket


def _reset_for_tests() -> None:
    global _api_mode, _session
    _telemetry._reset_for_tests()
    with _lock:
        old, _session = _session, None
        _api_mode = None
    if old is not None:
        old.close_devices()
        if old.daemon is not None and getattr(old.daemon, "private", False):
            old.daemon.stop()
