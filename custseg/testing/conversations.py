"""Synthetic agent conversations (no LLM): for the capture's tests and its benchmark."""

from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaProducer

from custseg.agents.envelope import Envelope, ModelInfo, reply, task_envelope

MODEL = ModelInfo(provider="local", name="synthetic")


def conversation(task: str = "t", model: ModelInfo = MODEL) -> list[Envelope]:
    """Task, plan, draft and final of one conversation, linked as the agents link them."""
    first = task_envelope(task)
    plan = reply(first, "plan", "planner", {"task": task, "plan": "1. p"}, model)
    draft = reply(plan, "draft", "writer", {"task": task, "plan": "1. p", "draft": "d"}, model)
    final = reply(
        draft, "final", "reviewer", {"task": task, "draft": "d", "final": "f", "review": "r"}, model
    )
    return [first, plan, draft, final]


def send(bootstrap: str, topics: dict[str, str], envelopes: Iterable[Envelope]) -> None:
    """Each envelope to `topics[its type]`, keyed by its correlation id (as the agents send)."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256_000
    )
    for envelope in envelopes:
        producer.send(
            topics[envelope.type], key=envelope.correlation_id.encode(), value=envelope.to_bytes()
        )
    producer.flush()
    producer.close()


def produce(
    bootstrap: str, topics: dict[str, str], n: int, *, skip: frozenset[str] = frozenset()
) -> list[list[Envelope]]:
    """Send `n` conversations, leaving out the message types in `skip`; returns them all."""
    sent = [conversation(f"task {i}: which segment should get the spring flyer?") for i in range(n)]
    send(bootstrap, topics, (e for envelopes in sent for e in envelopes if e.type not in skip))
    return sent
