"""Team mode for real: PostgreSQL started with Debian's initdb/pg_ctl, `mlflow server` on it with
served artifacts, the pipeline and two concurrent experiments exporting to it, and a DVC remote
shared by two clones. The server is started once for this module and stopped by PID after."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from custseg.net import free_port
from custseg.pipeline.registry import GATE_LOCK_SUFFIX
from custseg.team import (
    TEAM_DIR_ENV,
    TEAM_PASSWORD_ENV,
    Team,
    mlflow_pid,
    pg_running,
    team_down,
    team_up,
)
from custseg.testing.sandbox import copy_project
from tests.fixtures.project import ROOT, write_params


@pytest.fixture(scope="module")
def team() -> Iterator[Team]:
    # Not under pytest's 0700 temp folders: PostgreSQL runs as its own user when we are root.
    root = Path(tempfile.mkdtemp(prefix="custseg-team-"))
    root.chmod(0o755)
    team = Team(root / "team", free_port(), free_port())
    with mock.patch.dict(os.environ, {TEAM_PASSWORD_ENV: secrets.token_urlsafe(16)}):
        try:
            team_up(team)
            yield team
        finally:
            team_down(team)
    assert not pg_running(team) and mlflow_pid(team) is None
    shutil.rmtree(root, ignore_errors=True)


def run(*command: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env or client_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def client_env(url: str | None = None) -> dict[str, str]:
    """A client's environment: the team's URL as its only MLflow setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env.pop(TEAM_PASSWORD_ENV, None)  # a client never needs the database password
    if url:
        env["MLFLOW_TRACKING_URI"] = url
    return env


def git_sandbox(dest: Path, model_name: str | None = None) -> Path:
    """A git repository holding a copy of the project (no MLflow store of its own)."""
    copy_project(ROOT, dest)
    if model_name:
        write_params(dest, export={"model_name": model_name})
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init"],
    ):
        run(*command, cwd=dest)
    return dest


def registry(team: Team):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=team.url, registry_uri=team.url)


