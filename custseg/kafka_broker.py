"""A real Apache Kafka broker for development, tests and demos, plus topic creation.

There is no Kafka package on PyPI or Debian, so the broker jars come from Maven
(`infra/kafka/pom.xml`). `LocalBroker` formats a KRaft data dir, starts one combined
broker+controller JVM bound to 127.0.0.1, waits until it answers a metadata request and stops
it by PID. `python -m custseg.kafka_broker up|down|status|fetch` is the CLI behind
`make kafka-up` / `kafka-down` / `kafka-status`. When `KAFKA_BOOTSTRAP_SERVERS` is set, that
cluster is used and nothing is started.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

KAFKA_DIR = Path(__file__).resolve().parents[1] / "infra" / "kafka"
DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
DEFAULT_BOOTSTRAP = f"127.0.0.1:{DEFAULT_PORT}"
ENV_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"
# The brief's heap; C1-only JIT and the serial GC start a small dev broker faster and smaller
# (measured by bench/bench_broker.py).
JVM_OPTS = ("-Xms256m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
TOOL_JVM_OPTS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
LOG_TAIL_LINES = 25
_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


class KafkaBrokerError(RuntimeError):
    """The broker cannot be fetched, started, reached or stopped; the message says why."""


def bootstrap_servers() -> str:
    """Return the cluster to use: `$KAFKA_BOOTSTRAP_SERVERS`, else the local default."""
    return os.environ.get(ENV_BOOTSTRAP, "").strip() or DEFAULT_BOOTSTRAP


# --- topics -------------------------------------------------------------------------------


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


# --- jars ---------------------------------------------------------------------------------


def _require(tool: str, why: str) -> str:
    """Path of an executable, or a one-line error naming the Debian package to install."""
    path = shutil.which(tool)
    if path is None:
        package = {"java": "openjdk-17-jre-headless", "mvn": "maven"}.get(tool, tool)
        raise KafkaBrokerError(f"`{tool}` not found ({why}): apt-get install -y {package}")
    return path


def _pom_digest(kafka_dir: Path) -> str:
    return hashlib.sha256((kafka_dir / "pom.xml").read_bytes()).hexdigest()


def jars_ready(kafka_dir: Path = KAFKA_DIR) -> bool:
    """True when libs/ was filled from the current pom.xml (the stamp holds its digest)."""
    stamp = kafka_dir / "libs" / ".pom-sha256"
    return stamp.is_file() and stamp.read_text().strip() == _pom_digest(kafka_dir)


def fetch_jars(kafka_dir: Path = KAFKA_DIR, force: bool = False) -> bool:
    """Copy the broker jars into `kafka_dir/libs` with Maven unless the stamp is current.

    Returns True when Maven ran. A lock file keeps two processes (parallel test workers, a
    `make kafka-up` during tests) from filling libs/ at the same time.
    """
    libs = kafka_dir / "libs"
    libs.mkdir(parents=True, exist_ok=True)
    with open(libs / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jars_ready(kafka_dir) and not force:
            return False
        mvn = _require("mvn", "needed once to fetch the Kafka jars")
        for old in libs.glob("*.jar"):  # a changed pom must not leave stale versions behind
            old.unlink()
        cmd = [mvn, "-q", "-B", "dependency:copy-dependencies", "-DoutputDirectory=libs"]
        done = subprocess.run(cmd, cwd=kafka_dir, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = _tail_text(done.stdout + done.stderr, LOG_TAIL_LINES)
            raise KafkaBrokerError(f"mvn could not fetch the Kafka jars:\n{tail}")
        (libs / ".pom-sha256").write_text(_pom_digest(kafka_dir) + "\n")
        return True


# --- configuration ------------------------------------------------------------------------


def read_properties(path: Path) -> dict[str, str]:
    """Parse a Java .properties file (the simple `key=value` subset Kafka configs use)."""
    props: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def render_properties(base: Path, overrides: Mapping[str, str]) -> str:
    """The committed file with `overrides` applied (replaced in place, or appended)."""
    lines, seen = [], set()
    for line in base.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in overrides:
            line = f"{key}={overrides[key]}"
            seen.add(key)
        lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    return "\n".join(lines) + "\n"


def network_overrides(port: int, controller_port: int, log_dirs: Path) -> dict[str, str]:
    """The keys that differ between broker instances: ports and the data directory."""
    return {
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "log.dirs": str(log_dirs),
    }


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, as `StorageTool random-uuid`.

    Made here rather than by the tool to save one JVM start (~0.5 s).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # Kafka avoids ids that look like a CLI flag
            return cid


# --- processes ----------------------------------------------------------------------------


def _tail_text(text: str, lines: int) -> str:
    """The last `lines` lines, without Java stack frames (they would crowd out the cause)."""
    kept = [ln for ln in text.rstrip().splitlines() if not ln.lstrip().startswith(("at ", "..."))]
    return "\n".join(kept[-lines:])


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return ""
    with open(path, "rb") as fh:  # read only the end of a possibly large log
        fh.seek(max(0, fh.seek(0, os.SEEK_END) - 64_000))
        return _tail_text(fh.read().decode(errors="replace"), lines)


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_kafka(pid: int) -> bool:
    """Guard against a stale PID file naming a PID reused by another program."""
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def broker_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True if the cluster answers a metadata request and lists at least one broker."""
    try:
        with _admin(bootstrap, timeout_s) as admin:
            return bool(admin.describe_cluster().get("brokers"))
    except (KafkaBrokerError, KafkaError, OSError):
        return False


