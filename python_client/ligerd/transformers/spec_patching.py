"""Table-driven model patching: what ``apply_liger_kernel_to_<type>`` does for the model types of
``ligerd.transformers.model_specs`` (the Liger-Kernel 0.8.5 model types beyond the first twelve,
whose hand-written patches are ``monkey_patch.FAMILIES``). docs/models.md has the table.

A ``Spec`` names, for one modeling module, the transformers classes and functions each keyword
argument replaces, and the parts ligerd has no kernel for. ``apply_spec`` then does what
``monkey_patch.apply_family`` does for the first twelve:

- ``rope``: ``apply_rotary_pos_emb`` -> ``liger_rotary_pos_emb`` where the module's RoPE is the
  standard rotate-half one, over the whole head or its first rotary_dim (partial rotary: cos/sin
  narrower than the head); ``rope_fns``: the interleaved / complex / half-size-cos / one-tensor
  RoPE functions (GLM-4, GLM-4V's text, DeepSeek-V2/V3/V4, Llama-4, GPT-OSS, Gemma-4) ->
  ligerd.transformers.rope_interleaved (ligerd's kernel between de-/re-interleaving copies), and
  the vision towers' ``apply_rotary_pos_emb_vision`` -> ``liger_rotary_pos_emb_vision``
  (ligerd.transformers.rope); a RoPE ligerd cannot compute is kept with a one-time warning naming it.
- ``rms_norm`` / ``swiglu`` / ``geglu`` / ``relu_squared`` / ``layer_norm``: the RMSNorm, MLP,
  experts and LayerNorm classes become subclasses of themselves whose ``forward`` runs ligerd's
  kernel (RMSNorm with the offset / casting mode / in-place setting that reproduces that class's
  arithmetic, SwiGLU, GeGLU or squared ReLU between the class's own projections, the experts'
  activation between transformers' own expert GEMMs). Liger-Kernel installs its ReLU² by
  rebinding ``ACT2FN["relu2"]``, shared by every modeling module; the subclass changes only the
  spec's MLP class. A subclass keeps the class's constructor, parameters, state-dict keys and weight
  initialisation, which differ from class to class among these models (Liger-Kernel installs its
  own classes instead). A module whose configuration the kernel does not compute (an MLP whose
  activation is not SiLU / tanh-GELU / ReLU², a stacked-experts module whose layout is not the one
  its kind names) keeps its stock forward, with a one-time warning. Experts: the stacked
  Mixtral-style ones get ligerd's SwiGLU as ``_apply_gate`` and forward, Gemma-4's (same layout,
  tanh-GELU) ligerd's GeGLU as ``_apply_gate`` and that forward; Llama-4's transposed ones
  a forward with ligerd's SwiGLU between its ``bmm``s; GPT-OSS's (interleaved, biased, alpha and
  limit) and DeepSeek-V4's (clamped) ones ligerd's clamped GLU as ``_apply_gate``, their own
  forward kept (transformers' GEMM implementations call the hook).
- ``cross_entropy``: transformers' ``fixed_cross_entropy`` -> ligerd's, as for the first twelve.
- ``fused_linear_cross_entropy``: the ``*ForCausalLM`` / ``*ForConditionalGeneration`` forwards
  -> ``model/fused_forward.py`` (transformers' forward with its head and loss fused).
- ``model=``: the same, in place, on a built model's modules (PEFT wrappers unwrapped), and for
  the vision-language types whose text model is another model type (LLaVA, InternVL, SmolVLM)
  that type's apply function on the model, as Liger does.

A modeling module the installed transformers does not have is named in a one-time warning and
nothing is patched (never an exception). Every attribute set goes through ``_patching._set``,
so ``revert_liger_kernel_patches()`` undoes it all.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import types
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch.nn as nn

from ligerd._errors import warn_once

log = logging.getLogger("ligerd")

# ---------------------------------------------------------------------------------------------
# The table's vocabulary


@dataclass(frozen=True)
class Norm:
    """An RMSNorm class of the modeling module and the ligerd settings that reproduce it:
    ``offset`` (1.0 for ``(1 + w)``), ``casting`` ("llama": weight applied in the input dtype;
    "gemma": everything in fp32), ``in_place`` (backward writes dX over dY; off where the model
    reuses dY, as Liger sets it per model)."""
    cls: str
    offset: float = 0.0
    casting: str = "llama"
    in_place: bool = True


@dataclass(frozen=True)
class MLP:
    """An MLP or experts class and how ligerd computes it:
    "swiglu" / "geglu": ``down(act(gate(x)) * up(x))`` (SiLU / tanh-GELU);
    "fused_swiglu": ``down(silu(g) * u)`` with ``g, u = gate_up_proj(x).chunk(2)`` (GLM-4);
    "falcon_h1": SwiGLU with Falcon-H1's gate and down multipliers;
    "clamped_swiglu": SwiGLU of DeepSeek-V4's clamped gate and up projections;
    "experts": stacked experts ``gate_up_proj [E, 2I, H]`` / ``down_proj [E, H, I]``, SiLU;
    "geglu_experts": the same layout with tanh-GELU (Gemma-4's experts), ligerd's GeGLU;
    "llama4_experts": Llama-4's transposed experts ``gate_up_proj [E, H, 2I]`` /
    ``down_proj [E, I, H]`` between ``bmm``s, SiLU;
    "gpt_oss_experts": GPT-OSS's experts, their ``_apply_gate`` (interleaved, clamped, alpha,
    ``up + 1``) on ligerd's clamped GLU, their forward (GEMMs, biases) kept;
    "clamped_experts": DeepSeek-V4's experts, their ``_apply_gate`` (``silu(g) * u`` of clamped
    halves) on ligerd's clamped GLU, their forward kept;
    "relu2": ``down(relu(up(x))^2)``, the squared-ReLU MLP without a gate (Nemotron)."""
    cls: str
    kind: str = "swiglu"


@dataclass(frozen=True)
class Head:
    """A ``*ForCausalLM`` / ``*ForConditionalGeneration`` class whose forward the fused linear
    cross-entropy replaces, and what it does to the logits after lm_head (model/fused_forward.py):
    "" nothing, "softcap" the text config's final_logit_softcapping, "falcon_h1" times
    ``model.lm_head_multiplier``, "muse" times the text config's output_multiplier, then softcap."""
    cls: str
    logits: str = ""


