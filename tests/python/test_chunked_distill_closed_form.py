"""The closed-form chunk math of the distillation losses (ligerd/chunked_loss/_distill_math.py) on
the CPU reference executor, against float64 autograd through the unchunked references of
ligerd.testing.reference.chunked_loss: every path of the JSD block (the hard loss folded into the
log-softmax backward at T = 1 with one vocabulary; through the cross-entropy kernel at T != 1,
with a larger teacher vocabulary or w_soft = 0; no hard loss, logits tempered by the GEMMs), the
cosine block raw and tempered, each for beta 0 / 0.5 / 1, with ignored rows, several chunks and
sub-blocks, fresh random inputs; that the chunk math runs on ligerd's row kernels (jsd_fwd, the
cross-entropy kernel's row log-sum-exps) and writes d logits in place; loss-only calls; a bad
target raising. This is the multi-kernel JSD path (LIGERD_DISTILL_FUSED=0, pinned by the launcher
fixture); the fused default (jsd_logits_fwd) is tested against it and float64 in
test_distill_fused.py.

Tolerances: fp32 inputs, logits and d logits rounded to fp32 (the reference executor computes
each kernel in float64 and rounds its outputs once): RTOL = 2e-5, ATOL = 2e-6 times the tensor's
largest entry (ligerd.testing.reference.chunked_loss.assert_close), as
test_chunked_loss_distillation.py."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

from ligerd import OpInputError  # noqa: E402
from ligerd.chunked_loss import LigerFusedLinearCosineSimilarityLoss, LigerFusedLinearJSDLoss  # noqa: E402
from ligerd.chunked_loss import _engine as E  # noqa: E402
from ligerd.testing import ref_executor  # noqa: E402
from ligerd.testing.reference import chunked_loss as R  # noqa: E402
from ligerd.transformers import LigerFusedLinearJSD  # noqa: E402

RTOL, ATOL = 2e-5, 2e-6


@pytest.fixture
def launcher(monkeypatch):
    monkeypatch.setenv("LIGERD_DISTILL_FUSED", "0")        # the multi-kernel JSD path
    monkeypatch.setenv("LIGERD_CHUNKED_LOSS_CHUNK", "6")   # chunks of 6 rows ...
    monkeypatch.setattr(E, "SUB_MIN_ROWS", 4)               # ... computed in sub-blocks of 4 and 2
    return ref_executor.install(monkeypatch)


def inputs(BT, H, Vs, Vt):
    g = torch.Generator().manual_seed(torch.seed() % (2 ** 31))
    sx, sW, sb = torch.randn(BT, H, generator=g), torch.randn(Vs, H, generator=g) * 0.5, torch.randn(Vs, generator=g)
    tx, tW, tb = torch.randn(BT, H, generator=g), torch.randn(Vt, H, generator=g) * 0.5, torch.randn(Vt, generator=g)
    y = torch.randint(0, Vs, (BT,), generator=g)
    y[torch.randperm(BT, generator=g)[:BT // 3]] = -100
    y[6:10] = -100   # a whole sub-block ignored (its count 0)
    return sx, sW, sb, tx, tW, tb, y


def compare(name, mod, kind, kw, sx, sW, sb, tx, tW, tb, y):
    a, w, b = R.leaves(sx, sW, sb)
    got = mod(a, w, tx, tW, y, b, tb)
    R.flat(got)[0].backward()
    ad, wd, bd = R.leaves(sx, sW, sb, dtype=torch.float64)
    want = R.distillation(kind, ad, wd, tx.double(), tW.double(), y, bd, tb.double(), **kw)
    want = (want[0], *want[1])
    want[0].backward()
    got = R.flat(got)
    for i, (g_, w_) in enumerate(zip(got, want if len(got) == 3 else want[:1])):
        R.assert_close(f"{name} output {i}", g_, w_, RTOL, ATOL)
    for label, g_, w_ in (("d input", a.grad, ad.grad), ("d weight", w.grad, wd.grad), ("d bias", b.grad, bd.grad)):
        R.assert_close(f"{name} {label}", g_, w_, RTOL, ATOL)


# (temperature, Vs, Vt, w_hard, w_soft, return_soft_hard_loss): which JSD path runs
JSD_PATHS = {
    "fold": (1.0, 29, 29, 0.4, 0.6, True),          # hard loss folded into the log-softmax backward
    "ce-temperature": (1.7, 29, 29, 0.4, 0.6, True),  # raw logits tempered in the block, CE kernel
    "ce-vocab": (1.0, 29, 35, 0.3, 0.7, True),      # padded student, CE kernel
    "ce-both": (0.6, 29, 35, 0.5, 0.5, False),
    "ce-no-soft": (1.0, 29, 29, 1.0, 0.0, True),    # w_soft = 0: nothing to fold into
    "hard-value-only": (2.0, 29, 35, 0.0, 1.0, True),  # the hard loss's value, no gradient
    "tempered": (2.3, 29, 35, 0.0, 1.0, False),     # no hard loss: GEMMs temper both heads
}


@pytest.mark.parametrize("path", list(JSD_PATHS))
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_jsd_closed_form_matches_float64_autograd(launcher, path, beta):
    T, Vs, Vt, wh, ws, both = JSD_PATHS[path]
    data = inputs(16, 12, Vs, Vt)
    kw = dict(weight_hard_loss=wh, weight_soft_loss=ws, beta=beta, temperature=T)
    compare(f"jsd {path} beta={beta}", LigerFusedLinearJSDLoss(return_soft_hard_loss=both, **kw), "jsd", kw, *data)
    ops = [c[0] for c in launcher.calls]
    assert ops.count("jsd_fwd") == 5      # chunks of 6, 6, 4 rows in sub-blocks of at most 4


@pytest.mark.parametrize("raw", [True, False], ids=["hard-loss", "soft-only"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_cosine_closed_form_matches_float64_autograd(launcher, raw, beta):
    data = inputs(16, 12, 29, 35)
    kw = dict(weight_hard_loss=0.3 if raw else 0.0, weight_soft_loss=0.7, beta=beta, temperature=1.9)
    compare(f"cosine beta={beta}", LigerFusedLinearCosineSimilarityLoss(**kw), "cosine", kw, *data)


def test_chunk_math_runs_on_ligerd_kernels_in_place(launcher, monkeypatch):
    """Per sub-block: one jsd_fwd, two row log-sum-exps (student, teacher) on the logits buffers
    themselves, and d logits written over the student's buffer (returned as that very view, so
    the sweep copies nothing)."""
    sx, sW, sb, tx, tW, tb, y = inputs(16, 12, 29, 29)
    in_place = []
    sweep = E.logits_sweep

    def spy(op, lins, rows, chunk, chunk_loss, sub=None):
        def wrapped(r0, r1, logits):
            res = chunk_loss(r0, r1, logits)
            in_place.append(res[2] is logits[0])
            return res
        return sweep(op, lins, rows, chunk, wrapped, sub)

    monkeypatch.setattr(E, "logits_sweep", spy)
    a, w = R.leaves(sx, sW)
    LigerFusedLinearJSDLoss(temperature=1.0)(a, w, tx, tW, y).backward()
    ops = [c[0] for c in launcher.calls]
    blocks = 5   # 16 rows: chunks of 6, 6, 4, each in sub-blocks of at most 4 rows
    assert ops.count("jsd_fwd") == blocks
    assert ops.count("cross_entropy_fwd") == 2 * blocks
    assert in_place == [True] * blocks


def test_loss_only_and_fused_linear_jsd_without_grad(launcher):
    sx, sW, sb, tx, tW, tb, y = inputs(16, 12, 29, 35)
    kw = dict(weight_hard_loss=0.4, weight_soft_loss=0.6, beta=0.5, temperature=1.3)
    with torch.no_grad():
        got = LigerFusedLinearJSDLoss(return_soft_hard_loss=True, **kw)(sx, sW, tx, tW, y, sb, tb)
    want = R.distillation("jsd", sx.double(), sW.double(), tx.double(), tW.double(), y, sb.double(), tb.double(), **kw)
    for i, (g_, w_) in enumerate(zip(got, (want[0], *want[1]))):
        R.assert_close(f"no-grad output {i}", g_, w_, RTOL, ATOL)
    sx2, sW2, _, tx2, tW2, _, y2 = inputs(16, 12, 31, 31)
    with torch.no_grad():
        got = LigerFusedLinearJSD(jsd_beta=0.5, temperature=0.7)(sx2, sW2, tx2, tW2, y2)
    R.assert_close("fused linear jsd no-grad", got, R.fused_linear_jsd(sx2.double(), sW2.double(), tx2.double(),
                                                                        tW2.double(), y2, 0.5, -100, 0.7), RTOL, ATOL)


def test_a_bad_target_raises(launcher):
    sx, sW, sb, tx, tW, tb, y = inputs(16, 12, 29, 29)
    y[3] = 29
    with pytest.raises(OpInputError, match="out of bounds"):
        LigerFusedLinearJSDLoss()(sx, sW, tx, tW, y)
