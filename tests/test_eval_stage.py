"""The eval stage: scores, cache, failures, MLflow, its command line, and the committed replies.

The plumbing (cache, MLflow run and traces, a failing metric, the judge chosen by environment
variables) is tested against the stand-in LLM server (a deterministic score per question, with
logprobs, in milliseconds); one test scores a conversation with the real bundled judge end to
end; and a fresh clone re-scores the committed conversations from the committed replies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custseg import jsonl
from custseg.config import load_params
from custseg.evaluation.judge import score_view
from custseg.evaluation.judge_cache import JudgeCache, completion_from_dict, read_seed
from custseg.evaluation.specs import GENERIC_PLAN, METRICS
from custseg.evaluation.stage import evaluate
from custseg.evaluation.summary import flatten
from custseg.llm.models import DEFAULT_MODEL_ID
from custseg.llm.providers import LocalProvider, OpenAICompatibleProvider
from custseg.testing.stand_in_llm import reply, serve, stand_in_reply
from tests.fixtures.project import committed_judge_calls

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "tests" / "data" / "conversations_small.jsonl"
N_COMPLETE = 2  # the small file holds two complete conversations and one without a final
# Its conversations were captured before the agents were grounded: no grounding scores, four
# judge questions each (the grounding metrics are scored for the committed conversations).
SCORED = [m for m in METRICS if not m.startswith("grounding")]
CALLS = N_COMPLETE * (len(SCORED) + 1)  # judge calls: the pair is asked in both orders
PLAN_MARKER = f"Answer A:\n{GENERIC_PLAN}\n"  # only the plan_quality prompt shows it
STAND_IN_MODEL = "stand-in-judge"


@pytest.fixture
def judge_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty judge cache of the test's own."""
    return tmp_path_factory.mktemp("judge-cache")


@pytest.fixture
def eval_project(project: Path, judge_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sandboxed project with the small conversations file as its captured data."""
    (project / "data").mkdir(exist_ok=True)
    shutil.copy2(SMALL, project / "data" / "conversations.jsonl")
    monkeypatch.setenv("CUSTSEG_JUDGE_CACHE", str(judge_cache))
    return project


def stand_in_judge(base_url: str) -> OpenAICompatibleProvider:
    """The judge as an OpenAI-compatible provider at `base_url` (…/v1): the stand-in's."""
    return OpenAICompatibleProvider(
        base_url=base_url, model=STAND_IN_MODEL, timeout=30, max_retries=1, backoff_s=0.01
    )


def read_rows() -> list[dict[str, Any]]:
    return jsonl.read("data/eval_results.jsonl").values


def _mlflow_run(run_id: str) -> Any:
    import mlflow

    return mlflow.MlflowClient().get_run(run_id)


def test_stage_scores_caches_and_agrees_with_mlflow(eval_project: Path, stand_in_llm: str) -> None:
    params = load_params("params.yaml")
    judge = stand_in_judge(stand_in_llm)
    first = evaluate(params, judge, progress=False)
    # Exactly one judge call per conversation × metric on a cold cache.
    assert (first.calls, first.hits) == (CALLS, 0)
    assert [s["why"] for s in first.skipped] == ["missing final"]
    rows = read_rows()
    assert rows == first.rows and len(rows) == N_COMPLETE * len(SCORED)
    for row in rows:
        assert row["error"] is None, row
        assert 0.0 <= row["score"] <= 1.0 and row["reason"]
        assert row["judge_model"] == f"openai:{STAND_IN_MODEL}"
        assert (row["positions"] is not None) == (row["metric"] == "improvement")
        if row["metric"] != "improvement":  # weighted by the reply's logprobs, not the digit
            assert round(row["judge_score"] * 10 % 1, 6) in {0.25, 0.75}, row

    summary = json.loads(Path("metrics/eval.json").read_text())
    assert summary["conversations"] == 3 and summary["skipped"] == 1
    assert summary["scored"] == N_COMPLETE * len(SCORED) and summary["errors"] == 0

    run = _mlflow_run(first.run_id)
    logged = run.data.metrics
    for key, value in flatten(summary).items():
        assert logged[key] == pytest.approx(value), key
    assert logged["judge_calls"] == first.calls
    import mlflow

    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(first.run_id)]
    assert "eval_results.json" in artifacts
    assert mlflow.get_experiment(run.info.experiment_id).name == "agent-evaluation"
    first_traces = traced(run.info.experiment_id)
    assert first_traces == {
        cid: sorted(r["metric"] for r in rows if r["correlation_id"] == cid)
        for cid in {r["correlation_id"] for r in rows}
    }
    assert first.traces.created == N_COMPLETE

    # Unchanged conversations: every answer from the cache, the same results.
    second = evaluate(params, judge, progress=False)
    assert (second.calls, second.hits) == (0, CALLS)
    assert second.rows == first.rows and second.summary == summary
    # The same traces and feedback: nothing added twice.
    assert (second.traces.kept, second.traces.created, second.traces.feedback_added) == (
        N_COMPLETE,
        0,
        0,
    )
    assert traced(run.info.experiment_id) == first_traces


