"""`custseg eval calibrate`: how far the judge can be trusted, on labeled good/degraded pairs;
`custseg eval compare A B`: two agent variants' scores, paired by task, with intervals.

(Scoring the captured conversations is the DVC stage `eval`: `dvc repro eval`.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from custseg import paths
from custseg.config import load_params
from custseg.entrypoint import add_command, command_group, positive_int, share
from custseg.errors import ConfigError


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The `eval` command group of the `custseg` CLI."""
    actions = command_group(
        commands,
        "eval",
        "the GEval judge: calibrate it, compare two agent variants (scoring is `dvc repro eval`)",
        "Check the GEval judge. Scoring the conversations is the DVC stage `eval`.",
    )
    cal = add_command(
        actions,
        "calibrate",
        f"score the labeled pairs of {paths.CALIBRATION}: held-out agreement, ranking accuracy "
        "and agreement at the pass marks, per metric and degradation, with 95 % intervals",
        cmd_calibrate,
        params=True,
    )
    cal.add_argument("--file", type=Path, default=paths.CALIBRATION, help="the labeled pairs")
    cal.add_argument(
        "--metric",
        action="append",
        help="only this section (one of the scorer's GEval metrics: plan_quality, helpfulness, "
        "improvement, grounding; repeatable; grounding also reports grounding_check)",
    )
    cal.add_argument("--limit", type=positive_int, help="only the first N pairs per section")
    cal.add_argument("--json", type=Path, help="also write the report here")
    cal.add_argument(
        "--markdown", action="store_true", help="print the README's short table instead"
    )
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
        help="exit 2 if any metric's ranking accuracy or held-out agreement is below this",
    )

    add_compare(actions)


def add_compare(actions: argparse._SubParsersAction) -> None:
    cmp = add_command(
        actions,
        "compare",
        "agent variant B against A on the same tasks: per metric the paired mean difference "
        "B - A, a bootstrap 95 percent interval and a sign test (table, JSON, MLflow run)",
        cmd_compare,
    )
    cmp.add_argument("a", metavar="A", help="variant A: an eval results file, or a variant name")
    cmp.add_argument("b", metavar="B", help="variant B: the same")
    cmp.add_argument(
        "--results",
        type=Path,
        default=paths.EVAL_RESULTS,
        help="where variant names are looked up (rows by their `variant`, else their "
        "conversation's, else v1)",
    )
    cmp.add_argument(
        "--conversations",
        type=Path,
        action="append",
        help="captured conversations that give each row's task and variant (repeatable; "
        f"default {paths.CONVERSATIONS} if it exists)",
    )
    cmp.add_argument("--json", type=Path, help="also write the comparison here")
    cmp.add_argument("--resamples", type=positive_int, default=10_000, help="bootstrap resamples")
    cmp.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    cmp.add_argument(
        "--experiment", default="agent-comparison", help="the MLflow experiment of the run"
    )
    cmp.add_argument("--no-mlflow", action="store_true", help="log no MLflow run")


def cmd_calibrate(args: argparse.Namespace) -> None:
    """Score the labeled pairs and report, per metric and per degradation, the judge's held-out
    agreement, ranking accuracy and agreement at the pass mark, with Wilson 95 % intervals."""
    from custseg import jsonl
    from custseg.evaluation.calibration import FIELDS, load_calibration
    from custseg.evaluation.calibration_report import (
        HEADER,
        markdown_table,
        pair_progress,
        run_calibration,
        save_replies,
        table_lines,
    )
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
    if missing := set(args.metric or ()) - set(pairs):
        raise ConfigError(f"--metric: {args.file} has no pairs for {sorted(missing)}")
    scorer = build_scorer(params, seed=args.replies)
    print(f"calibrate: judge {scorer.judge.get_model_name()}", file=sys.stderr)

    report, _, rows = run_calibration(params, pairs, scorer, pair_progress, args.metric, args.limit)
    stats = scorer.judge.stats
    print(f"judge calls made: {stats.calls}, cache hits: {stats.hits}")
    if args.markdown:
        print("\n".join(markdown_table(report)))
    else:
        print(HEADER)
        print("\n".join(table_lines(report)))
    if args.json:
        write_json_atomic(args.json, report)
    if args.rows:
        jsonl.write(args.rows, rows)
    if args.save_replies:  # exactly the replies the pairs need, as the eval stage keeps its own
        print(f"saved {save_replies(scorer, args.replies)} judge replies to {args.replies}")
    low = [
        metric
        for metric, views in report["metrics"].items()
        for view in views.values()
        if min(view["ranking"]["value"] or 0.0, view["held_out"]["value"] or 0.0)
        < args.min_accuracy
    ]
    if low:
        raise ConfigError(
            f"calibrate: ranking or held-out agreement below {args.min_accuracy} for "
            f"{', '.join(dict.fromkeys(low))}"
        )


def cmd_compare(args: argparse.Namespace) -> None:
    """Pair both variants' result rows by task and metric, and report B - A per metric."""
    from custseg.evaluation import compare as cmp
    from custseg.io import write_json_atomic

    conversation_files = args.conversations or (
        [paths.CONVERSATIONS] if paths.CONVERSATIONS.is_file() else []
    )
    conversations = [
        c for f in conversation_files for c in cmp.load_rows(f, "conversations", strict=False)
    ]
    tasks, variants = cmp.conversation_lookup(conversations)
    cache: dict[Path, list] = {}

    def rows_of(spec: str) -> tuple[str, list]:
        """A file's rows (named by their variant if they share one, else the file's stem) or
        the rows of variant `spec` in --results."""
        path = Path(spec)
        source = path if path.is_file() else args.results
        if source not in cache:
            cache[source] = cmp.load_rows(source)
            cmp.check_rows(cache[source], str(source))
        rows = cache[source]
        if path.is_file():
            names = {cmp.row_variant(r, variants) for r in rows}
            return (names.pop() if len(names) == 1 else path.stem), rows
        chosen = cmp.of_variant(rows, spec, variants)
        if not chosen:
            found = sorted({cmp.row_variant(r, variants) for r in rows})
            raise ConfigError(
                f"{spec}: neither a file nor a variant of {source} (its variants: {found})"
            )
        return spec, chosen

    name_a, rows_a = rows_of(args.a)
    name_b, rows_b = rows_of(args.b)
    if name_a == name_b:  # two files of one variant: keep them apart in the report
        name_a, name_b = f"A:{name_a}", f"B:{name_b}"
    comparison = cmp.compare(
        rows_a, rows_b, name_a, name_b, tasks=tasks, resamples=args.resamples, seed=args.seed
    )
    print("\n".join(cmp.table_lines(comparison)))
    report = comparison.report()
    if args.json:
        write_json_atomic(args.json, report)
    if not args.no_mlflow:
        run_id = log_comparison(comparison, report, args.experiment)
        print(f"mlflow run {run_id} in experiment {args.experiment}")


def log_comparison(comparison, report: dict, experiment: str) -> str:
    """One MLflow run linking both variants: their names as params, per metric diff/CI/p."""
    from custseg.evaluation.compare import mlflow_fields
    from custseg.tracking import configure_mlflow

    mlflow = configure_mlflow(experiment)
    params, metrics = mlflow_fields(comparison)
    name = f"{comparison.variant_b} vs {comparison.variant_a}"
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags(
            {"custseg.variant_a": comparison.variant_a, "custseg.variant_b": comparison.variant_b}
        )
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(report, "comparison.json")
    return run.info.run_id
