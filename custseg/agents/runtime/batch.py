"""One polled batch of a worker, exactly once: decide each record in order, run the batch's LLM
calls side by side (`calls.run_calls`), and commit each partition's decided records, in order,
with their offsets, in Kafka transactions.

A partition's records are committed up to its first undecided one, so an offset never passes
an input whose outcome is not in the same or an earlier transaction. Once the batch has run
BATCH_BUDGET_S, what is ready is committed as it comes, so a call that hangs holds up only the
records behind it on its own partition, and only until its hand-off bound: its input then goes
to the retry topic in the next transaction. While only such a call holds the batch, the worker
reads on (`poll_more`), so what arrives meanwhile is answered too. Nothing outlives the
batch: records left (a stop, an aborted transaction, a retry not due yet, which pauses its
partition) are sought back to, for a later poll, and an abandoned call's answer is dropped
with its thread.
"""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import time
from typing import TYPE_CHECKING

from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from custseg.agents.envelope import one_line
from custseg.agents.runtime.calls import Call, CallResult, run_calls
from custseg.agents.runtime.outcome import Outcome
from custseg.agents.runtime.settings import BATCH_BUDGET_S

if TYPE_CHECKING:
    from custseg.agents.runtime.worker import AgentWorker, Ask

# Chaos testing: with this set to N, the process kills itself (SIGKILL) at its Nth transaction,
# after the replies were acknowledged by the broker and before the commit: the worst moment.
CHAOS_KILL_ENV = "CUSTSEG_CHAOS_KILL_BEFORE_COMMIT"
_transactions = itertools.count(1)
# While only a hanging call holds a batch, the worker reads on (polls of this many ms), for at
# most MAX_HELD_BATCH_S from the batch's start: then the batch ends with that call's bound, and
# the loop's own poll (paused partitions resumed, …) comes next.
INNER_POLL_MS = 100
MAX_HELD_BATCH_S = 30.0


def _chaos_point() -> None:
    if (n := os.environ.get(CHAOS_KILL_ENV)) and next(_transactions) == int(n):
        os.kill(os.getpid(), signal.SIGKILL)


def _generation(membership) -> int | None:
    return getattr(membership, "generation_id", None)


