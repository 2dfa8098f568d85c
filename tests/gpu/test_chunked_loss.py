"""ligerd.chunked_loss and the fused linear JSD / KL-div on the GPU, in both dispatch modes (the
module runs once with dispatch pinned to local, once against a private daemon in remote mode; the
remote half needs $LIGERD_BIN, which tests/gpu/run.sh sets): loss, aux outputs and the input /
weight / bias gradients of every loss against the float64 unchunked references of
ligerd.testing.reference.chunked_loss, peak memory within the chunk budget, and parity with
Liger-Kernel 0.8.5 itself where it is importable ($LIGERD_PEER_SITE).

Tolerances (why): like Liger and like torch training code, each chunk's logits are held in the
input dtype and upcast for the softmax, and d logits are rounded to the input dtype before the
gradient GEMMs (fp32 accumulation). So errors are judged norm-wise, ||got - ref64|| / ||ref64||
(ref64: float64 on the same rounded inputs), against what the same computation done by torch
unfused in the same dtype (bf16 GEMM, fp32 softmax and loss, autograd) achieves against the same
reference: at most 2x that (4x for outputs of fewer than 16 numbers, see ``allowed``), or a
floor (fp32 2e-5, bf16 2^-7: one bf16 rounding of the logits moves a sequence log-prob summed
over hundreds of tokens by about that much) where torch's error happens to be tiny. fp32 runs with
TF32 off (conftest's no_tf32). Parity with Liger: ligerd's error against float64 at most 2x
Liger's (or the floor).
"""

from __future__ import annotations

import os
import tempfile

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd import chunked_loss as CL  # noqa: E402
from ligerd.testing import gpu as _util  # noqa: E402
from ligerd.testing.gpu import DEV, assert_ran_in, liger_peer, param_id, rel_err  # noqa: E402
from ligerd.testing.reference import chunked_loss as R  # noqa: E402
from ligerd.transformers import LigerFusedLinearJSD, LigerFusedLinearKLDivLoss  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_tf32")  # conftest.py

FLOOR = {torch.float32: 2e-5, torch.bfloat16: 2.0 ** -7}
DTYPES = [torch.float32, torch.bfloat16]
CACHE = os.environ.get("LIGERD_CACHE_DIR") or tempfile.mkdtemp(prefix="ligerd-chunked-cache-")


@pytest.fixture(scope="module", params=["local", "remote"])
def dispatch(request):
    """Every test of the module in local dispatch, then in remote dispatch on a private daemon."""
    with _util.dispatch_pinned(request.param, cache_dir=CACHE, prefix="ligerd-chunked-test-") as mode:
        yield mode


def gen(seed):
    return torch.Generator(device=DEV).manual_seed(seed)


def run(fn, tensors, dtype):
    """fn(*leaves) -> nested result; backward of its first tensor; (outputs, grads of the leaves)."""
    leaves = R.leaves(*[t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors])
    out = fn(*leaves)
    R.flat(out)[0].backward()
    torch.cuda.synchronize()
    return [o.detach() for o in R.flat(out)], [t.grad if t is not None and t.is_floating_point() else None
                                               for t in leaves]


def floor(dtype, vocab: int = 0) -> float:
    """The error no yardstick ratio is asked below: FLOOR, and in float32 also twice the rounding
    of a reduction over the vocabulary (2 x eps x sqrt(V): the logsumexp, and dx = dlogits @ W
    has V terms per element), 2.1e-5 at V=32000 and 4.6e-5 at V=151936."""
    return max(FLOOR[dtype], 2 * 2.0 ** -24 * vocab ** 0.5) if dtype == torch.float32 else FLOOR[dtype]


def allowed(err_base: float, numel: int, dtype, vocab: int = 0) -> float:
    """The largest error accepted where the yardstick's is err_base: 2x, or 8x for outputs of fewer
    than 16 numbers (the error of a handful of numbers is a few random roundings, several times
    another's by chance: one pair's reward is a difference of two sums of hundreds of log-probs,
    and at V=151936 fp32 ours was 4.6x torch's), or the floor. A defect (a wrong beta, mask or
    reference term) is off by orders of magnitude more."""
    return max((2 if numel >= 16 else 8) * err_base, floor(dtype, vocab))


