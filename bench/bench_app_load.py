"""The app under N concurrent sessions: server CPU per session and click→result, N = 1, 5, 10, 20.

Each session opens the Segment page (its first script run), then all N click *Predict Customer
Cluster* at once; click→result ends when the run that shows the metric has reached the client.
Server CPU is the streamlit process's user+system time (/proc), split into the page load and the
prediction, per session. Four kinds of client (`--kinds` picks some):
- *protocol*: a websocket per session speaking Streamlit's protobuf protocol
  (custseg/testing/streamlit_ws.py): no rendering and no static files, so its click→result is
  the server's alone;
- *returning browser*: one chromium, a context per session that has loaded the app once before
  (its assets are in the HTTP cache, as for a second tab or a repeat visit);
- *new browser*: a fresh context per session, fetching Streamlit's and Plotly's 7.7 MB of
  JavaScript and fonts from the server;
- *sliders*: returning browsers whose sessions each move both sliders (`--steps` key presses
  each, as a user drags them) and then click; its server CPU per session counts the moves too
  (the browsers' CPU is reported for the moves and for click→result apart), and the bench
  checks that each result is for the moved customer.
The browsers click with a DOM click each, back to back, and time click→metric on their own clock;
they share the 2 cores with the server, so their times include their own rendering. The baseline
is N = 1 of the same kind in the same run: the ratios say how a session's cost grows with company.
The sliders kind is also set against the click-only returning browsers of the same N (same run):
moving the sliders should cost the server nothing until Predict (the sliders sit in a form).
The sessions are contexts of one chromium; `--browsers own` gives each its own chromium (as N
users have), slower on 2 cores: N browser and GPU processes instead of one of each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _common import ROOT

from custseg.features import INCOME, MALL_HEADERS, SPENDING
from custseg.telemetry import disable_telemetry
from custseg.testing.streamlit_ws import Session

TIMEOUT_MS = 300_000
VIEWPORT = {"width": 1280, "height": 900}
PREDICT = "Predict Customer Cluster"
METRIC = '[data-testid="stMetricValue"]'
# The segment map's plot element: in the page (st.plotly_chart, before) or in the map
# component's frame (same origin: its document is readable), so one bench measures both trees.
MAP_PLOT_JS = """() => document.querySelector('.js-plotly-plot')
  || [...document.querySelectorAll('iframe')]
    .map(f => f.contentDocument?.querySelector('.js-plotly-plot')).find(Boolean)"""
# Times the click, the metric's first appearance and (given the moved customer's income) the
# map's redraw with the star there, on the page's own clock. Checked on every page mutation and
# every animation frame: a redraw inside the component's frame is no mutation of this page.
TIMER_JS = f"""([metric, income]) => {{
  window.__bench = {{}};
  const plot = {MAP_PLOT_JS};
  const star = () => {{
    const data = plot()?.data;
    return data ? data[data.length - 1].x[0] : null;
  }};
  const check = () => {{
    const bench = window.__bench;
    if (!bench.clicked) return;
    if (!bench.shown && document.querySelector(metric)) bench.shown = performance.now();
    if (!bench.map && income !== null && star() === income
        && plot()?.querySelector('.scatterlayer'))
      bench.map = performance.now();
  }};
  new MutationObserver(check)
    .observe(document.body, {{subtree: true, childList: true, characterData: true}});
  const frame = () => {{
    check();
    if (!window.__bench.map && income !== null) requestAnimationFrame(frame);
  }};
  requestAnimationFrame(frame);
}}"""
CLICK_JS = """(label) => {
  const button = [...document.querySelectorAll('button')].find(b => b.innerText.includes(label));
  window.__bench.clicked = performance.now();
  button.click();
}"""
# The income the map's star (its last trace) shows: the customer the prediction was made for.
# null while Streamlit swaps the chart's element during a rerun (seen at N=5).
STAR_INCOME_JS = f"""() => {{
  const data = ({MAP_PLOT_JS})()?.data;
  return data ? data[data.length - 1].x[0] : null;
}}"""
# True once the map is drawn (its scatter layer exists).
MAP_DRAWN_JS = f"() => !!({MAP_PLOT_JS})()?.querySelector('.scatterlayer')"
SLIDERS = (MALL_HEADERS[INCOME], MALL_HEADERS[SPENDING])


KINDS = {
    "protocol": "Protocol clients (the server's own cost and latency)",
    "returning": "Returning browser per session (assets cached)",
    "new": "New browser per session (downloads the app's assets)",
    "sliders": "Returning browser per session, both sliders moved before the click",
}
# (kind, returning: assets cached, moves: both sliders moved before the click)
BROWSER_KINDS = (("returning", True, False), ("new", False, False), ("sliders", True, True))


@dataclass(frozen=True)
class Round:
    sessions: int
    load_cpu: float  # server CPU seconds per session
    predict_cpu: float
    latencies: list[float]  # click→metric seconds, one per session
    client_predict_cpu: float = 0.0  # the browsers' CPU seconds per session, click → result
    client_moves_cpu: float = 0.0  # the browsers' CPU seconds per session moving the sliders
    map_latencies: list[float] = field(default_factory=list)  # click→star redrawn (sliders)

    @property
    def cpu(self) -> float:
        return self.load_cpu + self.predict_cpu


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU seconds of `pid`; `reaped`: with those of its children that exited and
    were waited for (a closed page's renderer: without them a sum over live processes fell)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


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
            total += cpu_seconds(pid, reaped=True)
        todo.extend(children.get(pid, []))
    return total


def open_segment_page(context, url: str):
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return page


def wait_loaded(page) -> None:
    page.get_by_role("button", name=PREDICT).wait_for()
    page.wait_for_function(MAP_DRAWN_JS)


def move_sliders(page, steps: int) -> int:
    """Move income up and spending down by `steps` key presses each, as a user would (every
    press is a new slider value); return the income the customer ends at."""
    from custseg.testing.browser import set_slider

    income = int(page.get_by_role("slider", name=SLIDERS[0]).get_attribute("aria-valuetext"))
    spending = int(page.get_by_role("slider", name=SLIDERS[1]).get_attribute("aria-valuetext"))
    set_slider(page, SLIDERS[0], income + steps)
    set_slider(page, SLIDERS[1], spending - steps)
    return income + steps


class Browsers:
    """Where the sessions' pages live: a context each in one shared chromium, or (`own`) a
    chromium each, as N users' own browsers are: then no session waits on another's browser
    and GPU processes (one of each serves all the contexts of a chromium)."""

    def __init__(self, playwright, own: bool) -> None:
        from custseg.testing.browser import CHROMIUM, CHROMIUM_ARGS

        self._launch = lambda: playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        self.own = own
        self._shared = None if own else self._launch()
        self._launched: list = []

    def contexts(self, n: int) -> list:
        if self.own:
            self._launched += [self._launch() for _ in range(n)]
            browsers = self._launched[-n:]
        else:
            browsers = [self._shared] * n
        return [browser.new_context(viewport=VIEWPORT) for browser in browsers]

    def end_round(self) -> None:
        for browser in self._launched:
            browser.close()
        self._launched = []

    def close(self) -> None:
        self.end_round()
        if self._shared is not None:
            self._shared.close()


def round_of(
    browsers: Browsers, url: str, n: int, pid: int, returning: bool, steps: int = 0
) -> Round:
    """One round of `n` browser sessions; with `steps`, each moves both sliders before it
    clicks, and those moves count as the prediction's server CPU."""
    contexts = browsers.contexts(n)
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
    incomes = [move_sliders(page, steps) for page in pages] if steps else []
    clients_moved = descendants_cpu_seconds(pid)
    for page, income in zip(pages, incomes or [None] * n, strict=True):
        page.evaluate(TIMER_JS, [METRIC, income])
    for page in pages:
        page.evaluate(CLICK_JS, PREDICT)
    latencies = []
    for page in pages:
        page.wait_for_function("() => window.__bench.shown !== undefined")
        timing = page.evaluate("() => window.__bench")
        latencies.append((timing["shown"] - timing["clicked"]) / 1000)
    cpu_done, clients_done = cpu_seconds(pid), descendants_cpu_seconds(pid)
    map_latencies = []
    for page, income in zip(pages, incomes, strict=False):  # the result is the moved customer's
        page.wait_for_function(f"() => ({STAR_INCOME_JS})() === {income}")
        page.wait_for_function("() => window.__bench.map !== undefined")
        timing = page.evaluate("() => window.__bench")
        map_latencies.append((timing["map"] - timing["clicked"]) / 1000)
    for context in contexts:
        context.close()
    browsers.end_round()
    return Round(
        n,
        (cpu_loaded - cpu_before) / n,
        (cpu_done - cpu_loaded) / n,
        latencies,
        client_predict_cpu=(clients_done - clients_moved) / n,
        map_latencies=map_latencies,
        client_moves_cpu=(clients_moved - clients_loaded) / n,
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


def p95(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def report_against_clicks(sliders: list[Round], clicks: list[Round]) -> None:
    """Each sliders round against the click-only round of the same N, measured in the same run."""
    print("\nSliders moved, then Predict, against click-only (returning browsers, same N)")
    print(f"{'N':>3} {'server CPU/session':>19} {'vs click-only':>14} "
          f"{'click→result p95':>17} {'vs click-only':>14} {'click→map p95':>14}")  # fmt: skip
    for moved, clicked in zip(sliders, clicks, strict=True):
        shown = p95(moved.latencies)
        print(
            f"{moved.sessions:3d} {moved.cpu:17.3f} s {moved.cpu / clicked.cpu:13.2f}× "
            f"{shown:15.2f} s {shown / p95(clicked.latencies):13.2f}× "
            f"{p95(moved.map_latencies):12.2f} s"
        )


def report(kind: str, rounds: list[Round]) -> None:
    base = rounds[0].cpu
    print(f"\n{kind}")
    print(f"{'N':>3} {'server CPU/session':>19} {'load':>7} {'predict':>8} {'vs N=1':>7} "
          f"{'click→result median':>20} {'p95':>7} {'max':>7} "
          f"{'client CPU/predict':>19} {'moves':>7}")  # fmt: skip
    for r in rounds:
        print(
            f"{r.sessions:3d} {r.cpu:17.3f} s {r.load_cpu:6.3f}s {r.predict_cpu:7.3f}s "
            f"{r.cpu / base:6.2f}× {statistics.median(r.latencies):18.2f} s "
            f"{p95(r.latencies):6.2f}s {max(r.latencies):6.2f}s {r.client_predict_cpu:17.3f} s "
            f"{r.client_moves_cpu:5.2f} s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument(
        "--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="default: all four"
    )
    parser.add_argument("--steps", type=int, default=20, help="key presses per slider (sliders)")
    parser.add_argument(
        "--browsers",
        choices=("own", "shared"),
        default="shared",
        help="shared: one chromium, a context per session (default); own: a chromium per "
        "session, as users' own browsers (slower here: 20 chromiums on the 2 cores)",
    )
    args = parser.parse_args(argv)
    kinds = set(args.kinds) | ({"returning"} if "sliders" in args.kinds else set())
    disable_telemetry()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from playwright.sync_api import sync_playwright

    from custseg.testing.browser import APP_ENV_KEYS, running_app, wait_healthy
    from custseg.testing.sandbox import build_trained_project

    rounds: dict[str, list[Round]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-app-load-") as tmp:
        project = build_trained_project(ROOT, Path(tmp), clear=APP_ENV_KEYS)
        app = ROOT / "app" / "Home.py"
        with running_app(app, project, Path(tmp) / "streamlit.log") as (url, process, _):
            wait_healthy(url, process)
            asyncio.run(protocol_round(url, 1, process.pid))  # loads the model once
            if "protocol" in kinds:
                rounds["protocol"] = [
                    asyncio.run(protocol_round(url, n, process.pid)) for n in args.sessions
                ]
            with sync_playwright() as playwright:  # its sync API runs an event loop here
                browsers = Browsers(playwright, own=args.browsers == "own")
                try:
                    for kind, returning, moves in BROWSER_KINDS:
                        steps = args.steps if moves else 0
                        if kind in kinds:
                            rounds[kind] = [
                                round_of(browsers, url, n, process.pid, returning, steps)
                                for n in args.sessions
                            ]
                finally:
                    browsers.close()
    for kind, title in KINDS.items():
        if kind in rounds:
            report(title, rounds[kind])
    if "sliders" in rounds:
        report_against_clicks(rounds["sliders"], rounds["returning"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
