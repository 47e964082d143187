"""Export: register the trained model as `candidate` and let the gate decide on `champion`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from custseg.config import ExportParams, load_params
from custseg.errors import ConfigError, RegistryError, first_line
from custseg.features import FEATURES
from custseg.io import write_json_atomic
from custseg.paths import CUSTOMERS, EXPORT_METRICS, MODEL_INFO, TRAIN_RUN
from custseg.pipeline.data import read_training_data
from custseg.pipeline.lineage import file_sha256, flat_tags
from custseg.pipeline.registry import (
    Comparison,
    Decision,
    compare_on_data,
    current_champion,
    gate_lock,
    hold_for_experiment,
    original_run,
    promotion_decision,
)
from custseg.tracking import configure_mlflow

# `dvc exp run` (in the workspace, --temp or --queue) puts the experiment's name in the
# environment of every stage it runs; `dvc repro` does not (DVC 3.67: dvc/env.py,
# dvc/repo/experiments/queue/base.py). DVC_EXP_BASELINE_REV is set beside it.
EXPERIMENT_ENV = "DVC_EXP_NAME"


def experiment_name() -> str | None:
    """The `dvc exp run` this stage runs in, or None for `dvc repro` (the committed pipeline)."""
    return os.environ.get(EXPERIMENT_ENV, "").strip() or None


RUN_KEYS = ("run_id", "model_uri", "silhouette", "silhouette_sample", "seed", "lineage")


def read_run_info(path: Path = TRAIN_RUN) -> dict:
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run `dvc repro train` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"{path}: not JSON ({first_line(error)}); run `dvc repro train`"
        ) from None
    missing = [key for key in RUN_KEYS if not isinstance(info, dict) or key not in info]
    if not missing and not isinstance(info["lineage"], dict):
        missing = ["lineage"]
    if missing:
        raise ConfigError(f"{path}: no {', '.join(missing)}; run `dvc repro train`")
    return info


def read_candidate_data(run_info: dict, path: Path | None = None) -> pd.DataFrame:
    """The data the candidate was trained on (the file its lineage names, by default): it must
    still be the one train read."""
    data = run_info["lineage"].get("data") or {}
    trained_on = str(data.get("sha256", ""))
    path = path or Path(data.get("path") or CUSTOMERS)
    if not path.is_file() or file_sha256(path) != trained_on:
        raise ConfigError(
            f"{path}: not the data the candidate was trained on (SHA-256 {trained_on[:12]}…); "
            "run `dvc repro train`"
        )
    return read_training_data(path)[FEATURES].astype(float)


def export(run_info: dict, params: ExportParams, experiment: str | None = None) -> dict:
    """Register the run's model, move the aliases the gate allows (an `experiment`'s model
    takes @champion only with export.force); a registry failure at any step stops here with
    one line (RegistryError) and moves no alias after it."""
    from mlflow.exceptions import MlflowException

    customers = read_candidate_data(run_info)
    try:
        return _register_and_gate(run_info, params, customers, experiment)
    except MlflowException as error:
        raise RegistryError(f"MLflow registry: {first_line(error)}; nothing promoted") from None


def _compare(mlflow, run_info: dict, champion, customers: pd.DataFrame) -> Comparison:
    """Both models on the candidate's data; a champion that does not load cannot score it."""
    candidate = mlflow.sklearn.load_model(run_info["model_uri"])
    try:
        model = mlflow.sklearn.load_model(f"models:/{champion.name}/{champion.version}")
    except Exception as error:  # a foreign flavour or missing files: the decision says which
        problem = f"its model does not load as scikit-learn: {first_line(error)}"
        return Comparison(run_info["silhouette"], unscorable=problem)
    return compare_on_data(
        candidate, model, customers, run_info["silhouette_sample"], run_info["seed"]
    )