@dataclass
class LocalBroker:
    """One single-node KRaft broker process on 127.0.0.1, with its data in `data_dir`.

    `data_dir` holds the effective `server.properties`, the PID file and `kraft/` (Kafka's
    log.dirs); `log_dir` holds `server.log` and the JVM's `stdout.log`.
    """

    data_dir: Path
    port: int = DEFAULT_PORT
    controller_port: int = DEFAULT_CONTROLLER_PORT
    log_dir: Path | None = None
    kafka_dir: Path = KAFKA_DIR
    jvm_opts: tuple[str, ...] = JVM_OPTS
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def ephemeral(cls, data_dir: Path, **kwargs: Any) -> LocalBroker:
        """A broker on free loopback ports, e.g. one per test session in a temp dir."""
        port, controller_port = free_port(), free_port()
        while controller_port == port:  # two closed probes may get the same port back
            controller_port = free_port()
        return cls(data_dir, port=port, controller_port=controller_port, **kwargs)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.log_dir = Path(self.log_dir or self.data_dir / "logs").resolve()

    @property
    def logs(self) -> Path:
        """Where server.log and stdout.log go (`log_dir`, default `data_dir/logs`)."""
        return self.log_dir or self.data_dir / "logs"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    def pid(self) -> int | None:
        """PID of the running broker from the PID file, or None (a stale file is removed)."""
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if pid_alive(pid) and _is_kafka(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def write_config(self) -> Path:
        """Render the effective server.properties for this instance's ports and data dir."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        overrides = network_overrides(self.port, self.controller_port, self.data_dir / "kraft")
        text = render_properties(self.kafka_dir / "server.properties", overrides)
        self.properties_file.write_text(text)
        return self.properties_file

    def format_storage(self, java: str) -> bool:
        """Format the KRaft storage once; returns False when it was already formatted."""
        if (self.data_dir / "kraft" / "meta.properties").is_file():
            return False
        cmd = [java, *TOOL_JVM_OPTS, "-cp", self._classpath(), "kafka.tools.StorageTool", "format"]
        cmd += ["--standalone", "-g", "-t", new_cluster_id(), "-c", str(self.properties_file)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = _tail_text(done.stdout + done.stderr, LOG_TAIL_LINES)
            raise KafkaBrokerError(f"kafka StorageTool format failed:\n{tail}")
        return True

    def _classpath(self) -> str:
        return str(self.kafka_dir / "libs" / "*")

    def start(self, timeout_s: float = 90.0) -> LocalBroker:
        """Fetch jars if needed, format on first start, launch the JVM and wait until ready."""
        if (pid := self.pid()) is not None:
            raise KafkaBrokerError(f"a broker already runs from {self.data_dir} (pid {pid})")
        java = _require("java", "Kafka 4 needs Java 17+")
        fetch_jars(self.kafka_dir)
        for port in (self.port, self.controller_port):
            if port_open(port):
                raise KafkaBrokerError(f"port 127.0.0.1:{port} is already in use")
        self.write_config()
        self.format_storage(java)
        self._launch(java)
        self._wait_ready(timeout_s)
        return self

    def _launch(self, java: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        cmd = [
            java,
            *self.jvm_opts,
            "-Djava.awt.headless=true",
            # IPv4 sockets: loopback then shows as 127.0.0.1, not ::ffff:127.0.0.1, to audits.
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.kafka_dir / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.logs}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.properties_file),
        ]
        with open(self.logs / "stdout.log", "ab") as out:
            # Own session: Ctrl-C in the terminal that ran `make kafka-up` must not kill it.
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.pid_file.write_text(f"{self.process.pid}\n")

    def _wait_ready(self, timeout_s: float) -> None:
        """Poll until the port is open and a metadata request lists the broker."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                self._fail(f"exited with code {self.process.returncode} during start-up")
            if port_open(self.port) and broker_answers(self.bootstrap):
                return
            time.sleep(0.2)
        self.stop()
        self._fail(f"did not answer within {timeout_s:g} s")

    def _fail(self, what: str) -> None:
        server_tail = _tail(self.server_log)
        # stdout.log repeats log4j's warnings; keep only what it adds (JVM and log4j errors).
        stdout_tail = _tail(self.logs / "stdout.log", 10).splitlines()
        extra = [ln for ln in stdout_tail if ln not in server_tail]
        raise KafkaBrokerError(
            f"Kafka broker at {self.bootstrap} {what}; last lines of {self.server_log} "
            f"and stdout.log:\n" + "\n".join([server_tail or "(no server log)", *extra])
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the broker, SIGKILL it after `timeout_s`; False if it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)  # controlled shutdown: flushes logs, closes segments
        if not self._wait_exit(pid, timeout_s):
            os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        self.process = None
        return True

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.pid == pid:
                if self.process.poll() is not None:  # reaps our own child
                    return True
            elif not pid_alive(pid):
                return True
            time.sleep(0.1)
        return False

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- CLI ----------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m custseg.kafka_broker",
        description="Start, stop or inspect the project's local Apache Kafka broker. "
        f"Does nothing but say so when {ENV_BOOTSTRAP} names an external cluster.",
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "fetch"],
        help="up: fetch jars if needed, format, start, wait until ready; down: SIGTERM by PID; "
        "status: running or not, with the address; fetch: only fetch the jars",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="PLAINTEXT port")
    parser.add_argument(
        "--controller-port", type=int, default=DEFAULT_CONTROLLER_PORT, help="KRaft port"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=KAFKA_DIR / "data", help="data, PID file, config"
    )
    parser.add_argument("--log-dir", type=Path, default=KAFKA_DIR / "logs", help="broker logs")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for 'up'")
    return parser.parse_args(argv)


