"""Single records that must never stop an agent (#13): whatever a producer writes, decoding fails
only with InvalidMessage and a one-line reason, a dead letter always fits in a Kafka request, and
an empty LLM reply is retried and dead-lettered like a failed call. Unit tests of our own logic:
the broker-backed behaviour is in test_agents_kafka.py."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import namedtuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.errors import KafkaConnectionError
from kafka.structs import TopicPartition

from custseg.agents.envelope import (
    MAX_ENVELOPE_BYTES,
    MAX_REASON_CHARS,
    parse_envelope,
    task_envelope,
)
from custseg.agents.roles import ROLES
from custseg.agents.runtime import (
    LLM_ATTEMPTS,
    RETRY_HEADER,
    AgentWorker,
    Timings,
    dead_letter,
    run_agents,
)
from custseg.agents.runtime import worker as worker_module
from custseg.agents.topics import home_partition
from custseg.config import AgentsParams
from custseg.errors import AgentStopped, ConfigError, InvalidMessage
from custseg.llm.base import Completion

Record = namedtuple("Record", "topic partition offset key value headers", defaults=[()])
KAFKA_MAX_REQUEST = 1_048_576
GOOD = json.loads(task_envelope("Plan a launch", "c" * 32).to_bytes())


def assert_refused_in_one_line(raw: bytes) -> None:
    with pytest.raises(InvalidMessage) as refused:
        parse_envelope(raw)
    reason = str(refused.value)
    assert reason.isprintable() and len(reason) <= MAX_REASON_CHARS, reason


@settings(max_examples=300)
@given(st.binary(max_size=2_000))
def test_any_bytes_are_parsed_or_refused_in_one_line(raw: bytes) -> None:
    try:
        parse_envelope(raw)
    except InvalidMessage as refused:
        assert str(refused).isprintable() and len(str(refused)) <= MAX_REASON_CHARS


@settings(max_examples=200)
@given(name=st.text(min_size=1, max_size=600), value=st.none() | st.integers() | st.text())
def test_a_hostile_field_name_is_named_on_one_line(name: str, value) -> None:
    raw = json.dumps({**GOOD, name: value} if name not in GOOD else {name: value}).encode()
    assert_refused_in_one_line(raw)


@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
@pytest.mark.parametrize("where", ["root", "content", "unknown"])
def test_deeply_nested_json_is_refused(depth: int, where: str) -> None:
    nested = "[" * depth + "]" * depth
    body = json.dumps(GOOD)[:-1]
    raw = {
        "root": nested,
        "content": body.replace('"task": "Plan a launch"', f'"task": {nested}') + "}",
        "unknown": body + f', "x": {nested}}}',
    }[where]
    assert_refused_in_one_line(raw.encode())


@settings(max_examples=50, deadline=None)
@given(
    value=st.binary(max_size=4_096) | st.text(max_size=4_096).map(str.encode),
    key=st.none() | st.binary(max_size=64),
    repeat=st.sampled_from([1, 300, 3_000]),
)
def test_a_dead_letter_always_fits_in_a_request(value: bytes, key, repeat: int) -> None:
    raw = value * repeat  # up to ~12 MB
    letter = dead_letter(Record("tasks", 0, 7, key, raw), "x\n" * 10_000, "planner")
    assert len(letter) < KAFKA_MAX_REQUEST
    body = json.loads(letter)
    assert body["value_bytes"] == len(raw) and body["truncated"] == (len(raw) > 65_536)
    assert body["value_sha256"] == hashlib.sha256(raw).hexdigest()
    assert "\n" not in body["reason"]


def test_the_worst_escaping_still_fits() -> None:
    """Control characters cost 6 bytes each in JSON; a huge key is cut too."""
    for raw in (b"\x01" * 3_000_000, b"\xff" * 3_000_000):
        letter = dead_letter(Record("tasks", 0, 7, b"k" * 2_000_000, raw), "r", "writer")
        assert len(letter) < KAFKA_MAX_REQUEST


class EmptyLLM:
    name, model, temperature = "stand-in", "empty", 0.0

    def complete(self, messages, *, max_tokens=None, temperature=None) -> Completion:
        return Completion(" \n", 1, 1, 0.0, "empty")


def planner(llm) -> AgentWorker:
    return AgentWorker(ROLES["planner"], llm, AgentsParams(), "", threading.Event(), print)


def at_home(correlation_id: str) -> int:
    return home_partition(correlation_id, AgentsParams().partitions)


def test_an_empty_llm_reply_is_retried_then_dead_lettered() -> None:
    """A failed answer goes to the retry topic (its partition is not held up), attempt by
    attempt, then to the dead letters naming the original record."""
    cid = "c" * 32
    value = task_envelope("Plan a launch", cid).to_bytes()
    record = Record("agent.tasks", at_home(cid), 3, cid.encode(), value, [])
    worker = planner(EmptyLLM())
    outcomes = [worker.decide(record)]
    while outcomes[-1].kind == "retry":
        ((again,),) = [outcomes[-1].sends]
        assert (again.topic, again.partition, again.value) == (
            AgentsParams().topics.retries,
            at_home(cid),
            value,
        )
        note = json.loads(dict(again.headers)[RETRY_HEADER])
        assert note["role"] == "planner" and note["due"] > time.time()
        outcomes.append(
            worker.decide(Record(again.topic, again.partition, 0, again.key, value, again.headers))
        )
        # Another role reading the retry topic leaves it alone.
        writer = AgentWorker(ROLES["writer"], EmptyLLM(), AgentsParams(), "", threading.Event())
        assert (
            writer.decide(
                Record(again.topic, again.partition, 0, again.key, value, again.headers)
            ).kind
            == "not mine"
        )
    assert [o.kind for o in outcomes] == ["retry"] * (LLM_ATTEMPTS - 1) + ["dead-lettered"]
    ((letter,),) = [outcomes[-1].sends]
    assert letter.topic == AgentsParams().topics.dlq and letter.partition == at_home(cid)
    body = json.loads(letter.value)
    assert f"failed {LLM_ATTEMPTS} times" in body["reason"] and "plan" in body["reason"]
    assert body["envelope"]["correlation_id"] == cid and body["envelope"]["type"] == "task"
    assert body["source"] == {"topic": "agent.tasks", "partition": at_home(cid), "offset": 3}


class BrokenLLM(EmptyLLM):
    def complete(self, messages, *, max_tokens=None, temperature=None) -> Completion:
        raise ZeroDivisionError("a failure nobody foresaw")


def test_an_unforeseen_failure_dead_letters_the_record_instead_of_crashing() -> None:
    task = task_envelope("Plan a launch")
    record = Record("tasks", at_home(task.correlation_id), 9, None, task.to_bytes())
    outcome = planner(BrokenLLM()).decide_safely(record)
    assert outcome.kind == "dead-lettered"  # done with: its offset can be committed
    ((letter,),) = [outcome.sends]
    assert letter.topic == AgentsParams().topics.dlq and letter.key is None
    assert (
        json.loads(letter.value)["reason"]
        == "unexpected ZeroDivisionError: a failure nobody foresaw"
    )


@settings(max_examples=100, deadline=None)
@given(key=st.none() | st.binary(max_size=40), partition=st.integers(0, 2))
def test_a_record_off_its_home_partition_is_moved_there_unchanged(key, partition: int) -> None:
    """Whatever key and partition a client gave a task, it is answered on its home partition."""
    task = task_envelope("Plan a launch")
    record = Record("tasks", partition, 5, key, task.to_bytes())
    outcome = planner(BrokenLLM()).decide_safely(record)  # an LLM call fails: none is made
    home = at_home(task.correlation_id)
    if partition == home:
        assert outcome.kind == "dead-lettered"  # it was answered (and the LLM failed)
        return
    assert outcome.kind == "moved"
    ((moved,),) = [outcome.sends]
    assert (moved.topic, moved.partition, moved.key, moved.value) == (
        AgentsParams().topics.tasks,
        home,
        task.correlation_id.encode(),
        record.value,
    )


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=64), st.integers(1, 64))
def test_the_home_partition_is_kafkas_default_for_the_key(
    correlation_id: str, partitions: int
) -> None:
    """The agents place every reply by `home_partition`; Java and kafka-python clients keyed by
    the correlation id choose the same partition."""
    from kafka.partitioner.default import DefaultPartitioner

    class Cluster:
        def topics(self):
            return {"t"}

        def partitions_for_topic(self, topic):
            return set(range(partitions))

        available_partitions_for_topic = partitions_for_topic

    key = correlation_id.encode()
    expected = DefaultPartitioner().partition("t", key, key, None, None, Cluster())
    assert home_partition(correlation_id, partitions) == expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(JSON, st.dictionaries(st.sampled_from(sorted(GOOD)), JSON, max_size=12)))
def test_any_json_is_answered_or_dead_lettered_never_raised(body) -> None:
    """Arbitrary JSON, and envelopes whose fields hold arbitrary JSON, through the poison path:
    one outcome per record (a dead letter that fits, with a one-line reason), never an error."""
    raw = json.dumps(body).encode()
    outcome = planner(BrokenLLM()).decide_safely(Record("agent.tasks", 0, 1, None, raw))
    assert outcome.kind in {"dead-lettered", "moved"}  # an LLM call fails; none is answered
    if outcome.kind == "dead-lettered":
        ((letter,),) = [outcome.sends]
        reason = json.loads(letter.value)["reason"]
        assert reason.isprintable() and len(reason) <= MAX_REASON_CHARS
        assert len(letter.value) < KAFKA_MAX_REQUEST


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_mutated_envelope_is_answered_or_dead_lettered(data) -> None:
    """A valid task with bytes flipped, cut or repeated: decoded or refused in one line."""
    raw = bytearray(task_envelope("Plan a launch").to_bytes())
    for _ in range(data.draw(st.integers(1, 5))):
        at = data.draw(st.integers(0, len(raw) - 1))
        edit = data.draw(st.sampled_from(["flip", "cut", "repeat"]))
        if edit == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif edit == "cut":
            del raw[at:]
            if not raw:
                break
        else:
            raw[at:at] = raw[at : at + 20] * data.draw(st.integers(1, 50))
    outcome = planner(BrokenLLM()).decide_safely(Record("agent.tasks", 0, 1, None, bytes(raw)))
    assert outcome.kind in {"dead-lettered", "moved"}


def test_a_worker_that_cannot_go_on_is_restarted_in_place_with_its_count(monkeypatch) -> None:
    """The broker gone, the producer fenced: the worker is restarted in place after the backoff
    (logged, counted in its stats), the other roles go on, and run_agents returns only when
    stopped."""
    calls: list[str] = []
    events: list[str] = []
    ids: dict[str, list[str]] = {"planner": [], "writer": []}
    stop = threading.Event()

    def broker_gone_once(self) -> None:
        calls.append(self.role.name)
        ids[self.role.name].append(self.transactional_id)
        if calls.count("writer") == 1 and self.role.name == "writer":
            raise KafkaConnectionError("socket disconnected\nretrying")
        if calls.count("writer") == 2:
            stop.set()  # the writer is back: stop the process
        self.stop.wait()

    monkeypatch.setattr(AgentWorker, "_run", broker_gone_once)
    started = time.monotonic()
    workers = run_agents(
        ["planner", "writer"], EmptyLLM(), AgentsParams(), "", stop, on_event=events.append
    )
    assert time.monotonic() - started < 10
    assert sorted(calls) == ["planner", "writer", "writer"], "only the writer restarted"
    assert events == [
        "writer: stopped (KafkaConnectionError: socket disconnected\\nretrying); restart 1 in 1 s"
    ]
    assert [w.stats.restarts for w in workers] == [0, 1]
    # The replacement's producer takes its predecessor's transactional id, which fences a
    # predecessor still running (stuck): it can no longer commit a reply twice.
    assert len(set(ids["writer"])) == 1 and set(ids["writer"]) != set(ids["planner"])


def test_a_config_error_stops_the_process_in_one_line(monkeypatch) -> None:
    """A restart would fail the same way: AgentStopped (exit 2 from the CLI) naming the role."""

    def misconfigured(self) -> None:
        if self.role.name == "writer":
            raise ConfigError("agent topics must exist with equal partition counts")
        self.stop.wait()

    monkeypatch.setattr(AgentWorker, "_run", misconfigured)
    with pytest.raises(AgentStopped) as stopped:
        run_agents(["planner", "writer"], EmptyLLM(), AgentsParams(), "", threading.Event())
    assert str(stopped.value) == (
        "writer stopped: ConfigError: agent topics must exist with equal partition counts"
    )


class StallingConsumer:
    """The consumer side of kafka-python as the worker loop uses it: one batch (the given
    records), then empty polls; `poll` never returns once `stall_poll` is set."""

    def __init__(self, records: list, stall_poll: bool = False) -> None:
        self.batches = [{TopicPartition(r.topic, r.partition): [r] for r in records}]
        self.stall_poll, self.released = stall_poll, threading.Event()

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(AgentsParams().partitions))

    def poll(self, timeout_ms: int) -> dict:
        if self.stall_poll:
            self.released.wait(15)  # bounded: a missed stall fails the test, not hangs it
        if self.batches:
            return self.batches.pop()
        time.sleep(timeout_ms / 1000)
        return {}

    def assignment(self) -> set:
        return {TopicPartition(AgentsParams().topics.tasks, p) for p in range(3)}

    def seek(self, *args) -> None: ...
    def pause(self, *args) -> None: ...
    def resume(self, *args) -> None: ...
    def group_metadata(self) -> None: ...
    def close(self, autocommit: bool, timeout_ms: int | None = None) -> None: ...


class StallingProducer:
    """A transactional producer whose commit never returns once `stall_commit` is set."""

    def __init__(self, stall_commit: bool = False) -> None:
        self.stall_commit, self.released = stall_commit, threading.Event()
        self.committing = threading.Event()
        self.committed: list[str] = []
        self.sent: list[str] = []

    def send(self, topic: str, **record) -> None:
        self.sent.append(topic)

    def commit_transaction(self) -> None:
        self.committing.set()
        if self.stall_commit:
            self.released.wait(15)  # bounded: a missed stall fails the test, not hangs it
        self.committed.append("commit")

    def init_transactions(self) -> None: ...
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(self, *args) -> None: ...
    def flush(self, timeout: float) -> None: ...
    def abort_transaction(self) -> None: ...
    def close(self, timeout: float) -> None: ...


class SlowLLM(EmptyLLM):
    """Answers after `seconds`: a local model on a busy CPU."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.called = seconds, threading.Event()

    def complete(self, messages, *, max_tokens=None, temperature=None) -> Completion:
        self.called.set()
        time.sleep(self.seconds)
        return Completion("1. Pick the segment. 2. Write the flyer.", 1, 1, self.seconds, "slow")


