"""One-line patching of Hugging Face transformers models onto ligerd's kernels, with
Liger-Kernel's API (``liger_kernel/transformers/monkey_patch.py``; liger-api.md section 2):

    from ligerd.transformers import apply_liger_kernel_to_llama
    apply_liger_kernel_to_llama()                 # models built after this use ligerd
    apply_liger_kernel_to_llama(model=model)      # ... and this already-built one too

Every model type of Liger-Kernel 0.8.5 has its function (``MODEL_TYPE_TO_APPLY_LIGER_FN``: 53
model types). Twelve families are hand-written here (``FAMILIES``, below); the other types are a
table (model_specs.py, applied by spec_patching.py: subclasses of transformers' own classes, and
the fused-loss forward of model/fused_forward.py); docs/models.md lists what each patches and what
ligerd lacks.

What a call does for the twelve, for the family's modeling module
``transformers.models.<x>.modeling_<x>``:
- ``rope``: ``apply_rotary_pos_emb`` -> ``liger_rotary_pos_emb`` (module function; the attention
  forwards look it up at call time, so built models are affected too).
- ``rms_norm``: ``<X>RMSNorm`` -> ``LigerRMSNorm`` (Gemma: ``LigerRMSNormForGemma``, offset 1 and
  gemma casting; Gemma2/3: not in place; OLMo2: not in place), including q_norm/k_norm where the
  family has them (qwen3, qwen3_moe, gemma3, olmo2).
- ``swiglu`` / ``geglu``: ``<X>MLP`` -> ``LigerSwiGLUMLP`` / ``LigerGEGLUMLP`` / Phi-3's
  ``LigerPhi3SwiGLUMLP``; MoE families also ``<X>Experts`` -> ``LigerExperts`` and Qwen3-MoE's
  dense ``Qwen3MoeMLP`` -> ``LigerQwen3MoeSwiGLUMLP``.
- ``cross_entropy``: transformers' ``loss.loss_utils.fixed_cross_entropy`` (what every causal-LM
  loss calls) -> one on ``liger_cross_entropy``. Liger-Kernel instead rebinds
  ``loss_utils.nn.functional.cross_entropy``, which is ``torch.nn.functional.cross_entropy`` itself,
  for the whole process; this is the same effect on transformers' losses without that.
- ``fused_linear_cross_entropy``: ``<X>ForCausalLM.forward`` -> ``model/<x>.py:lce_forward``
  (training loss without materialising logits); with ``model=`` only that instance's forward.
- ``model=``: class replacement only affects models built later, so a built model's existing
  modules are patched in place (Liger's instance patching): each matching module gets the Liger
  attributes (offset, casting_mode, in_place, ...) and ``forward``/``extra_repr``/``_get_name``
  bound on the instance. PEFT models (``PeftModel``, LoRA tuners) are unwrapped to the
  transformers model and ``ModulesToSaveWrapper`` copies are patched, without importing peft.

``cross_entropy`` and ``fused_linear_cross_entropy`` are mutually exclusive (ValueError).
Every attribute replaced is recorded first; ``revert_liger_kernel_patches()`` restores them all
(Liger has no undo; its tests reload the modeling modules instead).

Targets transformers 5.x (tested with 5.17 and 5.25); anything else raises ``ConfigError``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import types
from dataclasses import dataclass
from typing import Dict, Optional

from ligerd._errors import ConfigError
# The patch record, checks and PEFT unwrapping (shared with spec_patching.py); re-exported here,
# where they have always been (mp._set, mp.original, mp.unwrap_peft, ...).
from ligerd.transformers._patching import (  # noqa: F401
    SUPPORTED_TRANSFORMERS, _MISSING, _Record, _bind, _check_loss_flags, _ligerd_attr, _own,
    _records, _set, check_transformers_version, original, patched_attributes,
    revert_liger_kernel_patches, unwrap_peft)

log = logging.getLogger("ligerd")

# ---------------------------------------------------------------------------------------------
# Instance patching (model=)


def _named(cls_name):
    return lambda self: cls_name


def _init_defaults(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def patch_rms_norm_instance(module, norm_cls) -> None:
    """Make a built transformers RMSNorm compute as ``norm_cls`` (LigerRMSNorm or a preset) with
    its own weight and eps."""
    from ligerd.transformers.rms_norm import LigerRMSNorm
    d = _init_defaults(norm_cls)
    eps = getattr(module, "variance_epsilon", None)
    if eps is None:
        eps = getattr(module, "eps", 1e-6)
    weight = getattr(module, "weight", None)
    _set(module, "variance_epsilon", eps)
    _set(module, "offset", d["offset"])
    _set(module, "casting_mode", d["casting_mode"])
    _set(module, "in_place", d["in_place"])
    _set(module, "row_mode", d.get("row_mode"))
    _set(module, "elementwise_affine", weight is not None)
    _set(module, "hidden_size", weight.shape[0] if weight is not None else None)
    _bind(module, "forward", LigerRMSNorm.forward)
    _bind(module, "extra_repr", LigerRMSNorm.extra_repr)
    _bind(module, "_get_name", _named(norm_cls.__name__))


def _patch_forward_instance(module, forward, liger_cls) -> None:
    _bind(module, "forward", forward)
    _bind(module, "_get_name", _named(liger_cls.__name__))


def patch_experts_instance(module) -> None:
    from ligerd.transformers.mlp_variants import LigerExperts, experts_apply_gate, experts_forward
    _bind(module, "_apply_gate", experts_apply_gate)
    _patch_forward_instance(module, experts_forward, LigerExperts)


# ---------------------------------------------------------------------------------------------
# Families


@dataclass(frozen=True)
class Family:
    name: str            # apply_liger_kernel_to_<name>
    model_type: str      # config.model_type
    module: str          # modeling module
    causal_lm: str       # *ForCausalLM class
    rms_norm: str        # RMSNorm class in the modeling module
    norm_cls: str        # ligerd class replacing it (ligerd.transformers)
    mlp: str             # MLP class in the modeling module
    mlp_kind: str        # "swiglu" | "geglu" | "phi3" | "qwen3_moe"
    experts: Optional[str] = None  # stacked-experts class (MoE)

    @property
    def mlp_flag(self) -> str:
        return "geglu" if self.mlp_kind == "geglu" else "swiglu"


def _fam(name, prefix, mlp_kind="swiglu", norm_cls="LigerRMSNorm", experts=None, model_type=None,
         module=None, mlp=None):
    return Family(name=name, model_type=model_type or name,
                  module=f"transformers.models.{module or name}.modeling_{module or name}",
                  causal_lm=f"{prefix}ForCausalLM", rms_norm=f"{prefix}RMSNorm", norm_cls=norm_cls,
                  mlp=f"{prefix}MLP" if mlp is None else mlp, mlp_kind=mlp_kind, experts=experts)


FAMILIES: Dict[str, Family] = {f.name: f for f in [
    _fam("llama", "Llama"),
    _fam("mistral", "Mistral"),
    # Mixtral has no dense MLP in 5.x: its SparseMoeBlock holds MixtralExperts.
    _fam("mixtral", "Mixtral", mlp="", experts="MixtralExperts"),
    _fam("gemma", "Gemma", mlp_kind="geglu", norm_cls="LigerRMSNormForGemma"),
    _fam("gemma2", "Gemma2", mlp_kind="geglu", norm_cls="LigerRMSNormForGemma2"),
    _fam("gemma3_text", "Gemma3", mlp_kind="geglu", norm_cls="LigerRMSNormForGemma3",
         module="gemma3"),
    _fam("qwen2", "Qwen2"),
    _fam("qwen3", "Qwen3"),
    _fam("qwen3_moe", "Qwen3Moe", mlp_kind="qwen3_moe", experts="Qwen3MoeExperts"),
    _fam("phi3", "Phi3", mlp_kind="phi3"),
    _fam("granite", "Granite"),
    _fam("olmo2", "Olmo2", norm_cls="LigerRMSNormForOlmo2"),
]}


def _mlp_cls_and_forward(kind):
    from ligerd.transformers import geglu as geglu_mod
    from ligerd.transformers import mlp_variants as mv
    from ligerd.transformers import swiglu as swiglu_mod
    return {
        "swiglu": (swiglu_mod.LigerSwiGLUMLP, mv.swiglu_mlp_forward),
        "geglu": (geglu_mod.LigerGEGLUMLP, mv.geglu_mlp_forward),
        "phi3": (mv.LigerPhi3SwiGLUMLP, mv.phi3_swiglu_forward),
        "qwen3_moe": (mv.LigerQwen3MoeSwiGLUMLP, mv.swiglu_mlp_forward),
    }[kind]


def _lce_forward(fam: Family):
    mod = "gemma3" if fam.name == "gemma3_text" else fam.name
    return importlib.import_module(f"ligerd.transformers.model.{mod}").lce_forward


def apply_family(fam: Family, *, rope: bool, cross_entropy: bool, fused_linear_cross_entropy: bool,
                 rms_norm: bool, mlp: bool, model=None) -> None:
    """The body of every ``apply_liger_kernel_to_<family>`` (see the module docstring)."""
    _check_loss_flags(cross_entropy, fused_linear_cross_entropy)
    check_transformers_version()
    modeling = importlib.import_module(fam.module)
    import ligerd.transformers as lt

    # Resolve everything first, so that a missing op fails before anything is patched.
    rope_fn = _ligerd_attr("liger_rotary_pos_emb", "rope") if rope else None
    norm_cls = getattr(lt, fam.norm_cls) if rms_norm else None
    mlp_cls, mlp_forward = _mlp_cls_and_forward(fam.mlp_kind) if mlp else (None, None)
    if cross_entropy:
        _ligerd_attr("liger_cross_entropy", "cross_entropy")
    lce_forward = None
    if fused_linear_cross_entropy:
        _ligerd_attr("liger_fused_linear_cross_entropy", "fused_linear_cross_entropy",
                     "ligerd.transformers.functional")
        lce_forward = _lce_forward(fam)
    root = unwrap_peft(model) if model is not None else None
    if root is not None and mlp:
        act = getattr(getattr(root, "config", None), "hidden_act", "silu")
        if fam.mlp_flag == "swiglu" and act not in ("silu", "swish"):
            raise ValueError(f"ligerd: swiglu=True on a {fam.name} model whose hidden_act is "
                             f"{act!r}; SwiGLU needs silu/swish (pass swiglu=False)")
    # The classes as transformers defines them (before any ligerd patch), for the instance walk.
    orig_norm = original(modeling, fam.rms_norm) if rms_norm else None
    orig_mlp = original(modeling, fam.mlp) if mlp and fam.mlp else None
    orig_experts = original(modeling, fam.experts) if mlp and fam.experts else None
    orig_causal_lm = getattr(modeling, fam.causal_lm)

    if rope:
        _set(modeling, "apply_rotary_pos_emb", rope_fn)
    if rms_norm:
        _set(modeling, fam.rms_norm, norm_cls)
    if mlp:
        if fam.mlp:
            _set(modeling, fam.mlp, mlp_cls)
        if fam.experts:
            from ligerd.transformers.mlp_variants import LigerExperts
            _set(modeling, fam.experts, LigerExperts)
    if cross_entropy:
        from transformers.loss import loss_utils
        from ligerd.transformers.model.loss_utils import liger_fixed_cross_entropy
        _set(loss_utils, "fixed_cross_entropy", liger_fixed_cross_entropy)
    if fused_linear_cross_entropy and root is None:
        _set(orig_causal_lm, "forward", lce_forward)

    if root is None:
        return
    if fused_linear_cross_entropy:
        if isinstance(root, orig_causal_lm):
            _set(root, "forward", types.MethodType(lce_forward, root))
        else:
            log.info("ligerd: %s is not a %s; its forward is left as is (fused linear "
                     "cross-entropy applies to causal-LM heads only)", type(root).__name__,
                     fam.causal_lm)
    for m in root.modules():
        if orig_norm is not None and type(m) is not norm_cls and isinstance(m, orig_norm):
            patch_rms_norm_instance(m, norm_cls)
        elif orig_mlp is not None and isinstance(m, orig_mlp):
            _patch_forward_instance(m, mlp_forward, mlp_cls)
        elif orig_experts is not None and isinstance(m, orig_experts):
            patch_experts_instance(m)


# ---------------------------------------------------------------------------------------------
# The public apply functions (Liger-Kernel's names, keyword arguments and defaults)


def apply_liger_kernel_to_llama(rope: bool = True, cross_entropy: bool = False,
                                fused_linear_cross_entropy: bool = True, rms_norm: bool = True,
                                swiglu: bool = True, model=None) -> None:
    """LLaMA (2, 3, 3.x): rope, LlamaRMSNorm, LlamaMLP (SwiGLU), CE or the fused linear CE forward."""
    apply_family(FAMILIES["llama"], rope=rope, cross_entropy=cross_entropy,
                 fused_linear_cross_entropy=fused_linear_cross_entropy, rms_norm=rms_norm,
                 mlp=swiglu, model=model)


def apply_liger_kernel_to_mistral(rope: bool = True, cross_entropy: bool = False,
                                  fused_linear_cross_entropy: bool = True, rms_norm: bool = True,
                                  swiglu: bool = True, model=None) -> None:
    """Mistral: rope, MistralRMSNorm, MistralMLP (SwiGLU), CE or the fused linear CE forward."""
    apply_family(FAMILIES["mistral"], rope=rope, cross_entropy=cross_entropy,
                 fused_linear_cross_entropy=fused_linear_cross_entropy, rms_norm=rms_norm,
                 mlp=swiglu, model=model)


def apply_liger_kernel_to_mixtral(rope: bool = True, cross_entropy: bool = False,
                                  fused_linear_cross_entropy: bool = True, rms_norm: bool = True,
                                  swiglu: bool = True, model=None) -> None:
    """Mixtral: rope, MixtralRMSNorm, MixtralExperts (SwiGLU between transformers' expert GEMMs,
    see mlp_variants.LigerExperts), CE or the fused linear CE forward (with the router aux loss)."""
    apply_family(FAMILIES["mixtral"], rope=rope, cross_entropy=cross_entropy,
                 fused_linear_cross_entropy=fused_linear_cross_entropy, rms_norm=rms_norm,
                 mlp=swiglu, model=model)


def apply_liger_kernel_to_gemma(rope: bool = True, cross_entropy: bool = False,
                                fused_linear_cross_entropy: bool = True, rms_norm: bool = True,
                                geglu: bool = True, model=None) -> None:
    """Gemma: rope, GemmaRMSNorm (offset 1, gemma casting), GemmaMLP (GeGLU, tanh GELU), CE or
    the fused linear CE forward."""
    apply_family(FAMILIES["gemma"], rope=rope, cross_entropy=cross_entropy,
                 fused_linear_cross_entropy=fused_linear_cross_entropy, rms_norm=rms_norm,
                 mlp=geglu, model=model)


def apply_liger_kernel_to_gemma2(rope: bool = True, cross_entropy: bool = False,
                                 fused_linear_cross_entropy: bool = True, rms_norm: bool = True,
                                 geglu: bool = True, model=None) -> None:
    """Gemma 2: as Gemma with the RMSNorm not in place (sandwich norms) and the final logit
    soft-capping inside the fused linear CE."""
    apply_family(FAMILIES["gemma2"], rope=rope, cross_entropy=cross_entropy,
                 fused_linear_cross_entropy=fused_linear_cross_entropy, rms_norm=rms_norm,
                 mlp=geglu, model=model)


def apply_liger_kernel_to_gemma3_text(rope: bool = True, cross_entropy: bool = False,
                                      fused_linear_cross_entropy: bool = True,
                                      rms_norm: bool = True, geglu: bool = True,
                                      model=None) -> None:
    """Gemma 3 text (Gemma3ForCausalLM, model type gemma3_text): as Gemma 2, q_norm/k_norm
    included."""
    apply_family(FAMILIES["gemma3_text"], rope=rope, cross_entropy=cross_entropy,
                 fused_linear_cross_entropy=fused_linear_cross_entropy, rms_norm=rms_norm,
                 mlp=geglu, model=model)


def apply_liger_kernel_to_qwen2(rope: bool = True, cross_entropy: bool = False,
                                fused_linear_cross_entropy: bool = True, rms_norm: bool = True,
                                swiglu: bool = True, model=None) -> None:
    """Qwen2 / Qwen2.5: rope, Qwen2RMSNorm, Qwen2MLP (SwiGLU), CE or the fused linear CE forward."""
    apply_family(FAMILIES["qwen2"], rope=rope, cross_entropy=cross_entropy,
                 fused_linear_cross_entropy=fused_linear_cross_entropy, rms_norm=rms_norm,
                 mlp=swiglu, model=model)


def apply_liger_kernel_to_qwen3(rope: bool = True, cross_entropy: bool = False,
                                fused_linear_cross_entropy: bool = True, rms_norm: bool = True,
                                swiglu: bool = True, model=None) -> None:
    """Qwen3: rope, Qwen3RMSNorm (q_norm/k_norm included), Qwen3MLP (SwiGLU), CE or fused
    linear CE."""
    apply_family(FAMILIES["qwen3"], rope=rope, cross_entropy=cross_entropy,
                 fused_linear_cross_entropy=fused_linear_cross_entropy, rms_norm=rms_norm,
                 mlp=swiglu, model=model)


def apply_liger_kernel_to_qwen3_moe(rope: bool = True, cross_entropy: bool = False,
                                    fused_linear_cross_entropy: bool = True, rms_norm: bool = True,
                                    swiglu: bool = True, model=None) -> None:
    """Qwen3-MoE: as Qwen3 plus Qwen3MoeExperts -> LigerExperts and Qwen3MoeMLP ->
    LigerQwen3MoeSwiGLUMLP."""
    apply_family(FAMILIES["qwen3_moe"], rope=rope, cross_entropy=cross_entropy,
                 fused_linear_cross_entropy=fused_linear_cross_entropy, rms_norm=rms_norm,
                 mlp=swiglu, model=model)


def apply_liger_kernel_to_phi3(rope: bool = True, cross_entropy: bool = False,
                               fused_linear_cross_entropy: bool = True, rms_norm: bool = True,
                               swiglu: bool = True, model=None) -> None:
    """Phi-3: rope, Phi3RMSNorm, Phi3MLP (fused gate_up -> LigerPhi3SwiGLUMLP), CE or fused
    linear CE."""
    apply_family(FAMILIES["phi3"], rope=rope, cross_entropy=cross_entropy,
                 fused_linear_cross_entropy=fused_linear_cross_entropy, rms_norm=rms_norm,
                 mlp=swiglu, model=model)


def apply_liger_kernel_to_granite(rope: bool = True, cross_entropy: bool = True,
                                  fused_linear_cross_entropy: bool = False, rms_norm: bool = True,
                                  swiglu: bool = True, model=None) -> None:
    """Granite (3.x): rope, GraniteRMSNorm, GraniteMLP (SwiGLU), CE by default (as Liger).
    Unlike Liger-Kernel, ``fused_linear_cross_entropy=True`` is supported: the forward divides the
    hidden states by ``config.logits_scaling`` (== dividing the logits) before the fused loss."""
    apply_family(FAMILIES["granite"], rope=rope, cross_entropy=cross_entropy,
                 fused_linear_cross_entropy=fused_linear_cross_entropy, rms_norm=rms_norm,
                 mlp=swiglu, model=model)


def apply_liger_kernel_to_olmo2(rope: bool = True, cross_entropy: bool = False,
                                fused_linear_cross_entropy: bool = True, rms_norm: bool = True,
                                swiglu: bool = True, model=None) -> None:
    """OLMo 2: rope, Olmo2RMSNorm (LigerRMSNormForOlmo2, not in place; q_norm/k_norm included),
    Olmo2MLP (SwiGLU), CE or the fused linear CE forward."""
    apply_family(FAMILIES["olmo2"], rope=rope, cross_entropy=cross_entropy,
                 fused_linear_cross_entropy=fused_linear_cross_entropy, rms_norm=rms_norm,
                 mlp=swiglu, model=model)


MODEL_TYPE_TO_APPLY_LIGER_FN = {
    "llama": apply_liger_kernel_to_llama,
    "mistral": apply_liger_kernel_to_mistral,
    "mixtral": apply_liger_kernel_to_mixtral,
    "gemma": apply_liger_kernel_to_gemma,
    "gemma2": apply_liger_kernel_to_gemma2,
    "gemma3_text": apply_liger_kernel_to_gemma3_text,
    "qwen2": apply_liger_kernel_to_qwen2,
    "qwen3": apply_liger_kernel_to_qwen3,
    "qwen3_moe": apply_liger_kernel_to_qwen3_moe,
    "phi3": apply_liger_kernel_to_phi3,
    "granite": apply_liger_kernel_to_granite,
    "olmo2": apply_liger_kernel_to_olmo2,
}


# ---------------------------------------------------------------------------------------------
# The other Liger-Kernel 0.8.5 model types: table-driven (model_specs.py, spec_patching.py)


def _spec_doc(spec) -> str:
    from ligerd.transformers import spec_patching as sp
    lines = [f"{spec.summary}: Liger-Kernel's apply_liger_kernel_to_{spec.name}, table-driven "
             f"(ligerd/transformers/model_specs.py; docs/models.md)."]
    rope_fns = [(a, f"{sp.rope_fn_module(n)}.{n}") for a, n in spec.rope_fns]
    if spec.rope == "std" and any(n == "rope" for n, _ in spec.signature):
        rope_fns.insert(0, ("apply_rotary_pos_emb", "ligerd.transformers.rope.liger_rotary_pos_emb"))
    if rope_fns:
        lines.append("rope: " + ", ".join(f"{a} -> {f}" for a, f in rope_fns) + ".")
    if spec.rope not in ("std", "") and any(n == "rope" for n, _ in spec.signature):
        lines.append(f"rope: kept as transformers' (ligerd lacks {spec.rope}; warned once).")
    if spec.norms:
        lines.append("rms_norm: " + ", ".join(n.cls for n in spec.norms) + ".")
    if spec.mlps:
        lines.append(f"{spec.mlp_flag}: " + ", ".join(f"{m.cls} ({m.kind})" for m in spec.mlps) + ".")
    if spec.mlp_missing:
        lines.append(f"{spec.mlp_flag}: kept as transformers' for {spec.mlp_missing}.")
    if spec.heads:
        lines.append("fused_linear_cross_entropy: " + ", ".join(h.cls for h in spec.heads) + ".forward.")
    if spec.text_types:
        lines.append("Also applies " + ", ".join(f"apply_liger_kernel_to_{t}" for t in spec.text_types)
                     + " (cross_entropy and fused_linear_cross_entropy off).")
    if spec.heads_note:
        lines.append(spec.heads_note[0].upper() + spec.heads_note[1:] + ".")
    del sp
    return "\n".join(lines)


def _make_spec_apply(spec):
    """``apply_liger_kernel_to_<spec.name>`` with Liger's signature (integrations inspect it)."""
    from ligerd.transformers.spec_patching import apply_spec
    params = []
    for name, default in spec.signature:
        if name == "kwargs":
            params.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
        else:
            params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                            default=default))
    sig = inspect.Signature(params)

    def apply(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)  # TypeError for an unknown keyword, as a def would
        bound.apply_defaults()
        flags = dict(bound.arguments)
        extra = flags.pop("kwargs", {}) or {}
        apply_spec(spec, flags, extra, MODEL_TYPE_TO_APPLY_LIGER_FN)

    apply.__signature__ = sig
    apply.__name__ = apply.__qualname__ = f"apply_liger_kernel_to_{spec.name}"
    apply.__module__ = __name__
    apply.__doc__ = _spec_doc(spec)
    return apply


