"""Fused add + RMSNorm on the GPU through ligerd's local executor: exact against float64.

S = X + R must equal torch's ``residual + hidden`` bit for bit: the kernel adds in fp32 and
rounds once to X's dtype, and the fp32 sum of two bf16/fp16 values rounds to the same value as
the exact sum (where the fp32 sum is inexact the smaller addend is below half an ulp of the
result's dtype). Y and RSTD are RMSNorm of S (ligerd.testing.reference.rms_norm) with test_rms_norm.py's
tolerances, which are written out there (per casting mode: llama <= 2 ulps, gemma <= 1, none <=
4, + fp32 summation order). dX = dR = RMSNorm's dX of S + dS, rounded once: test_rms_norm's dX
tolerance around the summed reference (dS enters exactly). dW as RMSNorm's.
"""

from __future__ import annotations

import math

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction  # noqa: E402
from ligerd.transformers import LigerFusedAddRMSNorm, liger_fused_add_rms_norm  # noqa: E402

from ligerd.testing.reference import rms_norm as ref  # noqa: E402
from ligerd.testing.gpu import (DEV, DTYPES, U, assert_close, liger_peer, nan_like,  # noqa: E402
                   param_id as _id, poison_allocator)
# RMSNorm's tolerances, with their reasoning, are test_rms_norm.py's.
from ligerd.testing.reference.rms_norm import MODE_IDS as MODE_ID, dw_tol, dx_tol, fwd_tol, wmax  # noqa: E402

MODES = list(MODE_ID)  # llama, gemma, none

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

EPS = 1e-6
SHAPES = [(1, 1), (1, 4096), (3, 5120), (33, 2880), (2 * 37, 8191), (4096, 4096), (2, 70000), (5, 7)]


def make_inputs(rows, n, dtype, wdtype, offset, seed):
    g = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(rows, n, generator=g, device=DEV).to(dtype)
    r = (2.0 * torch.randn(rows, n, generator=g, device=DEV)).to(dtype)
    center = 1.0 if offset == 0 else 0.0
    w = (center + 0.5 * torch.randn(n, generator=g, device=DEV)).to(wdtype)
    dy = torch.randn(rows, n, generator=g, device=DEV).to(dtype)
    ds = torch.randn(rows, n, generator=g, device=DEV).to(dtype)
    return x, r, w, dy, ds


def exact_sum(x, r):
    return (x.double() + r.double()).to(x.dtype)


def total_dx_tol(dtype, mode, br: ref.BwdRef, total):
    """test_rms_norm's dX bound with |ref| taken of dnorm + dS (the value rounded once)."""
    base = dx_tol(dtype, mode, br)
    k_out = 1e-5 if dtype == torch.float32 else 2 * U[dtype]
    return base - k_out * br.dx.abs() + k_out * total.abs()


@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("grad_s", [True, False], ids=["dS", "nodS"])
@pytest.mark.parametrize("in_place", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_op_exact(dtype, mode, in_place, grad_s, shape):
    rows, n = shape
    offset = 1.0 if mode == "gemma" else 0.0
    ctx = f"{_id(dtype)} {mode} in_place={in_place} dS={grad_s} {rows}x{n}"
    x, r, w, dy, ds = make_inputs(rows, n, dtype, dtype, offset, seed=rows * 7919 + n)
    m = MODE_ID[mode]

    y = nan_like((rows, n), dtype)
    s = nan_like((rows, n), dtype)
    rstd = nan_like((rows,), torch.float32)
    _backend.launch("fused_add_rms_norm_fwd", [x, r, w, y, s, rstd], [EPS, offset, m])
    s_ref = exact_sum(x, r)
    assert torch.equal(s, s_ref), f"{ctx}: S != X + R ({int((s != s_ref).sum())} elements differ)"
    fr = ref.forward(s_ref, w, EPS, offset, m)
    assert_close("Y", y, fr.y, fwd_tol(dtype, mode, fr, wmax(w, offset)), ctx)
    rstd_tol = (4 * U[dtype] if mode == "none" and dtype != torch.float32 else 1e-5) * fr.rstd.abs()
    assert_close("RSTD", rstd, fr.rstd, rstd_tol, ctx)

    br = ref.backward(dy, s_ref, w, EPS, offset, m)
    total = br.dx + (ds.double() if grad_s else 0.0)
    dy_buf = dy.clone()
    dx = dy_buf if in_place else nan_like((rows, n), dtype)
    dw = nan_like((n,), dtype)
    poison_allocator()
    _backend.launch("fused_add_rms_norm_bwd", [dy_buf, ds if grad_s else None, s, w, rstd, dx, dw],
                    [offset, m])
    assert_close("dX", dx, total, total_dx_tol(dtype, mode, br, total), ctx)
    assert_close("dW", dw, br.dw, dw_tol(dtype, dtype, mode, br), ctx)
    if not in_place:
        assert torch.equal(dy_buf, dy), f"{ctx}: dY was modified by an out-of-place backward"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=_id)
