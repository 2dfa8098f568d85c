"""Where does a norm forward's time go on the benchmark's path? For ligerd's and Liger's
RMSNorm / LayerNorm / fused add+RMSNorm forwards at 16384 x 4096 bf16, as bench/run_kernels.py
calls them (the same modules, the same CUDA-graph replay), this prints side by side:

  graph ms     one step in graph replay, back to back (ligerd_bench.common.graph_ms: the table's number)
  kernels      the GPU kernels one call launches, with CUPTI's duration of each (median of the
               profiled calls), grid, block, registers per thread and shared memory
  gap us       graph ms minus the kernels' summed duration: launch gaps and anything not a kernel

A kernel that is as fast as the peer's but a step that is not points at the calling path; a
slower kernel points at the binary (compare its registers, and the SASS: bench/micro/
run_variants.sh times the same sources compiled by nvcc, and Liger's own cubins, in isolation).
Needs a GPU, ligerd importable (LIGERD_BIN or local mode) and, for the peer, liger_kernel.
    python3 bench/micro/norm_fwd_paths.py [--calls 50] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
from ligerd_bench import common  # noqa: E402

ROWS, COLS, EPS = 16384, 4096, 1e-6


def _modules():
    """(op, impl) -> (module, args builder). Peers that do not import are left out."""
    out = {}
    common.add_peer_site()
    import ligerd.transformers as ours
    peers = {"ligerd": ours}
    try:
        import liger_kernel.transformers as liger
        peers["liger"] = liger
    except Exception as e:  # noqa: BLE001
        print(f"[paths] Liger-Kernel not importable, its rows are skipped: {e}")
    for impl, m in peers.items():
        out[("rms_norm", impl)] = (m.LigerRMSNorm(COLS, eps=EPS), 1)
        out[("layer_norm", impl)] = (m.LigerLayerNorm(COLS, eps=EPS, bias=True), 1)
        if hasattr(m, "LigerFusedAddRMSNorm"):
            out[("fused_add_rms_norm", impl)] = (m.LigerFusedAddRMSNorm(COLS, eps=EPS), 2)
    return out


def kernel_records(step, calls: int):
    """CUPTI's kernel records for `calls` eager calls of step: [(name, [us...], args)]."""
    from torch.profiler import ProfilerActivity, profile
    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            step()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.json")
        prof.export_chrome_trace(path)
        events = json.loads(Path(path).read_text())["traceEvents"]
    by_name = {}
    for e in events:
        if e.get("cat") != "kernel":
            continue
        rec = by_name.setdefault(e["name"], ([], e.get("args", {})))
        rec[0].append(float(e["dur"]))
    return [(n, durs, a) for n, (durs, a) in by_name.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("[paths] no GPU: nothing to measure")
        return 0
    rows = []
    for (op, impl), (mod, nargs) in _modules().items():
        for path in ("plain", "bench"):
            rows.append(_measure(op, impl, mod, nargs, path, a.calls))
    for r in rows:
        print(f"{r['op']:20s} {r['impl']:7s} {r['path']:5s} graph {r['graph_ms']:.4f} ms  kernels {r['kernel_us']:.1f} us"
              f"  gap {r['gap_us']:+.1f} us")
        for k in r["kernels"]:
            print(f"    {k['calls_per_step']:.0f}x {k['median_us']:8.1f} us  grid {k['grid']} block {k['block']}"
                  f" regs {k['regs']} smem {k['smem']}  {k['name']}")
    if a.json:
        common.write_json(a.json, rows)
    return 0


def _measure(op, impl, mod, nargs, path, calls):
    """path "plain": the module on fresh inputs, graph-timed; "bench": the step exactly as
    bench/run_kernels.py builds and times it (kernels/harness.py: inputs that require grad, the
    eager-launch timing first, then the graph)."""
    mod = mod.to("cuda", torch.bfloat16)
    if path == "plain":
        args = [torch.randn(ROWS, COLS, device="cuda", dtype=torch.bfloat16) for _ in range(nargs)]

        def step(mod=mod, args=args):
            with torch.no_grad():
                return mod(*args)
    else:
        import importlib
        from kernels import harness
        opmod = importlib.import_module(f"ligerd_bench.{op}")
        shape = {"M": ROWS, "N": COLS}
        step = harness._step(opmod, mod, *harness._fresh_args(opmod, shape, torch.bfloat16), "fwd")
        common.eager_ms([step])
    ms, _ = common.graph_ms([step])
    kern = kernel_records(step, calls)
    per_call = sum(statistics.median(d) * len(d) / calls for _, d, _ in kern)
    return {"op": op, "impl": impl, "path": path, "graph_ms": ms, "kernel_us": per_call,
            "gap_us": ms * 1e3 - per_call,
            "kernels": [{"name": n[:60], "calls_per_step": len(d) / calls,
                         "median_us": statistics.median(d),
                         "grid": ar.get("grid"), "block": ar.get("block"),
                         "regs": ar.get("registers per thread"),
                         "smem": ar.get("shared memory")} for n, d, ar in kern]}


if __name__ == "__main__":
    sys.exit(main())
