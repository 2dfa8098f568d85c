"""LayerNorm benchmark rows: forward, backward and both, for torch eager (Hugging Face uses
torch.nn.LayerNorm), torch.compile of the same, Liger-Kernel's LigerLayerNorm and ligerd's
LigerLayerNorm, all with weight and bias (both trained).

Byte model (minimal traffic, what a fused kernel must move): fwd reads X and writes Y = 2*M*N*b;
bwd reads dY and X and writes dX = 3*M*N*b; full = 5*M*N*b. The per-row mean and rstd (8*M
bytes), the weight and bias (2*N*b) and their fp32 partial-sum rows (~2 * 264 * N * 4 per
gradient) are left out: < 2% at the shapes below.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

from ligerd_bench import harness

OP = "layer_norm"
TITLE = "LayerNorm"
PASSES = ("fwd", "bwd", "full")
BYTES_FACTOR = {"fwd": 2, "bwd": 3, "full": 5}
EPS = 1e-6


def shapes(quick: bool) -> List[dict]:
    """LLaMA-3-8B's (16K tokens x hidden 4096) first, then hidden 2048 and 8192."""
    first = {"M": 16384, "N": 4096}
    return [first] if quick else [first, {"M": 16384, "N": 2048}, {"M": 16384, "N": 8192}]


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    return BYTES_FACTOR[p] * shape["M"] * shape["N"] * elem_bytes


def make_args(shape: dict, dtype):
    return [torch.randn(shape["M"], shape["N"], device=harness.DEVICE, dtype=dtype)], [0]


def _with_bias(m: torch.nn.Module) -> torch.nn.Module:
    # A trained, non-zero bias for every implementation (Liger's bias=True starts it as randn).
    with torch.no_grad():
        m.bias.normal_()
    return m


def impls() -> Dict[str, Callable]:
    out: Dict[str, Callable] = {
        "eager": lambda s, d: _with_bias(torch.nn.LayerNorm(s["N"], eps=EPS)),
        "torch.compile": lambda s, d: harness.compiled(_with_bias(torch.nn.LayerNorm(s["N"], eps=EPS))),
    }
    return harness.add_peers(out, "LigerLayerNorm", lambda cls, s, d: _with_bias(cls(s["N"], eps=EPS, bias=True)))