def test_fp32_weight_with_half_input(dtype, mode):
    rows, n = 64, 4096
    m = MODE_ID[mode]
    x, r, w, dy, ds = make_inputs(rows, n, dtype, torch.float32, 0.0, seed=5)
    y, s = nan_like((rows, n), dtype), nan_like((rows, n), dtype)
    rstd = nan_like((rows,), torch.float32)
    _backend.launch("fused_add_rms_norm_fwd", [x, r, w, y, s, rstd], [EPS, 0.0, m])
    s_ref = exact_sum(x, r)
    assert torch.equal(s, s_ref)
    fr = ref.forward(s_ref, w, EPS, 0.0, m)
    assert_close("Y", y, fr.y, fwd_tol(dtype, mode, fr, wmax(w, 0.0)), f"fp32 W {mode}")
    dx, dw = nan_like((rows, n), dtype), nan_like((n,), torch.float32)
    _backend.launch("fused_add_rms_norm_bwd", [dy, ds, s, w, rstd, dx, dw], [0.0, m])
    br = ref.backward(dy, s_ref, w, EPS, 0.0, m)
    total = br.dx + ds.double()
    assert_close("dX", dx, total, total_dx_tol(dtype, mode, br, total), f"fp32 W {mode}")
    assert_close("dW", dw, br.dw, dw_tol(dtype, torch.float32, mode, br), f"fp32 W {mode}")


# ------------------------------------------------------------------------------------------
# The Liger-compatible surface: (normed, residual) outputs, dS flowing back, dR == dX.

