"""A hanging LLM call beside healthy tasks: their latency, as a ratio to a run without it.

    python bench/bench_agents_inflight.py [--tasks 12] [--partitions 3] [--handoff 1]

The Planner, Writer and Reviewer run in this process as `custseg agents` runs them, against the
stand-in LLM server (custseg.testing.stand_in_llm), each call taking SLOW_S. Baseline: N healthy
tasks alone; then the same N submitted behind one task whose every call hangs (STALL_CUE); and,
for comparison, that run again with the hand-off bound out of the way (its floor set to the
task's budget: the worker waits for the call up to the provider's timeout, LLM_TIMEOUT_S).
Latency: a task's submission to its final answer, from the captured conversations. Starts its
own broker (or uses KAFKA_BOOTSTRAP_SERVERS). Goal: healthy mean latency beside the hanging call
≤ 1.5× the baseline's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import uuid
from datetime import datetime
from pathlib import Path

from _common import ROOT, kafka_cluster, report

from custseg import jsonl
from custseg.agents.capture import capture
from custseg.agents.client import submit_tasks
from custseg.agents.runtime import Timings, run_agents
from custseg.agents.topics import chain_topics, home_partition, topic_partitions
from custseg.config import TopicNames, load_params
from custseg.kafka.admin import ensure_topics
from custseg.llm import make_provider, resolve_settings
from custseg.paths import PARAMS
from custseg.telemetry import disable_telemetry
from custseg.testing.stand_in_llm import SLOW_CUE, STALL_CUE, stand_in_llm_server

LLM_TIMEOUT_S = 10.0  # the provider's own timeout: what a hanging call costs without a hand-off


def latencies(bootstrap: str, llm_url: str, tasks: list[str], timings: Timings, n_parts: int):
    """Per task of `tasks` without STALL_CUE: seconds from submission to final answer, with one
    agents runtime started for the run (after a warm-up task, so group joins are not timed);
    and how many of them share a hanging task's partition (offsets are committed in order:
    those behind it wait for its hand-off; with random ids their count is a lottery)."""
    params = load_params(ROOT / PARAMS)
    tag = uuid.uuid4().hex[:6]
    names = TopicNames().model_dump()
    agents = params.agents.model_copy(
        update={
            "topics": TopicNames(**{k: f"{tag}.{v}" for k, v in names.items()}),
            "group_prefix": f"bench-{tag}",
            "partitions": n_parts,
        }
    )
    ensure_topics(bootstrap, topic_partitions(agents))
    llm_params = params.llm.model_copy(
        update={
            "provider": "openai",
            "base_url": llm_url,
            "model": "stand-in",
            "max_retries": 0,
            "timeout": LLM_TIMEOUT_S,
        }
    )
    os.environ.setdefault(llm_params.api_key_env, "stand-in")
    llm = make_provider(resolve_settings(llm_params))
    stop = threading.Event()
    runner = threading.Thread(
        target=run_agents,
        args=(["planner", "writer", "reviewer"], llm, agents, bootstrap, stop),
        kwargs={"on_event": lambda line: None, "timings": timings},
    )
    runner.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "conversations.jsonl"

            def run(batch: list[str]) -> dict[str, str]:
                envelopes = submit_tasks(bootstrap, agents.topics.tasks, batch)
                ids = {e.correlation_id: e.content["task"] for e in envelopes}
                healthy = {cid for cid, task in ids.items() if STALL_CUE not in task}
                capture(
                    bootstrap,
                    chain_topics(agents.topics),
                    out,
                    f"{agents.group_prefix}.capture",
                    workers=n_parts,
                    dlq=agents.topics.dlq,
                    expect=healthy,
                    idle_s=None,
                    timeout_s=300,
                )
                return ids

            run([f"Warm-up: name one metric. {SLOW_CUE}"])
            ids = run(tasks)
            lines = {c["correlation_id"]: c for c in jsonl.read(out).values}
    finally:
        stop.set()
        runner.join()
    hanging = {home_partition(cid, n_parts) for cid, task in ids.items() if STALL_CUE in task}
    healthy = [cid for cid, task in ids.items() if STALL_CUE not in task]
    mates = sum(home_partition(cid, n_parts) in hanging for cid in healthy)
    return [
        (
            datetime.fromisoformat(lines[cid]["completed_at"])
            - datetime.fromisoformat(lines[cid]["started_at"])
        ).total_seconds()
        for cid in healthy
    ], mates


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=12, help="healthy tasks per run")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument(
        "--handoff", type=float, default=1.0, help="floor of the hand-off bound, seconds"
    )
    args = parser.parse_args()
    disable_telemetry()
    os.environ.pop("CUSTSEG_LLM_PROVIDER", None)
    fast = {"session_timeout_s": 3.0, "transaction_timeout_s": 3.0, "retry_pause_s": 1.0}
    with_handoff = Timings(**fast, handoff_s=args.handoff)
    without = Timings(**fast, handoff_s=Timings().task_budget_s)
    healthy = [f"Task {i}: name one metric. {SLOW_CUE}" for i in range(args.tasks)]
    hanging = [f"Plan the impossible {STALL_CUE}", *healthy]
    with kafka_cluster() as (bootstrap, _), stand_in_llm_server() as url:
        alone, _ = latencies(bootstrap, url, healthy, with_handoff, args.partitions)
        beside, mates = latencies(bootstrap, url, hanging, with_handoff, args.partitions)
        before, mates_before = latencies(bootstrap, url, hanging, without, args.partitions)
    base = statistics.mean(alone)
    for name, values, sharing in (
        (f"{args.tasks} healthy tasks alone (baseline)", alone, None),
        (f"  beside a hanging call, hand-off floor {args.handoff:g} s", beside, mates),
        (f"  beside it, no hand-off (provider timeout {LLM_TIMEOUT_S:g} s)", before, mates_before),
    ):
        report(f"{name}: mean", statistics.mean(values), "s")
        report("    p95", p95(values), "s")
        if sharing is not None:
            report("    on the hanging task's partition", sharing, "tasks")
    report("  ratio beside / alone, mean", statistics.mean(beside) / base, "x", "goal <= 1.5")
    report("  ratio without hand-off / alone, mean", statistics.mean(before) / base, "x")


if __name__ == "__main__":
    main()
