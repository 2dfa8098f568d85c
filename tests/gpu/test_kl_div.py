"""KL divergence (kl_div_fwd, kl_div_bwd, LigerKLDIVLoss) on the GPU through ligerd's local
executor: exact against a float64 reference on fresh random inputs, outputs poisoned with NaN
first.

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest tests/gpu). Skips without
CUDA.

Tolerances (ligerd/testing/reference/distill.py derives them; u = unit roundoff: fp32 2^-24, bf16
2^-8, fp16 2^-11; TINY = the dtype's subnormal spacing):
- element loss (fp32 out): 16 u32 A, A = |t| (|log max(t, eps)| + |x| + 1) (or e^t (|t| + |x| + 1)
  with log_target): a few roundings and logf/expf's 2 ulps.
- a row's sum: the sum of those plus 1e-5 of the sum of |terms| (fp32 row sums).
- the reduced scalar: torch's fp32 sum of the rows (+ 1e-6 of the sum of |rows|), then one
  division (+ 2 u32 relative).
- dX = -t g f (or -e^t g f): 4 (6) roundings in fp32, relative; + u |ref| + TINY for the dtype.
"""

from __future__ import annotations

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import torch.nn.functional as F  # noqa: E402

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.transformers import LigerKLDIVLoss, liger_kl_div  # noqa: E402

from ligerd.testing.reference import distill as ref  # noqa: E402
from ligerd.testing.gpu import (DEV, DTYPES, TINY, U, assert_close, liger_peer, nan_like,  # noqa: E402
                                param_id as _id, poison_allocator)

