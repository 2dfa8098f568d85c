"""ligerd.chunked_loss KTO and GRPO (every loss type Liger-Kernel 0.8.5 offers) and the selected-token
log-prob gatherer on the CPU reference executor, against the unchunked float64 references of
ligerd.testing.reference.chunked_loss: loss, metrics and the input / weight / bias gradients, on
fresh random inputs with odd vocabularies, masked tokens and a fully masked sequence, reference
model given as log-probs, as inputs, or absent, token and sequence importance sampling,
temperature, vLLM ratios, and the chunk forced small (two passes) or mid-sized.

Tolerances: fp32 inputs, logits and d logits rounded to fp32 by the executor stand-in: RTOL = 2e-5,
ATOL = 2e-6 (times 10 for the gatherer's per-token log-probs of magnitude ~10); KTO's logits and
rewards sums, which cancel, also get CANCEL_ULPS units of fp32 roundoff of their terms' summed
magnitude (see test_kto).

The inputs are drawn from a fresh seed each run, printed (pytest shows it with a failure);
LIGERD_TEST_SEED=<n> replays one."""

import os

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

from ligerd import OpInputError  # noqa: E402
from ligerd.chunked_loss import (LigerFusedLinearGRPOLoss, LigerFusedLinearKTOLoss,  # noqa: E402
                                 LigerFusedLinearSelectedLogProbs, fused_linear_selected_log_probs,
                                 liger_fused_linear_grpo, liger_fused_linear_kto)
from ligerd.chunked_loss.grpo import LOSS_TYPES  # noqa: E402
from ligerd.testing import ref_executor  # noqa: E402
from ligerd.testing.reference import chunked_loss as R  # noqa: E402

RTOL, ATOL = 2e-5, 2e-6
U32 = 2.0 ** -24      # fp32 unit roundoff
CANCEL_ULPS = 4


@pytest.fixture
def launcher(monkeypatch):
    return ref_executor.install(monkeypatch)


@pytest.fixture(params=["budget", "4", "16"], ids=["chunk=budget", "chunk=4", "chunk=16"])
def chunk(request, monkeypatch):
    if request.param != "budget":
        monkeypatch.setenv("LIGERD_CHUNKED_LOSS_CHUNK", request.param)
    return request.param


def gen():
    """A generator seeded from $LIGERD_TEST_SEED, else freshly; the seed is printed."""
    seed = int(os.environ.get("LIGERD_TEST_SEED") or torch.seed() % (2 ** 31))
    print(f"seed {seed} (LIGERD_TEST_SEED={seed} replays it)")
    return torch.Generator().manual_seed(seed)


def check(name, got, want, gg, gw, atol=ATOL, cancel=None):
    """Outputs and gradients against the float64 reference. ``cancel`` maps an output's index to
    S, the summed magnitude of the terms that cancel in it (float64): that scalar may also be off by
    CANCEL_ULPS * U32 * S, the fp32 rounding of terms that large, whatever the sum's own size."""
    g, w = R.flat(got), R.flat(want)
    assert len(g) == len(w), f"{name}: {len(g)} outputs, the reference has {len(w)}"
    for i, (a, c) in enumerate(zip(g, w)):
        if cancel is not None and i in cancel:
            a, c = float(a.detach()), float(c.detach())
            err, ref = abs(a - c), abs(c)
            lim = RTOL * ref + max(atol * max(1.0, ref), CANCEL_ULPS * U32 * float(cancel[i]))
            assert err <= lim, (f"{name} output {i}: got {a:.9g}, want {c:.9g}, |err| {err:.3g} > "
                                f"{lim:.3g} (rtol {RTOL}, atol {atol}, terms' magnitude {float(cancel[i]):.4g})")
        else:
            R.assert_close(f"{name} output {i}", a, c, RTOL, atol)
    for label, a, c in zip(("d input", "d weight", "d bias"), gg, gw):
        if c is None:
            assert a is None, f"{name}: {label} should be None"
        else:
            R.assert_close(f"{name} {label}", a, c, RTOL, atol)


