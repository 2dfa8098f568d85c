"""The JSD custom op's plumbing on the CPU: loss and gradient against the generalised JSD written
out with torch ops in float64 (and torch's autograd of it), beta 0 / 0.5 / 1 and in between, with
and without shift_labels, all rows ignored, the in-place scaling of the stored gradient, what
reaches the executor, LigerJSD's and liger_jsd's defaults (Liger-Kernel 0.8.5's), and the friendly
input errors.

The executor is replaced by a float64 reference "launcher" (ligerd.testing.ref_executor); the
kernels are tested on the GPU in tests/gpu/test_jsd.py."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import ligerd  # noqa: E402
from ligerd.transformers import LigerJSD, liger_jsd  # noqa: E402
from ligerd.transformers import functional  # noqa: E402

II = -100


def make(rows, V, seed, ignored=()):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, V, generator=g, dtype=torch.float64).mul(2).log_softmax(-1).float()
    y = torch.randn(rows, V, generator=g, dtype=torch.float64).mul(2).log_softmax(-1).float()
    lab = torch.randint(0, V, (rows,), generator=g)
    for i in ignored:
        lab[i] = II
    return x, y, lab


def jsd_torch(x, y, beta, labels=None):
    """Liger's definition with torch ops: the divergence summed over kept rows, / their count."""
    X, Y = x.double(), y.double()
    P, Q = Y.exp(), X.exp()
    if beta == 0:
        per = (P * (Y - X)).sum(-1)
    elif beta == 1:
        per = (Q * (X - Y)).sum(-1)
    else:
        M = beta * P + (1 - beta) * Q
        per = (beta * P * (Y - M.log()) + (1 - beta) * Q * (X - M.log())).sum(-1)
    keep = torch.ones(x.shape[0], dtype=torch.bool) if labels is None else labels != II
    n = int(keep.sum())
    return (per * keep).sum() / n if n else (per * keep).sum() * 0


@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 0.1, 0.9])
def test_matches_torch(launcher, beta, labelled):
    x, y, lab = make(9, 37, seed=int(beta * 10) + labelled, ignored=(2, 5))
    labels = lab if labelled else None
    xr = x.clone().requires_grad_()
    loss = liger_jsd(xr, y, labels, beta=beta)
    x64 = x.double().requires_grad_()
    ref = jsd_torch(x64, y, beta, labels)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-8)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(xr.grad.double(), x64.grad, rtol=1e-5, atol=1e-8)
    if labelled:
        assert (xr.grad[[2, 5]] == 0).all(), "ignored rows get no gradient"
    assert [c[0] for c in launcher.calls] == ["jsd_fwd", "cross_entropy_scale"]


def test_contract_and_in_place_scaling(launcher):
    """jsd_fwd gets [X, Y, labels, n_valid (int64 [1], counted on the device), loss, dX] and
    [beta, ignore_index]; the backward scales that dX in place by grad_output and hands it over."""
    x, y, lab = make(6, 16, seed=3, ignored=(0,))
    xr = x.clone().requires_grad_()
    loss = LigerJSD(beta=0.25)(xr, y, lab)
    (op, ts, sc) = launcher.calls[0]
    assert op == "jsd_fwd" and sc == [0.25, -100]
    assert [t[0] if t else None for t in ts] == [(6, 16), (6, 16), (6,), (1,), (6,), (6, 16)]
    assert ts[0][1] == xr.data_ptr() and ts[1][1] == y.data_ptr() and ts[2][1] == lab.data_ptr()
    (3.0 * loss).backward()
    op2, ts2, _ = launcher.calls[1]
    assert op2 == "cross_entropy_scale" and ts2[0][1] == ts[5][1], "dX scaled where the forward wrote it"
    assert xr.grad.data_ptr() == ts[5][1], "no copy of the gradient"
    x64 = x.double().requires_grad_()
    (3.0 * jsd_torch(x64, y, 0.25, lab)).backward()
    torch.testing.assert_close(xr.grad.double(), x64.grad, rtol=1e-5, atol=1e-8)


def test_second_backward_through_one_graph_is_refused(launcher):
    """The stored gradient is scaled in place (as ligerd's cross-entropy): replaying the graph is
    autograd's error, never a gradient scaled twice."""
    x, y, _ = make(4, 8, seed=4)
    xr = x.clone().requires_grad_()
    loss = liger_jsd(xr, y)
    (2.0 * loss).backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (2.0 * loss).backward()


def test_all_rows_ignored(launcher):
    x, y, lab = make(5, 12, seed=5, ignored=range(5))
    xr = x.clone().requires_grad_()
    loss = liger_jsd(xr, y, lab)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.count_nonzero(xr.grad) == 0


