#!/usr/bin/env python3
"""Fused linear cross-entropy benchmark (standalone): forward + backward of
``cross_entropy(x @ W.T, target)`` at (8192 tokens, hidden 4096, vocab 128256, bf16) by default,
for ligerd's liger_fused_linear_cross_entropy, Liger-Kernel's LigerFusedLinearCrossEntropyLoss,
torch.compile of the unfused linear + cross-entropy (fp32 upcast, as HF) and eager unfused.

Speed of light, measured in the same run: the bf16 GEMM rate (torch.mm, 8192^3, and the FLCE's own
logits GEMM [M, D] x [D, V]). The op needs 3 GEMMs of 2*M*D*V FLOPs (logits, d input, d weight):
"% of GEMM" = 6*M*D*V / time / the 8192^3 GEMM rate. Memory: peak allocated during one step
beyond the inputs (x, W) and their gradients (dx, dW), in MiB and as % of the full logits' size
(M*V*2 bytes). Time is taken twice per impl: from an idle GPU (column ms: the host's work before
the first kernel counts) and from a busy one (ms_busy_start: a sleep kernel ahead of each step, as
when the loss follows a model's forward and the host runs ahead; it also lets the GPU's power draw
recover between steps, so compare impls within one column, not across columns).

    python3 bench/flce.py --out out/bench       # writes flce.csv, flce.png, prints a table,
                                                # appends to bench/results.csv (--results)
    python3 bench/flce.py --chunks 512 640 1024 --profile   # + ligerd at other chunk sizes
                                                # (rows "ligerd@<tokens>"), and where one ligerd
                                                # step's GPU time goes (flce_profile.txt)
    python3 bench/flce.py --sliced 2048,4096 4096,4096   # + ligerd's sliced sweep (the
                                                # default blocks, then these "T,S")
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ligerd_bench import common, results  # noqa: E402

IGNORE = -100


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "out"), "bench"))
    ap.add_argument("--M", type=int, default=8192)
    ap.add_argument("--D", type=int, default=4096)
    ap.add_argument("--V", type=int, default=128256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--impls", nargs="+", default=["ligerd", "liger", "torch.compile", "eager"])
    ap.add_argument("--chunks", nargs="*", type=int, default=[],
                    help="also time ligerd with LIGERD_FLCE_CHUNK set to each of these (tokens)")
    ap.add_argument("--sliced", nargs="*", default=None, metavar="T,S",
                    help="also time ligerd's sliced sweep (row ligerd-sliced), and at each 'T,S' "
                         "(tokens per block, classes per slice) given")
    ap.add_argument("--profile", action="store_true",
                    help="write a per-kernel breakdown of one ligerd step to flce_profile.txt")
    ap.add_argument("--results", default=None,
                    help="results file to append to (default $LIGERD_RESULTS or bench/results.csv; "
                         "'none': do not append)")
    ap.add_argument("--note", default="", help="a note for every row of the results file "
                    "(e.g. the setting this run was made under)")
    return ap.parse_args()


# GPU cycles of the sleep that precedes a "busy start" timing (~25 ms at H100 clocks): longer
# than any impl's host work before its first kernel, so that the step's kernels queue up behind it.
_BUSY_CYCLES = 45_000_000


def time_ms(fn, reps: int, warmup: int = 2, busy: bool = False) -> float:
    """Median over reps of one call, CUDA events on the current stream. busy=False: from an idle
    GPU (the host's work before the first kernel counts). busy=True: the GPU still busy with
    earlier work when the call starts, as in a training step where the loss follows the model's
    forward (the host runs ahead); only the call's own GPU time and the stalls it causes count."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if busy:
            torch.cuda._sleep(_BUSY_CYCLES)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def gemm_tflops(m, n, k, reps=20) -> float:
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    ms = time_ms(lambda: torch.mm(a, b, out=c), reps, warmup=5)
    del a, b, c
    return 2 * m * n * k / (ms * 1e-3) / 1e12


def unfused(x, W, t):
    return F.cross_entropy((x @ W.t()).float(), t, ignore_index=IGNORE)


def ligerd_env(name: str) -> dict:
    """The environment of a ligerd row: "ligerd" the defaults (the caller's environment);
    "ligerd@C" the chunked sweep in chunks of C tokens; "ligerd-sliced" the sliced sweep,
    "ligerd-sliced@T,S" with blocks of T tokens and slices of S classes."""
    base, _, setting = name.partition("@")
    if base == "ligerd-sliced":
        return {"LIGERD_FLCE_MODE": "sliced", "LIGERD_FLCE_SLICE": setting or None}
    if setting:
        return {"LIGERD_FLCE_MODE": "chunked", "LIGERD_FLCE_CHUNK": setting}
    return {}


def make_impl(name):
    if name == "eager":
        return unfused
    if name == "torch.compile":
        return torch.compile(unfused, fullgraph=True)
    if name == "liger":
        common.add_peer_site()
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss as L
        m = L(ignore_index=IGNORE)
        return lambda x, W, t: m(W, x, t)
    if name == "ligerd" or name.startswith(("ligerd@", "ligerd-sliced")):
        from ligerd.transformers import liger_fused_linear_cross_entropy
        env = ligerd_env(name)

        def run(x, W, t):
            with common.env_overrides(env):
                return liger_fused_linear_cross_entropy(x, W, t, ignore_index=IGNORE)
        return run
    raise ValueError(name)


def profile_step(step, path: Path) -> None:
    """GPU time of one step by kernel, grouped (GEMM / cross-entropy / other), to `path`."""
    import time
    from torch.profiler import ProfilerActivity, profile
    step()
    torch.cuda.synchronize()
    # Is the step host-bound? Time to enqueue it (no sync) against its wall time.
    t0 = time.perf_counter()
    step()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    groups = {}
    lines = []
    for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total):
        us = e.device_time_total
        if us <= 0:
            continue
        name = e.key
        kind = ("GEMM" if any(k in name.lower() for k in ("gemm", "sm90", "cutlass", "xmma", "nvjet"))
                else "cross-entropy" if name.startswith("ce_") else "other")
        groups[kind] = groups.get(kind, 0.0) + us
        lines.append(f"{us / 1e3:9.3f} ms  {e.count:5d}x  {kind:13s} {name[:110]}")
    # Idle stretches of the GPU inside the step: gaps between consecutive device activities.
    kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                     key=lambda e: e.time_range.start)
    gaps = [(b.time_range.start - a.time_range.end, a.name, b.name) for a, b in zip(kernels, kernels[1:])]
    idle = sum(g for g, _, _ in gaps if g > 0)
    top = sorted(gaps, key=lambda g: -g[0])[:6]
    lines = [f"GPU idle between device activities: {idle / 1e3:.3f} ms; largest gaps:"] + [
        f"  {g / 1e3:7.3f} ms after {a[:60]} before {b[:60]}" for g, a, b in top] + [""] + lines
    total = sum(groups.values())
    head = [f"one ligerd step: {total / 1e3:.3f} ms of GPU time; host returned after "
            f"{(t1 - t0) * 1e3:.3f} ms, wall {(t2 - t0) * 1e3:.3f} ms"] + [
        f"  {k:13s} {v / 1e3:9.3f} ms ({100 * v / total:.1f}%)" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])]
    path.write_text("\n".join(head + ["", "by kernel:"] + lines) + "\n")
    print("\n".join(f"[flce] {h}" for h in head))


