"""The agents' supervisor: run the roles' workers in threads of one process, watch for one stuck
in the Kafka client, stop them all together, and fail in one line if one could not go on (so a
supervisor of the process, or the user, restarts it instead of half the agents running)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from custseg.agents.envelope import one_line
from custseg.agents.grounding import Champion
from custseg.agents.roles import ROLES
from custseg.agents.runtime.settings import DEFAULT_TIMINGS, Timings
from custseg.agents.runtime.worker import AgentWorker
from custseg.config import AgentsParams
from custseg.errors import AgentStopped
from custseg.llm import Provider


def _stuck(worker: AgentWorker) -> bool:
    since = worker.in_kafka_since
    return since is not None and time.monotonic() - since > worker.timings.stuck_s


def _finish(workers: list[AgentWorker], threads: list[threading.Thread]) -> list[AgentWorker]:
    """Wait for the stopped workers to end (one in an LLM call ends after its answer); return
    those stuck in the Kafka client, left behind as daemon threads: waiting for them would keep
    the process alive, and its consumers in their groups, with nothing done (seen after a broker
    restart: one worker failed, another never came back from a commit)."""
    stuck: list[AgentWorker] = []
    while waiting := [
        (worker, thread)
        for worker, thread in zip(workers, threads, strict=True)
        if thread.is_alive() and worker not in stuck
    ]:
        stuck += [worker for worker, _ in waiting if _stuck(worker)]
        waiting[0][1].join(timeout=0.2)
    return stuck


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
    """Run the given roles in threads of this process until `stop` is set; return the workers.
    Answers are grounded in the `champion`'s segments when given. AgentStopped (one line) if a
    worker could not go on: the others are stopped too, so a supervisor sees the process fail
    and restarts it, instead of half the agents running. `timings`: the waits (see Timings)."""
    workers = [
        AgentWorker(ROLES[r], llm, params, bootstrap, stop, on_event, champion, timings)
        for r in roles
    ]
    threads = [threading.Thread(target=w.run, name=w.role.name, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        while not stop.is_set() and not any(_stuck(w) for w in workers):
            stop.wait(0.5)
    finally:
        stop.set()
        stuck = _finish(workers, threads)
    if failed := [w for w in workers if w.error is not None]:  # the cause, when there is one
        error, name = failed[0].error, type(failed[0].error).__name__
        text = str(error) if str(error).startswith(name) else f"{name}: {error}"
        raise AgentStopped(one_line(f"{failed[0].role.name} stopped: {text}"))
    if stuck:
        raise AgentStopped(
            f"{stuck[0].role.name} stopped: stuck over {timings.stuck_s:g} s in the Kafka client "
            "(is the broker reachable?)"
        )
    return workers
