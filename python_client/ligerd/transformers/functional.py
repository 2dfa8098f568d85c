"""Functional forms, named and shaped like ``liger_kernel.transformers.functional``."""

from __future__ import annotations

from ligerd.ops.rms_norm import rms_norm as _rms_norm


def liger_rms_norm(X, W, eps, offset: float = 0.0, casting_mode: str = "llama", in_place: bool = True):
    """``y = X / rms(X) * (offset + W)`` over the last dim; W may be None. See LigerRMSNorm."""
    return _rms_norm(X, W, eps, offset=offset, casting_mode=casting_mode, in_place=in_place)


__all__ = ["liger_rms_norm"]
