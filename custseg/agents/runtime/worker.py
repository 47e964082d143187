"""One role's worker: consume its input topic (and its copies on the retry topic), answer each
record with the LLM, and write the replies with the inputs' offsets in one Kafka transaction.

An input whose LLM call fails is not retried in place, where it would hold up every record
behind it: a copy goes to the retry topic (in the same transaction as the input's offset), with
its attempt and when it is due in a header; each worker reads that topic too and answers its own
copies once due, pausing only the retry partition meanwhile. After LLM_ATTEMPTS, or once the
LLM time spent on it over its attempts reaches `Timings.task_budget_s`, it is dead-lettered,
naming the original record, which closes its conversation in the capture. A call is waited for
at most what is left of that budget, and not at all once the worker is told to stop: its input
is then left uncommitted, for the next owner of the partition to answer (`calls`).

Up to CALLS_IN_FLIGHT inputs are answered at once, in a pool: an input's offset is committed
once every earlier input of its partition is done (`inflight`), and one whose call holds up
done inputs behind it for over HAND_OVER_S is handed to the retry topic, its call going on.
What each record comes to is decided in `decisions`.

Every record is answered on its conversation's home partition (`topics.home_partition`): one
found elsewhere (a null or foreign key, another client's partitioner) is moved there first, in
the same kind of transaction, so the capture finds a conversation's four records together.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from custseg.agents.grounding import Champion
from custseg.agents.roles import Role
from custseg.agents.runtime.calls import spent_so_far
from custseg.agents.runtime.decisions import Decisions
from custseg.agents.runtime.inflight import Entry, InFlight
from custseg.agents.runtime.outcome import COUNTERS, Outcome, WorkerStats
from custseg.agents.runtime.settings import (
    CALLS_IN_FLIGHT,
    DEFAULT_TIMINGS,
    HAND_OVER_S,
    Timings,
    consumer_settings,
    make_producer,
)
from custseg.agents.topics import topic_of
from custseg.config import AgentsParams
from custseg.errors import CallAbandoned, ConfigError
from custseg.llm import Provider

# Chaos testing: with this set to N, the process kills itself (SIGKILL) at its Nth transaction,
# after the replies were acknowledged by the broker and before the commit: the worst moment.
CHAOS_KILL_ENV = "CUSTSEG_CHAOS_KILL_BEFORE_COMMIT"
_transactions = itertools.count(1)


def _chaos_point() -> None:
    if (n := os.environ.get(CHAOS_KILL_ENV)) and next(_transactions) == int(n):
        os.kill(os.getpid(), signal.SIGKILL)


class AgentWorker(Decisions):
    """One role's consume → answer → (replies + input offsets in one transaction) loop."""

    def __init__(
        self,
        role: Role,
        llm: Provider,
        params: AgentsParams,
        bootstrap: str,
        stop: threading.Event,
        on_event: Callable[[str], None] = print,
        champion: Champion | None = None,
        timings: Timings = DEFAULT_TIMINGS,
    ) -> None:
        self.role, self.llm, self.params, self.bootstrap = role, llm, params, bootstrap
        self.stop, self.on_event, self.champion = stop, on_event, champion
        self.timings = timings
        self.max_tokens = getattr(params.max_tokens, role.name)
        self.in_topic = topic_of(params.topics, role.consumes)
        self.out_topic = topic_of(params.topics, role.produces)
        self.retry_topic = params.topics.retries
        self.partitions = params.partitions  # of every agent topic; checked in run()
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.stats = WorkerStats()
        self.error: BaseException | None = None  # why run() ended early, if it did
        # Monotonic time the worker last began a poll or came back from the LLM; None while it
        # waits for the LLM (a local model may take minutes, which is not being stuck).
        self.in_kafka_since: float | None = None
        self.clients: tuple[KafkaConsumer, object | None] | None = None  # for `abandon`
        self.handed: dict[str, Entry] = {}  # event id → a call whose input went to the retry topic

    def consumer(self) -> KafkaConsumer:
        return KafkaConsumer(
            self.in_topic,
            self.retry_topic,
            bootstrap_servers=self.bootstrap,
            group_id=f"{self.params.group_prefix}.{self.role.name}",
            client_id=f"custseg-{self.role.name}",
            **consumer_settings(self.timings),
        )

    def abandon(self) -> None:
        """Let go of a worker stuck in the Kafka client, from another thread: close its clients
        (in a daemon thread, as closing may block too), so its group membership ends with its
        session instead of stalling the group's rebalances while its replacement joins."""

        def close() -> None:
            consumer, producer = self.clients or (None, None)
            for client, how in (
                (consumer, {"autocommit": False, "timeout_ms": 1000}),
                (producer, {"timeout": 0}),
            ):
                try:
                    if client is not None:
                        client.close(**how)
                except Exception:  # best effort, on a client already broken
                    pass

        threading.Thread(target=close, name=f"{self.role.name}-abandon", daemon=True).start()

    def run(self) -> None:
        """Consume until `stop` is set; on a fatal error, keep it in `self.error` and return."""
        try:
            self._run()
        except Exception as error:  # reported by run_agents, in one line
            self.error = error
            self.stop.set()

    def _run(self) -> None:
        self.in_kafka_since = time.monotonic()
        consumer = self.consumer()
        producer = None
        try:
            self.partitions = co_partitioned(
                consumer, [self.in_topic, self.out_topic, self.params.topics.dlq, self.retry_topic]
            )
            producer = make_producer(
                self.bootstrap,
                f"{self.params.group_prefix}.{self.role.name}.{uuid.uuid4().hex[:12]}",
                self.timings,
            )
            self.clients = (consumer, producer)
            producer.init_transactions()
            paused: dict[TopicPartition, float] = {}  # → when to read it again
            inflight = InFlight()
            pool = ThreadPoolExecutor(CALLS_IN_FLIGHT, thread_name_prefix=f"{self.role.name}-llm")
            try:
                while not self.stop.is_set():
                    self.in_kafka_since = time.monotonic()
                    self._resume_due(consumer, paused)
                    self.take(consumer, pool, inflight, paused)
                    self.hand_over_holdups(inflight)
                    self.commit_ready(consumer, producer, inflight)
            finally:
                inflight.drop_all()  # stopping: calls in flight abandoned, their inputs redone
                for entry in self.handed.values():
                    entry.abandon.set()
                self.handed.clear()
                pool.shutdown(wait=False, cancel_futures=True)
        finally:
            self.in_kafka_since = time.monotonic()  # closing talks to the broker too
            # Bounded: a worker that is stopping must not outlast `shutdown_s` on a gone broker.
            close_s = min(5.0, self.timings.shutdown_s / 2)
            consumer.close(autocommit=False, timeout_ms=round(close_s * 1000))
            if producer is not None:
                producer.close(timeout=close_s)

    @staticmethod
    def _resume_due(consumer: KafkaConsumer, paused: dict[TopicPartition, float]) -> None:
        due = [tp for tp, at in paused.items() if at <= time.monotonic()]
        for tp in due:
            del paused[tp]
        if mine := [tp for tp in due if tp in consumer.assignment()]:  # not lost to a rebalance
            consumer.resume(*mine)

    def take(self, consumer, pool: ThreadPoolExecutor, inflight: InFlight, paused: dict) -> None:
        """Poll for as many records as there is room in flight and start each: decided at once
        (moved, duplicate, dead letter, …) or its LLM call started in the pool. A retry copy not
        due yet is sought back to and pauses its partition until then. With calls in flight,
        the poll is short and the wait is for the first of them to end."""
        room = CALLS_IN_FLIGHT - len(inflight)
        batch = consumer.poll(timeout_ms=20 if len(inflight) else 300, max_records=max(1, room))
        for tp, records in batch.items():
            for record in records:
                wait_s = self._not_due_for(record)
                if wait_s > 0:
                    consumer.seek(tp, record.offset)
                    consumer.pause(tp)
                    paused[tp] = time.monotonic() + wait_s
                    break
                inflight.add(tp, self.start(record, pool))
        if busy := [e.future for e in inflight.entries() if not e.future.done()]:
            wait(busy, timeout=0.05, return_when=FIRST_COMPLETED)

    def start(self, record, pool: ThreadPoolExecutor) -> Entry:
        """The record's entry: its outcome now, or its LLM call started in the pool."""
        step = self.route_safely(record)
        if isinstance(step, Outcome):
            done: Future = Future()
            done.set_result(step)
            return Entry(record, done)
        if handed := self.handed.pop(step.incoming.event_id, None):  # its call is under way
            return Entry(record, handed.call, step, handed.started, handed.abandon)
        self._remember(step.incoming.event_id)  # a second copy read meanwhile is a duplicate
        entry = Entry(record, Future(), step)
        entry.future = entry.call = pool.submit(self.answer_safely, step, entry.abandon)
        return entry

    def hand_over_holdups(self, inflight: InFlight) -> None:
        """An input whose call has taken over HAND_OVER_S while later inputs of its partition
        wait, done, behind it is handed to the retry topic (a copy due now: same attempt, its
        time spent so far), so they are committed. Its call goes on: the copy, when read back,
        takes its answer (`start`) instead of calling again. Copies on the retry topic are not
        handed on: they hold up only later retries."""
        for _tp, entry in inflight.holding_up(HAND_OVER_S):
            if entry.record.topic == self.retry_topic:
                continue
            spent_s = spent_so_far(entry.job.note) + time.monotonic() - entry.started
            self.handed[entry.job.incoming.event_id] = entry
            handed: Future = Future()
            handed.set_result(self.hand_over(entry.job, spent_s))
            entry.future = handed
        for event_id, entry in list(self.handed.items()):  # never read back here: let go
            if time.monotonic() - entry.started > 2 * self.timings.task_budget_s:
                entry.abandon.set()
                del self.handed[event_id]

    def commit_ready(self, consumer, producer, inflight: InFlight) -> None:
        """Commit, in one transaction, the outcomes no input in flight precedes."""
        ready = inflight.ready()
        if not ready:
            return
        outcomes: list[Outcome] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        firsts: dict[TopicPartition, int] = {}
        for tp, entry in ready:
            try:
                outcome = entry.future.result()
            except CallAbandoned:  # walked away from (a stop): left to be read again
                inflight.drop_all()
                consumer.seek(tp, entry.record.offset)
                break
            if entry.job is not None and outcome.kind != "answered":
                self.seen.pop(entry.job.incoming.event_id, None)
            outcomes.append(outcome)
            firsts.setdefault(tp, entry.record.offset)
            offsets[tp] = OffsetAndMetadata(entry.record.offset + 1, "", -1)
        if offsets:
            self.commit(consumer, producer, outcomes, offsets, firsts, inflight)

    def commit(self, consumer, producer, outcomes, offsets, firsts, inflight: InFlight) -> None:
        """Write the outcomes' records and the inputs' offsets in one transaction. If it fails
        (a rebalance took a partition, the broker restarted), it is aborted: nothing of it is
        visible, the inputs in flight are walked away from, and all are read again from
        `firsts` where still ours."""
        try:
            producer.begin_transaction()
            for send in (s for o in outcomes for s in o.sends):
                producer.send(
                    send.topic,
                    key=send.key,
                    value=send.value,
                    partition=send.partition,
                    headers=list(send.headers) or None,
                )
            producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
            # Every reply acknowledged, none visible yet.
            producer.flush(timeout=self.timings.stuck_s)
            _chaos_point()
            producer.commit_transaction()
        except KafkaError as error:
            for outcome in outcomes:  # not answered after all: answer them when read again
                if outcome.event_id:
                    self.seen.pop(outcome.event_id, None)
            try:
                producer.abort_transaction()
            except KafkaError:
                raise error from None  # the producer is unusable: the worker cannot go on
            for entry in inflight.entries():
                if entry.job is not None:
                    self.seen.pop(entry.job.incoming.event_id, None)
            firsts = {**inflight.drop_all(), **firsts}  # the committed ones came first
            mine = consumer.assignment()
            for tp, offset in firsts.items():
                if tp in mine:
                    consumer.seek(tp, offset)
            self.on_event(f"{self.role.name}: transaction aborted, inputs read again: {error}")
            return
        for outcome in outcomes:
            self._count(outcome)

    def _count(self, outcome: Outcome) -> None:
        if counter := COUNTERS.get(outcome.kind):
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        if outcome.kind == "answered":
            self.stats.llm_s.append(outcome.llm_s)
        if outcome.event:
            self.on_event(outcome.event)


def co_partitioned(consumer: KafkaConsumer, topics: list[str]) -> int:
    """The partition count the topics share; a ConfigError naming them if they differ."""
    counts = {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
    if len(set(counts.values())) != 1 or not all(counts.values()):
        raise ConfigError(
            "agent topics must exist with equal partition counts; found "
            + ", ".join(f"{t}: {n}" for t, n in counts.items())
        )
    return next(iter(counts.values()))
