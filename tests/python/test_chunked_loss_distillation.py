"""Distillation through the LM heads on the CPU reference executor: ligerd.chunked_loss's
LigerFusedLinearJSDLoss and LigerFusedLinearCosineSimilarityLoss, and ligerd.transformers'
LigerFusedLinearJSD and LigerFusedLinearKLDivLoss, against the unchunked float64 references of
ligerd.testing.reference.chunked_loss: loss (and soft / hard parts), student input / weight / bias
gradients, on fresh random inputs with odd vocabularies (a teacher vocabulary larger than the
student's), beta 0 / 0.5 / 1 (and 0.3), temperatures, hard/soft weights, ignored and all-ignored
labels, every reduction, accum_dtype, the chunk forced small.

Tolerances: fp32 inputs, logits and d logits rounded to fp32: RTOL = 2e-5, ATOL = 2e-6 times the
tensor's largest entry (ligerd.testing.reference.chunked_loss.assert_close)."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

from ligerd import OpInputError  # noqa: E402
from ligerd.chunked_loss import (LigerFusedLinearCosineSimilarityLoss, LigerFusedLinearJSDLoss,  # noqa: E402
                                 liger_fused_linear_cosine, liger_fused_linear_jsd)
from ligerd.chunked_loss import _engine as E  # noqa: E402
from ligerd.testing import ref_executor  # noqa: E402
from ligerd.testing.reference import chunked_loss as R  # noqa: E402
from ligerd.transformers import (LigerFusedLinearJSD, LigerFusedLinearKLDivLoss,  # noqa: E402
                                 liger_fused_linear_kl_div)

RTOL, ATOL = 2e-5, 2e-6


@pytest.fixture
def launcher(monkeypatch):
    return ref_executor.install(monkeypatch)


@pytest.fixture(params=["budget", "5", "7/sub2"], ids=["chunk=budget", "chunk=5", "chunk=7,sub=2"])
def chunk(request, monkeypatch):
    """budget: one chunk here; 5: several; 7/sub2: chunks of 7 rows whose torch math runs on
    sub-blocks of 2 rows (the last one 1), d logits written over the buffer block by block."""
    if request.param != "budget":
        monkeypatch.setenv("LIGERD_CHUNKED_LOSS_CHUNK", request.param.split("/")[0])
    if request.param.endswith("sub2"):
        monkeypatch.setattr(E, "SUB_MIN_ROWS", 2)
    return request.param


def inputs(BT=23, H=16, Vs=37, Vt=37, all_ignored=False):
    g = torch.Generator().manual_seed(torch.seed() % (2 ** 31))
    sx, sW, sb = torch.randn(BT, H, generator=g), torch.randn(Vs, H, generator=g) * 0.4, torch.randn(Vs, generator=g)
    tx, tW, tb = torch.randn(BT, H, generator=g), torch.randn(Vt, H, generator=g) * 0.4, torch.randn(Vt, generator=g)
    y = torch.randint(0, Vs, (BT,), generator=g)
    y[::4] = -100
    if all_ignored:
        y[:] = -100
    return sx, sW, sb, tx, tW, tb, y


def grads_vs_ref(call, ref_call, sx, sW, sb):
    a, w, b = R.leaves(sx, sW, sb)
    got = call(a, w, b)
    R.flat(got)[0].backward()
    ad, wd, bd = R.leaves(sx, sW, sb, dtype=torch.float64)
    want = ref_call(ad, wd, bd)
    R.flat(want)[0].backward()
    return got, want, (a.grad, w.grad, b.grad if b is not None else None), \
        (ad.grad, wd.grad, bd.grad if bd is not None else None)


def check(name, got, want, gg, gw):
    for i, (a, c) in enumerate(zip(R.flat(got), R.flat(want))):
        R.assert_close(f"{name} output {i}", a, c, RTOL, ATOL)
    for label, a, c in zip(("d input", "d weight", "d bias"), gg, gw):
        if c is not None:
            R.assert_close(f"{name} {label}", a, c, RTOL, ATOL)


@pytest.mark.parametrize("kind", ["jsd", "cosine"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 0.3])
@pytest.mark.parametrize("wh,temperature", [(0.5, 1.0), (0.0, 2.0), (0.8, 0.5)])
def test_chunked_distillation(launcher, chunk, kind, beta, wh, temperature):
    sx, sW, sb, tx, tW, tb, y = inputs(Vs=37, Vt=41)
    cls = LigerFusedLinearJSDLoss if kind == "jsd" else LigerFusedLinearCosineSimilarityLoss
    kw = dict(weight_hard_loss=wh, weight_soft_loss=1 - wh, beta=beta, temperature=temperature)
    mod = cls(return_soft_hard_loss=True, **kw)
    got, want, gg, gw = grads_vs_ref(
        lambda a, w, b: mod(a, w, tx, tW, y, b, tb),
        lambda a, w, b: (lambda r: (r[0], *r[1]))(R.distillation(kind, a, w, tx.double(), tW.double(), y, b,
                                                                 tb.double(), **kw)),
        sx, sW, sb)
    check(f"{kind} beta={beta}", got, want, gg, gw)


@pytest.mark.parametrize("kind", ["jsd", "cosine"])
def test_chunked_distillation_no_bias_functional_and_all_ignored(launcher, kind):
    sx, sW, _, tx, tW, _, y = inputs(Vs=53, Vt=53, all_ignored=True)
    fn = liger_fused_linear_jsd if kind == "jsd" else liger_fused_linear_cosine
    got, want, gg, gw = grads_vs_ref(lambda a, w, b: fn(a, w, tx, tW, y),
                                     lambda a, w, b: R.distillation(kind, a, w, tx.double(), tW.double(), y)[0],
                                     sx, sW, None)
    check(kind, got, want, gg, gw)
    assert float(got.detach()) == 0.0 and not torch.isnan(gg[0]).any()


def test_chunked_distillation_rejects_a_smaller_teacher_vocabulary(launcher):
    sx, sW, _, tx, tW, _, y = inputs(Vs=41, Vt=37)
    with pytest.raises(OpInputError, match="vocabulary"):
        LigerFusedLinearJSDLoss()(sx, sW, tx, tW, y)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("labels", [True, False], ids=["labels", "no-labels"])
@pytest.mark.parametrize("temperature,accum", [(1.0, None), (1.7, torch.float32)])
def test_transformers_fused_linear_jsd(launcher, chunk, beta, labels, temperature, accum):
    sx, sW, _, tx, tW, _, y = inputs(Vs=131, Vt=131)
    mod = LigerFusedLinearJSD(jsd_beta=beta, temperature=temperature, accum_dtype=accum)
    lab = y if labels else None
    got, want, gg, gw = grads_vs_ref(
        lambda a, w, b: mod(a, w, tx, tW, lab),
        lambda a, w, b: R.fused_linear_jsd(a, w, tx.double(), tW.double(), lab, beta, -100, temperature),
        sx, sW, None)
    assert got.dtype == torch.float32 and gg[1].dtype == sW.dtype
    check(f"fused linear jsd beta={beta}", got, want, gg, gw)


@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum"])
@pytest.mark.parametrize("labels", [True, False], ids=["labels", "no-labels"])
def test_transformers_fused_linear_kl_div(launcher, chunk, reduction, labels):
    sx, sW, _, tx, tW, _, y = inputs(Vs=37, Vt=37)
    q = torch.softmax(torch.randn(sx.shape[0], sW.shape[0]) * 2, -1)
    q[0, 3] = 0.0   # a zero probability: log(max(q, eps))
    lab = y if labels else None
    got, want, gg, gw = grads_vs_ref(
        lambda a, w, b: LigerFusedLinearKLDivLoss(reduction=reduction, temperature=1.3)(a, w, q, lab),
        lambda a, w, b: R.fused_linear_kl_div(a, w, q.double(), lab, reduction, -100, 1.3),
        sx, sW, None)
    check(f"fused linear kl {reduction}", got, want, gg, gw)


def test_transformers_fused_linear_kl_div_arguments(launcher):
    sx, sW, *_ = inputs()
    q = torch.softmax(torch.randn(sx.shape[0], sW.shape[0]), -1)
    with pytest.raises(ValueError, match="reduction"):
        liger_fused_linear_kl_div(sx, sW, q, reduction="none")
    with pytest.raises(OpInputError, match="target"):
        liger_fused_linear_kl_div(sx, sW, q[:, :5])
    y = torch.full((sx.shape[0],), -100)
    a, w = R.leaves(sx, sW)
    loss = liger_fused_linear_kl_div(a, w, q, y)
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(a.grad.abs().max()) == 0.0
