"""Liger-compatible modules and functions: ``from ligerd.transformers import LigerRMSNorm``
is a drop-in for ``from liger_kernel.transformers import LigerRMSNorm``."""

from ligerd.transformers.cross_entropy import LigerCrossEntropyLoss
from ligerd.transformers.functional import (CrossEntropyOutput, liger_cross_entropy,
                                            liger_fused_add_rms_norm,
                                            liger_fused_linear_cross_entropy, liger_geglu,
                                            liger_layer_norm, liger_rms_norm, liger_rope,
                                            liger_swiglu)
from ligerd.transformers.fused_add_rms_norm import LigerFusedAddRMSNorm
from ligerd.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
from ligerd.transformers.geglu import LigerGEGLUMLP
from ligerd.transformers.layer_norm import LigerLayerNorm
from ligerd.transformers.mlp_variants import (LigerExperts, LigerPhi3SwiGLUMLP,
                                              LigerQwen3MoeSwiGLUMLP)
from ligerd.transformers.rms_norm import (LigerRMSNorm, LigerRMSNormForGemma,
                                          LigerRMSNormForGemma2, LigerRMSNormForGemma3,
                                          LigerRMSNormForGlm4, LigerRMSNormForOlmo2)
from ligerd.transformers.rope import LigerRopeFunction, liger_rotary_pos_emb
from ligerd.transformers.rope_interleaved import (liger_llama4_text_rotary_pos_emb,
                                                  liger_llama4_vision_rotary_pos_emb)
from ligerd.transformers.functional import liger_softmax
from ligerd.transformers.softmax import LigerSoftmax
from ligerd.transformers.functional import liger_relu_squared
from ligerd.transformers.relu_squared import LigerReLUSquared
from ligerd.transformers.swiglu import LigerSwiGLUMLP
from ligerd.transformers.jsd import LigerJSD, liger_jsd
from ligerd.transformers.kl_div import LigerKLDIVLoss, liger_kl_div
from ligerd.transformers.tvd import LigerTVDLoss, liger_tvd

__all__ = [
    "LigerRMSNorm",
    "LigerRMSNormForGemma",
    "LigerRMSNormForGemma2",
    "LigerRMSNormForGemma3",
    "LigerRMSNormForOlmo2",
    "LigerRMSNormForGlm4",
    "LigerSwiGLUMLP",
    "LigerGEGLUMLP",
    "LigerLayerNorm",
    "LigerFusedAddRMSNorm",
    "liger_rms_norm",
    "liger_swiglu",
    "liger_geglu",
    "liger_rotary_pos_emb",
    "liger_llama4_text_rotary_pos_emb",
    "liger_llama4_vision_rotary_pos_emb",
    "liger_rope",
    "LigerRopeFunction",
    "LigerPhi3SwiGLUMLP",
    "LigerQwen3MoeSwiGLUMLP",
    "LigerExperts",
    "LigerCrossEntropyLoss",
    "LigerFusedLinearCrossEntropyLoss",
    "CrossEntropyOutput",
    "liger_cross_entropy",
    "liger_fused_linear_cross_entropy",
    "liger_layer_norm",
    "liger_fused_add_rms_norm",
    "LigerSoftmax",
    "liger_softmax",
]
__all__ += ["LigerKLDIVLoss", "liger_kl_div", "LigerJSD", "liger_jsd", "LigerTVDLoss", "liger_tvd"]
__all__ += ["LigerReLUSquared", "liger_relu_squared"]
from ligerd.transformers.fused_linear_jsd import LigerFusedLinearJSD, liger_fused_linear_jsd  # noqa: E402
from ligerd.transformers.fused_linear_kl_div import (LigerFusedLinearKLDivLoss,  # noqa: E402
                                                     liger_fused_linear_kl_div)
__all__ += ["LigerFusedLinearJSD", "liger_fused_linear_jsd", "LigerFusedLinearKLDivLoss",
            "liger_fused_linear_kl_div"]

# Hugging Face model patching (ligerd/transformers/monkey_patch.py, auto_model.py). Loaded on first
# use, as in Liger-Kernel, so that importing ligerd.transformers does not import transformers.
_MONKEY_PATCH_NAMES = (
    "MODEL_TYPE_TO_APPLY_LIGER_FN", "_apply_liger_kernel", "_apply_liger_kernel_to_instance",
    "revert_liger_kernel_patches",
    "apply_liger_kernel_to_llama", "apply_liger_kernel_to_mistral", "apply_liger_kernel_to_mixtral",
    "apply_liger_kernel_to_gemma", "apply_liger_kernel_to_gemma2",
    "apply_liger_kernel_to_gemma3_text", "apply_liger_kernel_to_qwen2",
    "apply_liger_kernel_to_qwen3", "apply_liger_kernel_to_qwen3_moe", "apply_liger_kernel_to_phi3",
    "apply_liger_kernel_to_granite", "apply_liger_kernel_to_olmo2",
)
# The table-driven model types (model_specs.py is data: it does not import transformers).
from ligerd.transformers.model_specs import SPEC_BY_NAME as _SPECS  # noqa: E402
_MONKEY_PATCH_NAMES += tuple(f"apply_liger_kernel_to_{n}" for n in _SPECS) + (
    "unavailable_model_types",)
__all__ += list(_MONKEY_PATCH_NAMES) + ["AutoLigerKernelForCausalLM"]


def __getattr__(name):
    # apply_liger_kernel_to_<type> of every model type (monkey_patch.py; the table-driven ones are
    # listed in model_specs.py), MODEL_TYPE_TO_APPLY_LIGER_FN and the rest of _MONKEY_PATCH_NAMES.
    if name in _MONKEY_PATCH_NAMES or name.startswith("apply_liger_kernel_to_"):
        from ligerd.transformers import monkey_patch
        return getattr(monkey_patch, name)
    if name == "AutoLigerKernelForCausalLM":
        from ligerd.transformers.auto_model import AutoLigerKernelForCausalLM
        return AutoLigerKernelForCausalLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
