"""The spark engine: KMeans on Spark MLlib, returned as the scikit-learn KMeans the app loads.

Spark fits the centers; a scikit-learn KMeans carrying them assigns the same clusters (nearest
center), so the registry, the app, batch scoring and the gate stay as they are, and the metrics
are computed by the same code as the sklearn engine's.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from custseg.config import SparkParams, TrainParams
from custseg.errors import ConfigError, first_line, require_extra
from custseg.features import FEATURES
from custseg.pipeline.segments import check_fits

if TYPE_CHECKING:
    from pyspark.ml.clustering import KMeansModel
    from pyspark.sql import DataFrame, SparkSession

LOOPBACK = "127.0.0.1"
IPV4 = "-Djava.net.preferIPv4Stack=true"
VECTOR = "features"
# scikit-learn's init names as Spark's (k-means|| is the parallel k-means++).
INIT_MODES = {"k-means++": "k-means||", "random": "random"}
# s: how long a master that is not local gets for its first executor to register, and the
# one-row test job to finish. A cluster with room starts one in seconds; YARN and Kubernetes
# start containers first. Not in params.yaml: it changes no result, and a new train param
# would make DVC re-run the train stage.
START_TIMEOUT = 120.0
EXECUTOR_POLL = 0.5  # s


def spark_conf(params: SparkParams) -> dict[str, str]:
    """Spark settings: loopback only and no UI unless `conf` says otherwise (a remote cluster
    needs a driver host its executors can reach), driver memory, then the user's extras."""
    conf = {
        # Without these the driver binds the public interface and asks reverse DNS for its name.
        "spark.driver.bindAddress": LOOPBACK,
        "spark.driver.host": LOOPBACK,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Java's dual-stack sockets reach 127.0.0.1 as ::ffff:127.0.0.1; IPv4 keeps it plain.
        "spark.driver.extraJavaOptions": IPV4,
        "spark.executor.extraJavaOptions": IPV4,
        "spark.driver.memory": params.driver_memory,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    conf.update({key: str(value).lower() if isinstance(value, bool) else str(value)
                 for key, value in params.conf.items()})  # fmt: skip
    return conf


def runs_in_driver(master: str) -> bool:
    """local, local[N], local[*], local[N,F]: the driver is its own executor (local-cluster is
    not: it starts executor processes like a real cluster)."""
    return master == "local" or master.startswith("local[")


def _executors(context: Any) -> int:
    """Executors registered with the driver (its JVM SparkContext): its block managers, less
    the driver's own."""
    return context.getExecutorMemoryStatus().size() - 1


def _wait_for_executor(spark: SparkSession, master: str, timeout: float) -> None:
    """Return once an executor has registered; ConfigError if none has within `timeout` s.

    A master that accepts the application but has no worker with room for an executor (free
    cores, spark.executor.memory) never runs a task: a job would wait forever, saying nothing.
    """
    context = spark.sparkContext._jsc.sc()
    start = time.monotonic()
    while _executors(context) < 1:
        if context.isStopped():
            raise ConfigError(
                f"train.spark.master: Spark stopped the application on {master!r} before any "
                "executor registered (did the master refuse it?)"
            )
        if time.monotonic() - start >= timeout:
            raise ConfigError(
                f"train.spark.master: no executor registered with {master!r} within "
                f"{timeout:g} s (does the cluster have a worker with free cores and memory for "
                "spark.executor.cores and spark.executor.memory?)"
            )
        time.sleep(EXECUTOR_POLL)


def _proof_job(spark: SparkSession, master: str, timeout: float) -> None:
    """One one-row job, cancelled if it has not finished within `timeout` s (with dynamic
    allocation no executor exists before a job asks for one: this is then the only bound)."""
    context = spark.sparkContext
    tag = f"custseg-proof-{uuid.uuid4().hex}"
    finished, expired = threading.Event(), threading.Event()

    def cancel_when_late() -> None:
        if finished.wait(timeout):
            return
        expired.set()
        # Again until it ends: on a busy driver the job may not have been submitted yet, and a
        # cancel finds only jobs already running.
        while not finished.is_set():
            with suppress(Exception):
                context.cancelJobsWithTag(tag)
            finished.wait(EXECUTOR_POLL)

    context.addJobTag(tag)
    watchdog = threading.Thread(target=cancel_when_late, name="spark-proof-job", daemon=True)
    watchdog.start()
    try:
        spark.range(1).count()
    except Exception:
        if not expired.is_set():
            raise
        raise ConfigError(
            f"train.spark.master: a one-row test job on {master!r} did not finish within "
            f"{timeout:g} s (no executor with free cores and memory, or executors lost?)"
        ) from None
    finally:
        finished.set()
        watchdog.join()
        context.removeJobTag(tag)


def start_spark(
    params: SparkParams, app_name: str = "custseg-train", *, timeout: float = START_TIMEOUT
) -> SparkSession:
    """A Spark session on `params.master` that has run a job; ConfigError naming
    train.spark.master if none starts, no executor registers within `timeout` s (a master not
    local) or the one-row test job does not finish within `timeout` s. Stopped if it fails
    (unless it was already running in the process: getOrCreate hands that one back)."""
    require_extra("pyspark", "spark", "train.engine: spark")
    # The JVM reads it at start-up, before any conf: which address to bind and to call itself.
    os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    # pyspark warns on every pandas conversion that pandas 3 is newer than it has tested.
    warnings.filterwarnings("ignore", "PySpark does not yet fully support", FutureWarning)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(params.master).appName(app_name)
    for key, value in spark_conf(params).items():
        builder = builder.config(key, value)
    failed = f"train.spark.master: Spark did not start on {params.master!r}"
    ours = SparkSession.getActiveSession() is None
    try:
        spark = builder.getOrCreate()
    except Exception as error:
        raise ConfigError(f"{failed}: {first_line(error)}") from None
    try:
        spark.sparkContext.setLogLevel("ERROR")
        dynamic = spark.conf.get("spark.dynamicAllocation.enabled", "false") == "true"
        if not runs_in_driver(params.master) and not dynamic:
            _wait_for_executor(spark, params.master, timeout)
        # One job proves it runs before any tracking starts.
        _proof_job(spark, params.master, timeout)
    except BaseException as error:  # Ctrl-C while waiting too: no session left behind
        if ours:
            with suppress(Exception):  # the error being raised says more than a failed stop
                spark.stop()
        if isinstance(error, ConfigError) or not isinstance(error, Exception):
            raise
        raise ConfigError(f"{failed}: {first_line(error)}") from None
    return spark


@contextmanager
def spark_session(params: SparkParams) -> Iterator[SparkSession]:
    """A session on `params.master`, stopped on leaving if this started it (a session already
    running in the process on the same master, a notebook's or a test's, is used and kept)."""
    require_extra("pyspark", "spark", "train.engine: spark")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        # getOrCreate would hand back the running session whatever master was asked for.
        if active.sparkContext.master != params.master:
            raise ConfigError(
                f"train.spark.master: {params.master!r} asked, but this process already runs "
                f"Spark on {active.sparkContext.master!r}"
            )
        yield active
        return
    spark = start_spark(params)
    try:
        yield spark
    finally:
        spark.stop()


def spark_frame(spark: SparkSession, data: pd.DataFrame | Path) -> DataFrame:
    """The features as Spark's vector column, cached for the k sweep: from the driver's frame,
    or read by Spark directly from a Parquet file or folder."""
    from pyspark.ml.feature import VectorAssembler

    if isinstance(data, pd.DataFrame):
        frame = spark.createDataFrame(data[FEATURES].astype(float))
    else:
        # absolute: the JVM resolves a relative path against its own working directory
        frame = spark.read.parquet(str(Path(data).resolve())).select(FEATURES)
    vectors = VectorAssembler(inputCols=FEATURES, outputCol=VECTOR).transform(frame)
    return vectors.select(VECTOR).cache()


def kmeans_with_centers(centers: np.ndarray, X: pd.DataFrame, n_iter: int) -> KMeans:
    """A fitted scikit-learn KMeans whose centers are `centers` (labels and inertia on X).

    Fitted on the centers themselves with init=centers: one step leaves them where they are and
    sets everything scikit-learn's predict and skops need, whatever its version.
    """
    k = len(centers)
    model = KMeans(n_clusters=k, init=centers, n_init=1, max_iter=1)
    with warnings.catch_warnings():
        # duplicate centers (fewer distinct points than k) are Spark's answer, kept as given
        warnings.simplefilter("ignore")
        model.fit(pd.DataFrame(centers, columns=FEATURES))
    model.cluster_centers_ = np.asarray(centers, dtype=float).copy()
    model.labels_ = model.predict(X[FEATURES])
    model.inertia_ = float(-model.score(X[FEATURES]))
    model.n_iter_ = n_iter
    return model


class SparkKMeans:
    """Fits KMeans on Spark for each k of a sweep; `fit` has fit_segments' signature and returns
    a scikit-learn KMeans, while the Spark models stay in `models` (by k) for logging."""

    def __init__(self, spark: SparkSession, data: DataFrame, params: SparkParams) -> None:
        self.spark, self.data, self.params = spark, data, params
        self.models: dict[int, KMeansModel] = {}

    def fit_spark(self, k: int, train: TrainParams, seed: int) -> KMeansModel:
        """The lowest-cost of `spark.n_init` Spark fits (seeds seed, seed+1, ...)."""
        from pyspark.ml.clustering import KMeans as SparkKMeansEstimator

        best = None
        for attempt in range(self.params.n_init):
            estimator = SparkKMeansEstimator(
                k=k,
                seed=seed + attempt,
                maxIter=train.max_iter,
                tol=self.params.tol,
                initMode=INIT_MODES[train.init],
                featuresCol=VECTOR,
            )
            model = estimator.fit(self.data)
            if best is None or model.summary.trainingCost < best.summary.trainingCost:
                best = model
        assert best is not None
        return best

    def fit(self, X: pd.DataFrame, k: int, train: TrainParams, seed: int) -> KMeans:
        check_fits(len(X), k)
        model = self.fit_spark(k, train, seed)
        self.models[k] = model
        centers = np.array([np.asarray(c, dtype=float) for c in model.clusterCenters()])
        return kmeans_with_centers(centers, X, model.summary.numIter)


def spark_run_params(params: SparkParams, spark: SparkSession) -> dict[str, Any]:
    """What an MLflow run records about the spark engine."""
    return {
        "spark_master": params.master,
        "spark_version": spark.version,
        "spark_tol": params.tol,
        "spark_n_init": params.n_init,
    }


def save_spark_model(model: KMeansModel, path: Path) -> Path:
    """Spark's own model format (metadata + Parquet centers), for logging as an artifact."""
    model.write().overwrite().save(str(path))
    return path
