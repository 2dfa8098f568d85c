"""JSD benchmark rows: the generalised Jensen-Shannon divergence (beta 0.5) of [M, V] student and
teacher log-probabilities with shift labels (every 50th row ignored), bf16, for torch eager (the
divergence written with torch ops in fp32, as a distillation loop does), torch.compile of it,
Liger-Kernel's LigerJSD (if importable) and ligerd's LigerJSD. Run by bench/run_kernels.py through
bench/ligerd_bench/harness.py.

Passes, with the student requiring grad (a training step):
- fwd: the forward alone. Liger and ligerd compute the gradient here too, torch does not:
  compare "full" rows across implementations.
- bwd: the backward alone after one retained forward: grad_output is 1, so ~nothing for Liger
  (it returns the stored dX) and ligerd (its scale kernel skips rows whose factor is exactly 1;
  ligerd's bwd step calls that kernel directly: its backward scales the stored gradient in place,
  so autograd refuses to replay one retained graph, as for ligerd's cross-entropy).
- full: forward + backward.

Byte model (minimal traffic): fwd reads x and y, 2*M*V*b (the loss alone); bwd and full read x
and y and write dX, 3*M*V*b (kernels/ops/distill.cuh: the one pass ligerd's forward makes).
Shapes: 4K tokens at LLaMA-3's vocabulary first, then the other vocabularies of issue 19.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import torch

from ligerd_bench import distill_inputs, harness

OP = "jsd"
TITLE = "JSD (beta 0.5, labels, grad of the student)"
PASSES = ("fwd", "bwd", "full")
BYTES_FACTOR = {"fwd": 2, "bwd": 3, "full": 3}
BETA = 0.5


shapes = distill_inputs.shapes


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    return distill_inputs.bytes_moved(BYTES_FACTOR, shape, p, elem_bytes)


def make_args(shape: dict, dtype):
    M, V = shape["M"], shape["V"]
    x = distill_inputs.log_probs(M, V, dtype, salt=0.0)
    y = distill_inputs.log_probs(M, V, dtype, salt=0.37)
    return [x, y, distill_inputs.labels(M, V)], [0]


def _eager(x, y, labels, beta=BETA):
    """Liger's definition in torch ops: beta KL(P || M) + (1 - beta) KL(Q || M) over kept rows."""
    X, Y = x.float(), y.float()
    log_m = torch.logaddexp(Y + math.log(beta), X + math.log(1 - beta))
    per = (beta * Y.exp() * (Y - log_m) + (1 - beta) * X.exp() * (X - log_m)).sum(-1)
    keep = labels != distill_inputs.IGNORE
    return ((per * keep).sum() / keep.sum()).to(x.dtype)


def impls() -> Dict[str, Callable]:
    out: Dict[str, Callable] = {
        "eager": lambda s, d: _eager,
        "torch.compile": lambda s, d: harness.compiled(_eager),
    }
    # ligerd before Liger: Liger's graph capture fails (host syncs) and may leave the process's
    # CUDA state worse for whatever runs after it.
    return harness.add_peers(out, "LigerJSD", lambda cls, s, d: cls(beta=BETA, ignore_index=distill_inputs.IGNORE),
                             order=("ligerd", "liger"))


def _is_ligerd(fn) -> bool:
    ours = harness.peer_class("ligerd.transformers", "LigerJSD")
    return not isinstance(ours, Exception) and isinstance(fn, ours)


def make_steps(fn, args, grad_idx, p):
    x, y, labels = args
    if p == "fwd":
        return lambda: fn(x, y, labels)  # grad mode on: the training forward (dX for Liger/ligerd)
    if p == "bwd" and _is_ligerd(fn):
        from ligerd.ops import _distill
        fn(x, y, labels)
        stored = torch.empty_like(x)  # what the forward keeps; grad_output 1: every row skipped
        one = torch.ones((), device=x.device, dtype=x.dtype)
        return lambda: _distill.scale_stored_grad_(stored, one)
    return harness.generic_step(fn, args, grad_idx, p)
