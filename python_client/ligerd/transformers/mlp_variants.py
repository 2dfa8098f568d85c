"""The per-model SwiGLU layouts that the model patches install, named as in Liger-Kernel:

- ``LigerPhi3SwiGLUMLP(config)``: Phi-3's fused ``gate_up_proj`` (one Linear to 2*I, gate first).
- ``LigerQwen3MoeSwiGLUMLP(config, intermediate_size=None)``: Qwen3-MoE's dense MLP (its
  ``mlp_only_layers``), whose width may differ from ``config.intermediate_size``.
- ``LigerExperts(config)``: transformers 5.x's stacked-expert MoE (``MixtralExperts``,
  ``Qwen3MoeExperts``): parameters ``gate_up_proj [E, 2*I, H]`` (gate rows first) and
  ``down_proj [E, H, I]``, ``forward(hidden_states [T, H], top_k_index [T, K],
  top_k_weights [T, K])``.

About ``LigerExperts``: Liger-Kernel's replaces the whole expert computation with a fused grouped
GEMM; ligerd has no grouped-GEMM kernel, so here the two expert GEMMs stay transformers' own
(whichever ``config._experts_implementation`` selects: ``grouped_mm``, ``batched_mm`` or the
``eager`` per-expert loop) and ligerd's SwiGLU kernel replaces the activation between them
(``silu(gate) * up`` in one pass, its backward writing into the saved buffers where it can).
Transformers 5.x routes that activation through the experts' ``_apply_gate`` hook, so this is the
same hook the library exposes for it; the parameter layout, state-dict keys and initialisation are
unchanged. ``llama4_experts_forward``: Llama-4's ``Llama4TextExperts`` (transposed ``gate_up_proj [E, H, 2I]``,
``down_proj [E, I, H]``, tokens already repeated per expert) keeps its two ``torch.bmm``s and runs
ligerd's SwiGLU for ``up * silu(gate)`` between them; it has no ``_apply_gate`` hook, so its forward
is replaced (bound onto built modules, or run by spec_patching's subclass). ``gpt_oss_experts_apply_gate`` / ``clamped_experts_apply_gate``: GPT-OSS's ``GptOssExperts``
(interleaved gate/up, biases, ``swiglu_alpha`` / ``swiglu_limit``) and DeepSeek-V4's
``DeepseekV4Experts`` (clamped halves) keep their forward (transformers' GEMM implementations or
their eager loop, biases included) and get ligerd's clamped-GLU op (ligerd.ops.clamped_glu) as
their ``_apply_gate``, which every one of those paths calls. ``geglu_experts_apply_gate``:
Gemma-4's ``Gemma4TextExperts`` (Mixtral's layout, ``gelu_pytorch_tanh(gate) * up``) gets ligerd's
GeGLU as its ``_apply_gate`` and ``experts_forward`` as its forward (its own eager loop calls
``act_fn`` directly, not the hook; transformers' GEMM implementations call the hook). Transformers 4.x's per-expert ``MixtralBlockSparseTop2MLP`` modules no longer exist in
5.x, so there is no ``LigerBlockSparseTop2MLP`` here.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ligerd.ops.clamped_glu import clamped_swiglu, gpt_oss_glu
from ligerd.ops.glu import geglu, swiglu


def _check_silu(config) -> None:
    act = getattr(config, "hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise ValueError(f"Activation function {act} not supported.")


class LigerPhi3SwiGLUMLP(nn.Module):
    """Phi-3 MLP: ``down_proj(silu(gate) * up)`` with ``gate, up = gate_up_proj(x).chunk(2, -1)``.
    The two halves are strided views of one buffer; ligerd's SwiGLU reads them in place."""

    def __init__(self, config):
        super().__init__()
        _check_silu(config)
        self.config = config
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = nn.Linear(self.hidden_size, 2 * self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=False)

    def forward(self, x):
        return phi3_swiglu_forward(self, x)


def phi3_swiglu_forward(self, x):
    """Forward of a fused-gate_up MLP (also bound onto built ``Phi3MLP`` instances)."""
    gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
    return self.down_proj(swiglu(gate, up))


class LigerQwen3MoeSwiGLUMLP(nn.Module):
    """Qwen3-MoE's dense MLP: as ``LigerSwiGLUMLP`` with an optional width override."""

    def __init__(self, config, intermediate_size=None):
        super().__init__()
        _check_silu(config)
        self.config = config
        self.hidden_size = config.hidden_size
        self.intermediate_size = (config.intermediate_size if intermediate_size is None
                                  else intermediate_size)
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=False)

    def forward(self, x):
        return swiglu_mlp_forward(self, x)


def swiglu_mlp_forward(self, x):
    """Forward of a gate/up/down MLP with SwiGLU (also bound onto built ``LlamaMLP`` & co)."""
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def geglu_mlp_forward(self, x):
    """Forward of a gate/up/down MLP with GeGLU (tanh GELU; bound onto built ``GemmaMLP`` & co)."""
    return self.down_proj(geglu(self.gate_proj(x), self.up_proj(x)))


