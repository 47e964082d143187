"""Training: the k sweep, the chosen KMeans and everything MLflow tracks about it (the run, its
child runs per k, the model, the segment profiles, the sweep chart)."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from custseg.config import Params, TrainParams, load_params
from custseg.errors import ConfigError
from custseg.features import FEATURES
from custseg.io import write_atomic, write_json_atomic
from custseg.paths import K_SWEEP, TRAIN_METRICS, TRAIN_RUN, customers_path
from custseg.pipeline.charts import k_sweep_figure
from custseg.pipeline.data import read_training_data
from custseg.pipeline.lineage import flat_tags, lineage
from custseg.pipeline.segments import (
    Fit,
    choose_k,
    fit_segments,
    profile_segments,
    score_segments,
    sweep_k,
)
from custseg.pipeline.spark_engine import (
    SparkKMeans,
    save_spark_model,
    spark_frame,
    spark_run_params,
    spark_session,
)
from custseg.pipeline.training_data import (
    ARTIFACT_DIR,
    MAX_SAMPLE_ROWS,
    map_sample,
    training_ranges,
    training_summary,
    write_training_data,
)
from custseg.tracking import configure_mlflow


def _check_size(n_rows: int, params: TrainParams, data: Path) -> None:
    """Fail before tracking anything if the data cannot hold the requested clusters."""
    k = params.k_range.min if params.n_clusters == "auto" else params.n_clusters
    key = "train.k_range.min" if params.n_clusters == "auto" else "train.n_clusters"
    if n_rows <= k:
        raise ConfigError(f"{key}: {k} clusters need more than {k} customers, {data} has {n_rows}")


def _pip_requirements() -> list[str]:
    # Explicit requirements: MLflow's inference of them costs ~5 s per logged model.
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("scikit-learn", "numpy", "pandas", "skops")]


def train(all_params: Params) -> dict:
    """Fit on the customers simulate wrote, track it all in one MLflow run; return the metrics,
    the sweep, the segment profiles and `run` (what export reads from models/train_run.json)."""
    params, data = all_params.train, customers_path(all_params.simulate.format)
    customers = read_training_data(data)
    _check_size(len(customers), params, data)
    # Float features: the model's signature then accepts any numeric input, fractions included.
    X = customers[FEATURES].astype(float)
    with ExitStack() as stack:
        fit, engine_params, spark_engine = fit_segments, {}, None
        if params.engine == "spark":  # the session lives until the Spark model is logged
            spark = stack.enter_context(spark_session(params.spark))
            # Parquet is read by Spark itself; a CSV goes over from the driver's frame.
            source = data if data.suffix == ".parquet" else X
            spark_engine = SparkKMeans(spark, spark_frame(spark, source), params.spark)
            fit, engine_params = spark_engine.fit, spark_run_params(params.spark, spark)
        # The map's points travel with the version (ids included): drawn once, here.
        sample = map_sample(customers, MAX_SAMPLE_ROWS, all_params.base.seed)
        return _train_and_track(all_params, data, X, sample, fit, engine_params, spark_engine)


def _train_and_track(
    all_params: Params,
    data: Path,
    X: pd.DataFrame,
    sample: pd.DataFrame,
    fit: Fit,
    engine_params: dict,
    spark_engine: SparkKMeans | None,
) -> dict:
    params, seed = all_params.train, all_params.base.seed
    sweep, models = sweep_k(X, params, seed, fit)
    k = choose_k(sweep) if params.n_clusters == "auto" else params.n_clusters
    if k in models:  # the sweep already fitted and scored this k
        model, scores = models[k], sweep.set_index("k").loc[k].to_dict()
    else:
        model = fit(X, k, params, seed)
        scores = score_segments(X, model, params.silhouette_sample, seed)
    metrics = {"k": k, "n_customers": len(X), **scores}
    profile = profile_segments(X, model)
    origin = lineage(all_params, data, len(X))
    source = all_params.simulate.source
    data_summary = training_summary(
        origin["data"],
        None if source is None else str(source),
        training_ranges(X),
        len(sample),
        seed,
    )

    mlflow = configure_mlflow(params.experiment)
    from mlflow.models import infer_signature

    with mlflow.start_run(run_name=f"train k={k}") as tracked:
        mlflow.log_params(
            {
                "n_clusters": params.n_clusters,
                "k": k,
                "init": params.init,
                "n_init": params.n_init,
                "max_iter": params.max_iter,
                "seed": seed,
                "k_range": f"{params.k_range.min}..{params.k_range.max}",
                "n_customers": len(X),
                "data_sha256": origin["data"]["sha256"],
                "engine": origin["engine"],
                **engine_params,
            }
        )
        mlflow.set_tags(flat_tags(origin))
        for row in sweep.to_dict("records"):
            with mlflow.start_run(run_name=f"k={int(row['k'])}", nested=True):
                mlflow.log_param("k", int(row["k"]))
                mlflow.log_metrics({m: v for m, v in row.items() if m != "k"})
                if spark_engine is not None:
                    mlflow.log_metric("n_iter", models[int(row["k"])].n_iter_)
        mlflow.log_metrics({m: v for m, v in metrics.items() if m != "k"})
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.labels_),
            input_example=X.head(5),
            pip_requirements=_pip_requirements(),
        )
        mlflow.log_table(profile, "segment_profiles.json")
        with tempfile.TemporaryDirectory() as tmp:
            html = Path(tmp, "k_sweep.html")
            # Plotly's JS is embedded so the artifact opens without fetching anything.
            k_sweep_figure(sweep, k).write_html(html, include_plotlyjs=True)
            mlflow.log_artifact(str(html))
            # What the views show about this version's data (custseg.serving.training_data).
            folder = write_training_data(Path(tmp, ARTIFACT_DIR), data_summary, sample)
            mlflow.log_artifacts(str(folder), ARTIFACT_DIR)
            if spark_engine is not None:
                # The registered model is the scikit-learn one; Spark's own is kept beside it.
                saved = save_spark_model(spark_engine.models[k], Path(tmp, "spark-model"))
                mlflow.log_artifacts(str(saved), "spark-model")
                mlflow.log_metric("n_iter", model.n_iter_)
    return {
        "metrics": metrics,
        "sweep": sweep,
        "profile": profile,
        "run": {
            "run_id": tracked.info.run_id,
            "model_uri": info.model_uri,
            "experiment": params.experiment,
            # export scores the champion on this data with the same silhouette sample
            "silhouette_sample": params.silhouette_sample,
            "seed": seed,
            "lineage": origin,
            **metrics,
        },
    }


def summary(result: dict) -> str:
    """What the stage prints: the chosen k, its scores and run, then the segments."""
    m = result["metrics"]
    columns = ["segment", "size", "mean_income", "mean_spending", "name"]
    return (
        f"train: k={m['k']} silhouette={m['silhouette']:.4f} inertia={m['inertia']:.1f} "
        f"run {result['run']['run_id']}\n" + result["profile"][columns].to_string(index=False)
    )


def train_stage(params_path: Path) -> str:
    """Sweep k, fit KMeans, track everything in MLflow; write the sweep, the run, the metrics."""
    result = train(load_params(params_path))
    write_atomic(K_SWEEP, lambda tmp: result["sweep"].to_csv(tmp, index=False, lineterminator="\n"))
    write_json_atomic(TRAIN_RUN, result["run"])
    write_json_atomic(TRAIN_METRICS, result["metrics"])
    return summary(result)
