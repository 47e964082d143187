"""A conversation's chain of message types and the topic each one travels on.

task ─► planner ─► plan ─► writer ─► draft ─► reviewer ─► final; records that cannot be
answered go to the dead-letter topic. Every topic has the same partition count (co-partitioned),
and every record of a conversation lives on its home partition (`home_partition` of its
correlation id), so one conversation's records share a partition number whatever client wrote
its task: the agents move a record found elsewhere to its home before answering it.
"""

from __future__ import annotations

from kafka.partitioner.default import murmur2

from custseg.config import AgentsParams, TopicNames
from custseg.conversation import CHAIN, MessageType


def topic_of(topics: TopicNames, message_type: MessageType) -> str:
    """The topic a message of this type travels on."""
    return {"task": topics.tasks, "plan": topics.plans, "draft": topics.drafts,
            "final": topics.finals}[message_type]  # fmt: skip


def chain_topics(topics: TopicNames) -> list[str]:
    """The conversation's topics in chain order: what the capture reads."""
    return [topic_of(topics, message_type) for message_type in CHAIN]


def topic_partitions(params: AgentsParams) -> dict[str, int]:
    """Every agent topic (the chain, the dead letters, the retries) with its partition count."""
    extra = [params.topics.dlq, params.topics.retries]
    return {topic: params.partitions for topic in [*chain_topics(params.topics), *extra]}


def home_partition(correlation_id: str, partitions: int) -> int:
    """The partition a conversation's records belong on: what Kafka's default partitioner picks
    for the correlation id as key (murmur2, as the Java client and kafka-python compute it).
    Other clients' defaults differ (librdkafka, hence kcat, uses CRC32), so the agents place
    their replies here explicitly and move a task found on another partition."""
    return (murmur2(correlation_id.encode()) & 0x7FFFFFFF) % partitions
