"""Functional forms, named and shaped like ``liger_kernel.transformers.functional``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ligerd.ops.cross_entropy import cross_entropy as _cross_entropy
from ligerd.ops.fused_linear_cross_entropy import fused_linear_cross_entropy as _flce
from ligerd.ops.fused_add_rms_norm import fused_add_rms_norm as _fused_add_rms_norm
from ligerd.ops.glu import geglu as _geglu
from ligerd.ops.glu import swiglu as _swiglu
from ligerd.ops.layer_norm import layer_norm as _layer_norm
from ligerd.ops.rms_norm import rms_norm as _rms_norm
from ligerd.ops.rope import rotary_pos_emb as _rotary_pos_emb
from ligerd.ops.rope_mrope import LigerQwen2VLMRopeFunction
from ligerd.ops.rope_mrope import multimodal_rotary_pos_emb as _multimodal_rotary_pos_emb
from ligerd.ops.softmax import softmax as _softmax
from ligerd.transformers.relu_squared import LigerReLUSquaredFunction
from ligerd.ops.relu_squared import relu_squared as _relu_squared


def liger_rms_norm(X, W, eps, offset: float = 0.0, casting_mode: str = "llama", in_place: bool = True):
    """``y = X / rms(X) * (offset + W)`` over the last dim; W may be None. See LigerRMSNorm."""
    return _rms_norm(X, W, eps, offset=offset, casting_mode=casting_mode, in_place=in_place)


def liger_softmax(x):
    """Softmax over the last dim, in fp32, returned in x's dtype. See LigerSoftmax."""
    return _softmax(x)


def liger_relu_squared(x):
    """``relu(x)^2``, in fp32, returned in x's dtype. See LigerReLUSquared."""
    return _relu_squared(x)


def liger_swiglu(a, b):
    """``silu(a) * b``; the backward writes da, db into a and b (eager mode). See ligerd.ops.glu."""
    return _swiglu(a, b)


def liger_geglu(a, b):
    """``gelu_tanh(a) * b``; the backward writes da, db into a and b (eager mode)."""
    return _geglu(a, b)


def liger_rope(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    """HF rotate_half RoPE of q and k (in place where legal); see liger_rotary_pos_emb."""
    return _rotary_pos_emb(q, k, cos, sin)


def liger_qwen2vl_mrope(q, k, cos, sin, mrope_section, unsqueeze_dim=1):
    """Qwen2-VL's multimodal RoPE (cos/sin ``(3, bsz, seq, hd)``, per mrope section); see
    ligerd.transformers.qwen2vl_mrope.liger_multimodal_rotary_pos_emb."""
    return _multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section, unsqueeze_dim)


@dataclass
class CrossEntropyOutput:
    """What the cross-entropy losses return when any ``return_*`` flag is set (Liger's type)."""
    loss: torch.Tensor
    z_loss: Optional[torch.Tensor] = None
    token_accuracy: Optional[torch.Tensor] = None
    predicted_tokens: Optional[torch.Tensor] = None


def check_loss_options(module: str, label_smoothing: float, reduction: str, softcap) -> None:
    """The constructor checks both loss modules share (Liger asserts them; a ValueError naming
    the module survives ``python -O``)."""
    from ligerd._errors import OpInputError
    if not 0.0 <= label_smoothing <= 1.0:
        raise OpInputError(f"{module}: label_smoothing must be in [0, 1], got {label_smoothing}", op=module)
    if reduction not in ("mean", "sum", "none"):
        raise OpInputError(f"{module}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}", op=module)
    if softcap is not None and not softcap > 0:
        raise OpInputError(f"{module}: softcap must be > 0 or None, got {softcap}", op=module)


def _ce_result(out, return_z_loss, return_token_accuracy, return_predicted_tokens):
    loss, z_loss, token_accuracy, predicted_tokens = out
    if not return_z_loss and not return_token_accuracy and not return_predicted_tokens:
        return loss
    return CrossEntropyOutput(loss=loss, z_loss=z_loss, token_accuracy=token_accuracy,
                              predicted_tokens=predicted_tokens)


