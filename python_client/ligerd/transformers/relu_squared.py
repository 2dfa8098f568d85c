"""``LigerReLUSquared`` and ``LigerReLUSquaredFunction`` with Liger-Kernel's names and semantics, on
ligerd's kernels (the functional ``liger_relu_squared`` is in ligerd.transformers.functional)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ligerd.ops.relu_squared import relu_squared


class LigerReLUSquaredFunction:
    """Liger's ``LigerReLUSquaredFunction.apply(x)``: ``relu(x)^2``, differentiable in x."""

    @staticmethod
    def apply(x: torch.Tensor) -> torch.Tensor:
        return relu_squared(x)


class LigerReLUSquared(nn.Module):
    """Squared ReLU, ``y = relu(x)^2`` (transformers' ``ACT2FN["relu2"]``, Nemotron's MLP
    activation), computed in fp32 and returned in x's dtype (fp32, bf16 or fp16; any shape). As in
    Liger-Kernel it takes no arguments and has no parameters."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor):
        return relu_squared(x)
