"""The capture's files: appending whole lines under a lock, cutting a torn tail a killed writer
left, and reading back what was written (the ids, and the last batch's pace for an estimate).

Only one capture writes a file at a time (a lock file beside it); parallel workers of that
capture append under an exclusive lock of the file itself, so lines never interleave.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import msgspec

from custseg.errors import ConfigError


def failed_path(out: Path) -> Path:
    """Where conversations closed by a dead letter are recorded: beside `out`."""
    return out.with_name(f"{out.stem}.failed{out.suffix}")


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


@contextmanager
def only_writer(out: Path) -> Iterator[None]:
    """Hold the capture lock of `out` (a file beside it) or refuse in one line: two captures
    appending to one file would each write the conversations the other did not see yet."""
    with lock_path(out).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"capture: another capture is writing {out} (it holds {lock_path(out)})"
            ) from None
        yield  # the lock goes with the file's closing, also when the process is killed


def jsonl(records: list[dict]) -> bytes:
    """The records as JSON lines."""
    return b"".join(msgspec.json.encode(r) + b"\n" for r in records)


def append(sink: BinaryIO, lines: bytes) -> None:
    """Append whole lines and fsync, under an exclusive lock so parallel workers never interleave.
    A writer killed mid-write leaves a torn last line; it is cut first (its conversation's offsets
    were never committed, so it is captured again)."""
    fcntl.flock(sink, fcntl.LOCK_EX)
    try:
        cut_torn_tail(sink.fileno())
        sink.write(lines)
        sink.flush()
        os.fsync(sink.fileno())
    finally:
        fcntl.flock(sink, fcntl.LOCK_UN)


def cut_torn_tail(fd: int, chunk: int = 1 << 16) -> None:
    """Truncate the file after its last newline: a writer that died mid-write left the rest."""
    size = os.fstat(fd).st_size
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep, end = 0, size
    while end > 0:  # read back chunk by chunk: a record can be longer than one
        start = max(0, end - chunk)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    os.ftruncate(fd, keep)


def recover(path: Path) -> set[str]:
    """Correlation ids already captured, or closed as failed."""
    return ids_in(path) | ids_in(failed_path(path))


def ids_in(path: Path) -> set[str]:
    """The correlation ids of a JSONL file's lines; a torn last line (crash mid-write) is cut."""
    if not path.exists():
        return set()
    with path.open("r+b") as f:
        cut_torn_tail(f.fileno())
        data = f.read()
    return {json.loads(line)["correlation_id"] for line in data.splitlines() if line.strip()}


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def seconds_per_conversation(path: Path, batch_gap_s: float = 60.0) -> float | None:
    """The measured cost behind capture's estimate: the last batch of conversations in `path`
    (tasks started within `batch_gap_s` of each other, as `submit` sends them), from its first
    task to its last final, divided by its size. None without a readable earlier batch."""
    spans = []
    for line in path.read_text(errors="replace").splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
            spans.append((_utc(row["started_at"]), _utc(row["completed_at"])))
        except (ValueError, KeyError, TypeError, RecursionError):
            continue  # the estimate uses what it can read
    spans.sort()
    batch = spans[-1:]
    for span in reversed(spans[:-1]):
        if (batch[0][0] - span[0]).total_seconds() > batch_gap_s:
            break
        batch.insert(0, span)
    if not batch:
        return None
    took = (max(end for _, end in batch) - batch[0][0]).total_seconds()
    return took / len(batch) if took > 0 else None
