"""Drift of a window of scored customers from the served version's training data: per feature
the population stability index (PSI, how much) and the two-sample Kolmogorov-Smirnov test (is it
more than chance), the segment mix against the training shares (chi-square), and a verdict.

Pure: no MLflow, no files. A feature or the segment mix is flagged only when its test is
significant (Bonferroni over every test, so a window of the training distribution is flagged
at most `alpha` of the time) *and* the change is material (PSI or a share change above its
threshold: a million rows make any tiny shift significant).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from custseg.config import MonitorParams
from custseg.errors import MonitorError
from custseg.features import FEATURES

SEGMENT = "segment"
NO_DRIFT, DRIFT, RETRAIN = "no drift", "drift", "retrain recommended"
NO_DATA = "no data"  # too few scored rows of the served version for any verdict
HISTOGRAM_BINS = 30
_FLOOR = 1e-4  # an empty bin's proportion in PSI: ln(0) would make any empty bin infinite


@dataclass(frozen=True)
class Reference:
    """What the served version was trained on: a sample of its customers (the features) and
    each segment's size in the whole training data (index = segment id)."""

    version: str
    sample: pd.DataFrame
    sizes: np.ndarray

    def __post_init__(self) -> None:
        missing = [f for f in FEATURES if f not in self.sample]
        if missing:
            raise MonitorError(f"reference sample lacks {', '.join(missing)}")
        if len(self.sample) == 0:
            raise MonitorError(f"version {self.version} carries no training sample")
        sizes = np.asarray(self.sizes, dtype=float)
        if sizes.ndim != 1 or len(sizes) < 1 or not np.all(np.isfinite(sizes)) or sizes.min() < 0:
            raise MonitorError(f"version {self.version}: segment sizes are not counts: {sizes}")
        if sizes.sum() <= 0:
            raise MonitorError(f"version {self.version}: segment sizes sum to 0")


def psi(reference: np.ndarray, current: np.ndarray, bins: int) -> float:
    """Population stability index of `current` against `reference`, over `bins` quantile bins
    of the reference (open-ended, so values beyond its range count in the end bins)."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(
        np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1
    )
    actual = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    e = np.maximum(expected / len(reference), _FLOOR)
    a = np.maximum(actual / len(current), _FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def window_histogram(reference: np.ndarray, current: np.ndarray) -> dict[str, list]:
    """The window's counts over HISTOGRAM_BINS equal bins spanning both samples: what the app
    draws over the training sample (the report keeps no scored rows)."""
    low = float(min(reference.min(), current.min()))
    high = float(max(reference.max(), current.max()))
    counts, edges = np.histogram(current, bins=HISTOGRAM_BINS, range=(low, high))
    return {"edges": [round(float(e), 6) for e in edges], "window": counts.tolist()}


def check_window(window: pd.DataFrame, n_segments: int, min_rows: int) -> pd.DataFrame:
    """The window's features (float) and segment (int), or MonitorError naming what is wrong."""
    missing = [c for c in (*FEATURES, SEGMENT) if c not in window]
    if missing:
        raise MonitorError(f"scored rows lack column(s) {', '.join(missing)}")
    if len(window) < min_rows:
        raise MonitorError(
            f"{len(window)} scored rows: at least {min_rows} needed (monitor.min_rows)"
        )
    try:
        features = window[FEATURES].astype(float)
        segments = window[SEGMENT].astype(float)
    except (TypeError, ValueError):
        raise MonitorError("scored rows hold non-numeric features or segments") from None
    if not np.isfinite(features.to_numpy()).all():
        raise MonitorError("scored rows hold missing or infinite feature values")
    ids = segments.to_numpy()
    if not (np.isfinite(ids).all() and (ids == np.round(ids)).all()):
        raise MonitorError("scored rows hold missing or non-integer segments")
    if ids.min() < 0 or ids.max() >= n_segments:
        raise MonitorError(
            f"scored rows name segment {int(ids.max() if ids.max() >= n_segments else ids.min())}"
            f": the model has segments 0..{n_segments - 1} (scored by another version?)"
        )
    return features.assign(**{SEGMENT: ids.astype(int)})