def test_loss_has_the_input_dtype(launcher):
    for dt in (torch.bfloat16, torch.float16):
        x, y, _ = make(4, 32, seed=6)
        xr = x.to(dt).requires_grad_()
        loss = liger_jsd(xr, y.to(dt), beta=0.5)
        assert loss.dtype == dt
        ref = jsd_torch(x.to(dt), y.to(dt), 0.5)
        torch.testing.assert_close(loss.double(), ref.to(dt).double(), rtol=2 ** -7, atol=0)  # one rounding each
        loss.backward()
        assert xr.grad.dtype == dt


def test_mixed_dtypes(launcher):
    """A bf16 student and an fp32 teacher: computed in fp32 (exact upcast); the loss in the
    student's dtype, its gradient too."""
    x, y, _ = make(4, 32, seed=7)
    xr = x.to(torch.bfloat16).requires_grad_()
    loss = liger_jsd(xr, y)
    assert loss.dtype == torch.bfloat16
    ref = jsd_torch(x.to(torch.bfloat16), y, 0.5)
    torch.testing.assert_close(loss.double(), ref.to(torch.bfloat16).double(), rtol=2 ** -7, atol=0)
    loss.backward()
    assert xr.grad.dtype == torch.bfloat16
    assert launcher.calls[0][1][0][0] == (4, 32)


def test_no_grad_asks_for_no_gradient(launcher):
    x, y, _ = make(4, 8, seed=8)
    with torch.no_grad():
        liger_jsd(x.requires_grad_(), y)
    op, ts, _ = launcher.calls[0]
    assert op == "jsd_fwd" and ts[5] is None, "loss only: dX absent"


def test_target_gets_no_gradient(launcher):
    x, y, _ = make(4, 8, seed=9)
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    liger_jsd(xr, yr).backward()
    assert xr.grad is not None and yr.grad is None


def test_int32_labels(launcher):
    x, y, lab = make(6, 10, seed=10, ignored=(1,))
    a = liger_jsd(x, y, lab.to(torch.int32))
    b = liger_jsd(x, y, lab)
    assert torch.equal(a, b)


def test_module_and_functional_defaults():
    import inspect
    m = LigerJSD()
    assert m.beta == 0.5 and m.ignore_index == -100
    assert list(inspect.signature(LigerJSD.forward).parameters) == ["self", "log_q", "log_p", "shift_labels"]
    p = inspect.signature(liger_jsd).parameters
    assert list(p) == ["input", "target", "shift_labels", "beta", "ignore_index"]
    assert p["beta"].default == 0.5 and p["ignore_index"].default == -100
    assert functional.liger_jsd is liger_jsd


def test_zero_rows(launcher):
    x = torch.empty(0, 8, requires_grad=True)
    loss = liger_jsd(x, torch.empty(0, 8))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert x.grad.shape == (0, 8)


# --- input errors (no launcher: the real path, and the launcher never called) ------------------

def test_cpu_tensor_rejected():
    with pytest.raises(ligerd.OpInputError, match="jsd.*CUDA tensor"):
        liger_jsd(torch.randn(2, 4), torch.randn(2, 4))


@pytest.mark.parametrize("case,match", [
    ("3d", "2-D"), ("shape", "must match"), ("fp64", "dtype torch.float64"), ("beta", r"beta must be in \[0, 1\]"),
    ("beta_nan", "beta"), ("labels_shape", "shape of shift_labels"), ("labels_float", "integer labels"),
    ("ignore_index", "ignore_index"), ("empty", "empty last dim"),
])
def test_bad_inputs_named(launcher, case, match):
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    kw = {}
    if case == "3d":
        x, y = x.view(2, 2, 8), y.view(2, 2, 8)
    elif case == "shape":
        y = torch.randn(4, 9)
    elif case == "fp64":
        x = x.double()
    elif case == "beta":
        kw["beta"] = 1.5
    elif case == "beta_nan":
        kw["beta"] = float("nan")
    elif case == "labels_shape":
        kw["shift_labels"] = torch.zeros(5, dtype=torch.long)
    elif case == "labels_float":
        kw["shift_labels"] = torch.zeros(4)
    elif case == "ignore_index":
        kw["ignore_index"] = -100.0
    elif case == "empty":
        x, y = torch.randn(4, 0), torch.randn(4, 0)
    with pytest.raises(ligerd.OpInputError, match=match) as ei:
        liger_jsd(x, y, **kw)
    assert ei.value.op == "jsd" and "jsd" in str(ei.value)
    assert not launcher.calls