def traced(experiment_id: str) -> dict[str, list[str]]:
    """correlation id → the metrics of its trace's judge feedback, read through MLflow's API."""
    import mlflow

    from custseg.evaluation.traces import TAG_ID

    found: dict[str, list[str]] = {}
    for trace in mlflow.search_traces(locations=[experiment_id], return_type="list"):
        cid = trace.info.tags[TAG_ID]
        assert cid not in found, f"two traces for {cid}"
        found[cid] = sorted(a.name for a in trace.info.assessments)
    return found


@dataclass
class FailingJudge:
    """An OpenAI-compatible endpoint on 127.0.0.1 that answers as the stand-in LLM does,
    except that prompts containing PLAN_MARKER get HTTP 503 (a broken judge for one metric)."""

    url: str = ""
    refused: list[str] = field(default_factory=list)


@pytest.fixture
def failing_judge() -> Iterator[FailingJudge]:
    judge = FailingJudge()

    def handle(handler: BaseHTTPRequestHandler) -> None:
        body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        if PLAN_MARKER in prompt:
            judge.refused.append(prompt)
            reply(handler, 503, b'{"error": "judge overloaded"}')
            return
        reply(handler, *stand_in_reply(body))

    with serve(handle) as url:
        judge.url = url
        yield judge


def test_a_failing_judge_metric_keeps_the_other_scores(
    eval_project: Path, failing_judge: FailingJudge, judge_cache: Path
) -> None:
    outcome = evaluate(
        load_params("params.yaml"), stand_in_judge(f"{failing_judge.url}/v1"), progress=False
    )
    # Each plan_quality question was tried twice (one retry), then recorded as an error.
    assert len(failing_judge.refused) == N_COMPLETE * 2
    assert (outcome.calls, outcome.hits) == (CALLS, 0)
    for row in outcome.rows:
        if row["metric"] == "plan_quality":
            assert row["score"] is None and "503" in row["error"], row
        else:
            assert row["error"] is None and 0.0 <= row["score"] <= 1.0, row
    summary = json.loads(Path("metrics/eval.json").read_text())
    assert summary["errors"] == N_COMPLETE and summary["scored"] == N_COMPLETE * 3
    # Failures are not cached: with the endpoint healthy again they would be asked again.
    cached = sum(1 for _ in judge_cache.rglob("*.json"))
    assert cached == CALLS - N_COMPLETE  # all but the plan_quality questions
    assert summary["plan_quality"] == {"mean": None, "pass_rate": None, "scored": 0, "errors": 2}
    assert summary["helpfulness_final"]["scored"] == N_COMPLETE


