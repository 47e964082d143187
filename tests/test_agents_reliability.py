"""The agents and the capture against what real producers send (#13): any key, any partitioner,
any bytes; an LLM that fails; agents and captures killed, a broker restarted. A real broker
(3 partitions, like params.yaml) with the stand-in LLM server and short Kafka waits
(FAST_TIMINGS), so a run takes seconds: the real-model run is in test_agents_kafka.py.

kafka-python writes some tasks with a null or foreign key, kcat (librdkafka: another default
partitioner) writes others; a few hundred generated bad records are interleaved with them.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from custseg.agents.envelope import parse_envelope, task_envelope
from custseg.agents.runtime import CHAOS_KILL_ENV, LLM_ATTEMPTS
from custseg.errors import InvalidMessage
from custseg.kafka.broker import LocalBroker
from custseg.testing.sandbox import project_env
from custseg.testing.stand_in_llm import FAIL_CUE, SLOW_CUE, VARY_CUE
from tests.fixtures.agents import (
    FAST_TIMINGS,
    Workdir,
    assert_grounded,
    assert_linked,
    retry_note,
    stop,
    wait_for,
)

PARTITIONS = 3


def stand_in_env(url: str, project: Path) -> dict[str, str]:
    """The stand-in LLM, and the champion of a trained project to ground the answers in."""
    return {
        **project_env(project),
        "CUSTSEG_LLM_PROVIDER": "openai",
        "CUSTSEG_LLM_BASE_URL": url,
        "CUSTSEG_LLM_MODEL": "stand-in",
        "OPENAI_API_KEY": "stand-in",
    }


@pytest.fixture
def workdir(
    tmp_path: Path, kafka_bootstrap: str, stand_in_llm: str, trained_project: Path
) -> Workdir:
    # No retries inside the provider: the agents' own retries (via the retry topic) are tested.
    return Workdir(
        tmp_path,
        kafka_bootstrap,
        stand_in_env(stand_in_llm, trained_project),
        partitions=PARTITIONS,
        llm={"max_retries": 0},
        timings=FAST_TIMINGS,
    )


def bad_records(rng: random.Random, n: int) -> list[bytes | None]:
    """`n` records no agent can answer, of every kind a careless or hostile producer writes:
    random bytes, broken or foreign JSON, mutated envelopes, deep nesting, big non-JSON, invalid
    UTF-8, tombstones. Each is checked to be refused by the decoder or not a task."""
    good = json.loads(task_envelope("Plan a launch").to_bytes())

    def mutated() -> bytes:
        body = dict(good, correlation_id=uuid.uuid4().hex)
        field = rng.choice(sorted(body))
        change = rng.choice(["drop", "null", "number", "long", "unknown", "type"])
        if change == "drop":
            del body[field]
        elif change == "null":
            body[field] = None
        elif change == "number":
            body[field] = rng.randint(-5, 5)
        elif change == "long":
            body[field] = "x" * 65
        elif change == "unknown":
            body["".join(chr(rng.randint(0, 0x2FF)) for _ in range(8)) + "\n"] = "?"
        else:
            body["type"] = rng.choice(["plan", "draft", "final", "memo"])
        return json.dumps(body).encode()

    kinds = [
        lambda: rng.randbytes(rng.randint(0, 2_000)),
        lambda: json.dumps(rng.choice([[], 1, "task", None, {"task": "x"}])).encode(),
        mutated,
        mutated,
        lambda: ("[" * 5_000 + "]" * 5_000).encode(),
        lambda: b"x" * 300_000,
        lambda: b"\xff\xfe" * 150_000,
        lambda: None,
        lambda: b"",
    ]
    records = []
    while len(records) < n:
        value = rng.choice(kinds)()
        try:
            if parse_envelope(value).type == "task":
                continue  # a mutation that is still a valid task is not a bad record
        except InvalidMessage:
            pass
        records.append(value)
    return records


def kcat(bootstrap: str, topic: str, lines: list[bytes], keyed: bool) -> None:
    """Produce one record per line with kcat; `keyed` lines are "key<TAB>value"."""
    command = ["kcat", "-b", bootstrap, "-P", "-t", topic, *(["-K", "\t"] if keyed else [])]
    subprocess.run(command, input=b"\n".join(lines) + b"\n", check=True, timeout=60)


def test_every_task_is_captured_whatever_its_key_and_every_bad_record_dead_lettered(
    workdir: Workdir, agents
) -> None:
    rng = random.Random(13)
    workdir.create_topics()
    topic = workdir.topics["tasks"]
    producer = KafkaProducer(bootstrap_servers=workdir.bootstrap, acks="all")
    tasks = [task_envelope(f"Task {i}: which segment gets the spring offer?") for i in range(40)]
    bad = bad_records(rng, 300)
    # kcat reads one record per line: some of the first 60 go through it.
    through_kcat = {i for i, v in enumerate(bad[:60]) if v and b"\n" not in v and len(v) < 50_000}
    by_kcat = [bad[i] for i in sorted(through_kcat)]
    by_python = [v for i, v in enumerate(bad) if i not in through_kcat]
    # Good and bad interleaved: kafka-python with a null key, a foreign key, no key at all.
    for i, value in enumerate(by_python):
        if i < 30:
            task = tasks[i]
            key = [None, uuid.uuid4().bytes, b"customer-42"][i % 3]
            producer.send(topic, key=key, value=task.to_bytes())
        key = rng.choice([None, b"bad", rng.randbytes(8)]) if value is not None else b"gone"
        producer.send(topic, key=key, value=value)  # a tombstone (None) needs a key
    producer.flush()
    producer.close()
    # kcat: keyed by the correlation id but placed by librdkafka's partitioner, or unkeyed.
    kcat_keyed = tasks[30:36]
    keyed_lines = [t.correlation_id.encode() + b"	" + t.to_bytes() for t in kcat_keyed]
    kcat(workdir.bootstrap, topic, keyed_lines, keyed=True)
    kcat(workdir.bootstrap, topic, [t.to_bytes() for t in tasks[36:40]] + by_kcat, keyed=False)
    ids = [t.correlation_id for t in tasks]

    done = workdir.capture(ids, timeout=180)
    assert done.returncode == 0, done.stderr
    lines = workdir.lines()
    assert sorted(c["correlation_id"] for c in lines) == sorted(ids), "each task exactly once"
    for conversation in lines:
        assert_linked(conversation)
        assert_grounded(conversation)
    # The conversations are complete; the Planner may still be working through bad records.
    wait_for(lambda: len(workdir.read_topic("dlq")) >= len(bad), 120, "the dead letters")
    dead = [json.loads(r.value) for r in workdir.read_topic("dlq")]
    assert len(dead) == len(bad), "every bad record exactly one dead letter"
    for letter in dead:
        assert letter["reason"].isprintable() and len(letter["reason"]) <= 500
        assert letter["source"]["topic"] == topic
    assert len({(d["source"]["partition"], d["source"]["offset"]) for d in dead}) == len(bad)
    assert agents.poll() is None, "no agent stopped"
    # Nothing twice anywhere in the chain.
    for name in ("plans", "drafts", "finals"):
        events = [json.loads(r.value)["event_id"] for r in workdir.read_topic(name)]
        assert sorted(events) == sorted(set(events)) and len(events) == len(ids), name
    assert stop(agents) == 0
    assert not workdir.lines(workdir.failed)
    planner = next(
        line
        for line in (workdir.path / "agents.log").read_text().splitlines()
        if line.startswith("planner: ") and " answered" in line
    )
    moved = int(planner.split(" moved to their home partition")[0].rsplit(", ", 1)[1])
    assert moved > 0, planner  # some tasks did start elsewhere, and were captured all the same


def test_a_failing_llm_call_is_retried_aside_then_closes_its_conversation(
    workdir: Workdir, agents
) -> None:
    """The failing task waits in the retry topic, so every other conversation (on its partition
    too) completes before it is given up; then the capture records it as failed and stops."""
    good = [f"Task {i}: name one metric for the flyer." for i in range(9)]
    failing = f"Task x: {FAIL_CUE} plan the impossible."
    ids = workdir.submit(failing, *good)
    done = workdir.capture(ids, timeout=120)
    assert done.returncode != 0
    assert "1 expected conversation(s) failed" in done.stderr.splitlines()[-1]
    lines = workdir.lines()
    assert sorted(c["correlation_id"] for c in lines) == sorted(ids[1:])
    (failure,) = workdir.lines(workdir.failed)
    assert failure["correlation_id"] == ids[0] and failure["status"] == "failed"
    assert f"llm failed {LLM_ATTEMPTS} times" in failure["reason"]
    assert failure["reached"] == ["task"] and failure["agent"] == "planner"
    # Not stalled: every other conversation was complete before the failing one was given up.
    assert max(c["completed_at"] for c in lines) < failure["failed_at"]
    retried = workdir.read_topic("retries")
    assert len(retried) == LLM_ATTEMPTS - 1
    for record in retried:  # due FAST_TIMINGS' pause × the failed attempt after it was sent
        note = retry_note(record)
        pause_s = float(FAST_TIMINGS["retry_pause_s"]) * (note.attempt - 1)
        assert note.due - record.timestamp / 1000 == pytest.approx(pause_s, abs=0.5), note
    # A second capture adds nothing: the failed conversation is closed, not pending.
    again = workdir.capture(ids, timeout=10)
    assert "0 incomplete held" in again.stderr
    assert len(workdir.lines()) == len(good) and len(workdir.lines(workdir.failed)) == 1
    assert agents.poll() is None


def test_bad_records_from_kcat_go_to_the_dlq(workdir: Workdir, agents) -> None:
    workdir.create_topics()  # kcat waits for a topic it cannot see: the agents may not be up yet
    kcat = ["kcat", "-b", workdir.bootstrap, "-P", "-t", workdir.topics["tasks"], "-k", "bad"]
    subprocess.run(kcat, input=b"not json {", check=True, timeout=30)
    envelope = json.loads(task_envelope("a task").to_bytes())
    del envelope["correlation_id"]
    subprocess.run(kcat, input=json.dumps(envelope).encode(), check=True, timeout=30)

    # The agents keep going: a good task after the bad ones still completes.
    ids = workdir.submit("Name one metric to track a weekend promotion.")
    assert workdir.capture(ids, timeout=120).returncode == 0
    assert [c["correlation_id"] for c in workdir.lines()] == ids
    wait_for(lambda: len(workdir.read_topic("dlq")) >= 2, 60, "the dead letters")
    dead = [json.loads(r.value) for r in workdir.read_topic("dlq")]
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == 2, reasons
    assert reasons[0].startswith("invalid envelope: correlation_id")
    assert reasons[1].startswith("not JSON")
    assert {d["agent"] for d in dead} == {"planner"}
    assert {d["source"]["topic"] for d in dead} == {workdir.topics["tasks"]}


@pytest.mark.chaos  # hangs the LLM or kills a process at a chosen moment
def test_a_writer_killed_before_its_commit_and_a_restarted_capture_lose_and_duplicate_nothing(
    workdir: Workdir,
) -> None:
    """The writer kills itself (SIGKILL: no clean-up at all) at its first transaction, its drafts
    acknowledged by the broker and not committed. A capture cut short meanwhile holds the
    incomplete conversations; a new writer answers the plans again, and the restarted capture
    writes each conversation once. No reader ever saw the killed writer's drafts."""
    tasks = [f"Task {i}: name one metric for the weekend promotion." for i in range(3)]
    others = workdir.start("agents", "--role", "planner", "--role", "reviewer", log="others.log")
    writer = workdir.start(
        "agents", "--role", "writer", log="writer-1.log", env={CHAOS_KILL_ENV: "1"}
    )
    try:
        ids = workdir.submit(*tasks)
        assert writer.wait(timeout=120) == -signal.SIGKILL
        # No writer runs: a capture that stops 2 s after its last message holds all three.
        partial = workdir.run("capture", "--idle", "2")
        assert partial.returncode == 0, partial.stderr
        assert "0 conversation(s) appended" in partial.stderr, partial.stderr
        assert "3 incomplete held" in partial.stderr, partial.stderr
        writer = workdir.start("agents", "--role", "writer", log="writer-2.log")
        done = workdir.capture(ids, timeout=120)
        assert done.returncode == 0, done.stderr
    finally:
        for process in (others, writer):
            if process.poll() is None:
                stop(process)
    lines = workdir.lines()
    assert sorted(c["correlation_id"] for c in lines) == sorted(ids), "each exactly once"
    for conversation in lines:
        assert_linked(conversation)
    drafts = committed_by_id(workdir, "drafts")  # a redelivered plan does not branch
    assert sorted(d["correlation_id"] for d in drafts.values()) == sorted(ids)
    assert len(workdir.read_topic("drafts", committed=False)) > len(ids), "the killed drafts"


