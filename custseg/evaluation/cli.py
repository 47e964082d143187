"""`custseg eval calibrate`: how far the judge can be trusted, on labeled good/degraded pairs.

(Scoring the captured conversations is the DVC stage `eval`: `dvc repro eval`.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from custseg import paths
from custseg.config import ConfigError, load_params
from custseg.entrypoint import add_command, command_group


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The `eval` command group of the `custseg` CLI."""
    actions = command_group(
        commands,
        "eval",
        "the GEval judge: calibrate it (scoring itself is `dvc repro eval`)",
        "Check the GEval judge. Scoring the conversations is the DVC stage `eval`.",
    )
    cal = add_command(
        actions,
        "calibrate",
        f"score the labeled pairs of {paths.CALIBRATION} and report the ranking accuracy",
        cmd_calibrate,
        params=True,
    )
    cal.add_argument("--file", type=Path, default=paths.CALIBRATION, help="the labeled pairs")
    cal.add_argument(
        "--metric",
        action="append",
        help="only this section: plan_quality, helpfulness or improvement (repeatable)",
    )
    cal.add_argument("--limit", type=int, help="only the first N pairs per section")
    cal.add_argument("--json", type=Path, help="also write the report here")
    cal.add_argument("--rows", type=Path, help="write every scored item (JSONL) here")
    cal.add_argument(
        "--min-accuracy", type=float, default=0.0, help="exit 2 if any metric is below this"
    )


def cmd_calibrate(args: argparse.Namespace) -> None:
    """Score the labeled pairs and report the judge's ranking accuracy per metric."""
    from custseg.evaluation.calibration import FIELDS, calibrate, load_calibration
    from custseg.evaluation.metrics import build_scorer
    from custseg.io import write_json_atomic

    if unknown := set(args.metric or ()) - set(FIELDS):
        raise ConfigError(f"--metric: unknown {sorted(unknown)} (choose from {sorted(FIELDS)})")
    params = load_params(args.params)
    pairs = load_calibration(args.file)
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
