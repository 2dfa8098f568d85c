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

Each sub-block's loss and its gradient with respect to the student's logits are closed forms on
ligerd's row kernels (jsd_fwd, kl_div_fwd, the cross-entropy kernel's row log-sum-exps and hard
loss) and a few fused torch ops, no autograd (``_distill_math``), written over the student's logits
buffer. The logits GEMMs temper by alpha = 1/T wherever the raw logits are not needed (the
teacher's JSD logits; the student's without a hard loss). The GEMMs (both heads' logits, dx, dW)
are ligerd's. Gradients are computed in the forward.

The JSD losses' per-block math is one fused row kernel (jsd_logits_fwd, ``_distill_math``'s
docstring); ``LIGERD_DISTILL_FUSED=0`` selects the multi-kernel path instead.
"""

from __future__ import annotations

from typing import Optional

import torch

from ligerd.chunked_loss import _distill_math as M
from ligerd.chunked_loss import _engine as E

F32 = torch.float32


def _rows2(x):
    return x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x


class _Rows:
    """Per-call row data: the non-ignored mask, their count n (fp32, at least 1), the JSD kernel's
    labels (1 at ignored rows), and each block's count n_b (int64 [1]) and its fp32 scalar."""

    def __init__(self, valid: torch.Tensor):
        self.valid = valid
        self.n = valid.sum().clamp(min=1).to(F32)
        self.klab = (~valid).to(torch.int64)
        self.inv_n = (1.0 / self.n).reshape(1)  # fp32 [1]: the fused kernel's gradient factor

    def block(self, r0: int, r1: int):
        vc = self.valid[r0:r1]
        n_b = vc.sum().reshape(1)
        return vc, n_b, n_b.to(F32)[0]


