"""The one door every op goes through: ``call(op, **named)`` (tensors and scalars by the names of
the op's entry, kernels/ops/<family>.toml), which puts them in the entry's order for
``launch(op, tensors, scalars)``.

In ``local`` mode it calls the executor in ``ligerd._C`` (the same C++ library the daemon runs) on
this process's tensors, on torch's current CUDA stream. In ``remote`` mode (or ``auto`` where the
daemon chose remote for the device) it writes a ring record to the device's session instead
(``ligerd._C.remote_launch``); the daemon runs the op on the same tensors, in the same stream order.
``launch`` takes tensors and scalars positionally, in the entry's order; an absent optional tensor
is None.

CUDA graphs: remote dispatch cannot be captured. The daemon runs an op when this process writes
its ring record, at launch time, on the CPU; a graph replays only GPU work, so a captured remote op
would run once (at the first replay, or never) and every later replay would read stale outputs.
So while torch's current stream on the op's device is being captured (``torch.cuda.graph``,
``torch.compile(mode="reduce-overhead")``), ops of a remote session (and the first op on a device
whose session is not open yet: none is opened inside a capture) run in this process instead,
through the same executor library local dispatch uses (same kernels, same tuning DB; the GEMMs
may pick another cuBLASLt algorithm, so they agree to rounding); a warning says so once per
device. Where the in-process executor cannot run the op, the error says that the op was being
captured and why it could not go to the daemon.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from ligerd import _dispatch, _extension, _telemetry
from ligerd._errors import DaemonUnavailableError, LigerdError, OpInputError, warn_once
from ligerd._entries import ENTRIES

_C = None  # ligerd._C once loaded (the launch path reads it without a call)

# Tests on machines without a GPU replace the executor with a reference implementation (see
# tests/python/test_rms_norm_wiring.py); never set in production.
_test_launcher: Optional[Callable] = None


def load_extension():
    """``ligerd._C``, imported once and pointed at the shared JIT cache (ligerd._extension)."""
    global _C
    if _C is None:
        _C = _extension.load()
    return _C


def extension_available() -> bool:
    try:
        load_extension()
        return True
    except LigerdError:
        return False


# (session, ext.launch) once that session is known to run every op of this process locally (local
# mode, or auto with every CUDA device settled local): ``launch`` then costs one identity check
# before the extension call. A new session (set_dispatch_mode, tests) is a new object, so the
# cache invalidates itself.
_local_fast: tuple = (None, None)


# op -> (tensor names, scalar names, every name), from the entries.
_SIGNATURES = {op: (tuple(t[0] for t in ts), tuple(ss), frozenset([t[0] for t in ts] + list(ss)))
               for op, (ts, ss) in ENTRIES.items()}


def call(op: str, /, **named) -> None:
    """Run ``op`` with its tensors and scalars named as its entry names them, e.g.
    ``call("rms_norm_fwd", X=x, W=None, Y=y, RSTD=rstd, eps=1e-6, offset=0.0, casting_mode=0)``.
    An optional tensor may be left out (None); a scalar may not. A name the entry does not have,
    or a missing scalar, is an OpInputError naming the op."""
    sig = _SIGNATURES.get(op)
    if sig is None:
        raise OpInputError(f"ligerd op {op}: no such op (the entries name {', '.join(sorted(_SIGNATURES))})", op=op)
    tnames, snames, known = sig
    if not named.keys() <= known:
        raise OpInputError(f"ligerd op {op}: no argument(s) {sorted(named.keys() - known)} "
                           f"(tensors {', '.join(tnames)}; scalars {', '.join(snames) or 'none'})", op=op)
    try:
        scalars = [named[n] for n in snames]
    except KeyError as e:
        raise OpInputError(f"ligerd op {op}: scalar {e.args[0]!r} not given "
                           f"(scalars {', '.join(snames)})", op=op) from None
    launch(op, [named.get(n) for n in tnames], scalars)


def launch(op: str, tensors: Sequence, scalars: Sequence[float]) -> None:
    """Run ``op`` asynchronously on the current stream of the tensors' device. ``tensors`` and
    ``scalars`` are lists (every op builds them as lists)."""
    rep = _telemetry.reporter  # counts local launches (ligerd._telemetry); None when off
    if _test_launcher is not None:
        if rep is None:
            _test_launcher(op, tensors, scalars)
        else:
            rep.run(op, tensors, scalars, _test_launcher)
        return
    session, fast = _local_fast
    if session is not None and session is _dispatch._session:
        if rep is None:
            fast(op, tensors, [float(s) for s in scalars])
        else:
            rep.run(op, tensors, [float(s) for s in scalars], fast)
        return
    _launch_slow(op, tensors, scalars)


def _local(fn, op: str, tensors, scalars) -> None:
    """A launch in this process, counted by the telemetry reporter (created at the first one)."""
    rep = _telemetry.get()
    if rep is None:
        fn(op, tensors, scalars)
    else:
        rep.run(op, tensors, scalars, fn)


def _launch_slow(op: str, tensors: Sequence, scalars: Sequence[float]) -> None:
    global _local_fast
    session = _dispatch.session()
    ext = _C if _C is not None else load_extension()
    tensors = list(tensors)
    scalars = [float(s) for s in scalars]
    if session.mode != "local":
        device = _dispatch.device_of(tensors)
        if device is not None:
            d = session.devices.get(device)
            if d is None and capturing(device):
                # The device's first op, inside a capture: no session is opened there (its RPCs
                # and flag-page setup are no graph work); it runs as a captured remote op would.
                _captured_launch(ext, device, op, tensors, scalars)
                return
            if d is None:
                d = session.device(device)
            if d.handle is not None:
                if capturing(device):
                    _captured_launch(ext, device, op, tensors, scalars)
                    return
                _remote_launch(ext, session, d, op, tensors, scalars)
                return
        if not session.all_devices_local():
            _local(ext.launch, op, tensors, scalars)
            return
    _local_fast = (session, ext.launch)
    _local(ext.launch, op, tensors, scalars)


def capturing(device: int) -> bool:
    """True while torch's current stream on CUDA device ``device`` is being captured into a CUDA
    graph (the stream the op would be queued on). Only asked where an op could go to the daemon
    (a remote session, or a device whose dispatch is not settled yet)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():  # no CUDA work yet, so no capture
        return False
    # torch.cuda.current_device() and is_current_stream_capturing(), minus their Python layers
    # (this runs on every remote launch).
    c = torch._C
    if c._cuda_getDevice() == device:
        return c._cuda_isCurrentStreamCapturing()
    with torch.cuda.device(device):
        return c._cuda_isCurrentStreamCapturing()


