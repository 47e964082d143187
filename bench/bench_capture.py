"""Capture throughput, 1 worker and one per partition, vs a bare kafka-python consumer (same run).

    python bench/bench_capture.py [--conversations 25000]   # 4 messages each → 100,000 records

Starts its own broker on free loopback ports (or uses KAFKA_BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path

from _common import kafka_cluster, report, timed
from kafka import KafkaConsumer

from custseg.agents.capture import capture
from custseg.kafka.admin import ensure_topics
from custseg.testing.conversations import produce

TOPICS = {"task": "b.tasks", "plan": "b.plans", "draft": "b.drafts", "final": "b.finals"}


def bare_consume(bootstrap: str, total: int) -> int:
    consumer = KafkaConsumer(
        *TOPICS.values(),
        bootstrap_servers=bootstrap,
        group_id=f"bare-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    seen = 0
    while seen < total:
        seen += sum(len(r) for r in consumer.poll(timeout_ms=500).values())
    consumer.close()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=25_000)
    parser.add_argument("--partitions", type=int, default=3, help="per topic (params.yaml: 3)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; best kept")
    args = parser.parse_args()
    with kafka_cluster() as (bootstrap, start_s), tempfile.TemporaryDirectory() as tmp:
        if start_s is not None:
            report("broker cold start (format + start + ready)", start_s, "s")
        ensure_topics(bootstrap, {t: args.partitions for t in TOPICS.values()})
        total = 4 * args.conversations
        seconds, sent = timed(lambda: produce(bootstrap, TOPICS, args.conversations))
        ids = {envelopes[0].correlation_id for envelopes in sent}
        report(f"produce {total:,} envelopes", total / seconds, "msg/s")

        def run_capture(workers: int, round_: int) -> float:
            out = Path(tmp) / f"conversations-{workers}-{round_}.jsonl"
            group = f"cap-{uuid.uuid4().hex}"
            seconds, result = timed(
                lambda: capture(
                    bootstrap, TOPICS.values(), out, group, workers=workers, expect=ids, idle_s=30
                )
            )
            assert sorted(result.written) == sorted(ids), "each conversation exactly once"
            assert len(out.read_text().splitlines()) == args.conversations
            return total / seconds

        # Alternate so the page cache and the machine's load treat all alike; keep the best.
        speeds: dict[str, list[float]] = {"bare": [], "one": [], "parallel": []}
        for round_ in range(args.rounds):
            speeds["bare"].append(total / timed(lambda: bare_consume(bootstrap, total))[0])
            speeds["one"].append(run_capture(1, round_))
            speeds["parallel"].append(run_capture(args.partitions, round_))
        bare, one, parallel = (max(v) for v in speeds.values())
        report("bare kafka-python consumer (one process)", bare, "msg/s")
        report("capture, 1 worker (parse, validate, join, append, commit)", one, "msg/s")
        report("  ratio 1 worker / bare consumer", one / bare, "x")
        report(f"capture, {args.partitions} workers (one per partition)", parallel, "msg/s")
        ratio = parallel / bare
        report(f"  ratio {args.partitions} workers / bare consumer", ratio, "x", "goal ≥ 0.8")


if __name__ == "__main__":
    main()
