"""The append-only store of what was scored: the features, the assigned segment and the model
version (nothing else: no ids, no other columns), one small Parquet file per scoring call under
`<folder>/day=YYYY-MM-DD/`, read back by `custseg monitor --window <folder>`.

Recording must never slow or break scoring: any failure (a full disk, a read-only folder) is
logged once and the call goes on. The store is bounded: past `max_bytes` the oldest files are
deleted (retention is by size, oldest day first).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from custseg.features import FEATURES
from custseg.monitoring.drift import SEGMENT

VERSION = "version"
DEFAULT_MAX_BYTES = 256 * 2**20
RECORD_DIR_ENV = "CUSTSEG_RECORD_DIR"  # where the app and `custseg serve` record (unset: off)
log = logging.getLogger(__name__)


class ScoredStore:
    """Records of one served version in `folder`, at most about `max_bytes` on disk."""

    def __init__(self, folder: Path, version: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.folder, self.version, self.max_bytes = Path(folder), str(version), max_bytes
        self._size: int | None = None  # bytes on disk, counted on the first write
        self._warned = False

    def record(self, features: pd.DataFrame, segments: np.ndarray) -> bool:
        """Append one scoring call's rows; False (and a warning, once) when it cannot."""
        tmp: Path | None = None
        try:
            frame = features[FEATURES].astype(float).reset_index(drop=True)
            frame[SEGMENT] = np.asarray(segments, dtype=np.int32)
            frame[VERSION] = self.version
            now = datetime.now(UTC)
            day = self.folder / f"day={now:%Y-%m-%d}"
            day.mkdir(parents=True, exist_ok=True)
            name = f"{now:%H%M%S%f}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = day / f".{name}.tmp"  # pyarrow skips dot files: a reader never sees half a file
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, day / name)
            tmp = None
            if self._size is None:  # the first write counts what is already there
                self._size = prune(self.folder, self.max_bytes)
            else:
                self._size += (day / name).stat().st_size
                if self._size > self.max_bytes:
                    self._size = prune(self.folder, self.max_bytes)
            return True
        except Exception as error:  # scoring goes on whatever the disk says
            if not self._warned:
                log.warning("scored rows not recorded in %s: %s", self.folder, error)
                self._warned = True
            return False
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)


def prune(folder: Path, max_bytes: int) -> int:
    """Delete the oldest records until the store holds at most 90 % of `max_bytes` (room for
    the next writes); returns the bytes left."""
    files = sorted(folder.glob("day=*/*.parquet"))  # day, then time of day: oldest first
    sizes = [f.stat().st_size for f in files]
    total = sum(sizes)
    if total <= max_bytes:
        return total
    for file, size in zip(files, sizes, strict=True):
        if total <= 0.9 * max_bytes:
            break
        file.unlink(missing_ok=True)
        total -= size
    for day in folder.glob("day=*"):
        with contextlib.suppress(OSError):
            day.rmdir()  # only when empty
    return total


@functools.cache  # one store per folder and version, so its size count lives across app reruns
def _store(folder: Path, version: str) -> ScoredStore:
    return ScoredStore(folder, version)


def recorder(
    version: str, folder: Path | None = None, environ: Mapping[str, str] | None = None
) -> Callable[[pd.DataFrame, np.ndarray], bool] | None:
    """The `record(features, segments)` of `version`'s store in `folder`, else in
    $CUSTSEG_RECORD_DIR; None when neither is set (recording is off)."""
    chosen = folder or (os.environ if environ is None else environ).get(RECORD_DIR_ENV, "").strip()
    return _store(Path(chosen).absolute(), str(version)).record if chosen else None
