"""The vocabulary-sliced cross-entropy kernels (kernels/ops/ce_slice.cuh) on the GPU, against the
float64 reference (ligerd/testing/reference/ce_slice.py), then the fused linear cross-entropy's
sliced sweep end to end in remote dispatch, bitwise equal to local.

Cases: odd widths and row strides (unaligned rows: the element-wise head and tail), one-column
slices, long rows, a slice that does not start at class 0, class weights, softcap, ignored rows
and targets inside and outside the slice, logits of magnitude 30, outputs poisoned with NaN.

Tolerances (per element; u = the fp32 unit roundoff, U = the output dtype's):
- stats, first slice and after a second one: m exact without softcap (the max of the same
  rounded values), else tanhf's 2 ulps of z; s relative 1e-5 (fp32 sum of positive terms, ex2's
  2^-22, and the z - m rounding: |z - m| u, 60 u for the magnitude-30 logits); sz 1e-5 of the sum
  of |w z| (cancellation), zy as m; idx exact (first argmax of the same values; with softcap,
  only rows whose top two differ by more than tanhf's error).
- grad: |A| p (1e-5 (1 + |z| + |lse|)) for the exponent's fp32 rounding and ex2, plus |B w| and
  |C| times 2u, rounded once to the output dtype: U |ref| + its smallest subnormal.
"""

from __future__ import annotations

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd.ops import _flce_sliced as sl  # noqa: E402
from ligerd.testing import gpu as _util  # noqa: E402
from ligerd.testing.gpu import DEV, DTYPES, param_id as _id  # noqa: E402
from ligerd.testing.reference import ce_slice as ref  # noqa: E402
from ligerd.testing.reference.precision import TINY, U  # noqa: E402

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

II = -100
# (rows, n, row stride, v0, V): unaligned odd rows; an aligned 2048 x 4096 block (the default
# slice); one class; a long row past one block's 16-byte vectors per thread
SHAPES = [(37, 4099, 4101, 1000, 9000), (2048, 4096, 4096, 4096, 16384), (5, 1, 3, 7, 10),
          (3, 70001, 70001, 0, 140003)]
U32 = 2.0 ** -24


def _sid(s):
    return "x".join(map(str, s[:2])) + f"s{s[2]}v{s[3]}"


