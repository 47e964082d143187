"""Capture: join the agent topics by correlation_id and append each complete conversation once.

Offsets are committed only up to the oldest message of a conversation still being assembled, so a
restart re-reads what it needs; conversations already in the file are recognised and skipped.
It reads `read_committed`: only what the agents' transactions committed, one version of each
reply. A record off its conversation's home partition is skipped (the agents move it home). A
dead letter that names a record the conversation holds closes it as failed: one line in the
`.failed.jsonl` file beside the output, with the reason, so its offsets are released.
Only one capture writes a file at a time (a lock file beside it).

The capture assigns itself the agent topics' partitions instead of joining its group: the four
parts of a conversation must meet in one reader, so a rebalance can only hurt, and without group
membership there is no session to time out while the machine is busy with the LLM. The group id
is still where its offsets are committed. With `workers` > 1, worker k reads the partitions
p % workers == k of every topic (see `slice_partitions`), in its own process.
"""

from __future__ import annotations

import fcntl
import functools
import gc
import json
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import BinaryIO

import msgspec
from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from custseg.agents.envelope import Envelope, parse_envelope
from custseg.agents.topics import home_partition
from custseg.conversation import CHAIN
from custseg.errors import ConfigError, InvalidMessage

POLL_MS = 20  # also how soon a worker notices the stop
# The home partition of each conversation seen (four records each): murmur2 is pure Python.
_home = functools.lru_cache(maxsize=1 << 16)(home_partition)


def failed_path(out: Path) -> Path:
    """Where conversations closed by a dead letter are recorded: beside `out`."""
    return out.with_name(f"{out.stem}.failed{out.suffix}")


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


def conversation_record(chain: dict[str, Envelope]) -> dict:
    """The JSON line written for one complete conversation (times and models stay objects: msgspec
    encodes them in C, times in RFC 3339 as on the wire)."""
    task, plan, draft, final = (chain[t] for t in CHAIN)
    return {
        "correlation_id": task.correlation_id,
        "task": task.content["task"],
        "plan": plan.content["plan"],
        "draft": draft.content["draft"],
        "final": final.content["final"],
        "review": final.content["review"],
        "grounded_in": final.grounded_in,  # the model whose segments the answer was given
        "started_at": task.produced_at,
        "completed_at": final.produced_at,
        "events": {
            t: {
                "event_id": e.event_id,
                "causation_id": e.causation_id,
                "agent": e.agent,
                "produced_at": e.produced_at,
                "model": e.model,
                "grounded_in": e.grounded_in,
            }
            for t, e in chain.items()
        },
    }


def find_chain(parts: list[Envelope]) -> dict[str, Envelope] | None:
    """A task → plan → draft → final chain linked by causation ids, if one is complete."""
    answers: dict[tuple[str | None, str], Envelope] = {}
    for e in parts:  # the first copy read wins, should a reply ever exist twice
        answers.setdefault((e.causation_id, e.type), e)
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
        return self._close(cid, conversation_record(chain))

    def add_dead_letter(self, letter: dict, tp: TopicPartition, offset: int) -> dict | None:
        """Add a dead letter, read after the record it names; return the failure record if that
        record is part of a pending conversation (read from the letter's source topic)."""
        self.consumed[tp] = offset + 1
        about = letter["envelope"]
        cid, source = about["correlation_id"], (letter["source"]["topic"], about["event_id"])
        parts = self.pending.get(cid, ())
        if source not in {(part_tp.topic, e.event_id) for e, part_tp, _ in parts}:
            return None  # written already, or not a record this capture holds
        return self._close(cid, failure_record(cid, self.pending[cid], letter))

    def _close(self, cid: str, record: dict) -> dict:
        for _, part_tp, part_offset in self.pending.pop(cid):
            del self.held[part_tp][part_offset]
        self.written.add(cid)
        return record

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


def failure_record(
    cid: str, parts: list[tuple[Envelope, TopicPartition, int]], letter: dict
) -> dict:
    """The line recorded for a conversation a dead letter closed: how far it got, and why."""
    return {
        "correlation_id": cid,
        "status": "failed",
        "reason": letter["reason"],
        "agent": letter["agent"],
        "failed_at": letter["at"],
        "dead_lettered": {"topic": letter["source"]["topic"], **letter["envelope"]},
        "reached": [t for t in CHAIN if any(e.type == t for e, _, _ in parts)],
    }


