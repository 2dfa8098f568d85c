"""Distillation through the LM heads without the full logits (``_engine.logits_sweep``):

* ``LigerFusedLinearJSDLoss`` and ``LigerFusedLinearCosineSimilarityLoss`` (Liger-Kernel 0.8.5's
  chunked distillation losses, ``forward(student_input, student_weight, teacher_input,
  teacher_weight, true_labels, student_bias=None, teacher_bias=None)``):
      loss = w_hard * CE(student logits, labels) + w_soft * soft(student / T, teacher / T)
  both summed over the non-ignored tokens and divided by their count (at least 1); the hard loss
  is on the untempered logits; a teacher vocabulary larger than the student's pads the student's
  tempered logits with zeros (as Liger). soft: the generalised JSD with weight ``beta`` on the
  teacher (beta 0: KL(teacher || student), 1: KL(student || teacher)), or beta * (1 - cos(s, t)).
  ``return_soft_hard_loss=True`` returns (loss, soft, hard).
* ``fused_linear_jsd`` (``ligerd.transformers.LigerFusedLinearJSD``): JSD of the tempered
  student and teacher distributions, summed over rows whose label is not ignored and divided by
  their count (or by all rows without labels); no bias, no hard loss; ``accum_dtype`` for dW.
* ``fused_linear_kl_div`` (``ligerd.transformers.LigerFusedLinearKLDivLoss``): KL(target || softmax(
  x W.T / T)) with ``target`` the [BT, V] teacher probabilities, log(max(q, eps)); reduction
  batchmean (over the non-ignored rows), mean (also over V) or sum.

The chunk's loss and its gradient with respect to the student logits are torch ops on the fp32
chunk (autograd over the chunk only): ligerd's row-wise JSD/KL kernels are not used here yet. The
GEMMs (both heads' logits, dx, dW) are ligerd's. Gradients are computed in the forward.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ligerd.chunked_loss import _engine as E

_FP32_TEMPS = 48  # bytes per vocab entry of one row's fp32 temporaries (copies, log-softmaxes, grads)


def jsd_rows(s_lp: torch.Tensor, t_lp: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-row generalised JSD of log-probs s (student) and t (teacher), mixture beta*t + (1-beta)*s."""
    if beta == 0:
        return (t_lp.exp() * (t_lp - s_lp)).sum(-1)
    if beta == 1:
        return (s_lp.exp() * (s_lp - t_lp)).sum(-1)
    log_m = torch.logsumexp(torch.stack([s_lp + math.log(1 - beta), t_lp + math.log(beta)]), dim=0)
    return (beta * (t_lp.exp() * (t_lp - log_m)) + (1 - beta) * (s_lp.exp() * (s_lp - log_m))).sum(-1)


def _jsd_soft(s, t, beta):
    return jsd_rows(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), beta)


def _cosine_soft(s, t, beta):
    return beta * (1 - F.cosine_similarity(F.normalize(s, p=2, dim=-1), F.normalize(t, p=2, dim=-1), dim=-1))


def _rows2(x):
    return x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x


