"""The app in a real browser: `streamlit run` on a free loopback port, Debian's chromium driven by
Playwright (never a downloaded browser), against a sandbox project with a registered model.

Screenshots land in test-artifacts/ (git-ignored); the server is stopped by its PID.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from custseg import jsonl
from custseg.evaluation.specs import METRICS
from custseg.serving.model import features_frame
from custseg.testing.browser import set_slider
from tests.fixtures.app import app_page
from tests.fixtures.app import wait_idle as wait_for_the_script
from tests.fixtures.project import ROOT

pytestmark = pytest.mark.browser

# The app fixtures (trained_project, ...) until tests/conftest.py lists this module.

# The segment map's component frame (Streamlit titles it with the component's name).
MAP_FRAME = 'iframe[title="ui_common.segment_map"]'
TIMEOUT_MS = 120_000  # a cold app imports MLflow and loads the model: ~20 s here, more on CI
# The customer column as people write it: read as text, it comes back exactly so.
CUSTOMERS = ["007", "01234", "n/a"]
GOOD_CSV = (
    "customer,Annual Income (k$),Spending Score (1-100)\n"
    f"{CUSTOMERS[0]},20,90\n{CUSTOMERS[1]},130,10\n{CUSTOMERS[2]},65.5,55\n"
)
BAD_CSV = "annual_income,spending_score\n60,50\nlots,40\n150,20\n"


@pytest.fixture(scope="module")
def app_url(trained_project: Path) -> Iterator[str]:
    """The app served from the trained sandbox; stopped by PID when the module is done."""
    from custseg.testing.browser import running_app, wait_healthy
    from tests.fixtures.app import APP, ARTIFACTS, require_chromium

    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "app-browser-server.log"
    with running_app(APP, trained_project, log) as (url, process, _):
        wait_healthy(url, process)
        yield url
    assert process.poll() is not None, f"streamlit (pid {process.pid}) still running"


@pytest.fixture(scope="module")
def page(app_url: str):
    with app_page(app_url, TIMEOUT_MS, accept_downloads=True) as page:
        yield page


def wait_idle(page) -> None:
    wait_for_the_script(page, TIMEOUT_MS)


def watch_reruns(page) -> list[str]:
    """The script runs the page asks the server for from now on (the rerun messages its
    websocket sends), as a list that grows."""
    from streamlit.proto.BackMsg_pb2 import BackMsg

    reruns: list[str] = []

    def frame_sent(payload: str | bytes) -> None:
        message = BackMsg()
        message.ParseFromString(payload if isinstance(payload, bytes) else payload.encode())
        if message.WhichOneof("type") == "rerun_script":
            reruns.append(message.rerun_script.page_script_hash)

    page.on("websocket", lambda websocket: websocket.on("framesent", frame_sent))
    return reruns


@pytest.fixture
def registered_model(trained_project: Path, monkeypatch: pytest.MonkeyPatch):
    """The model the app serves, loaded here from the sandbox's registry."""
    from custseg.testing.sandbox import project_env
    from tests.fixtures.app import load_registered

    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    for key, value in project_env(trained_project).items():
        monkeypatch.setenv(key, value)
    return load_registered()