def test_a_second_capture_on_the_same_file_is_refused_in_one_line(workdir: Workdir) -> None:
    first = workdir.start("capture", "--idle", "30", log="capture-1.log")
    try:
        lock = workdir.conversations.with_name(".conversations.jsonl.lock")
        wait_for(lock.exists, 60, "the first capture's lock")
        second = workdir.run("capture", "--idle", "1")
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1] == (
            "error: capture: another capture is writing data/conversations.jsonl "
            "(it holds data/.conversations.jsonl.lock)"
        )
    finally:
        stop(first)


def committed_by_id(workdir: Workdir, name: str) -> dict[str, dict]:
    """A topic's committed envelopes by event id; fails if any id was committed twice."""
    envelopes = [json.loads(r.value) for r in workdir.read_topic(name)]
    by_id = {e["event_id"]: e for e in envelopes}
    assert len(by_id) == len(envelopes), f"a reply committed twice on {name}"
    return by_id


def stalled_report(workdir: Workdir, running: dict[str, subprocess.Popen], ids: list[str]) -> str:
    """Where a stalled run waits: first what the broker holds of each conversation not captured
    (a CI log keeps the head of a long message), then every live process's threads' stacks
    (SIGUSR1) in the tail of its log."""
    head = workdir.missing_view(ids)
    asked = [name for name, process in running.items() if process.poll() is None]
    for name in asked:
        running[name].send_signal(signal.SIGUSR1)
    logs_of = {name: workdir.path / f"{name}.log" for name in asked}
    with contextlib.suppress(AssertionError):  # a report without some stacks is still a report
        wait_for(
            lambda: all("most recent call first" in log.read_text() for log in logs_of.values()),
            10,
            "the stacks",
        )
    logs = [f"{log.name}: …{log.read_text()[-6000:]}" for log in sorted(workdir.path.glob("*.log"))]
    return "\n".join([head, workdir.broker_view(), *logs])


