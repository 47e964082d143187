"""Agents end to end with the stand-in LLM: what exactly-once delivery costs in throughput.

    python bench/bench_agents_throughput.py [--tasks 500] [--partitions 3]

N tasks are submitted; the Planner, Writer and Reviewer run in this process as `custseg agents`
runs them (transactions, read_committed, the retry topic) against the stand-in LLM server
(custseg.testing.stand_in_llm: answers at once, so the pipeline itself is measured); the capture
(one worker per partition) runs until all N conversations are written. Baseline, in the same
run: a bare relay of the same N task records over three hops with plain kafka-python (each hop
consumes in its own group with auto-commit and produces the bytes on, acks=all, no
transactions, no parsing, no LLM). Starts its own broker (or uses KAFKA_BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _common import ROOT, kafka_cluster, report, timed
from kafka import KafkaConsumer, KafkaProducer

from custseg.agents.capture import capture
from custseg.agents.client import submit_tasks
from custseg.agents.runtime import run_agents
from custseg.agents.topics import chain_topics, topic_partitions
from custseg.config import TopicNames, load_params
from custseg.kafka.admin import ensure_topics
from custseg.llm import make_provider, resolve_settings
from custseg.paths import PARAMS
from custseg.telemetry import disable_telemetry
from custseg.testing.stand_in_llm import stand_in_llm_server


def agents_run(bootstrap: str, llm_url: str, n: int, partitions: int) -> float:
    """Seconds from the first task submitted to the last conversation captured."""
    params = load_params(ROOT / PARAMS)
    tag = uuid.uuid4().hex[:6]
    names = TopicNames().model_dump()
    agents = params.agents.model_copy(
        update={
            "topics": TopicNames(**{k: f"{tag}.{v}" for k, v in names.items()}),
            "group_prefix": f"bench-{tag}",
            "partitions": partitions,
        }
    )
    ensure_topics(bootstrap, topic_partitions(agents))
    llm_params = params.llm.model_copy(
        update={"provider": "openai", "base_url": llm_url, "model": "stand-in", "max_retries": 0}
    )
    os.environ.setdefault(llm_params.api_key_env, "stand-in")
    llm = make_provider(resolve_settings(llm_params))
    stop = threading.Event()
    runner = threading.Thread(
        target=run_agents,
        args=(["planner", "writer", "reviewer"], llm, agents, bootstrap, stop),
        kwargs={"on_event": lambda line: None},
    )
    runner.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            tasks = [f"Task {i}: which segment gets the spring flyer?" for i in range(n)]
            ids = {e.correlation_id for e in submit_tasks(bootstrap, agents.topics.tasks, tasks)}
            result = capture(
                bootstrap,
                chain_topics(agents.topics),
                Path(tmp) / "conversations.jsonl",
                f"{agents.group_prefix}.capture",
                workers=partitions,
                dlq=agents.topics.dlq,
                expect=ids,
                idle_s=None,
                timeout_s=900,
            )
            seconds = time.perf_counter() - started
    finally:
        stop.set()
        runner.join()
    if sorted(result.written) != sorted(ids):
        raise SystemExit(f"only {len(result.written)} of {n} conversations captured")
    return seconds


def relay_run(bootstrap: str, n: int, partitions: int) -> float:
    """Seconds for N records to pass three plain consume → produce hops."""
    tag = uuid.uuid4().hex[:6]
    hops = [f"{tag}.relay{i}" for i in range(4)]
    ensure_topics(bootstrap, dict.fromkeys(hops, partitions))
    stop = threading.Event()

    def hop(source: str, target: str) -> None:
        consumer = KafkaConsumer(
            source,
            bootstrap_servers=bootstrap,
            group_id=f"{tag}.{source}",
            auto_offset_reset="earliest",
        )
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=100).values():
                for record in records:
                    producer.send(target, key=record.key, value=record.value)
            producer.flush()
        consumer.close()
        producer.close()

    threads = [threading.Thread(target=hop, args=pair) for pair in itertools.pairwise(hops)]
    for thread in threads:
        thread.start()
    value = b'{"task": "Task: which segment gets the spring flyer?"}' * 8
    last = KafkaConsumer(hops[-1], bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    try:
        started = time.perf_counter()
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        for i in range(n):
            producer.send(hops[0], key=str(i).encode(), value=value)
        producer.flush()
        producer.close()
        seen = 0
        while seen < n:
            seen += sum(len(r) for r in last.poll(timeout_ms=200).values())
        return time.perf_counter() - started
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        last.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args()
    disable_telemetry()
    os.environ.pop("CUSTSEG_LLM_PROVIDER", None)
    with kafka_cluster() as (bootstrap, _), stand_in_llm_server() as url:
        relay_s, _ = timed(lambda: relay_run(bootstrap, args.tasks, args.partitions))
        agents_s = agents_run(bootstrap, url, args.tasks, args.partitions)
    relay_rate, agents_rate = args.tasks / relay_s, args.tasks / agents_s
    report(f"bare 3-hop relay, {args.tasks} records (baseline)", relay_rate, "rec/s")
    report(f"agents + capture, {args.tasks} conversations", agents_rate, "conv/s")
    report("  ratio agents / bare relay", agents_rate / relay_rate, "x")


if __name__ == "__main__":
    main()
