"""Single records that must never stop an agent (#13): whatever a producer writes, decoding fails
only with InvalidMessage and a one-line reason, a dead letter always fits in a Kafka request, and
an empty LLM reply is retried and dead-lettered like a failed call. Unit tests of our own logic:
the broker-backed behaviour is in test_agents_kafka.py."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import namedtuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custseg.agents.envelope import (
    MAX_REASON_CHARS,
    InvalidMessage,
    parse_envelope,
    task_envelope,
)
from custseg.agents.roles import ROLES
from custseg.agents.runtime import LLM_ATTEMPTS, AgentWorker, dead_letter
from custseg.config import AgentsParams
from custseg.llm.base import Completion

Record = namedtuple("Record", "topic partition offset key value")
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


class Sent(list):
    def send(self, topic, key=None, value=None):
        self.append((topic, key, value))
        return self

    def get(self, timeout=None):
        return None


def test_an_empty_llm_reply_is_retried_then_dead_lettered() -> None:
    sent, events = Sent(), []
    worker = AgentWorker(
        ROLES["planner"], EmptyLLM(), AgentsParams(), "", sent, threading.Event(), events.append
    )
    record = Record("tasks", 0, 3, b"c" * 32, task_envelope("Plan a launch", "c" * 32).to_bytes())
    answers = [worker.handle(record) for _ in range(LLM_ATTEMPTS)]
    assert answers == [False] * (LLM_ATTEMPTS - 1) + [True]  # retried, then given up
    assert [topic for topic, _, _ in sent] == [AgentsParams().topics.dlq]
    reason = json.loads(sent[0][2])["reason"]
    assert f"failed {LLM_ATTEMPTS} times" in reason and "plan" in reason


class BrokenLLM(EmptyLLM):
    def complete(self, messages, *, max_tokens=None, temperature=None) -> Completion:
        raise ZeroDivisionError("a failure nobody foresaw")


def test_an_unforeseen_failure_dead_letters_the_record_instead_of_crashing() -> None:
    sent = Sent()
    worker = AgentWorker(
        ROLES["planner"], BrokenLLM(), AgentsParams(), "", sent, threading.Event(), print
    )
    record = Record("tasks", 1, 9, None, task_envelope("Plan a launch").to_bytes())
    assert worker.handle_safely(record) is True  # done with: its offset can be committed
    ((topic, key, value),) = sent
    assert topic == AgentsParams().topics.dlq and key is None
    assert json.loads(value)["reason"] == "unexpected ZeroDivisionError: a failure nobody foresaw"
