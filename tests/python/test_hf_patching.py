"""Hugging Face model patching on the CPU (runs in CI with transformers 5.x from PyPI):
``apply_liger_kernel_to_*`` for every supported family replaces exactly what it should (classes,
functions, forwards) and nothing else; instance patching (``model=``) including PEFT-style
wrappers; the mutual-exclusion and unsupported-model / -version errors;
``revert_liger_kernel_patches``; ``AutoLigerKernelForCausalLM``; and the patched models compute
what transformers computes (eval logits, training loss, gradients, gradient accumulation,
shift_labels, Gemma-2 soft-capping, Granite logits scaling, the MoE auxiliary loss).

The kernels run through ligerd's test launcher (a float64 reference of the executor contract) and
the ops still being written elsewhere are torch stand-ins injected only when missing: see
hf_standins.py. The GPU convergence tests are tests/gpu/test_convergence.py."""

from __future__ import annotations

import types

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

import importlib  # noqa: E402

import torch.nn as nn  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.loss import loss_utils  # noqa: E402

from ligerd.testing import hf_standins  # noqa: E402
import ligerd.transformers as lt  # noqa: E402
from ligerd import ConfigError  # noqa: E402
from ligerd.transformers import monkey_patch as mp  # noqa: E402
from ligerd.transformers.mlp_variants import LigerExperts  # noqa: E402

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              tie_word_embeddings=False)


def tiny_config(family: str):
    """A tiny config of ``family`` (CPU-sized: hidden 64, 2 layers, vocab 128)."""
    from transformers import (Gemma2Config, Gemma3TextConfig, GemmaConfig, GraniteConfig,
                              LlamaConfig, MistralConfig, MixtralConfig, Olmo2Config, Phi3Config,
                              Qwen2Config, Qwen3Config, Qwen3MoeConfig)
    c = dict(COMMON)
    if family == "llama":
        return LlamaConfig(**c)
    if family == "mistral":
        return MistralConfig(**c, sliding_window=None)
    if family == "mixtral":
        return MixtralConfig(**c, num_local_experts=4, num_experts_per_tok=2,
                             output_router_logits=True, router_aux_loss_coef=0.02)
    if family == "gemma":
        return GemmaConfig(**c, head_dim=16)
    if family == "gemma2":
        return Gemma2Config(**c, head_dim=16, final_logit_softcapping=3.0,
                            attn_logit_softcapping=50.0, sliding_window=32, query_pre_attn_scalar=16)
    if family == "gemma3_text":
        return Gemma3TextConfig(**c, head_dim=16, final_logit_softcapping=3.0,
                                sliding_window=32, query_pre_attn_scalar=16)
    if family == "qwen2":
        return Qwen2Config(**c)
    if family == "qwen3":
        return Qwen3Config(**c, head_dim=16)
    if family == "qwen3_moe":
        return Qwen3MoeConfig(**c, head_dim=16, num_experts=4, num_experts_per_tok=2,
                              moe_intermediate_size=48, mlp_only_layers=[1], decoder_sparse_step=1,
                              output_router_logits=True, router_aux_loss_coef=0.02)
    if family == "phi3":
        return Phi3Config(**c, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "granite":
        return GraniteConfig(**c, logits_scaling=4.0, embedding_multiplier=2.0,
                             residual_multiplier=0.5, attention_multiplier=0.25)
    if family == "olmo2":
        return Olmo2Config(**c, pad_token_id=0)
    raise AssertionError(family)


FAMILIES = list(mp.FAMILIES)
# (modeling-module names, causal-LM attributes) each family's default call replaces.
MLP_FLAG = {f: mp.FAMILIES[f].mlp_flag for f in FAMILIES}


def expected_names(family, *, rope=True, rms_norm=True, mlp=True, flce=None):
    fam = mp.FAMILIES[family]
    if flce is None:
        flce = family != "granite"
    names = set()
    if rope:
        names.add("apply_rotary_pos_emb")
    if rms_norm:
        names.add(fam.rms_norm)
    if mlp:
        names |= {n for n in (fam.mlp, fam.experts) if n}
    return names, ({"forward"} if flce else set())


def build(family, seed=0, **kw):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(family), attn_implementation="eager", **kw)


