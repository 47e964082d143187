"""Conversations as MLflow traces: spans from the envelopes, the scores as feedback, idempotent
syncs on a real sqlite store, and the Traces view of the MLflow UI in a real browser."""

from __future__ import annotations

import copy
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custseg import jsonl
from custseg.evaluation.items import read_conversations
from custseg.evaluation.traces import (
    MARK,
    MARK_VALUE,
    TAG_FAILING,
    TAG_ID,
    TAG_PASSED,
    agent_spans,
    feedback_specs,
    sync_traces,
    time_ns,
)
from tests.fixtures.project import ROOT

CONVERSATIONS = ROOT / "data" / "conversations.jsonl"
RESULTS = ROOT / "data" / "eval_results.jsonl"
EXPERIMENT = "agent-evaluation"


def committed() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The committed conversations and the eval stage's rows for them."""
    conversations = read_conversations(CONVERSATIONS).complete
    rows = jsonl.read(RESULTS).values
    return conversations, rows


# --- pure parts ----------------------------------------------------------------------------


def test_spans_follow_the_envelopes_times() -> None:
    conv = committed()[0][0]
    spans = agent_spans(conv, now_ns=0)
    assert [s.name for s in spans] == ["planner", "writer", "reviewer"]
    events = conv["events"]
    assert spans[0].start_ns == time_ns(events["task"]["produced_at"])
    assert [s.end_ns for s in spans] == [
        time_ns(events[p]["produced_at"]) for p in ("plan", "draft", "final")
    ]
    assert spans[0].outputs == {"plan": conv["plan"]}
    assert spans[2].outputs == {"review": conv["review"], "final": conv["final"]}
    assert spans[1].attributes["model"] == events["draft"]["model"]["name"]
    assert spans[1].attributes["grounded_in"] == "customer-segments v10"


times = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=30),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # naive: no zone
)
events = st.dictionaries(
    st.sampled_from(["task", "plan", "draft", "final", "other"]),
    st.one_of(
        st.none(),
        st.text(max_size=5),
        st.fixed_dictionaries(
            {"produced_at": times},
            optional={"model": st.one_of(st.none(), st.text(max_size=5), st.just({"name": "m"}))},
        ),
    ),
)


@given(events=st.one_of(st.none(), st.text(max_size=5), events), started=times)
def test_any_envelope_times_give_ordered_spans(events: Any, started: Any) -> None:
    conv = {"correlation_id": "x", "task": "t", "plan": "p", "draft": "d", "final": "f"}
    spans = agent_spans({**conv, "events": events, "started_at": started}, now_ns=10**18)
    assert len(spans) == 3
    for span in spans:
        assert span.start_ns <= span.end_ns
    for before, after in itertools.pairwise(spans):
        assert before.end_ns == after.start_ns


def test_feedback_says_what_the_rows_say() -> None:
    rows = [
        {"correlation_id": "c", "metric": "plan_quality", "score": 0.7, "passed": True,
         "threshold": 0.5, "reason": "fine", "judge_model": "local:m", "error": None},
        {"correlation_id": "c", "metric": "helpfulness_final", "score": None, "passed": None,
         "threshold": 0.5, "reason": None, "judge_model": "local:m", "error": "LLMError: down"},
        {"correlation_id": "c", "metric": "grounding_check", "score": 1.0, "passed": True,
         "threshold": 1.0, "reason": "ok", "judge_model": None, "error": None,
         "grounding": {"invented": []}},
    ]  # fmt: skip
    specs = feedback_specs(rows)["c"]
    assert [(s.name, s.value, s.source_type) for s in specs] == [
        ("plan_quality", 0.7, "LLM_JUDGE"),
        ("helpfulness_final", None, "LLM_JUDGE"),
        ("grounding_check", 1.0, "CODE"),
    ]
    assert specs[1].error == "LLMError: down" and specs[1].metadata["passed"] == "none"
    assert all(s.metadata[MARK] == MARK_VALUE for s in specs)


# --- a real store --------------------------------------------------------------------------


def experiment_id() -> str:
    from custseg.tracking import configure_mlflow

    mlflow = configure_mlflow(EXPERIMENT)
    return mlflow.get_experiment_by_name(EXPERIMENT).experiment_id


