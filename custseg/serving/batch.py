"""Batch scoring of an uploaded CSV: parse it as text, validate every row, score, export.

Uploaded files are only ever parsed as CSV text: nothing a user sends is unpickled or executed.
Every cell is read as the text it is: the columns other than the features come back in the
download exactly as uploaded (`007`, `TRUE`, `n/a`, empty cells), apart from the leading `'`
that keeps a spreadsheet from running a cell as a formula.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from custseg.errors import BatchError, first_line
from custseg.features import FEATURES, HEADER_ALIASES, MALL_HEADERS, normalise_header
from custseg.serving.validation import (
    PLAIN_NUMBER,
    feature_problems,
    quoted,
    text_shown,
    text_to_numbers,
)

MAX_BATCH_ROWS = 1_000_000
MAX_BATCH_BYTES = 100 * 1024 * 1024  # keep in step with server.maxUploadSize (MB)


def match_columns(columns: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Map each feature to the CSV column that holds it; return (mapping, problems)."""
    columns = [str(c) for c in columns]
    mapping: dict[str, str] = {}
    problems: list[str] = []
    for feature, aliases in HEADER_ALIASES.items():
        found = [c for c in columns if normalise_header(c) in aliases]
        if not found:
            have = ", ".join(map(quoted, columns[:20])) + (" …" if len(columns) > 20 else "")
            problems.append(
                f"missing column {feature!r} (or {MALL_HEADERS[feature]!r}); "
                f"the file has: {have or 'no columns'}"
            )
        elif len(found) > 1:
            problems.append(
                f"columns {', '.join(map(quoted, found))} all look like {feature!r}: keep one"
            )
        else:
            mapping[feature] = found[0]
    return mapping, problems


# Byte-order marks, UTF-32's first (UTF-32 LE's starts with UTF-16 LE's): (mark, codec, name).
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32 LE"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32 BE"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)
# Without a mark, what spreadsheets export besides UTF-8: Excel's "CSV" on Windows is
# Windows-1252 (a superset of Latin-1's printable range); Latin-1 decodes any byte, so it is the
# last resort. (codec, name; "" for plain UTF-8, which needs no note).
ENCODINGS = (("utf-8", ""), ("cp1252", "Windows-1252"), ("latin-1", "Latin-1"))
DELIMITERS = (",", ";", "\t")  # `;` where the decimal mark is a comma (most of Europe)
SNIFFED_BYTES = 8192  # how much of the start a NUL byte or the encoding is judged on
MAX_HEADER_CHARS = 1 << 20  # where the header row must end: a longer one is not read
MAX_COLUMNS = 1_000


def decode_text(data: bytes) -> tuple[str, str]:
    """The bytes as text and how they were read: "" for plain UTF-8, else e.g. "UTF-16 LE text
    with a byte-order mark" or "Windows-1252 text". BatchError, naming the encoding, for a file
    whose byte-order mark it contradicts, UTF-16 without a mark, or a binary file."""
    for mark, codec, name in BOMS:
        if data.startswith(mark):
            try:
                text = data[len(mark) :].decode(codec)
            except UnicodeDecodeError as error:
                raise BatchError(
                    [
                        f"the file starts with a {name} byte-order mark but is not {name} text "
                        f"(byte {len(mark) + error.start:,}): save it again as UTF-8"
                    ]
                ) from None
            if "\x00" in text[:SNIFFED_BYTES]:
                raise BatchError(["this is a binary file, not CSV text"])
            return text, f"{name} text with a byte-order mark"
    if b"\x00" in data[:SNIFFED_BYTES]:  # NUL bytes: a binary file (pickle, zip, …), not CSV text
        raise BatchError([_nul_problem(data[:SNIFFED_BYTES])])
    for codec, name in ENCODINGS:
        try:
            return data.decode(codec), name and f"{name} text"
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def _nul_problem(head: bytes) -> str:
    """What a start with NUL bytes is: UTF-16 without its mark (text in every other byte) or a
    binary file."""
    for name, zeros, text in (("LE", head[1::2], head[0::2]), ("BE", head[0::2], head[1::2])):
        if zeros.count(0) > 0.9 * len(zeros) and text.count(0) < 0.1 * len(text):
            return (
                f"this looks like UTF-16 {name} text without a byte-order mark: save it as "
                "UTF-8 (or as UTF-16 with a byte-order mark)"
            )
    return "this is a binary file, not CSV text"


def first_record(text: str, delimiter: str) -> list[str]:
    """The first non-empty CSV record of `text` (quoted fields may span lines), read from its
    first MAX_HEADER_CHARS only. [] when there is none, or a field of it is longer than the csv
    module's limit (128 KiB: an unclosed quote, say)."""
    rows = csv.reader(_lines(text[:MAX_HEADER_CHARS]), delimiter=delimiter)
    try:
        return next((row for row in rows if row), [])
    except csv.Error:
        return []


def _lines(text: str) -> Iterator[str]:
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def sniff_delimiter(text: str) -> str:
    """The delimiter under which the header names both features; else the one giving the header
    the most fields (a comma on a tie or when none splits it)."""
    headers = {d: first_record(text, d) for d in DELIMITERS}
    for delimiter, header in headers.items():
        if len(header) <= MAX_COLUMNS and not match_columns(header)[1]:
            return delimiter
    return max(DELIMITERS, key=lambda d: len(headers[d]))  # max keeps the first of equals