class _Jsd:
    """One block's generalised JSD distillation loss, w_hard * hard + w_soft * soft, and its
    gradient written over the student's logits (_distill_math's docstring). ``raw``: the student's
    logits are raw (the hard loss needs them; else the GEMM tempered them); the teacher's are
    always tempered. y, denom, ignore_index: the hard loss's targets (raw only)."""

    def __init__(self, rows: _Rows, lse: M.LseSource, beta: float, T: float, w_soft: float, w_hard: float,
                 raw: bool, y=None, denom=None, ignore_index: int = -100, Vs: int = 0, Vt: int = 0):
        self.rows, self.lse, self.beta, self.T = rows, lse, float(beta), float(T)
        self.w_soft, self.w_hard, self.raw = float(w_soft), float(w_hard), raw
        self.y, self.denom, self.ignore_index = y, denom, ignore_index
        # The hard loss folded into the soft loss's log-softmax backward: same softmax (T = 1, one
        # vocabulary); w_soft = 0 would divide by 0 there.
        self.fold = raw and self.T == 1.0 and Vs == Vt and self.w_soft != 0.0
        self.fused = M.fused_enabled()
        if self.fused:  # one kernel with the hard loss whenever the softmaxes agree (no division)
            self.fold = raw and self.T == 1.0 and Vs == Vt
        if self.fold and not self.fused:
            v = rows.valid
            self.ysafe = torch.where(v & (y >= 0) & (y < Vs), y, torch.zeros_like(y))

    def __call__(self, r0: int, r1: int, x: torch.Tensor, t: torch.Tensor, grads: bool):
        if self.fused:
            return self._fused(r0, r1, x, t, grads)
        R, T = self.rows, self.T
        vc, n_b, nbf = R.block(r0, r1)
        c, Vs = x.shape
        Vt = t.shape[1]
        sep = self.raw and not self.fold             # hard loss through the cross-entropy kernel
        hard_grad = grads and self.raw and self.w_hard != 0.0
        xf = x.to(F32) if sep and hard_grad else None
        lse_s = None
        if self.raw and T != 1.0:                    # raw logits, tempered here
            src = xf if xf is not None else x.to(F32)
            s_lp = torch.empty((c, Vt), dtype=F32, device=x.device)
            torch.div(src, T, out=s_lp[:, :Vs])
            s_lp[:, Vs:].zero_()
            del src
            s_lp.sub_(self.lse(s_lp)[:, None])     # log_softmax in place
        else:
            lse_s = self.lse(x)
            s_lp = M.log_probs(x, Vt, lse_s)
        t_lp = M.log_probs(t, Vt, self.lse(t))
        rows, g = M.jsd_kernel(s_lp, t_lp, R.klab[r0:r1], n_b, self.beta, grads)
        del t_lp
        soft = rows.sum() * nbf / R.n
        if self.fold:
            ys = self.ysafe[r0:r1]
            hard = ((lse_s - x.gather(1, ys[:, None])[:, 0]) * vc).sum() / R.n
        elif sep:
            rs = (self.w_hard / R.n).expand(c).contiguous() if hard_grad else None
            hard = M.hard_ce(x, xf, self.y[r0:r1], self.denom, rs, self.ignore_index).sum() / R.n
        else:
            hard = torch.zeros((), dtype=F32, device=x.device)
        loss = self.w_hard * hard + self.w_soft * soft
        if not grads:
            return loss, (soft, hard), None
        f = nbf * (self.w_soft / T) / R.n
        if self.fold and hard_grad:
            # f * LSB(g - h onehot) = f LSB(g) + f h (softmax - onehot), f h = w_hard / n
            h = (self.w_hard * T / self.w_soft) / nbf.clamp(min=1.0)
            g.scatter_add_(1, ys[:, None], (vc * -h)[:, None])
        L = M.lsb(g, s_lp)
        del g, s_lp
        if sep and hard_grad:
            torch.addcmul(xf, L[:, :Vs], f, out=x)
        else:
            torch.mul(L[:, :Vs], f, out=x)
        return loss, (soft, hard), x

    def _fused(self, r0: int, r1: int, x: torch.Tensor, t: torch.Tensor, grads: bool):
        """jsd_logits_fwd: the block's JSD (and the folded hard loss) and d loss / d raw student
        logits written over x; a separate hard loss (T != 1 or Vs < Vt) goes through the
        cross-entropy kernel first, over an fp32 copy of the raw logits, added afterwards."""
        R, T = self.rows, self.T
        sep = self.raw and not self.fold
        hard_grad = grads and self.raw and self.w_hard != 0.0
        # a copy even of fp32 logits: the kernel overwrites x after the hard loss's gradient is in xf
        xf = x.to(F32, copy=True) if sep and hard_grad else None
        hard = None
        if sep:  # reads the raw logits before the kernel overwrites them
            rs = (self.w_hard / R.n).expand(x.shape[0]).contiguous() if hard_grad else None
            hard = M.hard_ce(x, xf, self.y[r0:r1], self.denom, rs, self.ignore_index).sum() / R.n
        if self.fold:
            labels, ii = self.y[r0:r1], self.ignore_index
        else:
            labels, ii = R.klab[r0:r1], 1
        rows, hrows = M.jsd_logits(x, t, labels, ii, R.inv_n, self.beta, 1.0 / T if self.raw else 1.0,
                                   self.w_soft / T, self.w_hard if hard_grad else 0.0, self.fold, grads)
        soft = rows.sum() / R.n
        if self.fold:
            hard = hrows.sum() / R.n
        elif hard is None:
            hard = torch.zeros((), dtype=F32, device=x.device)
        loss = self.w_hard * hard + self.w_soft * soft
        if not grads:
            return loss, (soft, hard), None
        if xf is not None:
            torch.add(xf, x, out=x)
        return loss, (soft, hard), x


