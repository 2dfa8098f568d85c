"""The dashboard in headless Chromium, for the telemetry tests (tests/python/test_telemetry_metrics.py,
test_dashboard_replay.py, tests/gpu/test_telemetry.py) and scripts/dashboard_replay.py: where the
browser is, the flags it runs with, and what the page's charts hold once drawn.

dashboard.js marks every chart's element with how many series and points it drew
(``<div class="chart" id="chart-ops" data-series="7" data-points="12">``), so a DOM dumped after
the page has polled ligerd says whether each chart shows data without reading pixels."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

# The page's time-series charts (server/telemetry/dashboard/index.html).
CHARTS = ("chart-gpu-mem", "chart-tps", "chart-loss", "chart-peak", "chart-ops", "chart-gpu-time")

# Headless, no sandbox (tests may run as root), software drawing, a page tall enough for every
# section, and 5 s of virtual time: the page's first poll and two more (it polls every 2 s).
BROWSER_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--window-size=1500,1500", "--virtual-time-budget=5000")

# A screenshot of the drawn page is well over this; a blank or error page is far under it.
MIN_SCREENSHOT_BYTES = 50_000


def find_chromium() -> Optional[str]:
    """Debian's ``chromium`` (or ``chromium-browser``) on PATH, else None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(chromium: str, url: str, timeout: float = 120) -> str:
    """The page's DOM after the virtual-time budget (the charts drawn from a few polls)."""
    return subprocess.run([chromium, *BROWSER_FLAGS, "--dump-dom", url], capture_output=True, text=True,
                          timeout=timeout).stdout


def screenshot(chromium: str, url: str, path: Path, timeout: float = 120) -> Path:
    """A PNG of the page at ``path``; AssertionError when Chromium left none (or a near-empty one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([chromium, *BROWSER_FLAGS, f"--screenshot={path}", url], capture_output=True, text=True,
                       timeout=timeout)
    ok = path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > MIN_SCREENSHOT_BYTES
    assert ok, f"no screenshot of {url} at {path} (chromium exit {r.returncode}): {r.stderr[-2000:]}"
    return path


def _tag(dom: str, element_id: str) -> Optional[str]:
    m = re.search(rf'<[a-z]+\b[^>]*\bid="{re.escape(element_id)}"[^>]*>', dom)
    return m.group(0) if m else None


def chart_counts(dom: str) -> Dict[str, Tuple[int, int]]:
    """chart id -> (series, points) as dashboard.js marked them; charts never drawn are absent."""
    out = {}
    for chart in CHARTS:
        tag = _tag(dom, chart)
        series = re.search(r'\bdata-series="(\d+)"', tag or "")
        points = re.search(r'\bdata-points="(\d+)"', tag or "")
        if series and points:
            out[chart] = (int(series.group(1)), int(points.group(1)))
    return out


def chart_has_canvas(dom: str, chart: str) -> bool:
    """Whether dygraphs drew the chart (its element holds a canvas), rather than an empty note."""
    return re.search(rf'id="{re.escape(chart)}"[^>]*>\s*<div[^>]*><canvas', dom) is not None


def chart_problems(dom: str, wanted: Mapping[str, Tuple[int, int]]) -> list:
    """What keeps the page from showing data: for each chart in ``wanted`` (id -> the fewest
    series and points it must show), why it does not; an empty list when every one does."""
    if "ligerd is not answering" in dom:
        return ["the page says ligerd is not answering"]
    counts = chart_counts(dom)
    problems = []
    for chart, (min_series, min_points) in wanted.items():
        if chart not in counts:
            problems.append(f"{chart}: not drawn")
            continue
        series, points = counts[chart]
        if series < min_series or points < min_points:
            problems.append(f"{chart}: {series} series, {points} points (wanted >= {min_series}, >= {min_points})")
        elif not chart_has_canvas(dom, chart):
            problems.append(f"{chart}: no canvas")
    return problems
