"""MLflow set-up in one place (the pipeline, the app and the eval stage all track): sqlite
tracking + registry, artifacts under ./mlruns, a migrated template for new stores."""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from importlib.metadata import version
from pathlib import Path

from custseg.config import directory_from_env
from custseg.io import write_atomic
from custseg.telemetry import disable_telemetry

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
TEMPLATE_DIR_ENV = "CUSTSEG_MLFLOW_TEMPLATES"  # default ~/.cache/custseg/mlflow


# DVC sets DVC_ROOT for every stage it runs: the repository's root, which with `dvc exp run
# --temp` (or --queue) is the workspace, not the temporary copy the stage runs in. The project's
# own store lives there, so an experiment in a copy registers into the workspace's registry.
DVC_ROOT_ENV = "DVC_ROOT"


def project_root() -> Path:
    """Where the project's default store (mlflow.db, mlruns/) lives: DVC_ROOT in a stage, else
    the working directory."""
    return Path(os.environ.get(DVC_ROOT_ENV, "").strip() or ".")


def tracking_uri() -> str:
    root = project_root()
    default = DEFAULT_TRACKING_URI if root == Path(".") else f"sqlite:///{root / 'mlflow.db'}"
    return os.environ.get("MLFLOW_TRACKING_URI", default)


def registry_uri() -> str:
    return os.environ.get("MLFLOW_REGISTRY_URI", tracking_uri())


def configure_mlflow(experiment: str | None = None):
    """Point MLflow at this project's stores (overridable by MLFLOW_* variables); return mlflow."""
    disable_telemetry()
    import mlflow  # imported here: 2–5 s, and only entry points that track should pay it

    uri = tracking_uri()
    ensure_database(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry_uri())
    if experiment:
        _create_in_project_root(mlflow, uri, experiment)
        mlflow.set_experiment(experiment)
    return mlflow


def _create_in_project_root(mlflow, uri: str, experiment: str) -> None:
    """A new experiment of the default store keeps its artifacts in the project's mlruns/ even
    when the stage runs in DVC's temporary copy (MLflow would put them in the copy, which DVC
    deletes after `dvc exp run --temp`)."""
    root = project_root().resolve()
    if sqlite_path(uri) is None or root == Path.cwd().resolve():
        return
    if mlflow.get_experiment_by_name(experiment) is None:
        location = (root / "mlruns" / experiment).as_uri()
        mlflow.MlflowClient().create_experiment(experiment, artifact_location=location)


def model_uri(name: str, alias: str) -> str:
    return f"models:/{name}@{alias}"


# --- a new sqlite store starts from a migrated template -------------------------------------
# MLflow builds a new database by running its ~50 schema migrations (~6 s here). They depend only
# on the MLflow version, so they run once per machine and version, into a template that every
# new store (a fresh clone, a test sandbox) copies.


def sqlite_path(uri: str) -> Path | None:
    """The file behind a `sqlite:///` URI (None for any other store)."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :].split("?", 1)[0]) if uri.startswith(prefix) else None


def template_path() -> Path:
    root = directory_from_env(TEMPLATE_DIR_ENV, "~/.cache/custseg/mlflow")
    return root / f"empty-mlflow-{version('mlflow')}.db"


def build_template(path: Path) -> Path:
    """Migrate an empty store into `path` (atomically), without its default experiment.

    MLflow re-creates experiment 0 on first use, with an artifact location under the store's
    own working directory rather than the template's.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    def migrate(tmp: Path) -> None:
        SqlAlchemyStore(f"sqlite:///{tmp}", str(path.parent / "unused-artifacts")).engine.dispose()
        with closing(sqlite3.connect(tmp)) as db, db:
            db.execute("DELETE FROM experiments WHERE experiment_id = 0")

    write_atomic(path, migrate)
    return path


def ensure_database(uri: str) -> None:
    """Create a missing sqlite store as a copy of the migrated template (built on first need)."""
    db = sqlite_path(uri)
    if db is None or db.exists():
        return
    template = template_path()
    if not template.is_file():
        build_template(template)
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(template, tmp)
        os.link(tmp, db)  # never replaces a store another process created meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def ensure_template() -> tuple[Path, bool]:
    """The migrated template for the installed MLflow: (path, True if it was built now)."""
    disable_telemetry()
    path = template_path()
    if path.is_file():
        return path, False
    return build_template(path), True
