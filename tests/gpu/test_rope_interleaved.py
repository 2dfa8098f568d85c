"""The interleaved, complex (freqs_cis), half-size-cos and one-tensor RoPEs on the GPU
(ligerd.ops.rope_interleaved: ligerd's rotate_half kernel between de-/re-interleaving copies),
forward and backward, against a float64 evaluation of the transformers functions they replace:

- GLM-4 / GLM-4V text ``apply_rotary_pos_emb`` (interleaved pairs, partial rotary), DeepSeek-V3's
  ``apply_rotary_pos_emb_interleave`` (de-interleaved result) and plain ``apply_rotary_pos_emb``
  (torch.split views: out of place), DeepSeek-V2 / Llama-4 text ``apply_rotary_emb`` (complex
  freqs_cis), GPT-OSS ``apply_rotary_pos_emb`` (half-size cos/sin), DeepSeek-V4's one-tensor
  trailing interleaved and Gemma-4's one-tensor ``apply_rotary_pos_emb``, Llama-4's
  ``vision_apply_rotary_emb``; fp32 / bf16 / fp16,
  model-sized head dims (64, 128, 256) and an odd one (80 with rotary dim 24);
- remote dispatch (the daemon, CUDA IPC) bitwise equals local, where LIGERD_BIN names a built
  daemon (tests/gpu/run.sh sets it); skipped otherwise;
- tiny models of every newly patched type, rope=True only, against transformers.

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest tests/gpu/test_rope_interleaved.py).
Skips without CUDA.

Tolerance, per element: |got - ref| <= u * |ref| + 2^-21 * scale + tiny, with u the output dtype's
unit roundoff (bf16 2^-8, fp16 2^-11, fp32 0: the kernel's fp32 result is the output; it rounds
once, half an ulp, so u is a 2x margin), scale = max|x| * max(|cos| + |sin|) over the call (the
kernel's fp32 products and fma are each within 2^-24 of that; 8x margin), tiny the fp16 subnormal
spacing. Inputs (q, k, cos, sin, freqs_cis) are exactly representable in float64 and the
permutations move values without arithmetic, so nothing else differs. A wrong pairing or
permutation is an O(1) error.
"""

from __future__ import annotations

import importlib

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd.transformers import rope_interleaved as ri  # noqa: E402

from ligerd.testing import gpu as _util  # noqa: E402
from ligerd.testing.gpu import DEV, DTYPES, param_id as _id  # noqa: E402

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

