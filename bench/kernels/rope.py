"""RoPE benchmark rows (the generic harness's op-module interface; also runnable on its own:
``python3 bench/kernels/rope.py [--quick] [--out DIR]``): forward, backward and forward+backward
of HF's apply_rotary_pos_emb for torch eager, torch.compile of the same, Liger-Kernel's
liger_rotary_pos_emb (if importable) and ligerd's liger_rotary_pos_emb (local dispatch).

Inputs are what a Llama attention layer hands RoPE: q and k as ``view(bsz, seq, heads, hd)
.transpose(1, 2)`` of projection outputs (non-leaf tensors, made once outside the timed step, so
no prologue is timed and the in-place ops are legal), cos/sin of batch bsz as HF's rotary
embedding returns them. Liger and ligerd rotate q, k (fwd) and dq, dk (bwd) in place, so values
rotate from step to step; the traffic does not change (rotations keep norms: nothing overflows).

Byte model (minimal traffic): read and write q and k, read cos and sin once:
fwd = bwd = 2*(Hq+Hk)*B*S*hd*b + 2*B*S*hd*b; full = fwd + bwd.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Callable, Dict, List

import torch

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402

OP = "rope"
TITLE = "RoPE (q and k, HF rotate_half)"
PASSES = ("fwd", "bwd", "full")
DEVICE = "cuda"

LLAMA3_8B = {"B": 4, "S": 4096, "Hq": 32, "Hk": 8, "D": 128}


def shapes(quick: bool) -> List[dict]:
    if quick:
        return [dict(LLAMA3_8B)]
    return [dict(LLAMA3_8B),
            {"B": 1, "S": 16384, "Hq": 32, "Hk": 8, "D": 128},
            {"B": 4, "S": 4096, "Hq": 32, "Hk": 8, "D": 64},     # Llama-3.2-1B heads
            {"B": 2, "S": 4096, "Hq": 64, "Hk": 8, "D": 128}]    # 70B-style GQA


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    t = shape["B"] * shape["S"] * shape["D"]
    one = 2 * (shape["Hq"] + shape["Hk"]) * t * elem_bytes + 2 * t * elem_bytes
    return 2 * one if p == "full" else one


# ---------------------------------------------------------------------------------------------
# Implementations.

def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def hf_apply_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    """Hugging Face's Llama apply_rotary_pos_emb, verbatim: the eager baseline."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


def impls() -> Dict[str, Callable]:
    out: Dict[str, Callable] = {"eager": lambda shape, dtype: hf_apply_rotary_pos_emb}
    # The "bwd" pass runs one graph's backward repeatedly (retain_graph=True), which AOTAutograd's
    # donated buffers forbid; turning donation off changes allocations, not kernels or traffic.
    import torch._functorch.config as functorch_config
    if hasattr(functorch_config, "donated_buffer"):
        functorch_config.donated_buffer = False
    import torch._dynamo.config as dynamo_config
    for knob in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, knob):
            setattr(dynamo_config, knob, 256)
    out["torch.compile"] = lambda shape, dtype: torch.compile(hf_apply_rotary_pos_emb, fullgraph=True)
    common.add_peer_site()
    try:
        from liger_kernel.transformers import liger_rotary_pos_emb as liger
        out["liger"] = lambda shape, dtype: liger
    except Exception as e:  # noqa: BLE001
        print(f"[bench] Liger-Kernel not importable, rope skipped for it: {e}")
    try:
        import ligerd
        from ligerd.transformers import liger_rotary_pos_emb as ours
        ligerd.set_dispatch_mode("local")
        out["ligerd"] = lambda shape, dtype: ours
    except Exception as e:  # noqa: BLE001
        print(f"[bench] ligerd not importable, skipped: {e}")
    return out


