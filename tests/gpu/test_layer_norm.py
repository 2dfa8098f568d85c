"""LayerNorm on the GPU through ligerd's local executor: exact against a float64 reference
(ligerd.testing.reference.layer_norm), outputs poisoned with NaN (so an element a kernel forgets fails the test).

Tolerances (|got - ref| <= k * u * |ref| + c * scale + tiny; u = unit roundoff of the output
dtype: fp32 2^-24, bf16 2^-8, fp16 2^-11; "scale" = sum of |terms| behind the element, see
ligerd.testing.reference.layer_norm; tiny = the dtype's subnormal spacing, where rounding is absolute):
- Y, dX in fp32: 1e-5 of |ref| and of the scale. The kernels sum in fp32 in another order than
  float64 (and use rsqrtf, <= 2 ulp): a few hundred 2^-24 roundings at most, ~1e-6 in practice.
- Y, dX in bf16/fp16: computed in fp32 from the stored inputs and rounded once (Liger does the
  same), so 2u|ref| (one ulp: the fp32 value may sit on the other side of a rounding boundary
  than the exact one) + 1e-5 of the scale for the fp32 arithmetic before that rounding.
- dW, dB: fp32 column sums over rows (per-block partials, then a fixed-order sum of ~264
  partial rows): 2e-5 of the scale (sum of |dy * xhat| or |dy|), plus one rounding to the
  parameter dtype (2u of |ref|, or 1e-5 for fp32).
- MEAN, RSTD (fp32): 1e-5 relative to |mean| + rstd^-1-scaled spread, resp. |rstd|.
"""

from __future__ import annotations

import math

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.ops.layer_norm import LigerLayerNormFunction  # noqa: E402
from ligerd.transformers import LigerLayerNorm, liger_layer_norm  # noqa: E402

from ligerd.testing.reference import layer_norm as ref  # noqa: E402
from ligerd.testing.gpu import (DEV, DTYPES, TINY, U, assert_close, liger_peer, nan_like,  # noqa: E402
                   param_id as _id, poison_allocator)

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

EPS = 1e-6
# (rows, hidden): the odd hidden sizes (5120, 2880, 8191: the last unvectorisable, and
# past what the backward holds in registers), one row, one element, the Llama width, a row past
# Liger's 64K limit (the streaming kernels), tiny odd rows (element accesses).
SHAPES = [(1, 1), (1, 4096), (3, 5120), (33, 2880), (2 * 37, 8191), (4096, 4096), (2, 70000), (5, 7)]


def y_tol(dtype, r: ref.FwdRef):
    if dtype == torch.float32:
        return 1e-5 * r.y.abs() + 1e-5 * r.y_scale + 1e-30
    return 2 * U[dtype] * r.y.abs() + 1e-5 * r.y_scale + TINY[dtype]


def dx_tol(dtype, r: ref.BwdRef):
    if dtype == torch.float32:
        return 1e-5 * r.dx.abs() + 1e-5 * r.dx_scale + 1e-30
    return 2 * U[dtype] * r.dx.abs() + 1e-5 * r.dx_scale + TINY[dtype]


def param_tol(wdtype, val, scale):
    out = 1e-5 if wdtype == torch.float32 else 2 * U[wdtype]
    return out * val.abs() + 2e-5 * scale + TINY[wdtype]


def make_inputs(rows, n, dtype, wdtype, has_w, has_b, seed):
    g = torch.Generator(device=DEV).manual_seed(seed)
    # An offset mean (as real activations have) so centring matters.
    x = (0.3 + torch.randn(rows, n, generator=g, device=DEV)).to(dtype)
    w = (1.0 + 0.5 * torch.randn(n, generator=g, device=DEV)).to(wdtype) if has_w else None
    b = (0.5 * torch.randn(n, generator=g, device=DEV)).to(wdtype) if has_b else None
    dy = torch.randn(rows, n, generator=g, device=DEV).to(dtype)
    return x, w, b, dy


def check_fwd_bwd(x, w, b, dy, ctx, in_place=False):
    rows, n = x.shape
    dtype = x.dtype
    wdtype = w.dtype if w is not None else (b.dtype if b is not None else dtype)
    y = nan_like((rows, n), dtype)
    mean = nan_like((rows,), torch.float32)
    rstd = nan_like((rows,), torch.float32)
    _backend.launch("layer_norm_fwd", [x, w, b, y, mean, rstd], [EPS])
    fr = ref.forward(x, w, b, EPS)
    assert_close("Y", y, fr.y, y_tol(dtype, fr), ctx)
    spread = x.double().abs().mean(dim=-1)
    assert_close("MEAN", mean, fr.mean, 1e-5 * (fr.mean.abs() + spread) + 1e-30, ctx)
    assert_close("RSTD", rstd, fr.rstd, 1e-5 * fr.rstd.abs(), ctx)

    br = ref.backward(dy, x, w, EPS)
    dy_buf = dy.clone()
    dx = dy_buf if in_place else nan_like((rows, n), dtype)
    dw = nan_like((n,), wdtype) if w is not None else None
    db = nan_like((n,), wdtype) if b is not None else None
    poison_allocator()
    _backend.launch("layer_norm_bwd", [dy_buf, x, w, mean, rstd, dx, dw, db], [])
    assert_close("dX", dx, br.dx, dx_tol(dtype, br), ctx)
    if w is not None:
        assert_close("dW", dw, br.dw, param_tol(wdtype, br.dw, br.dw_scale), ctx)
    if b is not None:
        assert_close("dB", db, br.db, param_tol(wdtype, br.db, br.db_scale), ctx)
    if not in_place:
        assert torch.equal(dy_buf, dy), f"{ctx}: dY was modified"


