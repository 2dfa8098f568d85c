"""A float64 stand-in for ligerd's executor in the CPU tests.

For every executor op, a reference that honours the op's tensor/scalar contract exactly as
kernels/ops/<op>.cc states it (outputs written only after every read, since an output may alias
an input), and ``RefLauncher``, which records each call and runs the reference. Installed as
``ligerd._backend._test_launcher`` (``install``), it lets everything but the CUDA kernels run on
the CPU: the kernels themselves are tested against float64 on the GPU (tests/gpu/test_<op>.py)."""

from __future__ import annotations

import math
from typing import Callable, Dict

import torch

from ligerd._entries import ENTRIES
from ligerd.testing.reference import ce_slice as ce_slice_ref
from ligerd.testing.reference import clamped_glu as clamped_glu_ref
from ligerd.testing.reference import distill as distill_ref
from ligerd.testing.reference import jsd_logits as jsd_logits_ref
from ligerd.testing.reference import layer_norm as layer_norm_ref
from ligerd.testing.reference import relu_squared as relu_squared_ref
from ligerd.testing.reference import rms_norm as rms_norm_ref
from ligerd.testing.reference import softmax as softmax_ref

HANDLERS: Dict[str, Callable] = {}


def handles(*ops: str):
    def register(fn):
        for op in ops:
            HANDLERS[op] = fn
        return fn
    return register


def shape_and_ptr(t):
    """The default call record of a tensor: (shape, data pointer); None for an absent one."""
    return None if t is None else (tuple(t.shape), t.data_ptr())


def shape_ptr_stride(t):
    return None if t is None else (tuple(t.shape), t.data_ptr(), tuple(t.stride()))


def shape_dtype_ptr(t):
    return None if t is None else (tuple(t.shape), t.dtype, t.data_ptr())


class Args(tuple):
    """An op's tensors or scalars in entry order, also by their entry names (``t.X``, ``s.eps``):
    the handlers below name what they read, and a name the entry does not have fails."""

    def __new__(cls, op: str, names, values):
        if len(values) != len(names):
            raise AssertionError(f"{op}: {len(values)} values for the entry's {len(names)} "
                                 f"({', '.join(names)})")
        obj = super().__new__(cls, values)
        obj._index = {n: i for i, n in enumerate(names)}
        obj._op = op
        return obj

    def __getattr__(self, name):
        try:
            return self[self._index[name]]
        except KeyError:
            raise AttributeError(f"{self._op}: the entry has no {name!r} "
                                 f"(it has {', '.join(self._index)})") from None


class RefLauncher:
    """Records (op, [describe(tensor)], scalars) per call, then runs the op's reference with the
    tensors and scalars named as the op's entry (kernels/ops/<family>.toml) names them."""

    def __init__(self, describe: Callable = shape_and_ptr):
        self.describe = describe
        self.calls = []

    def __call__(self, op, tensors, scalars):
        self.calls.append((op, [self.describe(t) for t in tensors], list(scalars)))
        handler = HANDLERS.get(op)
        if handler is None or op not in ENTRIES:
            raise AssertionError(f"RefLauncher: no reference for op {op!r}")
        tnames, snames = ENTRIES[op]
        handler(op, Args(op, [t[0] for t in tnames], list(tensors)), Args(op, snames, list(scalars)))


def install(monkeypatch, describe: Callable = shape_and_ptr) -> RefLauncher:
    from ligerd import _backend
    launcher = RefLauncher(describe)
    monkeypatch.setattr(_backend, "_test_launcher", launcher)
    return launcher


# ---- RMSNorm and fused add + RMSNorm (kernels/ops/rms_norm.cc) ------------------------------

@handles("rms_norm_fwd")
def _rms_norm_fwd(op, t, s):
    x, w, y, rstd = t.X, t.W, t.Y, t.RSTD
    eps, offset, mode = s.eps, s.offset, s.casting_mode
    r = rms_norm_ref.forward(x, w, eps, offset, int(mode))
    y.copy_(r.y.to(y.dtype))
    rstd.copy_(r.rstd.to(rstd.dtype))