def run_planner_on(
    monkeypatch,
    consumer,
    producer,
    llm,
    stuck_s: float,
    stop_when=None,
    on_event=print,
    shutdown_s: float = 10.0,
) -> list[AgentWorker]:
    """run_agents with one planner on the given Kafka clients, a worker `stuck_s` in the Kafka
    client counting as stuck; `stop_when` (a wait) stops it once it returns."""
    monkeypatch.setattr(AgentWorker, "consumer", lambda self: consumer)
    monkeypatch.setattr(worker_module, "make_producer", lambda *args: producer)
    stop = threading.Event()
    if stop_when is not None:
        threading.Thread(target=lambda: stop_when() and stop.set(), daemon=True).start()
    try:
        timings = Timings(stuck_s=stuck_s, shutdown_s=shutdown_s)
        return run_agents(["planner"], llm, AgentsParams(), "", stop, on_event, timings=timings)
    finally:
        consumer.released.set()
        producer.released.set()


def a_task_at_home() -> Record:
    task = task_envelope("Plan a launch")
    cid = task.correlation_id
    return Record(AgentsParams().topics.tasks, at_home(cid), 0, cid.encode(), task.to_bytes())


@pytest.mark.parametrize("where", ["poll", "commit"])
def test_a_worker_stuck_in_the_kafka_client_is_replaced(monkeypatch, where: str) -> None:
    """kafka-python waits for the broker without a deadline in places: a worker inside a poll or
    a commit for longer than `stuck_s` is let go (its clients closed, so it leaves its group)
    and a new one started in its place, instead of holding its partitions, and its group's
    rebalances, while doing nothing."""
    consumer = StallingConsumer([a_task_at_home()], stall_poll=where == "poll")
    producer = StallingProducer(stall_commit=where == "commit")
    events: list[str] = []
    restarted = threading.Event()

    def on_event(line: str) -> None:
        events.append(line)
        restarted.set()

    started = time.monotonic()
    # The fake clients stall their replacement too: left behind at the stop, after 1 s.
    run_planner_on(
        monkeypatch,
        consumer,
        producer,
        SlowLLM(0.0),
        0.5,
        lambda: restarted.wait(10),
        on_event,
        shutdown_s=1.0,
    )
    assert time.monotonic() - started < 10
    assert events[0] == "planner: stopped (stuck over 0.5 s in the Kafka client); restart 1 in 1 s"
    assert producer.committed == []


