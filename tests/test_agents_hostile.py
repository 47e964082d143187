"""Generated hostile records and headers on every agent topic against a real broker (#31), with
the agents (stand-in LLM) and a capture running: nothing stops or stalls them. Each bad record
on a topic an agent reads is one dead letter; what only the capture reads is counted and skipped
(finals), dropped with a note (dead letters naming no record it reads) or released after the
bound (replies whose task never comes); a good conversation sent afterwards is captured, a
failing one closed as failed, and the capture's committed offsets reach the end of every
partition. The pure rules are in test_agents_schemas.py."""

from __future__ import annotations

import collections
import hashlib
import json
import subprocess
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from custseg.agents.envelope import parse_envelope, task_envelope
from custseg.agents.runtime import LLM_ATTEMPTS
from custseg.agents.schemas import RETRY_HEADER, RetryBounds, max_retry_wait_s, read_retry
from custseg.agents.topics import home_partition
from custseg.errors import InvalidMessage
from custseg.testing.conversations import conversation
from custseg.testing.stand_in_llm import FAIL_CUE
from tests.fixtures.agents import FAST_TIMINGS, Workdir, stop, wait_for

# The reliability tests' Workdir (short Kafka waits); `agents` is tests/fixtures/agents.py's.
from tests.test_agents_reliability import workdir  # noqa: F401

PARTITIONS = 3
ROLE_INPUT = {"planner": "tasks", "writer": "plans", "reviewer": "drafts"}
# What each input topic's reader takes.
ANSWERS = {"tasks": "task", "plans": "plan", "drafts": "draft"}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def records(topics: dict[str, str]) -> st.SearchStrategy:
    """(topic name, partition, key, value, headers) of anything a careless or hostile producer
    writes on one of the agent topics."""
    now = time.time()
    envelopes = st.builds(
        lambda i, part: conversation(f"orphan {i}")[part].to_bytes(),
        st.integers(),
        st.integers(0, 3),
    )
    text = st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
    values = st.none() | st.binary(max_size=200) | text | JSON.map(lambda j: json.dumps(j).encode())
    source = st.fixed_dictionaries(
        {},
        optional={
            "topic": st.sampled_from(sorted(topics.values())) | JSON,
            "partition": st.integers(-1, PARTITIONS) | JSON,
            "offset": st.sampled_from([0, 2, 10**9, 2**63, -1]) | JSON,
        },
    )
    note = st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(["planner", "writer", "reviewer", "mailer"]) | JSON,
            "attempt": st.integers(0, LLM_ATTEMPTS + 1) | JSON,
            # Now, soon, far ahead (a forged pause), before the epoch, not a time.
            "due": st.sampled_from([now - 5, now + 1, now + 10**6, 1e300, -1.0]) | JSON,
            "source": source,
        },
    )
    retry_headers = (
        note.map(lambda n: json.dumps(n).encode()) | st.binary(max_size=64) | st.just(None)
    )
    headers = st.lists(
        st.tuples(st.sampled_from([RETRY_HEADER, "x", "\x00\n"]), st.binary(max_size=20)),
        max_size=2,
    )
    letter = st.builds(
        lambda src, about: json.dumps(
            {
                "reason": "forged\x1b",
                "agent": "forger",
                "at": "now",
                "source": src,
                "envelope": about,
            }
        ).encode(),
        source,
        st.none()
        | st.fixed_dictionaries(
            {
                "correlation_id": st.text(min_size=1, max_size=8),
                "event_id": st.just("e"),
                "type": st.just("task"),
            }
        ),
    )
    return st.one_of(
        st.tuples(
            st.sampled_from(["tasks", "plans", "drafts", "finals"]), values | envelopes, headers
        ),
        st.tuples(
            st.just("retries"),
            values | envelopes,
            st.tuples(st.tuples(st.just(RETRY_HEADER), retry_headers)).map(
                lambda h: [(k, v) for k, v in h if v is not None]
            ),
        ),
        st.tuples(st.just("dlq"), values | letter, headers),
    ).flatmap(
        lambda r: st.tuples(
            st.just(r[0]),
            st.none() | st.integers(0, PARTITIONS - 1),
            st.none() | st.binary(max_size=16),
            st.just(r[1]),
            st.just(r[2]),
        )
    )