@torch.compiler.disable
def _distill(op, soft_fn, student_input, student_weight, teacher_input, teacher_weight, true_labels, student_bias,
             teacher_bias, weight_hard_loss, weight_soft_loss, beta, ignore_index, temperature,
             return_soft_hard_loss):
    if temperature == 0:
        E.fail(op, "temperature cannot be 0")
    E.check_linear(op, student_input, student_weight, student_bias, "student_input", "student_weight",
                   "student_bias")
    E.check_linear(op, teacher_input, teacher_weight, teacher_bias, "teacher_input", "teacher_weight",
                   "teacher_bias")
    BT = _rows2(student_input).shape[0]
    if _rows2(teacher_input).shape[0] != BT:
        E.fail(op, f"teacher_input has {_rows2(teacher_input).shape[0]} rows, student_input {BT}")
    if teacher_weight.shape[0] < student_weight.shape[0]:
        E.fail(op, f"the teacher's vocabulary ({teacher_weight.shape[0]}) is smaller than the student's "
                   f"({student_weight.shape[0]})")
    y = E.check_index(op, "true_labels", true_labels.reshape(-1), (BT,), student_input.device)
    need = E.needs(student_input, student_weight, student_bias)
    compute_ce = weight_hard_loss != 0 or return_soft_hard_loss
    out = {}

    def go():
        s = E.Linear(_rows2(student_input.detach()), student_weight.detach(),
                     student_bias.detach() if student_bias is not None else None, 1.0, *need)
        s.shape = student_input.shape
        t = E.Linear(_rows2(teacher_input.detach()), teacher_weight.detach(),
                     teacher_bias.detach() if teacher_bias is not None else None)
        Vs, Vt = s.V, t.V
        row_bytes = Vs * student_input.element_size() + Vt * teacher_input.element_size()
        C = E.chunk_rows(op, BT, Vs, student_input.element_size(), row_bytes)
        S = E.sub_rows(BT, Vs, student_input.element_size(), _FP32_TEMPS * Vt, C)
        valid = y != ignore_index
        n = valid.sum().clamp(min=1).to(torch.float32)

        def chunk_loss(r0, r1, logits):
            yc, vc = y[r0:r1], valid[r0:r1]
            with torch.enable_grad():
                sl = logits[0].to(torch.float32).requires_grad_(s.wants_grads)
                tl = logits[1].to(torch.float32)
                hard = F.cross_entropy(sl, yc, ignore_index=ignore_index, reduction="sum") / n if compute_ce \
                    else sl.new_zeros(())
                ss, ts = sl / temperature, tl / temperature
                if Vt > Vs:
                    ss = torch.cat([ss, ss.new_zeros((ss.shape[0], Vt - Vs))], dim=-1)
                soft = soft_fn(ss, ts, beta).masked_fill(~vc, 0.0).sum() / n
                loss = weight_hard_loss * hard + weight_soft_loss * soft
                g = torch.autograd.grad(loss, sl)[0] if s.wants_grads else None
            return loss.detach(), (soft.detach(), hard.detach()), g

        res = E.logits_sweep(op, [s, t], BT, C, chunk_loss, S)
        zero = torch.zeros((), dtype=torch.float32, device=student_input.device)
        total = torch.stack([r[0] for r in res]).sum() if res else zero
        out["soft"] = torch.stack([r[1][0] for r in res]).sum() if res else zero
        out["hard"] = torch.stack([r[1][1] for r in res]).sum() if res else zero
        dx, dW, db = s.grads()
        return total, dx, dW, db

    loss = E.FusedLinearLoss.apply(student_input, student_weight, student_bias, go)
    if return_soft_hard_loss:
        return loss, out["soft"], out["hard"]
    return loss


class LigerFusedLinearJSDFunction:
    @staticmethod
    def apply(student_input, student_weight, teacher_input, teacher_weight, true_labels, student_bias=None,
              teacher_bias=None, weight_hard_loss=0.5, weight_soft_loss=0.5, beta=0.5, ignore_index=-100,
              temperature=1.0, compiled=True, chunk_size=1024, return_soft_hard_loss=False):
        return _distill("fused_linear_jsd_loss", _jsd_soft, student_input, student_weight, teacher_input,
                        teacher_weight, true_labels, student_bias, teacher_bias, weight_hard_loss, weight_soft_loss,
                        beta, ignore_index, temperature, return_soft_hard_loss)


class LigerFusedLinearCosineSimilarityFunction:
    @staticmethod
    def apply(student_input, student_weight, teacher_input, teacher_weight, true_labels, student_bias=None,
              teacher_bias=None, weight_hard_loss=0.5, weight_soft_loss=0.5, beta=0.5, ignore_index=-100,
              temperature=1.0, compiled=True, chunk_size=1024, return_soft_hard_loss=False):
        return _distill("fused_linear_cosine_loss", _cosine_soft, student_input, student_weight, teacher_input,
                        teacher_weight, true_labels, student_bias, teacher_bias, weight_hard_loss, weight_soft_loss,
                        beta, ignore_index, temperature, return_soft_hard_loss)


