"""The one results file every benchmark appends to: bench/results.csv, long format, one
measurement per row.

Columns (``COLUMNS``):

    op, impl, shape, dtype, pass     what was measured: the op (or "e2e"), the implementation
                                     (ligerd, liger, torch.compile, eager, ...), the shape label
                                     ("M=16384 N=4096"), the dtype, the pass (fwd, bwd, full, ...)
    ms                               milliseconds per step (empty: the run failed; see note)
    GBps, TFps                       the rate by the op's minimal byte model or its FLOP count
    pct_sol, sol_kind                percent of the speed of light measured in the same run:
                                     copy_bw (device-to-device copy bandwidth, for memory-bound
                                     ops) or gemm (the bf16 GEMM rate, for GEMM-bound ones)
    peak_extra_MiB                   what one step adds to the allocator's high-water mark
    gpu, torch, liger, ligerd_commit, date   the run: GPU name, torch and Liger-Kernel versions,
                                     `git rev-parse --short HEAD` (+dirty), UTC date
    note                             anything else: a peer that failed or was not importable, a
                                     timing fallback, the setting a run was made under

The file is append-only: a new run adds rows and never rewrites old ones, so the file is the
history, and "the current numbers" are the newest row of each (op, impl, shape, dtype, pass)
(``newest``; bench/plot_results.py draws those). Benchmarks call ``record(rows, meta)`` at the
end of a run; ``kernel_rows``, ``flce_rows`` and ``e2e_rows`` turn each benchmark's own rows into
this format. The path: ``--results`` of each benchmark, else $LIGERD_RESULTS, else
bench/results.csv.

Nothing here imports torch at module level: reading, converting and plotting work anywhere.
"""

from __future__ import annotations

import csv
import datetime
import math
import os
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = ROOT / "bench" / "results.csv"

COLUMNS = ("op", "impl", "shape", "dtype", "pass", "ms", "GBps", "TFps", "pct_sol", "sol_kind",
           "peak_extra_MiB", "gpu", "torch", "liger", "ligerd_commit", "date", "note")
KEY = ("op", "impl", "shape", "dtype", "pass")
RUN = ("gpu", "torch", "liger", "ligerd_commit", "date")
SOL_KINDS = ("copy_bw", "gemm", "")
NUMERIC = ("ms", "GBps", "TFps", "pct_sol", "peak_extra_MiB")


def default_path() -> Path:
    env = os.environ.get("LIGERD_RESULTS", "").strip()
    return Path(env) if env else DEFAULT_PATH


# ---------------------------------------------------------------------------------------------
# The run's metadata.

def git_commit(root: Path = ROOT) -> str:
    """$LIGERD_COMMIT if set (a copy of the tree without .git), else `git rev-parse --short HEAD`
    with "+dirty" when tracked files differ from it, else ""."""
    env = os.environ.get("LIGERD_COMMIT", "").strip()
    if env:
        return env
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=30)
        return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def run_metadata(env: Optional[Mapping[str, object]] = None, **overrides) -> Dict[str, str]:
    """gpu, torch, liger, ligerd_commit, date of this run. ``env`` is
    ligerd_bench.common.environment()'s record where the benchmark has one (device, torch,
    liger_kernel); without it, it is gathered here (torch imported only now). Keyword arguments
    override any field."""
    if env is None:
        env = {}
        try:
            from ligerd_bench import common  # imports torch
            env = common.environment()
        except Exception:  # noqa: BLE001: no torch: the fields stay empty
            env = {}
    meta = {"gpu": env.get("device") or "", "torch": env.get("torch") or "",
            "liger": env.get("liger_kernel") or "", "ligerd_commit": git_commit(), "date": today()}
    meta.update({k: ("" if v is None else str(v)) for k, v in overrides.items()})
    return meta


# ---------------------------------------------------------------------------------------------
# Reading and writing.

def _num(v) -> Optional[float]:
    """A float, or None for empty / unparsable / NaN (a failed measurement)."""
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return ""
        s = f"{v:.4g}"
        if "e+" in s:  # 40850.0 -> 40850, not 4.085e+04
            s = f"{v:.0f}"
        return s
    return str(v)


