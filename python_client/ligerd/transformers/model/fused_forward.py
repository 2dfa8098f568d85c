"""The fused-linear-loss forward for the ``*ForCausalLM`` / ``*ForConditionalGeneration`` classes of
the model types in ``ligerd.transformers.model_specs`` (the types added after the first twelve).

Those forwards differ from one another (image, video and audio inputs, router outputs, rope
deltas, cross-attention masks) and between the transformers releases ligerd supports (5.17 calls
the cache ``past_key_values`` where 5.25 calls it ``cache``, multimodal outputs renamed their image
fields, ...). So instead of restating each one, ``make_fused_forward`` wraps transformers' own
forward and replaces only its head and loss:

- on the fused path (``skip_logits``, by default ``self.training and labels given``), for the
  duration of the call ``self.lm_head`` is a module that records the last hidden states it is
  given and returns a [..., 3] probe (a broadcast view) instead of the logits, and
  ``self.loss_function`` returns 0. Everything else runs as transformers wrote it (the decoder, the
  ``logits_to_keep`` slicing, the router auxiliary loss that MoE forwards add to the loss).
  The causal-LM loss is then computed from the recorded hidden states and the lm_head weight by
  ``LigerForCausalLMLoss`` (ligerd's fused linear cross-entropy: no logits are formed), with
  labels, ``shift_labels``, ``num_items_in_batch`` and ``ignore_index`` as transformers' loss
  takes them, and added to what transformers' forward returned as its loss (0 plus any auxiliary
  loss). ``logits`` in the output is None.
- otherwise (eval, no labels, ``skip_logits=False``, or an lm_head that is not a plain
  ``nn.Linear``, e.g. LoRA-wrapped, which gets a one-time warning), transformers' forward runs
  unchanged.

What a model does to the logits after its lm_head has to be known to do it inside the fused
loss: ``head`` is a function of the model returning ``(multiplier, softcap)``: the logits are
``softcap * tanh(lm_head(h) * multiplier / softcap)`` (either may be None). The model specs name
it per class (Gemma-style final-logit soft-capping, Falcon-H1's ``lm_head_multiplier``,
Muse-Glimmer's ``output_multiplier`` and soft-capping). Because whether a forward applies it
changed between transformers releases, lm_head's stand-in returns three probe values per position
instead of nothing, and what the forward returns as ``logits`` for them says which transform it
applied (the spec's, or the same without the multiplier / with the config's soft-cap / none),
once per model (the answer depends on the class and config; under torch.compile before any eager
call the spec's is used); a forward doing anything else is a clear error. tests/python/test_model_types.py checks the fused
loss against transformers' own for every class.

Swapping ``lm_head`` for the call means two threads must not run the same model instance at once
on the fused path (they never do in a training loop).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from contextlib import contextmanager
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn

from ligerd._errors import warn_once
from ligerd.transformers.model.loss_utils import FLCE_OPTIONS, LigerForCausalLMLoss, LigerLossOutput

HeadFn = Callable[[nn.Module], Tuple[Optional[float], Optional[float]]]


def no_head_transform(model) -> Tuple[Optional[float], Optional[float]]:
    return None, None


# What lm_head returns on the fused path instead of the logits: three fp32 "logits" per position
# (a broadcast view, no memory), whose values after the forward's own post-processing tell which
# transform it applied (see _pick_transform). 50 is far enough into tanh's curve to tell a
# soft-cap of 30 (Gemma) from none.
_PROBE = (-2.0, 0.5, 50.0)


class _HeadCapture(nn.Module):
    """Stands in for lm_head on the fused path: keeps the hidden states, returns the probe."""

    def __init__(self):
        super().__init__()
        self.hidden = None

    def forward(self, hidden_states):
        self.hidden = hidden_states
        probe = torch.tensor(_PROBE, dtype=torch.float32, device=hidden_states.device)
        return probe.expand(hidden_states.shape[:-1] + (len(_PROBE),))


def _transform(v: float, mult, cap) -> float:
    import math
    if mult is not None:
        v = v * mult
    if cap is not None:
        v = cap * math.tanh(v / cap)
    return v


def _pick_transform(model, head: HeadFn, observed):
    """(multiplier, softcap) that the forward applied to the probe: the spec's first, then the
    same without the multiplier and/or with the text config's final_logit_softcapping or none,
    since which of those a forward applies changed between transformers releases (PaliGemma's
    soft-capping is in 5.25's forward, not in 5.17's). None if nothing matches."""
    mult, cap = head(model)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cfg_cap = getattr(cfg, "final_logit_softcapping", None)
    seen = []
    for c in (mult, cap), (None, cap), (mult, cfg_cap), (None, cfg_cap), (mult, None), (None, None):
        if c in seen:
            continue
        seen.append(c)
        want = torch.tensor([_transform(v, *c) for v in _PROBE], dtype=torch.float64)
        if torch.allclose(observed, want, rtol=1e-4, atol=1e-5):
            return c
    return None


def _zero_loss(logits=None, labels=None, vocab_size=None, **kwargs):
    """transformers' loss function on the fused path: 0 (the real loss is computed afterwards from
    the hidden states); whatever the forward adds to it (the router aux loss) is kept."""
    return torch.zeros((), dtype=torch.float32, device=logits.device if logits is not None else None)


@contextmanager
def _fused_head(model, capture):
    """``model.lm_head`` -> ``capture`` and ``model.loss_function`` -> ``_zero_loss`` for a call."""
    had_loss_fn = "_loss_function" in model.__dict__
    old_loss_fn = model.__dict__.get("_loss_function")
    old_head = model._modules["lm_head"]
    model._modules["lm_head"] = capture
    model.__dict__["_loss_function"] = _zero_loss  # what PreTrainedModel.loss_function returns
    try:
        yield
    finally:
        model._modules["lm_head"] = old_head
        if had_loss_fn:
            model.__dict__["_loss_function"] = old_loss_fn
        else:
            model.__dict__.pop("_loss_function", None)


def _plain_linear(module):
    if type(module) is nn.Linear:
        return module.weight, module.bias
    return None


@functools.lru_cache(maxsize=None)
def _with_extras(cls):
    """``cls`` (a transformers ModelOutput dataclass) with Liger's token_accuracy and
    predicted_tokens fields added."""
    return dataclasses.make_dataclass(
        f"Liger{cls.__name__}",
        [("token_accuracy", Optional[torch.Tensor], None),
         ("predicted_tokens", Optional[torch.Tensor], None)],
        bases=(cls,))


def _rebuild(out, loss, acc, pred):
    """A copy of transformers' output with ``loss`` set and no logits (field order kept)."""
    fields = {k: v for k, v in out.items() if k not in ("loss", "logits")}
    cls = type(out)
    if acc is not None or pred is not None:
        cls = _with_extras(cls)
        fields.update(token_accuracy=acc, predicted_tokens=pred)
    return cls(loss=loss, **fields)


