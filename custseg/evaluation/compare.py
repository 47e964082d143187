"""`custseg eval compare A B`: did agent variant B score better than A, and is it real?

Both variants' eval result rows are paired by task and metric (the same task, asked of both),
and per metric we report the paired mean difference B − A, a seeded bootstrap 95 % interval of
it and a two-sided sign test. Pure functions here; reading files and MLflow live in the CLI.

A task is the row's `task` if it has one, else its conversation's task (from the conversations
files), else its correlation id (which pairs nothing across two runs: named as unpaired). A task
asked more than once of one variant counts once, at its mean score. Rows without a score (a
judge error) are counted and left out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from custseg import jsonl
from custseg.conversation import DEFAULT_VARIANT
from custseg.errors import ConfigError

RESAMPLES = 10_000
LEVEL = 0.95
NO_JUDGE = "no judge (a check)"
# Bootstrap means are drawn in blocks of at most this many indices (~16 MB of int64): the
# resample matrix of a large file would not fit otherwise.
_BLOCK = 2_000_000


@dataclass(frozen=True)
class MetricComparison:
    """One metric of B against A over the tasks both were scored on."""

    metric: str
    n: int  # paired tasks
    mean_a: float
    mean_b: float
    diff: float  # mean of B − A per task
    ci_low: float
    ci_high: float
    p_value: float  # two-sided sign test on the non-zero differences
    wins: int  # tasks where B scored higher
    losses: int  # where B scored lower
    ties: int
    judge: str  # the judge model(s) behind both variants' scores


@dataclass(frozen=True)
class Comparison:
    variant_a: str
    variant_b: str
    metrics: list[MetricComparison]
    only_a: list[str] = field(default_factory=list)  # tasks B was never scored on
    only_b: list[str] = field(default_factory=list)
    unscored: int = 0  # rows with no score (judge errors), left out
    judges_a: list[str] = field(default_factory=list)  # the judge models behind A's scores
    judges_b: list[str] = field(default_factory=list)
    resamples: int = RESAMPLES
    seed: int = 0

    def report(self) -> dict[str, Any]:
        """As JSON (NaN, for a metric with no paired task, becomes null)."""
        data = asdict(self)
        data["metrics"] = {m["metric"]: _finite(m) for m in data["metrics"]}
        return data


def _finite(values: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}


# --- reading ---------------------------------------------------------------------------------


def load_rows(
    path: Path | str, what: str = "results", *, strict: bool = True
) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; a missing file, or a bad line when `strict`, is one
    ConfigError. Conversations are read leniently: a torn line the capture left only loses its
    task name (its rows then pair by correlation id and are reported unpaired)."""
    try:
        lines = jsonl.read(path)
    except OSError as error:
        raise ConfigError(f"{what} {path}: {error.strerror or error}") from None
    if not strict:
        return lines.objects()
    if not lines.records:
        raise ConfigError(f"{what} {path}: no rows")
    if lines.bad:
        bad = lines.bad[0]
        raise ConfigError(f"{what} {path}: line {bad.number}: {bad.why}")
    for number, value in lines.records:
        if not isinstance(value, dict):
            raise ConfigError(f"{what} {path}: line {number}: not a JSON object")
    return lines.objects()