def read_back(exp: str) -> dict[str, Any]:
    """correlation id → its trace, read through MLflow's API; fails on a duplicate."""
    import mlflow

    traces = mlflow.search_traces(locations=[exp], return_type="list")
    by_id: dict[str, Any] = {}
    for trace in traces:
        cid = trace.info.tags[TAG_ID]
        assert cid not in by_id, f"two traces for {cid}"
        by_id[cid] = trace
    return by_id


def scores(trace: Any) -> dict[str, Any]:
    """metric → (value, rationale) of the trace's judge feedback; fails on a duplicate."""
    found: dict[str, Any] = {}
    for a in trace.info.assessments:
        if (a.metadata or {}).get(MARK) == MARK_VALUE:
            assert a.name not in found, f"two {a.name} assessments"
            found[a.name] = (a.value, a.rationale)
    return found


def test_traces_carry_the_chain_and_the_scores_and_resync_changes_nothing(project: Path) -> None:
    import mlflow

    conversations, rows = committed()
    exp = experiment_id()
    first = sync_traces(exp, conversations, rows)
    assert (first.created, first.kept) == (len(conversations), 0)
    assert first.feedback_added == len(rows)

    traces = read_back(exp)
    assert set(traces) == {c["correlation_id"] for c in conversations}
    for conv in conversations:
        trace = mlflow.get_trace(traces[conv["correlation_id"]].info.trace_id)
        spans = {s.name: s for s in trace.data.spans}
        assert set(spans) == {"conversation", "planner", "writer", "reviewer"}
        assert spans["planner"].inputs == {"task": conv["task"]}
        assert spans["writer"].outputs == {"draft": conv["draft"]}
        assert spans["reviewer"].outputs == {"review": conv["review"], "final": conv["final"]}
        assert spans["planner"].parent_id == spans["conversation"].span_id
        mine = [r for r in rows if r["correlation_id"] == conv["correlation_id"]]
        assert scores(trace) == {r["metric"]: (r["score"], r["reason"]) for r in mine}
        failing = sorted(r["metric"] for r in mine if not r["passed"])
        assert trace.info.tags[TAG_FAILING] == ",".join(failing)
        assert trace.info.tags[TAG_PASSED] == str(not failing).lower()

    # A reviewer filters the failing conversations by tag.
    failing_ids = {cid for cid, t in traces.items() if t.info.tags[TAG_PASSED] == "false"}
    filtered = mlflow.search_traces(
        locations=[exp], filter_string=f"tag.`{TAG_PASSED}` = 'false'", return_type="list"
    )
    assert {t.info.tags[TAG_ID] for t in filtered} == failing_ids != set()

    again = sync_traces(exp, conversations, rows)
    assert (again.created, again.replaced, again.kept) == (0, 0, len(conversations))
    assert (again.feedback_added, again.feedback_updated) == (0, 0)
    assert again.feedback_kept == len(rows)
    assert {cid: t.info.trace_id for cid, t in read_back(exp).items()} == again.trace_ids


def test_a_changed_score_or_conversation_updates_in_place_and_keeps_human_feedback(
    project: Path,
) -> None:
    import mlflow
    from mlflow.entities import AssessmentSource

    conversations, rows = committed()
    conversations, rows = (
        conversations[:3],
        [
            r
            for r in rows
            if r["correlation_id"] in {c["correlation_id"] for c in conversations[:3]}
        ],
    )
    exp = experiment_id()
    first = sync_traces(exp, conversations, rows)
    cid0, cid1 = conversations[0]["correlation_id"], conversations[1]["correlation_id"]
    human = mlflow.log_feedback(
        trace_id=first.trace_ids[cid0],
        name="plan_quality",
        value=False,
        rationale="a reviewer's own verdict",
        source=AssessmentSource(source_type="HUMAN", source_id="reviewer@example"),
    )

    rescored = copy.deepcopy(rows)
    changed = next(r for r in rescored if r["correlation_id"] == cid0)
    changed.update(score=0.123, reason="judged again", passed=False)
    recaptured = [conversations[0], {**conversations[1], "final": "A new final."}, conversations[2]]
    sync = sync_traces(exp, recaptured, rescored)
    assert (sync.created, sync.replaced, sync.kept) == (0, 1, 2)
    assert sync.feedback_updated == 1

    traces = read_back(exp)
    assert len(traces) == 3
    assert traces[cid0].info.trace_id == first.trace_ids[cid0]
    assert scores(traces[cid0])[changed["metric"]] == (0.123, "judged again")
    assert traces[cid0].info.tags[TAG_PASSED] == "false"
    humans = [a for a in traces[cid0].info.assessments if a.source.source_type == "HUMAN"]
    assert [h.assessment_id for h in humans] == [human.assessment_id]
    replaced = mlflow.get_trace(traces[cid1].info.trace_id)
    assert replaced.info.trace_id != first.trace_ids[cid1]
    assert {s.name: s.outputs for s in replaced.data.spans}["reviewer"]["final"] == "A new final."


def test_a_run_killed_between_trace_and_feedback_is_completed_by_the_next(
    project: Path,
) -> None:
    """A trace stored without its feedback (the stage killed in between), and a second trace for
    the same conversation (two runs racing): the next sync leaves one trace with every score."""
    conversations, rows = committed()
    conversations = conversations[:2]
    ids = {c["correlation_id"] for c in conversations}
    rows = [r for r in rows if r["correlation_id"] in ids]
    exp = experiment_id()
    sync_traces(exp, conversations, [])  # traces, no feedback yet
    sync_traces(exp, conversations[:1], [])
    import mlflow

    from custseg.evaluation.traces import conversation_sha, create_trace

    create_trace(
        mlflow.MlflowClient(), exp, conversations[0], conversation_sha(conversations[0]), 0
    )
    mlflow.flush_trace_async_logging()
    assert len(mlflow.search_traces(locations=[exp], return_type="list")) == 3

    sync = sync_traces(exp, conversations, rows)
    assert sync.feedback_added == len(rows)
    traces = read_back(exp)  # one per conversation again
    for cid, trace in traces.items():
        assert set(scores(trace)) == {r["metric"] for r in rows if r["correlation_id"] == cid}


# --- the MLflow UI ---------------------------------------------------------------------------


@pytest.mark.browser
def test_the_traces_view_lists_the_conversations_and_opens_a_chain(project: Path) -> None:
    """`make ui`'s server on the sandbox store, its Traces view in Debian's chromium."""
    from playwright.sync_api import sync_playwright

    from custseg.net import free_port
    from custseg.team import wait_for_server
    from custseg.testing.browser import CHROMIUM, CHROMIUM_ARGS, stop_process
    from tests.fixtures.app import ARTIFACTS, require_chromium

    require_chromium()
    conversations, rows = committed()
    exp = experiment_id()
    sync = sync_traces(exp, conversations, rows)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "mlflow-ui.log", "wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                os.environ["MLFLOW_TRACKING_URI"],
                "--default-artifact-root",
                str(project / "mlruns"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=project,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_server(url, server, timeout_s=120)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(90_000)
                outside: list[str] = []
                page.on(
                    "request",
                    lambda r: (
                        None if r.url.startswith((url, "data:", "blob:")) else outside.append(r.url)
                    ),
                )
                # The traces keep the conversations' own times (the committed ones are weeks
                # old): the view's default "last 7 days" would hide them.
                every = "startTimeLabel=ALL"
                page.goto(f"{url}/#/experiments/{exp}/traces?{every}")
                # The list: a row per conversation (its task as input), a column per metric.
                for metric in ("plan_quality", "helpfulness_final", "grounding"):
                    page.get_by_text(metric, exact=True).first.wait_for()
                for conv in conversations[:3]:
                    page.get_by_text(plain_words(conv["task"])).first.wait_for()
                page.screenshot(path=str(ARTIFACTS / "mlflow-traces.png"), full_page=True)
                # One trace opened: its agents' spans.
                trace_id = sync.trace_ids[conversations[0]["correlation_id"]]
                page.goto(
                    f"{url}/#/experiments/{exp}/traces?selectedEvaluationId={trace_id}&{every}"
                )
                for agent in ("planner", "writer", "reviewer"):
                    page.get_by_text(agent, exact=True).first.wait_for()
                page.get_by_text(plain_words(conversations[0]["final"])).first.wait_for()
                page.screenshot(path=str(ARTIFACTS / "mlflow-trace.png"), full_page=True)
                assert outside == []
            finally:
                browser.close()
    finally:
        stop_process(server, group=True)


def plain_words(text: str) -> str:
    """The longest run of a text's opening words without quotes (shown escaped in JSON cells)."""
    words = []
    for word in text.split()[:8]:
        if any(q in word for q in "\"'\\"):
            break
        words.append(word)
    return " ".join(words) or text.split()[0]