@dataclass(frozen=True)
class Spec:
    name: str                              # apply_liger_kernel_to_<name>
    module: str                            # transformers.models.<module>.modeling_<module>
    signature: Tuple[Tuple[str, object], ...]  # Liger's keyword arguments and defaults; ("kwargs", "**")
    summary: str = ""                      # one line for the docstring
    rope: str = "std"                      # "std", what ligerd lacks (warned, stock kept), or ""
                                           # (the text_types' patches handle it / nothing kept)
    rope_fns: Tuple[Tuple[str, str], ...] = ()  # (modeling function, ligerd.transformers name):
                                           # other RoPE functions ligerd computes (rope_fn_module)
    norms: Tuple[Norm, ...] = ()
    mlps: Tuple[MLP, ...] = ()
    mlp_missing: str = ""                  # the MLP flag's part ligerd lacks (warned)
    layer_norm_modules: Tuple[str, ...] = ()  # modules whose ``nn.LayerNorm`` becomes ligerd's
    layer_norm_names: Tuple[str, ...] = ()    # LayerNorm names imported into the modeling module
    heads: Tuple[Head, ...] = ()
    text_types: Tuple[str, ...] = ()       # model types whose patches this one applies too
    delegate: bool = False                 # with model=: text/vision config types' apply functions
    heads_note: str = ""                   # what the fused forward does not cover (docs)

    @property
    def mlp_flag(self) -> Optional[str]:
        names = [n for n, _ in self.signature]
        for flag in ("swiglu", "geglu", "relu_squared"):
            if flag in names:
                return flag
        return None


