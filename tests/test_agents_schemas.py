"""The schemas of the retry header and the dead letter (#31), and the bounds on what a record can
make a worker or the capture wait for: pure functions and the worker's decision, with generated
inputs. The same classes against a real broker are in test_agents_hostile.py."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import namedtuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.structs import TopicPartition

from custseg.agents.capture import Assembler
from custseg.agents.capture.reader import DeadLetters, read_dead_letter
from custseg.agents.envelope import task_envelope
from custseg.agents.roles import ROLES
from custseg.agents.runtime import LLM_ATTEMPTS, AgentWorker
from custseg.agents.runtime.letters import dead_letter, retry_header
from custseg.agents.schemas import (
    FALLBACK_OWNER,
    MAX_OFFSET,
    RETRY_HEADER,
    RetryBounds,
    max_retry_wait_s,
    read_retry,
)
from custseg.config import AgentsParams
from custseg.llm.base import Completion
from custseg.testing.conversations import conversation

Record = namedtuple("Record", "topic partition offset key value headers", defaults=[()])
PARAMS = AgentsParams()
TOPICS = PARAMS.topics
INPUTS = {"planner": TOPICS.tasks, "writer": TOPICS.plans, "reviewer": TOPICS.drafts}
BOUNDS = RetryBounds(INPUTS, PARAMS.partitions, LLM_ATTEMPTS, 100.0)
NOW = 1_800_000_000.0

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
SOURCES = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"topic": st.sampled_from([*INPUTS.values(), "elsewhere"]) | JSON},
        optional={
            "partition": st.integers(-3, 2**40) | JSON,
            "offset": st.integers(-3, 2**70) | JSON,
        },
    ),
)
NOTES = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from([*INPUTS, "mailer"]) | JSON,
        "attempt": st.integers(-2, 10**6) | JSON,
        "due": st.floats() | st.integers(-(2**70), 2**70) | st.sampled_from([NOW, NOW + 99]) | JSON,
        "source": SOURCES,
        "extra": JSON,
    },
)
HEADERS = st.one_of(
    NOTES.map(lambda n: json.dumps(n).encode()),  # NaN and Infinity included, as Python writes
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
)


def valid_note(**change) -> bytes:
    note = {
        "role": "writer",
        "attempt": 2,
        "due": NOW + 5,
        "source": {"topic": TOPICS.plans, "partition": 1, "offset": 7},
    }
    return json.dumps({**note, **change}).encode()


@settings(max_examples=400)
@given(HEADERS)
def test_any_retry_header_is_valid_in_range_or_refused_in_one_line(raw: bytes) -> None:
    read = read_retry([(RETRY_HEADER, raw)], BOUNDS, NOW)
    assert read.owner in INPUTS
    if read.note is None:
        assert read.problem and read.problem.isprintable() and len(read.problem) <= 500
        return
    note = read.note
    assert read.owner == note.role and 2 <= note.attempt <= LLM_ATTEMPTS
    assert math.isfinite(note.due) and 0 <= note.due <= NOW + BOUNDS.max_ahead_s
    assert note.source.topic == INPUTS[note.role]
    assert 0 <= note.source.partition < PARAMS.partitions and 0 <= note.source.offset <= MAX_OFFSET


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ({"topic": TOPICS.plans, "partition": 1}, "offset"),  # the issue's crash: no offset
        ("agent.plans@1:7", "source"),  # a string
        ([TOPICS.plans, 1, 7], "source"),
        ({"topic": TOPICS.plans, "partition": 1, "offset": "7"}, "offset"),
        ({"topic": TOPICS.plans, "partition": 1, "offset": True}, "offset"),
        ({"topic": TOPICS.plans, "partition": 1, "offset": -1}, "offset"),
        ({"topic": TOPICS.plans, "partition": 1, "offset": 2**63}, "offset"),
        ({"topic": TOPICS.plans, "partition": 3, "offset": 7}, "partition 3 of 3"),
        ({"topic": TOPICS.tasks, "partition": 1, "offset": 7}, "not writer's"),
    ],
)
def test_a_bad_source_is_named(source, problem: str) -> None:
    read = read_retry([(RETRY_HEADER, valid_note(source=source))], BOUNDS, NOW)
    assert read.note is None and read.owner == "writer"
    assert problem in read.problem, read.problem


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"due": NOW + 101}, "ahead, more than a retry ever waits (100 s)"),
        ({"due": 1e300}, "ahead"),
        ({"due": -1}, "due"),
        ({"due": "soon"}, "due"),
        ({"attempt": 1}, "attempt 1 not in 2..3"),
        ({"attempt": 10**9}, "attempt"),
        ({"role": "mailer"}, "unknown role 'mailer'"),
        ({"extra": 1}, "extra"),
    ],
)
def test_out_of_range_fields_are_named(change: dict, problem: str) -> None:
    read = read_retry([(RETRY_HEADER, valid_note(**change))], BOUNDS, NOW)
    assert read.note is None and problem in read.problem, read.problem


def test_a_due_time_at_the_bound_is_kept_and_the_bound_covers_every_genuine_pause() -> None:
    assert read_retry([(RETRY_HEADER, valid_note(due=NOW + 100))], BOUNDS, NOW).note is not None
    # The longest pause a worker sets is retry_pause_s × (LLM_ATTEMPTS - 1): inside the bound.
    assert max_retry_wait_s(5.0, LLM_ATTEMPTS) > 5.0 * (LLM_ATTEMPTS - 1)


def test_no_header_or_an_unreadable_role_falls_to_one_owner() -> None:
    assert read_retry([], BOUNDS, NOW).owner == FALLBACK_OWNER
    assert read_retry([("other", b"{}")], BOUNDS, NOW).problem.startswith("retry record without")
    assert read_retry([(RETRY_HEADER, b"\xff")], BOUNDS, NOW).owner == FALLBACK_OWNER
    assert read_retry([(RETRY_HEADER, b'{"role": "reviewer"}')], BOUNDS, NOW).owner == "reviewer"


class FailingLLM:
    name, model, temperature = "stand-in", "empty", 0.0

    def complete(self, messages, *, max_tokens=None, temperature=None) -> Completion:
        return Completion(" ", 1, 1, 0.0, "empty")  # an empty reply: retried, then dead-lettered


def workers(events: list[str] | None = None) -> list[AgentWorker]:
    on_event = events.append if events is not None else print
    return [
        AgentWorker(ROLES[r], FailingLLM(), PARAMS, "", threading.Event(), on_event)
        for r in ("planner", "writer", "reviewer")
    ]


VALUES = st.sampled_from(
    [c.to_bytes() for c in conversation("x")[:3]] + [b"not json", b""]
) | st.binary(max_size=50)


@settings(max_examples=300)
@given(header=HEADERS | st.none(), value=VALUES, due_in=st.floats(-1e6, 1e6))
def test_every_retry_record_is_one_roles_and_never_crashes_or_waits_unbounded(
    header, value: bytes, due_in: float
) -> None:
    """Whatever a record on the retry topic carries, exactly one role acts on it (answers,
    retries or dead-letters it), none raises, and no wait exceeds the bound."""
    if header is None:  # a well-formed note for a role, due anywhere in ±11 days
        role = ["planner", "writer", "reviewer"][len(value) % 3]
        source = {"topic": INPUTS[role], "partition": 0, "offset": 3}
        header = retry_header(role, 2, time.time() + due_in, source)[1]
    record = Record(TOPICS.retries, 0, 5, None, value, [(RETRY_HEADER, header)])
    outcomes = [w.decide(record) for w in workers()]  # decide: no safety net
    acting = [o for o in outcomes if o.kind != "not mine"]
    assert len(acting) == 1, outcomes
    assert acting[0].kind in {"dead-lettered", "retry"}
    bound = max_retry_wait_s(workers()[0].timings.retry_pause_s, LLM_ATTEMPTS)
    assert all(0 <= w.not_due_for(record) <= bound for w in workers())


def test_the_issues_header_is_dead_lettered_by_its_role_with_the_reason() -> None:
    """`source` an object without `offset` crash-looped `custseg agents` (KeyError: 'offset')."""
    plan = conversation("x")[1]
    header = json.dumps(
        {
            "role": "writer",
            "attempt": 2,
            "due": time.time(),
            "source": {"topic": TOPICS.plans, "partition": 1},
        }
    ).encode()
    record = Record(TOPICS.retries, 2, 9, b"k", plan.to_bytes(), [(RETRY_HEADER, header)])
    planner, writer, reviewer = workers()
    assert planner.decide(record).kind == reviewer.decide(record).kind == "not mine"
    outcome = writer.decide_safely(record)
    ((letter,),) = [outcome.sends]
    body = json.loads(letter.value)
    assert letter.topic == TOPICS.dlq
    assert body["reason"] == "custseg-retry header: source.offset: field required"
    assert body["source"] == {"topic": TOPICS.retries, "partition": 2, "offset": 9}


@settings(max_examples=150)
@given(cid=st.text(min_size=1, max_size=64), partition=st.integers(0, 2))
def test_no_event_line_holds_a_control_character(cid: str, partition: int) -> None:
    """Ids come from records: every event a worker prints is one printable line."""
    events: list[str] = []
    planner = workers(events)[0]
    task = task_envelope("Plan a launch", cid).to_bytes()
    for record in (
        Record(TOPICS.tasks, partition, 1, cid.encode(), task),  # moved, or retried
        Record(TOPICS.retries, 0, 2, None, task, [(RETRY_HEADER, valid_note(role=cid))]),
        Record(TOPICS.tasks, 0, 3, None, json.dumps({"event_id": cid}).encode()),
    ):
        planner.count(planner.decide_safely(record))
    assert events and all(line.isprintable() for line in events), events


@settings(max_examples=300)
@given(
    NOTES.map(lambda n: {"reason": "r", "agent": "a", "at": "t", "envelope": n.get("source"), **n})
    | JSON
)
def test_a_dead_letter_is_read_by_type_and_range_or_ignored(body) -> None:
    letter = read_dead_letter(json.dumps(body).encode())
    if letter is not None:
        source = letter["source"]
        assert isinstance(source["topic"], str) and source["topic"]
        assert 0 <= source["partition"] < 2**31 and 0 <= source["offset"] < 2**63
        assert all(isinstance(letter["envelope"][k], str) for k in ("correlation_id", "event_id"))


def test_the_agents_own_dead_letters_are_read() -> None:
    task = conversation("x")[0]
    raw = dead_letter(Record(TOPICS.tasks, 1, 4, None, task.to_bytes()), "why", "planner", task)
    letter = read_dead_letter(raw)
    assert letter["source"] == {"topic": TOPICS.tasks, "partition": 1, "offset": 4}
    assert letter["envelope"]["correlation_id"] == task.correlation_id


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class LetterConsumer:
    """What DeadLetters asks of the consumer: positions, end offsets, seek/pause/resume."""

    def __init__(self, positions: dict, ends: dict) -> None:
        self.positions, self.ends, self.paused = positions, ends, set()

    def assignment(self) -> set:
        return set(self.positions)

    def position(self, tp):
        return self.positions[tp]

    def end_offsets(self, tps):
        return {tp: self.ends[tp] for tp in tps}

    def seek(self, tp, offset) -> None: ...

    def pause(self, tp) -> None:
        self.paused.add(tp)

    def resume(self, *tps) -> None:
        self.paused -= set(tps)


def letter_record(offset: int, named: int):
    task = conversation("x")[0]
    raw = dead_letter(Record(TOPICS.tasks, 0, named, None, b"x"), "why", "planner", task)
    return Record(TOPICS.dlq, 0, offset, None, raw)


@pytest.mark.parametrize("named", [10, 11, MAX_OFFSET])
def test_a_dead_letter_naming_a_record_the_broker_lacks_is_dropped_at_once(named: int) -> None:
    source, dlq = TopicPartition(TOPICS.tasks, 0), TopicPartition(TOPICS.dlq, 0)
    consumer = LetterConsumer({source: 4, dlq: 0}, {source: 10})
    notes: list[str] = []
    letters = DeadLetters(consumer, Assembler(), 30.0, notes.append, Clock())
    assert letters.read(dlq, [letter_record(0, named)]) == []
    assert not consumer.paused and letters.dropped == 1
    assert notes == [
        f"capture: dead letter {TOPICS.dlq}[0]@0 dropped: its record {TOPICS.tasks}[0]@{named} "
        "is past the partition's end (10)"
    ]
    assert letters.assembler.safe_offsets() == {dlq: 1}


def test_a_dead_letter_waits_while_its_partition_moves_then_at_most_the_bound() -> None:
    source, dlq = TopicPartition(TOPICS.tasks, 0), TopicPartition(TOPICS.dlq, 0)
    consumer = LetterConsumer({source: 4, dlq: 0}, {source: 10})
    clock, notes = Clock(), []
    letters = DeadLetters(consumer, Assembler(), 30.0, notes.append, clock)
    letters.read(dlq, [letter_record(0, 8)])
    assert consumer.paused == {dlq}, "the record may still come: wait"
    for step in range(1, 4):  # a backlog: the source moves slowly towards the record
        clock.now = 29.0 * step
        consumer.positions[source] = 4 + step
        letters.resume_due()
        assert consumer.paused == {dlq} and not notes, "reading towards it: no give-up"
    clock.now += 30.0
    letters.resume_due()
    assert consumer.paused == {dlq}, "no progress, but within the bound"
    clock.now += 0.1
    letters.resume_due()
    assert not consumer.paused
    letters.read(dlq, [letter_record(0, 8)])  # read again after the resume: dropped
    assert letters.dropped == 1
    assert notes[0].endswith(f"its record {TOPICS.tasks}[0]@8 not reached, no progress for 30 s")
    # A letter whose record is read in time is taken, not dropped.
    letters.read(dlq, [letter_record(1, 8)])
    consumer.positions[source] = 9
    letters.resume_due()
    assert not consumer.paused and letters.dropped == 1


def test_replies_without_a_task_are_released_after_the_bound() -> None:
    clock = Clock()
    assembler = Assembler(clock=clock)
    orphan, whole = conversation("a"), conversation("b")
    tps = {t: TopicPartition(t, 0) for t in ("tasks", "plans", "drafts", "finals")}
    assembler.add(orphan[1], tps["plans"], 0)  # a plan whose task never comes
    assembler.add(whole[0], tps["tasks"], 0)
    clock.now = 10.0
    assembler.add(whole[1], tps["plans"], 1)
    assert assembler.release_orphans(10.0) == []
    assert assembler.safe_offsets()[tps["plans"]] == 0, "held by the orphan"
    clock.now = 10.5
    assert assembler.release_orphans(10.0) == [(orphan[0].correlation_id, ["plan"])]
    assert assembler.safe_offsets()[tps["plans"]] == 1, "now held only by the whole one"
    assert assembler.add(orphan[2], tps["drafts"], 0) is None  # later parts: skipped
    assert assembler.safe_offsets()[tps["drafts"]] == 1
    assert assembler.add(whole[2], tps["drafts"], 1) is None
    assert assembler.add(whole[3], tps["finals"], 0)["correlation_id"] == whole[0].correlation_id


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.floats(0, 5)), max_size=40))
def test_no_offset_is_held_longer_than_the_bound_by_replies_without_a_task(arrivals) -> None:
    """Any interleaving of parts of four conversations with time passing: after a release, no
    held offset belongs to a conversation whose first reply came over `wait_s` ago without its
    task, and a conversation with its task is never released."""
    clock, wait_s = Clock(), 3.0
    assembler = Assembler(clock=clock)
    chats = [conversation(str(i)) for i in range(4)]
    tps = {t: TopicPartition(t, 0) for t in ("task", "plan", "draft", "final")}
    offsets = dict.fromkeys(tps, 0)
    has_task: set[str] = set()
    for chat, part, step in arrivals:
        clock.now += step
        envelope = chats[chat][part]
        if envelope.type == "task":
            has_task.add(envelope.correlation_id)
        assembler.add(envelope, tps[envelope.type], offsets[envelope.type])
        offsets[envelope.type] += 1
        for released, _ in assembler.release_orphans(wait_s):
            assert released not in has_task
        for cid, parts in assembler.pending.items():
            if any(e.type == "task" for e, _, _ in parts):
                assert cid not in assembler.taskless
            else:
                assert clock.now - assembler.taskless[cid] <= wait_s
