"""Shapes, byte model and inputs shared by the distillation-loss benchmark rows (kl_div.py,
jsd.py, tvd.py): [M, V] rows of (log-)probabilities and shift labels, built from a hash of
(row, column) rather than the CUDA RNG, so every row of every run sees the same inputs whatever
the peers timed before it did to the generator."""

from __future__ import annotations

from typing import Dict, List

import torch

from ligerd_bench import harness

IGNORE = -100


def shapes(quick: bool) -> List[dict]:
    """The LLaMA-3 vocabulary first, then Mistral's, Qwen's and Gemma's."""
    first = {"M": 4096, "V": 128256}
    return [first] if quick else [first, {"M": 8192, "V": 32000}, {"M": 4096, "V": 151936},
                                  {"M": 2048, "V": 262144}]


def bytes_moved(factor: Dict[str, int], shape: dict, p: str, elem_bytes: int) -> int:
    """factor[p] [M, V] tensors of elem_bytes moved by pass p."""
    return factor[p] * shape["M"] * shape["V"] * elem_bytes


def _rows(M: int, V: int, dtype, salt: float, spread: float, finish) -> torch.Tensor:
    """finish(z) of pseudo-random logits z in [-spread, spread] (a hash of row, column and salt),
    in dtype; built in slabs of <= 64 MiB of fp32 temporaries."""
    dev = harness.DEVICE
    out = torch.empty(M, V, device=dev, dtype=dtype)
    cols = torch.arange(V, device=dev, dtype=torch.float32) * 78.233 + salt
    step = max(1, (64 << 20) // (4 * V))
    for r0 in range(0, M, step):
        rows = torch.arange(r0, min(r0 + step, M), device=dev, dtype=torch.float32)[:, None] * 12.9898
        h = torch.sin(rows + cols) * 43758.5453
        z = spread * (2 * (h - torch.floor(h)) - 1)
        out[r0:r0 + rows.shape[0]] = finish(z).to(dtype)
    return out


def log_probs(M: int, V: int, dtype, salt: float, spread: float = 3.0) -> torch.Tensor:
    """Rows of log-probabilities (log_softmax of the hashed logits, in fp32, then dtype)."""
    return _rows(M, V, dtype, salt, spread, lambda z: z.log_softmax(-1))


def probs(M: int, V: int, dtype, salt: float, spread: float = 3.0) -> torch.Tensor:
    """Rows of probabilities (softmax of the hashed logits, in fp32, then dtype)."""
    return _rows(M, V, dtype, salt, spread, lambda z: z.softmax(-1))


def labels(M: int, V: int) -> torch.Tensor:
    """Token ids with every 50th row ignored (padding, as a batch has)."""
    t = (torch.arange(M, device=harness.DEVICE, dtype=torch.int64) * 7919 + 17) % V
    t[::50] = IGNORE
    return t
