"""The JSON envelope every agent message travels in, validated on both ends."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from custseg.conversation import DEFAULT_VARIANT, GroundedIn, MessageType, Variant
from custseg.errors import InvalidMessage

SCHEMA_VERSION = 1
AgentName = Literal["user", "planner", "writer", "reviewer"]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# Deterministic reply ids: a reply to the same event always gets the same id, so a redelivered
# input (at-least-once) yields a recognisable duplicate, never a second conversation branch.
_REPLY_NAMESPACE = uuid.UUID("6f1c1b1e-57c0-4b59-9a5e-0c8e2a7d9f10")
# What each message type must carry in `content`.
REQUIRED_CONTENT: dict[MessageType, tuple[str, ...]] = {
    "task": ("task",),
    "plan": ("task", "plan"),
    "draft": ("task", "plan", "draft"),
    "final": ("task", "draft", "final", "review"),
}


class ModelInfo(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    provider: str
    name: str
    params: dict[str, Any] = {}


ToolName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Note = Annotated[str, msgspec.Meta(max_length=1000)]


class ToolCall(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """One tool an agent called (custseg.agents.tools): what with, and what it returned."""

    name: ToolName
    arguments: dict[str, Any] = {}
    result: Any = None


class Edit(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """One edit the review asked for, and whether the final applies it (if not, why)."""

    edit: Note
    applied: bool
    why_not: Note | None = None


class Work(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """What an agent did besides its LLM reply (agent variant v2): the tools it called, the
    repairs and revisions its reply went through to keep the task's limits, the breaches left
    when it was sent anyway (never silently), and, for the Reviewer, its edits."""

    tool_calls: Annotated[tuple[ToolCall, ...], msgspec.Meta(max_length=50)] = ()
    revisions: Annotated[tuple[Note, ...], msgspec.Meta(max_length=20)] = ()
    breaches: Annotated[tuple[Note, ...], msgspec.Meta(max_length=20)] = ()
    edits: Annotated[tuple[Edit, ...], msgspec.Meta(max_length=20)] = ()


# msgspec rather than pydantic: the capture validates every record it reads, and msgspec decodes
# and validates an envelope in ~2 µs against pydantic's ~8 µs (a bare consumer spends ~15 µs).
class Envelope(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, gc=False):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id
    correlation_id: Id
    causation_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    type: MessageType
    agent: AgentName
    produced_at: Annotated[datetime, msgspec.Meta(tz=True)]
    model: ModelInfo | None = None
    grounded_in: GroundedIn | None = None
    content: dict[str, str]
    attempt: Annotated[int, msgspec.Meta(ge=1)] = 1
    error: str | None = None
    variant: Variant = DEFAULT_VARIANT  # optional: a record without it was written by "v1"
    work: Work | None = None  # optional: v1 agents record none

    def to_bytes(self) -> bytes:
        """The record value, validated as the consumers will validate it (both ends check)."""
        raw = _ENCODER.encode(self)
        parse_envelope(raw)
        return raw


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Envelope)
# DOTALL: a field name or path may hold any character, newlines included.
_AT = re.compile(r"(?P<msg>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?", re.DOTALL)
_FIELD = re.compile(
    r"Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]+)`", re.DOTALL
)
MAX_REASON_CHARS = 500
# An envelope is a task and a few short answers (~2 KB with the segments); far past that is no
# envelope. Nesting is bounded by the decoder itself (deep JSON is refused, not recursed into).
MAX_ENVELOPE_BYTES = 256 * 1024


def new_id() -> str:
    return uuid.uuid4().hex


def reply_id(answered: Envelope, agent: str) -> str:
    return uuid.uuid5(_REPLY_NAMESPACE, f"{agent}:{answered.event_id}").hex


def now() -> datetime:
    return datetime.now(UTC)


def task_envelope(
    task: str, correlation_id: str | None = None, variant: str = DEFAULT_VARIANT
) -> Envelope:
    """A new conversation: its first message, from the user, asking for agent `variant`."""
    return Envelope(
        event_id=new_id(),
        correlation_id=correlation_id or new_id(),
        type="task",
        agent="user",
        produced_at=now(),
        content={"task": task},
        variant=variant,
    )


def reply(
    answered: Envelope,
    type_: MessageType,
    agent: AgentName,
    content: dict[str, str],
    model: ModelInfo,
    grounded_in: GroundedIn | None = None,
    variant: str | None = None,
    work: Work | None = None,
) -> Envelope:
    """The reply to `answered`: same conversation, caused by it, with a deterministic id; by
    the variant the task asked for unless the replying agent names its own."""
    return Envelope(
        event_id=reply_id(answered, agent),
        correlation_id=answered.correlation_id,
        causation_id=answered.event_id,
        type=type_,
        agent=agent,
        produced_at=now(),
        model=model,
        grounded_in=grounded_in,
        content=content,
        attempt=answered.attempt,
        variant=answered.variant if variant is None else variant,
        work=work,
    )


def parse_envelope(raw: bytes | None) -> Envelope:
    """Decode and validate one record value; raise InvalidMessage naming the first problem."""
    if raw is None:
        raise InvalidMessage("empty record (no value)")
    if len(raw) > MAX_ENVELOPE_BYTES:  # before any parsing: no work spent on a flood
        raise InvalidMessage(f"record too large: {len(raw):,} bytes (limit {MAX_ENVELOPE_BYTES:,})")
    try:
        envelope = _DECODER.decode(raw)
    except msgspec.ValidationError as error:
        raise InvalidMessage(one_line(validation_reason(str(error)))) from None
    except msgspec.DecodeError as error:
        reason = str(error).removeprefix("JSON is malformed: ")
        raise InvalidMessage(one_line(f"not JSON: {reason}")) from None
    except (RecursionError, MemoryError, ValueError, TypeError) as error:  # any other refusal
        raise InvalidMessage(f"unreadable record: {type(error).__name__}") from None
    required = REQUIRED_CONTENT[envelope.type]
    if not all(map(envelope.content.get, required)):  # map and all run in C: the hot path
        missing = [k for k in required if not envelope.content.get(k)]
        raise InvalidMessage(f"invalid envelope: content of a {envelope.type} lacks {missing}")
    return envelope


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """`text` as one printable line of at most `limit` characters: control characters (from a
    hostile field name, say) are escaped, so a reason can never break a log or a report line."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit * 2])
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def validation_reason(error: str) -> str:
    """msgspec's "message - at `$.path`" as "invalid envelope: path: message"."""
    at = _AT.fullmatch(error)
    message, where = at["msg"], at["path"] or ""
    if field := _FIELD.fullmatch(message):
        where = f"{where}.{field['name']}" if where else field["name"]
        message = "field required" if field["what"] == "missing required" else "unknown field"
    elif not where and message.startswith("Expected `object`"):
        return f"not a JSON object: {message.rpartition('got ')[2].strip('`')}"
    return f"invalid envelope: {where or '<root>'}: {message}"


def json_schema() -> dict[str, Any]:
    """The envelope's JSON schema (published as custseg/agents/envelope.schema.json)."""
    return msgspec.json.decode(msgspec.json.encode(msgspec.json.schema(Envelope)))  # as JSON
