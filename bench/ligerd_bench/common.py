"""Shared benchmark helpers: timing (medians), the measured copy bandwidth, CSV/PNG output.

Kernel timing (``graph_ms``): the measured step is captured once in a CUDA graph and replayed many
times between two CUDA events; the result is the median over several trials of (elapsed / steps).
Replays cost the host one graph launch for many steps, so the GPU never waits for Python and
every implementation is measured alike, whatever its per-call host cost. L2: a step's working set
is rotated over enough copies of its buffers that each step reads cold data, as a cache flush
would make it (``rotation``), without a flush kernel in the timed interval.

``eager_ms``: the same steps called from Python back to back (no graph), timed with CUDA events
over the whole loop: what a non-graphed training step sees, max(GPU time, host issue time). The
host time to issue one step is reported beside it (``host_us``).

``bench_ms`` (triton.testing.do_bench, or events with an L2 flush) is kept for other callers.
Speed of light: a large device-to-device copy, counting bytes read + written, measured in the
same run as everything else (absolute numbers move between machines and runs; ratios measured
side by side do not)."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

# Where peer packages (liger_kernel, cut_cross_entropy) are installed when they are not in the
# environment itself (`pip install --target DIR` of carried wheels): the setting $LIGERD_PEER_SITE
# (tests/gpu/run.sh sets it); unset, peers come from the environment alone.
PEER_SITE = os.environ.get("LIGERD_PEER_SITE", "").strip() or None


@contextmanager
def env_overrides(env: Dict[str, Optional[str]]):
    """Sets the variables of ``env`` (None: unset) for the block, then restores them."""
    saved = {k: os.environ.get(k) for k in env}
    try:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def add_peer_site() -> None:
    if PEER_SITE and os.path.isdir(PEER_SITE) and PEER_SITE not in sys.path:
        sys.path.append(PEER_SITE)


def _l2_flush_buffer() -> torch.Tensor:
    return torch.empty(256 << 20, dtype=torch.int8, device="cuda")


def bench_ms(fn: Callable[[], object], warmup_ms: float = 25, rep_ms: float = 100,
             grad_to_none: Optional[Sequence[torch.Tensor]] = None) -> float:
    """Median milliseconds of one call of ``fn`` on the current stream."""
    try:
        from triton.testing import do_bench
    except Exception:  # noqa: BLE001
        do_bench = None
    if do_bench is not None:
        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none,
                              return_mode="median"))
    return _events_median_ms(fn, warmup_ms, rep_ms, grad_to_none)


def _events_median_ms(fn, warmup_ms, rep_ms, grad_to_none) -> float:
    cache = _l2_flush_buffer()
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        cache.zero_()
        fn()
    end.record()
    torch.cuda.synchronize()
    est = max(start.elapsed_time(end) / 5, 1e-3)
    n_warm = max(1, int(warmup_ms / est))
    n_rep = max(3, int(rep_ms / est))
    for _ in range(n_warm):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
    for i in range(n_rep):
        if grad_to_none:
            for t in grad_to_none:
                t.grad = None
        cache.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def copy_bandwidth_gbps(nbytes: int = 1 << 30) -> float:
    """Measured device-to-device copy bandwidth in GB/s, counting bytes read + written: the best
    of a memcpy and an elementwise copy kernel over 1 GiB, graph-replayed as the kernels are timed.
    The best, because the speed of light is what the hardware can be seen to do (a uint8 copy_
    alone measured only ~2.4 TB/s on an H100, where the float copies reach ~3.0)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    rates = []
    for step in (lambda: dst.copy_(src), lambda: torch.mul(src, 1.0, out=dst)):
        ms, _ = graph_ms([step])
        rates.append(2 * nbytes / (ms * 1e-3) / 1e9)
    del src, dst
    return max(rates)


# ---------------------------------------------------------------------------------------------
# CUDA-graph and eager-launch timing.

_STREAM: Optional["torch.cuda.Stream"] = None


def bench_stream() -> "torch.cuda.Stream":
    """The one side stream every step runs on (warm-up, capture, replay, eager loops), so that
    autograd's backward ops (which run on their forward's stream) are on the capture stream."""
    global _STREAM
    if _STREAM is None:
        _STREAM = torch.cuda.Stream()
    return _STREAM


def l2_bytes() -> int:
    try:
        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size)
    except Exception:  # noqa: BLE001
        return 50 << 20  # H100


