"""Functional forms, named and shaped like ``liger_kernel.transformers.functional``."""

from __future__ import annotations

from ligerd.ops.glu import geglu as _geglu
from ligerd.ops.glu import swiglu as _swiglu
from ligerd.ops.rms_norm import rms_norm as _rms_norm
from ligerd.ops.rope import rotary_pos_emb as _rotary_pos_emb


def liger_rms_norm(X, W, eps, offset: float = 0.0, casting_mode: str = "llama", in_place: bool = True):
    """``y = X / rms(X) * (offset + W)`` over the last dim; W may be None. See LigerRMSNorm."""
    return _rms_norm(X, W, eps, offset=offset, casting_mode=casting_mode, in_place=in_place)


def liger_swiglu(a, b):
    """``silu(a) * b``; the backward writes da, db into a and b (eager mode). See ligerd.ops.glu."""
    return _swiglu(a, b)


def liger_geglu(a, b):
    """``gelu_tanh(a) * b``; the backward writes da, db into a and b (eager mode)."""
    return _geglu(a, b)


def liger_rope(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    """HF rotate_half RoPE of q and k (in place where legal); see liger_rotary_pos_emb."""
    return _rotary_pos_emb(q, k, cos, sin)


__all__ = ["liger_geglu", "liger_rms_norm", "liger_rope", "liger_swiglu"]
