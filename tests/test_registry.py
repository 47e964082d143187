"""The champion gate: its arithmetic, and what the registry must say before anything is promoted
(a real sqlite registry; faults injected into the real client)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

from custseg.pipeline.registry import current_champion, promotion_decision
from custseg.testing.sandbox import run_pipeline
from tests.fixtures.project import stage, write_params

NAME = "customer-segments"


def test_first_model_is_always_promoted() -> None:
    decision = promotion_decision(0.1, None, tolerance=0.0)
    assert decision.promote and decision.reason == "no champion yet"


def test_within_tolerance_is_promoted_and_beyond_is_not() -> None:
    assert promotion_decision(0.395, 0.40, tolerance=0.01).promote
    assert promotion_decision(0.39, 0.40, tolerance=0.01).promote
    assert not promotion_decision(0.389, 0.40, tolerance=0.01).promote
    assert promotion_decision(0.45, 0.40, tolerance=0.0).promote
    assert not promotion_decision(0.3999, 0.40, tolerance=0.0).promote


def test_the_reason_says_why() -> None:
    reason = promotion_decision(0.30, 0.40, tolerance=0.05).reason
    assert reason == "silhouette 0.3000 < champion 0.4000 − tolerance 0.05"


def test_only_a_missing_alias_means_no_champion(project: Path) -> None:
    client = MlflowClient()
    client.create_registered_model(NAME)
    version = client.create_model_version(NAME, source=str(project / "anything")).version
    assert current_champion(client, NAME, "champion") is None
    client.set_registered_model_alias(NAME, "champion", version)
    assert current_champion(client, NAME, "champion").version == version


def _broken(method: str):
    def fail(*_args, **_kwargs):
        raise MlflowException("database is locked", INTERNAL_ERROR)

    return method, fail


@pytest.mark.parametrize(
    "faults",
    [
        [_broken("get_model_version_by_alias")],
        [_broken("get_model_version_by_alias"), _broken("get_registered_model")],
    ],
    ids=["alias lookup fails", "alias lookup and model lookup fail"],
)
def test_a_registry_error_stops_export_with_nothing_promoted(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, faults: list
) -> None:
    run_pipeline(project)  # v1 @champion
    info = (project / "models/model_info.json").read_text()
    write_params(project, train={"n_clusters": 3})
    assert stage("train").main([]) == 0
    capsys.readouterr()
    for method, fail in faults:
        monkeypatch.setattr(MlflowClient, method, fail)
    assert stage("export").main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if line.startswith("error:")] == err[-1:]
    assert err[-1].startswith("error: MLflow registry: ")
    assert err[-1].endswith("database is locked; nothing promoted")
    monkeypatch.undo()
    champion = MlflowClient().get_model_version_by_alias(NAME, "champion")
    assert str(champion.version) == "1", "a registry error must never move the champion"
    assert (project / "models/model_info.json").read_text() == info
    assert json.loads(info)["version"] == 1
