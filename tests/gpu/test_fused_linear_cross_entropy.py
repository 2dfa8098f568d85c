"""Fused linear cross-entropy on the GPU: against a float64 reference of linear + cross-entropy on
fresh random inputs, every reduction (reduction="none" with a non-uniform per-token grad_output:
Liger issue #968), bias, class weights, label smoothing, z-loss, softcap, accum_dtype, and the
peak memory beyond the inputs and their gradients.

Tolerances (why): the logits and d logits of each chunk are held in the input dtype (as Liger,
and as torch's own bf16 matmul output), so a bf16 run rounds every logit and every dlogit once
(relative 2^-9), and the GEMMs accumulate in fp32. The resulting errors are random across the
V-long and token-long sums, so they are judged norm-wise: ||got - ref|| / ||ref|| must be at most
2x what torch's unfused computation in the same dtype (matmul, fp32-upcast cross-entropy, matmul
backward) achieves against the same float64 reference, plus a floor (fp32 1e-5, bf16/fp16 one
ulp: 2^-8 / 2^-11) for cases where torch's error happens to be tiny. fp32 runs with TF32 off.
"""

from __future__ import annotations

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import torch.nn.functional as F  # noqa: E402

from ligerd.ops import fused_linear_cross_entropy as flce_mod  # noqa: E402
from ligerd.transformers import (LigerFusedLinearCrossEntropyLoss,  # noqa: E402
                                 liger_fused_linear_cross_entropy)

from ligerd.testing.gpu import DEV, DTYPES, liger_peer, param_id as _id, rel_err as rel  # noqa: E402

pytestmark = pytest.mark.usefixtures("local_dispatch", "no_tf32")  # conftest.py

II = -100
FLOOR = {torch.float32: 1e-5, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}


def inputs(bt, H, V, dtype, seed, bias):
    g = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(bt, H, device=DEV, generator=g).to(dtype)
    W = (torch.randn(V, H, device=DEV, generator=g) / H ** 0.5 * 2).to(dtype)
    b = torch.randn(V, device=DEV, generator=g).to(dtype) if bias else None
    t = torch.randint(0, V, (bt,), device=DEV, generator=g)
    t[::37] = II
    return x, W, b, t


def torch_loss(x, W, b, t, ce_weight, reduction, ls, lss, softcap, upcast=True):
    logits = x @ W.t()
    if b is not None:
        logits = logits + b
    if upcast:
        logits = logits.double() if x.dtype == torch.float64 else logits.float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    w = ce_weight.to(logits.dtype) if ce_weight is not None else None
    loss = F.cross_entropy(logits, t, weight=w, reduction=reduction, label_smoothing=ls, ignore_index=II)
    if lss:
        valid = t != II
        lse = torch.logsumexp(logits, 1)
        zl = lss * lse * lse * valid
        loss = loss + (zl if reduction == "none" else zl.sum() / (valid.sum() if reduction == "mean" else 1))
    return loss


def grads_of(fn, x, W, b, gout):
    xs = x.detach().clone().requires_grad_()
    Ws = W.detach().clone().requires_grad_()
    bs = b.detach().clone().requires_grad_() if b is not None else None
    loss = fn(xs, Ws, bs)
    loss.backward(gout.to(loss.dtype) if gout.dim() else gout.to(loss.dtype))
    return loss.detach(), xs.grad, Ws.grad, (bs.grad if bs is not None else None)


CASES = {
    "plain": dict(),
    "bias": dict(bias=True),
    "weights+smoothing": dict(ce_weight=True, ls=0.1),
    "zloss+softcap": dict(lss=1e-4, softcap=20.0),
}


