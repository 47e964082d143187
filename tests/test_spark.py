"""The spark engine: Spark MLlib KMeans on a local master (one session for the module), the same
segments and metrics as scikit-learn, the registered model still a scikit-learn KMeans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from custseg.config import SimulateParams, SparkParams, TrainParams, parse_params
from custseg.errors import ConfigError
from custseg.features import FEATURES
from custseg.pipeline.data import simulate_customers
from custseg.pipeline.segments import fit_segments, sweep_k
from custseg.pipeline.spark_engine import SparkKMeans, spark_conf, spark_frame
from tests.fixtures.project import stage, write_params
from tests.fixtures.spark import LOCAL_MASTER as MASTER
from tests.fixtures.spark import StandaloneCluster

pytestmark = pytest.mark.spark

simulate, train, export = (stage("simulate"), stage("train"), stage("export"))


@pytest.fixture(scope="module")
def blobs() -> pd.DataFrame:
    """Four well-separated groups of customers."""
    points, _ = make_blobs(
        n_samples=600,
        centers=[[20, 20], [20, 80], [110, 20], [110, 80]],
        cluster_std=4,
        random_state=0,
    )
    return pd.DataFrame(points, columns=FEATURES)


def spark_engine(spark, X: pd.DataFrame) -> SparkKMeans:
    return SparkKMeans(spark, spark_frame(spark, X), SparkParams(master=MASTER))


def test_spark_centers_in_a_sklearn_kmeans_predict_sparks_clusters(spark) -> None:
    X = simulate_customers(SimulateParams(), seed=42)[FEATURES].astype(float)
    engine = spark_engine(spark, X)
    model = engine.fit(X, 5, TrainParams(), seed=42)
    assert isinstance(model, KMeans) and model.n_clusters == 5
    spark_labels = [
        row.prediction
        for row in engine.models[5].transform(engine.data).select("prediction").collect()
    ]
    np.testing.assert_array_equal(model.predict(X), spark_labels)
    np.testing.assert_array_equal(model.labels_, spark_labels)
    # Spark's training cost is the same objective as scikit-learn's inertia.
    assert model.inertia_ == pytest.approx(engine.models[5].summary.trainingCost, rel=1e-9)
    assert model.n_iter_ == engine.models[5].summary.numIter >= 1


def test_both_engines_find_the_same_segments_and_score_them_alike(
    spark, blobs: pd.DataFrame
) -> None:
    params = TrainParams(k_range={"min": 3, "max": 5})
    sk_sweep, sk_models = sweep_k(blobs, params, seed=0)
    sp_sweep, sp_models = sweep_k(blobs, params, seed=0, fit=spark_engine(spark, blobs).fit)
    assert list(sp_sweep.columns) == list(sk_sweep.columns)
    assert adjusted_rand_score(sk_models[4].labels_, sp_models[4].labels_) >= 0.99
    # Same metric code on the same seeded silhouette sample: the k=4 numbers agree.
    sk4, sp4 = sk_sweep.set_index("k").loc[4], sp_sweep.set_index("k").loc[4]
    for metric in ("inertia", "silhouette", "davies_bouldin", "calinski_harabasz"):
        assert sp4[metric] == pytest.approx(sk4[metric], rel=1e-3), metric


def test_a_bad_master_url_is_one_line_naming_spark_master() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_params({"train": {"engine": "spark", "spark": {"master": "spark:/nowhere"}}})
    message = str(caught.value)
    assert "\n" not in message and "train.spark.master" in message and "nowhere" in message


def test_extra_conf_takes_only_spark_settings() -> None:
    for conf in ({"master": "local"}, {"spark.master": "local"}):
        with pytest.raises(ConfigError, match=r"^params.yaml: train.spark.conf: "):
            parse_params({"train": {"spark": {"conf": conf}}})
    params = parse_params({"train": {"spark": {"conf": {"spark.sql.shuffle.partitions": 4}}}})
    assert spark_conf(params.train.spark)["spark.sql.shuffle.partitions"] == "4"
    assert spark_conf(params.train.spark)["spark.driver.bindAddress"] == "127.0.0.1"


def test_the_stage_refuses_a_bad_master_before_writing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_params(project, train={"engine": "spark", "spark": {"master": "local[two]"}})
    assert train.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "train.spark.master" in err
    assert not (project / "metrics/train.json").exists()


def test_another_master_than_the_running_session_is_refused(spark, project: Path) -> None:
    write_params(project, train={"engine": "spark", "spark": {"master": "local[1]"}})
    assert simulate.main([]) == 0
    assert train.main([]) == 2


def test_train_stage_on_spark_registers_a_sklearn_model_and_logs_sparks(
    spark, project: Path
) -> None:
    # Parquet data: Spark reads data/customers.parquet itself.
    write_params(
        project,
        simulate={"format": "parquet"},
        train={"engine": "spark", "k_range": {"min": 2, "max": 4}, "n_clusters": 4,
               "spark": {"master": MASTER}},
    )  # fmt: skip
    assert simulate.main([]) == 0
    assert train.main([]) == 0
    run_info = json.loads((project / "models/train_run.json").read_text())
    assert run_info["lineage"]["engine"] == "spark"
    assert run_info["lineage"]["data"]["path"] == "data/customers.parquet"
    client = mlflow.MlflowClient()
    run = client.get_run(run_info["run_id"])
    assert run.data.params["engine"] == "spark"
    assert run.data.params["spark_master"] == MASTER
    assert run.data.metrics["n_iter"] >= 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"spark-model", "segment_profiles.json", "k_sweep.html"} <= artifacts
    spark_files = {a.path for a in client.list_artifacts(run.info.run_id, "spark-model")}
    assert {"spark-model/metadata", "spark-model/data"} <= spark_files
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert sorted(int(c.data.params["k"]) for c in children) == [2, 3, 4]

    model = mlflow.sklearn.load_model(run_info["model_uri"])
    X = pd.read_parquet(project / "data/customers.parquet")[FEATURES].astype(float)
    assert isinstance(model, KMeans) and model.n_clusters == 4
    from pyspark.ml.clustering import KMeansModel

    spark_model = KMeansModel.load(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="spark-model")
    )
    np.testing.assert_allclose(
        model.cluster_centers_, np.array([np.asarray(c) for c in spark_model.clusterCenters()])
    )
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["k"] == 4 and metrics["inertia"] == pytest.approx(-model.score(X), rel=1e-9)
    # The gate takes it like any scikit-learn model: registered, and champion as the first.
    assert export.main([]) == 0
    info = json.loads((project / "models/model_info.json").read_text())
    assert info["version"] == 1 and info["promoted"] is True


def test_the_sklearn_engine_is_unchanged_by_the_spark_params() -> None:
    X = simulate_customers(SimulateParams(), seed=42)[FEATURES].astype(float)
    plain = fit_segments(X, 5, TrainParams(), seed=42)
    with_spark = fit_segments(X, 5, TrainParams(spark={"master": "local[1]", "tol": 0.5}), 42)
    np.testing.assert_array_equal(plain.cluster_centers_, with_spark.cluster_centers_)


def _train_under_outbound_check(project: Path, outbound_check: Path, master: str) -> str:
    """The train stage in its own process on `master`, every non-loopback connection listed."""
    write_params(
        project,
        train={"engine": "spark", "n_clusters": 3, "k_range": {"min": 2, "max": 3},
               "spark": {"master": master, "driver_memory": "512m"}},
    )  # fmt: skip
    assert simulate.main([]) == 0
    done = subprocess.run(
        [str(outbound_check), "--", sys.executable, "stages/train.py"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "0 non-loopback destination(s)" in done.stderr, done.stderr[-3000:]
    run_info = json.loads((project / "models/train_run.json").read_text())
    run = mlflow.MlflowClient().get_run(run_info["run_id"])
    assert run.data.params["engine"] == "spark"
    return run.data.params["spark_master"]


def test_spark_local_binds_loopback_and_phones_nowhere(project: Path, outbound_check: Path) -> None:
    assert _train_under_outbound_check(project, outbound_check, MASTER) == MASTER


def test_train_stage_on_a_standalone_cluster(
    project: Path, outbound_check: Path, spark_cluster: StandaloneCluster
) -> None:
    master = spark_cluster.master_url
    assert _train_under_outbound_check(project, outbound_check, master) == master
    # The work ran on the cluster: the worker started an executor for the app.
    worker_log = (spark_cluster.logs / "worker.log").read_text(errors="replace")
    assert "Asked to launch executor" in worker_log, worker_log[-2000:]


# In its own process (a SparkContext is one per process; the session's is local): start_spark on
# `master` with a `timeout` s deadline, plain, then with dynamic allocation (no executor is asked
# for before a job: the bounded test job is what stops it). Plain first: a later session in the
# same JVM inherits the first one's settings. Each outcome is a JSON line.
START_WITHOUT_EXECUTORS = """
import json, sys, time
from custseg.config import SparkParams
from custseg.errors import ConfigError
from custseg.pipeline.spark_engine import start_spark

