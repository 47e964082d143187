"""One role's worker: consume its input topic (and its copies on the retry topic), answer each
record with the LLM, and write the replies with the inputs' offsets in one Kafka transaction.

An input whose LLM call fails is not retried in place, where it would hold up every record
behind it: a copy goes to the retry topic (in the same transaction as the input's offset), with
its attempt and when it is due in a header; each worker reads that topic too and answers its own
copies once due, pausing only the retry partition meanwhile. After LLM_ATTEMPTS, or once the
LLM time spent on it over its attempts reaches `Timings.task_budget_s`, it is dead-lettered,
naming the original record, which closes its conversation in the capture. A call is waited for
at most what is left of that budget and its attempt's hand-off bound (a few times the recent
median call, with a floor: `Timings.handoff_s`), past which it counts as a failed attempt and
the worker goes on with other records; and not at all once the worker is told to stop: its
input is then left uncommitted, for the next owner of the partition to answer (`calls`,
`batch`).

Every record is answered on its conversation's home partition (`topics.home_partition`): one
found elsewhere (a null or foreign key, another client's partitioner) is moved there first, in
the same kind of transaction, so the capture finds a conversation's four records together.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from custseg.agents.envelope import Envelope, one_line, parse_envelope
from custseg.agents.grounding import Champion
from custseg.agents.roles import ROLES, Role, answer
from custseg.agents.runtime.batch import BatchRun
from custseg.agents.runtime.calls import (
    RECENT_CALLS,
    Call,
    CallResult,
    give_up_reason,
    handoff_bound,
    run_calls,
)
from custseg.agents.runtime.letters import MAX_KEY_BYTES, dead_letter, place, retry_header
from custseg.agents.runtime.outcome import COUNTERS, Outcome, Send, WorkerStats
from custseg.agents.runtime.settings import (
    DEFAULT_TIMINGS,
    LLM_ATTEMPTS,
    SEEN_LIMIT,
    Timings,
    consumer_settings,
    make_producer,
)
from custseg.agents.schemas import RetryBounds, RetryRead, max_retry_wait_s, read_retry
from custseg.agents.topics import home_partition, topic_of
from custseg.config import AgentsParams
from custseg.errors import ConfigError, InvalidMessage
from custseg.llm import LLMError, Provider


@dataclass(frozen=True)
class Ask:
    """An input that needs the LLM: its call, and what its outcome is made of once it ends."""

    record: object
    incoming: Envelope
    call: Call
    attempt: int
    spent_s: float  # LLM seconds its earlier attempts spent
    source: dict | None  # the original record's place, for a retry copy


class AgentWorker:
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
        transactional_id: str | None = None,
    ) -> None:
        self.role, self.llm, self.params, self.bootstrap = role, llm, params, bootstrap
        # A replacement in the same process reuses its predecessor's id, so its producer's
        # init_transactions fences a predecessor left behind stuck in the Kafka client: that one
        # can no longer commit a transaction (a reply committed twice, seen in the chaos test).
        self.transactional_id = (
            transactional_id or f"{params.group_prefix}.{role.name}.{uuid.uuid4().hex[:12]}"
        )
        self.stop, self.on_event, self.champion = stop, on_event, champion
        self.timings = timings
        self.max_tokens = getattr(params.max_tokens, role.name)
        self.in_topic = topic_of(params.topics, role.consumes)
        self.out_topic = topic_of(params.topics, role.produces)
        self.retry_topic = params.topics.retries
        # What a retry header may name: every role's input topic (each role reads the topic).
        self.inputs = {r.name: topic_of(params.topics, r.consumes) for r in ROLES.values()}
        self.partitions = params.partitions  # of every agent topic; checked in run()
        self.seen: OrderedDict[str, None] = OrderedDict()  # answered, committed event ids
        self.recent: deque[float] = deque(maxlen=RECENT_CALLS)  # answered calls' seconds
        self.stats = WorkerStats()
        self.error: BaseException | None = None  # why run() ended early, if it did
        # Monotonic time the worker last began a poll or came back from the LLM; None while it
        # waits for the LLM (a local model may take minutes, which is not being stuck).
        self.in_kafka_since: float | None = None
        self.clients: tuple[KafkaConsumer, object | None] | None = None  # for `abandon`

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
            producer = make_producer(self.bootstrap, self.transactional_id, self.timings)
            self.clients = (consumer, producer)
            producer.init_transactions()
            paused: dict[TopicPartition, float] = {}  # → when to read it again
            while not self.stop.is_set():
                self.in_kafka_since = time.monotonic()
                self._resume_due(consumer, paused)
                batch = consumer.poll(timeout_ms=300)
                if batch:
                    self.process(consumer, producer, batch, paused)
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

    def process(self, consumer, producer, batch: dict, paused: dict) -> None:
        """Decide, answer and commit one polled batch, exactly once (`batch.BatchRun`)."""
        BatchRun(self, consumer, producer, batch, paused).run()

    def not_due_for(self, record) -> float:
        """Seconds until this worker's retry copy is due (0: now, or not a valid retry of mine).
        Bounded: a due time further ahead than a retry ever waits is refused by `_retry_of`."""
        read = self._retry_of(record)
        if read is None or read.note is None or read.owner != self.role.name:
            return 0.0
        return max(0.0, read.note.due - time.time())

    def _retry_of(self, record) -> RetryRead | None:
        """A retry-topic record's header, checked by type and range (None: not on that topic)."""
        if record.topic != self.retry_topic:
            return None
        wait_s = max_retry_wait_s(self.timings.retry_pause_s, LLM_ATTEMPTS)
        bounds = RetryBounds(self.inputs, self.partitions, LLM_ATTEMPTS, wait_s)
        return read_retry(getattr(record, "headers", None), bounds, time.time())

    def count(self, outcome: Outcome) -> None:
        if counter := COUNTERS.get(outcome.kind):
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        if outcome.kind == "answered":
            self.stats.llm_s.append(outcome.llm_s)
        if outcome.event:  # ids and reasons come from records: escaped, one line
            self.on_event(one_line(outcome.event))

    def decide(self, record) -> Outcome | None:
        """One record on its own, from decision to outcome (its call, if any, made here)."""
        step = self.prepare(record)
        return step if isinstance(step, Outcome) else self.settle(step, self.call_one(step))

    def decide_safely(self, record) -> Outcome | None:
        """`decide`, with `prepare_safely`'s and `settle_safely`'s last line of defence."""
        step = self.prepare_safely(record)
        return step if isinstance(step, Outcome) else self.settle_safely(step, self.call_one(step))

    def call_one(self, ask: Ask) -> CallResult | None:
        return run_calls([ask.call], 1, self.stop, time.monotonic())[0]

    def prepare_safely(self, record) -> Outcome | Ask:
        """`prepare`, with a last line of defence: a record that makes it fail in a way nobody
        foresaw is dead-lettered with the error, instead of crashing the agent and, as its
        offset is never committed, crashing it again after every restart. Kafka errors (the
        broker, not the record) still propagate."""
        try:
            return self.prepare(record)
        except KafkaError:
            raise
        except Exception as error:  # any record-caused failure, see above
            read = self._retry_of(record)
            source = read.note.source.as_dict() if read and read.note else None
            reason = f"unexpected {type(error).__name__}: {error}"
            return self.dead_letter(record, reason, source=source)

    def prepare(self, record) -> Outcome | Ask:
        """What to do with one record: ask the LLM (`settle` then makes the outcome of the
        answer), move it home, skip it or dead-letter it."""
        note = source = None
        if (read := self._retry_of(record)) is not None:
            if read.owner != self.role.name:
                return Outcome("not mine")  # another role's retry: its worker answers it
            if read.note is None:  # a header no worker can act on: one dead letter, from me
                return self.dead_letter(record, read.problem or "invalid retry header")
            note, source = read.note, read.note.source.as_dict()
        try:
            incoming = parse_envelope(record.value)
            if incoming.type != self.role.consumes:
                raise InvalidMessage(
                    f"{self.role.name} answers {self.role.consumes}s, got a {incoming.type}"
                )
        except InvalidMessage as error:
            return self.dead_letter(record, str(error), source=source)
        cid = incoming.correlation_id
        home = home_partition(cid, self.partitions)
        if note is None and record.partition != home:
            return Outcome(
                "moved",
                (Send(self.in_topic, home, cid.encode(), record.value),),
                f"{self.role.name}: {cid[:8]} moved from partition {record.partition} to its "
                f"home partition {home}",
            )
        if incoming.event_id in self.seen:
            return Outcome("duplicate")
        attempt = note.attempt if note else 1
        budget_s, spent_s = self.timings.task_budget_s, note.spent if note else 0.0
        if spent_s >= budget_s:  # a copy that arrives with its budget spent (a forged header)
            reason = give_up_reason(attempt, LLM_ATTEMPTS, spent_s, budget_s)
            source = source or place(record)
            return self.dead_letter(record, f"{reason}: no time left", incoming, source)
        grounding = self.champion.current() if self.champion else None
        call = Call(
            lambda: answer(self.role, incoming, self.llm, self.max_tokens, grounding),
            budget_s - spent_s,
            handoff_bound(self.recent, self.timings.handoff_s, attempt),
        )
        return Ask(record, incoming, call, attempt, spent_s, source)

    def settle_safely(self, ask: Ask, result: CallResult | None) -> Outcome | None:
        """`settle`, with the same last line of defence as `prepare_safely`."""
        try:
            return self.settle(ask, result)
        except KafkaError:
            raise
        except Exception as error:  # any record-caused failure, see prepare_safely
            reason = f"unexpected {type(error).__name__}: {error}"
            return self.dead_letter(ask.record, reason, ask.incoming, ask.source)

    def settle(self, ask: Ask, result: CallResult | None) -> Outcome | None:
        """What an asked input comes to once its call returned, failed or was handed off: its
        answer, a copy on the retry topic or a dead letter. None: the call was not made, or
        abandoned (stopping), and the input is left uncommitted."""
        if result is None:
            return None
        record, incoming, cid = ask.record, ask.incoming, ask.incoming.correlation_id
        budget_s = self.timings.task_budget_s
        try:
            value = result.get().to_bytes()  # an empty or broken reply fails here: a failed call
        except (LLMError, InvalidMessage) as error:
            source = ask.source or place(record)
            spent_s = ask.spent_s + result.elapsed_s
            if result.out_of_budget:  # whatever rounding the retry header's `spent` had
                spent_s = max(spent_s, budget_s)
            if reason := give_up_reason(ask.attempt, LLM_ATTEMPTS, spent_s, budget_s):
                return self.dead_letter(record, f"{reason}: {error}", incoming, source)
            return self.retry_later(record, incoming, ask.attempt, source, error, spent_s)
        self.recent.append(result.elapsed_s)
        return Outcome(
            "answered",
            (Send(self.out_topic, home_partition(cid, self.partitions), cid.encode(), value),),
            f"{self.role.name}: {cid[:8]} {self.role.consumes} → {self.role.produces} "
            f"({result.elapsed_s:.1f} s)",
            incoming.event_id,
            result.elapsed_s,
        )

    def retry_later(
        self,
        record,
        incoming: Envelope,
        attempt: int,
        source: dict,
        error: Exception,
        spent_s: float = 0.0,
    ) -> Outcome:
        """A copy of the input for the retry topic, due `retry_pause_s` × attempt from now,
        carrying the LLM time its attempts have spent so far."""
        pause_s = self.timings.retry_pause_s * attempt
        due = time.time() + pause_s
        header = retry_header(self.role.name, attempt + 1, due, source, round(spent_s, 3))
        cid = incoming.correlation_id
        return Outcome(
            "retry",
            (
                Send(
                    self.retry_topic,
                    home_partition(cid, self.partitions),
                    cid.encode(),
                    record.value,
                    (header,),
                ),
            ),
            f"{self.role.name}: {cid[:8]} attempt {attempt} of {LLM_ATTEMPTS} failed after "
            f"{spent_s:.1f} s of its {self.timings.task_budget_s:g} s budget, retried in "
            f"{pause_s:g} s: {one_line(str(error))}",
        )

    def dead_letter(
        self,
        record,
        reason: str,
        incoming: Envelope | None = None,
        source: dict | None = None,
    ) -> Outcome:
        """The dead letter for `record`, on its conversation's home partition when it has one
        (so the capture reading that partition closes the conversation)."""
        key = record.key if record.key is None or len(record.key) <= MAX_KEY_BYTES else None
        partition = (
            None if incoming is None else home_partition(incoming.correlation_id, self.partitions)
        )
        letter = dead_letter(record, reason, self.role.name, incoming, source)
        where = source or place(record)
        return Outcome(
            "dead-lettered",
            (Send(self.params.topics.dlq, partition, key, letter),),
            f"{self.role.name}: dead-lettered {where['topic']}@{where['offset']}: "
            f"{one_line(reason)}",
        )

    def remember(self, event_id: str) -> None:
        self.seen[event_id] = None
        if len(self.seen) > SEEN_LIMIT:
            self.seen.popitem(last=False)


def co_partitioned(consumer: KafkaConsumer, topics: list[str]) -> int:
    """The partition count the topics share; a ConfigError naming them if they differ."""
    counts = {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
    if len(set(counts.values())) != 1 or not all(counts.values()):
        raise ConfigError(
            "agent topics must exist with equal partition counts; found "
            + ", ".join(f"{t}: {n}" for t, n in counts.items())
        )
    return next(iter(counts.values()))
