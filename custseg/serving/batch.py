"""Batch scoring of an uploaded CSV: parse it as text, validate every row, score, export.

Uploaded files are only ever parsed as CSV text: nothing a user sends is unpickled or executed.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from custseg.config import first_line
from custseg.features import BOUNDS, FEATURES, HEADER_ALIASES, MALL_HEADERS, normalise_header
from custseg.serving.model import ServingError

MAX_BATCH_ROWS = 1_000_000
MAX_BATCH_BYTES = 100 * 1024 * 1024  # keep in step with server.maxUploadSize (MB)
MAX_LISTED_ROWS = 5  # how many offending line numbers an error message names


class BatchError(ServingError):
    """An uploaded CSV that cannot be scored; `problems` lists each issue in one line."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def match_columns(columns: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Map each feature to the CSV column that holds it; return (mapping, problems)."""
    columns = list(columns)
    mapping: dict[str, str] = {}
    problems: list[str] = []
    for feature, aliases in HEADER_ALIASES.items():
        found = [c for c in columns if normalise_header(c) in aliases]
        if not found:
            problems.append(
                f"missing column {feature!r} (or {MALL_HEADERS[feature]!r}); "
                f"the file has: {', '.join(map(repr, columns)) or 'no columns'}"
            )
        elif len(found) > 1:
            problems.append(
                f"columns {', '.join(map(repr, found))} all look like {feature!r}: keep one"
            )
        else:
            mapping[feature] = found[0]
    return mapping, problems


def _lines(mask: np.ndarray) -> str:
    """The first offending rows as file line numbers (the header is line 1)."""
    rows = np.flatnonzero(mask)[:MAX_LISTED_ROWS] + 2
    more = " …" if mask.sum() > MAX_LISTED_ROWS else ""
    return ", ".join(str(r) for r in rows) + more


def parse_batch_csv(
    data: bytes, max_rows: int = MAX_BATCH_ROWS, max_bytes: int = MAX_BATCH_BYTES
) -> pd.DataFrame:
    """Parse uploaded bytes as UTF-8 CSV text with a header row; raise BatchError if unusable."""
    if len(data) > max_bytes:
        raise BatchError(
            [f"the file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB"]
        )
    if not data.strip():
        raise BatchError(["the file is empty"])
    if b"\x00" in data[:8192]:  # NUL bytes: a binary file (pickle, zip, …), not CSV text
        raise BatchError(["this is a binary file, not CSV text"])
    try:
        frame = pd.read_csv(
            io.BytesIO(data), encoding="utf-8-sig", nrows=max_rows + 1, skipinitialspace=True
        )
    except UnicodeDecodeError:
        raise BatchError(["the file is not UTF-8 text"]) from None
    except pd.errors.EmptyDataError:
        raise BatchError(["the file has no header row"]) from None
    except pd.errors.ParserError as error:
        raise BatchError([f"not a well-formed CSV: {first_line(error)}"]) from None
    if frame.empty:
        raise BatchError(["the file has a header but no data rows"])
    if len(frame) > max_rows:
        raise BatchError([f"more than {max_rows:,} rows; split the file"])
    return frame


def validate_batch(frame: pd.DataFrame) -> pd.DataFrame:
    """The model input for a parsed CSV: both features present, numeric, within the app ranges.

    Every problem is collected (not just the first) and each names its column and the first
    few offending line numbers, so a user can fix the file in one go.
    """
    mapping, problems = match_columns(frame.columns)
    values: dict[str, np.ndarray] = {}
    for feature, column in mapping.items():
        raw = frame[column]
        numeric = raw if pd.api.types.is_numeric_dtype(raw) else pd.to_numeric(raw, errors="coerce")
        array = numeric.to_numpy(dtype=float, na_value=np.nan)
        bad = ~np.isfinite(array)
        if bad.any():
            first = raw.iloc[int(np.flatnonzero(bad)[0])]
            what = "empty" if pd.isna(first) else repr(first)
            problems.append(
                f"{column!r}: {int(bad.sum()):,} missing or non-numeric value(s) at line(s) "
                f"{_lines(bad)} (first: {what})"
            )
        low, high = BOUNDS[feature]
        outside = ~bad & ((array < low) | (array > high))
        if outside.any():
            first = array[np.flatnonzero(outside)[0]]
            problems.append(
                f"{column!r}: {int(outside.sum()):,} value(s) outside {low:g}–{high:g} at "
                f"line(s) {_lines(outside)} (first: {first:g})"
            )
        values[feature] = array
    if problems:
        raise BatchError(problems)
    return pd.DataFrame(values, columns=FEATURES)


def score_batch(
    model: Any, features: pd.DataFrame, original: pd.DataFrame, labels: list[str]
) -> pd.DataFrame:
    """The uploaded rows with `segment` (id) and `segment_name` appended, in the same order."""
    segments = model.predict(features)
    scored = original.copy(deep=False)  # the user's columns are not modified: no copy needed
    scored["segment"] = segments
    # A categorical shares one string per segment instead of a million Python strings.
    scored["segment_name"] = pd.Categorical.from_codes(segments, categories=labels)
    return scored


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

    def to_csv_bytes(self) -> bytes:
        """The scored rows as UTF-8 CSV, for download."""
        return frame_to_csv_bytes(self.scored)


def frame_to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """The CSV of `frame` (header, no index), written by Arrow when it can type every column.

    1M rows: ~0.4 s instead of ~2.2 s with `DataFrame.to_csv`. The text reads back to the same
    table, though it is not byte-identical to pandas' (Arrow quotes every string and writes
    3.0 as 3). Columns Arrow cannot type (mixed Python objects) fall back to pandas.
    """
    import csv

    import pyarrow as pa
    import pyarrow.csv as pa_csv

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        return frame.to_csv(index=False, lineterminator="\n").encode()
    for i, column in enumerate(table.columns):
        if pa.types.is_dictionary(column.type):  # categoricals: write their values
            table = table.set_column(i, table.field(i).name, column.cast(pa.string()))
    header = io.StringIO()
    # Arrow always quotes header names; pandas (and csv) quote only when needed.
    csv.writer(header, lineterminator="\n").writerow(frame.columns)
    body = io.BytesIO()
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    pa_csv.write_csv(table, body, options)
    return header.getvalue().encode() + body.getvalue()


def score_csv(data: bytes, model: Any, labels: list[str], **limits: int) -> BatchResult:
    """Parse, validate and score an uploaded CSV: the batch page runs exactly this."""
    original = parse_batch_csv(data, **limits)
    features = validate_batch(original)
    scored = score_batch(model, features, original, labels)
    return BatchResult(scored, segment_counts(scored["segment"].to_numpy(), labels))
