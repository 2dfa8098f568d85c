"""Shared benchmark helpers: timing (medians), the measured copy bandwidth, CSV/PNG output.

Timing uses triton.testing.do_bench when Triton is importable (it flushes L2 between repetitions
and reports the median), else CUDA events with the same L2 flush. Speed of light: a large
device-to-device copy, counting bytes read + written, measured in the same run as everything
else (absolute numbers move between machines and runs; ratios measured side by side do not)."""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

# Where the lead installs peer wheels on the GPU machine (pip install --target /tmp/site ...).
PEER_SITE = "/tmp/site"


def add_peer_site() -> None:
    if os.path.isdir(PEER_SITE) and PEER_SITE not in sys.path:
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
    """Measured device-to-device copy bandwidth in GB/s, counting bytes read + written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src))
    del src, dst
    return 2 * nbytes / (ms * 1e-3) / 1e9


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
