"""Total variation distance (tvd_fwd, LigerTVDLoss) on the GPU through ligerd's local executor:
exact against a float64 reference on fresh random distributions, outputs poisoned with NaN first.

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest tests/gpu). Skips without
CUDA.

Tolerances (ligerd/testing/reference/distill.py; u = unit roundoff: fp32 2^-24, bf16 2^-8, fp16
2^-11):
- element loss 0.5 |p - q| (fp32 out): one subtraction of two exactly converted inputs, 2 u32
  relative.
- a row's loss: that, plus 1e-5 of the row's sum (all terms are >= 0: no cancellation), times
  the reduction's factor (+ 2 u32 relative for the fp32 factor).
- the gradient: +-0.5 * factor exactly, rounded once to the dtype: u |ref| (+ 2 u32 for the fp32
  factor), 0 where p == q, exactly.
- the module's scalar: + 1e-6 of the sum of the rows (torch's fp32 sum).
"""

from __future__ import annotations

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.transformers import LigerTVDLoss, liger_tvd  # noqa: E402

from ligerd.testing.reference import distill as ref  # noqa: E402
from ligerd.testing.gpu import (DEV, DTYPES, TINY, U, assert_close, liger_peer, nan_like,  # noqa: E402
                                param_id as _id, poison_allocator)

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

II = -100
VOCABS = [32000, 128256, 151936, 262144]
RED = ref.REDUCTIONS
U32 = U[torch.float32]


def make(rows, V, dtype, seed, ignored=(), ties=0.0):
    """Two softmax distributions in dtype; `ties`: the fraction of q's entries set equal to p's."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    p = (2 * torch.randn(rows, V, generator=g, device=DEV)).softmax(-1).to(dtype)
    q = (2 * torch.randn(rows, V, generator=g, device=DEV)).softmax(-1).to(dtype)
    if ties > 0:
        q = torch.where(torch.rand(rows, V, generator=g, device=DEV) < ties, p, q)
    lab = torch.randint(0, V, (rows,), generator=g, device=DEV)
    for i in ignored:
        lab[i] = II
    return p, q, lab


def run_op(p, q, labels, reduction, want_grad=True, grad=None, loss=None):
    rows = p.shape[0]
    if loss is None:
        loss = nan_like(tuple(p.shape) if reduction == "none" else (rows,), torch.float32)
    if grad is None and want_grad:
        grad = nan_like(tuple(p.shape), p.dtype)
    n_valid = None if labels is None else (labels != II).sum().reshape(1)
    _backend.launch("tvd_fwd", [p, q, labels, n_valid, loss, grad], [RED[reduction], II])
    return loss, grad


def grad_tol(dtype, g):
    return (U[dtype] + 2 * U32) * g.abs() + TINY[dtype]


def check(p, q, labels, reduction, ctx):
    loss, grad = run_op(p, q, labels, reduction)
    v, v_err, g = ref.tvd(p, q, reduction, labels, II)
    assert_close("loss", loss, v, v_err + TINY[torch.float32], ctx)
    assert_close("grad", grad, g, grad_tol(p.dtype, g), ctx)
    assert torch.equal(grad[(p == q) | (g == 0)], torch.zeros_like(grad[(p == q) | (g == 0)])), f"{ctx}: ties"
    return loss, grad


# ------------------------------------------------------------------------------------------
# 1. The op: every vocabulary, dtype and reduction; few rows; labels with an ignored row.

@pytest.mark.parametrize("reduction", list(RED), ids=_id)
@pytest.mark.parametrize("V", VOCABS, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_op_exact(dtype, V, reduction):
    p, q, lab = make(3, V, dtype, seed=V + RED[reduction], ignored=(1,), ties=0.05)
    check(p, q, lab, reduction, f"{_id(dtype)} V={V} {reduction} labels")
    check(p, q, None, reduction, f"{_id(dtype)} V={V} {reduction} no labels")


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (33, 1000), (2, 32001), (64, 4096)], ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_odd_shapes(dtype, shape):
    rows, V = shape
    for reduction in RED:
        p, q, lab = make(rows, V, dtype, seed=rows + V, ignored=(0,) if rows > 2 else (), ties=0.1)
        check(p, q, lab, reduction, f"{_id(dtype)} {shape} {reduction}")


@pytest.mark.parametrize("reduction", list(RED), ids=_id)
def test_all_rows_ignored(reduction):
    """Zeros everywhere (loss and gradient written over the poison), for every reduction: no
    division by the zero count (Liger raises ZeroDivisionError for mean / batchmean)."""
    p, q, lab = make(4, 32000, torch.bfloat16, seed=3, ignored=range(4))
    loss, grad = run_op(p, q, lab, reduction)
    assert torch.equal(loss, torch.zeros_like(loss))
    assert torch.count_nonzero(grad) == 0 and not torch.isnan(grad.float()).any()


def test_nan_inputs_follow_liger():
    """NaN compares unequal and not greater: gradient -0.5 * factor there, as Liger's where()s."""
    p, q, _ = make(2, 1024, torch.float32, seed=4)
    p[0, 5] = float("nan")
    loss, grad = run_op(p, q, None, "sum")
    assert float(grad[0, 5]) == -0.5 and torch.isnan(loss[0]) and torch.isfinite(loss[1])