class _Cosine:
    """One block's cosine distillation loss and gradient over the student's logits; both heads'
    logits raw (with the hard loss) or both tempered (cos is scale-free)."""

    def __init__(self, rows: _Rows, beta: float, T: float, w_soft: float, w_hard: float, raw: bool, y=None,
                 denom=None, ignore_index: int = -100):
        self.rows, self.beta, self.T = rows, float(beta), float(T)
        self.w_soft, self.w_hard, self.raw = float(w_soft), float(w_hard), raw
        self.y, self.denom, self.ignore_index = y, denom, ignore_index

    def __call__(self, r0: int, r1: int, x: torch.Tensor, t: torch.Tensor, grads: bool):
        R = self.rows
        vc = R.valid[r0:r1]
        c = x.shape[0]
        hard_grad = grads and self.raw and self.w_hard != 0.0
        # d loss / d raw logits per row: w_soft / n at non-ignored rows, / T through tempered logits
        k = vc * ((self.w_soft if self.raw else self.w_soft / self.T) / R.n)
        rows, xf, G = M.cosine_block(x, t, self.beta, k, grads)
        soft = (rows * vc).sum() / R.n
        if self.raw:
            rs = (self.w_hard / R.n).expand(c).contiguous() if hard_grad else None
            hard = M.hard_ce(x, xf, self.y[r0:r1], self.denom, rs, self.ignore_index).sum() / R.n
        else:
            hard = torch.zeros((), dtype=F32, device=x.device)
        loss = self.w_hard * hard + self.w_soft * soft
        if not grads:
            return loss, (soft, hard), None
        if hard_grad:
            torch.add(xf, G, out=x)
        else:
            x.copy_(G)
        return loss, (soft, hard), x


