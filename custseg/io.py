"""Writes that never leave a half-written output behind, and fail in one line when they cannot
(a full disk, a read-only file system, a directory removed underneath)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from custseg.errors import WriteError, first_line

# What open() would give a new file: 0666 less the umask (read once, at import).
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def cannot_write(path: Path | str, error: OSError, who: str = "") -> WriteError:
    """`[who: ]cannot write PATH: [Errno N] reason`, the one line every writer fails with."""
    cause = f"[Errno {error.errno}] {error.strerror}" if error.errno else first_line(error)
    return WriteError(f"{who + ': ' if who else ''}cannot write {path}: {cause}")


def write_atomic(path: Path | str, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, then rename it into place.
    WriteError (one line, path and errno) if the disk refuses any step; the old file stays."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, FILE_MODE)  # mkstemp's 0600 would make every output private to its writer
        write(tmp)
        _fsync(tmp)  # a full disk may only say so here, and the rename must not outrun the data
        os.replace(tmp, path)
    except OSError as error:
        raise cannot_write(path, error) from None
    finally:
        if tmp is not None:  # still there unless renamed: a failure, or an interruption
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path | str, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: Path | str, data: Any) -> None:
    """Stable, diff-friendly JSON (sorted keys, trailing newline)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