def test_strided_rows_and_unaligned_starts():
    rows, V = 16, 32000
    for dtype in DTYPES:
        pb, qb, lab = make(rows, V + 64, dtype, seed=5, ignored=(2,))
        p, q = pb[:, 7:7 + V], qb[:, :V]
        gb = nan_like((rows, V + 32), dtype)
        lb = nan_like((rows, V + 8), torch.float32)
        run_op(p, q, lab, "none", grad=gb[:, :V], loss=lb[:, :V])
        v, v_err, g = ref.tvd(p, q, "none", lab, II)
        assert_close("loss", lb[:, :V], v, v_err + TINY[torch.float32], f"strided {_id(dtype)}")
        assert_close("grad", gb[:, :V], g, grad_tol(dtype, g), f"strided {_id(dtype)}")
        assert torch.isnan(gb[:, V:].float()).all() and torch.isnan(lb[:, V:]).all()


# ------------------------------------------------------------------------------------------
# 2. Through LigerTVDLoss / liger_tvd: autograd, grad_output != 1.

@pytest.mark.parametrize("grad_output", [1.0, 3.0], ids=["g1", "g3"])
@pytest.mark.parametrize("reduction", list(RED), ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_module_autograd(dtype, reduction, grad_output):
    rows, V = 6, 128256
    p, q, lab = make(rows, V, dtype, seed=6 + RED[reduction], ignored=(4,), ties=0.02)
    ctx = f"LigerTVDLoss {_id(dtype)} {reduction} g={grad_output}"
    pr = p.clone().requires_grad_()
    poison_allocator(((rows, V), dtype), ((rows, V), torch.float32), workspace=False)
    loss = LigerTVDLoss(reduction=reduction)(pr, q, lab)
    assert loss.dtype == torch.float32
    v, v_err, g = ref.tvd(p, q, reduction, lab, II)
    if reduction == "none":
        assert_close("loss", loss, v, v_err + TINY[torch.float32], ctx)
        go = torch.full_like(loss, grad_output)
    else:
        tol = v_err.sum() + 1e-6 * v.abs().sum() + TINY[torch.float32]
        assert_close("loss", loss.reshape(1), v.sum().reshape(1), tol.reshape(1), ctx)
        go = torch.tensor(grad_output, device=DEV)
    loss.backward(go)
    # the stored gradient (one rounding) times grad_output, rounded again
    gg = g * grad_output
    assert_close("grad", pr.grad, gg, grad_output * grad_tol(dtype, g) + grad_tol(dtype, gg), ctx)


def test_functional_default_is_mean():
    p, q, _ = make(4, 1000, torch.float32, seed=7)
    assert torch.equal(liger_tvd(p, q), liger_tvd(p, q, reduction="mean"))
    assert torch.equal(LigerTVDLoss()(p, q), liger_tvd(p, q, reduction="batchmean"))


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    p, q, lab = make(16, 32000, torch.bfloat16, seed=8, ignored=(3,))
    f = lambda a, b, labels: liger_tvd(a * 1.0, b, labels, "batchmean") * 2.0  # noqa: E731
    pe, pc = p.clone().requires_grad_(), p.clone().requires_grad_()
    ye = f(pe, q, lab)
    ye.backward()
    yc = torch.compile(f, fullgraph=True)(pc, q, lab)
    yc.backward()
    torch.testing.assert_close(yc, ye, rtol=1e-6, atol=0)
    assert torch.equal(pc.grad, pe.grad), "+-0.5 * factor * 2: exact either way"


# ------------------------------------------------------------------------------------------
# 3. Bad inputs name the op.

@pytest.mark.parametrize("case", ["cpu", "3d", "fp64", "labels", "reduction"])
def test_bad_inputs(case):
    p, q, lab = make(4, 64, torch.bfloat16, seed=9)
    kw = {}
    if case == "cpu":
        p = p.cpu()
    elif case == "3d":
        p, q = p.view(2, 2, 64), q.view(2, 2, 64)
    elif case == "fp64":
        p = p.double()
    elif case == "labels":
        kw["shift_labels"] = lab.float()
    elif case == "reduction":
        kw["reduction"] = "max"
    with pytest.raises(ligerd.OpInputError) as ei:
        liger_tvd(p, q, **kw)
    assert "tvd" in str(ei.value), str(ei.value)


def test_executor_second_line_of_checks():
    p, q, lab = make(4, 64, torch.bfloat16, seed=10)
    loss = nan_like((4,), torch.float32)
    with pytest.raises(ligerd.OpInputError, match="tvd_fwd.*'loss'"):
        _backend.launch("tvd_fwd", [p, q, None, None, loss, None], [0, II])  # "none" wants [rows, n]
    assert torch.isnan(loss).all(), "a rejected call wrote its output"
    with pytest.raises(ligerd.OpInputError, match="tvd_fwd.*'grad'"):
        _backend.launch("tvd_fwd", [p, q, None, None, loss, nan_like((4, 64), torch.float32)], [3, II])
    with pytest.raises(ligerd.OpInputError, match="tvd_fwd.*'labels'"):
        _backend.launch("tvd_fwd", [p, q, lab[:3], (lab != II).sum().reshape(1), loss, None], [3, II])


# ------------------------------------------------------------------------------------------
# 4. Liger-Kernel 0.8.5 itself when importable. Its kernel takes |p - q| in the input dtype
# (bf16: one rounding of each element loss, and of each block's sum): held to twice the dtype's
# unit roundoff on top of ligerd's bounds. Not with every row ignored (it
# divides by zero there).

@pytest.mark.parametrize("reduction", list(RED), ids=_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_matches_liger_kernel(dtype, reduction):
    Peer = liger_peer("LigerTVDLoss")
    p, q, lab = make(8, 32000, dtype, seed=11, ignored=(2,), ties=0.05)
    v, v_err, g = ref.tvd(p, q, reduction, lab, II)
    for who, cls in (("liger", Peer), ("ligerd", LigerTVDLoss)):
        pr = p.clone().requires_grad_()
        loss = cls(reduction=reduction)(pr, q, lab)
        loss.backward(torch.ones_like(loss))
        slack = 0 if who == "ligerd" or dtype == torch.float32 else 2 * U[dtype]
        ctx = f"{who} {_id(dtype)} {reduction}"
        if reduction == "none":
            assert_close("loss", loss, v, v_err + slack * v.abs() + TINY[torch.float32], ctx)
        else:
            tol = v_err.sum() + (1e-6 + slack) * v.abs().sum() + TINY[torch.float32]
            assert_close("loss", loss.reshape(1), v.sum().reshape(1), tol.reshape(1), ctx)
        assert_close("grad", pr.grad, g, grad_tol(dtype, g) + slack * g.abs(), ctx)
