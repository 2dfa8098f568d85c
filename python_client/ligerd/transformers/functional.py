"""Functional forms, named and shaped like ``liger_kernel.transformers.functional``."""

from __future__ import annotations

from ligerd.ops.fused_add_rms_norm import fused_add_rms_norm as _fused_add_rms_norm
from ligerd.ops.glu import geglu as _geglu
from ligerd.ops.glu import swiglu as _swiglu
from ligerd.ops.layer_norm import layer_norm as _layer_norm
from ligerd.ops.rms_norm import rms_norm as _rms_norm


def liger_rms_norm(X, W, eps, offset: float = 0.0, casting_mode: str = "llama", in_place: bool = True):
    """``y = X / rms(X) * (offset + W)`` over the last dim; W may be None. See LigerRMSNorm."""
    return _rms_norm(X, W, eps, offset=offset, casting_mode=casting_mode, in_place=in_place)


def liger_swiglu(a, b):
    """``silu(a) * b``; the backward writes da, db into a and b (eager mode). See ligerd.ops.glu."""
    return _swiglu(a, b)


def liger_geglu(a, b):
    """``gelu_tanh(a) * b``; the backward writes da, db into a and b (eager mode)."""
    return _geglu(a, b)


def liger_layer_norm(X, W, B, eps):
    """``(X - mean) / sqrt(var + eps) * W + B`` over the last dim. See LigerLayerNorm."""
    return _layer_norm(X, W, B, eps)


def liger_fused_add_rms_norm(X, R, W, eps, offset: float = 0.0, casting_mode: str = "llama",
                             in_place: bool = True):
    """``(rmsnorm(X + R), X + R)``; the backward takes (dY, dS). See LigerFusedAddRMSNorm.
    (in_place defaults to True here and False in the module, as in Liger.)"""
    return _fused_add_rms_norm(X, R, W, eps, offset=offset, casting_mode=casting_mode,
                               in_place=in_place)


__all__ = ["liger_fused_add_rms_norm", "liger_geglu", "liger_layer_norm", "liger_rms_norm",
           "liger_swiglu"]
