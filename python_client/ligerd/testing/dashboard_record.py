"""Records ligerd's dashboard on one machine to replay it on another (docs/telemetry.md, "Recording
the dashboard"): a GPU machine with no browser records, scripts/dashboard_replay.py serves the
recording and screenshots it where Chromium is.

    python3 -m ligerd.testing.dashboard_record --url http://127.0.0.1:9464 --out rec.jsonl.gz --seconds 60
    python3 -m ligerd.testing.dashboard_record --out rec.jsonl.gz -- python3 examples/train_llama.py

The recorder fetches the page and its files once, then every ``--interval`` seconds what the page
polls (/api/v1/snapshot and /api/v1/history: dashboard.js), and /metrics at the end. With a command
after ``--`` it records while the command runs (and one history interval after), and exits with
the command's status.

The recording is one gzip'd JSON Lines file (one file, so that it travels where few files may):
  {"kind": "header", "format": 1, "url": ..., "started_unix": ..., "interval_s": ...}
  {"kind": "asset", "path": "dashboard.js", "content_type": ..., "text": ...}   (or "base64")
  {"kind": "poll", "t": ..., "snapshot": {...}, "history": [new points]}  every interval
  {"kind": "metrics", "t": ..., "text": ...}
  {"kind": "end", "ended_unix": ..., "polls": ..., "failed_polls": ..., "last_error": ...}
Each poll keeps the whole snapshot and only the history points newer than those already kept
(ligerd's history is a ring of its last 300 points, 10 minutes): the points of every poll, merged,
are the node's history over the whole recording, longer than one page could show. The stream is
flushed after every line, so a recorder killed outright leaves a readable recording.

Only the standard library: it runs on a GPU machine where nothing can be installed."""

from __future__ import annotations

import argparse
import base64
import gzip
import html.parser
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

FORMAT = 1
ENDPOINTS = ("/api/v1/snapshot", "/api/v1/history")  # what dashboard.js fetches
HISTORY_INTERVAL_S = 2.0  # ligerd adds a history point every 2 s (docs/telemetry.md)
DEFAULT_URL = "http://127.0.0.1:9464"