def recover(path: Path) -> set[str]:
    """Correlation ids already captured, or closed as failed."""
    return ids_in(path) | ids_in(failed_path(path))


def ids_in(path: Path) -> set[str]:
    """The correlation ids of a JSONL file's lines; a torn last line (crash mid-write) is cut."""
    if not path.exists():
        return set()
    with path.open("r+b") as f:
        cut_torn_tail(f.fileno())
        data = f.read()
    return {json.loads(line)["correlation_id"] for line in data.splitlines() if line.strip()}


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


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def seconds_per_conversation(path: Path, batch_gap_s: float = 60.0) -> float | None:
    """The measured cost behind capture's estimate: the last batch of conversations in `path`
    (tasks started within `batch_gap_s` of each other, as `submit` sends them), from its first
    task to its last final, divided by its size. None without a readable earlier batch."""
    spans = []
    for line in path.read_text(errors="replace").splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
            spans.append((_utc(row["started_at"]), _utc(row["completed_at"])))
        except (ValueError, KeyError, TypeError, RecursionError):
            continue  # the estimate uses what it can read
    spans.sort()
    batch = spans[-1:]
    for span in reversed(spans[:-1]):
        if (batch[0][0] - span[0]).total_seconds() > batch_gap_s:
            break
        batch.insert(0, span)
    if not batch:
        return None
    took = (max(end for _, end in batch) - batch[0][0]).total_seconds()
    return took / len(batch) if took > 0 else None


def cut_torn_tail(fd: int, chunk: int = 1 << 16) -> None:
    """Truncate the file after its last newline: a writer that died mid-write left the rest."""
    size = os.fstat(fd).st_size
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep, end = 0, size
    while end > 0:  # read back chunk by chunk: a record can be longer than one
        start = max(0, end - chunk)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    os.ftruncate(fd, keep)


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


@dataclass
class CaptureResult:
    written: list[str]
    incomplete: dict[str, list[str]]
    invalid: int
    messages: int
    failed: list[str] = field(default_factory=list)  # closed by a dead letter
    moved: int = 0  # records off their home partition, skipped (the agents move them home)


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


def append(sink: BinaryIO, lines: bytes) -> None:
    """Append whole lines and fsync, under an exclusive lock so parallel workers never interleave.
    A writer killed mid-write leaves a torn last line; it is cut first (its conversation's offsets
    were never committed, so it is captured again)."""
    fcntl.flock(sink, fcntl.LOCK_EX)
    try:
        cut_torn_tail(sink.fileno())
        sink.write(lines)
        sink.flush()
        os.fsync(sink.fileno())
    finally:
        fcntl.flock(sink, fcntl.LOCK_UN)


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
    watch: Watch | _Relay,
) -> CaptureResult:
    """One worker: join its slice of partitions, append complete conversations (and those a
    dead letter closed), commit."""
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
    watch.assigned()
    result = CaptureResult([], {}, 0, 0)
    letters = DeadLetters(consumer, assembler)
    parse, add, home = parse_envelope, assembler.add, _home  # the hot loop's, bound once
    try:
        # a+: appends, and can read the tail back (see append)
        with out.open("a+b") as sink, _rare_collections():
            while not watch.over():
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
                    append(sink, _jsonl(new))
                    result.written += _ids(new, watch)
                if closed:  # rare: the failure file is opened only when there is one
                    with failed_path(out).open("a+b") as failures:
                        append(failures, _jsonl(closed))
                    result.failed += _ids(closed, watch)
                if batch:
                    watch.heard()
                    # Asynchronous: a later commit supersedes an earlier one; the last is awaited.
                    consumer.commit_async(_offsets(assembler))
        consumer.commit(_offsets(assembler))
    finally:
        consumer.close(autocommit=False)
    result.incomplete = assembler.missing()
    return result


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


def _jsonl(records: list[dict]) -> bytes:
    return b"".join(msgspec.json.encode(r) + b"\n" for r in records)


def _ids(records: list[dict], watch: Watch | _Relay) -> list[str]:
    """The records' correlation ids, reported to `watch` as written."""
    ids = [r["correlation_id"] for r in records]
    watch.wrote(ids)
    return ids


def _offsets(assembler: Assembler) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(o, "", -1) for tp, o in assembler.safe_offsets().items()}