@handles("rms_norm_bwd")
def _rms_norm_bwd(op, t, s):
    dy, x, w, rstd, dx, dw = t.dY, t.X, t.W, t.RSTD, t.dX, t.dW
    offset, mode = s.offset, s.casting_mode
    r = rms_norm_ref.backward(dy, x, w, 0.0, offset, int(mode), rstd=rstd)
    dx.copy_(r.dx.to(dx.dtype))  # after every read of dy: dx may alias dy
    if dw is not None:
        dw.copy_(r.dw.to(dw.dtype))


@handles("fused_add_rms_norm_fwd")
def _fused_add_rms_norm_fwd(op, t, s):
    x, r, w, y, ss, rstd = t.X, t.R, t.W, t.Y, t.S, t.RSTD
    eps, offset, mode = s.eps, s.offset, s.casting_mode
    s = ss
    s.copy_((x.double() + r.double()).to(s.dtype))
    rr = rms_norm_ref.forward(s, w, eps, offset, int(mode))
    y.copy_(rr.y.to(y.dtype))
    rstd.copy_(rr.rstd.to(rstd.dtype))


@handles("fused_add_rms_norm_bwd")
def _fused_add_rms_norm_bwd(op, t, s):
    dy, ds, sv, w, rstd, dx, dw = t.dY, t.dS, t.S, t.W, t.RSTD, t.dX, t.dW
    offset, mode = s.offset, s.casting_mode
    s = sv
    rr = rms_norm_ref.backward(dy, s, w, 0.0, offset, int(mode), rstd=rstd)
    total = rr.dx + (ds.double() if ds is not None else 0.0)
    dx.copy_(total.to(dx.dtype))  # after every read of dy: dx may alias dy
    if dw is not None:
        dw.copy_(rr.dw.to(dw.dtype))


# ---- LayerNorm (kernels/ops/layer_norm.cc) ---------------------------------------------------

@handles("layer_norm_fwd")
def _layer_norm_fwd(op, t, s):
    x, w, b, y, mean, rstd = t.X, t.W, t.B, t.Y, t.MEAN, t.RSTD
    eps = s.eps
    assert mean.dtype == rstd.dtype == torch.float32
    r = layer_norm_ref.forward(x, w, b, eps)
    y.copy_(r.y.to(y.dtype))
    mean.copy_(r.mean)
    rstd.copy_(r.rstd)


@handles("layer_norm_bwd")
def _layer_norm_bwd(op, t, s):
    dy, x, w, mean, rstd, dx, dw, db = t.dY, t.X, t.W, t.MEAN, t.RSTD, t.dX, t.dW, t.dB
    # eps is not an input of the backward: recover it from the saved rstd (the reference
    # recomputes the statistics from x).
    var = ((x.double() - x.double().mean(-1, keepdim=True)) ** 2).mean(-1)
    eps = float((rstd.double() ** -2 - var).mean()) if x.shape[0] else 0.0
    r = layer_norm_ref.backward(dy, x, w, eps)
    dx.copy_(r.dx.to(dx.dtype))
    if dw is not None:
        dw.copy_(r.dw.to(dw.dtype))
    if db is not None:
        db.copy_(r.db.to(db.dtype))


# ---- softmax (kernels/ops/softmax.cc) ---------------------------------------------------------

@handles("softmax_fwd")
def _softmax_fwd(op, t, s):
    x, y = t.X, t.Y
    assert y.shape == x.shape and y.dtype == x.dtype
    assert all(u.shape[-1] <= 1 or u.stride(-1) == 1 for u in t), "contiguous last dim"
    y.copy_(softmax_ref.forward(x).y.to(y.dtype))


@handles("softmax_bwd")
def _softmax_bwd(op, t, s):
    dy, y, dx = t.dY, t.Y, t.dX
    assert dy.shape == y.shape == dx.shape and dy.dtype == y.dtype == dx.dtype
    assert all(u.shape[-1] <= 1 or u.stride(-1) == 1 for u in t), "contiguous last dim"
    r = softmax_ref.backward(dy, y)
    dx.copy_(r.dx.to(dx.dtype))  # after every read of dy: dx may alias dy