@pytest.mark.chaos
@pytest.mark.timeout(600)
def test_kills_and_a_broker_restart_leave_one_consistent_conversation_per_task(
    tmp_path: Path, stand_in_llm: str, trained_project: Path
) -> None:
    """Chaos: two agents processes and a capture, killed with SIGKILL at random moments and at
    the worst one (replies acknowledged, transaction not committed: CHAOS_KILL_ENV), and the
    broker restarted once. Its own broker, so the restart touches no other test."""
    rng = random.Random(50)
    broker = LocalBroker.ephemeral(tmp_path / "kafka")
    broker.start()
    running: dict[str, subprocess.Popen] = {}
    try:
        (tmp_path / "work").mkdir()
        workdir = Workdir(
            tmp_path / "work",
            broker.bootstrap,
            stand_in_env(stand_in_llm, trained_project),
            partitions=PARTITIONS,
            llm={"max_retries": 0},
            timings=FAST_TIMINGS,
        )
        workdir.create_topics()
        # Every answer differs from any other (VARY_CUE): a reply produced twice would show.
        tasks = [
            f"Task {i}: which segment gets the flyer? {VARY_CUE}{SLOW_CUE if i % 4 == 0 else ''}"
            for i in range(50)
        ]
        ids = workdir.submit(*tasks)
        expect = workdir.expect_file(ids)
        hook_kills = 0

        def launch(name: str) -> None:
            if name == "capture":
                running[name] = workdir.start(
                    "capture", "--expect", str(expect), "--timeout", "600", log="capture.log"
                )
            else:  # each agents process kills itself at one of its first transactions
                chaos = {CHAOS_KILL_ENV: str(rng.randint(2, 6))} if hook_kills < 4 else {}
                running[name] = workdir.start("agents", log=f"{name}.log", env=chaos)

        for name in ("agents-1", "agents-2", "capture"):
            launch(name)
        kills, broker_restarted = 0, False
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            # The next blow falls 1-3 s from now, unless every expected conversation is captured.
            with contextlib.suppress(subprocess.TimeoutExpired):
                running["capture"].wait(timeout=rng.uniform(1.0, 3.0))
            if running["capture"].poll() == 0:
                break
            for name, process in list(running.items()):
                if process.poll() is not None:  # killed itself (the hook), or gave up: restart
                    hook_kills += process.returncode == -signal.SIGKILL
                    launch(name)
            if kills < 8:
                victim = rng.choice(sorted(running))
                running[victim].send_signal(signal.SIGKILL)
                running[victim].wait()
                kills += 1
                launch(victim)
            # Mid-run, at a set blow: no run is over within 4 blows, and the capture writes in
            # bursts (0 then 50 lines between two looks), so "once 10 are captured" could miss it.
            if not broker_restarted and kills == 4:
                broker.stop()
                broker.start()
                broker_restarted = True
        assert running["capture"].poll() == 0, stalled_report(workdir, running, ids)
        assert broker_restarted and hook_kills >= 1, (broker_restarted, hook_kills)
    finally:
        for process in running.values():
            if process.poll() is None:
                stop(process, signal.SIGKILL)
        try:
            lines = workdir.lines()
            plans = committed_by_id(workdir, "plans")
            drafts = committed_by_id(workdir, "drafts")
            finals = committed_by_id(workdir, "finals")
            written = sum(
                len(workdir.read_topic(name, committed=False))
                for name in ("plans", "drafts", "finals")
            )
        finally:
            broker.stop()
    assert sorted(c["correlation_id"] for c in lines) == sorted(ids), "each task exactly once"
    assert not workdir.lines(workdir.failed)
    # Each link agrees: the draft answers the plan recorded, the final reviews the draft recorded.
    for conversation in lines:
        assert_linked(conversation)
        events = conversation["events"]
        plan, draft = plans[events["plan"]["event_id"]], drafts[events["draft"]["event_id"]]
        final = finals[events["final"]["event_id"]]
        assert conversation["plan"] == plan["content"]["plan"] == draft["content"]["plan"]
        assert conversation["draft"] == draft["content"]["draft"] == final["content"]["draft"]
    # The hook's kills left replies on the broker that no reader ever saw (aborted).
    assert written > len(plans) + len(drafts) + len(finals) == 3 * len(ids)
