"""`custseg kafka up | down | status | fetch`: the project's local broker from the shell.

The broker's own state (its data directory: PID file, rendered ports) decides what up, down and
status do, whatever `KAFKA_BOOTSTRAP_SERVERS` says: exported as `up` suggests, it names this
broker, and `up` after `down` starts it again. Only a variable naming a broker the project does
not manage makes `up` start nothing, and each command says so in one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from custseg.entrypoint import add_command, command_group, port, positive_seconds
from custseg.kafka.admin import DEFAULT_BOOTSTRAP, DEFAULT_PORT, ENV_BOOTSTRAP, broker_answers
from custseg.kafka.broker import (
    DEFAULT_CONTROLLER_PORT,
    STATE_ENV,
    LocalBroker,
    configured_ports,
    state_home,
)
from custseg.kafka.jars import fetch_jars

EXIT_NOT_RUNNING = 3  # `status` when no broker runs, as LSB init scripts report it


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The `kafka` command group of the `custseg` CLI."""
    actions = command_group(
        commands,
        "kafka",
        "the project's local Apache Kafka broker (KRaft, 127.0.0.1)",
        "Start, stop or inspect the project's local Apache Kafka broker. "
        f"They act on the project's own broker (its data directory), whatever {ENV_BOOTSTRAP} "
        "says; only when it names a broker the project does not manage does `up` start nothing.",
    )
    for name, text in (
        ("up", "fetch the jars if needed, format, start, wait until it answers"),
        ("down", "stop it (SIGTERM by PID, SIGKILL after 30 s)"),
        ("status", f"running or not, and where (exit {EXIT_NOT_RUNNING}: not running)"),
        ("fetch", "only fetch the jars with Maven (once per machine and pom)"),
    ):
        action = add_command(actions, name, text, _run)
        if name != "fetch":
            _broker_options(action, TIMEOUT_HELP[name])


# What --timeout means to each action (down and status accept it, so scripts may pass one).
TIMEOUT_HELP = {
    "up": "seconds to wait for the started broker to answer (default 90)",
    "down": "not used by down: it sends SIGTERM, then SIGKILL after 30 s",
    "status": "not used by status: it answers at once",
}


def _broker_options(parser: argparse.ArgumentParser, timeout_help: str) -> None:
    home = f"${STATE_ENV}, else $XDG_STATE_HOME/custseg/kafka"  # read when the command runs
    last = "the ports it last ran on, else"  # read from the data directory
    parser.add_argument(
        "--port", type=port, help=f"PLAINTEXT port (default: {last} {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--controller-port",
        type=port,
        help=f"KRaft port (default: {last} {DEFAULT_CONTROLLER_PORT})",
    )
    parser.add_argument("--data-dir", type=Path, help=f"data, PID file (default: {home}/data)")
    parser.add_argument("--log-dir", type=Path, help=f"broker logs (default: {home}/logs)")
    parser.add_argument("--timeout", type=positive_seconds, default=90.0, help=timeout_help)


def _run(args: argparse.Namespace) -> int:
    logging.getLogger("kafka").setLevel(logging.ERROR)  # it logs every refused connection
    if args.action == "fetch":
        print(f"Kafka jars ready in {fetch_jars()}")
        return 0
    broker = _managed_broker(args)
    pid = broker.pid()
    other = _other_cluster(os.environ.get(ENV_BOOTSTRAP, ""), broker.port)
    if other and (args.action != "up" or pid is None):
        verb = "not starting a local broker" if args.action == "up" else "left alone"
        print(f"{ENV_BOOTSTRAP}={other} is not the project's broker: {verb}")
    if args.action == "up":
        if pid is not None:
            print(f"already running (pid {pid}) at {broker.bootstrap}; data in {broker.data_dir}")
            return 0
        if other:  # the user chose another cluster: a local broker would only be in the way
            return 0
        started = time.monotonic()
        broker.start(args.timeout)
        took = time.monotonic() - started
        print(f"Kafka broker up at {broker.bootstrap} (pid {broker.pid()}, {took:.1f} s)")
        if broker.bootstrap != DEFAULT_BOOTSTRAP:
            print(
                f"custseg commands find it there; other clients: {ENV_BOOTSTRAP}={broker.bootstrap}"
            )
        return 0
    if args.action == "down":
        print("stopped" if broker.stop() else "not running")
        return 0
    if pid is None:
        print("not running")
        return EXIT_NOT_RUNNING
    state = "answering" if broker_answers(broker.bootstrap) else "NOT answering"
    print(f"running (pid {pid}) at {broker.bootstrap}, {state}; log {broker.server_log}")
    return 0


def _managed_broker(args: argparse.Namespace) -> LocalBroker:
    """The project's broker as its data directory knows it: `up` takes the ports given, else
    those it last ran on; `down` and `status` those it runs on (the flags only when it never
    ran there)."""
    home = None if args.data_dir and args.log_dir else state_home()
    data_dir = args.data_dir or home / "data"
    log_dir = args.log_dir or home / "logs"
    rendered = configured_ports(data_dir)
    fallback = rendered or (DEFAULT_PORT, DEFAULT_CONTROLLER_PORT)
    if rendered and args.action != "up":  # where it runs, whatever the flags say
        ports = rendered
    else:
        given = (args.port, args.controller_port)
        ports = tuple(g or f for g, f in zip(given, fallback, strict=True))
    return LocalBroker(data_dir, ports[0], ports[1], log_dir)


def _other_cluster(servers: str, port: int) -> str | None:
    """`servers` (the variable's value) if it names anything but the local broker on `port`;
    None when unset or when it names only that broker."""
    ours = {f"{host}:{port}" for host in ("127.0.0.1", "localhost")}
    named = {s.strip().lower() for s in servers.split(",") if s.strip()}
    return servers.strip() if named - ours else None
