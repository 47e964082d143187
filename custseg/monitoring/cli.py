"""`custseg monitor`: a window of scored customers against the served version's training data
(registry: export.model_name @export.alias); writes metrics/monitor.json, prints the verdict."""

from __future__ import annotations

import argparse
from pathlib import Path

from custseg.entrypoint import add_command, positive_int
from custseg.monitoring import DRIFTS, EXPERIMENT
from custseg.paths import MONITOR_METRICS

OUTPUT = MONITOR_METRICS
SIMULATED_ROWS = 500


def _monitor(args: argparse.Namespace) -> None:
    from custseg.config import load_params
    from custseg.io import write_json_atomic
    from custseg.monitoring.check import (
        drift_report,
        load_reference,
        log_monitor_run,
        report_lines,
        served_ref,
    )
    from custseg.monitoring.simulate import simulated_window
    from custseg.monitoring.window import read_window, served_rows

    params = load_params(args.params)
    window = None if args.simulate_drift else read_window(args.window)  # before the slow part
    ref = served_ref(params.export.model_name, params.export.alias)
    reference, model = load_reference(ref)
    if window is None:
        window = simulated_window(
            reference.sample, model, args.simulate_drift, args.rows, params.base.seed
        )
        source = f"simulated ({args.simulate_drift}, {args.rows} rows)"
    else:
        window, source = served_rows(window, reference.version), str(args.window)
    report = drift_report(reference, window, params.monitor, source)
    write_json_atomic(args.output, report)
    print("\n".join(report_lines(report)))
    print(f"wrote {args.output}")
    if not args.no_mlflow:
        run_id = log_monitor_run(report, ref, args.experiment)
        print(f"mlflow run {run_id} in experiment {args.experiment}")


def add_commands(commands: argparse._SubParsersAction) -> None:
    parser = add_command(
        commands,
        "monitor",
        "drift of scored customers from the served version's training data (PSI and "
        "Kolmogorov-Smirnov per feature, chi-square on the segment mix); writes "
        f"{OUTPUT} and prints the verdict",
        _monitor,
        params=True,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--window",
        type=Path,
        help="scored rows: a Parquet file/folder or a CSV with the features and `segment`",
    )
    what.add_argument(
        "--simulate-drift",
        choices=[d for d in DRIFTS],
        help="score a window drawn from the training sample, drifted this way, to try it",
    )
    parser.add_argument(
        "--rows",
        type=positive_int,
        default=SIMULATED_ROWS,
        help=f"rows of a simulated window (default {SIMULATED_ROWS})",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default {OUTPUT}")
    parser.add_argument(
        "--experiment",
        default=EXPERIMENT,
        help=f"MLflow experiment of the run (default {EXPERIMENT})",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="log no MLflow run")
