"""RoPE on the GPU through ligerd's local executor (dispatch mode pinned to local): exact against
a float64 reference (HF's apply_rotary_pos_emb math in float64), forward and backward.

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest tests/gpu). Skips without
CUDA. Fresh random inputs per test; outputs that are fresh tensors are poisoned with NaN first
(test-owned ones explicitly, op-allocated ones through the caching allocator), so an element a
kernel forgets to write fails the test.

Tolerance: |got - ref| <= u*|ref| + K*scale + tiny per element, where
- the inputs (q, k, cos, sin, the gradients) are exactly representable in float64, so the only
  error sources are the kernel's fp32 arithmetic and the final rounding to the output dtype;
- u*|ref|: that final rounding, at most half an ulp = the unit roundoff u of the output dtype
  relative to the value (bf16 2^-8, fp16 2^-11; fp32 outputs are the fp32 result itself: 0);
- scale = |x_lo*c| + |x_hi*s| (the sum of |terms| of the element): the fp32 arithmetic is one
  product rounding and one fma rounding, each <= 2^-24 of scale; K = 2^-21 gives 4x margin.
  The result cancels (rotations pass through 0), so a bound relative to |ref| alone would not hold;
- tiny: fp16 subnormal spacing 2^-24 (bf16 and fp32 never get near their subnormals here).
A wrong half, sign, head, token or cos row is an O(1) relative error of scale: far outside.
The backward reference is autograd of the float64 forward (so the kernel's transpose is checked
against the true gradient even for cos/sin whose halves differ).
"""

from __future__ import annotations

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.transformers import LigerRopeFunction, liger_rotary_pos_emb  # noqa: E402

from ligerd.testing import gpu as _util  # noqa: E402
from ligerd.testing.gpu import DEV, DTYPES, add_peer_site, liger_peer, param_id as _id  # noqa: E402

add_peer_site()  # at import (as this module always did): peers importable for the whole session
pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

