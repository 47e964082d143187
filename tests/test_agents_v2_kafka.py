"""Agent variant v2 over a real Kafka broker, with the stand-in LLM: every agent records its
tool calls, a final that breaks the task's limit is sent with the breach recorded (never
silently), and the capture, the traces and the eval rows see them. The real model's run is
`make agents-demo` with `--variant v2` (README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from custseg.evaluation.items import conversation_items
from custseg.evaluation.scorer import checked_row
from custseg.evaluation.traces import agent_spans
from tests.fixtures.agents import FAST_TIMINGS, Workdir, assert_grounded, assert_linked, stop
from tests.test_agents_reliability import stand_in_env

SMS = 'Write a short SMS (under 20 characters) inviting "high income · high spending" customers.'
PLAIN = "Which segment has the most customers?"


@pytest.fixture
def workdir(
    tmp_path: Path, kafka_bootstrap: str, stand_in_llm: str, trained_project: Path
) -> Workdir:
    return Workdir(
        tmp_path,
        kafka_bootstrap,
        stand_in_env(stand_in_llm, trained_project),
        llm={"max_retries": 0},
        timings=FAST_TIMINGS,
    )


def test_v2_records_tool_calls_edits_and_breaches_end_to_end(workdir: Workdir, agents) -> None:
    done = workdir.run("submit", "--variant", "v2", SMS, PLAIN)
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    captured = workdir.capture(ids, timeout=120)
    assert captured.returncode == 0, captured.stderr
    by_task = {c["task"]: c for c in workdir.lines()}
    assert set(by_task) == {SMS, PLAIN}
    for conv in by_task.values():
        assert_linked(conversation=conv)
        assert_grounded(conv)
        assert conv["variant"] == "v2"
        for part in ("plan", "draft", "final"):
            assert conv["events"][part]["work"]["tool_calls"], part
    sms, plain = by_task[SMS], by_task[PLAIN]
    # The SMS: the champion's figures of the segment it names, the count tool on each reply.
    planner_calls = sms["work"]["plan"]["tool_calls"]
    assert planner_calls[0]["name"] == "segment_figures"
    assert planner_calls[0]["result"]["segment"] == "high income · high spending"
    assert "count_text" in {c["name"] for c in sms["work"]["final"]["tool_calls"]}
    # The stand-in cannot keep 20 characters: the draft was revised once, the final's patches
    # would lengthen it (not applied, and why), and it is sent with the breach recorded.
    final_work = sms["work"]["final"]
    assert len(sms["final"]) > 20
    assert final_work["breaches"] and "(task: under 20 characters)" in final_work["breaches"][0]
    assert any("LLM revision 1" in r for r in sms["work"]["draft"]["revisions"])
    # The checks' edit comes first, naming the limit and the length; the stand-in's patch
    # cannot keep it, so it is not applied, and why is recorded.
    fix = final_work["edits"][0]
    assert fix["edit"].startswith("Shorten the answer to under 20 characters (it has "), fix
    assert not fix["applied"] and fix["why_not"], fix
    # The review is the stand-in's edit, applied (its words added to the draft).
    assert [e["edit"] for e in plain["work"]["final"]["edits"]][-1] == (
        "Add one measure of success to the answer."
    )
    # Before it, the checks' edit (code, no LLM call): a draft naming no segment and no figure
    # gets the task's segment's figures from the tools.
    added = plain["final"].removeprefix(plain["draft"]).strip()
    assert plain["final"].startswith(plain["draft"]), plain["final"]
    assert added.endswith("Measure success by repeat visits each week."), added
    assert "average income · average spending" in added and " k$" in added, added
    assert "(applied)" in plain["review"]
    assert plain["work"]["plan"]["tool_calls"][0]["name"] == "rank_segments"

    # The traces: a span per tool call under its agent's span.
    spans = {s.name: s for s in agent_spans(sms, now_ns=0)}
    assert [t["name"] for t in spans["planner"].tools] == ["segment_figures"]
    assert spans["reviewer"].attributes["breaches"] == final_work["breaches"]
    # The eval rows: each carries what the agents did.
    check = next(i for i in conversation_items(sms, seed=0) if i.metric == "grounding_check")
    row = checked_row(check)
    assert row["work"]["breaches"] == final_work["breaches"]
    assert "segment_figures" in row["work"]["tool_calls"]
    assert stop(agents) == 0