@pytest.fixture(params=["chunked", "sliced"])
def sweep(request, monkeypatch):
    """Both sweeps (fused_linear_cross_entropy.sweep_mode): chunks of 384 tokens (3, the last
    partial), or blocks of 384 tokens and slices of 16384 classes (50257: 4, the last partial)."""
    monkeypatch.setenv("LIGERD_FLCE_MODE", request.param)
    monkeypatch.setenv("LIGERD_FLCE_CHUNK", "384")
    monkeypatch.setenv("LIGERD_FLCE_SLICE", "384,16384")
    return request.param


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_matches_float64_reference(dtype, case, reduction, sweep):
    c = dict(CASES[case])
    bt, H, V = 1000, 256, 50257
    x, W, b, t = inputs(bt, H, V, dtype, seed=len(case) * 7 + len(reduction), bias=c.pop("bias", False))
    ce_weight = (torch.rand(V, device=DEV) + 0.5) if c.pop("ce_weight", False) else None
    ls, lss, softcap = c.get("ls", 0.0), c.get("lss", 0.0), c.get("softcap", None)
    g = torch.Generator(device=DEV).manual_seed(3)
    gout = torch.randn(bt, device=DEV, generator=g) if reduction == "none" else torch.tensor(2.5, device=DEV)

    ours = grads_of(lambda xs, Ws, bs: liger_fused_linear_cross_entropy(
        xs, Ws, t, bs, ce_weight=ce_weight, reduction=reduction, label_smoothing=ls, lse_square_scale=lss,
        softcap=softcap), x, W, b, gout)
    ref = grads_of(lambda xs, Ws, bs: torch_loss(xs, Ws, bs, t, ce_weight, reduction, ls, lss, softcap),
                   x.double(), W.double(), b.double() if b is not None else None, gout.double())
    base = grads_of(lambda xs, Ws, bs: torch_loss(xs, Ws, bs, t, ce_weight, reduction, ls, lss, softcap),
                    x, W, b, gout)
    names = ["loss", "dx", "dW", "db"]
    for name, o, r, bb in zip(names, ours, ref, base):
        if r is None:
            assert o is None
            continue
        assert o.shape == r.shape and not torch.isnan(o).any(), f"{name}: shape or NaN"
        e, eb = rel(o, r), rel(bb, r)
        assert e <= 2 * eb + FLOOR[dtype], (f"{sweep} {_id(dtype)} {case} {reduction}: {name} rel err {e:.3g} vs "
                                            f"torch {_id(dtype)} {eb:.3g}")
    assert ours[0].dtype == torch.float32  # the loss is fp32, as Liger's


