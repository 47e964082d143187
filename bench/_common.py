"""Small helpers shared by the benchmarks: timing, a sandbox copy of the project, a report line."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from custseg.telemetry import NO_TELEMETRY
from custseg.testing.sandbox import copy_project

ROOT = Path(__file__).resolve().parents[1]  # the checkout these benchmarks measure


@contextmanager
def kafka_cluster() -> Iterator[tuple[str, float | None]]:
    """(bootstrap, broker start seconds): $KAFKA_BOOTSTRAP_SERVERS's cluster (start None), else
    a throwaway broker on free loopback ports, stopped afterwards."""
    from custseg.kafka.broker import LocalBroker

    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield bootstrap, None
        return
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker.ephemeral(Path(tmp) / "kafka")
        seconds, _ = timed(broker.start)
        try:
            yield broker.bootstrap, seconds
        finally:
            broker.stop()


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def env() -> dict[str, str]:
    """The benchmark's environment: the venv's tools first, telemetry off, default MLflow stores."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**base, **NO_TELEMETRY, "PATH": f"{Path(sys.executable).parent}:{base['PATH']}"}


def sandbox() -> Path:
    """A throwaway git copy of the project (DVC needs a git repository)."""
    path = copy_project(ROOT, Path(tempfile.mkdtemp(prefix="custseg-bench-")))
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=b", "-c", "user.email=b@example.com", "commit", "-qm", "b"],
    ):
        subprocess.run(command, cwd=path, check=True)
    return path


def run(command: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> float:
    """Wall time of one command, which must succeed."""
    seconds, done = timed(
        lambda: subprocess.run(
            command, cwd=cwd, env={**env(), **(extra_env or {})}, capture_output=True, text=True
        )
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return seconds


def report(name: str, value: float, unit: str, goal: str = "") -> None:
    print(f"{name:<58} {value:>10.3f} {unit:<4} {goal}")