class LigerExperts(nn.Module):
    """transformers 5.x stacked experts with ligerd's SwiGLU between the expert GEMMs (see the
    module docstring). Drop-in for ``MixtralExperts`` and ``Qwen3MoeExperts``: same parameters,
    same constructor argument (the model config), same forward signature."""

    # Read by transformers' experts implementations (transformers.integrations.moe).
    has_gate = True
    has_bias = False
    has_post_expert_norm = False
    is_transposed = False
    is_concatenated = True
    _is_expert_parallel = False

    def __init__(self, config, intermediate_size=None):
        super().__init__()
        _check_silu(config)
        self.config = config
        self.num_experts = getattr(config, "num_local_experts", None) or config.num_experts
        self.hidden_dim = config.hidden_size
        self.intermediate_dim = (intermediate_size or getattr(config, "moe_intermediate_size", None)
                                 or config.intermediate_size)
        self.gate_up_proj = nn.Parameter(
            torch.empty(self.num_experts, 2 * self.intermediate_dim, self.hidden_dim))
        self.down_proj = nn.Parameter(
            torch.empty(self.num_experts, self.hidden_dim, self.intermediate_dim))

    def _apply_gate(self, gate_up_out):
        return experts_apply_gate(self, gate_up_out)

    def forward(self, hidden_states, top_k_index, top_k_weights):
        return experts_forward(self, hidden_states, top_k_index, top_k_weights)


def experts_apply_gate(self, gate_up_out: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` of a [S, 2*I] gate/up projection (gate first), on ligerd's kernel."""
    gate, up = gate_up_out.chunk(2, dim=-1)
    return swiglu(gate, up)


def geglu_experts_apply_gate(self, gate_up_out: torch.Tensor) -> torch.Tensor:
    """``gelu_tanh(gate) * up`` of a [S, 2*I] gate/up projection (gate first), on ligerd's GeGLU
    kernel: Gemma-4's experts (``act_fn`` is transformers' ``gelu_pytorch_tanh``)."""
    gate, up = gate_up_out.chunk(2, dim=-1)
    return geglu(gate, up)


def experts_forward(self, hidden_states, top_k_index, top_k_weights):
    """Stacked-experts forward (also bound onto built ``MixtralExperts``/``Qwen3MoeExperts`` and
    ``Gemma4TextExperts``):
    transformers' GEMM implementation for ``config._experts_implementation`` (which calls
    ``self._apply_gate``), or the eager per-expert loop, as transformers' own, through
    ``self._apply_gate``."""
    impl = getattr(self.config, "_experts_implementation", None)
    if impl not in (None, "eager"):
        from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS
        fn = ALL_EXPERTS_FUNCTIONS.get_interface(impl, None)  # raises for an unknown name
        if fn is not None:
            return fn(self, hidden_states, top_k_index, top_k_weights)
    final = torch.zeros_like(hidden_states)
    with torch.no_grad():
        expert_mask = F.one_hot(top_k_index, num_classes=self.num_experts + 1).permute(2, 1, 0)
        expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
    for expert_idx in expert_hit:
        e = expert_idx[0]
        if e == self.num_experts:  # the padding slot one_hot was widened by
            continue
        top_k_pos, token_idx = torch.where(expert_mask[e])
        h = F.linear(hidden_states[token_idx], self.gate_up_proj[e])
        h = F.linear(self._apply_gate(h), self.down_proj[e])
        h = h * top_k_weights[token_idx, top_k_pos, None]
        final.index_add_(0, token_idx, h.to(final.dtype))
    return final


def llama4_experts_forward(self, hidden_states):
    """Llama-4's ``Llama4TextExperts.forward`` (bound onto built modules, or run by the spec's
    subclass) with ligerd's SwiGLU for ``up * silu(gate)``: the two batched GEMMs over the
    transposed weights ``gate_up_proj [E, H, 2I]`` (gate columns first) and ``down_proj [E, I, H]``
    stay torch's ``bmm``; ``hidden_states`` are the router-scaled tokens repeated per expert,
    ``[E * T, H]``, as transformers' Llama4TextMoe passes them."""
    hidden_states = hidden_states.view(self.gate_up_proj.shape[0], -1, self.hidden_size)
    gate_up = torch.bmm(hidden_states, self.gate_up_proj)
    gate, up = gate_up.chunk(2, dim=-1)  # strided [E, T, I] views: swiglu reads them in place
    next_states = torch.bmm(swiglu(gate, up), self.down_proj)
    return next_states.view(-1, self.hidden_size)


def gpt_oss_experts_apply_gate(self, gate_up: torch.Tensor) -> torch.Tensor:
    """transformers' ``GptOssExperts._apply_gate`` on ligerd's clamped-GLU op: gate/up
    interleaved in ``gate_up [S, 2I]`` (biases already added by the GEMM path),
    ``g = gate.clamp(max=limit)``, ``u = up.clamp(-limit, limit)``,
    ``(u + 1) * g * sigmoid(alpha * g)`` with the module's ``alpha`` and ``limit``."""
    return gpt_oss_glu(gate_up, self.alpha, self.limit)


def clamped_experts_apply_gate(self, gate_up: torch.Tensor) -> torch.Tensor:
    """transformers' ``DeepseekV4Experts._apply_gate`` (SiLU) on ligerd's clamped-GLU op:
    ``silu(gate.clamp(max=limit)) * up.clamp(-limit, limit)`` of the halves of ``gate_up``."""
    return clamped_swiglu(gate_up, self.limit)


__all__ = ["LigerPhi3SwiGLUMLP", "LigerQwen3MoeSwiGLUMLP", "LigerExperts"]
