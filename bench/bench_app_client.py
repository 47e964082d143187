"""Where a browser's CPU goes on the Segment page: per Predict, by process and by kind of work.

One app per checkout given (`--trees`, default this one), the same sandboxed project for all,
measured in turns (A, B, A, B …) so a busy machine weighs on each alike. Per tree and N, each of
N returning browser sessions (a context each in one chromium) moves both sliders `--steps` key
presses and clicks Predict, `--predicts` times, all N together; then
- client CPU per predict: the CPU seconds of chromium's processes (renderer, browser, GPU,
  utility) and of Playwright's driver, per session and predict, from /proc;
- the renderer's own account (CDP Performance.getMetrics): script, layout, style, and its
  task time, per session and predict;
- the page's size after a prediction: DOM nodes and the map's SVG/WebGL points.
The load average is printed with each row: the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import yaml
from _common import ROOT
from bench_app_load import (
    CLICK_JS,
    MAP_PLOT_JS,
    METRIC,
    PREDICT,
    STAR_INCOME_JS,
    TIMER_JS,
    cpu_seconds,
    move_sliders,
    open_segment_page,
    p95,
    wait_loaded,
)

from custseg.telemetry import disable_telemetry

RENDERER_METRICS = ("ScriptDuration", "LayoutDuration", "RecalcStyleDuration", "TaskDuration")
PAGE_SIZE_JS = f"""() => {{
  const plot = ({MAP_PLOT_JS})();
  return {{
    nodes: document.getElementsByTagName('*').length
      + (plot ? plot.ownerDocument.getElementsByTagName('*').length : 0)
      * (plot?.ownerDocument !== document),
    svg_points: plot ? plot.querySelectorAll('.scatterlayer .point').length : 0,
    gl: plot ? plot.querySelectorAll('canvas.gl-canvas').length : 0,
  }};
}}"""


def process_kind(pid: int) -> str:
    # chromium rewrites its children's command lines into one space-separated string
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    if b"run-driver" in cmdline:
        return "driver"
    if kind := re.search(rb"--type=([\w-]+)", cmdline):
        return kind[1].decode()
    return "browser" if b"chromium" in cmdline.split(b" ", 1)[0] else "other"


def client_cpu(server_pid: int) -> dict[str, float]:
    """CPU seconds of this process's descendants but the server, by kind of process."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children[int(stat.read_text().rsplit(")", 1)[1].split()[1])].append(
                int(stat.parent.name)
            )
        except (OSError, IndexError, ValueError):  # exited meanwhile
            continue
    totals: dict[str, float] = defaultdict(float)
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        if pid != server_pid:
            with contextlib.suppress(OSError):
                totals[process_kind(pid)] += cpu_seconds(pid)
        todo.extend(children.get(pid, []))
    return dict(totals)


def renderer_metrics(cdp) -> dict[str, float]:
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return {name: metrics[name] for name in RENDERER_METRICS}


def measure(browser, url: str, n: int, pid: int, predicts: int, steps: int) -> dict:
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(n)]
    for context in contexts:  # returning browsers: assets cached
        page = open_segment_page(context, url)
        wait_loaded(page)
        page.close()
    pages = [open_segment_page(context, url) for context in contexts]
    for page in pages:
        wait_loaded(page)
    cdps = [page.context.new_cdp_session(page) for page in pages]
    for cdp in cdps:
        cdp.send("Performance.enable")
    latencies: list[float] = []
    server_before, before = cpu_seconds(pid), client_cpu(pid)
    metrics_before = [renderer_metrics(cdp) for cdp in cdps]
    for i in range(predicts):
        # there and back: the customer stays inside the sliders' bounds
        incomes = [move_sliders(page, steps * (-1) ** i) for page in pages]
        for page, income in zip(pages, incomes, strict=True):
            page.evaluate(TIMER_JS, [METRIC, income])
        for page in pages:
            page.evaluate(CLICK_JS, PREDICT)
        for page, income in zip(pages, incomes, strict=True):
            page.wait_for_function("() => window.__bench.shown !== undefined")
            timing = page.evaluate("() => window.__bench")
            latencies.append((timing["shown"] - timing["clicked"]) / 1000)
            if income is not None:  # the shown result is the moved customer's
                page.wait_for_function(f"() => ({STAR_INCOME_JS})() === {income}")
        # the metric appears before the map is redrawn: let each page finish its work
        for page in pages:
            page.evaluate("() => new Promise(r => setTimeout(r, 300))")
    after, server_after = client_cpu(pid), cpu_seconds(pid)
    metrics_after = [renderer_metrics(cdp) for cdp in cdps]
    size = pages[0].evaluate(PAGE_SIZE_JS)
    for context in contexts:
        context.close()
    per = n * predicts
    cpu = {k: (after.get(k, 0.0) - before.get(k, 0.0)) / per for k in after}
    renderer = {
        name: sum(a[name] - b[name] for a, b in zip(metrics_after, metrics_before, strict=True))
        / per
        for name in RENDERER_METRICS
    }
    return {
        "n": n,
        "cpu": cpu,
        "server": (server_after - server_before) / per,
        "renderer": renderer,
        "p95": p95(latencies),
        "median": statistics.median(latencies),
        "size": size,
        "load": os.getloadavg()[0],
    }


