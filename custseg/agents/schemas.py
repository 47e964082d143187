"""The schemas of what the agents and the capture read besides the envelope (envelope.py): the
retry header a copy carries on the retry topic, and the dead letter. Each is checked by type
(msgspec, strict: no bool for an int, no string for a number) and by range (topics known,
partitions and offsets within Kafka's bounds, attempts and due times bounded) before any field
is used; anything else is refused with an InvalidMessage naming the problem, in one line.

Pure functions: the clock (`now`) and the bounds are arguments, so tests set them small.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated

import msgspec

from custseg.agents.envelope import Id, one_line, validation_reason
from custseg.errors import InvalidMessage

RETRY_HEADER = "custseg-retry"  # JSON: role, attempt, due (epoch s), source, spent (LLM s so far)
# Kafka's own bounds: a partition id is an int32, an offset an int64; a topic name ≤ 249 chars.
MAX_PARTITION = 2**31 - 1
MAX_OFFSET = 2**63 - 1
MAX_TOPIC_CHARS = 249
# A retry header is ~150 bytes; a dead letter fits in one Kafka request (letters.py).
MAX_HEADER_BYTES = 1024
MAX_DEAD_LETTER_BYTES = 1_048_576
# Clocks of the processes writing and reading a retry may differ by this much.
RETRY_CLOCK_SKEW_S = 60.0
# The role that answers for a record on the retry topic whose header names no role it can read:
# one role only, so such a record is one dead letter (not one per role reading the topic).
FALLBACK_OWNER = "planner"


class Place(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Where a record was read: topic, partition, offset."""

    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOPIC_CHARS)]
    partition: Annotated[int, msgspec.Meta(ge=0, le=MAX_PARTITION)]
    offset: Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)]

    def as_dict(self) -> dict:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


