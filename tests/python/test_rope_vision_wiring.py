"""The vision towers' RoPE, transformers' ``apply_rotary_pos_emb_vision``, on ligerd's RoPE op, on
the CPU (issue 18; ligerd.ops.rope_vision says how):

- ``liger_rotary_pos_emb_vision`` equals each modeling module's own ``apply_rotary_pos_emb_vision``
  (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE, Qwen3.5, Qwen3.5-MoE, GLM-4V, GLM-4V-MoE,
  Muse-Glimmer), called at the same dtype (float32, bfloat16, float16, float64), forward and
  backward, with the same output dtype, shape and layout (strides); q/k as the vision attentions
  pass them (unbind views of a fused qkv, separate tensors, Muse-Glimmer's (1, seq, heads, d)),
  odd sequences, 1 and 3 heads, head dims 16, 72, 80; no copy of q/k on the way to the op;
  torch.compile(fullgraph) of a vision attention's prologue keeps the op in the graph;
- bad input is an OpInputError naming the op;
- ``apply_liger_kernel_to_<type>(rope=True)`` installs it in each of those modules (nothing else of
  the vision tower; no warning), rope=False leaves it, revert restores it;
- a tiny vision tower of each type (one layer, two images) computes transformers' features and
  parameter gradients with it (fp32; bf16 for two types).

The executor is the float64 reference launcher (ligerd.testing.ref_executor): each rotated element
is computed in float64 and rounded once to q's dtype. Tolerances: ligerd.testing.rope_vision_cases
(per element, from the fp32 roundings of both sides). The GPU kernels: tests/gpu/test_rope_vision.py.
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
from ligerd.testing import tiny_vision as tv  # noqa: E402
from ligerd.testing.compile_check import assert_compiled_grads_match  # noqa: E402
from ligerd.testing.rope_vision_cases import Case, check, run, strides  # noqa: E402
from ligerd.transformers.rope import liger_rotary_pos_emb_vision  # noqa: E402

TYPES = list(tv.TOWERS)  # every model type whose modeling module has apply_rotary_pos_emb_vision
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
DT_ID = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


def _hf(model_type):
    return tv.modeling(model_type).apply_rotary_pos_emb_vision


def test_every_module_with_the_function_is_covered():
    """The types tested here are exactly the patched ones whose module defines the function."""
    from ligerd.transformers.model_specs import SPECS
    patched = {s.name for s in SPECS if ("apply_rotary_pos_emb_vision", "liger_rotary_pos_emb_vision")
               in s.rope_fns}
    assert patched == set(TYPES)
    for t in TYPES:
        assert callable(_hf(t)), t


# ---------------------------------------------------------------------------------------------
# The function against each module's own, at each dtype

CASES = [Case(24, 2, 2, 16), Case(7, 3, 3, 72), Case(9, 1, 1, 80), Case(5, 3, 1, 80, "dense"),
         Case(11, 2, 3, 16, "dense", cos_dtype="x"), Case(7, 2, 2, 72, "batched", cos_dtype="x"),
         Case(6, 1, 2, 16, "batched", batch=2, cos_batched=True), Case(1, 1, 1, 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_ID.get)
@pytest.mark.parametrize("case", CASES, ids=Case.id)
@pytest.mark.parametrize("model_type", TYPES)
def test_matches_transformers_forward_and_backward(launcher, model_type, case, dtype):
    seed = case.seq * 7 + case.d + len(model_type)
    launcher.calls.clear()
    results, got, want = run(liger_rotary_pos_emb_vision, _hf(model_type), case, dtype, seed)
    ops = [c[0] for c in launcher.calls]
    assert ops == ["rope_fwd", "rope_bwd"], ops
    check(results, f"{model_type} {case.id()} {DT_ID[dtype]}")
    for g, w in zip(got, want):  # transformers' layout, not only its values
        assert strides(g) == strides(w), (g.stride(), w.stride())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=DT_ID.get)
def test_qkv_views_reach_the_op_without_a_copy(launcher, dtype):
    """The unbind views (seq, heads, d) go to the op as (seq, heads, 1, d) views of the same memory:
    the op's Q is q's first element with q's strides."""
    s, h, d = 13, 3, 80
    w = torch.randn(s, 3 * h * d).to(dtype)
    q, k, _ = w.reshape(s, 3, h, d).permute(1, 0, 2, 3).unbind(0)
    launcher.calls.clear()
    liger_rotary_pos_emb_vision(q, k, torch.randn(s, d), torch.randn(s, d))
    (op, tensors, _), = launcher.calls
    assert op == "rope_fwd"
    assert tensors[0] == ((s, h, 1, d), q.data_ptr(), (3 * h * d, d, d, 1))
    assert tensors[1][:2] == ((s, h, 1, d), k.data_ptr())


