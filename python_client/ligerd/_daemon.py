"""Finding the node's ligerd daemon, and starting a private one when none answers.

Order of business (``connect_or_start``):
1. Health-check, with a short deadline each, the sockets of ``ligerd._paths.socket_search_path()``:
   ``$LIGERD_SOCKET`` alone when it is set; else the user's own daemon
   (``$XDG_RUNTIME_DIR/ligerd/ligerd.sock``, else ``/tmp/ligerd-<uid>/ligerd.sock``), then the node
   service (``/run/ligerd/ligerd.sock``). Paths that do not exist are skipped at once. The first
   SERVING one is used.
2. Otherwise, unless ``LIGERD_AUTOSTART=0``, start a private ``ligerd`` (from ``$LIGERD_BIN``, PATH, or
   ``<package>/bin/ligerd``) with ``--socket`` in a fresh private directory, wait at most 2 s for
   SERVING, say so once (a LigerdWarning and a log line), and stop it when this process exits.
3. Otherwise raise DaemonUnavailableError saying what was tried.

Every wait has a deadline: a dead or wedged daemon gives a clear error within about 2 s, never a hang.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Mapping, Optional, Tuple

from ligerd import _health, _paths
from ligerd._errors import DaemonUnavailableError, warn_once

log = logging.getLogger("ligerd")

CONNECT_TIMEOUT_S = 0.5   # one health check against an existing socket
START_TIMEOUT_S = 2.0     # a private daemon must be SERVING this fast
STOP_TIMEOUT_S = 2.0      # SIGTERM, then SIGKILL after this


def autostart_enabled(env: Optional[Mapping[str, str]] = None) -> bool:
    """``LIGERD_AUTOSTART`` unset/empty/1/true/yes/on: on; 0/false/no/off: off."""
    env = os.environ if env is None else env
    value = (env.get("LIGERD_AUTOSTART") or "").strip().lower()
    return value not in ("0", "false", "no", "off")


class DaemonHandle:
    """A daemon this process talks to: either found on a socket, or a private one it started."""

    def __init__(self, socket_path: str, proc: Optional[subprocess.Popen] = None,
                 private_dir: Optional[str] = None, binary: Optional[str] = None):
        self.socket_path = str(socket_path)
        self.proc = proc
        self.private_dir = private_dir
        self.binary = binary
        self._stopped = False

    @property
    def private(self) -> bool:
        return self.proc is not None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    @property
    def owner_uid(self) -> Optional[int]:
        """The uid that owns the socket (the daemon's user: it creates the socket); None if gone."""
        try:
            return os.stat(self.socket_path).st_uid
        except OSError:
            return None

    def health(self, timeout: float = CONNECT_TIMEOUT_S) -> int:
        """ServingStatus now; DaemonUnavailableError (within ``timeout``) if it does not answer."""
        if self.proc is not None and self.proc.poll() is not None:
            raise DaemonUnavailableError(
                f"the private ligerd (pid {self.proc.pid}) exited with status {self.proc.returncode}"
                f"{_log_tail(self.private_dir)}")
        return _health.check(self.socket_path, timeout=timeout)

    def ensure_serving(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        status = self.health(timeout)
        if status != _health.SERVING:
            raise DaemonUnavailableError(
                f"ligerd at {self.socket_path} is {_health.STATUS_NAMES.get(status, status)}, not SERVING")

    def stop(self, grace: float = STOP_TIMEOUT_S) -> None:
        """Stop a private daemon (SIGTERM, then SIGKILL after ``grace`` s) and remove its directory.
        A daemon found on a socket is not ours: it is left alone."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc is not None:
            _terminate(self.proc, grace)
        if self.private_dir:
            shutil.rmtree(self.private_dir, ignore_errors=True)

    def describe(self) -> str:
        if self.private:
            return f"private ligerd pid {self.pid} on {self.socket_path}"
        return f"ligerd on {self.socket_path}"

    def __repr__(self) -> str:
        return f"DaemonHandle({self.describe()})"


def _terminate(proc: subprocess.Popen, grace: float = STOP_TIMEOUT_S) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    except ProcessLookupError:
        pass


def _log_tail(private_dir: Optional[str], limit: int = 2000) -> str:
    if not private_dir:
        return ""
    try:
        text = Path(private_dir, "ligerd.log").read_text(errors="replace")
    except OSError:
        return ""
    text = text.strip()
    if not text:
        return ""
    return "; its output ends with:\n" + text[-limit:]


def connect(socket_path: Optional[str] = None, timeout: float = CONNECT_TIMEOUT_S) -> DaemonHandle:
    """A handle to a SERVING daemon on ``socket_path`` (default socket if None), or DaemonUnavailableError."""
    path = str(socket_path) if socket_path else str(_paths.default_socket_path())
    handle = DaemonHandle(path)
    handle.ensure_serving(timeout)
    return handle


# Private daemons started by this process, stopped at exit.
_private: List[DaemonHandle] = []
_private_lock = threading.Lock()


def _stop_private_daemons() -> None:
    with _private_lock:
        handles = list(_private)
        _private.clear()
    for h in handles:
        h.stop()


atexit.register(_stop_private_daemons)


def _preexec_in_main_thread():
    """For children started from the main thread: die with the parent (PR_SET_PDEATHSIG).

    Only from the main thread: the kernel sends the signal when the *thread* that forked exits, so
    from a worker thread it would kill the daemon as soon as that thread finished."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def preexec():
        try:
            import ctypes
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except Exception:  # best effort: atexit still stops it on a normal exit
            pass
        os.setsid()  # not in the trainer's process group: a Ctrl-C there is the trainer's to handle

    return preexec


def start_private(binary: str, timeout: float = START_TIMEOUT_S,
                  extra_args: Optional[List[str]] = None) -> DaemonHandle:
    """Start ``binary --socket=<private dir>/ligerd.sock``; SERVING within ``timeout`` or an error.

    The private directory is created 0700 (only this user can reach the socket). The daemon's output
    goes to ``ligerd.log`` there; its tail is quoted if it fails to come up."""
    private_dir = tempfile.mkdtemp(prefix=f"ligerd-{os.getuid()}-")
    os.chmod(private_dir, 0o700)
    socket_path = os.path.join(private_dir, "ligerd.sock")
    args = [binary, f"--socket={socket_path}"]
    cache = os.environ.get("LIGERD_CACHE_DIR", "").strip()
    if cache:
        args.append(f"--cache_dir={cache}")
    args += list(extra_args or [])
    log_file = open(os.path.join(private_dir, "ligerd.log"), "wb")
    start = time.monotonic()
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, close_fds=True,
                                preexec_fn=_preexec_in_main_thread())
    except OSError as e:
        log_file.close()
        shutil.rmtree(private_dir, ignore_errors=True)
        raise DaemonUnavailableError(f"could not start {binary}: {e}") from None
    finally:
        if not log_file.closed:
            log_file.close()  # the child has its own descriptor
    handle = DaemonHandle(socket_path, proc=proc, private_dir=private_dir, binary=binary)
    status = _health.wait_serving(socket_path, deadline=start + timeout,
                                  alive=lambda: proc.poll() is None)
    if status == _health.SERVING:
        with _private_lock:
            _private.append(handle)
        return handle
    exited = proc.poll()
    tail = _log_tail(private_dir)
    handle.stop(grace=0.2)  # it already failed us: do not spend another 2 s on a polite exit
    if exited is not None:
        why = f"exited with status {exited} before serving"
    elif status is None:
        why = f"did not answer on {socket_path} within {timeout:.1f} s"
    else:
        why = f"answered {_health.STATUS_NAMES.get(status, status)}, not SERVING, for {timeout:.1f} s"
    raise DaemonUnavailableError(f"the private ligerd started from {binary} {why}{tail}")


def find_running(env: Optional[Mapping[str, str]] = None,
                 timeout: float = CONNECT_TIMEOUT_S) -> Tuple[Optional[DaemonHandle], List[str]]:
    """The first SERVING daemon along ``_paths.socket_search_path(env)`` (None if none), and why
    each socket before it was passed over."""
    explicit = bool((os.environ if env is None else env).get("LIGERD_SOCKET", "").strip())
    passed: List[str] = []
    for path in _paths.socket_search_path(env):
        if not explicit and not os.path.exists(path):
            passed.append(f"no socket at {path}")
            continue
        try:
            return connect(str(path), timeout), passed
        except DaemonUnavailableError as e:
            passed.append(str(e))
    return None, passed


def connect_or_start(env: Optional[Mapping[str, str]] = None) -> DaemonHandle:
    """The node's daemon, or a private one (see the module docstring). DaemonUnavailableError if neither."""
    found, passed = find_running(env)
    if found is not None:
        if passed:
            log.info("ligerd: using %s (%s)", found.describe(), "; ".join(passed))
        return found
    socket_path = str(_paths.default_socket_path(env))
    reason = "; ".join(passed)
    if not autostart_enabled(env):
        raise DaemonUnavailableError(
            f"no ligerd daemon is serving ({reason}) and autostart is off (LIGERD_AUTOSTART=0): "
            f"start one (`ligerd --socket={socket_path}`), point LIGERD_SOCKET at one, "
            f"or unset LIGERD_AUTOSTART")
    if not _health.grpc_available():
        raise DaemonUnavailableError(
            f"no ligerd daemon is serving ({reason}), and a private one cannot be checked: "
            f"the Python package grpcio is not installed")
    binary = _paths.find_daemon_binary(env)
    if binary is None:
        raise DaemonUnavailableError(
            f"no ligerd daemon is serving ({reason}), and no ligerd binary was found to start a "
            f"private one (looked at $LIGERD_BIN, PATH and {_paths.package_dir() / 'bin'})")
    handle = start_private(binary)
    searched = ", ".join(str(p) for p in _paths.socket_search_path(env))
    msg = (f"ligerd: no daemon answered on {searched}; started a private ligerd "
           f"(pid {handle.pid}, socket {handle.socket_path}) for this process; it stops when "
           f"this process exits. Run ligerd as a service to share its caches across processes.")
    log.info(msg)
    warn_once("autostart", msg, stacklevel=4)
    return handle