def test_segment_page_predicts_like_the_registered_model(
    page, app_url: str, registered_model
) -> None:
    from tests.fixtures.app import ARTIFACTS

    model = registered_model
    reruns = watch_reruns(page)

    page.goto(app_url)
    page.get_by_text("Which segment is this customer in?").wait_for()
    page.frame_locator(MAP_FRAME).locator(".js-plotly-plot .scatterlayer").wait_for()
    wait_idle(page)
    loaded = len(reruns)
    # Marks on the map's frame and its window: a frame made again (a remount) has neither.
    page.locator(MAP_FRAME).evaluate("el => { el.__kept = true; el.contentWindow.__kept = true; }")
    set_slider(page, "Annual Income (k$)", 72)  # 12 steps up
    set_slider(page, "Spending Score (1-100)", 31)  # 19 steps down
    page.get_by_role("button", name="Predict Customer Cluster").click()
    metric = page.locator('[data-testid="stMetricValue"]')
    metric.wait_for()
    wait_idle(page)
    # The sliders sit in a form: their 31 steps asked the server for nothing; Predict for one run.
    assert len(reruns) - loaded == 1, reruns

    expected = int(model.predict(features_frame(72, 31))[0])
    assert metric.inner_text().strip() == f"Cluster {expected}"
    delta = page.locator('[data-testid="stMetricDelta"]').inner_text()
    assert f"out of {model.n_clusters} clusters" in delta
    # The chart plotted in the browser: segment traces, the centers and the star at (72, 31),
    # redrawn in the same frame (Plotly.react), not in a new one.
    frame = page.locator(MAP_FRAME).element_handle().content_frame()
    frame.wait_for_function(
        "() => { const d = document.querySelector('.js-plotly-plot')?.data;"
        " return d && d[d.length - 1].x[0] === 72; }"
    )
    assert page.locator(MAP_FRAME).evaluate("el => el.__kept && el.contentWindow.__kept")
    traces = frame.locator(".js-plotly-plot").evaluate(
        "el => el.data.map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))"
    )
    names = [trace["name"] for trace in traces]
    assert names[-2:] == ["segment centers", "this customer"]
    assert len(names) - 2 == model.n_clusters and all(" · " in n for n in names[:-2])
    assert (traces[-1]["x"], traces[-1]["y"]) == ([72], [31])
    assert frame.locator(".js-plotly-plot .scatterlayer .trace").count() == len(names)
    assert page.locator('[data-testid="stException"]').count() == 0

    page.mouse.move(0, 0)  # no hover label over the screenshot
    page.screenshot(path=ARTIFACTS / "app-segment.png", full_page=True)


def test_batch_page_uploads_scores_and_downloads(page, app_url: str, registered_model) -> None:
    from tests.fixtures.app import ARTIFACTS

    model = registered_model

    page.goto(f"{app_url}/batch")
    page.get_by_text("Score a file of customers").wait_for()
    upload = page.locator('[data-testid="stFileUploader"] input[type="file"]')
    upload.set_input_files({"name": "bad.csv", "mimeType": "text/csv", "buffer": BAD_CSV.encode()})
    page.get_by_text("This file cannot be scored").wait_for()
    page.locator('[data-testid="stText"]').first.wait_for()
    wait_idle(page)
    body = page.locator('[data-testid="stMain"]').inner_text()
    assert "bad.csv" in body
    assert "'annual_income': 1 missing or non-numeric value(s) at line(s) 3" in body
    assert "'annual_income': 1 value(s) outside 15–140 at line(s) 4 (first: 150)" in body

    upload.set_input_files(
        {"name": "customers.csv", "mimeType": "text/csv", "buffer": GOOD_CSV.encode()}
    )
    page.get_by_text("Scored 3 customers with").wait_for()
    page.get_by_text("File: customers.csv").wait_for()
    wait_idle(page)
    # Tables and charts load lazily: wait for them, not a fixed time, before the screenshot.
    page.get_by_role("button", name="Download the scored CSV").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stDataFrame\"] canvas').length >= 2"
        " && !document.querySelector('[data-testid=\"stSkeleton\"]')"
    )
    page.screenshot(path=ARTIFACTS / "app-batch.png", full_page=True)

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download the scored CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
    expected = model.predict(features_frame([20, 130, 65.5], [90, 10, 55]))
    assert [r["customer"] for r in rows] == CUSTOMERS
    assert [int(r["segment"]) for r in rows] == expected.tolist()
    assert all(r["segment_name"].startswith(f"{r['segment']} · ") for r in rows)