class RetryNote(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The retry header: the role that answers the copy, the attempt it will be, when it is due
    (epoch seconds), the original record's place and the LLM seconds its attempts spent so far
    (counted against the task's time budget; absent in headers written before the budget)."""

    role: Annotated[str, msgspec.Meta(max_length=32)]
    attempt: Annotated[int, msgspec.Meta(ge=1, le=1000)]
    due: Annotated[float, msgspec.Meta(ge=0)]
    source: Place
    spent: Annotated[float, msgspec.Meta(ge=0)] = 0.0


@dataclass(frozen=True)
class RetryBounds:
    """What a valid retry header may say here: each role's input topic (the only topic its
    copies come from), the partition count, the attempts, and how far ahead a due time can be."""

    inputs: Mapping[str, str]  # role → the topic it answers
    partitions: int
    attempts: int
    max_ahead_s: float


@dataclass(frozen=True)
class RetryRead:
    """A record of the retry topic as read: the role that must act on it (the header's, else
    FALLBACK_OWNER), and either its valid note or why it has none."""

    owner: str
    note: RetryNote | None = None
    problem: str | None = None


_NOTE = msgspec.json.Decoder(RetryNote)


def max_retry_wait_s(retry_pause_s: float, attempts: int) -> float:
    """How far ahead a genuine retry can be due: the longest pause the workers set
    (`retry_pause_s` × attempt), with room for clock skew. Further ahead is forged."""
    return retry_pause_s * attempts + RETRY_CLOCK_SKEW_S


def read_retry(headers: Iterable | None, bounds: RetryBounds, now: float) -> RetryRead:
    """The first `custseg-retry` header of a retry-topic record, checked against `bounds` at
    epoch time `now`. Never raises: a problem is returned, for its owner to dead-letter."""
    raw = next((v for k, v in headers or () if k == RETRY_HEADER), None)
    if raw is None:
        return RetryRead(FALLBACK_OWNER, problem=f"retry record without a {RETRY_HEADER} header")
    owner = _claimed_role(raw, bounds.inputs)
    try:
        return RetryRead(owner, check_retry_note(parse_retry_note(raw), bounds, now))
    except InvalidMessage as error:
        return RetryRead(owner, problem=str(error))


def parse_retry_note(raw: bytes | None) -> RetryNote:
    """Decode a retry header's value by type; InvalidMessage naming the problem."""
    if raw is None:
        raise InvalidMessage(f"{RETRY_HEADER} header: empty")
    if len(raw) > MAX_HEADER_BYTES:
        raise InvalidMessage(
            f"{RETRY_HEADER} header: {len(raw):,} bytes (limit {MAX_HEADER_BYTES:,})"
        )
    try:
        return _NOTE.decode(raw)
    except msgspec.DecodeError as error:
        raise InvalidMessage(_problem(f"{RETRY_HEADER} header", error)) from None
    except (RecursionError, ValueError, TypeError) as error:
        raise InvalidMessage(
            f"{RETRY_HEADER} header: unreadable ({type(error).__name__})"
        ) from None


def check_retry_note(note: RetryNote, bounds: RetryBounds, now: float) -> RetryNote:
    """`note` if every field is in range for `bounds` at epoch time `now`, else InvalidMessage."""
    head = f"{RETRY_HEADER} header"
    if note.role not in bounds.inputs:
        raise InvalidMessage(one_line(f"{head}: unknown role {note.role!r}"))
    if not 2 <= note.attempt <= bounds.attempts:  # a copy is attempt 2 at least
        raise InvalidMessage(f"{head}: attempt {note.attempt} not in 2..{bounds.attempts}")
    if not math.isfinite(note.due):
        raise InvalidMessage(f"{head}: due {note.due} is not a time")
    if not math.isfinite(note.spent):
        raise InvalidMessage(f"{head}: spent {note.spent} is not a duration")
    if note.due - now > bounds.max_ahead_s:
        raise InvalidMessage(
            f"{head}: due {note.due - now:.0f} s ahead, more than a retry ever waits "
            f"({bounds.max_ahead_s:g} s)"
        )
    source, expected = note.source, bounds.inputs[note.role]
    if source.topic != expected:
        raise InvalidMessage(
            one_line(f"{head}: source topic {source.topic!r}, not {note.role}'s {expected!r}")
        )
    if source.partition >= bounds.partitions:
        raise InvalidMessage(
            f"{head}: source partition {source.partition} of {bounds.partitions} partitions"
        )
    return note


def _claimed_role(raw: bytes, roles: Iterable[str]) -> str:
    """The role a header names, if it is one of `roles` (even if the rest of it is invalid:
    that role dead-letters it), else FALLBACK_OWNER."""
    try:
        role = msgspec.json.decode(raw[:MAX_HEADER_BYTES]).get("role")
    except (msgspec.DecodeError, AttributeError, RecursionError, ValueError, TypeError):
        return FALLBACK_OWNER
    return role if isinstance(role, str) and role in roles else FALLBACK_OWNER


class LetterAbout(msgspec.Struct, frozen=True):
    """The conversation record a dead letter names."""

    correlation_id: Id
    event_id: Id
    type: Annotated[str, msgspec.Meta(max_length=16)]


class DeadLetter(msgspec.Struct, frozen=True):
    """The fields of a dead letter the capture uses (others are carried, not read)."""

    reason: Annotated[str, msgspec.Meta(max_length=4096)]
    agent: Annotated[str, msgspec.Meta(max_length=32)]
    at: Annotated[str, msgspec.Meta(max_length=64)]
    source: Place
    envelope: LetterAbout | None


_LETTER = msgspec.json.Decoder(DeadLetter)


def parse_dead_letter(raw: bytes | None) -> DeadLetter:
    """Decode a dead letter by type and range; InvalidMessage naming the problem."""
    if not raw:
        raise InvalidMessage("dead letter: empty")
    if len(raw) > MAX_DEAD_LETTER_BYTES:
        raise InvalidMessage(f"dead letter: {len(raw):,} bytes (limit {MAX_DEAD_LETTER_BYTES:,})")
    try:
        return _LETTER.decode(raw)
    except msgspec.DecodeError as error:
        raise InvalidMessage(_problem("dead letter", error)) from None
    except (RecursionError, ValueError, TypeError) as error:
        raise InvalidMessage(f"dead letter: unreadable ({type(error).__name__})") from None


def _problem(what: str, error: msgspec.DecodeError) -> str:
    """msgspec's error as "what: path: problem" (as the envelope's), in one line."""
    if not isinstance(error, msgspec.ValidationError):
        return one_line(f"{what}: not JSON: {str(error).removeprefix('JSON is malformed: ')}")
    return one_line(f"{what}: {validation_reason(str(error)).removeprefix('invalid envelope: ')}")
