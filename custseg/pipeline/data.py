"""Customer data: simulate it from params, or read a user's CSV through a column mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from custseg.config import SimulateParams, load_params
from custseg.errors import ConfigError, first_line
from custseg.features import COLUMNS, FEATURES, ID, INCOME, SPENDING
from custseg.io import write_atomic
from custseg.paths import customers_path

PARQUET_SUFFIXES = (".parquet", ".pq")


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


def is_parquet(path: Path | str) -> bool:
    """A Parquet file (by its suffix) or a folder of them (as Spark and pyarrow write)."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES


def _read_parquet(path: Path | str, key: str) -> pd.DataFrame:
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise ConfigError(f"{key}: {path} is not readable Parquet: {first_line(error)}") from None


def read_customers_csv(params: SimulateParams) -> pd.DataFrame:
    """Read `params.source` (a CSV, or a Parquet file or folder), rename mapped columns to ours
    and check every value is numeric."""
    source = params.source
    if source is None:
        raise ConfigError("simulate.source: not set")
    if is_parquet(source) and Path(source).exists():
        raw = _read_parquet(source, "simulate.source")
    elif not Path(source).is_file():
        raise ConfigError(f"simulate.source: file not found: {source}")
    else:
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
        text = frame[column]
        # CSV values are text (surrounding blanks allowed); Parquet columns may be numbers already
        text = text.str.strip() if not pd.api.types.is_numeric_dtype(text) else text
        values = pd.to_numeric(text, errors="coerce")
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


def write_customers(frame: pd.DataFrame, path: Path, data_format: str) -> None:
    """CSV with Unix line ends, or Parquet (`simulate.format`); same frame, same bytes."""
    if data_format == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, lineterminator="\n")


def read_training_data(path: Path | str) -> pd.DataFrame:
    """The simulate stage's output (CSV or Parquet), checked for the columns the model needs."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found; run `dvc repro simulate` first")
    frame = _read_parquet(path, str(path)) if is_parquet(path) else pd.read_csv(path)
    missing = [c for c in FEATURES if c not in frame]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def simulate_stage(params_path: Path) -> str:
    """Write the customers (simulated, or read from simulate.source) as CSV or Parquet."""
    params = load_params(params_path)
    customers = load_customers(params.simulate, params.base.seed)
    data_format = params.simulate.format
    path = customers_path(data_format)
    write_atomic(path, lambda tmp: write_customers(customers, tmp, data_format))
    source = params.simulate.source or f"simulation (seed {params.base.seed})"
    return f"simulate: {len(customers)} customers from {source} -> {path}"
