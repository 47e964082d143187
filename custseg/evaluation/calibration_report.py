"""The calibration table: per metric, per view and per degradation, with Wilson 95 % intervals;
and the run behind `custseg eval calibrate` and the DVC stage `calibrate`.

The headline is the held-out agreement (pass marks set on the other pairs, leave-one-out): an
estimate of how often a mark set here puts a new item on the right side. Its interval treats
the 2n items as independent draws; a pair's two items share a task, so read it as a little
narrower than the truth. Ranking accuracy's interval is over the n pairs.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from custseg import paths
from custseg.config import Params, load_params
from custseg.errors import ConfigError
from custseg.evaluation.calibration import (
    CHECK,
    SECTION_METRIC,
    CalibrationSet,
    SectionResult,
    calibrate,
    load_calibration,
    on_topic_share,
)
from custseg.evaluation.judge_cache import write_seed
from custseg.evaluation.scorer import Scorer, build_scorer
from custseg.io import write_json_atomic

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a share `successes`/`n` ((0.0, 1.0) with n = 0): unlike
    p ± z·se it stays inside 0-1 and is not empty at 0 or n successes."""
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} not within 0..{n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 or n successes the exact bound is 0 or 1; the formula gives it only up to float error.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def share(successes: int, n: int) -> dict[str, Any]:
    """A share with its count and Wilson interval, rounded for the report."""
    low, high = wilson_interval(successes, n)
    value = successes / n if n else None
    return {
        "value": None if value is None else round(value, 4),
        "right": successes,
        "of": n,
        "low": round(low, 4),
        "high": round(high, 4),
    }


@dataclass(frozen=True)
class Counts:
    """A group of pairs' counts: ranked right, and items right held out (of 2 per pair)."""

    pairs: int
    ranked: int
    held_out: int
    bad_caught: int  # bad items failed at the held-out mark

    def report(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "ranking": share(self.ranked, self.pairs),
            "held_out": share(self.held_out, 2 * self.pairs),
            "bad_caught": share(self.bad_caught, self.pairs),
        }


def counts(outcomes: Iterable[tuple[bool, bool, bool]]) -> Counts:
    chosen = list(outcomes)
    return Counts(
        pairs=len(chosen),
        ranked=sum(r for r, _, _ in chosen),
        held_out=sum(g + b for _, g, b in chosen),
        bad_caught=sum(b for _, _, b in chosen),
    )


def by_degradation(result: SectionResult, kinds: list[str]) -> dict[str, Counts]:
    """The result's pairs grouped by how their bad item is degraded (`kinds`, pair by pair)."""
    groups: dict[str, list[tuple[bool, bool, bool]]] = {}
    for kind, outcome in zip(kinds, result.outcomes, strict=True):
        groups.setdefault(kind, []).append(outcome)
    return {kind: counts(groups[kind]) for kind in sorted(groups)}


def view_report(result: SectionResult, kinds: list[str]) -> dict[str, Any]:
    """One metric's view: the headline shares with intervals, the spread, per degradation."""
    total = counts(result.outcomes)
    detail = result.report()
    return {
        "pairs": result.pairs,
        "held_out": share(total.held_out, 2 * result.pairs),
        "ranking": share(total.ranked, result.pairs),
        "agreement": share(result.good_pass + result.bad_fail, 2 * result.pairs),
        **{
            k: detail[k]
            for k in ("threshold", "best_threshold", "ties", "errors", "good_median", "bad_median")
        },
        "by_degradation": {k: c.report() for k, c in by_degradation(result, kinds).items()},
    }


def build_report(
    judge: str,
    pairs: CalibrationSet,
    results: dict[str, dict[str, SectionResult]],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """metrics/calibration.json: deterministic for given replies (no time, no latency)."""
    kinds: dict[str, list[str]] = {}  # per result key (section, or the check), pair by pair
    for row in rows:
        if row["label"] == "bad":
            key = CHECK if row["metric"] == CHECK else row["section"]
            kinds.setdefault(key, []).append(row["degraded"])
    metrics = {
        metric: {view: view_report(result, kinds[metric]) for view, result in views.items()}
        for metric, views in results.items()
    }
    return {
        "judge": judge,
        "not_calibrated": sorted(set(SECTION_METRIC) - set(pairs)),
        "on_topic_bad": {s: round(on_topic_share(pairs[s]), 4) for s in pairs},
        "metrics": metrics,
    }


def _ci(entry: dict[str, Any]) -> str:
    value = "   -" if entry["value"] is None else f"{entry['value']:.2f}"
    return f"{value} [{entry['low']:.2f}-{entry['high']:.2f}]"


HEADER = (
    "held-out: items on the right side of a pass mark set on the other pairs (leave-one-out), "
    "the headline; ranking: pairs whose good item scores above the bad one; agreement: items "
    "right at params' pass mark; [low-high]: Wilson 95 % interval. judge: the judge's score "
    "alone; judge+checks: an item a judge-free check fails counts as failed; grounding_check: "
    "the check alone."
)


def table_lines(report: dict[str, Any]) -> list[str]:
    """The per-metric table, then each metric's pairs per degradation."""
    lines = [
        f"{'metric':<14} {'view':<13} {'pairs':>5} {'held-out':>16} {'ranking':>16} "
        f"{'agreement':>16} {'mark':>5} {'best':>5}"
    ]
    for metric, result_views in report["metrics"].items():
        for view, r in result_views.items():
            best = "    -" if r["best_threshold"] is None else f"{r['best_threshold']:5.2f}"
            lines.append(
                f"{metric:<14} {view:<13} {r['pairs']:>5} {_ci(r['held_out']):>16} "
                f"{_ci(r['ranking']):>16} {_ci(r['agreement']):>16} {r['threshold']:5.2f} {best}"
            )
    lines.append("")
    lines.append("per degradation (judge+checks; grounding_check alone): bad items caught held out")
    for metric, result_views in report["metrics"].items():
        view = result_views.get("judge+checks") or result_views[CHECK]
        kinds = ", ".join(
            f"{k} {c['bad_caught']['right']}/{c['pairs']}"
            for k, c in view["by_degradation"].items()
        )
        lines.append(f"  {metric}: {kinds}")
    if report["not_calibrated"]:
        lines.append(f"not calibrated (no pairs): {', '.join(report['not_calibrated'])}")
    return lines


def markdown_table(report: dict[str, Any]) -> list[str]:
    """The README's table: per metric and view, held-out agreement and ranking accuracy with
    their intervals (`custseg eval calibrate --markdown`)."""

    def cell(entry: dict[str, Any]) -> str:
        value = "-" if entry["value"] is None else f"{entry['value']:.2f}"
        return f"{value} [{entry['low']:.2f}-{entry['high']:.2f}]"

    lines = [
        f"Judge `{report['judge']}`; [95 % Wilson interval]; held-out: pass mark set on the "
        "other pairs.",
        "",
        "| metric | view | pairs | held-out agreement | ranking accuracy |",
        "|---|---|---|---|---|",
    ]
    for metric, result_views in report["metrics"].items():
        for view, r in result_views.items():
            lines.append(
                f"| {metric} | {view} | {r['pairs']} | {cell(r['held_out'])} | "
                f"{cell(r['ranking'])} |"
            )
    return lines


def run_calibration(
    params: Params,
    pairs: CalibrationSet,
    scorer: Scorer,
    progress: Callable[[Iterable[Any]], Iterator[Any]] = iter,
    sections: Iterable[str] | None = None,
    limit: int | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, SectionResult]], list[dict[str, Any]]]:
    """Score the pairs; (the report, the results, the rows)."""
    results, rows = calibrate(pairs, scorer, params.base.seed, progress, sections, limit)
    return build_report(scorer.judge.get_model_name(), pairs, results, rows), results, rows