def snapshot():
    """What patching may touch: every supported modeling module's and causal-LM class's own
    attributes, and transformers' loss utilities."""
    out = {}
    for fam in mp.FAMILIES.values():
        mod = importlib.import_module(fam.module)
        out[fam.module] = dict(vars(mod))
        out[fam.module + ":" + fam.causal_lm] = dict(vars(getattr(mod, fam.causal_lm)))
    out["loss_utils"] = dict(vars(loss_utils))
    return out


def diff(before, after):
    changed = {}
    for key in before.keys() | after.keys():
        b, a = before.get(key, {}), after.get(key, {})
        names = {n for n in b.keys() | a.keys() if b.get(n, mp._MISSING) is not a.get(n, mp._MISSING)}
        if names:
            changed[key] = names
    return changed


@pytest.fixture(autouse=True)
def cpu_ops(monkeypatch):
    """Reference launcher + stand-ins (until the ops land); every test starts and ends unpatched."""
    lt.revert_liger_kernel_patches()
    hf_standins.install(monkeypatch)
    yield
    lt.revert_liger_kernel_patches()


def apply(family, **kw):
    return getattr(lt, f"apply_liger_kernel_to_{family}")(**kw)


# ------------------------------------------------------------------------------------------
# What is replaced


@pytest.mark.parametrize("family", FAMILIES)
def test_default_call_replaces_exactly_the_expected_attributes(family):
    fam = mp.FAMILIES[family]
    before = snapshot()
    apply(family)
    changed = diff(before, snapshot())
    mod_names, cls_names = expected_names(family)
    expected = {fam.module: mod_names}
    if cls_names:
        expected[fam.module + ":" + fam.causal_lm] = cls_names
    if family == "granite":  # Liger's granite default: cross_entropy=True, no fused linear CE
        expected["loss_utils"] = {"fixed_cross_entropy"}
    assert changed == expected
    modeling = importlib.import_module(fam.module)
    assert modeling.apply_rotary_pos_emb is lt.liger_rotary_pos_emb
    assert getattr(modeling, fam.rms_norm) is getattr(lt, fam.norm_cls)
    if cls_names:
        lce = importlib.import_module(
            f"ligerd.transformers.model.{'gemma3' if family == 'gemma3_text' else family}").lce_forward
        assert getattr(modeling, fam.causal_lm).forward is lce


