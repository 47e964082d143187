"""The CSV a user downloads: safe to open in a spreadsheet (OWASP's CSV-injection rule), and
written by Arrow so a million rows take a fraction of a second."""

from __future__ import annotations

import csv
import io

import pandas as pd

from custseg.serving.validation import PLAIN_NUMBER

# OWASP's CSV injection rule: a cell starting with one of these is a formula to a spreadsheet.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_START = "^[=+\\-@\t\r]"  # the same, for Arrow's RE2 over a whole column
_WHOLE_NUMBER = f"^(?:{PLAIN_NUMBER.pattern})$"


def neutralise_cell(value: str) -> str:
    """`value` with a leading apostrophe if a spreadsheet would run it as a formula. Plain
    numbers written as text ("-12", "+3.5") stay as they are: they are data, not formulas."""
    if not value.startswith(FORMULA_STARTS) or PLAIN_NUMBER.fullmatch(value):
        return value
    return "'" + value


def neutralise_texts(values: pd.Series) -> pd.Series:
    """`neutralise_cell` on every text cell of a column, in Arrow (a million cells in ~0.1 s
    instead of ~0.5 s a column in Python); other cells (missing, numbers) as they are."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        cells = pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed Python objects: one cell at a time
        return values.map(lambda v: neutralise_cell(v) if isinstance(v, str) else v)
    starts = pc.match_substring_regex(cells, _FORMULA_START)
    if not pc.any(starts).as_py():  # the common case: nothing to change
        return values
    risky = pc.and_kleene(starts, pc.invert(pc.match_substring_regex(cells, _WHOLE_NUMBER)))
    safe = pc.if_else(risky, pc.binary_join_element_wise("'", cells, ""), cells)
    return pd.Series(safe.to_pandas(), index=values.index, name=values.name)


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every text cell and column name neutralised; numeric columns untouched."""
    safe = frame.rename(columns=lambda c: neutralise_cell(str(c)))
    for column in safe.columns:
        values = safe[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            safe[column] = values.cat.rename_categories(
                [neutralise_cell(str(c)) for c in values.cat.categories]
            )
        elif values.dtype == object or pd.api.types.is_string_dtype(values):
            safe[column] = neutralise_texts(values)
    return safe


def frame_to_csv_bytes(frame: pd.DataFrame, header: list[str] | None = None) -> bytes:
    """The CSV of `frame` (no index) under `header` (default: its column names), written by
    Arrow when it can type every column.

    1M rows: ~0.4 s instead of ~2.2 s with `DataFrame.to_csv`. The text reads back to the same
    table, though it is not byte-identical to pandas' (Arrow writes 3.0 as 3); text cells are
    quoted only when they must be. Columns Arrow cannot type (mixed Python objects) fall back to
    pandas.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    header = [str(c) for c in frame.columns] if header is None else header
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        return frame.set_axis(header, axis=1).to_csv(index=False, lineterminator="\n").encode()
    for i, column in enumerate(table.columns):
        if pa.types.is_dictionary(column.type):  # categoricals: write their values
            table = table.set_column(i, table.field(i).name, column.cast(pa.string()))
    head = io.StringIO()
    # Arrow always quotes header names; pandas (and csv) quote only when needed. csv quotes a
    # name holding a character of its line terminator: with "\r\n", a bare CR is quoted too.
    csv.writer(head, lineterminator="\r\n").writerow(header)
    body = io.BytesIO()
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    pa_csv.write_csv(table, body, options)
    return head.getvalue()[:-2].encode() + b"\n" + body.getvalue()
