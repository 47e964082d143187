"""A worker's batches against a model of the Kafka client's positions (#21): whatever poll a
rebalance lands on, every input is answered and committed exactly once, none skipped. Unit tests
of our own logic (`runtime.batch`); the broker-backed chaos test is in test_agents_reliability.py.

Found by that chaos test: a rebalance during the poll a batch makes while a long call holds it
(`BatchRun.poll_more`) gave the batch up, but the records that very poll returned were dropped
with it, the consumer's position already past them; the next batch committed later offsets and
four drafts were never reviewed."""

from __future__ import annotations

import itertools
import threading
import time
from collections import namedtuple
from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st
from kafka.errors import CommitFailedError
from kafka.structs import TopicPartition

from custseg.agents.envelope import task_envelope
from custseg.agents.roles import ROLES
from custseg.agents.runtime import AgentWorker, Timings
from custseg.agents.runtime import worker as worker_module
from custseg.agents.topics import home_partition
from custseg.config import AgentsParams
from custseg.llm.base import Completion
from tests.test_agents_poison import Record

PARAMS = AgentsParams()
MadeRecord = namedtuple("MadeRecord", [*Record._fields, "made"])  # `made`: the order written


@dataclass(frozen=True)
class Membership:
    generation_id: int


class ModelConsumer:
    """kafka-python's consumer as a worker uses it, with positions: a poll returns up to
    `per_poll` records of each partition from its position and moves the position past them.
    The `rebalance_on`th poll first starts a new generation, in which the worker keeps its
    partitions, in one of two ways (`regained`):
    - kept all along: kafka-python keeps a partition's position when it is assigned again;
    - lost, then regained: another member answered and committed what the worker had read
      but not committed; the position is then the group's committed offset.
    The log's records arrive one every `arrival_s`, in the order they were made, so records
    keep coming while a batch runs."""

    def __init__(
        self,
        log: dict[TopicPartition, list],
        rebalance_on: int,
        per_poll: int,
        arrival_s: float,
        regained: bool = False,
    ) -> None:
        self.log, self.rebalance_on, self.per_poll = log, rebalance_on, per_poll
        self.regained = regained
        self.arrives = {id(r): i * arrival_s for i, r in enumerate(_in_order(log))}
        self.started = time.monotonic()
        self.position = dict.fromkeys(log, 0)
        self.committed_offsets = dict.fromkeys(log, 0)
        self.by_other: list[bytes] = []  # the keys the other member answered
        self.generation, self.polls = 1, 0
        self.lock = threading.Lock()

    def poll(self, timeout_ms: int) -> dict:
        with self.lock:
            self.polls += 1
            if self.polls == self.rebalance_on:
                self.generation += 1
                if self.regained:
                    for tp, records in self.log.items():
                        taken = records[self.committed_offsets[tp] : self.position[tp]]
                        self.by_other += [r.key for r in taken]
                    self.committed_offsets = dict(self.position)
            batch = {}
            now = time.monotonic() - self.started
            for tp, records in self.log.items():
                got = records[self.position[tp] : self.position[tp] + self.per_poll]
                got = list(itertools.takewhile(lambda r: self.arrives[id(r)] <= now, got))
                if got:
                    batch[tp] = got
                    self.position[tp] += len(got)
        if not batch:
            time.sleep(timeout_ms / 1000)
        return batch

    def group_metadata(self) -> Membership:
        return Membership(self.generation)

    def committed(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        return self.committed_offsets[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position[tp] = offset

    def assignment(self) -> set:
        return set(self.log)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(PARAMS.partitions))

    def pause(self, *args) -> None: ...
    def resume(self, *args) -> None: ...
    def close(self, autocommit: bool, timeout_ms: int | None = None) -> None: ...


class ModelProducer:
    """A transactional producer: the sends and offsets of a transaction show at its commit, and
    only if its membership is the group's current one (else CommitFailedError, as the broker's
    fencing of a stale generation)."""

    def __init__(self, consumer: ModelConsumer) -> None:
        self.consumer = consumer
        self.answered: list[bytes] = []  # the keys of committed replies
        self.pending: list[bytes] = []
        self.offsets: dict = {}
        self.membership: Membership | None = None

    def begin_transaction(self) -> None:
        self.pending, self.offsets = [], {}

    def send(self, topic: str, key: bytes, **record) -> None:
        self.pending.append(key)

    def send_offsets_to_transaction(self, offsets: dict, membership: Membership) -> None:
        self.offsets, self.membership = offsets, membership

    def commit_transaction(self) -> None:
        if self.membership != self.consumer.group_metadata():
            raise CommitFailedError("the group has rebalanced since the batch was read")
        self.answered += self.pending
        for tp, offset in self.offsets.items():
            self.consumer.committed_offsets[tp] = offset.offset

    def init_transactions(self) -> None: ...
    def flush(self, timeout: float) -> None: ...
    def abort_transaction(self) -> None: ...
    def close(self, timeout: float) -> None: ...


class FirstCallSlowLLM:
    """The first call takes `slow_s` (it holds its batch, which then reads on); the rest none."""

    name, model, temperature = "stand-in", "first-slow", 0.0
    calls_in_flight = 4  # an HTTP server's: the other calls run beside the slow one

    def __init__(self, slow_s: float) -> None:
        self.slow_s, self.calls = slow_s, 0

    def complete(self, messages, *, max_tokens=None, temperature=None) -> Completion:
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.slow_s)
        return Completion("1. Pick the segment. 2. Write the flyer.", 1, 1, 0.0, "first-slow")


