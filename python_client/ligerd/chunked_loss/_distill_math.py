"""The per-block math of the distillation losses (distillation.py): each block's loss and its
gradient with respect to the student's raw logits in closed form, from ligerd's row kernels and a
few fused torch ops on the block's fp32 [rows, V] tensors; no autograd, no stacked copies.

* Log-probabilities: ``LseSource`` takes each row's log-sum-exp from the cross-entropy kernel (one
  read of the logits in their own dtype: its reduction-none loss against class 0, which no row
  ignores, is lse - x[:, 0]); ``log_probs`` then writes x - lse in fp32 (one pass), padded with
  zero logits to the teacher's vocabulary (Liger pads the student's tempered logits so) by adding
  their (Vt - Vs) e^0 to the row sum. torch's log_softmax of 16-bit logits would first copy them
  to fp32, then read that copy three times. (Raw logits tempered here, T != 1 with a hard loss:
  x / T padded in fp32, its log-sum-exps from the same kernel, subtracted in place.)
* JSD: ligerd's ``jsd_fwd`` kernel gives each row's generalised JSD and d JSD / d s_lp in one
  pass (kernels/ops/distill.cuh), over the block's non-ignored rows and divided by their count
  n_b; the chain rule through log-softmax is torch's fused log-softmax backward,
  LSB(g) = g - softmax * sum(g) (one kernel), and the weights w_soft * n_b / (n * T) go into the
  one pass that writes d logits into the logits buffer (in the input's dtype).
  With the hard loss, T = 1 and one vocabulary, softmax(x) is the student's softmax of both
  losses, so d logits = f * LSB(g - (w_hard / (n f)) onehot(y)): the hard loss costs a gather and
  a scatter. Otherwise (T != 1 or a larger teacher vocabulary) the cross-entropy kernel writes the
  hard loss's gradient (row-scaled by w_hard / n) over an fp32 copy of the raw logits, which the
  last pass adds.
* Cosine: beta (1 - cos(s, t)) per row, cos scale-free, so it is computed on the logits the GEMMs
  gave (both raw, or both tempered) and d cos / d s = t / (|s||t|) - cos s / |s|^2 (times 1/T for
  tempered logits); as F.normalize, norms are clamped at 1e-12.
* KL (fused_linear_kl_div): ligerd's ``kl_div_fwd`` kernel gives the row sums of
  q (log max(q, eps) - lp); d loss / d logits = -scale / T * LSB(q).

Fused path (the JSD losses' default; ``LIGERD_DISTILL_FUSED=0`` selects the path above, kept as
the reference it is tested against and for the other losses' parts it shares): ligerd's ``jsd_logits_fwd`` kernel (kernels/ops/distill_jsd_logits.cuh) reads
both blocks of raw logits in their own dtype and writes each row's JSD and d loss / d student
logits over the student's logits in three passes a row (log-sum-exps; JSD and the sum of its
gradient; the gradient) and one launch, with no fp32 [rows, V] temporaries. With the hard loss,
T = 1 and one vocabulary, the kernel also gives the hard loss's rows and adds its gradient (the
same softmax); otherwise the cross-entropy kernel writes the hard gradient over an fp32 copy of
the raw logits first, which is added to the kernel's output (rounded twice, to the logits' dtype
then after the sum: within 2 ulps of it, against the default path's one rounding).

fp32 [rows, V] temporaries alive at once: at most 3 (log-probs, the JSD gradient, LSB's output;
cosine: the student's fp32 copy and its product with the teacher's logits or the gradient; KL:
log-probs, q in fp32, LSB's output), 4 on the JSD path with a separate hard-loss gradient (its
fp32 copy of the raw logits): ``FP32_TEMPS``."""

from __future__ import annotations

import math
import os
from typing import Optional

import torch

from ligerd import _backend
from ligerd.ops import cross_entropy as ce

F32 = torch.float32
# Bytes per vocabulary entry of one row's fp32 temporaries at the most (the module docstring).
FP32_TEMPS = 16
# The fused JSD path's (jsd_logits): none, or with a separate hard loss its fp32 copy of the raw
# logits; sub-blocks are whole chunks without one.
FUSED_SEP_TEMPS = 4
_NORM_EPS = 1e-12  # F.normalize's


def lsb(g: torch.Tensor, lp: torch.Tensor) -> torch.Tensor:
    """g - exp(lp) * g.sum(-1): the gradient through log_softmax (torch's fused backward kernel)."""
    return torch.ops.aten._log_softmax_backward_data(g, lp, -1, F32)


