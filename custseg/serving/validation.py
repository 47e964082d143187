"""What a customer's features must be to be scored, once for every way in: the app's sliders,
batch scoring (CSV) and REST (JSON or CSV).

The rule: each feature is a finite number within its BOUNDS (custseg/features.py). Text becomes
a number only when it is a plain decimal number (`60`, `-1.5`, `6e1`, spaces around allowed);
`NaN`, `inf`, `1,5`, `0x10` are not numbers. Each way in reads its input into numbers and calls
`feature_problems`; the problems are worded here, so all three say the same thing the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from custseg.features import BOUNDS

# A plain decimal number written as text. ASCII digits only (Python's \d would also take other
# scripts' digits): the same pattern runs in Arrow's RE2 over whole columns and in `re` per cell.
PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
NOT_A_NUMBER = "missing or non-numeric value(s)"
MAX_QUOTED_CHARS = 40  # a value quoted in a message: enough to recognise it, never a whole cell
MAX_QUOTED_BYTES = 120  # … and its size as JSON (a non-ASCII character escapes to 6-12 bytes)
MAX_LISTED = 5  # how many offending positions a message lists


@dataclass(frozen=True)
class FeatureProblem:
    """Values of one input field that break one rule."""

    field: str  # the column as the input named it
    rule: str  # NOT_A_NUMBER, or "value(s) outside <low>–<high>"
    positions: np.ndarray  # 0-based positions of the offending values
    first: str  # the first offending value as plain text

    def describe(self, unit: str, first_number: int) -> str:
        """One line: field, count, where (`unit`(s) numbered from `first_number`), first value."""
        shown = ", ".join(str(p + first_number) for p in self.positions[:MAX_LISTED])
        more = " …" if len(self.positions) > MAX_LISTED else ""
        return (
            f"{quoted(self.field)}: {len(self.positions):,} {self.rule} at {unit}(s) "
            f"{shown}{more} (first: {self.first})"
        )


def feature_problems(
    feature: str, field: str, numbers: np.ndarray, shown: Callable[[int], str]
) -> list[FeatureProblem]:
    """What is wrong with `numbers`, the values of `feature` read from `field`: NaN where the
    input held no number, which `shown(position)` names as the input had it."""
    problems = []
    bad = ~np.isfinite(numbers)
    if bad.any():
        where = np.flatnonzero(bad)
        problems.append(FeatureProblem(field, NOT_A_NUMBER, where, shown(int(where[0]))))
    low, high = BOUNDS[feature]
    outside = ~bad & ((numbers < low) | (numbers > high))
    if outside.any():
        where = np.flatnonzero(outside)
        rule = f"value(s) outside {low:g}–{high:g}"
        problems.append(FeatureProblem(field, rule, where, plain_number(numbers[where[0]])))
    return problems


def frame_problems(features: pd.DataFrame) -> list[FeatureProblem]:
    """The problems of a numeric frame whose columns are the features (e.g. the app's customer)."""
    problems = []
    for feature in features.columns:
        numbers = features[feature].to_numpy(dtype=float)
        problems += feature_problems(
            feature, feature, numbers, lambda i, numbers=numbers: plain_number(numbers[i])
        )
    return problems


def text_to_numbers(texts: pd.Series, decimal_comma: bool = False) -> np.ndarray:
    """Column text → float64, NaN where a cell is not a plain decimal number (with
    `decimal_comma`, `60,5` is 60.5). Vectorised in Arrow: a million cells take ~0.1 s (pandas'
    to_numeric ~1.3 s). Numeric columns pass as they are."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pd.api.types.is_numeric_dtype(texts) and not pd.api.types.is_bool_dtype(texts):
        return texts.to_numpy(dtype=float, na_value=np.nan)
    try:
        cells = pa.array(texts, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed Python objects: each as its text
        cells = pa.array([None if _missing(v) else str(v) for v in texts], pa.string())
    trimmed = pc.utf8_trim_whitespace(cells)
    if decimal_comma:
        trimmed = pc.replace_substring(trimmed, ",", ".")
    plain = pc.match_substring_regex(trimmed, f"^(?:{PLAIN_NUMBER.pattern})$")
    numbers = pc.cast(pc.if_else(plain, trimmed, pa.scalar("nan")), pa.float64())
    return numbers.to_numpy(zero_copy_only=False)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def text_shown(value: object) -> str:
    """A cell as a message names it: `empty`, or quoted (and cut short when long)."""
    if isinstance(value, str):
        return "empty" if not value.strip() else quoted(value)
    if _missing(value):
        return "empty"
    if isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_):
        return plain_number(value)
    return quoted(str(value))


def quoted(text: str) -> str:
    """`text` in quotes as Python writes it, cut to MAX_QUOTED_CHARS characters and to
    MAX_QUOTED_BYTES once JSON-escaped (a REST error carries it: 40 astral characters took
    480 bytes there)."""
    shown = text[:MAX_QUOTED_CHARS]
    while len(json.dumps(repr(shown))) > MAX_QUOTED_BYTES:
        shown = shown[:-1]
    return repr(shown if shown == text else shown + "…")


def plain_number(value: float) -> str:
    """A number as people write it: 200, 14.9, 1e+308, inf, nan (never `np.float64(...)`)."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)