@torch.compiler.disable
def _distill(op, kind, student_input, student_weight, teacher_input, teacher_weight, true_labels, student_bias,
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
    T = float(temperature)
    out = {}

    def go():
        # The student's logits raw when the hard loss needs them, else tempered by the GEMM (alpha
        # 1/T); the teacher's tempered (JSD), or as the student's (cosine is scale-free).
        s_temp = 1.0 if compute_ce else T
        t_temp = T if kind == "jsd" else s_temp
        s = E.Linear(_rows2(student_input.detach()), student_weight.detach(),
                     student_bias.detach() if student_bias is not None else None, s_temp, *need)
        s.shape = student_input.shape
        t = E.Linear(_rows2(teacher_input.detach()), teacher_weight.detach(),
                     teacher_bias.detach() if teacher_bias is not None else None, t_temp)
        Vs, Vt = s.V, t.V
        row_bytes = Vs * student_input.element_size() + Vt * teacher_input.element_size()
        C = E.chunk_rows(op, BT, Vs, student_input.element_size(), row_bytes)
        temps = M.FP32_TEMPS * Vt
        if kind == "jsd" and M.fused_enabled():  # one kernel a chunk; fp32 only for a separate hard loss
            temps = M.FUSED_SEP_TEMPS * Vs if compute_ce and not (T == 1.0 and Vs == Vt) else 0
        S = E.sub_rows(BT, Vs, student_input.element_size(), temps, C)
        rows = _Rows(y != ignore_index)
        denom, check = E.target_denom(op, y, Vs, ignore_index) if compute_ce else (None, None)
        hard = dict(y=y, denom=denom, ignore_index=ignore_index)
        if kind == "jsd":
            block = _Jsd(rows, M.LseSource(min(S, BT), Vt, student_input.device), beta, T, weight_soft_loss,
                         weight_hard_loss, compute_ce, Vs=Vs, Vt=Vt, **hard)
        else:
            block = _Cosine(rows, beta, T, weight_soft_loss, weight_hard_loss, compute_ce, **hard)
        pending = {"check": check} if check is not None else {}

        def chunk_loss(r0, r1, logits):
            res = block(r0, r1, logits[0], logits[1], s.wants_grads)
            if pending:  # a bad target raises once the first block's work is queued
                pending.pop("check")()
            return res

        res = E.logits_sweep(op, [s, t], BT, C, chunk_loss, S)
        zero = torch.zeros((), dtype=F32, device=student_input.device)
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
        return _distill("fused_linear_jsd_loss", "jsd", student_input, student_weight, teacher_input,
                        teacher_weight, true_labels, student_bias, teacher_bias, weight_hard_loss, weight_soft_loss,
                        beta, ignore_index, temperature, return_soft_hard_loss)


class LigerFusedLinearCosineSimilarityFunction:
    @staticmethod
    def apply(student_input, student_weight, teacher_input, teacher_weight, true_labels, student_bias=None,
              teacher_bias=None, weight_hard_loss=0.5, weight_soft_loss=0.5, beta=0.5, ignore_index=-100,
              temperature=1.0, compiled=True, chunk_size=1024, return_soft_hard_loss=False):
        return _distill("fused_linear_cosine_loss", "cosine", student_input, student_weight, teacher_input,
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
        # Both heads' logits tempered by their GEMMs (alpha 1/T): no hard loss here.
        s = E.Linear(_rows2(student_input.detach()), student_weight.detach(), None, temperature, need[0], need[1],
                     False, dw_dtype=accum_dtype)
        s.shape = student_input.shape
        t = E.Linear(_rows2(teacher_input.detach()), teacher_weight.detach(), None, temperature)
        V = s.V
        row_bytes = V * (student_input.element_size() + teacher_input.element_size())
        C = E.chunk_rows(op, BT, V, student_input.element_size(), row_bytes)
        S = E.sub_rows(BT, V, student_input.element_size(), 0 if M.fused_enabled() else M.FP32_TEMPS * V, C)
        block = _Jsd(_Rows(valid), M.LseSource(min(S, BT), V, student_input.device), jsd_beta, temperature, 1.0,
                     0.0, False, Vs=V, Vt=V)

        def chunk_loss(r0, r1, logits):
            loss, _, g = block(r0, r1, logits[0], logits[1], s.wants_grads)
            return loss, (), g

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
        # The student's logits tempered by the GEMM (alpha 1/T).
        s = E.Linear(_rows2(student_input.detach()), student_weight.detach(), None, temperature, need[0], need[1],
                     False, dw_dtype=accum_dtype)
        s.shape = student_input.shape
        C = E.chunk_rows(op, BT, V, student_input.element_size())
        S = E.sub_rows(BT, V, student_input.element_size(), M.FP32_TEMPS * V, C)
        n = valid.sum().to(F32)
        if reduction == "batchmean":
            scale = torch.where(n > 0, 1.0 / n.clamp(min=1), 0.0)
        elif reduction == "mean":
            scale = torch.where(n > 0, 1.0 / (n.clamp(min=1) * V), 0.0)
        else:
            scale = torch.ones((), device=n.device)
        lse = M.LseSource(min(S, BT), V, student_input.device)
        g_scale = scale * (-1.0 / float(temperature))   # d loss / d lp = -q; through the GEMM's 1/T

        def chunk_loss(r0, r1, logits):
            x = logits[0]
            vc = valid[r0:r1]
            q = q_all[r0:r1].detach().to(F32)
            if q.stride(-1) != 1:
                q = q.contiguous()
            lp = M.log_probs(x, V, lse(x))
            loss = (M.kl_rows(lp, q, eps) * vc).sum() * scale
            if not s.wants_grads:
                return loss, (), None
            L = M.lsb(q, lp)          # q - softmax * sum(q)
            del lp
            torch.mul(L, (vc * g_scale)[:, None], out=x)
            return loss, (), x

        res = E.logits_sweep(op, [s], BT, C, chunk_loss, S)
        total = torch.stack([r[0] for r in res]).sum() if res else torch.zeros((), device=student_input.device)
        dx, dW, _ = s.grads()
        return total, dx, dW, None

    return E.FusedLinearLoss.apply(student_input, student_weight, None, go)