def _configured_ports(data_dir: Path) -> tuple[int, int] | None:
    """Ports of the broker last rendered in data_dir, so down/status find it without flags."""
    props_file = data_dir / "server.properties"
    if not props_file.is_file():
        return None
    props = read_properties(props_file)
    port = int(props["advertised.listeners"].rsplit(":", 1)[1])
    controller = int(props["controller.quorum.bootstrap.servers"].rsplit(":", 1)[1])
    return port, controller


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (status: 0 running, 3 not running)."""
    args = _parse_args(argv)
    if args.command == "fetch":
        print("jars fetched" if fetch_jars() else "jars up to date")
        return 0
    if external := os.environ.get(ENV_BOOTSTRAP, "").strip():
        print(f"{ENV_BOOTSTRAP}={external}: using that external cluster, not starting or stopping")
        return 0
    broker = LocalBroker(args.data_dir, args.port, args.controller_port, args.log_dir)
    if args.command != "up" and (ports := _configured_ports(broker.data_dir)):
        broker.port, broker.controller_port = ports
    try:
        return _run(args.command, broker, args.timeout)
    except KafkaBrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(command: str, broker: LocalBroker, timeout_s: float) -> int:
    pid = broker.pid()
    if command == "up":
        if pid is not None:
            print(f"already running (pid {pid}); data in {broker.data_dir}")
            return 0
        started = time.monotonic()
        broker.start(timeout_s)
        took = time.monotonic() - started
        print(f"Kafka broker up at {broker.bootstrap} (pid {broker.pid()}, {took:.1f} s)")
        if broker.bootstrap != DEFAULT_BOOTSTRAP:
            print(f"clients: export {ENV_BOOTSTRAP}={broker.bootstrap}")
        return 0
    if command == "down":
        print("stopped" if broker.stop() else "not running")
        return 0
    if pid is None:
        print("not running")
        return 3
    state = "answering" if broker_answers(broker.bootstrap) else "NOT answering"
    print(f"running (pid {pid}) at {broker.bootstrap}, {state}; log {broker.server_log}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # kafka-python logs every refused connection
    sys.exit(main())
