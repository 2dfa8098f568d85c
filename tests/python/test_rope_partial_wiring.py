"""Partial rotary embeddings and Qwen2-VL's M-RoPE on ligerd's RoPE ops, on the CPU (issue 18):

- ``liger_rotary_pos_emb`` with cos/sin narrower than the head (ligerd.ops.rope_partial) equals
  transformers' partial-rotary ``apply_rotary_pos_emb`` forward and backward: in place on the
  rotary part's strided views (one launch, nothing copied, the pass-through part untouched), out
  of place for leaves, fused-qkv slices, a non-contiguous last dim and torch.compile;
- ``liger_multimodal_rotary_pos_emb`` (ligerd.ops.rope_mrope) equals transformers 4.x's
  ``apply_multimodal_rotary_pos_emb`` forward and backward;
- the model patches: ``apply_liger_kernel_to_<type>(rope=True)`` installs ligerd's RoPE in every
  modeling module whose installed ``apply_rotary_pos_emb`` ligerd computes (partial rotary: phi3,
  qwen3_next, qwen3_5, qwen3_5_moe, glm4v_moe; the M-RoPE text models: qwen2_vl, qwen2_5_vl), and
  a tiny model of each computes transformers' loss and gradients through it (GLM-4 / GLM-4V's
  interleaved RoPE, which this partial path must not take: test_rope_interleaved_wiring.py).

The executor is the float64 reference launcher (ligerd.testing.ref_executor); inputs are fp32,
so results match transformers' fp32 math to fp32 rounding (rtol 1e-5 / atol 1e-6 on O(1) values:
the reference computes each element in float64 and rounds once, transformers rounds after each
of its 3 fp32 operations). The GPU kernels: tests/gpu/test_rope_partial.py.
"""

from __future__ import annotations

