"""GeGLU benchmark rows: c = gelu_tanh(a) * b, as bench/ligerd_bench/swiglu.py (same shapes, byte
model and peers: Liger's LigerGELUMulFunction, ligerd's liger_geglu)."""

from __future__ import annotations

from ligerd_bench.swiglu import (PASSES, bytes_moved, make_args, make_impls, make_steps,  # noqa: F401
                            shapes)

OP = "geglu"
TITLE = "GeGLU (tanh)"


def impls():
    return make_impls(OP)
