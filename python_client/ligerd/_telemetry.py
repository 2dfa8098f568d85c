"""The client side of ligerd's telemetry (docs/telemetry.md).

Ops dispatched *locally* run in this process, where the daemon sees nothing, so the client counts
them (calls, errors, bytes by the minimal byte model, per op and dtype), times one launch in
``LIGERD_TELEMETRY_SAMPLE_EVERY`` (default 64) of each op with a pair of CUDA events read when the
GPU has passed them (never a sync), and sends the batch to the daemon every
``LIGERD_TELEMETRY_INTERVAL_S`` seconds (default 5) as a ``Telemetry/Report``: the node's view is
then the same in every dispatch mode. Remote ops are not counted here (the daemon runs them).

The job's own numbers ride along: tokens the fused linear cross-entropy saw, its last loss (copied
to pinned memory after the GPU wrote it: read without a sync), the time between its calls (the
step time), tokens/s over the report window, ``torch.cuda.max_memory_allocated()`` and the memory
the fused loss did not allocate (its [tokens, vocab] logits). ``ligerd.telemetry.report_step``
lets a training loop report its own step time, tokens or loss instead.

No daemon, a daemon that does not answer, or grpcio missing: the batch is dropped and counted
(``dropped_reports``); ops keep working. ``LIGERD_TELEMETRY=0`` turns all of it off.

The Report is protobuf on the wire, encoded here with the few lines ``_health`` already has (no
generated stubs; see there why)."""

from __future__ import annotations

import atexit
import os
import struct
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

from ligerd import _capture_mode

REPORT_METHOD = "/ligerd.v1.Telemetry/Report"
MAX_SAMPLES_PER_OP = 256  # per report; the daemon refuses more than 4096 in all
_MAX_OPS = 1024           # entries per report (the daemon's cap)


def _env_enabled() -> bool:
    return os.environ.get("LIGERD_TELEMETRY", "1").strip().lower() not in ("0", "off", "false", "no")


def _env_float(name: str, default: float, low: float) -> float:
    try:
        return max(low, float(os.environ.get(name, default)))
    except ValueError:
        return default


def default_job() -> str:
    """``LIGERD_JOB``, else the script's file name (``train.py``), else ``python``."""
    job = os.environ.get("LIGERD_JOB", "").strip()
    if job:
        return job
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    return os.path.basename(argv0) or "python"


# ---- protobuf wire encoding (proto/ligerd/v1/telemetry.proto) ------------------------------------

def _varint(value: int) -> bytes:
    from ligerd._health import _encode_varint
    return _encode_varint(int(value))


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _f_varint(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value) if value else b""