# The module of each ``rope_fns`` function: ligerd.transformers.rope_interleaved, except those
# named here (the vision RoPE lives where Liger-Kernel has it, liger_kernel.transformers.rope).
ROPE_FN_MODULES: Dict[str, str] = {"liger_rotary_pos_emb_vision": "ligerd.transformers.rope"}


def rope_fn_module(name: str) -> str:
    """The ligerd.transformers module defining the ``rope_fns`` function ``name``."""
    return ROPE_FN_MODULES.get(name, "ligerd.transformers.rope_interleaved")


# ---------------------------------------------------------------------------------------------
# Generated classes (kept as attributes of this module so that they pickle)


_generated: Dict[tuple, type] = {}


def _subclass(orig: type, mixin: type, key: tuple, attrs: dict) -> type:
    k = (orig, mixin) + key
    cls = _generated.get(k)
    if cls is None:
        name = f"Liger{orig.__name__}"
        if any(c.__name__ == name for c in _generated.values()):
            name = f"{name}_{len(_generated)}"
        cls = type(name, (mixin, orig), dict(attrs, __module__=__name__, __qualname__=name))
        setattr(sys.modules[__name__], name, cls)
        _generated[k] = cls
    return cls


def is_liger_module(module) -> bool:
    """Whether a built module computes through ligerd (a generated subclass, or a stock module
    patched in place)."""
    if getattr(module, "_ligerd_ok", True) is False:  # kept transformers' forward
        return False
    return isinstance(module, _LigerMixin) or "_ligerd_kind" in getattr(module, "__dict__", {})


class _LigerMixin:
    pass


# RMSNorm ---------------------------------------------------------------------------------------


def _norm_eps(module) -> float:
    for name in ("variance_epsilon", "eps"):
        v = getattr(module, name, None)
        if isinstance(v, (int, float)):
            return float(v)
    return 1e-6


def _norm_settings(module, norm: Norm) -> tuple:
    return (_norm_eps(module), norm.offset, norm.casting, norm.in_place)


def rms_norm_forward(self, hidden_states):
    """RMSNorm on ligerd's kernel with the module's own weight (None: no weight) and eps."""
    from ligerd.ops.rms_norm import rms_norm
    eps, offset, casting, in_place = self._ligerd_norm
    return rms_norm(hidden_states, getattr(self, "weight", None), eps, offset=offset,
                    casting_mode=casting, in_place=in_place)


class _NormMixin(_LigerMixin):
    _ligerd_norm_spec: Norm = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ligerd_norm = _norm_settings(self, self._ligerd_norm_spec)

    forward = rms_norm_forward


def norm_class(orig: type, norm: Norm) -> type:
    return _subclass(orig, _NormMixin, (norm,), {"_ligerd_norm_spec": norm})


def patch_norm_instance(module, norm: Norm) -> None:
    from ligerd.transformers._patching import _bind, _set
    _set(module, "_ligerd_norm", _norm_settings(module, norm))
    _set(module, "_ligerd_kind", "rms_norm")
    _bind(module, "forward", rms_norm_forward)


# LayerNorm -------------------------------------------------------------------------------------


def layer_norm_forward(self, hidden_states):
    """nn.LayerNorm over the last dimension on ligerd's kernel (its own weight, bias and eps); a
    LayerNorm over several trailing dimensions keeps torch's forward."""
    from ligerd.ops.layer_norm import layer_norm
    if len(self.normalized_shape) != 1:
        return nn.LayerNorm.forward(self, hidden_states)
    return layer_norm(hidden_states, self.weight, self.bias, self.eps)


class LigerdLayerNorm(_LigerMixin, nn.LayerNorm):
    """``torch.nn.LayerNorm`` (same constructor and parameters) computed by ligerd's kernel."""
    forward = layer_norm_forward


