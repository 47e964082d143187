"""The agents' supervisor: run the roles' workers in threads of one process and keep them
running. A worker that has to stop (an error it cannot go on from, such as a broker restart or a
fenced producer, or stuck in the Kafka client) is restarted in place, with backoff, counted and
logged; the process ends only on a signal (`stop`) or a config error, and then within
`Timings.shutdown_s`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from custseg.agents.envelope import one_line
from custseg.agents.grounding import Champion
from custseg.agents.roles import ROLES
from custseg.agents.runtime.settings import (
    DEFAULT_TIMINGS,
    HEALTHY_RUN_S,
    MAX_RESTART_BACKOFF_S,
    RESTART_BACKOFF_S,
    Timings,
)
from custseg.agents.runtime.worker import AgentWorker
from custseg.config import AgentsParams
from custseg.errors import AgentStopped, ConfigError
from custseg.llm import Provider

WATCH_S = 0.2  # how often the supervisor looks at its workers


def restart_delay(in_a_row: int) -> float:
    """Seconds before the `in_a_row`th restart in a row (1-based): 1, 2, 4, … at most 30."""
    return min(MAX_RESTART_BACKOFF_S, RESTART_BACKOFF_S * 2 ** min(in_a_row - 1, 30))


def _stuck(worker: AgentWorker) -> bool:
    since = worker.in_kafka_since
    return since is not None and time.monotonic() - since > worker.timings.stuck_s


def why_stopped(worker: AgentWorker) -> str:
    """One line: why a worker that is no longer running stopped."""
    if worker.error is None:
        return f"stuck over {worker.timings.stuck_s:g} s in the Kafka client"
    error, name = worker.error, type(worker.error).__name__
    return one_line(str(error) if str(error).startswith(name) else f"{name}: {error}")


@dataclass
class Slot:
    """One role's place in the process: its current worker and its restarts."""

    worker: AgentWorker
    thread: threading.Thread
    started: float
    in_a_row: int = 0  # restarts since the worker last ran HEALTHY_RUN_S
    restart_at: float | None = None  # set while waiting to restart


def run_agents(
    roles: list[str],
    llm: Provider,
    params: AgentsParams,
    bootstrap: str,
    stop: threading.Event,
    on_event: Callable[[str], None] = print,
    champion: Champion | None = None,
    timings: Timings = DEFAULT_TIMINGS,
) -> list[AgentWorker]:
    """Run the given roles in threads of this process until `stop` is set; return the workers
    (their stats cover every restart). Answers are grounded in the `champion`'s segments when
    given. A worker that stops is restarted in place (`restart_delay`); AgentStopped (one line)
    only for a config error, which a restart would not cure. `timings`: the waits."""

    def launch(role: str, before: AgentWorker | None = None) -> Slot:
        worker = AgentWorker(
            ROLES[role],
            llm,
            params,
            bootstrap,
            threading.Event(),
            on_event,
            champion,
            timings,
            before.transactional_id if before else None,  # fences `before` if it still runs
        )
        if before is not None:  # one role, one count; nothing else carried over, like a new
            worker.stats = before.stats  # process (its `seen` may hold uncommitted answers)
        thread = threading.Thread(target=worker.run, name=role, daemon=True)
        thread.start()
        return Slot(worker, thread, time.monotonic())

    slots = [launch(role) for role in roles]
    try:
        while not stop.wait(WATCH_S):
            for i, slot in enumerate(slots):
                slots[i] = _watch(slot, launch, on_event)
    finally:
        for slot in slots:
            slot.worker.stop.set()
        _finish(slots, timings.shutdown_s, on_event)
    return [slot.worker for slot in slots]


def _watch(slot: Slot, launch: Callable[..., Slot], on_event: Callable[[str], None]) -> Slot:
    """The slot after one look: unchanged, restarted, or waiting to restart."""
    worker, now = slot.worker, time.monotonic()
    name = worker.role.name
    if slot.restart_at is not None:
        if now < slot.restart_at:
            return slot
        fresh = launch(name, worker)
        fresh.in_a_row = slot.in_a_row
        return fresh
    if slot.thread.is_alive() and not _stuck(worker):
        if now - slot.started > HEALTHY_RUN_S:
            slot.in_a_row = 0
        return slot
    if isinstance(worker.error, ConfigError):  # a restart would fail the same way
        raise AgentStopped(f"{name} stopped: {why_stopped(worker)}")
    cause = why_stopped(worker)
    if slot.thread.is_alive():  # stuck: let go of its group membership, run a new one
        worker.stop.set()
        worker.abandon()
    slot.in_a_row += 1
    worker.stats.restarts += 1
    delay = restart_delay(slot.in_a_row)
    on_event(f"{name}: stopped ({cause}); restart {worker.stats.restarts} in {delay:g} s")
    slot.restart_at = now + delay
    return slot


def _finish(slots: list[Slot], within_s: float, on_event: Callable[[str], None]) -> None:
    """Wait up to `within_s` for the stopped workers to end (an LLM call in flight is abandoned
    at once; the transaction in hand is finished); leave those still running behind, as daemon
    threads, so the process ends within the bound whatever the broker or the LLM do."""
    deadline = time.monotonic() + within_s
    for slot in slots:
        slot.thread.join(timeout=max(0.0, deadline - time.monotonic()))
    for slot in slots:
        if slot.thread.is_alive():
            on_event(f"{slot.worker.role.name}: not stopped within {within_s:g} s; left behind")