def append(rows: Iterable[Mapping[str, object]], path: Optional[Path] = None) -> Path:
    """Appends rows (dicts with the COLUMNS; missing ones empty) to the file, writing the header
    first when the file is new or empty. Refuses a file whose header is not COLUMNS and a row
    with an unknown column or sol_kind, or without op/impl/pass: the file stays one table."""
    path = Path(path) if path else default_path()
    rows = list(rows)
    for r in rows:
        extra = set(r) - set(COLUMNS)
        if extra:
            raise ValueError(f"results: unknown columns {sorted(extra)} in {dict(r)}")
        if not all(r.get(k) for k in ("op", "impl", "pass")):
            raise ValueError(f"results: a row needs op, impl and pass: {dict(r)}")
        if (r.get("sol_kind") or "") not in SOL_KINDS:
            raise ValueError(f"results: sol_kind must be one of {SOL_KINDS}: {dict(r)}")
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if tuple(header) != COLUMNS:
            raise ValueError(f"results: {path} has columns {header}, not {list(COLUMNS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), lineterminator="\n")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k)) for k in COLUMNS})
    return path


def record(rows: Iterable[Mapping[str, object]], meta: Mapping[str, str],
           path: Optional[Path] = None, note: str = "", log=print) -> Optional[Path]:
    """What a benchmark calls at the end of a run: its rows (in this format) with the run's
    metadata (``run_metadata()``) filled in where a row has none, ``note`` added to every row's
    note, appended to the results file. A failure to write is reported, not raised: the run's
    own outputs are already written."""
    out = []
    for r in rows:
        r = dict(r)
        for k in RUN:
            if not r.get(k):
                r[k] = meta.get(k, "")
        if note:
            r["note"] = "; ".join(x for x in (r.get("note") or "", note) if x)
        out.append(r)
    if not out:
        return None
    try:
        p = append(out, path)
    except (OSError, ValueError) as e:
        log(f"[results] not appended: {e}")
        return None
    log(f"[results] appended {len(out)} rows to {p}")
    return p


def read(path: Optional[Path] = None) -> List[Dict[str, object]]:
    """Every row, in file order, numbers parsed (None where empty), ``_line`` its position."""
    path = Path(path) if path else default_path()
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"results: {path} has columns {reader.fieldnames}, not {list(COLUMNS)}")
        rows = []
        for i, r in enumerate(reader):
            r = dict(r)
            for k in NUMERIC:
                r[k] = _num(r.get(k))
            r["_line"] = i
            rows.append(r)
    return rows


def newest(rows: Sequence[Mapping[str, object]]) -> List[Dict[str, object]]:
    """The newest row of each (op, impl, shape, dtype, pass): latest date, then latest in the
    file (appended later), in the order the keys first appear."""
    best: Dict[tuple, Mapping[str, object]] = {}
    for i, r in enumerate(rows):
        k = tuple(r.get(c) for c in KEY)
        order = (str(r.get("date") or ""), r.get("_line", i))
        if k not in best or order >= (str(best[k].get("date") or ""), best[k].get("_line", -1)):
            best[k] = dict(r, _line=r.get("_line", i))
    return [dict(v) for v in best.values()]


# ---------------------------------------------------------------------------------------------
# Each benchmark's rows in this format.

def _join(*notes) -> str:
    return "; ".join(str(n) for n in notes if n)


def kernel_rows(rows: Sequence[Mapping[str, object]], peers: Sequence[str] = ()) -> List[Dict[str, object]]:
    """bench/run_kernels.py's rows (its kernels.csv columns, as dicts or read back from the CSV):
    % of the measured copy bandwidth is the speed of light. A peer in ``peers`` without a row for
    a shape and pass (not importable, could not be built) gets a row saying so."""
    out = []
    for r in rows:
        ms = _num(r.get("ms"))
        method = r.get("method") or ""
        note = r.get("note") or ""
        if method == "failed" or ms is None:
            note = f"failed: {note}" if note else "failed"
        elif method and method != "cuda-graph":
            note = _join(f"timed by {method}", note)
        out.append({"op": r.get("op"), "impl": r.get("impl"), "shape": r.get("shape"),
                    "dtype": r.get("dtype"), "pass": r.get("pass"), "ms": ms,
                    "GBps": _num(r.get("GBps")) if ms is not None else None, "TFps": None,
                    "pct_sol": _num(r.get("pct_copy_bw")) if ms is not None else None,
                    "sol_kind": "copy_bw", "peak_extra_MiB": _num(r.get("peak_extra_MiB")),
                    "note": note})
    have = {(r["op"], r["shape"], r["dtype"], r["pass"], r["impl"]) for r in out}
    cases = list(dict.fromkeys((r["op"], r["shape"], r["dtype"], r["pass"]) for r in out))
    for op, shape, dtype, p in cases:
        for peer in peers:
            if (op, shape, dtype, p, peer) not in have:
                out.append({"op": op, "impl": peer, "shape": shape, "dtype": dtype, "pass": p,
                            "sol_kind": "copy_bw",
                            "note": "not run: not importable or could not be built (see the run's log)"})
    return out


