"""One causal-LM forward for every supported family (transformers 5.x).

In transformers 5.x the ``*ForCausalLM.forward`` of llama, mistral, gemma, qwen2, qwen3, phi3 and
olmo2 are the same code; gemma2 and gemma3_text add the final logit soft-capping, granite divides
the logits by ``config.logits_scaling``, and mixtral and qwen3_moe add the router auxiliary loss.
So there are two forwards here (dense and MoE), made per family by ``make_causal_lm_forward`` /
``make_moe_causal_lm_forward`` with those differences as parameters; ``model/<family>.py`` holds
each family's ``lce_forward`` (Liger-Kernel's module layout).

Behaviour (as Liger-Kernel's ``lce_forward``):
- ``skip_logits`` (default: ``self.training and labels given``): the loss comes from the last
  hidden states and the lm_head weight through ``LigerForCausalLMLoss`` (fused linear
  cross-entropy); no logits are formed and ``logits`` in the output is None.
- otherwise (eval, no labels, or ``skip_logits=False``) the logits are computed exactly as
  transformers does (same ops, same order), and the loss, if labels are given, by
  ``self.loss_function``, as transformers does.
- ``num_items_in_batch``, ``shift_labels`` and ``ignore_index`` in the forward's kwargs reach the
  loss as in transformers; ``accum_dtype``, ``return_token_accuracy`` and
  ``return_predicted_tokens`` go to the fused op (the accuracy / tokens appear in the output).
- an lm_head that is not a plain ``nn.Linear`` (e.g. LoRA-wrapped) has no single weight the fused
  op could use: the logits path is taken (with a one-time warning) rather than silently dropping
  the adapter.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from transformers.modeling_outputs import CausalLMOutputWithPast, MoeCausalLMOutputWithPast
from transformers.utils.generic import can_return_tuple

from ligerd._errors import warn_once
from ligerd.transformers.model.loss_utils import FLCE_OPTIONS, LigerForCausalLMLoss, LigerLossOutput

try:  # transformers >= 5.2x
    from transformers.modeling_utils import slice_logits_to_keep as _slice_logits_to_keep
except ImportError:  # pragma: no cover - depends on the installed transformers
    _slice_logits_to_keep = None


@dataclass
class LigerCausalLMOutputWithPast(CausalLMOutputWithPast):
    token_accuracy: Optional[torch.Tensor] = None
    predicted_tokens: Optional[torch.Tensor] = None


@dataclass
class LigerMoeCausalLMOutputWithPast(MoeCausalLMOutputWithPast):
    token_accuracy: Optional[torch.Tensor] = None
    predicted_tokens: Optional[torch.Tensor] = None


def slice_to_keep(hidden_states, logits_to_keep):
    """The positions transformers computes logits for (``logits_to_keep``: 0 = all)."""
    if _slice_logits_to_keep is not None:
        return _slice_logits_to_keep(hidden_states, logits_to_keep)
    idx = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
    return hidden_states[:, idx, :]


def _plain_linear(module):
    """(weight, bias) of an lm_head the fused op can read directly, else None."""
    if type(module) is nn.Linear:
        return module.weight, module.bias
    return None


def _head_and_loss(self, hidden_states, labels, logits_to_keep, skip_logits, kwargs, *,
                   softcap: bool, logits_scaling: bool):
    """(loss, logits, token_accuracy, predicted_tokens) from the decoder's last hidden states.
    ``kwargs`` are the forward's extra kwargs, minus those that are only the loss's."""
    shift_labels = kwargs.pop("shift_labels", None)
    options = {k: kwargs.pop(k) for k in FLCE_OPTIONS if k in kwargs}
    has_labels = labels is not None or shift_labels is not None
    if skip_logits and not has_labels:
        raise ValueError("skip_logits is True, but labels and shift_labels are None")
    if skip_logits is None:
        skip_logits = self.training and has_labels
    hidden_states = slice_to_keep(hidden_states, logits_to_keep)
    cap = self.config.final_logit_softcapping if softcap else None
    scale = self.config.logits_scaling if logits_scaling else None

    head = _plain_linear(self.lm_head) if skip_logits else None
    if skip_logits and head is None:
        warn_once(f"lce-forward-head-{type(self.lm_head).__name__}",
                  f"ligerd: lm_head is a {type(self.lm_head).__name__}, not a plain nn.Linear; the "
                  f"fused linear cross-entropy cannot use its weight, so logits are computed",
                  stacklevel=4)
        skip_logits = False

    if skip_logits:
        weight, bias = head
        if scale is not None:  # logits / s == lm_head(h / s) for a bias-free head
            if bias is not None:
                bias = bias / scale
            hidden_states = hidden_states / scale
        result = LigerForCausalLMLoss(
            hidden_states=hidden_states, lm_head_weight=weight, labels=labels,
            shift_labels=shift_labels, hidden_size=self.config.hidden_size,
            final_logit_softcapping=cap, lm_head_bias=bias,
            num_items_in_batch=kwargs.get("num_items_in_batch"),
            ignore_index=kwargs.get("ignore_index", -100), **options)
        if isinstance(result, LigerLossOutput):
            return result.loss, None, result.token_accuracy, result.predicted_tokens
        return result, None, None, None

    logits = self.lm_head(hidden_states)
    if scale is not None:
        logits = logits / scale
    if cap is not None:
        logits = logits / cap
        logits = torch.tanh(logits)
        logits = logits * cap
    loss = None
    if has_labels:
        if shift_labels is not None:
            kwargs = dict(kwargs, shift_labels=shift_labels)
        loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size,
                                  **kwargs)
    return loss, logits, None, None


def make_causal_lm_forward(*, final_logit_softcapping: bool = False, logits_scaling: bool = False):
    """The ``lce_forward`` of a dense ``*ForCausalLM`` (see the module docstring)."""

    @can_return_tuple
    def lce_forward(self, input_ids=None, attention_mask=None, position_ids=None,
                    past_key_values=None, inputs_embeds=None, labels=None, use_cache=None,
                    logits_to_keep=0, skip_logits: Optional[bool] = None, **kwargs):
        loss_only = {k: kwargs.pop(k) for k in ("shift_labels",) + FLCE_OPTIONS if k in kwargs}
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, past_key_values=past_key_values,
                             inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        loss, logits, acc, pred = _head_and_loss(
            self, outputs.last_hidden_state, labels, logits_to_keep, skip_logits,
            {**kwargs, **loss_only}, softcap=final_logit_softcapping,
            logits_scaling=logits_scaling)
        return LigerCausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
            token_accuracy=acc, predicted_tokens=pred)

    return lce_forward


def make_moe_causal_lm_forward(modeling_module: str):
    """The ``lce_forward`` of a MoE ``*ForCausalLM`` whose modeling module (``modeling_module``)
    defines ``load_balancing_loss_func`` (mixtral, qwen3_moe)."""

    @can_return_tuple
    def lce_forward(self, input_ids=None, attention_mask=None, position_ids=None,
                    past_key_values=None, inputs_embeds=None, labels=None, use_cache=None,
                    output_router_logits=None, logits_to_keep=0,
                    skip_logits: Optional[bool] = None, **kwargs):
        if output_router_logits is None:
            output_router_logits = self.config.output_router_logits
        loss_only = {k: kwargs.pop(k) for k in ("shift_labels",) + FLCE_OPTIONS if k in kwargs}
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, past_key_values=past_key_values,
                             inputs_embeds=inputs_embeds, use_cache=use_cache,
                             output_router_logits=output_router_logits, **kwargs)
        loss, logits, acc, pred = _head_and_loss(
            self, outputs.last_hidden_state, labels, logits_to_keep, skip_logits,
            {**kwargs, **loss_only}, softcap=False, logits_scaling=False)
        aux_loss = None
        if output_router_logits:
            balance = importlib.import_module(modeling_module).load_balancing_loss_func
            aux_loss = balance(outputs.router_logits, self.num_experts, self.num_experts_per_tok,
                               attention_mask)
            if loss is not None:
                loss = loss + self.router_aux_loss_coef * aux_loss.to(loss.device)
        return LigerMoeCausalLMOutputWithPast(
            loss=loss, aux_loss=aux_loss, logits=logits, past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
            router_logits=outputs.router_logits, token_accuracy=acc, predicted_tokens=pred)

    return lce_forward
