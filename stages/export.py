"""DVC stage `export`: register the model as `candidate`; promote it if the gate passes."""

from __future__ import annotations

import json
from pathlib import Path

from custseg.config import ConfigError, ExportParams, first_line, load_params
from custseg.entrypoint import run, stage_parser
from custseg.io import write_json_atomic
from custseg.paths import MODEL_INFO, TRAIN_RUN
from custseg.pipeline.registry import (
    Decision,
    RegistryError,
    current_champion,
    promotion_decision,
)
from custseg.tracking import configure_mlflow


def read_run_info(path: Path = TRAIN_RUN) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run `dvc repro train` first") from None


def _champion_silhouette(client, name: str, alias: str) -> tuple[str | None, float | None]:
    champion = current_champion(client, name, alias)
    if champion is None:
        return None, None
    score = champion.tags.get("silhouette")
    if score is None:  # registered by something else: read the metric off its run
        score = client.get_run(champion.run_id).data.metrics.get("silhouette")
    return champion.version, None if score is None else float(score)


def export(run_info: dict, params: ExportParams) -> dict:
    """Register the run's model, move the aliases the gate allows; a registry failure at any
    step stops here with one line (RegistryError) and moves no alias after it."""
    from mlflow.exceptions import MlflowException

    try:
        return _register_and_gate(run_info, params)
    except MlflowException as error:
        raise RegistryError(f"MLflow registry: {first_line(error)}; nothing promoted") from None


def _register_and_gate(run_info: dict, params: ExportParams) -> dict:
    mlflow = configure_mlflow()
    client = mlflow.MlflowClient()
    name = params.model_name
    # Re-exporting the same training run reuses its version instead of registering a twin.
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_info['run_id']}'")
    if existing:
        version = max(existing, key=lambda v: int(v.version))
    else:
        tags = {"silhouette": str(run_info["silhouette"]), "k": str(run_info["k"])}
        version = mlflow.register_model(run_info["model_uri"], name, tags=tags)
    client.set_registered_model_alias(name, params.candidate_alias, version.version)
    champion_version, champion_score = _champion_silhouette(client, name, params.alias)
    if champion_version == version.version:  # re-exporting the champion's own run: keep it
        decision = Decision(True, f"version {version.version} is already @{params.alias}")
    else:
        decision = promotion_decision(run_info["silhouette"], champion_score, params.tolerance)
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
        "previous_champion": None if champion_version is None else int(champion_version),
    }


def main(argv: list[str] | None = None) -> int:
    args = stage_parser(__doc__).parse_args(argv)

    def body() -> None:
        params = load_params(args.params).export
        info = export(read_run_info(), params)
        write_json_atomic(MODEL_INFO, info)
        verdict = (
            f"promoted to @{params.alias}"
            if info["promoted"]
            else (f"NOT promoted to @{params.alias}")
        )
        print(
            f"export: {info['name']} v{info['version']} @{params.candidate_alias}, "
            f"{verdict}: {info['decision']}"
        )

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
