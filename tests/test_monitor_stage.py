"""The `monitor` DVC stage: the store of scored rows (data/scored/) against the served version,
run as DVC runs it (`python stages/monitor.py` in the project folder), in a copy of the shared
trained project's folder layout whose MLflow store is a copy too (the shared one stays as is)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custseg.features import FEATURES, INCOME
from custseg.monitoring.check import monitor_stage
from custseg.monitoring.drift import NO_DATA, NO_DRIFT, RETRAIN, SEGMENT
from custseg.monitoring.store import ScoredStore
from custseg.monitoring.window import DAY, VERSION, daily_mix
from custseg.paths import MONITOR_METRICS, SCORED
from custseg.testing.sandbox import Stage
from tests.fixtures.app import load_registered

STAGE = Stage(monitor_stage)  # main(argv): what `python stages/monitor.py` runs


@pytest.fixture
def project(served_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the project folder: params.yaml, an empty store, its own MLflow store."""
    shutil.copy(served_project / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(served_project / "mlflow.db", tmp_path / "mlflow.db")
    (tmp_path / SCORED).mkdir(parents=True)
    (tmp_path / SCORED / "_README.md").write_text("the store\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def training_rows(served_project: Path) -> pd.DataFrame:
    frame = pd.read_csv(served_project / "data/customers.csv")[FEATURES].astype(float)
    return frame.assign(**{SEGMENT: load_registered().predict(frame)})


def record(rows: pd.DataFrame, version: str = "1") -> None:
    assert ScoredStore(SCORED, version).record(rows[FEATURES], rows[SEGMENT].to_numpy())


def report() -> dict:
    return json.loads(MONITOR_METRICS.read_text())


def test_a_fresh_project_with_no_records_says_no_data_and_exits_0(project: Path, capsys) -> None:
    assert STAGE.main([]) == 0
    out = capsys.readouterr().out
    assert "0 scored rows of version 1: at least 100 needed" in out and "no MLflow run" in out
    data = report()
    assert data["verdict"] == NO_DATA and data["rows"] == 0 and data["version"] == "1"


def test_records_of_the_served_version_get_a_verdict_and_an_mlflow_run(
    project: Path, served_project: Path, capsys
) -> None:
    rows = training_rows(served_project)
    record(rows.iloc[:120])
    record(rows.iloc[120:])
    record(rows.assign(**{SEGMENT: 41}).iloc[:50], version="99")  # another version: left out
    assert STAGE.main([]) == 0
    data = report()
    assert data["verdict"] == NO_DRIFT and data["rows"] == len(rows)
    today = f"{datetime.now(UTC):%Y-%m-%d}"
    assert [d["day"] for d in data["daily"]] == [today] and data["daily"][0]["rows"] == len(rows)
    run_id = capsys.readouterr().out.split("mlflow run ")[1].split()[0]
    with sqlite3.connect(project / "mlflow.db") as db:
        tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
    assert tags["model_version"] == "1" and tags["verdict"] == NO_DRIFT


def test_an_income_shift_in_the_records_recommends_a_retrain(
    project: Path, served_project: Path
) -> None:
    rows = training_rows(served_project)
    shifted = rows.assign(**{INCOME: rows[INCOME] + 30})
    record(shifted.assign(**{SEGMENT: load_registered().predict(shifted[FEATURES])}))
    assert STAGE.main([]) == 0
    data = report()
    assert data["verdict"] == RETRAIN and INCOME in data["drifted_features"]


def test_window_days_leaves_older_days_out(project: Path, served_project: Path) -> None:
    rows = training_rows(served_project)
    old = SCORED / "day=2020-01-01"
    old.mkdir()
    rows.assign(**{VERSION: "1"}).to_parquet(old / "old.parquet", index=False)
    assert STAGE.main([]) == 0
    assert report()["rows"] == len(rows) and report()["daily"][0]["day"] == "2020-01-01"
    params = Path("params.yaml")
    params.write_text(params.read_text().replace("window_days: null", "window_days: 7"))
    assert STAGE.main([]) == 0
    assert report()["verdict"] == NO_DATA and report()["rows"] == 0


def test_bad_records_fail_in_one_line_and_keep_the_last_report(
    project: Path, served_project: Path, capsys
) -> None:
    assert STAGE.main([]) == 0
    before = MONITOR_METRICS.read_text()
    record(training_rows(served_project).assign(**{SEGMENT: 41}))  # not a segment of v1
    assert STAGE.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: scored rows name segment 41") and "\n" not in err
    assert MONITOR_METRICS.read_text() == before


@settings(max_examples=40)
@given(
    days=st.lists(
        st.tuples(st.dates().map(str), st.lists(st.integers(0, 4), min_size=1, max_size=30)),
        max_size=6,
    )
)
def test_the_daily_mix_has_one_entry_a_day_whose_shares_add_to_one(days) -> None:
    frame = pd.DataFrame(
        [(day, segment) for day, segments in days for segment in segments], columns=[DAY, SEGMENT]
    )
    mix = daily_mix(frame, 5)
    assert [d["day"] for d in mix] == sorted({day for day, _ in days})
    assert sum(d["rows"] for d in mix) == len(frame)
    for entry in mix:
        assert len(entry["shares"]) == 5 and np.isclose(sum(entry["shares"]), 1.0)


def test_the_store_is_a_source_simulate_reads_for_the_retrain(tmp_path: Path) -> None:
    """The README's retrain step: simulate.source data/scored, columns named as the store's."""
    from custseg.config import SimulateParams
    from custseg.pipeline.data import read_customers_csv

    store = tmp_path / "scored"
    store.mkdir()
    (store / "_README.md").write_text("the store\n")  # committed beside the records: skipped
    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({f: rng.uniform(20, 90, 40) for f in FEATURES}) for _ in range(3)]
    for frame in frames:
        assert ScoredStore(store, "1").record(frame, np.zeros(40, dtype=int))
    columns = {f: f for f in FEATURES} | {"customer_id": None}
    customers = read_customers_csv(SimulateParams(source=str(store), columns=columns))
    assert len(customers) == 120
    assert sorted(customers[INCOME]) == sorted(pd.concat(frames)[INCOME])