def test_status_and_a_missing_password(team: Team, tmp_path: Path) -> None:
    env = {**client_env(), TEAM_DIR_ENV: str(team.root)}
    ports = ["--pg-port", str(team.pg_port), "--port", str(team.mlflow_port)]
    status = run(sys.executable, "-m", "custseg", "team", "status", *ports, cwd=tmp_path, env=env)
    assert f"clients: export MLFLOW_TRACKING_URI={team.url}" in status
    refused = subprocess.run(
        [sys.executable, "-m", "custseg", "team", "up", *ports],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: {TEAM_PASSWORD_ENV} is not set")
    secret = os.environ.get(TEAM_PASSWORD_ENV)
    assert secret is None or secret not in (team.root / "mlflow.log").read_text()


@pytest.mark.clone  # a git clone exporting to the team server: the slow tier
def test_the_pipeline_exports_to_the_team_and_another_process_loads_the_champion(
    team: Team, tmp_path: Path, outbound_check: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "team-segments"
    repo = git_sandbox(tmp_path / "alice", name)
    log = run(
        str(outbound_check), "--", "dvc", "repro", "export", cwd=repo, env=client_env(team.url)
    )
    assert "0 non-loopback destination(s)" in log, log
    info = json.loads((repo / "models/model_info.json").read_text())
    assert info["aliases"] == ["candidate", "champion"] and info["version"] == 1
    assert not (repo / "mlruns").exists()  # artifacts went to the server, not the clone

    # Someone else's process, elsewhere: only the URL.
    elsewhere = tmp_path / "bob"
    elsewhere.mkdir()
    loaded = run(
        sys.executable, "-c",
        "import mlflow, pandas as pd; "
        f"m = mlflow.sklearn.load_model('models:/{name}@champion'); "
        "print('predicted', m.predict(pd.DataFrame({'annual_income': [20.0, 130.0], "
        "'spending_score': [90.0, 10.0]})).tolist())",
        cwd=elsewhere, env=client_env(team.url),
    )  # fmt: skip
    (predicted,) = [line for line in loaded.splitlines() if line.startswith("predicted ")]
    assert len(json.loads(predicted.removeprefix("predicted "))) == 2, loaded
    stored = list(team.artifacts.rglob("MLmodel"))
    assert stored, f"no model stored under {team.artifacts}"

    # The app, unchanged: it segments a customer with the team's champion.
    from streamlit.testing.v1 import AppTest

    from custseg.testing.browser import APP_ENV_KEYS
    from custseg.testing.sandbox import MLFLOW_ENV

    for key in (*MLFLOW_ENV, *APP_ENV_KEYS):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.url)
    monkeypatch.setenv("CUSTSEG_MODEL_NAME", name)
    monkeypatch.chdir(repo)
    app = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=120).run()
    app.slider(key="income").set_value(20)
    app.slider(key="spending").set_value(90)
    app.button(key="predict").click().run()
    assert not app.exception, app.exception
    first = json.loads(predicted.removeprefix("predicted "))[0]  # the other process's answer
    assert app.metric[0].value == f"Cluster {first}"

    # The eval stage too: the committed conversations, re-scored from the committed judge
    # replies (no model), tracked on the server with their traces.
    for committed in ("data/conversations.jsonl", "data/judge_cache.jsonl"):
        shutil.copy2(ROOT / committed, repo / committed)
    env = {**client_env(team.url), "CUSTSEG_JUDGE_CACHE": str(tmp_path / "judge-cache")}
    out = run(sys.executable, "stages/evaluate.py", "--no-progress", cwd=repo, env=env)
    assert "judge calls made: 0" in out, out
    import mlflow

    experiment = registry(team).get_experiment_by_name("agent-evaluation")
    traces = mlflow.MlflowClient(tracking_uri=team.url).search_traces(
        locations=[experiment.experiment_id], include_spans=False
    )
    conversations = (ROOT / "data/conversations.jsonl").read_text().splitlines()
    assert len(traces) == len(conversations)