class _NNWithLigerLayerNorm(types.ModuleType):
    """What a modeling module sees as ``nn`` under ``layer_norm=True``: ``torch.nn`` with
    ``LayerNorm`` -> ``LigerdLayerNorm``. Liger-Kernel rebinds ``torch.nn.LayerNorm`` itself,
    for the whole process; this changes only the modules the spec names."""

    def __init__(self):
        super().__init__("torch.nn")
        self.LayerNorm = LigerdLayerNorm

    def __getattr__(self, name):
        return getattr(nn, name)


_NN_PROXY = _NNWithLigerLayerNorm()


def patch_layer_norm_instance(module) -> None:
    from ligerd.transformers._patching import _bind, _set
    _set(module, "_ligerd_kind", "layer_norm")
    _bind(module, "forward", layer_norm_forward)


# MLPs and experts ------------------------------------------------------------------------------

_SILU = ("SiLU", "SiLUActivation")
_GELU_TANH = ("GELUTanh", "PytorchGELUTanh", "NewGELUActivation", "GELUPytorchTanh")
_RELU2 = ("ReLUSquaredActivation", "LigerReLUSquared")
_KERNEL_NAMES = {"geglu": "GeGLU", "geglu_experts": "GeGLU", "relu2": "squared-ReLU",
                 "gpt_oss_experts": "clamped-GLU", "clamped_experts": "clamped-GLU"}  # what _warn_mlp_kept names; else SwiGLU


def _act_name(module) -> str:
    for name in ("act_fn", "activation_fn", "act"):
        a = getattr(module, name, None)
        if isinstance(a, nn.Module):
            if type(a).__name__ == "GELU" and getattr(a, "approximate", "none") == "tanh":
                return "GELUTanh"
            return type(a).__name__
    return "?"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _mlp_unsupported(module, kind: str) -> Optional[str]:
    """Why ligerd cannot compute this built module as ``kind`` (None: it can)."""
    act = _act_name(module)
    if kind == "gpt_oss_experts":  # no act_fn: the activation is written out in _apply_gate
        gu = getattr(module, "gate_up_proj", None)
        if not (_number(getattr(module, "alpha", None)) and _number(getattr(module, "limit", None))):
            return "it has no numeric alpha and limit (swiglu_alpha, swiglu_limit)"
        if getattr(module, "limit") < 0:
            return f"its limit is {module.limit} < 0"
        if gu is None or gu.dim() != 3 or gu.shape[-1] % 2 != 0:
            return "its experts are not laid out as gate_up_proj [E, H, 2I]"
        return None
    if kind == "clamped_experts":
        lim = getattr(module, "limit", None)
        if not _number(lim) or lim < 0:
            return f"its limit is {lim!r}, not a number >= 0"
    if kind in ("geglu", "geglu_experts"):
        if act not in _GELU_TANH:
            return f"its activation is {act}, not the tanh-approximated GELU of ligerd's GeGLU"
    elif kind == "relu2":
        if act not in _RELU2:
            return f"its activation is {act}, not the squared ReLU (relu2) of ligerd's kernel"
        for p in ("up_proj", "down_proj"):
            if not isinstance(getattr(module, p, None), nn.Module):
                return f"it has no {p} module"
    elif act not in _SILU:
        return f"its activation is {act}, not the SiLU of ligerd's SwiGLU"
    if kind in ("swiglu", "geglu", "falcon_h1", "clamped_swiglu"):
        for p in ("gate_proj", "up_proj", "down_proj"):
            if not isinstance(getattr(module, p, None), nn.Module):
                return f"it has no {p} module"
    elif kind == "fused_swiglu":
        if not isinstance(getattr(module, "gate_up_proj", None), nn.Module):
            return "it has no gate_up_proj module"
    elif kind in ("experts", "clamped_experts", "geglu_experts"):
        gu, dn = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
        if getattr(module, "has_bias", False) or getattr(module, "gate_up_proj_bias", None) is not None:
            return "its experts have biases"
        if getattr(module, "is_transposed", False) or gu is None or dn is None or gu.dim() != 3 \
                or dn.dim() != 3 or gu.shape[1] != 2 * dn.shape[2] or gu.shape[2] != dn.shape[1]:
            return "its experts are not laid out as gate_up_proj [E, 2I, H], down_proj [E, H, I]"
    elif kind == "llama4_experts":
        gu, dn = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
        if gu is None or dn is None or gu.dim() != 3 or dn.dim() != 3 \
                or gu.shape[2] != 2 * dn.shape[1] or gu.shape[1] != dn.shape[2]:
            return "its experts are not laid out as gate_up_proj [E, H, 2I], down_proj [E, I, H]"
    return None


