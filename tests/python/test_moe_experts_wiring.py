"""The MoE expert layouts whose activation ligerd computes between transformers' own expert GEMMs,
on the CPU (kernels through the float64 reference executor, ligerd.testing.ref_executor):

- Llama-4's ``Llama4TextExperts`` (transposed ``gate_up_proj [E, H, 2I]``, ``bmm``s): ligerd's
  SwiGLU for ``up * silu(gate)`` (spec kind "llama4_experts");
- GPT-OSS's ``GptOssExperts`` (interleaved gate/up, biases, alpha and limit) and DeepSeek-V4's
  ``DeepseekV4Experts`` (clamped halves): ligerd's clamped GLU op through their ``_apply_gate``
  hook (kinds "gpt_oss_experts", "clamped_experts"), for every ``_experts_implementation``;
- Gemma-4's ``Gemma4TextExperts`` (Mixtral's layout, ``gelu_pytorch_tanh(gate) * up``): ligerd's
  GeGLU as its ``_apply_gate`` and ligerd's experts forward (its own eager loop calls ``act_fn``,
  not the hook), kind "geglu_experts", for every ``_experts_implementation``.

Each against the same module's stock forward and backward, in fp32, bf16 and fp16 (and float64
stock as the truth), odd sizes; parameters and state-dict keys unchanged; tiny models patched by
class and by instance against transformers' loss and gradients. The clamped op's own numerics and
edge values: tests/python/test_clamped_glu_wiring.py; on a GPU: tests/gpu/test_clamped_glu.py."""

import copy
import inspect
from typing import Callable, NamedTuple

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
    if getattr(stock64, "config", None) is not None:  # grouped_mm takes no float64: the eager loop
        stock64.config = copy.deepcopy(stock64.config)
        stock64.config._experts_implementation = "eager"
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


# ---- GPT-OSS, DeepSeek-V4 and Gemma-4: experts whose _apply_gate is ligerd's ---------------------

IMPLS = ["eager", "batched_mm", "grouped_mm"]


def _gpt_oss_experts(E, H, I, seed, limit=7.0, impl="eager"):
    from transformers.models.gpt_oss.configuration_gpt_oss import GptOssConfig
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts
    cfg = GptOssConfig(hidden_size=H, intermediate_size=I, num_local_experts=E,
                       num_experts_per_tok=2, swiglu_limit=limit)
    cfg._experts_implementation = impl
    torch.manual_seed(seed)
    m = GptOssExperts(cfg)
    with torch.no_grad():
        # gate_up spread well past +-limit, so that many positions are clamped.
        m.gate_up_proj.normal_(0, 6 * H ** -0.5)
        m.gate_up_proj_bias.normal_(0, 1.0)
        m.down_proj.normal_(0, I ** -0.5)
        m.down_proj_bias.normal_(0, 0.1)
    return m


def _dsv4_experts(E, H, I, seed, limit=2.0, impl="eager"):
    from transformers.models.deepseek_v4.configuration_deepseek_v4 import DeepseekV4Config
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4Experts
    cfg = DeepseekV4Config(hidden_size=H, intermediate_size=I, num_local_experts=E,
                           num_experts_per_tok=2, swiglu_limit=limit, hidden_act="silu")
    cfg._experts_implementation = impl
    torch.manual_seed(seed)
    m = DeepseekV4Experts(cfg)
    with torch.no_grad():
        m.gate_up_proj.normal_(0, 4 * H ** -0.5)
        m.down_proj.normal_(0, I ** -0.5)
    return m


def _gemma4_experts(E, H, I, seed, impl="eager", act="gelu_pytorch_tanh"):
    from transformers.models.gemma4.configuration_gemma4 import Gemma4TextConfig
    from transformers.models.gemma4.modeling_gemma4 import Gemma4TextExperts
    cfg = Gemma4TextConfig(hidden_size=H, moe_intermediate_size=I, num_experts=E,
                           top_k_experts=2, enable_moe_block=True, hidden_activation=act)
    cfg._experts_implementation = impl
    torch.manual_seed(seed)
    m = Gemma4TextExperts(cfg)
    with torch.no_grad():
        # gate spread over GELU's curved part and its tails (|g| up to ~4).
        m.gate_up_proj.normal_(0, 1.5 * H ** -0.5)
        m.down_proj.normal_(0, I ** -0.5)
    return m


def _routing(T, E, K, seed):
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
    w = torch.rand(T, K, generator=g, dtype=torch.float64).softmax(-1)
    return idx, w


class Case(NamedTuple):
    make: Callable       # (E, H, I, seed, impl=...) -> a stock experts module
    kind: str            # its spec kind (spec_patching.MLP)
    op: str              # the ligerd op computing its activation
    first_input: str     # that op's first tensor argument's name (its dtype error names it)
    flag: str            # the apply_liger_kernel_to_<type> flag patching it
    model_type: str      # the tiny model type holding it (ligerd.testing.tiny_models)
    binds_forward: bool  # instance patching binds a forward too (else only _apply_gate)