def make_fused_forward(orig_forward, head: HeadFn = no_head_transform):
    """The fused-loss forward wrapping ``orig_forward`` (transformers' class forward); see the
    module docstring."""
    sig = inspect.signature(orig_forward)
    var_kw = next((p.name for p in sig.parameters.values() if p.kind is p.VAR_KEYWORD), None)

    @functools.wraps(orig_forward)
    def lce_forward(self, *args, skip_logits: Optional[bool] = None, **kwargs):
        options = {k: kwargs.pop(k) for k in FLCE_OPTIONS if k in kwargs}
        bound = sig.bind_partial(self, *args, **kwargs).arguments
        extra = bound.get(var_kw, {}) if var_kw else {}
        labels = bound.get("labels")
        shift_labels = extra.get("shift_labels")
        has_labels = labels is not None or shift_labels is not None
        if skip_logits and not has_labels:
            raise ValueError("skip_logits is True, but labels and shift_labels are None")
        if skip_logits is None:
            skip_logits = self.training and has_labels
        linear = _plain_linear(self.lm_head) if skip_logits else None
        if skip_logits and linear is None:
            warn_once(f"lce-forward-head-{type(self.lm_head).__name__}",
                      f"ligerd: lm_head is a {type(self.lm_head).__name__}, not a plain nn.Linear; "
                      f"the fused linear cross-entropy cannot use its weight, so logits are "
                      f"computed", stacklevel=3)
            skip_logits = False
        if not skip_logits:
            return orig_forward(self, *args, **kwargs)

        return_dict = kwargs.pop("return_dict", None)
        if return_dict is None:
            return_dict = getattr(self.config, "return_dict", True)
        capture = _HeadCapture()
        with _fused_head(self, capture):
            out = orig_forward(self, *args, return_dict=True, **kwargs)
        if capture.hidden is None:
            raise RuntimeError(f"ligerd: {type(self).__name__}.forward did not call its lm_head; "
                               f"the fused linear cross-entropy has no hidden states to use")
        hidden = capture.hidden
        weight, bias = linear
        probe = out.get("logits")
        picked = self.__dict__.get("_ligerd_head_transform")
        if picked is None and torch.compiler.is_compiling():
            picked = head(self)  # reading the probe would break the graph: the spec's transform
        elif picked is None and probe is not None and probe.shape[-1] == len(_PROBE):
            # Once per model (one device sync): the transform depends on the class and config.
            picked = _pick_transform(self, head, probe.reshape(-1, len(_PROBE))[0].double().cpu())
            if picked is not None:
                self.__dict__["_ligerd_head_transform"] = picked
        if picked is None:
            raise RuntimeError(
                f"ligerd: {type(self).__name__}.forward post-processes its logits in a way the fused "
                f"linear cross-entropy does not reproduce (probe {_PROBE} -> "
                f"{None if probe is None else probe.reshape(-1, probe.shape[-1])[0].tolist()}); "
                f"patch with fused_linear_cross_entropy=False")
        mult, cap = picked
        if mult is not None and mult != 1.0:  # (h W^T + b) * m == (h m) W^T + b m
            hidden = hidden * mult
            bias = None if bias is None else bias * mult
        result = LigerForCausalLMLoss(
            hidden_states=hidden, lm_head_weight=weight, labels=labels, shift_labels=shift_labels,
            hidden_size=hidden.shape[-1], final_logit_softcapping=cap, lm_head_bias=bias,
            num_items_in_batch=extra.get("num_items_in_batch"),
            ignore_index=extra.get("ignore_index", -100), **options)
        acc = pred = None
        if isinstance(result, LigerLossOutput):
            loss, acc, pred = result.loss, result.token_accuracy, result.predicted_tokens
        else:
            loss = result
        rest = out.get("loss")  # 0 from _zero_loss plus what the forward added (router aux loss)
        if rest is not None:
            loss = loss + rest.to(loss.device)
        out = _rebuild(out, loss, acc, pred)
        return out if return_dict else out.to_tuple()

    lce_forward.__ligerd_fused__ = True
    return lce_forward


def is_fused_forward(fn) -> bool:
    return getattr(getattr(fn, "__func__", fn), "__ligerd_fused__", False)


__all__ = ["make_fused_forward", "is_fused_forward", "no_head_transform"]
