"""The app under N concurrent sessions: server CPU per session and click→result, N = 1, 5, 10, 20.

Cheap clients: one Debian chromium with one browser context per session (no browser per user).
Each session opens the Segment page, waits for the sliders, clicks *Predict Customer Cluster*
and waits for the metric; all N click at once. Server CPU is the streamlit process's user+system
time (/proc) over the round, divided by N. The baseline is N = 1 in the same run: the ratios
say how the cost of one session grows with company. The browsers share the 2 cores with the
server, so click→result includes the clients' own work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import ROOT

from custseg.telemetry import disable_telemetry

TIMEOUT_MS = 300_000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round_of(browser, url: str, n: int, pid: int) -> tuple[float, list[float]]:
    """(server CPU seconds per session: page load + one prediction, click→result seconds per
    session) for n sessions."""
    pages = []
    cpu_before = cpu_seconds(pid)
    for _ in range(n):
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        pages.append(page)
    for page in pages:  # every session loaded: sliders and the map are there
        page.get_by_role("button", name="Predict Customer Cluster").wait_for()
        page.locator(".js-plotly-plot").first.wait_for()
    # Playwright's sync pages belong to this thread: click them one after another, at once.
    started = []
    for page in pages:
        started.append(time.perf_counter())
        page.get_by_role("button", name="Predict Customer Cluster").click(no_wait_after=True)
    latencies = []
    for page, t0 in zip(pages, started, strict=True):
        page.locator('[data-testid="stMetricValue"]').wait_for()
        latencies.append(time.perf_counter() - t0)
    cpu = (cpu_seconds(pid) - cpu_before) / n
    for page in pages:
        page.context.close()
    return cpu, latencies


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

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-app-load-") as tmp:
        project = build_trained_project(ROOT, Path(tmp), clear=APP_ENV_KEYS)
        app = ROOT / "app" / "Home.py"
        with running_app(app, project, Path(tmp) / "streamlit.log") as (url, process, _):
            wait_healthy(url, process)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                try:
                    round_of(browser, url, 1, process.pid)  # warm: the model is loaded once
                    for n in args.sessions:
                        cpu, latencies = round_of(browser, url, n, process.pid)
                        rows.append((n, cpu, latencies))
                finally:
                    browser.close()
    base_cpu = rows[0][1]
    print(f"{'N':>3} {'server CPU/session':>19} {'vs N=1':>7} {'click→result median':>20} "
          f"{'p95':>7} {'max':>7}")  # fmt: skip
    for n, cpu, latencies in rows:
        ordered = sorted(latencies)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        print(
            f"{n:3d} {cpu:17.3f} s {cpu / base_cpu:6.2f}× {statistics.median(latencies):18.2f} s "
            f"{p95:6.2f}s {max(latencies):6.2f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
