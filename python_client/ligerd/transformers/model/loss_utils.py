"""Loss helpers the patched ``*ForCausalLM`` forwards call, as Liger-Kernel's
``liger_kernel/transformers/model/loss_utils.py``.

``LigerForCausalLMLoss`` is the training loss of a causal LM computed from the last hidden states
and the lm_head weight by ligerd's fused linear cross-entropy: the [tokens, vocab] logits are never
materialised. It follows transformers' ``ForCausalLMLoss`` exactly:
- labels are shifted (position t predicts token t+1; the last position gets ``ignore_index``)
  unless ``shift_labels`` (already shifted, e.g. under sequence parallelism) are given;
- with ``num_items_in_batch`` (transformers' gradient accumulation: the number of label tokens in
  the whole accumulated batch) the per-micro-batch loss is ``sum / num_items_in_batch``, so the
  accumulated gradient equals the full batch's; without it the loss is the mean over the
  non-ignored tokens;
- ``final_logit_softcapping`` (Gemma-2/3) applies ``c * tanh(logits / c)`` inside the kernel.

The fused op, ``ligerd.transformers.functional.liger_fused_linear_cross_entropy``, is looked up
at call time (it is provided by its own module of ligerd).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn as nn

# Keyword arguments of liger_fused_linear_cross_entropy that a caller may pass through the model's
# forward (Liger's ``**kwargs``); anything else in the model kwargs (attention flags, ...) is not
# the loss's business and is not forwarded.
FLCE_OPTIONS = ("ce_weight", "lse_square_scale", "label_smoothing", "return_z_loss", "accum_dtype",
                "use_token_scaling", "return_token_accuracy", "return_predicted_tokens")


class LigerLossOutput(NamedTuple):
    """What ``LigerForCausalLMLoss`` returns when an extra output was requested."""
    loss: torch.Tensor
    z_loss: Optional[torch.Tensor] = None
    token_accuracy: Optional[torch.Tensor] = None
    predicted_tokens: Optional[torch.Tensor] = None


def _flce():
    from ligerd.transformers import functional
    fn = getattr(functional, "liger_fused_linear_cross_entropy", None)
    if fn is None:
        raise ImportError(
            "ligerd: the fused linear cross-entropy forward needs "
            "ligerd.transformers.functional.liger_fused_linear_cross_entropy, which this ligerd "
            "build does not provide; patch with fused_linear_cross_entropy=False")
    return fn


def _unpack(result):
    """(loss, z_loss, token_accuracy, predicted_tokens) of the fused op's result: a tensor (the
    loss) or a CrossEntropyOutput-like object / tuple in that order."""
    if isinstance(result, torch.Tensor):
        return result, None, None, None
    if hasattr(result, "loss"):
        return (result.loss, getattr(result, "z_loss", None), getattr(result, "token_accuracy", None),
                getattr(result, "predicted_tokens", None))
    items = tuple(result) + (None,) * 4
    return items[:4]


def fixed_fused_linear_cross_entropy(hidden_states, lm_head_weight, target, num_items_in_batch=None,
                                     ignore_index=-100, final_logit_softcapping=None,
                                     lm_head_bias=None, **kwargs):
    """The fused loss over flattened [N, H] hidden states and [N] targets, with transformers'
    ``num_items_in_batch`` semantics (sum / num_items_in_batch) or the mean."""
    options = {k: kwargs[k] for k in FLCE_OPTIONS if k in kwargs and kwargs[k] is not None}
    extras = any(options.get(k) for k in ("ce_weight", "return_z_loss", "return_token_accuracy",
                                          "return_predicted_tokens"))
    if num_items_in_batch is not None and not extras:
        # sum / num_items_in_batch as a mean over num_items_in_batch: the 1/n is applied to d
        # logits in fp32 inside the kernel, before its rounding, as transformers' loss does.
        result = _flce()(hidden_states, lm_head_weight, target, bias=lm_head_bias,
                         ignore_index=ignore_index, reduction="mean",
                         softcap=final_logit_softcapping, _mean_divisor=num_items_in_batch, **options)
        return _unpack(result)[0]
    reduction = "sum" if num_items_in_batch is not None else "mean"
    result = _flce()(hidden_states, lm_head_weight, target, bias=lm_head_bias,
                     ignore_index=ignore_index, reduction=reduction,
                     softcap=final_logit_softcapping, **options)
    loss, z_loss, acc, pred = _unpack(result)
    if reduction == "sum":
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    if any(options.get(k) for k in ("return_z_loss", "return_token_accuracy", "return_predicted_tokens")):
        return LigerLossOutput(loss, z_loss, acc, pred)
    return loss


def LigerForCausalLMLoss(hidden_states, lm_head_weight, labels, hidden_size: int,
                         num_items_in_batch=None, ignore_index: int = -100, shift_labels=None,
                         final_logit_softcapping=None, **kwargs):
    """Causal-LM loss from hidden states [..., H] and the lm_head weight [V, H], never forming the
    logits. Returns the loss (a 0-d tensor), or a ``LigerLossOutput`` when one of
    ``return_z_loss`` / ``return_token_accuracy`` / ``return_predicted_tokens`` is set."""
    if shift_labels is None:
        if labels is None:
            raise ValueError("LigerForCausalLMLoss: labels and shift_labels are both None")
        # Shift so that tokens < n predict n: pad one ignore_index at the end, drop the first.
        labels = nn.functional.pad(labels, (0, 1), value=ignore_index)
        shift_labels = labels[..., 1:]
    hidden_states = hidden_states.reshape(-1, hidden_size)
    shift_labels = shift_labels.reshape(-1).to(hidden_states.device)
    return fixed_fused_linear_cross_entropy(hidden_states, lm_head_weight, shift_labels,
                                            num_items_in_batch, ignore_index,
                                            final_logit_softcapping, **kwargs)


def liger_fixed_cross_entropy(source, target, num_items_in_batch=None, ignore_index: int = -100,
                              **kwargs):
    """transformers' ``loss_utils.fixed_cross_entropy`` on ligerd's cross-entropy (installed by
    ``cross_entropy=True``): every transformers causal-LM loss goes through it."""
    from ligerd import transformers as lt
    ce = getattr(lt, "liger_cross_entropy", None)
    if ce is None:
        raise ImportError("ligerd: cross_entropy=True needs ligerd.transformers.liger_cross_entropy, "
                          "which this ligerd build does not provide")
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = ce(source, target, ignore_index=ignore_index, reduction=reduction)
    if reduction == "sum":
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss


__all__ = ["LigerForCausalLMLoss", "LigerLossOutput", "fixed_fused_linear_cross_entropy",
           "liger_fixed_cross_entropy"]