master, timeout = sys.argv[1], float(sys.argv[2])
dynamic = {"spark.dynamicAllocation.enabled": True,
           "spark.dynamicAllocation.shuffleTracking.enabled": True}
for conf in ({}, dynamic):
    params = SparkParams(master=master, driver_memory="512m", conf=conf)
    began = time.monotonic()
    try:
        start_spark(params, timeout=timeout)
        outcome = None
    except ConfigError as error:
        outcome = str(error)
    print(json.dumps({"error": outcome, "seconds": time.monotonic() - began}), flush=True)
"""


def test_a_master_without_a_worker_fails_in_one_line_within_the_deadline(
    spark_master_only: StandaloneCluster,
) -> None:
    url, timeout = spark_master_only.master_url, 5
    done = subprocess.run(
        [sys.executable, "-c", START_WITHOUT_EXECUTORS, url, str(timeout)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=300,  # a hang fails here, not never
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    plain, dynamic = (json.loads(line) for line in done.stdout.splitlines())
    for outcome in (plain, dynamic):
        message = outcome["error"]
        assert message is not None, done.stderr[-3000:]
        assert "\n" not in message and message.startswith("train.spark.master: ")
        assert repr(url) in message and f"within {timeout} s" in message
    assert "no executor registered" in plain["error"]
    assert "did not finish" in dynamic["error"]
    # The driver reached the master (this is the no-worker case, not an unreachable master).
    master_log = (spark_master_only.logs / "master.log").read_text(errors="replace")
    assert master_log.count("Registering app") == 2, master_log[-2000:]
    # The second call runs in a JVM already started: the deadline holds (a few seconds over for
    # the session start and stop). The first also starts the JVM: 1-2 min on a busy machine.
    assert dynamic["seconds"] < timeout + 30, dynamic