MODELS = {
    "gpt_oss": Case(_gpt_oss_experts, "gpt_oss_experts", "clamped_glu", "x", "swiglu", "gpt_oss", False),
    "deepseek_v4": Case(_dsv4_experts, "clamped_experts", "clamped_glu", "x", "swiglu",
                        "deepseek_v4", False),
    "gemma4": Case(_gemma4_experts, "geglu_experts", "geglu", "a", "geglu", "gemma4_text", True),
}
CLAMPED = ["gpt_oss", "deepseek_v4"]


def _modeling_or_skip(name):
    pytest.importorskip(f"transformers.models.{name}.modeling_{name}",
                        reason=f"this transformers has no {name}")


# torch's CPU grouped_mm wants 16-byte row strides, so the odd sizes go through the other two.
IMPL_SHAPES = [(impl, shape) for impl in IMPLS for shape in [(4, 9, 16, 24), (3, 5, 33, 19)]
               if not (impl == "grouped_mm" and shape[2] % 8)]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("impl,shape", IMPL_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_experts_match_stock(launcher, name, impl, shape, dtype):
    """Patched experts (``_apply_gate`` bound, and for Gemma-4 the forward) against the same
    module's stock forward and backward, for each of transformers' experts implementations;
    I = 19 is odd (the element kernels on a GPU), H = 33 too."""
    E, T, H, I = shape
    _modeling_or_skip(name)
    case = MODELS[name]
    stock = case.make(E, H, I, seed=E * 31 + T, impl=impl)
    mod = copy.deepcopy(stock)
    keys = list(mod.state_dict())
    assert spec_patching.patch_mlp_instance(mod, case.kind)
    assert ("forward" in mod.__dict__) == case.binds_forward and "_apply_gate" in mod.__dict__
    assert list(mod.state_dict()) == keys

    def args(dt):
        g = torch.Generator().manual_seed(T)
        x = torch.randn(T, H, generator=g, dtype=torch.float64).to(dt)
        idx, w = _routing(T, E, 2, T)
        return [x, idx, w.to(dt)]
    _compare(mod, stock, args, dtype, launcher, [case.op + "_fwd", case.op + "_bwd"])


@pytest.mark.parametrize("name", CLAMPED)
def test_clamped_experts_scalars_reach_the_op(launcher, name):
    """The op gets the module's own alpha / limit / layout: GPT-OSS (alpha 1.702 by default,
    up_offset 1, pairs), DeepSeek-V4 (alpha 1, up_offset 0, halves)."""
    _modeling_or_skip(name)
    mod = MODELS[name].make(3, 8, 4, seed=0)
    mod.limit = 3.25
    assert spec_patching.patch_mlp_instance(mod, MODELS[name].kind)
    idx, w = _routing(5, 3, 2, 0)
    mod(torch.randn(5, 8), idx, w.float())
    scal = {tuple(c[2]) for c in launcher.calls}
    want = (1.702, 3.25, 1.0, 1.0) if name == "gpt_oss" else (1.0, 3.25, 0.0, 0.0)
    assert scal == {want}, scal


def test_clamped_experts_kept_with_a_warning_when_not_computable(launcher):
    """A DeepSeek-V4 experts module with a non-SiLU activation, or a GPT-OSS one without a
    numeric limit, keeps transformers' _apply_gate with a one-time warning."""
    _modeling_or_skip("deepseek_v4")
    _modeling_or_skip("gpt_oss")
    from transformers.activations import ACT2FN
    d = _dsv4_experts(2, 8, 4, seed=0)
    d.act_fn = ACT2FN["gelu"]
    with pytest.warns(Warning, match="keeps transformers' forward"):
        assert not spec_patching.patch_mlp_instance(d, "clamped_experts")
    g = _gpt_oss_experts(2, 8, 4, seed=0)
    g.limit = None
    with pytest.warns(Warning, match="no numeric alpha and limit"):
        assert not spec_patching.patch_mlp_instance(g, "gpt_oss_experts")
    assert "_apply_gate" not in d.__dict__ and "_apply_gate" not in g.__dict__


def test_gemma4_experts_kept_with_a_warning_when_not_computable(launcher):
    """Gemma-4 experts with the erf GELU (hidden_activation="gelu"), which ligerd's tanh GeGLU does
    not compute, keep transformers' forward with a one-time warning, by instance and by class."""
    _modeling_or_skip("gemma4")
    import ligerd.transformers as lt
    from transformers.models.gemma4 import modeling_gemma4 as mg
    m = _gemma4_experts(2, 8, 4, seed=0, act="gelu")
    with pytest.warns(Warning, match=r"Gemma4TextExperts keeps transformers' forward: its activation "
                                     r"is GELUActivation, not the tanh-approximated GELU"):
        assert not spec_patching.patch_mlp_instance(m, "geglu_experts")
    assert "_apply_gate" not in m.__dict__ and "forward" not in m.__dict__
    try:
        lt.apply_liger_kernel_to_gemma4_text(rope=False, rms_norm=False,
                                             fused_linear_cross_entropy=False, geglu=True)
        with pytest.warns(Warning, match="LigerGemma4TextExperts keeps transformers' forward"):
            c = mg.Gemma4TextExperts(m.config)
        assert c._ligerd_ok is False and not spec_patching.is_liger_module(c)
        c.load_state_dict(m.state_dict())
        idx, w = _routing(5, 2, 2, 0)
        x = torch.randn(5, 8)
        launcher.calls.clear()
        torch.testing.assert_close(c(x, idx, w.float()), m(x, idx, w.float()))
        assert launcher.calls == []
    finally:
        lt.revert_liger_kernel_patches()


# Model types per experts case: Gemma-4's vision-language type patches its text model's experts.
TINY = [(name, MODELS[name].model_type) for name in MODELS] + [("gemma4", "gemma4")]


@pytest.mark.parametrize("name,model_type", TINY)
@pytest.mark.parametrize("how", ["class", "instance"])
def test_tiny_model_experts_patched(launcher, name, model_type, how):
    """apply_liger_kernel_to_<type>(<flag>=True) (swiglu for GPT-OSS / DeepSeek-V4, where Liger's
    default is False; geglu for Gemma-4, whose MoE tiny configs have the MoE block on): the tiny
    model's experts compute through ligerd's op, and its loss and gradients are transformers'
    (everything else off; for Gemma-4 geglu=True also patches the dense MLP)."""
    _modeling_or_skip(name)
    import ligerd.transformers as lt
    from ligerd.testing import tiny_models as tm
    case = MODELS[name]
    flags = dict(rope=False, rms_norm=False, fused_linear_cross_entropy=False)
    flags[case.flag] = True
    apply = getattr(lt, f"apply_liger_kernel_to_{model_type}")
    if "layer_norm" in inspect.signature(apply).parameters:
        flags["layer_norm"] = False
    stock = tm.build(model_type)
    try:
        if how == "class":
            apply(**flags)
            model = tm.build(model_type)
            model.load_state_dict(stock.state_dict())
        else:
            model = copy.deepcopy(stock)
            apply(model=model, **flags)
        experts = [m for m in model.modules() if type(m).__name__.endswith("Experts")]
        assert experts and all(spec_patching.is_liger_module(m) for m in experts)
        vocab = stock.config.get_text_config().vocab_size
        ids = torch.randint(0, vocab, (2, 7), generator=torch.Generator().manual_seed(1))
        launcher.calls.clear()
        out, ref = model(input_ids=ids, labels=ids), stock(input_ids=ids, labels=ids)
        torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
        out.loss.backward()
        ref.loss.backward()
        for (n, p), (_, q) in zip(model.named_parameters(), stock.named_parameters()):
            if q.grad is None:
                assert p.grad is None, n
                continue
            # Norm-wise: the op rounds once where torch rounds per step, and that fp32 difference
            # spreads (Gemma-4's per-layer inputs and many norms: <= 4e-6 measured, elementwise
            # past rtol 1e-4 on small entries); a wrong op is ~1.
            diff, ref_norm = (p.grad - q.grad).norm().item(), q.grad.norm().item()
            assert diff <= 2e-5 * ref_norm + 1e-9, (n, diff, ref_norm)
        assert {case.op + "_fwd", case.op + "_bwd"} <= {c[0] for c in launcher.calls}
        if case.op == "geglu":  # the dense MLP's too: the experts' are moe_intermediate_size wide
            width = model.config.get_text_config().moe_intermediate_size
            assert any(c[0] == "geglu_fwd" and c[1][0][0][-1] == width for c in launcher.calls)
    finally:
        lt.revert_liger_kernel_patches()
    if how == "instance":  # revert unbinds the hooks of built modules (a class-patched
        assert not any(spec_patching.is_liger_module(m) for m in model.modules()  # one stays)
                       if type(m).__name__.endswith("Experts"))


@pytest.mark.parametrize("name", list(MODELS))
def test_gated_experts_float64_is_a_clear_error(launcher, name):
    """ligerd's kernels take fp32/bf16/fp16: a float64 experts module fails naming the op."""
    from ligerd._errors import OpInputError
    _modeling_or_skip(name)
    case = MODELS[name]
    mod = case.make(3, 8, 4, seed=0).double()
    assert spec_patching.patch_mlp_instance(mod, case.kind)
    idx, w = _routing(5, 3, 2, 0)
    with pytest.raises(OpInputError, match=rf"ligerd op {case.op}: {case.first_input} has dtype "
                                           r"torch.float64"):
        mod(torch.randn(5, 8, dtype=torch.float64), idx, w)


def test_gemma4_experts_bad_gate_up_is_a_clear_error(launcher):
    """A gate/up projection that does not split into two equal halves reaches ligerd's GeGLU as
    halves of different widths: the error names the op and both shapes."""
    from ligerd._errors import OpInputError
    _modeling_or_skip("gemma4")
    mod = _gemma4_experts(2, 8, 4, seed=0)
    assert spec_patching.patch_mlp_instance(mod, "geglu_experts")
    with pytest.raises(OpInputError, match=r"ligerd op geglu: a and b must have the same shape, "
                                           r"got \(3, 4\) and \(3, 3\)"):
        mod._apply_gate(torch.randn(3, 7))