def rotation(step_bytes: int, max_sets: int = 8) -> int:
    """Copies of a step's buffers to cycle through so that between two uses of one copy at least
    3x the L2 size of other data was touched (1 when a single step already does that)."""
    l2 = l2_bytes()
    if step_bytes >= 3 * l2:
        return 1
    return min(max_sets, 1 + math.ceil(3 * l2 / max(step_bytes, 1)))


def _queue_ahead(us: float = 100.0) -> None:
    """A short spin kernel, so the host queues the first timed work before the GPU gets there."""
    if hasattr(torch.cuda, "_sleep"):
        torch.cuda._sleep(int(us * 2000))  # ~2 GHz: cycles


def _trials(run_once: Callable[[int], None], steps_per_run: int, reps: int, trials: int) -> float:
    s = bench_stream()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
          for _ in range(trials)]
    with torch.cuda.stream(s):
        for a, b in ev:
            _queue_ahead()
            a.record(s)
            run_once(reps)
            b.record(s)
    s.synchronize()
    return statistics.median(a.elapsed_time(b) / (reps * steps_per_run) for a, b in ev)


def _reps_for(run_once: Callable[[int], None], steps_per_run: int, target_ms: float) -> int:
    """Repetitions per trial so that a trial lasts about target_ms (at least 1)."""
    est = _trials(run_once, steps_per_run, 1, 1) * steps_per_run
    return max(1, min(1000, int(math.ceil(target_ms / max(est, 1e-3)))))


def graph_ms(steps: Sequence[Callable[[], object]], trials: int = 7, target_ms: float = 8.0,
             warmup: int = 2) -> "tuple[float, int]":
    """Median ms of one step, with ``steps`` (one per buffer copy) captured in one CUDA graph
    and replayed. Returns (ms, replays per trial). Raises if capture fails."""
    s = bench_stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):  # lazy init, JIT compiles, autotuning: all before capture
            for st in steps:
                st()
    s.synchronize()
    g = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(g, stream=s):
            for st in steps:
                st()
    except Exception:
        from ligerd.testing.cuda_graph import reset_capture_state  # ligerd is on the path by now
        reset_capture_state(s)
        raise
    try:
        run = lambda reps: [g.replay() for _ in range(reps)]  # noqa: E731
        with torch.cuda.stream(s):
            g.replay()
        reps = _reps_for(run, len(steps), target_ms)
        return _trials(run, len(steps), reps, trials), reps
    finally:
        s.synchronize()
        del g


def eager_ms(steps: Sequence[Callable[[], object]], trials: int = 5, target_ms: float = 8.0,
             warmup: int = 2) -> "tuple[float, float]":
    """(ms per step on the GPU clock, host us to issue one step): the steps called back to back
    from Python with nothing else per iteration, timed over the whole loop."""
    import time
    s = bench_stream()
    s.wait_stream(torch.cuda.current_stream())

    def run(reps):
        for _ in range(reps):
            for st in steps:
                st()

    with torch.cuda.stream(s):
        run(warmup)
    s.synchronize()
    reps = _reps_for(run, len(steps), target_ms)
    ms = _trials(run, len(steps), reps, trials)
    # Host issue cost alone: the same loop timed on the CPU clock (the GPU may lag behind; the
    # queue is deep enough for these step counts).
    host_reps = max(1, min(reps, 24 // len(steps)))
    with torch.cuda.stream(s):
        _queue_ahead(2000)  # the GPU is busy meanwhile: launches never wait for a full queue
        t0 = time.perf_counter()
        run(host_reps)
        host_us = (time.perf_counter() - t0) / (host_reps * len(steps)) * 1e6
    s.synchronize()
    return ms, host_us


def environment() -> Dict[str, object]:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        env["triton"] = None
    try:
        import ligerd
        env["ligerd"] = ligerd.__version__
    except Exception:  # noqa: BLE001
        env["ligerd"] = None
    add_peer_site()
    try:
        import importlib.metadata as md
        env["liger_kernel"] = md.version("liger_kernel")
    except Exception:  # noqa: BLE001
        try:
            import liger_kernel  # noqa: F401
            env["liger_kernel"] = "unknown version"
        except Exception:  # noqa: BLE001
            env["liger_kernel"] = None
    return env


def write_csv(path: Path, rows: List[Dict[str, object]], columns: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in columns})


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else v


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str))


def format_table(rows: Iterable[Dict[str, object]], columns: Sequence[str]) -> str:
    rows = list(rows)
    cells = [[str(_fmt(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)