def test_mixed_dtypes_and_empty(launcher):
    """q and k of different dtypes (each cast back to its own, as transformers); no positions."""
    hf = _hf("qwen2_vl")
    q, k = torch.randn(5, 2, 16).bfloat16(), torch.randn(5, 1, 16)
    cos, sin = torch.randn(5, 16), torch.randn(5, 16)
    got, want = liger_rotary_pos_emb_vision(q, k, cos, sin), hf(q, k, cos, sin)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    torch.testing.assert_close(got[0], want[0], rtol=2 ** -7, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    e = torch.randn(0, 2, 16)
    got = liger_rotary_pos_emb_vision(e, e, torch.randn(0, 16), torch.randn(0, 16))
    assert got[0].shape == (0, 2, 16) and got[1].shape == (0, 2, 16)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(launcher, backend):
    """A vision attention's prologue, qkv projection -> unbind -> vision RoPE -> projection,
    compiled whole: the op stays in the graph (one forward, one backward launch), the gradients
    are eager's."""

    class VisionQK(torch.nn.Module):
        def __init__(self, heads=2, d=8, hidden=16):
            super().__init__()
            self.heads, self.d = heads, d
            self.qkv = torch.nn.Linear(hidden, 3 * heads * d)
            self.proj = torch.nn.Linear(2 * heads * d, hidden)
            self.register_buffer("cos", torch.randn(14, d))
            self.register_buffer("sin", torch.randn(14, d))

        def forward(self, x):
            b, s, _ = x.shape
            h = x.reshape(b * s, -1)
            q, k, _ = self.qkv(h).reshape(b * s, 3, self.heads, self.d).permute(1, 0, 2, 3).unbind(0)
            q, k = liger_rotary_pos_emb_vision(q, k, self.cos, self.sin)
            return self.proj(torch.cat([q, k], -1).reshape(b * s, -1)).reshape(b, s, -1)

    assert_compiled_grads_match(VisionQK, lambda m: m.qkv.weight, launcher, backend,
                                ["rope_fwd", "rope_bwd"])


BAD = {
    "q_2d": lambda q, k, c, s: (q[0], k, c, s),
    "q_5d": lambda q, k, c, s: (q[None, None], k[None, None], c, s),
    "k_rank_differs": lambda q, k, c, s: (q, k[None], c, s),
    "k_seq_differs": lambda q, k, c, s: (q, k[:4], c, s),
    "odd_head_dim": lambda q, k, c, s: (q[..., :15], k[..., :15], c[:, :15], s[:, :15]),
    "cos_seq_differs": lambda q, k, c, s: (q, k, c[:4], s[:4]),
    "cos_width_differs": lambda q, k, c, s: (q, k, c[:, :8], s[:, :8]),
    "cos_3d_for_3d_q": lambda q, k, c, s: (q, k, c[None], s[None]),
    "cos_sin_differ": lambda q, k, c, s: (q, k, c, s[:1]),
    "int_dtype": lambda q, k, c, s: (q.long(), k.long(), c, s),
    "not_a_tensor": lambda q, k, c, s: (q, k, c.tolist(), s),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_name_the_op(launcher, case):
    q, k, c, s = torch.randn(5, 2, 16), torch.randn(5, 2, 16), torch.randn(5, 16), torch.randn(5, 16)
    args = BAD[case](q, k, c, s)
    with pytest.raises(ligerd.OpInputError) as ei:
        liger_rotary_pos_emb_vision(*args)
    msg = str(ei.value)
    assert msg.startswith("ligerd op rope: vision RoPE (apply_rotary_pos_emb_vision):"), msg
    assert not launcher.calls


# ---------------------------------------------------------------------------------------------
# Model patching

OFF = dict(cross_entropy=False, fused_linear_cross_entropy=False, rms_norm=False, swiglu=False,
           geglu=False, layer_norm=False)


def _apply(model_type, **kw):
    from ligerd.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    fn = MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]
    params = inspect.signature(fn).parameters
    fn(**{k: v for k, v in dict(OFF, **kw).items() if k in params})


def _functions(module):
    return {n: v for n, v in vars(module).items() if callable(v)}


@pytest.mark.parametrize("model_type", TYPES)
def test_rope_true_installs_it_and_nothing_else_of_the_tower(clean_patches, model_type):
    modeling = tv.modeling(model_type)
    stock = _functions(modeling)
    _apply(model_type, rope=False)
    assert modeling.apply_rotary_pos_emb_vision is stock["apply_rotary_pos_emb_vision"]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _apply(model_type, rope=True)
    rope_msgs = [str(x.message) for x in w
                 if issubclass(x.category, LigerdWarning) and "rope=True" in str(x.message)]
    assert not rope_msgs, rope_msgs
    assert modeling.apply_rotary_pos_emb_vision is liger_rotary_pos_emb_vision
    changed = {n for n, v in _functions(modeling).items() if stock.get(n) is not v}
    # the vision RoPE and the text model's RoPE (rotate_half, or GLM-4V's interleaved), no class
    assert changed == {"apply_rotary_pos_emb_vision", "apply_rotary_pos_emb"}, changed
    lt.revert_liger_kernel_patches()
    assert _functions(modeling) == stock


def _tower_case(model_type, heads=None, head_dim=None, dtype=torch.float32):
    cfg = tv.vision_config(model_type, heads, head_dim)
    ref = tv.build(model_type, copy.deepcopy(cfg), seed=5, dtype=dtype)
    model = tv.build(model_type, copy.deepcopy(cfg), seed=6, dtype=dtype)
    model.load_state_dict(ref.state_dict())
    pixels, grid = tv.inputs(cfg, ((1, 4, 6), (1, 2, 2)), seed=7, dtype=dtype)
    return ref, model, pixels, grid


TOWER_CASES = ([(t, None, None, torch.float32) for t in TYPES]
               + [(t, 3, 72, torch.float32) for t in ("qwen2_5_vl", "glm4v", "muse_glimmer")]
               + [(t, 1, 80, torch.float32) for t in ("qwen3_vl", "qwen3_5")]
               + [(t, None, None, torch.bfloat16) for t in ("qwen2_vl", "muse_glimmer")])


@pytest.mark.parametrize("model_type,heads,head_dim,dtype", TOWER_CASES,
                         ids=[f"{t}-{h or 2}x{d or 16}-{DT_ID[dt]}" for t, h, d, dt in TOWER_CASES])
def test_tiny_vision_tower_matches_transformers(launcher, clean_patches, model_type, heads, head_dim,
                                               dtype):
    """Features and every parameter gradient of the tower with rope=True, against the stock tower
    (same weights, drawn so that the attention is peaked: a wrong rotation changes the features by
    O(1)). fp32: 1e-5 of the largest element (only RoPE's fp32 roundings differ, by an ulp); bf16:
    the RoPE results are transformers' bit for bit but at rare rounding ties, whose one-ulp
    difference may propagate: one bf16 rounding (2^-8) of the largest element."""
    ref, model, pixels, grid = _tower_case(model_type, heads, head_dim, dtype)
    _apply(model_type, rope=True)
    launcher.calls.clear()
    out = tv.features(model(pixels, grid))
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(8)).to(dtype)
    (out.float() * weights.float()).sum().backward()
    ops = [c[0] for c in launcher.calls]
    assert "rope_fwd" in ops and "rope_bwd" in ops, ops
    assert set(ops) <= {"rope_fwd", "rope_bwd"}, "nothing but the RoPE is ligerd's"
    lt.revert_liger_kernel_patches()
    want = tv.features(ref(pixels, grid))
    (want.float() * weights.float()).sum().backward()
    if dtype == torch.float32:
        rtol, atol = 1e-5, lambda t: 1e-6 + 1e-5 * float(t.detach().abs().max())
    else:
        rtol, atol = 2 ** -8, lambda t: 2 ** -8 * float(t.detach().abs().max())
    torch.testing.assert_close(out, want, rtol=rtol, atol=atol(want))
    got = dict(model.named_parameters())
    n = 0
    for name, p in ref.named_parameters():
        if p.grad is None:
            assert got[name].grad is None, name
            continue
        n += 1
        torch.testing.assert_close(got[name].grad, p.grad, rtol=rtol, atol=atol(p.grad),
                                   msg=lambda m: f"{name}: {m}")
    assert n > 0
