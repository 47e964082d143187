"""Healthy conversations' latency beside an LLM call that hangs, against the same without it.

    python bench/bench_agents_slow_call.py [--tasks 10] [--rounds 3]

The three roles run in this process as `custseg agents` runs them, on a real broker, with the
stand-in LLM server (answers at once: the waiting itself is measured). Each round submits
--tasks healthy tasks alone (the baseline), then the same number behind one task whose every
call hangs (sent first, so it heads its partition), alternating so load drifts hit both
sides. Latency: a task's submission to its final's arrival on the finals topic. Goal: the
healthy median beside the hanging call within 1.5× of the baseline's.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time

from _common import ROOT, kafka_cluster, report
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from custseg.agents.envelope import task_envelope
from custseg.agents.runtime import make_producer, run_agents
from custseg.agents.topics import topic_partitions
from custseg.config import load_params
from custseg.kafka.admin import ensure_topics
from custseg.llm.providers import OpenAICompatibleProvider
from custseg.paths import PARAMS
from custseg.testing.stand_in_llm import STALL_CUE, stand_in_llm_server

GOAL_RATIO = 1.5


def latencies(bootstrap: str, agents, tasks: list[str], timeout_s: float = 120) -> list[float]:
    """Submit `tasks` (in order) and return each healthy one's seconds to its final."""
    topics = agents.topics
    finals = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    tps = [TopicPartition(topics.finals, p) for p in range(agents.partitions)]
    finals.assign(tps)
    finals.seek_to_end(*tps)  # only this round's finals
    for tp in tps:
        finals.position(tp)
    producer = make_producer(bootstrap)
    sent: dict[str, float] = {}
    for task in tasks:
        envelope = task_envelope(task)
        producer.send(topics.tasks, key=envelope.correlation_id.encode(), value=envelope.to_bytes())
        if STALL_CUE not in task:
            sent[envelope.correlation_id] = time.perf_counter()
    producer.flush()
    producer.close()
    took: list[float] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(took) < len(sent):
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(took)} of {len(sent)} finals within {timeout_s:g} s")
            for records in finals.poll(timeout_ms=50).values():
                for record in records:
                    if (at := sent.get(record.key.decode())) is not None:
                        took.append(time.perf_counter() - at)
    finally:
        finals.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10, help="healthy tasks per side per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the broker
    params = load_params(ROOT / PARAMS)
    agents = params.agents.model_copy(update={"group_prefix": f"bench-slow-{os.getpid()}"})
    with kafka_cluster() as (bootstrap, _), stand_in_llm_server() as url:
        llm = OpenAICompatibleProvider(base_url=url, model="stand-in", api_key="-", max_retries=0)
        ensure_topics(bootstrap, topic_partitions(agents))
        stop = threading.Event()
        runner = threading.Thread(
            target=run_agents,
            args=(["planner", "writer", "reviewer"], llm, agents, bootstrap, stop),
            kwargs={"on_event": lambda _line: None},
        )
        runner.start()
        alone: list[float] = []
        beside: list[float] = []
        try:
            latencies(bootstrap, agents, ["Warm up: name one metric."])
            for n in range(args.rounds):
                healthy = [f"Round {n} task {i}: name one metric." for i in range(args.tasks)]
                alone += latencies(bootstrap, agents, healthy)
                hanging = f"Round {n}: plan the impossible {STALL_CUE}"
                beside += latencies(bootstrap, agents, [hanging, *healthy])
        finally:
            stop.set()
            runner.join()
    load = os.getloadavg()[0]
    for name, values in (("alone (baseline)", alone), ("beside a hanging call", beside)):
        report(f"healthy latency {name}, median", statistics.median(values), "s")
        report(f"healthy latency {name}, max", max(values), "s")
    ratio = statistics.median(beside) / statistics.median(alone)
    report("ratio beside / alone (median)", ratio, "x", f"goal ≤ {GOAL_RATIO:g}")
    report("load average (1 min)", load, "")


if __name__ == "__main__":
    main()
