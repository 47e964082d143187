"""The capture's files: appending whole lines under a lock, cutting a torn tail a killed writer
left, and reading back what was written (the ids, and the last batch's pace for an estimate).

Only one capture writes a file at a time (a lock file beside it); parallel workers of that
capture append under an exclusive lock of the file itself, so lines never interleave.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from custseg.errors import ConfigError
from custseg.io import cannot_write
from custseg.jsonl import encode, read


def failed_path(out: Path) -> Path:
    """Where conversations closed by a dead letter are recorded: beside `out`."""
    return out.with_name(f"{out.stem}.failed{out.suffix}")


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


@contextmanager
def only_writer(out: Path) -> Iterator[None]:
    """Hold the capture lock of `out` (a file beside it) or refuse in one line: two captures
    appending to one file would each write the conversations the other did not see yet.
    The directory is created; a disk that refuses is WriteError (one line, path and errno)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = lock_path(out).open("a")
    except OSError as error:
        raise cannot_write(error.filename or out, error, "capture") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"capture: another capture is writing {out} (it holds {lock_path(out)})"
            ) from None
        yield  # the lock goes with the file's closing, also when the process is killed


def jsonl(records: list[dict]) -> bytes:
    """The records as JSON lines (custseg.jsonl: any string round-trips, one line each)."""
    return encode(records)


def open_sink(path: Path) -> BinaryIO:
    """`path` opened to append (a+: the tail can be read back, see append); WriteError if not.
    Unbuffered: a refused write fails in `append`, not again when the file is closed."""
    try:
        return path.open("a+b", buffering=0)
    except OSError as error:
        raise cannot_write(path, error, "capture") from None


def append(sink: BinaryIO, lines: bytes) -> None:
    """Append whole lines and fsync, under an exclusive lock so parallel workers never interleave.
    A writer killed mid-write leaves a torn last line; it is cut first (its conversation's offsets
    were never committed, so it is captured again). A full disk, a read-only file system or a
    file removed underneath is WriteError: the caller must not commit past these lines."""
    try:
        fcntl.flock(sink, fcntl.LOCK_EX)
        try:
            cut_torn_tail(sink.fileno())
            rest = memoryview(lines)
            while rest:  # a write may take only part (a disk filling up), then refuse the rest
                rest = rest[os.write(sink.fileno(), rest) :]
            os.fsync(sink.fileno())
            _still_in_place(sink)
        finally:
            fcntl.flock(sink, fcntl.LOCK_UN)
    except OSError as error:
        raise cannot_write(sink.name, error, "capture") from None


def _still_in_place(sink: BinaryIO) -> None:
    """Raise if the file written is no longer at its path (its directory removed, the file moved
    away): the lines went to a file no reader will open, so they do not count as written."""
    if os.stat(sink.name).st_ino != os.fstat(sink.fileno()).st_ino:
        raise OSError(errno.ENOENT, "the file was replaced while the capture wrote it")


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
    if not path.is_file():  # missing, or a device (reading /dev/full or /dev/zero never ends)
        return set()
    try:
        with path.open("r+b") as f:
            cut_torn_tail(f.fileno())
    except OSError as error:
        raise cannot_write(path, error, "capture") from None
    ids = (r.get("correlation_id") for r in read(path).objects())
    return {cid for cid in ids if isinstance(cid, str)}


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def seconds_per_conversation(path: Path, batch_gap_s: float = 60.0) -> float | None:
    """The measured cost behind capture's estimate: the last batch of conversations in `path`
    (tasks started within `batch_gap_s` of each other, as `submit` sends them), from its first
    task to its last final, divided by its size. None without a readable earlier batch."""
    spans = []
    for row in read(path).objects() if path.is_file() else []:
        try:
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