def judge(name, ours_fn, ref_fn, tensors, dtype, n_grads, vocab: int = 0):
    """ours vs the float64 reference, within max(2 x torch's same-dtype error, floor) norm-wise."""
    tensors = [t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors]
    got, ggot = run(ours_fn, tensors, dtype)
    base, gbase = run(ref_fn, tensors, dtype)
    want, gwant = run(ref_fn, tensors, torch.float64)  # float64 of the same (rounded) inputs
    assert len(got) == len(want), f"{name}: {len(got)} outputs, the reference has {len(want)}"
    pairs = [(f"output {i}", a, b, c) for i, (a, b, c) in enumerate(zip(got, base, want))]
    pairs += [(f"grad {i}", a, b, c) for i, (a, b, c) in enumerate(zip(ggot[:n_grads], gbase[:n_grads],
                                                                       gwant[:n_grads])) if c is not None]
    for label, a, b, c in pairs:
        assert a is not None, f"{name} {label}: missing"
        assert torch.isfinite(a.float()).all() or not torch.isfinite(c).all(), f"{name} {label}: not finite"
        e, eb = rel_err(a, c), rel_err(b, c)
        assert e <= allowed(eb, c.numel(), dtype, vocab), \
            f"{name} {label}: error {e:.3g} vs float64, torch in {dtype} {eb:.3g}, floor {floor(dtype, vocab):.3g}"