# ------------------------------------------------------------------------------------------
# 1. The ops: every dtype x weight/bias presence x shape, outputs poisoned.

@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("affine", ["wb", "w", "b", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_op_exact(dtype, affine, shape):
    rows, n = shape
    x, w, b, dy = make_inputs(rows, n, dtype, dtype, "w" in affine, "b" in affine, seed=rows * 7919 + n)
    check_fwd_bwd(x, w, b, dy, f"{_id(dtype)} {affine} {rows}x{n}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=_id)
def test_fp32_params_with_half_input(dtype):
    """fp32 master weight and bias with bf16/fp16 activations: dW, dB come back fp32."""
    x, w, b, dy = make_inputs(64, 4096, dtype, torch.float32, True, True, seed=5)
    check_fwd_bwd(x, w, b, dy, f"{_id(dtype)}/fp32 params")


def test_in_place_dx_over_dy():
    x, w, b, dy = make_inputs(256, 4096, torch.bfloat16, torch.bfloat16, True, True, seed=9)
    check_fwd_bwd(x, w, b, dy, "dX over dY", in_place=True)


def test_bitwise_reproducible():
    x, w, b, dy = make_inputs(4096, 4096, torch.bfloat16, torch.bfloat16, True, True, seed=11)
    outs = []
    for _ in range(2):
        xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
        y = liger_layer_norm(xr, wr, br, EPS)
        y.backward(dy)
        outs.append((y.detach(), xr.grad, wr.grad, br.grad))
    for a, c in zip(*outs):
        assert torch.equal(a, c)


# ------------------------------------------------------------------------------------------
# 2. The Liger-compatible surface: autograd, flattening, non-contiguous input.

@pytest.mark.parametrize("shape", [(2, 37, 8191), (2, 3, 5, 4096), (4, 2880), (1, 1, 1, 1), (1, 5120)], ids=_id)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_module_autograd(dtype, bias, shape):
    n = shape[-1]
    rows = math.prod(shape[:-1])
    ctx = f"LigerLayerNorm {_id(dtype)} bias={bias} {shape}"
    x2, w, b, dy2 = make_inputs(rows, n, dtype, dtype, True, True, seed=rows + n)
    m = LigerLayerNorm(n, eps=EPS, bias=bias).to(DEV, dtype)
    assert isinstance(m.bias, torch.nn.Parameter)
    if not bias:
        assert torch.count_nonzero(m.bias) == 0
    with torch.no_grad():
        m.weight.copy_(w)
        if bias:
            m.bias.copy_(b)
    bias_t = m.bias.detach().clone()
    x = x2.view(shape).clone().requires_grad_()
    poison_allocator(((rows, n), dtype), ((rows,), torch.float32))
    y = m(x)
    assert y.shape == x.shape and y.dtype == dtype
    fr = ref.forward(x2, w, bias_t, EPS)
    assert_close("Y", y.view(rows, n), fr.y, y_tol(dtype, fr), ctx)
    poison_allocator(((rows, n), dtype), ((n,), dtype))
    y.backward(dy2.view(shape))
    br = ref.backward(dy2, x2, w, EPS)
    assert_close("dX", x.grad.view(rows, n), br.dx, dx_tol(dtype, br), ctx)
    assert_close("dW", m.weight.grad, br.dw, param_tol(dtype, br.dw, br.dw_scale), ctx)
    assert_close("dB", m.bias.grad, br.db, param_tol(dtype, br.db, br.db_scale), ctx)


@pytest.mark.parametrize("kind", ["transposed", "sliced"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_non_contiguous_input(dtype, kind):
    n, rows = 2048, 96
    if kind == "transposed":
        base = torch.randn(n, rows, device=DEV).to(dtype)
        x = base.t()  # hidden dim strided: copied to contiguous by the wrapper
    else:
        base = torch.randn(rows, n + 64, device=DEV).to(dtype)
        x = base[:, 5:5 + n]  # rows at a wider pitch, unaligned start: read in place
    assert not x.is_contiguous()
    w = (1 + 0.5 * torch.randn(n, device=DEV)).to(dtype)
    b = (0.5 * torch.randn(n, device=DEV)).to(dtype)
    dy = torch.randn(rows, n, device=DEV).to(dtype)
    ctx = f"non-contiguous ({kind}) {_id(dtype)}"
    y = liger_layer_norm(x, w, b, EPS)
    fr = ref.forward(x.contiguous(), w, b, EPS)
    assert_close("Y", y, fr.y, y_tol(dtype, fr), ctx)
    leaf = base.detach().clone().requires_grad_()
    xs = leaf.t() if kind == "transposed" else leaf[:, 5:5 + n]
    liger_layer_norm(xs, w, b, EPS).backward(dy.t().contiguous().t() if kind == "sliced" else dy)
    br = ref.backward(dy, x.contiguous(), w, EPS)
    g = leaf.grad.t() if kind == "transposed" else leaf.grad[:, 5:5 + n]
    assert_close("dX", g, br.dx, dx_tol(dtype, br), ctx)


def test_function_apply_and_zero_rows():
    x = torch.randn(3, 64, device=DEV, requires_grad=True)
    w = torch.ones(64, device=DEV, requires_grad=True)
    b = torch.zeros(64, device=DEV, requires_grad=True)
    y = LigerLayerNormFunction.apply(x, w, b, EPS)
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(x, (64,), w, b, EPS), rtol=1e-5, atol=1e-5)
    e = torch.empty(0, 64, device=DEV, requires_grad=True)
    y = liger_layer_norm(e, w, b, EPS)
    assert y.shape == (0, 64)
    y.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    m = LigerLayerNorm(1024, bias=True).to(DEV, torch.bfloat16)
    x = torch.randn(4, 128, 1024, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    y_e = m(x)
    y_e.float().square().mean().backward()
    ge = (x.grad.clone(), m.weight.grad.clone(), m.bias.grad.clone())
    x.grad = None
    m.zero_grad()
    y_c = torch.compile(m, fullgraph=True)(x)
    y_c.float().square().mean().backward()
    assert torch.equal(y_c, y_e)
    for a, c in zip((x.grad, m.weight.grad, m.bias.grad), ge):
        torch.testing.assert_close(a, c, rtol=2 ** -7, atol=1e-6)


@pytest.mark.parametrize("case", ["cpu", "wrong_w_size", "mixed_dtypes", "w_b_dtypes", "5d", "fp64"])
def test_bad_inputs(case):
    x = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    w = torch.ones(64, device=DEV, dtype=torch.bfloat16)
    b = torch.zeros(64, device=DEV, dtype=torch.bfloat16)
    if case == "cpu":
        x, w, b = x.cpu(), w.cpu(), b.cpu()
    elif case == "wrong_w_size":
        w = torch.ones(63, device=DEV, dtype=torch.bfloat16)
    elif case == "mixed_dtypes":
        w = w.half()
    elif case == "w_b_dtypes":
        w = w.float()
    elif case == "5d":
        x = x.view(1, 1, 1, 4, 64)
    elif case == "fp64":
        x, w, b = x.double(), w.double(), b.double()
    with pytest.raises(ligerd.OpInputError) as ei:
        liger_layer_norm(x, w, b, EPS)
    assert "layer_norm" in str(ei.value), str(ei.value)


def test_executor_second_line_of_checks():
    x = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    y = nan_like((4, 64), torch.bfloat16)
    short = torch.empty(3, device=DEV, dtype=torch.float32)
    ok = torch.empty(4, device=DEV, dtype=torch.float32)
    with pytest.raises(ligerd.OpInputError) as ei:
        _backend.launch("layer_norm_fwd", [x, None, None, y, short, ok], [EPS])
    assert "layer_norm_fwd" in str(ei.value) and "MEAN" in str(ei.value), str(ei.value)
    assert torch.isnan(y.float()).all(), "a rejected call wrote its output"


# ------------------------------------------------------------------------------------------
# 3. Liger-Kernel itself, when installed. Liger rounds mean and rstd to X's dtype before using
# them (ligerd keeps fp32), so in bf16 its outputs carry an extra ~2^-9 relative error of the
# scale: it is compared to the reference with 4u of the scale added, ligerd with its own bound.

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_matches_liger_kernel(dtype):
    Peer = liger_peer("LigerLayerNorm")
    n, rows = 4096, 512
    x, w, b, dy = make_inputs(rows, n, dtype, dtype, True, True, seed=3)
    outs = []
    for cls in (Peer, LigerLayerNorm):
        m = cls(n, eps=EPS, bias=True).to(DEV, dtype)
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(b)
        xr = x.clone().requires_grad_()
        y = m(xr)
        y.backward(dy)
        outs.append((y.detach(), xr.grad, m.weight.grad, m.bias.grad))
    fr = ref.forward(x, w, b, EPS)
    br = ref.backward(dy, x, w, EPS)
    extra = 0.0 if dtype == torch.float32 else 4 * U[dtype]
    for who, (y, dx, dw, db) in zip(("liger", "ligerd"), outs):
        e = extra if who == "liger" else 0.0
        assert_close("Y", y, fr.y, y_tol(dtype, fr) + e * fr.y_scale, who)
        assert_close("dX", dx, br.dx, dx_tol(dtype, br) + e * br.dx_scale, who)
        assert_close("dW", dw, br.dw, param_tol(dtype, br.dw, br.dw_scale) + e * br.dw_scale, who)
        assert_close("dB", db, br.db, param_tol(dtype, br.db, br.db_scale), who)
