"""Customer data: simulate it from params, or read a user's CSV through a column mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from custseg.config import ConfigError, SimulateParams, first_line
from custseg.features import COLUMNS, FEATURES, ID, INCOME, SPENDING


def simulate_customers(params: SimulateParams, seed: int) -> pd.DataFrame:
    """Customers with normal, clipped income (k$) and uniform integer spending scores."""
    rng = np.random.default_rng(seed)
    n = params.n_customers
    income = rng.normal(params.income.mean, params.income.std, n)
    income = np.clip(np.round(income), params.income.min, params.income.max)
    spending = rng.integers(int(params.spending.min), int(params.spending.max) + 1, n)
    return pd.DataFrame(
        {ID: np.arange(1, n + 1), INCOME: income.astype(int), SPENDING: spending.astype(int)}
    )


def read_customers_csv(params: SimulateParams) -> pd.DataFrame:
    """Read `params.source`, rename mapped columns to ours and check every value is numeric."""
    source = params.source
    if source is None:
        raise ConfigError("simulate.source: not set")
    if not Path(source).is_file():
        raise ConfigError(f"simulate.source: file not found: {source}")
    try:
        raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"simulate.source: {source} is not a readable CSV: {first_line(error)}"
        ) from None
    mapping = params.columns.model_dump()
    missing = [
        f"{ours}={theirs!r}" for ours, theirs in mapping.items() if theirs and theirs not in raw
    ]
    if missing:
        raise ConfigError(
            f"simulate.columns: {', '.join(missing)} not in {source} "
            f"(has: {', '.join(raw.columns)})"
        )
    frame = pd.DataFrame({ours: raw[theirs] for ours, theirs in mapping.items() if theirs})
    if frame.empty:
        raise ConfigError(f"simulate.source: {source} has no rows")
    for column in FEATURES:
        values = pd.to_numeric(frame[column].str.strip(), errors="coerce")
        bad = values.isna() | ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ConfigError(
                f"simulate.columns.{column}: column {mapping[column]!r} of {source} has "
                f"{int(bad.sum())} non-numeric value(s), first at data row {row + 1}: "
                f"{frame[column].iloc[row]!r}"
            )
        frame[column] = values
    if ID not in frame:
        frame.insert(0, ID, np.arange(1, len(frame) + 1))
    return frame[COLUMNS]


def load_customers(params: SimulateParams, seed: int) -> pd.DataFrame:
    """The customers the pipeline trains on: the user's CSV when given, else simulated ones."""
    return read_customers_csv(params) if params.source else simulate_customers(params, seed)


def read_training_data(path: Path | str) -> pd.DataFrame:
    """The simulate stage's output, checked for the columns the model needs."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run `dvc repro simulate` first")
    frame = pd.read_csv(path)
    missing = [c for c in FEATURES if c not in frame]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame
