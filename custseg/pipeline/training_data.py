"""What a model version carries about its own training data, so the views show the served
version's data, never whatever the workspace's data/customers.csv holds now: the data's identity
(path, source, rows, SHA-256), each feature's range, and a bounded, seeded sample of the training
customers for the segment map.

Train logs them as artifacts of its run (`training_data/`); the registered version points at that
run, so they travel with the version. `custseg.serving.training_data` reads them back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from custseg.features import FEATURES

ARTIFACT_DIR = "training_data"
SUMMARY_FILE = "summary.json"
SAMPLE_FILE = "sample.parquet"
MAX_SAMPLE_ROWS = 5_000  # a browser chokes on a million dots; 5,000 keep the shape (~50 KB)
ID_COLUMN = "customer_id"

Ranges = dict[str, tuple[float, float]]


def training_ranges(customers: pd.DataFrame) -> Ranges:
    """Each feature's (min, max) in the training data: outside it a segment is a guess."""
    return {f: (float(customers[f].min()), float(customers[f].max())) for f in FEATURES}


def describe_ranges(ranges: Ranges) -> str:
    """The ranges as users read them: "annual_income 15–137, spending_score 1–99"."""
    return ", ".join(f"{f} {low:g}–{high:g}" for f, (low, high) in ranges.items())


def map_sample(customers: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most `max_rows` training customers (the features, and the id when there is one),
    drawn with `seed` and kept in file order: the same data and seed give the same sample."""
    columns = [*FEATURES, *([ID_COLUMN] if ID_COLUMN in customers else [])]
    sample = customers[columns]
    if len(sample) > max_rows:
        sample = sample.sample(n=max_rows, random_state=seed).sort_index()
    sample = sample.reset_index(drop=True).astype(dict.fromkeys(FEATURES, float))
    if ID_COLUMN in sample:  # ids may mix numbers and text; shown as text anyway
        sample[ID_COLUMN] = sample[ID_COLUMN].astype(str)
    return sample


def training_summary(
    data: dict[str, Any], source: str | None, ranges: Ranges, sample_rows: int, seed: int
) -> dict[str, Any]:
    """The JSON the version carries: `data` is lineage's {path, sha256, rows}."""
    return {
        "data": {
            "path": data["path"],
            "source": source,
            "rows": data["rows"],
            "sha256": data["sha256"],
        },
        "ranges": {f: [low, high] for f, (low, high) in ranges.items()},
        "sample": {"file": SAMPLE_FILE, "rows": sample_rows, "seed": seed},
    }


def write_training_data(folder: Path, summary: dict[str, Any], sample: pd.DataFrame) -> Path:
    """`folder` with summary.json and sample.parquet, ready for `mlflow.log_artifacts`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    sample.to_parquet(folder / SAMPLE_FILE, index=False)
    return folder


def parse_ranges(raw: Any) -> Ranges:
    """The summary's ranges, checked: both features, finite numbers, low ≤ high (ValueError)."""
    if not isinstance(raw, dict):
        raise ValueError("ranges is not an object")
    ranges: Ranges = {}
    for feature in FEATURES:
        pair = raw.get(feature)
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ValueError(f"no range for {feature}")
        low, high = (float(v) for v in pair)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"bad range for {feature}: {pair}")
        ranges[feature] = (low, high)
    return ranges
