"""The JSON envelope every agent message travels in, validated on both ends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
MessageType = Literal["task", "plan", "draft", "final"]
AgentName = Literal["user", "planner", "writer", "reviewer"]
# Deterministic reply ids: a reply to the same event always gets the same id, so a redelivered
# input (at-least-once) yields a recognisable duplicate, never a second conversation branch.
_REPLY_NAMESPACE = uuid.UUID("6f1c1b1e-57c0-4b59-9a5e-0c8e2a7d9f10")
# What each message type must carry in `content`.
REQUIRED_CONTENT: dict[str, tuple[str, ...]] = {
    "task": ("task",),
    "plan": ("task", "plan"),
    "draft": ("task", "plan", "draft"),
    "final": ("task", "draft", "final", "review"),
}


class InvalidMessage(ValueError):
    """A record that is not a valid envelope; the message says what is wrong, in one line."""


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    provider: str
    name: str
    params: dict[str, Any] = {}


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(min_length=1, max_length=64)
    correlation_id: str = Field(min_length=1, max_length=64)
    causation_id: str | None = Field(None, max_length=64)
    type: MessageType
    agent: AgentName
    produced_at: AwareDatetime
    model: ModelInfo | None = None
    content: dict[str, str]
    attempt: int = Field(1, ge=1)
    error: str | None = None

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def new_id() -> str:
    return uuid.uuid4().hex


def reply_id(answered: Envelope, agent: str) -> str:
    return uuid.uuid5(_REPLY_NAMESPACE, f"{agent}:{answered.event_id}").hex


def now() -> datetime:
    return datetime.now(UTC)


def task_envelope(task: str, correlation_id: str | None = None) -> Envelope:
    """A new conversation: its first message, from the user."""
    return Envelope(
        event_id=new_id(),
        correlation_id=correlation_id or new_id(),
        type="task",
        agent="user",
        produced_at=now(),
        content={"task": task},
    )


def reply(
    answered: Envelope,
    type_: MessageType,
    agent: AgentName,
    content: dict[str, str],
    model: ModelInfo,
) -> Envelope:
    """The reply to `answered`: same conversation, caused by it, with a deterministic id."""
    return Envelope(
        event_id=reply_id(answered, agent),
        correlation_id=answered.correlation_id,
        causation_id=answered.event_id,
        type=type_,
        agent=agent,
        produced_at=now(),
        model=model,
        content=content,
        attempt=answered.attempt,
    )


def parse_envelope(raw: bytes | None) -> Envelope:
    """Decode and validate one record value; raise InvalidMessage naming the first problem."""
    if raw is None:
        raise InvalidMessage("empty record (no value)")
    try:
        # pydantic's own JSON parser: one pass, no intermediate dicts (the capture's hot path).
        envelope = Envelope.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            raise InvalidMessage(
                f"not JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
            ) from None
        if first["type"] == "model_type":
            raise InvalidMessage(f"not a JSON object: {type(first['input']).__name__}") from None
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise InvalidMessage(f"invalid envelope: {where}: {first['msg']}") from None
    missing = [k for k in REQUIRED_CONTENT[envelope.type] if not envelope.content.get(k)]
    if missing:
        raise InvalidMessage(f"invalid envelope: content of a {envelope.type} lacks {missing}")
    return envelope


def json_schema() -> dict[str, Any]:
    """The envelope's JSON schema (published as eval/envelope.schema.json)."""
    return Envelope.model_json_schema()
