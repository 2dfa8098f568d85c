"""Partial rotary embeddings and Qwen2-VL's M-RoPE on the GPU (ligerd.ops.rope_partial,
ligerd.ops.rope_mrope): the rope kernels on the strided rotary views ``q[..., :rotary_dim]``,
forward and backward, against a float64 reference of transformers' functions.

- The kernels directly on the strided views, out of place into NaN-poisoned full-width outputs:
  the rotary part within tolerance, the pass-through part of the outputs still NaN (the kernels
  write nothing outside the view); in place bitwise the out-of-place result. rotary_dim hd/2,
  hd/4, 64 of 128, 24 of 80 (the element-wise path: 12 pairs per head is no whole bf16 vector),
  96 of 128, the smallest (2), fp32 / bf16 / fp16.
- ``liger_rotary_pos_emb`` in HF's flow (non-leaf transposed views, in place) and on leaves (out
  of place, poisoned allocator), torch.compile(fullgraph).
- ``liger_multimodal_rotary_pos_emb`` with Qwen2-VL's mrope_section [16, 24, 24] and distinct
  temporal / height / width positions.
- Remote dispatch (the daemon on this process's tensors, CUDA IPC) bitwise equals local for the
  strided views, where LIGERD_BIN names a built daemon (tests/gpu/run.sh sets it); skipped
  otherwise.

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest tests/gpu/test_rope_partial.py).
Skips without CUDA.

Tolerance (as tests/gpu/test_rope.py): per element of the rotary part
|got - ref| <= u*|ref| + 2^-21 * scale + tiny, with u the output dtype's unit roundoff (bf16 2^-8,
fp16 2^-11, fp32 0: the kernel's fp32 result is the output), scale = |x_lo*c| + |x_hi*s| (the
kernel's fp32 product and fma roundings are each <= 2^-24 of it; 4x margin), tiny the fp16
subnormal spacing. The inputs are exactly representable in float64, so nothing else differs. The
pass-through part (forward and backward) is a copy: bitwise.
"""

from __future__ import annotations


import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.transformers import LigerRopeFunction, liger_rotary_pos_emb  # noqa: E402
from ligerd.transformers.qwen2vl_mrope import liger_multimodal_rotary_pos_emb  # noqa: E402

from ligerd.testing import gpu as _util  # noqa: E402
from ligerd.testing.gpu import DEV, DTYPES, param_id as _id  # noqa: E402

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

