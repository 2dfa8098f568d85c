#!/usr/bin/env python3
"""The fused linear cross-entropy's speed / memory frontier from the results file: one point per
implementation row of bench/flce.py (the newest of each impl at the shape), time against the peak
memory beyond the inputs and their gradients, log-scaled memory; ligerd's chunked rows
("ligerd", "ligerd@C") and sliced rows ("ligerd-sliced", "ligerd-sliced@T,S") joined as two
curves, the peers as single points.

    python3 bench/plot_flce_frontier.py --out docs/img/flce-frontier.png
    python3 bench/plot_flce_frontier.py --shape "M=8192 D=4096 V=151936" --out qwen.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ligerd_bench import results  # noqa: E402


def newest_points(rows, shape: str) -> dict:
    """impl -> (ms, peak MiB, ligerd_commit) of the newest full-pass row at `shape` with both."""
    out = {}
    for r in rows:  # the file is in time order: later rows replace earlier ones
        if r.get("op") != "fused_linear_cross_entropy" or r.get("shape") != shape or r.get("pass") != "full":
            continue
        ms, mib = results._num(r.get("ms")), results._num(r.get("peak_extra_MiB"))
        if ms is not None and mib is not None:
            out[str(r["impl"])] = (ms, mib, r.get("ligerd_commit", ""))
    return out


def family(impl: str) -> str:
    base = impl.partition("@")[0]
    return base if base in ("ligerd", "ligerd-sliced") else "peer"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=None, help="results file (default bench/results.csv)")
    ap.add_argument("--shape", default="M=8192 D=4096 V=128256")
    ap.add_argument("--out", default="flce-frontier.png")
    args = ap.parse_args()
    pts = newest_points(results.read(Path(args.results) if args.results else None), args.shape)
    if not pts:
        print(f"no fused_linear_cross_entropy rows at {args.shape!r}", file=sys.stderr)
        return 1
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"ligerd": ("C0", "o-", "ligerd, chunked (tokens per chunk)"),
              "ligerd-sliced": ("C2", "s-", "ligerd, sliced (tokens x classes per slice)")}
    for fam, (color, marker, label) in styles.items():
        mine = sorted(((mib, ms, impl) for impl, (ms, mib, _) in pts.items() if family(impl) == fam))
        if mine:
            ax.plot([p[0] for p in mine], [p[1] for p in mine], marker, color=color, label=label)
            for mib, ms, impl in mine:
                ax.annotate(impl.partition("@")[2] or "default", (mib, ms), textcoords="offset points",
                            xytext=(4, 4), fontsize=8, color=color)
    for i, (impl, (ms, mib, _)) in enumerate(sorted((k, v) for k, v in pts.items() if family(k) == "peer")):
        ax.plot([mib], [ms], "D", color=f"C{i + 3}", label=impl)
    ax.set_xscale("log")
    ax.set_xlabel("peak memory beyond inputs and gradients (MiB, log scale)")
    ax.set_ylabel("ms, forward + backward")
    commits = sorted({c for _, _, c in pts.values() if c})
    ax.set_title(f"Fused linear cross-entropy, {args.shape} bf16 (ligerd {', '.join(commits)})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"[frontier] {len(pts)} points -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