def _f_double(field: int, value: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", float(value)) if value else b""


def _f_bytes(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value if value else b""


def _f_str(field: int, value: str) -> bytes:
    return _f_bytes(field, value.encode("utf-8"))


def encode_op_stats(op: str, dtype: str, calls: int, errors: int, nbytes: int, samples: List[float],
                    sampled_bytes: int) -> bytes:
    packed = b"".join(struct.pack("<d", s) for s in samples)
    return (_f_str(1, op) + _f_varint(3, calls) + _f_varint(4, errors) + _f_varint(6, nbytes) + _f_str(7, dtype)
            + _f_bytes(11, packed) + _f_varint(12, sampled_bytes))


def encode_job_stats(job: str, tokens: int, steps: int, tokens_per_second: float, step_seconds: float,
                     loss: Optional[float], peak_allocated: int, memory_saved: int) -> bytes:
    out = (_f_str(1, job) + _f_varint(2, tokens) + _f_varint(3, steps) + _f_double(4, tokens_per_second)
           + _f_double(5, step_seconds) + _f_varint(8, peak_allocated) + _f_varint(9, memory_saved))
    if loss is not None:
        out += _key(6, 1) + struct.pack("<d", float(loss)) + _f_varint(7, 1)
    return out


# JitStats fields (proto/ligerd/v1/telemetry.proto) from ligerd._C.jit_stats()'s keys.
_JIT_COUNTERS = (("memory_hits", 2), ("disk_hits", 3), ("misses", 4), ("compiles", 5), ("compile_failures", 6))


def encode_jit_stats(delta: Dict[str, float]) -> bytes:
    """This process's JIT cache use since the last report (the daemon adds it to "clients")."""
    out = b"".join(_f_varint(field, int(delta.get(key, 0))) for key, field in _JIT_COUNTERS)
    return out + _f_double(7, float(delta.get("compile_seconds", 0.0)))


def encode_report(pid: int, job: str, ops: List[bytes], job_stats: bytes, has_tokens_per_second: bool,
                  jit: Optional[bytes] = None) -> bytes:
    out = b"".join(_f_bytes(3, o) for o in ops)
    out += _f_varint(4, pid) + _f_str(5, job) + _f_bytes(6, job_stats) + _f_varint(7, int(has_tokens_per_second))
    if jit:
        out += _f_bytes(8, jit)
    return out


def _jit_totals() -> Optional[Dict[str, float]]:
    """The local executors' JIT cache counters (ligerd._C.jit_stats()), or None: no extension,
    no executor yet, or a failure (telemetry never breaks a training step)."""
    ext = sys.modules.get("ligerd._C")  # only once something loaded it: never imported from here
    if ext is None or not hasattr(ext, "jit_stats"):
        return None
    try:
        stats = ext.jit_stats()
    except Exception:  # noqa: BLE001
        return None
    return dict(stats) if stats else None


# ---- the reporter ----------------------------------------------------------------------------------

class _OpCell:
    __slots__ = ("calls", "errors", "nbytes", "samples", "sampled_bytes")

    def __init__(self):
        self.calls = 0
        self.errors = 0
        self.nbytes = 0
        self.samples: List[float] = []
        self.sampled_bytes = 0


_DTYPE_NAMES: Dict[object, str] = {}  # torch.bfloat16 -> "bfloat16"


def _describe(tensors) -> Tuple[str, int, bool]:
    """(dtype of the first tensor, bytes of all of them, whether on CUDA): the minimal byte model.
    Whatever is not a tensor counts as nothing (telemetry never fails a launch)."""
    dtype, nbytes, cuda = "none", 0, False
    try:
        for t in tensors:
            if t is not None:
                if dtype == "none":
                    d = t.dtype
                    dtype = _DTYPE_NAMES.get(d)
                    if dtype is None:
                        dtype = _DTYPE_NAMES[d] = str(d).rpartition(".")[2]  # "torch.bfloat16"
                    cuda = t.is_cuda
                nbytes += t.nbytes
    except (AttributeError, TypeError):
        pass
    return dtype, nbytes, bool(cuda)


class Reporter:
    """Counts local ops and job numbers; ``flush()`` sends them (or drops them without a daemon).
    ``send`` (tests) replaces the gRPC call: ``send(socket_path, request_bytes) -> None``."""

    def __init__(self, job: Optional[str] = None, interval_s: Optional[float] = None,
                 sample_every: Optional[int] = None, send=None, socket_path=None, start_thread: bool = True):
        self.job = job or default_job()
        self.interval_s = interval_s if interval_s is not None else _env_float("LIGERD_TELEMETRY_INTERVAL_S", 5.0, 0.1)
        self.sample_every = int(sample_every if sample_every is not None
                                else _env_float("LIGERD_TELEMETRY_SAMPLE_EVERY", 64, 0))
        self._send = send or _grpc_send
        self._socket_path = socket_path  # None: the session's daemon, if any
        self._lock = threading.Lock()
        self._ops: Dict[Tuple[str, str], _OpCell] = {}
        self._calls_by_op: Dict[str, int] = {}
        self._pending_events: List[tuple] = []  # (op, dtype, nbytes, start, end)
        self._event_pool: List[object] = []
        self._tokens = 0
        self._steps = 0
        self._busy_s = 0.0  # the window's step time (tokens/s = tokens / this)
        self._step_seconds: Optional[float] = None
        self._loss_host = None       # pinned 0-d float32: the fused loss's last value, copied async
        self._loss_event = None      # recorded after that copy
        self._loss_pending = False   # a copy was recorded and not read yet
        self._loss_reported: Optional[float] = None
        self._loss_fresh = False     # _loss_reported not sent yet
        self._last_loss_call: Optional[float] = None
        self._memory_saved = 0
        self._peak_override: Optional[int] = None
        self._window_start = time.monotonic()
        self._jit_sent: Dict[str, float] = {}  # the JIT counters already reported
        self.jit_totals = _jit_totals            # () -> counters or None (tests replace it)
        self.sent_reports = 0
        self.dropped_reports = 0
        self.last_error: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if start_thread:
            self._thread = threading.Thread(target=self._loop, name="ligerd-telemetry", daemon=True)
            self._thread.start()

    # -- counting (called on the launch path) --

    def run(self, op: str, tensors, scalars, fn) -> None:
        """Calls ``fn(op, tensors, scalars)`` (a local launch), counting it. One lock on the usual
        path: the call is counted before it runs, and marked failed if it raises."""
        dtype, nbytes, cuda = _describe(tensors)
        key = (op, dtype)
        with self._lock:
            n = self._calls_by_op.get(op, 0) + 1
            self._calls_by_op[op] = n
            cell = self._ops.get(key)
            if cell is None:
                cell = self._ops[key] = _OpCell()
            cell.calls += 1
            cell.nbytes += nbytes
        timed = cuda and self.sample_every > 0 and n % self.sample_every == 0 and self._can_time()
        if not timed:
            try:
                fn(op, tensors, scalars)
            except BaseException:
                self._failed(key)
                raise
            return
        start, end = self._take_event(), self._take_event()
        start.record()
        try:
            fn(op, tensors, scalars)
        except BaseException:
            self._failed(key)
            with self._lock:
                self._event_pool += [start, end]
            raise
        end.record()
        with self._lock:
            self._pending_events.append((op, dtype, nbytes, start, end))

    def _failed(self, key) -> None:
        with self._lock:
            cell = self._ops.get(key)
            if cell is None:  # a report went out between the count and the failure
                cell = self._ops[key] = _OpCell()
                cell.calls = 1
            cell.errors += 1

    @staticmethod
    def _can_time() -> bool:
        import torch
        return not torch.cuda.is_current_stream_capturing()

    def _take_event(self):
        with self._lock:
            if self._event_pool:
                return self._event_pool.pop()
        import torch
        return torch.cuda.Event(enable_timing=True)

    def note_loss(self, tokens: int, loss=None, memory_saved: int = 0) -> None:
        """The fused loss's call: ``tokens`` rows, its loss tensor (copied without a sync),
        ``memory_saved`` bytes it did not allocate."""
        now = time.monotonic()
        with self._lock:
            self._tokens += int(tokens)
            self._steps += 1
            if self._last_loss_call is not None:
                self._step_seconds = now - self._last_loss_call
                self._busy_s += self._step_seconds
            self._last_loss_call = now
            self._memory_saved = max(self._memory_saved, int(memory_saved))
        if loss is not None:
            self._copy_loss(loss)

    def _copy_loss(self, loss) -> None:
        import torch
        value = loss.detach()
        if value.numel() != 1:
            return  # reduction="none": per-token losses, no single number
        if not value.is_cuda:
            with self._lock:
                self._loss_reported = float(value.reshape(()).item())
                self._loss_fresh = True
            return
        if torch.cuda.is_current_stream_capturing():
            return
        if self._loss_host is None:
            self._loss_host = torch.empty((), dtype=torch.float32, pin_memory=True)
            self._loss_event = torch.cuda.Event()
        self._loss_host.copy_(value.reshape(()), non_blocking=True)
        self._loss_event.record()
        self._loss_pending = True

    def report_step(self, tokens: Optional[int] = None, loss: Optional[float] = None,
                    step_seconds: Optional[float] = None, peak_allocated_bytes: Optional[int] = None) -> None:
        with self._lock:
            if tokens is not None:
                self._tokens += int(tokens)
            self._steps += 1 if (tokens is not None or step_seconds is not None) else 0
            if step_seconds is not None:
                self._step_seconds = float(step_seconds)
                self._busy_s += self._step_seconds
            if loss is not None:
                self._loss_reported = float(loss)
                self._loss_fresh = True
                self._loss_pending = False  # the loop's own number wins over a pending copy
            if peak_allocated_bytes is not None:
                self._peak_override = int(peak_allocated_bytes)

    # -- sending --

    def _finished_samples(self) -> None:
        """Moves timed launches the GPU has finished into their cells (stream order: stop at the
        first that has not)."""
        while self._pending_events:
            op, dtype, nbytes, start, end = self._pending_events[0]
            if not end.query():
                return
            self._pending_events.pop(0)
            cell = self._ops.get((op, dtype))
            if cell is not None and len(cell.samples) < MAX_SAMPLES_PER_OP:
                cell.samples.append(start.elapsed_time(end) / 1e3)
                cell.sampled_bytes += nbytes
            self._event_pool += [start, end]

    def build_report(self) -> Optional[bytes]:
        """The batch since the last report (and resets it), or None when there is nothing to say."""
        now = time.monotonic()
        with self._lock:
            self._finished_samples()
            ops, self._ops = self._ops, {}
            tokens, self._tokens = self._tokens, 0
            steps, self._steps = self._steps, 0
            busy, self._busy_s = self._busy_s, 0.0
            step_seconds = self._step_seconds
            window = now - self._window_start
            self._window_start = now
            if self._loss_pending and self._loss_event.query():
                self._loss_reported = float(self._loss_host)
                self._loss_fresh = True
                self._loss_pending = False
            loss = self._loss_reported if self._loss_fresh else None
            self._loss_fresh = False
        jit = self._jit_delta()
        if not ops and not tokens and not steps and loss is None and jit is None:
            return None
        peak = self._peak_override
        if peak is None:
            peak = _peak_allocated()
        op_msgs = [encode_op_stats(op, dtype, c.calls, c.errors, c.nbytes, c.samples, c.sampled_bytes)
                   for (op, dtype), c in list(ops.items())[:_MAX_OPS]]
        # Tokens over the steps' own time when known (a step's time is the gap between two fused-loss
        # calls, or what the loop reported), else over the window once it is long enough to mean it.
        tps = tokens / busy if tokens and busy > 0 else (tokens / window if tokens and window >= 1.0 else 0.0)
        job = encode_job_stats(self.job, tokens, steps, tps, step_seconds or 0.0, loss, peak, self._memory_saved)
        return encode_report(os.getpid(), self.job, op_msgs, job, tps > 0,
                             encode_jit_stats(jit) if jit is not None else None)

    def _jit_delta(self) -> Optional[Dict[str, float]]:
        """The JIT counters' growth since the last report, or None when nothing changed."""
        totals = self.jit_totals()
        if not totals:
            return None
        keys = [k for k, _ in _JIT_COUNTERS] + ["compile_seconds"]
        delta = {k: max(0.0, float(totals.get(k, 0)) - float(self._jit_sent.get(k, 0))) for k in keys}
        self._jit_sent = {k: float(totals.get(k, 0)) for k in keys}
        return delta if any(delta.values()) else None

    def flush(self, timeout: float = 2.0) -> bool:
        """Sends the batch now. False when it was dropped (no daemon, no answer, refused)."""
        request = self.build_report()
        if request is None:
            return True
        path = self._socket_path or daemon_socket()
        if path is None:
            self.dropped_reports += 1
            self.last_error = "no daemon"
            return False
        try:
            self._send(path, request, timeout)
        except Exception as e:  # noqa: BLE001 - telemetry must never break training
            self.dropped_reports += 1
            self.last_error = str(e)
            return False
        self.sent_reports += 1
        return True

    def _loop(self) -> None:
        # This thread reads CUDA events: in thread-local capture mode, so that it cannot break a
        # CUDA graph another thread is capturing in global mode (ligerd/_capture_mode.py).
        thread_local = False
        while not self._stop.wait(self.interval_s):
            if not thread_local:
                thread_local = _capture_mode.use_thread_local_capture_mode()
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush(timeout=1.0)


def _peak_allocated() -> int:
    """The largest peak of torch's allocator over this process's devices (the reporter runs on its
    own thread, whose current device need not be the one training uses)."""
    try:
        import torch
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return max(int(torch.cuda.max_memory_allocated(d)) for d in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - telemetry must never break training
        pass
    return 0


def _no_daemon() -> Optional[str]:
    return None


# The socket of the daemon this process uses, None without one. ligerd._dispatch sets it (it owns
# the session; this module must not import it back).
daemon_socket = _no_daemon


def _grpc_send(socket_path: str, request: bytes, timeout: float) -> None:
    import grpc
    from ligerd._health import _CHANNEL_OPTIONS
    channel = grpc.insecure_channel("unix://" + os.path.abspath(socket_path), options=_CHANNEL_OPTIONS)
    try:
        call = channel.unary_unary(REPORT_METHOD, request_serializer=None, response_deserializer=None)
        call(request, timeout=timeout)
    finally:
        channel.close()


# ---- the process's reporter -----------------------------------------------------------------------

reporter: Optional[Reporter] = None  # read on the launch path; None = not counting
_job: Optional[str] = None
_lock = threading.Lock()


def get() -> Optional[Reporter]:
    """The process's reporter, created on first use; None when LIGERD_TELEMETRY=0."""
    global reporter
    if reporter is not None or not _env_enabled():
        return reporter
    with _lock:
        if reporter is None:
            reporter = Reporter(job=_job)
            atexit.register(reporter.close)
    return reporter


def set_job(name: str) -> None:
    global _job
    _job = str(name)
    if reporter is not None:
        reporter.job = _job


def job() -> str:
    return _job or (reporter.job if reporter is not None else default_job())


def _reset_for_tests() -> None:
    global reporter, _job
    if reporter is not None:
        reporter._stop.set()
    reporter = None
    _job = None
