"""The KL-divergence custom ops' plumbing on the CPU: results and gradients against torch's own
F.kl_div in float64, every reduction, log_target, 1-D to 4-D inputs, mixed dtypes, the module's
and the functional's defaults (Liger-Kernel 0.8.5's), what reaches the executor, and the friendly
input errors.

The executor is replaced by a float64 reference "launcher" (ligerd.testing.ref_executor) that
honours kernels/ops/distill.cc's contract; the kernels are tested on the GPU in
tests/gpu/test_kl_div.py."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import torch.nn.functional as F  # noqa: E402

import ligerd  # noqa: E402
from ligerd.transformers import LigerKLDIVLoss, liger_kl_div  # noqa: E402
from ligerd.transformers import functional  # noqa: E402

REDUCTIONS = ["none", "sum", "mean", "batchmean"]
# torch's own warnings about its "mean" and legacy arguments (the semantics under test).
pytestmark = [pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning"),
              pytest.mark.filterwarnings("ignore:size_average and reduce args:UserWarning")]


def make(shape, seed, log_target=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).log_softmax(-1)
    t = torch.randn(shape, generator=g, dtype=torch.float64).log_softmax(-1)
    return x.float(), (t if log_target else t.exp()).float()


def torch_kl(x, t, reduction, log_target):
    """torch's F.kl_div in float64: loss and gradient of sum(loss * w)."""
    x64 = x.detach().double().requires_grad_()
    out = F.kl_div(x64, t.double(), reduction=reduction, log_target=log_target)
    return out, x64


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(7, 33), (2, 3, 17), (40,), (1, 2, 3, 5)])
def test_matches_torch(launcher, shape, reduction, log_target):
    x, t = make(shape, seed=len(shape) * 31 + shape[-1], log_target=log_target)
    xr = x.clone().requires_grad_()
    y = liger_kl_div(xr, t, reduction=reduction, log_target=log_target)
    ref, x64 = torch_kl(x, t, reduction, log_target)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-7)
    w = torch.randn(ref.shape, dtype=torch.float64)
    (y * w.float()).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(xr.grad.double(), x64.grad, rtol=1e-5, atol=1e-7)
    assert [c[0] for c in launcher.calls] == ["kl_div_fwd", "kl_div_bwd"]


def test_contract(launcher):
    """kl_div_fwd gets [X, target, loss] as (rows, n) views with Liger's reduction code; the
    backward gets the target itself, the upstream gradient as fp32 [1] and the reduction's factor."""
    x, t = make((6, 10), seed=3)
    xr = x.clone().requires_grad_()
    loss = liger_kl_div(xr, t, reduction="batchmean")
    (2.5 * loss).backward()
    (op, ts, sc), (op2, ts2, sc2) = launcher.calls
    assert op == "kl_div_fwd" and sc == [0, 3, 1e-10]
    assert ts[0][0] == (6, 10) and ts[1][1] == t.data_ptr() and ts[2][0] == (6,)
    assert op2 == "kl_div_bwd" and sc2 == [0, pytest.approx(1 / 6)]
    assert ts2[0][1] == t.data_ptr(), "the backward reads the saved target"
    assert ts2[1][0] == (1,)
    torch.testing.assert_close(xr.grad, -t * 2.5 / 6, rtol=1e-6, atol=1e-8)


def test_loss_is_fp32_for_16_bit_inputs(launcher):
    for dt in (torch.bfloat16, torch.float16):
        x, t = make((5, 12), seed=4)
        xr = x.to(dt).requires_grad_()
        y = liger_kl_div(xr, t.to(dt), reduction="sum")
        assert y.dtype == torch.float32
        ref = F.kl_div(x.to(dt).double(), t.to(dt).double(), reduction="sum")
        torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-7)
        y.backward()
        assert xr.grad.dtype == dt
        assert torch.equal(xr.grad, (-t.to(dt).double()).to(dt))


def test_mixed_dtypes_use_the_wider(launcher):
    x, t = make((4, 16), seed=5)
    xr = x.to(torch.bfloat16).requires_grad_()
    y = liger_kl_div(xr, t, reduction="batchmean")  # bf16 input, fp32 target
    ref = F.kl_div(x.to(torch.bfloat16).double(), t.double(), reduction="batchmean")
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-7)
    _, ts, _ = launcher.calls[0]
    y.backward()
    assert xr.grad.dtype == torch.bfloat16
    assert launcher.calls[0][1][0][0] == (4, 16)


