"""Agents on Kafka: each role consumes its input topic in its own group and replies downstream.

At least once: the input's offset is committed (asynchronously) only after the reply (or dead
letter) is acknowledged by the broker. Replies carry deterministic ids and each worker skips an
input it has already answered, so a redelivery after a crash is recognisable and the capture
keeps one copy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from custseg.agents.envelope import Envelope, InvalidMessage, now, one_line, parse_envelope
from custseg.agents.roles import ROLES, Role, answer
from custseg.agents.topics import topic_of
from custseg.config import AgentsParams
from custseg.llm import LLMError, Provider

SEEN_LIMIT = 10_000  # inputs remembered per worker for de-duplication
# An LLM failure is usually transient (a busy or restarting server): the input is tried again
# this many times, with a growing pause, before it is dead-lettered.
LLM_ATTEMPTS = 3
LLM_RETRY_PAUSE_S = 5.0


# A dead letter must always fit in a Kafka request (1 MB by default) whatever it quotes: the input's
# value is kept up to this many bytes (JSON escaping can grow them 6×), its key up to MAX_KEY_BYTES.
MAX_QUOTED_BYTES = 64 * 1024
MAX_KEY_BYTES = 1024


def dead_letter(record, reason: str, agent: str) -> bytes:
    """The dead-letter record: the reason, where the input came from and its raw bytes (the
    first MAX_QUOTED_BYTES of them, with the size and SHA-256 of the whole value)."""
    raw = record.value or b""
    quoted = raw[:MAX_QUOTED_BYTES]
    try:
        value, encoding = quoted.decode(), "utf-8"
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(quoted).decode(), "base64"
    key = record.key[:MAX_KEY_BYTES].decode(errors="replace") if record.key else None
    return json.dumps(
        {
            "reason": one_line(reason),
            "agent": agent,
            "at": now().isoformat(),
            "source": {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
            "key": key,
            "value": value,
            "encoding": encoding,
            "value_bytes": len(raw),
            "value_sha256": hashlib.sha256(raw).hexdigest(),
            "truncated": len(raw) > len(quoted),
        }
    ).encode()


def make_producer(bootstrap: str) -> KafkaProducer:
    # acks=all + idempotence: a retried send never lands twice on the broker. No linger: an
    # agent sends one reply and waits for its ack, so batching would only add latency.
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        client_id="custseg-agents",
    )


@dataclass
class WorkerStats:
    handled: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    llm_s: list[float] = field(default_factory=list)  # per answered record: the LLM call
    overhead_s: list[float] = field(default_factory=list)  # per record: wall time beyond the LLM


class AgentWorker:
    """One role's consume → answer → produce → commit loop."""

    def __init__(
        self,
        role: Role,
        llm: Provider,
        params: AgentsParams,
        bootstrap: str,
        producer: KafkaProducer,
        stop: threading.Event,
        on_event: Callable[[str], None] = print,
    ) -> None:
        self.role, self.llm, self.params, self.bootstrap = role, llm, params, bootstrap
        self.producer, self.stop, self.on_event = producer, stop, on_event
        self.max_tokens = getattr(params.max_tokens, role.name)
        self.in_topic = topic_of(params.topics, role.consumes)
        self.out_topic = topic_of(params.topics, role.produces)
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.failures: dict[tuple[int, int], int] = {}  # (partition, offset) → LLM failures
        self.stats = WorkerStats()

    def consumer(self) -> KafkaConsumer:
        return KafkaConsumer(
            self.in_topic,
            bootstrap_servers=self.bootstrap,
            group_id=f"{self.params.group_prefix}.{self.role.name}",
            client_id=f"custseg-{self.role.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=1,
            # A local LLM call can take minutes on a busy CPU: don't get kicked out meanwhile.
            max_poll_interval_ms=900_000,
        )

    def run(self) -> None:
        consumer = self.consumer()
        done: dict = {}  # partition → the offset after its last finished record
        try:
            while not self.stop.is_set():
                for tp, records in consumer.poll(timeout_ms=300).items():
                    for record in records:
                        started, answered = time.perf_counter(), len(self.stats.llm_s)
                        if not self.handle_safely(record):  # not done: read it again later
                            consumer.seek(tp, record.offset)
                            self.stop.wait(
                                LLM_RETRY_PAUSE_S * self.failures[(tp.partition, record.offset)]
                            )
                            break
                        # Asynchronous: the reply is acknowledged already, so a lost commit only
                        # means a redelivery, which the seen-set and reply ids absorb.
                        done[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
                        consumer.commit_async({tp: done[tp]}, callback=self._committed)
                        # Parse, prompt, produce (acked), commit: all but the LLM call itself.
                        llm_s = sum(self.stats.llm_s[answered:])
                        self.stats.overhead_s.append(time.perf_counter() - started - llm_s)
        finally:
            try:
                if done:
                    consumer.commit(done)  # the last ones, synchronously, before leaving
            except KafkaError as error:
                self.on_event(
                    f"{self.role.name}: final commit failed (inputs redelivered): {error}"
                )
            consumer.close(autocommit=False)

    def _committed(self, offsets, result) -> None:
        if isinstance(result, Exception):
            self.on_event(f"{self.role.name}: commit failed (inputs redelivered): {result}")

    def handle_safely(self, record) -> bool:
        """`handle`, with a last line of defence: a record that makes it fail in a way nobody
        foresaw is dead-lettered with the error, instead of crashing the agent and, as its
        offset is never committed, crashing it again after every restart. Kafka errors (the
        broker, not the record) still propagate."""
        try:
            return self.handle(record)
        except KafkaError:
            raise
        except Exception as error:  # any record-caused failure, see above
            self._dead_letter(record, f"unexpected {type(error).__name__}: {error}")
            return True

    def handle(self, record) -> bool:
        """Answer one record or dead-letter it with the reason; False: try it again later."""
        try:
            incoming = parse_envelope(record.value)
            if incoming.type != self.role.consumes:
                raise InvalidMessage(
                    f"{self.role.name} answers {self.role.consumes}s, got a {incoming.type}"
                )
        except InvalidMessage as error:
            self._dead_letter(record, str(error))
            return True
        if incoming.event_id in self.seen:
            self.stats.duplicates += 1
            return True
        try:
            outgoing, llm_s = self._answer(incoming)
            value = outgoing.to_bytes()  # an empty or broken reply fails here: like a failed call
        except (LLMError, InvalidMessage) as error:
            where = (record.partition, record.offset)
            failures = self.failures[where] = self.failures.get(where, 0) + 1
            if failures < LLM_ATTEMPTS:
                self.on_event(
                    f"{self.role.name}: {incoming.correlation_id[:8]} attempt "
                    f"{failures}/{LLM_ATTEMPTS} failed, will retry: {error}"
                )
                return False
            self._dead_letter(record, f"llm failed {failures} times: {error}")
            return True
        self._send(self.out_topic, incoming.correlation_id.encode(), value)
        self._remember(incoming.event_id)
        self.stats.handled += 1
        self.stats.llm_s.append(llm_s)
        self.on_event(
            f"{self.role.name}: {incoming.correlation_id[:8]} {self.role.consumes} → "
            f"{self.role.produces} ({llm_s:.1f} s)"
        )
        return True

    def _dead_letter(self, record, reason: str) -> None:
        key = record.key if record.key is None or len(record.key) <= MAX_KEY_BYTES else None
        self._send(self.params.topics.dlq, key, dead_letter(record, reason, self.role.name))
        self.stats.dead_letters += 1
        self.on_event(f"{self.role.name}: dead-lettered {record.topic}@{record.offset}: {reason}")

    def _answer(self, incoming: Envelope) -> tuple[Envelope, float]:
        started = time.perf_counter()
        outgoing = answer(self.role, incoming, self.llm, self.max_tokens)
        return outgoing, time.perf_counter() - started

    def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.producer.send(topic, key=key, value=value).get(timeout=60)

    def _remember(self, event_id: str) -> None:
        self.seen[event_id] = None
        if len(self.seen) > SEEN_LIMIT:
            self.seen.popitem(last=False)


def run_agents(
    roles: list[str],
    llm: Provider,
    params: AgentsParams,
    bootstrap: str,
    stop: threading.Event,
    on_event: Callable[[str], None] = print,
) -> list[AgentWorker]:
    """Run the given roles in threads of this process until `stop` is set; return the workers."""
    producer = make_producer(bootstrap)
    workers = [
        AgentWorker(ROLES[r], llm, params, bootstrap, producer, stop, on_event) for r in roles
    ]
    threads = [threading.Thread(target=w.run, name=w.role.name, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        # One role dying (e.g. the broker went away) stops the others: fail loudly, not half-way.
        while all(t.is_alive() for t in threads) and not stop.is_set():
            stop.wait(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        producer.close(timeout=10)
    return workers
