"""Reading a slice of the agent topics' partitions: the capture loop (poll, join, append, commit),
the dead letters read in step with it, and the watch that decides when it stops.

No record makes it wait for good (`WaitBounds`): a dead letter naming an offset the capture has
not read waits for it only while reading moves towards it (at most `letter_wait_s` without
progress), and not at all if the broker has no such record (it is dropped, with a note);
replies whose task is not read within `orphan_s` are released.

The capture assigns itself the partitions instead of joining its group: the four parts of a
conversation must meet in one reader, so a rebalance can only hurt, and without group membership
there is no session to time out while the machine is busy with the LLM. The group id is still
where its offsets are committed.
"""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec
from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from custseg.agents.capture.assembler import Assembler
from custseg.agents.capture.sink import append, failed_path, jsonl, open_sink
from custseg.agents.envelope import one_line, parse_envelope
from custseg.agents.schemas import parse_dead_letter
from custseg.agents.topics import home_partition
from custseg.conversation import CHAIN
from custseg.errors import ConfigError, InvalidMessage

POLL_MS = 20  # also how soon a worker notices the stop
# The home partition of each conversation seen (four records each): murmur2 is pure Python.
_home = functools.lru_cache(maxsize=1 << 16)(home_partition)


@dataclass(frozen=True)
class WaitBounds:
    """How long the capture waits on what a record promises, in seconds.

    `orphan_s`: a reply (plan, draft, final) whose task has not been read this long after the
    conversation's first reply is released: its offsets no longer hold the commit back. A task
    is written before its replies, so only a forged or lost one waits that long.
    `letter_wait_s`: a dead letter naming a record the capture has not read yet pauses its
    partition until that record is read; if the record's partition makes no progress towards it
    for this long, the letter is dropped, with a note.
    """

    orphan_s: float = 300.0
    letter_wait_s: float = 120.0


DEFAULT_BOUNDS = WaitBounds()


@dataclass
class CaptureResult:
    written: list[str]
    incomplete: dict[str, list[str]]
    invalid: int
    messages: int
    failed: list[str] = field(default_factory=list)  # closed by a dead letter
    moved: int = 0  # records off their home partition, skipped (the agents move them home)
    released: int = 0  # conversations of replies whose task never came (WaitBounds.orphan_s)
    dropped: int = 0  # dead letters naming a record never read (WaitBounds.letter_wait_s)


class Progress(Protocol):
    """What a reader reports to and asks whether to stop: the Watch, or in a worker process its
    relay to the parent's Watch."""

    def assigned(self) -> None: ...
    def heard(self) -> None: ...
    def wrote(self, ids: list[str]) -> None: ...
    def note(self, line: str) -> None: ...
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
    on_note: Callable[[str], None] = lambda line: None
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

    def note(self, line: str) -> None:
        self.on_note(line)

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
    """A dead letter that names a conversation's record (the agents write those), checked by
    type and range (`schemas.DeadLetter`), as a dict; else None."""
    try:
        letter = parse_dead_letter(raw)
    except InvalidMessage:
        return None
    return None if letter.envelope is None else msgspec.to_builtins(letter)


class DeadLetters:
    """Reads the dead-letter partitions in step with the rest: a letter is taken only once the
    record it names has been read (the consumer's position on the source partition is past
    it), else its partition waits there, paused. So a restart that catches up on a long tasks
    backlog cannot see a task's dead letter before the task. No letter pins a partition: one
    naming a record the broker does not have is dropped at once, and one whose source partition
    makes no progress towards the record for `wait_s` is dropped then; each drop is noted."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        assembler: Assembler,
        wait_s: float,
        note: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer, self.assembler = consumer, assembler
        self.wait_s, self.note, self.clock = wait_s, note, clock
        self.mine = set(consumer.assignment())
        # letters' partition → the wait of the letter at its head
        self.waiting: dict[TopicPartition, _Wait] = {}
        self.given_up: set[tuple[TopicPartition, int]] = set()  # letters to drop when read again
        self.dropped = 0

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
            named = letter["source"]["offset"]
            if (position := self.consumer.position(source)) <= named:
                if (why := self._never(tp, record.offset, source, named)) is not None:
                    self._drop(tp, record.offset, why)
                    continue
                self.consumer.seek(tp, record.offset)  # take it again once the source is read
                self.consumer.pause(tp)
                give_up_at = self.clock() + self.wait_s
                self.waiting[tp] = _Wait(source, named, record.offset, give_up_at, position)
                break
            if (failure := self.assembler.add_dead_letter(letter, tp, record.offset)) is not None:
                closed.append(failure)
        return closed

    def _never(self, tp: TopicPartition, at: int, source: TopicPartition, named: int) -> str | None:
        """Why the record a letter names will not be read (None: it may be, so wait)."""
        where = f"{source.topic}[{source.partition}]@{named}"
        if (tp, at) in self.given_up:
            self.given_up.discard((tp, at))
            return f"its record {where} not reached, no progress for {self.wait_s:g} s"
        # The agents dead-letter only committed records, so a genuine one is below the end.
        end = self.consumer.end_offsets([source])[source]
        return f"its record {where} is past the partition's end ({end})" if named >= end else None

    def _drop(self, tp: TopicPartition, at: int, why: str) -> None:
        self.assembler.skip(tp, at)
        self.dropped += 1
        self.note(f"capture: dead letter {tp.topic}[{tp.partition}]@{at} dropped: {why}")

    def resume_due(self) -> None:
        now = self.clock()
        due = []
        for tp, wait in self.waiting.items():
            position = self.consumer.position(wait.source)
            if position > wait.named:
                due.append(tp)
            elif position > wait.position:  # getting there (a backlog): wait on
                wait.position, wait.give_up_at = position, now + self.wait_s
            elif now > wait.give_up_at:
                self.given_up.add((tp, wait.at))  # read again, then dropped
                due.append(tp)
        for tp in due:
            del self.waiting[tp]
        if due:
            self.consumer.resume(*due)


@dataclass
class _Wait:
    """A dead letter waiting for the record it names (`named` on `source`)."""

    source: TopicPartition
    named: int
    at: int  # the letter's own offset
    give_up_at: float
    position: int  # the source's position when it last moved


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
    bounds: WaitBounds = DEFAULT_BOUNDS,
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
    letters = DeadLetters(consumer, assembler, bounds.letter_wait_s, progress.note)
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
                for cid, types in assembler.release_orphans(bounds.orphan_s):
                    result.released += 1
                    progress.note(
                        f"capture: released {one_line(cid)}: {', '.join(types)} read, no task "
                        f"within {bounds.orphan_s:g} s"
                    )
                if batch:
                    progress.heard()
                    # Asynchronous: a later commit supersedes an earlier one; the last is awaited.
                    consumer.commit_async(_offsets(assembler))
        consumer.commit(_offsets(assembler))
    finally:
        consumer.close(autocommit=False)
    result.incomplete = assembler.missing()
    result.dropped = letters.dropped
    return result


def _ids(records: list[dict], progress: Progress) -> list[str]:
    """The records' correlation ids, reported to `progress` as written."""
    ids = [r["correlation_id"] for r in records]
    progress.wrote(ids)
    return ids


def _offsets(assembler: Assembler) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(o, "", -1) for tp, o in assembler.safe_offsets().items()}
