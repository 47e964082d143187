"""`custseg mlflow restore` (run by `make run`): the registry must hold the model the pipeline's
outputs name.

After `dvc pull` (a fresh clone, a new team server) every output is up to date, so `dvc repro`
runs nothing, yet `models/model_info.json` names a version of a registry that is not there. The
trained model itself is not in DVC's cache (only its run's id), so the fix is to train and
export again: `dvc repro -f -s train export` (seeded: the same model, a new run and version;
dvc.lock records them)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from custseg.errors import RegistryError, UserError, first_line
from custseg.paths import MODEL_INFO
from custseg.pipeline.pull import dvc_executable
from custseg.tracking import configure_mlflow, registry_uri

RETRAIN = ("dvc", "repro", "--force", "--single-item", "train", "export")


def named_version(path: Path = MODEL_INFO) -> dict | None:
    """The registered version the outputs name (name, version, run_id), or None without them."""
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # not JSON, not UTF-8
        info = None
    kinds = {"name": str, "version": int, "run_id": str}
    if not isinstance(info, dict) or not all(
        type(info.get(key)) is kind for key, kind in kinds.items()
    ):
        raise UserError(
            f"{path}: not an export's output; run `dvc repro -f -s export` to rewrite it"
        )
    return {key: info[key] for key in kinds}


def is_registered(client, named: dict) -> bool:
    """Whether the registry holds that model version, of that very run."""
    query = f"name = '{named['name']}' and run_id = '{named['run_id']}'"
    return any(str(v.version) == str(named["version"]) for v in client.search_model_versions(query))


def restore(path: Path = MODEL_INFO) -> str:
    """Retrain and export when the registry lacks the version `path` names; what was done."""
    from mlflow.exceptions import MlflowException

    named = named_version(path)
    if named is None:
        return f"{path}: none yet (`dvc repro` makes it)"
    try:
        registered = is_registered(configure_mlflow().MlflowClient(), named)
    except MlflowException as error:
        raise RegistryError(f"MLflow registry {registry_uri()}: {first_line(error)}") from None
    where = f"{named['name']} v{named['version']} (run {named['run_id'][:8]})"
    if registered:
        return f"registry {registry_uri()} holds {where}, which {path} names"
    print(
        f"registry {registry_uri()} lacks {where}, which {path} names (pulled outputs, "
        f"a new registry): `{' '.join(RETRAIN)}`",
        flush=True,
    )
    command = [dvc_executable(), *RETRAIN[1:]]
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise UserError(f"`{' '.join(RETRAIN)}` failed (exit {done.returncode}); see above")
    now = named_version(path) or named
    return f"re-registered {now['name']} v{now['version']} (run {now['run_id'][:8]}): {path}"
