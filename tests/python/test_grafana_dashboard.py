"""deploy/grafana/ligerd.json queries only metrics ligerd exposes (checked against the exposition
of the simulated workload, parsed with prometheus_client), with their real label names, and shows
every metric docs/telemetry.md lists."""

import json
import re
import subprocess
from pathlib import Path

from ligerd.testing import prometheus_text
from ligerd.testing.prometheus_text import parse

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "ligerd.json"
DOC = REPO / "docs" / "telemetry.md"


def queries(dashboard: dict) -> list:
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for v in dashboard.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            out.append(q["query"])
    return out


def metric_names(expr: str) -> set:
    return set(re.findall(r"\bligerd_[a-z_]+", expr))


def exposed_series_names() -> dict:
    """Every sample name ligerd exposes (histograms: _bucket/_sum/_count) -> its label names."""
    text = subprocess.run([str(prometheus_text.build_file("tests", "cpp", "telemetry_exposition_main"))], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    out = {}
    for name, (kind, samples) in parse(text).items():
        for s in samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def test_every_queried_metric_exists_with_its_labels():
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = exposed_series_names()
    used = set()
    for expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"no ligerd metric in {expr!r}"
        for name in names:
            assert name in exposed, f"{name} (in {expr!r}) is not exposed by ligerd"
            used.add(name)
        # Label names in selectors, by (...) clauses and label_values(): all real ones.
        labels = set(re.findall(r"(\w+)\s*=~?\s*\"", expr))
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            labels.update(l.strip() for l in group.split(","))
        labels.update(re.findall(r"label_values\(\w+,\s*(\w+)\)", expr))
        known = set().union(*(exposed[n] for n in names))
        assert labels <= known, f"{expr!r}: unknown labels {sorted(labels - known)}"


def test_every_documented_metric_is_on_the_dashboard():
    dashboard = json.loads(DASHBOARD.read_text())
    shown = set()
    for expr in queries(dashboard):
        shown |= {re.sub(r"_(bucket|sum|count)$", "", n) for n in metric_names(expr)}
    missing = set(prometheus_text.documented_metrics(DOC)) - shown
    assert not missing, f"documented but not on the dashboard: {sorted(missing)}"


def test_panels_are_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        assert p["title"] and p["targets"], p
        assert p["datasource"]["uid"] == "${datasource}"
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
