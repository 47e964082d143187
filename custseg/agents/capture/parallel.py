"""The capture in N worker processes: worker k reads the partitions p % N == k of every topic
(see `reader.slice_partitions`); the parent holds the Watch, hears the workers' reports over a
queue, tells them when to stop and merges their results."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

from custseg.agents.capture.reader import CaptureResult, WaitBounds, Watch, read_slice


class Relay:
    """A worker process's view of the parent's Watch: reports go up a queue, the stop comes down
    as an event (or when the parent is gone)."""

    def __init__(self, worker: int, events: Queue, stop: Event) -> None:
        self.worker, self.events, self.stop, self.parent = worker, events, stop, os.getppid()

    def wrote(self, ids: list[str]) -> None:
        self.events.put((self.worker, "wrote", ids))

    def heard(self) -> None:
        self.events.put((self.worker, "heard", None))

    def note(self, line: str) -> None:
        self.events.put((self.worker, "note", line))

    def assigned(self) -> None:
        self.events.put((self.worker, "assigned", None))

    def over(self) -> bool:
        return self.stop.is_set() or os.getppid() != self.parent


def _work(
    args: tuple,
    captured: set[str],
    worker: int,
    workers: int,
    events: Queue,
    stop: Event,
    bounds: WaitBounds,
) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the parent decides when to stop, and says so
    try:
        relay = Relay(worker, events, stop)
        result = read_slice(*args, worker, workers, captured, relay, bounds)
        events.put((worker, "done", result))
    except Exception as error:
        events.put((worker, "failed", error))  # re-raised by the parent, type and message intact


def in_parallel(
    args: tuple, workers: int, captured: set[str], watch: Watch, bounds: WaitBounds
) -> CaptureResult:
    """Run `read_slice(*args, k, workers, ...)` in `workers` processes until `watch` is over;
    the merged result, or the first worker's error."""
    # fork: the workers start in milliseconds, with this process's imports already done
    context = multiprocessing.get_context("fork")
    events, stop = context.Queue(), context.Event()
    processes = [
        context.Process(
            target=_work, args=(args, captured, k, workers, events, stop, bounds), daemon=True
        )
        for k in range(workers)
    ]
    for process in processes:
        process.start()
    reports: dict[int, CaptureResult | Exception] = {}  # a result, or why the worker failed
    silent: set[int] = set()
    try:
        while len(reports) < workers:
            try:
                worker, kind, value = events.get(timeout=0.2)
            except queue.Empty:
                # Exited without a report (killed)? Only if seen twice: a report may be in flight.
                gone = {k for k, p in enumerate(processes) if p.exitcode is not None} - set(reports)
                for k in gone & silent:
                    reports[k] = RuntimeError(
                        f"capture: worker {k} exited with code {processes[k].exitcode}"
                    )
                silent, kind = gone, None
            if kind == "wrote":
                watch.wrote(value)
            elif kind == "heard":
                watch.heard()
            elif kind == "note":
                watch.note(value)
            elif kind == "assigned":
                watch.assigned()
            elif kind in ("done", "failed"):
                reports[worker] = value
            if watch.over() or any(isinstance(r, Exception) for r in reports.values()):
                stop.set()
    finally:
        stop.set()
        for process in processes:
            process.join()
    if failures := [r for r in reports.values() if isinstance(r, Exception)]:
        raise failures[0]
    return merged(list(reports.values()))


def merged(results: list[CaptureResult]) -> CaptureResult:
    """One result for the workers' results."""
    return CaptureResult(
        written=[cid for r in results for cid in r.written],
        incomplete={cid: parts for r in results for cid, parts in r.incomplete.items()},
        invalid=sum(r.invalid for r in results),
        messages=sum(r.messages for r in results),
        failed=[cid for r in results for cid in r.failed],
        moved=sum(r.moved for r in results),
        released=sum(r.released for r in results),
        dropped=sum(r.dropped for r in results),
    )
