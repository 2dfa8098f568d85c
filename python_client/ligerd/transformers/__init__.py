"""Liger-compatible modules and functions: ``from ligerd.transformers import LigerRMSNorm``
is a drop-in for ``from liger_kernel.transformers import LigerRMSNorm``."""

from ligerd.transformers.functional import liger_rms_norm
from ligerd.transformers.rms_norm import (LigerRMSNorm, LigerRMSNormForGemma,
                                          LigerRMSNormForGemma2, LigerRMSNormForGemma3,
                                          LigerRMSNormForGlm4, LigerRMSNormForOlmo2)

__all__ = [
    "LigerRMSNorm",
    "LigerRMSNormForGemma",
    "LigerRMSNormForGemma2",
    "LigerRMSNormForGemma3",
    "LigerRMSNormForOlmo2",
    "LigerRMSNormForGlm4",
    "liger_rms_norm",
]
