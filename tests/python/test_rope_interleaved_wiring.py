"""The interleaved, complex (freqs_cis) and half-size-cos RoPEs on ligerd's rotate_half RoPE op, on
the CPU (issue 18; ligerd.ops.rope_interleaved has the identity):

- each ligerd function equals the transformers function it replaces (called from the installed
  modeling module, in float64) forward and backward: GLM-4's and GLM-4V's interleaved partial
  RoPE, DeepSeek-V3's ``apply_rotary_pos_emb_interleave`` and (out of place: its q/k are
  torch.split views) ``apply_rotary_pos_emb``, DeepSeek-V2's and Llama-4's complex
  ``apply_rotary_emb``, GPT-OSS's half-size-cos ``apply_rotary_pos_emb``, and the one-tensor
  ``apply_rotary_pos_emb(x, cos, sin, unsqueeze_dim)`` of DeepSeek-V4 (trailing interleaved
  channels, half-size cos/sin) and Gemma-4 (rotate_half); head dims that are not
  powers of two, partial rotary dims, fp32 and bf16;
- ``apply_liger_kernel_to_<type>(rope=True)`` installs them, with no warning (GLM-4V's vision
  tower's apply_rotary_pos_emb_vision is ligerd's too: tests/python/test_rope_vision_wiring.py);
  Llama-4's vision_apply_rotary_emb included (a real freqs_ci falls back to transformers' function);
- a tiny model of each patched type computes transformers' loss and gradients through them.

The executor is the float64 reference launcher (ligerd.testing.ref_executor): each rotated element
is computed in float64 and rounded once to q's dtype. Tolerances: fp32 rtol 1e-5 / atol 1e-6 on
O(1) values (transformers' fp32 rounds after each of its operations); bf16 against the float64
reference rtol 1e-2 / atol 2e-2 (one bf16 rounding of an O(1) value is <= 2^-8 relative, and the
inputs are bf16-exact, so only the output rounding differs). The GPU kernels:
tests/gpu/test_rope_interleaved.py.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import warnings

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
pytest.importorskip("transformers")

import ligerd  # noqa: E402
import ligerd.transformers as lt  # noqa: E402
from ligerd._errors import LigerdWarning  # noqa: E402
from ligerd.ops import rope_interleaved as ri_ops  # noqa: E402
from ligerd.transformers import rope_interleaved as ri  # noqa: E402
from ligerd.transformers.rope import liger_rotary_pos_emb_vision  # noqa: E402

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=1e-2, atol=2e-2)}


def _modeling(module):
    return importlib.import_module(f"transformers.models.{module}.modeling_{module}")


# ---------------------------------------------------------------------------------------------
# The functions against transformers' own, float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _tables(kind, b, s, hd, rd, seed):
    """The trailing arguments of the transformers function: cos/sin (standard layout of width rd,
    interleaved layout of width rd, or half width) or a complex freqs_cis, all random (distinct
    halves and pairs, so a wrong permutation shows)."""
    g = _gen(seed)
    if kind in ("glm4", "deepseek_v3", "deepseek_v3_plain"):
        return torch.randn(b, s, rd, generator=g), torch.randn(b, s, rd, generator=g)
    if kind == "glm4v":  # interleaved layout, as its rotary embedding's repeat_interleave gives
        c, si = torch.randn(b, s, rd // 2, generator=g), torch.randn(b, s, rd // 2, generator=g)
        return c.repeat_interleave(2, -1), si.repeat_interleave(2, -1)
    if kind == "gpt_oss":
        return torch.randn(b, s, hd // 2, generator=g), torch.randn(b, s, hd // 2, generator=g)
    mag = torch.rand(b, s, hd // 2, generator=g) + 0.5
    return (torch.polar(mag, torch.randn(b, s, hd // 2, generator=g) * 3),)


# kind -> (transformers module, its function, ligerd's replacement, q/k heads on dim 2)
FUNCS = {
    "glm4": ("glm4", "apply_rotary_pos_emb", ri.liger_glm4_rotary_pos_emb, False),
    "glm4v": ("glm4v", "apply_rotary_pos_emb", ri.liger_glm4v_rotary_pos_emb, False),
    "deepseek_v3": ("deepseek_v3", "apply_rotary_pos_emb_interleave",
                    ri.liger_deepseek_v3_rotary_pos_emb_interleave, False),
    "deepseek_v3_plain": ("deepseek_v3", "apply_rotary_pos_emb", ri.liger_deepseek_v3_rotary_pos_emb, False),
    "deepseek_v2": ("deepseek_v2", "apply_rotary_emb", ri.liger_deepseek_v2_rotary_emb, False),
    "llama4": ("llama4", "apply_rotary_emb", ri.liger_llama4_text_rotary_pos_emb, True),
    "gpt_oss": ("gpt_oss", "apply_rotary_pos_emb", ri.liger_gpt_oss_rotary_pos_emb, False),
}

# (bsz, n_q_head, n_kv_head, seq, head_dim, rotary_dim): full and partial rotary (only GLM's take
# rd < hd), head dims 6, 10, 18, 80 (not powers of two), the smallest pair count (hd 2).
SHAPES = [(2, 4, 2, 5, 16, 16), (1, 3, 1, 4, 18, 18), (2, 2, 1, 3, 80, 40), (1, 2, 2, 3, 10, 6),
          (2, 1, 1, 2, 6, 2), (1, 1, 1, 3, 2, 2)]


def _case(kind, shape, dtype, seed):
    b, hq, hk, s, hd, rd = shape
    if kind not in ("glm4", "glm4v"):
        rd = hd
    heads2 = FUNCS[kind][3]
    g = _gen(seed)
    wq = torch.randn(b, s, hq * hd, generator=g).to(dtype).requires_grad_()
    wk = torch.randn(b, s, hk * hd, generator=g).to(dtype).requires_grad_()
    tables = _tables(kind, b if seed % 2 else 1, s, hd, rd, seed + 1)
    if kind in ("deepseek_v2", "llama4"):  # freqs_cis: batch as q's (HF slices it per position)
        tables = (tables[0].expand(b, -1, -1).contiguous(),)
    elif dtype != torch.float32:  # cos/sin in q's dtype, as the rotary embeddings return them
        tables = tuple(t.to(dtype) for t in tables)

    def qk(wq, wk):
        q, k = wq.view(b, s, hq, hd), wk.view(b, s, hk, hd)
        return (q, k) if heads2 else (q.transpose(1, 2), k.transpose(1, 2))
    return wq, wk, tables, qk


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", list(FUNCS))
def test_matches_transformers_forward_and_backward(launcher, kind, shape, dtype):
    module, name, fn, _ = FUNCS[kind]
    hf = getattr(_modeling(module), name)
    seed = sum(shape) + len(kind)
    wq, wk, tables, qk = _case(kind, shape, dtype, seed)
    launcher.calls.clear()
    rq, rk = fn(*qk(wq * 1, wk * 1), *tables)
    assert any(c[0] == "rope_fwd" for c in launcher.calls), "ligerd's RoPE op computed it"
    g = _gen(seed + 7)
    dq, dk = torch.randn(rq.shape, generator=g).to(dtype), torch.randn(rk.shape, generator=g).to(dtype)
    # clones: ligerd's backward may rotate the incoming gradients in place (ligerd.ops.rope)
    gq, gk = torch.autograd.grad((rq, rk), (wq, wk), (dq.clone(), dk.clone()))
    assert any(c[0] == "rope_bwd" for c in launcher.calls), "the backward is ligerd's op"
    # float64 reference: transformers' function from the same (rounded) leaves
    wq2, wk2 = wq.detach().double().requires_grad_(), wk.detach().double().requires_grad_()
    t64 = tuple(t.to(torch.complex128) if t.is_complex() else t.double() for t in tables)
    eq, ek = hf(*qk(wq2, wk2), *t64)
    assert rq.dtype == dtype and rq.shape == eq.shape and rk.shape == ek.shape
    fq, fk = torch.autograd.grad((eq, ek), (wq2, wk2), (dq.double(), dk.double()))
    tol = TOL[dtype]
    for got, want in ((rq, eq), (rk, ek), (gq, fq), (gk, fk)):
        torch.testing.assert_close(got.double(), want.detach(), **tol)


# one-tensor functions: (kind, head_dim, cos width, unsqueeze_dim)
ONE = [("deepseek_v4", 16, 4, 1), ("deepseek_v4", 18, 9, 1), ("deepseek_v4", 10, 5, 2), ("deepseek_v4", 6, 1, 1),
       ("gemma4", 16, 16, 2), ("gemma4", 10, 10, 1), ("gemma4", 18, 18, 2)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", ONE, ids=lambda c: "-".join(map(str, c)))
def test_one_tensor_matches_transformers_forward_and_backward(launcher, case, dtype):
    """DeepSeek-V4's (trailing interleaved, half-size cos) and Gemma-4's (rotate_half) RoPE of one
    tensor; x (bsz, heads, seq, d) for unsqueeze_dim 1, (bsz, seq, heads, d) for 2."""
    kind, hd, cw, ud = case
    fn = {"deepseek_v4": ri.liger_deepseek_v4_rotary_pos_emb, "gemma4": ri.liger_gemma4_rotary_pos_emb}[kind]
    hf = _modeling(kind).apply_rotary_pos_emb
    b, h, s = 2, 3, 5
    g = _gen(hd + cw + ud)
    w = torch.randn(b, s, h * hd, generator=g).to(dtype).requires_grad_()
    cos, sin = (torch.randn(b if ud == 1 else 1, s, cw, generator=g).to(dtype) for _ in range(2))

    def shape(w):
        x = w.view(b, s, h, hd)
        return x.transpose(1, 2) if ud == 1 else x
    launcher.calls.clear()
    y = fn(shape(w * 1), cos, sin, ud)
    dy = torch.randn(y.shape, generator=g).to(dtype)
    (gw,) = torch.autograd.grad(y, w, dy.clone())
    assert {c[0] for c in launcher.calls} >= {"rope_fwd", "rope_bwd"}
    w2 = w.detach().double().requires_grad_()
    e = hf(shape(w2), cos.double(), sin.double(), unsqueeze_dim=ud)
    (fw,) = torch.autograd.grad(e, w2, dy.double())
    assert y.shape == e.shape and y.dtype == dtype
    torch.testing.assert_close(y.double(), e.detach(), **TOL[dtype])
    torch.testing.assert_close(gw.double(), fw, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("hd", [16, 18, 88])
def test_llama4_vision_matches_transformers(launcher, hd, dtype):
    """Llama-4's vision_apply_rotary_emb: q/k (images, patches + 1, heads, hd), freqs_ci complex
    (patches + 1, 1, hd/2) shared by every image (its buffer's layout)."""
    hf = _modeling("llama4").vision_apply_rotary_emb
    b, s, h = 3, 10, 2
    g = _gen(hd)
    wq = torch.randn(b, s, h * hd, generator=g).to(dtype).requires_grad_()
    wk = torch.randn(b, s, h * hd, generator=g).to(dtype).requires_grad_()
    f = torch.polar(torch.rand(s, 1, hd // 2, generator=g) + 0.5, torch.randn(s, 1, hd // 2, generator=g) * 3)
    launcher.calls.clear()
    rq, rk = ri.liger_llama4_vision_rotary_pos_emb(wq.view(b, s, h, hd) * 1, wk.view(b, s, h, hd) * 1, f)
    assert any(c[0] == "rope_fwd" for c in launcher.calls)
    dq, dk = torch.randn(rq.shape, generator=g).to(dtype), torch.randn(rk.shape, generator=g).to(dtype)
    gq, gk = torch.autograd.grad((rq, rk), (wq, wk), (dq.clone(), dk.clone()))
    wq2, wk2 = wq.detach().double().requires_grad_(), wk.detach().double().requires_grad_()
    eq, ek = hf(wq2.view(b, s, h, hd), wk2.view(b, s, h, hd), f.to(torch.complex128))
    fq, fk = torch.autograd.grad((eq, ek), (wq2, wk2), (dq.double(), dk.double()))
    for got, want in ((rq, eq), (rk, ek), (gq, fq), (gk, fk)):
        torch.testing.assert_close(got.double(), want.detach(), **TOL[dtype])


def test_llama4_vision_real_freqs_fall_back_to_transformers(clean_patches):
    """A freqs_ci cast to a real dtype (model.to(bfloat16) drops the imaginary part): transformers'
    own function computes it (as Liger falls back), with a one-time warning."""
    modeling = _modeling("llama4")
    stock = modeling.vision_apply_rotary_emb
    _apply("llama4", rope=True)
    assert modeling.vision_apply_rotary_emb is ri.liger_llama4_vision_rotary_pos_emb
    q, k = torch.randn(2, 5, 2, 8), torch.randn(2, 5, 2, 8)
    f = torch.randn(5, 1, 4)
    with pytest.warns(LigerdWarning, match="not a complex"):
        got = ri.liger_llama4_vision_rotary_pos_emb(q, k, f)
    want = stock(q, k, f)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_permutations_are_inverse_and_exact():
    x = torch.randn(3, 2, 4, 10, dtype=torch.float64)
    d = ri_ops.deinterleave(x)
    assert torch.equal(d[..., :5], x[..., 0::2]) and torch.equal(d[..., 5:], x[..., 1::2])
    assert torch.equal(ri_ops.reinterleave(d), x) and d.is_contiguous()


def test_in_place_of_the_copies_leaves_inputs_untouched(launcher):
    """ligerd's op rotates the de-interleaved copies (fresh tensors) in place; q and k themselves
    (which transformers' callers may still hold) are never written."""
    wq, wk, tables, qk = _case("glm4", (2, 2, 1, 3, 16, 8), torch.float32, 3)
    q, k = qk(wq.detach(), wk.detach())
    q0, k0 = q.clone(), k.clone()
    ri.liger_glm4_rotary_pos_emb(q, k, *tables)
    assert torch.equal(q, q0) and torch.equal(k, k0)


@pytest.mark.parametrize("case", ["real_freqs", "freqs_width", "half_cos_width", "cos_width_v3", "q_3d",
                                  "odd_rotary_dim", "int_dtype", "llama4_real_freqs", "one_tensor_unsqueeze",
                                  "one_tensor_cos_too_wide"])
def test_bad_inputs_name_the_op(launcher, case):
    q, k = torch.randn(1, 2, 3, 8), torch.randn(1, 1, 3, 8)
    with pytest.raises(ligerd.OpInputError) as ei:
        if case == "real_freqs":
            ri.liger_deepseek_v2_rotary_emb(q, k, torch.randn(1, 3, 4))
        elif case == "freqs_width":
            ri.liger_deepseek_v2_rotary_emb(q, k, torch.polar(torch.ones(1, 3, 3), torch.zeros(1, 3, 3)))
        elif case == "half_cos_width":
            ri.liger_gpt_oss_rotary_pos_emb(q, k, torch.randn(1, 3, 8), torch.randn(1, 3, 8))
        elif case == "cos_width_v3":
            ri.liger_deepseek_v3_rotary_pos_emb_interleave(q, k, torch.randn(1, 3, 6), torch.randn(1, 3, 6))
        elif case == "q_3d":
            ri.liger_glm4_rotary_pos_emb(q[0], k, torch.randn(1, 3, 8), torch.randn(1, 3, 8))
        elif case == "odd_rotary_dim":  # interleaved pairs need an even rotary dimension
            ri.liger_glm4_rotary_pos_emb(q, k, torch.randn(1, 3, 5), torch.randn(1, 3, 5))
        elif case == "int_dtype":
            ri.liger_glm4_rotary_pos_emb(q.long(), k.long(), torch.randn(1, 3, 8), torch.randn(1, 3, 8))
        elif case == "llama4_real_freqs":
            ri.liger_llama4_text_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), torch.randn(1, 3, 4))
        elif case == "one_tensor_unsqueeze":
            ri.liger_gemma4_rotary_pos_emb(q, torch.randn(1, 3, 8), torch.randn(1, 3, 8), unsqueeze_dim=3)
        else:  # 2 * cos.shape[-1] beyond the head dimension
            ri.liger_deepseek_v4_rotary_pos_emb(q, torch.randn(1, 3, 6), torch.randn(1, 3, 6))
    assert "RoPE" in str(ei.value) or "rope" in str(ei.value)


# ---------------------------------------------------------------------------------------------
# Model patching


# model type -> {modeling attribute: ligerd function}, and what is still warned about
PATCHED = {
    "glm4": ({"apply_rotary_pos_emb": ri.liger_glm4_rotary_pos_emb}, None),
    "glm4v": ({"apply_rotary_pos_emb": ri.liger_glm4v_rotary_pos_emb,
               "apply_rotary_pos_emb_vision": liger_rotary_pos_emb_vision}, None),
    "deepseek_v2": ({"apply_rotary_emb": ri.liger_deepseek_v2_rotary_emb}, None),
    "deepseek_v3": ({"apply_rotary_pos_emb_interleave": ri.liger_deepseek_v3_rotary_pos_emb_interleave,
                     "apply_rotary_pos_emb": ri.liger_deepseek_v3_rotary_pos_emb}, None),
    "llama4": ({"apply_rotary_emb": ri.liger_llama4_text_rotary_pos_emb,
                "vision_apply_rotary_emb": ri.liger_llama4_vision_rotary_pos_emb}, None),
    "gpt_oss": ({"apply_rotary_pos_emb": ri.liger_gpt_oss_rotary_pos_emb}, None),
    "deepseek_v4": ({"apply_rotary_pos_emb": ri.liger_deepseek_v4_rotary_pos_emb}, None),
    "gemma4_text": ({"apply_rotary_pos_emb": ri.liger_gemma4_rotary_pos_emb}, None),
}
OFF = dict(cross_entropy=False, fused_linear_cross_entropy=False, rms_norm=False, swiglu=False,
           geglu=False, layer_norm=False)


def _apply(model_type, **kw):
    from ligerd.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    fn = MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]
    params = inspect.signature(fn).parameters
    fn(**{k: v for k, v in dict(OFF, **kw).items() if k in params})