# ---- squared ReLU (kernels/ops/relu_squared.cc) -----------------------------------------------

@handles("relu_squared_fwd")
def _relu_squared_fwd(op, t, s):
    x, y = t.X, t.Y
    assert y.shape == x.shape and y.dtype == x.dtype
    assert all(u.shape[-1] <= 1 or u.stride(-1) == 1 for u in t), "contiguous last dim"
    y.copy_(relu_squared_ref.forward(x).to(y.dtype))


@handles("relu_squared_bwd")
def _relu_squared_bwd(op, t, s):
    dy, x, dx = t.dY, t.X, t.dX
    assert dy.shape == x.shape == dx.shape and dy.dtype == x.dtype == dx.dtype
    assert all(u.shape[-1] <= 1 or u.stride(-1) == 1 for u in t), "contiguous last dim"
    r = relu_squared_ref.backward(dy, x)
    dx.copy_(r.to(dx.dtype))  # after every read of dy: dx may alias dy


# ---- clamped GLU (kernels/ops/clamped_glu.cc) -------------------------------------------------

def _clamped_glu_scalars(op, s):
    alpha, limit, off, pairs = s.alpha, s.limit, s.up_offset, s.pairs
    assert math.isfinite(alpha) and math.isfinite(off), f"{op}: alpha, up_offset finite"
    assert limit >= 0, f"{op}: limit >= 0"  # also refuses NaN
    assert pairs in (0.0, 1.0), f"{op}: pairs 0 or 1"
    return alpha, limit, off, pairs == 1.0


