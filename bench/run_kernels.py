#!/usr/bin/env python3
"""Kernel benchmarks, side by side in one run: writes <out>/kernels.csv, <out>/kernels_meta.json,
<out>/rms_norm.png (if matplotlib is importable) and prints a table with ratios.

    python3 bench/run_kernels.py --out out/bench            # full grid (~2 minutes on an H100)
    python3 bench/run_kernels.py --quick                    # M=16384, N=4096 only

Columns: op, impl, M, N, pass (fwd/bwd/full), method, ms, GBps (minimal byte model: fwd 2*M*N*b,
bwd 3*M*N*b, full 5*M*N*b), pct_copy_bw (GBps / measured device-to-device copy bandwidth, bytes
read + written), speedup_vs_<peer> (peer ms / this ms: > 1 means this row is faster),
ms_eager_launch, GBps_eager_launch, pct_copy_bw_eager_launch, host_us, copies, note.

ms is what the GPU does: the step (fwd; bwd; fwd+bwd) captured in a CUDA graph and replayed,
CUDA events around many replays, median of 7 trials (method "cuda-graph"); where capture fails
for an implementation, its eager-launch time is used instead (method "eager-events", reason in
note). ms_eager_launch is the same step called from Python back to back, timed the same way:
what a training step without CUDA graphs sees (host-bound where host_us > the GPU time).
copies: buffer copies rotated so each step reads cold (not L2-resident) data. See bench/common.py.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import common  # noqa: E402
from kernels import rms_norm  # noqa: E402

PEERS = ("eager", "torch.compile", "liger", "ligerd")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "out"), "bench"))
    ap.add_argument("--M", type=int, nargs="+", default=[4096, 16384, 65536])
    ap.add_argument("--N", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--impls", nargs="+", default=None, help=f"subset of {PEERS}")
    ap.add_argument("--passes", nargs="+", default=list(rms_norm.PASSES))
    ap.add_argument("--quick", action="store_true", help="one shape (16384 x 4096)")
    ap.add_argument("--no-eager-launch", action="store_true",
                    help="skip the eager-launch (non-graphed) timing column")
    ap.add_argument("--no-overhead", action="store_true", help="skip the per-call host cost rows")
    return ap.parse_args()


def add_ratios(rows, copy_gbps):
    by_key = {}
    for r in rows:
        by_key.setdefault((r["op"], r["M"], r["N"], r["pass"]), {})[r["impl"]] = r["ms"]
        r["pct_copy_bw"] = 100.0 * r["GBps"] / copy_gbps if copy_gbps > 0 else float("nan")
        if r.get("GBps_eager_launch") and copy_gbps > 0:
            r["pct_copy_bw_eager_launch"] = 100.0 * r["GBps_eager_launch"] / copy_gbps
    for r in rows:
        peers = by_key[(r["op"], r["M"], r["N"], r["pass"])]
        for p in PEERS:
            if p in peers and p != r["impl"] and not math.isnan(peers[p]) and r["ms"] > 0:
                r[f"speedup_vs_{p}"] = peers[p] / r["ms"]


def plot(rows, copy_gbps, path: Path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        print(f"[bench] matplotlib not importable ({e}); no plot written")
        return None
    passes = [p for p in rms_norm.PASSES if any(r["pass"] == p for r in rows)]
    shapes = sorted({(r["M"], r["N"]) for r in rows})
    impls = [i for i in PEERS if any(r["impl"] == i for r in rows)]
    fig, axes = plt.subplots(1, len(passes), figsize=(6 * len(passes), 4.5), squeeze=False)
    width = 0.8 / max(1, len(impls))
    for ax, p in zip(axes[0], passes):
        for k, impl in enumerate(impls):
            vals, eager = [], []
            for (m, n) in shapes:
                hit = [r for r in rows if r["impl"] == impl and r["pass"] == p and r["M"] == m and r["N"] == n]
                vals.append(hit[0]["pct_copy_bw"] if hit else float("nan"))
                eager.append(hit[0].get("pct_copy_bw_eager_launch", float("nan")) if hit else float("nan"))
            xs = [i + k * width for i in range(len(shapes))]
            ax.bar(xs, vals, width, label=impl)
            ax.plot(xs, eager, ls="none", marker="_", ms=9, mew=2, color="k",
                    label="eager launch (no graph)" if k == 0 else None)
        ax.axhline(100, color="k", ls="--", lw=1, label=f"copy {copy_gbps:.0f} GB/s")
        ax.set_xticks([i + width * (len(impls) - 1) / 2 for i in range(len(shapes))])
        ax.set_xticklabels([f"{m // 1024}K\u00d7{n}" for m, n in shapes], rotation=45, ha="right", fontsize=8)
        ax.set_title(f"RMSNorm {p} (bf16), CUDA-graph replay")
        ax.set_ylabel("% of measured copy bandwidth (minimal byte model)")
        ax.set_ylim(0, 115)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary(rows):
    """One line per (shape, pass): ligerd's GB/s, % of copy and its speedup over each peer."""
    out = []
    for r in rows:
        if r["impl"] != "ligerd":
            continue
        s = {"M": r["M"], "N": r["N"], "pass": r["pass"], "ligerd_ms": r["ms"],
             "pct_copy_bw": r["pct_copy_bw"]}
        for p in PEERS:
            if p != "ligerd" and f"speedup_vs_{p}" in r:
                s[f"x_vs_{p}"] = r[f"speedup_vs_{p}"]
        out.append(s)
    return out


