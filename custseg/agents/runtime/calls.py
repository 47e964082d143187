"""An LLM call a worker can walk away from, and what a failed attempt comes to.

The call runs in a thread of its own; the worker waits for it only as long as the task's time
budget allows and no stop is asked. A provider's own timeout and retries cannot hold a worker
longer than that, and SIGTERM does not wait for a call in flight: the abandoned thread (a
daemon) ends with its HTTP timeout or the process, and its answer, if any, is dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from custseg.errors import CallAbandoned, LLMError

R = TypeVar("R")
POLL_S = 0.1  # how often a waiting worker looks at its stop event


def call_within(call: Callable[[], R], limit_s: float, stop: threading.Event) -> R:
    """`call()`'s result if it returns within `limit_s`; LLMError if it does not (the call is
    left running, unwatched); CallAbandoned as soon as `stop` is set. `call`'s own exceptions
    are raised here."""
    done = threading.Event()
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as error:  # handed to the waiting worker, raised there
            box["error"] = error
        finally:
            done.set()

    threading.Thread(target=run, name="llm-call", daemon=True).start()
    deadline = time.monotonic() + limit_s
    while not done.wait(max(0.0, min(POLL_S, deadline - time.monotonic()))):
        if stop.is_set():
            raise CallAbandoned("stopping: the LLM call in flight was abandoned")
        if time.monotonic() >= deadline:
            raise LLMError(f"no answer within {limit_s:.3g} s (what was left of the time budget)")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def give_up_reason(attempt: int, attempts: int, spent_s: float, budget_s: float) -> str | None:
    """Why an input whose LLM attempt number `attempt` (1-based) failed is dead-lettered, having
    spent `spent_s` of `budget_s` over its attempts; None if it is retried."""
    if spent_s >= budget_s:
        plural = "s" if attempt > 1 else ""
        return f"time budget of {budget_s:g} s spent over {attempt} attempt{plural}"
    if attempt >= attempts:
        return f"llm failed {attempt} times"
    return None
