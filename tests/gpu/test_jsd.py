"""The generalised JSD (jsd_fwd, LigerJSD) on the GPU through ligerd's local executor: exact
against a float64 reference on fresh random log-probabilities, outputs poisoned with NaN first.

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest tests/gpu). Skips without
CUDA.

Tolerances (ligerd/testing/reference/distill.py derives them; u = unit roundoff: fp32 2^-24, bf16
2^-8, fp16 2^-11; TINY = the dtype's subnormal spacing):
- element loss and dX in fp32: 16 u32 (1 + |X - Y|) A, A the magnitude of the formula's terms
  (beta P (|Y| + |log M| + 1) + (1 - beta) Q (|X| + |log M| + 1); P (|X| + |Y| + 1) or
  Q (|X| + |Y| + 1) in the KL cases): a handful of roundings, expf/logf's 2 ulps each, and the
  u |X - Y| an exponent formed in fp32 carries.
- a row's loss: the sum of those plus 1e-5 of the sum of the magnitudes (the fp32 row sum),
  divided by the count like the loss itself.
- dX rounded to the input dtype: + u |ref| + TINY.
- the module's scalar (fp32 sum of the rows, then the input dtype): + 1e-6 of the sum of |rows|
  (torch's fp32 sum over at most a few thousand rows) + u |ref|.
"""

from __future__ import annotations

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.transformers import LigerJSD, liger_jsd  # noqa: E402

from ligerd.testing.reference import distill as ref  # noqa: E402
from ligerd.testing.gpu import (DEV, DTYPES, TINY, U, assert_close, liger_peer, nan_like,  # noqa: E402
                                param_id as _id, poison_allocator, rel_err)

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

II = -100
VOCABS = [32000, 128256, 151936, 262144]
BETAS = [0.0, 0.5, 1.0, 0.25]


