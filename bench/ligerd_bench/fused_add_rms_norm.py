"""Fused residual add + RMSNorm benchmark rows: (Y, S) = (RMSNorm(X + R), X + R), forward,
backward (gradients for both outputs) and both, for torch eager (Hugging Face's decoder layer:
`hidden = residual + hidden`, then LlamaRMSNorm), torch.compile of the same, Liger-Kernel's
LigerFusedAddRMSNorm and ligerd's, each with its defaults (in_place=False).

Byte model (minimal traffic): fwd reads X, R and writes Y, S = 4*M*N*b; bwd reads dY, dS and S
and writes dX (= dR, one tensor) = 4*M*N*b; full = 8*M*N*b (weight, rstd, dW: O(M + N)).
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

from ligerd_bench import harness

OP = "fused_add_rms_norm"
TITLE = "Fused add + RMSNorm"
PASSES = ("fwd", "bwd", "full")
BYTES_FACTOR = {"fwd": 4, "bwd": 4, "full": 8}
EPS = 1e-6


class HFAddRMSNorm(torch.nn.Module):
    """The eager baseline: the residual add of a HF decoder layer, then LlamaRMSNorm."""

    def __init__(self, hidden_size, eps=EPS):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states, residual):
        residual = residual + hidden_states
        input_dtype = residual.dtype
        h = residual.to(torch.float32)
        variance = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * h.to(input_dtype), residual


def shapes(quick: bool) -> List[dict]:
    """LLaMA-3-8B's (16K tokens x hidden 4096) first, then hidden 2048 and 8192."""
    first = {"M": 16384, "N": 4096}
    return [first] if quick else [first, {"M": 16384, "N": 2048}, {"M": 16384, "N": 8192}]


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    return BYTES_FACTOR[p] * shape["M"] * shape["N"] * elem_bytes


def make_args(shape: dict, dtype):
    mk = lambda: torch.randn(shape["M"], shape["N"], device=harness.DEVICE, dtype=dtype)  # noqa: E731
    return [mk(), mk()], [0, 1]


def impls() -> Dict[str, Callable]:
    out: Dict[str, Callable] = {
        "eager": lambda s, d: HFAddRMSNorm(s["N"]),
        "torch.compile": lambda s, d: harness.compiled(HFAddRMSNorm(s["N"])),
    }
    return harness.add_peers(out, "LigerFusedAddRMSNorm", lambda cls, s, d: cls(s["N"], eps=EPS))
