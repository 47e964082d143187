"""The Monitoring page and the model panel's verdict line under AppTest, against the shared
trained project; the report is written by `custseg monitor` itself (into tmp_path, pointed at
by $CUSTSEG_MONITOR_REPORT: the shared project stays read-only)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from custseg.cli import main
from custseg.errors import MonitorError
from custseg.features import FEATURES, INCOME
from custseg.monitoring.drift import NO_DRIFT, RETRAIN
from custseg.monitoring.report import (
    REPORT_ENV,
    check_report,
    histogram_figure,
    read_report,
    verdict_line,
)
from custseg.testing.sandbox import project_env
from tests.fixtures.app import APP

PAGE = "views/monitoring.py"


def texts(at: AppTest, *kinds: str) -> str:
    return "\n".join(str(e.value) for kind in kinds for e in at.get(kind))


@pytest.fixture(scope="module")
def income_report(trained_project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A report of the served version (simulated income drift), made once for the module."""
    out = tmp_path_factory.mktemp("monitor") / "monitor.json"
    with pytest.MonkeyPatch.context() as env:
        for key, value in project_env(trained_project).items():
            env.setenv(key, value)
        args = ["--params", str(trained_project / "params.yaml"), "--output", str(out)]
        assert main(["monitor", "--simulate-drift", "income", *args, "--no-mlflow"]) == 0
    return json.loads(out.read_text())


@pytest.fixture
def report_file(
    served_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, income_report: dict
) -> Path:
    """A fresh copy of the report, which the page reads ($CUSTSEG_MONITOR_REPORT)."""
    path = tmp_path / "monitor.json"
    path.write_text(json.dumps(income_report))
    monkeypatch.setenv(REPORT_ENV, str(path))
    return path


def monitoring_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def test_without_a_report_the_page_says_how_to_make_one(
    served_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REPORT_ENV, str(tmp_path / "none.json"))
    at = monitoring_page()
    assert at.title[0].value == "Monitoring"
    assert "No drift report" in at.info[0].value
    assert "dvc repro monitor" in at.info[0].value
    assert not at.get("plotly_chart")


def test_the_page_shows_the_verdict_distributions_and_segment_mix(report_file: Path) -> None:
    report = json.loads(report_file.read_text())
    at = monitoring_page()
    assert report["verdict"] != NO_DRIFT
    assert f"Verdict: {report['verdict']}" in texts(at, "error", "warning")
    assert report["summary"] in texts(at, "text")
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(charts) == len(FEATURES) + 1  # a histogram per feature and the segment mix
    income = next(c for c in charts if c["layout"]["title"]["text"] == INCOME)
    assert [t["name"] for t in income["data"]] == ["training", "recent"]
    for trace in income["data"]:
        assert sum(trace["y"]) == pytest.approx(1)  # shares of each sample
    recent_mean = np.average(income["data"][1]["x"], weights=income["data"][1]["y"])
    train_mean = np.average(income["data"][0]["x"], weights=income["data"][0]["y"])
    assert recent_mean > train_mean  # the drift is drawn where it is
    mix = charts[-1]["data"]
    assert mix[0]["y"] == report["segments"]["training_share"]
    assert mix[1]["y"] == report["segments"]["window_share"]
    line = texts(at, "text")
    assert "Drift check" in line and report["verdict"] in line  # the model panel's line


