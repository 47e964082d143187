"""What every user of the agents' topics does first: reach the cluster with the project's topics
created; and what a user of the agents does: read tasks and submit them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from custseg.agents.envelope import Envelope, task_envelope
from custseg.agents.topics import topic_partitions
from custseg.config import AgentsParams, read_yaml
from custseg.conversation import DEFAULT_VARIANT
from custseg.errors import ConfigError
from custseg.kafka.admin import ensure_topics
from custseg.kafka.cluster import bootstrap_servers


def connect(params: AgentsParams, timeout_s: float = 10) -> str:
    """The cluster to use ($KAFKA_BOOTSTRAP_SERVERS or the local broker), with every agent topic
    created; a KafkaBrokerError (one line) if it does not answer."""
    bootstrap = bootstrap_servers()
    ensure_topics(bootstrap, topic_partitions(params), timeout_s=timeout_s)
    return bootstrap


def read_tasks(path: Path) -> list[str]:
    """A YAML list of task strings (or of {task: ...} mappings)."""
    if not path.is_file():
        raise ConfigError(f"tasks file not found: {path}")
    items = read_yaml(path) or []
    listed = items if isinstance(items, list) else []
    tasks = [i.get("task") if isinstance(i, dict) else i for i in listed]
    if not tasks or not all(isinstance(t, str) and t.strip() for t in tasks):
        raise ConfigError(f"{path}: must be a non-empty list of task strings")
    return [t.strip() for t in tasks]


def submit_tasks(
    bootstrap: str,
    topic: str,
    tasks: Iterable[str],
    progress: Callable[[list], Iterable] = iter,
    variant: str = DEFAULT_VARIANT,
    correlation_ids: Sequence[str] | None = None,
) -> list[Envelope]:
    """Send one task envelope per task (asking for agent `variant`), keyed by its correlation
    id (a new one, or task i's `correlation_ids[i]`); return them once acked."""
    from custseg.agents.runtime.settings import make_producer

    tasks = list(tasks)
    ids = correlation_ids if correlation_ids is not None else [None] * len(tasks)
    producer = make_producer(bootstrap)
    try:
        envelopes = [
            task_envelope(task, cid, variant) for task, cid in zip(tasks, ids, strict=True)
        ]
        futures = [
            producer.send(topic, key=e.correlation_id.encode(), value=e.to_bytes())
            for e in envelopes
        ]
        for future in progress(futures):
            future.get(timeout=30)
    finally:
        producer.close()
    return envelopes
