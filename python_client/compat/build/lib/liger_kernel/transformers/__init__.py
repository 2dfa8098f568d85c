"""``liger_kernel.transformers``: every public name of ``ligerd.transformers`` (the ligerd objects
themselves), Liger's ``apply_liger_kernel_to_*`` for the model types ligerd does not patch yet (they
warn and patch nothing), and stand-ins for Liger's other modules ligerd lacks (they raise
LigerdNotProvidedError on use). Like Liger's, importing it does not import transformers."""

import logging
import warnings

from liger_kernel import _shim
from liger_kernel._liger_api import APPLY_SIGNATURES

log = logging.getLogger(__name__)

# Liger-Kernel's liger_kernel.transformers.__all__ (commit ead96b6) without the apply functions.
LIGER_NAMES = (
    "LigerCrossEntropyLoss", "LigerDyT", "LigerFusedLinearCrossEntropyLoss", "LigerFusedLinearJSD",
    "LigerGEGLUMLP", "LigerJSD", "LigerLayerNorm", "LigerFusedAddRMSNorm", "LigerModulatedRMSNorm",
    "LigerPolyNorm", "LigerReLUSquared", "LigerRMSNorm", "liger_rotary_pos_emb",
    "liger_llama4_text_rotary_pos_emb", "liger_llama4_vision_rotary_pos_emb",
    "LigerBlockSparseTop2MLP", "LigerFalconH1SwiGLUMLP", "LigerPhi3SwiGLUMLP",
    "LigerQwen3MoeSwiGLUMLP", "LigerSwiGLUMLP", "LigerTiledGEGLUMLP", "LigerTiledSwiGLUMLP",
    "LigerTVDLoss", "LigerKLDIVLoss", "LigerMHC", "LigerMultiTokenAttention", "LigerSoftmax",
    "LigerSparsemax", "LigerMLP", "LigerFalconH1MLP", "AutoLigerKernelForCausalLM",
)


def _apply_factories(module_name):
    return {f"apply_liger_kernel_to_{t}": (lambda t=t, p=p: _shim.unpatched_apply_function(
        module_name, t, p)) for t, p in APPLY_SIGNATURES.items()}


def is_transformers_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("transformers") is not None


def _supported(model_type) -> bool:
    from ligerd.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    return model_type in MODEL_TYPE_TO_APPLY_LIGER_FN


def _warn_unpatched(model_type) -> None:
    warnings.warn(f"{_shim.message(f'a Liger patch for model type {model_type!r}')} The model is "
                  f"left unpatched.", _shim.LigerdCompatWarning, stacklevel=3)


def _apply_liger_kernel(model_type: str, **kwargs) -> None:
    """Liger's ``_apply_liger_kernel``: ligerd's, or a warning for a model type ligerd does not
    patch (Liger, too, only logs for a model type it has no kernels for)."""
    if not _supported(model_type):
        return _warn_unpatched(model_type)
    from ligerd.transformers.monkey_patch import _apply_liger_kernel as apply
    return apply(model_type, **kwargs)


def _apply_liger_kernel_to_instance(model, **kwargs) -> None:
    """Liger's ``_apply_liger_kernel_to_instance`` (what HF Trainer, TRL and verl call): ligerd's,
    or a warning, the model left as it is, for a model type ligerd does not patch."""
    from ligerd.transformers.monkey_patch import _apply_liger_kernel_to_instance as apply
    from ligerd.transformers.monkey_patch import unwrap_peft
    model_type = getattr(getattr(unwrap_peft(model), "config", None), "model_type", None)
    if not _supported(model_type):
        return _warn_unpatched(model_type)
    return apply(model, **kwargs)


__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers", LIGER_NAMES,
                                               _apply_factories(__name__))
