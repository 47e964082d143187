"""DVC stage `export`: register the model as `candidate`; promote it if the gate passes."""

from __future__ import annotations

import json
from pathlib import Path

from custseg.cli import run_cli, stage_parser
from custseg.config import ConfigError, ExportParams, load_params
from custseg.io import write_json_atomic
from custseg.registry import Decision, promotion_decision
from custseg.tracking import configure_mlflow

RUN_INFO = Path("models/train_run.json")
MODEL_INFO = Path("models/model_info.json")


def read_run_info(path: Path = RUN_INFO) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run `dvc repro train` first") from None


def _champion_silhouette(client, name: str, alias: str) -> tuple[str | None, float | None]:
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, None
    score = champion.tags.get("silhouette")
    if score is None:  # registered by something else: read the metric off its run
        score = client.get_run(champion.run_id).data.metrics.get("silhouette")
    return champion.version, None if score is None else float(score)


def export(run: dict, params: ExportParams) -> dict:
    mlflow = configure_mlflow()
    client = mlflow.MlflowClient()
    name = params.model_name
    # Re-exporting the same training run reuses its version instead of registering a twin.
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run['run_id']}'")
    if existing:
        version = max(existing, key=lambda v: int(v.version))
    else:
        tags = {"silhouette": str(run["silhouette"]), "k": str(run["k"])}
        version = mlflow.register_model(run["model_uri"], name, tags=tags)
    client.set_registered_model_alias(name, params.candidate_alias, version.version)
    champion_version, champion_score = _champion_silhouette(client, name, params.alias)
    if champion_version == version.version:  # re-exporting the champion's own run: keep it
        decision = Decision(True, f"version {version.version} is already @{params.alias}")
    else:
        decision = promotion_decision(run["silhouette"], champion_score, params.tolerance)
    if decision.promote:
        client.set_registered_model_alias(name, params.alias, version.version)
    aliases = sorted(client.get_model_version(name, version.version).aliases)
    return {
        "name": name,
        "version": int(version.version),
        "model_uri": f"models:/{name}/{version.version}",
        "run_id": run["run_id"],
        "metrics": {
            k: run[k] for k in ("k", "silhouette", "inertia", "davies_bouldin", "calinski_harabasz")
        },
        "aliases": aliases,
        "promoted": decision.promote,
        "decision": decision.reason,
        "previous_champion": None if champion_version is None else int(champion_version),
    }


def main(argv: list[str] | None = None) -> int:
    args = stage_parser(__doc__).parse_args(argv)

    def body() -> None:
        params = load_params(args.params)
        info = export(read_run_info(), params.export)
        write_json_atomic(MODEL_INFO, info)
        verdict = (
            f"promoted to @{params.export.alias}"
            if info["promoted"]
            else f"NOT promoted to @{params.export.alias}"
        )
        print(
            f"export: {info['name']} v{info['version']} @{params.export.candidate_alias}, "
            f"{verdict}: {info['decision']}"
        )

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