def _captured_launch(ext, device: int, op: str, tensors, scalars) -> None:
    """An op that would go to the daemon, while a CUDA graph is captured: run by this process's
    executor (see the module docstring)."""
    warn_once(f"capture-in-process-{device}",
              f"ligerd: cuda:{device}: a CUDA graph is being captured, and remote dispatch cannot be "
              f"captured (the daemon runs an op when this process writes its ring record at launch "
              f"time, which a graph replay does not do), so ligerd ops captured into the graph run "
              f"in this process, with the same kernels and tuning; ops outside graphs still run in "
              f"the daemon", stacklevel=6)
    try:
        _local(ext.launch, op, tensors, scalars)  # counted as a local launch (at capture time)
    except LigerdError as e:
        raise type(e)(f"ligerd op {op}: captured into a CUDA graph on cuda:{device}, where this "
                      f"process's remote session cannot be used (a graph replay writes no ring "
                      f"records for the daemon), so it ran in this process, which failed: {e}",
                      code=e.code, op=op) from e


def _remote_launch(ext, session, d, op, tensors, scalars) -> None:
    try:
        ext.remote_launch(d.handle, op, tensors, scalars)
    except DaemonUnavailableError:
        raise  # the session stays dead: every later op says so too
    except LigerdError:
        # Was it this submit that failed (bad tensor: the session is fine), or did the daemon record
        # an asynchronous error? Those are sticky, like CUDA's: the session is spent, so close it
        # and let the next op open a fresh one.
        try:
            ext.session_check(d.handle)
        except DaemonUnavailableError:
            pass
        except LigerdError:
            session.drop_device(d.device)
        raise


def cpu_allowed() -> bool:
    """True only under a test launcher: real ops take CUDA tensors."""
    return _test_launcher is not None