def main():
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    M, D, V = args.M, args.D, args.V
    torch.manual_seed(0)
    gemm = gemm_tflops(8192, 8192, 8192)
    gemm_shape = gemm_tflops(M, V, D, reps=5)
    flops = 6 * M * D * V
    logits_mib = M * V * 2 / 2**20
    print(f"[flce] bf16 GEMM 8192^3: {gemm:.0f} TF/s; logits GEMM {M}x{D}x{V}: {gemm_shape:.0f} TF/s; "
          f"6MDV = {flops / 1e12:.1f} TFLOP -> {flops / (gemm * 1e12) * 1e3:.1f} ms at the GEMM rate; "
          f"full logits {logits_mib:.0f} MiB")
    x = (torch.randn(M, D, device="cuda") * 0.5).to(torch.bfloat16).requires_grad_()
    W = (torch.randn(V, D, device="cuda") / D ** 0.5).to(torch.bfloat16).requires_grad_()
    t = torch.randint(0, V, (M,), device="cuda")
    t[::50] = IGNORE
    grads_bytes = (x.numel() + W.numel()) * 2
    rows = []
    impls = list(args.impls)
    if "ligerd" in impls:
        at = impls.index("ligerd") + 1
        impls[at:at] = [f"ligerd@{c}" for c in args.chunks]
        if args.sliced is not None:
            at += len(args.chunks)
            impls[at:at] = ["ligerd-sliced"] + [f"ligerd-sliced@{ts}" for ts in args.sliced]
    for name in impls:
        row = {"impl": name, "M": M, "D": D, "V": V, "gemm_tflops": round(gemm, 1),
               "gemm_shape_tflops": round(gemm_shape, 1)}
        try:
            fn = make_impl(name)

            def step():
                loss = fn(x, W, t)
                return torch.autograd.grad(loss, [x, W])

            # Peak memory of one step (after a warm-up: compiles, lazy allocations).
            step()
            torch.cuda.synchronize()
            gc.collect()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            g = step()
            torch.cuda.synchronize()
            extra = torch.cuda.max_memory_allocated() - base - grads_bytes
            del g
            ms = time_ms(step, args.reps)
            ms_busy = time_ms(step, args.reps, busy=True)
            row.update(ms=round(ms, 3), ms_busy_start=round(ms_busy, 3),
                       pct_gemm_busy_start=round(100 * flops / (ms_busy * 1e-3) / (gemm * 1e12), 1),
                       tflops=round(flops / (ms * 1e-3) / 1e12, 1),
                       pct_gemm=round(100 * flops / (ms * 1e-3) / (gemm * 1e12), 1),
                       peak_extra_MiB=round(extra / 2**20, 1),
                       pct_logits=round(100 * extra / (M * V * 2), 1))
        except Exception as e:  # noqa: BLE001
            row.update(ms=float("nan"), note=f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}")
        rows.append(row)
        print(f"[flce] {name:>13}: {row.get('ms')} ms ({row.get('ms_busy_start')} ms from a busy GPU), "
              f"{row.get('pct_gemm')}% of GEMM, "
              f"peak +{row.get('peak_extra_MiB')} MiB ({row.get('pct_logits')}% of logits) {row.get('note', '')}")
        if args.profile and name == "ligerd" and row["ms"] == row["ms"]:
            profile_step(step, out / "flce_profile.txt")
        gc.collect()
        torch.cuda.empty_cache()
    ours = next((r for r in rows if r["impl"] == "ligerd"), None)
    for r in rows:
        if ours and r["ms"] == r["ms"]:
            r["ligerd_speedup_vs_this"] = round(r["ms"] / ours["ms"], 2)
            r["ligerd_speedup_busy_start"] = round(r["ms_busy_start"] / ours["ms_busy_start"], 2)
    cols = ["impl", "M", "D", "V", "ms", "ms_busy_start", "tflops", "pct_gemm", "pct_gemm_busy_start",
            "gemm_tflops", "gemm_shape_tflops", "peak_extra_MiB", "pct_logits", "ligerd_speedup_vs_this",
            "ligerd_speedup_busy_start", "note"]
    common.write_csv(out / "flce.csv", rows, cols)
    print(common.format_table(rows, cols))
    if args.results != "none":
        results.record(results.flce_rows(rows), results.run_metadata(common.environment()),
                       path=args.results, note=args.note)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        ok = [r for r in rows if r["ms"] == r["ms"]]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        xs = list(range(len(ok)))
        a1.bar([i - 0.2 for i in xs], [r["ms"] for r in ok], width=0.4, label="from an idle GPU")
        a1.bar([i + 0.2 for i in xs], [r["ms_busy_start"] for r in ok], width=0.4, label="from a busy GPU")
        a1.set_xticks(xs, [r["impl"] for r in ok])
        a1.axhline(flops / (gemm * 1e12) * 1e3, color="k", ls="--", label="6MDV at GEMM rate")
        a1.set_ylabel("ms (fwd+bwd)")
        a1.legend()
        a2.bar([r["impl"] for r in ok], [r["peak_extra_MiB"] for r in ok])
        a2.axhline(0.1 * logits_mib, color="r", ls="--", label="10% of logits")
        a2.set_ylabel("peak MiB beyond inputs+grads")
        a2.legend()
        for a in (a1, a2):
            a.tick_params(axis="x", rotation=30)
        fig.suptitle(f"Fused linear CE, M={M} D={D} V={V} bf16")
        fig.tight_layout()
        fig.savefig(out / "flce.png", dpi=110)
    except Exception as e:  # noqa: BLE001
        print(f"[flce] no plot: {e}")


if __name__ == "__main__":
    main()
