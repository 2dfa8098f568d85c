"""Squared-ReLU benchmark rows: y = relu(x)^2 (transformers' ACT2FN["relu2"], Nemotron's MLP
activation), forward, backward and forward+backward ("full"), bf16, for torch eager (transformers'
ReLUSquaredActivation: ``torch.square(torch.relu(x))``, two kernels each way), torch.compile of it,
Liger-Kernel's LigerReLUSquared (if importable) and ligerd's LigerReLUSquared. Run by
bench/run_kernels.py through bench/ligerd_bench/harness.py.

Shapes: 16K tokens x 24576 first (Nemotron-4 15B's MLP width; 768 MiB per bf16 tensor), then 4K
tokens of it, 16K x 9216 (Minitron-4B's width), and an odd 4097 x 4097 (16-byte vectors plus a
ragged end: ligerd takes the dense tensor as one row).

Byte model (minimal traffic, what a fused kernel must move): fwd reads X and writes Y = 2*M*N*b;
bwd reads dY and X and writes dX = 3*M*N*b; full = 5*M*N*b. Both kernels are pure streams, so
% of copy bandwidth is the figure of merit (100% is the roof).
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

from ligerd_bench import harness

OP = "relu_squared"
TITLE = "Squared ReLU (relu2)"
PASSES = ("fwd", "bwd", "full")
BYTES_FACTOR = {"fwd": 2, "bwd": 3, "full": 5}


def _eager(x):
    return torch.square(torch.relu(x))


def shapes(quick: bool) -> List[dict]:
    first = {"M": 16384, "N": 24576}
    if quick:
        return [first]
    return [first, {"M": 4096, "N": 24576}, {"M": 16384, "N": 9216}, {"M": 4097, "N": 4097}]


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    return BYTES_FACTOR[p] * shape["M"] * shape["N"] * elem_bytes


def make_args(shape: dict, dtype):
    # An up-projection's output: about half the entries negative (their gradient is 0).
    return [torch.randn(shape["M"], shape["N"], device=harness.DEVICE, dtype=dtype)], [0]


def impls() -> Dict[str, Callable]:
    """name -> factory(shape, dtype) -> fn. Unavailable peers are reported and skipped."""
    out: Dict[str, Callable] = {
        "eager": lambda s, d: _eager,
        "torch.compile": lambda s, d: harness.compiled(_eager),
    }
    return harness.add_peers(out, "LigerReLUSquared", lambda cls, s, d: cls())