@pytest.mark.clone  # two git clones' experiments at once: the slow tier
def test_two_experiments_at_once_end_with_one_champion_and_every_decision(
    team: Team, tmp_path: Path
) -> None:
    name = "team-race"
    repos = [git_sandbox(tmp_path / who, name) for who in ("carol", "dave")]
    env = client_env(team.url)
    # Forced: an experiment takes @champion only when asked, and both ask, so the second
    # decision shows whether it saw the first's champion (serial) or not (a lost update).
    runs = [
        subprocess.Popen(
            ["dvc", "exp", "run", "export", "-S", f"base.seed={seed}", "-S", "export.force=true"],
            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for seed, repo in zip((11, 12), repos, strict=True)
    ]  # fmt: skip
    for process in runs:
        out, _ = process.communicate(timeout=900)
        assert process.returncode == 0, out

    client = registry(team)
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    holders = [
        v for v in versions if "champion" in client.get_model_version(name, v.version).aliases
    ]
    assert len(holders) == 1
    gate = {}
    for v in versions:
        tags = client.get_model_version(name, v.version).tags
        assert tags.get("gate.decision") and "gate.promoted" in tags, tags
        seen = tags.get("gate.champion_version")
        gate[v.version] = (
            tags["gate.promoted"] == "true",
            None if seen in (None, "null") else seen,
        )
    # Serial: one decided first with no champion; the other saw what the first left.
    first, second = sorted(gate, key=lambda v: gate[v][1] is not None)
    assert gate[first][1] is None, gate
    assert gate[second][1] == (first if gate[first][0] else None), gate
    expected = second if gate[second][0] else first
    assert holders[0].version == expected, gate
    assert not client.search_registered_models(f"name = '{name}{GATE_LOCK_SUFFIX}'")


def test_dvc_push_from_one_clone_pull_into_another(tmp_path: Path) -> None:
    """The committed default remote: a folder beside the checkout, shared by sibling clones."""
    alice = git_sandbox(tmp_path / "alice")
    run("dvc", "repro", "simulate", cwd=alice)
    run("git", "add", "dvc.lock", cwd=alice)
    run("git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "data", cwd=alice)
    run("dvc", "push", "--with-deps", "simulate", cwd=alice)
    assert (tmp_path / "custseg-dvc-remote").is_dir()

    run("git", "clone", "-q", str(alice), str(tmp_path / "bob"), cwd=tmp_path)
    bob = tmp_path / "bob"
    assert not (bob / "data/customers.csv").exists()
    run("dvc", "pull", "--with-deps", "simulate", cwd=bob)
    assert (bob / "data/customers.csv").read_bytes() == (alice / "data/customers.csv").read_bytes()
    assert "up to date" in run("dvc", "status", "simulate", cwd=bob)


def _make(target: str, clone: Path) -> str:
    """This checkout's `make <target>` in `clone`, with this checkout's venv (already installed:
    `-o install` keeps make from rebuilding it)."""
    shutil.copy2(ROOT / "Makefile", clone / "Makefile")
    if not (clone / ".venv").exists():
        (clone / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in client_env().items() if not k.startswith("MAKE")}
    return run("make", "--no-print-directory", "-o", "install", target, cwd=clone, env=env)


@pytest.mark.clone  # two clones, a push and a pull: the slow tier
@pytest.mark.timeout(900)  # two trainings, a push, a pull and two `make` runs
def test_a_clone_that_only_pulled_gets_its_champion_back(tmp_path: Path) -> None:
    """After `dvc pull` every output is up to date but the clone has no registry: `make champion`
    (and `make run`, which runs the same check first) re-registers what model_info.json names."""
    import mlflow

    alice = git_sandbox(tmp_path / "alice")
    run("dvc", "repro", "export", cwd=alice)
    run("git", "add", "-A", cwd=alice)
    run("git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "model", cwd=alice)
    run("dvc", "push", cwd=alice)
    bob = tmp_path / "bob"
    run("git", "clone", "-q", str(alice), str(bob), cwd=tmp_path)
    run("dvc", "pull", cwd=bob)
    assert "up to date" in run("dvc", "status", "export", cwd=bob)
    assert not (bob / "mlflow.db").exists()

    log = _make("champion", bob)
    assert "lacks customer-segments v1" in log and "re-registered customer-segments v1" in log
    store = f"sqlite:///{bob / 'mlflow.db'}"
    # The registry named too: else MLflow's process-wide registry URI, which an earlier test of
    # this module set to its team server, is asked (seen in CI: another registry's champion).
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    champion = client.get_model_version_by_alias("customer-segments", "champion")
    info = json.loads((bob / "models/model_info.json").read_text())
    assert (int(champion.version), champion.run_id) == (info["version"], info["run_id"])
    # The model loads from the clone's own store, and a second run finds it there.
    loaded = subprocess.run(
        [sys.executable, "-c",
         "import mlflow; m = mlflow.sklearn.load_model('models:/customer-segments@champion'); "
         "print(len(m.cluster_centers_))"],
        cwd=bob, env=client_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert loaded.stdout.strip() == "5", loaded.stderr
    again = _make("champion", bob)
    assert "holds customer-segments v1" in again and "re-registered" not in again


def _registry_of(clone: Path):
    import mlflow

    store = f"sqlite:///{clone / 'mlflow.db'}"
    # The registry named too (MLflow's process-wide registry URI may be a team server's).
    return mlflow.MlflowClient(tracking_uri=store, registry_uri=store)


def _segments(clone: Path, uri: str) -> dict:
    """k and the segments `uri` gives a fixed grid of customers, loaded in the clone's own
    process."""
    code = (
        "import json, mlflow, pandas as pd; "
        f"m = mlflow.sklearn.load_model('{uri}'); "
        "X = pd.DataFrame({'annual_income': [15., 40, 60, 80, 120, 140], "
        "'spending_score': [1., 30, 50, 70, 90, 100]}); "
        "print(json.dumps({'k': len(m.cluster_centers_), 'segments': m.predict(X).tolist()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=clone, env=client_env(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.clone  # two clones, an experiment, a push and a pull: the slow tier
@pytest.mark.timeout(1200)
def test_a_champion_promoted_by_hand_is_the_champion_of_a_pulled_clone(tmp_path: Path) -> None:
    """`custseg promote VERSION` of an experiment's model, committed and pushed: a clone that
    only pulls, then `make champion` (the check `make run` runs first), serves that model, not
    the committed params' retrained one; and `dvc repro` there keeps it."""
    alice = git_sandbox(tmp_path / "alice")
    commit = ("git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm")
    run("dvc", "repro", "export", cwd=alice)  # v1 @champion, k=5
    run("git", "add", "-A", cwd=alice)
    run(*commit, "model", cwd=alice)
    # v2, k=3: registered, held (a new k, and an experiment)
    run("dvc", "exp", "run", "--temp", "-S", "train.n_clusters=3", "export", cwd=alice)
    champion = _registry_of(alice).get_model_version_by_alias("customer-segments", "champion")
    assert str(champion.version) == "1"
    promoted = run(sys.executable, "-m", "custseg", "promote", "2", cwd=alice)
    assert "customer-segments v2 is now @champion (was v1)" in promoted
    assert "tracked by models/champion.dvc" in promoted
    run("git", "add", "models/champion.dvc", "models/.gitignore", cwd=alice)
    run(*commit, "promote v2", cwd=alice)
    run("dvc", "push", cwd=alice)
    v2 = _registry_of(alice).get_model_version("customer-segments", "2")
    expected = _segments(alice, "models:/customer-segments/2")

    bob = tmp_path / "bob"
    run("git", "clone", "-q", str(alice), str(bob), cwd=tmp_path)
    run("dvc", "pull", cwd=bob)
    assert (bob / "models/champion/promotion.json").is_file()
    log = _make("champion", bob)
    assert "re-registered customer-segments v1" in log, log
    assert f"re-logged customer-segments v2 (run {v2.run_id[:8]}, promoted by hand)" in log, log
    client = _registry_of(bob)
    champion = client.get_model_version_by_alias("customer-segments", "champion")
    assert champion.tags["restored_from_run"] == v2.run_id
    # k=3, the promoted experiment's model, not the committed params' k=5
    assert expected["k"] == 3 and _segments(bob, "models:/customer-segments@champion") == expected
    # Nothing changes on a second run, nor with `dvc repro` on the committed params.
    again = _make("champion", bob)
    assert "promoted by hand) as v" in again and "re-logged" not in again
    run("dvc", "repro", "export", cwd=bob)
    after = client.get_model_version_by_alias("customer-segments", "champion")
    assert after.version == champion.version


def test_status_exit_codes_are_the_documented_ones(tmp_path: Path) -> None:
    """docs/scale-out-and-team.md: `custseg team status` exits 3 when the server is not running;
    `make team-status` says so and exits 0 (make reports any failing recipe as 2, never 3)."""
    env = {
        **os.environ,
        "CUSTSEG_TEAM_DIR": str(tmp_path / "team"),
        "TEAM_PORT": str(free_port()),
        "TEAM_PG_PORT": str(free_port()),
    }
    make = subprocess.run(
        ["make", "--no-print-directory", "team-status"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert make.returncode == 0 and "stopped" in make.stdout, make
    direct = subprocess.run(
        [str(Path(sys.executable).parent / "custseg"), "team", "status",
         "--port", env["TEAM_PORT"], "--pg-port", env["TEAM_PG_PORT"]],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert direct.returncode == 3 and "stopped" in direct.stdout, direct
