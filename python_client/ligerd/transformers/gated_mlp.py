"""The gated MLP shape that SwiGLU and GeGLU models share: ``down(act(gate(x)) * up(x))`` with
bias-free Linear layers. Subclasses choose the fused activation-times-up op."""

from __future__ import annotations

import torch.nn as nn


class GatedMLP(nn.Module):
    # The fused op: (gate activations, up activations) -> act(gate) * up. Set by subclasses.
    glu = None

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(type(self).glu(self.gate_proj(x), self.up_proj(x)))