def unique_names(header: list[str]) -> list[str]:
    """Column names for the table: the header's own, a blank one as 'Unnamed: <i>' and a repeat
    numbered ('x.1'), as pandas names them. The download writes the header as it was."""
    names: list[str] = []
    taken: set[str] = set()
    for i, name in enumerate(header):
        base = name if name.strip() else f"Unnamed: {i}"
        candidate, n = base, 1
        while candidate in taken:
            candidate, n = f"{base}.{n}", n + 1
        taken.add(candidate)
        names.append(candidate)
    return names


_ARROW_SHAPE = re.compile(r"Row #(\d+): Expected (\d+) columns, got (\d+)")


def read_cells(data: bytes, delimiter: str, width: int) -> tuple[list[str], pd.DataFrame]:
    """(the header row, the data rows) of UTF-8 CSV `data` whose header has `width` fields, every
    cell as text, by Arrow's CSV reader (a million rows in ~0.15 s; pandas' reader takes ~1 s
    for text columns)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    unreadable = BatchError(["not a well-formed CSV: its header row cannot be read"])
    if not width:
        raise unreadable
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(data),
            read_options=pa_csv.ReadOptions(
                use_threads=False,  # the app's server is shared: one core per upload
                autogenerate_column_names=True,  # the header is a row: its cells stay text
                block_size=max(1 << 20, len(data) + 1),  # one block: a cell of any size fits
            ),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types={f"f{i}": pa.string() for i in range(width)},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as error:
        shape = _ARROW_SHAPE.search(str(error))
        what = (
            f"row {shape[1]} has {shape[3]} field(s), the header {shape[2]}"
            if shape
            else first_line(error)[:200]
        )
        raise BatchError([f"not a well-formed CSV: {what}"]) from None
    if table.num_columns != width or any(not pa.types.is_string(t) for t in table.schema.types):
        raise unreadable
    header = [str(table.column(i)[0]) for i in range(width)]
    rows = table.slice(1).rename_columns(unique_names(header)).to_pandas()
    return header, rows


def parse_batch_csv(
    data: bytes, max_rows: int = MAX_BATCH_ROWS, max_bytes: int = MAX_BATCH_BYTES
) -> pd.DataFrame:
    """Parse uploaded bytes as CSV with a header row, every cell as text; BatchError if unusable.

    UTF-8 (with or without a byte-order mark), UTF-16 or UTF-32 with a byte-order mark,
    Windows-1252 or Latin-1; `,`, `;` (then a decimal comma is read as a point) or tab separated.
    `frame.attrs`: "header", the file's header row as written (the columns' names are made
    unique); "decimal_comma"; "read_as", how the file was read when not UTF-8 with commas.
    """
    if len(data) > max_bytes:
        raise BatchError(
            [f"the file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB"]
        )
    text, encoding = decode_text(data)
    if not text.strip():
        raise BatchError(["the file is empty"])
    delimiter = sniff_delimiter(text)
    width = len(first_record(text, delimiter))
    if width > MAX_COLUMNS:
        raise BatchError([f"the header has more than {MAX_COLUMNS:,} columns, the limit"])
    utf8 = data if not encoding else text.encode()  # Arrow reads UTF-8 bytes
    header, frame = read_cells(utf8, delimiter, width)
    if frame.empty:
        raise BatchError(["the file has a header but no data rows"])
    if len(frame) > max_rows:
        raise BatchError([f"more than {max_rows:,} rows; split the file"])
    notes = [encoding] if encoding else []
    if delimiter != ",":
        named = "tab" if delimiter == "\t" else "';' (decimal comma)"
        notes.append(f"{named}-separated")
    frame.attrs["header"] = header
    frame.attrs["decimal_comma"] = delimiter == ";"
    if notes:
        frame.attrs["read_as"] = ", ".join(notes)
    return frame


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


Ranges = dict[str, tuple[float, float]]


def training_ranges(customers: pd.DataFrame) -> Ranges:
    """Each feature's (min, max) in the training data: outside it a segment is a guess."""
    return {f: (float(customers[f].min()), float(customers[f].max())) for f in FEATURES}


def outside_ranges(features: pd.DataFrame, ranges: Ranges) -> np.ndarray:
    """Which rows fall outside the training data's range on any feature."""
    outside = np.zeros(len(features), dtype=bool)
    for feature, (low, high) in ranges.items():
        values = features[feature].to_numpy(dtype=float)
        outside |= (values < low) | (values > high)
    return outside


def describe_ranges(ranges: Ranges) -> str:
    return ", ".join(f"{f} {low:g}–{high:g}" for f, (low, high) in ranges.items())


def score_csv(
    data: bytes, model: Any, labels: list[str], ranges: Ranges | None = None, **limits: int
) -> BatchResult:
    """Parse, validate and score an uploaded CSV: the batch page runs exactly this. With the
    training data's `ranges`, rows outside them are counted in a note."""
    original = parse_batch_csv(data, **limits)
    features = validate_batch(original)
    scored = score_batch(model, features, original, labels)
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
