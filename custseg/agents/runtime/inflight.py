"""The inputs a worker is answering, several at a time, and which of them may be committed.

LLM calls run in a small pool, so one slow call does not hold up the conversations behind it.
Kafka commits a partition's offset as "everything before this is done", so an input's offset is
committed only once every earlier input of its partition is done too: each partition keeps its
inputs in offset order and gives up its done prefix (`ready`). An input still in flight at the
head of a partition while later ones are done holds them up; `holding_up` names it, for the
worker to hand it over to the retry topic (and commit the rest).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import TopicPartition


@dataclass
class Entry:
    """One input being answered: its record, the answer to come, and how to walk away from it."""

    record: Any
    future: Future  # its outcome
    job: Any = None  # what the worker needs to hand it over (None: no LLM call)
    started: float = field(default_factory=time.monotonic)
    abandon: threading.Event = field(default_factory=threading.Event)
    call: Future | None = None  # the LLM call's own outcome (differs once handed over)


class InFlight:
    """Per partition, the inputs being answered, in offset order."""

    def __init__(self) -> None:
        self.by_partition: dict[TopicPartition, deque[Entry]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self.by_partition.values())

    def entries(self) -> Iterator[Entry]:
        for queue in self.by_partition.values():
            yield from queue

    def add(self, tp: TopicPartition, entry: Entry) -> None:
        """Add the next input of `tp`; one at or before an offset already here means the
        partition was read again (a seek, a rebalance): the entries from there are dropped."""
        queue = self.by_partition.setdefault(tp, deque())
        if queue and entry.record.offset <= queue[-1].record.offset:
            self.drop_from(tp, entry.record.offset)
        queue.append(entry)

    def ready(self) -> list[tuple[TopicPartition, Entry]]:
        """Take out, per partition, the done entries that no entry in flight precedes."""
        taken = []
        for tp, queue in self.by_partition.items():
            while queue and queue[0].future.done():
                taken.append((tp, queue.popleft()))
        self.by_partition = {tp: q for tp, q in self.by_partition.items() if q}
        return taken

    def holding_up(self, older_than_s: float) -> list[tuple[TopicPartition, Entry]]:
        """The heads in flight for over `older_than_s` with a done entry behind them."""
        now = time.monotonic()
        return [
            (tp, queue[0])
            for tp, queue in self.by_partition.items()
            if not queue[0].future.done()
            and now - queue[0].started > older_than_s
            and any(e.future.done() for e in list(queue)[1:])
        ]

    def drop_from(self, tp: TopicPartition, offset: int) -> list[Entry]:
        """Walk away from `tp`'s entries at `offset` and after; return them."""
        queue = self.by_partition.get(tp, deque())
        kept = deque(e for e in queue if e.record.offset < offset)
        dropped = [e for e in queue if e.record.offset >= offset]
        for entry in dropped:
            entry.abandon.set()
        if kept:
            self.by_partition[tp] = kept
        else:
            self.by_partition.pop(tp, None)
        return dropped

    def drop_all(self) -> dict[TopicPartition, int]:
        """Walk away from every entry; return each partition's first offset (to read again)."""
        firsts = {tp: q[0].record.offset for tp, q in self.by_partition.items()}
        for entry in self.entries():
            entry.abandon.set()
        self.by_partition = {}
        return firsts