def _in_order(log: dict[TopicPartition, list]) -> list:
    return sorted((r for records in log.values() for r in records), key=lambda r: r.made)


def tasks_log(n: int) -> dict[TopicPartition, list]:
    """`n` tasks, each on its home partition, offsets in order per partition."""
    log: dict[TopicPartition, list] = {}
    for i in range(n):
        task = task_envelope(f"Task {i}: which segment gets the flyer?")
        cid = task.correlation_id
        tp = TopicPartition(PARAMS.topics.tasks, home_partition(cid, PARAMS.partitions))
        records = log.setdefault(tp, [])
        record = Record(tp.topic, tp.partition, len(records), cid.encode(), task.to_bytes())
        records.append(MadeRecord(*record, made=i))
    return log


@settings(max_examples=12, deadline=None)
@example(rebalance_on=6, per_poll=1, n=12, regained=False)  # seen in the chaos test
@example(rebalance_on=6, per_poll=1, n=12, regained=True)
@given(
    rebalance_on=st.integers(2, 10),
    per_poll=st.integers(1, 2),
    n=st.integers(6, 12),
    regained=st.booleans(),
)
def test_a_rebalance_on_any_poll_answers_each_input_once(
    rebalance_on: int, per_poll: int, n: int, regained: bool
) -> None:
    log = tasks_log(n)
    consumer = ModelConsumer(log, rebalance_on, per_poll, 0.1, regained)
    producer = ModelProducer(consumer)
    timings = Timings(stuck_s=30.0, shutdown_s=2.0)
    worker = AgentWorker(
        ROLES["planner"],
        FirstCallSlowLLM(1.0),
        PARAMS,
        "",
        threading.Event(),
        lambda line: None,
        timings=timings,
    )
    worker.consumer = lambda: consumer
    original = worker_module.make_producer
    worker_module.make_producer = lambda *args: producer
    try:
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        ends = {tp: len(records) for tp, records in log.items()}
        while consumer.committed_offsets != ends and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.stop.set()
        thread.join(10)
    finally:
        worker_module.make_producer = original
    assert worker.error is None, worker.error
    assert consumer.committed_offsets == ends, "every offset committed within 20 s"
    asked = sorted(r.key for records in log.values() for r in records)
    answered = sorted(producer.answered + consumer.by_other)
    assert answered == asked, "each input answered exactly once, by the worker or the other"
