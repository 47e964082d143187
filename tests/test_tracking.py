"""A new sqlite MLflow store starts as a copy of the migrated template, never replaces one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from custseg.tracking import TEMPLATE_DIR_ENV, ensure_database, sqlite_path, template_path


def test_sqlite_path_only_for_sqlite_uris() -> None:
    assert sqlite_path("sqlite:///mlflow.db") == Path("mlflow.db")
    assert sqlite_path("sqlite:////abs/m.db") == Path("/abs/m.db")
    assert sqlite_path("http://127.0.0.1:5000") is None


def test_a_new_store_is_the_template_and_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_mlflow_db: Path
) -> None:
    import mlflow

    monkeypatch.setenv(TEMPLATE_DIR_ENV, str(tmp_path / "templates"))
    template_path().parent.mkdir()
    template_path().write_bytes(migrated_mlflow_db.read_bytes())  # as if built before
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "sub" / "mlflow.db"
    uri = f"sqlite:///{db}"
    ensure_database(uri)
    assert db.read_bytes() == migrated_mlflow_db.read_bytes()
    assert not list(db.parent.glob(".*.tmp")), "the temporary copy is left behind"

    client = mlflow.MlflowClient(tracking_uri=uri)
    default = client.get_experiment("0")  # re-created here, not inherited from the template
    assert default.name == "Default"
    assert default.artifact_location.endswith(f"{tmp_path.name}/mlruns/0")
    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}


def test_an_existing_store_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TEMPLATE_DIR_ENV, str(tmp_path / "no-template-needed"))
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE mine (x)")
    before = db.read_bytes()
    ensure_database(f"sqlite:///{db}")
    assert db.read_bytes() == before
    assert not (tmp_path / "no-template-needed").exists()


def test_the_template_has_no_default_experiment(migrated_mlflow_db: Path) -> None:
    with sqlite3.connect(migrated_mlflow_db) as connection:
        assert connection.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision and revision[0]


def test_a_stage_in_dvcs_temporary_copy_uses_the_workspace_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_mlflow_db: Path
) -> None:
    """`dvc exp run --temp` runs a stage in a copy under .dvc/tmp/exps/ with DVC_ROOT naming the
    workspace: the default store, and a new experiment's artifacts, are the workspace's."""
    from custseg.testing.sandbox import MLFLOW_ENV, forget_mlflow_process_state
    from custseg.tracking import configure_mlflow, tracking_uri

    for key in MLFLOW_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(TEMPLATE_DIR_ENV, str(tmp_path / "templates"))
    template_path().parent.mkdir()
    template_path().write_bytes(migrated_mlflow_db.read_bytes())
    workspace, copy = tmp_path / "workspace", tmp_path / "workspace/.dvc/tmp/exps/tmp1"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking_uri() == "sqlite:///mlflow.db"  # outside DVC: the working directory's
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    assert tracking_uri() == f"sqlite:///{workspace / 'mlflow.db'}"
    try:
        mlflow = configure_mlflow("customer-segmentation")
        experiment = mlflow.get_experiment_by_name("customer-segmentation")
        assert experiment.artifact_location == (workspace / "mlruns/customer-segmentation").as_uri()
        with mlflow.start_run():
            mlflow.log_text("kept", "note.txt")
        assert (workspace / "mlflow.db").is_file() and not (copy / "mlflow.db").exists()
        assert list((workspace / "mlruns").rglob("note.txt")) and not (copy / "mlruns").exists()
    finally:
        forget_mlflow_process_state()