def _swiglu_forward(self, x):
    from ligerd.ops.glu import swiglu
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def _geglu_forward(self, x):
    from ligerd.ops.glu import geglu
    return self.down_proj(geglu(self.gate_proj(x), self.up_proj(x)))


def _relu2_forward(self, x):
    from ligerd.ops.relu_squared import relu_squared
    return self.down_proj(relu_squared(self.up_proj(x)))


def _fused_swiglu_forward(self, x):
    from ligerd.ops.glu import swiglu
    gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
    return self.down_proj(swiglu(gate, up))


def _falcon_h1_forward(self, x):
    from ligerd.ops.glu import swiglu
    y = swiglu(self.gate_proj(x) * self.gate_multiplier, self.up_proj(x))
    return self.down_proj(y) * self.down_multiplier


def _clamped_swiglu_forward(self, x):
    from ligerd.ops.glu import swiglu
    gate = self.gate_proj(x).clamp(max=self.limit)
    up = self.up_proj(x).clamp(min=-self.limit, max=self.limit)
    return self.down_proj(swiglu(gate, up))


def _experts_forward(self, hidden_states, top_k_index, top_k_weights):
    from ligerd.transformers.mlp_variants import experts_forward
    return experts_forward(self, hidden_states, top_k_index, top_k_weights)


def _gpt_oss_experts_apply_gate(self, gate_up):
    from ligerd.transformers.mlp_variants import gpt_oss_experts_apply_gate
    return gpt_oss_experts_apply_gate(self, gate_up)


def _clamped_experts_apply_gate(self, gate_up):
    from ligerd.transformers.mlp_variants import clamped_experts_apply_gate
    return clamped_experts_apply_gate(self, gate_up)


def _geglu_experts_apply_gate(self, gate_up_out):
    from ligerd.transformers.mlp_variants import geglu_experts_apply_gate
    return geglu_experts_apply_gate(self, gate_up_out)


def _llama4_experts_forward(self, hidden_states):
    from ligerd.transformers.mlp_variants import llama4_experts_forward
    return llama4_experts_forward(self, hidden_states)


def _experts_apply_gate(self, gate_up_out):
    from ligerd.transformers.mlp_variants import experts_apply_gate
    return experts_apply_gate(self, gate_up_out)


MLP_FORWARDS: Dict[str, Callable] = {
    "swiglu": _swiglu_forward, "geglu": _geglu_forward, "fused_swiglu": _fused_swiglu_forward,
    "falcon_h1": _falcon_h1_forward, "clamped_swiglu": _clamped_swiglu_forward,
    "experts": _experts_forward, "relu2": _relu2_forward,
    "geglu_experts": _experts_forward,  # Gemma-4's eager loop calls act_fn, not _apply_gate
    "llama4_experts": _llama4_experts_forward,
    "gpt_oss_experts": None, "clamped_experts": None,  # the class's own forward (it calls _apply_gate)
}
# Experts kinds whose ``_apply_gate`` (the activation between the expert GEMMs that transformers'
# grouped_mm / batched_mm / eager paths call) is ligerd's.
GATE_HOOKS: Dict[str, Callable] = {
    "experts": _experts_apply_gate, "gpt_oss_experts": _gpt_oss_experts_apply_gate,
    "clamped_experts": _clamped_experts_apply_gate, "geglu_experts": _geglu_experts_apply_gate,
}


