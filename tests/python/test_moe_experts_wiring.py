"""The MoE expert layouts whose activation ligerd computes between transformers' own expert GEMMs,
on the CPU (kernels through the float64 reference executor, ligerd.testing.ref_executor):

- Llama-4's ``Llama4TextExperts`` (transposed ``gate_up_proj [E, H, 2I]``, ``bmm``s): ligerd's
  SwiGLU for ``up * silu(gate)`` (spec kind "llama4_experts");
- GPT-OSS's ``GptOssExperts`` (interleaved gate/up, biases, alpha and limit) and DeepSeek-V4's
  ``DeepseekV4Experts`` (clamped halves): ligerd's clamped GLU op through their ``_apply_gate``
  hook (kinds "gpt_oss_experts", "clamped_experts"), for every ``_experts_implementation``.

Each against the same module's stock forward and backward, in fp64, fp32 and bf16, odd sizes;
parameters and state-dict keys unchanged. The op's own numerics and edge values:
tests/python/test_clamped_glu_wiring.py; on a GPU: tests/gpu/test_moe_experts.py."""

import copy

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from ligerd.testing import ref_executor  # noqa: E402
from ligerd.transformers import spec_patching  # noqa: E402


@pytest.fixture
def launcher(monkeypatch):
    return ref_executor.install(monkeypatch)


def _err(a, ref):
    return (a.double() - ref.double()).norm().item()


def _compare(mod, stock, args_fn, dtype, launcher, ops):
    """Forward and backward of the patched ``mod`` against ``stock`` (same parameters) in
    ``dtype``, and against stock in float64. fp64/fp32: equal to stock within assert_close's
    defaults for the dtype (the kernels' only difference is rounding once instead of per torch
    op). bf16/fp16: ligerd's error against float64 at most 1.25x stock's own in that dtype plus
    1e-3 of the result's norm (stock rounds each intermediate, ligerd's activation rounds once,
    so it is usually closer; the GEMMs are the same)."""
    mod, stock = mod.to(dtype), stock.to(dtype)
    stock64 = copy.deepcopy(stock).double()
    args = args_fn(dtype)
    args64 = [a.double() if a.is_floating_point() else a for a in args]
    x = args[0].clone().requires_grad_()
    xs = args[0].clone().requires_grad_()
    x64 = args64[0].clone().requires_grad_()
    launcher.calls.clear()
    y = mod(x, *args[1:])
    ys = stock(xs, *args[1:])
    y64 = stock64(x64, *args64[1:])
    dy = torch.randn_like(y64)
    y.backward(dy.to(dtype))
    ys.backward(dy.to(dtype))
    y64.backward(dy)
    called = sorted({c[0] for c in launcher.calls})
    assert called == sorted(ops), called
    outs = [(y, ys, y64), (x.grad, xs.grad, x64.grad)]
    for name, p in mod.named_parameters():
        outs.append((p.grad, dict(stock.named_parameters())[name].grad,
                     dict(stock64.named_parameters())[name].grad))
    for a, s, r in outs:
        assert a.dtype == s.dtype and a.shape == s.shape
        if dtype in (torch.bfloat16, torch.float16):
            assert _err(a, r) <= 1.25 * _err(s, r) + 1e-3 * r.norm().item(), (_err(a, r), _err(s, r))
        else:
            torch.testing.assert_close(a, s)
    return y


# ---- Llama-4 ------------------------------------------------------------------------------------


def _llama4_experts(E, H, I, seed):
    from transformers.models.llama4.configuration_llama4 import Llama4TextConfig
    from transformers.models.llama4.modeling_llama4 import Llama4TextExperts
    cfg = Llama4TextConfig(hidden_size=H, intermediate_size=I, num_local_experts=E,
                           hidden_act="silu")
    torch.manual_seed(seed)
    m = Llama4TextExperts(cfg)
    with torch.no_grad():
        m.gate_up_proj.normal_(0, H ** -0.5)
        m.down_proj.normal_(0, I ** -0.5)
    return m


DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("E,T,H,I", [(3, 5, 16, 24), (2, 7, 33, 19), (1, 1, 8, 1)])
def test_llama4_experts(launcher, dtype, E, T, H, I):
    stock = _llama4_experts(E, H, I, seed=E * 100 + T)
    mod = copy.deepcopy(stock)
    keys = list(mod.state_dict())
    assert spec_patching.patch_mlp_instance(mod, "llama4_experts")
    assert list(mod.state_dict()) == keys  # parameters and state dict unchanged

    def args(dt):
        g = torch.Generator().manual_seed(T)
        return [torch.randn(E * T, H, generator=g, dtype=torch.float64).to(dt)]
    _compare(mod, stock, args, dtype, launcher, ["swiglu_fwd", "swiglu_bwd"])


def test_llama4_experts_float64_is_a_clear_error(launcher):
    """ligerd's kernels take fp32/bf16/fp16: a float64 expert module fails naming the op."""
    from ligerd._errors import OpInputError
    mod = _llama4_experts(2, 8, 4, seed=0).double()
    assert spec_patching.patch_mlp_instance(mod, "llama4_experts")
    with pytest.raises(OpInputError, match=r"ligerd op swiglu: a has dtype torch.float64"):
        mod(torch.randn(2 * 3, 8, dtype=torch.float64))


def test_llama4_experts_class_patch(launcher):
    """apply_liger_kernel_to_llama4 (class patching) gives Llama4TextExperts ligerd's forward; a
    non-SiLU activation keeps the stock forward with a warning."""
    import ligerd.transformers as lt
    from transformers.models.llama4 import modeling_llama4 as ml
    from transformers.models.llama4.configuration_llama4 import Llama4TextConfig
    stock = _llama4_experts(2, 16, 8, seed=1)
    try:
        lt.apply_liger_kernel_to_llama4(rope=False, rms_norm=False, fused_linear_cross_entropy=False,
                                        swiglu=True)
        assert ml.Llama4TextExperts.__module__.startswith("ligerd.")
        cfg = Llama4TextConfig(hidden_size=16, intermediate_size=8, num_local_experts=2)
        m = ml.Llama4TextExperts(cfg)
        m.load_state_dict(stock.state_dict())
        x = torch.randn(2 * 3, 16)
        launcher.calls.clear()
        torch.testing.assert_close(m(x), stock(x))
        assert [c[0] for c in launcher.calls] == ["swiglu_fwd"]
        cfg_gelu = Llama4TextConfig(hidden_size=16, intermediate_size=8, num_local_experts=2,
                                    hidden_act="gelu")
        with pytest.warns(Warning, match="keeps transformers' forward"):
            g = ml.Llama4TextExperts(cfg_gelu)
        assert g._ligerd_ok is False
    finally:
        lt.revert_liger_kernel_patches()