class BatchRun:
    """The records of one poll, from decision to commit (see the module's docstring)."""

    def __init__(self, worker: AgentWorker, consumer, producer, batch: dict, paused: dict):
        self.worker, self.consumer, self.producer = worker, consumer, producer
        self.paused = paused
        self.started = time.perf_counter()
        self.called_s = 0.0  # wall time spent waiting for the LLM
        # The membership the batch was read under: every commit of the batch names it, so the
        # broker refuses the offsets once a rebalance has moved on (KIP-447 fencing).
        self.membership = consumer.group_metadata()
        # Per partition, in order: the records read, (record, Outcome or Ask) for those decided,
        # and how many of them are committed. A partition whose decisions stopped short (a
        # stop, a retry not due, a second copy) decides nothing more in this batch: `blocked`.
        self.batch: dict[TopicPartition, list] = {}
        self.decided: dict[TopicPartition, list] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.blocked: set[TopicPartition] = set()
        self.asks: list[Ask] = []
        self.asked: set[str] = set()  # event ids asked in this batch
        self.first = batch
        self.settled: dict[int, Outcome | None] = {}  # id(ask) → its outcome, once its call ended
        self.aborted = False
        self.calling = False  # while the calls run: the overhead is counted at the end

    def run(self) -> None:
        asks = self.decide_all(self.first)
        if asks:
            self.call_all()
        if not self.aborted:
            self.commit_ready()
        mine = self.consumer.assignment()
        for tp, records in self.batch.items():  # what is left is read again by a later poll
            if (left := records[self.committed[tp] :]) and tp in mine:
                self.consumer.seek(tp, self.resume_at(tp, left))

    def resume_at(self, tp: TopicPartition, left: list) -> int:
        """The offset a partition is read again from: its first record left; or, once the
        batch was given up (a rebalance, a failed commit), the group's committed offset. The
        partition may have been another member's meanwhile, who answered some of those records,
        and the client keeps a partition's old position when it is assigned to it again: from
        there, records would be answered twice, or (past them) never."""
        if not self.aborted:  # read in one generation, so in offset order
            return left[0].offset
        timeout_ms = round(self.worker.timings.stuck_s * 1000)
        committed = self.consumer.committed(tp, timeout_ms=timeout_ms)
        return 0 if committed is None else committed  # none yet: from the log's start

    def decide_all(self, polled: dict) -> list[Ask]:
        """Decide each polled record in order, up to a stop, a retry not due yet (its partition
        is paused until then) or a second copy of an input asked in this batch (decided once the
        first is committed: a duplicate then); return the new asks."""
        worker, asks = self.worker, []
        for tp, records in polled.items():
            self.batch.setdefault(tp, []).extend(records)
            decided = self.decided.setdefault(tp, [])
            self.committed.setdefault(tp, 0)
            for record in records:
                if tp in self.blocked:
                    break
                if worker.stop.is_set():
                    self.blocked.add(tp)
                    break
                if (wait_s := worker.not_due_for(record)) > 0:
                    self.consumer.pause(tp)
                    self.paused[tp] = time.monotonic() + wait_s
                    self.blocked.add(tp)
                    break
                step = worker.prepare_safely(record)
                if isinstance(step, Outcome):
                    pass
                elif step.incoming.event_id in self.asked:
                    self.blocked.add(tp)
                    break
                else:
                    self.asked.add(step.incoming.event_id)
                    asks.append(step)
                decided.append((record, step))
        self.asks += asks
        return asks

    def poll_more(self) -> list[Ask] | None:
        """While only a hanging call holds the batch: read on, so records that came meanwhile
        are answered now, not after its hand-off bound. None if a rebalance happened (the batch
        is then given up: nothing more of it is committed, and what this poll returned is read
        again like the rest of it, from the group's committed offsets: `resume_at`)."""
        worker = self.worker
        worker.in_kafka_since = time.monotonic()
        try:
            polled = self.consumer.poll(timeout_ms=INNER_POLL_MS)
            rebalanced = _generation(self.consumer.group_metadata()) != _generation(self.membership)
        finally:
            worker.in_kafka_since = None
        if rebalanced:  # what this poll read is left too: `run` seeks back
            for tp, records in polled.items():
                self.batch.setdefault(tp, []).extend(records)
                self.committed.setdefault(tp, 0)
            return None
        return self.decide_all(polled) if polled else []

    def call_all(self) -> None:
        worker, asks = self.worker, self.asks

        def progress(ended: list[tuple[int, CallResult]], held: bool) -> list[Call] | None:
            for i, result in ended:
                self.settled[id(asks[i])] = worker.settle_safely(asks[i], result)
            ran_s = time.perf_counter() - self.started
            if ran_s >= BATCH_BUDGET_S:
                worker.in_kafka_since = time.monotonic()
                self.commit_ready()
                worker.in_kafka_since = None
            if self.aborted:
                return None
            if not held or ran_s >= MAX_HELD_BATCH_S:
                return []
            more = self.poll_more()
            if more is None:
                self.aborted = True
                return None
            return [ask.call for ask in more]

        recent = worker.recent
        worker.in_kafka_since = None  # the LLM's time is not the Kafka client's
        called, self.calling = time.perf_counter(), True
        try:
            run_calls(
                [ask.call for ask in list(asks)],
                getattr(worker.llm, "calls_in_flight", 1),
                worker.stop,
                time.monotonic() + max(0.0, BATCH_BUDGET_S - (called - self.started)),
                statistics.median(recent) if recent else None,
                progress,
            )
        finally:
            worker.in_kafka_since = time.monotonic()
            self.called_s, self.calling = time.perf_counter() - called, False

    def _outcome(self, step) -> Outcome | None:
        return step if isinstance(step, Outcome) else self.settled.get(id(step))

    def commit_ready(self) -> None:
        """Commit, in one transaction, each partition's decided records not yet committed, up
        to its first one still waiting for its call (or abandoned)."""
        outcomes: list[Outcome] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        taken: dict[TopicPartition, int] = {}
        for tp, steps in self.decided.items():
            n = 0
            for record, step in steps[self.committed[tp] :]:
                if (outcome := self._outcome(step)) is None:
                    break
                outcomes.append(outcome)
                offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
                n += 1
            if n:
                taken[tp] = n
        if not outcomes:
            return
        if not self.commit(outcomes, offsets):
            self.aborted = True
            return
        for tp, n in taken.items():
            self.committed[tp] += n
        worker = self.worker
        if not self.calling:  # the wall time beyond the LLM's, per record
            overhead = time.perf_counter() - self.started - self.called_s
            worker.stats.overhead_s += [overhead / len(outcomes)] * len(outcomes)
        for outcome in outcomes:  # answered for good: a second copy is a duplicate
            if outcome.event_id:
                worker.remember(outcome.event_id)
            worker.count(outcome)

    def commit(self, outcomes: list[Outcome], offsets: dict) -> bool:
        """Write the outcomes' records and the inputs' offsets in one transaction. If it fails
        (a rebalance took a partition, the broker restarted), it is aborted: nothing of it is
        visible, and the batch's uncommitted inputs are read again (False)."""
        producer, worker = self.producer, self.worker
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
            producer.send_offsets_to_transaction(offsets, self.membership)
            # Every reply acknowledged, none visible yet.
            producer.flush(timeout=worker.timings.stuck_s)
            _chaos_point()
            producer.commit_transaction()
        except KafkaError as error:
            try:
                producer.abort_transaction()
            except KafkaError:
                raise error from None  # the producer is unusable: the worker cannot go on
            worker.on_event(
                one_line(f"{worker.role.name}: transaction aborted, inputs read again: {error}")
            )
            return False
        return True