@pytest.mark.parametrize("divisor", ["int", "tensor"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_mean_divisor_is_sum_over_n(dtype, divisor, sweep):
    """mean_divisor (transformers' num_items_in_batch): the loss is sum / n and the gradients
    those of sum / n, against the float64 reference, with the same tolerance rule as above; n is
    not this call's token count (gradient accumulation counts the whole accumulated batch)."""
    bt, H, V = 1000, 256, 32000
    x, W, b, t = inputs(bt, H, V, dtype, seed=5, bias=False)
    n = 3 * int((t != II).sum())
    d = n if divisor == "int" else torch.tensor(n, device=DEV)
    one = torch.tensor(1.0, device=DEV)
    ours = grads_of(lambda xs, Ws, bs: liger_fused_linear_cross_entropy(xs, Ws, t, _mean_divisor=d), x, W, None, one)
    ref = grads_of(lambda xs, Ws, bs: torch_loss(xs, Ws, None, t, None, "sum", 0.0, 0.0, None) / n,
                   x.double(), W.double(), None, one.double())
    base = grads_of(lambda xs, Ws, bs: torch_loss(xs, Ws, None, t, None, "sum", 0.0, 0.0, None) / n,
                    x, W, None, one)
    for name, o, r, bb in zip(["loss", "dx", "dW"], ours[:3], ref[:3], base[:3]):
        assert not torch.isnan(o).any(), name
        e, eb = rel(o, r), rel(bb, r)
        assert e <= 2 * eb + FLOOR[dtype], f"{_id(dtype)} {divisor}: {name} rel err {e:.3g} vs torch {eb:.3g}"


def test_default_chunks_accum_dtype_and_metrics():
    bt, H, V = 2048, 512, 32000
    x, W, b, t = inputs(bt, H, V, torch.bfloat16, seed=1, bias=True)
    m = LigerFusedLinearCrossEntropyLoss(accum_dtype=torch.float32, return_token_accuracy=True,
                                         return_predicted_tokens=True, return_z_loss=True, lse_square_scale=1e-4)
    xs, Ws, bs = (v.clone().requires_grad_() for v in (x, W, b))
    out = m(Ws, xs, t, bs)
    out.loss.backward()
    assert Ws.grad.dtype == torch.bfloat16 and bs.grad.dtype == torch.bfloat16
    ref = grads_of(lambda a, w_, bb: torch_loss(a, w_, bb, t, None, "mean", 0.0, 1e-4, None),
                   x.double(), W.double(), b.double(), torch.tensor(1.0, device=DEV, dtype=torch.float64))
    for name, o, r in zip(["dx", "dW", "db"], (xs.grad, Ws.grad, bs.grad), ref[1:]):
        assert rel(o, r) <= 2 ** -7, name
    logits = (x.double() @ W.double().t() + b.double())
    valid = t != II
    pred = torch.where(valid, logits.argmax(1), torch.full_like(t, -1))
    # The kernel sees bf16 logits: where float64's top two are further apart than two bf16
    # roundings of the top value, the argmax must agree exactly; near-ties may go either way.
    top2 = logits.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * 2.0 ** -8 * top2[:, 0].abs() + 1e-6
    assert clear.float().mean().item() > 0.5
    assert torch.equal(out.predicted_tokens[clear], pred[clear])
    assert (out.predicted_tokens[~valid] == -1).all()
    assert out.z_loss is not None and out.token_accuracy is not None


def extra_peak_bytes(bt, H, V) -> int:
    """Peak memory of one forward + backward beyond the inputs and their gradients (bf16)."""
    x, W, _, t = inputs(bt, H, V, torch.bfloat16, seed=2, bias=False)
    xs, Ws = x.clone().requires_grad_(), W.clone().requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = liger_fused_linear_cross_entropy(xs, Ws, t)
    loss.backward()
    torch.cuda.synchronize()
    grads = xs.grad.numel() * 2 + Ws.grad.numel() * 2
    return torch.cuda.max_memory_allocated() - base - grads


def test_peak_memory_beyond_inputs_and_grads(monkeypatch):
    # A scaled-down LLaMA-3 head (the bench measures 8192 x 4096 x 128256): the logits buffer is
    # one chunk; nothing the size of the full logits appears.
    monkeypatch.delenv("LIGERD_FLCE_MODE", raising=False)
    bt, H, V = 8192, 1024, 128256
    extra = extra_peak_bytes(bt, H, V)
    full_logits = bt * V * 2
    assert extra <= 0.10 * full_logits, f"extra {extra / 2**20:.1f} MiB > 10% of {full_logits / 2**20:.0f} MiB"
    assert flce_mod.chunk_tokens(bt, V, 2) == 768


def test_sliced_peak_memory_within_liger_budget(monkeypatch):
    """The sliced sweep at the chunked test's head: beyond the inputs and their gradients, one
    [T, S] logits slice, the [T, H] fp32 dx accumulator and per-token vectors (block_shape's 56
    MiB budget) and cuBLASLt's workspace; far below the chunked sweep's buffer."""
    monkeypatch.setenv("LIGERD_FLCE_MODE", "sliced")
    monkeypatch.delenv("LIGERD_FLCE_SLICE", raising=False)
    bt, H, V = 8192, 1024, 128256
    extra = extra_peak_bytes(bt, H, V)
    from ligerd.ops import _flce_sliced
    T, S = _flce_sliced.block_shape(bt, V, H, 2, False)
    assert extra <= (56 + 4 + 1) * 2 ** 20, f"extra {extra / 2**20:.1f} MiB (blocks {T} x {S})"
    assert extra < 0.5 * flce_mod.chunk_tokens(bt, V, 2) * V * 2


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_liger_parity(reduction):
    L = liger_peer("LigerFusedLinearCrossEntropyLoss")
    bt, H, V = 1024, 512, 32000
    x, W, b, t = inputs(bt, H, V, torch.bfloat16, seed=4, bias=True)
    gout = torch.randn(bt, device=DEV) if reduction == "none" else torch.tensor(1.0, device=DEV)
    ours = grads_of(lambda a, w_, bb: LigerFusedLinearCrossEntropyLoss(reduction=reduction)(w_, a, t, bb), x, W, b, gout)
    theirs = grads_of(lambda a, w_, bb: L(reduction=reduction)(w_, a, t, bb), x, W, b, gout)
    ref = grads_of(lambda a, w_, bb: torch_loss(a, w_, bb, t, None, reduction, 0.0, 0.0, None),
                   x.double(), W.double(), b.double(), gout.double())
    for name, o, th, r in zip(["loss", "dx", "dW", "db"], ours, theirs, ref):
        assert rel(o, r) <= 2 * rel(th, r) + FLOOR[torch.bfloat16], f"{name}: ours vs Liger against float64"