@handles("clamped_glu_fwd")
def _clamped_glu_fwd(op, t, s):
    x, y = t.X, t.Y
    assert x.shape[-1] % 2 == 0 and y.shape == x.shape[:-1] + (x.shape[-1] // 2,)
    assert y.dtype == x.dtype
    assert all(u.shape[-1] <= 1 or u.stride(-1) == 1 for u in t), "contiguous last dim"
    y.copy_(clamped_glu_ref.forward(x, *_clamped_glu_scalars(op, s)).to(y.dtype))


@handles("clamped_glu_bwd")
def _clamped_glu_bwd(op, t, s):
    dy, x, dx = t.dY, t.X, t.dX
    assert dx.shape == x.shape and dy.shape == x.shape[:-1] + (x.shape[-1] // 2,)
    assert dy.dtype == x.dtype == dx.dtype
    assert all(u.shape[-1] <= 1 or u.stride(-1) == 1 for u in t), "contiguous last dim"
    dx.copy_(clamped_glu_ref.backward(dy, x, *_clamped_glu_scalars(op, s)).to(dx.dtype))


# ---- SwiGLU / GeGLU (kernels/ops/glu.cc) -----------------------------------------------------

K0 = math.sqrt(2.0 / math.pi)


def act_and_grad(x, kind):
    """act(x) and act'(x) for kind "swiglu" (silu) or "geglu" (tanh GELU)."""
    if kind == "swiglu":
        s = torch.sigmoid(x)
        return x * s, s * (1 + x * (1 - s))
    t = torch.tanh(K0 * (x + 0.044715 * x ** 3))
    return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K0 * (1 + 3 * 0.044715 * x * x)


@handles("swiglu_fwd", "geglu_fwd", "swiglu_bwd", "geglu_bwd")
def _glu(op, t, s):
    kind, direction = op.split("_")
    if direction == "fwd":
        a, b, c = t.A, t.B, t.C
        f, _ = act_and_grad(a.double(), kind)
        c.copy_(f * b.double())
    else:
        dc, a, b, da, db = t.dC, t.A, t.B, t.dA, t.dB
        f, g = act_and_grad(a.double(), kind)
        dcd, bd = dc.double(), b.double()
        ra, rb = dcd * bd * g, dcd * f
        da.copy_(ra)  # after every read: da may be a, db may be b
        db.copy_(rb)


# ---- RoPE (kernels/ops/rope.cc) ----------------------------------------------------------------

def _span(t):
    if t.numel() == 0:
        return (0, 0)
    last = sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


@handles("rope_fwd", "rope_bwd")
def _rope(op, t, s):
    assert op in ("rope_fwd", "rope_bwd")
    q, k, cos, sin, qo, ko = t  # (d)Q, (d)K, COS, SIN, (d)Q_out, (d)K_out: the same places
    # The executor's contract: 4-D q/k, 3-D cos/sin, stride-1 last dims, outputs exactly the
    # inputs or disjoint from everything.
    assert q.dim() == 4 and k.dim() == 4 and cos.dim() == 3 and sin.shape == cos.shape
    for u in t:
        assert u.shape[-1] <= 1 or u.stride(-1) == 1, "the kernels need a contiguous last dim"
    for out, inp in ((qo, q), (ko, k)):
        if out.numel() and not (out.data_ptr() == inp.data_ptr() and out.stride() == inp.stride()):
            for other in (q, k, cos, sin, qo if out is ko else ko):
                a, b = _span(out), _span(other)
                assert other.numel() == 0 or a[1] <= b[0] or b[1] <= a[0], "output overlaps"
    c = cos.double().unsqueeze(1)
    s = sin.double().unsqueeze(1)
    h = q.shape[-1] // 2
    res = []
    for x in (q, k):
        x = x.double()
        lo, hi = x[..., :h], x[..., h:]
        if op == "rope_fwd":
            y = torch.cat([lo * c[..., :h] - hi * s[..., :h], hi * c[..., h:] + lo * s[..., h:]], -1)
        else:
            y = torch.cat([lo * c[..., :h] + hi * s[..., h:], hi * c[..., h:] - lo * s[..., :h]], -1)
        res.append(y)
    qo.copy_(res[0])  # after every read: outputs may be the inputs
    ko.copy_(res[1])


# ---- cross-entropy (kernels/ops/cross_entropy.cc) -------------------------------------------------

@handles("cross_entropy_count")
def _cross_entropy_count(op, t, s):
    target, weight, denom = t.target, t.weight, t.denom
    ii, V = int(s.ignore_index), int(s.num_classes)
    valid = target != ii
    inr = (target >= 0) & (target < V)
    ok = valid & inr
    w = weight.double() if weight is not None else None
    sw = w[target[ok]].sum() if w is not None else ok.sum().double()
    denom.copy_(torch.stack([ok.sum().double(), sw, w.sum() if w is not None else torch.tensor(0.0, dtype=torch.float64),
                             (valid & ~inr).sum().double()]))

@handles("cross_entropy_fwd")
def _cross_entropy_fwd(op, t, s):
    x, target, weight, denom, row_scale, dx, loss, z_loss, pred = (
        t.X, t.target, t.weight, t.denom, t.row_scale, t.dX, t.loss, t.z_loss, t.pred)
    ii, lss, ls, red, cap, ts = (s.ignore_index, s.lse_square_scale, s.label_smoothing, s.reduction,
                                 s.softcap, s.token_scaling)
    ii, red = int(ii), int(red)
    xd = x.double()
    V = x.shape[1]
    if cap > 0:
        th = torch.tanh(xd / cap)
        z = cap * th
    else:
        z = xd
    lse = torch.logsumexp(z, dim=1)
    p = torch.softmax(z, dim=1)
    ignored = target == ii
    valid = (~ignored) & (target >= 0) & (target < V)
    ty = target.clamp(0, V - 1)
    zy = z.gather(1, ty[:, None])[:, 0]
    zy = torch.where(valid, zy, torch.full_like(zy, float("nan")))
    w = weight.double() if weight is not None else torch.ones(V, dtype=torch.float64)
    wy = torch.where(valid, w[ty], torch.full_like(zy, float("nan")))
    W = w.sum()
    eps = ls / V
    n, sw = (denom[0].double(), denom[1].double()) if red == 1 else (1.0, 1.0)
    l = wy * (lse - zy)
    if ls > 0:
        l = l * (1 - ls) + eps * (W * lse - (w * z).sum(1))
    zl = lss * lse * lse / n
    l = l / sw
    A = ((1 - ls) * wy + eps * W) / sw + 2 * lss * lse / n
    B = -eps / sw
    C = -(1 - ls) * wy / sw
    f = row_scale.double() if row_scale is not None else torch.ones_like(lse)
    if ts:
        py = torch.exp(zy - lse)
        l, zl, f = l * py, zl * py, f * py
    g = (A[:, None] * p + B * w[None, :]) * f[:, None]
    g.scatter_add_(1, ty[:, None], (C * f)[:, None] * valid[:, None].double())
    if cap > 0:
        g = g * (1 - th * th)
    g[ignored] = 0
    l = torch.where(ignored, torch.zeros_like(l), l + zl)
    zl = torch.where(ignored, torch.zeros_like(zl), zl)
    am = z.argmax(dim=1)
    loss.copy_(l)
    if z_loss is not None:
        z_loss.copy_(zl)
    if pred is not None:
        pred.copy_(torch.where(ignored, torch.full_like(am, -1), am))
    if dx is not None:
        dx.copy_(g)  # after every read: dx may be x

# ---- vocabulary-sliced cross-entropy steps (kernels/ops/ce_slice.cc) ---------------------------

@handles("ce_slice_stats")
def _ce_slice_stats(op, t, s):
    st, idx = ce_slice_ref.stats_update(t.X, t.target, t.weight, t.stats, t.idx, int(s.v0), bool(s.first),
                                        float(s.softcap))
    t.stats.copy_(st)
    if t.idx is not None:
        t.idx.copy_(idx)


@handles("ce_slice_grad")
def _ce_slice_grad(op, t, s):
    g = ce_slice_ref.grad(t.X, t.target, t.weight, t.coef, int(s.v0), float(s.softcap), int(s.ignore_index))
    t.dX.copy_(g)  # after every read: dX may be X


@handles("cross_entropy_scale")
def _cross_entropy_scale(op, t, s):
    g, f = t.G, t.s
    if f.numel() == 1:
        if float(f) != 1.0:
            g.mul_(f.double().to(g.dtype) if g.dtype == torch.float64 else float(f))
    else:
        g.copy_(g.double() * f.double()[:, None])


# ---- distillation losses (kernels/ops/distill.cc) -----------------------------------------------

def _rows2(u):
    """A [..., n] tensor as [rows, n] (a view where its rows have one pitch, as the kernels see it)."""
    return u.reshape(-1, u.shape[-1]) if u.dim() != 2 else u


@handles("kl_div_fwd")
def _kl_div_fwd(op, t, s):
    x, target, loss = t.X, t.target, t.loss
    log_target, red, eps = int(s.log_target), int(s.reduction), float(s.eps)
    assert target.shape == x.shape and target.dtype == x.dtype and loss.dtype == torch.float32
    e = distill_ref.kl_div(x, target, bool(log_target), eps)
    if red == 0:
        assert loss.shape == x.shape
        loss.copy_(e.loss)
    else:
        assert loss.shape == (_rows2(x).shape[0],)
        loss.copy_(_rows2(e.loss).sum(-1))


@handles("kl_div_bwd")
def _kl_div_bwd(op, t, s):
    target, g, dx = t.target, t.G, t.dX
    assert dx.shape == target.shape and dx.dtype == target.dtype and g.dtype == torch.float32
    assert g.numel() == 1 or g.shape == target.shape
    gg = g.reshape(()) if g.numel() == 1 else g
    dx.copy_(distill_ref.kl_div_grad(target, gg, bool(int(s.log_target)), float(s.scale)).grad)


def _labels_and_count(t, rows):
    labels, n_valid = t.labels, t.n_valid
    assert (labels is None) == (n_valid is None), "labels and n_valid go together"
    if labels is not None:
        assert labels.shape == (rows,) and labels.dtype == torch.int64 and n_valid.shape == (1,)
    return labels


@handles("jsd_fwd")
def _jsd_fwd(op, t, s):
    x, y, loss, dx = t.X, t.Y, t.loss, t.dX
    beta, ii = float(s.beta), int(s.ignore_index)
    assert y.shape == x.shape and y.dtype == x.dtype and 0.0 <= beta <= 1.0
    x2, y2 = _rows2(x), _rows2(y)
    labels = _labels_and_count(t, x2.shape[0])
    if labels is not None:  # the kernel trusts the caller's count: check it is the count
        assert int(t.n_valid[0]) == int((labels != ii).sum())
    rows, _, grad, _ = distill_ref.jsd_rows(x2, y2, beta, labels, ii)
    assert loss.shape == (x2.shape[0],) and loss.dtype == torch.float32
    loss.copy_(rows)
    if dx is not None:
        assert dx.shape == x.shape and dx.dtype == x.dtype
        dx.copy_(grad.reshape(dx.shape))


@handles("tvd_fwd")
def _tvd_fwd(op, t, s):
    p, q, loss, grad = t.P, t.Q, t.loss, t.grad
    red, ii = int(s.reduction), int(s.ignore_index)
    assert q.shape == p.shape and q.dtype == p.dtype and loss.dtype == torch.float32
    p2, q2 = _rows2(p), _rows2(q)
    labels = _labels_and_count(t, p2.shape[0])
    if labels is not None:
        assert int(t.n_valid[0]) == int((labels != ii).sum())
    name = {v: k for k, v in distill_ref.REDUCTIONS.items()}[red]
    value, _, g = distill_ref.tvd(p2, q2, name, labels, ii)
    loss.copy_(value.reshape(loss.shape))
    if grad is not None:
        assert grad.shape == p.shape and grad.dtype == p.dtype
        grad.copy_(g.reshape(grad.shape))


@handles("jsd_logits_fwd")
def _jsd_logits_fwd(op, t, s):
    st, te, labels, scale = t.student, t.teacher, t.labels, t.scale
    loss, hard_loss, ds = t.loss, t.hard_loss, t.d_student
    assert st.dim() == 2 and te.dim() == 2 and te.dtype == st.dtype
    assert te.shape[0] == st.shape[0] and te.shape[1] >= st.shape[1], "teacher [rows, nt >= ns]"
    assert st.stride(-1) == 1 and te.stride(-1) == 1, "contiguous last dim"
    rows = st.shape[0]
    beta, ii = float(s.beta), int(s.ignore_index)
    assert 0.0 <= beta <= 1.0
    if labels is not None:
        assert labels.shape == (rows,) and labels.dtype == torch.int64
    assert scale.shape == (1,) and scale.dtype == torch.float32
    assert loss.shape == (rows,) and loss.dtype == torch.float32
    hard = hard_loss is not None
    if hard:  # the planner's contract: one softmax for both losses
        assert labels is not None and float(s.s_scale) == 1.0 and st.shape[1] == te.shape[1]
        assert hard_loss.shape == (rows,) and hard_loss.dtype == torch.float32
    r = jsd_logits_ref.jsd_logits(st, te, beta, float(s.s_scale), float(s.t_scale), labels, ii,
                                  float(scale[0]), float(s.soft_coef), float(s.hard_coef), hard)
    loss.copy_(r.loss)  # outputs after every read: d_student may alias student
    if hard:
        hard_loss.copy_(r.hard_loss)
    if ds is not None:
        assert ds.shape == st.shape and ds.dtype == st.dtype
        ds.copy_(r.grad)


@handles("gemm")
def _gemm(op, t, s):
    a, b, c, d, bias = t.A, t.B, t.C, t.D, t.bias
    alpha, beta = s.alpha, s.beta
    r = alpha * (a.double() @ b.double())
    if beta != 0.0:
        r = r + beta * c.double()
    if bias is not None:
        r = r + bias.double()
    d.copy_(r)  # after every read: d may be c
