"""Agents over Kafka and their evaluation: `python -m eval submit | agents | capture |
calibrate` (each has --help)."""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import threading
from pathlib import Path

import yaml
from tqdm import tqdm

from custseg.cli import run_cli
from custseg.config import DEFAULT_PARAMS, AgentsParams, ConfigError, load_params

ROLE_CHOICES = ("all", "planner", "writer", "reviewer")


def read_tasks(path: Path) -> list[str]:
    """A YAML list of task strings (or of {task: ...} mappings)."""
    if not path.is_file():
        raise ConfigError(f"agents.tasks_file: file not found: {path}")
    items = yaml.safe_load(path.read_text()) or []
    tasks = [i["task"] if isinstance(i, dict) else i for i in items]
    if not tasks or not all(isinstance(t, str) and t.strip() for t in tasks):
        raise ConfigError(f"agents.tasks_file: {path} must be a non-empty list of task strings")
    return [t.strip() for t in tasks]


def topic_partitions(params: AgentsParams) -> dict[str, int]:
    """Every agent topic with its partition count, as the project creates them."""
    t = params.topics
    return {name: params.partitions for name in (t.tasks, t.plans, t.drafts, t.finals, t.dlq)}


def _connect(params: AgentsParams) -> str:
    """The cluster to use, with the project's topics created; a clear error if unreachable."""
    from custseg.kafka_broker import KafkaBrokerError, bootstrap_servers, ensure_topics

    bootstrap = bootstrap_servers()
    try:
        ensure_topics(bootstrap, topic_partitions(params), timeout_s=10)
    except KafkaBrokerError as error:
        raise ConfigError(str(error)) from None
    return bootstrap