class LseSource:
    """Row log-sum-exps from ligerd's cross-entropy kernel: class 0 as every row's target
    (ignore_index -1 ignores none), the count the kernel takes computed once."""

    def __init__(self, rows: int, V: int, device):
        self.target = torch.zeros(max(rows, 1), dtype=torch.int64, device=device)
        self.denom = ce.cross_entropy_count(self.target, None, V, -1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        loss = torch.empty(rows, dtype=F32, device=x.device)
        _backend.call("cross_entropy_fwd", X=x, target=self.target[:rows], weight=None, denom=self.denom,
                      row_scale=None, dX=None, loss=loss, z_loss=None, pred=None, ignore_index=-1,
                      lse_square_scale=0.0, label_smoothing=0.0, reduction=ce.REDUCTIONS["none"], softcap=0.0,
                      token_scaling=0)
        return loss.add_(x[:, 0])


def log_probs(x: torch.Tensor, width: int, lse: torch.Tensor) -> torch.Tensor:
    """fp32 [rows, width]: log_softmax of x's rows (lse: their log-sum-exps) padded with zero logits
    to width columns."""
    rows, n = x.shape
    if width > n:
        lse = torch.logaddexp(lse, torch.full_like(lse, math.log(width - n)))
    out = torch.empty((rows, width), dtype=F32, device=x.device)
    torch.sub(x, lse[:, None], out=out[:, :n])
    if width > n:
        out[:, n:].copy_(lse.neg()[:, None].expand(rows, width - n))
    return out


def jsd_kernel(s_lp, t_lp, klab, n_b, beta: float, want_grad: bool):
    """ligerd's jsd_fwd: (fp32 [rows] losses / n_b, d / d s_lp / n_b or None); rows whose klab is
    1 are skipped (loss 0, gradient 0); n_b the int64 [1] count of the others."""
    rows = s_lp.shape[0]
    loss = torch.empty(rows, dtype=F32, device=s_lp.device)
    grad = torch.empty_like(s_lp) if want_grad else None
    _backend.call("jsd_fwd", X=s_lp, Y=t_lp, labels=klab, n_valid=n_b, loss=loss, dX=grad, beta=beta,
                  ignore_index=1)
    return loss, grad


def fused_enabled() -> bool:
    """Whether the JSD distillation losses use jsd_logits (the module docstring): yes unless
    LIGERD_DISTILL_FUSED=0."""
    return os.environ.get("LIGERD_DISTILL_FUSED", "1") != "0"


def jsd_logits(s: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor], ignore_index: int,
               scale: torch.Tensor, beta: float, s_scale: float, soft_coef: float, hard_coef: float,
               hard: bool, want_grad: bool):
    """ligerd's jsd_logits_fwd over a block of raw logits s [rows, Vs] and t [rows, Vt >= Vs] (one
    dtype): (fp32 [rows] JSD sums, fp32 [rows] hard losses or None); with want_grad, d loss / d s =
    scale * (soft_coef (g - q sum g) + hard_coef (q - onehot(label))) is written over s. Rows whose
    label is ignore_index give zeros; scale: fp32 [1] on the device."""
    rows = s.shape[0]
    loss = torch.empty(rows, dtype=F32, device=s.device)
    hard_loss = torch.empty(rows, dtype=F32, device=s.device) if hard else None
    _backend.call("jsd_logits_fwd", student=s, teacher=t, labels=labels, scale=scale, loss=loss,
                  hard_loss=hard_loss, d_student=s if want_grad else None, beta=beta, ignore_index=ignore_index,
                  s_scale=s_scale, t_scale=1.0, soft_coef=soft_coef, hard_coef=hard_coef)
    return loss, hard_loss


def kl_rows(lp: torch.Tensor, q: torch.Tensor, eps: float) -> torch.Tensor:
    """ligerd's kl_div_fwd, row sums: fp32 [rows] of sum q (log max(q, eps) - lp)."""
    loss = torch.empty(lp.shape[0], dtype=F32, device=lp.device)
    _backend.call("kl_div_fwd", X=lp, target=q, loss=loss, log_target=0, reduction=1, eps=eps)
    return loss


def hard_ce(x: torch.Tensor, xf: Optional[torch.Tensor], y: torch.Tensor, denom: torch.Tensor,
            row_scale: Optional[torch.Tensor], ignore_index: int) -> torch.Tensor:
    """Cross-entropy rows (lse - x[y], 0 where ignored) of the raw logits; with row_scale, the
    gradient row_scale * (softmax - onehot) is written over xf (x's fp32 copy, or x)."""
    rows = x.shape[0]
    loss = torch.empty(rows, dtype=F32, device=x.device)
    src = xf if row_scale is not None else x
    _backend.call("cross_entropy_fwd", X=src, target=y, weight=None, denom=denom, row_scale=row_scale,
                  dX=src if row_scale is not None else None, loss=loss, z_loss=None, pred=None,
                  ignore_index=ignore_index, lse_square_scale=0.0, label_smoothing=0.0,
                  reduction=ce.REDUCTIONS["none"], softcap=0.0, token_scaling=0)
    return loss


def cosine_block(x: torch.Tensor, t: torch.Tensor, beta: float, k: torch.Tensor, want_grad: bool):
    """(rows' beta * (1 - cos(x, t)) with the student's zero padding, x in fp32 (x itself when
    fp32, else a copy) and the gradient of sum(k * loss rows) w.r.t. x (fp32; k: fp32 [rows], 0 at
    ignored rows), or None). t is read in its own dtype (16-bit values are exact in fp32)."""
    Vs = x.shape[1]
    xf = x.to(F32)
    ts = t[:, :Vs]
    ns = torch.linalg.vector_norm(xf, dim=-1)
    nt = torch.linalg.vector_norm(t, dim=-1, dtype=F32)
    dot = torch.mul(xf, ts).sum(-1)
    nsc, ntc = ns.clamp_min(_NORM_EPS), nt.clamp_min(_NORM_EPS)
    cos = dot / (nsc * ntc)
    rows = beta * (1 - cos)
    if not want_grad:
        return rows, xf, None
    # d/dx of -beta * k * cos: -beta k (t / (|x||t|) - cos x / |x|^2), the second term only where
    # |x| is not clamped (F.normalize's max(|x|, eps) has no |x| there).
    a = -beta * k / (nsc * ntc)
    b = (beta * k * cos / (nsc * nsc)).masked_fill_(ns <= _NORM_EPS, 0.0)
    G = torch.mul(ts, a[:, None])
    G.addcmul_(xf, b[:, None])
    return rows, xf, G
