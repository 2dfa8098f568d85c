"""Liger-compatible modules and functions: ``from ligerd.transformers import LigerRMSNorm``
is a drop-in for ``from liger_kernel.transformers import LigerRMSNorm``."""

from ligerd.transformers.cross_entropy import LigerCrossEntropyLoss
from ligerd.transformers.functional import (CrossEntropyOutput, liger_cross_entropy,
                                            liger_fused_linear_cross_entropy, liger_geglu,
                                            liger_rms_norm, liger_swiglu)
from ligerd.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
from ligerd.transformers.geglu import LigerGEGLUMLP
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
    "liger_rms_norm",
    "liger_swiglu",
    "liger_geglu",
    "LigerCrossEntropyLoss",
    "LigerFusedLinearCrossEntropyLoss",
    "CrossEntropyOutput",
    "liger_cross_entropy",
    "liger_fused_linear_cross_entropy",
]
