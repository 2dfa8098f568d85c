"""Softmax benchmark rows: softmax over the last dimension, forward, backward and forward+backward
("full"), bf16, for torch eager (``torch.softmax``), torch.compile of it, Liger-Kernel's
LigerSoftmax (if importable) and ligerd's LigerSoftmax. Run by bench/run_kernels.py through
bench/ligerd_bench/harness.py.

Shapes: LLaMA-3-8B's 16K tokens x 4096 first (attention-score or gating rows of a common width),
then 4K/16K rows x 1024..8192, and vocabulary-wide rows (softmax over logits: 32000, 128256,
151936; 4096 x 151936 is 1.2 GiB in bf16), which ligerd streams in two passes.

Byte model (minimal traffic, what a fused kernel must move): fwd reads X and writes Y = 2*M*N*b;
bwd reads dY and Y and writes dX = 3*M*N*b; full = 5*M*N*b. A row that does not fit on chip is
read twice by the forward (3*M*N*b: 67% of copy bandwidth by this model is that kernel's roof if
the second read misses L2) and dY, Y twice by the backward (5*M*N*b: 60%).
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

from ligerd_bench import harness

OP = "softmax"
TITLE = "Softmax (last dim)"
PASSES = ("fwd", "bwd", "full")
BYTES_FACTOR = {"fwd": 2, "bwd": 3, "full": 5}


def _eager(x):
    return torch.softmax(x, dim=-1)


def shapes(quick: bool) -> List[dict]:
    """16K tokens x 4096 first, then a grid of widths, then vocabulary-wide rows."""
    first = {"M": 16384, "N": 4096}
    if quick:
        return [first]
    grid = [{"M": m, "N": n} for n in (1024, 4096, 8192) for m in (4096, 16384)]
    vocab = [{"M": 4096, "N": 32000}, {"M": 4096, "N": 128256}, {"M": 4096, "N": 151936}]
    return [first] + [s for s in grid if s != first] + vocab


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    return BYTES_FACTOR[p] * shape["M"] * shape["N"] * elem_bytes


def make_args(shape: dict, dtype):
    # Logits-like spread (softmax of randn * 3 has a few dominant entries per row).
    return [3 * torch.randn(shape["M"], shape["N"], device=harness.DEVICE, dtype=dtype)], [0]


def impls() -> Dict[str, Callable]:
    """name -> factory(shape, dtype) -> fn. Unavailable peers are reported and skipped."""
    out: Dict[str, Callable] = {
        "eager": lambda s, d: _eager,
        "torch.compile": lambda s, d: harness.compiled(_eager),
    }
    return harness.add_peers(out, "LigerSoftmax", lambda cls, s, d: cls())