def test_a_long_llm_call_is_not_being_stuck(monkeypatch) -> None:
    """The LLM's time does not count: a call three times `stuck_s` is answered and committed."""
    producer = StallingProducer()
    consumer = StallingConsumer([a_task_at_home()])

    def committed() -> bool:
        deadline = time.monotonic() + 10
        while not producer.committed and time.monotonic() < deadline:
            time.sleep(0.05)
        return True

    (worker,) = run_planner_on(monkeypatch, consumer, producer, SlowLLM(0.9), 0.3, committed)
    assert producer.committed == ["commit"] and producer.sent == [AgentsParams().topics.plans]
    assert worker.stats.handled == 1 and worker.error is None and worker.stats.restarts == 0


def test_a_stop_during_a_long_llm_call_abandons_it_uncommitted(monkeypatch) -> None:
    """SIGTERM does not wait for the LLM: the call in flight is abandoned at once and its input
    left uncommitted (the next owner of the partition answers it)."""
    llm = SlowLLM(30.0)
    producer = StallingProducer()
    started = time.monotonic()
    (worker,) = run_planner_on(
        monkeypatch, StallingConsumer([a_task_at_home()]), producer, llm, 0.3, llm.called.wait
    )
    assert time.monotonic() - started < 10
    assert producer.committed == [] and worker.stats.handled == 0


