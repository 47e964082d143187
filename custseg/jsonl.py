"""The project's one JSON Lines format: every JSONL file (captured conversations and failures,
eval results, judge-cache seeds, calibration rows) is written and read here.

Writing: one JSON value per line, UTF-8, non-ASCII text kept readable (ensure_ascii=False), but
the characters that break a line or UTF-8 are escaped as `\\uXXXX`: U+0085, U+2028 and U+2029
(which `str.splitlines()`, editors and JavaScript treat as line ends; JSON itself allows them raw)
and lone surrogates U+D800-U+DFFF (legal in a JSON string, but not encodable as UTF-8). So each
record is exactly one line for any line splitter, and any string round-trips. `ensure_ascii=True`
would give the same safety, but would make every non-ASCII answer unreadable in the files.

Reading splits on "\\n" only, never `str.splitlines()`: a raw U+2028 written by another tool
stays inside its record. A last line without its newline is a writer that stopped mid-write: kept
if it is complete JSON, else reported as torn, like any other bad line, with its line number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from custseg.io import write_atomic

# Inside json.dumps output these characters can only occur in strings, where an escape is legal.
_UNSAFE = re.compile("[\x85\u2028\u2029\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def dumps_line(record: Any, *, sort_keys: bool = False) -> str:
    """`record` as one JSON line, its newline included. Times and msgspec structs become what
    msgspec puts on the wire (RFC 3339 strings, objects)."""
    text = json.dumps(msgspec.to_builtins(record), ensure_ascii=False, sort_keys=sort_keys)
    return _UNSAFE.sub(_escape, text) + "\n"


def encode(records: Iterable[Any], *, sort_keys: bool = False) -> bytes:
    """The records as JSON lines (UTF-8 bytes, one line each)."""
    return "".join(dumps_line(r, sort_keys=sort_keys) for r in records).encode()


def write(path: Path | str, records: Iterable[Any], *, sort_keys: bool = False) -> None:
    """Replace `path` with the records as JSON lines, atomically (see custseg.io)."""
    data = encode(records, sort_keys=sort_keys)
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


@dataclass(frozen=True)
class BadLine:
    """A line that is not a JSON value: its 1-based number and why."""

    number: int
    why: str


@dataclass
class Lines:
    """What a JSONL file holds: the values read, each with its line number, and the bad lines."""

    records: list[tuple[int, Any]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)

    @property
    def values(self) -> list[Any]:
        return [value for _, value in self.records]

    def objects(self) -> list[dict[str, Any]]:
        """The values that are JSON objects (what every project file holds per line)."""
        return [value for value in self.values if isinstance(value, dict)]


def parse(data: bytes | str) -> Lines:
    """Split on "\\n" only; blank lines are skipped, every other line is a value or a BadLine."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    pieces = raw.split(b"\n")
    torn = pieces[-1].strip() != b""  # no newline after the last line
    lines = Lines()
    for number, piece in enumerate(pieces, start=1):
        if not piece.strip():
            continue
        try:
            lines.records.append((number, json.loads(piece.decode("utf-8"))))
        except UnicodeDecodeError:
            lines.bad.append(BadLine(number, "not UTF-8"))
        except (json.JSONDecodeError, RecursionError):
            last = torn and number == len(pieces)
            lines.bad.append(BadLine(number, "torn last line" if last else "not valid JSON"))
    return lines


def read(path: Path | str) -> Lines:
    """The JSON lines of `path` (see `parse`); OSError as open() raises it."""
    return parse(Path(path).read_bytes())