class _DistillationLoss(torch.nn.Module):
    _function = None

    def __init__(self, weight_hard_loss: float = 0.5, weight_soft_loss: float = 0.5, beta: float = 0.5,
                 ignore_index: int = -100, temperature: float = 1.0, compiled: bool = True, chunk_size: int = 1024,
                 return_soft_hard_loss: bool = False):
        super().__init__()
        assert temperature != 0, "Temperature cannot be 0."
        self.weight_hard_loss = weight_hard_loss
        self.weight_soft_loss = weight_soft_loss
        self.ignore_index = ignore_index
        self.temperature = temperature
        self.compiled = compiled
        self.beta = beta
        self.chunk_size = chunk_size
        self.return_soft_hard_loss = return_soft_hard_loss

    def forward(self, student_input, student_weight, teacher_input, teacher_weight, true_labels,
                student_bias=None, teacher_bias=None):
        return self._function.apply(student_input, student_weight, teacher_input, teacher_weight, true_labels,
                                    student_bias, teacher_bias, self.weight_hard_loss, self.weight_soft_loss,
                                    self.beta, self.ignore_index, self.temperature, self.compiled,
                                    self.chunk_size, self.return_soft_hard_loss)


class LigerFusedLinearJSDLoss(_DistillationLoss):
    """Chunked JSD distillation (Liger's ``liger_kernel.chunked_loss.LigerFusedLinearJSDLoss``)."""
    _function = LigerFusedLinearJSDFunction


class LigerFusedLinearCosineSimilarityLoss(_DistillationLoss):
    """Chunked cosine-similarity distillation (Liger's ``LigerFusedLinearCosineSimilarityLoss``)."""
    _function = LigerFusedLinearCosineSimilarityFunction


# ---- transformers-level fused linear JSD and KL divergence ------------------------------------

def _check_accum(op, accum_dtype, W):
    if accum_dtype is not None and accum_dtype not in (W.dtype, torch.float32):
        E.fail(op, f"accum_dtype must be None, the weight's dtype or torch.float32, got {accum_dtype}")


@torch.compiler.disable
def fused_linear_jsd(student_input, student_weight, teacher_input, teacher_weight, shift_labels=None,
                     jsd_beta: float = 0.5, ignore_index: int = -100, temperature: float = 1.0,
                     accum_dtype: Optional[torch.dtype] = None):
    """Liger's LigerFusedLinearJSDFunction.apply (the ops-level one): fp32 loss. With every label
    ignored the loss and gradients are 0 (Liger divides by a zero count there)."""
    op = "fused_linear_jsd"
    if temperature == 0:
        E.fail(op, "temperature cannot be 0.")
    E.check_linear(op, student_input, student_weight, None, "student_input", "student_weight")
    E.check_linear(op, teacher_input, teacher_weight, None, "teacher_input", "teacher_weight")
    _check_accum(op, accum_dtype, student_weight)
    BT = _rows2(student_input).shape[0]
    if _rows2(teacher_input).shape[0] != BT or teacher_weight.shape[0] != student_weight.shape[0]:
        E.fail(op, f"student ({BT} rows, V={student_weight.shape[0]}) and teacher ({_rows2(teacher_input).shape[0]} "
                   f"rows, V={teacher_weight.shape[0]}) must have the same rows and vocabulary")
    if shift_labels is not None:
        y = E.check_index(op, "shift_labels", shift_labels, (BT,), student_input.device)
        valid = y != ignore_index
    else:
        valid = torch.ones(BT, dtype=torch.bool, device=student_input.device)
    need = E.needs(student_input, student_weight, None)

    def go():
        s = E.Linear(_rows2(student_input.detach()), student_weight.detach(), None, 1.0, need[0], need[1], False,
                     dw_dtype=accum_dtype)
        s.shape = student_input.shape
        t = E.Linear(_rows2(teacher_input.detach()), teacher_weight.detach(), None)
        V = s.V
        row_bytes = V * (student_input.element_size() + teacher_input.element_size())
        C = E.chunk_rows(op, BT, V, student_input.element_size(), row_bytes)
        S = E.sub_rows(BT, V, student_input.element_size(), _FP32_TEMPS * V, C)
        n = valid.sum().clamp(min=1).to(torch.float32)

        def chunk_loss(r0, r1, logits):
            with torch.enable_grad():
                sl = logits[0].to(torch.float32).requires_grad_(s.wants_grads)
                ts = logits[1].to(torch.float32) / temperature
                rows = jsd_rows(F.log_softmax(sl / temperature, -1), F.log_softmax(ts, -1), jsd_beta)
                loss = rows.masked_fill(~valid[r0:r1], 0.0).sum() / n
                g = torch.autograd.grad(loss, sl)[0] if s.wants_grads else None
            return loss.detach(), (), g

        res = E.logits_sweep(op, [s, t], BT, C, chunk_loss, S)
        total = torch.stack([r[0] for r in res]).sum() if res else torch.zeros((), device=student_input.device)
        dx, dW, _ = s.grads()
        return total, dx, dW, None

    return E.FusedLinearLoss.apply(student_input, student_weight, None, go)


