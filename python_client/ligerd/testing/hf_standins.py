"""CPU stand-ins for the Hugging Face patching tests (tests/python/test_hf_*.py).

1. ``ref_executor.RefLauncher``: every executor op implemented in float64 torch
   (ligerd.testing.ref_executor, shared with the op wiring tests), installed as
   ``ligerd._backend._test_launcher`` so the Liger modules run on CPU tensors.
2. Torch reference implementations of the ops other engineers are writing in parallel
   (``liger_rotary_pos_emb``, ``liger_cross_entropy``, ``LigerCrossEntropyLoss``,
   ``LigerLayerNorm``, ``LigerFusedAddRMSNorm``, ``LigerFusedLinearCrossEntropyLoss`` and
   ``ligerd.transformers.functional.liger_fused_linear_cross_entropy``), injected into
   ``ligerd.transformers`` for a test's duration (see ``install`` for when). Nothing here creates
   those modules; the real ops land in their own files.
   Each stand-in records its calls in ``CALLS`` so tests can see what the patches called.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ligerd.testing import ref_executor  # tests/python/ref_executor.py: float64 references of every executor op

CALLS: list = []  # (stand-in name, kwargs summary)


# ---------------------------------------------------------------------------------------------
# Stand-ins until the op lands (Liger's names and signatures, torch math).


def _rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def liger_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    CALLS.append(("liger_rotary_pos_emb", {}))
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    rd = cos.shape[-1]  # partial rotary: the first rd of the head rotated, the rest passed through
    qr, kr = q[..., :rd], k[..., :rd]
    return (torch.cat([qr * cos + _rotate_half(qr) * sin, q[..., rd:]], -1),
            torch.cat([kr * cos + _rotate_half(kr) * sin, k[..., rd:]], -1))


def liger_cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                        reduce=None, reduction="mean", label_smoothing=0.0, lse_square_scale=0.0,
                        softcap=None, return_z_loss=False, return_token_accuracy=False,
                        return_predicted_tokens=False):
    CALLS.append(("liger_cross_entropy", {"reduction": reduction, "ignore_index": ignore_index}))
    x = input if softcap is None else softcap * torch.tanh(input / softcap)
    return F.cross_entropy(x.float(), target, weight=weight, ignore_index=ignore_index,
                           reduction=reduction, label_smoothing=label_smoothing)


class LigerCrossEntropyLoss(nn.Module):
    def __init__(self, weight=None, ignore_index=-100, lse_square_scale=0.0, label_smoothing=0.0,
                 reduction="mean", softcap=None, return_z_loss=False, return_token_accuracy=False,
                 return_predicted_tokens=False):
        super().__init__()
        self.kw = dict(weight=weight, ignore_index=ignore_index, reduction=reduction,
                       label_smoothing=label_smoothing, softcap=softcap)

    def forward(self, _input, target):
        return liger_cross_entropy(_input, target, **self.kw)


def liger_fused_linear_cross_entropy(input, weight, target, bias=None, ce_weight=None,
                                     ignore_index=-100, lse_square_scale=0.0, label_smoothing=0.0,
                                     reduction="mean", softcap=None, return_z_loss=False,
                                     accum_dtype=None, use_token_scaling=False,
                                     return_token_accuracy=False, return_predicted_tokens=False, *,
                                     _mean_divisor=None):
    CALLS.append(("liger_fused_linear_cross_entropy",
                  {"reduction": reduction, "softcap": softcap, "ignore_index": ignore_index,
                   "rows": input.shape[0], "accum_dtype": accum_dtype, "mean_divisor": _mean_divisor}))
    logits = F.linear(input, weight, bias).float()
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    if _mean_divisor is not None:  # "mean" over a given count (ligerd's mean_divisor)
        return F.cross_entropy(logits, target, weight=ce_weight, ignore_index=ignore_index,
                               reduction="sum", label_smoothing=label_smoothing) / _mean_divisor
    return F.cross_entropy(logits, target, weight=ce_weight, ignore_index=ignore_index,
                           reduction=reduction, label_smoothing=label_smoothing)


class LigerFusedLinearCrossEntropyLoss(nn.Module):
    def __init__(self, ce_weight=None, ignore_index=-100, lse_square_scale=0.0,
                 label_smoothing=0.0, reduction="mean", softcap=None, return_z_loss=False,
                 accum_dtype=None, use_token_scaling=False, return_token_accuracy=False,
                 return_predicted_tokens=False):
        super().__init__()
        self.kw = dict(ce_weight=ce_weight, ignore_index=ignore_index, reduction=reduction,
                       label_smoothing=label_smoothing, softcap=softcap)

    def forward(self, lin_weight, _input, target, bias=None):
        return liger_fused_linear_cross_entropy(_input, lin_weight, target, bias, **self.kw)


class LigerLayerNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6, bias=False, init_fn="ones"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size) if init_fn == "ones" else torch.zeros(hidden_size))
        self.bias = nn.Parameter(torch.randn(hidden_size) if bias else torch.zeros(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.variance_epsilon)


class LigerFusedAddRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6, offset=0.0, casting_mode="llama", init_fn="ones",
                 in_place=False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size) if init_fn == "ones" else torch.zeros(hidden_size))
        self.variance_epsilon, self.offset = eps, offset

    def forward(self, hidden_states, residual):
        s = hidden_states + residual
        h = s.float() * torch.rsqrt(s.float().pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return (h.to(s.dtype) * (self.offset + self.weight)), s


STANDINS = {
    "ligerd.transformers": {
        "liger_rotary_pos_emb": liger_rotary_pos_emb,
        "liger_cross_entropy": liger_cross_entropy,
        "LigerCrossEntropyLoss": LigerCrossEntropyLoss,
        "LigerFusedLinearCrossEntropyLoss": LigerFusedLinearCrossEntropyLoss,
        "LigerLayerNorm": LigerLayerNorm,
        "LigerFusedAddRMSNorm": LigerFusedAddRMSNorm,
    },
    "ligerd.transformers.functional": {
        "liger_fused_linear_cross_entropy": liger_fused_linear_cross_entropy,
    },
}


def install(monkeypatch, launcher: bool = True) -> list:
    """Put the reference launcher in place (unless ``launcher=False``: real kernels) and inject
    the stand-ins, for the test's duration only (monkeypatch). Returns the names injected.

    With ``launcher=False`` (real kernels) a stand-in is injected only where the real op is
    missing. On the CPU (``launcher=True``) the stand-ins are used even where the real op exists:
    these tests observe what the patched forwards call (``CALLS``: arguments such as
    num_items_in_batch and softcap), and each real op has its own wiring test."""
    import importlib

    from ligerd import _backend
    if launcher:
        monkeypatch.setattr(_backend, "_test_launcher", ref_executor.RefLauncher())
    injected = []
    for modname, objs in STANDINS.items():
        mod = importlib.import_module(modname)
        for name, obj in objs.items():
            if launcher or name not in vars(mod):
                monkeypatch.setattr(mod, name, obj, raising=False)
                injected.append(f"{modname}.{name}")
    CALLS.clear()
    return injected