@pytest.mark.parametrize("family", FAMILIES)
def test_models_built_after_the_call_use_liger_modules_and_only_there(family):
    fam = mp.FAMILIES[family]
    ref = build(family)
    ref_types = {n: type(m) for n, m in ref.named_modules()}
    apply(family)
    model = build(family)
    norm_cls = getattr(lt, fam.norm_cls)
    mlp_cls = mp._mlp_cls_and_forward(fam.mlp_kind)[0]
    replaced = {"norm": 0, "mlp": 0, "experts": 0}
    for name, m in model.named_modules():
        old = ref_types[name]
        if old.__name__ == fam.rms_norm:
            assert type(m) is norm_cls, name
            replaced["norm"] += 1
        elif fam.mlp and old.__name__ == fam.mlp:
            assert type(m) is mlp_cls, name
            replaced["mlp"] += 1
        elif fam.experts and old.__name__ == fam.experts:
            assert type(m) is LigerExperts, name
            replaced["experts"] += 1
        else:
            assert type(m) is old, f"{name}: {old.__name__} became {type(m).__name__}"
    n_layers = COMMON["num_hidden_layers"]
    assert replaced["norm"] >= 2 * n_layers + 1
    if family in ("qwen3", "qwen3_moe", "gemma3_text", "olmo2"):  # q_norm / k_norm too
        assert replaced["norm"] >= 4 * n_layers + 1
    assert replaced["mlp"] == {"mixtral": 0, "qwen3_moe": 1}.get(family, n_layers)
    assert replaced["experts"] == {"mixtral": 2, "qwen3_moe": 1}.get(family, 0)
    # Same parameters, names and initial values as transformers' own modules (same seed).
    sd_ref, sd = ref.state_dict(), model.state_dict()
    assert sd_ref.keys() == sd.keys()
    for k in sd:
        torch.testing.assert_close(sd[k], sd_ref[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("family", FAMILIES)
def test_flags_off_replace_nothing(family):
    before = snapshot()
    kw = {"rope": False, "rms_norm": False, MLP_FLAG[family]: False, "cross_entropy": False,
          "fused_linear_cross_entropy": False}
    apply(family, **kw)
    assert diff(before, snapshot()) == {}


def test_each_flag_alone():
    fam = mp.FAMILIES["qwen3_moe"]
    off = dict(rope=False, rms_norm=False, swiglu=False, cross_entropy=False,
               fused_linear_cross_entropy=False)
    for flag, exp in [("rope", {fam.module: {"apply_rotary_pos_emb"}}),
                      ("rms_norm", {fam.module: {fam.rms_norm}}),
                      ("swiglu", {fam.module: {fam.mlp, fam.experts}}),
                      ("cross_entropy", {"loss_utils": {"fixed_cross_entropy"}}),
                      ("fused_linear_cross_entropy", {fam.module + ":" + fam.causal_lm: {"forward"}})]:
        before = snapshot()
        apply("qwen3_moe", **dict(off, **{flag: True}))
        assert diff(before, snapshot()) == exp, flag
        lt.revert_liger_kernel_patches()


# ------------------------------------------------------------------------------------------
# Instance patching


def _liger_forward_of(m):
    f = m.__dict__.get("forward")
    return getattr(f, "__func__", None)


@pytest.mark.parametrize("family", FAMILIES)
def test_instance_patching(family):
    fam = mp.FAMILIES[family]
    ref = build(family).eval()
    model = build(family).eval()
    x = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        want = ref(x).logits
    apply(family, model=model)
    norm_fwd = lt.LigerRMSNorm.forward
    mlp_fwd = mp._mlp_cls_and_forward(fam.mlp_kind)[1]
    from ligerd.transformers.mlp_variants import experts_apply_gate, experts_forward
    counts = {"norm": 0, "mlp": 0, "experts": 0}
    for name, m in model.named_modules():
        cname = type(m).__name__
        if cname == fam.rms_norm:
            assert _liger_forward_of(m) is norm_fwd, name
            d = mp._init_defaults(getattr(lt, fam.norm_cls))
            assert (m.offset, m.casting_mode, m.in_place) == (d["offset"], d["casting_mode"], d["in_place"])
            assert m._get_name() == fam.norm_cls
            counts["norm"] += 1
        elif fam.mlp and cname == fam.mlp:
            assert _liger_forward_of(m) is mlp_fwd, name
            counts["mlp"] += 1
        elif fam.experts and cname == fam.experts:
            assert _liger_forward_of(m) is experts_forward, name
            assert m.__dict__["_apply_gate"].__func__ is experts_apply_gate
            counts["experts"] += 1
        else:
            assert "forward" not in m.__dict__ or m is model, name
    assert counts["norm"] >= 2 * COMMON["num_hidden_layers"] + 1
    assert counts["mlp"] + counts["experts"] >= COMMON["num_hidden_layers"]
    flce = family != "granite"
    assert (_liger_forward_of(model) is not None) == flce
    # The fused-loss forward was bound on this instance only; the class keeps transformers'.
    modeling = importlib.import_module(fam.module)
    assert getattr(modeling, fam.causal_lm).forward is mp.original(getattr(modeling, fam.causal_lm), "forward")
    with torch.no_grad():
        got = model(x).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


class FakeModulesToSaveWrapper(nn.Module):
    """The shape of peft's ModulesToSaveWrapper: the original module and per-adapter copies."""

    def __init__(self, module):
        super().__init__()
        import copy
        self.original_module = module
        self.modules_to_save = nn.ModuleDict({"default": copy.deepcopy(module)})

    def forward(self, *a, **k):
        return self.modules_to_save["default"](*a, **k)


class FakeLoraModel(nn.Module):
    """The shape of a peft tuner (LoraModel): ``.model`` and ``.peft_config``."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.peft_config = {"default": object()}

    def forward(self, *a, **k):
        return self.model(*a, **k)


class FakePeftModel(nn.Module):
    """The shape of peft's PeftModel: ``.base_model`` (a tuner), ``get_base_model()``, and
    attribute forwarding to the wrapped model (``.config``)."""

    def __init__(self, model):
        super().__init__()
        self.base_model = FakeLoraModel(model)
        self.peft_config = {"default": object()}

    def get_base_model(self):
        return self.base_model.model

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.base_model.model, name)

    def forward(self, *a, **k):
        return self.base_model(*a, **k)


@pytest.mark.parametrize("family", ["llama", "gemma2", "qwen3_moe"])
def test_peft_wrapped_instance(family):
    fam = mp.FAMILIES[family]
    model = build(family)
    model.model.norm = FakeModulesToSaveWrapper(model.model.norm)
    peft = FakePeftModel(model)
    lt._apply_liger_kernel_to_instance(peft)
    wrapper = model.model.norm
    for m in (wrapper.original_module, wrapper.modules_to_save["default"]):
        assert _liger_forward_of(m) is lt.LigerRMSNorm.forward
        assert m._get_name() == fam.norm_cls
    assert _liger_forward_of(model) is not None  # fused-loss forward on the transformers model
    assert mp.unwrap_peft(peft) is model and mp.unwrap_peft(peft.base_model) is model
    peft.eval()
    with torch.no_grad():
        out = peft(torch.randint(0, VOCAB, (1, 8)))
    assert out.logits.shape == (1, 8, VOCAB)


def test_instance_patching_leaves_non_causal_lm_heads_alone():
    from transformers import LlamaForSequenceClassification
    cfg = tiny_config("llama")
    cfg.pad_token_id = 0
    model = LlamaForSequenceClassification(cfg)
    lt._apply_liger_kernel_to_instance(model)
    assert "forward" not in model.__dict__
    assert _liger_forward_of(model.model.norm) is lt.LigerRMSNorm.forward


# ------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("family", FAMILIES)
def test_cross_entropy_and_fused_linear_are_exclusive(family):
    before = snapshot()
    with pytest.raises(ValueError, match="cross_entropy and fused_linear_cross_entropy"):
        apply(family, cross_entropy=True, fused_linear_cross_entropy=True)
    assert diff(before, snapshot()) == {}


def test_unsupported_model_type_names_the_supported_ones():
    with pytest.raises(ConfigError) as e:
        lt._apply_liger_kernel("bert")
    msg = str(e.value)
    assert "'bert'" in msg and all(t in msg for t in lt.MODEL_TYPE_TO_APPLY_LIGER_FN)
    from transformers import BertConfig
    bert = AutoModelForCausalLM.from_config(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=64,
                                                       is_decoder=True))
    with pytest.raises(ConfigError, match="no ligerd patch for model type 'bert'"):
        lt._apply_liger_kernel_to_instance(bert)
    with pytest.raises(ConfigError, match="Supported model types"):
        lt.AutoLigerKernelForCausalLM.from_config(bert.config)


@pytest.mark.parametrize("version", ["4.57.1", "5.16.2", "6.0.0", "6.0.0.dev0", "nightly"])
def test_unsupported_transformers_version(monkeypatch, version):
    # By name: the module ``import transformers`` returns now (transformers swaps in a lazy module).
    monkeypatch.setattr("transformers.__version__", version)
    before = snapshot()
    with pytest.raises(ConfigError, match=rf"supports transformers>=5\.17,<6, but transformers {version} "):
        lt.apply_liger_kernel_to_llama()
    with pytest.raises(ConfigError, match=r"pip install 'transformers>=5\.17,<6'"):
        lt._apply_liger_kernel("llama")
    assert diff(before, snapshot()) == {}


def test_missing_op_is_a_clear_error_before_anything_is_patched(monkeypatch):
    import ligerd.transformers.functional as fn_mod
    monkeypatch.delattr(fn_mod, "liger_fused_linear_cross_entropy")
    before = snapshot()
    with pytest.raises(ImportError, match="fused_linear_cross_entropy=False"):
        lt.apply_liger_kernel_to_llama()
    assert diff(before, snapshot()) == {}
    lt.apply_liger_kernel_to_llama(fused_linear_cross_entropy=False)  # the rest still works


def test_swiglu_on_a_non_silu_instance_is_refused():
    cfg = tiny_config("llama")
    cfg.hidden_act = "gelu"
    model = AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(ValueError, match="hidden_act is 'gelu'"):
        lt.apply_liger_kernel_to_llama(model=model)


# ------------------------------------------------------------------------------------------
# Revert


def test_revert_restores_every_replaced_attribute():
    before = snapshot()
    models = {f: build(f) for f in ("llama", "phi3", "mixtral", "gemma3_text")}
    inst_before = {f: {n: dict(m.__dict__) for n, m in mdl.named_modules()} for f, mdl in models.items()}
    for family in FAMILIES:
        apply(family)
    lt.apply_liger_kernel_to_llama(cross_entropy=True, fused_linear_cross_entropy=False)
    for family, mdl in models.items():
        apply(family, model=mdl)
    assert diff(before, snapshot())
    n = lt.revert_liger_kernel_patches()
    assert n > 12 * 3
    assert diff(before, snapshot()) == {}
    for family, mdl in models.items():
        for name, m in mdl.named_modules():
            assert m.__dict__.keys() == inst_before[family][name].keys(), name
    assert lt.revert_liger_kernel_patches() == 0
    # Patching again after a revert works, and reverts again.
    apply("llama")
    assert importlib.import_module(mp.FAMILIES["llama"].module).LlamaRMSNorm is lt.LigerRMSNorm
    lt.revert_liger_kernel_patches()
    assert diff(before, snapshot()) == {}


# ------------------------------------------------------------------------------------------
# AutoLigerKernelForCausalLM


@pytest.mark.parametrize("family", ["llama", "gemma2", "mixtral", "granite"])
def test_auto_from_config_applies_the_family(monkeypatch, family):
    calls = []
    real = lt.MODEL_TYPE_TO_APPLY_LIGER_FN[family]

    import functools

    @functools.wraps(real)
    def spy(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setitem(mp.MODEL_TYPE_TO_APPLY_LIGER_FN, family, spy)
    cfg = tiny_config(family)
    model = lt.AutoLigerKernelForCausalLM.from_config(cfg, rope=False, attn_implementation="eager")
    assert calls == [{"rope": False}]
    fam = mp.FAMILIES[family]
    assert type(model).__name__ == fam.causal_lm
    assert any(type(m) is getattr(lt, fam.norm_cls) for m in model.modules())
    modeling = importlib.import_module(fam.module)
    assert modeling.apply_rotary_pos_emb is mp.original(modeling, "apply_rotary_pos_emb")
    assert model.config._attn_implementation == "eager"  # transformers' kwargs still reach it


def test_auto_from_pretrained(tmp_path):
    build("qwen2").save_pretrained(tmp_path)
    model = lt.AutoLigerKernelForCausalLM.from_pretrained(tmp_path, swiglu=False, dtype=torch.float32)
    assert type(model.model.norm) is lt.LigerRMSNorm
    assert type(model.model.layers[0].mlp).__name__ == "Qwen2MLP"
    from ligerd.transformers.model.qwen2 import lce_forward
    assert type(model).forward is lce_forward
    ref = AutoModelForCausalLM.from_pretrained(tmp_path)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


# ------------------------------------------------------------------------------------------
# The fused-loss forward computes what transformers computes


def _pair(family, **apply_kw):
    """(transformers' model, the same weights built after the patch). The class-level forward patch
    reaches models built before it too, so the reference runs through ``hf()``."""
    ref = build(family)
    apply(family, **apply_kw)
    model = build(family)
    model.load_state_dict(ref.state_dict())
    return ref, model


def hf(model):
    """``model``'s forward as transformers defines it (whatever ligerd patched since)."""
    return types.MethodType(mp.original(type(model), "forward"), model)


def _flce_calls():
    return [c for n, c in hf_standins.CALLS if n == "liger_fused_linear_cross_entropy"]


@pytest.mark.parametrize("family", FAMILIES)
def test_lce_forward_eval_logits_identical_to_hf(family):
    """Only the forward patched: eval logits and loss are transformers' own, bit for bit."""
    off = {"rope": False, "rms_norm": False, MLP_FLAG[family]: False}
    ref, model = _pair(family, fused_linear_cross_entropy=True, cross_entropy=False, **off)
    ref.eval(), model.eval()
    x = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        a, b = hf(ref)(x, labels=x), model(x, labels=x)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.loss, b.loss)
    assert not _flce_calls()
    with torch.no_grad():  # no labels, logits_to_keep, tuple output
        a, b = hf(ref)(x, logits_to_keep=1), model(x, logits_to_keep=1)
        assert torch.equal(a.logits, b.logits) and b.logits.shape[1] == 1
        t, t_ref = model(x, return_dict=False), hf(ref)(x, return_dict=False)
    assert isinstance(t, tuple) and len(t) == len(t_ref)
    for u, v in zip(t, t_ref):
        if isinstance(v, torch.Tensor):
            assert torch.equal(u, v)


@pytest.mark.parametrize("family", FAMILIES)
def test_lce_forward_training_never_materialises_logits(family):
    off = {"rope": False, "rms_norm": False, MLP_FLAG[family]: False}
    ref, model = _pair(family, fused_linear_cross_entropy=True, cross_entropy=False, **off)
    ref.train(), model.train()
    calls = []
    model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randint(0, VOCAB, (2, 10))
    labels = x.clone()
    labels[0, :3] = -100
    a, b = hf(ref)(x, labels=labels), model(x, labels=labels)
    assert b.logits is None and not calls
    (c,) = _flce_calls()
    assert c["reduction"] == "mean" and c["rows"] == 20
    assert c["softcap"] == (3.0 if family in ("gemma2", "gemma3_text") else None)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)
    if family in ("mixtral", "qwen3_moe"):
        torch.testing.assert_close(b.aux_loss, a.aux_loss)
    a.loss.backward()
    b.loss.backward()
    for (n, p), (_, q) in zip(ref.named_parameters(), model.named_parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("family", ["llama", "gemma2", "granite"])
def test_lce_forward_gradient_accumulation_and_shift_labels(family):
    ref, model = _pair(family, rope=False, rms_norm=False, fused_linear_cross_entropy=True,
                       cross_entropy=False, **{MLP_FLAG[family]: False})
    ref.train(), model.train()
    x = torch.randint(0, VOCAB, (2, 10))
    n_items = torch.tensor(37)
    a = hf(ref)(x, labels=x, num_items_in_batch=n_items)
    b = model(x, labels=x, num_items_in_batch=n_items)
    last = _flce_calls()[-1]  # sum / num_items_in_batch: a mean over num_items_in_batch
    assert last["reduction"] == "mean" and int(last["mean_divisor"]) == 37
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)
    shift = torch.nn.functional.pad(x, (0, 1), value=-100)[..., 1:]
    a = hf(ref)(x, labels=x)  # transformers shifts labels itself
    b = model(x, shift_labels=shift)
    assert b.logits is None
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)
    b2 = model(x, labels=x)
    torch.testing.assert_close(b2.loss, b.loss, rtol=1e-6, atol=1e-6)


