#!/usr/bin/env python3
"""Replays a dashboard recording (python3 -m ligerd.testing.dashboard_record; docs/telemetry.md,
"Recording the dashboard"): serves the recorded page with the recorded JSON on a local port, as
ligerd served them, and takes a screenshot in headless Chromium, checking that the charts show data.

    python3 scripts/dashboard_replay.py REC.jsonl.gz --screenshot out.png
    python3 scripts/dashboard_replay.py REC.jsonl.gz --screenshot at30.png --at 30 --window 600
    python3 scripts/dashboard_replay.py REC.jsonl.gz --serve --port 8000   # open it in a browser

The page is served as of the last poll (or --at SECONDS after the first; negative: before the
last), with the history of the whole recording (or of its last --window seconds, as a live page
would show 600). With --screenshot, the page's DOM is checked first: each chart of --require
(default: the GPU memory and ops charts) must show at least one series of two points; every
chart's counts are printed. Exit status: 0 when the screenshot was taken and the check passed,
1 when the check failed (the screenshot is still taken, to look at), 2 for a bad recording or no
Chromium.
"""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python_client"))  # this checkout's ligerd

from ligerd.testing import dashboard, dashboard_record  # noqa: E402


class ReplayHandler(http.server.BaseHTTPRequestHandler):
    """GET of a recorded file, of the recorded JSON or of /metrics; 404 for anything else."""

    routes: dict = {}  # path -> (content type, body); set on a subclass per server

    def do_GET(self):
        self._answer(send_body=True)

    def do_HEAD(self):
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        found = self.routes.get("/index.html" if path == "/" else path)
        status, (mime, body) = (200, found) if found else (404, ("text/plain", b"not in the recording\n"))
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, *args):  # quiet: the browser's requests are not news
        pass


def routes_for(rec: dashboard_record.Recording, at=None, window_s=None) -> dict:
    snapshot, history = rec.state_at(at, window_s)
    routes = {"/" + name: (mime, body) for name, (mime, body) in rec.assets.items()}
    routes["/api/v1/snapshot"] = ("application/json", json.dumps(snapshot).encode())
    routes["/api/v1/history"] = ("application/json", json.dumps(history).encode())
    if rec.metrics_text is not None:
        routes["/metrics"] = ("text/plain; version=0.0.4; charset=utf-8", rec.metrics_text.encode())
    return routes


def serve(routes: dict, port: int = 0) -> http.server.ThreadingHTTPServer:
    """A loopback server of ``routes`` on its own thread; ``server.shutdown()`` stops it."""
    handler = type("Handler", (ReplayHandler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="dashboard-replay", daemon=True).start()
    return server


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("recording", help="a recording (.jsonl.gz) written by ligerd.testing.dashboard_record")
    p.add_argument("--screenshot", type=Path, help="write the page's PNG here (needs chromium)")
    p.add_argument("--dom", type=Path, help="also keep the page's DOM (HTML) here")
    p.add_argument("--at", type=float, help="seconds after the first poll (negative: before the last; default: the last)")
    p.add_argument("--window", type=float, help="history seconds to serve (default: the whole recording)")
    p.add_argument("--require", default="chart-gpu-mem,chart-ops",
                   help="comma-separated charts that must show data (default: chart-gpu-mem,chart-ops; '' for none)")
    p.add_argument("--serve", action="store_true", help="keep serving until interrupted (for a browser)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    a = p.parse_args(argv)
    required = [c for c in a.require.split(",") if c]
    unknown = set(required) - set(dashboard.CHARTS)
    if unknown:
        p.error(f"--require: no chart {sorted(unknown)}; the charts are {', '.join(dashboard.CHARTS)}")
    if not a.screenshot and not a.serve:
        p.error("nothing to do: give --screenshot PNG and/or --serve")

    try:
        rec = dashboard_record.load(a.recording)
        routes = routes_for(rec, a.at, a.window)
    except (OSError, ValueError, KeyError) as e:
        print(f"dashboard_replay: {a.recording}: {e}", file=sys.stderr)
        return 2
    if "/index.html" not in routes:
        print(f"dashboard_replay: {a.recording}: the page itself was not recorded", file=sys.stderr)
        return 2
    chromium = dashboard.find_chromium()
    if a.screenshot and chromium is None:
        print("dashboard_replay: no chromium on PATH (Debian's chromium)", file=sys.stderr)
        return 2

    # Ctrl-C or SIGTERM ends --serve: a flag the main thread polls, set from the moment the
    # server is up (a KeyboardInterrupt could land outside the try below and skip the shutdown).
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = serve(routes, a.port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    snapshot = json.loads(routes["/api/v1/snapshot"][1])
    points = json.loads(routes["/api/v1/history"][1])["points"]
    print(f"replaying {a.recording}: {len(rec.polls)} polls over {rec.duration_s():.0f} s"
          f"{'' if rec.end else ' (cut short: no end line)'}, from {snapshot.get('hostname', '?')} "
          f"(ligerd {snapshot.get('version', '?')}); serving the poll at "
          f"{snapshot.get('time_unix_seconds', 0):.0f} with {len(points)} history points at {url}", flush=True)
    rc = 0
    try:
        if a.screenshot:
            dom = dashboard.dump_dom(chromium, url)
            if a.dom:
                a.dom.write_text(dom)
            counts = dashboard.chart_counts(dom)
            for chart in dashboard.CHARTS:
                series, n = counts.get(chart, (0, 0))
                print(f"  {chart:15s} {series:3d} series {n:5d} points{'  (required)' if chart in required else ''}")
            problems = dashboard.chart_problems(dom, {c: (1, 2) for c in required})
            for problem in problems:
                print(f"dashboard_replay: {problem}", file=sys.stderr)
            rc = 1 if problems else 0
            try:
                shot = dashboard.screenshot(chromium, url, a.screenshot)
                print(f"screenshot: {shot} ({shot.stat().st_size} bytes)")
            except AssertionError as e:
                print(f"dashboard_replay: {e}", file=sys.stderr)
                rc = 1
        if a.serve:
            print(f"serving {url} until interrupted (Ctrl-C)", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        server.shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
