"""`custseg mlflow restore` (run by `make run`): the registry must hold the model the pipeline's
outputs name.

After `dvc pull` (a fresh clone, a new team server) every output is up to date, so `dvc repro`
runs nothing, yet `models/model_info.json` names a version of a registry that is not there. The
trained model itself is not in DVC's cache (only its run's id), so the fix is to train and
export again: `dvc repro -f -s train export` (seeded: the same model, a new run and version;
dvc.lock records them).

A version promoted by hand (`custseg promote`) cannot be retrained from the committed params: it
is re-logged from its files in models/champion/ (DVC-tracked, custseg.pipeline.promoted) and
made @champion again, after the retraining above, unless the committed pipeline has since
replaced it (`promotion_stands`)."""

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


def restore(path: Path = MODEL_INFO, folder: Path | None = None, alias: str = "champion") -> str:
    """Retrain and export when the registry lacks the version `path` names, then re-log the
    promotion saved in `folder` when it still stands and the registry lacks it; what was done."""
    from custseg.pipeline.promoted import PROMOTED, promotion_stands, read_promotion

    folder = folder or PROMOTED
    promotion = read_promotion(folder)  # before retraining: export rewrites `path`
    stands = promotion is not None and promotion_stands(promotion, exported(path))
    done = restore_export(path)
    if not stands:
        return done
    return f"{done}\n{restore_promotion(promotion, folder, alias)}"


def exported(path: Path) -> dict | None:
    """models/model_info.json as export wrote it (None when absent; named_version checks it)."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def restore_promotion(record: dict, folder: Path, alias: str) -> str:
    """Re-log the promoted version (when the registry lacks it) and make it `alias`."""
    from mlflow.exceptions import MlflowException

    from custseg.pipeline.promoted import registered_promotion, relog
    from custseg.pipeline.registry import gate_lock

    name = record["name"]
    where = f"{name} v{record['version']} (run {record['run_id'][:8]}, promoted by hand)"
    try:
        client = configure_mlflow().MlflowClient()
        held = registered_promotion(client, record)
        if held is not None:
            return f"registry {registry_uri()} holds {where} as v{held.version}"
        print(f"registry {registry_uri()} lacks {where}: re-logging it from {folder}", flush=True)
        version = str(relog(record, folder))
        with gate_lock(client, name):
            client.update_model_version(
                name, version, description=f"promoted to @{alias} by hand as v{record['version']}"
                f" (custseg promote), restored from {folder} by `custseg mlflow restore`",
            )  # fmt: skip
            client.set_registered_model_alias(name, alias, version)
    except MlflowException as error:
        raise RegistryError(f"MLflow registry {registry_uri()}: {first_line(error)}") from None
    return f"re-logged {where} as v{version}: now @{alias}"


def restore_export(path: Path) -> str:
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
