"""Telemetry end to end on the CPU: the Prometheus text parsed with a real parser
(prometheus_client's), every metric of docs/telemetry.md present with its labels, the real ligerd
binary serving /metrics and taking a local client's reports, bad --metrics_address values, and the
client reporter (batching, GPU-time sampling, dropping reports without a daemon)."""

import os
import re
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from ligerd.testing import prometheus_text

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "telemetry.md"
GPU_LABELS = {"gpu", "UUID", "modelName", "Hostname"}


def _build_file(*parts) -> Path:
    return prometheus_text.build_file(*parts)


def documented_metrics() -> dict:
    return prometheus_text.documented_metrics(DOC)


parse = prometheus_text.parse


def test_documented_table_is_complete_and_well_named():
    metrics = documented_metrics()
    assert len(metrics) >= 30
    for name, (kind, _) in metrics.items():
        assert name.startswith("ligerd_")
        assert (kind == "counter") == name.endswith("_total"), name
        assert kind in ("counter", "gauge", "histogram"), name


def test_simulated_workload_parses_and_covers_every_metric():
    text = subprocess.run([str(_build_file("tests", "cpp", "telemetry_exposition_main"))], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    families = parse(text)
    documented = documented_metrics()
    assert set(families) == set(documented), "exposed vs documented"
    for name, (kind, labels) in documented.items():
        fam_kind, samples = families[name]
        assert fam_kind == kind, name
        assert samples, f"{name}: no sample in the simulated workload"
        for s in samples:
            names = set(s.labels) - {"le"}
            assert names == labels, f"{name}: labels {sorted(names)}, documented {sorted(labels)}"
            assert s.value >= 0, (name, s)
    # Histograms: cumulative buckets ending in +Inf == count.
    _, samples = families["ligerd_op_gpu_seconds"]
    for op in {s.labels["op"] for s in samples}:
        buckets = [s for s in samples if s.name.endswith("_bucket") and s.labels["op"] == op]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts)
        assert buckets[-1].labels["le"] == "+Inf"
        count = next(s.value for s in samples if s.name.endswith("_count") and s.labels["op"] == op)
        assert counts[-1] == count
    # The served GPU is NVML's 1 (joined by UUID), and its IPC bytes are there.
    ipc = families["ligerd_ipc_mapped_bytes"][1]
    assert [s.labels["gpu"] for s in ipc] == ["1"]
    assert ipc[0].labels["UUID"].startswith("GPU-bbbb")


@pytest.fixture
def daemon(tmp_path):
    """The real ligerd on a temporary socket with /metrics on a free loopback port."""
    from ligerd.testing import telemetry_sim
    with telemetry_sim.daemon_with_metrics(_build_file("server", "ligerd"), tmp_path) as d:
        yield d


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def test_real_daemon_serves_a_local_clients_reports(daemon, monkeypatch):
    """A CPU 'training step' (RMSNorm forward and backward, the fused loss) through the reference
    executor, counted by the real reporter and sent to the real daemon: /metrics shows the local
    ops under the job's name, the job's tokens and loss; the JSON snapshot agrees."""
    pytest.importorskip("grpc", reason="grpcio is not installed")
    import torch
    from ligerd import _telemetry
    from ligerd.ops import rms_norm
    from ligerd.testing import ref_executor
    ref_executor.install(monkeypatch)
    _telemetry.set_job("cpu-sim-job")
    rep = _telemetry.Reporter(job="cpu-sim-job", socket_path=daemon["socket"], start_thread=False)
    monkeypatch.setattr(_telemetry, "reporter", rep)
    x = torch.randn(6, 40, dtype=torch.float32)
    w = torch.rand(40, dtype=torch.float32) + 0.5
    for _ in range(3):
        y, rstd = rms_norm.rms_norm_fwd(x, w, 1e-6, 0.0, 1, False)
        rms_norm.rms_norm_bwd(torch.randn_like(y), x, w, rstd, 0.0, 1, True)
    rep.note_loss(tokens=6, loss=torch.tensor(2.5), memory_saved=6 * 1000 * 2)
    rep.note_loss(tokens=6, loss=torch.tensor(2.25), memory_saved=6 * 1000 * 2)
    assert rep.flush(), rep.last_error
    families = parse(_get(daemon["url"] + "/metrics"))
    ops = {(s.labels["op"], s.labels["dispatch"], s.labels["job"], s.labels["dtype"]): s.value
           for s in families["ligerd_ops_total"][1]}
    assert ops[("rms_norm_fwd", "local", "cpu-sim-job", "float32")] == 3
    assert ops[("rms_norm_bwd", "local", "cpu-sim-job", "float32")] == 3
    nbytes = {s.labels["op"]: s.value for s in families["ligerd_op_bytes_total"][1]}
    assert nbytes["rms_norm_fwd"] == 3 * (x.nbytes + w.nbytes + y.nbytes + rstd.nbytes)
    jobs = {s.name: s.value for s in families["ligerd_job_tokens_total"][1] + families["ligerd_job_loss"][1]
            + families["ligerd_job_memory_saved_bytes"][1] if s.labels["job"] == "cpu-sim-job"}
    assert jobs["ligerd_job_tokens_total"] == 12
    assert jobs["ligerd_job_loss"] == 2.25
    assert jobs["ligerd_job_memory_saved_bytes"] == 12000
    info = [s for s in families["ligerd_job_process_info"][1] if s.labels["job"] == "cpu-sim-job"]
    assert len(info) == 1 and info[0].labels["pid"] == str(os.getpid())
    assert "pytest" in info[0].labels["command"] or "python" in info[0].labels["command"]
    snapshot = _get(daemon["url"] + "/api/v1/snapshot")
    assert '"job":"cpu-sim-job"' in snapshot
    # The next flush carries only what happened since: nothing, so nothing is sent.
    assert rep.flush() and rep.sent_reports == 1


