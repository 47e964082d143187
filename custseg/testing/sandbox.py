"""Sandboxes: a temporary copy of a project checkout with its own MLflow store, and the DVC
stages run in this process (they share its imports: ~1 s a stage instead of ~5 s a process)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from custseg.entrypoint import run_stage
from custseg.pipeline.check import check_params_stage
from custseg.pipeline.data import simulate_stage
from custseg.pipeline.export import export_stage
from custseg.pipeline.train import train_stage
from custseg.telemetry import NO_TELEMETRY

# What a checkout needs to run the pipeline (everything else is built or git-ignored). The
# stages run the installed custseg; its sources are copied because dvc.yaml lists them as deps.
PROJECT_FILES = [
    "custseg",
    "stages",
    "params.yaml",
    "dvc.yaml",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    ".gitignore",
    ".streamlit/config.toml",  # the app runs as `make app` runs it (no source watcher)
]
# MLflow variables a sandbox must not inherit from the calling shell.
MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME")


def copy_project(source: Path, dest: Path, migrated_db: Path | None = None) -> Path:
    """Copy what the pipeline and the app need from the checkout `source` into `dest`, with a
    copy of an already-migrated MLflow store if given."""
    for name in PROJECT_FILES:
        origin, target = source / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, target)
    if migrated_db is not None:
        shutil.copy2(migrated_db, dest / "mlflow.db")
    return dest


def project_env(path: Path) -> dict[str, str]:
    """Environment pointing MLflow at the sandbox's own store (absolute), telemetry off."""
    return {**NO_TELEMETRY, "MLFLOW_TRACKING_URI": f"sqlite:///{path / 'mlflow.db'}"}


@dataclass(frozen=True)
class Stage:
    """A DVC stage run in this process: `main(argv)` is what `python stages/<name>.py` runs."""

    body: Callable[[Path], str]

    def main(self, argv: list[str] | None = None) -> int:
        return run_stage(self.body, argv)


STAGES = {
    "check_params": Stage(check_params_stage),
    "simulate": Stage(simulate_stage),
    "train": Stage(train_stage),
    "export": Stage(export_stage),
}


def forget_mlflow_process_state() -> None:
    """Undo what in-process MLflow calls leave behind: the set URIs, and the variables
    `set_registry_uri` / `set_experiment` export for child processes (not undone by None)."""
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    # set_experiment also keeps the id in a module global, which would point the next store's
    # runs at an experiment it does not have (MLflow has no public reset).
    mlflow.tracking.fluent._active_experiment_id = None
    for key in ("MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        os.environ.pop(key, None)


@contextmanager
def inside(project: Path, clear: tuple[str, ...] = ()) -> Iterator[Path]:
    """Run the block with `project` as cwd and its environment (`project_env`), variables in
    `clear` unset; everything is restored afterwards, MLflow's process state included."""
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    for key in (*MLFLOW_ENV, *clear):
        os.environ.pop(key, None)
    os.environ.update(project_env(project))
    os.chdir(project)
    try:
        yield project
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        forget_mlflow_process_state()


def run_pipeline(project: Path) -> None:
    """simulate → train → export in `project` (cwd and MLflow env must already point there)."""
    for name, stage in STAGES.items():
        code = stage.main([])
        if code != 0:
            raise RuntimeError(f"stage {name} failed with exit code {code}")


def build_trained_project(
    source: Path, dest: Path, migrated_db: Path | None = None, clear: tuple[str, ...] = ()
) -> Path:
    """A copy of the checkout `source` in `dest` holding a registered `customer-segments` v1
    @champion (simulate → train → export on the default params)."""
    copy_project(source, dest, migrated_db)
    with inside(dest, clear):
        run_pipeline(dest)
    return dest