def _warn_mlp_kept(module, kind, why):
    warn_once(f"mlp-kept-{type(module).__name__}-{why}",
              f"ligerd: {type(module).__name__} keeps transformers' forward: {why} (ligerd's "
              f"{_KERNEL_NAMES.get(kind, 'SwiGLU')} kernel does not compute it)",
              stacklevel=4)


class _MLPMixin(_LigerMixin):
    _ligerd_mlp_kind: str = "swiglu"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        why = _mlp_unsupported(self, self._ligerd_mlp_kind)
        self._ligerd_ok = why is None
        if why is not None:
            _warn_mlp_kept(self, self._ligerd_mlp_kind, why)

    def forward(self, *args, **kwargs):
        fwd = MLP_FORWARDS[self._ligerd_mlp_kind]
        if not self._ligerd_ok or fwd is None:
            return super().forward(*args, **kwargs)
        return fwd(self, *args, **kwargs)

    def _apply_gate(self, gate_up_out):  # experts: transformers' GEMM paths call this
        hook = GATE_HOOKS.get(self._ligerd_mlp_kind)
        if hook is not None and self._ligerd_ok:
            return hook(self, gate_up_out)
        return super()._apply_gate(gate_up_out)


def mlp_class(orig: type, kind: str) -> type:
    return _subclass(orig, _MLPMixin, (kind,), {"_ligerd_mlp_kind": kind})


def patch_mlp_instance(module, kind: str) -> bool:
    from ligerd.transformers._patching import _bind, _set
    why = _mlp_unsupported(module, kind)
    if why is not None:
        _warn_mlp_kept(module, kind, why)
        return False
    _set(module, "_ligerd_kind", kind)
    if MLP_FORWARDS[kind] is not None:
        _bind(module, "forward", MLP_FORWARDS[kind])
    if kind in GATE_HOOKS:
        _bind(module, "_apply_gate", GATE_HOOKS[kind])
    return True


# Heads -----------------------------------------------------------------------------------------


def _text_config(model):
    cfg = model.config
    get = getattr(cfg, "get_text_config", None)
    return get() if callable(get) else cfg


def _head_softcap(model):
    return None, getattr(_text_config(model), "final_logit_softcapping", None)


def _head_falcon_h1(model):
    return float(model.model.lm_head_multiplier), None


def _head_muse(model):
    tc = _text_config(model)
    return getattr(tc, "output_multiplier", None), getattr(tc, "final_logit_softcapping", None)


HEAD_TRANSFORMS = {"softcap": _head_softcap, "falcon_h1": _head_falcon_h1, "muse": _head_muse}

_fused_forwards: Dict[tuple, Callable] = {}


def fused_forward_for(cls: type, orig_forward, logits: str):
    from ligerd.transformers.model.fused_forward import make_fused_forward, no_head_transform
    key = (cls, orig_forward, logits)
    fn = _fused_forwards.get(key)
    if fn is None:
        fn = make_fused_forward(orig_forward, HEAD_TRANSFORMS.get(logits, no_head_transform))
        _fused_forwards[key] = fn
    return fn


# ---------------------------------------------------------------------------------------------
# Applying a spec


def modeling_module(spec: Spec):
    """The spec's modeling module, or None (with a one-time warning) if the installed
    transformers does not have it."""
    name = f"transformers.models.{spec.module}.modeling_{spec.module}"
    try:
        return importlib.import_module(name)
    except ImportError as e:
        import transformers
        warn_once(f"no-module-{spec.module}",
                  f"ligerd: the installed transformers {transformers.__version__} has no {name} "
                  f"({e}); apply_liger_kernel_to_{spec.name} patches nothing", stacklevel=4)
        return None


def _warn_missing(spec: Spec, flag: str, what: str) -> None:
    warn_once(f"missing-{spec.name}-{flag}",
              f"ligerd: {flag}=True for {spec.name}: ligerd has no kernel for {what}; "
              f"transformers' own implementation is kept", stacklevel=4)


