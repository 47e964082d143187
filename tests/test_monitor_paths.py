"""Every scoring path records what it scored, and the `monitor` stage reads it: in a project of
its own, the app in Chromium (the Predict button, a batch upload) and `custseg serve` (REST)
record into the default store (data/scored/), `python stages/monitor.py` (what DVC runs)
judges those rows, and the Monitoring page shows its verdict and the segment mix by day,
with no request leaving 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from custseg.features import FEATURES, INCOME, SPENDING
from custseg.monitoring.drift import SEGMENT
from custseg.monitoring.store import RECORD_DIR_ENV
from custseg.monitoring.window import VERSION
from custseg.paths import MONITOR_METRICS, SCORED
from tests.fixtures.app import app_page
from tests.fixtures.app import wait_idle as wait_for_the_script
from tests.fixtures.project import ROOT

pytestmark = pytest.mark.browser

TIMEOUT_MS = 120_000
BATCH_CSV = "Annual Income (k$),Spending Score (1-100)\n20,90\n130,10\n65.5,55\n"
REST_ROWS = 150


@contextlib.contextmanager
def default_recording() -> Iterator[None]:
    """The tests record nowhere (tests/conftest.py); servers started in here get the default,
    data/scored/ in their project folder."""
    saved = os.environ.pop(RECORD_DIR_ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[RECORD_DIR_ENV] = saved


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, migrated_mlflow_db: Path) -> Path:
    """A trained project of this module's own: its store fills up here."""
    from custseg.testing.browser import APP_ENV_KEYS
    from custseg.testing.sandbox import build_trained_project

    dest = tmp_path_factory.mktemp("monitored-project")
    return build_trained_project(ROOT, dest, migrated_mlflow_db, clear=APP_ENV_KEYS)


@pytest.fixture(scope="module")
def app_url(project: Path) -> Iterator[str]:
    from custseg.testing.browser import running_app, wait_healthy
    from tests.fixtures.app import APP, ARTIFACTS, require_chromium

    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    with (
        default_recording(),
        running_app(APP, project, ARTIFACTS / "monitor-paths-app.log") as (
            url,
            process,
            _,
        ),
    ):
        wait_healthy(url, process)
        yield url


@pytest.fixture(scope="module")
def page(app_url: str):
    with app_page(app_url, TIMEOUT_MS) as page:
        yield page


def wait_idle(page) -> None:
    wait_for_the_script(page, TIMEOUT_MS)


def recorded(project: Path, rows: int, timeout_s: float = 30.0) -> pd.DataFrame:
    """The store's rows once it holds `rows` of them (the app writes in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        files = sorted((project / SCORED).glob("day=*/*.parquet"))
        frame = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()
        if len(frame) >= rows or time.monotonic() > deadline:
            assert len(frame) == rows, f"{len(frame)} rows recorded, {rows} expected"
            return frame
        time.sleep(0.1)


def test_every_scoring_path_records_and_the_stage_reads_it(
    page, app_url: str, project: Path
) -> None:
    from custseg.testing.browser import set_slider
    from custseg.testing.rest import post_json, running_scoring_server
    from custseg.testing.sandbox import project_env
    from tests.fixtures.app import ARTIFACTS

    # The app's Predict button: one customer.
    page.goto(app_url)
    page.get_by_text("Which segment is this customer in?").wait_for()
    wait_idle(page)
    set_slider(page, "Annual Income (k$)", 72)
    page.get_by_role("button", name="Predict Customer Cluster").click()
    page.locator('[data-testid="stMetricValue"]').wait_for()
    wait_idle(page)
    shown = int(page.locator('[data-testid="stMetricValue"]').inner_text().split()[-1])
    rows = recorded(project, 1)
    assert rows[[INCOME, SPENDING]].values.tolist() == [[72.0, 50.0]]
    assert rows[SEGMENT].tolist() == [shown] and rows[VERSION].tolist() == ["1"]

    # The batch page: an uploaded file of three customers.
    page.goto(f"{app_url}/batch")
    page.get_by_text("Score a file of customers").wait_for()
    upload = page.locator('[data-testid="stFileUploader"] input[type="file"]')
    upload.set_input_files({"name": "c.csv", "mimeType": "text/csv", "buffer": BATCH_CSV.encode()})
    page.get_by_text("Scored 3 customers with").wait_for()
    wait_idle(page)
    recorded(project, 4)

    # REST: `custseg serve` in the project, as `make serve` starts it.
    training = pd.read_csv(project / "data/customers.csv")[FEATURES].head(REST_ROWS)
    body = json.dumps({"dataframe_records": training.to_dict("records")}).encode()
    with (
        default_recording(),
        running_scoring_server(project, ARTIFACTS / "monitor-rest.log") as url,
    ):
        status, reply = post_json(url, body)
    assert status == 200 and len(reply["predictions"]) == REST_ROWS
    rows = recorded(project, 4 + REST_ROWS)  # the server wrote its queue before it exited
    assert rows[SEGMENT].tail(REST_ROWS).tolist() == reply["predictions"]

    # The stage, as DVC runs it, reads every one of them.
    env = {**os.environ, **project_env(project)}
    done = subprocess.run(
        [sys.executable, "stages/monitor.py"], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((project / MONITOR_METRICS).read_text())
    assert report["rows"] == 4 + REST_ROWS and report["version"] == "1"
    assert report["verdict"] in ("no drift", "drift", "retrain recommended"), report["summary"]
    today = f"{datetime.now(UTC):%Y-%m-%d}"
    assert [(d["day"], d["rows"]) for d in report["daily"]] == [(today, 4 + REST_ROWS)]

    # The Monitoring page shows that verdict, the model panel its line, and the mix by day.
    page.goto(f"{app_url}/monitoring")
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text("Segment mix over time", exact=True).wait_for()
    page.locator(".js-plotly-plot").nth(len(FEATURES) + 1).wait_for()
    wait_idle(page)
    text = main.inner_text()
    assert f"Verdict: {report['verdict']}" in text and "Drift check" in text
    assert f"{report['rows']:,} scored rows from data/scored" in text
    assert page.locator(".js-plotly-plot").count() == len(FEATURES) + 2
    assert page.locator('[data-testid="stException"]').count() == 0
    page.mouse.move(0, 0)
    page.screenshot(path=ARTIFACTS / "app-monitoring-recorded.png", full_page=True)
    assert page.outside_requests == []