def flce_rows(rows: Sequence[Mapping[str, object]], dtype: str = "bfloat16") -> List[Dict[str, object]]:
    """bench/flce.py's rows (its flce.csv columns): one "full" row (forward + backward from an
    idle GPU) and one "full_busy_start" row (the GPU busy when the step starts) per impl; % of the
    bf16 GEMM rate measured in the same run is the speed of light (6*M*D*V FLOPs)."""
    out = []
    for r in rows:
        M, D, V = (int(float(r[k])) for k in ("M", "D", "V"))
        flops = 6 * M * D * V
        shape = f"M={M} D={D} V={V}"
        ms, busy = _num(r.get("ms")), _num(r.get("ms_busy_start"))
        note = r.get("note") or ""
        base = {"op": "fused_linear_cross_entropy", "impl": r.get("impl"), "shape": shape,
                "dtype": dtype, "sol_kind": "gemm"}
        if ms is None:
            out.append(dict(base, **{"pass": "full", "note": f"failed: {note}" if note else "failed"}))
            continue
        pct_logits = _num(r.get("pct_logits"))
        out.append(dict(base, **{
            "pass": "full", "ms": ms, "TFps": flops / (ms * 1e-3) / 1e12,
            "pct_sol": _num(r.get("pct_gemm")), "peak_extra_MiB": _num(r.get("peak_extra_MiB")),
            "note": _join(note, "peak beyond inputs and grads" +
                          (f" ({pct_logits:g}% of the logits)" if pct_logits is not None else ""))}))
        if busy is not None:
            out.append(dict(base, **{
                "pass": "full_busy_start", "ms": busy, "TFps": flops / (busy * 1e-3) / 1e12,
                "pct_sol": _num(r.get("pct_gemm_busy_start")),
                "note": _join(note, "GPU busy when the step starts (as after a model's forward)")}))
    return out


E2E_MODELS = {"1b": "llama-3.2-1b"}


def _compiled(r: Mapping[str, object]) -> str:
    """A compiled configuration's row: how it compiled and its untimed first (compiling) step."""
    if not r.get("compile"):
        return ""
    first = _num(r.get("first_step_s"))
    return f"torch.compile {r['compile']}" + (f"; first step {first:.1f} s (untimed)" if first is not None else "")


def e2e_rows(results: Mapping[str, Mapping[str, object]], model: str, dtype: str) -> List[Dict[str, object]]:
    """bench/e2e/run_e2e.py's results (config -> {"rows": [...], "error": ...}): one "train" row
    (forward, backward, AdamW step) per configuration and batch; ms per step, peak_extra_MiB the
    step's whole high-water mark (weights, gradients and optimizer states included), tokens/s in
    the note. A batch that ran out of memory or failed is a row saying so, as is a configuration
    that failed before its first batch."""
    name = E2E_MODELS.get(model, model)
    out = []
    for config, res in results.items():
        rows = sorted(res.get("rows") or [], key=lambda r: (r.get("batch", 0), r.get("phase", "")))
        for r in rows:
            shape = f"{name} B={r.get('batch')} S={r.get('seq')}"
            base = {"op": "e2e", "impl": config, "shape": shape, "dtype": dtype, "pass": "train",
                    "sol_kind": ""}
            status = r.get("status")
            if status == "ok":
                tok = _num(r.get("tokens_per_s"))
                peak = _num(r.get("peak_gib"))
                out.append(dict(base, ms=_num(r.get("step_ms")),
                                peak_extra_MiB=peak * 1024 if peak is not None else None,
                                note=_join(f"{tok:,.0f} tokens/s" if tok is not None else "",
                                           "peak: the whole step (weights, grads, AdamW states)",
                                           _compiled(r))))
            elif status == "oom":
                out.append(dict(base, note="out of memory"))
            else:
                out.append(dict(base, note=_join(f"failed: {r.get('error') or status or 'unknown'}",
                                                 _compiled(r))))
        if not rows and res.get("error"):
            out.append({"op": "e2e", "impl": config, "shape": name, "dtype": dtype, "pass": "train",
                        "sol_kind": "", "note": f"failed: {res['error']}"})
    return out