def the_issues_records(topics: dict[str, str], home: int) -> list[tuple]:
    """(topic name, partition, value, headers): retry headers whose `source` lacks `offset` or
    is a string (crash-looped `custseg agents`), a retry due in a year (paused its partition for
    good), a dead letter naming an offset never written (paused the capture's), and a plan
    with no task (pinned the capture's committed offset)."""
    task, plan = conversation("stalled")[:2]
    place = {"topic": topics["tasks"], "partition": home, "offset": 0}

    def retry(role: str, due: float, source) -> list:
        note = {"role": role, "attempt": 2, "due": due, "source": source}
        return [(RETRY_HEADER, json.dumps(note).encode())]

    letter = {
        "reason": "forged", "agent": "forger", "at": "now",
        "source": {**place, "offset": 10**12},
        "envelope": {"correlation_id": task.correlation_id, "event_id": task.event_id,
                     "type": "task"},
    }  # fmt: skip
    plans_place = {**place, "topic": topics["plans"]}
    return [
        (
            "retries",
            home,
            plan.to_bytes(),
            retry("writer", time.time(), {"topic": topics["plans"], "partition": home}),
        ),
        ("retries", home, plan.to_bytes(), retry("writer", time.time(), "plans@0:1")),
        ("retries", home, task.to_bytes(), retry("planner", time.time() + 3e7, place)),
        ("retries", home, plan.to_bytes(), retry("writer", time.time() + 3e7, plans_place)),
        ("dlq", home, json.dumps(letter).encode(), []),
        ("plans", home, plan.to_bytes(), []),
    ]


def is_task(value: bytes | None) -> bool:
    try:
        return parse_envelope(value).type == "task"
    except InvalidMessage:
        return False


def expected_letter(name: str, value: bytes | None, headers, bounds: RetryBounds) -> bool | None:
    """Whether the agents dead-letter this record (True), answer it (False) or never see it
    (None: the capture's alone)."""
    if name in ANSWERS:
        try:
            return parse_envelope(value).type != ANSWERS[name]
        except InvalidMessage:
            return True
    if name != "retries":
        return None
    read = read_retry(headers, bounds, time.time())
    if read.note is None:
        return True  # refused by its owner
    try:  # a valid header: the owner dead-letters a value it cannot answer
        return parse_envelope(value).type != ANSWERS[ROLE_INPUT[read.owner]]
    except InvalidMessage:
        return True


