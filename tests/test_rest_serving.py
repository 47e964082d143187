"""`custseg serve` (`make serve`): MLflow's scoring server on the registered champion, over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from custseg.serving.model import features_frame
from custseg.testing.rest import post_json, running_scoring_server
from custseg.testing.sandbox import project_env


@pytest.fixture(scope="module")
def server(trained_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with running_scoring_server(trained_project, log) as url:
        yield url


def test_it_scores_like_model_predict(server: str, registered_model) -> None:
    rng = np.random.default_rng(3)
    X = features_frame(rng.uniform(15, 140, 500), rng.uniform(1, 100, 500))
    body = json.dumps({"dataframe_split": X.to_dict(orient="split", index=False)}).encode()
    status, reply = post_json(server, body)
    assert status == 200, reply
    assert reply["predictions"] == registered_model.predict(X).tolist()
    one = {"dataframe_records": [{"annual_income": 60, "spending_score": 50}]}
    status, reply = post_json(server, json.dumps(one).encode())
    assert (status, reply["predictions"]) == (
        200,
        registered_model.predict(features_frame(60, 50)).tolist(),
    )


GOOD = b'{"dataframe_records": [{"annual_income": 60, "spending_score": 5}]}'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "Invalid input"),
        (b'{"dataframe_split": {"columns": ["age"], "data": [[1]]}}', "annual_income"),
        (b'{"dataframe_records": [{"annual_income": "lots", "spending_score": 5}]}', ""),
        (b"[]", ""),
    ],
    ids=["bad JSON", "wrong columns", "text for a number", "no payload key"],
)
def test_bad_requests_get_an_error_response(server: str, body: bytes, expected: str) -> None:
    status, reply = post_json(server, body)
    assert 400 <= status < 500, (status, reply)
    assert expected in json.dumps(reply)
    assert (
        post_json(server, b'{"dataframe_records": [{"annual_income": 60, "spending_score": 5}]}')[0]
        == 200
    ), "the server is still serving after a bad request"


@pytest.fixture
def registered_model(trained_project: Path, monkeypatch: pytest.MonkeyPatch):
    from tests.fixtures.app import load_registered

    for key, value in project_env(trained_project).items():
        monkeypatch.setenv(key, value)
    return load_registered()


def test_no_registered_model_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("base:\n  seed: 1\n")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none.db'}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "custseg", "serve"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: No MLflow registry yet") and "`make run`" in line
    assert not (tmp_path / "none.db").exists(), "a missing store is not created"