def _resolve(modeling, names, what, spec):
    """{original class: entry} for the entries whose class the module has."""
    from ligerd.transformers._patching import original
    out = {}
    for entry in names:
        if not hasattr(modeling, entry.cls):
            log.info("ligerd: %s has no %s %s; skipped for %s", modeling.__name__, what,
                     entry.cls, spec.name)
            continue
        out[entry] = original(modeling, entry.cls)
    return out


def apply_spec(spec: Spec, flags: dict, extra_kwargs: dict, apply_fns: dict) -> None:
    """The body of every table-driven ``apply_liger_kernel_to_<type>`` (module docstring).
    ``flags``: the call's keyword arguments (Liger's names) without ``model``; ``apply_fns``:
    MODEL_TYPE_TO_APPLY_LIGER_FN, for the types a vision-language model delegates to."""
    from ligerd.transformers import _patching as mp
    model = flags.pop("model", None)
    rope = flags.get("rope", False)
    ce = flags.get("cross_entropy", False)
    flce = flags.get("fused_linear_cross_entropy", False)
    rms = flags.get("rms_norm", False)
    ln = flags.get("layer_norm", False)
    mlp = bool(spec.mlp_flag and flags.get(spec.mlp_flag, False))
    mp._check_loss_flags(ce, flce)
    mp.check_transformers_version()
    modeling = modeling_module(spec)
    if modeling is None:
        return
    import ligerd.transformers as lt

    # Resolve everything first, so that a missing op fails before anything is patched.
    rope_fn = mp._ligerd_attr("liger_rotary_pos_emb", "rope") if rope and spec.rope == "std" else None
    rope_fns = [(attr, mp._ligerd_attr(name, "rope", rope_fn_module(name)))
                for attr, name in spec.rope_fns] if rope else []
    if ce:
        mp._ligerd_attr("liger_cross_entropy", "cross_entropy")
    if flce:
        mp._ligerd_attr("liger_fused_linear_cross_entropy", "fused_linear_cross_entropy",
                        "ligerd.transformers.functional")
    norms = _resolve(modeling, spec.norms, "RMSNorm class", spec) if rms else {}
    mlps = _resolve(modeling, spec.mlps, "MLP class", spec) if mlp else {}
    heads = _resolve(modeling, spec.heads, "model class", spec) if flce else {}
    ln_modules = []
    if ln:
        for m in spec.layer_norm_modules:
            ln_modules.append(importlib.import_module(f"transformers.models.{m}.modeling_{m}"))
    root = mp.unwrap_peft(model) if model is not None else None

    # The text models' own patches first (Gemma-3, PaliGemma, Gemma-4: their text classes).
    sub_kwargs = dict(flags, **extra_kwargs, cross_entropy=False, fused_linear_cross_entropy=False)
    for t in spec.text_types:
        _apply_sub(apply_fns[t], sub_kwargs, root)

    for attr, fn in rope_fns:
        if hasattr(modeling, attr):
            mp._set(modeling, attr, fn)
        else:
            _warn_missing(spec, "rope", f"this transformers' {spec.module} RoPE (its modeling module "
                                        f"has no {attr})")
    if rope and spec.rope:  # "": the text types' patches own the RoPE (or nothing is kept)
        if spec.rope == "std" and hasattr(modeling, "apply_rotary_pos_emb"):
            mp._set(modeling, "apply_rotary_pos_emb", rope_fn)
        elif spec.rope != "std":
            _warn_missing(spec, "rope", spec.rope)
        else:
            _warn_missing(spec, "rope", f"this transformers' {spec.module} RoPE (its modeling module "
                                        f"has no apply_rotary_pos_emb)")
    for norm, orig in norms.items():
        mp._set(modeling, norm.cls, norm_class(orig, norm))
    for m, orig in mlps.items():
        mp._set(modeling, m.cls, mlp_class(orig, m.kind))
    if mlp and spec.mlp_missing:
        _warn_missing(spec, spec.mlp_flag, spec.mlp_missing)
    for mod in ln_modules:
        mp._set(mod, "nn", _NN_PROXY)
    if ln:
        for name in spec.layer_norm_names:
            if hasattr(modeling, name):
                mp._set(modeling, name, LigerdLayerNorm)
    # Class tables built at import time (InternVL's NORM2FN = {"layer_norm": nn.LayerNorm, ...})
    # still hold the stock classes: they get copies holding the replacements.
    swaps = {orig: norm_class(orig, n) for n, orig in norms.items()}
    swaps.update({orig: mlp_class(orig, m.kind) for m, orig in mlps.items()})
    if ln_modules or (ln and spec.layer_norm_names):
        swaps[nn.LayerNorm] = LigerdLayerNorm
    _patch_class_tables(modeling, swaps)
    if ce:
        from transformers.loss import loss_utils
        from ligerd.transformers.model.loss_utils import liger_fixed_cross_entropy
        mp._set(loss_utils, "fixed_cross_entropy", liger_fixed_cross_entropy)
    if flce and root is None:
        for head, orig in heads.items():
            fwd = mp.original(orig, "forward")
            mp._set(orig, "forward", fused_forward_for(orig, fwd, head.logits))

    if root is None:
        return
    if flce:
        for head, orig in heads.items():
            if isinstance(root, orig):
                fwd = mp.original(type(root), "forward")
                mp._set(root, "forward", types.MethodType(fused_forward_for(orig, fwd, head.logits), root))
                break
        else:
            log.info("ligerd: %s is not one of %s; its forward is left as is", type(root).__name__,
                     [h.cls for h in spec.heads])
    for m in root.modules():
        if is_liger_module(m):
            continue
        done = False
        for norm, orig in norms.items():
            if isinstance(m, orig):
                patch_norm_instance(m, norm)
                done = True
                break
        if done:
            continue
        for entry, orig in mlps.items():
            if isinstance(m, orig):
                patch_mlp_instance(m, entry.kind)
                done = True
                break
        if not done and ln and (ln_modules or spec.layer_norm_names) and type(m) is nn.LayerNorm:
            patch_layer_norm_instance(m)
    if spec.delegate:
        _delegate(spec, root, sub_kwargs, apply_fns)