def row(tree: str, r: dict) -> str:
    cpu = r["cpu"]
    chromium = sum(v for k, v in cpu.items() if k not in ("driver", "other"))
    m = r["renderer"]
    return (
        f"{tree:>12} {r['n']:2d} {chromium:6.3f} s "
        f"(renderer {cpu.get('renderer', 0):.3f}, browser {cpu.get('browser', 0):.3f}, "
        f"gpu {cpu.get('gpu-process', 0):.3f}, utility {cpu.get('utility', 0):.3f}, "
        f"zygote {cpu.get('zygote', 0):.3f}) other {cpu.get('other', 0):.3f} "
        f"driver {cpu.get('driver', 0):.3f} s | server {r['server']:.3f} s | "
        f"script {m['ScriptDuration']:.3f} layout {m['LayoutDuration']:.3f} "
        f"style {m['RecalcStyleDuration']:.3f} task {m['TaskDuration']:.3f} | "
        f"p95 {r['p95']:.2f} s median {r['median']:.2f} s | nodes {r['size']['nodes']} "
        f"svg points {r['size']['svg_points']} gl {r['size']['gl']} | load {r['load']:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", type=Path, default=[ROOT])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--predicts", type=int, default=5, help="predicts per session and turn")
    parser.add_argument(
        "--steps", type=int, default=20, help="key presses per slider (>= 1: a Predict of an "
        "unchanged customer changes nothing on the page, so there is nothing to time)"
    )  # fmt: skip
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--customers", type=int, default=0, help="simulate this many (0: params)")
    parser.add_argument(
        "--project", type=Path, help="a trained project to serve (kept; default: build one)"
    )
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: at least 1 key press a slider")
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
    from custseg.testing.sandbox import build_trained_project, copy_project, inside, run_pipeline

    results: dict[tuple[str, int], list[dict]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="bench-app-client-") as tmp:
        if args.project:
            project = args.project.resolve()
        elif args.customers:
            project = Path(tmp) / "project"
            copy_project(ROOT, project)
            params = yaml.safe_load((project / "params.yaml").read_text())
            params["simulate"]["n_customers"] = args.customers
            (project / "params.yaml").write_text(yaml.safe_dump(params))
            with inside(project, APP_ENV_KEYS):
                run_pipeline(project)
        else:
            project = build_trained_project(ROOT, Path(tmp) / "project", clear=APP_ENV_KEYS)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                for _ in range(args.turns):
                    for tree in args.trees:
                        # the tree's app and its custseg package, before the installed one
                        os.environ["PYTHONPATH"] = str(tree)
                        log = Path(tmp) / f"{tree.name}.log"
                        with running_app(tree / "app" / "Home.py", project, log) as (url, p, _):
                            wait_healthy(url, p)
                            for n in args.sessions:
                                r = measure(browser, url, n, p.pid, args.predicts, args.steps)
                                results[(str(tree), n)].append(r)
                                print(row(tree.name, r), flush=True)
            finally:
                browser.close()
    print("\nmedian over turns: chromium CPU per session and predict")
    for (tree, n), rs in results.items():
        chromium = [sum(v for k, v in r["cpu"].items() if k not in ("driver", "other")) for r in rs]
        print(f"{Path(tree).name:>12} N={n}: {statistics.median(chromium):.3f} s", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
