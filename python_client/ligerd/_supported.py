"""The torch and transformers releases ligerd supports: one place, which pyproject.toml's
dependencies and scripts/test-requirements.txt repeat (tests/python/test_versions.py checks that
they agree). The low ends are what the GPU machine runs (its GPU suite tests them), the high ends
what PyPI's newest releases allow (the CPU suite in CI installs the newest)."""

from __future__ import annotations

import re
from typing import Optional, Tuple

# (lowest supported, first unsupported or None)
TORCH = ("2.11", None)
TRANSFORMERS = ("5.17", "6")


def requirement(name: str, bounds: Tuple[str, Optional[str]]) -> str:
    """'transformers>=5.17,<6' from ("5.17", "6")."""
    low, high = bounds
    return f"{name}>={low}" + (f",<{high}" if high else "")


def release(version: str) -> Tuple[int, ...]:
    """The release numbers of a version string: '5.25.0.dev0+local' -> (5, 25, 0)."""
    m = re.match(r"\d+(\.\d+)*", version.strip())
    if not m:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(p) for p in m.group(0).split("."))


def in_range(version: str, bounds: Tuple[str, Optional[str]]) -> bool:
    low, high = bounds
    v = release(version)
    pad = lambda t: t + (0,) * (4 - len(t))  # noqa: E731  (5.17 == 5.17.0)
    if pad(v) < pad(release(low)):
        return False
    return high is None or pad(v) < pad(release(high))
