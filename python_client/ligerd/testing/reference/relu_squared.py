"""Float64 reference for squared ReLU (kernels/ops/relu_squared.cuh, Liger-Kernel's
LigerReLUSquared, transformers' ACT2FN["relu2"]), with the per-element error bounds of the GPU
tests (tests/gpu/test_relu_squared.py).

forward:  y  = relu(x)^2          (x <= 0: 0; NaN x: NaN)
backward: dx = 2 relu(x) dy       (x <= 0: 0, whatever dy is, as torch's relu backward; NaN x: NaN)

Error: the kernels form x * x and (2 x) * dy in fp32 and round once to the output dtype. For
bf16/fp16 inputs those fp32 products are exact (8+8 or 11+11 significant bits fit fp32's 24),
for fp32 inputs they are one correct rounding of the exact product, which float64 holds exactly
(24+24 bits < 53). So every output is the exact value correctly rounded to its dtype: within
u |ref| of it (u = the dtype's unit roundoff, half an ulp) in the normal range and within half a
subnormal spacing (TINY / 2) below it. ``exact`` gives that correctly rounded value itself (the
float64 value is exact, and torch rounds float64 to fp32 once; to bf16/fp16 through fp32, which
is exact on the way for 16-bit inputs' products), so the tests also check bitwise equality.
"""

from __future__ import annotations

import torch

from ligerd.testing.reference.precision import TINY, U


def forward(x: torch.Tensor) -> torch.Tensor:
    """y = relu(x)^2 in float64, x's shape, on x's device."""
    x64 = x.double()
    r = torch.where(x64 <= 0, torch.zeros_like(x64), x64)  # keeps NaN (relu(NaN) = NaN)
    return r * r


def backward(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx = 2 relu(x) dy in float64; exactly 0 where x <= 0 (even for an inf or NaN dy)."""
    x64, dy64 = x.double(), dy.double()
    return torch.where(x64 <= 0, torch.zeros_like(x64), (2 * x64) * dy64)


def tol(dtype, ref64: torch.Tensor) -> torch.Tensor:
    """Per-element bound of one correct rounding of ref64 to dtype (the module docstring)."""
    return U[dtype] * ref64.abs() + TINY[dtype] / 2


def exact(dtype, ref64: torch.Tensor) -> torch.Tensor:
    """ref64 correctly rounded to dtype: what the kernels must return bit for bit."""
    return ref64.to(dtype)