U = {torch.float32: 0.0, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
TINY = {torch.float32: 0.0, torch.bfloat16: 0.0, torch.float16: 2.0 ** -24}
K_FP32 = 2.0 ** -21


def _modeling(module):
    pytest.importorskip("transformers")
    return importlib.import_module(f"transformers.models.{module}.modeling_{module}")


# kind -> (module, function, ligerd's, layout): "pair" = (q, k, *tables) with q/k (b, h, s, d);
# "pair_bshd" = the same with q/k (b, s, h, d); "one" = (x, cos, sin, unsqueeze_dim)
FUNCS = {
    "glm4": ("glm4", "apply_rotary_pos_emb", ri.liger_glm4_rotary_pos_emb, "pair"),
    "glm4v": ("glm4v", "apply_rotary_pos_emb", ri.liger_glm4v_rotary_pos_emb, "pair"),
    "deepseek_v3_interleave": ("deepseek_v3", "apply_rotary_pos_emb_interleave",
                               ri.liger_deepseek_v3_rotary_pos_emb_interleave, "pair"),
    "deepseek_v3": ("deepseek_v3", "apply_rotary_pos_emb", ri.liger_deepseek_v3_rotary_pos_emb, "pair"),
    "deepseek_v2": ("deepseek_v2", "apply_rotary_emb", ri.liger_deepseek_v2_rotary_emb, "pair"),
    "llama4": ("llama4", "apply_rotary_emb", ri.liger_llama4_text_rotary_pos_emb, "pair_bshd"),
    "gpt_oss": ("gpt_oss", "apply_rotary_pos_emb", ri.liger_gpt_oss_rotary_pos_emb, "pair"),
    "deepseek_v4": ("deepseek_v4", "apply_rotary_pos_emb", ri.liger_deepseek_v4_rotary_pos_emb, "one"),
    "gemma4": ("gemma4", "apply_rotary_pos_emb", ri.liger_gemma4_rotary_pos_emb, "one"),
}

# kind -> [(bsz, n_q_head, n_kv_head, seq, head_dim, table width)]: the models' sizes (GLM-4 128
# with rotary 64; DeepSeek's MLA rope part 64 with one k head; Llama-4 128; GPT-OSS 64; DeepSeek-V4
# 512-wide heads with a 64-channel rope tail; Gemma-4 256) and small odd ones.
SHAPES = {
    "glm4": [(2, 16, 2, 257, 128, 64), (1, 4, 4, 17, 80, 24)],
    "glm4v": [(2, 16, 2, 129, 128, 64), (1, 4, 4, 17, 80, 24)],
    "deepseek_v3_interleave": [(2, 16, 1, 257, 64, 64), (1, 3, 1, 9, 18, 18)],
    "deepseek_v3": [(2, 16, 1, 257, 64, 64), (1, 3, 1, 9, 18, 18)],
    "deepseek_v2": [(2, 16, 1, 257, 64, 32), (1, 3, 1, 9, 18, 9)],
    "llama4": [(2, 40, 8, 257, 128, 64), (1, 3, 1, 9, 18, 9)],
    "gpt_oss": [(2, 64, 8, 257, 64, 32), (1, 3, 1, 9, 18, 9)],
    "deepseek_v4": [(2, 16, 0, 129, 512, 32), (1, 3, 0, 9, 18, 9)],
    "gemma4": [(2, 8, 0, 129, 256, 256), (1, 3, 0, 9, 18, 18)],
}


def _tables(kind, cb, s, w, dtype, gen):
    if kind in ("deepseek_v2", "llama4"):
        mag = torch.rand(cb, s, w, device=DEV, generator=gen, dtype=torch.float32) + 0.5
        ang = torch.randn(cb, s, w, device=DEV, generator=gen, dtype=torch.float32) * 3
        return (torch.polar(mag, ang),)
    c = torch.randn(cb, s, w, device=DEV, generator=gen).to(dtype)
    si = torch.randn(cb, s, w, device=DEV, generator=gen).to(dtype)
    if kind == "glm4v":  # interleaved layout, as its rotary embedding gives
        c, si = c[..., : w // 2].repeat_interleave(2, -1), si[..., : w // 2].repeat_interleave(2, -1)
    return c, si


def _scale(x, tables):
    if tables[0].is_complex():
        cs = (tables[0].real.abs() + tables[0].imag.abs()).max()
    else:
        cs = (tables[0].abs().double() + tables[1].abs().double()).max()
    return float(x.detach().abs().max()) * float(cs)


def _run(kind, shape, dtype, seed):
    module, name, fn, layout = FUNCS[kind]
    hf = getattr(_modeling(module), name)
    b, hq, hk, s, d, w = shape
    gen = torch.Generator(device=DEV).manual_seed(seed)
    cb = b if seed % 2 else 1
    if kind in ("deepseek_v2", "llama4"):
        cb = b  # HF broadcasts freqs_cis over heads only
    tables = _tables(kind, cb, s, w, dtype, gen)
    ud = 2 if kind == "gemma4" else 1
    if layout == "one":
        xs = [torch.randn(b, s, hq * d, device=DEV, generator=gen).to(dtype).requires_grad_()]
    else:
        xs = [torch.randn(b, s, h * d, device=DEV, generator=gen).to(dtype).requires_grad_() for h in (hq, hk)]

    def shaped(ws):
        out = []
        for wt, h in zip(ws, (hq, hk)):
            x = wt.view(b, s, h, d)
            out.append(x if (layout == "pair_bshd" or (layout == "one" and ud == 2)) else x.transpose(1, 2))
        return out

    def call(f, ws, tabs):
        if layout == "one":
            return (f(shaped(ws)[0], *tabs, unsqueeze_dim=ud) if f is hf else f(shaped(ws)[0], *tabs, ud),)
        return tuple(f(*shaped(ws), *tabs))
    got = call(fn, [x * 1 for x in xs], tables)
    dys = [torch.randn(g.shape, device=DEV, generator=gen).to(dtype) for g in got]
    ggot = torch.autograd.grad(got, xs, [dy.clone() for dy in dys])
    x64 = [x.detach().double().requires_grad_() for x in xs]
    t64 = tuple(t.to(torch.complex128) if t.is_complex() else t.double() for t in tables)
    want = call(hf, x64, t64)
    gwant = torch.autograd.grad(want, x64, [dy.double() for dy in dys])
    ctx = f"{kind} {_id(dtype)} {shape}"
    for i, (g, r, x) in enumerate(zip(got, want, xs)):
        tol = U[dtype] * r.detach().abs() + K_FP32 * _scale(x, tables) + TINY[dtype]
        _util.assert_close(f"out{i}", g, r.detach(), tol, ctx)
    for i, (g, r, dy) in enumerate(zip(ggot, gwant, dys)):
        tol = U[dtype] * r.abs() + K_FP32 * _scale(dy, tables) + TINY[dtype]
        _util.assert_close(f"grad{i}", g, r, tol, ctx)
    return got, ggot


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_llama4_vision_matches_transformers(dtype):
    """vision_apply_rotary_emb: q/k (images, patches + 1, heads, 88), freqs_ci (patches + 1, 1, 44)
    complex, shared by every image (Llama-4's vision buffer layout)."""
    hf = _modeling("llama4").vision_apply_rotary_emb
    b, s, h, hd = 4, 577, 16, 88
    gen = torch.Generator(device=DEV).manual_seed(41)
    xs = [torch.randn(b, s, h * hd, device=DEV, generator=gen).to(dtype).requires_grad_() for _ in range(2)]
    mag = torch.rand(s, 1, hd // 2, device=DEV, generator=gen) + 0.5
    f = torch.polar(mag, torch.randn(s, 1, hd // 2, device=DEV, generator=gen) * 3)
    got = ri.liger_llama4_vision_rotary_pos_emb(*[(x * 1).view(b, s, h, hd) for x in xs], f)
    dys = [torch.randn(g.shape, device=DEV, generator=gen).to(dtype) for g in got]
    ggot = torch.autograd.grad(got, xs, [dy.clone() for dy in dys])
    x64 = [x.detach().double().requires_grad_() for x in xs]
    want = hf(*[x.view(b, s, h, hd) for x in x64], f.to(torch.complex128))
    gwant = torch.autograd.grad(want, x64, [dy.double() for dy in dys])
    ctx = f"llama4 vision {_id(dtype)}"
    for i, (g, r, x) in enumerate(zip(got, want, xs)):
        _util.assert_close(f"out{i}", g, r.detach(), U[dtype] * r.detach().abs() + K_FP32 * _scale(x, (f,))
                           + TINY[dtype], ctx)
    for i, (g, r, dy) in enumerate(zip(ggot, gwant, dys)):
        gr = r.view(g.shape)
        _util.assert_close(f"grad{i}", g, gr, U[dtype] * gr.abs() + K_FP32 * _scale(dy, (f,)) + TINY[dtype], ctx)


CASES = [pytest.param(k, sh, dt, id=f"{k}-{_id(dt)}-{_id(sh)}") for k in FUNCS for sh in SHAPES[k]
         for dt in DTYPES]


@pytest.mark.parametrize("kind,shape,dtype", CASES)
def test_matches_transformers_forward_and_backward(kind, shape, dtype):
    _run(kind, shape, dtype, seed=sum(shape) + len(kind))


# ------------------------------------------------------------------------------------------
# Remote dispatch: bitwise local


@pytest.fixture(scope="module")
def daemon():
    with _util.daemon_for_local_module("ligerd-rope-interleaved-") as d:
        yield d


@pytest.mark.parametrize("kind", ["glm4", "llama4", "deepseek_v4", "gemma4"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=_id)
def test_remote_equals_local_bitwise(daemon, kind, dtype):
    shape = SHAPES[kind][-1]
    ligerd.set_dispatch_mode("local")
    local = _run(kind, shape, dtype, seed=31)
    ligerd.set_dispatch_mode("remote")
    try:
        remote = _run(kind, shape, dtype, seed=31)
        info = ligerd.dispatch_info()
        dev = info["devices"].get(torch.cuda.current_device())
        assert dev is not None and dev["mode"] == "remote", f"ops did not run remotely: {info}"
    finally:
        ligerd.set_dispatch_mode("local")
    for part, (a_s, c_s) in zip(("out", "grad"), zip(remote, local)):
        for i, (a, c) in enumerate(zip(a_s, c_s)):
            assert torch.equal(a, c), f"{kind} {_id(dtype)}: {part}{i} differs between remote and local"


# ------------------------------------------------------------------------------------------
# Tiny models of the newly patched types, rope=True only, against transformers


TINY_MODELS = [("glm4", None), ("glm4v", None), ("deepseek_v2", None), ("deepseek_v3", True),
               ("deepseek_v3", False), ("llama4", None), ("gpt_oss", None), ("deepseek_v4", None),
               ("gemma4_text", None)]


@pytest.mark.parametrize("model_type,interleave", TINY_MODELS,
                         ids=[f"{t}{'' if i is None else '-interleave' if i else '-rotate_half'}"
                              for t, i in TINY_MODELS])
def test_tiny_model_with_ligerd_rope_matches_transformers(model_type, interleave):
    """fp32, real kernels: the loss to 1e-5 relative and every gradient to 1e-3 norm-wise (RoPE's
    fp32 rounding differs from transformers' by an ulp per element, nothing else is patched; a
    wrong rotation or pairing is an O(1) error)."""
    pytest.importorskip("transformers")
    import inspect
    import warnings
    from ligerd._errors import LigerdWarning
    from ligerd.testing import tiny_models as tm
    from ligerd.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    cfg = tm.tiny_config(model_type)
    if interleave is not None:
        cfg.rope_interleave = interleave
    fn = MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]
    params = inspect.signature(fn).parameters
    off = {k: False for k in ("cross_entropy", "fused_linear_cross_entropy", "rms_norm", "swiglu",
                              "geglu", "layer_norm") if k in params}

    def rope_only():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LigerdWarning)  # parts other than RoPE ligerd lacks
            fn(rope=True, **off)

    tm.assert_patch_matches(model_type, rope_only, cfg=cfg, grad_tol=1e-3, device=DEV)
