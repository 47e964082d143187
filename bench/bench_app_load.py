"""The app under N concurrent sessions: server CPU per session and click→result, N = 1, 5, 10, 20.

Each session opens the Segment page (its first script run), then all N click *Predict Customer
Cluster* at once; click→result ends when the run that shows the metric has reached the client.
Server CPU is the streamlit process's user+system time (/proc), split into the page load and the
prediction, per session. Three kinds of client:
- *protocol*: a websocket per session speaking Streamlit's protobuf protocol
  (custseg/testing/streamlit_ws.py): no rendering and no static files, so its click→result is
  the server's alone;
- *returning browser*: one chromium, a context per session that has loaded the app once before
  (its assets are in the HTTP cache, as for a second tab or a repeat visit);
- *new browser*: a fresh context per session, fetching Streamlit's and Plotly's 7.7 MB of
  JavaScript and fonts from the server.
The browsers click with a DOM click each, back to back, and time click→metric on their own clock;
they share the 2 cores with the server, so their times include their own rendering. The baseline
is N = 1 of the same kind in the same run: the ratios say how a session's cost grows with company.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _common import ROOT

from custseg.telemetry import disable_telemetry
from custseg.testing.streamlit_ws import Session

TIMEOUT_MS = 300_000
PREDICT = "Predict Customer Cluster"
METRIC = '[data-testid="stMetricValue"]'
# Times the click and the metric's first appearance on the page's own clock.
TIMER_JS = """(metric) => {
  window.__bench = {};
  new MutationObserver(() => {
    if (window.__bench.clicked && !window.__bench.shown && document.querySelector(metric))
      window.__bench.shown = performance.now();
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
CLICK_JS = """(label) => {
  const button = [...document.querySelectorAll('button')].find(b => b.innerText.includes(label));
  window.__bench.clicked = performance.now();
  button.click();
}"""


@dataclass(frozen=True)
class Round:
    sessions: int
    load_cpu: float  # server CPU seconds per session
    predict_cpu: float
    latencies: list[float]  # click→metric seconds, one per session
    client_predict_cpu: float = 0.0  # the browsers' CPU seconds per session for the prediction

    @property
    def cpu(self) -> float:
        return self.load_cpu + self.predict_cpu


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants_cpu_seconds(server_pid: int) -> float:
    """CPU seconds of this process's live descendants but the server: the browser's processes."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        if pid == server_pid:
            continue
        with contextlib.suppress(OSError):  # exited meanwhile
            total += cpu_seconds(pid)
        todo.extend(children.get(pid, []))
    return total


def open_segment_page(context, url: str):
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return page


def wait_loaded(page) -> None:
    page.get_by_role("button", name=PREDICT).wait_for()
    page.locator(".js-plotly-plot").first.wait_for()


def round_of(browser, url: str, n: int, pid: int, returning: bool) -> Round:
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(n)]
    if returning:  # each browser has seen the app once: its assets are in the HTTP cache
        for context in contexts:
            page = open_segment_page(context, url)
            wait_loaded(page)
            page.close()
    cpu_before = cpu_seconds(pid)
    pages = [open_segment_page(context, url) for context in contexts]
    for page in pages:
        wait_loaded(page)
    cpu_loaded, clients_loaded = cpu_seconds(pid), descendants_cpu_seconds(pid)
    for page in pages:
        page.evaluate(TIMER_JS, METRIC)
    for page in pages:
        page.evaluate(CLICK_JS, PREDICT)
    latencies = []
    for page in pages:
        page.wait_for_function("() => window.__bench.shown !== undefined")
        timing = page.evaluate("() => window.__bench")
        latencies.append((timing["shown"] - timing["clicked"]) / 1000)
    cpu_done, clients_done = cpu_seconds(pid), descendants_cpu_seconds(pid)
    for context in contexts:
        context.close()
    return Round(
        n,
        (cpu_loaded - cpu_before) / n,
        (cpu_done - cpu_loaded) / n,
        latencies,
        (clients_done - clients_loaded) / n,
    )


async def protocol_round(url: str, n: int, pid: int) -> Round:
    cpu_before = cpu_seconds(pid)
    sessions = await asyncio.gather(*(Session.open(url) for _ in range(n)))
    await asyncio.gather(*(session.run() for session in sessions))
    cpu_loaded = cpu_seconds(pid)
    runs = await asyncio.gather(*(session.run(click=PREDICT) for session in sessions))
    cpu_done = cpu_seconds(pid)
    await asyncio.gather(*(session.close() for session in sessions))
    if not all(run.elements.get("metric") for run in runs):
        raise RuntimeError("a protocol session's prediction showed no metric")
    latencies = [run.seconds for run in runs]
    return Round(n, (cpu_loaded - cpu_before) / n, (cpu_done - cpu_loaded) / n, latencies)


def report(kind: str, rounds: list[Round]) -> None:
    base = rounds[0].cpu
    print(f"\n{kind}")
    print(f"{'N':>3} {'server CPU/session':>19} {'load':>7} {'predict':>8} {'vs N=1':>7} "
          f"{'click→result median':>20} {'p95':>7} {'max':>7} "
          f"{'client CPU/predict':>19}")  # fmt: skip
    for r in rounds:
        ordered = sorted(r.latencies)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        print(
            f"{r.sessions:3d} {r.cpu:17.3f} s {r.load_cpu:6.3f}s {r.predict_cpu:7.3f}s "
            f"{r.cpu / base:6.2f}× {statistics.median(r.latencies):18.2f} s "
            f"{p95:6.2f}s {max(r.latencies):6.2f}s {r.client_predict_cpu:17.3f} s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 5, 10, 20])
    args = parser.parse_args(argv)
    disable_telemetry()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from playwright.sync_api import sync_playwright

    from custseg.testing.browser import (
        APP_ENV_KEYS,
        CHROMIUM,
        CHROMIUM_ARGS,
        running_app,
        wait_healthy,
    )
    from custseg.testing.sandbox import build_trained_project

    rounds: dict[str, list[Round]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-app-load-") as tmp:
        project = build_trained_project(ROOT, Path(tmp), clear=APP_ENV_KEYS)
        app = ROOT / "app" / "Home.py"
        with running_app(app, project, Path(tmp) / "streamlit.log") as (url, process, _):
            wait_healthy(url, process)
            asyncio.run(protocol_round(url, 1, process.pid))  # loads the model once
            rounds["protocol"] = [
                asyncio.run(protocol_round(url, n, process.pid)) for n in args.sessions
            ]
            with sync_playwright() as playwright:  # its sync API runs an event loop here
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                try:
                    for kind, returning in (("returning", True), ("new", False)):
                        rounds[kind] = [
                            round_of(browser, url, n, process.pid, returning) for n in args.sessions
                        ]
                finally:
                    browser.close()
    report("Protocol clients (the server's own cost and latency)", rounds["protocol"])
    report("Returning browser per session (assets cached)", rounds["returning"])
    report("New browser per session (downloads the app's assets)", rounds["new"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
