"""LLM calls a worker can walk away from, and what a failed attempt comes to.

Each call runs in a thread of its own; the worker waits for it only as long as the task's time
budget allows, no longer than the hand-off bound of its attempt, and not at all once a stop is
asked. A provider's own timeout and retries cannot hold a worker longer than that: an abandoned
thread (a daemon) ends with its HTTP timeout or the process, and its answer, if any, is dropped.

A batch's calls run side by side (`run_calls`, at most the provider's `calls_in_flight` at a
time), so one hanging call holds up only the records of its own batch, and those for at most
its hand-off bound: a few times the recent median call, with a floor (`handoff_bound`).

The hand-off bound counts from when the call starts running: a call waiting its turn at a
provider that decodes one call at a time (the bundled model, `llm.queue`) is bounded only by
its task's budget, and one walked away from while it waited is never run. Counting the wait
made every agent hand off calls that were merely queued behind the other agents' calls, and
each abandoned call still took its turn at the model.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from custseg.errors import CallAbandoned, LLMError
from custseg.llm.queue import watching

R = TypeVar("R")
POLL_S = 0.1  # how often a waiting worker looks at its stop event
# A call still unanswered after this many times the recent median call is handed off to the
# retry topic (the floor `Timings.handoff_s` applies when calls are fast or none was timed yet).
HANDOFF_FACTOR = 4.0
RECENT_CALLS = 50  # answered calls the median is taken over, per worker


def handoff_bound(recent: Sequence[float], floor_s: float, attempt: int) -> float:
    """Seconds attempt number `attempt` (1-based) of a call is waited for before it is handed
    off: HANDOFF_FACTOR × the median of the `recent` answered calls, at least `floor_s`, times
    the attempt (so a call that is merely long gets more room each time)."""
    base = max(floor_s, HANDOFF_FACTOR * statistics.median(recent)) if recent else floor_s
    return base * attempt


def call_within(call: Callable[[], R], limit_s: float, stop: threading.Event) -> R:
    """`call()`'s result if it returns within `limit_s`; LLMError if it does not (the call is
    left running, unwatched); CallAbandoned as soon as `stop` is set. `call`'s own exceptions
    are raised here."""
    (result,) = run_calls([Call(call, limit_s, limit_s)], 1, stop, time.monotonic())
    if result is None:
        raise CallAbandoned("stopping: the LLM call in flight was abandoned")
    return result.get()


@dataclass
class Call:
    """One input's LLM call: waited for at most `limit_s` (what is left of its task's budget)
    and at most `handoff_s` (then it is handed off, for a later attempt)."""

    run: Callable[[], Any]
    limit_s: float
    handoff_s: float
    started: float = 0.0  # when it began, then when it began running if it had to wait
    queued: bool = False  # waiting behind other calls in this process (`llm.queue`)
    box: dict[str, Any] = field(default_factory=dict)

    @property
    def deadline(self) -> float:
        if self.queued:  # not running yet: only the task's budget bounds the wait
            return self.started + self.limit_s
        return self.started + min(self.limit_s, self.handoff_s)

    def running_for(self, now: float) -> float:
        """Seconds it has been running (0 while it waits its turn)."""
        return 0.0 if self.queued else now - self.started

    # `llm.queue.CallWatcher`, called from the call's thread.
    def waiting(self) -> None:
        self.queued = True

    def running(self) -> None:
        if "abandoned" in self.box:
            raise CallAbandoned("the caller walked away while the call waited its turn")
        if self.queued:
            self.started, self.queued = time.monotonic(), False


@dataclass(frozen=True)
class CallResult:
    """A call's value or error, and the seconds it was waited for."""

    value: Any = None
    error: BaseException | None = None
    elapsed_s: float = 0.0
    handed_off: bool = False  # not answered within its bound
    out_of_budget: bool = False  # ... and that bound was what was left of the task's budget

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def _start(call: Call, changed: threading.Event) -> None:
    def run() -> None:
        try:
            with watching(call):
                call.box["value"] = call.run()
        except BaseException as error:  # handed to the waiting worker, raised there
            call.box["error"] = error
        finally:
            call.box["done"] = time.monotonic()
            changed.set()

    call.started = time.monotonic()
    threading.Thread(target=run, name="llm-call", daemon=True).start()