def capture(
    bootstrap: str,
    topics: Iterable[str],
    out: Path,
    group: str,
    *,
    workers: int = 1,
    dlq: str | None = None,
    expect: set[str] | None = None,
    idle_s: float | None = 10.0,
    timeout_s: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_written: Callable[[str], None] = lambda correlation_id: None,
) -> CaptureResult:
    """Consume the chain's `topics` (task, plan, draft, final: `topics.chain_topics`) until every
    `expect`ed conversation is written, `idle_s` passes with no message, `timeout_s` elapses or
    `should_stop()`; append complete conversations to `out`.

    `workers` > 1 reads the partitions in that many processes (see `slice_partitions`). With
    the `dlq` topic, a conversation a dead letter ends is closed as failed (see `failed_path`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with only_writer(out):
        captured = recover(out)
        watch = Watch(
            written=set(captured),
            expect=expect,
            idle_s=idle_s,
            timeout_s=timeout_s,
            asked=should_stop,
            on_written=on_written,
            readers=workers,
        )
        args = (bootstrap, list(topics), out, group, dlq)
        if workers == 1:
            return read_slice(*args, 0, 1, captured, watch)
        return _in_parallel(args, workers, captured, watch)


@contextmanager
def only_writer(out: Path) -> Iterator[None]:
    """Hold the capture lock of `out` (a file beside it) or refuse in one line: two captures
    appending to one file would each write the conversations the other did not see yet."""
    with lock_path(out).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"capture: another capture is writing {out} (it holds {lock_path(out)})"
            ) from None
        yield  # the lock goes with the file's closing, also when the process is killed


class _Relay:
    """A worker process's view of the parent's Watch: reports go up a queue, the stop comes down
    as an event (or when the parent is gone)."""

    def __init__(self, worker: int, events: Queue, stop: Event) -> None:
        self.worker, self.events, self.stop, self.parent = worker, events, stop, os.getppid()

    def wrote(self, ids: list[str]) -> None:
        self.events.put((self.worker, "wrote", ids))

    def heard(self) -> None:
        self.events.put((self.worker, "heard", None))

    def assigned(self) -> None:
        self.events.put((self.worker, "assigned", None))

    def over(self) -> bool:
        return self.stop.is_set() or os.getppid() != self.parent


def _work(
    args: tuple, captured: set[str], worker: int, workers: int, events: Queue, stop: Event
) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the parent decides when to stop, and says so
    try:
        result = read_slice(*args, worker, workers, captured, _Relay(worker, events, stop))
        events.put((worker, "done", result))
    except Exception as error:
        events.put((worker, "failed", error))  # re-raised by the parent, type and message intact


def _in_parallel(args: tuple, workers: int, captured: set[str], watch: Watch) -> CaptureResult:
    # fork: the workers start in milliseconds, with this process's imports already done
    context = multiprocessing.get_context("fork")
    events, stop = context.Queue(), context.Event()
    processes = [
        context.Process(target=_work, args=(args, captured, k, workers, events, stop), daemon=True)
        for k in range(workers)
    ]
    for process in processes:
        process.start()
    reports: dict[int, CaptureResult | Exception] = {}  # a result, or why the worker failed
    silent: set[int] = set()
    try:
        while len(reports) < workers:
            try:
                worker, kind, value = events.get(timeout=0.2)
            except queue.Empty:
                # Exited without a report (killed)? Only if seen twice: a report may be in flight.
                gone = {k for k, p in enumerate(processes) if p.exitcode is not None} - set(reports)
                for k in gone & silent:
                    reports[k] = RuntimeError(
                        f"capture: worker {k} exited with code {processes[k].exitcode}"
                    )
                silent, kind = gone, None
            if kind == "wrote":
                watch.wrote(value)
            elif kind == "heard":
                watch.heard()
            elif kind == "assigned":
                watch.assigned()
            elif kind in ("done", "failed"):
                reports[worker] = value
            if watch.over() or any(isinstance(r, Exception) for r in reports.values()):
                stop.set()
    finally:
        stop.set()
        for process in processes:
            process.join()
    if failures := [r for r in reports.values() if isinstance(r, Exception)]:
        raise failures[0]
    results = list(reports.values())
    return CaptureResult(
        written=[cid for r in results for cid in r.written],
        incomplete={cid: parts for r in results for cid, parts in r.incomplete.items()},
        invalid=sum(r.invalid for r in results),
        messages=sum(r.messages for r in results),
        failed=[cid for r in results for cid in r.failed],
        moved=sum(r.moved for r in results),
    )
