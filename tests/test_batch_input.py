"""Batch scoring of files the tests never wrote by hand: every cell read as text (the user's own
columns come back exactly as uploaded), byte-order marks, literal NaN/inf, plain numbers in
messages. Generated tables, real parsing, a real KMeans; no mocks."""

from __future__ import annotations

import codecs
import csv
import io
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from custseg.errors import BatchError
from custseg.features import BOUNDS, HEADER_ALIASES, INCOME, SPENDING
from custseg.serving.batch import OUTPUT_COLUMNS, score_csv, validate_batch
from custseg.serving.download import neutralise_cell, neutralise_texts
from custseg.serving.model import features_frame
from custseg.serving.upload import parse_batch_csv
from custseg.serving.validation import PLAIN_NUMBER

LABELS = [f"{i} · name" for i in range(3)]


@pytest.fixture(scope="module")
def kmeans() -> KMeans:
    rng = np.random.default_rng(0)
    X = features_frame(rng.uniform(15, 140, 300), rng.uniform(1, 100, 300))
    return KMeans(n_clusters=3, n_init=3, random_state=0).fit(X)


def csv_text(rows: list[list[str]], delimiter: str = ",") -> str:
    """CSV as a spreadsheet writes it: CRLF line ends, a cell quoted when it holds the delimiter,
    a quote, CR or LF (a bare CR is a line break to every reader)."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def downloaded(result) -> list[list[str]]:
    """The download as a spreadsheet reads it: rows of cells (quoting undone, nothing typed)."""
    return list(csv.reader(io.StringIO(result.to_csv_bytes().decode("utf-8"), newline="")))


def problems(data: bytes) -> list[str]:
    with pytest.raises(BatchError) as caught:
        validate_batch(parse_batch_csv(data))
    return caught.value.problems


# --- the user's own columns ---------------------------------------------------------------


def test_other_columns_come_back_exactly_as_uploaded(kmeans: KMeans) -> None:
    header = ["id", "zip", "flag", "note", "annual_income", "spending_score", "", "id"]
    rows = [
        ["007", "01234", "TRUE", "n/a", "60", "50", "", " spaced "],
        ["1e5", "", "false", "NaN", "20", "90", "José 🙂", "multi\r\nline"],
        ["-0", "NULL", "yes", "=1+2", "130", "10", '"quoted", and, commas', "-12"],
    ]
    result = score_csv(csv_text([header, *rows]).encode(), kmeans, LABELS)
    table = downloaded(result)
    segments = kmeans.predict(features_frame([60, 20, 130], [50, 90, 10])).tolist()
    assert table[0] == [*header, *OUTPUT_COLUMNS]  # blank and repeated names as written
    for row, got, segment in zip(rows, table[1:], segments, strict=True):
        expected = [neutralise_cell(cell) for cell in row]
        assert got[:4] + got[6:8] == expected[:4] + expected[6:8]
        assert got[4:6] == row[4:6] and got[8:] == [str(segment), LABELS[segment]]
    assert table[3][3] == "'=1+2" and table[3][7] == "-12"  # formulas neutralised, numbers kept
    # The page's table shows the text too (its names made unique, as pandas does).
    assert result.scored["id"].tolist() == ["007", "1e5", "-0"]
    assert result.scored["id.1"].tolist() == [" spaced ", "multi\r\nline", "-12"]
    assert result.scored["zip"].tolist() == ["01234", "", "NULL"]


HEADER_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
CELL = st.text(HEADER_CHARS, max_size=12)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    """A header of 1-3 extra columns around the two features, and 1-8 rows of any text."""
    extra = draw(st.lists(CELL, min_size=1, max_size=3))
    for name in extra:
        assume(name not in OUTPUT_COLUMNS)
        assume(
            not any(
                name.strip().lower() in (*a, "annual income (k$)") for a in HEADER_ALIASES.values()
            )
        )
    where = draw(st.integers(0, len(extra)))
    header = [*extra[:where], INCOME, SPENDING, *extra[where:]]
    rows = []
    for _ in range(draw(st.integers(1, 8))):
        cells = draw(st.lists(CELL, min_size=len(extra), max_size=len(extra)))
        income = str(draw(st.integers(15, 140)))
        spending = str(draw(st.integers(1, 100)))
        rows.append([*cells[:where], income, spending, *cells[where:]])
    return header, rows


ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-be-bom", "utf-32"]


def encoded(text: str, encoding: str) -> bytes:
    if encoding == "utf-16-be-bom":
        return codecs.BOM_UTF16_BE + text.encode("utf-16-be")
    return text.encode(encoding)


@settings(max_examples=150)
@given(
    table=tables(), delimiter=st.sampled_from([",", ";", "\t"]), encoding=st.sampled_from(ENCODINGS)
)
def test_generated_text_columns_round_trip_cell_for_cell(
    kmeans: KMeans, table: tuple[list[str], list[list[str]]], delimiter: str, encoding: str
) -> None:
    header, rows = table
    data = encoded(csv_text([header, *rows], delimiter), encoding)
    result = score_csv(data, kmeans, LABELS)
    got = downloaded(result)
    features = {header.index(INCOME), header.index(SPENDING)}
    assert got[0] == [neutralise_cell(h) for h in header] + list(OUTPUT_COLUMNS)
    assert len(got) == len(rows) + 1
    for row, out in zip(rows, got[1:], strict=True):
        for i, cell in enumerate(row):
            assert out[i] == (cell if i in features else neutralise_cell(cell))


# --- encodings ------------------------------------------------------------------------------

TEXT = "name,annual_income,spending_score\nJosé,60,50\nÅsa,20,90\n"


@pytest.mark.parametrize(
    ("data", "read_as"),
    [
        (TEXT.encode("utf-8-sig"), "UTF-8 text with a byte-order mark"),
        (TEXT.encode("utf-16"), "UTF-16 LE text with a byte-order mark"),
        (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "UTF-16 BE text with a byte-order mark"),
        (TEXT.encode("utf-32"), "UTF-32 LE text with a byte-order mark"),
        (codecs.BOM_UTF32_BE + TEXT.encode("utf-32-be"), "UTF-32 BE text with a byte-order mark"),
    ],
    ids=["utf-8-bom", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"],
)
def test_unicode_files_with_a_byte_order_mark_are_scored_and_named(
    kmeans: KMeans, data: bytes, read_as: str
) -> None:
    result = score_csv(data, kmeans, LABELS)
    assert result.notes == (f"Read as {read_as}.",)
    assert result.scored["name"].tolist() == ["José", "Åsa"]
    assert (
        result.scored["segment"].tolist()
        == kmeans.predict(features_frame([60, 20], [50, 90])).tolist()
    )


NOT_THE_MARK = "the file starts with a {0} byte-order mark but is not {0} text (byte {1})"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (TEXT.encode("utf-16-le"), "this looks like UTF-16 LE text without a byte-order mark"),
        (TEXT.encode("utf-16-be"), "this looks like UTF-16 BE text without a byte-order mark"),
        (codecs.BOM_UTF16_LE + b"\x00\xd8a\x00", NOT_THE_MARK.format("UTF-16 LE", 2)),
        (codecs.BOM_UTF8 + b"a,b\n\xff\n", NOT_THE_MARK.format("UTF-8", 7)),
        (codecs.BOM_UTF16_LE + "a\x00b".encode("utf-16-le"), "this is a binary file"),
        (b"PK\x03\x04\x14\x00\x00\x00", "this is a binary file, not CSV text"),
    ],
    ids=["utf-16-le-bare", "utf-16-be-bare", "bad-utf-16", "bad-utf-8", "nul-in-utf-16", "zip"],
)
def test_unreadable_encodings_are_one_line_naming_them(data: bytes, expected: str) -> None:
    with pytest.raises(BatchError) as caught:
        parse_batch_csv(data)
    [problem] = caught.value.problems
    assert problem.startswith(expected) and "\n" not in problem


# --- what the messages say ------------------------------------------------------------------


def test_literal_values_are_named_and_numbers_printed_plainly() -> None:
    rows = ["NaN,50", "inf,50", "-inf,50", "1e400,50", "n/a,50", "-1e308,50", "140.5,50", "60,nan"]
    found = problems(("annual_income,spending_score\n" + "\n".join(rows) + "\n").encode())
    assert found == [
        "'annual_income': 5 missing or non-numeric value(s) at line(s) 2, 3, 4, 5, 6 "
        "(first: 'NaN')",
        "'annual_income': 2 value(s) outside 15–140 at line(s) 7, 8 (first: -1e+308)",
        "'spending_score': 1 missing or non-numeric value(s) at line(s) 9 (first: 'nan')",
    ]
    [message] = problems(b"annual_income,spending_score\n-inf,50\n")
    assert message.endswith("(first: '-inf')")
    [message] = problems(("annual_income,spending_score\n" + "x" * 10_000 + ",50\n").encode())
    assert message.endswith(f"(first: '{'x' * 40}…')"), "a long cell is cut short, never echoed"


FEATURE_CELL = st.one_of(
    st.integers(-200, 300).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["NaN", "inf", "-Infinity", "n/a", "", " 60 ", "1e400", "0x10", "1_000", "60.", ".5e2"]
    ),
    st.text(st.characters(codec="utf-8", exclude_characters='\x00\r\n,"'), max_size=10),
)


def valid_cell(feature: str, cell: str) -> bool:
    """The rule, restated: a plain decimal number (blanks around allowed), finite, in bounds."""
    text = cell.strip()
    if not PLAIN_NUMBER.fullmatch(text):
        return False
    low, high = BOUNDS[feature]
    return math.isfinite(float(text)) and low <= float(text) <= high


@settings(max_examples=300)
@given(cells=st.lists(st.tuples(FEATURE_CELL, FEATURE_CELL), min_size=1, max_size=6))
def test_generated_feature_cells_are_scored_or_named_in_one_line(
    kmeans: KMeans, cells: list[tuple[str, str]]
) -> None:
    assume(all(i.strip() or s.strip() for i, s in cells))  # a blank line is no row
    text = "annual_income,spending_score\n" + "".join(f"{i},{s}\n" for i, s in cells)
    good = [valid_cell(INCOME, i) and valid_cell(SPENDING, s) for i, s in cells]
    try:
        result = score_csv(text.encode(), kmeans, LABELS)
    except BatchError as error:
        assert not all(good)
        for problem in error.problems:
            assert problem.startswith(("'annual_income': ", "'spending_score': "))
            assert "\n" not in problem and "np." not in problem and "float64" not in problem
        return
    assert all(good)
    incomes, spendings = [float(i) for i, _ in cells], [float(s) for _, s in cells]
    assert result.scored["annual_income"].tolist() == incomes
    expected = kmeans.predict(features_frame(incomes, spendings)).tolist()
    assert result.scored["segment"].tolist() == expected


@given(st.lists(st.none() | st.text(max_size=20), max_size=20))
def test_a_column_is_neutralised_as_each_cell_would_be(cells: list[str | None]) -> None:
    import pandas as pd

    column = pd.Series(cells, dtype="str")
    expected = [None if c is None else neutralise_cell(c) for c in cells]
    got = neutralise_texts(column).tolist()
    assert [None if isinstance(g, float) else g for g in got] == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a," * 600_000 + b"\n1,2\n", "the header has more than 1,000 columns, the limit"),
        (b"x" * (2 << 20) + b"\n1\n", "not a well-formed CSV: its header row cannot be read"),
        (b'"unclosed,annual_income,spending_score\n1,2,3\n' + b"x" * 200_000, "not a well-formed"),
    ],
    ids=["600,000 header fields", "2 MiB header", "unclosed quote"],
)
def test_a_header_that_cannot_be_one_is_refused_in_one_line(data: bytes, expected: str) -> None:
    with pytest.raises(BatchError) as caught:
        parse_batch_csv(data)
    [problem] = caught.value.problems
    assert problem.startswith(expected), problem


def test_the_delimiter_is_the_one_that_names_the_features(kmeans: KMeans) -> None:
    # More semicolons than commas in the header, but only the comma names both features.
    data = b"a;b;c;d,annual_income,spending_score\nx;y,60,50\n"
    result = score_csv(data, kmeans, LABELS)
    assert result.scored["a;b;c;d"].tolist() == ["x;y"] and result.notes == ()
