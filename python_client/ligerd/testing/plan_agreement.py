"""Do the ranks of a job plan the same kernels? For tests/gpu/test_multi_gpu.py (issue 21: ranks
that tune on their own can pick different launch configurations and diverge; ligerd's node-wide
tuning DB is meant to give every rank the same choice).

``worker(rank, world, cache_dir, cases)`` runs on one GPU per rank (ligerd.testing.ranks with
NCCL) and returns, for each case (op, dtype, rows, cols), what ``ligerd._C.plan_info`` says this
rank's executor would launch: the config, whether it came from the tuning DB, the kernels with
their grid and block. Nothing is launched."""

from __future__ import annotations

from typing import Dict, List

import torch

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def _args(op: str, t: torch.dtype, rows: int, cols: int, dev):
    """(tensors, scalars) of one executor op, as kernels/ops/<op>.cc takes them."""
    def e(*s, dt=t):
        return torch.empty(*s, device=dev, dtype=dt)
    if op == "rms_norm_fwd":
        return [e(rows, cols), e(cols), e(rows, cols), e(rows, dt=torch.float32)], [1e-6, 0.0, 0.0]
    if op == "swiglu_fwd":
        return [e(rows, cols), e(rows, cols), e(rows, cols)], []
    raise ValueError(f"plan_agreement: no argument builder for {op!r}")


def worker(rank: int, world: int, cache_dir: str, cases: List) -> List[Dict]:
    import ligerd._C as C  # directly, as tests/gpu/test_tune.py's child: the cache dir set first
    if cache_dir:
        C.set_cache_dir(cache_dir)
    dev = torch.device(f"cuda:{rank}")
    out = []
    for op, dtype, rows, cols in cases:
        tensors, scalars = _args(op, DTYPES[dtype], rows, cols, dev)
        info = C.plan_info(op, tensors, scalars)
        out.append({k: info[k] for k in ("config", "config_text", "tuned", "variant", "launches", "tuning_db")
                    if k in info})
    return out


__all__ = ["worker", "DTYPES"]
