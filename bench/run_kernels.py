#!/usr/bin/env python3
"""Kernel benchmarks, side by side in one run: writes <out>/kernels.csv, <out>/kernels_meta.json,
<out>/<op>.png per op (if matplotlib is importable), <out>/summary.txt, prints tables with
ratios, and appends its rows to the results file (bench/results.csv, or --results / $LIGERD_RESULTS;
bench/ligerd_bench/results.py: one row per measurement, a peer that failed or was not importable
is a row saying so; bench/plot_results.py redraws the plots from it).

    python3 bench/run_kernels.py --out out/bench                 # every op, every shape
    python3 bench/run_kernels.py --ops swiglu rope --quick       # LLaMA-3-8B shapes only

Ops: bench/ligerd_bench/<op>.py (OPS below; bench/ligerd_bench/harness.py says what a module defines).
Columns: op, impl, shape, pass (fwd/bwd/full), method, ms, GBps (the op's minimal byte model),
pct_copy_bw (GBps / measured device-to-device copy bandwidth, bytes read + written),
speedup_vs_<peer> (peer ms / this ms: > 1 means this row is faster), peak_extra_MiB (full pass:
what one step adds to the allocator's high-water mark), ms_eager_launch, GBps_eager_launch,
pct_copy_bw_eager_launch, host_us, copies, note, and the shape's dimensions.

ms is what the GPU does: the step captured in a CUDA graph and replayed, CUDA events around many
replays, median of 7 trials (method "cuda-graph"); where capture fails for an implementation, its
eager-launch time is used instead (method "eager-events", reason in note). ms_eager_launch is the
same step called from Python back to back: what a training step without CUDA graphs sees
(host-bound where host_us > the GPU time). copies: buffer copies rotated so each step reads cold
(not L2-resident) data. See bench/ligerd_bench/common.py.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

import torch  # noqa: E402

from ligerd_bench import common  # noqa: E402
from ligerd_bench import harness, results, rms_norm  # noqa: E402

PEERS = harness.PEERS
# In report order; a module that is not there (yet) is skipped with a message.
OPS = ("rms_norm", "fused_add_rms_norm", "layer_norm", "swiglu", "geglu", "rope", "rope_partial",
       "cross_entropy", "softmax", "kl_div", "jsd", "tvd", "relu_squared",
       "clamped_glu", "rope_vision", "ce_slice")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "out"), "bench"))
    ap.add_argument("--ops", nargs="+", default=list(OPS), help=f"subset of {OPS}")
    ap.add_argument("--impls", nargs="+", default=None, choices=PEERS,
                    help=f"subset of {PEERS}, timed in the order given")
    ap.add_argument("--passes", nargs="+", default=["fwd", "bwd", "full"])
    ap.add_argument("--quick", action="store_true", help="each op's LLaMA-3-8B shape only")
    ap.add_argument("--no-eager-launch", action="store_true",
                    help="skip the eager-launch (non-graphed) timing column")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    ap.add_argument("--no-overhead", action="store_true", help="skip the per-call host cost rows")
    ap.add_argument("--results", default=None,
                    help="results file to append to (default $LIGERD_RESULTS or bench/results.csv; "
                         "'none': do not append)")
    ap.add_argument("--note", default="", help="a note for every row of the results file "
                    "(e.g. the setting this run was made under)")
    return ap.parse_args()


def load_ops(names):
    mods = []
    for name in names:
        try:
            mods.append(importlib.import_module(f"ligerd_bench.{name}"))
        except ModuleNotFoundError as e:
            print(f"[bench] no benchmark module for {name} ({e}); skipped")
    return mods


def add_ratios(rows, copy_gbps):
    by_key = {}
    for r in rows:
        by_key.setdefault((r["op"], r["shape"], r["pass"]), {})[r["impl"]] = r["ms"]
        r["pct_copy_bw"] = 100.0 * r["GBps"] / copy_gbps if copy_gbps > 0 else float("nan")
        if r.get("GBps_eager_launch") and copy_gbps > 0:
            r["pct_copy_bw_eager_launch"] = 100.0 * r["GBps_eager_launch"] / copy_gbps
    for r in rows:
        peers = by_key[(r["op"], r["shape"], r["pass"])]
        for p in PEERS:
            if p in peers and p != r["impl"] and not math.isnan(peers[p]) and r["ms"] > 0:
                r[f"speedup_vs_{p}"] = peers[p] / r["ms"]


def plot(mod, rows, copy_gbps, path: Path):
    """One panel per pass: % of copy bandwidth per shape and implementation (bars: CUDA-graph
    replay; black ticks: eager launch)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        print(f"[bench] matplotlib not importable ({e}); no plot written")
        return None
    rows = [r for r in rows if r["op"] == mod.OP]
    passes = [p for p in mod.PASSES if any(r["pass"] == p for r in rows)]
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    impls = [i for i in PEERS if any(r["impl"] == i for r in rows)]
    if not passes or not shapes:
        return None
    fig, axes = plt.subplots(1, len(passes), figsize=(6 * len(passes), 4.8), squeeze=False)
    width = 0.8 / max(1, len(impls))
    dtype = rows[0].get("dtype", "")
    for ax, p in zip(axes[0], passes):
        for k, impl in enumerate(impls):
            vals, eager = [], []
            for shape in shapes:
                hit = [r for r in rows if r["impl"] == impl and r["pass"] == p and r["shape"] == shape]
                vals.append(hit[0]["pct_copy_bw"] if hit else float("nan"))
                eager.append(hit[0].get("pct_copy_bw_eager_launch", float("nan")) if hit else float("nan"))
            xs = [i + k * width for i in range(len(shapes))]
            ax.bar(xs, vals, width, label=impl)
            ax.plot(xs, eager, ls="none", marker="_", ms=9, mew=2, color="k",
                    label="eager launch (no graph)" if k == 0 else None)
        ax.axhline(100, color="k", ls="--", lw=1, label=f"copy {copy_gbps:.0f} GB/s")
        ax.axhline(85, color="r", ls=":", lw=1, label="target 85%")
        ax.set_xticks([i + width * (len(impls) - 1) / 2 for i in range(len(shapes))])
        ax.set_xticklabels(shapes, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{mod.TITLE} {p} ({dtype}), CUDA-graph replay")
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
        s = {"op": r["op"], "shape": r["shape"], "pass": r["pass"], "ligerd_ms": r["ms"],
             "pct_copy_bw": r["pct_copy_bw"]}
        for p in PEERS:
            if p != "ligerd":
                s[f"x_vs_{p}"] = r.get(f"speedup_vs_{p}")
        if r.get("peak_extra_MiB") is not None:
            s["peak_MiB"] = r["peak_extra_MiB"]
            for p in ("eager", "liger"):
                peer = [q for q in rows if q["impl"] == p and q["op"] == r["op"] and
                        q["shape"] == r["shape"] and q["pass"] == r["pass"]]
                if peer and peer[0].get("peak_extra_MiB") is not None:
                    s[f"peak_MiB_{p}"] = peer[0]["peak_extra_MiB"]
        out.append(s)
    return out


def eager_launch_table(rows):
    """One line per (shape, pass): each impl's eager-launch % of copy bandwidth and ms."""
    out = {}
    for r in rows:
        if r.get("ms_eager_launch") is None:
            continue
        key = (r["op"], r["shape"], r["pass"])
        line = out.setdefault(key, {"op": r["op"], "shape": r["shape"], "pass": r["pass"]})
        line[r["impl"]] = f"{r.get('pct_copy_bw_eager_launch', float('nan')):.0f}% ({r['ms_eager_launch']:.3f})"
    return list(out.values())


def main():
    args = parse_args()
    if not torch.cuda.is_available():
        print("[bench] no CUDA device: nothing to measure")
        return 0
    common.add_peer_site()
    out = Path(args.out)
    t0 = time.time()
    copy_gbps = common.copy_bandwidth_gbps()
    print(f"[bench] measured copy bandwidth: {copy_gbps:.0f} GB/s (read + write)")
    mods = load_ops(args.ops)
    rows, pngs = [], []
    run_meta = results.run_metadata(common.environment())
    for mod in mods:
        impls = mod.impls()
        if args.impls:  # in the order given (the order they are timed in)
            impls = {k: impls[k] for k in args.impls if k in impls}
        op_rows = harness.run(mod, mod.shapes(args.quick), impls, passes=args.passes,
                              eager_launch=not args.no_eager_launch, memory=not args.no_memory)
        add_ratios(op_rows, copy_gbps)
        rows += op_rows
        if args.results != "none":  # per op, so that a run cut short keeps what it measured
            results.record(results.kernel_rows(op_rows, peers=args.impls or PEERS), run_meta,
                           path=args.results, note=args.note)
        png = plot(mod, op_rows, copy_gbps, out / f"{mod.OP}.png")
        if png:
            pngs.append(png)
    dims = list(dict.fromkeys(k for r in rows for k in r if len(k) <= 2 and k.isupper()))
    columns = ["op", "impl", "shape", "dtype", "pass", "method", "ms", "GBps", "pct_copy_bw"] + \
              [f"speedup_vs_{p}" for p in PEERS] + \
              ["peak_extra_MiB", "ms_eager_launch", "GBps_eager_launch", "pct_copy_bw_eager_launch",
               "host_us", "copies", "note"] + dims
    common.write_csv(out / "kernels.csv", rows, columns)
    meta = common.environment()
    meta.update({"copy_GBps": copy_gbps, "seconds": time.time() - t0, "ops": [m.OP for m in mods],
                 "quick": args.quick, "timing": "cuda-graph replay, CUDA events, median of 7 "
                 "trials; L2 cold by buffer rotation; eager-launch column: Python loop, events",
                 "L2_bytes": common.l2_bytes()})
    try:
        import ligerd
        meta["ligerd_session"] = ligerd.session_info()
    except Exception as e:  # noqa: BLE001
        meta["ligerd_session"] = f"unavailable: {e}"
    common.write_json(out / "kernels_meta.json", meta)
    overhead = []
    if not args.no_overhead and rms_norm in mods:
        impls = rms_norm.impls()
        try:
            overhead = rms_norm.call_overhead({k: v for k, v in impls.items()
                                               if not args.impls or k in args.impls})
        except Exception as e:  # noqa: BLE001 -- a failed extra table must not lose the main one
            print(f"[bench] host cost per call: FAILED: {harness._fail_note(e)}")
            overhead = []
        if overhead:
            common.write_csv(out / "call_overhead.csv", overhead, rms_norm.OVERHEAD_COLUMNS)
    print()
    print(f"copy bandwidth {copy_gbps:.0f} GB/s; {meta['device']}; torch {meta['torch']}, "
          f"liger_kernel {meta['liger_kernel']}")
    print(common.format_table(rows, ["op", "impl", "shape", "pass", "method", "ms", "GBps",
                                     "pct_copy_bw", "peak_extra_MiB", "ms_eager_launch", "host_us"]))
    s = summary(rows)
    if s:
        cols = list(dict.fromkeys(k for line in s for k in line))
        text = ("ligerd vs peers (x = peer ms / ligerd ms; > 1 means ligerd is faster; CUDA-graph "
                f"replay times, what the GPU does), copy bandwidth {copy_gbps:.0f} GB/s; peak_MiB: "
                "what one fwd+bwd step adds to the memory high-water mark:\n" +
                common.format_table(s, cols))
        fallbacks = [r for r in rows if r.get("method") != "cuda-graph"]
        if fallbacks:
            text += "\n\nnot graph-timed: " + "; ".join(
                f"{r['op']} {r['impl']} {r['pass']} {r['shape']}: {r.get('note', r.get('method'))}"
                for r in fallbacks)
        el = eager_launch_table(rows)
        if el:
            text += ("\n\neager launch (no CUDA graph: what a plain training step sees), % of copy "
                     "bandwidth (ms):\n" + common.format_table(el, list(dict.fromkeys(
                         k for line in el for k in line))))
        if overhead:
            text += ("\n\nhost cost per call (tiny input, us; what a training step pays per layer):\n" +
                     common.format_table(overhead, [c for c in rms_norm.OVERHEAD_COLUMNS
                                                    if c not in ("op",)]))
        print()
        print(text)
        (out / "summary.txt").write_text(text + "\n")
    print(f"\n[bench] wrote {out / 'kernels.csv'}" + "".join(f", {p}" for p in pngs) +
          f" in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
