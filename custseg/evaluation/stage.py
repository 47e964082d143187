"""The DVC stage `eval` (stages/evaluate.py runs it): score the captured conversations, write the
results and metrics atomically, log an MLflow run, and sync the conversations as traces."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from custseg import jsonl
from custseg.config import Params
from custseg.entrypoint import duration
from custseg.errors import ConfigError
from custseg.evaluation.items import conversation_items, read_conversations
from custseg.evaluation.judge_cache import mean_call_seconds, write_seed
from custseg.evaluation.scorer import build_scorer, score_items
from custseg.evaluation.summary import aggregate, flatten
from custseg.evaluation.traces import TraceSync, sync_traces
from custseg.io import write_json_atomic
from custseg.llm import Provider
from custseg.paths import CONVERSATIONS, EVAL_METRICS, EVAL_RESULTS, JUDGE_SEED
from custseg.tracking import configure_mlflow


@dataclass(frozen=True)
class EvalOutcome:
    """What a run of the stage did: its rows and summary, the judge's calls, the traces."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]  # what metrics/eval.json holds
    calls: int  # judge calls made by this run
    hits: int  # judge replies found in the cache
    run_id: str | None
    skipped: list[dict[str, str]]
    traces: TraceSync

    @property
    def failure(self) -> str | None:
        """Why the run failed as a whole (every judge call failed), else None."""
        if self.summary["scored"] == 0 and self.summary["errors"]:
            first = next(r["error"] for r in self.rows if r["error"])
            return f"eval: every judge call failed, e.g. {first}"
        return None


def estimate(n_calls: int, n_conversations: int, per_call_s: float | None) -> str:
    """What the stage is about to do and, from the judge's measured cost, how long at most."""
    head = f"eval: {n_calls} judge call(s) for {n_conversations} conversation(s)"
    if per_call_s is None:
        return f"{head}; no measured judge call to estimate from"
    return (
        f"{head}; ~{per_call_s:.1f} s a judge call here, so at most "
        f"~{duration(n_calls * per_call_s)} (cached replies cost nothing)"
    )


def evaluate(
    params: Params,
    provider: Provider | None = None,
    *,
    progress: bool = True,
    say: Callable[[str], object] = print,
    source: Path = CONVERSATIONS,
    results: Path = EVAL_RESULTS,
    metrics: Path = EVAL_METRICS,
) -> EvalOutcome:
    """Score every complete conversation, write results and metrics, log an MLflow run.

    `provider` replaces the `llm:` judge (tests inject theirs this way); `say` gets the
    estimate, before the judge is asked anything. Another `source` (a variant's conversations,
    for `custseg eval compare`) writes to `results` and `metrics` and leaves the committed
    judge replies (JUDGE_SEED, the stage's own conversations') as they are.
    """
    if not source.is_file():
        raise ConfigError(
            f"{source}: not found (run the agents and capture their conversations: "
            "`make agents-demo`, or `custseg agents`, `custseg submit`, `custseg capture`)"
        )
    conversations = read_conversations(source)
    scorer = build_scorer(params, provider, seed=JUDGE_SEED)
    items = [i for c in conversations.complete for i in conversation_items(c, params.base.seed)]
    calls = sum(i.judge_calls for i in items)
    say(estimate(calls, len(conversations.complete), mean_call_seconds(scorer.judge.cache)))
    rows = score_items(scorer, items, lambda order: _bar(order, "eval", "score", progress))
    n_total = len(conversations.complete) + len(conversations.skipped)
    summary = aggregate(rows, n_total, len(conversations.skipped))

    jsonl.write(results, rows)
    write_json_atomic(metrics, summary)
    if source == CONVERSATIONS:
        # Exactly the replies these conversations needed: committed, they spare a fresh clone's
        # `dvc repro eval -f` every judge call.
        write_seed(JUDGE_SEED, scorer.judge.cache.used)
    stats = scorer.judge.stats
    run_id = log_run(
        params, rows, summary, scorer.judge.get_model_name(), stats.calls, stats.hits, source
    )
    # The conversations as traces in the same experiment, the scores as their feedback.
    experiment = configure_mlflow().get_experiment_by_name(params.eval.experiment)
    traces = sync_traces(
        experiment.experiment_id,
        conversations.complete,
        rows,
        lambda convs: _bar(convs, "traces", "conv", progress),
    )
    return EvalOutcome(
        rows, summary, stats.calls, stats.hits, run_id, conversations.skipped, traces
    )


def _bar(items: Any, desc: str, unit: str, shown: bool) -> Any:
    return tqdm(items, desc=desc, unit=unit, file=sys.stderr, disable=not shown)


def log_run(
    params: Params,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    judge: str,
    calls: int,
    hits: int,
    source: Path = CONVERSATIONS,
) -> str:
    """One MLflow run in `eval.experiment`: the summary as metrics, the rows as a table."""
    mlflow = configure_mlflow(params.eval.experiment)
    with mlflow.start_run(run_name=f"eval {summary['scored']} scores") as tracked:
        mlflow.log_params(
            {
                "judge": judge,
                "conversations_file": str(source),
                "conversations_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
                "seed": params.base.seed,
                "max_tokens": params.eval.max_tokens,
                "top_logprobs": params.eval.top_logprobs,
                **{f"threshold.{k}": v for k, v in params.eval.thresholds.model_dump().items()},
            }
        )
        mlflow.log_metrics({**flatten(summary), "judge_calls": calls, "cache_hits": hits})
        columns = list(rows[0]) if rows else ["correlation_id", "metric", "score"]
        table = {
            c: [json.dumps(r.get(c)) if isinstance(r.get(c), dict) else r.get(c) for r in rows]
            for c in columns
        }
        mlflow.log_table(table, "eval_results.json")
    return tracked.info.run_id


def summary_lines(outcome: EvalOutcome) -> list[str]:
    """What the stage prints when done: counts, judge calls, traces, a line per metric, skips."""
    s, t = outcome.summary, outcome.traces
    lines = [
        f"eval: {s['conversations']} conversation(s), {s['scored']} scores, "
        f"{s['errors']} error(s), {s['skipped']} skipped; judge calls made: {outcome.calls}, "
        f"cache hits: {outcome.hits}; run {outcome.run_id}",
        f"  traces: {t.created} created, {t.replaced} replaced, {t.kept} unchanged; feedback "
        f"{t.feedback_added} added, {t.feedback_updated} updated, {t.feedback_kept} unchanged",
    ]
    for name, m in s.items():
        if isinstance(m, dict):
            mean = "-" if m["mean"] is None else f"{m['mean']:.3f}"
            rate = "-" if m["pass_rate"] is None else f"{m['pass_rate']:.2f}"
            lines.append(f"  {name:<18} mean {mean:>6}  pass {rate:>5}  errors {m['errors']}")
    lines += [f"  skipped {skip['correlation_id']}: {skip['why']}" for skip in outcome.skipped]
    return lines
