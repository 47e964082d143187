"""Agent overhead per message beyond the LLM call: Planner → Writer → Reviewer on a real broker.

    python bench/bench_agents.py [--tasks 10] [--max-tokens 8]

The agents run as `custseg agents` runs them, with the configured `llm:` provider (the
bundled local model by default); plans and drafts are cut to --max-tokens so the run stays
short. For every record a worker times poll → parse → prompt → LLM → produce (acked by the
broker) → commit and subtracts the LLM call. The baseline: that LLM call, in the same run.
Starts its own broker on free loopback ports (or uses KAFKA_BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time

from _common import ROOT, kafka_cluster, report, timed
from kafka import KafkaConsumer

from custseg.agents.client import read_tasks
from custseg.agents.envelope import task_envelope
from custseg.agents.runtime import make_producer, run_agents
from custseg.agents.topics import topic_partitions
from custseg.config import load_params
from custseg.kafka.admin import ensure_topics
from custseg.llm import load_provider
from custseg.paths import PARAMS, TASKS

GOAL_MS = 20.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10, help="conversations to run")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=8,
        help="reply budget of the Planner and Writer (the Reviewer keeps its own: its reply is "
        "JSON that must be complete)",
    )
    parser.add_argument("--verbose", action="store_true", help="print every agent event")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for finals")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the broker
    params = load_params(ROOT / PARAMS)
    agents = params.agents.model_copy(
        update={
            "group_prefix": f"bench-{os.getpid()}",
            "max_tokens": params.agents.max_tokens.model_copy(
                update=dict.fromkeys(("planner", "writer"), args.max_tokens)
            ),
        }
    )
    tasks = (read_tasks(ROOT / TASKS) * args.tasks)[: args.tasks]
    llm = load_provider(ROOT / PARAMS)
    seconds, _ = timed(lambda: llm.complete([{"role": "user", "content": "OK?"}], max_tokens=1))
    report(f"LLM ready ({llm.describe})", seconds, "s")

    with kafka_cluster() as (bootstrap, _):
        stop = threading.Event()
        runner = None
        try:
            t = agents.topics
            ensure_topics(bootstrap, topic_partitions(agents))
            workers: list = []
            runner = threading.Thread(
                target=lambda: workers.extend(
                    run_agents(
                        ["planner", "writer", "reviewer"],
                        llm,
                        agents,
                        bootstrap,
                        stop,
                        on_event=lambda line: print(line, flush=True) if args.verbose else None,
                    )
                )
            )
            runner.start()
            producer = make_producer(bootstrap)
            for task in tasks:
                envelope = task_envelope(task)
                producer.send(
                    t.tasks, key=envelope.correlation_id.encode(), value=envelope.to_bytes()
                )
            producer.flush()
            producer.close()
            started = time.perf_counter()
            reviewer_done = wait_for_finals(
                bootstrap, t.finals, len(tasks), runner, deadline_s=args.timeout
            )
            wall = time.perf_counter() - started
        finally:
            stop.set()
            if runner:
                runner.join()  # the workers' numbers are ready once run_agents returns
    if not reviewer_done:
        raise SystemExit(
            f"not every task reached {agents.topics.finals} within {args.timeout:g} s "
            "(--verbose shows what the agents did)"
        )

    overhead = [s for w in workers for s in w.stats.overhead_s]
    handled = sum(w.stats.handled for w in workers)
    llm_per_call = statistics.median(s for w in workers for s in w.stats.llm_s)
    if not overhead:
        raise SystemExit("no message was answered")
    report(f"{len(tasks)} conversations, {handled} messages answered", wall, "s")
    report("LLM call per message, median (baseline)", llm_per_call * 1000, "ms")
    for name, value in (
        ("median", statistics.median(overhead)),
        ("p95", percentile(overhead, 0.95)),
        ("max", max(overhead)),
    ):
        report(f"agent overhead per message, {name}", value * 1000, "ms", f"goal ≤ {GOAL_MS:g}")
    report("  ratio overhead / LLM call (median)", statistics.median(overhead) / llm_per_call, "x")


def wait_for_finals(
    bootstrap: str, topic: str, n: int, runner: threading.Thread, deadline_s: float
) -> bool:
    """Read the finals topic until `n` finals arrived; False if the agents died or time ran out."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    seen, deadline = 0, time.monotonic() + deadline_s
    try:
        while seen < n and runner.is_alive() and time.monotonic() < deadline:
            seen += sum(len(r) for r in consumer.poll(timeout_ms=500).values())
    finally:
        consumer.close()
    return seen >= n


if __name__ == "__main__":
    main()