def _install_spec_functions():
    from ligerd.transformers.model_specs import MODEL_TYPE_ALIASES, SPECS
    for spec in SPECS:
        fn = _make_spec_apply(spec)
        globals()[fn.__name__] = fn
        MODEL_TYPE_TO_APPLY_LIGER_FN[spec.name] = fn
    for model_type, name in MODEL_TYPE_ALIASES.items():
        MODEL_TYPE_TO_APPLY_LIGER_FN[model_type] = globals()[f"apply_liger_kernel_to_{name}"]


_install_spec_functions()
SPEC_APPLY_NAMES = tuple(f"apply_liger_kernel_to_{s}" for s in
                         __import__("ligerd.transformers.model_specs", fromlist=["SPECS"]).SPEC_BY_NAME)


def unavailable_model_types() -> list:
    """The model types of MODEL_TYPE_TO_APPLY_LIGER_FN whose modeling module the installed
    transformers does not have (their apply functions warn and patch nothing)."""
    import importlib.util
    from ligerd.transformers.model_specs import SPEC_BY_NAME
    out = []
    for model_type, fn in MODEL_TYPE_TO_APPLY_LIGER_FN.items():
        name = fn.__name__[len("apply_liger_kernel_to_"):]
        spec = SPEC_BY_NAME.get(name)
        module = spec.module if spec else FAMILIES[name].module.split(".")[2]
        if importlib.util.find_spec(f"transformers.models.{module}") is None:
            out.append(model_type)
    return sorted(out)


