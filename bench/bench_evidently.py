"""Evidently against the monitor's own scipy statistics (custseg.monitoring.drift), on the
same data: the cost of a check (import, 500 and 1,000,000 scored rows) and what each flags on
windows with no drift and with incomes +10 k$.

Evidently is not a project dependency (see bench/README.md): run this with a throwaway venv,
`python -m venv /tmp/evid && /tmp/evid/bin/pip install evidently 'pandas<3'`, then
`PYTHONPATH=. /tmp/evid/bin/python bench/bench_evidently.py` (custseg's drift module needs only
numpy, pandas, scipy and pydantic, which Evidently brings)."""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy import stats

from custseg.features import FEATURES, INCOME, SPENDING
from custseg.monitoring.drift import psi


def customers(rows: int, rng: np.random.Generator, shift: float = 0.0) -> pd.DataFrame:
    """The default simulation's population (income normal 60±15 clipped, spending uniform)."""
    income = np.clip(rng.normal(60, 15, rows), 15, 140) + shift
    return pd.DataFrame({INCOME: income, SPENDING: rng.integers(1, 101, rows).astype(float)})


def scipy_check(reference: pd.DataFrame, window: pd.DataFrame, alpha: float) -> bool:
    """The monitor's feature test: KS significant (Bonferroni over 3 tests) and PSI ≥ 0.05."""
    flagged = False
    for feature in FEATURES:
        ref, cur = reference[feature].to_numpy(), window[feature].to_numpy()
        p_value = stats.ks_2samp(ref, cur).pvalue
        flagged |= bool(p_value < alpha / 3 and psi(ref, cur, 10) >= 0.05)
    return flagged


def evidently_check(reference: pd.DataFrame, window: pd.DataFrame) -> bool:
    """Evidently's DataDriftPreset with its defaults (KS under 1,000 rows, Wasserstein above;
    the dataset drifts when half the columns do)."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()]).run(window, reference)
    for metric in snapshot.dict()["metrics"]:
        if str(metric.get("metric_name", "")).startswith("DriftedColumnsCount"):
            return float(metric["value"]["count"]) > 0
    raise RuntimeError("no DriftedColumnsCount in Evidently's report")


def timed(check, *args, repeat: int = 1) -> float:
    """The fastest of `repeat` runs (after a first run that warms caches and lazy imports)."""
    check(*args)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        check(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", type=int, default=5000, help="training sample rows")
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    reference = customers(args.reference, rng)

    start = time.perf_counter()
    import evidently
    from evidently import Report  # noqa: F401
    from evidently.presets import DataDriftPreset  # noqa: F401

    print(f"evidently {evidently.__version__}: import {time.perf_counter() - start:.2f} s")
    for rows, repeat in ((args.window, 5), (args.big, 1)):
        window = customers(rows, rng)
        ours = timed(scipy_check, reference, window, 0.01, repeat=repeat)
        theirs = timed(evidently_check, reference, window, repeat=repeat)
        ratio = theirs / ours
        print(f"{rows:>9,} rows: scipy {ours:.3f} s, Evidently {theirs:.3f} s ({ratio:.0f}x)")
    for name, shift in (("no drift", 0.0), ("income +10 k$", 10.0)):
        ours = theirs = 0
        for _ in range(args.trials):
            window = customers(args.window, rng, shift)
            ours += scipy_check(reference, window, 0.01)
            theirs += evidently_check(reference, window)
        print(
            f"{name}: flagged by scipy {ours / args.trials:.0%}, "
            f"Evidently (defaults) {theirs / args.trials:.0%} of {args.trials} windows"
        )


if __name__ == "__main__":
    main()
