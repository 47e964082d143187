"""The "Agent evaluation" page under AppTest: the hint when nothing is scored, then the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from streamlit.testing.v1 import AppTest

from custseg import jsonl
from custseg.evaluation.items import positions
from custseg.evaluation.specs import METRICS

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "app" / "views" / "evaluation.py"
SMALL = ROOT / "tests" / "data" / "conversations_small.jsonl"


def run_page() -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def write_results(path: Path) -> list[str]:
    """Results for the small file's two complete conversations; one judge error."""
    ids = [r["correlation_id"] for r in jsonl.read(SMALL).values][:2]
    rows = []
    for n, cid in enumerate(ids):
        for m, metric in enumerate(METRICS):
            failed = n == 1 and metric == "plan_quality"
            rows.append(
                {
                    "correlation_id": cid,
                    "metric": metric,
                    "score": None if failed else 0.1 + 0.2 * m,
                    "judge_score": None if failed else 0.1 + 0.2 * m,
                    "passed": None if failed else m >= 2,
                    "threshold": 0.5,
                    "reason": None if failed else f"reason {metric}",
                    "judge_model": "local:test",
                    "latency_s": 4.2,
                    "error": "LLMError: HTTP 503" if failed else None,
                    "positions": positions(42, cid) if metric == "improvement" else None,
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ids


def test_page_explains_what_to_run_when_nothing_is_there(project: Path) -> None:
    at = run_page()
    assert "custseg capture" in at.info[0].value
    (project / "data").mkdir(exist_ok=True)
    shutil.copy2(SMALL, project / "data" / "conversations.jsonl")
    at = run_page()
    assert "dvc repro eval" in at.info[0].value


def test_page_shows_distribution_table_and_drill_down(project: Path) -> None:
    (project / "data").mkdir(exist_ok=True)
    shutil.copy2(SMALL, project / "data" / "conversations.jsonl")
    ids = write_results(project / "data" / "eval_results.jsonl")
    at = run_page()
    assert [m.label for m in at.metric] == list(METRICS)
    assert at.metric[1].value == "0.30"  # helpfulness_draft: 0.3 for both conversations
    assert "1 judge call(s) failed" in at.warning[0].value
    assert len(at.get("plotly_chart")) == 1
    assert len(at.dataframe) == 2
    picker = at.selectbox(key="eval_conv")
    assert picker.options[0].startswith(ids[0][:8])
    at = picker.set_value(ids[1]).run()
    assert not at.exception, at.exception
    shown = "\n".join(m.value for m in at.markdown)
    texts = "\n".join(t.value for t in at.text)  # user and LLM text: never Markdown
    assert "85k$" in texts and "85k$" not in shown  # the second conversation's task
    assert "plan_quality** error" in shown and "LLMError: HTTP 503" in texts
