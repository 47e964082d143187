"""Agents over a real Kafka broker with the real local model: conversations, faults, bad input.

The session's broker and llama.cpp server are shared; each test gets its own topics and groups.
Agent, submit and capture processes are the real CLIs (`custseg agents | submit | capture`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from custseg.agents.roles import META_TALK, OTHER_SCRIPT, tidy_final
from custseg.llm.models import DEFAULT_MODEL_ID
from custseg.testing.sandbox import project_env
from tests.fixtures.agents import Workdir, assert_grounded, assert_linked, stop, wait_for
from tests.fixtures.project import ROOT

TASKS = [
    "Suggest one offer for high income, low spending customers.",
    "Write an email subject line for low income, high spending customers.",
    "Name one metric to track a weekend promotion.",
]


@pytest.fixture
def workdir(tmp_path: Path, kafka_bootstrap: str, llm_server, trained_project: Path) -> Workdir:
    # Every agent process shares the session's one llama.cpp server; the answers are grounded
    # in the session's trained project's champion.
    llm_env = {
        **project_env(trained_project),
        "CUSTSEG_LLM_PROVIDER": "openai",
        "CUSTSEG_LLM_BASE_URL": llm_server.url,
        "CUSTSEG_LLM_MODEL": DEFAULT_MODEL_ID,
        "OPENAI_API_KEY": llm_server.api_key,
    }
    return Workdir(tmp_path, kafka_bootstrap, llm_env)


@pytest.fixture
def agents(workdir: Workdir) -> Iterator[subprocess.Popen]:
    process = workdir.start("agents", log="agents.log")
    yield process
    if process.poll() is None:
        stop(process)


def test_three_tasks_become_three_linked_conversations(workdir: Workdir, agents) -> None:
    ids = workdir.submit(*TASKS)
    assert len(set(ids)) == 3
    done = workdir.capture(ids)
    assert done.returncode == 0, done.stderr
    lines = workdir.lines()
    assert sorted(c["correlation_id"] for c in lines) == sorted(ids)
    for conversation in lines:
        assert_linked(conversation)
        assert conversation["events"]["final"]["model"]["name"] == DEFAULT_MODEL_ID
        assert_grounded(conversation)
        # The real model's final is the answer alone: no talk of the review, no other script,
        # no JSON debris.
        final = conversation["final"]
        assert not (META_TALK.search(final) or OTHER_SCRIPT.search(final)), final
        assert final == tidy_final(final) and not final.endswith(("}", "]")), final
    assert {c["task"] for c in lines} == set(TASKS)

    # A restarted capture (same group) and a brand-new one (re-reads everything) add nothing.
    assert workdir.capture(ids, timeout=5).returncode == 0
    again = workdir.run("capture", "--group", f"fresh-{uuid.uuid4().hex[:6]}", "--idle", "3")
    assert again.returncode == 0, again.stderr
    assert len(workdir.lines()) == 3
    assert stop(agents) == 0
    log = (workdir.path / "agents.log").read_text()
    assert "planner: 3 answered" in log and "reviewer: 3 answered" in log


def test_bad_records_from_kcat_go_to_the_dlq(workdir: Workdir, agents) -> None:
    kcat = ["kcat", "-b", workdir.bootstrap, "-P", "-t", workdir.topics["tasks"], "-k", "bad"]
    subprocess.run(kcat, input=b"not json {", check=True, timeout=30)
    envelope = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from custseg.agents.envelope import task_envelope as t;"
                "print(t('a task').to_bytes().decode())",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    del envelope["correlation_id"]
    subprocess.run(kcat, input=json.dumps(envelope).encode(), check=True, timeout=30)

    # The agents keep going: a good task after the bad ones still completes.
    ids = workdir.submit(TASKS[2])
    assert workdir.capture(ids).returncode == 0
    assert [c["correlation_id"] for c in workdir.lines()] == ids
    dead = [json.loads(r.value) for r in workdir.read_topic("dlq")]
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == 2, reasons
    assert reasons[0].startswith("invalid envelope: correlation_id")
    assert reasons[1].startswith("not JSON")
    assert {d["agent"] for d in dead} == {"planner"}
    assert {d["source"]["topic"] for d in dead} == {workdir.topics["tasks"]}


def test_killed_writer_and_restarted_capture_lose_and_duplicate_nothing(workdir: Workdir) -> None:
    others = workdir.start("agents", "--role", "planner", "--role", "reviewer", log="others.log")
    writer = workdir.start("agents", "--role", "writer", log="writer-1.log")
    try:
        ids = workdir.submit(*TASKS)
        # Kill the writer (SIGKILL: no clean-up at all) once it has answered its first plan.
        log = workdir.path / "writer-1.log"
        wait_for(lambda: "plan → draft" in log.read_text(), 600, "the writer's first draft")
        stop(writer, signal.SIGKILL)
        # A capture cut short while conversations are still incomplete, then restarted.
        partial = workdir.capture(ids, timeout=5)
        assert partial.returncode != 0 and "incomplete" in partial.stderr
        writer = workdir.start("agents", "--role", "writer", log="writer-2.log")
        done = workdir.capture(ids)
        assert done.returncode == 0, done.stderr
    finally:
        for process in (others, writer):
            if process.poll() is None:
                stop(process)
    lines = workdir.lines()
    assert sorted(c["correlation_id"] for c in lines) == sorted(ids), "each exactly once"
    for conversation in lines:
        assert_linked(conversation)
    drafts = {json.loads(r.value)["event_id"] for r in workdir.read_topic("drafts")}
    assert len(drafts) == 3, "a redelivered plan must not branch a conversation"