U = {torch.float32: 0.0, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
TINY = {torch.float32: 0.0, torch.bfloat16: 0.0, torch.float16: 2.0 ** -24}
K_FP32 = 2.0 ** -21

# (bsz, n_q_head, n_kv_head, seq, head_dim, rotary_dim)
QWEN3_NEXT = (2, 16, 2, 2048, 256, 64)  # Qwen3-Next / Qwen3.5: a quarter of 256
SHAPES = [QWEN3_NEXT, (2, 8, 2, 65, 128, 64), (2, 8, 2, 33, 128, 32), (1, 4, 4, 17, 80, 24),
          (3, 5, 1, 7, 128, 96), (2, 4, 1, 9, 64, 16), (1, 2, 1, 3, 8, 2)]


# ------------------------------------------------------------------------------------------
# float64 reference: transformers' partial-rotary apply_rotary_pos_emb


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def hf_partial(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    rd = cos.shape[-1]
    qr, kr = q[..., :rd], k[..., :rd]
    return (torch.cat([qr * cos + rotate_half(qr) * sin, q[..., rd:]], -1),
            torch.cat([kr * cos + rotate_half(kr) * sin, k[..., rd:]], -1))


def reference(q, k, cos, sin, dq=None, dk=None):
    """Forward values (full width) and the scales of the rotary part; with dq, dk the gradients
    (autograd of the float64 forward) and their scales."""
    rd = cos.shape[-1]
    q64 = q.detach().double().requires_grad_()
    k64 = k.detach().double().requires_grad_()
    c, s = cos.double(), sin.double()
    oq, ok = hf_partial(q64, k64, c, s)
    ac, as_ = c.abs().unsqueeze(1), s.abs().unsqueeze(1)

    def scale(x):
        x = x.detach()[..., :rd]
        return x.abs() * ac + rotate_half(x).abs() * as_

    out = {"q": oq.detach(), "k": ok.detach(), "q_scale": scale(q64), "k_scale": scale(k64)}
    if dq is not None:
        gq, gk = torch.autograd.grad((oq, ok), (q64, k64), (dq.double(), dk.double()))

        def gscale(g):
            g = g.double()[..., :rd]
            return g.abs() * ac + rotate_half((g * s.unsqueeze(1)).abs()).abs()

        out.update(dq=gq, dk=gk, dq_scale=gscale(dq), dk_scale=gscale(dk))
    return out


def check(name, got, ref, scale, rd, dtype, ctx, pass_ref=None):
    """The rotary part within the docstring's tolerance; the pass-through part bitwise
    ``pass_ref`` (the input's or the gradient's own pass-through part) where given."""
    r = ref[..., :rd]
    _util.assert_close(f"{name}[:rd]", got[..., :rd], r, U[dtype] * r.abs() + K_FP32 * scale + TINY[dtype], ctx)
    if pass_ref is not None:
        assert torch.equal(got[..., rd:], pass_ref[..., rd:]), f"{ctx}: {name}'s pass-through part changed"


def cos_sin(cb, s, rd, dtype, gen, distinct=False):
    """HF's rotary-embedding values over rotary_dim (positions offset per batch), or random values
    with distinct halves (exercises the exact transpose in the backward)."""
    if distinct:
        return (torch.randn(cb, s, rd, device=DEV, generator=gen).to(dtype),
                torch.randn(cb, s, rd, device=DEV, generator=gen).to(dtype))
    inv = 1.0 / (1e7 ** (torch.arange(0, rd, 2, device=DEV, dtype=torch.float64) / rd))
    pos = torch.arange(s, device=DEV, dtype=torch.float64)[None] + 5 * torch.arange(cb, device=DEV)[:, None]
    f = pos[..., None] * inv
    emb = torch.cat([f, f], -1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def make_qk(b, hq, hk, s, d, dtype, gen):
    """q, k in HF's layout: transposed views of [b, s, h, d] storage."""
    q = torch.randn(b, s, hq, d, device=DEV, generator=gen).to(dtype).transpose(1, 2)
    k = torch.randn(b, s, hk, d, device=DEV, generator=gen).to(dtype).transpose(1, 2)
    return q, k


def _cases(shapes):
    return [pytest.param(dt, sh, id=f"{_id(dt)}-{_id(sh)}") for dt in DTYPES for sh in shapes
            if not (sh == QWEN3_NEXT and dt == torch.float32)]  # bf16/fp16 cover that shape


# ------------------------------------------------------------------------------------------
# 1. The kernels on the strided rotary views


@pytest.mark.parametrize("dtype,shape", _cases(SHAPES))
def test_kernels_on_strided_rotary_views(dtype, shape):
    gen = torch.Generator(device=DEV).manual_seed(sum(shape))
    b, hq, hk, s, d, rd = shape
    for cb, distinct in ((b, False), (1, True)):
        ctx = f"{_id(dtype)} {shape} cos_batch={cb} {'random' if distinct else 'hf'} cos"
        q, k = make_qk(b, hq, hk, s, d, dtype, gen)
        dq, dk = make_qk(b, hq, hk, s, d, dtype, gen)
        cos, sin = cos_sin(cb, s, rd, dtype, gen, distinct)
        r = reference(q, k, cos, sin, dq, dk)
        qo, ko = torch.full_like(q, float("nan")), torch.full_like(k, float("nan"))
        _backend.launch("rope_fwd", [q[..., :rd], k[..., :rd], cos, sin, qo[..., :rd], ko[..., :rd]], [])
        check("q_out", qo, r["q"], r["q_scale"], rd, dtype, ctx)
        check("k_out", ko, r["k"], r["k_scale"], rd, dtype, ctx)
        assert bool(qo[..., rd:].isnan().all() and ko[..., rd:].isnan().all()), \
            f"{ctx}: the forward wrote outside the rotary view"
        dqo, dko = torch.full_like(dq, float("nan")), torch.full_like(dk, float("nan"))
        _backend.launch("rope_bwd", [dq[..., :rd], dk[..., :rd], cos, sin, dqo[..., :rd], dko[..., :rd]], [])
        check("dq", dqo, r["dq"], r["dq_scale"], rd, dtype, ctx)
        check("dk", dko, r["dk"], r["dk_scale"], rd, dtype, ctx)
        assert bool(dqo[..., rd:].isnan().all() and dko[..., rd:].isnan().all()), \
            f"{ctx}: the backward wrote outside the rotary view"
        # In place on the views: bitwise the out-of-place result, the pass-through part untouched.
        q2, k2 = q.clone(), k.clone()
        _backend.launch("rope_fwd", [q2[..., :rd], k2[..., :rd], cos, sin, q2[..., :rd], k2[..., :rd]], [])
        assert torch.equal(q2[..., :rd], qo[..., :rd]) and torch.equal(k2[..., :rd], ko[..., :rd]), ctx
        assert torch.equal(q2[..., rd:], q[..., rd:]) and torch.equal(k2[..., rd:], k[..., rd:]), ctx
        del q, k, dq, dk, qo, ko, dqo, dko, q2, k2, r


# ------------------------------------------------------------------------------------------
# 2. Through liger_rotary_pos_emb


@pytest.mark.parametrize("dtype,shape", _cases([QWEN3_NEXT, (2, 8, 2, 65, 128, 64), (1, 4, 4, 17, 80, 24),
                                                (3, 5, 1, 7, 128, 32)]))
def test_autograd_hf_flow_in_place(dtype, shape):
    gen = torch.Generator(device=DEV).manual_seed(11 + sum(shape))
    b, hq, hk, s, d, rd = shape
    ctx = f"liger_rotary_pos_emb partial {_id(dtype)} {shape}"
    xq = torch.randn(b, s, hq * d, device=DEV, generator=gen).to(dtype).requires_grad_()
    xk = torch.randn(b, s, hk * d, device=DEV, generator=gen).to(dtype).requires_grad_()
    cos, sin = cos_sin(b, s, rd, dtype, gen)
    q = (xq * 1).view(b, s, hq, d).transpose(1, 2)  # projection outputs: non-leaf
    k = (xk * 1).view(b, s, hk, d).transpose(1, 2)
    q_in, k_in = q.detach().clone(), k.detach().clone()
    dq, dk = make_qk(b, hq, hk, s, d, dtype, gen)
    dq_in, dk_in = dq.clone(), dk.clone()
    r = reference(q, k, cos, sin, dq, dk)
    q_ptr = q.data_ptr()
    oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    assert oq.data_ptr() == q_ptr and oq.shape == q.shape, "rotated in place, full width"
    check("q_out", oq, r["q"], r["q_scale"], rd, dtype, ctx, pass_ref=q_in)
    check("k_out", ok, r["k"], r["k_scale"], rd, dtype, ctx, pass_ref=k_in)
    torch.autograd.backward([oq, ok], [dq, dk])
    gq = xq.grad.view(b, s, hq, d).transpose(1, 2)
    gk = xk.grad.view(b, s, hk, d).transpose(1, 2)
    check("dq", gq, r["dq"], r["dq_scale"], rd, dtype, ctx, pass_ref=dq_in)
    check("dk", gk, r["dk"], r["dk_scale"], rd, dtype, ctx, pass_ref=dk_in)


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_leaf_inputs_out_of_place_into_poisoned_memory(dtype):
    gen = torch.Generator(device=DEV).manual_seed(13)
    b, hq, hk, s, d, rd = 3, 5, 1, 33, 80, 24
    q = torch.randn(b, hq, s, d, device=DEV, generator=gen).to(dtype).requires_grad_()
    k = torch.randn(b, hk, s, d, device=DEV, generator=gen).to(dtype).requires_grad_()
    cos, sin = cos_sin(1, s, rd, dtype, gen, distinct=True)
    dq = torch.randn(b, hq, s, d, device=DEV, generator=gen).to(dtype)
    dk = torch.randn(b, hk, s, d, device=DEV, generator=gen).to(dtype)
    r = reference(q, k, cos, sin, dq, dk)
    before = q.detach().clone()
    bufs = [torch.full_like(t, float("nan")) for t in (q, k, q, k)]
    del bufs  # the op's allocations come from poisoned blocks
    oq, ok = LigerRopeFunction.apply(q, k, cos, sin, None, 1)
    assert torch.equal(q.detach(), before), "a leaf that requires grad is never written"
    ctx = f"leaf partial {_id(dtype)}"
    check("q_out", oq, r["q"], r["q_scale"], rd, dtype, ctx, pass_ref=q.detach())
    check("k_out", ok, r["k"], r["k_scale"], rd, dtype, ctx, pass_ref=k.detach())
    gq, gk = torch.autograd.grad((oq, ok), (q, k), (dq, dk))
    check("dq", gq, r["dq"], r["dq_scale"], rd, dtype, ctx, pass_ref=dq)
    check("dk", gk, r["dk"], r["dk_scale"], rd, dtype, ctx, pass_ref=dk)


def test_compiled_partial_step():
    """torch.compile(fullgraph) of a Qwen3-Next-style attention prologue with a partial RoPE:
    functional (out of place), same values and gradients as eager."""
    dtype = torch.bfloat16
    gen = torch.Generator(device=DEV).manual_seed(17)
    b, hq, hk, s, d, rd = 2, 8, 2, 64, 256, 64
    cos, sin = cos_sin(b, s, rd, dtype, gen)
    _util.assert_compiled_rope_step(liger_rotary_pos_emb, cos, sin, b, hq, hk, s, d, dtype, gen)


# ------------------------------------------------------------------------------------------
# 3. M-RoPE (Qwen2-VL's sections; transformers 4.x's apply_multimodal_rotary_pos_emb)


def hf_mrope(q, k, cos, sin, mrope_section):
    sec = mrope_section * 2
    cos = torch.cat([m[i % 3] for i, m in enumerate(cos.split(sec, dim=-1))], dim=-1).unsqueeze(1)
    sin = torch.cat([m[i % 3] for i, m in enumerate(sin.split(sec, dim=-1))], dim=-1).unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_mrope_matches_transformers(dtype):
    gen = torch.Generator(device=DEV).manual_seed(19)
    b, hq, hk, s, d, section = 2, 12, 2, 300, 128, [16, 24, 24]
    # Positions per axis (temporal, height, width) that differ, as for an image's patches.
    base = torch.arange(s, device=DEV, dtype=torch.float64)
    pos = torch.stack([base, base // 7, base % 7 + 3])[:, None, :].expand(3, b, s)
    inv = 1.0 / (1e6 ** (torch.arange(0, d, 2, device=DEV, dtype=torch.float64) / d))
    f = pos[..., None] * inv
    emb = torch.cat([f, f], -1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    xq = torch.randn(b, s, hq * d, device=DEV, generator=gen).to(dtype).requires_grad_()
    xk = torch.randn(b, s, hk * d, device=DEV, generator=gen).to(dtype).requires_grad_()
    q = (xq * 1).view(b, s, hq, d).transpose(1, 2)
    k = (xk * 1).view(b, s, hk, d).transpose(1, 2)
    dq, dk = make_qk(b, hq, hk, s, d, dtype, gen)
    q64 = q.detach().double().requires_grad_()
    k64 = k.detach().double().requires_grad_()
    rq, rk = hf_mrope(q64, k64, cos.double(), sin.double(), section)
    gq64, gk64 = torch.autograd.grad((rq, rk), (q64, k64), (dq.double(), dk.double()))
    # Scales from the selected cos/sin (exact copies of cos/sin's elements).
    c1 = torch.cat([m[i % 3] for i, m in enumerate(cos.double().split(section * 2, -1))], -1).unsqueeze(1).abs()
    s1 = torch.cat([m[i % 3] for i, m in enumerate(sin.double().split(section * 2, -1))], -1).unsqueeze(1)
    ctx = f"mrope {_id(dtype)}"
    oq, ok = liger_multimodal_rotary_pos_emb(q, k, cos, sin, section)
    for name, got, ref, x in (("q_out", oq, rq, q64), ("k_out", ok, rk, k64)):
        x = x.detach()
        scale = x.abs() * c1 + rotate_half(x).abs() * s1.abs()
        _util.assert_close(name, got, ref.detach(), U[dtype] * ref.detach().abs() + K_FP32 * scale + TINY[dtype], ctx)
    torch.autograd.backward([oq, ok], [dq.clone(), dk.clone()])  # (rotated in place: clones)
    for name, g, ref, dy in (("dq", xq.grad.view(b, s, hq, d).transpose(1, 2), gq64, dq),
                             ("dk", xk.grad.view(b, s, hk, d).transpose(1, 2), gk64, dk)):
        dy = dy.double()
        scale = dy.abs() * c1 + rotate_half((dy * s1).abs()).abs()
        _util.assert_close(name, g, ref, U[dtype] * ref.abs() + K_FP32 * scale + TINY[dtype], ctx)


# ------------------------------------------------------------------------------------------
# 4. Remote dispatch: the strided views through the daemon, bitwise local


@pytest.fixture(scope="module")
def daemon():
    with _util.daemon_for_local_module("ligerd-rope-partial-") as d:
        yield d


def _fwd_bwd(xq, xk, cos, sin, dq, dk, b, s, hq, hk, d):
    xq, xk = xq.clone().requires_grad_(), xk.clone().requires_grad_()
    q = (xq * 1).view(b, s, hq, d).transpose(1, 2)
    k = (xk * 1).view(b, s, hk, d).transpose(1, 2)
    oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    torch.autograd.backward([oq, ok], [dq.clone(), dk.clone()])
    torch.cuda.synchronize()
    return oq.detach().clone(), ok.detach().clone(), xq.grad, xk.grad


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=_id)
def test_remote_equals_local_bitwise(daemon, dtype):
    gen = torch.Generator(device=DEV).manual_seed(23)
    b, hq, hk, s, d, rd = 2, 8, 2, 65, 80, 24
    xq = torch.randn(b, s, hq * d, device=DEV, generator=gen).to(dtype)
    xk = torch.randn(b, s, hk * d, device=DEV, generator=gen).to(dtype)
    cos, sin = cos_sin(1, s, rd, dtype, gen, distinct=True)
    dq, dk = make_qk(b, hq, hk, s, d, dtype, gen)
    ligerd.set_dispatch_mode("local")
    local = _fwd_bwd(xq, xk, cos, sin, dq, dk, b, s, hq, hk, d)
    ligerd.set_dispatch_mode("remote")
    try:
        remote = _fwd_bwd(xq, xk, cos, sin, dq, dk, b, s, hq, hk, d)
        info = ligerd.dispatch_info()
        dev = info["devices"].get(torch.cuda.current_device())
        assert dev is not None and dev["mode"] == "remote", f"ops did not run remotely: {info}"
    finally:
        ligerd.set_dispatch_mode("local")
    for name, a, c in zip(("q_out", "k_out", "dxq", "dxk"), remote, local):
        assert torch.equal(a, c), f"{_id(dtype)}: {name} differs between remote and local dispatch"


# ------------------------------------------------------------------------------------------
# 5. Tiny models of the newly patched types, rope=True only, against transformers


@pytest.mark.parametrize("model_type", ["phi3", "qwen3_next", "qwen3_5", "glm4v_moe", "qwen2_vl"])
def test_tiny_model_with_ligerd_rope_matches_transformers(model_type):
    """fp32, real kernels: the loss to 1e-5 relative and every gradient to 1e-3 norm-wise (RoPE's
    fp32 rounding differs from transformers' by an ulp per element, nothing else is patched; the
    gated-DeltaNet decay gradients (A_log) amplify that to ~1e-4 already on the CPU reference,
    while a wrong rotation is an O(1) error).
    phi3 with partial_rotary_factor 0.75 (Phi-4-mini's), the others' tiny configs rotate part of
    the head (qwen3_next, qwen3_5, glm4v_moe) or select M-RoPE sections (qwen2_vl)."""
    pytest.importorskip("transformers")
    import inspect
    import importlib
    from ligerd.testing import tiny_models as tm
    from ligerd.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    cfg = tm.tiny_config(model_type)
    if model_type == "phi3":
        cfg.rope_parameters = dict(cfg.rope_parameters, partial_rotary_factor=0.75)
    fn = MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]
    params = inspect.signature(fn).parameters
    off = {k: False for k in ("cross_entropy", "fused_linear_cross_entropy", "rms_norm", "swiglu",
                              "layer_norm") if k in params}

    def rope_is_ligerds(model):
        assert importlib.import_module(type(model).__module__).apply_rotary_pos_emb is liger_rotary_pos_emb

    tm.assert_patch_matches(model_type, lambda: fn(rope=True, **off), cfg=cfg, grad_tol=1e-3, device=DEV,
                            check=rope_is_ligerds)