def apply_fn_for(model_type):
    """The apply function for ``model_type``; ConfigError naming the supported ones otherwise."""
    fn = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if fn is None:
        raise ConfigError(
            f"ligerd.transformers: no ligerd patch for model type {model_type!r}. Supported model "
            f"types: {', '.join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN))} (with transformers 5.x)")
    return fn


def split_apply_kwargs(fn, kwargs: dict) -> tuple:
    """(kwargs ``fn`` accepts, the rest)."""
    params = inspect.signature(fn).parameters
    mine = {k: v for k, v in kwargs.items() if k in params}
    rest = {k: v for k, v in kwargs.items() if k not in params}
    return mine, rest


def _apply_liger_kernel(model_type: str, **kwargs) -> None:
    """Patch the classes of ``model_type`` before models are built (kwargs the family's apply
    function does not take are ignored, as in Liger-Kernel)."""
    check_transformers_version()
    fn = apply_fn_for(model_type)
    mine, _ = split_apply_kwargs(fn, kwargs)
    mine.pop("model", None)
    log.info("ligerd: applying %s(%s)", fn.__name__, mine)
    fn(**mine)


def _apply_liger_kernel_to_instance(model, **kwargs) -> None:
    """Patch a built model (and its type's classes), from ``model.config.model_type``. PEFT
    wrappers are unwrapped. What HF Trainer's ``use_liger_kernel``, TRL and others call."""
    check_transformers_version()
    root = unwrap_peft(model)
    model_type = getattr(getattr(root, "config", None), "model_type", None)
    fn = apply_fn_for(model_type)
    mine, _ = split_apply_kwargs(fn, kwargs)
    mine.pop("model", None)
    log.info("ligerd: applying %s(%s) to a %s instance", fn.__name__, mine, type(root).__name__)
    fn(model=root, **mine)


__all__ = [
    "MODEL_TYPE_TO_APPLY_LIGER_FN",
    "revert_liger_kernel_patches",
    "_apply_liger_kernel",
    "_apply_liger_kernel_to_instance",
    "unavailable_model_types",
] + [f"apply_liger_kernel_to_{name}" for name in FAMILIES] + list(SPEC_APPLY_NAMES)
