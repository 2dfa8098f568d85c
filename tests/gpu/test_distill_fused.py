"""The fused JSD distillation kernel (jsd_logits_fwd, kernels/ops/distill_jsd_logits.cuh) on the GPU,
and the chunked JSD losses on it (LIGERD_DISTILL_FUSED=1); every test in local, then remote dispatch.

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest tests/gpu/test_distill_fused.py).
Skips without CUDA; the remote half needs $LIGERD_BIN (a ligerd built with this op).

Tolerances:
- The op against ligerd/testing/reference/jsd_logits.py (float64 on the same rounded inputs),
  elementwise: the row loss within the reference's loss_err (the kernel's fp32 log-softmaxes
  off by 16 u32 (|x| + |lse| + ...) moving each element's JSD terms by that times their
  magnitude, the elements' own 16 u32 bounds, and 1e-5 of the sum of magnitudes for the fp32
  row sum) + TINY; the hard loss within 16 u32 (|lse| + |s[y]| + 1) + 1e-5 |lse| (the row's
  sum of exponentials, fp32); d_student within grad_err (the same error terms through
  g - q sum(g), times |scale * soft_coef|, plus the hard term's) and, in 16-bit dtypes, one
  rounding to the dtype (u |ref|) + the dtype's TINY. Poisoned (NaN) outputs show any element
  the kernel did not write.
- The chunked losses, fused against the default path: both against the float64 unchunked
  reference (ligerd.testing.reference.chunked_loss) on the same rounded inputs, norm-wise: the
  fused path's error at most 2x the default path's, or a floor (fp32 2e-5; bf16 2^-7, one bf16
  rounding of the logits), as tests/gpu/test_chunked_loss.py judges against torch.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

from ligerd import _backend  # noqa: E402
from ligerd import chunked_loss as CL  # noqa: E402
from ligerd.testing import gpu as _util  # noqa: E402
from ligerd.testing.gpu import DEV, TINY, U, assert_close, assert_ran_in, nan_like, param_id as _id, rel_err  # noqa: E402
from ligerd.testing.reference import chunked_loss as R  # noqa: E402
from ligerd.testing.reference.jsd_logits import jsd_logits  # noqa: E402
from ligerd.transformers import LigerFusedLinearJSD  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_tf32")  # conftest.py

II = -100
U32 = U[torch.float32]
DTYPES = [torch.float32, torch.bfloat16]
VOCABS = [32000, 128256, 151936]
BETAS = [0.0, 0.5, 1.0]
FLOOR = {torch.float32: 2e-5, torch.bfloat16: 2.0 ** -7}
CACHE = os.environ.get("LIGERD_CACHE_DIR") or tempfile.mkdtemp(prefix="ligerd-distill-fused-cache-")


# ------------------------------------------------------------------------------------------
# Every test runs in local dispatch, then in remote dispatch on a private daemon (one module-scoped
# fixture: a function-scoped one resetting the mode would undo the remote half's).

@pytest.fixture(scope="module", params=["local", "remote"])
def dispatch(request):
    with _util.dispatch_pinned(request.param, cache_dir=CACHE, prefix="ligerd-distill-fused-test-") as mode:
        yield mode


# ------------------------------------------------------------------------------------------
# 1. The op against float64.

def make(rows, ns, nt, dtype, seed, spread=4.0, ignored=(1,)):
    g = torch.Generator(device=DEV).manual_seed(seed)
    s = (spread * torch.randn(rows, ns, generator=g, device=DEV)).to(dtype)
    t = (spread * torch.randn(rows, nt, generator=g, device=DEV)).to(dtype)
    y = torch.randint(0, ns, (rows,), generator=g, device=DEV)
    for i in ignored:
        y[i] = II
    return s, t, y


def run_op(s, t, y, beta, s_scale, scale, soft_coef, hard_coef, hard, in_place):
    """jsd_logits_fwd into NaN-poisoned outputs (d_student over a copy of s when in_place)."""
    rows = s.shape[0]
    loss = nan_like((rows,), torch.float32)
    hard_loss = nan_like((rows,), torch.float32) if hard else None
    src = s.clone()
    ds = src if in_place else nan_like(tuple(s.shape), s.dtype)
    _backend.call("jsd_logits_fwd", student=src, teacher=t, labels=y, scale=torch.tensor([scale], device=DEV),
                  loss=loss, hard_loss=hard_loss, d_student=ds, beta=beta, ignore_index=II, s_scale=s_scale,
                  t_scale=1.0, soft_coef=soft_coef, hard_coef=hard_coef)
    torch.cuda.synchronize()
    return loss, hard_loss, ds


def check(s, t, y, beta, ctx, s_scale=1.0, hard=False, in_place=False):
    scale, soft_coef, hard_coef = 1.0 / 3, 0.7 * s_scale, 0.3 if hard else 0.0
    loss, hl, ds = run_op(s, t, y, beta, s_scale, scale, soft_coef, hard_coef, hard, in_place)
    r = jsd_logits(s, t, beta, s_scale, 1.0, y, II, scale, soft_coef, hard_coef, hard)
    assert_close("loss", loss, r.loss, r.loss_err + TINY[torch.float32], ctx)
    if hard:
        lse = torch.logsumexp(s.double(), -1)
        tol = 16 * U32 * (lse.abs() + s.double().abs().max(-1).values + 1) + 1e-5 * lse.abs() + TINY[torch.float32]
        assert_close("hard_loss", hl, r.hard_loss, tol, ctx)
    tol = r.grad_err + TINY[torch.float32]
    if s.dtype != torch.float32:
        tol = tol * (1 + U[s.dtype]) + U[s.dtype] * r.grad.abs() + TINY[s.dtype]
    assert_close("d_student", ds, r.grad, tol, ctx)


@pytest.mark.parametrize("beta", BETAS, ids=_id)
@pytest.mark.parametrize("V", VOCABS, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_op_exact(dispatch, dtype, V, beta):
    s, t, y = make(3, V, V, dtype, seed=V + int(beta * 10))
    check(s, t, y, beta, f"{_id(dtype)} V={V} beta={beta}")
    check(s, t, y, beta, f"{_id(dtype)} V={V} beta={beta} hard in place", hard=True, in_place=True)


@pytest.mark.parametrize("shape", [(2, 31999, 32000), (3, 128000, 128256), (2, 151936, 152064), (4, 1000, 1003),
                                   (5, 7, 9)], ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_padded_and_tempered(dispatch, dtype, shape):
    """A student narrower than the teacher (zero padding; odd widths take the element kernel),
    raw student logits tempered in the kernel (s_scale = 1/T)."""
    rows, ns, nt = shape
    s, t, y = make(rows, ns, nt, dtype, seed=ns)
    for beta in BETAS:
        check(s, t, y, beta, f"{_id(dtype)} {shape} beta={beta}")
        check(s, t, y, beta, f"{_id(dtype)} {shape} beta={beta} T=1.7", s_scale=1 / 1.7, in_place=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_large_magnitudes_and_ignored_rows(dispatch, dtype):
    """Logits of spread 40 (sharp distributions, probabilities underflowing fp32) and every row
    ignored (zeros, inputs unread)."""
    s, t, y = make(4, 32000, 32000, dtype, seed=7, spread=40.0, ignored=(0, 3))
    for beta in BETAS:
        check(s, t, y, beta, f"{_id(dtype)} spread 40 beta={beta}", hard=True)
    y[:] = II
    loss, hl, ds = run_op(s, t, y, 0.5, 1.0, 1.0, 1.0, 0.5, True, False)
    assert (loss == 0).all() and (hl == 0).all() and (ds == 0).all()


# ------------------------------------------------------------------------------------------
# 2. The chunked losses, fused vs the default path.

def run(fn, tensors):
    leaves = R.leaves(*tensors)
    out = R.flat(fn(*leaves))
    out[0].backward()
    torch.cuda.synchronize()
    return [o.detach() for o in out], [t.grad for t in leaves]


def judge(name, fn, ref_fn, tensors, dtype, monkeypatch):
    tensors = [t.to(dtype) for t in tensors]
    monkeypatch.setenv("LIGERD_DISTILL_FUSED", "1")
    got, ggot = run(fn, tensors)
    monkeypatch.setenv("LIGERD_DISTILL_FUSED", "0")
    base, gbase = run(fn, tensors)
    want, gwant = run(ref_fn, [t.double() for t in tensors])
    for label, a, b, c in [(f"output {i}", *x) for i, x in enumerate(zip(got, base, want))] + \
                          [(f"grad {i}", *x) for i, x in enumerate(zip(ggot, gbase, gwant))]:
        assert torch.isfinite(a.float()).all(), f"{name} {label}: not finite"
        e, eb = rel_err(a, c), rel_err(b, c)
        assert e <= max(2 * eb, FLOOR[dtype]), \
            f"{name} {label}: fused error {e:.3g} vs float64, default path {eb:.3g}, floor {FLOOR[dtype]:.3g}"


def distill_inputs(BT, H, Vs, Vt, seed):
    g = torch.Generator(device=DEV).manual_seed(seed)
    sx = torch.randn(BT, H, device=DEV, generator=g)
    sW = torch.randn(Vs, H, device=DEV, generator=g) / H ** 0.5 * 2
    sb = torch.randn(Vs, device=DEV, generator=g) * 0.1
    tx = torch.randn(BT, H, device=DEV, generator=g)
    tW = torch.randn(Vt, H, device=DEV, generator=g) / H ** 0.5 * 2
    y = torch.randint(0, Vs, (BT,), device=DEV, generator=g)
    y[::9] = II
    return sx, sW, sb, tx, tW, y


# (temperature, Vs, Vt, w_hard, w_soft): the fold, the separate hard loss (T != 1; a wider
# teacher), soft only (logits tempered by the GEMMs)
PATHS = {
    "fold": (1.0, 32000, 32000, 0.3, 0.7),
    "hard-T2": (2.0, 32000, 32000, 0.3, 0.7),
    "hard-padded": (1.0, 32000, 32064, 0.3, 0.7),
    "soft-only": (2.0, 32000, 32000, 0.0, 1.0),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("beta", BETAS, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_chunked_jsd_fused_vs_default(dispatch, monkeypatch, dtype, beta, path):
    T, Vs, Vt, wh, ws = PATHS[path]
    sx, sW, sb, tx, tW, y = distill_inputs(1024, 512, Vs, Vt, seed=Vs + int(10 * beta))
    kw = dict(beta=beta, temperature=T, weight_hard_loss=wh, weight_soft_loss=ws)
    mod = CL.LigerFusedLinearJSDLoss(return_soft_hard_loss=True, **kw)
    judge(f"jsd {path} beta={beta} {_id(dtype)} {dispatch}", lambda a, w_, bb: mod(a, w_, tx.to(dtype), tW.to(dtype),
                                                                                    y, bb),
          lambda a, w_, bb: (lambda r: (r[0], *r[1]))(R.distillation("jsd", a, w_, tx.to(dtype).double(),
                                                                     tW.to(dtype).double(), y, bb,
                                                                     **kw)),
          [sx, sW, sb], dtype, monkeypatch)
    assert_ran_in(dispatch)


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_fused_linear_jsd_fused_vs_default(dispatch, monkeypatch, dtype):
    sx, sW, _, tx, tW, y = distill_inputs(1024, 512, 32000, 32000, seed=5)
    mod = LigerFusedLinearJSD(jsd_beta=0.5, temperature=1.5)
    judge(f"fused_linear_jsd {_id(dtype)} {dispatch}", lambda a, w_: mod(a, w_, tx.to(dtype), tW.to(dtype), y),
          lambda a, w_: R.fused_linear_jsd(a, w_, tx.to(dtype).double(), tW.to(dtype).double(), y, 0.5,
                                            II, 1.5), [sx, sW], dtype,
          monkeypatch)
    assert_ran_in(dispatch)