def make(rows, V, dtype, seed, ignored=(), spread=2.0):
    """Student and teacher log-probabilities (log_softmax of spread * randn in fp32, then the
    dtype) and labels with the given rows ignored."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    x = (spread * torch.randn(rows, V, generator=g, device=DEV)).log_softmax(-1).to(dtype)
    y = (spread * torch.randn(rows, V, generator=g, device=DEV)).log_softmax(-1).to(dtype)
    lab = torch.randint(0, V, (rows,), generator=g, device=DEV)
    for i in ignored:
        lab[i] = II
    return x, y, lab


def count(labels):
    return None if labels is None else (labels != II).sum().reshape(1)


def run_op(x, y, labels, beta, want_dx=True, dx=None, loss=None):
    """jsd_fwd into poisoned outputs (or the ones given)."""
    rows = x.shape[0]
    loss = nan_like((rows,), torch.float32) if loss is None else loss
    if dx is None and want_dx:
        dx = nan_like(tuple(x.shape), x.dtype)
    _backend.launch("jsd_fwd", [x, y, labels, count(labels), loss, dx], [beta, II])
    return loss, dx


def dx_tol(dtype, grad, grad_err):
    if dtype == torch.float32:
        return grad_err + TINY[dtype]
    return grad_err * (1 + U[dtype]) + U[dtype] * grad.abs() + TINY[dtype]


def check(x, y, labels, beta, ctx, want_dx=True):
    loss, dx = run_op(x, y, labels, beta, want_dx)
    rows, rows_err, grad, grad_err = ref.jsd_rows(x, y, beta, labels, II)
    assert_close("loss", loss, rows, rows_err + TINY[torch.float32], ctx)
    if want_dx:
        assert_close("dX", dx, grad, dx_tol(x.dtype, grad, grad_err), ctx)
    return loss, dx


# ------------------------------------------------------------------------------------------
# 1. The op: every vocabulary, dtype and beta case; few rows (the vocabularies are wide).

@pytest.mark.parametrize("beta", BETAS, ids=_id)
@pytest.mark.parametrize("V", VOCABS, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_op_exact(dtype, V, beta):
    x, y, lab = make(3, V, dtype, seed=V + int(beta * 100), ignored=(1,))
    check(x, y, lab, beta, f"{_id(dtype)} V={V} beta={beta} labels")
    check(x, y, None, beta, f"{_id(dtype)} V={V} beta={beta} no labels")


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (33, 1000), (2, 32001), (64, 4096)], ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_odd_shapes(dtype, shape):
    """One element; odd widths (element accesses); many short rows per block; 32001 (a vocabulary
    off the vector grid)."""
    rows, V = shape
    for beta in (0.0, 0.5, 1.0):
        x, y, lab = make(rows, V, dtype, seed=rows * 7 + V, ignored=(0,) if rows > 2 else ())
        check(x, y, lab, beta, f"{_id(dtype)} {shape} beta={beta}")


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_all_rows_ignored(dtype):
    """Loss 0 and a zero dX, written over the poison (no division by the zero count)."""
    x, y, lab = make(4, 32000, dtype, seed=5, ignored=range(4))
    for beta in (0.0, 0.5, 1.0):
        loss, dx = run_op(x, y, lab, beta)
        assert torch.equal(loss, torch.zeros_like(loss)), f"beta={beta}"
        assert torch.count_nonzero(dx) == 0 and not torch.isnan(dx.float()).any(), f"beta={beta}"


def test_loss_only_matches():
    """Without dX (no grad wanted) the loss is the same, bit for bit."""
    x, y, lab = make(8, 128256, torch.bfloat16, seed=6, ignored=(3,))
    a, _ = run_op(x, y, lab, 0.5)
    b, _ = run_op(x, y, lab, 0.5, want_dx=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_sharp_distributions(dtype):
    """Peaked rows (spread 20: a few classes hold all the mass, the rest have log-probabilities
    near -100): M underflows where both do, log M must not."""
    x, y, lab = make(4, 32000, dtype, seed=7, spread=20.0)
    for beta in (0.0, 0.5, 1.0, 0.1):
        loss, _ = check(x, y, lab, beta, f"sharp {_id(dtype)} beta={beta}")
        assert torch.isfinite(loss).all()


def test_strided_rows_and_unaligned_starts():
    rows, V = 16, 32000
    for dtype in DTYPES:
        xb, yb, lab = make(rows, V + 64, dtype, seed=8)
        x, y = xb[:, 5:5 + V], yb[:, :V]  # x: unaligned start and pitch; y: a wider pitch
        dxb = nan_like((rows, V + 32), dtype)
        dx = dxb[:, :V]
        loss, _ = run_op(x, y, lab, 0.5, dx=dx)
        rr, rr_err, grad, grad_err = ref.jsd_rows(x, y, 0.5, lab, II)
        assert_close("loss", loss, rr, rr_err + TINY[torch.float32], f"strided {_id(dtype)}")
        assert_close("dX", dx, grad, dx_tol(dtype, grad, grad_err), f"strided {_id(dtype)}")
        assert torch.isnan(dxb[:, V:].float()).all(), "wrote outside dX's rows"


def test_bitwise_reproducible():
    x, y, lab = make(64, 151936, torch.bfloat16, seed=9, ignored=(5,))
    a = run_op(x, y, lab, 0.5)
    b = run_op(x, y, lab, 0.5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ------------------------------------------------------------------------------------------
# 2. Through LigerJSD: autograd, the stored gradient scaled in place by grad_output.

def total_tol(dtype, rows, rows_err):
    s = rows.sum()
    return rows_err.sum() + 1e-6 * rows.abs().sum() + (0 if dtype == torch.float32 else U[dtype] * s.abs())


@pytest.mark.parametrize("grad_output", [1.0, 2.5], ids=["g1", "g2.5"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0], ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_module_autograd(dtype, beta, grad_output):
    rows, V = 6, 128256
    x, y, lab = make(rows, V, dtype, seed=10 + int(beta * 10), ignored=(2,))
    ctx = f"LigerJSD {_id(dtype)} beta={beta} g={grad_output}"
    xr = x.clone().requires_grad_()
    poison_allocator(((rows, V), dtype), ((rows,), torch.float32), workspace=False)
    loss = LigerJSD(beta=beta)(xr, y, lab)
    assert loss.dtype == dtype and loss.dim() == 0
    rr, rr_err, grad, grad_err = ref.jsd_rows(x, y, beta, lab, II)
    assert_close("loss", loss.reshape(1), rr.sum().reshape(1), total_tol(dtype, rr, rr_err).reshape(1), ctx)
    (loss * grad_output).backward()
    # the stored dX (its own bound) times grad_output in fp32, rounded again to the dtype
    g = grad * grad_output
    tol = grad_output * dx_tol(dtype, grad, grad_err) + U[dtype] * g.abs() + TINY[dtype]
    assert_close("dX", xr.grad, g, tol, ctx)


def test_no_grad_path():
    x, y, lab = make(4, 32000, torch.bfloat16, seed=11)
    with torch.no_grad():
        loss = liger_jsd(x.requires_grad_(), y, lab)
    rr, rr_err, _, _ = ref.jsd_rows(x, y, 0.5, lab, II)
    assert_close("loss", loss.reshape(1), rr.sum().reshape(1), total_tol(torch.bfloat16, rr, rr_err).reshape(1),
                 "no grad")


def test_mixed_dtypes():
    """bf16 student, fp32 teacher: computed in fp32; loss and gradient in bf16."""
    x, y, lab = make(4, 32000, torch.float32, seed=12)
    xs = x.to(torch.bfloat16)
    xr = xs.clone().requires_grad_()
    loss = liger_jsd(xr, y, lab)
    assert loss.dtype == torch.bfloat16
    rr, rr_err, grad, grad_err = ref.jsd_rows(xs.float(), y, 0.5, lab, II)
    assert_close("loss", loss.reshape(1), rr.sum().reshape(1),
                 total_tol(torch.bfloat16, rr, rr_err).reshape(1), "mixed")
    loss.backward()
    assert xr.grad.dtype == torch.bfloat16
    assert_close("dX", xr.grad, grad, dx_tol(torch.bfloat16, grad, grad_err), "mixed")


def test_zero_rows():
    x = torch.empty(0, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    loss = liger_jsd(x, torch.empty(0, 64, device=DEV, dtype=torch.bfloat16))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert x.grad.shape == (0, 64)


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    rows, V = 32, 32000
    x, y, lab = make(rows, V, torch.bfloat16, seed=13, ignored=(1, 7))

    def f(a, b, labels):
        return liger_jsd(a.float().log_softmax(-1).to(a.dtype), b, labels, 0.3) * 3.0

    xe = x.clone().requires_grad_()
    f(xe, y, lab).backward()
    xc = x.clone().requires_grad_()
    out = torch.compile(f, fullgraph=True)(xc, y, lab)
    out.backward()
    # The same kernels; Inductor may round the log_softmax in front differently (bf16).
    torch.testing.assert_close(out, f(x, y, lab), rtol=2 ** -6, atol=0)
    assert rel_err(xc.grad, xe.grad.double()) < 2e-2


# ------------------------------------------------------------------------------------------
# 3. Bad inputs name the op (Python first; the executor checks again underneath).

@pytest.mark.parametrize("case", ["cpu", "3d", "fp64", "beta", "labels"])
def test_bad_inputs(case):
    x, y, lab = make(4, 64, torch.bfloat16, seed=14)
    kw = {}
    if case == "cpu":
        x = x.cpu()
    elif case == "3d":
        x, y = x.view(2, 2, 64), y.view(2, 2, 64)
    elif case == "fp64":
        x = x.double()
    elif case == "beta":
        kw["beta"] = -0.1
    elif case == "labels":
        kw["shift_labels"] = lab[:3]
    with pytest.raises(ligerd.OpInputError) as ei:
        liger_jsd(x, y, **kw)
    assert "jsd" in str(ei.value), str(ei.value)


def test_executor_second_line_of_checks():
    x, y, lab = make(4, 64, torch.bfloat16, seed=15)
    loss = nan_like((3,), torch.float32)
    with pytest.raises(ligerd.OpInputError, match="jsd_fwd.*'loss'"):
        _backend.launch("jsd_fwd", [x, y, None, None, loss, None], [0.5, II])
    assert torch.isnan(loss).all(), "a rejected call wrote its output"
    with pytest.raises(ligerd.OpInputError, match="jsd_fwd.*n_valid"):
        _backend.launch("jsd_fwd", [x, y, lab, None, nan_like((4,), torch.float32), None], [0.5, II])
    with pytest.raises(ligerd.OpInputError, match="jsd_fwd.*beta"):
        _backend.launch("jsd_fwd", [x, y, None, None, nan_like((4,), torch.float32), None], [2.0, II])
    with pytest.raises(ligerd.OpInputError, match="jsd_fwd.*'dX'"):
        _backend.launch("jsd_fwd", [x, y, None, None, nan_like((4,), torch.float32), nan_like((4, 64), torch.float16)],
                        [0.5, II])


# ------------------------------------------------------------------------------------------
# 4. Liger-Kernel 0.8.5 itself when importable: the same reference, the same inputs. Liger's
# kernels compute in fp32 too, but its Hopper default (the CuTe DSL backend) evaluates exp/log
# with the approximate exp2/log2 units for 16-bit inputs, and sums the per-element fp32 tile
# with torch: it is held to 4x ligerd's bounds plus 4 ulps of the dtype.

@pytest.mark.parametrize("V", [32000, 128256], ids=_id)
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0], ids=_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_matches_liger_kernel(dtype, beta, V):
    Peer = liger_peer("LigerJSD")
    rows = 8
    x, y, lab = make(rows, V, dtype, seed=16 + V, ignored=(3,))
    rr, rr_err, grad, grad_err = ref.jsd_rows(x, y, beta, lab, II)
    for who, cls in (("liger", Peer), ("ligerd", LigerJSD)):
        xr = x.clone().requires_grad_()
        loss = cls(beta=beta)(xr, y, lab)
        assert loss.dtype == dtype, who
        loss.backward()
        ltol = total_tol(dtype, rr, rr_err)
        dtol = dx_tol(dtype, grad, grad_err)
        if who == "liger":
            ltol = 4 * ltol + 4 * U[dtype] * rr.sum().abs()
            dtol = 4 * dtol + 4 * U[dtype] * grad.abs()
        ctx = f"{who} {_id(dtype)} beta={beta} V={V}"
        assert_close("loss", loss.reshape(1), rr.sum().reshape(1), ltol.reshape(1), ctx)
        assert_close("dX", xr.grad, grad, dtol, ctx)
