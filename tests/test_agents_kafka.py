"""Agents over a real Kafka broker with the real local model: conversations, faults, bad input.

The session's broker and llama.cpp server are shared; each test gets its own topics and groups.
Agent, submit and capture processes are the real CLIs (`custseg agents | submit | capture`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer

from custseg.agents.roles import META_TALK, OTHER_SCRIPT, tidy_final
from custseg.llm.models import DEFAULT_MODEL_ID
from tests.fixtures.project import ROOT

pytestmark = pytest.mark.slow
TASKS = [
    "Suggest one offer for high income, low spending customers.",
    "Write an email subject line for low income, high spending customers.",
    "Name one metric to track a weekend promotion.",
]


class Workdir:
    """A directory with its own params.yaml (unique topics and groups) and the env to run in."""

    def __init__(self, path: Path, bootstrap: str, llm_url: str, llm_key: str) -> None:
        self.path, self.bootstrap = path, bootstrap
        tag = uuid.uuid4().hex[:8]
        self.topics = {k: f"{tag}.agent.{k}" for k in ("tasks", "plans", "drafts", "finals", "dlq")}
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["agents"].update(
            topics=self.topics,
            group_prefix=f"test-{tag}",
            partitions=2,
            max_tokens={"planner": 40, "writer": 48, "reviewer": 200},
        )
        (path / "params.yaml").write_text(yaml.safe_dump(params))
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            # Every agent process shares the session's one llama.cpp server.
            "CUSTSEG_LLM_PROVIDER": "openai",
            "CUSTSEG_LLM_BASE_URL": llm_url,
            "CUSTSEG_LLM_MODEL": DEFAULT_MODEL_ID,
            "OPENAI_API_KEY": llm_key,
            "PYTHONUNBUFFERED": "1",
        }
        self.conversations = path / "data/conversations.jsonl"

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "custseg", *args]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.cli(*args),
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str, log: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.cli(*args),
            cwd=self.path,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=(self.path / log).open("w"),
        )

    def submit(self, *tasks: str) -> list[str]:
        done = self.run("submit", *tasks)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    def capture(self, ids: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
        expect = self.path / f"expect-{uuid.uuid4().hex[:6]}.txt"
        expect.write_text("\n".join(ids))
        return self.run(
            "capture", "--expect", str(expect), "--timeout", str(timeout), timeout=timeout + 60
        )

    def lines(self) -> list[dict]:
        if not self.conversations.exists():
            return []
        return [json.loads(line) for line in self.conversations.read_text().splitlines()]

    def read_topic(self, name: str) -> list:
        consumer = KafkaConsumer(
            self.topics[name],
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            consumer_timeout_ms=3000,
        )
        records = list(consumer)
        consumer.close()
        return records


@pytest.fixture
def workdir(tmp_path: Path, kafka_bootstrap: str, llm_server) -> Workdir:
    return Workdir(tmp_path, kafka_bootstrap, llm_server.url, llm_server.api_key)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    process.send_signal(sig)
    return process.wait(timeout=120)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def agents(workdir: Workdir) -> Iterator[subprocess.Popen]:
    process = workdir.start("agents", log="agents.log")
    yield process
    if process.poll() is None:
        stop(process)


def assert_linked(conversation: dict) -> None:
    events = conversation["events"]
    assert events["plan"]["causation_id"] == events["task"]["event_id"]
    assert events["draft"]["causation_id"] == events["plan"]["event_id"]
    assert events["final"]["causation_id"] == events["draft"]["event_id"]
    assert [events[t]["agent"] for t in ("task", "plan", "draft", "final")] == [
        "user",
        "planner",
        "writer",
        "reviewer",
    ]
    assert all(conversation[k].strip() for k in ("task", "plan", "draft", "final", "review"))


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
