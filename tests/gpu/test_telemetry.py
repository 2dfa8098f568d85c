"""Telemetry on a GPU (docs/telemetry.md): remote ops counted by the daemon with sampled CUDA-event
GPU times, local ops reported by the client with theirs, the fused loss's tokens, loss and saved
memory, NVML's per-GPU and per-process memory, ligerd's IPC-mapped bytes, and the dashboard with all of it: recorded while a workload
runs ($OUT/dashboard-record.jsonl.gz, else the daemon's temporary directory; replayed and
screenshotted elsewhere by scripts/dashboard_replay.py), and screenshotted here too when headless
Chromium is installed ($OUT/dashboard-gpu.png).

Run by tests/gpu/run.sh (PYTHONPATH=<build>/python, LIGERD_BIN=<build>/server/ligerd). Skips without
CUDA or LIGERD_BIN. Starts its own daemon with --telemetry_sample_every=1 (every remote launch timed)
and LIGERD_TELEMETRY_SAMPLE_EVERY=1 for the client.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from ligerd.testing import dashboard, dashboard_record
from ligerd.testing.gpu import require_cuda, require_ligerd_bin

torch = require_cuda()
LIGERD_BIN = require_ligerd_bin()
prometheus_parser = pytest.importorskip("prometheus_client.parser", reason="prometheus_client is not installed")

import ligerd  # noqa: E402
import ligerd.telemetry  # noqa: E402
from ligerd import _telemetry  # noqa: E402
from ligerd.transformers import LigerFusedLinearCrossEntropyLoss, liger_rms_norm  # noqa: E402

JOB = "gpu-telemetry-test"


@pytest.fixture(scope="module")
def daemon():
    d = tempfile.mkdtemp(prefix="ligerd-telemetry-test-")
    sock = os.path.join(d, "ligerd.sock")
    log_path = os.path.join(d, "ligerd.log")
    log = open(log_path, "w")
    proc = subprocess.Popen([LIGERD_BIN, f"--socket={sock}", f"--cache_dir={os.environ.get('LIGERD_CACHE_DIR') or os.path.join(d, 'cache')}",
                             "--metrics_address=127.0.0.1:0", "--telemetry_sample_every=1"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = None
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"metrics on (http://127\.0\.0\.1:\d+)/metrics", Path(log_path).read_text())
        url = m.group(1) if m else None
        time.sleep(0.1)
    while not os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert url, Path(log_path).read_text()
    saved = {k: os.environ.get(k) for k in ("LIGERD_SOCKET", "LIGERD_AUTOSTART", "LIGERD_JOB",
                                            "LIGERD_TELEMETRY_SAMPLE_EVERY")}
    os.environ.update(LIGERD_SOCKET=sock, LIGERD_AUTOSTART="0", LIGERD_JOB=JOB, LIGERD_TELEMETRY_SAMPLE_EVERY="1")
    _telemetry._reset_for_tests()
    yield {"url": url, "socket": sock, "dir": d, "log": log_path}
    ligerd.set_dispatch_mode(None)
    _telemetry._reset_for_tests()
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    log.close()
    if os.environ.get("OUT"):  # the daemon's log among the run's artifacts
        shutil.copy(log_path, Path(os.environ["OUT"]) / "telemetry-test-daemon.log")
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def metrics(url: str) -> dict:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in prometheus_parser.text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(m: dict, name: str, **labels) -> float:
    return sum(s.value for s in m.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def settled(url: str, done, timeout: float = 10.0) -> dict:
    """The first scrape for which done(metrics) holds, or the last one after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(url)
        if done(m) or time.monotonic() > deadline:
            return m
        time.sleep(0.1)


