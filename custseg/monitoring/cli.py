"""`custseg monitor`: a window of scored customers against the served version's training data
(registry: export.model_name @export.alias); writes metrics/monitor.json, prints the verdict."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from custseg.entrypoint import add_command, positive_int
from custseg.errors import MonitorError, ServingError
from custseg.monitoring.drift import Reference
from custseg.monitoring.simulate import DRIFTS
from custseg.paths import MONITOR_METRICS

if TYPE_CHECKING:
    from custseg.serving.model import ModelRef

OUTPUT = MONITOR_METRICS
EXPERIMENT = "monitoring"
SIMULATED_ROWS = 500


def read_window(path: Path) -> pd.DataFrame:
    """Scored rows from a Parquet file or folder, or a CSV; MonitorError in one line otherwise."""
    from custseg.pipeline.data import is_parquet

    if not path.exists():
        raise MonitorError(f"{path}: no such file or folder")
    try:
        return pd.read_parquet(path) if is_parquet(path) else pd.read_csv(path)
    except Exception as error:  # pyarrow's and pandas' errors differ: one line either way
        kind = "Parquet" if is_parquet(path) else "CSV"
        raise MonitorError(f"{path}: not a readable {kind} file of scored rows ({error})") from None


def served_rows(window: pd.DataFrame, version: str) -> pd.DataFrame:
    """The rows scored by `version` when the window says which version scored each (the store
    does): another version's segments mean other things."""
    from custseg.monitoring.store import VERSION

    if VERSION not in window:
        return window
    rows = window[window[VERSION].astype(str) == version]
    if rows.empty:
        found = ", ".join(sorted(window[VERSION].astype(str).unique())[:5])
        raise MonitorError(f"no scored rows of version {version} (the window has {found})")
    return rows


def load_reference(name: str, alias: str) -> tuple[Reference, Any, ModelRef]:
    """(the reference, the model, its registry entry) of the version `models:/name@alias`
    serves."""
    from custseg.serving.model import (
        describe_run,
        load_model,
        load_segment_profiles,
        mlflow_client,
        resolve_model,
    )
    from custseg.serving.training_data import load_training_data

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one-line output
    try:
        ref = resolve_model(name, alias)
        model = load_model(ref)
        client = mlflow_client()
        data = load_training_data(ref.version, ref.run_id, client)
        profile = load_segment_profiles(describe_run(ref.run_id, client), model.n_clusters, client)
    except ServingError as error:
        raise MonitorError(str(error)) from None
    if not data.recorded:
        raise MonitorError(
            f"version {ref.version} carries no training data (registered before models carried "
            "it): retrain it with `make run` to monitor it"
        )
    counts = profile["size"].to_numpy(dtype=float)
    if not np.isfinite(counts).all():  # no profile table: the training sample's own mix
        counts = np.bincount(model.predict(data.sample), minlength=model.n_clusters)
    return Reference(ref.version, data.sample, counts), model, ref


def log_monitor_run(report: dict[str, Any], ref: ModelRef, experiment: str) -> str:
    """One MLflow run of the report, tagged with the served version and its training run."""
    from custseg.monitoring.drift import mlflow_fields
    from custseg.tracking import configure_mlflow

    mlflow = configure_mlflow(experiment)
    params, metrics = mlflow_fields(report)
    with mlflow.start_run(run_name=f"monitor {ref.name} v{ref.version}") as run:
        mlflow.set_tags(
            {
                "model_name": ref.name,
                "model_version": ref.version,
                "model_alias": ref.alias,
                "model_run_id": ref.run_id,  # the version's training run
                "verdict": report["verdict"],
                "source": report["source"][:250],
            }
        )
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(report, "monitor.json")
    return run.info.run_id


def _monitor(args: argparse.Namespace) -> None:
    from custseg.config import load_params
    from custseg.io import write_json_atomic
    from custseg.monitoring.drift import assess_drift
    from custseg.monitoring.simulate import simulated_window

    params = load_params(args.params)
    window = None if args.simulate_drift else read_window(args.window)  # before the slow part
    reference, model, ref = load_reference(params.export.model_name, params.export.alias)
    if window is None:
        window = simulated_window(
            reference.sample, model, args.simulate_drift, args.rows, params.base.seed
        )
        source = f"simulated ({args.simulate_drift}, {args.rows} rows)"
    else:
        source = str(args.window)
    report = assess_drift(reference, served_rows(window, reference.version), params.monitor)
    report = {**report, "source": source}
    write_json_atomic(args.output, report)
    for feature, stats in report["features"].items():
        print(
            f"{feature}: PSI {stats['psi']:.3f}, KS {stats['ks']:.3f} (p {stats['p_value']:.2g}),"
            f" mean {stats['reference_mean']:.1f} → {stats['window_mean']:.1f}"
        )
    mix = report["segments"]
    change = f"largest share change {mix['max_change']:.1%}"
    print(f"segment mix: chi-square p {mix['p_value']:.2g}, {change}")
    rows = f"{report['rows']:,} scored rows ({source})"
    print(f"version {report['version']}, {rows}: {report['summary']}")
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
