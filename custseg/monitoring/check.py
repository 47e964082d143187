"""One drift check of the served version (`models:/export.model_name@export.alias`): its
reference (the training data its MLflow run carries), the report, its MLflow run. Shared by
the `monitor` DVC stage (the store, data/scored/) and `custseg monitor` (any window)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from custseg.config import MonitorParams, load_params
from custseg.errors import MonitorError, ServingError
from custseg.io import write_json_atomic
from custseg.monitoring import EXPERIMENT
from custseg.monitoring.drift import NO_DATA, Reference, assess_drift
from custseg.monitoring.window import daily_mix, no_rows, read_window, rows_of
from custseg.paths import MONITOR_METRICS, SCORED

if TYPE_CHECKING:
    from custseg.serving.model import ModelRef


def served_ref(name: str, alias: str) -> ModelRef:
    from custseg.serving.model import resolve_model

    try:
        return resolve_model(name, alias)
    except ServingError as error:
        raise MonitorError(str(error)) from None


def load_reference(ref: ModelRef) -> tuple[Reference, Any]:
    """(the reference, the model) of the registered version `ref`."""
    from custseg.serving.model import describe_run, load_model, load_segment_profiles, mlflow_client
    from custseg.serving.training_data import load_training_data

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one-line output
    try:
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
    return Reference(ref.version, data.sample, counts), model


def drift_report(
    reference: Reference, window: pd.DataFrame, params: MonitorParams, source: str
) -> dict:
    """assess_drift's report with its source and the window's segment mix by day."""
    report = assess_drift(reference, window, params)
    return {**report, "source": source, "daily": daily_mix(window, len(reference.sizes))}


def no_data_report(version: str, window: pd.DataFrame, min_rows: int, source: str) -> dict:
    """The report of a window too small to judge: how many rows, and how many are needed."""
    return {
        "version": version,
        "rows": len(window),
        "min_rows": min_rows,
        "verdict": NO_DATA,
        "summary": f"{len(window):,} scored rows of version {version}: at least {min_rows:,} "
        "needed for a verdict (monitor.min_rows)",
        "drifted_features": [],
        "drifted_segments": [],
        "source": source,
        "daily": [],  # what a segment id means needs the model: not loaded for no verdict
    }


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


def report_lines(report: dict[str, Any]) -> list[str]:
    """What a check prints: each feature's numbers, the mix, the verdict."""
    lines = [
        f"{feature}: PSI {s['psi']:.3f}, KS {s['ks']:.3f} (p {s['p_value']:.2g}),"
        f" mean {s['reference_mean']:.1f} → {s['window_mean']:.1f}"
        for feature, s in report.get("features", {}).items()
    ]
    if "segments" in report:
        mix = report["segments"]
        lines.append(
            f"segment mix: chi-square p {mix['p_value']:.2g}, "
            f"largest share change {mix['max_change']:.1%}"
        )
    rows = f"{report['rows']:,} scored rows ({report['source']})"
    lines.append(f"version {report['version']}, {rows}: {report['summary']}")
    return lines


def monitor_stage(params_path: Path) -> str:
    """The recorded window (data/scored/, the last monitor.window_days days) against the served
    version's training data: metrics/monitor.json, an MLflow run of a verdict, the lines to print.
    Too few rows (a fresh clone has none) is the verdict "no data", not a failure."""
    params = load_params(params_path)
    days = params.monitor.window_days
    window = read_window(SCORED, days) if SCORED.is_dir() else no_rows()
    source = f"{SCORED} ({f'last {days} days' if days else 'all retained days'})"
    ref = served_ref(params.export.model_name, params.export.alias)
    rows = rows_of(window, ref.version)
    if len(rows) < params.monitor.min_rows:
        report = no_data_report(ref.version, rows, params.monitor.min_rows, source)
        write_json_atomic(MONITOR_METRICS, report)
        return "\n".join([*report_lines(report), f"wrote {MONITOR_METRICS} (no MLflow run)"])
    reference, _ = load_reference(ref)
    report = drift_report(reference, rows, params.monitor, source)
    write_json_atomic(MONITOR_METRICS, report)
    run_id = log_monitor_run(report, ref, EXPERIMENT)
    lines = [f"wrote {MONITOR_METRICS}", f"mlflow run {run_id} in experiment {EXPERIMENT}"]
    return "\n".join([*report_lines(report), *lines])
