"""The training data a registered version carries (train logs it, custseg.pipeline.training_data):
what the app's map, range warnings, caption and batch notes show, read from the version served,
never from the workspace's data/customers.csv.

A version registered before train logged it (or with an unreadable copy) degrades to "not
recorded": the views show the segment centres only and say so in one line.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from custseg.features import FEATURES
from custseg.pipeline.training_data import (
    ARTIFACT_DIR,
    ID_COLUMN,
    SAMPLE_FILE,
    SUMMARY_FILE,
    Ranges,
    describe_ranges,
    parse_ranges,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

_HEX = re.compile(r"[0-9a-f]{64}")
MAX_SHOWN_PATH = 120  # a path is the user's text: shown bounded, as code


@dataclass(frozen=True)
class TrainingData:
    """One version's training data as the views need it; `ranges` None: not recorded."""

    version: str
    path: str | None = None
    source: str | None = None
    rows: int | None = None
    sha256: str | None = None
    ranges: Ranges | None = None
    sample: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FEATURES))

    @property
    def recorded(self) -> bool:
        return self.ranges is not None

    def not_recorded(self) -> str:
        """The start of the one line a view shows for a version without its data."""
        return (
            f"Ranges not recorded for version {self.version} (registered before models "
            "carried their training data)"
        )

    def describe(self) -> str:
        """Markdown naming the data: rows, path (and source), digest. The path and source are
        the user's text: each goes in a code span, bounded, so nothing in it is rendered."""
        if not self.recorded:
            return f"training data not recorded for version {self.version}"
        rows = "? customers" if self.rows is None else f"{self.rows:,} customers"
        where = f" in {_code(self.path)}" if self.path else ""
        source = f" (from {_code(self.source)})" if self.source else ""
        digest = f", data {self.sha256[:12]}" if self.sha256 else ""
        return f"{rows}{where}{source}{digest}"

    def as_json(self) -> dict[str, Any]:
        """What REST's GET /info says about the data (ranges None: not recorded)."""
        return {
            "recorded": self.recorded,
            "path": self.path,
            "source": self.source,
            "rows": self.rows,
            "sha256": self.sha256,
            "ranges": None
            if self.ranges is None
            else {f: [low, high] for f, (low, high) in self.ranges.items()},
            "sample_rows": len(self.sample),
        }

    def plain(self) -> str:
        """One terminal line naming the data and its ranges (`custseg serve` prints it)."""
        if not self.recorded:
            return f"{self.not_recorded()}: predictions carry no range notes"
        rows = "? customers" if self.rows is None else f"{self.rows:,} customers"
        where = f" in {self.path}" if self.path else ""
        digest = f", data {self.sha256[:12]}" if self.sha256 else ""
        return (
            f"version {self.version} was trained on {rows}{where}{digest}; "
            f"ranges {describe_ranges(self.ranges)}"
        )


def outside_features(features: pd.DataFrame, ranges: Ranges) -> list[list[str]]:
    """Per row, the features whose value lies outside the training data's range (REST names
    them beside each prediction: there the segment is an extrapolation)."""
    names = list(ranges)
    flags = np.column_stack(
        [
            (values < low) | (values > high)
            for values, (low, high) in (
                (features[f].to_numpy(dtype=float), ranges[f]) for f in names
            )
        ]
    )
    rows: list[list[str]] = [[] for _ in range(len(features))]
    for i in np.flatnonzero(flags.any(axis=1)):  # most rows are inside: only these are walked
        rows[i] = [names[j] for j in np.flatnonzero(flags[i])]
    return rows


def _code(text: str) -> str:
    shown = "".join(c if c.isprintable() and c != "`" else "?" for c in text)
    if len(shown) > MAX_SHOWN_PATH:
        shown = shown[: MAX_SHOWN_PATH - 1] + "…"
    return f"`{shown}`"


def parse_training_data(version: str, summary: Any, sample: pd.DataFrame) -> TrainingData:
    """The version's data from its summary.json and sample; ValueError when malformed."""
    if not isinstance(summary, dict) or not isinstance(summary.get("data"), dict):
        raise ValueError("summary.json has no data")
    data = summary["data"]
    rows, sha = data.get("rows"), data.get("sha256")
    missing = [f for f in FEATURES if f not in sample]
    if missing:
        raise ValueError(f"sample lacks {', '.join(missing)}")
    points = sample[FEATURES].astype(float)
    if ID_COLUMN in sample:
        points[ID_COLUMN] = sample[ID_COLUMN].astype(str)
    return TrainingData(
        version=version,
        path=data["path"] if isinstance(data.get("path"), str) else None,
        source=data["source"] if isinstance(data.get("source"), str) else None,
        rows=rows if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0 else None,
        sha256=sha if isinstance(sha, str) and _HEX.fullmatch(sha) else None,
        ranges=parse_ranges(summary.get("ranges")),
        sample=points.reset_index(drop=True),
    )


def load_training_data(version: str, run_id: str, client: MlflowClient) -> TrainingData:
    """The training data logged with the run behind `version`; "not recorded" when the run has
    none or it cannot be read (the page then says so in one line, it does not fail)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = Path(client.download_artifacts(run_id, ARTIFACT_DIR, tmp))
            summary = json.loads((folder / SUMMARY_FILE).read_text())
            sample = pd.read_parquet(folder / SAMPLE_FILE)
            return parse_training_data(version, summary, sample)
        except Exception:  # missing (an older version) or unreadable: the same for the views
            return TrainingData(version)
