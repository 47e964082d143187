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


def _env() -> dict[str, str]:
    """The commands' environment: the venv first, and MLflow's default store (the checkout's
    mlflow.db, where DVC_ROOT says), which is the file the test's own URI names."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_EXP_NAME")}
    return {**env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def _run(*command: str, cwd: Path) -> str:
    env = _env()
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


# Eight DVC runs (five experiments) on 2 shared cores: minutes, not the default 300 s.
@pytest.mark.clone  # the README's experiment block in a git copy: the slow tier
@pytest.mark.timeout(900)
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

    # The README's experiments, each in a copy (--temp): new versions, judged, never champion.
    _run("dvc", "exp", "run", "--temp", "export", "-S", "train.n_clusters=3", cwd=repo)
    _run("dvc", "exp", "run", "--temp", "export", "-S", "train.n_clusters=auto",
         "-S", "simulate.n_customers=2000", cwd=repo)  # fmt: skip
    client = mlflow.MlflowClient()
    for number, k in ((2, 3), (3, None)):
        tags = client.get_model_version(NAME, str(number)).tags
        assert tags["dvc.experiment"] and tags["gate.promoted"] == "false", tags
        assert tags["params.train.n_clusters"] == str(k or "auto")
        assert "k " in tags["gate.decision"] and "≠ champion's k 5" in tags["gate.decision"]
        assert tags["git.dirty"] == "true", "an experiment runs on uncommitted params"
    assert _champion_version() == 1
    # The workspace is as committed: the experiments ran in copies.
    assert _run("git", "diff", "params.yaml", cwd=repo) == ""
    assert _model_info(repo) == first
    # The experiments are there to compare, with their params, metrics and the gate's verdict
    # with both scores (metrics/export.json) beside them.
    shown = _run("dvc", "exp", "show", "--no-pager", "--json", cwd=repo)
    assert '"n_clusters": 3' in shown and '"n_clusters": "auto"' in shown
    assert shown.count('"silhouette"') >= 3
    table = _run("dvc", "exp", "show", "--no-pager", "--csv", cwd=repo)
    header = table.splitlines()[0].split(",")
    for column in (
        "promoted", "passed", "decision", "candidate_silhouette", "champion_silhouette", "ari",
    ):  # fmt: skip
        assert column in header, header
    assert client.get_model_version(NAME, "2").tags["gate.champion_silhouette"] in table
    # A failed experiment (refused by the `params` stage) leaves params.yaml clean too.
    log = _fails("dvc", "exp", "run", "--temp", "export", "-S", "train.n_clusters=1", cwd=repo)
    assert "train.n_clusters: must be an integer ≥ 2 or 'auto' (got 1)" in log, log
    assert _run("git", "diff", "params.yaml", cwd=repo) == ""
    # ... and the committed params' model is still the champion after the README's revert.
    _run("git", "checkout", "params.yaml", cwd=repo)
    _run("dvc", "repro", "export", cwd=repo)
    assert _champion_version() == 1 and _model_info(repo)["version"] == 1

    # An experiment the gate passes (same k, more customers) reaches production only by decision:
    # applied, committed, and the committed pipeline's export re-deciding.
    _run("dvc", "exp", "run", "--temp", "-n", "more", "export", "-S", "simulate.n_customers=400",
         cwd=repo)  # fmt: skip
    more = client.get_model_version(NAME, "4").tags
    assert (more["dvc.experiment"], more["gate.passed"], more["gate.promoted"]) == (
        "more",
        "true",
        "false",
    )
    assert _champion_version() == 1
    _run("dvc", "exp", "apply", "more", cwd=repo)
    _run("git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "more",
         cwd=repo)  # fmt: skip
    assert "up to date" in _run("dvc", "repro", "export", cwd=repo).lower()  # DVC: nothing new
    _run("dvc", "repro", "-f", "-s", "export", cwd=repo)
    applied = _model_info(repo)
    assert (applied["version"], applied["promoted"], applied["gate"]["experiment"]) == (
        4,
        True,
        None,
    )
    assert _champion_version() == 4


OUTPUTS = [
    "data/customers.csv",
    "models/train_run.json",
    "models/model_info.json",
    "metrics/train.json",
    "metrics/export.json",
    "plots/k_sweep.csv",
]


def _fails(*command: str, cwd: Path) -> str:
    env = _env()
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
