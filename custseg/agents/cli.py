"""`custseg submit | agents | capture`: send tasks, run the agents, keep their conversations."""

from __future__ import annotations

import argparse
import faulthandler
import signal
import statistics
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from custseg import paths
from custseg.agents.capture.reader import WaitBounds
from custseg.agents.envelope import one_line
from custseg.agents.topics import chain_topics
from custseg.config import load_params
from custseg.entrypoint import (
    add_command,
    duration,
    exit_now,
    positive_int,
    positive_seconds,
    run,
)
from custseg.errors import ConfigError
from custseg.io import write_text_atomic

if TYPE_CHECKING:
    from custseg.agents.grounding import Champion
    from custseg.agents.runtime import Timings
    from custseg.config import AgentsParams
    from custseg.llm import Provider

ROLE_CHOICES = ("all", "planner", "writer", "reviewer")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The agents' commands of the `custseg` CLI."""
    submit = add_command(
        commands,
        "submit",
        "send tasks to the Planner; print one correlation id per task",
        cmd_submit,
        params=True,
    )
    submit.add_argument("tasks", nargs="*", help=f"task texts (default: those in {paths.TASKS})")
    submit.add_argument("--file", type=Path, help="a YAML list of tasks to send instead")
    submit.add_argument("--ids-out", type=Path, help="also write the correlation ids here")
    submit.add_argument(
        "--variant",
        type=variant_name,
        help="agent variant the tasks ask for (default: agents.variant; v1, or v2: facts from "
        "tools, limits enforced, a review of edits)",
    )
    submit.add_argument(
        "--estimate",
        action="store_true",
        help="only say how long the agents should take on these tasks (from the last captured "
        f"batch in {paths.CONVERSATIONS}); send nothing",
    )

    agents = add_command(
        commands,
        "agents",
        "run the Planner, Writer and Reviewer over Kafka until SIGTERM / Ctrl-C (stops within "
        "$CUSTSEG_AGENTS_SHUTDOWN_S, default 10 s; a worker that fails is restarted in place)",
        cmd_agents,
        params=True,
    )
    agents.add_argument(
        "--role",
        choices=ROLE_CHOICES,
        action="append",
        help="role to run (repeatable; default: all three)",
    )

    cap = add_command(
        commands,
        "capture",
        "append every complete conversation to a JSONL file, once",
        cmd_capture,
        params=True,
    )
    cap.add_argument("--out", type=Path, default=paths.CONVERSATIONS, help="the JSONL file")
    cap.add_argument(
        "--group",
        help="consumer group whose committed offsets it resumes from and moves on "
        "(default: <agents.group_prefix>.capture; a new group reads every topic from the start)",
    )
    cap.add_argument(
        "--expect", type=Path, help="a file of correlation ids (from submit --ids-out) to wait for"
    )
    cap.add_argument(
        "--idle",
        type=positive_seconds,
        default=None,
        help="stop after this many seconds without a message",
    )
    cap.add_argument(
        "--timeout", type=positive_seconds, default=None, help="stop after this many seconds"
    )
    cap.add_argument(
        "--orphan-wait",
        type=positive_seconds,
        default=WaitBounds.orphan_s,
        help="release replies whose task is not read within this many seconds "
        "(default: %(default)g)",
    )
    cap.add_argument(
        "--letter-wait",
        type=positive_seconds,
        default=WaitBounds.letter_wait_s,
        help="drop a dead letter whose named record's partition makes no progress towards it "
        "for this many seconds (default: %(default)g)",
    )
    cap.add_argument(
        "--workers",
        type=positive_int,
        help="processes, each reading partitions p %% N == k of every topic (default: "
        "agents.capture_workers, else one per partition; topics need equal partition counts)",
    )


def variant_name(text: str) -> str:
    """An agent variant as params.yaml accepts it (custseg.config.AgentsParams.variant)."""
    from custseg.config import AgentsParams

    try:
        AgentsParams(variant=text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: 1-32 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ) from None
    return text


