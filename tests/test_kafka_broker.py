"""Real Apache Kafka broker: keyed JSON round trip, topic creation, the make targets, kcat.

Nothing is mocked: the session broker comes from the `kafka_bootstrap` fixture, the make test
starts and stops a second broker on its own ports, and kcat is the real Debian client.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from custseg.errors import KafkaBrokerError
from custseg.kafka.admin import ENV_BOOTSTRAP, broker_answers, ensure_topics
from custseg.kafka.broker import LocalBroker, port_open, running_local_bootstrap
from custseg.kafka.cli import _other_cluster
from custseg.net import free_port

ROOT = Path(__file__).resolve().parents[1]


def _topic(prefix: str) -> str:
    """A fresh topic name: the session broker is shared by every test."""
    return f"test.{prefix}.{uuid.uuid4().hex[:8]}"


def _consume_raw(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0) -> list:
    """Read `count` records from the start of `topic` as raw bytes (parsing is the caller's)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_keyed_json_messages_keep_order_per_key(kafka_bootstrap: str) -> None:
    topic = _topic("order")
    ensure_topics(kafka_bootstrap, {topic: 3})
    keys = [f"conv-{i}" for i in range(4)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    for seq in range(25):
        for key in keys:
            value = json.dumps({"conversation": key, "seq": seq}).encode()
            producer.send(topic, key=key.encode(), value=value)
    producer.flush()
    producer.close()

    records = _consume_raw(kafka_bootstrap, topic, count=100)

    assert len(records) == 100
    by_key: dict[str, list[int]] = {}
    partitions: dict[str, set[int]] = {}
    for record in records:
        message = json.loads(record.value)
        assert message["conversation"] == record.key.decode()
        by_key.setdefault(message["conversation"], []).append(message["seq"])
        partitions.setdefault(message["conversation"], set()).add(record.partition)
    assert by_key == {key: list(range(25)) for key in keys}
    assert all(len(p) == 1 for p in partitions.values()), "a key must map to one partition"


def test_ensure_topics_is_idempotent_with_asked_partitions(kafka_bootstrap: str) -> None:
    topics = {_topic("a"): 3, _topic("b"): 1}

    assert ensure_topics(kafka_bootstrap, topics) == sorted(topics)
    assert ensure_topics(kafka_bootstrap, topics) == []

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(topics))}
    finally:
        admin.close()
    assert described == topics


def test_ensure_topics_refuses_a_different_partition_count(kafka_bootstrap: str) -> None:
    topic = _topic("mismatch")
    ensure_topics(kafka_bootstrap, {topic: 2})
    with pytest.raises(KafkaBrokerError, match=r"has 2 partitions, expected 4"):
        ensure_topics(kafka_bootstrap, {topic: 4})


def test_auto_topic_creation_is_off(kafka_bootstrap: str) -> None:
    topic = _topic("auto")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.describe_topics([topic])  # a metadata request for it must not create it
        assert topic not in admin.list_topics()
    finally:
        admin.close()


def test_unreachable_broker_gives_one_clear_error() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(KafkaBrokerError, match=rf"not reachable at {address} within 2 s"):
        ensure_topics(address, {"t": 1}, timeout_s=2)
    assert time.monotonic() - started < 15


def test_broker_that_exits_at_start_reports_its_log(tmp_path: Path) -> None:
    broker = LocalBroker.ephemeral(tmp_path / "data")
    kraft = broker.data_dir / "kraft"
    kraft.mkdir(parents=True)
    # Storage formatted for another node: the broker refuses it and exits.
    (kraft / "meta.properties").write_text(
        "version=1\nnode.id=7\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAQ\n"
    )
    with pytest.raises(KafkaBrokerError, match=r"exited with code") as caught:
        broker.start(timeout_s=60)
    assert "last lines of" in str(caught.value)
    assert "node id 7" in str(caught.value)  # the tail of the broker's own log says why
    assert broker.pid() is None


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_BOOTSTRAP}
    return {**env, **extra}


def test_cli_without_java_fails_in_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "custseg", "kafka", "up", "--data-dir", str(tmp_path)]
    done = subprocess.run(
        cmd, cwd=ROOT, env=_cli_env(PATH="/nonexistent"), capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: `java` not found (Kafka 4 needs Java 17+): "
        "apt-get install -y openjdk-17-jre-headless"
    ]


def test_cli_leaves_an_external_cluster_alone(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "custseg", "kafka", "up", "--data-dir", str(tmp_path)]
    env = _cli_env(**{ENV_BOOTSTRAP: "broker.example:9092"})
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        f"{ENV_BOOTSTRAP}=broker.example:9092 is not the project's broker: "
        "not starting a local broker"
    ]
    assert not any(tmp_path.iterdir())


@given(
    port=st.integers(1, 65535),
    hosts=st.lists(st.sampled_from(["127.0.0.1", "localhost", "LOCALHOST"]), min_size=1),
    space=st.sampled_from(["", " ", "  "]),
)
def test_a_variable_naming_only_the_local_broker_is_ours(
    port: int, hosts: list[str], space: str
) -> None:
    servers = ",".join(f"{space}{host}:{port}{space}" for host in hosts)
    assert _other_cluster(servers, port) is None
    assert _other_cluster("", port) is None


