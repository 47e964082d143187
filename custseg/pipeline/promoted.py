"""A promotion that travels with the repository (issue #32).

`custseg promote VERSION` saves the version it promotes under models/champion/ (its MLflow
model, training data, segment profile and the run's params, metrics and tags) and tracks that
folder with DVC: models/champion.dvc is committed with git, the files go to the DVC remote with
`dvc push`. `custseg mlflow restore` (`make run`) re-logs them into a registry that lacks them
and makes them @champion again, so a fresh clone serves the champion that was decided on.

Why re-log and not retrain: a promoted experiment's params are not the committed ones and its
data may be a file the clone lacks; the fitted model itself is what was decided on.

Which decision is newer: the committed pipeline's export (models/model_info.json) overrides a
promotion only when it promoted its own model over the promoted one (its gate names the
champion it replaced by the original run id, `champion_run_id`); otherwise the promotion
stands.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from custseg.errors import UserError
from custseg.io import write_json_atomic
from custseg.pipeline.registry import RESTORED_FROM, original_run
from custseg.pipeline.training_data import ARTIFACT_DIR

# Not a stage's output (custseg.paths): `custseg promote` writes it, `dvc add` tracks it.
PROMOTED = Path("models/champion")
RECORD = "promotion.json"
PROFILE = "segment_profiles.json"
MODEL_DIR = "model"
RECORD_KEYS = {"name": str, "version": int, "run_id": str, "params": dict, "metrics": dict}


def save_promotion(client, name: str, version: int, folder: Path = PROMOTED) -> dict:
    """Write `folder` (replacing it whole, never half-written) with what re-logging `version`
    needs; the record written."""
    found = client.get_model_version(name, str(version))
    run = client.get_run(found.run_id)
    experiment = client.get_experiment(run.info.experiment_id).name
    record = {
        "name": name,
        "version": int(version),
        "run_id": original_run(found),
        "experiment": experiment,
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        "version_tags": dict(found.tags),
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".champion-", dir=folder.parent))
    try:
        from mlflow.artifacts import download_artifacts

        # The registered version's files (MLflow 3 keeps a model apart from its run's artifacts).
        model_dir = staging / MODEL_DIR
        model_dir.mkdir()
        download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(model_dir))
        # an older version without its data: the views say "not recorded"
        with suppress(Exception):
            client.download_artifacts(found.run_id, ARTIFACT_DIR, str(staging))
        profile = client.load_table(experiment_id=run.info.experiment_id, artifact_file=PROFILE,
                                    run_ids=[found.run_id])  # fmt: skip
        if not profile.empty:  # else the agents see generic names there too
            profile.to_json(staging / PROFILE, orient="records")
        write_json_atomic(staging / RECORD, record)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def track_with_dvc(folder: Path, record: dict) -> list[str]:
    """`dvc add` the folder (in a DVC project); what the team does next."""
    from custseg.pipeline.pull import dvc_executable

    saved = f"{record['name']} v{record['version']} saved in {folder}"
    if not (Path(".dvc").is_dir() and Path(".git").exists()):
        return [f"{saved} (not a git + DVC checkout: not tracked)"]
    done = subprocess.run(
        [dvc_executable(), "add", "--quiet", str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise UserError(f"`dvc add {folder}` failed: {why[0]}")
    return [
        f"{saved}, tracked by {folder}.dvc: `git add {folder}.dvc {folder.parent}/.gitignore`, "
        "`git commit`, `dvc push`; then a clone's `make run` serves this champion too"
    ]


def read_promotion(folder: Path = PROMOTED) -> dict | None:
    """The promotion recorded in the repository, or None when there is none; UserError (one
    line) when it is tracked but its files are not here, or they are not a promotion."""
    path = folder / RECORD
    if not path.is_file():
        if Path(f"{folder}.dvc").is_file():
            raise UserError(
                f"{folder}.dvc records a promoted champion whose files are not here: "
                f"`dvc pull {folder}.dvc`, then `make run`"
            )
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:
        record = None
    if not isinstance(record, dict) or not all(
        type(record.get(key)) is kind for key, kind in RECORD_KEYS.items()
    ):
        raise UserError(f"{path}: not a promotion record; `custseg promote VERSION` rewrites it")
    return record


def promotion_stands(record: dict, model_info: dict | None) -> bool:
    """Whether the promotion is still the decision: the committed pipeline's export replaces it
    only when it promoted its own model over exactly this one."""
    if not model_info or not model_info.get("promoted"):
        return True
    gate = model_info.get("gate") or {}
    replaced = gate.get("champion_run_id") == record["run_id"]
    return not replaced or model_info.get("run_id") == record["run_id"]


def registered_promotion(client, record: dict):
    """The registry's version of the promoted model (by its original run), or None."""
    versions = client.search_model_versions(f"name = '{record['name']}'")
    held = [v for v in versions if original_run(v) == record["run_id"]]
    return max(held, key=lambda v: int(v.version)) if held else None


def relog(record: dict, folder: Path = PROMOTED) -> str:
    """Log the saved model again (a new run, the same params, metrics, tags, data and
    profile), register it; the new version."""
    from custseg.tracking import configure_mlflow

    mlflow = configure_mlflow(record.get("experiment") or None)
    from mlflow.models import Model

    model_dir = folder / MODEL_DIR
    model = mlflow.sklearn.load_model(str(model_dir))
    requirements = model_dir / "requirements.txt"
    with mlflow.start_run(run_name=f"promoted v{record['version']} (restored)"):
        mlflow.log_params(record["params"])
        mlflow.log_metrics(record["metrics"])
        mlflow.set_tags({**record.get("tags", {}), RESTORED_FROM: record["run_id"]})
        info = mlflow.sklearn.log_model(
            model,
            name=MODEL_DIR,
            signature=Model.load(str(model_dir)).signature,
            pip_requirements=str(requirements) if requirements.is_file() else None,
        )
        if (folder / PROFILE).is_file():
            mlflow.log_table(pd.read_json(folder / PROFILE, orient="records"), PROFILE)
        if (folder / ARTIFACT_DIR).is_dir():
            mlflow.log_artifacts(str(folder / ARTIFACT_DIR), ARTIFACT_DIR)
    tags = {**record.get("version_tags", {}), RESTORED_FROM: record["run_id"]}
    tags["restored_from_version"] = str(record["version"])
    return mlflow.register_model(info.model_uri, record["name"], tags=tags).version
