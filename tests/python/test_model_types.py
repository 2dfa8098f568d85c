"""Every model type of Liger-Kernel 0.8.5 on the CPU (issue 18): for each one,
``apply_liger_kernel_to_<type>`` (class patching, then a tiny model built from transformers' own
config class) and ``apply_liger_kernel_to_<type>(model=...)`` (instance patching of a built
model) replace the modules and functions they should and only those, and a patched tiny model
computes what transformers computes (training loss through the fused forward, gradients, eval
logits); one representative per architecture group (dense, MoE, vision-language, hybrid) trains a
few AdamW steps, plain and with gradient accumulation, and matches transformers' losses.

Kernels run through ligerd's float64 reference launcher and the ops other files own through the
stand-ins of ligerd.testing.hf_standins (as in test_hf_patching.py). Tiny configs:
ligerd.testing.tiny_models. The twelve hand-written families are covered in depth by
test_hf_patching.py; here they are checked with the same predicates as the rest.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import pathlib
import re
import warnings

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

import torch.nn as nn  # noqa: E402

import ligerd.transformers as lt  # noqa: E402
from ligerd._errors import LigerdWarning  # noqa: E402
from ligerd.testing import hf_standins  # noqa: E402
from ligerd.testing import tiny_models as tm  # noqa: E402
from ligerd.transformers import monkey_patch as mp  # noqa: E402
from ligerd.transformers.model.fused_forward import is_fused_forward  # noqa: E402
from ligerd.transformers.model_specs import MODEL_TYPE_ALIASES, SPEC_BY_NAME  # noqa: E402

# The model types of Liger-Kernel 0.8.5's MODEL_TYPE_TO_APPLY_LIGER_FN (issue 18's list).
LIGER_085 = """deepseek_v2 deepseek_v3 deepseek_v4 gemma gemma2 gemma3_text gemma3 gemma4_text gemma4
glm4 glm4v glm4v_moe gpt_oss internvl llama llama4_text llama4 llava granite mllama
mllama_text_model ministral mistral mixtral muse_glimmer nemotron olmo2 pixtral olmo3 qwen2 qwen3
qwen3_moe qwen2_vl qwen2_vl_text qwen2_5_vl qwen2_5_vl_text qwen3_next qwen3_5 qwen3_5_text
qwen3_5_moe qwen3_5_moe_text qwen3_vl qwen3_vl_text qwen3_vl_moe qwen3_vl_moe_text smollm3 phi3
paligemma falcon_h1 smolvlm hunyuan_v1_dense hunyuan_v1_moe exaone4""".split()

ALL_TYPES = sorted(LIGER_085)
FLAG_NAMES = ("rope", "rms_norm", "swiglu", "geglu", "layer_norm", "fused_linear_cross_entropy")

# Modules a default call leaves as transformers' on purpose, by class name: why.
KEPT = {
    "Qwen2_5_VLMLP": "Qwen2.5-VL's vision MLP (biased, outside Liger's patch too)",
    "Qwen3VLTextMLP": "qwen3_vl's swiglu defaults to False (as Liger)",
    "Qwen3VLMoeTextMLP": "qwen3_vl_moe patches the experts only (as Liger)",
    "DeepseekV4MLP": "deepseek_v4's swiglu defaults to False (as Liger)",
    "Gemma4VisionMLP": "clippable linear layers",
    "Gemma3RMSNorm": None,  # patched by gemma3_text's hand-written family (checked below)
}
NORM_EXCLUDED = re.compile(r"(Gated|L2Norm|Weightless|Unweighted|LayerNorm1P)")


@pytest.fixture(autouse=True)
def cpu_ops(monkeypatch):
    lt.revert_liger_kernel_patches()
    hf_standins.install(monkeypatch)
    yield
    lt.revert_liger_kernel_patches()


def _fn(model_type):
    return mp.MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]


def _defaults(model_type) -> dict:
    return {k: p.default for k, p in inspect.signature(_fn(model_type)).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _is_ligerd(m) -> bool:
    """A module computing through ligerd: a ligerd class, or a forward bound from ligerd (a
    ligerd subclass that kept transformers' forward for an unsupported activation is not)."""
    if getattr(m, "_ligerd_ok", True) is False:
        return False
    if type(m).__module__.startswith("ligerd."):
        return True
    for hook in ("forward", "_apply_gate"):  # experts may get only their activation hook
        f = m.__dict__.get(hook)
        if f is not None and getattr(getattr(f, "__func__", f), "__module__", "").startswith("ligerd."):
            return True
    return False


def _act(m):
    for name in ("act_fn", "activation_fn", "act"):
        a = getattr(m, name, None)
        if isinstance(a, nn.Module):
            return type(a).__name__
    return None


def _want(m, flags: dict):
    """Whether a stock module of this class should be ligerd's after a call with ``flags``
    (None: no opinion), from what the module is, not from the spec table."""
    name = type(m).__name__
    if name in KEPT:
        return None if KEPT[name] is None else False
    if re.search(r"RMSNorm$", name) and not NORM_EXCLUDED.search(name):
        return bool(flags.get("rms_norm"))
    gated = (all(isinstance(getattr(m, p, None), nn.Module) for p in ("gate_proj", "up_proj", "down_proj"))
             or isinstance(getattr(m, "gate_up_proj", None), nn.Linear))
    if re.search(r"(MLP|Mlp)$", name) and gated and _act(m) in ("SiLU", "SiLUActivation"):
        return bool(flags.get("swiglu"))
    if re.search(r"(MLP|Mlp)$", name) and gated and _act(m) == "GELUTanh":
        return bool(flags.get("geglu"))
    if re.search(r"MLP$", name) and _act(m) == "ReLUSquaredActivation" \
            and all(isinstance(getattr(m, p, None), nn.Module) for p in ("up_proj", "down_proj")):
        return bool(flags.get("relu_squared"))
    if re.search(r"Experts$", name) and isinstance(getattr(m, "gate_up_proj", None), nn.Parameter) \
            and _act(m) in ("SiLU", "SiLUActivation"):
        return bool(flags.get("swiglu"))
    # Gemma-4's tanh-GELU experts (its tiny configs have the MoE block on): under geglu.
    if re.search(r"Experts$", name) and isinstance(getattr(m, "gate_up_proj", None), nn.Parameter) \
            and _act(m) == "GELUTanh":
        return bool(flags.get("geglu"))
    # GPT-OSS's clamped GLU experts: no act_fn, their swiglu_alpha / swiglu_limit as attributes.
    if re.search(r"Experts$", name) and isinstance(getattr(m, "gate_up_proj", None), nn.Parameter) \
            and isinstance(getattr(m, "alpha", None), float) and isinstance(getattr(m, "limit", None), float):
        return bool(flags.get("swiglu"))
    if type(m) is nn.LayerNorm:
        return None  # checked per type below (vision towers only)
    return False if name.endswith(("MLP", "Mlp", "Experts")) or "RMSNorm" in name else None


def _check_modules(model_type, built, stock, flags, ignore=()):
    """Every module of ``built`` is ligerd's exactly where ``_want`` says, comparing with the
    same-named module of an unpatched ``stock`` model (modules under ``ignore`` prefixes aside)."""
    stock_mods = dict(stock.named_modules())
    seen = {True: 0, False: 0}
    for name, m in built.named_modules():
        if name.startswith(ignore) and ignore:
            continue
        want = _want(stock_mods[name], flags)
        if want is None:
            continue
        assert _is_ligerd(m) == want, (model_type, name, type(stock_mods[name]).__name__, want)
        seen[want] += 1
    return seen


SUBMODELS = ("model.language_model", "model.vision_tower", "model.text_model", "model.vision_model")


def _check_delegated(model_type, model, stock):
    """With model=, a delegating type's text model is patched as its own model type's defaults
    say (cross_entropy and the fused loss off)."""
    cfg = model.config.text_config
    flags = dict(_defaults(cfg.model_type), fused_linear_cross_entropy=False)
    for prefix in ("model.language_model", "model.text_model"):
        sub = model.get_submodule(prefix) if _has(model, prefix) else None
        if sub is not None:
            assert _check_modules(model_type, sub, stock.get_submodule(prefix), flags)[True] > 0


def _has(model, path):
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


def _head_forward(model):
    f = model.__dict__.get("forward") or type(model).forward
    return getattr(f, "__func__", f)


def _is_fused_head(model) -> bool:
    f = _head_forward(model)
    return is_fused_forward(f) or getattr(f, "__module__", "").startswith("ligerd.transformers.model.")


def _expects_fused_head(model_type, model) -> bool:
    if model_type in ("llama4",):  # its logits come from its language model (as Liger)
        return False
    return hasattr(model, "lm_head") and bool(_defaults(model_type).get("fused_linear_cross_entropy"))


def _modeling(model_type):
    name = _fn(model_type).__name__[len("apply_liger_kernel_to_"):]
    spec = SPEC_BY_NAME.get(name)
    module = spec.module if spec else mp.FAMILIES[name].module.split(".")[2]
    return importlib.import_module(f"transformers.models.{module}.modeling_{module}")


# ---------------------------------------------------------------------------------------------
# The set of model types and the signatures


def test_every_liger_model_type_has_an_apply_function():
    assert set(LIGER_085) <= set(mp.MODEL_TYPE_TO_APPLY_LIGER_FN)
    assert len(LIGER_085) == 53
    for t in LIGER_085:
        fn = getattr(lt, _fn(t).__name__)
        assert fn is _fn(t) and callable(fn)
    assert mp.unavailable_model_types() == []  # transformers 5.17 and 5.25 have every one


def test_signatures_are_ligers():
    """Keyword arguments and defaults as Liger-Kernel's (read by the compat shim from Liger's
    monkey_patch.py), for every type that revision has."""
    path = pathlib.Path(__file__).resolve().parents[2] / "python_client/compat/src/liger_kernel/_liger_api.py"
    spec = importlib.util.spec_from_file_location("_liger_api_for_test", path)
    api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(api)
    checked = 0
    for name, params in api.APPLY_SIGNATURES.items():
        fn = getattr(lt, f"apply_liger_kernel_to_{name}")
        got = []
        for p in inspect.signature(fn).parameters.values():
            got.append((p.name, "**" if p.kind is p.VAR_KEYWORD else p.default))
        assert tuple(got) == tuple(params), name
        checked += 1
    assert checked >= 40


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        lt.apply_liger_kernel_to_smollm3(swigluu=True)


def test_aliases_share_the_apply_function():
    for t, name in MODEL_TYPE_ALIASES.items():
        assert _fn(t) is getattr(lt, f"apply_liger_kernel_to_{name}")


def test_absent_modeling_module_warns_and_patches_nothing(monkeypatch):
    from ligerd.transformers import spec_patching as sp
    real = importlib.import_module

    def fake(name, *a, **k):
        if name.endswith("modeling_smollm3"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(sp.importlib, "import_module", fake)
    with pytest.warns(LigerdWarning, match="has no transformers.models.smollm3"):
        lt.apply_liger_kernel_to_smollm3()
    assert not mp.patched_attributes()


# ---------------------------------------------------------------------------------------------
# Class patching and instance patching, every type


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_class_patching(model_type):
    stock = tm.build(model_type)
    flags = _defaults(model_type)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _fn(model_type)()
    patched = mp.patched_attributes()
    # Only modeling modules, their classes and transformers' loss module are touched, and only
    # RoPE, norm / MLP / experts classes, LayerNorm, forwards and the loss function.
    for holder, name in patched:
        where = holder.__name__ if isinstance(holder, type(nn)) else holder.__module__
        assert where.startswith("transformers."), (holder, name)
        assert (name in ("apply_rotary_pos_emb", "apply_rotary_emb", "apply_rotary_pos_emb_interleave",
                         "vision_apply_rotary_emb", "apply_rotary_pos_emb_vision", "forward", "nn",
                         "LayerNorm", "fixed_cross_entropy")
                or re.search(r"(RMSNorm|MLP|Mlp|Experts)$", name)
                or isinstance(getattr(holder, name), dict)), (holder, name)  # class tables
    built = tm.build(model_type)
    # A vision-language type whose text (and vision) model is another model type patches those
    # only with model= (the class-level call does not know which type they are), as Liger.
    spec = SPEC_BY_NAME.get(_fn(model_type).__name__[len("apply_liger_kernel_to_"):])
    ignore = SUBMODELS if spec and spec.delegate else ()
    seen = _check_modules(model_type, built, stock, flags, ignore)
    if (flags.get("rms_norm") or flags.get("swiglu") or flags.get("geglu")) and not ignore:
        assert seen[True] > 0, f"{model_type}: nothing patched"
    assert _is_fused_head(built) == _expects_fused_head(model_type, built)
    modeling = _modeling(model_type)
    rope_fn = getattr(modeling, "apply_rotary_pos_emb", None)
    if spec and spec.rope_fns and flags.get("rope"):  # ligerd's interleaved / complex / vision RoPEs
        from ligerd.transformers.spec_patching import rope_fn_module
        for attr, name in spec.rope_fns:
            want_fn = getattr(importlib.import_module(rope_fn_module(name)), name)
            assert getattr(modeling, attr) is want_fn, (model_type, attr)
    if rope_fn is lt.liger_rotary_pos_emb:
        assert flags.get("rope")
    elif flags.get("rope") and (spec is None or spec.rope):
        # kept: a one-time warning (reset per test by conftest) said what ligerd lacks
        assert any(issubclass(x.category, LigerdWarning) and "rope=True" in str(x.message)
                   for x in w), (model_type, [str(x.message) for x in w])
    # The patched classes compute what the stock ones do (same weights, eval forward).
    if model_type == "pixtral":  # a vision encoder: no token input (its numerics test is below)
        return
    built.load_state_dict(stock.state_dict())
    ids, _ = _batch()
    with torch.no_grad():
        got, want = built(input_ids=ids), stock(input_ids=ids)
    key = "logits" if getattr(want, "logits", None) is not None else "last_hidden_state"
    if getattr(want, key, None) is not None:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)
    if flags.get("layer_norm") and any(type(m) is nn.LayerNorm for m in stock.modules()) \
            and not (spec and spec.delegate):
        lns = [m for m in built.modules() if isinstance(m, nn.LayerNorm)]
        assert lns and all(_is_ligerd(m) for m in lns), model_type


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_instance_patching(model_type):
    model = tm.build(model_type)
    stock = copy.deepcopy(model)
    flags = _defaults(model_type)
    _fn(model_type)(model=model)
    spec = SPEC_BY_NAME.get(_fn(model_type).__name__[len("apply_liger_kernel_to_"):])
    if spec and spec.delegate:
        _check_modules(model_type, model, stock, flags, SUBMODELS)
        _check_delegated(model_type, model, stock)
    else:
        _check_modules(model_type, model, stock, flags)
    if flags.get("layer_norm"):
        for m in model.modules():
            if type(m) is nn.LayerNorm:
                assert _is_ligerd(m), model_type
    assert _is_fused_head(model) == _expects_fused_head(model_type, model)
    if _expects_fused_head(model_type, model):
        assert "forward" in model.__dict__  # the instance's, not the class's
    lt.revert_liger_kernel_patches()
    assert not any(_is_ligerd(m) for m in model.modules())
    assert "forward" not in model.__dict__


def test_instance_patching_by_model_type_and_peft():
    """_apply_liger_kernel_to_instance (HF Trainer's and TRL's path) on PEFT-shaped wrappers of a
    vision-language and a MoE model."""

    class Tuner(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model
            self.peft_config = {"default": object()}

    class Peft(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.base_model = Tuner(model)
            self.peft_config = {"default": object()}

        def get_base_model(self):
            return self.base_model.model

    for t in ("qwen2_vl", "hunyuan_v1_moe"):
        model = tm.build(t)
        lt._apply_liger_kernel_to_instance(Peft(model))
        assert _is_fused_head(model) and "forward" in model.__dict__
        assert any(_is_ligerd(m) for m in model.modules())
        lt.revert_liger_kernel_patches()


def test_vision_language_delegates_to_its_text_model():
    """LLaVA with model=: its text model (llama) gets llama's patches, its CLIP vision tower
    (no ligerd patch) is named in a warning, as Liger logs it."""
    model = tm.build("llava")
    with pytest.warns(LigerdWarning, match="clip_vision_model"):
        lt.apply_liger_kernel_to_llava(model=model)
    text = model.model.language_model
    assert all(_is_ligerd(m) for m in text.modules() if type(m).__name__ in ("LlamaRMSNorm", "LlamaMLP"))
    assert _is_fused_head(model)
    # SmolVLM's own vision tower (smolvlm_vision) is its spec's business: no "not patched" warning.
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        lt.apply_liger_kernel_to_smolvlm(model=tm.build("smolvlm"))
    assert not any("smolvlm_vision" in str(x.message) for x in w), [str(x.message) for x in w]


def test_missing_kernels_warn_once_and_keep_stock(monkeypatch):
    from ligerd.transformers.rope import liger_rotary_pos_emb_vision
    from ligerd.transformers.rope_interleaved import liger_glm4v_rotary_pos_emb
    modeling = _modeling("glm4v")
    # GLM-4V's text RoPE (interleaved) and its vision tower's RoPE are both ligerd's: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", LigerdWarning)
        lt.apply_liger_kernel_to_glm4v(rope=True)
    assert modeling.apply_rotary_pos_emb is liger_glm4v_rotary_pos_emb
    assert modeling.apply_rotary_pos_emb_vision is liger_rotary_pos_emb_vision
    lt.revert_liger_kernel_patches()
    # A transformers whose modeling module lacks one of the functions: the others are patched, the
    # missing one is named in a one-time warning (never an exception).
    monkeypatch.delattr(modeling, "apply_rotary_pos_emb_vision")
    with pytest.warns(LigerdWarning, match=r"rope=True for glm4v: ligerd has no kernel for this "
                                           r"transformers' glm4v RoPE \(its modeling module has no "
                                           r"apply_rotary_pos_emb_vision\)"):
        lt.apply_liger_kernel_to_glm4v(rope=True)
    assert modeling.apply_rotary_pos_emb is liger_glm4v_rotary_pos_emb
    assert not hasattr(modeling, "apply_rotary_pos_emb_vision")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LigerdWarning)
        lt.apply_liger_kernel_to_glm4v(rope=True)  # once per process
    # Gemma 4 calls its RoPE on one tensor at a time: rope=True installs a one-tensor one.
    from ligerd.transformers.rope_interleaved import liger_gemma4_rotary_pos_emb
    gemma4 = _modeling("gemma4")
    lt.apply_liger_kernel_to_gemma4(rope=True)
    assert gemma4.apply_rotary_pos_emb is liger_gemma4_rotary_pos_emb


def test_nemotron_relu_squared_mlp():
    """relu_squared=True (Liger's default) makes NemotronMLP compute relu(up(x))^2 with ligerd's op
    between its own projections, for class and instance patching, without touching the ACT2FN
    table every modeling module shares (Liger rebinds ACT2FN["relu2"]); relu_squared=False keeps
    transformers' MLP; an MLP whose activation is not relu2 keeps its forward, with a warning."""
    from transformers import activations
    modeling = _modeling("nemotron")
    act_before = activations.ACT2FN["relu2"]
    ref = tm.build("nemotron")
    lt.apply_liger_kernel_to_nemotron()
    assert modeling.NemotronMLP.__module__.startswith("ligerd.")
    assert type(activations.ACT2FN["relu2"]) is type(act_before)
    model = tm.build("nemotron")
    model.load_state_dict(ref.state_dict())
    mlps = [m for m in model.modules() if isinstance(m, modeling.NemotronMLP)]
    assert mlps and all(_is_ligerd(m) for m in mlps)
    x = torch.randn(2, 5, ref.config.hidden_size, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    mlp, mlp_ref = mlps[0], ref.model.layers[0].mlp
    from ligerd import _backend
    launcher = _backend._test_launcher  # the cpu_ops fixture's float64 reference executor
    launcher.calls.clear()
    y, y_ref = mlp(x), mlp_ref(x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    y.backward(torch.ones_like(y))
    y_ref.backward(torch.ones_like(y_ref))
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    assert [c[0] for c in launcher.calls] == ["relu_squared_fwd", "relu_squared_bwd"]
    lt.revert_liger_kernel_patches()

    # Instance patching, and the flag off.
    model = copy.deepcopy(ref)
    lt.apply_liger_kernel_to_nemotron(model=model)
    assert all(_is_ligerd(m) for m in model.modules() if type(m).__name__ == "NemotronMLP")
    lt.revert_liger_kernel_patches()
    model = copy.deepcopy(ref)
    lt.apply_liger_kernel_to_nemotron(relu_squared=False, model=model)
    assert not any(_is_ligerd(m) for m in model.modules() if type(m).__name__ == "NemotronMLP")
    lt.revert_liger_kernel_patches()

    # A Nemotron configured with another activation: transformers' MLP, named in a warning.
    cfg = tm.tiny_config("nemotron")
    cfg.hidden_act = "gelu"
    lt.apply_liger_kernel_to_nemotron()
    with pytest.warns(LigerdWarning, match=r"NemotronMLP keeps transformers' forward: its activation is "
                                           r"GELUActivation, not the squared ReLU"):
        other = tm.build("nemotron", cfg=cfg)
    assert not any(_is_ligerd(m) for m in other.modules() if type(m).__name__.endswith("NemotronMLP"))


def test_cross_entropy_and_fused_loss_are_exclusive():
    with pytest.raises(ValueError, match="cannot both be True"):
        lt.apply_liger_kernel_to_exaone4(cross_entropy=True, fused_linear_cross_entropy=True)
    lt.apply_liger_kernel_to_exaone4(cross_entropy=True, fused_linear_cross_entropy=False)
    from transformers.loss import loss_utils
    assert loss_utils.fixed_cross_entropy.__module__.startswith("ligerd.")


# ---------------------------------------------------------------------------------------------
# Numerics: the patched model computes what transformers computes, every type


def _batch(seed=0, b=2, s=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, tm.VOCAB - 3, (b, s), generator=g)
    labels = ids.clone()
    labels[0, -3:] = -100
    return ids, labels


@pytest.mark.parametrize("model_type", [t for t in ALL_TYPES if t not in ("pixtral",)])
def test_patched_model_matches_transformers(model_type):
    ref = tm.build(model_type)
    model = copy.deepcopy(ref)
    _fn(model_type)(model=model)
    ids, labels = _batch()
    ref.train()
    model.train()
    hf_standins.CALLS.clear()
    headless = not hasattr(ref, "lm_head") and not hasattr(getattr(ref, "language_model", None), "lm_head")
    if headless:  # the *_text aliases build their base text models: a loss on the hidden states
        loss_ref = ref(input_ids=ids).last_hidden_state.pow(2).mean()
        loss = model(input_ids=ids).last_hidden_state.pow(2).mean()
    else:
        out_ref = ref(input_ids=ids, labels=labels)
        out = model(input_ids=ids, labels=labels)
        loss_ref, loss = out_ref.loss, out.loss
    if _expects_fused_head(model_type, model):
        assert out.logits is None
        assert any(n == "liger_fused_linear_cross_entropy" for n, _ in hf_standins.CALLS)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-5)
    loss.backward()
    loss_ref.backward()
    grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        q = grads[name]
        if q.grad is None:
            assert p.grad is None or float(p.grad.abs().max()) == 0.0, name
            continue
        # fp32 through the float64 reference: only rounding and reduction order differ, a few
        # 1e-5 of the gradient's norm at most (gemma4's many norms); a wrong op is ~1. The
        # absolute floor is for gradients that are rounding noise themselves (Hunyuan's router
        # weights get ~1e-9 where the other gradients are ~0.5).
        diff, ref_norm = float((p.grad - q.grad).norm()), float(q.grad.norm())
        assert diff <= 1e-3 * ref_norm + 1e-7, (name, diff, ref_norm)
    ref.eval()
    model.eval()
    key = "last_hidden_state" if headless else "logits"
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids)[key], ref(input_ids=ids)[key],
                                   rtol=1e-4, atol=1e-5)


def test_head_transform_is_read_from_the_forward():
    """The probe tells which post-lm_head transform a forward applied: the spec's, a variant
    (PaliGemma's soft-cap exists in 5.25's forward, not in 5.17's), or something the fused loss
    cannot reproduce (None: a clear error at the call)."""
    from ligerd.transformers.model import fused_forward as ff
    model = tm.build("gemma2")  # text config with final_logit_softcapping (3.0)
    probe = torch.tensor(ff._PROBE, dtype=torch.float64)
    spec = lambda m: (None, 3.0)  # noqa: E731
    capped = 3.0 * torch.tanh(probe / 3.0)
    assert ff._pick_transform(model, spec, capped) == (None, 3.0)
    assert ff._pick_transform(model, spec, probe) == (None, None)
    assert ff._pick_transform(model, lambda m: (0.5, None), probe * 0.5) == (0.5, None)
    assert ff._pick_transform(model, spec, probe + 1.0) is None


def test_fused_forward_compiles_whole():
    """The wrapper swaps lm_head and the loss function for the call; Dynamo traces that in one
    graph (fullgraph=True), with the loss of the eager model. Only the fused forward is patched
    here (the kernels' own compile tests are tests/gpu/test_compile.py)."""
    lt.apply_liger_kernel_to_smollm3(rope=False, rms_norm=False, swiglu=False)
    model = tm.build("smollm3").train()
    ids, labels = _batch(3)
    want = model(input_ids=ids, labels=labels).loss
    torch._dynamo.reset()
    try:
        got = torch.compile(model, backend="eager", fullgraph=True)(input_ids=ids, labels=labels).loss
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(got, want)


def test_paligemma2_softcapping_inside_the_fused_loss():
    """PaliGemma 2 (Gemma-2 text with final-logit soft-capping): the fused loss applies the cap
    exactly when transformers' forward does (a wrong or missing cap moves the loss by ~2e-4 here,
    20x the tolerance)."""
    from transformers import Gemma2Config
    cfg = tm.tiny_config("paligemma")
    text = tm._make(Gemma2Config, tm.TEXT, dict(final_logit_softcapping=2.0, query_pre_attn_scalar=16))
    cfg = type(cfg)(text_config=text, vision_config=cfg.vision_config, image_token_index=tm.VOCAB - 1)
    ref = tm.build("paligemma", cfg=cfg)
    model = copy.deepcopy(ref)
    lt.apply_liger_kernel_to_paligemma(model=model)
    ids, labels = _batch(2)
    ref.train()
    model.train()
    hf_standins.CALLS.clear()
    got = model(input_ids=ids, labels=labels).loss
    caps = [c["softcap"] for n, c in hf_standins.CALLS if n == "liger_fused_linear_cross_entropy"]
    # transformers 5.25's forward soft-caps, 5.17's does not: the fused loss follows the forward.
    from transformers.models.paligemma.modeling_paligemma import PaliGemmaForConditionalGeneration
    capped = "final_logit_softcapping" in inspect.getsource(PaliGemmaForConditionalGeneration.forward)
    assert caps == [2.0 if capped else None]
    torch.testing.assert_close(got, ref(input_ids=ids, labels=labels).loss)


def test_fused_forward_options_and_num_items():
    """num_items_in_batch, shift_labels (no labels), skip_logits=False and return_dict=False
    through the generic fused forward, against transformers' own loss."""
    ref = tm.build("smollm3")
    model = copy.deepcopy(ref)
    lt.apply_liger_kernel_to_smollm3(model=model)
    ids, labels = _batch(1)
    ref.train()
    model.train()
    n = torch.tensor(int((labels[:, 1:] != -100).sum()) + 5)
    torch.testing.assert_close(model(input_ids=ids, labels=labels, num_items_in_batch=n).loss,
                               ref(input_ids=ids, labels=labels, num_items_in_batch=n).loss)
    shifted = nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    got = model(input_ids=ids, shift_labels=shifted).loss
    want = ref(input_ids=ids, labels=labels).loss
    torch.testing.assert_close(got, want)
    out = model(input_ids=ids, labels=labels, skip_logits=False)
    assert out.logits is not None
    torch.testing.assert_close(out.loss, want)
    tup = model(input_ids=ids, labels=labels, return_dict=False)
    assert isinstance(tup, tuple)
    torch.testing.assert_close(tup[0], want)
    with pytest.raises(ValueError, match="skip_logits is True"):
        model(input_ids=ids, skip_logits=True)


# ---------------------------------------------------------------------------------------------
# Training: one representative per architecture group, class patching


REPRESENTATIVES = {"dense": "exaone4", "moe": "hunyuan_v1_moe", "vision-language": "paligemma",
                   "hybrid": "qwen3_next"}


@pytest.mark.parametrize("group", sorted(REPRESENTATIVES))
def test_group_representative_trains_like_transformers(group):
    from ligerd.testing import convergence as cv
    model_type = REPRESENTATIVES[group]
    cfg = tm.tiny_config(model_type)
    init = {k: v.clone() for k, v in tm.build(model_type, seed=1).state_dict().items()}
    data, ev = cv.make_data(tm.VOCAB, 5, 4, 16, subset=32)  # learnable bigram streams
    ref = tm.train(model_type, cfg, data, init, use_ligerd=False, eval_batch=ev)
    hf_standins.CALLS.clear()
    run = tm.train(model_type, cfg, data, init, use_ligerd=True, eval_batch=ev)
    assert sum(n == "liger_fused_linear_cross_entropy" for n, _ in hf_standins.CALLS) == len(data)
    assert not mp.patched_attributes()
    assert ref.losses[-1] < ref.losses[0]
    for a, b in zip(run.losses, ref.losses):
        assert abs(a - b) <= 1e-4 + 1e-4 * abs(b), (group, run.losses, ref.losses)
    # The training update of all parameters together, relative to transformers' update (Adam
    # turns rounding noise in near-zero gradients, e.g. a router's, into full-size steps of
    # either sign, so a per-element or per-tensor comparison would measure that noise).
    dev = cv.deviation(run, ref, init)
    assert dev.update < 1e-2, (group, dev.update, dev.update_worst_name)
    # MoE routers (hunyuan_v1_moe, qwen3_next) take Adam steps of either sign from gradients at
    # rounding level (see the gradient test), which moves the eval logits by ~3e-3 (measured).
    limit = 1e-2 if group in ("moe", "hybrid") else 1e-3
    assert cv.rel_err(run.eval_logits, ref.eval_logits) < limit
    acc = tm.train(model_type, cfg, data, init, use_ligerd=True, micro_batches=2)
    ref_acc = tm.train(model_type, cfg, data, init, use_ligerd=False, micro_batches=2)
    for a, b in zip(acc.losses, ref_acc.losses):
        assert abs(a - b) <= 1e-4 + 1e-4 * abs(b), (group, acc.losses, ref_acc.losses)


# ---------------------------------------------------------------------------------------------
# The vision-tower pieces (the text-only numerics above do not run them)


def test_layer_norm_subclass_and_instance_match_torch():
    """LigerdLayerNorm (class patching of the vision towers) and a patched nn.LayerNorm
    (instance patching) give torch's LayerNorm outputs and gradients."""
    from ligerd.transformers.spec_patching import LigerdLayerNorm, patch_layer_norm_instance
    ref = nn.LayerNorm(48, eps=1e-5)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    lig = LigerdLayerNorm(48, eps=1e-5)
    lig.load_state_dict(ref.state_dict())
    inst = copy.deepcopy(ref)
    patch_layer_norm_instance(inst)
    x = torch.randn(3, 7, 48) * 3 + 1
    want = ref(x)
    want.pow(2).sum().backward()
    for m in (lig, inst):
        hf_standins.CALLS.clear()
        got = m(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        got.pow(2).sum().backward()
        torch.testing.assert_close(m.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(m.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)
    assert type(lig).__mro__[1] is not nn.LayerNorm or isinstance(lig, nn.LayerNorm)


def test_layer_norm_proxy_only_changes_layer_norm():
    from transformers.models.siglip import modeling_siglip
    from ligerd.transformers.spec_patching import LigerdLayerNorm
    lt.apply_liger_kernel_to_paligemma()
    assert modeling_siglip.nn.LayerNorm is LigerdLayerNorm
    assert modeling_siglip.nn.Linear is nn.Linear and modeling_siglip.nn.functional is nn.functional
    assert nn.LayerNorm is not LigerdLayerNorm  # torch.nn itself is untouched
    lt.revert_liger_kernel_patches()
    assert modeling_siglip.nn is nn


def test_pixtral_vision_encoder_matches_transformers():
    """Pixtral's 2-D RoPE (cos/sin of shape [patches, head_dim]), RMSNorm and, with a SiLU
    activation, its SwiGLU MLP, through ligerd (instance patching) vs transformers."""
    cfg = tm.tiny_config("pixtral")
    cfg.hidden_act = "silu"
    ref = tm.build("pixtral", cfg=cfg)
    model = copy.deepcopy(ref)
    hf_standins.CALLS.clear()
    lt.apply_liger_kernel_to_pixtral(model=model)
    assert all(_is_ligerd(m) for m in model.modules() if type(m).__name__ in ("PixtralRMSNorm", "PixtralMLP"))
    pixels = torch.randn(1, cfg.num_channels, 32, 32)
    sizes = torch.tensor([[32, 32]])
    want = ref(pixel_values=pixels, image_sizes=sizes).last_hidden_state
    got = model(pixel_values=pixels, image_sizes=sizes).last_hidden_state
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert any(n == "liger_rotary_pos_emb" for n, _ in hf_standins.CALLS)