def test_local_clients_jit_cache_use_reaches_the_daemon(daemon):
    """A local client's JIT cache counters (ligerd._C.jit_stats(), stood in for here: the CPU path
    compiles nothing) are reported as deltas and summed by the daemon under source="clients"."""
    pytest.importorskip("grpc", reason="grpcio is not installed")
    from ligerd import _telemetry
    rep = _telemetry.Reporter(job="jit-job", socket_path=daemon["socket"], start_thread=False)
    totals = {"memory_hits": 5, "disk_hits": 9, "misses": 2, "compiles": 2, "compile_failures": 0,
              "compile_seconds": 0.75, "corrupt_entries": 0}
    rep.jit_totals = lambda: dict(totals)
    assert rep.flush(), rep.last_error
    totals.update(memory_hits=12, disk_hits=10, compiles=3, misses=3, compile_seconds=1.25)
    assert rep.flush(), rep.last_error
    assert rep.flush() and rep.sent_reports == 2  # unchanged counters: nothing more to send
    families = parse(_get(daemon["url"] + "/metrics"))
    lookups = {s.labels["result"]: s.value for s in families["ligerd_jit_cache_lookups_total"][1]
               if s.labels["source"] == "clients"}
    assert lookups == {"memory_hit": 12, "disk_hit": 10, "miss": 3}
    compiles = {s.labels["source"]: s.value for s in families["ligerd_jit_compiles_total"][1]}
    assert compiles["clients"] == 3
    seconds = {s.labels["source"]: s.value for s in families["ligerd_jit_compile_seconds_total"][1]}
    assert seconds["clients"] == pytest.approx(1.25)