@pytest.mark.parametrize("model_type", list(PATCHED))
def test_rope_true_installs_ligerd_and_warns_only_about_what_is_kept(clean_patches, model_type):
    module = {"gemma4_text": "gemma4"}.get(model_type, model_type)
    modeling = _modeling(module)
    want, kept = PATCHED[model_type]
    stock = {a: getattr(modeling, a) for a in want}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _apply(model_type, rope=True)
    msgs = [str(x.message) for x in w if issubclass(x.category, LigerdWarning)]
    for attr, fn in want.items():
        assert getattr(modeling, attr) is fn, attr
    rope_msgs = [m for m in msgs if "rope=True" in m]
    if kept is None:
        assert not rope_msgs, rope_msgs
    else:
        assert rope_msgs and all(kept in m for m in rope_msgs), rope_msgs
    lt.revert_liger_kernel_patches()
    for attr, fn in stock.items():
        assert getattr(modeling, attr) is fn, attr


def _tiny_config(model_type, interleave=None):
    from ligerd.testing import tiny_models as tm
    cfg = tm.tiny_config(model_type)
    if interleave is not None:
        cfg.rope_interleave = interleave
    return cfg


TRAIN = [("glm4", None), ("glm4v", None), ("deepseek_v2", None), ("deepseek_v3", True),
         ("deepseek_v3", False), ("llama4", None), ("gpt_oss", None), ("deepseek_v4", None),
         ("gemma4_text", None)]


