"""Liger-compatible modules and functions: ``from ligerd.transformers import LigerRMSNorm``
is a drop-in for ``from liger_kernel.transformers import LigerRMSNorm``."""

from ligerd.transformers.functional import (liger_fused_add_rms_norm, liger_geglu,
                                            liger_layer_norm, liger_rms_norm, liger_swiglu)
from ligerd.transformers.fused_add_rms_norm import LigerFusedAddRMSNorm
from ligerd.transformers.geglu import LigerGEGLUMLP
from ligerd.transformers.layer_norm import LigerLayerNorm
from ligerd.transformers.rms_norm import (LigerRMSNorm, LigerRMSNormForGemma,
                                          LigerRMSNormForGemma2, LigerRMSNormForGemma3,
                                          LigerRMSNormForGlm4, LigerRMSNormForOlmo2)
from ligerd.transformers.swiglu import LigerSwiGLUMLP

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
    "liger_layer_norm",
    "liger_fused_add_rms_norm",
]
