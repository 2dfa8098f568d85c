"""ligerd.chunked_loss DPO / ORPO / CPO / SimPO on the CPU reference executor (float64 stand-in of
the gemm and cross-entropy ops) against the unchunked float64 references of
ligerd.testing.reference.chunked_loss: loss, every aux output, and the input / weight / bias
gradients, on fresh random inputs with odd vocabularies, ignored tokens, every DPO loss type,
reference-model and no-reference paths, and the chunk forced small (groups larger than a chunk:
the two-pass path) or mid-sized (several pairs per group). The GPU suite (tests/gpu/
test_chunked_loss.py) runs the real kernels and checks parity with Liger-Kernel itself.

Tolerances: the inputs are fp32 and the executor stand-in rounds logits and d logits to fp32, so
values and gradients agree with float64 to ~1e-6 relative; RTOL = 2e-5, ATOL = 2e-6 (scaled by
the loss's magnitude where noted)."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

from ligerd import OpInputError  # noqa: E402
from ligerd.chunked_loss import (LigerFusedLinearCPOLoss, LigerFusedLinearDPOLoss,  # noqa: E402
                                 LigerFusedLinearORPOLoss, LigerFusedLinearSimPOLoss, liger_fused_linear_cpo,
                                 liger_fused_linear_dpo, liger_fused_linear_orpo, liger_fused_linear_simpo)
from ligerd.chunked_loss.preference import DPO_LOSS_TYPES  # noqa: E402
from ligerd.testing import ref_executor  # noqa: E402
from ligerd.testing.reference import chunked_loss as R  # noqa: E402

RTOL, ATOL = 2e-5, 2e-6


@pytest.fixture
def launcher(monkeypatch):
    return ref_executor.install(monkeypatch)


@pytest.fixture(params=["budget", "3", "20"], ids=["chunk=budget", "chunk=3", "chunk=20"])
def chunk(request, monkeypatch):
    """budget: the default rule (one group here); 3: every pair spans many chunks (two passes);
    20: groups of one pair (T=9: 2*9 = 18 rows) one chunk each."""
    if request.param != "budget":
        monkeypatch.setenv("LIGERD_CHUNKED_LOSS_CHUNK", request.param)
    return request.param


def make(B=4, T=9, H=16, V=37, bias=True, seed=None):
    g = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % (2 ** 31))
    x = torch.randn(B, T, H, generator=g)
    W = torch.randn(V, H, generator=g) * 0.3
    b = torch.randn(V, generator=g) * 0.1 if bias else None
    y = torch.randint(0, V, (B, T), generator=g)
    y[:, :2] = -100                      # prompt tokens
    y[1, 4:] = -100                      # a short completion
    rx = torch.randn(B, T, H, generator=g)
    rW = torch.randn(V, H, generator=g) * 0.3
    rb = torch.randn(V, generator=g) * 0.1 if bias else None
    return x, W, b, y, rx, rW, rb


def check(name, got, want, grads_got, grads_want, scale=1.0):
    g, w = R.flat(got), R.flat(want)
    assert len(g) == len(w), f"{name}: {len(g)} outputs, the reference has {len(w)}"
    for i, (a, c) in enumerate(zip(g, w)):
        R.assert_close(f"{name} output {i}", a, c, RTOL, ATOL * scale)
    for label, a, c in zip(("d input", "d weight", "d bias"), grads_got, grads_want):
        if c is None:
            assert a is None, f"{name}: {label} should be None"
            continue
        R.assert_close(f"{name} {label}", a, c, RTOL, ATOL * scale)


def run_pair(call, ref_call, x, W, b, *rest):
    xs, Ws, bs = R.leaves(x, W, b)
    got = call(xs, Ws, bs, *rest)
    got[0].backward()
    xd, Wd, bd = R.leaves(x, W, b, dtype=torch.float64)
    want = ref_call(xd, Wd, bd)
    want[0].backward()
    return got, want, (xs.grad, Ws.grad, bs.grad if bs is not None else None), \
        (xd.grad, Wd.grad, bd.grad if bd is not None else None)


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
@pytest.mark.parametrize("use_ref", [True, False], ids=["ref", "no-ref"])
def test_dpo_every_loss_type(launcher, chunk, loss_type, use_ref):
    x, W, b, y, rx, rW, rb = make()
    ls = 0.1 if loss_type in ("exo_pair", "robust") else 0.0
    kw = dict(loss_type=loss_type, label_smoothing=ls, beta=0.3)
    mod = LigerFusedLinearDPOLoss(use_ref_model=use_ref, **kw)
    ref = (rx.double(), rW.double(), rb.double()) if use_ref else None
    got, want, gg, gw = run_pair(
        lambda a, w_, bb: mod(w_, a, y, bb, rx if use_ref else None, rW if use_ref else None,
                              rb if use_ref else None),
        lambda a, w_, bb: R.preference("dpo", a, w_, y, bb, beta=0.3, compute_nll_loss=False, average_log_prob=False,
                                       ref=ref, loss_type=loss_type, label_smoothing=ls),
        x, W, b)
    # sppo_hard's squared terms, and discopop's modulation sigmoid(logits / tau) with tau = 0.05
    # (Liger's default), which multiplies the float32 rounding of the log-ratios by 1/tau = 20:
    # a tenfold absolute tolerance (discopop once missed the plain one by 1.5x on random inputs).
    check(f"dpo {loss_type}", got, want, gg, gw, scale=10 if loss_type in ("sppo_hard", "discopop") else 1)
    assert [c[0] for c in launcher.calls].count("gemm") > 0


@pytest.mark.parametrize("nll,average,alpha", [(True, False, 1.0), (True, True, 0.5), (False, True, 1.0)])
def test_dpo_nll_average_alpha_and_no_bias(launcher, chunk, nll, average, alpha):
    x, W, _, y, rx, rW, _ = make(B=6, V=131, bias=False)
    mod = LigerFusedLinearDPOLoss(compute_nll_loss=nll, average_log_prob=average, alpha=alpha, beta=0.5)
    got, want, gg, gw = run_pair(
        lambda a, w_, bb: mod(w_, a, y, None, rx, rW),
        lambda a, w_, bb: R.preference("dpo", a, w_, y, None, beta=0.5, alpha=alpha, compute_nll_loss=nll,
                                       average_log_prob=average, ref=(rx.double(), rW.double(), None)),
        x, W, None)
    check("dpo nll/average", got, want, gg, gw)


@pytest.mark.parametrize("nll_target", [False, True], ids=["target", "nll_target"])
def test_orpo(launcher, chunk, nll_target):
    x, W, b, y, *_ = make(T=8)
    nt = None
    if nll_target:
        nt = y.clone()
        nt[0, 3] = -100
        nt[1, 5] = 7   # an NLL token where the preference target is ignored
    mod = LigerFusedLinearORPOLoss(beta=0.2)
    got, want, gg, gw = run_pair(lambda a, w_, bb: mod(w_, a, y, bb, nt),
                                 lambda a, w_, bb: R.preference("orpo", a, w_, y, bb, beta=0.2, nll_target=nt,
                                                                average_log_prob=True),
                                 x, W, b)
    check("orpo", got, want, gg, gw)


@pytest.mark.parametrize("ls,average,nll", [(0.0, False, True), (0.2, True, False), (0.1, False, False)])
def test_cpo(launcher, chunk, ls, average, nll):
    x, W, b, y, *_ = make(V=257)
    mod = LigerFusedLinearCPOLoss(beta=0.7, alpha=0.3, label_smoothing=ls, average_log_prob=average,
                                  compute_nll_loss=nll)
    got, want, gg, gw = run_pair(lambda a, w_, bb: mod(w_, a, y, bb),
                                 lambda a, w_, bb: R.preference("cpo", a, w_, y, bb, beta=0.7, alpha=0.3,
                                                                label_smoothing=ls, average_log_prob=average,
                                                                compute_nll_loss=nll),
                                 x, W, b)
    check("cpo", got, want, gg, gw)


@pytest.mark.parametrize("gamma,ls,nll", [(0.5, 0.0, True), (1.3, 0.1, False)])
def test_simpo(launcher, chunk, gamma, ls, nll):
    x, W, b, y, *_ = make()
    mod = LigerFusedLinearSimPOLoss(beta=2.0, gamma=gamma, label_smoothing=ls, compute_nll_loss=nll)
    got, want, gg, gw = run_pair(lambda a, w_, bb: mod(w_, a, y, bb),
                                 lambda a, w_, bb: R.preference("simpo", a, w_, y, bb, beta=2.0, gamma=gamma,
                                                                label_smoothing=ls, compute_nll_loss=nll,
                                                                average_log_prob=True),
                                 x, W, b)
    check("simpo", got, want, gg, gw)


def test_functional_forms_match_the_modules(launcher):
    x, W, b, y, rx, rW, rb = make()
    pairs = [
        (liger_fused_linear_dpo(x, W, y, b, rx, rW, rb, -100, 0.1, False, True, True, False, 1, "sigmoid", 0.0,
                                0.05, 1.0), LigerFusedLinearDPOLoss()(W, x, y, b, rx, rW, rb)),
        (liger_fused_linear_orpo(x, W, y, b), LigerFusedLinearORPOLoss()(W, x, y, b)),
        (liger_fused_linear_cpo(x, W, y, b), LigerFusedLinearCPOLoss()(W, x, y, b)),
        # SimPO's Function defaults compute_nll_loss=False, its Module True (as Liger)
        (liger_fused_linear_simpo(x, W, y, b, -100, 0.1, 1.0, 0.0, True),
         LigerFusedLinearSimPOLoss()(W, x, y, b)),
    ]
    for f, m in pairs:
        for a, c in zip(R.flat(f), R.flat(m)):
            assert torch.equal(a, c)


def test_upstream_gradient_scales_the_saved_gradients(launcher):
    x, W, b, y, rx, rW, rb = make()
    xs, Ws = R.leaves(x, W)
    (LigerFusedLinearDPOLoss()(Ws, xs, y, b, rx, rW, rb)[0] * 2.5).backward()
    xd, Wd = R.leaves(x, W, dtype=torch.float64)
    loss, _ = R.preference("dpo", xd, Wd, y, b.double(), compute_nll_loss=False, average_log_prob=False,
                           ref=(rx.double(), rW.double(), rb.double()))
    (loss * 2.5).backward()
    R.assert_close("d input x2.5", xs.grad, xd.grad, RTOL, ATOL)
    R.assert_close("d weight x2.5", Ws.grad, Wd.grad, RTOL, ATOL)


def test_no_grad_path_runs_no_gradient_gemm(launcher):
    x, W, b, y, *_ = make(bias=True)
    with torch.no_grad():
        loss, aux = LigerFusedLinearCPOLoss()(W, x, y, b)
    want, _ = R.preference("cpo", x.double(), W.double(), y, b.double(), average_log_prob=False)
    R.assert_close("cpo no-grad loss", loss, want, RTOL, ATOL)
    # Only logits GEMMs: their output is the [rows, V] buffer (no accumulate, beta 0).
    gemms = [c for c in launcher.calls if c[0] == "gemm"]
    assert gemms and all(c[2][1] == 0.0 for c in gemms)


def test_the_full_logits_are_never_allocated(launcher, monkeypatch):
    monkeypatch.setenv("LIGERD_CHUNKED_LOSS_CHUNK", "10")
    x, W, b, y, rx, rW, rb = make(B=6, T=9)
    xs, Ws = R.leaves(x, W)
    LigerFusedLinearDPOLoss()(Ws, xs, y, b, rx, rW, rb)[0].backward()
    logits_rows = [c[1][3][0][0] for c in launcher.calls if c[0] == "gemm" and c[1][3][0][1] == W.shape[0]]
    assert logits_rows and max(logits_rows) <= 10


@pytest.mark.parametrize("bad,msg", [
    (lambda x, W, y: (x[:3], W, y[:3]), "must be even"),
    (lambda x, W, y: (x, W[:, :5], y), "hidden size"),
    (lambda x, W, y: (x.double(), W.double(), y), "supported"),
    (lambda x, W, y: (x, W, y.float()), "token ids"),
    (lambda x, W, y: (x, W, y[:, :4]), "shape"),
])
def test_bad_inputs_are_clear_errors(launcher, bad, msg):
    x, W, _, y, *_ = make()
    a, w_, t = bad(x, W, y)
    with pytest.raises(OpInputError, match=msg):
        LigerFusedLinearCPOLoss()(w_, a, t)


def test_out_of_range_target_is_a_clear_error(launcher):
    x, W, _, y, *_ = make()
    y = y.clone()
    y[0, 5] = W.shape[0] + 3
    with pytest.raises(OpInputError, match="out of bounds"):
        LigerFusedLinearCPOLoss()(W, x, y)


def test_dpo_arguments_checked_as_liger():
    with pytest.raises(ValueError, match="Unsupported loss_type"):
        LigerFusedLinearDPOLoss(loss_type="nope")
    with pytest.raises(ValueError, match="exo_pair"):
        LigerFusedLinearDPOLoss(loss_type="exo_pair")
    with pytest.raises(ValueError, match="robust"):
        LigerFusedLinearDPOLoss(loss_type="robust", label_smoothing=0.5)


def test_dpo_ref_model_needs_its_inputs(launcher):
    x, W, _, y, *_ = make(bias=False)
    with pytest.raises(OpInputError, match="ref_input"):
        LigerFusedLinearDPOLoss()(W, x, y)
