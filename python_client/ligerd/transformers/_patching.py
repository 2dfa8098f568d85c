"""The machinery every ``apply_liger_kernel_to_*`` shares (monkey_patch.py's hand-written families
and spec_patching.py's table-driven types): the patch record behind
``revert_liger_kernel_patches()``, the transformers version and loss-flag checks, PEFT unwrapping
and method binding. Its own module so that both patchers use it without importing each other."""

from __future__ import annotations

import importlib
import types
import weakref
from dataclasses import dataclass
from typing import Callable, Dict

import torch.nn as nn

from ligerd import _supported
from ligerd._errors import ConfigError

SUPPORTED_TRANSFORMERS = _supported.requirement("transformers", _supported.TRANSFORMERS)

# ---------------------------------------------------------------------------------------------
# The patch record (for revert_liger_kernel_patches)

_MISSING = object()


@dataclass
class _Record:
    ref: Callable[[], object]  # the holder (module, class or instance; instances weakly)
    name: str
    old: object  # the holder's own value before the first patch, or _MISSING


_records: Dict[tuple, _Record] = {}  # (id(holder), name) -> first record; insertion-ordered


def _own(holder, name):
    d = getattr(holder, "__dict__", None)
    return d.get(name, _MISSING) if d is not None else _MISSING


def _set(holder, name: str, value) -> None:
    """``setattr(holder, name, value)``, remembering what the holder had before the first patch."""
    key = (id(holder), name)
    rec = _records.get(key)
    if rec is None or rec.ref() is not holder:  # new, or a dead object's id reused
        if isinstance(holder, (types.ModuleType, type)):
            ref = (lambda h: (lambda: h))(holder)
        else:
            ref = weakref.ref(holder)
        _records.pop(key, None)
        _records[key] = _Record(ref, name, _own(holder, name))
    setattr(holder, name, value)


def original(holder, name: str):
    """``holder.name`` as it was before ligerd patched it (the current value if never patched)."""
    rec = _records.get((id(holder), name))
    if rec is not None and rec.ref() is holder and rec.old is not _MISSING:
        return rec.old
    return getattr(holder, name)


def revert_liger_kernel_patches() -> int:
    """Undo every patch made by ``apply_liger_kernel_to_*`` (classes, functions, forwards and
    built-model instances) in reverse order. Returns how many attributes were restored.

    Models built while the patches were active keep their Liger modules (they are ordinary
    modules of those classes); instances patched with ``model=`` get their original forwards
    back."""
    n = 0
    for key in reversed(list(_records)):
        rec = _records.pop(key)
        holder = rec.ref()
        if holder is None:
            continue
        if rec.old is _MISSING:
            if rec.name in getattr(holder, "__dict__", {}):
                delattr(holder, rec.name)
        else:
            setattr(holder, rec.name, rec.old)
        n += 1
    return n


def patched_attributes() -> list:
    """``[(holder, name)]`` currently patched (for tests and debugging)."""
    out = []
    for rec in _records.values():
        h = rec.ref()
        if h is not None:
            out.append((h, rec.name))
    return out


# ---------------------------------------------------------------------------------------------
# Checks


def check_transformers_version():
    """The installed transformers module, if it is a release these patches support
    (ligerd._supported.TRANSFORMERS); otherwise a ConfigError at patch time that says which is
    installed and which to install, instead of an ImportError deep inside a model."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError(f"ligerd.transformers model patching needs Hugging Face transformers: "
                          f"pip install '{SUPPORTED_TRANSFORMERS}'") from e
    version = getattr(transformers, "__version__", "unknown")
    try:
        supported = _supported.in_range(version, _supported.TRANSFORMERS)
    except ValueError:
        supported = False
    if not supported:
        raise ConfigError(
            f"ligerd.transformers model patching supports {SUPPORTED_TRANSFORMERS}, but transformers "
            f"{version} is installed; install a supported release: pip install '{SUPPORTED_TRANSFORMERS}'")
    return transformers


def _check_loss_flags(cross_entropy, fused_linear_cross_entropy):
    if cross_entropy and fused_linear_cross_entropy:
        raise ValueError("cross_entropy and fused_linear_cross_entropy cannot both be True: "
                         "choose one (the fused linear cross-entropy already computes the loss "
                         "without materialising logits, so cross_entropy would have nothing to do)")


def _ligerd_attr(name: str, flag: str, module: str = "ligerd.transformers"):
    """A ligerd op needed by ``flag``; a clear error if this build does not have it yet."""
    obj = getattr(importlib.import_module(module), name, None)
    if obj is None:
        raise ImportError(f"ligerd: {flag}=True needs {module}.{name}, which this ligerd build does "
                          f"not provide; pass {flag}=False")
    return obj


# ---------------------------------------------------------------------------------------------
# PEFT (without importing peft)


def unwrap_peft(model):
    """The transformers model inside a PEFT ``PeftModel`` / tuner (``LoraModel`` ...), or
    ``model`` itself."""
    for _ in range(4):
        if not hasattr(model, "peft_config"):
            break
        get_base = getattr(model, "get_base_model", None)
        if callable(get_base):  # PeftModel
            inner = get_base()
        elif isinstance(getattr(model, "model", None), nn.Module):
            inner = model.model  # a tuner (LoraModel, any BaseTuner) holds the model as .model
        else:
            break
        if inner is model:
            break
        model = inner
    return model


def _bind(module, name, fn):
    _set(module, name, types.MethodType(fn, module))
