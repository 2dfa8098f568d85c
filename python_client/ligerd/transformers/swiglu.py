"""``LigerSwiGLUMLP`` with Liger-Kernel's constructor and semantics, on ligerd's kernels."""

from __future__ import annotations

import torch.nn as nn

from ligerd.ops.glu import swiglu


class LigerSwiGLUMLP(nn.Module):
    """LLaMA-style MLP: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, Linear layers without
    bias. ``config`` needs ``hidden_size``, ``intermediate_size`` and ``hidden_act`` in
    {"silu", "swish"}. The backward writes the gate/up gradients into the saved activations."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=False)
        if config.hidden_act not in ("silu", "swish"):
            raise ValueError(f"Activation function {config.hidden_act} not supported.")

    def forward(self, x):
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))
