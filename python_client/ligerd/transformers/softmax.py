"""``LigerSoftmax`` with Liger-Kernel's constructor and semantics, on ligerd's kernels."""

from __future__ import annotations

import torch
import torch.nn as nn

from ligerd.ops.softmax import softmax


class LigerSoftmax(nn.Module):
    """Softmax over the last dimension: ``y = exp(x - max(x)) / sum(exp(x - max(x)))``, computed
    in fp32 and returned in x's dtype (fp32, bf16 or fp16; 1-D to 4-D). As in Liger-Kernel it
    takes no arguments: the dimension is always the last one."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor):
        return softmax(x)