import copy
import importlib
import warnings

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import ligerd  # noqa: E402
import ligerd.transformers as lt  # noqa: E402
from ligerd._errors import LigerdWarning  # noqa: E402
from ligerd.transformers import liger_rotary_pos_emb  # noqa: E402
from ligerd.transformers.functional import LigerQwen2VLMRopeFunction, liger_qwen2vl_mrope  # noqa: E402
from ligerd.transformers.qwen2vl_mrope import liger_multimodal_rotary_pos_emb  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# transformers' functions, as its modeling files write them (float64 references)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def hf_partial(q, k, cos, sin, unsqueeze_dim=1):
    """Qwen3-Next's / Phi-3's apply_rotary_pos_emb."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    rd = cos.shape[-1]
    q_rot, q_pass = q[..., :rd], q[..., rd:]
    k_rot, k_pass = k[..., :rd], k[..., rd:]
    q_embed = torch.cat([(q_rot * cos) + (rotate_half(q_rot) * sin), q_pass], dim=-1)
    k_embed = torch.cat([(k_rot * cos) + (rotate_half(k_rot) * sin), k_pass], dim=-1)
    return q_embed, k_embed


def hf_mrope(q, k, cos, sin, mrope_section, unsqueeze_dim=1):
    """transformers 4.x's Qwen2-VL apply_multimodal_rotary_pos_emb."""
    mrope_section = mrope_section * 2
    cos = torch.cat([m[i % 3] for i, m in enumerate(cos.split(mrope_section, dim=-1))], dim=-1).unsqueeze(unsqueeze_dim)
    sin = torch.cat([m[i % 3] for i, m in enumerate(sin.split(mrope_section, dim=-1))], dim=-1).unsqueeze(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def cos_sin(bc, s, rd, seed=0, lead=()):
    """Random cos/sin with distinct halves (so a wrong half or a wrong transpose shows)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, bc, s, rd, generator=g), torch.randn(*lead, bc, s, rd, generator=g)


def hf_qk(b, hq, hk, s, d, seed=1):
    """Non-leaf q, k in HF's layout (transposed views of [b, s, h, d] projection outputs) and the
    leaves they come from."""
    g = torch.Generator().manual_seed(seed)
    wq = torch.randn(b, s, hq * d, generator=g).requires_grad_()
    wk = torch.randn(b, s, hk * d, generator=g).requires_grad_()
    return wq, wk, (wq * 1).view(b, s, hq, d).transpose(1, 2), (wk * 1).view(b, s, hk, d).transpose(1, 2)


def ref_grads(fn, wq, wk, b, hq, hk, s, d, dq, dk, *args):
    """float64 autograd of transformers' function from the same leaves: outputs and (dwq, dwk)."""
    wq2 = wq.detach().double().requires_grad_()
    wk2 = wk.detach().double().requires_grad_()
    q = wq2.view(b, s, hq, d).transpose(1, 2)
    k = wk2.view(b, s, hk, d).transpose(1, 2)
    rq, rk = fn(q, k, *[a.double() if isinstance(a, torch.Tensor) else a for a in args])
    gq, gk = torch.autograd.grad((rq, rk), (wq2, wk2), (dq.double(), dk.double()))
    return rq.detach(), rk.detach(), gq, gk


def close(got, want):
    torch.testing.assert_close(got.double(), want, **TOL)


# ---------------------------------------------------------------------------------------------
# Partial rotary: the op


# (bsz, n_q_head, n_kv_head, seq, head_dim, rotary_dim): hd/2, hd/4, 64 of 128's shape class
# (small), 24 of 80 (Phi-style odd pitch), the smallest rotary part (2).
PARTIAL = [(2, 4, 2, 5, 16, 8), (1, 3, 1, 4, 16, 4), (2, 2, 1, 3, 128, 64), (1, 2, 2, 3, 80, 24),
           (2, 1, 1, 2, 6, 2)]


@pytest.mark.parametrize("shape", PARTIAL, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("cos_batch", ["one", "bsz"])
def test_partial_in_place_forward_and_backward(launcher, shape, cos_batch):
    b, hq, hk, s, d, rd = shape
    cos, sin = cos_sin(1 if cos_batch == "one" else b, s, rd)
    wq, wk, q, k = hf_qk(b, hq, hk, s, d)
    q_ptr, k_ptr = q.data_ptr(), k.data_ptr()
    pass_before = q.detach()[..., rd:].clone()
    oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    assert oq.shape == q.shape and ok.shape == k.shape
    assert oq.data_ptr() == q_ptr and ok.data_ptr() == k_ptr, "rotated in place"
    assert torch.equal(q.detach()[..., rd:], pass_before), "the pass-through part is untouched"
    (op, fts, _), = launcher.calls
    assert op == "rope_fwd"
    assert fts[0][0] == (b, hq, s, rd) and fts[1][0] == (b, hk, s, rd), "the rotary part only"
    assert fts[0][1] == fts[4][1] == q_ptr and fts[1][1] == fts[5][1] == k_ptr, "one launch, in place"
    assert fts[0][2] == q.stride(), "the strided view is passed as it is (no copy)"
    dq = torch.randn(b, s, hq, d).transpose(1, 2)
    dk = torch.randn(b, s, hk, d).transpose(1, 2)
    rq, rk, gq, gk = ref_grads(hf_partial, wq, wk, b, hq, hk, s, d, dq, dk, cos, sin)
    close(oq, rq)
    close(ok, rk)
    dq_ptr = dq.data_ptr()
    torch.autograd.backward([oq, ok], [dq, dk])
    close(wq.grad, gq)
    close(wk.grad, gk)
    op, bts, _ = launcher.calls[1]
    assert op == "rope_bwd" and bts[0][0] == (b, hq, s, rd)
    assert bts[0][1] == bts[4][1] == dq_ptr, "backward rotates dq's rotary part in place"


def test_partial_out_of_place_cases(launcher):
    b, hq, hk, s, d, rd = 2, 2, 1, 3, 16, 8
    cos, sin = cos_sin(b, s, rd)
    # Leaves that require grad: never written; gradients through torch's slice and cat.
    q = torch.randn(b, hq, s, d, requires_grad=True)
    k = torch.randn(b, hk, s, d, requires_grad=True)
    before = q.detach().clone()
    oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    assert torch.equal(q.detach(), before) and oq.data_ptr() != q.data_ptr()
    q64, k64 = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    rq, rk = hf_partial(q64, k64, cos.double(), sin.double())
    close(oq, rq.detach())
    close(ok, rk.detach())
    gq, gk = torch.randn_like(oq), torch.randn_like(ok)
    torch.autograd.backward([oq, ok], [gq, gk])
    torch.autograd.backward([rq, rk], [gq.double(), gk.double()])
    close(q.grad, q64.grad)
    close(k.grad, k64.grad)
    # q and k as slices of one fused qkv projection (Phi-3): read in place, written fresh.
    launcher.calls.clear()
    w = torch.randn(b, s, (hq + 2 * hk) * d, requires_grad=True)
    qkv = w * 1
    q = qkv[..., : hq * d].view(b, s, hq, d).transpose(1, 2)
    k = qkv[..., hq * d: (hq + hk) * d].view(b, s, hk, d).transpose(1, 2)
    before = qkv.detach().clone()
    oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    (_, fts, _), = launcher.calls
    assert fts[0][1] == q.data_ptr() and fts[4][1] != q.data_ptr(), "interleaved q and k: out of place"
    assert torch.equal(qkv.detach(), before)
    w2 = w.detach().double().requires_grad_()
    qkv2 = w2 * 1
    rq, rk = hf_partial(qkv2[..., : hq * d].view(b, s, hq, d).transpose(1, 2),
                        qkv2[..., hq * d: (hq + hk) * d].view(b, s, hk, d).transpose(1, 2),
                        cos.double(), sin.double())
    close(oq, rq.detach())
    (oq.square().sum() + ok.sum()).backward()
    (rq.square().sum() + rk.sum()).backward()
    close(w.grad, w2.grad)
    # A non-contiguous last dim: the rotary part is copied first.
    q0 = torch.randn(b, hq, s, 2 * d)[..., ::2]
    k0 = torch.randn(b, hk, s, d)
    rq, rk = hf_partial(q0.double(), k0.double(), cos.double(), sin.double())
    oq, ok = liger_rotary_pos_emb(q0, k0.clone(), cos, sin)
    close(oq, rq)
    close(ok, rk)


def test_partial_no_grad_and_missing_gradient(launcher):
    b, hq, hk, s, d, rd = 1, 2, 1, 3, 8, 4
    cos, sin = cos_sin(1, s, rd)
    q, k = torch.randn(b, hq, s, d), torch.randn(b, hk, s, d)
    rq, rk = hf_partial(q.double(), k.double(), cos.double(), sin.double())
    with torch.no_grad():
        oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    assert oq is q and ok is k
    close(q, rq)
    # Only q's output used: dk is None (a 0-head slice reaches the kernel), dq is expanded.
    wq, wk, q, k = hf_qk(b, hq, hk, s, d)
    oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    oq.sum().backward()
    _, _, gq, _ = ref_grads(hf_partial, wq, wk, b, hq, hk, s, d, torch.ones(b, hq, s, d),
                            torch.zeros(b, hk, s, d), cos, sin)
    close(wq.grad, gq)
    assert wk.grad is None
    op, bts, _ = launcher.calls[-1]
    assert op == "rope_bwd" and bts[1][0] == (b, 0, s, rd)


def test_partial_saved_q_is_protected_by_the_version_counter(launcher):
    cos, sin = cos_sin(1, 3, 4)
    wq, wk, q, k = hf_qk(1, 2, 1, 3, 8)
    w = torch.randn(1, 2, 3, 8, requires_grad=True)
    z = (q * w).sum()  # saves q for the gradient of w
    liger_rotary_pos_emb(q, k, cos, sin)  # rotates q's rotary part in place
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


def test_partial_compile_fullgraph_is_out_of_place(launcher):
    torch._dynamo.reset()
    b, hq, hk, s, d, rd = 2, 2, 1, 3, 16, 8
    cos, sin = cos_sin(b, s, rd)

    def f(xq, xk, rope):
        q = (xq * 2).view(b, s, hq, d).transpose(1, 2)
        k = (xk * 2).view(b, s, hk, d).transpose(1, 2)
        oq, ok = rope(q, k, cos.to(q.dtype), sin.to(q.dtype))
        return oq * 3, ok

    xq = torch.randn(b, s, hq * d, requires_grad=True)
    xk = torch.randn(b, s, hk * d, requires_grad=True)
    cf = torch.compile(lambda a, c: f(a, c, liger_rotary_pos_emb), fullgraph=True, backend="aot_eager")
    yq, yk = cf(xq, xk)
    (yq.sum() + yk.square().sum()).backward()
    xq2, xk2 = xq.detach().double().requires_grad_(), xk.detach().double().requires_grad_()
    rq, rk = f(xq2, xk2, hf_partial)
    (rq.sum() + rk.square().sum()).backward()
    close(yq, rq.detach())
    close(yk, rk.detach())
    close(xq.grad, xq2.grad)
    close(xk.grad, xk2.grad)
    assert all(c[1][4][1] != c[1][0][1] for c in launcher.calls), "compiled: never in place"
    assert {c[0] for c in launcher.calls} == {"rope_fwd", "rope_bwd"}


@pytest.mark.parametrize("case", ["odd_rd", "k_hd", "sin_rd", "rd_too_wide"])
def test_partial_bad_inputs_name_the_op(launcher, case):
    q, k = torch.randn(2, 4, 3, 16), torch.randn(2, 2, 3, 16)
    cos, sin = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    msg = {"odd_rd": "rotary dimension", "k_hd": "k must be", "sin_rd": "same shape",
           "rd_too_wide": "cos must have shape"}[case]
    if case == "odd_rd":
        cos, sin = cos[..., :7], sin[..., :7]
    elif case == "k_hd":
        k = torch.randn(2, 2, 3, 12)
    elif case == "sin_rd":
        sin = torch.randn(1, 3, 6)
    elif case == "rd_too_wide":
        cos, sin = torch.randn(1, 3, 18), torch.randn(1, 3, 18)
    with pytest.raises(ligerd.OpInputError, match=msg) as ei:
        liger_rotary_pos_emb(q, k, cos, sin)
    assert "rope" in str(ei.value)


# ---------------------------------------------------------------------------------------------
# M-RoPE


@pytest.mark.parametrize("section,d", [([2, 3, 3], 16), ([16, 24, 24], 128), ([1, 0, 2], 6)])
def test_mrope_matches_transformers_forward_and_backward(launcher, section, d):
    b, hq, hk, s = 2, 3, 1, 5
    cos, sin = cos_sin(b, s, d, lead=(3,))
    wq, wk, q, k = hf_qk(b, hq, hk, s, d)
    oq, ok = liger_multimodal_rotary_pos_emb(q, k, cos, sin, section)
    assert oq.data_ptr() == q.data_ptr(), "rotated in place (as ligerd's RoPE)"
    (op, fts, _), = launcher.calls
    assert op == "rope_fwd" and fts[2][0] == (b, s, d), "one launch with the selected cos"
    dq, dk = torch.randn(b, hq, s, d), torch.randn(b, hk, s, d)
    rq, rk, gq, gk = ref_grads(hf_mrope, wq, wk, b, hq, hk, s, d, dq, dk, cos, sin, section)
    close(oq, rq)
    close(ok, rk)
    torch.autograd.backward([oq, ok], [dq, dk])
    close(wq.grad, gq)
    close(wk.grad, gk)
    # The other names: LigerQwen2VLMRopeFunction.apply and liger_qwen2vl_mrope (unsqueeze_dim ignored).
    for fn in (LigerQwen2VLMRopeFunction.apply, liger_qwen2vl_mrope):
        with torch.no_grad():
            q2, k2 = (wq * 1).view(b, s, hq, d).transpose(1, 2), (wk * 1).view(b, s, hk, d).transpose(1, 2)
            oq2, ok2 = fn(q2, k2, cos, sin, section, 1)
        close(oq2, rq)
        close(ok2, rk)


@pytest.mark.parametrize("case", ["two_rows", "section_len", "section_sum", "sin_shape", "head_dim"])
def test_mrope_bad_inputs_name_the_op(launcher, case):
    q, k = torch.randn(1, 2, 3, 16), torch.randn(1, 1, 3, 16)
    cos, sin = torch.randn(3, 1, 3, 16), torch.randn(3, 1, 3, 16)
    section = [2, 3, 3]
    msg = {"two_rows": r"\(3, bsz, seq, head_dim\)", "section_len": "3 non-negative ints",
           "section_sum": "covers 10 dims", "sin_shape": "same shape", "head_dim": "head_dim 8 but q has 16"}[case]
    if case == "two_rows":
        cos = cos[:2]
    elif case == "section_len":
        section = [8, 8]
    elif case == "section_sum":
        section = [1, 2, 2]
    elif case == "sin_shape":
        sin = torch.randn(3, 2, 3, 16)
    elif case == "head_dim":
        cos, sin, section = cos[..., :8], sin[..., :8], [1, 1, 2]
    with pytest.raises(ligerd.OpInputError, match=msg) as ei:
        liger_multimodal_rotary_pos_emb(q, k, cos, sin, section)
    assert "rope" in str(ei.value)


# ---------------------------------------------------------------------------------------------
# Model patching: which modules get ligerd's RoPE, and tiny models through it


# Model types whose installed apply_rotary_pos_emb ligerd computes: partial rotary (phi3 with a
# partial_rotary_factor; qwen3_next, qwen3_5, qwen3_5_moe, glm4v_moe from their tiny configs) and
# the M-RoPE text models (qwen2_vl, qwen2_5_vl: transformers 5 selects the sections in the rotary
# module).
PATCHED = ["phi3", "qwen3_next", "qwen3_5", "qwen3_5_moe", "glm4v_moe", "qwen2_vl", "qwen2_5_vl"]
OFF = dict(cross_entropy=False, fused_linear_cross_entropy=False, rms_norm=False)


def _modeling(module):
    return importlib.import_module(f"transformers.models.{module}.modeling_{module}")


def _apply(model_type, **kw):
    from ligerd.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    import inspect
    fn = MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]
    params = inspect.signature(fn).parameters
    flags = {k: v for k, v in dict(OFF, swiglu=False, layer_norm=False, **kw).items() if k in params}
    fn(**flags)


def _config(model_type):
    from ligerd.testing import tiny_models as tm
    cfg = tm.tiny_config(model_type)
    if model_type == "phi3":  # Phi-4-mini style: 3/4 of the head rotated
        cfg.rope_parameters = dict(cfg.rope_parameters, partial_rotary_factor=0.75)
    return cfg


@pytest.mark.parametrize("model_type", PATCHED)
def test_rope_patch_trains_like_transformers(launcher, clean_patches, model_type):
    pytest.importorskip("transformers")
    from ligerd.testing import tiny_models as tm
    cfg = _config(model_type)
    ref = tm.build(model_type, cfg=copy.deepcopy(cfg))
    module = type(ref).__module__
    stock_fn = importlib.import_module(module).apply_rotary_pos_emb
    with warnings.catch_warnings():
        warnings.simplefilter("error", LigerdWarning)  # nothing kept: no "rope=True" warning
        _apply(model_type, rope=True)
    assert importlib.import_module(module).apply_rotary_pos_emb is liger_rotary_pos_emb
    model = tm.build(model_type, cfg=copy.deepcopy(cfg))
    model.load_state_dict(ref.state_dict())
    ref.train()
    model.train()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, tm.VOCAB - 3, (2, 9), generator=g)
    launcher.calls.clear()
    out = model(input_ids=ids, labels=ids)
    assert any(c[0] == "rope_fwd" for c in launcher.calls), "the attention layers called ligerd's RoPE"
    fwd = [c for c in launcher.calls if c[0] == "rope_fwd"]
    head_dim = getattr(cfg.get_text_config(), "head_dim", None) or 16
    rds = {c[1][0][0][-1] for c in fwd}
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        assert rds == {head_dim}, rds
    else:
        assert rds and all(rd < head_dim for rd in rds), (rds, head_dim)  # the partial path
    lt.revert_liger_kernel_patches()
    assert importlib.import_module(module).apply_rotary_pos_emb is stock_fn
    out_ref = ref(input_ids=ids, labels=ids)
    torch.testing.assert_close(out.loss, out_ref.loss, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    out_ref.loss.backward()
    got = dict(model.named_parameters())
    for name, p in ref.named_parameters():
        if p.grad is None:
            assert got[name].grad is None or not got[name].grad.any(), name
            continue
        torch.testing.assert_close(got[name].grad, p.grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_interleaved_glm_rope_is_not_what_the_kernel_computes():
    """Why GLM-4 needs the interleaved path (ligerd.ops.rope_interleaved), not liger_rotary_pos_emb:
    its apply_rotary_pos_emb differs from the rotate_half partial RoPE on the same inputs;
    GLM-4V-MoE's agrees."""
    q, k = torch.randn(1, 2, 3, 16, dtype=torch.float64), torch.randn(1, 1, 3, 16, dtype=torch.float64)
    cos, sin = cos_sin(1, 3, 8)
    cos, sin = cos.double(), sin.double()
    want = hf_partial(q, k, cos, sin)
    glm = _modeling("glm4").apply_rotary_pos_emb(q, k, cos, sin)
    assert not torch.allclose(glm[0], want[0])
    glm4v_moe = _modeling("glm4v_moe").apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(glm4v_moe[0], want[0])
    torch.testing.assert_close(glm4v_moe[1], want[1])


@pytest.mark.parametrize("model_type", ["qwen3_next", "qwen3_5", "glm4v_moe"])
def test_rope_with_every_default_patch(launcher, clean_patches, model_type):
    """rope=True on top of every default patch (ligerd's q_norm/k_norm RMSNorm right before the
    in-place RoPE, SwiGLU, the fused loss): nothing ligerd's other ops saved is rotated under them
    (autograd would raise), and the loss and gradients are transformers'."""
    from ligerd.testing import tiny_models as tm
    from ligerd.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    cfg = _config(model_type)
    ref = tm.build(model_type, cfg=copy.deepcopy(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LigerdWarning)  # e.g. a vision MLP kept as transformers'
        MODEL_TYPE_TO_APPLY_LIGER_FN[model_type](rope=True)
    model = tm.build(model_type, cfg=copy.deepcopy(cfg))
    model.load_state_dict(ref.state_dict())
    ref.train()
    model.train()
    ids = torch.randint(3, tm.VOCAB - 3, (2, 9), generator=torch.Generator().manual_seed(5))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    lt.revert_liger_kernel_patches()
    loss_ref = ref(input_ids=ids, labels=ids).loss
    loss_ref.backward()
    assert {c[0] for c in launcher.calls} >= {"rope_fwd", "rope_bwd", "rms_norm_fwd"}
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    got = dict(model.named_parameters())
    for name, p in ref.named_parameters():
        if p.grad is not None and p.grad.any():
            torch.testing.assert_close(got[name].grad, p.grad, rtol=1e-4, atol=1e-6,
                                       msg=lambda m: f"{name}: {m}")