def both(call, ref_call, x, W, b):
    xs, Ws, bs = R.leaves(x, W, b)
    got = call(xs, Ws, bs)
    got[0].backward()
    xd, Wd, bd = R.leaves(x, W, b, dtype=torch.float64)
    want = ref_call(xd, Wd, bd)
    want[0].backward()
    return got, want, (xs.grad, Ws.grad, bs.grad if bs is not None else None), \
        (xd.grad, Wd.grad, bd.grad if bd is not None else None)


# ---- KTO -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("use_ref", [False, True], ids=["no-ref", "ref"])
@pytest.mark.parametrize("average", [False, True], ids=["sum", "mean"])
@pytest.mark.parametrize("with_kl", [False, True], ids=["kl=None", "kl"])
def test_kto(launcher, chunk, use_ref, average, with_kl):
    g = gen()
    B, T, H, V = 6, 7, 16, 41
    x, W, b = torch.randn(B, T, H, generator=g), torch.randn(V, H, generator=g) * 0.3, torch.randn(V, generator=g)
    y = torch.randint(0, V, (B, T), generator=g)
    y[:, :2] = -100
    labels = torch.tensor([True, False, True, True, False, False])
    rx, rW, rb = torch.randn(B, T, H, generator=g), torch.randn(V, H, generator=g) * 0.3, torch.randn(V, generator=g)
    kl = torch.tensor(0.25) if with_kl else None
    mod = LigerFusedLinearKTOLoss(beta=0.4, use_ref_model=use_ref, average_log_prob=average)
    ref = (rx.double(), rW.double(), rb.double()) if use_ref else None
    got, want, gg, gw = both(lambda a, w_, bb: mod(a, w_, y, bb, labels, rx, rW, rb, kl),
                             lambda a, w_, bb: R.kto(a, w_, y, labels, bb, beta=0.4, ref=ref,
                                                     kl=kl.double() if kl is not None else None,
                                                     average_log_prob=average), x, W, b)
    # Outputs 3, 4 (the chosen / rejected rows' logits sums) and 5, 6 (the rewards sums, beta times
    # log-prob minus the reference model's) add fp32 terms of either sign: a sum near 0 keeps only
    # the precision of its terms, not its own. A logits sum of 0.0005 over 861 logits whose
    # magnitudes add to ~1000 is off by ~4e-6 as ligerd computes it (x @ colsum(W) + sum(b), fp32)
    # and by ~1e-5 as Liger does (fp32 logits, summed); the old rtol/atol allowed 2e-6. The extra
    # allowance is CANCEL_ULPS units of roundoff of S, the terms' summed magnitude: |logits| of the
    # rows, and beta (|log-prob| + |reference log-prob|) of the sequences. Measured over 2000 seeds
    # (chunk=4, mean, ref) and 150 seeds of every case: at most 1.0 U32 * S for the logits sums and
    # 2.7 for the rewards (1.3 where they cancel, with a reference model). It is below RTOL * |sum|
    # unless the sum cancels; a wrong row, label or bias is an error of whole logits, thousands of
    # times larger.
    with torch.no_grad():
        xd, Wd, bd = x.double(), W.double(), b.double()
        z = R.logits(xd, Wd, bd).abs().sum((1, 2))
        lp = R.seq_logps(xd, Wd, bd, y, -100, average).abs()
        if use_ref:
            lp = lp + R.seq_logps(*ref, y, -100, average).abs()
    chosen = labels.double()
    cancel = {3: (z * chosen).sum(), 4: (z * (1 - chosen)).sum(),
              5: 0.4 * (lp * chosen).sum(), 6: 0.4 * (lp * (1 - chosen)).sum()}
    check("kto", got, want, gg, gw, cancel=cancel)


def test_kto_functional_and_labels_required(launcher):
    g = gen()
    x, W = torch.randn(4, 5, 8, generator=g), torch.randn(19, 8, generator=g)
    y = torch.randint(0, 19, (4, 5), generator=g)
    labels = torch.tensor([True, False, False, True])
    f = liger_fused_linear_kto(x, W, y, labels, None, None, None, None, None, -100, 0.1, True, False)
    m = LigerFusedLinearKTOLoss()(x, W, y, preference_labels=labels)
    for a, c in zip(R.flat(f), R.flat(m)):
        assert torch.equal(a, c)
    with pytest.raises(OpInputError, match="preference_labels"):
        LigerFusedLinearKTOLoss()(x, W, y)


