"""The TVD custom op's plumbing on the CPU: loss and gradient against 0.5 |p - q| written with torch
ops in float64, every reduction, with and without shift_labels, all rows ignored, ties (zero
gradient), the in-place scaling of the stored gradient, what reaches the executor, LigerTVDLoss's
and liger_tvd's defaults (Liger-Kernel 0.8.5's), and the friendly input errors.

The executor is replaced by a float64 reference "launcher" (ligerd.testing.ref_executor); the
kernels are tested on the GPU in tests/gpu/test_tvd.py."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import ligerd  # noqa: E402
from ligerd.transformers import LigerTVDLoss, liger_tvd  # noqa: E402
from ligerd.transformers import functional  # noqa: E402

II = -100
REDUCTIONS = ["none", "sum", "mean", "batchmean"]


def make(rows, V, seed, ignored=()):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(rows, V, generator=g, dtype=torch.float64).softmax(-1).float()
    q = torch.randn(rows, V, generator=g, dtype=torch.float64).softmax(-1).float()
    lab = torch.randint(0, V, (rows,), generator=g)
    for i in ignored:
        lab[i] = II
    return p, q, lab


def tvd_torch(p, q, reduction, labels=None):
    """(loss, gradient of p of sum(loss * w)) by Liger's definition, float64."""
    P, Q = p.double(), q.double()
    rows, V = P.shape
    keep = torch.ones(rows, dtype=torch.bool) if labels is None else labels != II
    n = int(keep.sum())
    elem = 0.5 * (P - Q).abs() * keep[:, None]
    sign = torch.sign(P - Q) * keep[:, None]
    if reduction == "none":
        return elem, 0.5 * sign
    f = {"sum": 1.0, "mean": 1.0 / (n * V) if n else 0.0, "batchmean": 1.0 / n if n else 0.0}[reduction]
    return elem.sum() * f, 0.5 * sign * f


@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_torch(launcher, reduction, labelled):
    p, q, lab = make(9, 37, seed=REDUCTIONS.index(reduction) * 2 + labelled, ignored=(3, 4))
    labels = lab if labelled else None
    pr = p.clone().requires_grad_()
    loss = liger_tvd(pr, q, labels, reduction=reduction)
    ref, dref = tvd_torch(p, q, reduction, labels)
    assert loss.dtype == torch.float32 and loss.shape == ref.shape
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-9)
    w = torch.randn(ref.shape, dtype=torch.float64)
    (loss * w.float()).sum().backward()
    torch.testing.assert_close(pr.grad.double(), dref * w, rtol=1e-6, atol=1e-9)
    expect = ["tvd_fwd"] if reduction == "none" else ["tvd_fwd", "cross_entropy_scale"]
    assert [c[0] for c in launcher.calls] == expect


def test_contract(launcher):
    p, q, lab = make(6, 16, seed=3, ignored=(0,))
    pr = p.clone().requires_grad_()
    loss = LigerTVDLoss()(pr, q, lab)
    op, ts, sc = launcher.calls[0]
    assert op == "tvd_fwd" and sc == [3, -100], "batchmean is Liger's code 3"
    assert [t[0] if t else None for t in ts] == [(6, 16), (6, 16), (6,), (1,), (6,), (6, 16)]
    loss.backward()
    op2, ts2, _ = launcher.calls[1]
    assert op2 == "cross_entropy_scale" and ts2[0][1] == ts[5][1] == pr.grad.data_ptr()
    loss_none = liger_tvd(p, q, lab, reduction="none")
    assert launcher.calls[-1][1][4][0] == (6, 16) and launcher.calls[-1][1][5] is None, "no grad wanted"
    assert (loss_none[0] == 0).all(), "an ignored row's element losses are 0"


def test_ties_have_zero_gradient(launcher):
    p, q, _ = make(3, 10, seed=4)
    q[:, :4] = p[:, :4]
    pr = p.clone().requires_grad_()
    liger_tvd(pr, q, reduction="sum").backward()
    assert (pr.grad[:, :4] == 0).all() and (pr.grad[:, 4:].abs() == 0.5).all()


def test_all_rows_ignored(launcher):
    """Liger divides by zero on the host here ("mean"/"batchmean"); ligerd returns 0 and a zero
    gradient, as its JSD and cross-entropy do."""
    p, q, lab = make(4, 12, seed=5, ignored=range(4))
    for red in REDUCTIONS:
        pr = p.clone().requires_grad_()
        loss = liger_tvd(pr, q, lab, reduction=red)
        assert torch.count_nonzero(loss.detach()) == 0
        loss.sum().backward()
        assert torch.count_nonzero(pr.grad) == 0


def test_16_bit_inputs(launcher):
    for dt in (torch.bfloat16, torch.float16):
        p, q, _ = make(4, 32, seed=6)
        pr = p.to(dt).requires_grad_()
        loss = liger_tvd(pr, q.to(dt), reduction="batchmean")
        assert loss.dtype == torch.float32
        ref, dref = tvd_torch(p.to(dt), q.to(dt), "batchmean")
        torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-9)
        loss.backward()
        assert pr.grad.dtype == dt
        assert torch.equal(pr.grad, dref.to(dt))


def test_second_backward_through_one_graph_is_refused(launcher):
    p, q, _ = make(4, 8, seed=7)
    pr = p.clone().requires_grad_()
    loss = liger_tvd(pr, q, reduction="sum")
    (2.0 * loss).backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (2.0 * loss).backward()


def test_q_gets_no_gradient(launcher):
    p, q, _ = make(4, 8, seed=8)
    pr, qr = p.clone().requires_grad_(), q.clone().requires_grad_()
    liger_tvd(pr, qr).backward()
    assert pr.grad is not None and qr.grad is None


def test_module_and_functional_defaults():
    import inspect
    m = LigerTVDLoss()
    assert m.reduction == "batchmean" and m.ignore_index == -100
    assert list(inspect.signature(LigerTVDLoss.forward).parameters) == ["self", "p", "q", "shift_labels"]
    p = inspect.signature(liger_tvd).parameters
    assert list(p) == ["input", "target", "shift_labels", "reduction", "ignore_index"]
    assert p["reduction"].default == "mean"
    assert functional.liger_tvd is liger_tvd


# --- input errors ---------------------------------------------------------------------------------

def test_cpu_tensor_rejected():
    with pytest.raises(ligerd.OpInputError, match="tvd.*CUDA tensor"):
        liger_tvd(torch.rand(2, 4), torch.rand(2, 4))


@pytest.mark.parametrize("case,match", [
    ("1d", "2-D"), ("shape", "must match"), ("int", "dtype torch.int64"), ("reduction", "reduction"),
    ("labels_shape", "shape of shift_labels"), ("ignore_index", "ignore_index"),
])
def test_bad_inputs_named(launcher, case, match):
    p, q = torch.rand(4, 8), torch.rand(4, 8)
    kw = {}
    if case == "1d":
        p, q = p.view(32), q.view(32)
    elif case == "shape":
        q = torch.rand(5, 8)
    elif case == "int":
        p = torch.randint(0, 3, (4, 8))
    elif case == "reduction":
        kw["reduction"] = "avg"
    elif case == "labels_shape":
        kw["shift_labels"] = torch.zeros(4, 1, dtype=torch.long)
    elif case == "ignore_index":
        kw["ignore_index"] = None
    with pytest.raises(ligerd.OpInputError, match=match) as ei:
        liger_tvd(p, q, **kw)
    assert ei.value.op == "tvd" and "tvd" in str(ei.value)
    assert not launcher.calls
