"""KTO (Ethayarajh et al. 2024): Liger-Kernel 0.8.5's ``LigerFusedLinearKTOLoss`` (``forward(_input,
lin_weight, target, bias=None, preference_labels=None, ref_input=None, ref_weight=None,
ref_bias=None, kl=None)``, input first) and ``LigerFusedLinearKTOFunction.apply``, on ligerd's chunk
loop. Unpaired: each sequence has a preference label (True = desirable). With r the sequence's
log-prob (sum, or mean with ``average_log_prob``) minus the reference model's (when used):

    loss = sum_i (1 - sigmoid(beta * (r_i - kl) * (+1 if desirable else -1))) / batch

(kl = 0 when not given). Returns (loss, (chosen_logps_sum, rejected_logps_sum, chosen_logits_sum,
rejected_logits_sum, chosen_rewards_sum, rejected_rewards_sum)) with rewards beta * r.
``compiled`` and ``chunk_size`` are accepted and ignored (the chunk comes from the memory budget)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ligerd.chunked_loss import _engine as E
from ligerd.chunked_loss._paired import _logits_row_sums, _seq_logps

OP = "fused_linear_kto"


class LigerFusedLinearKTOFunction:
    @staticmethod
    @torch.compiler.disable
    def apply(_input, weight, target, preference_labels, bias=None, ref_input=None, ref_weight=None, ref_bias=None,
              kl=None, ignore_index=-100, beta=0.1, compiled=True, use_ref_model=True, average_log_prob=False,
              chunk_size=1):
        x = _input
        E.check_linear(OP, x, weight, bias)
        if x.dim() != 3:
            E.fail(OP, f"input must be (batch, seq_len, hidden), got shape {tuple(x.shape)}")
        B, T, _ = x.shape
        tgt = E.check_index(OP, "target", target, (B, T), x.device)
        if preference_labels is None:
            E.fail(OP, "preference_labels must be provided for unpaired preference loss")
        if tuple(preference_labels.shape) != (B,):
            E.fail(OP, f"preference_labels has shape {tuple(preference_labels.shape)}, expected ({B},)")
        labels = preference_labels.to(device=x.device, dtype=torch.bool)
        if use_ref_model:
            if ref_input is None or ref_weight is None:
                E.fail(OP, "use_ref_model=True needs ref_input and ref_weight")
            E.check_linear(OP, ref_input, ref_weight, ref_bias, "ref_input", "ref_weight", "ref_bias")
            if tuple(ref_input.shape[:2]) != (B, T):
                E.fail(OP, f"ref_input has shape {tuple(ref_input.shape)}, expected ({B}, {T}, H)")
        need = E.needs(x, weight, bias)
        out = {}

        def go():
            return _forward(x, weight, bias, tgt, labels, B, T, need, ref_input if use_ref_model else None,
                            ref_weight, ref_bias, kl, ignore_index, beta, bool(average_log_prob), out)

        loss = E.FusedLinearLoss.apply(x, weight, bias, go)
        return loss, out["aux"]


def _forward(x, W, bias, tgt, labels, B, T, need, ref_input, ref_weight, ref_bias, kl, ignore_index, beta,
             average, out):
    lin = E.Linear(x.detach(), W.detach(), bias.detach() if bias is not None else None, 1.0, *need)
    C = E.group_chunk_rows(OP, B * T, lin.V, x.element_size(), T)
    denom, check = E.target_denom(OP, tgt, lin.V, ignore_index)
    mask = (tgt != ignore_index).view(B, T)
    ref_seq = None
    if ref_input is not None:
        rlin = E.Linear(ref_input.detach(), ref_weight.detach(), ref_bias.detach() if ref_bias is not None else None)
        ref_lp = E.selected_logps(OP, rlin, tgt, ignore_index, E.chunk_rows(OP, B * T, rlin.V,
                                  ref_input.element_size()), denom=denom).view(B, T)
        ref_seq = _seq_logps(ref_lp, mask, average)
    kl_t = kl.detach().to(torch.float32) if isinstance(kl, torch.Tensor) else kl
    per = max(1, C // T) if T else max(B, 1)
    groups = [[(a, min(a + per, B))] for a in range(0, B, per)]

    def group_loss(ranges, lp):
        ((a, b),) = ranges
        seq = _seq_logps(lp, mask[a:b], average)
        lab = labels[a:b]
        ratio = seq - ref_seq[a:b] if ref_seq is not None else seq
        sign = torch.where(lab, 1.0, -1.0)
        z = beta * (ratio - kl_t) * sign if kl_t is not None else beta * ratio * sign
        losses = 1 - F.sigmoid(z)
        rewards = beta * ratio
        return losses.sum() / B, ((seq * lab).sum(), (seq * ~lab).sum(), (rewards * lab).sum(),
                                  (rewards * ~lab).sum())

    total, auxes = E.selected_sweep(OP, lin, tgt, T, groups, group_loss, ignore_index, C, denom, check)
    sums = _logits_row_sums(lin, C).view(B, T).sum(-1)
    zero = torch.zeros((), dtype=torch.float32, device=x.device)
    acc = [torch.stack([a[i] for a in auxes]).sum() if auxes else zero for i in range(4)]
    out["aux"] = (acc[0], acc[1], (sums * labels).sum(), (sums * ~labels).sum(), acc[2], acc[3])
    dx, dW, db = lin.grads()
    return total, dx, dW, db


class LigerFusedLinearKTOLoss(torch.nn.Module):
    def __init__(self, ignore_index: int = -100, beta: float = 0.1, compiled: bool = True,
                 use_ref_model: bool = False, average_log_prob: bool = False, chunk_size: int = 1):
        super().__init__()
        self.ignore_index = ignore_index
        self.beta = beta
        self.compiled = compiled
        self.use_ref_model = use_ref_model
        self.average_log_prob = average_log_prob
        self.chunk_size = chunk_size

    def forward(self, _input, lin_weight, target, bias=None, preference_labels=None, ref_input=None,
                ref_weight=None, ref_bias=None, kl=None):
        return LigerFusedLinearKTOFunction.apply(_input, lin_weight, target, preference_labels, bias, ref_input,
                                                 ref_weight, ref_bias, kl, self.ignore_index, self.beta,
                                                 self.compiled, self.use_ref_model, self.average_log_prob,
                                                 self.chunk_size)