def rms_steps(n: int, sync_each: bool = False):
    x = torch.randn(512, 2048, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.rand(2048, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    for _ in range(n):
        liger_rms_norm(x, w, 1e-6).float().sum().backward()
        if sync_each:
            torch.cuda.synchronize()
    torch.cuda.synchronize()


def test_remote_ops_are_counted_and_timed_by_the_daemon(daemon):
    ligerd.set_dispatch_mode("remote")
    # One step at a time: the daemon times a launch only while fewer than 8 timings are in flight
    # (GpuTimeSampler::kMaxPending), so 40 launches queued at once on a busy GPU are not all timed.
    rms_steps(20, sync_each=True)
    # The runner hands its op counts over every 250 ms (server/telemetry/op_tally.h), and a launch's
    # GPU time as soon as its events are done, so the GPU-time count can be complete while the op
    # counts are not yet handed over: wait for both (a loaded machine may take several hand-overs).
    m = settled(daemon["url"], lambda m: value(m, "ligerd_op_gpu_seconds_count", op="rms_norm_fwd",
                                                 dispatch="remote") >= 20
                and all(value(m, "ligerd_ops_total", op=op, dispatch="remote", job=JOB) >= 20
                        for op in ("rms_norm_fwd", "rms_norm_bwd")))
    assert value(m, "ligerd_ops_total", op="rms_norm_fwd", dispatch="remote", job=JOB, dtype="bfloat16") == 20, \
        ligerd.dispatch_info()
    assert value(m, "ligerd_ops_total", op="rms_norm_bwd", dispatch="remote", job=JOB) == 20
    assert value(m, "ligerd_op_bytes_total", op="rms_norm_fwd", dispatch="remote") >= 20 * 2 * 512 * 2048 * 2
    n = value(m, "ligerd_op_gpu_seconds_count", op="rms_norm_fwd", dispatch="remote")
    assert n >= 15, n  # every launch is sampled; a few may still be in flight
    mean = value(m, "ligerd_op_gpu_seconds_sum", op="rms_norm_fwd", dispatch="remote") / n
    assert 1e-6 < mean < 5e-3, mean
    assert value(m, "ligerd_op_sampled_bytes_total", op="rms_norm_fwd", dispatch="remote") > 0
    assert value(m, "ligerd_sessions", dispatch="remote") >= 1
    assert value(m, "ligerd_ipc_mapped_bytes") > 0
    assert value(m, "ligerd_ipc_mappings") >= 1
    assert any(s.labels["pid"] == str(os.getpid()) and s.labels["job"] == JOB
               for s in m["ligerd_job_process_info"])


def test_nvml_memory_per_gpu_and_per_process(daemon):
    m = metrics(daemon["url"])
    assert value(m, "ligerd_nvml_available") == 1
    used = m["ligerd_gpu_memory_used_bytes"]
    assert used and all({"gpu", "UUID", "modelName", "Hostname"} <= set(s.labels) for s in used)
    assert all(s.labels["UUID"].startswith("GPU-") for s in used)
    assert value(m, "ligerd_gpu_memory_total_bytes") >= value(m, "ligerd_gpu_memory_used_bytes") > 0
    assert value(m, "ligerd_gpu_memory_bandwidth_bytes_per_second") > 1e11
    # This process holds GPU memory (NVML may not attribute it under MPS: then it reports 0).
    mine = [s for s in m.get("ligerd_gpu_process_memory_bytes", []) if s.labels["pid"] == str(os.getpid())]
    assert mine and mine[0].labels["job"] == JOB


def test_local_ops_are_reported_with_gpu_time(daemon):
    ligerd.set_dispatch_mode("local")
    _telemetry._reset_for_tests()
    rms_steps(10)
    assert ligerd.telemetry.flush(), ligerd.telemetry.stats()
    m = metrics(daemon["url"])
    assert value(m, "ligerd_ops_total", op="rms_norm_fwd", dispatch="local", job=JOB) == 10
    n = value(m, "ligerd_op_gpu_seconds_count", op="rms_norm_fwd", dispatch="local")
    assert n >= 1, n  # launches whose end event the GPU had passed at the flush
    assert 1e-6 < value(m, "ligerd_op_gpu_seconds_sum", op="rms_norm_fwd", dispatch="local") / n < 5e-3


def test_fused_loss_reports_tokens_loss_and_saved_memory(daemon):
    ligerd.set_dispatch_mode("local")
    _telemetry._reset_for_tests()
    bt, h, v = 2048, 1024, 32000
    x = torch.randn(bt, h, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(v, h, device="cuda", dtype=torch.bfloat16) * 0.02).requires_grad_()
    target = torch.randint(0, v, (bt,), device="cuda")
    loss_fn = LigerFusedLinearCrossEntropyLoss()
    for _ in range(3):
        loss = loss_fn(w, x, target)
        loss.backward()
    torch.cuda.synchronize()
    assert ligerd.telemetry.flush(), ligerd.telemetry.stats()
    m = metrics(daemon["url"])
    assert value(m, "ligerd_job_tokens_total", job=JOB) >= 3 * bt
    assert abs(value(m, "ligerd_job_loss", job=JOB) - loss.item()) < 1e-3
    assert value(m, "ligerd_job_memory_saved_bytes", job=JOB) > bt * v  # most of the bf16 logits
    assert value(m, "ligerd_job_peak_allocated_bytes", job=JOB) >= torch.cuda.max_memory_allocated() // 2
    assert value(m, "ligerd_job_tokens_per_second", job=JOB) > 0


def _workload(seconds: float, flush_every_s: float = 0.5) -> None:
    """Training-like work for about ``seconds``: RMSNorm steps and the fused loss in the current
    dispatch mode, the client's reports flushed every ``flush_every_s`` (local ops reach ligerd
    only through them)."""
    bt, h, v = 2048, 1024, 32000
    x = torch.randn(bt, h, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(v, h, device="cuda", dtype=torch.bfloat16) * 0.02).requires_grad_()
    target = torch.randint(0, v, (bt,), device="cuda")
    loss_fn = LigerFusedLinearCrossEntropyLoss()
    last_flush = time.monotonic()
    end = last_flush + seconds
    while time.monotonic() < end:
        rms_steps(5)
        loss_fn(w, x, target).backward()
        torch.cuda.synchronize()
        if time.monotonic() - last_flush >= flush_every_s:
            ligerd.telemetry.flush()
            last_flush = time.monotonic()
    ligerd.telemetry.flush()


def test_dashboard_screenshot_with_a_gpu(daemon):
    """The dashboard of a GPU machine, with or without a browser on it: records the page's data
    (ligerd.testing.dashboard_record) while a short workload runs, remote then local, into
    $OUT/dashboard-record.jsonl.gz (else the daemon's directory), and checks that the recording
    holds what the page draws: GPU memory over time (NVML, so only a GPU machine fills it), ops/s
    of the kernels, the job's tokens/s and loss. Where Chromium is installed, it also screenshots
    the live page ($OUT/dashboard-gpu.png); elsewhere the recording is screenshotted on a machine
    with Chromium: python3 scripts/dashboard_replay.py REC --screenshot out.png."""
    out = Path(os.environ.get("OUT") or daemon["dir"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dashboard-record.jsonl.gz"
    _telemetry._reset_for_tests()
    # Each phase spans several of ligerd's 2 s history points, so each op's count grows between
    # points; the last sleep lets the workload's last point in.
    with dashboard_record.Recorder(daemon["url"], path, interval_s=1.0) as rec:
        ligerd.set_dispatch_mode("remote")
        _workload(5)
        ligerd.set_dispatch_mode("local")
        _workload(6)
        time.sleep(dashboard_record.HISTORY_INTERVAL_S + 0.5)
    assert rec.polls >= 8 and rec.failed_polls == 0, rec.last_error
    recording = dashboard_record.load(path)
    assert recording.end is not None and {"index.html", "dashboard.js", "dygraph.min.js"} <= set(recording.assets)
    # The points of the recording's own time (the history also holds the earlier tests').
    drawn = dashboard_record.series([p for p in recording.history
                                     if p["time_unix_seconds"] >= recording.header["started_unix"]])
    assert drawn["chart-gpu-mem"] and max(drawn["chart-gpu-mem"].values()) >= 4, drawn["chart-gpu-mem"]
    assert drawn["chart-ops"].get("rms_norm_fwd", 0) >= 3 and len(drawn["chart-ops"]) >= 3, drawn["chart-ops"]
    assert drawn["chart-gpu-time"].get("rms_norm_fwd", 0) >= 2, drawn["chart-gpu-time"]
    assert drawn["chart-tps"].get(JOB, 0) >= 2 and drawn["chart-loss"].get(JOB, 0) >= 2, drawn

    chromium = dashboard.find_chromium()
    if chromium is None:
        return  # the recording is this machine's dashboard; it is replayed where Chromium is
    url = daemon["url"] + "/"
    dom = dashboard.dump_dom(chromium, url)
    problems = dashboard.chart_problems(dom, {"chart-gpu-mem": (1, 2), "chart-ops": (1, 2)})
    assert not problems, (problems, dashboard.chart_counts(dom))
    dashboard.screenshot(chromium, url, out / "dashboard-gpu.png")
