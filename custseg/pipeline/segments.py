"""KMeans segmentation: fit, sweep k, pick k, and describe segments in words."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from custseg.config import TrainParams
from custseg.errors import ConfigError
from custseg.features import FEATURES, INCOME, SPENDING

SWEEP_COLUMNS = ["k", "inertia", "silhouette", "davies_bouldin", "calinski_harabasz"]
# How an engine fits one k: (X, k, params, seed) -> a fitted scikit-learn KMeans.
Fit = Callable[[pd.DataFrame, int, TrainParams, int], KMeans]


def check_fits(n_rows: int, k: int) -> None:
    """ConfigError when `n_rows` customers cannot hold `k` clusters."""
    if n_rows < k:
        raise ConfigError(
            f"train.n_clusters: {k} clusters need at least {k} customers, got {n_rows}"
        )


def fit_segments(X: pd.DataFrame, k: int, params: TrainParams, seed: int) -> KMeans:
    """Plain scikit-learn KMeans with the configured settings (nothing added on the hot path)."""
    check_fits(len(X), k)
    model = KMeans(
        n_clusters=k,
        init=params.init,
        n_init=params.n_init,
        max_iter=params.max_iter,
        random_state=seed,
    )
    return model.fit(X[FEATURES])


def sample_silhouette(values: np.ndarray, labels: np.ndarray, sample_size: int, seed: int) -> float:
    """Silhouette on a seeded sample of `sample_size` rows when the data is larger: the same rows
    for the same data, size and seed, so two labelings of one data set compare like with like.

    The rows are the ones `silhouette_score(sample_size=, random_state=seed)` would draw. Edge
    labelings get silhouette's own limits instead of an error: one segment separates nothing
    (-1), a segment per row scores 0 (a singleton's silhouette).
    """
    labels = np.asarray(labels)
    if len(values) > sample_size:
        rows = np.random.RandomState(seed).permutation(len(values))[:sample_size]
        values, labels = values[rows], labels[rows]
    n_labels = len(np.unique(labels))
    if n_labels < 2:
        return -1.0
    if n_labels >= len(values):
        return 0.0
    return float(silhouette_score(values, labels))


def score_segments(X: pd.DataFrame, model: KMeans, sample_size: int, seed: int) -> dict[str, float]:
    """Inertia, silhouette (on a seeded sample when large), Davies–Bouldin, Calinski–Harabasz."""
    labels = model.labels_
    values = X[FEATURES].to_numpy(dtype=float)
    return {
        "inertia": float(model.inertia_),
        "silhouette": sample_silhouette(values, labels, sample_size, seed),
        "davies_bouldin": float(davies_bouldin_score(values, labels)),
        "calinski_harabasz": float(calinski_harabasz_score(values, labels)),
    }


def sweep_k(
    X: pd.DataFrame, params: TrainParams, seed: int, fit: Fit = fit_segments
) -> tuple[pd.DataFrame, dict[int, KMeans]]:
    """Fit (with `fit`, an engine's) and score every k in `params.k_range` that the data can
    support."""
    rows, models = [], {}
    for k in range(params.k_range.min, min(params.k_range.max, len(X) - 1) + 1):
        model = fit(X, k, params, seed)
        models[k] = model
        rows.append({"k": k, **score_segments(X, model, params.silhouette_sample, seed)})
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS), models


def choose_k(sweep: pd.DataFrame) -> int:
    """The k with the best silhouette (the smallest such k on a tie)."""
    if sweep.empty:
        raise ConfigError("train.k_range: no k in the range fits the data")
    best = sweep["silhouette"].max()
    return int(sweep.loc[sweep["silhouette"] == best, "k"].min())


def _level(value: float, low: float, high: float) -> str:
    return "low" if value < low else "high" if value > high else "average"


def name_segment(income: float, spending: float, thresholds: dict[str, tuple[float, float]]) -> str:
    """A readable name such as 'high income · low spending' from tercile thresholds."""
    return (
        f"{_level(income, *thresholds[INCOME])} income · "
        f"{_level(spending, *thresholds[SPENDING])} spending"
    )


def profile_segments(X: pd.DataFrame, model: KMeans) -> pd.DataFrame:
    """One row per segment: size, share, mean income and spending, center and a readable name."""
    thresholds = {c: tuple(np.quantile(X[c], [1 / 3, 2 / 3])) for c in FEATURES}
    labels = pd.Series(model.labels_, index=X.index, name="segment")
    grouped = X[FEATURES].groupby(labels)
    profile = pd.DataFrame(
        {
            "segment": range(model.n_clusters),
            "size": grouped.size().reindex(range(model.n_clusters), fill_value=0).to_numpy(),
            "mean_income": grouped[INCOME].mean().reindex(range(model.n_clusters)).to_numpy(),
            "mean_spending": grouped[SPENDING].mean().reindex(range(model.n_clusters)).to_numpy(),
            "center_income": model.cluster_centers_[:, 0],
            "center_spending": model.cluster_centers_[:, 1],
        }
    )
    profile["share"] = profile["size"] / len(X)
    profile["name"] = [
        name_segment(i, s, thresholds)
        for i, s in zip(profile["center_income"], profile["center_spending"], strict=True)
    ]
    return profile.round(4)