@given(
    port=st.integers(1, 65535),
    other=st.one_of(
        st.integers(1, 65535).map(lambda p: f"127.0.0.1:{p}"),
        st.from_regex(r"[a-z][a-z0-9.-]{0,20}:[0-9]{1,5}", fullmatch=True),
    ),
)
def test_a_variable_naming_any_other_broker_is_not_ours(port: int, other: str) -> None:
    assume(other not in {f"127.0.0.1:{port}", f"localhost:{port}"})
    assert _other_cluster(f"127.0.0.1:{port},{other}", port) == f"127.0.0.1:{port},{other}"


def test_up_after_down_with_the_variable_exported_as_up_suggests(tmp_path: Path) -> None:
    """#31: with KAFKA_BOOTSTRAP_SERVERS naming the project's broker, `down` stopped it and `up`
    then started nothing. The broker's own data directory decides, whatever the variable says."""
    port, controller = free_port(), free_port()
    dirs = ["--data-dir", str(tmp_path / "data"), "--log-dir", str(tmp_path / "logs")]

    def kafka(action: str, *flags: str, servers: str = f"127.0.0.1:{port}") -> list[str]:
        cmd = [sys.executable, "-m", "custseg", "kafka", action, *dirs, *flags]
        env = _cli_env(**{ENV_BOOTSTRAP: servers})
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode in (0, 3), done.stdout + done.stderr
        return done.stdout.splitlines()

    try:
        up = kafka("up", "--port", str(port), "--controller-port", str(controller))
        assert up[0].startswith(f"Kafka broker up at 127.0.0.1:{port} ")
        assert kafka("down") == ["stopped"]
        assert kafka("status") == ["not running"]
        again = kafka("up")  # no flags: the ports it last ran on, which the variable names
        assert again[0].startswith(f"Kafka broker up at 127.0.0.1:{port} ")
        assert broker_answers(f"127.0.0.1:{port}")
        assert kafka("up")[0].startswith("already running")
        # Another cluster named: status and down still act on ours, and say the other is not.
        status = kafka("status", servers="elsewhere.invalid:9092")
        assert status[0] == f"{ENV_BOOTSTRAP}=elsewhere.invalid:9092 is not the project's " + (
            "broker: left alone"
        )
        assert status[1].startswith("running (pid ") and "answering" in status[1]
    finally:
        down = kafka("down", servers="elsewhere.invalid:9092")
    assert down[-1] == "stopped"
    assert kafka("status") == ["not running"]
    assert not port_open(port)


def _make(target: str, variables: dict[str, str], **env: str) -> subprocess.CompletedProcess[str]:
    cmd = ["make", "--no-print-directory", target, *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(
        cmd, cwd=ROOT, env=_cli_env(**env), capture_output=True, text=True, timeout=180
    )


def test_make_kafka_up_status_down_cycle(tmp_path: Path) -> None:
    port = free_port()
    variables = {
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(free_port()),
        "KAFKA_DATA": str(tmp_path / "data"),
        "KAFKA_LOGS": str(tmp_path / "logs"),
    }
    try:
        up = _make("kafka-up", variables)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"Kafka broker up at 127.0.0.1:{port}" in up.stdout

        status = _make("kafka-status", variables)
        assert status.returncode == 0, status.stderr
        assert f"at 127.0.0.1:{port}, answering" in status.stdout
        assert ensure_topics(f"127.0.0.1:{port}", {"make.cycle": 1}) == ["make.cycle"]
        # Clients find it on its port without being told (one port setting).
        assert running_local_bootstrap(tmp_path / "data") == f"127.0.0.1:{port}"
    finally:
        # The variable naming another cluster does not stop `down` from stopping ours.
        down = _make("kafka-down", variables, **{ENV_BOOTSTRAP: "elsewhere.invalid:9092"})
    assert down.returncode == 0, down.stderr
    assert down.stdout.splitlines() == [
        f"{ENV_BOOTSTRAP}=elsewhere.invalid:9092 is not the project's broker: left alone",
        "stopped",
    ]
    assert "not running" in _make("kafka-status", variables).stdout
    assert not (tmp_path / "data" / "broker.pid").exists()
    assert running_local_bootstrap(tmp_path / "data") is None
    assert (tmp_path / "logs" / "server.log").stat().st_size > 0


def _kcat(*args: str, stdin: str | None = None) -> str:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed: apt-get install -y kcat"
    done = subprocess.run(
        [kcat, *args], input=stdin, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


def test_kcat_talks_to_the_broker(kafka_bootstrap: str) -> None:
    topic = _topic("kcat")
    ensure_topics(kafka_bootstrap, {topic: 1})
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(topic, key=b"k1", value=b'{"ok": true}')
    producer.close()

    assert f'topic "{topic}" with 1 partitions' in _kcat("-b", kafka_bootstrap, "-L")
    _kcat("-b", kafka_bootstrap, "-P", "-t", topic, "-k", "k2", stdin="not json {\n")
    read = _kcat("-b", kafka_bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q")
    assert read.splitlines() == ['{"ok": true}', "not json {"]

    records = _consume_raw(kafka_bootstrap, topic, count=2)
    assert [(r.key, r.value) for r in records] == [(b"k1", b'{"ok": true}'), (b"k2", b"not json {")]