def _patch_class_tables(modeling, swaps: dict) -> None:
    from ligerd.transformers._patching import _set, original
    if not swaps:
        return
    for name, value in list(vars(modeling).items()):
        if name.startswith("__") or not isinstance(value, dict):
            continue
        table = original(modeling, name)
        if not isinstance(table, dict) or not any(
                isinstance(v, type) and v in swaps for v in table.values()):
            continue
        _set(modeling, name, {k: swaps.get(v, v) if isinstance(v, type) else v
                              for k, v in table.items()})


def _apply_sub(fn, kwargs: dict, root) -> None:
    params = inspect.signature(fn).parameters
    mine = {k: v for k, v in kwargs.items() if k in params and k != "model"}
    fn(model=root, **mine) if root is not None else fn(**mine)


def _delegate(spec: Spec, root, kwargs: dict, apply_fns: dict) -> None:
    """With model=: the text model's (and vision model's) own model type patches, as Liger."""
    cfg = getattr(root, "config", None)
    for part in ("text_config", "vision_config"):
        sub = getattr(cfg, part, None)
        t = getattr(sub, "model_type", None)
        if t is None:
            continue
        fn = apply_fns.get(t)
        if fn is None and t.startswith(spec.name):  # its own vision tower (internvl_vision, ...):
            continue                                # this spec's norms/LayerNorms cover it
        if fn is None:
            warn_once(f"delegate-{spec.name}-{t}",
                      f"ligerd: the {part.split('_')[0]} model of this {spec.name} model is a {t!r}, "
                      f"which ligerd does not patch; it is left as it is", stacklevel=4)
            continue
        _apply_sub(fn, kwargs, root)


__all__ = ["Spec", "Norm", "MLP", "Head", "apply_spec", "is_liger_module", "LigerdLayerNorm",
           "norm_class", "mlp_class"]