# Not _util's U and TINY: fp32 outputs are the kernel's fp32 result itself (no final rounding),
# and only fp16 gets near its subnormals here (see the docstring).
U = {torch.float32: 0.0, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
TINY = {torch.float32: 0.0, torch.bfloat16: 0.0, torch.float16: 2.0 ** -24}
K_FP32 = 2.0 ** -21

# (bsz, n_q_head, n_kv_head, seq, head_dim)
LLAMA3 = (4, 32, 8, 4096, 128)
SHAPES = [LLAMA3, (1, 32, 8, 1, 128), (2, 8, 2, 33, 64), (3, 5, 1, 17, 96), (2, 4, 4, 9, 256),
          (1, 1, 1, 3, 2), (2, 3, 2, 5, 6)]


# ------------------------------------------------------------------------------------------
# float64 reference: HF's code, and the scale of |terms| behind each element.

def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def hf_rope(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def reference(q, k, cos, sin, dq=None, dk=None):
    """Forward values and scales; with dq, dk also the gradients (autograd of the float64
    forward) and their scales."""
    q64 = q.detach().double().requires_grad_()
    k64 = k.detach().double().requires_grad_()
    c, s = cos.double(), sin.double()
    oq, ok = hf_rope(q64, k64, c, s)
    ac, as_ = c.abs().unsqueeze(1), s.abs().unsqueeze(1)
    out = {"q": oq.detach(), "k": ok.detach(),
           "q_scale": q64.detach().abs() * ac + rotate_half(q64.detach()).abs() * as_,
           "k_scale": k64.detach().abs() * ac + rotate_half(k64.detach()).abs() * as_}
    if dq is not None:
        gq, gk = torch.autograd.grad((oq, ok), (q64, k64), (dq.double(), dk.double()))
        # dx = dy*c + rotate_half^T(dy*s): its terms are |dy|*|c| and the |dy*s| of the other half.
        tq = rotate_half((dq.double() * s.unsqueeze(1)).abs())
        tk = rotate_half((dk.double() * s.unsqueeze(1)).abs())
        out.update(dq=gq, dk=gk, dq_scale=dq.double().abs() * ac + tq.abs(),
                   dk_scale=dk.double().abs() * ac + tk.abs())
    return out


def assert_close(name, got, ref, scale, dtype, ctx):
    """This module's tolerance (the docstring's) around the float64 reference."""
    _util.assert_close(name, got, ref, U[dtype] * ref.abs() + K_FP32 * scale + TINY[dtype], ctx)


def poison_allocator(*tensors):
    """NaN-filled blocks the size of these tensors, freed, so the op's torch.empty calls get
    poisoned memory from the caching allocator."""
    bufs = [torch.full_like(t, float("nan")) for t in tensors]
    del bufs


def cos_sin(cb, s, d, dtype, gen, distinct=False):
    """HF's LlamaRotaryEmbedding values (positions offset per batch so batches differ), or
    random values with distinct halves (exercises the exact transpose in the backward)."""
    if distinct:
        c = torch.randn(cb, s, d, device=DEV, generator=gen)
        sn = torch.randn(cb, s, d, device=DEV, generator=gen)
        return c.to(dtype), sn.to(dtype)
    inv = 1.0 / (500000.0 ** (torch.arange(0, d, 2, device=DEV, dtype=torch.float64) / d))
    pos = torch.arange(s, device=DEV, dtype=torch.float64)[None] + 7 * torch.arange(cb, device=DEV)[:, None]
    f = pos[..., None] * inv
    emb = torch.cat([f, f], -1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def make_qk(shape, dtype, gen, layout):
    """q, k with fresh random values in HF's layout (transposed views of [b, s, h, d] storage)
    or fully contiguous [b, h, s, d]."""
    b, hq, hk, s, d = shape
    if layout == "hf":
        q = torch.randn(b, s, hq, d, device=DEV, generator=gen).to(dtype).transpose(1, 2)
        k = torch.randn(b, s, hk, d, device=DEV, generator=gen).to(dtype).transpose(1, 2)
    else:
        q = torch.randn(b, hq, s, d, device=DEV, generator=gen).to(dtype)
        k = torch.randn(b, hk, s, d, device=DEV, generator=gen).to(dtype)
    return q, k


def nan_like(t):
    """NaN tensor with t's shape and strides (a fresh output in t's layout)."""
    return torch.full_like(t, float("nan"))


# ------------------------------------------------------------------------------------------
# 1. The executor ops directly: out of place into NaN-poisoned outputs, and in place; fwd + bwd.

# Every dtype x layout x shape but the LLaMA-3 shape in fp32 contiguous: the hf layout and
# bf16/fp16 cover it (left out to keep the suite's memory low).
@pytest.mark.parametrize("dtype,layout,shape", [
    pytest.param(dt, lay, sh, id=f"{_id(dt)}-{lay}-{_id(sh)}")
    for dt in DTYPES for lay in ("hf", "contig") for sh in SHAPES
    if not (sh == LLAMA3 and lay == "contig" and dt == torch.float32)])
def test_op_exact(dtype, layout, shape):
    gen = torch.Generator(device=DEV).manual_seed(sum(shape) + len(layout))
    b, hq, hk, s, d = shape
    for cb, distinct in ((b, False), (1, True)):
        ctx = f"{_id(dtype)} {layout} {shape} cos_batch={cb} {'random' if distinct else 'hf'} cos"
        q, k = make_qk(shape, dtype, gen, layout)
        cos, sin = cos_sin(cb, s, d, dtype, gen, distinct)
        dq, dk = make_qk(shape, dtype, gen, layout)
        r = reference(q, k, cos, sin, dq, dk)
        qo, ko = nan_like(q), nan_like(k)
        _backend.launch("rope_fwd", [q, k, cos, sin, qo, ko], [])
        assert_close("q_out", qo, r["q"], r["q_scale"], dtype, ctx)
        assert_close("k_out", ko, r["k"], r["k_scale"], dtype, ctx)
        dqo, dko = nan_like(dq), nan_like(dk)
        _backend.launch("rope_bwd", [dq, dk, cos, sin, dqo, dko], [])
        assert_close("dq", dqo, r["dq"], r["dq_scale"], dtype, ctx)
        assert_close("dk", dko, r["dk"], r["dk_scale"], dtype, ctx)
        # In place: bitwise the out-of-place result.
        q2, k2 = q.clone(), k.clone()
        _backend.launch("rope_fwd", [q2, k2, cos, sin, q2, k2], [])
        assert torch.equal(q2, qo) and torch.equal(k2, ko), ctx
        _backend.launch("rope_bwd", [dq, dk, cos, sin, dq, dk], [])
        assert torch.equal(dq, dqo) and torch.equal(dk, dko), ctx
        del q, k, dq, dk, qo, ko, dqo, dko, q2, k2, r


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=_id)
def test_fp32_cos_sin_with_half_q(dtype):
    gen = torch.Generator(device=DEV).manual_seed(3)
    shape = (2, 8, 2, 65, 128)
    q, k = make_qk(shape, dtype, gen, "hf")
    cos, sin = cos_sin(1, 65, 128, torch.float32, gen)
    r = reference(q, k, cos, sin)
    qo, ko = nan_like(q), nan_like(k)
    _backend.launch("rope_fwd", [q, k, cos, sin, qo, ko], [])
    assert_close("q_out", qo, r["q"], r["q_scale"], dtype, "fp32 cos")
    assert_close("k_out", ko, r["k"], r["k_scale"], dtype, "fp32 cos")


def test_unaligned_and_odd_pitch_use_the_scalar_path_correctly():
    """q at an odd head pitch (heads packed 130 apart, as slices of a wider buffer) and a cos
    that is not 16-byte aligned: the element-wise kernel, same results."""
    dtype = torch.bfloat16
    gen = torch.Generator(device=DEV).manual_seed(5)
    b, hq, hk, s, d = 2, 4, 2, 7, 128
    wide = torch.randn(b, s, hq, d + 2, device=DEV, generator=gen).to(dtype)
    q = wide[..., :d].transpose(1, 2)
    k = torch.randn(b, s, hk, d, device=DEV, generator=gen).to(dtype).transpose(1, 2)
    cbuf = torch.randn(1, s * d + 1, device=DEV, generator=gen).to(dtype)
    cos = cbuf[:, 1:].view(1, s, d)
    sin = torch.randn(1, s, d, device=DEV, generator=gen).to(dtype)
    r = reference(q, k, cos, sin)
    qo, ko = nan_like(q), nan_like(k)
    _backend.launch("rope_fwd", [q, k, cos, sin, qo, ko], [])
    assert_close("q_out", qo, r["q"], r["q_scale"], dtype, "odd pitch")
    assert_close("k_out", ko, r["k"], r["k_scale"], dtype, "odd pitch")


# ------------------------------------------------------------------------------------------
# 2. Through liger_rotary_pos_emb: HF's flow (non-leaf transposed views of projection outputs),
# in place forward and backward, autograd against the float64 reference.

# The LLaMA-3 shape in fp32 is left out: test_op_exact covers it.
@pytest.mark.parametrize("dtype,shape", [
    pytest.param(dt, sh, id=f"{_id(dt)}-{_id(sh)}")
    for dt in DTYPES for sh in (LLAMA3, (3, 5, 1, 17, 96), (1, 2, 1, 1, 64), (2, 4, 4, 9, 256))
    if not (sh == LLAMA3 and dt == torch.float32)])
def test_autograd_hf_flow(dtype, shape):
    gen = torch.Generator(device=DEV).manual_seed(11)
    b, hq, hk, s, d = shape
    ctx = f"liger_rotary_pos_emb {_id(dtype)} {shape}"
    xq = torch.randn(b, s, hq * d, device=DEV, generator=gen).to(dtype).requires_grad_()
    xk = torch.randn(b, s, hk * d, device=DEV, generator=gen).to(dtype).requires_grad_()
    cos, sin = cos_sin(b, s, d, dtype, gen)
    pq, pk = xq * 1, xk * 1  # projection outputs: non-leaf
    q = pq.view(b, s, hq, d).transpose(1, 2)
    k = pk.view(b, s, hk, d).transpose(1, 2)
    dq, dk = make_qk(shape, dtype, gen, "hf")
    r = reference(q, k, cos, sin, dq, dk)
    q_ptr = q.data_ptr()
    oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    assert oq.data_ptr() == q_ptr, "rotated in place"
    assert_close("q_out", oq, r["q"], r["q_scale"], dtype, ctx)
    assert_close("k_out", ok, r["k"], r["k_scale"], dtype, ctx)
    torch.autograd.backward([oq, ok], [dq, dk])
    gq = xq.grad.view(b, s, hq, d).transpose(1, 2)
    gk = xk.grad.view(b, s, hk, d).transpose(1, 2)
    assert_close("dq", gq, r["dq"], r["dq_scale"], dtype, ctx)
    assert_close("dk", gk, r["dk"], r["dk_scale"], dtype, ctx)


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_leaf_inputs_out_of_place_into_poisoned_memory(dtype):
    """Leaves that require grad are never written: fresh outputs (poisoned allocator), fresh
    gradients; cos of batch 1; Liger's Function-style entry point."""
    gen = torch.Generator(device=DEV).manual_seed(13)
    shape = (3, 5, 1, 33, 64)
    b, hq, hk, s, d = shape
    q, k = make_qk(shape, dtype, gen, "contig")
    q.requires_grad_()
    k.requires_grad_()
    cos, sin = cos_sin(1, s, d, dtype, gen, distinct=True)
    dq, dk = make_qk(shape, dtype, gen, "contig")
    r = reference(q, k, cos, sin, dq, dk)
    before = q.detach().clone()
    poison_allocator(q, k, q, k)
    oq, ok = LigerRopeFunction.apply(q, k, cos, sin, None, 1)
    assert torch.equal(q.detach(), before)
    ctx = f"leaf {_id(dtype)}"
    assert_close("q_out", oq, r["q"], r["q_scale"], dtype, ctx)
    assert_close("k_out", ok, r["k"], r["k_scale"], dtype, ctx)
    poison_allocator(q, k)
    gq, gk = torch.autograd.grad((oq, ok), (q, k), (dq, dk))
    assert_close("dq", gq, r["dq"], r["dq_scale"], dtype, ctx)
    assert_close("dk", gk, r["dk"], r["dk_scale"], dtype, ctx)


def test_compiled_model_step():
    """torch.compile(fullgraph) of an HF-style attention prologue: functional (no input
    mutation), same values and gradients as eager."""
    dtype = torch.bfloat16
    gen = torch.Generator(device=DEV).manual_seed(17)
    b, hq, hk, s, d = 2, 8, 2, 64, 128
    cos, sin = cos_sin(b, s, d, dtype, gen)
    _util.assert_compiled_rope_step(liger_rotary_pos_emb, cos, sin, b, hq, hk, s, d, dtype, gen)


# ------------------------------------------------------------------------------------------
# 3. Bad inputs name the op (Python first; the executor checks again underneath).

@pytest.mark.parametrize("case", ["cpu", "odd_hd", "kshape", "cos_batch", "fp64"])
def test_bad_inputs(case):
    q = torch.randn(2, 4, 8, 64, device=DEV, dtype=torch.bfloat16)
    k = torch.randn(2, 2, 8, 64, device=DEV, dtype=torch.bfloat16)
    cos = torch.randn(1, 8, 64, device=DEV, dtype=torch.bfloat16)
    sin = torch.randn(1, 8, 64, device=DEV, dtype=torch.bfloat16)
    if case == "cpu":
        q = q.cpu()
    elif case == "odd_hd":
        q, k, cos, sin = q[..., :63], k[..., :63], cos[..., :63], sin[..., :63]
    elif case == "kshape":
        k = k[:, :, :7]
    elif case == "cos_batch":
        cos = sin = torch.randn(3, 8, 64, device=DEV, dtype=torch.bfloat16)
    elif case == "fp64":
        q, k = q.double(), k.double()
    with pytest.raises(ligerd.OpInputError) as ei:
        liger_rotary_pos_emb(q, k, cos, sin)
    assert "rope" in str(ei.value), str(ei.value)


def test_executor_second_line_of_checks():
    q = torch.randn(2, 4, 8, 64, device=DEV, dtype=torch.bfloat16)
    k = torch.randn(2, 2, 8, 64, device=DEV, dtype=torch.bfloat16)
    cos = torch.randn(1, 8, 64, device=DEV, dtype=torch.bfloat16)
    qo = torch.full((2, 4, 8, 62), float("nan"), device=DEV, dtype=torch.bfloat16)
    ko = nan_like(k)
    with pytest.raises(ligerd.OpInputError) as ei:
        _backend.launch("rope_fwd", [q, k, cos, cos.clone(), qo, ko], [])
    assert "rope_fwd" in str(ei.value) and "'Q_out'" in str(ei.value), str(ei.value)
    assert torch.isnan(ko.float()).all(), "a rejected call wrote an output"
    with pytest.raises(ligerd.OpInputError) as ei:
        _backend.launch("rope_bwd", [q, k, cos, cos.clone(), k, q], [])  # dQ_out over dK
    assert "rope_bwd" in str(ei.value), str(ei.value)
    with pytest.raises(ligerd.OpInputError) as ei:
        exp = torch.empty(2, 1, 8, 64, device=DEV, dtype=torch.bfloat16).expand(2, 4, 8, 64)
        _backend.launch("rope_fwd", [q, k, cos, cos.clone(), exp, ko], [])
    assert "sharing memory" in str(ei.value), str(ei.value)


# ------------------------------------------------------------------------------------------
# 4. Liger-Kernel itself when installed, both against the float64 reference with HF's cos/sin
# (Liger reads only their first half, assuming duplicated halves). Liger computes in the cos
# dtype: in bf16 each product is rounded before the sum, so it gets u of the scale on top.

def test_matches_liger_kernel():
    peer = liger_peer("liger_rotary_pos_emb")
    dtype = torch.bfloat16
    gen = torch.Generator(device=DEV).manual_seed(19)
    shape = (2, 32, 8, 512, 128)
    b, hq, hk, s, d = shape
    q, k = make_qk(shape, dtype, gen, "hf")
    cos, sin = cos_sin(b, s, d, dtype, gen)
    r = reference(q, k, cos, sin)
    oq, ok = liger_rotary_pos_emb(q.clone(), k.clone(), cos, sin)
    pq, pk = peer(q.clone(), k.clone(), cos, sin)
    assert_close("q ligerd", oq, r["q"], r["q_scale"], dtype, "ligerd")
    assert_close("k ligerd", ok, r["k"], r["k_scale"], dtype, "ligerd")
    # Liger computes in the cos dtype (bf16 here): products rounded to bf16 before the sum.
    assert_close("q liger", pq, r["q"], r["q_scale"] * 2 * U[dtype] / K_FP32, dtype, "liger")
    # Where both are exact to a rounding they agree to an ulp of the value or the scale.
    diff = (oq.double() - pq.double()).abs()
    assert (diff <= 2 * U[dtype] * (r["q"].abs() + r["q_scale"])).all()