def test_a_stop_while_a_worker_is_stuck_still_ends_within_the_shutdown_bound(
    monkeypatch,
) -> None:
    """Stopped while a worker never comes back from a commit: run_agents returns after
    `shutdown_s`, leaving it behind (a daemon thread), instead of waiting for it forever."""
    consumer, producer = StallingConsumer([a_task_at_home()]), StallingProducer(stall_commit=True)
    events: list[str] = []
    started = time.monotonic()
    run_planner_on(
        monkeypatch,
        consumer,
        producer,
        SlowLLM(0.0),
        60.0,
        producer.committing.wait,
        events.append,
        shutdown_s=1.0,
    )
    assert time.monotonic() - started < 10 and producer.committed == []
    assert events == ["planner: not stopped within 1 s; left behind"]


@pytest.mark.parametrize("extra", [1, 100_000])
def test_a_record_past_the_size_limit_is_refused_before_parsing(extra: int) -> None:
    """Even a valid envelope: nothing an agent writes comes near the limit."""
    padded = json.dumps({**GOOD, "content": {"task": "x" * (MAX_ENVELOPE_BYTES + extra)}})
    with pytest.raises(InvalidMessage, match=r"^record too large: [\d,]+ bytes \(limit 262,144\)$"):
        parse_envelope(padded.encode())
