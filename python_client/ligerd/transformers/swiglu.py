"""``LigerSwiGLUMLP`` with Liger-Kernel's constructor and semantics, on ligerd's kernels."""

from __future__ import annotations

from ligerd.ops.glu import swiglu
from ligerd.transformers.gated_mlp import GatedMLP


class LigerSwiGLUMLP(GatedMLP):
    """LLaMA-style MLP: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, Linear layers without
    bias. ``config`` needs ``hidden_size``, ``intermediate_size`` and ``hidden_act`` in
    {"silu", "swish"}. The backward writes the gate/up gradients into the saved activations."""

    glu = staticmethod(swiglu)

    def __init__(self, config):
        if config.hidden_act not in ("silu", "swish"):
            raise ValueError(f"Activation function {config.hidden_act} not supported.")
        super().__init__(config)