def check_rows(rows: list[dict[str, Any]], source: str) -> None:
    """Every row names its conversation and metric, and a score that is a number or null."""
    for number, row in enumerate(rows, start=1):
        for key in ("correlation_id", "metric"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ConfigError(f"{source}: row {number}: `{key}` missing or not a string")
        score = row.get("score")
        if score is not None and (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
        ):
            raise ConfigError(f"{source}: row {number}: `score` is not a finite number: {score!r}")


def conversation_lookup(
    conversations: Iterable[Mapping[str, Any]],
) -> tuple[dict[str, str], dict[str, str]]:
    """correlation id → task, and → variant, from captured conversations."""
    tasks, variants = {}, {}
    for conv in conversations:
        cid = conv.get("correlation_id")
        if isinstance(cid, str):
            if isinstance(conv.get("task"), str):
                tasks[cid] = conv["task"]
            variants[cid] = str(conv.get("variant") or DEFAULT_VARIANT)
    return tasks, variants


def row_variant(row: Mapping[str, Any], variants: Mapping[str, str]) -> str:
    """The row's variant: its own, its conversation's, else "v1" (written before variants)."""
    return str(row.get("variant") or variants.get(row["correlation_id"]) or DEFAULT_VARIANT)


def of_variant(
    rows: Iterable[Mapping[str, Any]], variant: str, variants: Mapping[str, str]
) -> list[Mapping[str, Any]]:
    return [r for r in rows if row_variant(r, variants) == variant]


# --- statistics ------------------------------------------------------------------------------


def bootstrap_ci(
    diffs: np.ndarray, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `diffs` (resampled with replacement)."""
    n = len(diffs)
    if n == 0:
        return math.nan, math.nan
    if np.ptp(diffs) == 0:  # every resample is the same: the interval is that one value
        return float(diffs[0]), float(diffs[0])
    rng = np.random.default_rng(seed)
    per_block = max(1, _BLOCK // n)
    means = np.concatenate(
        [
            diffs[rng.integers(0, n, size=(min(per_block, resamples - start), n))].mean(axis=1)
            for start in range(0, resamples, per_block)
        ]
    )
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def sign_test(diffs: np.ndarray) -> tuple[float, int, int, int]:
    """(two-sided p, wins, losses, ties): ties carry no sign and are left out, as usual."""
    from scipy.stats import binomtest

    wins, losses = int((diffs > 0).sum()), int((diffs < 0).sum())
    ties = len(diffs) - wins - losses
    p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return float(p), wins, losses, ties


# --- pairing ---------------------------------------------------------------------------------


def by_task(
    rows: Iterable[Mapping[str, Any]], tasks: Mapping[str, str]
) -> tuple[dict[str, dict[str, float]], dict[str, set[str]], set[str], int]:
    """metric → task → mean score; metric → judges; every task seen; rows without a score."""
    sums: dict[str, dict[str, list[float]]] = {}
    judges: dict[str, set[str]] = {}
    seen, unscored = set(), 0
    for row in rows:
        task = str(row.get("task") or tasks.get(row["correlation_id"]) or row["correlation_id"])
        seen.add(task)
        if row.get("score") is None:
            unscored += 1
            continue
        sums.setdefault(row["metric"], {}).setdefault(task, []).append(float(row["score"]))
        judges.setdefault(row["metric"], set()).add(row.get("judge_model") or NO_JUDGE)
    means = {m: {t: sum(s) / len(s) for t, s in ts.items()} for m, ts in sums.items()}
    return means, judges, seen, unscored


def compare(
    rows_a: Iterable[Mapping[str, Any]],
    rows_b: Iterable[Mapping[str, Any]],
    variant_a: str,
    variant_b: str,
    *,
    tasks: Mapping[str, str] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """B against A, metric by metric, over the tasks both were scored on (see the module)."""
    tasks = tasks or {}
    means_a, judges_a, seen_a, unscored_a = by_task(rows_a, tasks)
    means_b, judges_b, seen_b, unscored_b = by_task(rows_b, tasks)
    results = []
    for metric in sorted(set(means_a) | set(means_b)):
        a, b = means_a.get(metric, {}), means_b.get(metric, {})
        paired = sorted(set(a) & set(b))  # sorted: the result never depends on row order
        score_a = np.array([a[t] for t in paired], dtype=float)
        score_b = np.array([b[t] for t in paired], dtype=float)
        diffs = score_b - score_a
        low, high = bootstrap_ci(diffs, resamples, seed)
        p, wins, losses, ties = sign_test(diffs)
        judge = sorted(judges_a.get(metric, set()) | judges_b.get(metric, set()))
        nan = math.nan
        results.append(
            MetricComparison(
                metric,
                len(paired),
                float(score_a.mean()) if paired else nan,
                float(score_b.mean()) if paired else nan,
                float(diffs.mean()) if paired else nan,
                low,
                high,
                p,
                wins,
                losses,
                ties,
                " | ".join(judge),
            )
        )
    return Comparison(
        variant_a,
        variant_b,
        results,
        sorted(seen_a - seen_b),
        sorted(seen_b - seen_a),
        unscored_a + unscored_b,
        _judges(judges_a),
        _judges(judges_b),
        resamples,
        seed,
    )


def read_report(path: Path | str) -> Comparison:
    """A comparison `custseg eval compare --json` wrote, checked by type; ConfigError (one
    line) for a missing, unreadable or malformed file."""
    from pydantic import TypeAdapter, ValidationError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"comparison {path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"comparison {path}: not JSON ({error})") from None
    try:
        metrics = data["metrics"]
        data = {**data, "metrics": [{**m, **_nan(m)} for m in metrics.values()]}
        return TypeAdapter(Comparison).validate_python(data, strict=False)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"comparison {path}: {where}: {first['msg']}") from None
    except (TypeError, KeyError, AttributeError):
        raise ConfigError(
            f"comparison {path}: not a `custseg eval compare --json` report"
        ) from None


def _nan(metric: Mapping[str, Any]) -> dict[str, float]:
    """The report's nulls (a metric with no paired task) back to NaN."""
    return {
        k: math.nan
        for k in ("mean_a", "mean_b", "diff", "ci_low", "ci_high")
        if metric.get(k, 0) is None
    }


def _judges(by_metric: Mapping[str, set[str]]) -> list[str]:
    return sorted(set().union(*by_metric.values()) - {NO_JUDGE}) if by_metric else []


# --- reporting -------------------------------------------------------------------------------


def unpaired_line(comparison: Comparison, width: int = 60) -> str | None:
    """The tasks left out because only one variant was scored on them, in one line."""
    if not comparison.only_a and not comparison.only_b:
        return None

    def names(tasks: list[str], shown: int = 5) -> str:
        cut = [t if len(t) <= width else t[: width - 1] + "…" for t in tasks[:shown]]
        more = f"; and {len(tasks) - shown} more" if len(tasks) > shown else ""
        return "; ".join(cut) + more if tasks else "-"

    return " ".join(
        (
            f"unpaired, left out: {len(comparison.only_a)} only in {comparison.variant_a}",
            f"({names(comparison.only_a)}), {len(comparison.only_b)} only in",
            f"{comparison.variant_b} ({names(comparison.only_b)})",
        )
    )


def p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def table_lines(comparison: Comparison) -> list[str]:
    """The comparison as a text table, judges named, then what was left out."""
    c = comparison
    if c.judges_a == c.judges_b:
        judged = f"judge: {', '.join(c.judges_a) or NO_JUDGE}"
    else:  # then a difference may be the judges', not the agents'
        judged = (
            f"judges differ: {c.variant_a} by {', '.join(c.judges_a) or '-'}; "
            f"{c.variant_b} by {', '.join(c.judges_b) or '-'}"
        )
    lines = [
        f"{c.variant_b} vs {c.variant_a}: paired by task, diff = {c.variant_b} − {c.variant_a}, "
        f"{LEVEL:.0%} bootstrap interval ({c.resamples:,} resamples, seed {c.seed}), "
        "two-sided sign test",
        judged,
        f"{'metric':<18} {'n':>3} {c.variant_a[:8]:>8} {c.variant_b[:8]:>8} {'diff':>7} "
        f"{'95% CI':>17} {'p':>6} {'+/-/=':>8}  judge",
    ]

    def num(value: float, width: int, sign: str = "") -> str:
        return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{sign}{width}.3f}"

    for m in c.metrics:
        ci = f"[{num(m.ci_low, 0, '+')}, {num(m.ci_high, 0, '+')}]"
        lines.append(
            f"{m.metric:<18} {m.n:>3} {num(m.mean_a, 8)} {num(m.mean_b, 8)} "
            f"{num(m.diff, 7, '+')} {ci:>17} {p_text(m.p_value):>6} "
            f"{f'{m.wins}/{m.losses}/{m.ties}':>8}  {m.judge}"
        )
    if line := unpaired_line(c):
        lines.append(line)
    if c.unscored:
        lines.append(f"left out: {c.unscored} row(s) without a score (judge errors)")
    return lines


def comparison_frame(comparison: Comparison) -> Any:
    """One row per metric for a table: both means, the difference, its interval, p and the
    wins, losses and ties, with the judge."""
    import pandas as pd

    a, b = comparison.variant_a, comparison.variant_b
    columns = [
        "metric",
        "tasks",
        f"mean {a}",
        f"mean {b}",
        f"{b} − {a}",
        "95 % CI",
        "CI above 0",
        "p (sign test)",
    ]
    columns += [f"{b} better / worse / tied", "judge"]
    return pd.DataFrame(
        [
            {
                "metric": m.metric,
                "tasks": m.n,
                f"mean {a}": m.mean_a,
                f"mean {b}": m.mean_b,
                f"{b} − {a}": m.diff,
                "95 % CI": "–" if math.isnan(m.ci_low) else f"[{m.ci_low:+.3f}, {m.ci_high:+.3f}]",
                "CI above 0": bool(m.ci_low > 0),
                "p (sign test)": p_text(m.p_value),
                f"{b} better / worse / tied": f"{m.wins} / {m.losses} / {m.ties}",
                "judge": m.judge,
            }
            for m in comparison.metrics
        ],
        columns=columns,
    )


def difference_figure(comparison: Comparison) -> Any:
    """Each metric's difference B − A as a dot with its 95 % interval, beside a line at 0."""
    import plotly.graph_objects as go

    shown = [m for m in comparison.metrics if not math.isnan(m.diff)]
    figure = go.Figure(
        go.Scatter(
            x=[m.diff for m in shown],
            y=[m.metric for m in shown],
            mode="markers",
            marker={"size": 10},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [m.ci_high - m.diff for m in shown],
                "arrayminus": [m.diff - m.ci_low for m in shown],
            },
            hovertemplate="%{y}: %{x:+.3f}<extra></extra>",
        )
    )
    figure.add_vline(x=0, line_dash="dash", line_color="grey")
    figure.update_layout(
        height=80 + 40 * len(shown),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis_title=f"{comparison.variant_b} − {comparison.variant_a} (95 % interval)",
    )
    return figure


def mlflow_fields(comparison: Comparison) -> tuple[dict[str, Any], dict[str, float]]:
    """The run's params (both variants, the judges) and metrics (per metric diff, CI, p)."""
    params: dict[str, Any] = {
        "variant_a": comparison.variant_a,
        "variant_b": comparison.variant_b,
        "resamples": comparison.resamples,
        "seed": comparison.seed,
        "unpaired_tasks": len(comparison.only_a) + len(comparison.only_b),
        "judge_a": ", ".join(comparison.judges_a)[:500],
        "judge_b": ", ".join(comparison.judges_b)[:500],
    }
    metrics: dict[str, float] = {}
    for m in comparison.metrics:
        params[f"judge.{m.metric}"] = m.judge[:500]
        values = {"n": m.n, "diff": m.diff, "ci_low": m.ci_low, "ci_high": m.ci_high}
        values["p"] = m.p_value
        metrics.update(
            {f"{m.metric}.{k}": float(v) for k, v in values.items() if not math.isnan(v)}
        )
    return params, metrics
