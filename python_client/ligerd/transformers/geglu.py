"""``LigerGEGLUMLP`` with Liger-Kernel's constructor and semantics, on ligerd's kernels."""

from __future__ import annotations

from ligerd.ops.glu import geglu
from ligerd.transformers.gated_mlp import GatedMLP


class LigerGEGLUMLP(GatedMLP):
    """Gemma-style MLP: ``down_proj(gelu_tanh(gate_proj(x)) * up_proj(x))``, Linear layers
    without bias. Always the tanh approximation (``gelu_pytorch_tanh``), whatever
    ``config.hidden_act`` says, as in Liger-Kernel. The backward writes the gate/up gradients
    into the saved activations."""

    glu = staticmethod(geglu)
