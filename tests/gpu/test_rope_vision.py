"""The vision towers' RoPE on the GPU: ligerd's ``liger_rotary_pos_emb_vision`` (ligerd.ops.rope_vision:
the rotate_half kernel on (seq, heads, 1, d) views of q and k, out of place) against transformers'
own ``apply_rotary_pos_emb_vision`` of each modeling module that has it, called at the same dtype,
forward and backward:

- model-sized calls: Qwen2-VL / Qwen2.5-VL (16 heads of 80), Qwen3-VL / Qwen3.5 (16 of 72),
  GLM-4V (12 of 128), as unbind views of a fused qkv, and Muse-Glimmer (1, seq, 16 heads of 96)
  with bf16 cos/sin; odd ones (3 heads of 72, 1 head of 80, q and k of different head counts);
  fp32, bf16, fp16 (and fp64, which both compute in fp32);
- remote dispatch (the daemon, CUDA IPC) bitwise equals local, where LIGERD_BIN names a built
  daemon (tests/gpu/run.sh sets it); skipped otherwise;
- a tiny vision tower of each type with ``apply_liger_kernel_to_<type>(rope=True)`` against the
  stock tower (fp32 and bf16).

Tolerances (per element, ligerd.testing.rope_vision_cases): both sides compute in fp32;
transformers rounds two products and a sum, the kernel one fma, so they differ by at most
2^-21 * max|x| * max(|cos| + |sin|), plus one output rounding each for bf16 / fp16, and at most 1%
of the bf16 / fp16 elements differ at all (a wrong half, position or head is an O(1) error).

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest tests/gpu/test_rope_vision.py).
Skips without CUDA.
"""

from __future__ import annotations

import copy

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()
pytest.importorskip("transformers")

import ligerd  # noqa: E402
import ligerd.transformers as lt  # noqa: E402
from ligerd.testing import gpu as _util  # noqa: E402
from ligerd.testing import tiny_vision as tv  # noqa: E402
from ligerd.testing.gpu import DEV, param_id as _id  # noqa: E402
from ligerd.testing.rope_vision_cases import Case, check, run, strides  # noqa: E402
from ligerd.transformers.rope import liger_rotary_pos_emb_vision  # noqa: E402

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

# model type -> the cases of its vision attention (the released configs' heads and head dims)
MODEL_CASES = {
    "qwen2_vl": [Case(4099, 16, 16, 80)],
    "qwen2_5_vl": [Case(4099, 16, 16, 80)],
    "qwen3_vl": [Case(4099, 16, 16, 72)],
    "qwen3_vl_moe": [Case(1029, 16, 16, 72)],
    "qwen3_5": [Case(4099, 16, 16, 72)],
    "qwen3_5_moe": [Case(1029, 16, 16, 72)],
    "glm4v": [Case(2051, 12, 12, 128)],
    "glm4v_moe": [Case(1029, 12, 12, 128)],
    "muse_glimmer": [Case(2051, 16, 16, 96, "batched", cos_dtype="x")],
}
ODD = [Case(77, 3, 3, 72), Case(33, 1, 1, 80), Case(9, 3, 1, 80, "dense"), Case(1, 2, 2, 2),
       Case(13, 2, 3, 72, "batched", batch=2, cos_batched=True)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]

CASES = ([pytest.param(t, c, dt, id=f"{t}-{c.id()}-{_id(dt)}") for t, cs in MODEL_CASES.items()
          for c in cs for dt in DTYPES]
         + [pytest.param("qwen2_vl", c, dt, id=f"odd-{c.id()}-{_id(dt)}") for c in ODD for dt in DTYPES]
         + [pytest.param("glm4v", MODEL_CASES["glm4v"][0], torch.float64, id="glm4v-fp64")])


@pytest.mark.parametrize("model_type,case,dtype", CASES)
def test_matches_transformers_forward_and_backward(model_type, case, dtype):
    hf = tv.modeling(model_type).apply_rotary_pos_emb_vision
    results, got, want = run(liger_rotary_pos_emb_vision, hf, case, dtype, seed=case.seq + case.d,
                             device=DEV)
    check(results, f"{model_type} {case.id()} {_id(dtype)}")
    for g, w in zip(got, want):
        assert strides(g) == strides(w), (g.stride(), w.stride())