def test_a_report_for_another_pid_is_refused(daemon):
    pytest.importorskip("grpc", reason="grpcio is not installed")
    from ligerd import _telemetry
    op = _telemetry.encode_op_stats("rms_norm_fwd", "bfloat16", 5, 0, 100, [], 0)
    request = _telemetry.encode_report(1, "spoof", [op], b"", False)
    import grpc
    with pytest.raises(grpc.RpcError) as e:
        _telemetry._grpc_send(daemon["socket"], request, 5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pid 1 is not the reporting process" in e.value.details()
    families = parse(_get(daemon["url"] + "/metrics"))
    rejected = [s.value for s in families["ligerd_telemetry_reports_total"][1] if s.labels["result"] == "rejected"]
    assert rejected == [1]
    assert not families["ligerd_ops_total"][1]


def test_dashboard_and_assets_are_served(daemon):
    page = _get(daemon["url"] + "/")
    assert "<html" in page and "ligerd" in page
    assert "Dygraph" in _get(daemon["url"] + "/dygraph.min.js")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("address,why", [
    ("nonsense", "no HOST:PORT"),
    ("example.com:9464", "not an IP address"),
    ("127.0.0.1:70000", "not a port"),
    ("192.0.2.1:9464", "cannot serve there"),  # TEST-NET: not an address of this machine
])
def test_bad_metrics_address_exits_2(tmp_path, address, why):
    exe = _build_file("server", "ligerd")
    r = subprocess.run([str(exe), f"--socket={tmp_path / 's.sock'}", f"--cache_dir={tmp_path / 'c'}",
                        f"--metrics_address={address}"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert why in r.stderr and "--metrics_address" in r.stderr


def test_taken_metrics_port_exits_2(tmp_path):
    exe = _build_file("server", "ligerd")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        r = subprocess.run([str(exe), f"--socket={tmp_path / 's.sock'}", f"--cache_dir={tmp_path / 'c'}",
                            f"--metrics_address=127.0.0.1:{port}"], capture_output=True, text=True, timeout=30)
    finally:
        busy.close()
    assert r.returncode == 2, r.stderr
    assert str(port) in r.stderr


# ---- The reporter alone -------------------------------------------------------------------------

class FakeTensor:
    def __init__(self, nbytes, dtype="torch.bfloat16", cuda=True):
        self.nbytes = nbytes
        self.dtype = dtype
        self.is_cuda = cuda


class FakeEvent:
    """A CUDA event stand-in: done once `done` is set; elapsed time from the test."""
    def __init__(self, clock):
        self.clock = clock
        self.t = None
        self.done = True

    def record(self):
        self.t = self.clock.pop(0)

    def query(self):
        return self.done

    def elapsed_time(self, end):
        return end.t - self.t  # ms


def decode(buf: bytes):
    """(field, wire, value) of a protobuf message: enough to read the reporter's output."""
    from ligerd._health import _decode_varint
    pos, out = 0, []
    while pos < len(buf):
        key, pos = _decode_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _decode_varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack("<d", buf[pos:pos + 8])[0], pos + 8
        elif wire == 2:
            n, pos = _decode_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        else:
            raise AssertionError(f"wire type {wire}")
        out.append((field, wire, value))
    return out


def test_reporter_batches_samples_and_encodes(monkeypatch):
    from ligerd import _telemetry
    sent = []
    rep = _telemetry.Reporter(job="j", sample_every=4, send=lambda p, r, t: sent.append(r),
                              socket_path="/nowhere", start_thread=False)
    clock = [float(i) for i in range(100)]
    monkeypatch.setattr(rep, "_can_time", lambda: True)
    monkeypatch.setattr(rep, "_take_event", lambda: FakeEvent(clock))
    launched = []
    for i in range(10):
        rep.run("swiglu_fwd", [FakeTensor(100), None, FakeTensor(50)], [], lambda *a: launched.append(a))
    with pytest.raises(ValueError):
        rep.run("swiglu_fwd", [FakeTensor(100)], [], lambda *a: (_ for _ in ()).throw(ValueError("bad")))
    assert len(launched) == 10
    assert rep.flush()
    fields = decode(sent[0])
    op = decode(next(v for f, w, v in fields if f == 3))
    got = {f: v for f, w, v in op}
    assert got[1] == b"swiglu_fwd" and got[7] == b"bfloat16"
    assert got[3] == 11 and got[4] == 1          # calls, errors
    assert got[6] == 10 * 150 + 100              # bytes: the failed call's too
    samples = struct.unpack(f"<{len(got[11]) // 8}d", got[11])
    assert samples == (0.001, 0.001)             # calls 4 and 8: 1 ms each (the 12th never came)
    assert got[12] == 300
    assert dict((f, v) for f, w, v in fields if f in (4, 5)) == {4: os.getpid(), 5: b"j"}


def test_reporter_waits_for_unfinished_samples(monkeypatch):
    from ligerd import _telemetry
    rep = _telemetry.Reporter(job="j", sample_every=1, send=lambda *a: None, socket_path="/x", start_thread=False)
    events = []

    def take():
        events.append(FakeEvent([0.0, 2.0]))
        return events[-1]
    monkeypatch.setattr(rep, "_can_time", lambda: True)
    monkeypatch.setattr(rep, "_take_event", take)
    rep.run("rms_norm_fwd", [FakeTensor(8)], [], lambda *a: None)
    events[1].done = False                      # the GPU has not reached the end event
    op = decode(next(v for f, w, v in decode(rep.build_report()) if f == 3))
    assert 11 not in {f for f, w, v in op}      # no sample yet, and no wait for one
    events[1].done = True
    rep.run("rms_norm_fwd", [FakeTensor(8)], [], lambda *a: None)  # (its own events: FakeEvent pairs)
    op = decode(next(v for f, w, v in decode(rep.build_report()) if f == 3))
    assert len(dict((f, v) for f, w, v in op)[11]) // 8 >= 1


def test_no_daemon_drops_reports_and_ops_still_run():
    from ligerd import _telemetry
    rep = _telemetry.Reporter(job="j", start_thread=False)  # the session has no daemon
    ran = []
    rep.run("rms_norm_fwd", [FakeTensor(8, cuda=False)], [], lambda *a: ran.append(a))
    assert ran
    assert rep.flush() is False
    assert rep.dropped_reports == 1 and rep.last_error == "no daemon"
    assert rep.flush() is True                  # nothing pending: nothing to drop


def test_unreachable_daemon_drops_quickly(tmp_path):
    pytest.importorskip("grpc", reason="grpcio is not installed")
    from ligerd import _telemetry
    rep = _telemetry.Reporter(job="j", socket_path=str(tmp_path / "gone.sock"), start_thread=False)
    rep.report_step(tokens=10, loss=1.0, step_seconds=0.5)
    t = time.monotonic()
    assert rep.flush(timeout=0.5) is False
    assert time.monotonic() - t < 5
    assert rep.dropped_reports == 1


def test_public_api_and_switch_off(monkeypatch):
    import ligerd.telemetry as t
    from ligerd import _telemetry
    monkeypatch.setenv("LIGERD_JOB", "env-job")
    assert _telemetry.default_job() == "env-job"
    t.set_job("named")
    assert t.job() == "named"
    monkeypatch.setenv("LIGERD_TELEMETRY", "0")
    assert _telemetry.get() is None
    assert t.stats()["enabled"] is False
    assert t.flush() is False


def test_tokens_per_second_is_over_the_steps_time():
    from ligerd import _telemetry
    sent = []
    rep = _telemetry.Reporter(job="j", send=lambda p, r, t: sent.append(r), socket_path="/x", start_thread=False)
    rep.report_step(tokens=1000, step_seconds=0.5)
    rep.report_step(tokens=1000, step_seconds=0.5, loss=1.5, peak_allocated_bytes=7)
    assert rep.flush()
    fields = dict((f, v) for f, w, v in decode(sent[0]))
    job = dict((f, v) for f, w, v in decode(fields[6]))
    assert job[2] == 2000 and job[3] == 2          # tokens, steps
    assert job[4] == 2000.0                         # tokens/s: 2000 tokens in 1 s of steps
    assert job[5] == 0.5 and job[6] == 1.5 and job[7] == 1 and job[8] == 7
    assert fields[7] == 1                           # has_tokens_per_second


def test_ligerctl_telemetry_json_and_top(daemon):
    import json
    from ligerd import _telemetry
    ligerctl = _build_file("client", "ligerctl")
    rep = _telemetry.Reporter(job="ctl-job", socket_path=daemon["socket"], start_thread=False)
    for _ in range(5):
        rep.run("rms_norm_fwd", [FakeTensor(64, cuda=False)], [], lambda *a: None)
    rep.report_step(tokens=512, loss=1.25, step_seconds=0.25)
    assert rep.flush(), rep.last_error
    r = subprocess.run([str(ligerctl), f"--socket={daemon['socket']}", "telemetry", "--json"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    snap = json.loads(r.stdout)
    assert [(o["op"], o["dispatch"], o["job"], o["calls_total"]) for o in snap["ops"]] == \
        [("rms_norm_fwd", "local", "ctl-job", "5")]
    assert [j["tokens_per_second"] for j in snap["jobs"] if j["job"] == "ctl-job"] == [2048.0]
    r = subprocess.run([str(ligerctl), f"--socket={daemon['socket']}", "top", "--iterations=2", "--interval_ms=200"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    for section in ("GPU  MODEL", "JOB ", "OP ", "JIT cache:", "errors: none", "ctl-job", "rms_norm_fwd", "2048"):
        assert section in r.stdout, section
    assert r.stdout.count("JIT cache:") == 2       # two screens
    r = subprocess.run([str(ligerctl), f"--socket={daemon['socket']}-gone", "telemetry"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 3


def test_dashboard_in_headless_chromium(daemon):
    """The dashboard in a real browser (Debian's chromium, headless) against the real daemon fed by
    the simulated workload (ligerd.testing.telemetry_sim): every chart that a GPU-less node can
    fill has data, the tables name the jobs and kernels, and a screenshot is kept
    ($LIGERD_TEST_OUT/dashboard.png, else the test's temporary directory)."""
    import threading
    pytest.importorskip("grpc", reason="grpcio is not installed")
    from ligerd.testing import dashboard, telemetry_sim
    chromium = dashboard.find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/test.sh installs Debian's chromium)")
    result = {}
    feeder = threading.Thread(target=lambda: result.update(reps=telemetry_sim.run(daemon["socket"], seconds=7,
                                                                                 interval_s=0.3)))
    feeder.start()
    feeder.join(timeout=60)
    assert all(r.sent_reports > 0 and r.dropped_reports == 0 for r in result["reps"])
    url = daemon["url"] + "/"
    dom = dashboard.dump_dom(chromium, url)
    charts = ("chart-tps", "chart-loss", "chart-peak", "chart-ops", "chart-gpu-time")
    assert not dashboard.chart_problems(dom, {c: (2, 2) for c in charts}), dashboard.chart_counts(dom)
    # Without a GPU the memory chart says why instead of drawing.
    assert dashboard.chart_counts(dom).get("chart-gpu-mem", (None, None))[1] == 0
    assert re.search(r'id="chart-gpu-mem".*?no per-GPU memory: NVML', dom, re.S)
    for text in ("llama-sft", "qwen-pretrain", "swiglu_bwd", "cross_entropy_fwd", "reports from local clients"):
        assert text in dom, text
    out = Path(os.environ.get("LIGERD_TEST_OUT") or daemon["tmp"])
    dashboard.screenshot(chromium, url, out / "dashboard.png")
