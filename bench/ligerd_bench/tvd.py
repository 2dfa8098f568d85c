"""TVD benchmark rows: the total variation distance (reduction "batchmean") of two [M, V]
distributions with shift labels (every 50th row ignored), bf16, for torch eager
(``0.5 * |p - q|`` summed over kept rows, in fp32), torch.compile of it, Liger-Kernel's
LigerTVDLoss (if importable) and ligerd's LigerTVDLoss. Run by bench/run_kernels.py through
bench/ligerd_bench/harness.py.

Passes, with p requiring grad: fwd (Liger and ligerd also write the gradient there, torch does
not: compare "full" rows), bwd (after one retained forward: ~nothing for Liger and ligerd,
grad_output being 1; ligerd's bwd step calls its skipping scale kernel directly, as jsd.py says),
full.

Byte model (minimal traffic): fwd reads p and q, 2*M*V*b; bwd and full read p and q and write the
gradient, 3*M*V*b (the one pass ligerd's forward makes; its row losses are 4*M bytes more).
"""

from __future__ import annotations

from typing import Callable, Dict

import torch

from ligerd_bench import distill_inputs, harness

OP = "tvd"
TITLE = "TVD (batchmean, labels, grad of p)"
PASSES = ("fwd", "bwd", "full")
BYTES_FACTOR = {"fwd": 2, "bwd": 3, "full": 3}


shapes = distill_inputs.shapes


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    return distill_inputs.bytes_moved(BYTES_FACTOR, shape, p, elem_bytes)


def make_args(shape: dict, dtype):
    M, V = shape["M"], shape["V"]
    p = distill_inputs.probs(M, V, dtype, salt=0.0)
    q = distill_inputs.probs(M, V, dtype, salt=0.37)
    return [p, q, distill_inputs.labels(M, V)], [0]


def _eager(p, q, labels):
    keep = labels != distill_inputs.IGNORE
    per = 0.5 * (p.float() - q.float()).abs().sum(-1)
    return (per * keep).sum() / keep.sum()


def impls() -> Dict[str, Callable]:
    out: Dict[str, Callable] = {
        "eager": lambda s, d: _eager,
        "torch.compile": lambda s, d: harness.compiled(_eager),
    }
    return harness.add_peers(out, "LigerTVDLoss",
                             lambda cls, s, d: cls(reduction="batchmean", ignore_index=distill_inputs.IGNORE),
                             order=("ligerd", "liger"))


def _is_ligerd(fn) -> bool:
    ours = harness.peer_class("ligerd.transformers", "LigerTVDLoss")
    return not isinstance(ours, Exception) and isinstance(fn, ours)


def make_steps(fn, args, grad_idx, p):
    x, q, labels = args
    if p == "fwd":
        return lambda: fn(x, q, labels)
    if p == "bwd" and _is_ligerd(fn):
        from ligerd.ops import _distill
        fn(x, q, labels)
        stored = torch.empty_like(x)
        one = torch.ones((), device=x.device, dtype=torch.float32)
        return lambda: _distill.scale_stored_grad_(stored, one)
    return harness.generic_step(fn, args, grad_idx, p)
