"""Helpers of the telemetry tests (tests/python/test_telemetry_metrics.py and
test_grafana_dashboard.py): docs/telemetry.md's metric table, the Prometheus text parsed with a
real parser (prometheus_client's), and the binaries of a build directory."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest


def build_file(*parts) -> Path:
    """<LIGERD_BUILD_DIR>/<parts>; the test is skipped when there is no such built file."""
    build = os.environ.get("LIGERD_BUILD_DIR", "").strip()
    exe = Path(build, *parts) if build else None
    if exe is None or not exe.is_file():
        pytest.skip(f"no built {'/'.join(parts)} (set LIGERD_BUILD_DIR to a build directory)")
    return exe


def documented_metrics(doc: Path) -> dict:
    """The metric table of ``doc`` (docs/telemetry.md): name -> (type, label names)."""
    out = {}
    for line in Path(doc).read_text().splitlines():
        m = re.match(r"\| `(ligerd_[a-z_]+)` \| (\w+) \|\s*([^|]*?)\s*\|", line)
        if m:
            cell = re.sub(r"\([^)]*\)", "", m.group(3))  # "result (memory_hit, ...)" -> "result"
            labels = {l.strip() for l in cell.split(",") if l.strip()}
            out[m.group(1)] = (m.group(2), labels)
    return out


def parse(text: str) -> dict:
    """Family name as exposed (counters keep their _total) -> (type, samples)."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + ("_total" if fam.type == "counter" else "")
        out[name] = (fam.type, fam.samples)
    return out