# ---- GRPO ----------------------------------------------------------------------------------------

def grpo_inputs(B=5, T=6, H=16, V=37):
    g = gen()
    x, W, b = torch.randn(B, T, H, generator=g), torch.randn(V, H, generator=g) * 0.3, torch.randn(V, generator=g) * .1
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.25).long()
    mask[2] = 0                                    # a sequence with no completion tokens
    adv = torch.randn(B, generator=g)
    old = -torch.rand(B, T, generator=g) * 3
    ref = -torch.rand(B, T, generator=g) * 3
    rx, rW, rb = torch.randn(B, T, H, generator=g), torch.randn(V, H, generator=g) * .3, torch.randn(V, generator=g)
    isr = torch.rand(B, T, generator=g) + 0.5
    return x, W, b, ids, mask, adv, old, ref, (rx, rW, rb), isr


@pytest.fixture(params=["4", "16"], ids=["chunk=4", "chunk=16"])
def grpo_chunk(request, monkeypatch):
    """4: every sequence (T=6) spans two chunks (two passes); 16: two sequences per group."""
    monkeypatch.setenv("LIGERD_CHUNKED_LOSS_CHUNK", request.param)
    return request.param


LEVELS = [(lt, lvl) for lt in LOSS_TYPES for lvl in ("token", "sequence")
          if not (lvl == "sequence" and lt in ("cispo", "sapo", "vespo"))]


@pytest.mark.parametrize("loss_type,level", LEVELS)
@pytest.mark.parametrize("variant", ["ref-logps", "ref-input", "no-ref", "is-ratio+temp", "delta+bias-kl"])
def test_grpo_every_loss_type(launcher, grpo_chunk, loss_type, level, variant):
    x, W, b, ids, mask, adv, old, ref, (rx, rW, rb), isr = grpo_inputs()
    kw = dict(loss_type=loss_type, importance_sampling_level=level, max_completion_length=9, beta=0.1,
              epsilon_high=0.28)
    fwd = dict(ref_per_token_logps=ref, old_per_token_logps=old)
    rkw = dict(ref_logps=ref.double(), old_logps=old.double())
    if variant == "ref-input":
        fwd = dict(ref_input=rx, ref_weight=rW, ref_bias=rb, old_per_token_logps=old)
        rkw = dict(ref=(rx.double(), rW.double(), rb.double()), old_logps=old.double())
    elif variant == "no-ref":
        kw.update(beta=0.0, use_ref_model=False)
        fwd, rkw = {}, {}
    elif variant == "is-ratio+temp":
        kw.update(temperature=0.7)
        fwd["vllm_is_ratio"] = isr[:, 0] if loss_type in ("dapo", "vespo") else isr  # (B,) and (B, T)
        rkw["vllm_is_ratio"] = fwd["vllm_is_ratio"].double()
    else:
        kw.update(delta=1.5, use_bias_correction_kl=True)
    mod = LigerFusedLinearGRPOLoss(**kw)
    rargs = {k: v for k, v in kw.items() if k != "use_ref_model"}
    got, want, gg, gw = both(lambda a, w_, bb: mod(a, w_, ids, mask, adv, bb, **fwd),
                             lambda a, w_, bb: R.grpo(a, w_, ids, mask, adv.double(), bb, **rargs, **rkw),
                             x, W, b)
    check(f"grpo {loss_type}/{level}/{variant}", got, want, gg, gw)


@pytest.mark.parametrize("n_items", [7, 40.0])
def test_grpo_num_items_in_batch(launcher, n_items):
    x, W, b, ids, mask, adv, old, ref, _, _ = grpo_inputs()
    got, want, gg, gw = both(
        lambda a, w_, bb: LigerFusedLinearGRPOLoss()(a, w_, ids, mask, adv, bb, ref, old,
                                                     num_items_in_batch=torch.tensor(n_items)),
        lambda a, w_, bb: R.grpo(a, w_, ids, mask, adv.double(), bb, ref_logps=ref.double(), old_logps=old.double(),
                                 num_items_in_batch=n_items), x, W, b)
    check("grpo num_items_in_batch", got, want, gg, gw)


