"""What one input comes to (`Outcome`): the records to write in the transaction that commits
its offset; and what a worker counts of them (`WorkerStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Send:
    topic: str
    partition: int | None  # None: the producer's partitioner (a record with no conversation)
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What one input comes to: the records written in the transaction that commits its offset
    (none for a duplicate, or another role's retry)."""

    kind: Literal["answered", "moved", "duplicate", "dead-lettered", "retry", "not mine"]
    sends: tuple[Send, ...] = ()
    event: str = ""  # reported once the transaction commits
    event_id: str | None = None  # the answered input, remembered to skip a second copy
    llm_s: float = 0.0


@dataclass
class WorkerStats:
    handled: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    moved: int = 0
    retries: int = 0
    restarts: int = 0  # of the role's worker, in place, by the supervisor
    llm_s: list[float] = field(default_factory=list)  # per answered record: the LLM call
    overhead_s: list[float] = field(default_factory=list)  # per record: wall time beyond the LLM


# Which WorkerStats counter each outcome kind adds one to ("not mine": none).
COUNTERS = {
    "answered": "handled",
    "duplicate": "duplicates",
    "dead-lettered": "dead_letters",
    "moved": "moved",
    "retry": "retries",
}
