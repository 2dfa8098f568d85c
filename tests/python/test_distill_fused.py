"""The fused JSD distillation kernel's contract (jsd_logits_fwd, kernels/ops/distill_jsd_logits.cuh)
and the chunked JSD losses on it (LIGERD_DISTILL_FUSED=1), on the CPU reference executor:

* the float64 reference (ligerd.testing.reference.jsd_logits) against float64 autograd through an
  independent formulation (torch's log_softmax and reference.chunked_loss.jsd): odd widths (incl.
  32000 and a 128256-like 1283), a student narrower than the teacher (zero padding), T != 1,
  beta 0 / 0.5 / 1, ignored rows (incl. every row), the folded hard loss, fp32 and bf16 inputs;
* through ``_backend.call`` (the reference executor's handler): d_student written over the
  student's buffer, after every read;
* LigerFusedLinearJSDLoss and LigerFusedLinearJSD with LIGERD_DISTILL_FUSED=1 against the
  default path and float64 autograd (loss, soft/hard parts, d input, d weight, d bias), on every
  path of the JSD block; one jsd_logits_fwd per sub-block and no jsd_fwd.

Tolerances: the reference against autograd, both float64: 1e-9 relative to the tensor's largest
entry (a few hundred float64 roundings). The losses: as test_chunked_distill_closed_form.py
(fp32 inputs; RTOL 2e-5, ATOL 2e-6 times the largest entry); the fused path against the default
one the same (each side is within that of float64)."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import torch.nn.functional as F  # noqa: E402

from ligerd import _backend  # noqa: E402
from ligerd.chunked_loss import LigerFusedLinearJSDLoss  # noqa: E402
from ligerd.chunked_loss import _engine as E  # noqa: E402
from ligerd.testing import ref_executor  # noqa: E402
from ligerd.testing.reference import chunked_loss as R  # noqa: E402
from ligerd.testing.reference.jsd_logits import jsd_logits  # noqa: E402
from ligerd.transformers import LigerFusedLinearJSD  # noqa: E402

RTOL, ATOL = 2e-5, 2e-6
REF_TOL = 1e-9


def gen():
    return torch.Generator().manual_seed(torch.seed() % (2 ** 31))


def autograd_reference(s, t, beta, s_scale, labels, ii, scale, soft_coef, hard_coef, hard):
    """loss rows, hard rows, d loss / d s by float64 autograd of sum(scale * (soft_coef * jsd
    rows + hard_coef * ce rows)) over kept rows, jsd of the zero-padded tempered student."""
    sd = s.double().clone().requires_grad_(True)
    rows, ns = s.shape
    nt = t.shape[1]
    ss = sd * s_scale
    if nt > ns:
        ss = torch.cat([ss, torch.zeros(rows, nt - ns, dtype=torch.float64)], -1)
    keep = torch.ones(rows, dtype=torch.bool) if labels is None else labels != ii
    jrows = R.jsd(F.log_softmax(ss, -1), F.log_softmax(t.double(), -1), beta) * keep
    total = scale * soft_coef * jrows.sum()
    hrows = None
    if hard:
        ys = torch.where(keep, labels, torch.zeros_like(labels))
        hrows = F.cross_entropy(sd, ys, reduction="none") * keep
        total = total + scale * hard_coef * hrows.sum()
    total.backward()
    return jrows.detach(), None if hrows is None else hrows.detach(), sd.grad


def close(name, got, want, tol):
    err = (got - want).abs().max().item() if got.numel() else 0.0
    ref = max(want.abs().max().item() if want.numel() else 0.0, 1e-300)
    assert err <= tol * ref or err <= 1e-300, f"{name}: max error {err:.3g} vs largest {ref:.3g}"


# (rows, ns, nt, s_scale, hard): the widths the GPU test uses stand in by odd small ones, and one
# full 32000-wide row
SHAPES = {
    "odd": (7, 1283, 1283, 1.0, False),
    "padded": (5, 997, 1283, 1.0, False),
    "tempered": (6, 1001, 1001, 1 / 1.7, False),
    "padded-tempered": (4, 301, 517, 1 / 0.6, False),
    "hard-fold": (7, 1283, 1283, 1.0, True),
    "v32000": (2, 32000, 32000, 1.0, True),
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_reference_matches_float64_autograd(shape, beta):
    rows, ns, nt, s_scale, hard = SHAPES[shape]
    g = gen()
    s = torch.randn(rows, ns, generator=g, dtype=torch.float64) * 3
    t = torch.randn(rows, nt, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, ns, (rows,), generator=g)
    labels[torch.randperm(rows, generator=g)[:rows // 3]] = -100
    scale, soft_coef, hard_coef = 1 / 5, 0.6 / 1.3, 0.4
    # the kernel's soft_coef carries the chain rule's s_scale (the caller passes w_soft / T)
    r = jsd_logits(s, t, beta, s_scale, 1.0, labels, -100, scale, soft_coef * s_scale, hard_coef if hard else 0.0,
                   hard)
    jr, hr, grad = autograd_reference(s, t, beta, s_scale, labels, -100, scale, soft_coef, hard_coef, hard)
    close(f"{shape} loss", r.loss, jr, REF_TOL)
    close(f"{shape} grad", r.grad, grad, REF_TOL)
    if hard:
        close(f"{shape} hard", r.hard_loss, hr, REF_TOL)
    ign = labels == -100
    assert (r.loss[ign] == 0).all() and (r.grad[ign] == 0).all()
    assert (r.loss_err >= 0).all() and (r.grad_err >= 0).all()


def test_reference_every_row_ignored_and_no_labels():
    g = gen()
    s, t = torch.randn(3, 33, generator=g), torch.randn(3, 40, generator=g)
    labels = torch.full((3,), -100)
    r = jsd_logits(s, t, 0.5, 1.0, 1.0, labels, -100, 1.0, 1.0)
    assert (r.loss == 0).all() and (r.grad == 0).all()
    r = jsd_logits(s, t, 0.5, 1.0, 1.0, None, -100, 1.0, 1.0)
    jr, _, grad = autograd_reference(s, t, 0.5, 1.0, None, -100, 1.0, 1.0, 0.0, False)
    close("no labels loss", r.loss, jr, REF_TOL)
    close("no labels grad", r.grad, grad, REF_TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_op_writes_d_student_in_place(monkeypatch, dtype):
    """_backend.call through the reference executor: the handler reads the student before writing
    d_student over it (the fused path's in-place call), the hard loss folded."""
    launcher = ref_executor.install(monkeypatch)
    g = gen()
    s = (torch.randn(6, 129, generator=g) * 4).to(dtype)
    t = (torch.randn(6, 129, generator=g) * 4).to(dtype)
    y = torch.randint(0, 129, (6,), generator=g)
    y[2] = -100
    want = jsd_logits(s, t, 0.5, 1.0, 1.0, y, -100, 0.25, 0.7, 0.3, True)
    buf = s.clone()
    loss, hard = torch.empty(6), torch.empty(6)
    _backend.call("jsd_logits_fwd", student=buf, teacher=t, labels=y, scale=torch.tensor([0.25]), loss=loss,
                  hard_loss=hard, d_student=buf, beta=0.5, ignore_index=-100, s_scale=1.0, t_scale=1.0,
                  soft_coef=0.7, hard_coef=0.3)
    assert [c[0] for c in launcher.calls] == ["jsd_logits_fwd"]
    close("loss", loss.double(), want.loss, 1e-6)
    close("hard", hard.double(), want.hard_loss, 1e-6)
    torch.testing.assert_close(buf, want.grad.to(dtype), rtol=0, atol=0)  # rounded once


# ---- the chunked losses on the fused kernel --------------------------------------------------

@pytest.fixture
def launcher(monkeypatch):
    monkeypatch.setenv("LIGERD_CHUNKED_LOSS_CHUNK", "6")   # chunks of 6 rows ...
    monkeypatch.setattr(E, "SUB_MIN_ROWS", 4)               # ... computed in sub-blocks of 4 and 2
    return ref_executor.install(monkeypatch)


def inputs(BT, H, Vs, Vt, all_ignored=False):
    g = gen()
    sx, sW, sb = torch.randn(BT, H, generator=g), torch.randn(Vs, H, generator=g) * 0.5, torch.randn(Vs, generator=g)
    tx, tW, tb = torch.randn(BT, H, generator=g), torch.randn(Vt, H, generator=g) * 0.5, torch.randn(Vt, generator=g)
    y = torch.randint(0, Vs, (BT,), generator=g)
    y[torch.randperm(BT, generator=g)[:BT // 3]] = -100
    y[6:10] = -100   # a whole sub-block ignored
    if all_ignored:
        y[:] = -100
    return sx, sW, sb, tx, tW, tb, y


def run(mod, sx, sW, sb, tx, tW, tb, y):
    a, w, b = R.leaves(sx, sW, sb)
    out = R.flat(mod(a, w, tx, tW, y, b, tb))
    out[0].backward()
    return [o.detach() for o in out], (a.grad, w.grad, b.grad)


# (temperature, Vs, Vt, w_hard, w_soft, return_soft_hard_loss), as the closed-form test's paths
JSD_PATHS = {
    "fold": (1.0, 29, 29, 0.4, 0.6, True),
    "fold-no-soft": (1.0, 29, 29, 1.0, 0.0, True),
    "ce-temperature": (1.7, 29, 29, 0.4, 0.6, True),
    "ce-vocab": (1.0, 29, 35, 0.3, 0.7, True),
    "ce-both": (0.6, 29, 35, 0.5, 0.5, False),
    "hard-value-only": (2.0, 29, 35, 0.0, 1.0, True),
    "tempered": (2.3, 29, 35, 0.0, 1.0, False),
}


@pytest.mark.parametrize("path", list(JSD_PATHS))
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_fused_loss_matches_default_and_float64(launcher, monkeypatch, path, beta):
    T, Vs, Vt, wh, ws, both = JSD_PATHS[path]
    data = inputs(16, 12, Vs, Vt)
    kw = dict(weight_hard_loss=wh, weight_soft_loss=ws, beta=beta, temperature=T)
    mod = LigerFusedLinearJSDLoss(return_soft_hard_loss=both, **kw)
    monkeypatch.setenv("LIGERD_DISTILL_FUSED", "0")
    base_out, base_grads = run(mod, *data)
    monkeypatch.setenv("LIGERD_DISTILL_FUSED", "1")
    launcher.calls.clear()
    out, grads = run(mod, *data)
    ops = [c[0] for c in launcher.calls]
    # chunks of 6, 6, 4 rows: one launch each, or per sub-block of <= 4 rows with a separate hard
    # loss (its fp32 copy of the logits is what the sub-blocks bound)
    sep = (wh != 0.0 or both) and not (T == 1.0 and Vs == Vt)
    assert ops.count("jsd_logits_fwd") == (5 if sep else 3) and ops.count("jsd_fwd") == 0
    sx, sW, sb, tx, tW, tb, y = data
    ad, wd, bd = R.leaves(sx, sW, sb, dtype=torch.float64)
    want = R.distillation("jsd", ad, wd, tx.double(), tW.double(), y, bd, tb.double(), **kw)
    want = (want[0], *want[1])
    want[0].backward()
    for i, (g_, b_, w_) in enumerate(zip(out, base_out, want)):
        R.assert_close(f"{path} output {i} vs float64", g_, w_, RTOL, ATOL)
        R.assert_close(f"{path} output {i} vs default", g_, b_, RTOL, ATOL)
    for label, g_, b_, w_ in zip(("d input", "d weight", "d bias"), grads, base_grads, (ad.grad, wd.grad, bd.grad)):
        R.assert_close(f"{path} {label} vs float64", g_, w_, RTOL, ATOL)
        R.assert_close(f"{path} {label} vs default", g_, b_, RTOL, ATOL)


def test_fused_loss_every_row_ignored(launcher, monkeypatch):
    monkeypatch.setenv("LIGERD_DISTILL_FUSED", "1")
    data = inputs(16, 12, 29, 29, all_ignored=True)
    out, grads = run(LigerFusedLinearJSDLoss(return_soft_hard_loss=True), *data)
    for o in out:
        assert o.item() == 0.0
    for g_ in grads:
        assert (g_ == 0).all()


@pytest.mark.parametrize("labels", [True, False])
def test_fused_linear_jsd_matches_default(launcher, monkeypatch, labels):
    sx, sW, _, tx, tW, _, y = inputs(16, 12, 31, 31)
    lab = y if labels else None
    res = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("LIGERD_DISTILL_FUSED", flag)
        a, w = R.leaves(sx, sW)
        loss = LigerFusedLinearJSD(jsd_beta=0.3, temperature=0.7)(a, w, tx, tW, lab)
        loss.backward()
        res[flag] = (loss.detach(), a.grad, w.grad)
    ad, wd = R.leaves(sx, sW, dtype=torch.float64)
    want = R.fused_linear_jsd(ad, wd, tx.double(), tW.double(), lab, 0.3, -100, 0.7)
    want.backward()
    for name, g_, b_, w_ in zip(("loss", "d input", "d weight"), res["1"], res["0"], (want, ad.grad, wd.grad)):
        R.assert_close(f"fused_linear_jsd {name} vs float64", g_, w_, RTOL, ATOL)
        R.assert_close(f"fused_linear_jsd {name} vs default", g_, b_, RTOL, ATOL)
