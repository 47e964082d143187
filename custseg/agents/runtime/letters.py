"""What the agents write about a record they could not answer: a dead letter (why, where the
record came from, its conversation and its bytes), and the retry header a copy of an input
carries on the retry topic (whose it is, which attempt, when it is due, where it came from)."""

from __future__ import annotations

import base64
import hashlib
import json

from custseg.agents.envelope import Envelope, now, one_line
from custseg.agents.schemas import RETRY_HEADER

# A dead letter must always fit in a Kafka request (1 MB by default) whatever it quotes: the input's
# value is kept up to this many bytes (JSON escaping can grow them 6×), its key up to MAX_KEY_BYTES.
MAX_QUOTED_BYTES = 64 * 1024
MAX_KEY_BYTES = 1024


def dead_letter(
    record, reason: str, agent: str, envelope: Envelope | None = None, source: dict | None = None
) -> bytes:
    """The dead-letter record: the reason, where the input came from (`source`, else the
    record's own place), the conversation it belongs to when it was readable, and its raw bytes
    (the first MAX_QUOTED_BYTES of them, with the size and SHA-256 of the whole value)."""
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
            "source": source or place(record),
            "envelope": None
            if envelope is None
            else {
                "correlation_id": envelope.correlation_id,
                "event_id": envelope.event_id,
                "type": envelope.type,
            },
            "key": key,
            "value": value,
            "encoding": encoding,
            "value_bytes": len(raw),
            "value_sha256": hashlib.sha256(raw).hexdigest(),
            "truncated": len(raw) > len(quoted),
        }
    ).encode()


def place(record) -> dict:
    """Where a record was read: topic, partition, offset."""
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def retry_header(
    role: str, attempt: int, due: float, source: dict, spent: float = 0.0
) -> tuple[str, bytes]:
    """The header of a retry copy: the role that answers it, the attempt it will be, when it is
    due (epoch seconds), the original record's place and the LLM seconds spent on it so far
    (counted against the task's time budget)."""
    note = {"role": role, "attempt": attempt, "due": due, "source": source, "spent": spent}
    return RETRY_HEADER, json.dumps(note).encode()