def _register_and_gate(
    run_info: dict, params: ExportParams, customers: pd.DataFrame, experiment: str | None
) -> dict:
    mlflow = configure_mlflow()
    client = mlflow.MlflowClient()
    name = params.model_name
    # Re-exporting the same training run reuses its version instead of registering a twin.
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_info['run_id']}'")
    if existing:
        version = max(existing, key=lambda v: int(v.version))
    else:
        lineage_tags = flat_tags(run_info["lineage"])
        version = mlflow.register_model(run_info["model_uri"], name, tags=lineage_tags)
    client.set_registered_model_alias(name, params.candidate_alias, version.version)
    if experiment:  # which `dvc exp show` row this version is
        client.set_model_version_tag(name, version.version, "dvc.experiment", experiment)
    # One gate at a time: the champion read, the comparison and the alias move happen while
    # this export holds the model's gate, so a concurrent export cannot overwrite unseen.
    with gate_lock(client, name):
        champion = current_champion(client, name, params.alias)
        comparison = None
        if champion is not None and champion.version == version.version:
            decision = verdict = Decision(
                True, f"version {version.version} is already @{params.alias}"
            )
        else:
            if champion is not None:
                comparison = _compare(mlflow, run_info, champion, customers)
            verdict = promotion_decision(
                comparison, params.tolerance, min_ari=params.min_ari, force=params.force
            )
            decision = hold_for_experiment(verdict, experiment, force=params.force)
        gate = {
            "promoted": decision.promote,
            "decision": decision.reason,
            # the gate's own verdict; an experiment may pass it and still not be promoted
            "passed": verdict.promote,
            "experiment": experiment,
            "champion_version": None if champion is None else int(champion.version),
            # the run it was first trained in: the same in every registry (pipeline.promoted)
            "champion_run_id": None if champion is None else original_run(champion),
            # no comparison (no champion, or it is this version): no scores
            **{
                score: getattr(comparison, score, None)
                for score in ("candidate_silhouette", "champion_silhouette", "ari")
            },
            "force": params.force,
            "data_rows": len(customers),
        }
        # The decision is recorded on the version before any alias moves: the registry page shows
        # why each version is (or is not) the champion.
        for key, value in flat_tags(gate, "gate.").items():
            client.set_model_version_tag(name, version.version, key, value)
        verdict = "promoted" if decision.promote else "not promoted"
        client.update_model_version(
            name, version.version, description=f"{verdict} to @{params.alias}: {decision.reason}"
        )
        if decision.promote:
            client.set_registered_model_alias(name, params.alias, version.version)
    aliases = sorted(client.get_model_version(name, version.version).aliases)
    return {
        "name": name,
        "version": int(version.version),
        "model_uri": f"models:/{name}/{version.version}",
        "run_id": run_info["run_id"],
        "metrics": {
            k: run_info[k]
            for k in ("k", "silhouette", "inertia", "davies_bouldin", "calinski_harabasz")
        },
        "aliases": aliases,
        "promoted": decision.promote,
        "decision": decision.reason,
        "previous_champion": gate["champion_version"],
        "gate": gate,
        "lineage": run_info["lineage"],
    }


def gate_metrics(info: dict) -> dict:
    """The flat numbers `dvc exp show` lists per experiment (None values are left out)."""
    gate = info["gate"]
    return {
        "version": info["version"],
        "promoted": gate["promoted"],
        "passed": gate["passed"],
        "decision": gate["decision"],
        **{
            key: gate[key]
            for key in ("candidate_silhouette", "champion_silhouette", "ari", "champion_version")
            if gate[key] is not None
        },
    }


def summary(info: dict, params: ExportParams) -> str:
    """What the stage prints: the version, its aliases and the gate's decision."""
    verdict = (
        f"promoted to @{params.alias}" if info["promoted"] else f"NOT promoted to @{params.alias}"
    )
    return (
        f"export: {info['name']} v{info['version']} @{params.candidate_alias}, "
        f"{verdict}: {info['decision']}"
    )


def export_stage(params_path: Path) -> str:
    """Register the model as `candidate`; promote it to `champion` if the gate passes; write
    which version and why (models/model_info.json, metrics/export.json)."""
    params = load_params(params_path).export
    info = export(read_run_info(), params, experiment_name())
    write_json_atomic(MODEL_INFO, info)
    write_json_atomic(EXPORT_METRICS, gate_metrics(info))
    return summary(info, params)
