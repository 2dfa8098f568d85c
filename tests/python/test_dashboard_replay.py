"""Recording the dashboard where it runs and replaying it elsewhere (docs/telemetry.md, "Recording
the dashboard"): the recorder's command line around a simulated workload fed to the real ligerd,
what the recording holds (the page, every poll's snapshot, the history merged without duplicates,
/metrics), a recording cut short, stepping through its time, scripts/dashboard_replay.py serving
it, and its screenshot in headless Chromium with the charts drawn from the recording."""

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import ligerd
from ligerd.testing import dashboard, dashboard_record, prometheus_text, telemetry_sim

REPO = Path(__file__).resolve().parents[2]
REPLAY = REPO / "scripts" / "dashboard_replay.py"
PACKAGE_ROOT = str(Path(ligerd.__file__).resolve().parents[1])
JOBS = ("llama-sft", "qwen-pretrain")  # telemetry_sim's
ASSETS = {"index.html", "dashboard.js", "dashboard.css", "dygraph.min.js", "dygraph.min.css"}
CPU_CHARTS = ("chart-tps", "chart-loss", "chart-peak", "chart-ops", "chart-gpu-time")  # all but NVML's


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The recorder's command line around the simulated workload (two jobs for 5 s), against the
    real ligerd: {"path", "daemon_history", "url", "stderr"}."""
    pytest.importorskip("grpc", reason="grpcio is not installed")
    exe = prometheus_text.build_file("server", "ligerd")
    tmp = tmp_path_factory.mktemp("dashboard-record")
    path = tmp / "rec.jsonl.gz"
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    with telemetry_sim.daemon_with_metrics(exe, tmp) as d:
        r = subprocess.run([sys.executable, "-m", "ligerd.testing.dashboard_record", "--url", d["url"], "--out",
                            str(path), "--interval", "0.5", "--",
                            sys.executable, "-m", "ligerd.testing.telemetry_sim", "--socket", d["socket"],
                            "--seconds", "5", "--interval", "0.3"],
                           capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
        history = json.loads(_get(d["url"] + "/api/v1/history"))["points"]
    return {"path": path, "daemon_history": history, "url": d["url"], "stderr": r.stderr}


def test_recording_holds_the_page_the_polls_and_the_history(recorded):
    rec = dashboard_record.load(recorded["path"])
    assert rec.header["url"] == recorded["url"] and rec.header["interval_s"] == 0.5
    assert set(rec.assets) == ASSETS
    assert b"chart-gpu-mem" in rec.assets["index.html"][1] and b"Dygraph" in rec.assets["dygraph.min.js"][1]
    assert rec.assets["index.html"][0].startswith("text/html")
    # 5 s of workload and 2.5 s after it, a poll every 0.5 s; none failed.
    assert rec.end is not None and rec.end["failed_polls"] == 0, rec.end
    assert len(rec.polls) == rec.end["polls"] >= 10
    assert re.search(rf"{len(rec.polls)} polls \(0 failed\)", recorded["stderr"])
    times = [t for t, _ in rec.polls]
    assert times == sorted(times) and rec.duration_s() >= 6
    # The history: ligerd's points (one every 2 s), each once, in order, and the same as it serves.
    h = [p["time_unix_seconds"] for p in rec.history]
    assert h == sorted(set(h)) and len(h) >= 3
    assert rec.history == [p for p in recorded["daemon_history"] if p["time_unix_seconds"] <= h[-1]]
    last = rec.polls[-1][1]
    assert {j["job"] for j in last["jobs"]} == set(JOBS)
    assert {"swiglu_bwd", "cross_entropy_fwd"} <= {o["op"] for o in last["ops"]}
    families = prometheus_text.parse(rec.metrics_text)
    assert {s.labels["job"] for s in families["ligerd_ops_total"][1]} == set(JOBS)
    # What the charts would draw: every job and op over several points; no GPU memory here.
    drawn = dashboard_record.series(rec.history)
    for chart in CPU_CHARTS:
        assert len(drawn[chart]) >= 2 and min(drawn[chart].values()) >= 2, (chart, drawn[chart])
    assert set(drawn["chart-tps"]) == set(JOBS)
    assert drawn["chart-gpu-mem"] == {}


def test_stepping_through_the_recording(recorded):
    rec = dashboard_record.load(recorded["path"])
    first, last = rec.polls[0], rec.polls[-1]
    snapshot, history = rec.state_at()
    assert snapshot == last[1] and history["points"] == rec.history
    snapshot, history = rec.state_at(0)
    assert snapshot == first[1]
    assert all(p["time_unix_seconds"] <= first[0] for p in history["points"])
    assert len(history["points"]) < len(rec.history)
    mid = rec.duration_s() / 2
    snapshot, history = rec.state_at(mid)
    t = max(tp for tp, _ in rec.polls if tp <= first[0] + mid)
    assert snapshot == dict(rec.polls)[t]
    assert snapshot["time_unix_seconds"] <= t
    assert rec.state_at(-1.0)[0] == max((p for p in rec.polls if p[0] <= last[0] - 1.0), key=lambda p: p[0])[1]
    _, windowed = rec.state_at(window_s=3.0)
    assert windowed["points"] == [p for p in rec.history if p["time_unix_seconds"] >= last[0] - 3.0]
    assert 1 <= len(windowed["points"]) < len(rec.history)


def test_a_recording_cut_short_still_loads(recorded, tmp_path):
    """Every prefix of the file (as a recorder killed mid-write leaves it) loads with the polls
    written before the cut."""
    raw = recorded["path"].read_bytes()
    total = len(dashboard_record.load(recorded["path"]).polls)
    cut = tmp_path / "cut.jsonl.gz"
    counts = []
    for n in range(len(raw) // 2, len(raw), max(1, len(raw) // 200)):
        cut.write_bytes(raw[:n])
        rec = dashboard_record.load(cut)
        # A cut inside the gzip trailer (or a flushed block with nothing after it) still decodes
        # every line, the end line included: then the recording is complete, not cut short.
        assert rec.end is None or len(rec.polls) == total, (n, len(raw))
        assert rec.header["format"] == dashboard_record.FORMAT
        if rec.polls:
            assert rec.state_at()[0] == rec.polls[-1][1]
        counts.append(len(rec.polls))
    assert counts == sorted(counts) and any(0 < c < total for c in counts), counts
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"kind": "poll", "t": 1, "snapshot": {}, "history": []}\n'))
    with pytest.raises(ValueError, match="not a dashboard recording"):
        dashboard_record.load(bad)
    newer = tmp_path / "newer.jsonl.gz"
    newer.write_bytes(gzip.compress(b'{"kind": "header", "format": 99}\n'))
    with pytest.raises(ValueError, match="format 99"):
        dashboard_record.load(newer)


def test_a_recorder_with_no_daemon_says_so(tmp_path):
    out = tmp_path / "none.jsonl.gz"
    r = subprocess.run([sys.executable, "-m", "ligerd.testing.dashboard_record", "--url", "http://127.0.0.1:9",
                        "--out", str(out), "--seconds", "0.5", "--interval", "0.2"],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=PACKAGE_ROOT))
    assert r.returncode == 1
    assert "0 polls" in r.stderr and "GET /" in r.stderr
    rec = dashboard_record.load(out)
    assert rec.end["polls"] == 0 and rec.end["failed_polls"] >= 2
    with pytest.raises(ValueError, match="no poll"):
        rec.state_at()


def test_replay_serves_what_was_recorded(recorded):
    proc = subprocess.Popen([sys.executable, str(REPLAY), str(recorded["path"]), "--serve", "--at", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
        assert m, line
        url = m.group(1)
        rec = dashboard_record.load(recorded["path"])
        snapshot, history = rec.state_at(3)
        assert json.loads(_get(url + "/api/v1/snapshot")) == snapshot
        assert json.loads(_get(url + "/api/v1/history")) == history
        assert _get(url + "/") == rec.assets["index.html"][1]
        assert _get(url + "/dygraph.min.js") == rec.assets["dygraph.min.js"][1]
        assert _get(url + "/metrics").decode() == rec.metrics_text
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(url + "/nothing-here")
        assert e.value.code == 404
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def test_replay_screenshot_shows_the_charts(recorded, tmp_path):
    """The command a GPU machine's recording is replayed with, on the CPU machine's recording: the
    charts it can fill show both jobs over several points, the screenshot is kept
    ($LIGERD_TEST_OUT/dashboard-replay.png, else the test's temporary directory); asking for the
    GPU memory chart, which a GPU-less recording cannot fill, fails the check."""
    if dashboard.find_chromium() is None:
        pytest.skip("chromium is not installed (scripts/test.sh installs Debian's chromium)")
    out = Path(os.environ.get("LIGERD_TEST_OUT") or tmp_path)
    shot, dom_file = out / "dashboard-replay.png", tmp_path / "dom.html"
    r = subprocess.run([sys.executable, str(REPLAY), str(recorded["path"]), "--screenshot", str(shot),
                        "--dom", str(dom_file), "--require", ",".join(CPU_CHARTS)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > dashboard.MIN_SCREENSHOT_BYTES
    dom = dom_file.read_text()
    counts = dashboard.chart_counts(dom)
    for chart in CPU_CHARTS:
        assert counts[chart][0] >= 2 and counts[chart][1] >= 3, (chart, counts[chart])
        assert re.search(rf"{chart}\s+{counts[chart][0]} series\s+{counts[chart][1]} points", r.stdout)
    for text in (*JOBS, "swiglu_bwd", "cross_entropy_fwd"):
        assert text in dom, text
    assert "ligerd is not answering" not in dom
    r = subprocess.run([sys.executable, str(REPLAY), str(recorded["path"]), "--screenshot", str(tmp_path / "x.png"),
                        "--require", "chart-gpu-mem"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "chart-gpu-mem: 0 series, 0 points" in r.stderr, r.stdout + r.stderr
