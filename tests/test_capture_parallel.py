"""The capture on a real broker, without an LLM: one worker per partition, restarts, stopping.

Each test makes its own topics (co-partitioned: three partitions each, like params.yaml).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from custseg import jsonl
from custseg.agents.capture import capture
from custseg.errors import ConfigError
from custseg.kafka.admin import ensure_topics
from custseg.testing.conversations import produce, send


def topics_for(bootstrap: str, partitions: dict[str, int] | None = None) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    topics = {t: f"{tag}.{t}s" for t in ("task", "plan", "draft", "final")}
    ensure_topics(bootstrap, {name: (partitions or {}).get(t, 3) for t, name in topics.items()})
    return topics


def lines(path: Path) -> list[dict]:
    return jsonl.read(path).values


def test_workers_write_each_conversation_once_and_resume(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = topics_for(kafka_bootstrap)
    out, group = tmp_path / "conversations.jsonl", f"cap-{uuid.uuid4().hex}"
    sent = produce(kafka_bootstrap, topics, 120)
    held = produce(kafka_bootstrap, topics, 2, skip=frozenset({"final"}))  # finals come later
    ids = {c[0].correlation_id for c in sent}
    seen: list[str] = []

    result = capture(
        kafka_bootstrap,
        topics.values(),
        out,
        group,
        workers=3,
        idle_s=1.5,  # counted once every worker has its partitions: all was produced before
        timeout_s=120,
        on_written=seen.append,
    )
    assert sorted(result.written) == sorted(ids) == sorted(seen)
    assert result.messages == 4 * 120 + 3 * 2 and result.invalid == 0
    assert result.incomplete == {c[0].correlation_id: ["final"] for c in held}
    assert sorted(c["correlation_id"] for c in lines(out)) == sorted(ids)
    assert {c["events"]["final"]["model"]["name"] for c in lines(out)} == {"synthetic"}

    # The held conversations complete after a restart (their offsets were not committed past
    # them); nothing already written is written again.
    send(kafka_bootstrap, topics, [c[3] for c in held])
    held_ids = {c[0].correlation_id for c in held}
    again = capture(
        kafka_bootstrap, topics.values(), out, group, workers=3, expect=held_ids, timeout_s=120
    )
    assert sorted(again.written) == sorted(held_ids)
    # Re-read: only the held conversations' parts (committed offsets stopped at them) + finals.
    assert again.messages == 3 * 2 + 2
    # A new group re-reads everything and still appends nothing (the file is the record).
    fresh = capture(kafka_bootstrap, topics.values(), out, f"{group}-new", workers=3, idle_s=1.5)
    assert fresh.written == [] and fresh.incomplete == {}
    assert len(lines(out)) == 122


def test_workers_stop_when_asked(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = topics_for(kafka_bootstrap)
    deadline = time.monotonic() + 1
    started = time.monotonic()
    result = capture(
        kafka_bootstrap,
        topics.values(),
        tmp_path / "c.jsonl",
        f"cap-{uuid.uuid4().hex}",
        workers=3,
        idle_s=None,
        should_stop=lambda: time.monotonic() > deadline,
    )
    assert result.written == [] and result.messages == 0
    assert time.monotonic() - started < 20, "the workers heard the stop"


@pytest.mark.parametrize(
    ("partitions", "workers", "reason"),
    [({"plan": 2}, 2, "co-partitioned"), ({}, 4, "at least 4 partitions")],
)
def test_workers_need_copartitioned_topics(
    kafka_bootstrap: str, tmp_path: Path, partitions: dict[str, int], workers: int, reason: str
) -> None:
    topics = topics_for(kafka_bootstrap, partitions)
    with pytest.raises(ConfigError, match=reason):
        capture(
            kafka_bootstrap,
            topics.values(),
            tmp_path / "c.jsonl",
            f"cap-{uuid.uuid4().hex}",
            workers=workers,
            idle_s=2,
        )
