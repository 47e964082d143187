"""Drifted windows of scored customers, made from a base window, to try the monitor
(`custseg monitor --simulate-drift`) and to measure it (bench/bench_monitor.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from custseg.config import MonitorParams
from custseg.features import BOUNDS, FEATURES, INCOME, SPENDING
from custseg.monitoring import DRIFTS
from custseg.monitoring.drift import NO_DRIFT, SEGMENT, Reference, assess_drift

INCOME_SHIFT = 10.0  # k$: incomes rise
NEW_GROUP_SHARE = 0.10
NEW_GROUP = {INCOME: (110.0, 5.0), SPENDING: (90.0, 4.0)}  # a new store's high earners/spenders


def score(frame: pd.DataFrame, model: Any) -> pd.DataFrame:
    """The features with the segment `model` assigns them, as the scoring paths record them."""
    features = frame[FEATURES].astype(float).reset_index(drop=True)
    return features.assign(**{SEGMENT: model.predict(features).astype(int)})


def drift_features(
    base: pd.DataFrame, kind: str, rng: np.random.Generator, model: Any
) -> pd.DataFrame:
    """`base`'s features changed by `kind` (one of DRIFTS), clipped to the features' bounds."""
    if kind not in DRIFTS:
        raise ValueError(f"unknown drift {kind!r}: one of {', '.join(DRIFTS)}")
    frame = base[FEATURES].astype(float).reset_index(drop=True)
    if kind == "income":
        frame[INCOME] += INCOME_SHIFT
    elif kind == "new-group":
        chosen = rng.random(len(frame)) < NEW_GROUP_SHARE
        for feature, (mean, std) in NEW_GROUP.items():
            frame.loc[chosen, feature] = rng.normal(mean, std, int(chosen.sum()))
    elif kind == "empty-segment":
        # The largest segment's customers stop coming: the others fill the window.
        segments = model.predict(frame)
        kept = frame[segments != np.bincount(segments).argmax()]
        frame = kept.iloc[rng.integers(0, len(kept), len(frame))].reset_index(drop=True)
    for feature in FEATURES:
        frame[feature] = frame[feature].clip(*BOUNDS[feature])
    return frame


def simulated_window(
    sample: pd.DataFrame, model: Any, kind: str, rows: int, seed: int
) -> pd.DataFrame:
    """`rows` scored customers drawn from the training `sample`, drifted by `kind`."""
    rng = np.random.default_rng(seed)
    base = sample[FEATURES].iloc[rng.integers(0, len(sample), rows)]
    return score(drift_features(base, kind, rng, model), model)


def flag_rates(
    reference: Reference,
    model: Any,
    fresh: Callable[[int], pd.DataFrame],
    params: MonitorParams,
    trials: int,
    seed: int,
    kinds: tuple[str, ...] = DRIFTS,
) -> dict[str, float]:
    """For each drift kind, the share of `trials` windows the monitor flags (any verdict but no
    drift). `fresh(seed)` draws a new window's base customers from the training population, so
    "none" measures false alarms on independent data, not on a copy of the reference."""
    rates = {}
    for kind in kinds:
        flagged = 0
        for trial in range(trials):
            rng = np.random.default_rng([seed, trial, DRIFTS.index(kind)])
            window = score(drift_features(fresh(seed + trial), kind, rng, model), model)
            flagged += assess_drift(reference, window, params)["verdict"] != NO_DRIFT
        rates[kind] = flagged / trials
    return rates


def simulated_setting(
    train_rows: int, window_rows: int, seed: int
) -> tuple[Reference, Any, Callable[[int], pd.DataFrame]]:
    """(reference, model, fresh) for a simulated project: the default params' customers,
    `train_rows` of them trained on with the default k; `fresh(s)` draws `window_rows` new
    customers from the same population."""
    from custseg.config import SimulateParams, TrainParams
    from custseg.pipeline.data import simulate_customers
    from custseg.pipeline.segments import fit_segments
    from custseg.pipeline.training_data import MAX_SAMPLE_ROWS, map_sample

    simulate, train = SimulateParams(), TrainParams()
    customers = simulate_customers(simulate.model_copy(update={"n_customers": train_rows}), seed)
    model = fit_segments(customers, int(train.n_clusters), train, seed)
    sizes = np.bincount(model.labels_, minlength=model.n_clusters)
    reference = Reference("sim", map_sample(customers, MAX_SAMPLE_ROWS, seed), sizes)
    window = simulate.model_copy(update={"n_customers": window_rows})
    return reference, model, lambda s: simulate_customers(window, 1_000_003 + s)
