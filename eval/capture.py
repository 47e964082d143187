"""Capture: join the agent topics by correlation_id and append each complete conversation once.

Offsets are committed only up to the oldest message of a conversation still being assembled, so a
restart re-reads what it needs; conversations already in the file are recognised and skipped.

The capture assigns itself every partition of the agent topics instead of joining its group: one
writer must see all four parts of a conversation, so a rebalance can only hurt, and without group
membership there is no session to time out while the machine is busy with the LLM. The group id
is still where its offsets are committed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from eval.envelope import Envelope, InvalidMessage, parse_envelope

CHAIN = ("task", "plan", "draft", "final")


def conversation_record(chain: dict[str, Envelope]) -> dict:
    """The JSON line written for one complete conversation."""
    task, plan, draft, final = (chain[t] for t in CHAIN)
    return {
        "correlation_id": task.correlation_id,
        "task": task.content["task"],
        "plan": plan.content["plan"],
        "draft": draft.content["draft"],
        "final": final.content["final"],
        "review": final.content["review"],
        "started_at": task.produced_at.isoformat(),
        "completed_at": final.produced_at.isoformat(),
        "events": {
            t: {
                "event_id": e.event_id,
                "causation_id": e.causation_id,
                "agent": e.agent,
                "produced_at": e.produced_at.isoformat(),
                "model": msgspec.to_builtins(e.model),
            }
            for t, e in chain.items()
        },
    }


def find_chain(parts: list[Envelope]) -> dict[str, Envelope] | None:
    """A task → plan → draft → final chain linked by causation ids, if one is complete."""
    answers = {(e.causation_id, e.type): e for e in parts}
    for task in (e for e in parts if e.type == "task"):
        chain, parent = {"task": task}, task
        for step in CHAIN[1:]:
            child = answers.get((parent.event_id, step))
            if child is None:
                break
            chain[step], parent = child, child
        if len(chain) == len(CHAIN):
            return chain
    return None


@dataclass
class Assembler:
    """Holds partial conversations; tells which offsets are safe to commit."""

    written: set[str] = field(default_factory=set)
    # correlation_id → the parts read so far, with where each was read
    pending: dict[str, list[tuple[Envelope, TopicPartition, int]]] = field(default_factory=dict)
    # partition → offsets still needed by pending conversations; keys stay in offset order
    # because a partition is read in order, so the first key is the oldest
    held: dict[TopicPartition, dict[int, None]] = field(default_factory=dict)
    consumed: dict[TopicPartition, int] = field(default_factory=dict)

    def add(self, envelope: Envelope, tp: TopicPartition, offset: int) -> dict | None:
        """Add one message; return the conversation record if it just became complete."""
        self.consumed[tp] = offset + 1
        cid = envelope.correlation_id
        if cid in self.written:
            return None
        parts = self.pending.setdefault(cid, [])
        parts.append((envelope, tp, offset))
        self.held.setdefault(tp, {})[offset] = None
        if len(parts) < len(CHAIN):  # too few parts for a chain: nothing to look for yet
            return None
        chain = find_chain([e for e, _, _ in parts])
        if chain is None:
            return None
        del self.pending[cid]
        for _, part_tp, part_offset in parts:
            del self.held[part_tp][part_offset]
        self.written.add(cid)
        return conversation_record(chain)

    def skip(self, tp: TopicPartition, offset: int) -> None:
        self.consumed[tp] = offset + 1

    def safe_offsets(self) -> dict[TopicPartition, int]:
        """Per partition: the oldest offset still needed by a pending conversation, else the end."""
        return {tp: next(iter(self.held.get(tp, ())), end) for tp, end in self.consumed.items()}

    def missing(self) -> dict[str, list[str]]:
        """Incomplete conversations and the parts they still lack."""
        missing = {}
        for cid, parts in self.pending.items():
            types = {e.type for e, _, _ in parts}
            missing[cid] = [t for t in CHAIN if t not in types] or ["a linked chain"]
        return missing


def recover(path: Path) -> set[str]:
    """Correlation ids already captured; a torn last line (crash mid-write) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    keep = data if data.endswith(b"\n") or not data else data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        with path.open("r+b") as f:
            f.truncate(len(keep))
    return {json.loads(line)["correlation_id"] for line in keep.splitlines() if line.strip()}


def all_partitions(consumer: KafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    partitions = []
    for topic in topics:
        ids = consumer.partitions_for_topic(topic)
        if not ids:
            raise LookupError(f"capture: topic {topic!r} does not exist on the cluster")
        partitions += [TopicPartition(topic, p) for p in sorted(ids)]
    return partitions


@dataclass
class CaptureResult:
    written: list[str]
    incomplete: dict[str, list[str]]
    invalid: int
    messages: int


def capture(
    bootstrap: str,
    topics: Iterable[str],
    out: Path,
    group: str,
    *,
    expect: set[str] | None = None,
    idle_s: float | None = 10.0,
    timeout_s: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_written: Callable[[dict], None] = lambda record: None,
) -> CaptureResult:
    """Consume until every `expect`ed conversation is written, `idle_s` passes with no message,
    `timeout_s` elapses or `should_stop()`; append complete conversations to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    assembler = Assembler(written=recover(out))
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id="custseg-capture",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=5000,
    )
    try:
        consumer.assign(all_partitions(consumer, topics))
    except Exception:
        consumer.close(autocommit=False)
        raise
    written, invalid, messages = [], 0, 0
    started = last_message = time.monotonic()
    try:
        with out.open("ab") as sink:
            while not should_stop():
                batch = consumer.poll(timeout_ms=200)
                new = []
                for tp, records in batch.items():
                    for record in records:
                        messages += 1
                        try:
                            envelope = parse_envelope(record.value)
                        except InvalidMessage:
                            invalid += 1  # the agents dead-letter it; nothing to join here
                            assembler.skip(tp, record.offset)
                            continue
                        if (done := assembler.add(envelope, tp, record.offset)) is not None:
                            new.append(done)
                if new:
                    # One write per record line, then fsync before committing offsets past it.
                    for record in new:
                        sink.write(msgspec.json.encode(record) + b"\n")
                    sink.flush()
                    os.fsync(sink.fileno())
                    for record in new:
                        written.append(record["correlation_id"])
                        on_written(record)
                if batch:
                    last_message = time.monotonic()
                    consumer.commit(
                        {
                            tp: OffsetAndMetadata(o, "", -1)
                            for tp, o in assembler.safe_offsets().items()
                        }
                    )
                if expect is not None and expect <= assembler.written:
                    break
                now = time.monotonic()
                if (idle_s and now - last_message > idle_s) or (
                    timeout_s and now - started > timeout_s
                ):
                    break
    finally:
        consumer.close(autocommit=False)
    return CaptureResult(written, assembler.missing(), invalid, messages)