def test_the_segment_page_panel_shows_the_last_verdict_in_one_line(report_file: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, at.exception
    lines = [t.value for t in at.text if t.value.startswith("Drift check")]
    assert len(lines) == 1 and "\n" not in lines[0] and "500 scored rows" in lines[0]


def test_a_report_of_another_version_is_not_shown_as_the_served_one(
    report_file: Path,
) -> None:
    report = json.loads(report_file.read_text())
    report_file.write_text(json.dumps({**report, "version": "99"}))
    at = monitoring_page()
    assert "not of the served version v1" in at.info[0].value
    assert not at.get("plotly_chart")
    segment = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not [t for t in segment.text if t.value.startswith("Drift check")]


def test_report_text_is_shown_as_text_never_markdown(report_file: Path) -> None:
    report = json.loads(report_file.read_text())
    hostile = "**bold** <img src=x onerror=alert(1)> [link](http://example.com)"
    report_file.write_text(json.dumps({**report, "summary": hostile, "source": hostile}))
    at = monitoring_page()
    assert hostile in texts(at, "text")
    rendered = texts(at, "markdown", "caption", "info", "success", "warning", "error", "title")
    assert "onerror" not in rendered and "example.com" not in rendered


def test_a_broken_report_is_one_line_on_the_page(report_file: Path) -> None:
    report_file.write_text('{"verdict": "fine"')
    at = monitoring_page()
    assert at.error[0].value.endswith("monitor.json: not JSON")
    assert not at.get("plotly_chart")


# --- the report's checks, the panel's line and the figures (no app) --------------------------


def valid_report() -> dict:
    stats = {"psi": 0.5, "ks": 0.3, "p_value": 1e-9, "reference_mean": 60.0,
             "window_mean": 70.0, "drift": True}  # fmt: skip
    return {
        "version": "3",
        "rows": 500,
        "verdict": RETRAIN,
        "summary": "drift in annual_income (PSI 0.50); retrain recommended",
        "features": {f: dict(stats) for f in FEATURES},
        "segments": {"p_value": 0.2, "training_share": [0.5, 0.5], "window_share": [0.4, 0.6]},
    }


BREAKS = [
    (lambda r: r.pop("verdict"), "verdict is not one of"),
    (lambda r: r.update(version=3), "version is not text"),
    (lambda r: r.update(rows="many"), "rows is not a number"),
    (lambda r: r["features"].pop(INCOME), f"features.{INCOME} is missing"),
    (lambda r: r["features"][INCOME].update(psi=None), f"features.{INCOME}.psi is not a number"),
    (lambda r: r["features"][INCOME].update(ks=True), f"features.{INCOME}.ks is not a number"),
    (lambda r: r.update(segments=[]), "segments is missing"),
    (lambda r: r["segments"].update(window_share=[1.0]), "shares are not two lists"),
    (lambda r: r["segments"].update(window_share=[1.0, "x"]), "segment share 3 is not"),
]


@pytest.mark.parametrize(("damage", "message"), BREAKS)
def test_a_malformed_report_names_the_field(damage, message: str) -> None:
    report = valid_report()
    damage(report)
    with pytest.raises(MonitorError) as error:
        check_report(report, "m.json")
    assert message in str(error.value) and "\n" not in str(error.value)


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                      max_size=4),
                    max_leaves=12))  # fmt: skip
def test_any_json_is_either_a_report_or_a_one_line_error(data) -> None:
    try:
        assert check_report(data, "m.json") is data
    except MonitorError as error:
        assert str(error).startswith("m.json: ") and "\n" not in str(error)


def test_a_missing_file_is_no_report_and_the_line_is_one_line(tmp_path: Path) -> None:
    assert read_report(tmp_path / "none.json") is None
    (tmp_path / "m.json").write_text(json.dumps(valid_report()))
    report = read_report(tmp_path / "m.json")
    assert report["checked_at"].tzinfo is UTC and report["checked_at"] <= datetime.now(UTC)
    line = verdict_line(report)
    assert "500 scored rows: retrain recommended: drift in annual_income" in line
    assert verdict_line({**report, "verdict": NO_DRIFT}).endswith(": no drift")


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16), st.floats(-50, 50))
def test_histograms_are_shares_over_the_report_bins(seed: int, shift: float) -> None:
    from custseg.monitoring.drift import window_histogram

    rng = np.random.default_rng(seed)
    train, recent = rng.normal(60, 15, 400), rng.normal(60 + shift, 15, 300)
    figure = histogram_figure(INCOME, train, window_histogram(train, recent))
    training, window = figure["data"]
    assert sum(training["y"]) == pytest.approx(1) and sum(window["y"]) == pytest.approx(1)
    assert len(training["x"]) == len(window["x"]) == len(training["width"])
    assert histogram_figure(INCOME, train, None) is None  # an older report: no bins
    assert histogram_figure(INCOME, train, {"edges": [0, 1], "window": [1, 2]}) is None


def test_a_no_data_report_says_so_and_what_to_do(report_file: Path) -> None:
    from custseg.monitoring.check import no_data_report
    from custseg.monitoring.window import no_rows

    report_file.write_text(json.dumps(no_data_report("1", no_rows(), 100, "data/scored")))
    at = monitoring_page()
    assert any(i.value.endswith("Verdict: no data") for i in at.info)
    assert "dvc repro monitor" in texts(at, "info") and not at.get("plotly_chart")
    lines = [t.value for t in at.text if t.value.startswith("Drift check")]
    assert len(lines) == 1 and "0 scored rows: no data: 0 scored rows of version 1" in lines[0]


def test_the_segment_mix_by_day_is_drawn_with_the_training_shares(report_file: Path) -> None:
    from custseg.monitoring.report import daily_mix_figure

    report = json.loads(report_file.read_text())
    k = len(report["segments"]["training_share"])
    days = [{"day": f"2026-12-0{d}", "rows": 10 * d, "shares": [1 / k] * k} for d in (1, 2, 3)]
    report_file.write_text(json.dumps({**report, "daily": days}))
    at = monitoring_page()
    charts = at.get("plotly_chart")
    assert len(charts) == len(FEATURES) + 2  # histograms, the mix, the mix by day
    figure = daily_mix_figure({**report, "daily": days})
    lines = [t for t in figure["data"] if t["mode"] == "lines+markers"]
    assert len(lines) == k and lines[0]["x"] == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert daily_mix_figure({**report, "daily": []}) is None