def _cos_sin(b, s, d, dtype):
    inv = 1.0 / (500000.0 ** (torch.arange(0, d, 2, device=DEVICE, dtype=torch.float32) / d))
    pos = torch.arange(s, device=DEVICE, dtype=torch.float32)[None].expand(b, s)
    f = pos[..., None] * inv
    emb = torch.cat([f, f], -1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _on_bench_stream():
    return torch.cuda.stream(common.bench_stream()) if DEVICE == "cuda" else contextlib.nullcontext()


def make_args(shape: dict, dtype):
    """[q, k, cos, sin], differentiable indices [0, 1]. q and k are non-leaf transposed views of
    [B, S, H*hd] "projection outputs" (x * 1 of a leaf, computed here, once, untimed).

    Made on the stream the steps are captured on: the backward delivers dq to q's autograd node
    on the stream that node was recorded on, and a node recorded on the default stream would
    make the captured backward wait on the legacy stream (an invalid capture)."""
    with _on_bench_stream():
        out = _make_args(shape, dtype)
    if DEVICE == "cuda":
        common.bench_stream().synchronize()
    return out


def _make_args(shape: dict, dtype):
    b, s, hq, hk, d = shape["B"], shape["S"], shape["Hq"], shape["Hk"], shape["D"]
    xq = torch.randn(b, s, hq * d, device=DEVICE, dtype=dtype, requires_grad=True)
    xk = torch.randn(b, s, hk * d, device=DEVICE, dtype=dtype, requires_grad=True)
    q = (xq * 1).view(b, s, hq, d).transpose(1, 2)
    k = (xk * 1).view(b, s, hk, d).transpose(1, 2)
    cos, sin = _cos_sin(b, s, d, dtype)
    return [q, k, cos, sin], [0, 1]


def make_steps(fn, args, grad_idx, p):
    """One step of pass ``p`` on one copy of the args; nothing else is timed.

    fwd:  fn(q, k, cos, sin) under no_grad (Liger, ligerd: in place).
    bwd:  torch.autograd.grad over one forward run here beforehand (retain_graph=True), with
          respect to q and k themselves (not the projection leaves: no view/copy backward timed).
          Liger and ligerd rotate the grad_outputs dq, dk in place.
    full: forward + torch.autograd.grad (gradients returned, not accumulated).
    Gradients are taken at q's and k's gradient edges as they are when the forward starts: an
    in-place op that bumps q's version (ligerd, as torch's own in-place ops do) makes autograd
    regenerate q's grad_fn afterwards, so ``q`` itself no longer names the edge the op used."""
    q, k = args[0], args[1]
    with _on_bench_stream():
        dq = torch.randn_like(q)  # the layout autograd would hand over: q's (transposed) layout
        dk = torch.randn_like(k)
    inputs = [args[i] for i in grad_idx]
    if p == "fwd":
        def step():
            with torch.no_grad():
                fn(*args)
        return step
    edges = lambda: [torch.autograd.graph.get_gradient_edge(t) for t in inputs]  # noqa: E731
    if p == "bwd":
        with _on_bench_stream():
            e = edges()
            out = fn(*args)
        return lambda: torch.autograd.grad(out, e, (dq, dk), retain_graph=True)
    if p == "full":
        def full():
            e = edges()
            return torch.autograd.grad(fn(*args), e, (dq, dk))
        return full
    raise ValueError(p)


# ---------------------------------------------------------------------------------------------
# Standalone runner (until the generic harness lands): CUDA-graph replay timing, L2 cold by
# buffer rotation, % of measured copy bandwidth, speedups, peak extra memory of a full step.

def _peak_extra_mib(fn, args, grad_idx) -> float:
    step = make_steps(fn, args, grad_idx, "full")
    step()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def run(quick: bool, out_dir: Path, dtype=torch.bfloat16) -> List[dict]:
    import gc
    copy = common.copy_bandwidth_gbps()
    print(f"[bench] measured copy bandwidth: {copy:.0f} GB/s (read + write)")
    rows = []
    eb = torch.tensor([], dtype=dtype).element_size()
    table = impls()
    for shape in shapes(quick):
        for name, factory in table.items():
            fn = factory(shape, dtype)
            for p in PASSES:
                nbytes = bytes_moved(shape, p, eb)
                k = common.rotation(nbytes)
                row = dict(op=OP, impl=name, **shape, **{"pass": p, "copies": k})
                try:
                    sets = [make_args(shape, dtype) for _ in range(k)]
                    steps = [make_steps(fn, a, gi, p) for a, gi in sets]
                    row["ms"], _ = common.graph_ms(steps)
                    if p == "full":
                        row["peak_extra_MiB"] = _peak_extra_mib(fn, *sets[0])
                except Exception as e:  # noqa: BLE001
                    row["ms"] = float("nan")
                    row["note"] = f"{type(e).__name__}: {e}"[:160]
                    print(f"[bench] {name} {p} {shape}: FAILED {row['note']}")
                row["GBps"] = nbytes / (row["ms"] * 1e-3) / 1e9
                row["pct_copy_bw"] = 100 * row["GBps"] / copy
                rows.append(row)
                print(f"[bench] rope {name:>13} {p:>4} {shape}: {row['ms']:.4f} ms "
                      f"{row['GBps']:.0f} GB/s {row['pct_copy_bw']:.0f}% of copy"
                      + (f", peak extra {row['peak_extra_MiB']:.0f} MiB" if "peak_extra_MiB" in row else ""))
                sets = steps = None  # noqa: F841
                gc.collect()
                torch.cuda.empty_cache()
    for r in rows:
        for peer in table:
            other = [o for o in rows if o["impl"] == peer and o["pass"] == r["pass"] and
                     all(o[x] == r[x] for x in ("B", "S", "Hq", "Hk", "D"))]
            if other and peer != r["impl"]:
                r[f"speedup_vs_{peer}"] = other[0]["ms"] / r["ms"]
    cols = ["op", "impl", "B", "S", "Hq", "Hk", "D", "pass", "ms", "GBps", "pct_copy_bw"] + \
           [f"speedup_vs_{p}" for p in ("eager", "torch.compile", "liger", "ligerd")] + \
           ["peak_extra_MiB", "copies", "note"]
    common.write_csv(out_dir / "rope.csv", rows, cols)
    meta = common.environment()
    meta["copy_GBps"] = copy
    common.write_json(out_dir / "rope_meta.json", meta)
    print(f"\nRoPE bf16, copy bandwidth {copy:.0f} GB/s; {meta['device']}; torch {meta['torch']}, "
          f"liger_kernel {meta['liger_kernel']}")
    print(common.format_table(rows, ["impl", "B", "S", "Hq", "Hk", "D", "pass", "ms", "GBps", "pct_copy_bw",
                                     "speedup_vs_torch.compile", "speedup_vs_liger", "peak_extra_MiB"]))
    return rows


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="out/bench")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("[bench] no CUDA device")
        sys.exit(0)
    run(a.quick, Path(a.out))