@pytest.mark.timeout(300)
def test_generated_records_on_every_topic_stop_and_stall_nothing(
    workdir: Workdir,  # noqa: F811 (the imported fixture)
    agents: subprocess.Popen,
) -> None:
    workdir.create_topics()
    topics = workdir.topics
    bounds = RetryBounds(
        {role: topics[name] for role, name in ROLE_INPUT.items()},
        PARTITIONS,
        LLM_ATTEMPTS,
        max_retry_wait_s(float(FAST_TIMINGS["retry_pause_s"]), LLM_ATTEMPTS),
    )
    # The good conversations sent after the hostile records: one with control characters in
    # its id (logs must escape it), one plain, one whose LLM calls fail (its dead letter must
    # close it: the dead-letter partitions are not stalled).
    good = [
        task_envelope("Name one metric for the flyer.", "id\x1b[31m\x07" + "a" * 20),
        task_envelope("Name one segment for the offer."),
        task_envelope(f"Plan {FAIL_CUE} the impossible."),
    ]
    ids = [t.correlation_id for t in good]
    capture = workdir.start(
        "capture",
        "--expect",
        str(workdir.expect_file(ids)),
        "--timeout",
        "150",
        "--orphan-wait",
        "2",
        "--letter-wait",
        "5",
        log="capture.log",
    )
    producer = KafkaProducer(bootstrap_servers=workdir.bootstrap, acks="all")
    sent: list[tuple[str, bytes | None, list]] = []
    # First the issue's own records, each on the partition where it would stall the failing
    # conversation's: then the generated ones.
    for name, partition, value, headers in the_issues_records(
        topics, home_partition(ids[2], PARTITIONS)
    ):
        producer.send(topics[name], value=value, partition=partition, headers=headers)
        sent.append((name, value, headers))

    @settings(
        max_examples=50,
        database=None,
        phases=[Phase.generate],  # the broker keeps what was sent: nothing to shrink or replay
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(records(topics), min_size=1, max_size=4))
    def produce(batch) -> None:
        for name, partition, key, value, headers in batch:
            if name in ("tasks", "retries") and is_task(value):
                continue  # a valid task is answered: a conversation, not a hostile record
            if value is None and key is None:
                key = b"tombstone"  # kafka-python refuses a record with neither
            producer.send(topics[name], value=value, key=key, partition=partition, headers=headers)
            sent.append((name, value, headers))

    produce()
    producer.flush()
    for task in good:
        producer.send(topics["tasks"], key=task.correlation_id.encode(), value=task.to_bytes())
    producer.flush()
    producer.close()

    captured = capture.wait(timeout=200)
    log = (workdir.path / "capture.log").read_text()
    assert captured != 0 and "1 expected conversation(s) failed" in log, log[-3000:]
    assert sorted(c["correlation_id"] for c in workdir.lines()) == sorted(ids[:2])
    (failure,) = workdir.lines(workdir.failed)
    assert failure["correlation_id"] == ids[2] and failure["agent"] == "planner"

    # Each record an agent reads and cannot answer is one dead letter (matched by its bytes).
    expected = collections.Counter(
        hashlib.sha256(value or b"").hexdigest()
        for name, value, headers in sent
        if expected_letter(name, value, headers, bounds)
    )
    expected[hashlib.sha256(good[2].to_bytes()).hexdigest()] += 1  # the failing task

    def letters() -> collections.Counter:
        bodies = [read_json(r.value) for r in workdir.read_topic("dlq")]
        return collections.Counter(
            b["value_sha256"]
            for b in bodies
            if isinstance(b, dict) and b.get("agent") in ROLE_INPUT
        )

    wait_for(lambda: letters().total() >= expected.total(), 90, "the dead letters")
    assert letters() == expected
    assert agents.poll() is None, "no agent stopped"

    # A second capture, once the agents are done: replies without a task are released after
    # the bound, forged dead letters dropped, so the committed offsets reach every end.
    wait_for(lambda: idle_for(workdir, 3), 90, "the agents to finish")
    again = workdir.run("capture", "--idle", "4", "--orphan-wait", "1", "--letter-wait", "2")
    assert again.returncode == 0, again.stderr
    assert "0 incomplete held" in again.stderr, again.stderr[-3000:]
    behind = lag(workdir)
    assert not behind, behind
    assert agents.poll() is None
    # No log line holds a control character (ids, reasons and header values are escaped).
    for name in ("agents.log", "capture.log"):
        for line in (workdir.path / name).read_text().split("\n"):
            assert line.replace("\r", "").isprintable(), (name, line)
    agents_log = (workdir.path / "agents.log").read_text()
    for reason in ("source.offset: field required", "source: Expected `object`, got `str`",
                   "ahead, more than a retry ever waits"):  # fmt: skip
        assert reason in agents_log, reason
    capture_log = (workdir.path / "capture.log").read_text() + again.stderr
    assert "is past the partition's end" in capture_log
    assert "released" in capture_log and "no task within" in capture_log
    assert stop(agents) == 0


def read_json(raw: bytes | None):
    """A record's JSON value, or None (the forged records on the dead-letter topic)."""
    try:
        return json.loads(raw or b"")
    except ValueError:
        return None


def ends(work: Workdir, names: list[str]) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=work.bootstrap, isolation_level="read_committed")
    try:
        return consumer.end_offsets(
            [TopicPartition(work.topics[n], p) for n in names for p in range(PARTITIONS)]
        )
    finally:
        consumer.close()


def idle_for(work: Workdir, seconds: float) -> bool:
    """Whether no agent topic grew for `seconds`."""
    names = ["plans", "drafts", "finals", "dlq", "retries"]
    before = ends(work, names)
    time.sleep(seconds)
    return ends(work, names) == before


def lag(work: Workdir) -> dict[str, int]:
    """Per chain and dead-letter partition, the records after the capture's committed offset
    (only partitions with some): transaction markers hold an offset but no record."""
    from kafka import KafkaAdminClient

    group = f"test-{work.topics['tasks'].split('.')[0]}.capture"  # Workdir's group prefix
    end = ends(work, ["tasks", "plans", "drafts", "finals", "dlq"])
    admin = KafkaAdminClient(bootstrap_servers=work.bootstrap)
    try:
        committed = admin.list_group_offsets([group])[group]
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=work.bootstrap, isolation_level="read_committed")
    left: dict[str, int] = {}
    try:
        consumer.assign(list(end))
        for tp in end:
            consumer.seek(tp, committed[tp].offset if tp in committed else 0)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < e for tp, e in end.items()):
            assert time.monotonic() < deadline, "the partitions' ends not reached"
            for tp, batch in consumer.poll(timeout_ms=200).items():
                name = f"{tp.topic}[{tp.partition}]"
                left[name] = left.get(name, 0) + len(batch)
    finally:
        consumer.close()
    return left
