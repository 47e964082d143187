"""Reading an uploaded CSV: its encoding and delimiter found, every cell as the text it is.

Uploaded files are only ever parsed as CSV text: nothing a user sends is unpickled or executed.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterable, Iterator

import pandas as pd

from custseg.errors import BatchError, first_line
from custseg.features import HEADER_ALIASES, MALL_HEADERS, normalise_header
from custseg.serving.validation import quoted

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