def test_eps_clamps_the_target_inside_the_log(launcher):
    x, _ = make((2, 8), seed=6)
    t = torch.zeros(2, 8)
    t[:, 0] = 1.0
    t[1, 3] = 1e-12  # below eps: log(eps), not log(1e-12)
    y = liger_kl_div(x, t, reduction="none", eps=1e-10)
    expect = t.double() * (torch.log(torch.clamp(t.double(), min=float(torch.tensor(1e-10)))) - x.double())
    torch.testing.assert_close(y.double(), expect, rtol=1e-6, atol=1e-12)
    assert y[0, 1] == 0.0, "t == 0 adds nothing"


def test_module_defaults_are_nn_kldivloss(launcher):
    m = LigerKLDIVLoss()
    assert isinstance(m, torch.nn.KLDivLoss)
    assert m.reduction == "mean" and m.log_target is False and m.eps == 1e-10
    x, t = make((3, 9), seed=7)
    torch.testing.assert_close(m(x, t).double(), F.kl_div(x.double(), t.double(), reduction="mean"),
                               rtol=1e-6, atol=1e-8)
    m2 = LigerKLDIVLoss(1e-6, reduction="batchmean", log_target=True)
    assert m2.eps == 1e-6 and m2.reduction == "batchmean" and m2.log_target
    m3 = LigerKLDIVLoss(1e-10, size_average=False)  # torch's legacy arguments set the reduction
    assert m3.reduction == "sum"
    assert launcher.calls[-1][2] == [0, 2, 1e-10]


def test_functional_signature_is_liger_s():
    import inspect
    p = inspect.signature(liger_kl_div).parameters
    assert list(p) == ["input", "target", "size_average", "reduce", "reduction", "log_target", "eps"]
    assert p["reduction"].default == "mean" and p["eps"].default == 1e-10
    assert functional.liger_kl_div is liger_kl_div


def test_size_average_and_reduce_are_placeholders(launcher):
    """As in Liger: ``reduction`` decides, the legacy flags are ignored."""
    x, t = make((3, 9), seed=8)
    a = liger_kl_div(x, t, size_average=False, reduce=False, reduction="sum")
    b = liger_kl_div(x, t, reduction="sum")
    assert torch.equal(a, b) and a.dim() == 0


def test_target_gets_no_gradient(launcher):
    x, t = make((3, 9), seed=9)
    xr, tr = x.clone().requires_grad_(), t.clone().requires_grad_()
    liger_kl_div(xr, tr, reduction="sum").backward()
    assert xr.grad is not None and tr.grad is None  # Liger returns None for the target


def test_no_grad_runs_the_forward_only(launcher):
    x, t = make((3, 9), seed=10)
    with torch.no_grad():
        liger_kl_div(x.requires_grad_(), t)
    assert [c[0] for c in launcher.calls] == ["kl_div_fwd"]


def test_zero_rows(launcher):
    x = torch.empty(0, 8, requires_grad=True)
    y = liger_kl_div(x, torch.empty(0, 8), reduction="sum")
    assert float(y.detach()) == 0.0
    y.backward()
    assert x.grad.shape == (0, 8)
    assert launcher.calls == [], "nothing to launch"
    assert torch.isnan(liger_kl_div(torch.empty(0, 8), torch.empty(0, 8), reduction="batchmean"))


# --- input errors (no launcher: the real path, and the launcher never called) ------------------

def test_cpu_tensor_rejected():
    with pytest.raises(ligerd.OpInputError, match="kl_div.*CUDA tensor"):
        liger_kl_div(torch.randn(2, 4), torch.rand(2, 4))


@pytest.mark.parametrize("args,match", [
    (lambda: (torch.randn(2, 4), torch.rand(2, 5)), "shape"),
    (lambda: (torch.randn(2, 4, dtype=torch.float64), torch.rand(2, 4)), "dtype torch.float64"),
    (lambda: (torch.randn(1, 1, 1, 2, 4), torch.rand(1, 1, 1, 2, 4)), "1 to 4 dimensions"),
    (lambda: (torch.randn(2, 0), torch.rand(2, 0)), "empty last dim"),
    (lambda: ([1.0], torch.rand(2, 4)), "torch.Tensor"),
])
def test_bad_inputs_named(launcher, args, match):
    x, t = args()
    with pytest.raises(ligerd.OpInputError, match=match) as ei:
        liger_kl_div(x, t)
    assert ei.value.op == "kl_div" and "kl_div" in str(ei.value)
    assert not launcher.calls


@pytest.mark.parametrize("kw,match", [(dict(reduction="avg"), "reduction"), (dict(eps=-1.0), "eps"),
                                      (dict(eps=float("nan")), "eps")])
def test_bad_options_named(launcher, kw, match):
    with pytest.raises(ligerd.OpInputError, match=match):
        liger_kl_div(torch.randn(2, 4), torch.rand(2, 4), **kw)
    assert not launcher.calls