def _timed_out(call: Call) -> CallResult:
    call.box["abandoned"] = True  # if it still waits its turn, it never runs
    out_of_budget = call.queued or call.limit_s <= call.handoff_s
    if out_of_budget:
        why = f"no answer within {call.limit_s:.3g} s (what was left of the time budget)"
    else:
        why = f"no answer within {call.handoff_s:.3g} s (its hand-off bound): handed off"
    elapsed = time.monotonic() - call.started
    return CallResult(None, LLMError(why), elapsed, handed_off=True, out_of_budget=out_of_budget)


def run_calls(
    calls: Sequence[Call],
    in_flight: int,
    stop: threading.Event,
    start_until: float,
    expected_s: float | None = None,
    progress: Callable[[list[tuple[int, CallResult]], bool], list[Call] | None] | None = None,
) -> list[CallResult | None]:
    """Run `calls` in order, at most `in_flight` at a time, each waited for until its own
    deadline. A call is started before monotonic time `start_until`, or while none has ended
    yet (so a batch always moves), or while a call still running holds the batch open past the
    time the new one should take (`expected_s`): a hanging call costs its batch no more than its
    bound. `progress` is told, at least every POLL_S, of the calls ended since (index, result)
    and whether the batch is only held (nothing left to start, every call out overdue); it
    returns more calls to run (their indices follow), or None to abandon the rest. None for a
    call never started, or abandoned (`stop` set, or `progress`): its input is left
    uncommitted. Every wait is bounded by the calls' deadlines."""
    calls = list(calls)
    results: list[CallResult | None] = [None] * len(calls)
    waiting, running = deque(range(len(calls))), set[int]()
    changed, ended, going = threading.Event(), False, True
    while (waiting or running) and going and not stop.is_set():
        while waiting and len(running) < max(1, in_flight):
            now = time.monotonic()
            overdue_s = expected_s or 0.0
            held = any(  # by a call overdue, not merely running
                calls[i].running_for(now) > overdue_s and now + overdue_s < calls[i].deadline
                for i in running
            )
            if ended and now >= start_until and not held:
                break  # the rest wait, unless a call running comes to hold the batch open
            running.add(i := waiting.popleft())
            _start(calls[i], changed)
        if not running:  # what waits is left for the next batch
            break
        changed.clear()
        now, ended_now = time.monotonic(), []
        for i in sorted(running):
            call = calls[i]
            if "done" in call.box:
                elapsed = call.box["done"] - call.started
                result = CallResult(call.box.get("value"), call.box.get("error"), elapsed)
            elif now >= call.deadline:
                result = _timed_out(call)
            else:
                continue
            results[i], ended = result, True
            running.discard(i)
            ended_now.append((i, result))
        if progress is not None:
            held_only = not waiting and all(
                calls[i].running_for(now) > (expected_s or 0.0) for i in running
            )
            more = progress(ended_now, held_only and bool(running))
            going = more is not None
            for call in more or ():
                waiting.append(len(calls))
                calls.append(call)
                results.append(None)
        if running and going and not (ended_now and waiting):  # a freed slot is used now
            next_deadline = min(calls[i].deadline for i in running)
            changed.wait(max(0.0, min(POLL_S, next_deadline - time.monotonic())))
    for i in running:  # abandoned: answers that come later are dropped with their threads
        calls[i].box["abandoned"] = True
        results[i] = None
    return results


def give_up_reason(attempt: int, attempts: int, spent_s: float, budget_s: float) -> str | None:
    """Why an input whose LLM attempt number `attempt` (1-based) failed is dead-lettered, having
    spent `spent_s` of `budget_s` over its attempts; None if it is retried."""
    if spent_s >= budget_s:
        plural = "s" if attempt > 1 else ""
        return f"time budget of {budget_s:g} s spent over {attempt} attempt{plural}"
    if attempt >= attempts:
        return f"llm failed {attempt} times"
    return None
