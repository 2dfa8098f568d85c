"""Loading ``ligerd._C``, the LibTorch extension that holds the executor (local dispatch) and the
remote-session client. Its own module so that both ``_backend`` (which launches ops) and
``_dispatch`` (which opens and closes daemon sessions) can load it without importing each other."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional, Tuple

from ligerd import _paths
from ligerd._errors import LigerdError

_ext = None
_error: Optional[BaseException] = None
_lock = threading.Lock()
# (path, trusted owner uid or None) chosen by ligerd._dispatch when it found the node's daemon;
# None: ligerd._paths.cache_dir().
_cache: Optional[Tuple[Path, Optional[int]]] = None


def use_cache_dir(path: Path, trusted_owner: Optional[int] = None) -> None:
    """Point local executors at ``path`` (the node daemon's cache; read-only when it belongs to
    ``trusted_owner``, another user). Takes effect for executors created afterwards (an executor
    is made at the first op on each device)."""
    global _cache
    with _lock:
        _cache = (Path(path), trusted_owner)
        if _ext is not None:
            _apply(_ext)


def _apply(ext) -> None:
    path, owner = _cache if _cache is not None else (_paths.cache_dir(), None)
    if owner is None:
        ext.set_cache_dir(str(path))
    else:
        ext.set_cache_dir(str(path), owner)


def load():
    """Import ``ligerd._C`` once and point it at the shared JIT cache directory; a LigerdError
    saying how to build it when it is missing."""
    global _ext, _error
    if _ext is not None:
        return _ext
    with _lock:
        if _ext is not None:
            return _ext
        try:
            from ligerd import _C as ext  # type: ignore[attr-defined]
        except ImportError as e:
            _error = e
            raise LigerdError(
                "ligerd: the local executor extension ligerd._C is not available "
                f"({e}). Build it with `pip install --no-build-isolation --no-deps ./python_client` "
                "(after `import torch` works), or build the CMake target ligerd_python with "
                "-DLIGERD_BUILD_PYTHON=ON and put <build>/python on PYTHONPATH.") from e
        _apply(ext)
        _ext = ext
        return _ext
