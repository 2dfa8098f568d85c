"""``LigerLayerNorm`` with Liger-Kernel's constructor and semantics, on ligerd's kernels."""

from __future__ import annotations

import torch
import torch.nn as nn

from ligerd.ops.layer_norm import layer_norm


class LigerLayerNorm(nn.Module):
    """LayerNorm over the last dimension: ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

    Args (as in Liger-Kernel):
        hidden_size: size of the last dimension.
        eps: added to the variance.
        bias: if True the bias starts as ``randn`` (Liger's choice); if False it is a zero
            Parameter. Either way ``bias`` is a Parameter and gets a gradient, as in Liger.
        init_fn: ``"ones"`` or ``"zeros"`` for the weight.
    """

    def __init__(self, hidden_size, eps=1e-6, bias=False, init_fn="ones"):
        super().__init__()
        if init_fn not in ("ones", "zeros"):
            raise ValueError(f"init_fn must be either 'ones' or 'zeros', got {init_fn!r}")
        self.hidden_size = hidden_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size) if init_fn == "ones" else torch.zeros(hidden_size))
        self.bias = nn.Parameter(torch.randn(hidden_size) if bias else torch.zeros(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        return layer_norm(hidden_states, self.weight, self.bias, self.variance_epsilon)

    def extra_repr(self):
        return f"{self.hidden_size}, eps={self.eps}"
