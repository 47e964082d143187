"""Reading a slice of the agent topics' partitions: the capture loop (poll, join, append, commit),
the dead letters read in step with it, and the watch that decides when it stops.

The capture assigns itself the partitions instead of joining its group: the four parts of a
conversation must meet in one reader, so a rebalance can only hurt, and without group membership
there is no session to time out while the machine is busy with the LLM. The group id is still
where its offsets are committed.
"""

from __future__ import annotations

import functools
import gc
import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from custseg.agents.capture.assembler import Assembler
from custseg.agents.capture.sink import append, failed_path, jsonl, open_sink
from custseg.agents.envelope import parse_envelope
from custseg.agents.topics import home_partition
from custseg.conversation import CHAIN
from custseg.errors import ConfigError, InvalidMessage

POLL_MS = 20  # also how soon a worker notices the stop
# The home partition of each conversation seen (four records each): murmur2 is pure Python.
_home = functools.lru_cache(maxsize=1 << 16)(home_partition)


@dataclass
class CaptureResult:
    written: list[str]
    incomplete: dict[str, list[str]]
    invalid: int
    messages: int
    failed: list[str] = field(default_factory=list)  # closed by a dead letter
    moved: int = 0  # records off their home partition, skipped (the agents move them home)


class Progress(Protocol):
    """What a reader reports to and asks whether to stop: the Watch, or in a worker process its
    relay to the parent's Watch."""

    def assigned(self) -> None: ...
    def heard(self) -> None: ...
    def wrote(self, ids: list[str]) -> None: ...
    def over(self) -> bool: ...


@dataclass
class Watch:
    """Decides when the capture stops: every expected conversation written, `idle_s` without a
    message, `timeout_s` elapsed, or `asked()`.

    The idle clock starts only once all `readers` have their partitions assigned: a slow start
    on a busy machine must not count as silence."""

    written: set[str]
    expect: set[str] | None = None
    idle_s: float | None = None
    timeout_s: float | None = None
    asked: Callable[[], bool] = lambda: False
    on_written: Callable[[str], None] = lambda correlation_id: None
    readers: int = 1
    started: float = field(default_factory=time.monotonic)
    last_message: float = field(default_factory=time.monotonic)
    ready: int = 0  # readers with their partitions assigned

    def assigned(self) -> None:
        self.ready += 1
        if self.ready == self.readers:
            self.last_message = time.monotonic()

    def wrote(self, ids: list[str]) -> None:
        self.written.update(ids)
        for cid in ids:
            self.on_written(cid)

    def heard(self) -> None:
        self.last_message = time.monotonic()

    def over(self) -> bool:
        now = time.monotonic()
        return bool(
            (self.expect is not None and self.expect <= self.written)
            or (
                self.idle_s and self.ready >= self.readers and now - self.last_message > self.idle_s
            )
            or (self.timeout_s and now - self.started > self.timeout_s)
            or self.asked()
        )


def read_dead_letter(raw: bytes | None) -> dict | None:
    """A dead letter that names a conversation's record (the agents write those), else None."""
    try:
        letter = json.loads(raw or b"")
        about = letter["envelope"]
        source = letter["source"]
        if (
            isinstance(about["correlation_id"], str)
            and isinstance(about["event_id"], str)
            and isinstance(source["topic"], str)
            and type(source["partition"]) is int
            and type(source["offset"]) is int
            and all(isinstance(letter[k], str) for k in ("reason", "agent", "at"))
        ):
            return letter
    except (ValueError, KeyError, TypeError, RecursionError):
        pass
    return None


class DeadLetters:
    """Reads the dead-letter partitions in step with the rest: a letter is taken only once the
    record it names has been read (the consumer's position on the source partition is past
    it), else its partition waits there, paused. So a restart that catches up on a long tasks
    backlog cannot see a task's dead letter before the task, and no letter pins an offset."""

    def __init__(self, consumer: KafkaConsumer, assembler: Assembler) -> None:
        self.consumer, self.assembler = consumer, assembler
        self.mine = set(consumer.assignment())
        self.waiting: dict[TopicPartition, tuple[TopicPartition, int]] = {}

    def read(self, tp: TopicPartition, records: list) -> list[dict]:
        closed = []
        for record in records:
            letter = read_dead_letter(record.value)
            source = letter and TopicPartition(
                letter["source"]["topic"], letter["source"]["partition"]
            )
            if letter is None or source not in self.mine:  # no conversation of this reader
                self.assembler.skip(tp, record.offset)
                continue
            if self.consumer.position(source) <= letter["source"]["offset"]:
                self.consumer.seek(tp, record.offset)  # take it again once the source is read
                self.consumer.pause(tp)
                self.waiting[tp] = (source, letter["source"]["offset"])
                break
            if (failure := self.assembler.add_dead_letter(letter, tp, record.offset)) is not None:
                closed.append(failure)
        return closed

    def resume_due(self) -> None:
        due = [tp for tp, (src, at) in self.waiting.items() if self.consumer.position(src) > at]
        for tp in due:
            del self.waiting[tp]
        if due:
            self.consumer.resume(*due)