def test_evaluation_page_shows_the_committed_scores(page, app_url: str, trained_project: Path):
    """The real judge's results for the committed conversations, as a user opens them."""
    from tests.fixtures.app import ARTIFACTS

    names = ("conversations.jsonl", "eval_results.jsonl")
    copies = [trained_project / "data" / name for name in names]
    for copy in copies:  # the shared project is otherwise read-only: removed again below
        shutil.copy2(ROOT / "data" / copy.name, copy)
    try:
        rows = jsonl.read(copies[1]).objects()
        page.goto(f"{app_url}/evaluation")
        main = page.locator('[data-testid="stMain"]')
        main.get_by_text("Score distribution").wait_for()
        page.locator(".js-plotly-plot").first.wait_for()
        wait_idle(page)

        shown = page.locator('[data-testid="stMetric"]')
        assert shown.count() == len(METRICS)
        for i, metric in enumerate(METRICS):
            scores = [r["score"] for r in rows if r["metric"] == metric and r["error"] is None]
            card = shown.nth(i).inner_text()
            assert metric in card and f"{sum(scores) / len(scores):.2f}" in card, card
        # Every score is in one bin, and the shared count axis shows the tallest bin whole.
        chart = page.locator(".js-plotly-plot").first
        counts = chart.evaluate("el => el._fullData.map(t => Array.from(t.y))")
        assert sum(map(sum, counts)) == sum(r["error"] is None for r in rows)
        top = chart.evaluate("el => el._fullLayout.yaxis.range[1]")
        assert top >= max(map(max, counts)), (top, counts)
        # The drill-down: one committed conversation's task, plan, draft and final side by side.
        shown_text = main.inner_text()
        task = shown_text.split("\nTask\n\n", 1)[1].split("\n\nPlan\n\n", 1)[0]
        by_task = {c["task"]: c for c in jsonl.read(copies[0]).objects()}
        assert task in by_task, task
        assert by_task[task]["final"].split("\n")[0][:40] in shown_text
        assert "Draft" in shown_text and "Reviewer's note" in shown_text
        assert page.locator('[data-testid="stException"]').count() == 0
        page.mouse.move(0, 0)
        page.screenshot(path=ARTIFACTS / "app-evaluation.png", full_page=True)
    finally:
        for copy in copies:
            copy.unlink(missing_ok=True)


def test_monitoring_page_draws_the_last_report(
    page, app_url: str, registered_model, trained_project: Path
) -> None:
    """A report made by `custseg monitor` for the served version, as a user opens it."""
    from custseg.cli import main as custseg
    from custseg.features import FEATURES
    from tests.fixtures.app import ARTIFACTS

    project = trained_project
    report = project / "metrics" / "monitor.json"  # the shared project: removed again below
    args = ["--params", str(project / "params.yaml"), "--output", str(report), "--no-mlflow"]
    assert custseg(["monitor", "--simulate-drift", "income", *args]) == 0
    try:
        page.goto(f"{app_url}/monitoring")
        main = page.locator('[data-testid="stMain"]')
        main.get_by_text("Segment mix", exact=True).wait_for()
        page.locator(".js-plotly-plot").nth(len(FEATURES)).wait_for()
        wait_idle(page)
        shown = main.inner_text()
        assert "Verdict: retrain recommended" in shown or "Verdict: drift" in shown, shown
        assert "Drift check" in shown  # the model panel's line
        assert page.locator(".js-plotly-plot").count() == len(FEATURES) + 1
        assert page.locator('[data-testid="stException"]').count() == 0
        page.mouse.move(0, 0)
        page.screenshot(path=ARTIFACTS / "app-monitoring.png", full_page=True)
    finally:
        report.unlink(missing_ok=True)


HOSTILE = "203.0.113.9"  # TEST-NET-3: never routed; any request to it is a leak


def test_uploaded_names_and_headers_are_shown_as_text(page, app_url: str) -> None:
    page.goto(f"{app_url}/batch")
    page.get_by_text("Score a file of customers").wait_for()
    header = f"[click here](http://{HOSTILE}/x),![t](http://{HOSTILE}/track.png),<b>bold</b>"
    upload = page.locator('[data-testid="stFileUploader"] input[type="file"]')
    upload.set_input_files(
        {
            "name": f"[x](http://{HOSTILE}/name).csv",
            "mimeType": "text/csv",
            "buffer": f"{header}\n1,2,3\n".encode(),
        }
    )
    page.get_by_text("This file cannot be scored").wait_for()
    page.locator('[data-testid="stText"]').first.wait_for()
    wait_idle(page)
    main = page.locator('[data-testid="stMain"]')
    text = main.inner_text()
    assert f"'[click here](http://{HOSTILE}/x)'" in text and "'<b>bold</b>'" in text
    assert f"[x](http://{HOSTILE}/name).csv" in text
    assert main.locator(f'a[href*="{HOSTILE}"], img[src*="{HOSTILE}"], b').count() == 0


