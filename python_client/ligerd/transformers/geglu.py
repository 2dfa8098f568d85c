"""``LigerGEGLUMLP`` with Liger-Kernel's constructor and semantics, on ligerd's kernels."""

from __future__ import annotations

import torch.nn as nn

from ligerd.ops.glu import geglu


class LigerGEGLUMLP(nn.Module):
    """Gemma-style MLP: ``down_proj(gelu_tanh(gate_proj(x)) * up_proj(x))``, Linear layers
    without bias. Always the tanh approximation (``gelu_pytorch_tanh``), whatever
    ``config.hidden_act`` says, as in Liger-Kernel. The backward writes the gate/up gradients
    into the saved activations."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(geglu(self.gate_proj(x), self.up_proj(x)))
