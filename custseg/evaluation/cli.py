"""`custseg eval calibrate`: how far the judge can be trusted, on labeled good/degraded pairs.

(Scoring the captured conversations is the DVC stage `eval`: `dvc repro eval`.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from custseg import paths
from custseg.config import load_params
from custseg.entrypoint import add_command, command_group, positive_int, share
from custseg.errors import ConfigError

if TYPE_CHECKING:
    from custseg.evaluation.calibration import SectionResult


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
        f"score the labeled pairs of {paths.CALIBRATION}: ranking accuracy, agreement at the "
        "pass marks (and held out), score spread",
        cmd_calibrate,
        params=True,
    )
    cal.add_argument("--file", type=Path, default=paths.CALIBRATION, help="the labeled pairs")
    cal.add_argument(
        "--metric",
        action="append",
        help="only this section: plan_quality, helpfulness, improvement or grounding "
        "(repeatable; grounding also reports grounding_check)",
    )
    cal.add_argument("--limit", type=positive_int, help="only the first N pairs per section")
    cal.add_argument("--json", type=Path, help="also write the report here")
    cal.add_argument("--rows", type=Path, help="write every scored item (JSONL) here")
    cal.add_argument(
        "--replies",
        type=Path,
        default=paths.CALIBRATION_REPLIES,
        help="judge replies read back as a fallback cache: a question they answer costs no "
        "judge call (a changed prompt or judge is asked afresh)",
    )
    cal.add_argument(
        "--save-replies",
        action="store_true",
        help="write the replies this run used to --replies (every pair: no --metric, --limit)",
    )
    cal.add_argument(
        "--min-accuracy",
        type=share,
        default=0.0,
        help="exit 2 if any metric's ranking accuracy or threshold agreement is below this",
    )


HEADER = (
    "accuracy: pairs whose good item scores above the bad one; agreement: items on the right "
    "side of the pass mark (good >= it, bad < it); medians of good and bad items, their gap, "
    "std of all scores; best: the pass mark that would agree best on this set (in-sample); "
    "held-out: that mark set on all pairs but one and tested on that one, each in turn; "
    "grounding is its judge's score times grounding_check's, grounding_judge the judge's alone "
    "(shown, not gated by --min-accuracy)"
)


def report_lines(results: dict[str, SectionResult]) -> list[str]:
    """The calibration table, one line per metric."""
    lines = [
        f"{'metric':<16} {'pairs':>5} {'ties':>4} {'err':>3} {'accuracy':>8} {'thresh':>6} "
        f"{'agreement':>9} {'good>=':>6} {'bad<':>4} {'good_md':>7} {'bad_md':>6} {'gap':>5} "
        f"{'std':>5} {'best':>5} {'held-out':>8}"
    ]

    def num(value: float | None, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.2f}"

    for metric, r in results.items():
        lines.append(
            f"{metric:<16} {r.pairs:>5} {r.ties:>4} {r.errors:>3} {r.accuracy:>8.2f} "
            f"{r.threshold:>6.2f} {r.agreement:>9.2f} {r.good_pass:>6} {r.bad_fail:>4} "
            f"{num(r.good_median, 7)} {num(r.bad_median, 6)} {num(r.gap, 5)} {num(r.std, 5)} "
            f"{num(r.best_threshold, 5)} {num(r.held_out_agreement, 8)}"
        )
    return lines


def cmd_calibrate(args: argparse.Namespace) -> None:
    """Score the labeled pairs and report, per metric, the judge's ranking accuracy, its
    agreement with the labels at the pass mark, and the spread of its scores."""
    from custseg import jsonl
    from custseg.evaluation.calibration import (
        FIELDS,
        JUDGE_PART,
        calibrate,
        load_calibration,
        on_topic_share,
    )
    from custseg.evaluation.judge_cache import write_seed
    from custseg.evaluation.scorer import build_scorer
    from custseg.io import write_json_atomic

    if unknown := set(args.metric or ()) - set(FIELDS):
        raise ConfigError(f"--metric: unknown {sorted(unknown)} (choose from {sorted(FIELDS)})")
    if args.save_replies and (args.metric or args.limit):
        raise ConfigError("--save-replies: needs every pair, drop --metric and --limit")
    if args.replies.is_dir():
        raise ConfigError(f"--replies: {args.replies}: a directory, not a file")
    params = load_params(args.params)
    pairs = load_calibration(args.file)
    scorer = build_scorer(params, seed=args.replies)
    print(f"calibrate: judge {scorer.judge.get_model_name()}", file=sys.stderr)

    def progress(jobs):
        return tqdm(jobs, desc="calibrate", unit="pair", file=sys.stderr)

    results, rows = calibrate(
        pairs, scorer, params.base.seed, progress, sections=args.metric, limit=args.limit
    )
    stats = scorer.judge.stats
    print(f"judge calls made: {stats.calls}, cache hits: {stats.hits}")
    print(HEADER)
    print("\n".join(report_lines(results)))
    if args.json:
        report = {m: r.report() for m, r in results.items()}
        topics = {s: round(on_topic_share(pairs[s]), 4) for s in (args.metric or FIELDS)}
        write_json_atomic(
            args.json,
            {"judge": scorer.judge.get_model_name(), "on_topic_bad": topics, **report},
        )
    if args.rows:
        jsonl.write(args.rows, rows)
    if args.save_replies:  # exactly the replies the pairs need, as the eval stage keeps its own
        used = scorer.judge.cache.used
        write_seed(args.replies, used)
        print(f"saved {len(used)} judge replies to {args.replies}")
    low = [
        m
        for m, r in results.items()
        if m != JUDGE_PART and min(r.accuracy, r.agreement) < args.min_accuracy
    ]
    if low:
        raise ConfigError(
            f"calibrate: accuracy or agreement below {args.min_accuracy} for {', '.join(low)}"
        )
