#!/usr/bin/env python3
"""Redraws the benchmark plots from the results file (bench/results.csv; its format:
bench/ligerd_bench/results.py): one PNG per op, for the newest run of each (op, impl, shape,
dtype, pass). Per pass, two panels: milliseconds per step and percent of the speed of light
measured in the same run (copy bandwidth or the bf16 GEMM rate, as the rows' sol_kind says), one
bar per implementation at each shape. A peer that failed or was not run is marked where its bar
would be.

    python3 bench/plot_results.py                          # every op -> out/plots/<op>.png
    python3 bench/plot_results.py --ops rms_norm e2e --out /tmp/plots
    python3 bench/plot_results.py --results other.csv --gpu "NVIDIA H100 80GB HBM3"

Needs matplotlib.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ligerd_bench import results

# Colours stay with an implementation across plots; others take the next free ones.
IMPL_ORDER = ("eager", "hf", "torch.compile", "liger", "ligerd", "ligerd-local", "ligerd-remote")
IMPL_COLORS = {"eager": "C0", "hf": "C0", "torch.compile": "C1", "liger": "C2", "ligerd": "C3",
               "ligerd-local": "C3", "ligerd-remote": "C4"}
PASS_ORDER = ("fwd", "bwd", "full", "full_busy_start", "train")
SOL_NAMES = {"copy_bw": "copy bandwidth", "gemm": "bf16 GEMM rate"}
PCT_CLIP = 130.0  # % of the speed of light drawn at most this high (a skipped backward is 50000%)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=None,
                    help="results file (default $LIGERD_RESULTS or bench/results.csv)")
    ap.add_argument("--out", default="out/plots", help="folder for the PNGs (default out/plots)")
    ap.add_argument("--ops", nargs="+", default=None, help="only these ops (default: every op)")
    ap.add_argument("--gpu", default=None, help="only rows measured on this GPU")
    return ap.parse_args(argv)


def _ordered(values, order) -> List[str]:
    vals = list(dict.fromkeys(values))
    known = [v for v in order if v in vals]
    return known + [v for v in vals if v not in known]


def _colors(impls: Sequence[str]) -> Dict[str, str]:
    used = {IMPL_COLORS[i] for i in impls if i in IMPL_COLORS}
    free = iter(c for c in (f"C{k}" for k in range(5, 10)) if c not in used)
    out = {}
    for i in impls:
        out[i] = IMPL_COLORS.get(i) or next(free, "C9")
    return out


def _fmt_ms(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _failure(r) -> str:
    note = (r.get("note") or "").lower()
    if "out of memory" in note:
        return "OOM"
    if note.startswith("not run"):
        return "not run"
    return "failed"


def plot_op(op: str, rows: Sequence[dict], out: Path, plt) -> Path:
    passes = _ordered([r["pass"] for r in rows], PASS_ORDER)
    impls = _ordered([r["impl"] for r in rows], IMPL_ORDER)
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    cats = list(dict.fromkeys((r["shape"], r["dtype"]) for r in rows))
    label = {c: c[0] + (f" {c[1]}" if len(dtypes) > 1 else "") for c in cats}
    colors = _colors(impls)
    with_sol = any(r.get("pct_sol") is not None for r in rows)
    nrows = 2 if with_sol else 1
    width = 0.8 / max(1, len(impls))
    panel_w = max(4.5, 1.2 + 0.32 * len(impls) * len(cats))
    height = 3.6 * nrows + 0.7
    fig, axes = plt.subplots(nrows, len(passes), figsize=(panel_w * len(passes), height), squeeze=False)
    for col, p in enumerate(passes):
        prow = [r for r in rows if r["pass"] == p]
        at = {(r["impl"], r["shape"], r["dtype"]): r for r in prow}
        ms_ax = axes[0][col]
        sol_ax = axes[1][col] if with_sol else None
        ms_vals = [r["ms"] for r in prow if r.get("ms")]
        log = bool(ms_vals) and max(ms_vals) / min(ms_vals) > 30
        few = len(impls) * len(cats) <= 16
        for k, impl in enumerate(impls):
            xs = [i + (k - (len(impls) - 1) / 2) * width for i in range(len(cats))]
            ms = [at.get((impl, *c), {}).get("ms") for c in cats]
            pct = [at.get((impl, *c), {}).get("pct_sol") for c in cats]
            ms_ax.bar(xs, [v if v is not None else 0 for v in ms], width, color=colors[impl],
                      label=impl)
            if sol_ax is not None:
                sol_ax.bar(xs, [min(v, PCT_CLIP) if v is not None else 0 for v in pct], width,
                           color=colors[impl], label=impl)
            for x, c, v, q in zip(xs, cats, ms, pct):
                r = at.get((impl, *c))
                if r is None:
                    continue
                if v is None:  # a failed or missing peer: say so where its bar would be
                    for ax in (ms_ax, sol_ax):
                        if ax is not None:
                            ax.text(x, 0, _failure(r), rotation=90, ha="center", va="bottom",
                                    fontsize=7, color="dimgray")
                    continue
                if few:
                    ms_ax.text(x, v, _fmt_ms(v), ha="center", va="bottom", fontsize=6.5)
                if sol_ax is not None and q is not None and (few or q > PCT_CLIP):
                    sol_ax.text(x, min(q, PCT_CLIP), f"{q:.0f}" + ("!" if q > PCT_CLIP else ""),
                                ha="center", va="bottom", fontsize=6.5)
        title = f"{p}"
        ms_ax.set_title(title, fontsize=10)
        ms_ax.set_ylabel("ms per step" + (" (log)" if log else ""))
        if log:
            ms_ax.set_yscale("log")
        else:
            top = max(ms_vals, default=1.0)
            ms_ax.set_ylim(0, top * 1.15)
        axs = [ms_ax] + ([sol_ax] if sol_ax is not None else [])
        for ax in axs:
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels([label[c] for c in cats] if ax is axs[-1] else [],
                               rotation=20 if len(cats) > 1 else 0, ha="right" if len(cats) > 1 else "center",
                               fontsize=7.5)
            ax.set_xlim(-0.6, len(cats) - 0.4)
            ax.grid(axis="y", alpha=0.3)
        if sol_ax is not None:
            kinds = sorted({r.get("sol_kind") for r in prow if r.get("sol_kind")})
            name = " / ".join(SOL_NAMES.get(k, k) for k in kinds) or "speed of light"
            sol_ax.axhline(100, color="k", ls="--", lw=1)
            sol_ax.set_ylim(0, PCT_CLIP + 10)
            sol_ax.set_ylabel(f"% of {name}")
    handles, labels_ = axes[0][0].get_legend_handles_labels()
    gpus = sorted({r.get("gpu") or "?" for r in rows})
    dates = sorted({r.get("date") or "?" for r in rows})
    commits = sorted({r.get("ligerd_commit") for r in rows if r.get("ligerd_commit")})
    fig.suptitle(f"{op} ({', '.join(dtypes)}): newest run of each row; {', '.join(gpus)}; "
                 f"{dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else "") +
                 (f"; ligerd {', '.join(commits)}" if commits else ""), fontsize=10,
                 y=1 - 0.1 / height, va="top")
    fig.legend(handles, labels_, loc="upper center", fontsize=8, ncol=len(impls),
               bbox_to_anchor=(0.5, 1 - 0.35 / height), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.65 / height))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{op}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Optional[Sequence[str]] = None) -> List[Path]:
    args = parse_args(argv)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"plot_results: matplotlib is needed ({e}): pip install matplotlib", file=sys.stderr)
        raise SystemExit(1)
    path = Path(args.results) if args.results else results.default_path()
    rows = results.newest(results.read(path))
    if args.gpu:
        rows = [r for r in rows if r.get("gpu") == args.gpu]
    ops = list(dict.fromkeys(r["op"] for r in rows))
    if args.ops:
        missing = [o for o in args.ops if o not in ops]
        if missing:
            print(f"plot_results: no rows for {missing} in {path} (ops there: {ops})", file=sys.stderr)
        ops = [o for o in args.ops if o in ops]
    written = [plot_op(op, [r for r in rows if r["op"] == op], Path(args.out), plt) for op in ops]
    for p in written:
        print(f"plot_results: wrote {p}")
    if not written:
        print(f"plot_results: nothing to plot from {path}", file=sys.stderr)
    return written


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
