"""The cross-entropy and fused linear cross-entropy plumbing on the CPU: custom ops, fake kernels,
autograd (in-place forward gradient in eager, functional under torch.compile), the Liger-shaped
modules and functions, reductions, class weights, label smoothing, z-loss, softcap, metrics, the
chunked fused linear loss (incl. reduction="none" with a per-token grad_output, Liger #968) and the
input errors. The executor is replaced by a float64 "launcher" that honours the contract of
kernels/ops/cross_entropy.cc; every result is compared with torch's own F.cross_entropy (or a
float64 formula for what torch lacks: z-loss, softcap). The kernels themselves are tested in
tests/gpu/test_cross_entropy.py and tests/gpu/test_fused_linear_cross_entropy.py."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import torch.nn.functional as F  # noqa: E402

from ligerd import OpInputError  # noqa: E402
from ligerd.ops import fused_linear_cross_entropy as flce_mod  # noqa: E402
from ligerd.transformers import (CrossEntropyOutput, LigerCrossEntropyLoss,  # noqa: E402
                                 LigerFusedLinearCrossEntropyLoss, liger_cross_entropy,
                                 liger_fused_linear_cross_entropy)
from ligerd.testing import ref_executor  # noqa: E402


@pytest.fixture
def launcher(monkeypatch):
    """The executor replaced by its float64 reference (tests/python/ref_executor.py)."""
    return ref_executor.install(monkeypatch, describe=ref_executor.shape_and_ptr)


def logits_and_target(bt=9, V=13, ignore=(), seed=0, dtype=torch.float32, ii=-100):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(bt, V, generator=g, dtype=torch.float64).to(dtype) * 3
    t = torch.randint(0, V, (bt,), generator=g)
    for i in ignore:
        t[i] = ii
    return x, t


def run_ours(x0, t, grad_scale=None, **kw):
    p = x0.clone().requires_grad_()
    x = p * 1  # non-leaf logits, as from lm_head
    out = liger_cross_entropy(x, t, **kw)
    loss = out.loss if isinstance(out, CrossEntropyOutput) else out
    gout = torch.ones_like(loss) if grad_scale is None else grad_scale
    loss.backward(gout)
    return out, loss, p.grad, x


def run_torch(x0, t, grad_scale=None, **kw):
    p = x0.clone().double().requires_grad_()
    loss = F.cross_entropy(p, t, **kw)
    gout = torch.ones_like(loss) if grad_scale is None else grad_scale.double()
    loss.backward(gout)
    return loss, p.grad


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_matches_torch_cross_entropy(launcher, reduction, weighted, ls):
    x0, t = logits_and_target(ignore=(2, 5))
    w = torch.rand(13, dtype=torch.float32) + 0.5 if weighted else None
    gs = torch.randn(9) if reduction == "none" else torch.tensor(0.7)
    _, loss, grad, x = run_ours(x0, t, grad_scale=gs, weight=w, reduction=reduction, label_smoothing=ls)
    rl, rg = run_torch(x0, t, grad_scale=gs, weight=None if w is None else w.double(), reduction=reduction,
                       label_smoothing=ls, ignore_index=-100)
    torch.testing.assert_close(loss.double(), rl, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), rg, rtol=1e-6, atol=1e-6)
    assert grad[2].abs().sum() == 0 and grad[5].abs().sum() == 0


def test_gradient_is_written_over_the_logits_in_eager(launcher):
    x0, t = logits_and_target()
    p = x0.clone().requires_grad_()
    x = p * 1
    loss = liger_cross_entropy(x, t)
    fwd = [c for c in launcher.calls if c[0] == "cross_entropy_fwd"][0]
    assert fwd[1][5][1] == fwd[1][0][1] == x.data_ptr(), "dX is X (in place)"
    _, rg = run_torch(x0, t)
    torch.testing.assert_close(x.detach().double(), rg, rtol=1e-6, atol=1e-6)  # x now holds the grad
    loss.backward()
    torch.testing.assert_close(p.grad.double(), rg, rtol=1e-6, atol=1e-6)
    # grad_output == 1: the scale op is launched and skips on the device (no host sync).
    assert [c[0] for c in launcher.calls][-1] == "cross_entropy_scale"


def test_z_loss_softcap_and_metrics(launcher):
    x0, t = logits_and_target(ignore=(0,))
    cap, lss = 4.0, 1e-2
    out, loss, grad, _ = run_ours(x0, t, softcap=cap, lse_square_scale=lss, return_z_loss=True,
                                  return_token_accuracy=True, return_predicted_tokens=True)
    assert isinstance(out, CrossEntropyOutput)
    p = x0.clone().double().requires_grad_()
    z = cap * torch.tanh(p / cap)
    valid = t != -100
    lse = torch.logsumexp(z, 1)
    n = valid.sum()
    zl = (lss * lse * lse)[valid].sum() / n
    ref = F.cross_entropy(z, t, ignore_index=-100) + zl
    ref.backward()
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.z_loss.double(), zl.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), p.grad, rtol=1e-6, atol=1e-6)
    am = z.argmax(1)
    assert out.predicted_tokens.tolist() == torch.where(valid, am, torch.full_like(am, -1)).tolist()
    acc = ((am == t) & valid).double().sum() / n
    torch.testing.assert_close(out.token_accuracy.double(), acc)


def test_all_rows_ignored_gives_zero_not_nan(launcher):
    x0, t = logits_and_target(ignore=range(9))
    for red in ("mean", "sum"):
        _, loss, grad, _ = run_ours(x0, t, reduction=red)
        assert float(loss) == 0.0 and grad.abs().sum() == 0  # torch gives NaN for "mean" (0/0)


def test_module_and_no_grad_path(launcher):
    x0, t = logits_and_target()
    m = LigerCrossEntropyLoss(label_smoothing=0.05)
    with torch.no_grad():
        loss = m(x0.clone(), t)
    torch.testing.assert_close(loss.double(), F.cross_entropy(x0.double(), t, label_smoothing=0.05))
    fwd = [c for c in launcher.calls if c[0] == "cross_entropy_fwd"][-1]
    assert fwd[1][5] is None, "no gradient asked for: loss only"
    with pytest.raises(ValueError, match="LigerCrossEntropyLoss: reduction must be"):
        LigerCrossEntropyLoss(reduction="avg")
    from ligerd.transformers import LigerFusedLinearCrossEntropyLoss
    with pytest.raises(ValueError, match="LigerFusedLinearCrossEntropyLoss: label_smoothing"):
        LigerFusedLinearCrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="softcap must be > 0"):
        LigerCrossEntropyLoss(softcap=0.0)


def test_out_of_range_target_is_a_clear_error(launcher):
    x0, t = logits_and_target()
    t[3] = 13
    with pytest.raises(OpInputError, match=r"out of bounds.*\[0, 13\)"):
        liger_cross_entropy(x0.clone().requires_grad_() * 1, t)
    assert not any(c[0] == "cross_entropy_fwd" for c in launcher.calls), "refused before the kernel"


@pytest.mark.parametrize("bad,msg", [
    (dict(reduction="avg"), "reduction must be one of"),
    (dict(label_smoothing=1.5), "label_smoothing must be between"),
    (dict(softcap=-1.0), "softcap must greater than 0.0"),
    (dict(weight=torch.ones(12)), r"weight has shape \(12,\)"),
])
def test_bad_arguments(launcher, bad, msg):
    x0, t = logits_and_target()
    with pytest.raises(OpInputError, match=msg):
        liger_cross_entropy(x0, t, **bad)
    with pytest.raises(OpInputError, match="target must be 1-D"):
        liger_cross_entropy(x0, t[:4])


def test_legacy_reduce_and_unbatched(launcher):
    x0, t = logits_and_target()
    loss = liger_cross_entropy(x0.clone(), t, reduce=False)
    assert loss.shape == (9,)
    one = liger_cross_entropy(x0[0].clone(), t[0])
    torch.testing.assert_close(one.double(), F.cross_entropy(x0[0].double(), t[0]))


def test_compile_uses_the_functional_op(launcher):
    x0, t = logits_and_target()

    def f(x, t):
        return liger_cross_entropy(x * 1, t, label_smoothing=0.1)

    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    p = x0.clone().requires_grad_()
    loss = cf(p, t)
    loss.backward()
    rl, rg = run_torch(x0, t, label_smoothing=0.1)
    torch.testing.assert_close(loss.double(), rl, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(p.grad.double(), rg, rtol=1e-6, atol=1e-6)
    fwds = [c for c in launcher.calls if c[0] == "cross_entropy_fwd"]
    assert fwds and all(c[1][5][1] != c[1][0][1] for c in fwds), "compiled forward is out of place"


# ---------------------------------------------------------------------------------------------
# Fused linear cross-entropy.


def flce_inputs(bt=21, H=8, V=13, bias=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(bt, H, generator=g, dtype=torch.float64)
    W = torch.randn(V, H, generator=g, dtype=torch.float64) * 0.5
    b = torch.randn(V, generator=g, dtype=torch.float64) if bias else None
    t = torch.randint(0, V, (bt,), generator=g)
    t[3] = -100
    return x, W, b, t


@pytest.mark.parametrize("mode", ["chunked", "sliced"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [False, True])
def test_flce_matches_linear_plus_cross_entropy(launcher, monkeypatch, reduction, bias, mode):
    monkeypatch.setenv("LIGERD_FLCE_MODE", mode)
    monkeypatch.setenv("LIGERD_FLCE_CHUNK", "4")  # 6 chunks, the last one partial
    monkeypatch.setenv("LIGERD_FLCE_SLICE", "4,5")  # 6 token blocks x 3 slices (5, 5, 3 classes)
    x0, W0, b0, t = flce_inputs(bias=bias)
    w_ce = torch.rand(13, dtype=torch.float64) + 0.5
    gs = torch.randn(21, dtype=torch.float64) if reduction == "none" else torch.tensor(1.3, dtype=torch.float64)
    kw = dict(label_smoothing=0.1, lse_square_scale=1e-3)

    x, W = x0.float().requires_grad_(), W0.float().requires_grad_()
    b = b0.float().requires_grad_() if bias else None
    loss = liger_fused_linear_cross_entropy(x, W, t, b, ce_weight=w_ce.float(), reduction=reduction, **kw)
    assert loss.dtype == torch.float32
    loss.backward(gs.float() if reduction == "none" else gs.float())

    xr, Wr = x0.clone().requires_grad_(), W0.clone().requires_grad_()
    br = b0.clone().requires_grad_() if bias else None
    logits = xr @ Wr.t() + (br if bias else 0)
    valid = t != -100
    lse = torch.logsumexp(logits, 1)
    ref = F.cross_entropy(logits, t, weight=w_ce, reduction=reduction, label_smoothing=0.1)
    zl = 1e-3 * lse * lse * valid
    ref = ref + (zl if reduction == "none" else zl.sum() / (valid.sum() if reduction == "mean" else 1))
    ref.backward(gs)
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(W.grad.double(), Wr.grad, rtol=1e-4, atol=1e-5)
    if bias:
        torch.testing.assert_close(b.grad.double(), br.grad, rtol=1e-4, atol=1e-5)
    ops = [c[0] for c in launcher.calls]
    if mode == "chunked":
        assert ops.count("cross_entropy_fwd") == (12 if reduction == "none" else 6)  # none recomputes
    else:
        assert "cross_entropy_fwd" not in ops
        assert ops.count("ce_slice_stats") == (36 if reduction == "none" else 18)
        assert ops.count("ce_slice_grad") == 18
        # per block: pass 1's 3 logits GEMMs; pass 2 recomputes 2 (the last slice of pass 1 is
        # still in the buffer), then a dx and a dW GEMM per slice: 11; "none"'s forward adds 3.
        assert ops.count("gemm") == 6 * 11 + (6 * 3 if reduction == "none" else 0)


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("opts", [dict(softcap=3.0, return_z_loss=True, lse_square_scale=1e-3),
                                  dict(use_token_scaling=True, return_token_accuracy=True,
                                       return_predicted_tokens=True),
                                  dict(reduction="sum", label_smoothing=0.2)], ids=["softcap", "tokens", "smooth"])
def test_flce_sliced_matches_chunked(launcher, monkeypatch, dtype, opts):
    """Every option of the sliced sweep against the chunked one (checked against torch above):
    softcap and z-loss, token scaling with accuracy and predictions, label smoothing; fp16's
    "mean" runs scaled (the chunked sweep's fp16 rule). Both round the logits to the buffer's
    dtype; dx sums its slices in fp32 before one rounding where chunked rounds one GEMM: 1e-6
    relative in fp32, 2^-7 in 16-bit types (norm-wise)."""
    x0, W0, b0, t = flce_inputs(bt=37, H=16, V=29, seed=4)
    x0 = x0 * 2  # logits of a few units: the softcap bends them
    t[10] = -100
    runs = {}
    for mode in ("chunked", "sliced"):
        monkeypatch.setenv("LIGERD_FLCE_MODE", mode)
        monkeypatch.setenv("LIGERD_FLCE_CHUNK", "8")
        monkeypatch.setenv("LIGERD_FLCE_SLICE", "16,8")  # 3 blocks (16, 16, 5) x 4 slices (8 x 3, 5)
        x, W, b = (v.to(dtype).requires_grad_() for v in (x0, W0, b0))
        loss, z, acc, pred = flce_mod.fused_linear_cross_entropy(x, W, t, b, **opts)
        loss.backward()
        runs[mode] = (loss, z, acc, pred, x.grad, W.grad, b.grad)
    tol = 1e-6 if dtype == torch.float32 else 2.0 ** -7
    for name, a, b_ in zip(("loss", "z_loss", "accuracy", "pred", "dx", "dW", "db"), runs["sliced"], runs["chunked"]):
        assert (a is None) == (b_ is None), name
        if a is None:
            continue
        if name == "pred":
            assert torch.equal(a, b_)
            continue
        assert a.dtype == b_.dtype, name
        assert torch.isfinite(a).all(), name
        assert _rel(a, b_) <= tol, f"{name}: {_rel(a, b_):.3g}"


@pytest.mark.parametrize("bt,V", [(0, 13), (1, 13), (5, 1), (7, 40)], ids=["no-tokens", "one-token",
                                                                     "one-class", "blocks-of-2"])
def test_flce_sweeps_agree_at_the_edges(launcher, monkeypatch, bt, V):
    """No tokens (every gradient zero, dW included: no block writes it), one token, one class,
    and blocks of 2 tokens over slices of 16 classes (3, the last short): the sliced sweep equals
    the chunked one, with z-loss and accuracy on."""
    out = {}
    for mode in ("chunked", "sliced"):
        monkeypatch.setenv("LIGERD_FLCE_MODE", mode)
        monkeypatch.setenv("LIGERD_FLCE_SLICE", "2,16")
        g = torch.Generator().manual_seed(0)
        x = torch.randn(bt, 8, generator=g).requires_grad_()
        W = torch.randn(V, 8, generator=g).requires_grad_()
        t = torch.randint(0, V, (bt,), generator=g)
        loss, _, _, _ = flce_mod.fused_linear_cross_entropy(x, W, t, reduction="sum", return_z_loss=True,
                                                            lse_square_scale=1e-2, return_token_accuracy=True)
        loss.backward()
        out[mode] = (loss, x.grad, W.grad)
    for name, a, b in zip(("loss", "dx", "dW"), out["sliced"], out["chunked"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    if bt == 0:
        assert not out["sliced"][2].any() and not out["chunked"][2].any()


def test_flce_without_room_for_the_chunk_runs_the_sliced_sweep(launcher, monkeypatch):
    """The chunk buffer's allocation runs out of memory: the call runs the sliced sweep (its ops
    ran, its results are the sliced sweep's own), says so once, and nothing else is retried."""
    from ligerd import LigerdWarning, _errors
    monkeypatch.setattr(_errors, "_warned", set())
    monkeypatch.setenv("LIGERD_FLCE_CHUNK", "8")
    monkeypatch.setenv("LIGERD_FLCE_SLICE", "8,5")
    x0, W0, b0, t = flce_inputs()
    chunk_shape = (8, W0.shape[0])
    real_empty = torch.empty

    def empty(*shape, **kw):
        if tuple(shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape) == chunk_shape:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_empty(*shape, **kw)

    def run():
        x, W, b = (v.float().requires_grad_() for v in (x0, W0, b0))
        loss = liger_fused_linear_cross_entropy(x, W, t, b, label_smoothing=0.1)
        loss.backward()
        return loss, x.grad, W.grad, b.grad

    monkeypatch.setenv("LIGERD_FLCE_MODE", "sliced")
    want = run()
    monkeypatch.setenv("LIGERD_FLCE_MODE", "chunked")
    launcher.calls.clear()
    monkeypatch.setattr(torch, "empty", empty)
    with pytest.warns(LigerdWarning, match="no room for the 8 x 13 logits chunk.*runs the sliced sweep"):
        got = run()
    ops = [c[0] for c in launcher.calls]
    assert "ce_slice_stats" in ops and "cross_entropy_fwd" not in ops
    for a, b_ in zip(got, want):
        torch.testing.assert_close(a, b_)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", LigerdWarning)
        run()  # once per process


def test_flce_sliced_block_rule_and_bad_env(launcher, monkeypatch):
    monkeypatch.delenv("LIGERD_FLCE_SLICE", raising=False)
    from ligerd.ops import _flce_sliced as sl
    T, S = sl.block_shape(8192, 128256, 4096, 2, False)
    assert (T, S) == (1024, 16384)
    # the buffer, the fp32 dx accumulator and the per-token vectors within the 56 MiB budget
    assert T * (S * 2 + 4096 * 4 + 48) <= 56 << 20
    assert sl.block_shape(8191, 128256, 4096, 2, False) == (1024, 16384)  # 8 blocks, the last short
    T8 = sl.block_shape(16384, 128256, 8192, 2, False)[0]  # H = 8192: a larger accumulator
    assert T8 == 768 and T8 * (16384 * 2 + 8192 * 4 + 48) <= 56 << 20
    assert sl.block_shape(100, 50, 64, 4, True) == (100, 50)
    monkeypatch.setenv("LIGERD_FLCE_SLICE", "12")
    with pytest.raises(OpInputError, match="LIGERD_FLCE_SLICE"):
        sl.block_shape(10, 10, 8, 2, False)
    monkeypatch.setenv("LIGERD_FLCE_MODE", "fast")
    x0, W0, _, t = flce_inputs()
    with pytest.raises(OpInputError, match="LIGERD_FLCE_MODE must be 'chunked' or 'sliced'"):
        liger_fused_linear_cross_entropy(x0.float(), W0.float(), t)


def test_flce_module_weight_first_and_accum_dtype(monkeypatch):
    launcher = ref_executor.install(monkeypatch, describe=ref_executor.shape_dtype_ptr)
    monkeypatch.setenv("LIGERD_FLCE_CHUNK", "8")
    x0, W0, b0, t = flce_inputs()
    m = LigerFusedLinearCrossEntropyLoss(accum_dtype=torch.float32, return_token_accuracy=True)
    x, W, b = (v.bfloat16().requires_grad_() for v in (x0, W0, b0))
    out = m(W, x, t, b)
    assert isinstance(out, CrossEntropyOutput)
    out.loss.backward()
    # dW and db accumulate in fp32 (the gemm writes fp32 D from bf16 operands), then cast back.
    assert W.grad.dtype == torch.bfloat16 and b.grad.dtype == torch.bfloat16
    launcher_calls = [c for c in launcher.calls if c[0] == "gemm"]
    assert any(c[1][3][1] == torch.float32 for c in launcher_calls), "dW accumulated in fp32"
    x0, W0, b0 = (v.bfloat16().double() for v in (x0, W0, b0))
    logits = x0 @ W0.t() + b0
    # The reference executor computes in float64 and rounds the logits chunk to bf16 (the buffer's
    # dtype): 2^-8 relative on logits of size ~1.
    torch.testing.assert_close(out.loss.double(), F.cross_entropy(logits, t), rtol=1e-2, atol=1e-2)
    valid = t != -100
    acc = ((logits.argmax(1) == t) & valid).double().sum() / valid.sum()
    torch.testing.assert_close(out.token_accuracy.double(), acc)


def test_flce_chunk_rule_keeps_the_logits_buffer_under_ten_percent(monkeypatch):
    monkeypatch.delenv("LIGERD_FLCE_CHUNK", raising=False)
    c = flce_mod.chunk_tokens(8192, 128256, 2)
    assert c == 768 and c % 128 == 0
    # the buffer and cuBLASLt's 4 MiB workspace together within 10% of the full logits
    assert c * 128256 * 2 + (4 << 20) <= 0.10 * 8192 * 128256 * 2
    assert flce_mod.chunk_tokens(100, 128256, 2) == 100
    assert flce_mod.chunk_tokens(16384, 128256, 2) == 1536
    assert flce_mod.chunk_tokens(65536, 128256, 2) == 2048  # the 512 MiB cap
    monkeypatch.setenv("LIGERD_FLCE_CHUNK", "zero")
    with pytest.raises(OpInputError, match="LIGERD_FLCE_CHUNK"):
        flce_mod.chunk_tokens(10, 10, 2)


def test_flce_bad_inputs(launcher):
    x0, W0, b0, t = flce_inputs()
    with pytest.raises(OpInputError, match="accum_dtype must be None, the weight's dtype or torch.float32"):
        liger_fused_linear_cross_entropy(x0.float(), W0.float(), t, accum_dtype=torch.float64)
    with pytest.raises(OpInputError, match="does not match weight's hidden size"):
        liger_fused_linear_cross_entropy(x0[:, :5].float(), W0.float(), t)
    with pytest.raises(OpInputError, match="must match"):
        liger_fused_linear_cross_entropy(x0.double(), W0.float(), t)
    t2 = t.clone()
    t2[0] = 99
    with pytest.raises(OpInputError, match="out of bounds"):
        liger_fused_linear_cross_entropy(x0.float(), W0.float(), t2)


def test_flce_mean_divisor_needs_mean_without_class_weights():
    x, W, t = torch.zeros(4, 8), torch.zeros(16, 8), torch.zeros(4, dtype=torch.long)
    for kw in (dict(reduction="sum"), dict(reduction="none"), dict(ce_weight=torch.ones(16))):
        with pytest.raises(OpInputError, match="mean_divisor needs reduction='mean' and no ce_weight"):
            flce_mod.fused_linear_cross_entropy(x, W, t, mean_divisor=7, **kw)
    for bad, what in ((torch.ones(2), "must hold one value"), (torch.tensor(True), "real number"),
                      ("12", "finite number"), (True, "finite number"), (float("nan"), "finite number")):
        with pytest.raises(OpInputError, match=what):
            flce_mod.fused_linear_cross_entropy(x, W, t, mean_divisor=bad)
