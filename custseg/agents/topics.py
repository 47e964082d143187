"""A conversation's chain of message types and the topic each one travels on.

task ─► planner ─► plan ─► writer ─► draft ─► reviewer ─► final; records that cannot be
answered go to the dead-letter topic. Every topic has the same partition count (co-partitioned),
so one conversation's records, keyed by its correlation id, share a partition number.
"""

from __future__ import annotations

from typing import Literal, get_args

from custseg.config import AgentsParams, TopicNames

MessageType = Literal["task", "plan", "draft", "final"]
CHAIN: tuple[MessageType, ...] = get_args(MessageType)  # one conversation, in order


def topic_of(topics: TopicNames, message_type: MessageType) -> str:
    """The topic a message of this type travels on."""
    return {"task": topics.tasks, "plan": topics.plans, "draft": topics.drafts,
            "final": topics.finals}[message_type]  # fmt: skip


def chain_topics(topics: TopicNames) -> list[str]:
    """The conversation's topics in chain order: what the capture reads."""
    return [topic_of(topics, message_type) for message_type in CHAIN]


def topic_partitions(params: AgentsParams) -> dict[str, int]:
    """Every agent topic (the chain and the dead letters) with its partition count."""
    return {topic: params.partitions for topic in [*chain_topics(params.topics), params.topics.dlq]}
