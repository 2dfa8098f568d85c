"""``gemm``: the daemon's cuBLASLt GEMM (kernels/ops/gemm.cc), for the fused linear losses.

    out = alpha * a @ b + beta * c (+ bias)        fp32 accumulation; c may be out itself

``a`` and ``b`` may be transposed views (``W.t()``): no copy is made. ``out`` is row-major (rows may
be padded) in a's dtype or float32. Runs wherever the session dispatches (in ligerd for a remote
session, in this process's executor for a local one), asynchronously on the current stream.
Executor op: [A, B, C?, D out, bias?]  scalars [alpha, beta].
"""

from __future__ import annotations

from typing import Optional

import torch

from ligerd import _backend

OP = "gemm"


def gemm_(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, bias: Optional[torch.Tensor] = None,
          accumulate: bool = False, alpha: float = 1.0) -> torch.Tensor:
    """out = alpha * a @ b (+ bias), or out += alpha * a @ b when ``accumulate``; returns out."""
    _backend.call(OP, A=a, B=b, C=out if accumulate else None, D=out, bias=bias, alpha=alpha,
                  beta=1.0 if accumulate else 0.0)
    return out