@torch.compiler.disable
def fused_linear_kl_div(student_input, student_weight, target, shift_labels=None, reduction: str = "batchmean",
                        ignore_index: int = -100, temperature: float = 1.0, eps: float = 1e-10,
                        accum_dtype: Optional[torch.dtype] = None):
    """Liger's LigerFusedLinearKLDivFunction.apply: fp32 loss."""
    op = "fused_linear_kl_div"
    if reduction not in ("batchmean", "mean", "sum"):
        raise ValueError(f"reduction must be one of ('batchmean', 'mean', 'sum'), got {reduction!r}. "
                         "reduction='none' is not supported by the fused kernel; use LigerKLDIVLoss for "
                         "element-wise losses.")
    if temperature == 0:
        E.fail(op, "temperature cannot be 0.")
    E.check_linear(op, student_input, student_weight, None, "student_input", "student_weight")
    _check_accum(op, accum_dtype, student_weight)
    BT = _rows2(student_input).shape[0]
    V = student_weight.shape[0]
    if not isinstance(target, torch.Tensor) or tuple(_rows2(target).shape) != (BT, V):
        E.fail(op, f"target must be ({BT}, {V}) probabilities, got "
                   f"{tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__}")
    q_all = _rows2(target)
    if shift_labels is not None:
        y = E.check_index(op, "shift_labels", shift_labels, (BT,), student_input.device)
        valid = y != ignore_index
    else:
        valid = torch.ones(BT, dtype=torch.bool, device=student_input.device)
    need = E.needs(student_input, student_weight, None)

    def go():
        s = E.Linear(_rows2(student_input.detach()), student_weight.detach(), None, 1.0, need[0], need[1], False,
                     dw_dtype=accum_dtype)
        s.shape = student_input.shape
        C = E.chunk_rows(op, BT, V, student_input.element_size())
        S = E.sub_rows(BT, V, student_input.element_size(), _FP32_TEMPS * V, C)
        n = valid.sum().to(torch.float32)
        if reduction == "batchmean":
            scale = torch.where(n > 0, 1.0 / n.clamp(min=1), 0.0)
        elif reduction == "mean":
            scale = torch.where(n > 0, 1.0 / (n.clamp(min=1) * V), 0.0)
        else:
            scale = torch.ones((), device=n.device)

        def chunk_loss(r0, r1, logits):
            q = q_all[r0:r1].detach().to(torch.float32)
            with torch.enable_grad():
                sl = logits[0].to(torch.float32).requires_grad_(s.wants_grads)
                lp = F.log_softmax(sl / temperature, -1)
                rows = (q * (torch.log(torch.clamp(q, min=eps)) - lp)).sum(-1)
                loss = rows.masked_fill(~valid[r0:r1], 0.0).sum() * scale
                g = torch.autograd.grad(loss, sl)[0] if s.wants_grads else None
            return loss.detach(), (), g

        res = E.logits_sweep(op, [s], BT, C, chunk_loss, S)
        total = torch.stack([r[0] for r in res]).sum() if res else torch.zeros((), device=student_input.device)
        dx, dW, _ = s.grads()
        return total, dx, dW, None

    return E.FusedLinearLoss.apply(student_input, student_weight, None, go)