# ------------------------------------------------------------------------------------------
# Remote dispatch: bitwise local


@pytest.fixture(scope="module")
def daemon():
    with _util.daemon_for_local_module("ligerd-rope-vision-") as d:
        yield d


@pytest.mark.parametrize("case", [Case(77, 3, 3, 72), Case(33, 2, 2, 96, "batched", cos_dtype="x")],
                         ids=Case.id)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=_id)
def test_remote_equals_local_bitwise(daemon, case, dtype):
    hf = tv.modeling("qwen2_vl").apply_rotary_pos_emb_vision
    ligerd.set_dispatch_mode("local")
    local, _, _ = run(liger_rotary_pos_emb_vision, hf, case, dtype, seed=31, device=DEV)
    ligerd.set_dispatch_mode("remote")
    try:
        remote, _, _ = run(liger_rotary_pos_emb_vision, hf, case, dtype, seed=31, device=DEV)
        _util.assert_ran_in("remote")
    finally:
        ligerd.set_dispatch_mode("local")
    for (name, a, _, _), (_, b, _, _) in zip(remote, local):
        assert torch.equal(a, b), f"{case.id()} {_id(dtype)}: {name} differs between remote and local"


# ------------------------------------------------------------------------------------------
# Tiny vision towers, rope=True only, against the stock tower


@pytest.fixture
def no_tf32_convolutions():
    """cuDNN convolutions in float32, not TF32 (torch's default): GLM-4V's tower downsamples
    the attention output with a Conv2d, where TF32's 10-bit rounding of its inputs turns RoPE's
    one-ulp float32 differences into 2^-11 ones (features 1.9e-5 apart on an H100)."""
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        yield


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
@pytest.mark.parametrize("model_type", list(tv.TOWERS))
def test_tiny_vision_tower_matches_transformers(model_type, dtype, no_tf32_convolutions):
    """Features and parameter gradients, norm-wise: fp32 1e-5 / 1e-4 (RoPE's fp32 roundings differ
    by an ulp per element, nothing else is patched); bf16 2^-7 / 2^-6 (the kernel's bf16 results
    are transformers' but at rare rounding ties, whose one-ulp differences propagate). The
    weights make the attention peaked (ligerd.testing.tiny_vision): a wrong rotation changes the
    features by O(1)."""
    import inspect
    from ligerd.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    cfg = tv.vision_config(model_type, heads=3, head_dim=72)
    ref = tv.build(model_type, copy.deepcopy(cfg), seed=5, dtype=dtype, device=DEV)
    model = tv.build(model_type, copy.deepcopy(cfg), seed=6, dtype=dtype, device=DEV)
    model.load_state_dict(ref.state_dict())
    pixels, grid = tv.inputs(cfg, ((1, 8, 12), (1, 4, 6)), seed=7, dtype=dtype, device=DEV)
    fn = MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]
    params = inspect.signature(fn).parameters
    off = {k: False for k in ("cross_entropy", "fused_linear_cross_entropy", "rms_norm", "swiglu",
                              "geglu", "layer_norm") if k in params}
    lt.revert_liger_kernel_patches()
    try:
        fn(rope=True, **off)
        assert tv.modeling(model_type).apply_rotary_pos_emb_vision is liger_rotary_pos_emb_vision
        out = tv.features(model(pixels, grid))
        gen = torch.Generator(device=DEV).manual_seed(8)
        weights = torch.randn(out.shape, device=DEV, generator=gen)
        (out.float() * weights).sum().backward()
    finally:
        lt.revert_liger_kernel_patches()
    want = tv.features(ref(pixels, grid))
    (want.float() * weights).sum().backward()
    out_tol, grad_tol = (1e-5, 1e-4) if dtype == torch.float32 else (2.0 ** -7, 2.0 ** -6)
    err = _util.rel_err(out, want.double())
    assert err <= out_tol, f"{model_type} {_id(dtype)}: features relative error {err:.3g}"
    got = dict(model.named_parameters())
    for name, p in ref.named_parameters():
        if p.grad is None or not p.grad.any():
            continue
        err = _util.rel_err(got[name].grad, p.grad.double())
        assert err <= grad_tol, f"{model_type} {_id(dtype)}: {name}: gradient relative error {err:.3g}"
