"""The "Agent variants" page under AppTest: the comparison `custseg eval compare --json` wrote,
read back checked (a forged or broken file is one line), shown as a table and a chart."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from custseg.errors import ConfigError
from custseg.evaluation.compare import compare, comparison_frame, read_report

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "app" / "views" / "variants.py"
METRICS = ["helpfulness_final", "improvement", "plan_quality"]


def rows(scores: dict[str, list[float | None]]) -> list[dict]:
    """Result rows: task i of each metric scored scores[metric][i] (None: a judge error)."""
    return [
        {"correlation_id": f"c{i}", "task": f"task {i}", "metric": m, "score": s}
        for m, values in scores.items()
        for i, s in enumerate(values)
    ]


def run_page() -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception, at.exception
    return at


score = st.one_of(st.none(), st.floats(0, 1, allow_nan=False))


@given(
    a=st.lists(score, min_size=0, max_size=8),
    b=st.lists(score, min_size=0, max_size=8),
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_report_reads_back_as_the_comparison_it_was(tmp_path: Path, a, b) -> None:
    """What compare() finds, written as JSON (NaN as null) and read back, is the same."""
    comparison = compare(
        rows({"improvement": a}), rows({"improvement": b}), "v1", "v2", resamples=200
    )
    path = tmp_path / "compare_v1_v2.json"
    path.write_text(json.dumps(comparison.report()))
    back = read_report(path)
    for mine, theirs in zip(back.metrics, comparison.metrics, strict=True):
        for field in ("n", "wins", "losses", "ties", "mean_a", "diff", "ci_low", "ci_high"):
            x, y = getattr(mine, field), getattr(theirs, field)
            assert x == y or (math.isnan(x) and math.isnan(y)), field
    assert back.only_a == comparison.only_a and back.unscored == comparison.unscored
    frame = comparison_frame(back)  # a metric with no paired task still makes a row
    assert list(frame["metric"]) == [m.metric for m in comparison.metrics]


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"\xff\xfe{", "not JSON"),
        (b"[1, 2]", "not a `custseg eval compare --json` report"),
        (b'{"variant_a": "v1"}', "not a `custseg eval compare --json` report"),
        (b'{"variant_a": "v1", "variant_b": 2, "metrics": {}}', "variant_b"),
        (b'{"variant_a": "v1", "variant_b": "v2", "metrics": {"x": {"metric": "x"}}}', "metrics.0"),
        (b'{"variant_a": "v1", "variant_b": "v2", "metrics": {"x": 3}}', "not a `custseg eval"),
    ],
)
def test_a_broken_or_forged_report_is_one_line_naming_what_is_wrong(
    tmp_path: Path, content: bytes, named: str
) -> None:
    path = tmp_path / "compare_x.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"comparison .*compare_x\.json: ") as error:
        read_report(path)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_page_says_what_to_run_then_shows_the_comparison(project: Path) -> None:
    at = run_page()
    assert "custseg eval compare v1 v2 --json" in at.info[0].value
    better = {m: [0.2, 0.3, 0.1, 0.4, 0.2, 0.3] for m in METRICS}
    worse = {m: [s + 0.3 for s in values] for m, values in better.items()}
    worse["plan_quality"] = better["plan_quality"]
    (project / "metrics").mkdir(exist_ok=True)
    report = compare(rows(better), rows(worse), "v1", "v2<b>", resamples=500).report()
    (project / "metrics" / "compare_v1_v2.json").write_text(json.dumps(report))
    (project / "metrics" / "compare_broken.json").write_text("{")
    at = run_page()
    picker = at.selectbox(key="cmp_file")
    at = picker.set_value(Path("metrics/compare_v1_v2.json")).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["metric"]) == sorted(METRICS)
    above = dict(zip(table["metric"], table["CI above 0"], strict=True))
    assert above == {"helpfulness_final": True, "improvement": True, "plan_quality": False}
    assert "v2<b> vs v1" in at.text[0].value  # a variant's name is data: shown as text
    assert len(at.get("plotly_chart")) == 1
    at = at.selectbox(key="cmp_file").set_value(Path("metrics/compare_broken.json")).run()
    assert "compare_broken.json: not JSON" in at.error[0].value
