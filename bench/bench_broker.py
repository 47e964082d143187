"""Kafka broker benchmarks: jar fetch, cold start, warm restart, stop, RSS, produce throughput.

The project's JVM flags are compared with the plain `-Xms256m -Xmx512m` baseline in the same run.

python bench/bench_broker.py [--cold-fetch] [--messages 20000]
(--cold-fetch downloads the ~55 MB of jars again into an empty Maven repository.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from _common import report, timed
from kafka import KafkaProducer

from custseg.kafka.admin import ensure_topics
from custseg.kafka.broker import JVM_OPTS, LocalBroker
from custseg.kafka.jars import fetch_jars, jars_home

BASELINE_OPTS = ("-Xms256m", "-Xmx512m")


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def mvn_copy(repo: Path | None) -> float:
    """Seconds for Maven to copy the broker jars into a temp dir (from `repo` if given)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = ["mvn", "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={out}"]
        if repo is not None:
            cmd.append(f"-Dmaven.repo.local={repo}")
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=jars_home(), capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"mvn failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started


def bench_fetch(cold: bool) -> None:
    fetch_jars()  # make sure the stamp is current before timing the no-op
    report("jar fetch, stamp current (no mvn)", timed(fetch_jars)[0], "s", "goal ≤ 0.05 s")
    report("jar fetch, mvn with a warm local repository", mvn_copy(None), "s", "goal ≤ 10 s")
    if cold:
        with tempfile.TemporaryDirectory() as repo:
            report("jar fetch, mvn with an empty local repository", mvn_copy(Path(repo)), "s")


def produce_rate(bootstrap: str, messages: int) -> float:
    """Keyed JSON messages per second, acks=all, as the agents will send them."""
    ensure_topics(bootstrap, {"bench.produce": 3})
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)

    def send_all() -> None:
        for i in range(messages):
            value = json.dumps({"conversation": f"c{i % 50}", "seq": i}).encode()
            producer.send("bench.produce", key=f"c{i % 50}".encode(), value=value)
        producer.flush()

    seconds, _ = timed(send_all)
    producer.close()
    return messages / seconds


def bench_broker(label: str, jvm_opts: tuple[str, ...], messages: int) -> dict[str, float]:
    """Start, restart and load one broker; report and return its numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker.ephemeral(Path(tmp) / "data", jvm_opts=jvm_opts)
        cold, _ = timed(broker.start)
        idle_rss = rss_mb(broker.pid() or 0)
        stop, _ = timed(broker.stop)
        warm, _ = timed(broker.start)
        rate = produce_rate(broker.bootstrap, messages)
        loaded_rss = rss_mb(broker.pid() or 0)
        broker.stop()
    report(f"[{label}] cold start (format + start, until ready)", cold, "s")
    report(f"[{label}] warm restart (until ready)", warm, "s")
    report(f"[{label}] stop (SIGTERM until exit)", stop, "s")
    report(f"[{label}] RSS idle after start", idle_rss, "MB")
    report(f"[{label}] RSS after {messages} messages", loaded_rss, "MB")
    report(f"[{label}] produce keyed JSON, acks=all", rate, "msg/s")
    return {"cold": cold, "warm": warm, "rss": loaded_rss, "rate": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-fetch", action="store_true", help="also time an empty-repo fetch")
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    bench_fetch(args.cold_fetch)
    base = bench_broker("plain JVM", BASELINE_OPTS, args.messages)
    ours = bench_broker("project", JVM_OPTS, args.messages)
    for key, what in [("cold", "cold start"), ("warm", "warm restart"), ("rss", "RSS")]:
        report(f"ratio project/baseline: {what}", ours[key] / base[key], "x", "lower is better")
    report("ratio project/baseline: produce rate", ours["rate"] / base["rate"], "x", "≥ 0.8")


if __name__ == "__main__":
    main()
