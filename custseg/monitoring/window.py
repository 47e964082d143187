"""The scored rows a drift check reads: a file or folder the user names, or the store
(data/scored/, partitioned by day), kept to the served version, and its segment mix by day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from custseg.errors import MonitorError
from custseg.features import FEATURES
from custseg.monitoring.drift import SEGMENT

VERSION = "version"  # the model version that scored a row (the store writes it)
DAY = "day"  # the store's partition: day=YYYY-MM-DD


def no_rows() -> pd.DataFrame:
    """A window nothing was scored into."""
    return pd.DataFrame(columns=[*FEATURES, SEGMENT])


def read_window(path: Path, days: int | None = None, today: date | None = None) -> pd.DataFrame:
    """Scored rows from a Parquet file or folder (the store: only its last `days` day
    partitions when given), or a CSV; MonitorError in one line otherwise."""
    from custseg.pipeline.data import is_parquet

    if not path.exists():
        raise MonitorError(f"{path}: no such file or folder")
    if path.is_dir() and not any(path.glob("**/*.parquet")):
        return no_rows()  # a store nothing was scored into yet
    filters = None
    if days is not None and path.is_dir():
        first = (today or datetime.now(UTC).date()) - timedelta(days=days - 1)
        filters = [(DAY, ">=", first.isoformat())]  # ISO days sort as text
    try:
        if is_parquet(path):
            return pd.read_parquet(path, filters=filters)
        return pd.read_csv(path)
    except Exception as error:  # pyarrow's and pandas' errors differ: one line either way
        kind = "Parquet" if is_parquet(path) else "CSV"
        raise MonitorError(f"{path}: not a readable {kind} file of scored rows ({error})") from None


def rows_of(window: pd.DataFrame, version: str) -> pd.DataFrame:
    """The rows scored by `version` when the window says which version scored each (the store
    does): another version's segments mean other things."""
    if VERSION not in window:
        return window
    return window[window[VERSION].astype(str) == version]


def served_rows(window: pd.DataFrame, version: str) -> pd.DataFrame:
    """`rows_of`, or MonitorError naming the versions the window has when it has none."""
    rows = rows_of(window, version)
    if rows.empty and not window.empty and VERSION in window:
        found = ", ".join(sorted(window[VERSION].astype(str).unique())[:5])
        raise MonitorError(f"no scored rows of version {version} (the window has {found})")
    return rows


def daily_mix(window: pd.DataFrame, n_segments: int) -> list[dict[str, Any]]:
    """Per day partition (oldest first): rows and each segment's share. Empty without days."""
    if DAY not in window or SEGMENT not in window or window.empty:
        return []
    days = []
    segments = pd.to_numeric(window[SEGMENT], errors="coerce")
    for day, group in segments.groupby(window[DAY].astype(str), sort=True):
        ids = group.dropna().astype(int)
        ids = ids[(ids >= 0) & (ids < n_segments)]
        counts = np.bincount(ids, minlength=n_segments).astype(float)
        shares = counts / counts.sum() if counts.sum() else counts
        rounded = [round(float(s), 6) for s in shares]
        days.append({"day": day, "rows": len(group), "shares": rounded})
    return days
