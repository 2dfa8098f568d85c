"""``LigerKLDIVLoss`` and ``liger_kl_div`` with Liger-Kernel 0.8.5's constructor, defaults and
semantics, on ligerd's kernels (ligerd.ops.kl_div)."""

from __future__ import annotations

import torch.nn as nn

from ligerd.ops.kl_div import kl_div as _kl_div


class LigerKLDIVLoss(nn.KLDivLoss):
    """KL(y_true || exp(y_pred)) with y_pred in log space, as ``nn.KLDivLoss`` (whose constructor
    arguments it takes, after ``eps``: ``size_average``, ``reduce``, ``reduction="mean"``,
    ``log_target=False``). Without log_target the target is clamped to >= eps inside the log.
    Returns fp32 (per element for "none"); the gradient reaches y_pred only."""

    def __init__(self, eps: float = 1e-10, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps

    def forward(self, y_pred, y_true):
        return _kl_div(y_pred, y_true, self.reduction, self.log_target, self.eps)


def liger_kl_div(input, target, size_average: bool = True, reduce: bool = True, reduction: str = "mean",
                 log_target: bool = False, eps: float = 1e-10):
    """Liger's functional form. As in Liger, ``size_average`` and ``reduce`` are placeholders of
    torch's signature and are ignored (``reduction`` decides)."""
    return _kl_div(input, target, reduction, log_target, eps)


__all__ = ["LigerKLDIVLoss", "liger_kl_div"]