def test_grpo_functional_matches_module_and_no_bias(launcher):
    x, W, _, ids, mask, adv, old, ref, _, _ = grpo_inputs(V=131)
    f = liger_fused_linear_grpo(x, W, ids, mask, adv, None, ref, old)
    m = LigerFusedLinearGRPOLoss()(x, W, ids, mask, adv, None, ref, old)
    for a, c in zip(R.flat(f), R.flat(m)):
        assert torch.equal(a, c)


def test_grpo_arguments_checked_as_liger(launcher):
    x, W, _, ids, mask, adv, *_ = grpo_inputs()
    with pytest.raises(ValueError, match="Sequence-level"):
        LigerFusedLinearGRPOLoss(loss_type="cispo", importance_sampling_level="sequence",
                                 use_ref_model=False)(x, W, ids, mask, adv)
    with pytest.raises(ValueError, match="max_completion_length"):
        LigerFusedLinearGRPOLoss(loss_type="dr_grpo", use_ref_model=False)(x, W, ids, mask, adv)
    with pytest.raises(OpInputError, match="ref_per_token_logps or ref_input"):
        LigerFusedLinearGRPOLoss()(x, W, ids, mask, adv)
    with pytest.raises(ValueError, match="delta"):
        LigerFusedLinearGRPOLoss(delta=0.0)
    with pytest.raises(OpInputError, match="vllm_is_ratio"):
        LigerFusedLinearGRPOLoss(use_ref_model=False)(x, W, ids, mask, adv, vllm_is_ratio=torch.ones(3, 2))


# ---- the selected-token log-prob gatherer -------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("bias", [False, True])
def test_selected_log_probs_forward_and_backward(launcher, chunk, temperature, bias):
    g = gen()
    B, T, H, V = 3, 7, 12, 53
    x, W = torch.randn(B, T, H, generator=g), torch.randn(V, H, generator=g) * 0.5
    b = torch.randn(V, generator=g) if bias else None
    ids = torch.randint(0, V, (B, T), generator=g)
    ids[1, 2] = -100
    up = torch.randn(B, T, generator=g)       # an arbitrary upstream gradient per token
    xs, Ws, bs = R.leaves(x, W, b)
    lp = LigerFusedLinearSelectedLogProbs(temperature)(xs, Ws, ids, bs)
    (lp * up).sum().backward()
    xd, Wd, bd = R.leaves(x, W, b, dtype=torch.float64)
    want, _ = R.token_logps(xd, Wd, bd, ids, temperature=temperature)
    (want * up.double()).sum().backward()
    assert lp.dtype == torch.float32 and lp.shape == (B, T)
    R.assert_close("log-probs", lp, want, RTOL, ATOL * 10)
    R.assert_close("d input", xs.grad, xd.grad, RTOL, ATOL)
    R.assert_close("d weight", Ws.grad, Wd.grad, RTOL, ATOL)
    if bias:
        R.assert_close("d bias", bs.grad, bd.grad, RTOL, ATOL)


def test_selected_log_probs_weight_only_and_errors(launcher):
    g = gen()
    x, W = torch.randn(10, 8, generator=g), torch.randn(17, 8, generator=g)
    ids = torch.randint(0, 17, (10,), generator=g)
    Ws, = R.leaves(W)
    fused_linear_selected_log_probs(x, Ws, ids).sum().backward()
    Wd, = R.leaves(W, dtype=torch.float64)
    R.token_logps(x.double(), Wd, None, ids)[0].sum().backward()
    R.assert_close("d weight", Ws.grad, Wd.grad, RTOL, ATOL)
    with pytest.raises(OpInputError, match="out of bounds"):
        fused_linear_selected_log_probs(x, W, torch.full((10,), 17))
    with pytest.raises(OpInputError, match="shape"):
        fused_linear_selected_log_probs(x, W, ids[:4])