def liger_cross_entropy(input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                        reduction: str = "mean", label_smoothing: float = 0.0, lse_square_scale: float = 0.0,
                        softcap: Optional[float] = None, return_z_loss: bool = False,
                        return_token_accuracy: bool = False, return_predicted_tokens: bool = False):
    """Mirrors ``F.cross_entropy`` (plus Liger's z-loss, softcap and metrics). The gradient is
    computed in the forward and written over ``input`` (eager mode): do not reuse the logits.
    ``size_average`` / ``reduce`` are the legacy torch arguments: when given they set the
    reduction as torch does (Liger ignores them). ``input``: [N, C] or [C]; for [N, C, d...]
    the class dim is moved last (a copy; the in-place trick then saves nothing)."""
    if size_average is not None or reduce is not None:
        from torch.nn import _reduction
        reduction = _reduction.legacy_get_string(size_average, reduce)
    unbatched = isinstance(input, torch.Tensor) and input.dim() == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.reshape(1)
    elif isinstance(input, torch.Tensor) and input.dim() > 2:
        input = input.movedim(1, -1).reshape(-1, input.shape[1])
        target = target.reshape(-1)
    out = _cross_entropy(input, target, weight, ignore_index, lse_square_scale, label_smoothing, reduction,
                         softcap, return_z_loss, return_token_accuracy, return_predicted_tokens)
    if unbatched and reduction == "none":
        out = tuple(o.squeeze(0) if isinstance(o, torch.Tensor) else o for o in out)
    return _ce_result(out, return_z_loss, return_token_accuracy, return_predicted_tokens)


def liger_fused_linear_cross_entropy(input, weight, target, bias=None, ce_weight=None, ignore_index: int = -100,
                                     lse_square_scale: float = 0.0, label_smoothing: float = 0.0,
                                     reduction: str = "mean", softcap: Optional[float] = None,
                                     return_z_loss: bool = False, accum_dtype=None,
                                     use_token_scaling: bool = False, return_token_accuracy: bool = False,
                                     return_predicted_tokens: bool = False, *, _mean_divisor=None):
    """Cross-entropy of ``input @ weight.T (+ bias)`` without materialising the logits (chunks
    over tokens; the GEMMs are ligerd's cuBLASLt ones, where the op's other kernels run). See
    ligerd.ops.fused_linear_cross_entropy (``_mean_divisor``, not in Liger's signature: its
    ``mean_divisor``, for transformers' num_items_in_batch)."""
    out = _flce(input, weight, target, bias, ce_weight, ignore_index, lse_square_scale, label_smoothing,
                reduction, softcap, return_z_loss, accum_dtype, use_token_scaling, return_token_accuracy,
                return_predicted_tokens, mean_divisor=_mean_divisor)
    return _ce_result(out, return_z_loss, return_token_accuracy, return_predicted_tokens)


def liger_layer_norm(X, W, B, eps):
    """``(X - mean) / sqrt(var + eps) * W + B`` over the last dim. See LigerLayerNorm."""
    return _layer_norm(X, W, B, eps)


def liger_fused_add_rms_norm(X, R, W, eps, offset: float = 0.0, casting_mode: str = "llama",
                             in_place: bool = True):
    """``(rmsnorm(X + R), X + R)``; the backward takes (dY, dS). See LigerFusedAddRMSNorm.
    (in_place defaults to True here and False in the module, as in Liger.)"""
    return _fused_add_rms_norm(X, R, W, eps, offset=offset, casting_mode=casting_mode,
                               in_place=in_place)


__all__ = ["CrossEntropyOutput", "liger_cross_entropy", "liger_fused_add_rms_norm",
           "liger_fused_linear_cross_entropy", "liger_geglu", "liger_layer_norm", "liger_rms_norm",
           "liger_rope", "liger_swiglu"]
__all__ += ["liger_softmax"]
__all__ += ["liger_relu_squared", "LigerReLUSquaredFunction"]
__all__ += ["liger_qwen2vl_mrope", "LigerQwen2VLMRopeFunction"]

# The distillation losses' functional forms live beside their modules (no import cycle: those
# modules import ligerd.ops only).
from ligerd.transformers.jsd import liger_jsd  # noqa: E402
from ligerd.transformers.kl_div import liger_kl_div  # noqa: E402
from ligerd.transformers.tvd import liger_tvd  # noqa: E402

__all__ += ["liger_jsd", "liger_kl_div", "liger_tvd"]
from ligerd.transformers.fused_linear_jsd import liger_fused_linear_jsd  # noqa: E402
from ligerd.transformers.fused_linear_kl_div import liger_fused_linear_kl_div  # noqa: E402

__all__ += ["liger_fused_linear_jsd", "liger_fused_linear_kl_div"]