def save_replies(scorer: Scorer, path: Path) -> int:
    """Exactly the replies this run used, as the committed fallback cache; how many."""
    used = scorer.judge.cache.used
    write_seed(path, used)
    return len(used)


def pair_progress(jobs: Iterable[Any]) -> Iterator[Any]:
    """A progress bar over the pairs (a judge call each takes seconds on the bundled model)."""
    return tqdm(jobs, desc="calibrate", unit="pair", file=sys.stderr)


def calibrate_stage(params_path: Path) -> str:
    """DVC stage `calibrate`: score every pair of eval/calibration.yaml with the `llm:` judge,
    its committed replies read back first (no call while prompts and judge are unchanged);
    write metrics/calibration.json, then exactly the replies used back to the replies file."""
    params = load_params(params_path)
    pairs = load_calibration(paths.CALIBRATION)
    scorer = build_scorer(params, seed=paths.CALIBRATION_REPLIES)
    print(f"calibrate: judge {scorer.judge.get_model_name()}", file=sys.stderr)
    report, _, rows = run_calibration(params, pairs, scorer, pair_progress)
    saved = save_replies(scorer, paths.CALIBRATION_REPLIES)  # the answered ones, in any case
    if failed := [row for row in rows if row["error"]]:
        # A table with failed questions counted wrong would pass for the judge's: keep the last.
        raise ConfigError(
            f"calibrate: {len(failed)} judge question(s) failed ({failed[0]['error'][:120]}); "
            f"{saved} replies kept in {paths.CALIBRATION_REPLIES}, run it again"
        )
    write_json_atomic(paths.CALIBRATION_METRICS, report)
    stats = scorer.judge.stats
    return "\n".join(
        [
            f"calibrate: judge {report['judge']}, {stats.calls} judge calls, {stats.hits} "
            f"answered by saved replies; {saved} replies kept in {paths.CALIBRATION_REPLIES}",
            *table_lines(report),
        ]
    )
