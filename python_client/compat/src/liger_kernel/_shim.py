"""How the modules of this shim are made: each one delegates to a ligerd module (every name that
module has is the ligerd object itself) and, for the names Liger-Kernel has there and ligerd lacks,
hands out a stand-in that raises :class:`LigerdNotProvidedError` when it is used: called,
instantiated, or a class attribute read. Importing a name never fails, because frameworks import
Liger's names up front (TRL imports ``LigerFusedLinearDPOLoss`` whenever liger_kernel is installed).

Liger's ``apply_liger_kernel_to_<model type>`` functions for model types ligerd does not patch are
the exception: their stand-ins have Liger's signature, warn and leave the model as it is, as Liger
does for a model type it has no kernels for, so that a trainer is never stopped by one."""

import functools
import importlib
import inspect
import warnings

from liger_kernel._version import __version__

DOCS = "docs/compat.md in the ligerd repository"


class LigerdNotProvidedError(ImportError):
    """A Liger-Kernel name that ligerd does not provide yet was used, through ligerd's
    liger_kernel compatibility package."""


class LigerdCompatWarning(UserWarning):
    """A Liger-Kernel patch that ligerd does not have yet was asked for and skipped."""


def message(qualname: str) -> str:
    return (f"ligerd does not provide {qualname} yet: this liger_kernel is ligerd's compatibility "
            f"package ({__version__}), not Liger-Kernel. See {DOCS}.")


def _raise(qualname):
    raise LigerdNotProvidedError(message(qualname))


class _NotProvidedMeta(type):
    """Metaclass of the class stand-ins: instantiating one (or a subclass) or reading a class
    attribute it lacks (``LigerFusedLinearDPOLoss.apply``) raises. Private and dunder names give a
    plain AttributeError, so that introspection (hasattr, copy, typing) keeps working."""

    def __call__(cls, *args, **kwargs):
        _raise(cls.__liger_name__)

    def __getattr__(cls, name):
        if name.startswith("_"):
            raise AttributeError(name)
        _raise(f"{cls.__liger_name__}.{name}")


def not_provided_class(module: str, name: str):
    return _NotProvidedMeta(name, (), {"__module__": module, "__qualname__": name,
                                       "__liger_name__": f"{module}.{name}",
                                       "__doc__": message(f"{module}.{name}")})


def not_provided_function(module: str, name: str):
    qualname = f"{module}.{name}"

    def stand_in(*args, **kwargs):
        _raise(qualname)

    stand_in.__module__, stand_in.__name__, stand_in.__qualname__ = module, name, name
    stand_in.__doc__ = message(qualname)
    stand_in.__liger_name__ = qualname
    return stand_in


def not_provided(module: str, name: str):
    """The stand-in for Liger's ``module.name``: a class if the name is a class's, else a function."""
    if name.lstrip("_")[:1].isupper():
        return not_provided_class(module, name)
    return not_provided_function(module, name)


def unpatched_apply_function(module: str, model_type: str, params):
    """Liger's ``apply_liger_kernel_to_<model_type>`` for a model type ligerd does not patch: same
    signature; calling it warns and changes nothing."""
    name = f"apply_liger_kernel_to_{model_type}"
    sig = inspect.Signature([
        inspect.Parameter(p, inspect.Parameter.VAR_KEYWORD) if default == "**" else
        inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
        for p, default in params])

    def stand_in(*args, **kwargs):
        sig.bind(*args, **kwargs)  # a wrong argument fails as it would with Liger
        warnings.warn(f"{message(f'liger_kernel.transformers.{name}')} The {model_type} model is "
                      f"left unpatched.", LigerdCompatWarning, stacklevel=2)

    stand_in.__module__, stand_in.__name__, stand_in.__qualname__ = module, name, name
    stand_in.__signature__ = sig
    stand_in.__doc__ = message(f"liger_kernel.transformers.{name}") + " Warns and patches nothing."
    stand_in.__liger_name__ = f"liger_kernel.transformers.{name}"
    return stand_in


def ligerd_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == "ligerd":
            raise ImportError(
                f"this liger_kernel is ligerd's compatibility package ({__version__}) and needs the "
                f"ligerd package, which is not installed: pip install ./python_client (see {DOCS})"
            ) from e
        raise


def delegating_module(module_globals: dict, target: str = None, missing=(), extra=None):
    """``__getattr__`` and ``__dir__`` for the shim module whose globals are ``module_globals``:
    names of the ligerd module ``target`` first, then stand-ins for the names ``missing`` and those
    ``extra`` makes (name -> factory, for stand-ins of another kind). Stand-ins are made once."""
    module_name = module_globals["__name__"]
    factories = {n: functools.partial(not_provided, module_name, n) for n in missing}
    factories.update(extra or {})
    made = {}

    def __getattr__(name):
        if not name.startswith("__") and target is not None:
            mod = ligerd_module(target)
            try:
                return getattr(mod, name)
            except AttributeError:
                pass
        if name in factories:
            if name not in made:
                made[name] = factories[name]()
            return made[name]
        raise AttributeError(f"module {module_name!r} has no attribute {name!r} (ligerd's "
                             f"liger_kernel compatibility package, {__version__})")

    def __dir__():
        names = set(module_globals) | set(factories)
        if target is not None:
            names |= set(dir(ligerd_module(target)))
        return sorted(names)

    return __getattr__, __dir__
