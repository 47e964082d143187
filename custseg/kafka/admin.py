"""Kafka clusters as clients see them: create the project's topics, and ask whether a broker
answers. Works against any cluster, not only the local one (which one: `custseg.kafka.cluster`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from custseg.errors import KafkaBrokerError

DEFAULT_PORT = 9092
DEFAULT_BOOTSTRAP = f"127.0.0.1:{DEFAULT_PORT}"
ENV_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"
_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


@contextlib.contextmanager
def _admin(bootstrap: str, timeout_s: float) -> Iterator[KafkaAdminClient]:
    """An admin client that fails with one clear line when the cluster does not answer."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="custseg-admin",
            bootstrap_timeout_ms=int(timeout_s * 1000),
            request_timeout_ms=int(max(timeout_s, 5) * 1000),
        )
    except KafkaError as exc:
        raise KafkaBrokerError(
            f"Kafka broker not reachable at {bootstrap} within {timeout_s:g} s "
            f"({type(exc).__name__}); start one with `make kafka-up` or set {ENV_BOOTSTRAP}"
        ) from exc
    try:
        yield admin
    finally:
        admin.close()


def ensure_topics(bootstrap: str, topics: Mapping[str, int], timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics with the given partition counts; return the names created.

    Idempotent: existing topics are kept. An existing topic with another partition count is an
    error, because silently adding partitions would re-map keys and break per-key ordering.
    The replication factor is the cluster's default (1 on the local broker).
    """
    with _admin(bootstrap, timeout_s) as admin:
        existing = set(admin.list_topics())
        missing = {name: n for name, n in topics.items() if name not in existing}
        if missing:
            _create_topics(admin, missing, timeout_s)
        # Topic creation is asynchronous on KRaft: wait for a leader on every partition.
        try:
            admin.wait_for_topics(list(topics), timeout_ms=int(timeout_s * 1000))
        except KafkaError as exc:
            raise KafkaBrokerError(f"topics not ready on {bootstrap}: {exc}") from exc
        _check_partitions(admin, topics)
    return sorted(missing)


def _create_topics(admin: KafkaAdminClient, topics: Mapping[str, int], timeout_s: float) -> None:
    """Send one CreateTopics request; a topic created meanwhile by someone else is fine."""
    request = {name: {"num_partitions": n, "replication_factor": -1} for name, n in topics.items()}
    response = admin.create_topics(request, timeout_ms=int(timeout_s * 1000), raise_errors=False)
    for result in response["topics"]:
        code = result["error_code"]
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            message = result.get("error_message") or f"error code {code}"
            raise KafkaBrokerError(f"cannot create topic {result['name']!r}: {message}")


def _check_partitions(admin: KafkaAdminClient, topics: Mapping[str, int]) -> None:
    """Fail if an existing topic does not have the partition count asked for."""
    for info in admin.describe_topics(list(topics)):
        have, want = len(info["partitions"]), topics[info["name"]]
        if have != want:
            raise KafkaBrokerError(
                f"topic {info['name']!r} has {have} partitions, expected {want}; "
                "delete it or change the asked count"
            )


def broker_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True if the cluster answers a metadata request and lists at least one broker."""
    try:
        with _admin(bootstrap, timeout_s) as admin:
            return bool(admin.describe_cluster().get("brokers"))
    except (KafkaBrokerError, KafkaError, OSError):
        return False