def test_downloaded_cells_cannot_run_as_formulas(page, app_url: str) -> None:
    formulas = [
        '=HYPERLINK("http://203.0.113.9/x","click")',
        "=1+2",
        "@SUM(1+1)",
        "+SUM(A1:A2)",
        "=cmd|' /C calc'!A0",
        "-12",
    ]
    rows = "".join(f'"{f.replace(chr(34), chr(34) * 2)}",60,50\n' for f in formulas)
    data = f"=customer,annual_income,spending_score\n{rows}"
    page.goto(f"{app_url}/batch")
    page.get_by_text("Score a file of customers").wait_for()
    upload = page.locator('[data-testid="stFileUploader"] input[type="file"]')
    upload.set_input_files({"name": "f.csv", "mimeType": "text/csv", "buffer": data.encode()})
    page.get_by_role("button", name="Download the scored CSV").wait_for()
    wait_idle(page)
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download the scored CSV").click()
    table = list(csv.reader(io.StringIO(Path(download_info.value.path()).read_text())))
    assert table[0][0] == "'=customer"
    cells = [row[0] for row in table[1:]]
    assert cells == ["'" + f for f in formulas[:-1]] + ["-12"]
    assert [row[1] for row in table[1:]] == ["60"] * len(formulas), "numbers stay numbers"


def test_the_server_sends_plotly_as_stored_not_gzipped_per_request(page, app_url: str) -> None:
    """The map's plotly is gzipped once on disk and passed through: Streamlit's server gzips
    other component files on every request (~0.2 s of CPU a session for plotly)."""
    import gzip
    import urllib.request

    from custseg.serving.map_component import PLOTLY_JS

    url = f"{app_url}/component/ui_common.segment_map/plotly.min.js.gz"
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.headers.get("Content-Type") == "application/gzip"
        assert reply.headers.get("Content-Encoding") is None
        assert gzip.decompress(reply.read()) == PLOTLY_JS.read_bytes()


def test_no_page_loaded_anything_from_outside(page) -> None:
    """Icons, fonts and scripts come from the app: nothing left 127.0.0.1 in this module."""
    assert page.outside_requests == []


def test_concurrent_sessions_each_get_their_own_customer(app_url: str, registered_model) -> None:
    """20 sessions over Streamlit's own websocket protocol (what the browser's code sends, no
    rendering), each with generated slider values, all clicking at once: every session is
    answered with the registered model's segment for its own customer."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from custseg.features import BOUNDS, INCOME, MALL_HEADERS, SPENDING
    from custseg.testing.streamlit_ws import Session

    rng = np.random.default_rng(20)
    customers = [
        (int(rng.integers(*BOUNDS[INCOME], endpoint=True)),
         int(rng.integers(*BOUNDS[SPENDING], endpoint=True)))
        for _ in range(20)
    ]  # fmt: skip

    async def predict_all() -> list:
        sessions = await asyncio.gather(*(Session.open(app_url) for _ in customers))
        try:
            await asyncio.gather(*(session.run() for session in sessions))
            return await asyncio.gather(
                *(
                    session.run(
                        click="Predict Customer Cluster",
                        sliders={MALL_HEADERS[INCOME]: income, MALL_HEADERS[SPENDING]: spending},
                    )
                    for session, (income, spending) in zip(sessions, customers, strict=True)
                )
            )
        finally:
            await asyncio.gather(*(session.close() for session in sessions))

    # Playwright's sync API owns this thread's event loop: run the sessions' loop in another.
    with ThreadPoolExecutor(1) as thread:
        runs = thread.submit(asyncio.run, predict_all()).result()
    expected = registered_model.predict(features_frame(*map(list, zip(*customers, strict=True))))
    shown = [[metric.body for metric in run.elements.get("metric", [])] for run in runs]
    assert shown == [[f"Cluster {segment}"] for segment in expected]
    assert {run.status for run in runs} == {"FINISHED_SUCCESSFULLY"}