def assess_drift(
    reference: Reference, window: pd.DataFrame, params: MonitorParams
) -> dict[str, Any]:
    """The drift report of `window` (features + segment) against `reference`, as plain JSON."""
    rows = check_window(window, len(reference.sizes), params.min_rows)
    alpha = params.alpha / (len(FEATURES) + 1)  # Bonferroni: the features and the segment mix
    features = {}
    for feature in FEATURES:
        ref = reference.sample[feature].to_numpy(dtype=float)
        cur = rows[feature].to_numpy()
        ks = stats.ks_2samp(ref, cur)
        value = psi(ref, cur, params.psi_bins)
        features[feature] = {
            "psi": round(value, 6),
            "ks": round(float(ks.statistic), 6),
            "p_value": float(ks.pvalue),
            "reference_mean": round(float(ref.mean()), 4),
            "window_mean": round(float(cur.mean()), 4),
            "drift": bool(ks.pvalue < alpha and value >= params.psi_drift),
            "histogram": window_histogram(ref, cur),
        }
    segments = segment_mix(reference.sizes, rows[SEGMENT].to_numpy(), alpha, params)
    return {
        "version": reference.version,
        "rows": len(rows),
        "reference_rows": len(reference.sample),
        "alpha": params.alpha,
        "features": features,
        "segments": segments,
        **verdict(features, segments, params),
    }


def segment_mix(
    sizes: np.ndarray, segments: np.ndarray, alpha: float, params: MonitorParams
) -> dict[str, Any]:
    """Each segment's training vs window share, and the chi-square test of homogeneity (the
    training counts are a sample too: treating its shares as exact would over-flag)."""
    sizes = np.asarray(sizes, dtype=float)
    counts = np.bincount(segments, minlength=len(sizes)).astype(float)
    train_share, window_share = sizes / sizes.sum(), counts / counts.sum()
    table = np.vstack([sizes, counts])[:, (sizes + counts) > 0]  # a column of zeros has no test
    if table.shape[1] < 2:
        p_value = 1.0  # one segment in both: nothing can have moved
    else:
        p_value = float(stats.chi2_contingency(table, correction=False).pvalue)
    change = window_share - train_share
    moved = [int(s) for s in np.flatnonzero(np.abs(change) >= params.share_drift)]
    return {
        "p_value": p_value,
        "training_share": [round(float(s), 6) for s in train_share],
        "window_share": [round(float(s), 6) for s in window_share],
        "drift": bool(p_value < alpha and moved),
        "moved": moved if p_value < alpha else [],
        "max_change": round(float(np.abs(change).max()), 6),
    }


def verdict(features: dict[str, Any], segments: dict[str, Any], params: MonitorParams) -> dict:
    """no drift / drift in which features and segments / retrain recommended (a flagged change
    at least the retrain threshold: PSI ≥ psi_retrain or a share moved ≥ share_retrain)."""
    drifted = [name for name, f in features.items() if f["drift"]]
    moved = segments["moved"] if segments["drift"] else []
    if not drifted and not moved:
        return {
            "verdict": NO_DRIFT,
            "drifted_features": [],
            "drifted_segments": [],
            "summary": NO_DRIFT,
        }
    severe = any(features[f]["psi"] >= params.psi_retrain for f in drifted) or (
        bool(moved) and segments["max_change"] >= params.share_retrain
    )
    parts = [f"{f} (PSI {features[f]['psi']:.2f})" for f in drifted]
    parts += [
        f"segment {s} ({segments['training_share'][s]:.0%} → {segments['window_share'][s]:.0%})"
        for s in moved
    ]
    status = RETRAIN if severe else DRIFT
    return {
        "verdict": status,
        "drifted_features": drifted,
        "drifted_segments": moved,
        "summary": f"drift in {', '.join(parts)}" + ("; retrain recommended" if severe else ""),
    }


def mlflow_fields(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """(params, metrics) of a drift report for an MLflow run: per feature PSI, KS and its p,
    the segment mix's chi-square p, and every flag as 0/1."""
    params = {"window_rows": report["rows"], "reference_rows": report["reference_rows"]}
    params["alpha"] = report["alpha"]
    metrics: dict[str, float] = {}
    for feature, stats_ in report["features"].items():
        metrics[f"{feature}.psi"] = stats_["psi"]
        metrics[f"{feature}.ks"] = stats_["ks"]
        metrics[f"{feature}.ks_p"] = stats_["p_value"]
        metrics[f"{feature}.drift"] = float(stats_["drift"])
    mix = report["segments"]
    metrics["segments.chi2_p"] = mix["p_value"]
    metrics["segments.max_change"] = mix["max_change"]
    metrics["segments.drift"] = float(mix["drift"])
    metrics["drift"] = float(report["verdict"] != NO_DRIFT)
    metrics["retrain"] = float(report["verdict"] == RETRAIN)
    return params, metrics