def test_stage_entry_point_uses_the_configured_judge(
    eval_project: Path, stand_in_llm: str, judge_cache: Path, outbound_check: Path
) -> None:
    """`python stages/evaluate.py` (dvc.yaml's command) in a subprocess, judge chosen by
    CUSTSEG_LLM_* variables (the stand-in's endpoint), under outbound-check: no connection
    leaves the machine (telemetry off, judge on 127.0.0.1)."""
    env = {
        **os.environ,
        "CUSTSEG_LLM_PROVIDER": "openai",
        "CUSTSEG_LLM_BASE_URL": stand_in_llm,
        "CUSTSEG_LLM_MODEL": STAND_IN_MODEL,
        "OPENAI_API_KEY": "stand-in-key",
        "CUSTSEG_JUDGE_CACHE": str(judge_cache),
    }
    done = subprocess.run(
        [str(outbound_check), "--", sys.executable, "stages/evaluate.py", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "outbound-check: 0 non-loopback destination(s)" in done.stderr, done.stderr
    assert f"judge calls made: {CALLS}, cache hits: 0" in done.stdout, done.stdout
    assert "skipped c4d5e6f7-2a3b-4c5d-9e8f-0a1b2c3d4e03: missing final" in done.stdout
    summary = json.loads(Path("metrics/eval.json").read_text())
    assert summary["errors"] == 0 and summary["scored"] == N_COMPLETE * len(SCORED)
    assert {row["judge_model"] for row in read_rows()} == {f"openai:{STAND_IN_MODEL}"}


def test_the_bundled_judge_scores_a_conversation_end_to_end(
    eval_project: Path, local_provider: LocalProvider
) -> None:
    """The real 1.5B judge on one conversation: every question answered (the pair in both
    orders), scores in range with the judge's reasons and timings; re-scored from its cache."""
    conversations = Path("data/conversations.jsonl")
    jsonl.write(conversations, jsonl.read(conversations).values[:1])
    params = load_params("params.yaml")
    first = evaluate(params, local_provider, progress=False)
    assert (first.calls, first.hits) == (len(SCORED) + 1, 0)
    assert len(first.rows) == len(SCORED) and first.summary["errors"] == 0
    for row in first.rows:
        assert row["error"] is None, row
        assert 0.0 <= row["score"] <= 1.0 and row["reason"]
        assert row["judge_model"] == f"local:{DEFAULT_MODEL_ID}" and row["latency_s"] > 0
    again = evaluate(params, local_provider, progress=False)
    assert (again.calls, again.hits) == (0, len(SCORED) + 1) and again.rows == first.rows


def test_a_fresh_clone_rescores_the_committed_conversations_with_no_judge_call(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committed judge replies (data/judge_cache.jsonl) travel with the repository: an
    empty user cache and no model file at all, and the committed results come out again."""
    (project / "data").mkdir(exist_ok=True)
    for name in ("data/conversations.jsonl", "data/judge_cache.jsonl"):
        shutil.copy2(ROOT / name, project / name)
    monkeypatch.setenv("CUSTSEG_JUDGE_CACHE", str(tmp_path / "empty-judge-cache"))
    monkeypatch.setenv("CUSTSEG_MODEL_DIR", str(tmp_path / "no-model"))  # a call would fail
    outcome = evaluate(load_params("params.yaml"), progress=False)
    assert (outcome.calls, outcome.hits) == (0, committed_judge_calls())
    for name in ("data/eval_results.jsonl", "data/judge_cache.jsonl", "metrics/eval.json"):
        assert (project / name).read_bytes() == (ROOT / name).read_bytes(), name


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
SEED = read_seed(ROOT / "data/judge_cache.jsonl")
KEY, VALUE = next(iter(SEED.items()))
SEED_LINES = st.one_of(
    st.text(max_size=80),
    JSON_VALUES.map(json.dumps),
    # a real reply with one field replaced by anything
    st.sampled_from(list(VALUE)).flatmap(
        lambda field: JSON_VALUES.map(
            lambda junk: json.dumps({"key": KEY, "value": {**VALUE, field: junk}})
        )
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(SEED_LINES, max_size=5))
def test_a_damaged_seed_costs_calls_never_a_crash(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "seed.jsonl")
        path.write_text(
            "\n".join([*lines, jsonl.dumps_line({"key": "kept", "value": VALUE}).strip()]) + "\n"
        )
        seed = read_seed(path)
        assert seed["kept"] == VALUE, "a good line survives its bad neighbours"
        for stored in seed.values():  # whatever is kept, the judge can read back
            score_view(completion_from_dict(stored))
        assert JudgeCache(Path(tmp, "cache"), seed).get("kept") == VALUE