@pytest.mark.parametrize("model_type,interleave", TRAIN,
                         ids=[f"{t}{'' if i is None else '-interleave' if i else '-rotate_half'}" for t, i in TRAIN])
def test_tiny_model_trains_like_transformers(launcher, clean_patches, model_type, interleave):
    from ligerd.testing import tiny_models as tm
    cfg = _tiny_config(model_type, interleave)
    ref = tm.build(model_type, cfg=copy.deepcopy(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LigerdWarning)  # parts other than RoPE ligerd lacks
        _apply(model_type, rope=True)
    model = tm.build(model_type, cfg=copy.deepcopy(cfg))
    model.load_state_dict(ref.state_dict())
    ref.train()
    model.train()
    ids = torch.randint(3, tm.VOCAB - 3, (2, 9), generator=_gen(3))
    launcher.calls.clear()
    out = model(input_ids=ids, labels=ids)
    assert any(c[0] == "rope_fwd" for c in launcher.calls), "the attention layers called ligerd's RoPE"
    out.loss.backward()
    assert any(c[0] == "rope_bwd" for c in launcher.calls)
    lt.revert_liger_kernel_patches()
    out_ref = ref(input_ids=ids, labels=ids)
    out_ref.loss.backward()
    torch.testing.assert_close(out.loss, out_ref.loss, rtol=1e-5, atol=1e-6)
    got = dict(model.named_parameters())
    for name, p in ref.named_parameters():
        if p.grad is None:
            assert got[name].grad is None or not got[name].grad.any(), name
            continue
        # atol scaled by the gradient's size: transformers' own fp32 gradients differ from float64
        # by ~1.5e-5 of their largest element (Gemma-4's tiny model: 4e-5 at max |g| 2.7; ligerd's
        # RoPE, rounding once, is closer to float64 than that), more than rtol covers for the
        # small elements of a large-gradient tensor.
        atol = 1e-6 + 5e-5 * float(p.grad.abs().max())
        torch.testing.assert_close(got[name].grad, p.grad, rtol=1e-4, atol=atol,
                                   msg=lambda m: f"{name}: {m}")