def make(rows, n, stride, v0, V, dtype, seed, scale=3.0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    base = torch.randn(rows, stride, device=DEV, generator=g) * scale
    x = base.to(dtype)[:, :n]
    t = torch.randint(0, V, (rows,), device=DEV, generator=g)
    # some targets inside this slice, some ignored
    inside = torch.randint(v0, v0 + n, (rows,), device=DEV, generator=g)
    t = torch.where(torch.arange(rows, device=DEV) % 3 == 0, inside, t)
    t[1::7] = II
    w = torch.rand(V, device=DEV, generator=g) + 0.5
    return x, t, w


def check_stats(got, want, softcap, ctx):
    """m, s and zy (sz and idx: by the caller)."""
    m, s, zy = (got[:, i].double() for i in (0, 1, 3))
    rm, rs, rzy = (want[:, i] for i in (0, 1, 3))
    zt = 4 * U32 * rm.abs() if softcap else torch.zeros_like(rm)
    _util.assert_close("m", m, rm, zt, ctx)
    _util.assert_close("s", s, rs, 1e-5 * rs.abs() + 1e-30, ctx)
    _util.assert_close("zy", zy, rzy, 4 * U32 * rzy.abs() if softcap else torch.zeros_like(rzy), ctx)


@pytest.mark.parametrize("softcap", [0.0, 20.0], ids=["plain", "softcap"])
@pytest.mark.parametrize("weighted", [False, True], ids=["nowt", "wt"])
@pytest.mark.parametrize("shape", SHAPES, ids=_sid)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_stats_two_slices_match_float64(dtype, shape, weighted, softcap):
    rows, n, stride, v0, V = shape
    x1, t, w = make(rows, n, stride, v0, V, dtype, seed=rows + n)
    x2, _, _ = make(rows, n, stride, v0, V, dtype, seed=rows + n + 1, scale=30.0)  # magnitude 30
    wt = w if weighted else None
    stats = _util.nan_like((rows, 4), torch.float32)  # poisoned: the first slice must write all
    idx = torch.full((rows,), -7, dtype=torch.int64, device=DEV)
    sl.slice_stats_(x1, t, wt, stats, idx, v0, True, softcap)
    want, widx = ref.stats_update(x1, t, wt, None, torch.zeros_like(idx), v0, True, softcap)
    ctx = f"{_id(dtype)} {_sid(shape)} wt={weighted} cap={softcap} slice 1"
    absz = (ref.softcapped(x1, softcap).abs() * (wt.double()[v0:v0 + n] if wt is not None else 1)).sum(1)
    _util.assert_close("sz", stats[:, 2].double(), want[:, 2], 1e-5 * absz + 1e-30, ctx)
    check_stats(stats, want, softcap, ctx)
    # the second slice, classes [v0 + n, v0 + 2n) (same target: none of them inside it)
    v1 = v0 + n
    w2 = torch.cat([w, w]) if weighted else None
    want2, widx2 = ref.stats_update(x2, t, w2, want, widx, v1, False, softcap)
    sl.slice_stats_(x2, t, w2, stats, idx, v1, False, softcap)
    ctx = ctx.replace("slice 1", "slice 2")
    absz = absz + (ref.softcapped(x2, softcap).abs() * (w2.double()[v1:v1 + n] if w2 is not None else 1)).sum(1)
    _util.assert_close("sz", stats[:, 2].double(), want2[:, 2], 1e-5 * absz + 1e-30, ctx)
    check_stats(stats, want2, softcap, ctx)
    if softcap:  # tanhf may reorder near-ties: the rows whose top two are apart
        z = torch.cat([ref.softcapped(x1, softcap), ref.softcapped(x2, softcap)], dim=1)
        top = z.topk(min(2, z.shape[1]), dim=1).values
        clear = (top[:, 0] - top[:, -1]) > 8 * U32 * top[:, 0].abs() if top.shape[1] > 1 else torch.ones_like(t, dtype=torch.bool)
        assert torch.equal(idx[clear], widx2[clear]), ctx
    else:
        assert torch.equal(idx, widx2), f"{ctx}: argmax"


@pytest.mark.parametrize("softcap", [0.0, 20.0], ids=["plain", "softcap"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("shape", SHAPES, ids=_sid)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_grad_matches_float64(dtype, shape, inplace, softcap):
    rows, n, stride, v0, V = shape
    x, t, w = make(rows, n, stride, v0, V, dtype, seed=3 * rows + n, scale=30.0)
    g = torch.Generator(device=DEV).manual_seed(9)
    z = ref.softcapped(x, softcap)
    lse = torch.logsumexp(z, 1) + torch.rand(rows, device=DEV, generator=g).double()  # other slices' mass
    A = torch.randn(rows, device=DEV, generator=g).double()
    B = torch.randn(rows, device=DEV, generator=g).double() * 1e-4
    C = -A
    coef = torch.stack([lse, A, B, C], 1).float().contiguous()
    want = ref.grad(x, t, w, coef, v0, softcap, II)
    src = x.clone()
    if inplace:
        out = src
    else:
        out = _util.nan_like((rows, stride), dtype)[:, :n]  # poisoned, its own (odd) stride
    if inplace:
        sl.slice_grad_(src, t, w, coef, v0, softcap, II)
    else:
        ligerd._backend.call("ce_slice_grad", X=src, target=t, weight=w, coef=coef, dX=out, v0=v0,
                             softcap=softcap, ignore_index=II)
    c = coef.double()
    p = torch.exp(z - c[:, :1])
    wv = w.double()[v0:v0 + n][None, :]
    tol = (c[:, 1:2].abs() * p * 1e-5 * (1 + z.abs() + c[:, :1].abs()) + (c[:, 2:3] * wv).abs() * 2 * U32
           + c[:, 3:4].abs() * 2 * U32)
    if softcap:
        tol = tol * 1.0 + want.abs() * 1e-5  # tanhf in the chain factor
    tol = tol + U[dtype] * want.abs() + TINY[dtype]
    ctx = f"{_id(dtype)} {_sid(shape)} {'inplace' if inplace else 'out'} cap={softcap}"
    _util.assert_close("dX", out, want, tol, ctx)
    assert (out[t == II] == 0).all(), f"{ctx}: ignored rows"


def test_bad_inputs_name_the_op():
    x = torch.zeros(4, 8, device=DEV, dtype=torch.bfloat16)
    t = torch.zeros(4, dtype=torch.int64, device=DEV)
    stats = torch.zeros(4, 4, device=DEV)
    with pytest.raises(ligerd.LigerdError, match="ce_slice_stats"):
        sl.slice_stats_(x, t[:3], None, stats, None, 0, True, 0.0)  # target too short
    with pytest.raises(ligerd.LigerdError, match="ce_slice_stats"):
        sl.slice_stats_(x, t, torch.ones(5, device=DEV), stats, None, 0, True, 0.0)  # weight < v0 + n
    with pytest.raises(ligerd.LigerdError, match="ce_slice_grad"):
        sl.slice_grad_(x, t, None, torch.zeros(4, 3, device=DEV), 0, 0.0, II)  # coef not [rows, 4]


# ------------------------------------------------------------------------------------------
# The sliced fused linear cross-entropy in remote dispatch


@pytest.fixture(scope="module")
def daemon():
    with _util.daemon_for_local_module("ligerd-ce-slice-") as d:
        yield d


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=_id)
def test_sliced_flce_remote_equals_local(daemon, dtype, monkeypatch):
    """The sliced sweep's GEMMs and ce_slice kernels in the daemon match local dispatch. Not
    bitwise, as test_remote_dispatch.py's chunked case says: each process times its own GEMM
    algorithms, whose fp32 sums differ in order. Tolerance: 2^-7 relative in bf16 (1e-5 in fp32)
    plus 1e-3 of the largest magnitude; the accuracy within 1% (argmax near-ties)."""
    from ligerd.ops import fused_linear_cross_entropy as flce
    monkeypatch.setenv("LIGERD_FLCE_MODE", "sliced")
    monkeypatch.setenv("LIGERD_FLCE_SLICE", "384,8192")  # 3 blocks x 4 slices of 30011 classes
    g = torch.Generator(device=DEV).manual_seed(2)
    bt, H, V = 1000, 256, 30011
    x = torch.randn(bt, H, device=DEV, generator=g).to(dtype)
    W = (torch.randn(V, H, device=DEV, generator=g) / 8).to(dtype)
    t = torch.randint(0, V, (bt,), device=DEV, generator=g)
    t[::11] = II
    outs = {}
    for mode in ("local", "remote"):
        ligerd.set_dispatch_mode(mode)
        xs, Ws = x.clone().requires_grad_(), W.clone().requires_grad_()
        loss, _, acc, _ = flce.fused_linear_cross_entropy(xs, Ws, t, return_token_accuracy=True)
        loss.backward()
        torch.cuda.synchronize()
        _util.assert_ran_in(mode)
        outs[mode] = (loss.detach(), xs.grad, Ws.grad, acc)
    ligerd.set_dispatch_mode("local")
    rtol = 2.0 ** -7 if dtype == torch.bfloat16 else 1e-5
    for name, r, l in zip(("loss", "dx", "dW"), outs["remote"], outs["local"]):
        assert torch.isfinite(r).all(), f"{_id(dtype)}: remote {name} not finite"
        torch.testing.assert_close(r.float(), l.float(), rtol=rtol, atol=1e-3 * float(l.float().abs().max()),
                                   msg=lambda m: f"sliced FLCE {_id(dtype)}, {name}: {m}")
    assert abs(float(outs["remote"][3]) - float(outs["local"][3])) <= 0.01