pytestmark = [pytest.mark.usefixtures("local_dispatch"),  # conftest.py
              pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")]

VOCABS = [32000, 128256, 151936, 262144]
RED = ref.REDUCTIONS
U32 = U[torch.float32]


def make(shape, dtype, seed, log_target=False, spread=2.0, zeros=0.0):
    """Input log-probabilities and a target (probabilities, or log-probabilities), in dtype.
    zeros: the fraction of target probabilities set to exactly 0 (t log t = 0 there)."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    x = (spread * torch.randn(shape, generator=g, device=DEV)).log_softmax(-1).to(dtype)
    lt = (spread * torch.randn(shape, generator=g, device=DEV)).log_softmax(-1)
    if zeros > 0 and not log_target:
        lt = lt.masked_fill(torch.rand(shape, generator=g, device=DEV) < zeros, float("-inf"))
    t = (lt if log_target else lt.exp()).to(dtype)
    return x, t


def run_fwd(x, t, reduction, log_target, eps=1e-10):
    rows = x.reshape(-1, x.shape[-1]).shape[0]
    loss = nan_like(tuple(x.shape) if reduction == "none" else (rows,), torch.float32)
    _backend.launch("kl_div_fwd", [x, t, loss], [int(log_target), RED[reduction], eps])
    return loss


def dx_tol(dtype, r):
    return r.grad_err * (1 + U[dtype]) + (0 if dtype == torch.float32 else U[dtype] * r.grad.abs()) + TINY[dtype]


# ------------------------------------------------------------------------------------------
# 1. The ops: every vocabulary, dtype, reduction kind and log_target; few rows.

@pytest.mark.parametrize("log_target", [False, True], ids=["prob", "logt"])
@pytest.mark.parametrize("V", VOCABS, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_fwd_exact(dtype, V, log_target):
    x, t = make((3, V), dtype, seed=V + log_target, log_target=log_target, zeros=0.1)
    ctx = f"{_id(dtype)} V={V} log_target={log_target}"
    e = ref.kl_div(x, t, log_target, 1e-10)
    loss = run_fwd(x, t, "none", log_target)
    assert_close("loss (none)", loss, e.loss, e.loss_err, ctx)
    rows = run_fwd(x, t, "sum", log_target)
    rr, rr_err = ref.kl_div_rows(x, t, log_target, 1e-10)
    assert_close("row sums", rows, rr, rr_err + TINY[torch.float32], ctx)


@pytest.mark.parametrize("elementwise", [False, True], ids=["scalar_g", "elementwise_g"])
@pytest.mark.parametrize("log_target", [False, True], ids=["prob", "logt"])
@pytest.mark.parametrize("V", VOCABS, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_bwd_exact(dtype, V, log_target, elementwise):
    x, t = make((3, V), dtype, seed=2 * V + log_target, log_target=log_target)
    g = torch.Generator(device=DEV).manual_seed(V)
    G = torch.randn((3, V) if elementwise else (1,), generator=g, device=DEV)
    scale = 1.0 if elementwise else 1.0 / 3
    dx = nan_like((3, V), dtype)
    _backend.launch("kl_div_bwd", [t, G, dx], [int(log_target), scale])
    r = ref.kl_div_grad(t, G if elementwise else G.reshape(()), log_target, scale)
    assert_close("dX", dx, r.grad, dx_tol(dtype, r), f"{_id(dtype)} V={V} log_target={log_target} G={G.shape}")


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (33, 1000), (2, 32001), (2, 3, 4, 17)], ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_odd_shapes(dtype, shape):
    for log_target in (False, True):
        x, t = make(shape, dtype, seed=sum(shape) + log_target, log_target=log_target)
        ctx = f"{_id(dtype)} {shape} log_target={log_target}"
        e = ref.kl_div(x, t, log_target, 1e-10)
        assert_close("loss", run_fwd(x, t, "none", log_target), e.loss, e.loss_err, ctx)
        rr, rr_err = ref.kl_div_rows(x, t, log_target, 1e-10)
        assert_close("rows", run_fwd(x, t, "batchmean", log_target), rr.reshape(-1),
                     rr_err.reshape(-1) + TINY[torch.float32], ctx)


def test_strided_rows_and_unaligned_starts():
    rows, V = 16, 32000
    for dtype in DTYPES:
        xb, tb = make((rows, V + 64), dtype, seed=3)
        x, t = xb[:, 3:3 + V], tb[:, :V]
        lb = nan_like((rows, V + 8), torch.float32)
        loss = lb[:, :V]
        _backend.launch("kl_div_fwd", [x, t, loss], [0, 0, 1e-10])
        e = ref.kl_div(x, t, False, 1e-10)
        assert_close("loss", loss, e.loss, e.loss_err, f"strided {_id(dtype)}")
        assert torch.isnan(lb[:, V:]).all(), "wrote outside loss's rows"
        dxb = nan_like((rows, V + 16), dtype)
        G = torch.randn(rows, V + 8, device=DEV)[:, 1:1 + V]
        _backend.launch("kl_div_bwd", [t, G, dxb[:, :V]], [0, 1.0])
        r = ref.kl_div_grad(t, G, False, 1.0)
        assert_close("dX", dxb[:, :V], r.grad, dx_tol(dtype, r), f"strided {_id(dtype)}")
        assert torch.isnan(dxb[:, V:].float()).all()


# ------------------------------------------------------------------------------------------
# 2. Through LigerKLDIVLoss / liger_kl_div: every reduction, autograd, grad_output != 1.

def reduced(x, t, reduction, log_target):
    """float64 (value, bound) of the op's scalar (or its elements for "none")."""
    e = ref.kl_div(x, t, log_target, 1e-10)
    if reduction == "none":
        return e.loss, e.loss_err
    rr, rr_err = ref.kl_div_rows(x, t, log_target, 1e-10)
    f = {"sum": 1.0, "mean": 1.0 / x.numel(), "batchmean": 1.0 / x.shape[0]}[reduction]
    v = rr.sum() * f
    tol = (rr_err.sum() + 1e-6 * rr.abs().sum()) * f + 2 * U32 * v.abs() + TINY[torch.float32]
    return v, tol


@pytest.mark.parametrize("reduction", list(RED), ids=_id)
@pytest.mark.parametrize("log_target", [False, True], ids=["prob", "logt"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_module_autograd(dtype, log_target, reduction):
    shape = (2, 3, 128256) if reduction != "none" else (4, 32000)
    x, t = make(shape, dtype, seed=11 + log_target, log_target=log_target)
    ctx = f"LigerKLDIVLoss {_id(dtype)} log_target={log_target} {reduction}"
    xr = x.clone().requires_grad_()
    poison_allocator((shape, torch.float32), (shape, dtype), workspace=False)
    loss = LigerKLDIVLoss(reduction=reduction, log_target=log_target)(xr, t)
    assert loss.dtype == torch.float32
    v, tol = reduced(x, t, reduction, log_target)
    assert_close("loss", loss.reshape(-1), v.reshape(-1), tol.reshape(-1), ctx)
    g = torch.Generator(device=DEV).manual_seed(5)
    go = torch.randn(loss.shape, generator=g, device=DEV) if reduction == "none" else torch.tensor(2.5, device=DEV)
    poison_allocator((shape, dtype), workspace=False)
    loss.backward(go)
    f = {"none": 1.0, "sum": 1.0, "mean": 1.0 / x.numel(), "batchmean": 1.0 / shape[0]}[reduction]
    r = ref.kl_div_grad(t, go, log_target, f)
    assert_close("dX", xr.grad, r.grad, dx_tol(dtype, r), ctx)


def test_functional_defaults_and_torch_agreement():
    """liger_kl_div's default reduction is "mean" (torch's); for 2-D inputs every reduction agrees
    with F.kl_div (batchmean: / size(0); mean: / numel)."""
    x, t = make((8, 32000), torch.float32, seed=12)
    for reduction in RED:
        a = liger_kl_div(x, t, reduction=reduction)
        b = F.kl_div(x.double(), t.double(), reduction=reduction)
        v, tol = reduced(x, t, reduction, False)
        assert_close("vs torch", a.reshape(-1), b.reshape(-1), tol.reshape(-1) + 1e-12, reduction)
    assert torch.equal(liger_kl_div(x, t), liger_kl_div(x, t, reduction="mean"))


def test_zero_target_entries_add_nothing():
    x, t = make((4, 32000), torch.bfloat16, seed=13, zeros=0.5)
    loss = run_fwd(x, t, "none", False)
    assert (loss[t == 0] == 0).all()


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    x, t = make((16, 32000), torch.bfloat16, seed=14)
    f = lambda a, b: liger_kl_div(a, b, reduction="batchmean") * 3.0  # noqa: E731
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    ye = f(xe, t)
    ye.backward()
    yc = torch.compile(f, fullgraph=True)(xc, t)
    yc.backward()
    torch.testing.assert_close(yc, ye, rtol=1e-6, atol=0)
    assert torch.equal(xc.grad, xe.grad), "the same backward kernel"


# ------------------------------------------------------------------------------------------
# 3. Bad inputs name the op.

@pytest.mark.parametrize("case", ["cpu", "5d", "fp64", "shape", "reduction"])
def test_bad_inputs(case):
    x, t = make((4, 64), torch.bfloat16, seed=15)
    kw = {}
    if case == "cpu":
        x = x.cpu()
    elif case == "5d":
        x, t = x.view(1, 1, 1, 4, 64), t.view(1, 1, 1, 4, 64)
    elif case == "fp64":
        x = x.double()
    elif case == "shape":
        t = t[:, :32]
    elif case == "reduction":
        kw["reduction"] = "avg"
    with pytest.raises(ligerd.OpInputError) as ei:
        liger_kl_div(x, t, **kw)
    assert "kl_div" in str(ei.value), str(ei.value)


def test_executor_second_line_of_checks():
    x, t = make((4, 64), torch.bfloat16, seed=16)
    loss = nan_like((4, 64), torch.float32)
    with pytest.raises(ligerd.OpInputError, match="kl_div_fwd.*'loss'"):
        _backend.launch("kl_div_fwd", [x, t, loss], [0, 3, 1e-10])  # batchmean wants [rows]
    assert torch.isnan(loss).all(), "a rejected call wrote its output"
    with pytest.raises(ligerd.OpInputError, match="kl_div_bwd.*'G'"):
        _backend.launch("kl_div_bwd", [t, torch.ones(4, device=DEV), nan_like((4, 64), torch.bfloat16)], [0, 1.0])
    with pytest.raises(ligerd.OpInputError, match="kl_div_fwd.*reduction"):
        _backend.launch("kl_div_fwd", [x, t, nan_like((4,), torch.float32)], [0, 7, 1e-10])


# ------------------------------------------------------------------------------------------
# 4. Liger-Kernel 0.8.5 itself when importable (LigerKLDIVLoss: 2-D [BT, V] only), same
# reference; its loss is an fp32 sum of per-row fp32 sums too, its gradient -t (or -exp(t)) in
# the target's dtype times grad_output, then divided: a rounding per step, 3 roundings on top of
# the reference's exp, so 8 ulps of the dtype (4 were exceeded by 2% at float32 log_target mean).

@pytest.mark.parametrize("reduction", list(RED), ids=_id)
@pytest.mark.parametrize("log_target", [False, True], ids=["prob", "logt"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_matches_liger_kernel(dtype, log_target, reduction):
    Peer = liger_peer("LigerKLDIVLoss")
    x, t = make((8, 32000), dtype, seed=17, log_target=log_target)
    v, tol = reduced(x, t, reduction, log_target)
    go = torch.tensor(2.0, device=DEV) if reduction != "none" else torch.full((8, 32000), 2.0, device=DEV)
    f = {"none": 1.0, "sum": 1.0, "mean": 1.0 / x.numel(), "batchmean": 1.0 / 8}[reduction]
    r = ref.kl_div_grad(t, go, log_target, f)
    for who, cls in (("liger", Peer), ("ligerd", LigerKLDIVLoss)):
        xr = x.clone().requires_grad_()
        loss = cls(reduction=reduction, log_target=log_target)(xr, t)
        loss.backward(go)
        ltol, dtol = tol, dx_tol(dtype, r)
        if who == "liger":
            ltol = 4 * ltol + 1e-5 * v.abs()
            dtol = dtol + 8 * U[dtype] * r.grad.abs()
        ctx = f"{who} {_id(dtype)} log_target={log_target} {reduction}"
        assert_close("loss", loss.reshape(-1), v.reshape(-1), ltol.reshape(-1), ctx)
        assert_close("dX", xr.grad, r.grad, dtol, ctx)