def slice_partitions(
    consumer: KafkaConsumer, topics: Iterable[str], worker: int, workers: int
) -> list[TopicPartition]:
    """Partitions `p` with `p % workers == worker` of every topic. A conversation's records share
    their key, so with equal partition counts (co-partitioned topics, as Kafka Streams requires
    for a join) all four land on the same partition number and one worker sees them all."""
    found = {}
    for topic in topics:
        ids = consumer.partitions_for_topic(topic)
        if not ids:
            raise ConfigError(f"capture: topic {topic!r} does not exist on the cluster")
        found[topic] = sorted(ids)
    counts = {len(ids) for ids in found.values()}
    if workers > 1 and (len(counts) > 1 or workers > min(counts)):
        raise ConfigError(
            f"capture: {workers} workers need co-partitioned topics with at least {workers} "
            f"partitions each; found {', '.join(f'{t}: {len(i)}' for t, i in found.items())}"
        )
    return [TopicPartition(t, p) for t, ids in found.items() for p in ids if p % workers == worker]


@contextmanager
def _rare_collections(young: int = 50_000) -> Iterator[None]:
    """Fewer young-generation GC passes while the loop runs: each poll hands over thousands of
    records that live until the batch is joined, and every default pass (per 700 allocations)
    traverses them again (~10% of the capture's time). The loop makes no reference cycles."""
    thresholds = gc.get_threshold()
    gc.set_threshold(max(young, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def read_slice(
    bootstrap: str,
    topics: list[str],
    out: Path,
    group: str,
    dlq: str | None,
    worker: int,
    workers: int,
    captured: set[str],
    progress: Progress,
) -> CaptureResult:
    """One worker: join its slice of partitions, append complete conversations (and those a
    dead letter closed), commit; until `progress.over()`."""
    assembler = Assembler(written=captured)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=f"custseg-capture-{worker}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",  # what the agents' transactions committed, only
        max_poll_records=5000,
    )
    try:
        consumer.assign(
            slice_partitions(consumer, [*topics, *([dlq] if dlq else [])], worker, workers)
        )
        counts = {t: len(consumer.partitions_for_topic(t)) for t in topics}
        kinds = dict(zip(topics, CHAIN, strict=True))  # `topics` are the chain's, in order
    except Exception:
        consumer.close(autocommit=False)
        raise
    progress.assigned()
    result = CaptureResult([], {}, 0, 0)
    letters = DeadLetters(consumer, assembler)
    parse, add, home = parse_envelope, assembler.add, _home  # the hot loop's, bound once
    try:
        with open_sink(out) as sink, _rare_collections():
            while not progress.over():
                letters.resume_due()
                batch = consumer.poll(timeout_ms=POLL_MS)
                new, closed = [], []
                # Dead letters last: each is read after the record it names (see DeadLetters).
                for tp, records in sorted(batch.items(), key=lambda item: item[0].topic == dlq):
                    result.messages += len(records)
                    if tp.topic == dlq:
                        closed += letters.read(tp, records)
                        continue
                    kind, partitions = kinds[tp.topic], counts[tp.topic]
                    for record in records:
                        try:
                            envelope = parse(record.value)
                            if envelope.type != kind:  # a plan sent to the tasks topic, say
                                raise InvalidMessage(envelope.type)
                        except InvalidMessage:
                            result.invalid += 1  # the agents dead-letter it: no conversation
                            assembler.skip(tp, record.offset)
                            continue
                        if tp.partition != home(envelope.correlation_id, partitions):
                            result.moved += 1  # read again on its home partition
                            assembler.skip(tp, record.offset)
                        elif (done := add(envelope, tp, record.offset)) is not None:
                            new.append(done)
                # Written and fsynced before the commit moves past their offsets.
                if new:
                    append(sink, jsonl(new))
                    result.written += _ids(new, progress)
                if closed:  # rare: the failure file is opened only when there is one
                    with open_sink(failed_path(out)) as failures:
                        append(failures, jsonl(closed))
                    result.failed += _ids(closed, progress)
                if batch:
                    progress.heard()
                    # Asynchronous: a later commit supersedes an earlier one; the last is awaited.
                    consumer.commit_async(_offsets(assembler))
        consumer.commit(_offsets(assembler))
    finally:
        consumer.close(autocommit=False)
    result.incomplete = assembler.missing()
    return result


def _ids(records: list[dict], progress: Progress) -> list[str]:
    """The records' correlation ids, reported to `progress` as written."""
    ids = [r["correlation_id"] for r in records]
    progress.wrote(ids)
    return ids


def _offsets(assembler: Assembler) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(o, "", -1) for tp, o in assembler.safe_offsets().items()}
