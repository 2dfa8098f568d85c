"""KL-divergence benchmark rows: ``KL(t || exp(x))`` of [M, V] input log-probabilities x and target
probabilities t, reduction "batchmean", bf16, for torch eager (``F.kl_div``, as Liger's own
benchmark compares against nn.KLDivLoss), torch.compile of it, Liger-Kernel's LigerKLDIVLoss (if
importable) and ligerd's LigerKLDIVLoss. Run by bench/run_kernels.py through
bench/ligerd_bench/harness.py.

Passes, with x requiring grad: fwd, bwd (after one retained forward: the gradient -t / M, one
streaming kernel for ligerd and Liger), full. No implementation forms the gradient in its forward
(Liger's saves the target instead: the gradient depends on nothing else).

Byte model (minimal traffic): fwd reads x and t, 2*M*V*b; bwd reads t and writes dx, 2*M*V*b;
full 3*M*V*b (a fused kernel reading x and t once and writing dx). ligerd and Liger run two
kernels, 4*M*V*b: 75% of copy bandwidth by this model is their roof on a full step.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F

from ligerd_bench import distill_inputs, harness

OP = "kl_div"
TITLE = "KL divergence (batchmean, grad of the input)"
PASSES = ("fwd", "bwd", "full")
BYTES_FACTOR = {"fwd": 2, "bwd": 2, "full": 3}


shapes = distill_inputs.shapes


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    return distill_inputs.bytes_moved(BYTES_FACTOR, shape, p, elem_bytes)


def make_args(shape: dict, dtype):
    M, V = shape["M"], shape["V"]
    x = distill_inputs.log_probs(M, V, dtype, salt=0.0)
    t = distill_inputs.probs(M, V, dtype, salt=0.37)
    return [x, t], [0]


def _eager(x, t):
    return F.kl_div(x, t, reduction="batchmean")


def impls() -> Dict[str, Callable]:
    out: Dict[str, Callable] = {
        "eager": lambda s, d: _eager,
        "torch.compile": lambda s, d: harness.compiled(_eager),
    }
    return harness.add_peers(out, "LigerKLDIVLoss", lambda cls, s, d: cls(reduction="batchmean"),
                             order=("ligerd", "liger"))