def test_skip_logits_switch():
    ref, model = _pair("llama", fused_linear_cross_entropy=True)
    x = torch.randint(0, VOCAB, (1, 6))
    model.train()
    out = model(x, labels=x, skip_logits=False)
    assert out.logits is not None and out.loss is not None and not _flce_calls()
    model.eval()
    out = model(x, labels=x, skip_logits=True)
    assert out.logits is None and len(_flce_calls()) == 1
    with pytest.raises(ValueError, match="skip_logits is True, but labels and shift_labels are None"):
        model(x, skip_logits=True)


def test_lora_like_lm_head_takes_the_logits_path():
    _, model = _pair("llama", fused_linear_cross_entropy=True)

    class LoraLinear(nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base_layer = base
            self.weight = base.weight

        def forward(self, x):
            return self.base_layer(x) + 0.0

    model.lm_head = LoraLinear(model.lm_head)
    model.train()
    x = torch.randint(0, VOCAB, (1, 6))
    with pytest.warns(ligerd_warning()):
        out = model(x, labels=x)
    assert out.logits is not None and not _flce_calls()


def ligerd_warning():
    from ligerd import LigerdWarning
    return LigerdWarning


def test_cross_entropy_patch_goes_through_liger_cross_entropy():
    ref, model = _pair("granite")  # granite's default: cross_entropy=True
    ref.train(), model.train()
    x = torch.randint(0, VOCAB, (2, 8))
    a = hf(ref)(x, labels=x, num_items_in_batch=torch.tensor(11))
    hf_standins.CALLS.clear()
    b = model(x, labels=x, num_items_in_batch=torch.tensor(11))
    ce = [c for n, c in hf_standins.CALLS if n == "liger_cross_entropy"]
    assert ce == [{"reduction": "sum", "ignore_index": -100}]
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_fully_patched_model_matches_hf(family):
    """Every patch on (kernels via the float64 reference launcher, stand-ins for the ops not yet
    in the tree): eval logits, training loss and gradients match transformers' to fp32 level."""
    ref = build(family)
    x = torch.randint(0, VOCAB, (2, 12))
    ref.eval()
    with torch.no_grad():
        want_logits = ref(x).logits
    ref.train()
    a = ref(x, labels=x)  # all of transformers' reference computed before anything is patched
    a.loss.backward()
    apply(family)
    model = build(family)
    model.load_state_dict(ref.state_dict())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, want_logits, rtol=1e-4, atol=1e-4)
    model.train()
    b = model(x, labels=x)
    assert (b.logits is None) == (family != "granite")  # granite's default is cross_entropy
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-4, atol=1e-5)
    b.loss.backward()
    for (n, p), (_, q) in zip(ref.named_parameters(), model.named_parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.parametrize("impl", ["eager", "batched_mm", "grouped_mm"])
def test_liger_experts_under_each_transformers_experts_implementation(monkeypatch, impl):
    """LigerExperts keeps transformers' expert GEMMs (config._experts_implementation) and runs
    ligerd's SwiGLU between them, for every implementation transformers picks."""
    from ligerd import _backend
    cfg = tiny_config("mixtral")
    torch.manual_seed(0)
    ref = AutoModelForCausalLM.from_config(cfg, experts_implementation=impl).eval()
    x = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        want = ref(x).logits
    lt.apply_liger_kernel_to_mixtral(rope=False, rms_norm=False, fused_linear_cross_entropy=False)
    model = AutoModelForCausalLM.from_config(cfg, experts_implementation=impl).eval()
    model.load_state_dict(ref.state_dict())
    assert model.config._experts_implementation == impl
    ops = []
    inner = _backend._test_launcher
    monkeypatch.setattr(_backend, "_test_launcher", lambda op, t, s: (ops.append(op), inner(op, t, s)))
    with torch.no_grad():
        got = model(x).logits
    assert "swiglu_fwd" in ops
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