def _stop_on_signals() -> threading.Event:
    """SIGTERM/SIGINT stop gracefully; SIGUSR1 prints every thread's stack to stderr (to see
    where a long-running agents or capture process waits) and carries on."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    return stop


def cmd_submit(args: argparse.Namespace) -> None:
    from custseg.agents.client import connect, read_tasks, submit_tasks

    params = load_params(args.params).agents
    tasks = args.tasks or read_tasks(args.file or paths.TASKS)
    if args.estimate:  # before any connection: `make agents-demo` says this first
        from custseg.agents.capture import seconds_per_conversation

        print(run_estimate(len(tasks), seconds_per_conversation(paths.CONVERSATIONS)))
        return
    bootstrap = connect(params)
    envelopes = submit_tasks(
        bootstrap,
        params.topics.tasks,
        tasks,
        lambda futures: tqdm(futures, desc="submit", unit="task", file=sys.stderr),
        variant=args.variant or params.variant,
    )
    ids = "".join(f"{e.correlation_id}\n" for e in envelopes)
    print(ids, end="")  # first: the tasks are sent, their ids must not be lost with the file
    if args.ids_out:
        write_text_atomic(args.ids_out, ids)  # a disk that refuses: one line


def cmd_agents(args: argparse.Namespace) -> None:
    from custseg.agents.client import connect
    from custseg.agents.grounding import Champion
    from custseg.agents.runtime import timings_from_env
    from custseg.llm import make_provider, resolve_settings

    params = load_params(args.params)
    timings = timings_from_env()  # CUSTSEG_AGENTS_*_S: checked before anything starts
    # Grounded in the registered champion's segments, or refused in one line (`make run`).
    champion = Champion(
        params.export.model_name,
        params.export.alias,
        on_event=lambda line: print(line, file=sys.stderr, flush=True),
    )
    bootstrap = connect(params.agents)
    llm = make_provider(resolve_settings(params.llm))
    chosen = args.role or ["all"]
    roles = ["planner", "writer", "reviewer"] if "all" in chosen else sorted(set(chosen))
    print(
        f"agents: {', '.join(roles)} on {bootstrap} with {llm.describe}, grounded in "
        f"{champion.model} v{champion.grounding.version}; Ctrl-C/SIGTERM stops",
        file=sys.stderr,
    )
    # Once the workers are done or left behind, the process ends at once: an LLM call abandoned
    # on SIGTERM must not hold the exit (the bundled model's in-process llama.cpp would finish
    # its decode first). A config error while running is still one line and exit 2.
    exit_now(run(lambda: _run_workers(roles, llm, params.agents, bootstrap, champion, timings)))


def _run_workers(
    roles: list[str],
    llm: Provider,
    params: AgentsParams,
    bootstrap: str,
    champion: Champion,
    timings: Timings,
) -> None:
    from custseg.agents.runtime import run_agents

    workers = run_agents(
        roles,
        llm,
        params,
        bootstrap,
        _stop_on_signals(),
        on_event=lambda line: print(line, file=sys.stderr, flush=True),
        champion=champion,
        timings=timings,
    )
    for w in workers:
        overhead = (
            f", overhead beyond the LLM median {statistics.median(w.stats.overhead_s) * 1e3:.1f} ms"
            if w.stats.overhead_s
            else ""
        )
        print(
            f"{w.role.name}: {w.stats.handled} answered, {w.stats.duplicates} duplicates "
            f"skipped, {w.stats.dead_letters} dead-lettered, {w.stats.moved} moved to their "
            f"home partition, {w.stats.restarts} restarts{overhead}",
            file=sys.stderr,
        )


# Measured here: the committed batch of 15 tasks (bundled 1.5B model, 2 cores) took ~72 s a
# conversation. Stated when no batch of this machine's own is there to measure.
BUNDLED_S_PER_CONVERSATION = 72.0


def run_estimate(n: int, measured_s: float | None) -> str:
    """How long `n` tasks should take the agents, stated as the estimate it is."""
    if measured_s is None:
        per, source = BUNDLED_S_PER_CONVERSATION, "measured with the bundled model on 2 cores"
    else:
        per, source = measured_s, "the last captured batch here"
    return (
        f"expected duration: {n} task(s) x ~{per:.0f} s a conversation ({source}) = "
        f"~{duration(n * per)}, an estimate (the capture's bar shows progress)"
    )


def capture_estimate(n: int, per_conversation_s: float | None, timeout_s: float) -> str:
    """What capture is about to wait for, and for how long, from the last measured batch."""
    head = f"capture: waiting for {n} conversation(s) (timeout {timeout_s:g} s)"
    if per_conversation_s is None:
        return f"{head}; no earlier batch to estimate from"
    return (
        f"{head}; the last batch took ~{per_conversation_s:.0f} s a conversation here, "
        f"so expect ~{duration(n * per_conversation_s)}"
    )


def cmd_capture(args: argparse.Namespace) -> None:
    from custseg.agents.capture import (
        capture,
        failed_path,
        ids_in,
        recover,
        seconds_per_conversation,
    )
    from custseg.agents.client import connect

    params = load_params(args.params).agents
    bootstrap = connect(params)
    expect = set(args.expect.read_text().split()) if args.expect else None
    stop = _stop_on_signals()
    out = args.out
    total = len(expect) if expect else None
    if expect:
        print(capture_estimate(len(expect), seconds_per_conversation(out), args.timeout))
    with tqdm(total=total, desc="capture", unit="conv", file=sys.stderr) as bar:
        result = capture(
            bootstrap,
            chain_topics(params.topics),
            out,
            args.group or f"{params.group_prefix}.capture",
            expect=expect,
            idle_s=args.idle,
            timeout_s=args.timeout,
            should_stop=stop.is_set,
            workers=args.workers or params.workers,
            dlq=params.topics.dlq,
            on_written=lambda _cid: bar.update(1),
            on_note=lambda line: print(one_line(line), file=sys.stderr, flush=True),
            bounds=WaitBounds(args.orphan_wait, args.letter_wait),
        )
    failed = failed_path(out)
    print(
        f"capture: {len(result.written)} conversation(s) appended to {out}, "
        f"{len(result.failed)} closed as failed (dead-lettered; in {failed}), "
        f"{len(result.incomplete)} incomplete held, {result.invalid} invalid record(s) and "
        f"{result.moved} off their home partition skipped, {result.released} without a task "
        f"released, {result.dropped} dead letter(s) naming no record read dropped",
        file=sys.stderr,
    )
    for cid, parts in sorted(result.incomplete.items()):
        print(f"  incomplete {one_line(cid)}: missing {', '.join(parts)}", file=sys.stderr)
    # The files, not this run's result: earlier runs may have written some of them.
    if expect and (missing := expect - recover(out)):
        raise ConfigError(
            f"capture: {len(missing)} expected conversation(s) not complete before the timeout"
        )
    if expect and (dead := expect & ids_in(failed)):
        raise ConfigError(
            f"capture: {len(dead)} expected conversation(s) failed (a record was "
            f"dead-lettered); the reasons are in {failed}"
        )