def cmd_submit(args: argparse.Namespace) -> None:
    params = load_params(args.params).agents
    tasks = args.tasks or read_tasks(args.file or params.tasks_file)
    bootstrap = _connect(params)
    from eval.agents import make_producer
    from eval.envelope import task_envelope

    producer = make_producer(bootstrap)
    envelopes = [task_envelope(task) for task in tasks]
    futures = [
        producer.send(params.topics.tasks, key=e.correlation_id.encode(), value=e.to_bytes())
        for e in envelopes
    ]
    for future in tqdm(futures, desc="submit", unit="task", file=sys.stderr):
        future.get(timeout=30)
    producer.close()
    ids = "".join(f"{e.correlation_id}\n" for e in envelopes)
    if args.ids_out:
        args.ids_out.write_text(ids)
    print(ids, end="")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_agents(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    bootstrap = _connect(params.agents)
    from custseg.llm import LLMError, load_provider
    from eval.agents import run_agents

    llm = load_provider(args.params)
    chosen = args.role or ["all"]
    roles = ["planner", "writer", "reviewer"] if "all" in chosen else sorted(set(chosen))
    print(
        f"agents: {', '.join(roles)} on {bootstrap} with {llm.describe}; Ctrl-C/SIGTERM stops",
        file=sys.stderr,
    )
    try:
        workers = run_agents(
            roles,
            llm,
            params.agents,
            bootstrap,
            _stop_on_signals(),
            on_event=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except LLMError as error:
        raise ConfigError(str(error)) from None
    finally:
        close = getattr(llm, "close", None)
        if close:
            close()
    for w in workers:
        overhead = (
            f", overhead beyond the LLM median {statistics.median(w.stats.overhead_s) * 1e3:.1f} ms"
            if w.stats.overhead_s
            else ""
        )
        print(
            f"{w.role.name}: {w.stats.handled} answered, {w.stats.duplicates} duplicates "
            f"skipped, {w.stats.dead_letters} dead-lettered{overhead}",
            file=sys.stderr,
        )


def cmd_capture(args: argparse.Namespace) -> None:
    params = load_params(args.params).agents
    bootstrap = _connect(params)
    from eval.capture import capture

    expect = set(args.expect.read_text().split()) if args.expect else None
    stop = _stop_on_signals()
    out = args.out or params.conversations
    with tqdm(
        total=len(expect) if expect else None, desc="capture", unit="conv", file=sys.stderr
    ) as bar:
        result = capture(
            bootstrap,
            [params.topics.tasks, params.topics.plans, params.topics.drafts, params.topics.finals],
            out,
            f"{params.group_prefix}.capture",
            expect=expect,
            idle_s=args.idle,
            timeout_s=args.timeout,
            should_stop=stop.is_set,
            workers=args.workers or params.workers,
            on_written=lambda _cid: bar.update(1),
        )
    print(
        f"capture: {len(result.written)} conversation(s) appended to {out}, "
        f"{len(result.incomplete)} incomplete held, {result.invalid} invalid record(s) skipped",
        file=sys.stderr,
    )
    for cid, parts in sorted(result.incomplete.items()):
        print(f"  incomplete {cid}: missing {', '.join(parts)}", file=sys.stderr)
    if expect and not expect <= set(result.written) | _already(out):
        raise ConfigError(
            f"capture: {len(expect - _already(out))} expected conversation(s) "
            "not complete before the timeout"
        )


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _already(out: Path) -> set[str]:
    from eval.capture import recover

    return recover(out)


def cmd_calibrate(args: argparse.Namespace) -> None:
    """Score the labeled pairs of eval/calibration.yaml and report the judge's ranking accuracy."""
    import json

    from custseg.io import write_json_atomic
    from eval.calibration import calibrate, load_calibration
    from eval.metrics import build_scorer

    params = load_params(args.params)
    pairs = load_calibration(args.file or params.eval.calibration)
    scorer = build_scorer(params)
    print(f"calibrate: judge {scorer.judge.get_model_name()}", file=sys.stderr)

    def progress(jobs):
        return tqdm(jobs, desc="calibrate", unit="pair", file=sys.stderr)

    results, rows = calibrate(
        pairs, scorer, params.base.seed, progress, sections=args.metric, limit=args.limit
    )
    stats = scorer.judge.stats
    print(f"judge calls made: {stats.calls}, cache hits: {stats.hits}")
    print(f"{'metric':<14} {'pairs':>5} {'higher':>6} {'ties':>4} {'errors':>6} {'accuracy':>8}")
    for section, r in results.items():
        print(
            f"{section:<14} {r.pairs:>5} {r.higher:>6} {r.ties:>4} {r.errors:>6} {r.accuracy:>8.2f}"
        )
    if args.json:
        report = {s: {**r.__dict__, "accuracy": r.accuracy} for s, r in results.items()}
        write_json_atomic(args.json, {"judge": scorer.judge.get_model_name(), **report})
    if args.rows:
        args.rows.write_text("".join(json.dumps(row) + "\n" for row in rows))
    low = [s for s, r in results.items() if r.accuracy < args.min_accuracy]
    if low:
        raise ConfigError(f"calibrate: accuracy below {args.min_accuracy} for {', '.join(low)}")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m eval", description=__doc__)
    root.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file")
    sub = root.add_subparsers(dest="command", required=True)

    submit = sub.add_parser("submit", help="send tasks; print one correlation id per task")
    submit.add_argument("tasks", nargs="*", help="task texts (default: agents.tasks_file)")
    submit.add_argument("--file", type=Path, help="YAML list of tasks")
    submit.add_argument("--ids-out", type=Path, help="also write the correlation ids here")
    submit.set_defaults(run=cmd_submit)

    agents = sub.add_parser("agents", help="run the agents until SIGTERM / Ctrl-C")
    agents.add_argument(
        "--role",
        choices=ROLE_CHOICES,
        action="append",
        help="role to run (repeatable; default: all three)",
    )
    agents.set_defaults(run=cmd_agents)

    cap = sub.add_parser("capture", help="append complete conversations to the JSONL file")
    cap.add_argument("--out", type=Path, help="default: agents.conversations")
    cap.add_argument("--group", help="consumer group (default: <agents.group_prefix>.capture)")
    cap.add_argument("--expect", type=Path, help="file of correlation ids to wait for")
    cap.add_argument(
        "--idle", type=float, default=None, help="stop after this many seconds without a message"
    )
    cap.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    cap.add_argument(
        "--workers",
        type=_positive_int,
        help="processes, each reading partitions p %% N == k of every topic (default: "
        "agents.capture_workers, else one per partition; topics need equal partition counts)",
    )
    cap.set_defaults(run=cmd_capture)

    cal = sub.add_parser("calibrate", help="check the judge on eval/calibration.yaml's pairs")
    cal.add_argument("--file", type=Path, help="default: eval.calibration")
    cal.add_argument(
        "--metric",
        action="append",
        choices=("plan_quality", "helpfulness", "improvement"),
        help="only this section (repeatable; default: all)",
    )
    cal.add_argument("--limit", type=int, help="only the first N pairs per section")
    cal.add_argument("--json", type=Path, help="also write the report here")
    cal.add_argument("--rows", type=Path, help="write every scored item (JSONL) here")
    cal.add_argument(
        "--min-accuracy", type=float, default=0.0, help="exit 2 if any metric is below this"
    )
    cal.set_defaults(run=cmd_calibrate)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_cli(lambda: args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