class _PageFiles(html.parser.HTMLParser):
    """The files a page loads from beside itself: <script src>, <link href> (relative names)."""

    def __init__(self):
        super().__init__()
        self.files: List[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        ref = a.get("src") if tag == "script" else a.get("href") if tag == "link" else None
        if ref and not urllib.parse.urlsplit(ref).scheme and not ref.startswith(("/", "#")) and ref not in self.files:
            self.files.append(ref)


def _get(url: str, timeout: float) -> Tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read(), r.headers.get("Content-Type", "application/octet-stream")


def _time(point: dict) -> float:
    return float(point.get("time_unix_seconds") or 0)


class Recorder:
    """Polls a ligerd's dashboard data into ``path`` (the format above). ``start()`` records on a
    thread until ``stop()``; ``poll()`` records once (for callers with their own clock)."""

    def __init__(self, url: str, path, interval_s: float = HISTORY_INTERVAL_S, timeout_s: float = 5.0):
        self.url = url.rstrip("/")
        self.path = Path(path)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.polls = 0
        self.failed_polls = 0
        self.last_error: Optional[str] = None
        self.assets: List[str] = []
        self._last_point_time = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._out = gzip.open(self.path, "wb")
        self._write({"kind": "header", "format": FORMAT, "url": self.url, "started_unix": time.time(),
                     "interval_s": interval_s, "endpoints": list(ENDPOINTS)})

    def _write(self, record: dict) -> None:
        self._out.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._out.flush(zlib.Z_SYNC_FLUSH)  # readable up to here even if this process is killed

    def _fail(self, what: str, e: Exception) -> None:
        self.last_error = f"{what}: {e}"

    def record_page(self) -> bool:
        """The page and the files it loads, once; False (and last_error) when ligerd did not answer."""
        try:
            page, mime = _get(self.url + "/", self.timeout_s)
        except (OSError, urllib.error.URLError) as e:
            self._fail("GET /", e)
            return False
        parser = _PageFiles()
        parser.feed(page.decode("utf-8", "replace"))
        files = [("index.html", page, mime)]
        for name in parser.files:
            try:
                body, mime = _get(self.url + "/" + name, self.timeout_s)
            except (OSError, urllib.error.URLError) as e:
                self._fail(f"GET /{name}", e)
                return False
            files.append((name, body, mime))
        with self._lock:
            for name, body, mime in files:
                record = {"kind": "asset", "path": name, "content_type": mime}
                try:
                    record["text"] = body.decode("utf-8")
                except UnicodeDecodeError:
                    record["base64"] = base64.b64encode(body).decode()
                self._write(record)
            self.assets = [name for name, _, _ in files]
        return True

    def poll(self) -> bool:
        """One poll: the snapshot and the history points not yet kept. False when it failed."""
        if not self.assets and not self.record_page():
            self.failed_polls += 1
            return False
        try:
            snapshot = json.loads(_get(self.url + ENDPOINTS[0], self.timeout_s)[0])
            history = json.loads(_get(self.url + ENDPOINTS[1], self.timeout_s)[0])
        except (OSError, urllib.error.URLError, ValueError) as e:
            self._fail("poll", e)
            self.failed_polls += 1
            return False
        t = time.time()
        with self._lock:
            new = sorted((p for p in history.get("points", []) if _time(p) > self._last_point_time), key=_time)
            if new:
                self._last_point_time = _time(new[-1])
            self._write({"kind": "poll", "t": t, "snapshot": snapshot, "history": new})
            self.polls += 1
        return True

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            self.poll()
            if self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started))):
                return

    def start(self) -> "Recorder":
        self._thread = threading.Thread(target=self._run, name="dashboard-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends the recording: a last poll, /metrics, and the end line; closes the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
        try:
            text = _get(self.url + "/metrics", self.timeout_s)[0].decode("utf-8", "replace")
            with self._lock:
                self._write({"kind": "metrics", "t": time.time(), "text": text})
        except (OSError, urllib.error.URLError) as e:
            self._fail("GET /metrics", e)
        with self._lock:
            self._write({"kind": "end", "ended_unix": time.time(), "polls": self.polls,
                         "failed_polls": self.failed_polls, "last_error": self.last_error})
            self._out.close()

    def __enter__(self) -> "Recorder":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- Reading a recording -------------------------------------------------------------------------

@dataclass
class Recording:
    header: dict
    assets: Dict[str, Tuple[str, bytes]] = field(default_factory=dict)  # path -> (content type, body)
    polls: List[Tuple[float, dict]] = field(default_factory=list)      # (time, snapshot), in order
    history: List[dict] = field(default_factory=list)                  # every point kept, by time
    metrics_text: Optional[str] = None
    end: Optional[dict] = None  # None when the recorder stopped without writing its end line

    def state_at(self, at: Optional[float] = None, window_s: Optional[float] = None) -> Tuple[dict, dict]:
        """(snapshot, history response) as the page would have fetched them ``at`` seconds after
        the first poll (negative: before the last one; None: the last poll). The history holds
        every recorded point up to then, or those of the last ``window_s`` seconds."""
        if not self.polls:
            raise ValueError("the recording holds no poll (ligerd never answered: see its end line)")
        first, last = self.polls[0][0], self.polls[-1][0]
        when = last if at is None else (first + at if at >= 0 else last + at)
        chosen = [p for p in self.polls if p[0] <= when + 1e-6] or self.polls[:1]
        t, snapshot = chosen[-1]
        points = [p for p in self.history if _time(p) <= t and (window_s is None or _time(p) >= t - window_s)]
        return snapshot, {"points": points}

    def duration_s(self) -> float:
        return self.polls[-1][0] - self.polls[0][0] if self.polls else 0.0


def load(path) -> Recording:
    """Reads a recording; one cut short (a killed recorder) gives what was written."""
    rec: Optional[Recording] = None
    seen = set()
    with gzip.open(path, "rb") as f:
        lines = []
        try:
            for line in f:
                lines.append(line)
        except (EOFError, zlib.error):
            pass  # a stream cut short: every line before the cut was flushed whole
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a last line cut in the middle
        kind = r.get("kind")
        if kind == "header":
            if r.get("format") != FORMAT:
                raise ValueError(f"{path}: recording format {r.get('format')}, this reader knows {FORMAT}")
            rec = Recording(header=r)
        elif rec is None:
            raise ValueError(f"{path}: not a dashboard recording (no header line)")
        elif kind == "asset":
            body = r["text"].encode() if "text" in r else base64.b64decode(r["base64"])
            rec.assets[r["path"]] = (r["content_type"], body)
        elif kind == "poll":
            rec.polls.append((r["t"], r["snapshot"]))
            for p in r["history"]:
                if _time(p) not in seen:
                    seen.add(_time(p))
                    rec.history.append(p)
        elif kind == "metrics":
            rec.metrics_text = r["text"]
        elif kind == "end":
            rec.end = r
    if rec is None:
        raise ValueError(f"{path}: empty recording")
    rec.history.sort(key=_time)
    return rec


def _num(v) -> float:
    return float(v or 0)  # uint64 fields arrive as strings (protobuf JSON)


def series(points: Sequence[dict]) -> Dict[str, Dict[str, int]]:
    """What the dashboard's charts would draw from these history points: chart id -> series name
    -> points (dashboard.js's drawHistory, counted: memory per GPU, per job tokens/s, loss and peak
    memory; ops/s per op between points where its count grew, GPU time per call where it has new
    samples). For checking a recording where no browser runs."""
    out: Dict[str, Dict[str, int]] = {c: {} for c in ("chart-gpu-mem", "chart-tps", "chart-loss", "chart-peak",
                                                      "chart-ops", "chart-gpu-time")}

    def add(chart, name):
        out[chart][name] = out[chart].get(name, 0) + 1

    for p in points:
        for g in p.get("gpus", []):
            if _num(g.get("memory_used_bytes")) > 0:
                add("chart-gpu-mem", f"GPU {g.get('gpu', 0)}")
        for j in p.get("jobs", []):
            if _num(j.get("tokens_per_second")) > 0:
                add("chart-tps", j["job"])
            if j.get("has_loss"):
                add("chart-loss", j["job"])
            if _num(j.get("peak_allocated_bytes")) > 0:
                add("chart-peak", j["job"])
    for before, now in zip(points, points[1:]):
        if not _time(now) > _time(before):
            continue
        prev = {o["op"]: o for o in before.get("ops", [])}
        for o in now.get("ops", []):
            b = prev.get(o["op"])
            if b is not None and _num(o.get("calls_total")) > _num(b.get("calls_total")):
                add("chart-ops", o["op"])
            if _num(o.get("gpu_samples")) > _num(b.get("gpu_samples") if b else 0):
                add("chart-gpu-time", o["op"])
    return out


# ---- Command line --------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python3 -m ligerd.testing.dashboard_record",
                                usage="%(prog)s [--url URL] --out FILE [--seconds N] [--interval S] [-- COMMAND ...]",
                                description=__doc__.split("\n\n")[0],
                                epilog="Replay: python3 scripts/dashboard_replay.py REC --screenshot out.png")
    p.add_argument("--url", default=DEFAULT_URL, help=f"ligerd's metrics address (default {DEFAULT_URL})")
    p.add_argument("--out", required=True, help="the recording to write (e.g. dashboard-record.jsonl.gz)")
    p.add_argument("--seconds", type=float, help="record this long (default: while the command runs, else until "
                                                 "interrupted)")
    p.add_argument("--interval", type=float, default=HISTORY_INTERVAL_S, help="seconds between polls (default 2)")
    a = p.parse_args(own)
    if a.interval <= 0:
        p.error("--interval must be > 0")

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    rec = Recorder(a.url, a.out, interval_s=a.interval).start()
    rc = 0
    try:
        if command:
            proc = subprocess.Popen(command)
            while proc.poll() is None and not stopping.is_set():
                stopping.wait(0.2)
            if proc.poll() is None:
                proc.terminate()
            rc = proc.wait()
            time.sleep(HISTORY_INTERVAL_S + 0.5)  # the command's last history point
        else:
            stopping.wait(a.seconds)
    except KeyboardInterrupt:
        rc = rc or 130
    finally:
        rec.stop()
    print(f"dashboard_record: {rec.polls} polls ({rec.failed_polls} failed) of {rec.url} -> {rec.path}"
          + (f"; last error: {rec.last_error}" if rec.last_error else ""), file=sys.stderr)
    if rec.polls == 0:
        return rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
