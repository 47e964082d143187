"""Batch scoring of an uploaded CSV: parse it as text (custseg.serving.upload), validate every
row, score, export (custseg.serving.download).

Uploaded files are only ever parsed as CSV text: nothing a user sends is unpickled or executed.
Every cell is read as the text it is: the columns other than the features come back in the
download exactly as uploaded (`007`, `TRUE`, `n/a`, empty cells), apart from the leading `'`
that keeps a spreadsheet from running a cell as a formula.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from custseg.errors import BatchError
from custseg.features import FEATURES
from custseg.pipeline.training_data import Ranges, describe_ranges
from custseg.serving.download import frame_to_csv_bytes, neutralise_cell, spreadsheet_safe
from custseg.serving.upload import match_columns, parse_batch_csv
from custseg.serving.validation import (
    feature_problems,
    text_shown,
    text_to_numbers,
)


def validate_batch(frame: pd.DataFrame) -> pd.DataFrame:
    """The model input for a parsed CSV: both features present, numbers, within the bounds
    (custseg.serving.validation's rules, as for the app and REST).

    Every problem is collected (not just the first) and each names its column and the first
    few offending line numbers, so a user can fix the file in one go.
    """
    mapping, problems = match_columns(frame.columns)
    values: dict[str, np.ndarray] = {}
    for feature, column in mapping.items():
        raw = frame[column]
        numbers = text_to_numbers(raw, decimal_comma=frame.attrs.get("decimal_comma", False))
        shown = lambda i, raw=raw: text_shown(raw.iloc[i])  # noqa: E731 (names the loop's column)
        found = feature_problems(feature, column, numbers, shown)
        problems += [problem.describe("line", 2) for problem in found]  # the header is line 1
        values[feature] = numbers
    if problems:
        raise BatchError(problems)
    return pd.DataFrame(values, columns=FEATURES)


OUTPUT_COLUMNS = ("segment", "segment_name")


def kept_name(column: str, taken: Iterable[str]) -> str:
    """A new name for a user's column that an output column would overwrite."""
    taken = set(taken)
    name, n = f"input_{column}", 2
    while name in taken:
        name, n = f"input_{column}_{n}", n + 1
    return name


def score_batch(
    model: Any, features: pd.DataFrame, original: pd.DataFrame, labels: list[str]
) -> pd.DataFrame:
    """The uploaded rows with `segment` (id) and `segment_name` appended, in the same order: the
    feature columns hold the numbers the model scored, every other column is as uploaded.
    A user's own column of either name is kept, renamed `input_<name>` (see `renamed_inputs`)."""
    segments = model.predict(features)
    scored = original.copy(deep=False)  # the user's columns are not modified: no copy needed
    for feature, column in match_columns(original.columns)[0].items():
        scored[column] = features[feature].to_numpy()
    scored = scored.rename(columns=renamed_inputs(scored.columns))
    scored["segment"] = segments
    # A categorical shares one string per segment instead of a million Python strings.
    scored["segment_name"] = pd.Categorical.from_codes(segments, categories=labels)
    return scored


def renamed_inputs(columns: Iterable[str]) -> dict[str, str]:
    """The user's columns that clash with the output columns, and their new names."""
    columns = [str(c) for c in columns]
    return {c: kept_name(c, columns) for c in OUTPUT_COLUMNS if c in columns}


def download_header(original: pd.DataFrame) -> tuple[str, ...]:
    """The download's header row: the file's own as written (`attrs["header"]`), a column that
    clashes with an output column renamed as in the table, then the output columns."""
    header = original.attrs.get("header") or [str(c) for c in original.columns]
    renames = renamed_inputs(original.columns)
    kept = [
        renames.get(name) or (name if cell in OUTPUT_COLUMNS else cell)  # a repeated clash
        for name, cell in zip(original.columns, header, strict=True)
    ]
    return (*kept, *OUTPUT_COLUMNS)


def segment_counts(segments: np.ndarray | pd.Series, labels: list[str]) -> pd.DataFrame:
    """Customers per segment (every segment listed, zeros included) and their share."""
    counts = np.bincount(np.asarray(segments, dtype=np.int64), minlength=len(labels))
    total = max(int(counts.sum()), 1)
    return pd.DataFrame(
        {
            "segment": range(len(labels)),
            "name": labels,
            "customers": counts,
            "share": counts / total,
        }
    )


@dataclass(frozen=True)
class BatchResult:
    """A scored upload: the rows with their segment, and the count per segment."""

    scored: pd.DataFrame
    counts: pd.DataFrame

    notes: tuple[str, ...] = ()  # what the page should tell about how the file was read
    header: tuple[str, ...] = ()  # the download's header row; empty: the table's column names

    def to_csv_bytes(self) -> bytes:
        """The scored rows as UTF-8 CSV, for download, safe to open in a spreadsheet."""
        header = [neutralise_cell(name) for name in self.header] or None
        return frame_to_csv_bytes(spreadsheet_safe(self.scored), header)

    def csv_when_asked(self) -> Callable[[], bytes]:
        """`to_csv_bytes` for a download button that builds the file only when clicked, holding
        the result weakly: Streamlit keeps such callables until another session's run ends,
        which would keep a closed session's whole upload (~56 MB for 1M rows) alive."""
        result = weakref.ref(self)

        def build() -> bytes:
            alive = result()
            if alive is None:  # the session that scored it is gone
                raise BatchError(["this result has expired: score the file again"])
            return alive.to_csv_bytes()

        return build


def outside_ranges(features: pd.DataFrame, ranges: Ranges) -> np.ndarray:
    """Which rows fall outside the training data's range on any feature."""
    outside = np.zeros(len(features), dtype=bool)
    for feature, (low, high) in ranges.items():
        values = features[feature].to_numpy(dtype=float)
        outside |= (values < low) | (values > high)
    return outside


def score_csv(
    data: bytes,
    model: Any,
    labels: list[str],
    ranges: Ranges | None = None,
    record: Callable[[pd.DataFrame, np.ndarray], object] | None = None,
    **limits: int,
) -> BatchResult:
    """Parse, validate and score an uploaded CSV: the batch page runs exactly this. With the
    training data's `ranges`, rows outside them are counted in a note; `record` (drift
    monitoring's store, which never raises) gets the scored features and segments."""
    original = parse_batch_csv(data, **limits)
    features = validate_batch(original)
    scored = score_batch(model, features, original, labels)
    if record is not None:
        record(features, scored["segment"].to_numpy())
    notes = [f"Read as {original.attrs['read_as']}."] if "read_as" in original.attrs else []
    if ranges and (outside := int(outside_ranges(features, ranges).sum())):
        notes.append(
            f"{outside:,} customer(s) lie outside the training data ({describe_ranges(ranges)}): "
            "their segments are extrapolations."
        )
    notes += [
        f"The file's own column {old!r} is kept as {new!r}; {old!r} is now the model's."
        for old, new in renamed_inputs(original.columns).items()
    ]
    counts = segment_counts(scored["segment"].to_numpy(), labels)
    return BatchResult(scored, counts, tuple(notes), download_header(original))
