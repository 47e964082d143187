"""End to end: `dvc repro export` and `dvc exp run` in a temporary git copy, a real MLflow registry.

The target is `export`: the `eval` stage after it needs the LLM judge and is tested on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from custseg.features import FEATURES

NAME = "customer-segments"


def _run(*command: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _model_info(project: Path) -> dict:
    return json.loads((project / "models/model_info.json").read_text())


def _champion_version() -> int:
    return int(mlflow.MlflowClient().get_model_version_by_alias(NAME, "champion").version)


@pytest.fixture
def repo(project: Path) -> Path:
    _run("git", "init", "-q", cwd=project)
    _run("git", "add", "-A", cwd=project)
    _run(
        "git",
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-qm",
        "init",
        cwd=project,
    )
    return project


def test_repro_registers_a_champion_then_the_gate_decides(repo: Path, outbound_check: Path) -> None:
    log = _run(str(outbound_check), "--", "dvc", "repro", "export", cwd=repo)
    assert "0 non-loopback destination(s)" in log, log
    first = _model_info(repo)
    assert (first["version"], first["promoted"]) == (1, True)
    assert first["aliases"] == ["candidate", "champion"]
    # Lineage: the commit `dvc repro` ran on, a clean tree (DVC's outputs are git-ignored).
    head = _run("git", "rev-parse", "HEAD", cwd=repo).strip()
    assert first["lineage"]["git"] == {"commit": head, "dirty": False}
    tags = mlflow.MlflowClient().get_model_version(NAME, "1").tags
    assert (tags["git.commit"], tags["git.dirty"]) == (head, "false")

    champion = mlflow.sklearn.load_model(f"models:/{NAME}@champion")
    customers = pd.read_csv(repo / "data/customers.csv")[FEATURES].astype(float)
    labels = champion.predict(customers)
    assert set(labels) == set(range(5))
    assert "up to date" in _run("dvc", "repro", "export", cwd=repo).lower()

    # A second experiment with k=3: a new version; champion only if the gate says so.
    _run("dvc", "exp", "run", "export", "-S", "train.n_clusters=3", cwd=repo)
    second = _model_info(repo)
    assert second["version"] == 2 and second["metrics"]["k"] == 3
    expected = second["metrics"]["silhouette"] >= first["metrics"]["silhouette"] - 0.01
    assert second["promoted"] is expected
    assert _champion_version() == (2 if expected else 1)
    champion_silhouette = max(first, second, key=lambda i: i["version"] * i["promoted"])["metrics"][
        "silhouette"
    ]

    # A deliberately worse candidate: the k whose silhouette (from the sweep) is clearly lower.
    sweep = pd.read_csv(repo / "plots/k_sweep.csv")
    worse = sweep[sweep["silhouette"] < champion_silhouette - 0.01]
    assert not worse.empty, "the sweep should contain a k clearly worse than the champion"
    worst_k = int(worse.loc[worse["silhouette"].idxmin(), "k"])
    champion_before = _champion_version()
    _run("dvc", "exp", "run", "export", "-S", f"train.n_clusters={worst_k}", cwd=repo)
    third = _model_info(repo)
    assert third["version"] == 3 and third["promoted"] is False
    assert third["aliases"] == ["candidate"]
    # An experiment runs on the workspace with its params applied: dirty by design.
    assert third["lineage"]["git"] == {"commit": head, "dirty": True}
    assert _champion_version() == champion_before
    # Both experiments are there to compare, with their params and metrics.
    shown = _run("dvc", "exp", "show", "--no-pager", "--json", cwd=repo)
    assert shown.count('"n_clusters": 3') >= 1 and f'"n_clusters": {worst_k}' in shown
    assert shown.count('"silhouette"') >= 3
    # ... and the gate's decision with both scores (metrics/export.json) beside them.
    table = _run("dvc", "exp", "show", "--no-pager", "--csv", cwd=repo)
    header = table.splitlines()[0].split(",")
    for column in ("promoted", "decision", "candidate_silhouette", "champion_silhouette", "ari"):
        assert column in header, header
    assert f"{third['gate']['champion_silhouette']}" in table


OUTPUTS = [
    "data/customers.csv",
    "models/train_run.json",
    "models/model_info.json",
    "metrics/train.json",
    "metrics/export.json",
    "plots/k_sweep.csv",
]


def _fails(*command: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode != 0, f"{' '.join(command)} should have failed:\n{done.stdout}"
    return done.stdout + done.stderr


def test_a_failed_run_keeps_the_last_good_outputs(repo: Path) -> None:
    _run("dvc", "repro", "export", cwd=repo)
    good = {name: (repo / name).read_bytes() for name in OUTPUTS}
    params = (repo / "params.yaml").read_text()
    (repo / "bad.csv").write_text("Annual Income (k$),Spending Score (1-100)\n10,20\nlots,40\n")
    broken = {
        # refused by the `params` stage, before any other stage starts
        "misspelled section": params.replace("\nexport:", "\nexprot:"),
        "unknown key": params + "trian:\n  n_clusters: 3\n",
        # refused by a stage at run time: DVC has started it, its outputs persist
        "bad source rows": params.replace("source: null", "source: bad.csv"),
        "too many clusters": params.replace("n_clusters: 5", "n_clusters: 500"),
    }
    expected = {
        "misspelled section": "error: params.yaml: exprot: unknown key",
        "unknown key": "error: params.yaml: trian: unknown key",
        "bad source rows": "non-numeric value(s), first at data row 2: 'lots'",
        "too many clusters": "train.n_clusters: 500 clusters need more than 500 customers",
    }
    for case, text in broken.items():
        (repo / "params.yaml").write_text(text)
        log = _fails("dvc", "repro", "export", cwd=repo)
        assert expected[case] in log, f"{case}:\n{log}"
        errors = [line for line in log.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, f"{case}: {errors}"
        now = {name: (repo / name).read_bytes() for name in OUTPUTS if (repo / name).exists()}
        assert now == good, f"{case}: an output changed or vanished"
    # Back to the good params: only the check is redone (it passed on a file that then failed a
    # stage; DVC's run cache restores it); every other stage is up to date with its outputs.
    (repo / "params.yaml").write_text(params)
    log = _run("dvc", "repro", "export", cwd=repo)
    assert "Stage 'params' is cached" in log or "Running stage 'params'" in log, log
    for name in ("simulate", "train", "export"):
        assert f"Stage '{name}' didn't change, skipping" in log, log
    assert {name: (repo / name).read_bytes() for name in OUTPUTS} == good