def pref_inputs(B, T, H, V, seed=0, bias=True):
    g = gen(seed)
    x = torch.randn(B, T, H, device=DEV, generator=g)
    W = torch.randn(V, H, device=DEV, generator=g) / H ** 0.5 * 2
    b = torch.randn(V, device=DEV, generator=g) * 0.1 if bias else None
    y = torch.randint(0, V, (B, T), device=DEV, generator=g)
    y[:, : T // 4] = -100
    y[1, T // 2:] = -100
    rx = torch.randn(B, T, H, device=DEV, generator=g)
    rW = torch.randn(V, H, device=DEV, generator=g) / H ** 0.5 * 2
    return x, W, b, y, rx, rW


PREF = {
    "dpo-sigmoid": ("dpo", lambda: CL.LigerFusedLinearDPOLoss(beta=0.1), dict(compute_nll_loss=False,
                                                                              average_log_prob=False), True),
    "dpo-apo_zero-nll": ("dpo", lambda: CL.LigerFusedLinearDPOLoss(loss_type="apo_zero", compute_nll_loss=True),
                         dict(loss_type="apo_zero", average_log_prob=False), True),
    "orpo": ("orpo", lambda: CL.LigerFusedLinearORPOLoss(), dict(average_log_prob=True), False),
    "cpo": ("cpo", lambda: CL.LigerFusedLinearCPOLoss(label_smoothing=0.1),
            dict(average_log_prob=False, label_smoothing=0.1), False),
    "simpo": ("simpo", lambda: CL.LigerFusedLinearSimPOLoss(), dict(average_log_prob=True), False),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=param_id)
@pytest.mark.parametrize("case", list(PREF))
@pytest.mark.parametrize("shape", [(4, 257, 1024, 32000), (2, 1024, 512, 151936)], ids=param_id)
def test_preference(dispatch, case, dtype, shape):
    kind, make, rkw, with_ref = PREF[case]
    x, W, b, y, rx, rW = pref_inputs(*shape)
    mod = make()

    def ours(x_, W_, b_, rx_, rW_):
        return mod(W_, x_, y, b_, rx_, rW_) if with_ref else mod(W_, x_, y, b_)

    def ref(x_, W_, b_, rx_, rW_):
        return R.preference(kind, x_, W_, y, b_, ref=(rx_.detach(), rW_.detach(), None) if with_ref else None,
                            **rkw)

    judge(f"{case} {param_id(shape)} {dtype}", ours, ref, [x, W, b, rx, rW], dtype, 3, vocab=shape[3])
    assert_ran_in(dispatch)


@pytest.mark.parametrize("dtype", DTYPES, ids=param_id)
def test_kto(dispatch, dtype):
    x, W, b, y, rx, rW = pref_inputs(6, 300, 768, 50257, seed=3)
    labels = torch.tensor([True, False, True, False, False, True], device=DEV)
    mod = CL.LigerFusedLinearKTOLoss(use_ref_model=True)
    kl = torch.tensor(0.1, device=DEV)
    judge(f"kto {dtype}", lambda a, w_, bb, r1, r2: mod(a, w_, y, bb, labels, r1, r2, None, kl),
          lambda a, w_, bb, r1, r2: R.kto(a, w_, y, labels, bb, ref=(r1.detach(), r2.detach(), None),
                                          kl=kl.to(a.dtype if a.dtype == torch.float64 else torch.float32)),
          [x, W, b, rx, rW], dtype, 3)
    assert_ran_in(dispatch)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"])
@pytest.mark.parametrize("dtype", DTYPES, ids=param_id)
def test_grpo(dispatch, loss_type, dtype):
    g = gen(5)
    B, T, H, V = 8, 200, 1024, 32000
    x = torch.randn(B, T, H, device=DEV, generator=g)
    W = torch.randn(V, H, device=DEV, generator=g) / H ** 0.5 * 2
    ids = torch.randint(0, V, (B, T), device=DEV, generator=g)
    mask = (torch.rand(B, T, device=DEV, generator=g) > 0.2).long()
    adv = torch.randn(B, device=DEV, generator=g)
    old = -torch.rand(B, T, device=DEV, generator=g) * 2 - 9   # near log(1/V): ratios of order 1
    ref = old + torch.randn(B, T, device=DEV, generator=g) * 0.1
    kw = dict(loss_type=loss_type, max_completion_length=T, temperature=0.9, beta=0.04)
    mod = CL.LigerFusedLinearGRPOLoss(**kw)
    judge(f"grpo {loss_type} {dtype}", lambda a, w_: mod(a, w_, ids, mask, adv, None, ref, old),
          lambda a, w_: R.grpo(a, w_, ids, mask, adv.to(a.dtype if a.dtype == torch.float64 else torch.float32),
                               None, ref_logps=ref, old_logps=old, **kw),
          [x, W], dtype, 2)
    assert_ran_in(dispatch)


@pytest.mark.parametrize("kind,beta", [("jsd", 0.0), ("jsd", 0.5), ("jsd", 1.0), ("cosine", 0.5)])
@pytest.mark.parametrize("dtype", DTYPES, ids=param_id)
def test_chunked_distillation(dispatch, kind, beta, dtype):
    g = gen(11)
    BT, H, Hs, V = 2048, 1024, 512, 32000
    sx = torch.randn(BT, Hs, device=DEV, generator=g)
    sW = torch.randn(V, Hs, device=DEV, generator=g) / Hs ** 0.5 * 2
    sb = torch.randn(V, device=DEV, generator=g) * 0.1
    tx = torch.randn(BT, H, device=DEV, generator=g)
    tW = torch.randn(V, H, device=DEV, generator=g) / H ** 0.5 * 2
    y = torch.randint(0, V, (BT,), device=DEV, generator=g)
    y[::9] = -100
    cls = CL.LigerFusedLinearJSDLoss if kind == "jsd" else CL.LigerFusedLinearCosineSimilarityLoss
    kw = dict(beta=beta, temperature=2.0, weight_hard_loss=0.3, weight_soft_loss=0.7)
    mod = cls(return_soft_hard_loss=True, **kw)
    judge(f"{kind} beta={beta} {dtype}", lambda a, w_, bb, t1, t2: mod(a, w_, t1, t2, y, bb),
          lambda a, w_, bb, t1, t2: (lambda r: (r[0], *r[1]))(R.distillation(kind, a, w_, t1.detach(), t2.detach(),
                                                                             y, bb, **kw)),
          [sx, sW, sb, tx, tW], dtype, 3)
    assert_ran_in(dispatch)


@pytest.mark.parametrize("path,temperature,Vt", [("fold", 1.0, 32000), ("padded", 1.0, 32003),
                                                 ("padded-tempered", 0.7, 32003)])
@pytest.mark.parametrize("dtype", DTYPES, ids=param_id)
def test_chunked_distillation_paths(dispatch, path, temperature, Vt, dtype):
    """The JSD block's other paths (chunked_loss/_distill_math.py): at T = 1 with one vocabulary
    the hard loss folded into the log-softmax backward (the benchmark's default); a larger, odd
    teacher vocabulary (the student padded; jsd_fwd's one-element kernels), at T = 1 and not."""
    g = gen(19)
    BT, H, V = 1024, 512, 32000
    sx, tx = (torch.randn(BT, H, device=DEV, generator=g) for _ in range(2))
    sW = torch.randn(V, H, device=DEV, generator=g) / H ** 0.5 * 2
    tW = torch.randn(Vt, H, device=DEV, generator=g) / H ** 0.5 * 2
    y = torch.randint(0, V, (BT,), device=DEV, generator=g)
    y[::7] = -100
    kw = dict(beta=0.5, temperature=temperature, weight_hard_loss=0.4, weight_soft_loss=0.6)
    mod = CL.LigerFusedLinearJSDLoss(return_soft_hard_loss=True, **kw)
    judge(f"jsd {path} {dtype}", lambda a, w_, t1, t2: mod(a, w_, t1, t2, y),
          lambda a, w_, t1, t2: (lambda r: (r[0], *r[1]))(R.distillation("jsd", a, w_, t1.detach(), t2.detach(), y,
                                                                         **kw)),
          [sx, sW, tx, tW], dtype, 2)
    assert_ran_in(dispatch)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("dtype", DTYPES, ids=param_id)
def test_transformers_fused_linear_jsd(dispatch, beta, dtype):
    g = gen(13)
    BT, H, V = 1024, 1024, 128256   # the float64 reference holds ~10 [BT, V] tensors
    sx, tx = (torch.randn(BT, H, device=DEV, generator=g) for _ in range(2))
    sW, tW = (torch.randn(V, H, device=DEV, generator=g) / H ** 0.5 * 2 for _ in range(2))
    y = torch.randint(0, V, (BT,), device=DEV, generator=g)
    y[::5] = -100
    mod = LigerFusedLinearJSD(jsd_beta=beta, temperature=1.5)
    judge(f"fused linear jsd beta={beta} {dtype}", lambda a, w_, t1, t2: mod(a, w_, t1, t2, y),
          lambda a, w_, t1, t2: R.fused_linear_jsd(a, w_, t1.detach(), t2.detach(), y, beta, -100, 1.5),
          [sx, sW, tx, tW], dtype, 2)
    assert_ran_in(dispatch)


@pytest.mark.parametrize("reduction", ["batchmean", "sum"])
def test_transformers_fused_linear_kl_div(dispatch, reduction):
    g = gen(17)
    BT, H, V = 1024, 1024, 32000
    x = torch.randn(BT, H, device=DEV, generator=g)
    W = torch.randn(V, H, device=DEV, generator=g) / H ** 0.5 * 2
    q = torch.softmax(torch.randn(BT, V, device=DEV, generator=g) * 3, -1)
    y = torch.randint(0, V, (BT,), device=DEV, generator=g)
    y[::3] = -100
    mod = LigerFusedLinearKLDivLoss(reduction=reduction, temperature=1.2)
    judge(f"fused linear kl {reduction}", lambda a, w_: mod(a, w_, q, y),
          lambda a, w_: R.fused_linear_kl_div(a, w_, q.to(torch.float64 if a.dtype == torch.float64 else
                                                          torch.float32), y, reduction, -100, 1.2),
          [x, W], torch.bfloat16, 2)
    assert_ran_in(dispatch)


@pytest.mark.parametrize("dtype", DTYPES, ids=param_id)
def test_selected_log_probs(dispatch, dtype):
    g = gen(19)
    B, T, H, V = 4, 513, 1024, 151936
    x = torch.randn(B, T, H, device=DEV, generator=g)
    W = torch.randn(V, H, device=DEV, generator=g) / H ** 0.5 * 2
    ids = torch.randint(0, V, (B, T), device=DEV, generator=g)
    up = torch.randn(B, T, device=DEV, generator=g)
    judge(f"selected log-probs {dtype}",
          lambda a, w_: ((CL.fused_linear_selected_log_probs(a, w_, ids, temperature=0.8) * up).sum(),),
          lambda a, w_: ((R.token_logps(a, w_, None, ids, temperature=0.8)[0] * up.to(
              torch.float64 if a.dtype == torch.float64 else torch.float32)).sum(),),
          [x, W], dtype, 2)
    assert_ran_in(dispatch)


def test_peak_memory_stays_within_the_chunk_budget(dispatch):
    """DPO on 4 x 2048 tokens with V = 128256 in bf16: beyond the inputs and their gradients, the
    peak is the logits buffer (at most 9.5% of the full logits, _engine's budget), the cuBLASLt
    workspace and O(tokens) vectors: asserted at 12% of the full logits + 64 MiB."""
    B, T, H, V = 4, 2048, 2048, 128256
    x, W, b, y, rx, rW = pref_inputs(B, T, H, V, bias=False)
    x, W, rx, rW = (t.bfloat16() for t in (x, W, rx, rW))
    xs, Ws = x.clone().requires_grad_(), W.clone().requires_grad_()
    mod = CL.LigerFusedLinearDPOLoss()
    mod(Ws, xs, y, None, rx, rW)[0].backward()   # warm-up: cuBLASLt handles, JIT, tuning
    xs.grad = Ws.grad = None
    torch.cuda.synchronize()
    grads = torch.empty_like(xs), torch.empty_like(Ws)   # what the gradients will occupy
    base = torch.cuda.memory_allocated()
    del grads
    torch.cuda.reset_peak_memory_stats()
    mod(Ws, xs, y, None, rx, rW)[0].backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    full = B * T * V * 2
    assert extra <= 0.12 * full + (64 << 20), f"peak extra {extra / 2**20:.0f} MiB, full logits {full / 2**20:.0f} MiB"


def test_remote_equals_local_within_gemm_order(dispatch):
    """Remote half: the same DPO call in both modes gives the same results up to the GEMM
    algorithm's summation order (each process times its own cuBLASLt algorithms): bf16 2^-7
    relative plus 1e-3 of the largest magnitude. Local half: two runs are bitwise equal (the
    chunk loop is deterministic)."""
    x, W, b, y, rx, rW = pref_inputs(4, 300, 512, 32000, seed=23)
    x, W, b, rx, rW = (t.bfloat16() for t in (x, W, b, rx, rW))

    def once():
        xs, Ws, bs = R.leaves(x, W, b)
        loss, aux = CL.LigerFusedLinearDPOLoss()(Ws, xs, y, bs, rx, rW)
        loss.backward()
        torch.cuda.synchronize()
        return [loss.detach(), *[a.detach() for a in aux], xs.grad, Ws.grad, bs.grad]

    first = once()
    if dispatch == "local":
        again = once()
        for i, (a, c) in enumerate(zip(first, again)):
            assert torch.equal(a, c), f"DPO local dispatch, tensor {i}: two runs differ"
        return
    ligerd.set_dispatch_mode("local")
    try:
        local = once()
    finally:
        ligerd.set_dispatch_mode("remote")
    for i, (r, l) in enumerate(zip(first, local)):
        torch.testing.assert_close(r.float(), l.float(), rtol=2 ** -7, atol=1e-3 * float(l.float().abs().max()),
                                   msg=lambda m: f"DPO remote vs local, tensor {i}: {m}")


# ---- parity with Liger-Kernel 0.8.5 -----------------------------------------------------------------------

LIGER = {
    "dpo": ("LigerFusedLinearDPOLoss", dict(), True),
    "orpo": ("LigerFusedLinearORPOLoss", dict(), False),
    "cpo": ("LigerFusedLinearCPOLoss", dict(), False),
    "simpo": ("LigerFusedLinearSimPOLoss", dict(), False),
}


@pytest.mark.parametrize("name", list(LIGER))
def test_parity_with_liger_preference(dispatch, name):
    cls_name, kw, with_ref = LIGER[name]
    theirs_cls = liger_peer(cls_name, "liger_kernel.chunked_loss")
    ours_mod, theirs_mod = getattr(CL, cls_name)(**kw), theirs_cls(**kw)
    x, W, b, y, rx, rW = pref_inputs(4, 512, 1024, 32000, seed=29)
    args = lambda x_, W_, b_, rx_, rW_: (W_, x_, y, b_, rx_, rW_) if with_ref else (W_, x_, y, b_)  # noqa: E731
    x, W, b, rx, rW = (t.bfloat16() for t in (x, W, b, rx, rW))
    got, ggot = run(lambda *t: ours_mod(*args(*t)), [x, W, b, rx, rW], torch.bfloat16)
    lig, glig = run(lambda *t: theirs_mod(*args(*t)), [x, W, b, rx, rW], torch.bfloat16)
    kind = name
    want, gwant = run(lambda x_, W_, b_, rx_, rW_: R.preference(
        kind, x_, W_, y, b_, ref=(rx_.detach(), rW_.detach(), None) if with_ref else None,
        compute_nll_loss=ours_mod.compute_nll_loss, average_log_prob=name in ("orpo", "simpo")),
        [x, W, b, rx, rW], torch.float64)
    assert len(got) == len(lig) == len(want)
    for label, a, c, w in [(f"output {i}", *t) for i, t in enumerate(zip(got, lig, want))] + \
                          [(f"grad {i}", *t) for i, t in enumerate(zip(ggot[:3], glig[:3], gwant[:3]))]:
        e, el = rel_err(a, w), rel_err(c, w)
        assert e <= allowed(el, w.numel(), torch.bfloat16), f"{name} {label}: ligerd {e:.3g}, Liger {el:.3g}"


def test_parity_with_liger_grpo_and_distillation(dispatch):
    grpo_cls = liger_peer("LigerFusedLinearGRPOLoss", "liger_kernel.chunked_loss")
    jsd_cls = liger_peer("LigerFusedLinearJSDLoss", "liger_kernel.chunked_loss")
    g = gen(31)
    B, T, H, V = 8, 256, 1024, 32000
    x = torch.randn(B, T, H, device=DEV, generator=g).bfloat16()
    W = (torch.randn(V, H, device=DEV, generator=g) / H ** 0.5 * 2).bfloat16()
    ids = torch.randint(0, V, (B, T), device=DEV, generator=g)
    mask = torch.ones(B, T, device=DEV, dtype=torch.long)
    adv = torch.randn(B, device=DEV, generator=g)
    ref = -torch.rand(B, T, device=DEV, generator=g) - 9.5
    for lt in ("dapo", "grpo", "cispo", "vespo"):
        ours, _ = CL.LigerFusedLinearGRPOLoss(loss_type=lt)(x, W, ids, mask, adv, None, ref)
        theirs, _ = grpo_cls(loss_type=lt)(x, W, ids, mask, adv, None, ref)
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=2 ** -6, atol=1e-4,
                                   msg=lambda m: f"GRPO {lt} loss vs Liger: {m}")
    sx, tx = x.view(-1, H)[:1024], torch.randn(1024, H, device=DEV, generator=g).bfloat16()
    y = ids.view(-1)[:1024]
    ours = CL.LigerFusedLinearJSDLoss()(sx, W, tx, W.flip(0), y)
    theirs = jsd_cls()(sx, W, tx, W.flip(0), y)
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=2 ** -6, atol=1e-4,
                               msg=lambda m: f"JSD distillation loss vs Liger: {m}")
