"""One definition per ligerd op, two ways to call it: the switch between eager and traced calls.

``torch.library.custom_op`` is what torch.compile, torch.export and every other tracer need: a
schema, a fake (meta) kernel, and an autograd formula AOTAutograd can trace. In eager mode it is
expensive: each call goes through the dispatcher, custom_op's Python autograd wrapper and its
aliasing checks, for the forward and again for the backward's op (bench/host/custom_op_overhead.py:
on a 2-core machine ~240 us more per RMSNorm forward + backward than a plain
``torch.autograd.Function`` around the same launches). A 104M-parameter model's 32 ms training step
cannot hide that.

So each op is written once, with ``custom_op`` below instead of ``torch.library.custom_op``: the
implementation (which calls ``_backend.launch``), its fake kernel, and for differentiable ops its
``setup_context`` and ``backward``. That registers the torch.library op (``torch.ops.ligerd.<name>``)
as before AND builds a plain ``torch.autograd.Function`` from the same functions. Calling the
returned ``Op`` picks one, here and nowhere else (``eager()``):

- eager: torch.compile is not tracing (``torch.compiler.is_compiling()`` is False) and no
  dispatch mode is active (no FakeTensorMode, make_fx proxy mode, FunctionalTensorMode, i.e. no
  AOTAutograd, torch.export or other tracer; also no user debug mode such as FlopCounterMode,
  which then sees the registered op): the implementation is called directly, through the
  autograd.Function when grad mode is on. Arguments that the op declares mutated get their
  version counters bumped, as the registered op would (so autograd still reports a saved tensor
  modified in place instead of silently reading the new values).
- otherwise: the registered op, ``torch.ops.ligerd.<name>.default``.

The backward formulas call ops through the same ``Op`` objects, so an eager backward stays on the
plain path and a backward traced by AOTAutograd (dispatch modes active) records the registered
ops. Both paths run the same implementation, so the input checks and error messages are the same.
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence, Tuple

import torch

# Looked up once: each is called on every op.
_is_compiling = torch.compiler.is_compiling
_dispatch_mode_count = torch._C._len_torch_dispatch_stack
_grad_enabled = torch.is_grad_enabled
_increment_version = torch.autograd.graph.increment_version

NAMESPACE = "ligerd"


def eager() -> bool:
    """True where ligerd ops take the plain Python path (see the module docstring): not traced by
    torch.compile and no torch dispatch mode active. Also what decides eager-only behaviour in
    the public wrappers (in-place backward writes)."""
    return not _is_compiling() and _dispatch_mode_count() == 0


class Op:
    """A ligerd op: ``op(*args)`` (positional, in the schema's order) runs it on the path
    ``eager()`` picks. ``impl`` is the implementation, ``opdef`` torch.library's CustomOpDef,
    ``overload`` the registered ``torch.ops.ligerd.<name>.default``."""

    __slots__ = ("name", "impl", "opdef", "overload", "autograd_function", "_mutated")

    def __init__(self, name: str, impl: Callable, opdef, mutated: Tuple[int, ...]):
        self.name = name
        self.impl = impl
        self.opdef = opdef
        self.overload = getattr(getattr(torch.ops, NAMESPACE), name).default
        self.autograd_function: Optional[type] = None
        self._mutated = mutated

    def register_fake(self, fn: Callable) -> Callable:
        self.opdef.register_fake(fn)
        return fn

    def register_autograd(self, backward: Callable, *, setup_context: Callable) -> None:
        """Registers the formula on the custom op and builds the eager autograd.Function from the
        same two functions (``setup_context(ctx, inputs, output)``, ``backward(ctx, *grads)``)."""
        if self._mutated:
            raise TypeError(f"ligerd op {self.name}: an op that mutates its inputs cannot have autograd")
        self.opdef.register_autograd(backward, setup_context=setup_context)
        impl = self.impl

        def forward(ctx, *args):
            out = impl(*args)
            setup_context(ctx, args, out)
            return out

        # Named after the op: grad_fn is "<name>_eagerBackward" in eager mode.
        self.autograd_function = type(f"{self.name}_eager", (torch.autograd.Function,), {
            "forward": staticmethod(forward), "backward": staticmethod(backward),
            "__module__": __name__})

    def __call__(self, *args):
        if not _is_compiling() and _dispatch_mode_count() == 0:
            fn = self.autograd_function
            if fn is not None and _grad_enabled():
                return fn.apply(*args)
            out = self.impl(*args)
            for i in self._mutated:
                t = args[i]
                if t is not None:
                    _increment_version(t)
            return out
        return self.overload(*args)

    def __repr__(self) -> str:
        return f"<ligerd op {self.name}>"


def custom_op(name: str, *, mutates_args: Sequence[str] = ()) -> Callable[[Callable], Op]:
    """``torch.library.custom_op(f"ligerd::{name}", mutates_args=...)`` that returns an ``Op``
    (same ``register_fake`` / ``register_autograd``), so calls take the eager path where they can."""
    def wrap(fn: Callable) -> Op:
        params = list(inspect.signature(fn).parameters)
        for m in mutates_args:
            if m not in params:
                raise TypeError(f"ligerd op {name}: mutates_args names {m!r}, not a parameter")
        mutated = tuple(params.index(m) for m in mutates_args)
        opdef = torch.library.custom_op(f"{NAMESPACE}::{name}", mutates_args=tuple(mutates_args))(fn)
        return Op(name, fn, opdef, mutated)
    return wrap