def eager_launch_table(rows):
    """One line per (shape, pass): each impl's eager-launch % of copy bandwidth and ms."""
    out = {}
    for r in rows:
        if r.get("ms_eager_launch") is None:
            continue
        key = (r["M"], r["N"], r["pass"])
        line = out.setdefault(key, {"M": r["M"], "N": r["N"], "pass": r["pass"]})
        line[r["impl"]] = f"{r.get('pct_copy_bw_eager_launch', float('nan')):.0f}% ({r['ms_eager_launch']:.3f})"
    return list(out.values())


def main():
    args = parse_args()
    if not torch.cuda.is_available():
        print("[bench] no CUDA device: nothing to measure")
        return 0
    common.add_peer_site()
    if args.quick:
        args.M, args.N = [16384], [4096]
    out = Path(args.out)
    t0 = time.time()
    copy_gbps = common.copy_bandwidth_gbps()
    print(f"[bench] measured copy bandwidth: {copy_gbps:.0f} GB/s (read + write)")
    impls = rms_norm.make_impls(args.impls)
    rows = rms_norm.run(args.M, args.N, impls, passes=args.passes,
                        eager_launch=not args.no_eager_launch)
    add_ratios(rows, copy_gbps)
    columns = ["op", "impl", "M", "N", "pass", "method", "ms", "GBps", "pct_copy_bw"] + \
              [f"speedup_vs_{p}" for p in PEERS] + \
              ["ms_eager_launch", "GBps_eager_launch", "pct_copy_bw_eager_launch", "host_us",
               "copies", "note"]
    common.write_csv(out / "kernels.csv", rows, columns)
    meta = common.environment()
    meta.update({"copy_GBps": copy_gbps, "seconds": time.time() - t0, "M": args.M, "N": args.N,
                 "impls": list(impls), "timing": "cuda-graph replay, CUDA events, median of 7 "
                 "trials; L2 cold by buffer rotation; eager-launch column: Python loop, events",
                 "L2_bytes": common.l2_bytes()})
    try:
        import ligerd
        meta["ligerd_session"] = ligerd.session_info()
    except Exception as e:  # noqa: BLE001
        meta["ligerd_session"] = f"unavailable: {e}"
    common.write_json(out / "kernels_meta.json", meta)
    png = plot(rows, copy_gbps, out / "rms_norm.png")
    overhead = [] if args.no_overhead else rms_norm.call_overhead(impls)
    if overhead:
        common.write_csv(out / "call_overhead.csv", overhead, rms_norm.OVERHEAD_COLUMNS)
    print()
    print(f"RMSNorm bf16, copy bandwidth {copy_gbps:.0f} GB/s; {meta['device']}; "
          f"torch {meta['torch']}, liger_kernel {meta['liger_kernel']}")
    print(common.format_table(rows, ["impl", "M", "N", "pass", "method", "ms", "GBps", "pct_copy_bw",
                                     "ms_eager_launch", "host_us"]))
    s = summary(rows)
    if s:
        text = ("ligerd vs peers (x = peer ms / ligerd ms; > 1 means ligerd is faster; CUDA-graph "
                f"replay times, what the GPU does), copy bandwidth {copy_gbps:.0f} GB/s:\n" +
                common.format_table(s, list(s[0].keys())))
        fallbacks = [r for r in rows if r.get("method") != "cuda-graph"]
        if fallbacks:
            text += "\n\nnot graph-timed: " + "; ".join(
                f"{r['impl']} {r['pass']} {r['M']}x{r['N']}: {r.get('note', r.get('method'))}"
                for r in fallbacks)
        el = eager_launch_table(rows)
        if el:
            text += ("\n\neager launch (no CUDA graph: what a plain training step sees), % of copy "
                     "bandwidth (ms):\n" + common.format_table(el, list(el[0].keys())))
        if overhead:
            text += ("\n\nhost cost per call (tiny input, us; what a training step pays per layer):\n" +
                     common.format_table(overhead, [c for c in rms_norm.OVERHEAD_COLUMNS
                                                    if c not in ("op",)]))
        print()
        print(text)
        (out / "summary.txt").write_text(text + "\n")
    print(f"\n[bench] wrote {out / 'kernels.csv'}" + (f", {png}" if png else "") +
          f" in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
