"""Training: reproducible fits, k chosen by silhouette, readable segments, real MLflow tracking."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs

from custseg.config import SimulateParams, TrainParams
from custseg.features import FEATURES
from custseg.pipeline.data import simulate_customers
from custseg.pipeline.segments import choose_k, fit_segments, profile_segments, sweep_k
from tests.fixtures.project import stage, write_params

simulate, train = (stage("simulate"), stage("train"))


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return simulate_customers(SimulateParams(), seed=42)[FEATURES].astype(float)


def test_same_seed_same_model(customers: pd.DataFrame) -> None:
    first = fit_segments(customers, 5, TrainParams(), seed=42)
    second = fit_segments(customers, 5, TrainParams(), seed=42)
    np.testing.assert_array_equal(first.labels_, second.labels_)
    np.testing.assert_array_equal(first.cluster_centers_, second.cluster_centers_)
    assert first.inertia_ == second.inertia_


def test_auto_picks_the_obvious_number_of_clusters() -> None:
    points, _ = make_blobs(
        n_samples=400,
        centers=[[20, 20], [20, 80], [110, 20], [110, 80]],
        cluster_std=4,
        random_state=0,
    )
    X = pd.DataFrame(points, columns=FEATURES)
    sweep, models = sweep_k(X, TrainParams(k_range={"min": 2, "max": 8}), seed=0)
    assert list(sweep["k"]) == list(range(2, 9))
    assert choose_k(sweep) == 4
    assert set(models) == set(range(2, 9))


def test_segments_have_readable_names_that_match_their_centers(customers: pd.DataFrame) -> None:
    model = fit_segments(customers, 5, TrainParams(), seed=42)
    profile = profile_segments(customers, model)
    assert profile["size"].sum() == len(customers)
    assert profile["share"].sum() == pytest.approx(1, abs=1e-3)
    # Behavioural: a rich big spender lands in high/high, a frugal low earner in low/low.
    for income, spending, name in [
        (130, 95, "high income · high spending"),
        (20, 5, "low income · low spending"),
    ]:
        segment = int(model.predict(pd.DataFrame([[income, spending]], columns=FEATURES))[0])
        assert profile.loc[segment, "name"] == name


def test_train_stage_tracks_everything_in_mlflow(project: Path) -> None:
    write_params(project, train={"k_range": {"min": 2, "max": 6}})
    assert simulate.main([]) == 0
    assert train.main([]) == 0
    metrics = json.loads((project / "metrics/train.json").read_text())
    run_info = json.loads((project / "models/train_run.json").read_text())
    sweep = pd.read_csv(project / "plots/k_sweep.csv")
    assert metrics["k"] == 5 and list(sweep["k"]) == [2, 3, 4, 5, 6]

    client = mlflow.MlflowClient()
    run = client.get_run(run_info["run_id"])
    assert run.data.params["k"] == "5" and run.data.params["init"] == "k-means++"
    for name in ("inertia", "silhouette", "davies_bouldin", "calinski_harabasz"):
        assert run.data.metrics[name] == pytest.approx(metrics[name])
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert sorted(int(c.data.params["k"]) for c in children) == [2, 3, 4, 5, 6]
    assert all(set(c.data.metrics) >= {"inertia", "silhouette"} for c in children)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"segment_profiles.json", "k_sweep.html"} <= artifacts
    profiles = mlflow.load_table("segment_profiles.json", run_ids=[run.info.run_id])
    assert len(profiles) == 5 and "name" in profiles

    model = mlflow.sklearn.load_model(run_info["model_uri"])
    X = pd.read_csv(project / "data/customers.csv")[FEATURES]
    assert model.predict(X.astype(float)).max() == 4


def test_auto_in_the_stage_uses_the_sweep_best(project: Path) -> None:
    write_params(project, train={"n_clusters": "auto", "k_range": {"min": 2, "max": 5}})
    assert simulate.main([]) == 0
    assert train.main([]) == 0
    sweep = pd.read_csv(project / "plots/k_sweep.csv")
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["k"] == int(sweep.loc[sweep["silhouette"].idxmax(), "k"])
    assert metrics["silhouette"] == pytest.approx(sweep["silhouette"].max())