@pytest.mark.parametrize("shape", [(2, 37, 8191), (2, 3, 5, 4096), (4, 2880), (1, 1, 1, 1), (1, 5120)], ids=_id)
@pytest.mark.parametrize("in_place", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_module_autograd(dtype, in_place, shape):
    n = shape[-1]
    rows = math.prod(shape[:-1])
    ctx = f"LigerFusedAddRMSNorm {_id(dtype)} in_place={in_place} {shape}"
    x2, r2, w, dy2, ds2 = make_inputs(rows, n, dtype, dtype, 0.0, seed=rows + n)
    mod = LigerFusedAddRMSNorm(n, eps=EPS, in_place=in_place).to(DEV, dtype)
    with torch.no_grad():
        mod.weight.copy_(w)
    x = x2.view(shape).clone().requires_grad_()
    r = r2.view(shape).clone().requires_grad_()
    poison_allocator(((rows, n), dtype), ((rows,), torch.float32))
    y, s = mod(x, r)
    assert y.shape == s.shape == x.shape and y.dtype == s.dtype == dtype
    s_ref = exact_sum(x2, r2)
    assert torch.equal(s.view(rows, n), s_ref), ctx
    fr = ref.forward(s_ref, w, EPS, 0.0, 0)
    assert_close("Y", y.view(rows, n), fr.y, fwd_tol(dtype, "llama", fr, wmax(w, 0.0)), ctx)
    poison_allocator(((rows, n), dtype), ((n,), dtype))
    torch.autograd.backward([y, s], [dy2.view(shape).clone(), ds2.view(shape)])
    br = ref.backward(dy2, s_ref, w, EPS, 0.0, 0)
    total = br.dx + ds2.double()
    tol = total_dx_tol(dtype, "llama", br, total)
    assert_close("dX", x.grad.view(rows, n), total, tol, ctx)
    assert_close("dR", r.grad.view(rows, n), total, tol, ctx)
    assert_close("dW", mod.weight.grad, br.dw, dw_tol(dtype, dtype, "llama", br), ctx)


def test_only_normed_output_used():
    """When S feeds nothing, no dS reaches the backward: dX = dR = RMSNorm's dX."""
    x2, r2, w, dy, _ = make_inputs(128, 4096, torch.bfloat16, torch.bfloat16, 0.0, seed=21)
    x, r = x2.clone().requires_grad_(), r2.clone().requires_grad_()
    y, _ = liger_fused_add_rms_norm(x, r, w, EPS, in_place=False)
    y.backward(dy)
    br = ref.backward(dy, exact_sum(x2, r2), w, EPS, 0.0, 0)
    assert_close("dX", x.grad, br.dx, dx_tol(torch.bfloat16, "llama", br), "no dS")
    assert torch.equal(x.grad, r.grad)


@pytest.mark.parametrize("kind", ["transposed", "sliced"])
def test_non_contiguous_inputs(kind):
    n, rows, dtype = 2048, 96, torch.bfloat16
    if kind == "transposed":
        x = torch.randn(n, rows, device=DEV).to(dtype).t()
        r = torch.randn(n, rows, device=DEV).to(dtype).t()
    else:
        x = torch.randn(rows, n + 64, device=DEV).to(dtype)[:, 5:5 + n]
        r = torch.randn(rows, n + 32, device=DEV).to(dtype)[:, 3:3 + n]
    assert not x.is_contiguous() and not r.is_contiguous()
    w = (1 + 0.5 * torch.randn(n, device=DEV)).to(dtype)
    y, s = liger_fused_add_rms_norm(x, r, w, EPS)
    s_ref = exact_sum(x, r)
    assert torch.equal(s, s_ref)
    fr = ref.forward(s_ref, w, EPS, 0.0, 0)
    assert_close("Y", y, fr.y, fwd_tol(dtype, "llama", fr, wmax(w, 0.0)), kind)


def test_function_apply_and_compile():
    torch._dynamo.reset()
    mod = LigerFusedAddRMSNorm(1024).to(DEV, torch.bfloat16)
    x = torch.randn(4, 128, 1024, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    r = torch.randn(4, 128, 1024, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    y1, s1 = LigerFusedAddRMSNormFunction.apply(x, r, mod.weight, 1e-6)
    y_e, s_e = mod(x, r)
    assert torch.equal(y1, y_e) and torch.equal(s1, s_e)
    (y_e.float().square().mean() + s_e.float().mean()).backward()
    ge = (x.grad.clone(), r.grad.clone(), mod.weight.grad.clone())
    x.grad = r.grad = None
    mod.zero_grad()
    y_c, s_c = torch.compile(mod, fullgraph=True)(x, r)
    (y_c.float().square().mean() + s_c.float().mean()).backward()
    assert torch.equal(y_c, y_e) and torch.equal(s_c, s_e)
    for a, c in zip((x.grad, r.grad, mod.weight.grad), ge):
        torch.testing.assert_close(a, c, rtol=2 ** -7, atol=1e-6)


@pytest.mark.parametrize("case", ["cpu", "r_shape", "r_dtype", "no_w", "w_size", "fp64"])
def test_bad_inputs(case):
    x = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    r = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    w = torch.ones(64, device=DEV, dtype=torch.bfloat16)
    if case == "cpu":
        x, r, w = x.cpu(), r.cpu(), w.cpu()
    elif case == "r_shape":
        r = r[:3]
    elif case == "r_dtype":
        r = r.half()
    elif case == "no_w":
        w = None
    elif case == "w_size":
        w = w[:63]
    elif case == "fp64":
        x, r, w = x.double(), r.double(), w.double()
    with pytest.raises(ligerd.OpInputError) as ei:
        liger_fused_add_rms_norm(x, r, w, EPS)
    assert "fused_add_rms_norm" in str(ei.value), str(ei.value)


# ------------------------------------------------------------------------------------------
# Liger-Kernel itself, when installed: both against the reference (Liger's llama-mode backward
# rounds dy * w to X's dtype and its gemma mode differs in where it rounds: the none-mode forward
# bound and twice the dX/dW bounds cover both, as in test_rms_norm.py), and S bitwise equal.

@pytest.mark.parametrize("mode", ["llama", "gemma"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_matches_liger_kernel(dtype, mode):
    Peer = liger_peer("LigerFusedAddRMSNorm")
    n, rows = 4096, 512
    offset = 1.0 if mode == "gemma" else 0.0
    x, r, w, dy, ds = make_inputs(rows, n, dtype, dtype, offset, seed=3)
    outs = []
    for cls in (Peer, LigerFusedAddRMSNorm):
        mod = cls(n, eps=EPS, offset=offset, casting_mode=mode, in_place=False).to(DEV, dtype)
        with torch.no_grad():
            mod.weight.copy_(w)
        xr, rr = x.clone().requires_grad_(), r.clone().requires_grad_()
        y, s = mod(xr, rr)
        torch.autograd.backward([y, s], [dy, ds])
        outs.append((y.detach(), s.detach(), xr.grad, rr.grad, mod.weight.grad))
    s_ref = exact_sum(x, r)
    fr = ref.forward(s_ref, w, EPS, offset, MODE_ID[mode])
    br = ref.backward(dy, s_ref, w, EPS, offset, MODE_ID[mode])
    total = br.dx + ds.double()
    for who, (y, s, dx, dr, dw) in zip(("liger", "ligerd"), outs):
        assert torch.equal(s, s_ref), who
        assert_close("Y", y, fr.y, fwd_tol(dtype, "none", fr, wmax(w, offset)), f"{who} {mode}")
        tol = total_dx_tol(dtype, "none", br, total) * 2
        assert_close("dX", dx, total, tol, f"{who} {mode}")
        assert_close("dR", dr, total, tol, f"{who} {mode}")
        assert_close("dW", dw, br.dw, dw_tol(dtype, dtype, mode, br) * 2, f"{who} {mode}")
