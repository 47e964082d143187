"""The project's own Apache Kafka broker: one KRaft node on 127.0.0.1 for development, tests
and demos.

`LocalBroker` renders its `server.properties` from the shipped one, formats a KRaft data dir,
starts one combined broker+controller JVM (the jars: `custseg.kafka.jars`) bound to
127.0.0.1, waits until it answers a metadata request and stops it by PID.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custseg.config import directory_from_env
from custseg.errors import KafkaBrokerError, WriteError
from custseg.io import cannot_write, write_text_atomic
from custseg.kafka.admin import DEFAULT_PORT, broker_answers
from custseg.kafka.jars import (
    LOG_TAIL_LINES,
    fetch_jars,
    jars_home,
    require_tool,
    resource_text,
    tail_text,
)
from custseg.net import free_port

DEFAULT_CONTROLLER_PORT = 9093
STATE_ENV = "CUSTSEG_KAFKA_STATE"  # the CLI's broker data and logs; default ~/.local/state/...
# The brief's heap; C1-only JIT and the serial GC start a small dev broker faster and smaller
# (measured by bench/bench_broker.py).
JVM_OPTS = ("-Xms256m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
TOOL_JVM_OPTS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


def state_home() -> Path:
    """The CLI's broker (`custseg kafka up`): one per user, found again from any directory."""
    state = os.environ.get("XDG_STATE_HOME", "").strip() or "~/.local/state"
    return directory_from_env(STATE_ENV, Path(state).expanduser() / "custseg" / "kafka")


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


def render_properties(base: str, overrides: Mapping[str, str]) -> str:
    """The shipped `server.properties` text with `overrides` applied (replaced in place, or
    appended)."""
    lines, seen = [], set()
    for line in base.splitlines():
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


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, as `StorageTool random-uuid`.

    Made here rather than by the tool to save one JVM start (~0.5 s).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # Kafka avoids ids that look like a CLI flag
            return cid


# --- processes ----------------------------------------------------------------------------


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return ""
    with open(path, "rb") as fh:  # read only the end of a possibly large log
        fh.seek(max(0, fh.seek(0, os.SEEK_END) - 64_000))
        return tail_text(fh.read().decode(errors="replace"), lines)


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


@dataclass
class LocalBroker:
    """One single-node KRaft broker process on 127.0.0.1, with its data in `data_dir`.

    `data_dir` holds the effective `server.properties` and `log4j2.yaml`, the PID file and
    `kraft/` (Kafka's log.dirs); `log_dir` holds `server.log` and the JVM's `stdout.log`;
    `jars` is the Maven-filled libs/ directory (default: the user cache, see `jars_home`).
    """

    data_dir: Path
    port: int = DEFAULT_PORT
    controller_port: int = DEFAULT_CONTROLLER_PORT
    log_dir: Path | None = None
    jars: Path | None = None
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
        """Render the effective server.properties (and copy the log config) for this instance."""
        overrides = network_overrides(self.port, self.controller_port, self.data_dir / "kraft")
        text = render_properties(resource_text("server.properties"), overrides)
        write_text_atomic(self.properties_file, text)  # a full disk: WriteError, one line
        write_text_atomic(self.data_dir / "log4j2.yaml", resource_text("log4j2.yaml"))
        return self.properties_file

    def format_storage(self, java: str) -> bool:
        """Format the KRaft storage once; returns False when it was already formatted."""
        if (self.data_dir / "kraft" / "meta.properties").is_file():
            return False
        cmd = [java, *TOOL_JVM_OPTS, "-cp", self._classpath(), "kafka.tools.StorageTool", "format"]
        cmd += ["--standalone", "-g", "-t", new_cluster_id(), "-c", str(self.properties_file)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = tail_text(done.stdout + done.stderr)
            raise KafkaBrokerError(f"kafka StorageTool format failed:\n{tail}")
        return True

    def _classpath(self) -> str:
        return str((self.jars or jars_home() / "libs") / "*")

    def start(self, timeout_s: float = 90.0) -> LocalBroker:
        """Fetch jars if needed, format on first start, launch the JVM and wait until ready."""
        if (pid := self.pid()) is not None:
            raise KafkaBrokerError(f"a broker already runs from {self.data_dir} (pid {pid})")
        java = require_tool("java", "Kafka 4 needs Java 17+")
        self.jars = self.jars or fetch_jars()
        for port in (self.port, self.controller_port):
            if port_open(port):
                raise KafkaBrokerError(f"port 127.0.0.1:{port} is already in use")
        self.write_config()
        self.format_storage(java)
        self._launch(java)
        self._wait_ready(timeout_s)
        return self

    def _launch(self, java: str) -> None:
        cmd = [
            java,
            *self.jvm_opts,
            "-Djava.awt.headless=true",
            # IPv4 sockets: loopback then shows as 127.0.0.1, not ::ffff:127.0.0.1, to audits.
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.logs}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.properties_file),
        ]
        stdout_log = self.logs / "stdout.log"
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
            out = open(stdout_log, "ab")  # noqa: SIM115 - closed below, once the JVM has it
        except OSError as error:
            raise cannot_write(stdout_log, error, "kafka") from None
        with out:
            # Own session: Ctrl-C in the terminal that ran `make kafka-up` must not kill it.
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        try:
            write_text_atomic(self.pid_file, f"{self.process.pid}\n")
        except WriteError:  # without its PID file nothing could find it again to stop it
            self.process.kill()
            self.process.wait()
            raise

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


def configured_ports(data_dir: Path) -> tuple[int, int] | None:
    """Ports of the broker last rendered in data_dir, so down/status find it without flags."""
    props_file = data_dir / "server.properties"
    if not props_file.is_file():
        return None
    props = read_properties(props_file)
    try:
        port = int(props["advertised.listeners"].rsplit(":", 1)[1])
        controller = int(props["controller.quorum.bootstrap.servers"].rsplit(":", 1)[1])
    except (KeyError, IndexError, ValueError):
        return None
    return port, controller


def running_local_bootstrap(data_dir: Path | None = None) -> str | None:
    """The address of the broker `custseg kafka up` started (default state dir), if it runs:
    clients then follow `make kafka-up KAFKA_PORT=…` without being told the port again."""
    data_dir = data_dir or state_home() / "data"
    ports = configured_ports(data_dir)
    if ports is None:
        return None
    broker = LocalBroker(data_dir, *ports)
    return broker.bootstrap if broker.pid() is not None else None
