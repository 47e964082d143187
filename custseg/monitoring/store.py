"""The append-only store of what was scored: the features, the assigned segment and the model
version (nothing else: no ids, no other columns), one small Parquet file per scoring call under
`<folder>/day=YYYY-MM-DD/`, read back by the `monitor` stage and `custseg monitor --window`.

Every scoring path records (the app's Predict button and batch page, `custseg serve`): into
data/scored/ by default (git-ignored, the `monitor` stage's dependency), into
$CUSTSEG_RECORD_DIR when set, nowhere when it is `off`.

Recording must never slow or break scoring: the scoring paths hand their rows to a
`BackgroundWriter` (a bounded queue and one thread that writes), and any failure (a full disk,
a read-only folder, a full queue) is logged once and the call goes on. The store is bounded:
past `max_bytes` the oldest files are deleted (retention is by size, oldest day first).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from custseg.features import FEATURES
from custseg.io import write_atomic
from custseg.monitoring.drift import SEGMENT
from custseg.monitoring.window import VERSION
from custseg.paths import SCORED

__all__ = ["RECORD_DIR_ENV", "VERSION", "ScoredStore", "record_dir", "recorder"]
DEFAULT_MAX_BYTES = 256 * 2**20
RECORD_DIR_ENV = "CUSTSEG_RECORD_DIR"  # where scoring records (unset: data/scored/)
RECORD_OFF = "off"  # CUSTSEG_RECORD_DIR=off: record nothing
log = logging.getLogger(__name__)


class ScoredStore:
    """Records of one served version in `folder`, at most about `max_bytes` on disk."""

    def __init__(self, folder: Path, version: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.folder, self.version, self.max_bytes = Path(folder), str(version), max_bytes
        self._size: int | None = None  # bytes on disk, counted on the first write
        self._warned = False

    def record(self, features: pd.DataFrame, segments: np.ndarray) -> bool:
        """Append one scoring call's rows; False (and a warning, once) when it cannot."""
        try:
            frame = features[FEATURES].astype(float).reset_index(drop=True)
            frame[SEGMENT] = np.asarray(segments, dtype=np.int32)
            frame[VERSION] = self.version
            now = datetime.now(UTC)
            day = self.folder / f"day={now:%Y-%m-%d}"
            path = day / f"{now:%H%M%S%f}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
            # The temporary file is a dot file: pyarrow skips it, so no reader sees half a file.
            write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
            if self._size is None:  # the first write counts what is already there
                self._size = prune(self.folder, self.max_bytes)
            else:
                self._size += path.stat().st_size
                if self._size > self.max_bytes:
                    self._size = prune(self.folder, self.max_bytes)
            return True
        except Exception as error:  # scoring goes on whatever the disk says
            if not self._warned:
                log.warning("scored rows not recorded in %s: %s", self.folder, error)
                self._warned = True
            return False


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


class BackgroundWriter:
    """Records of `store` written off the scoring thread: `record` only queues a copy of the
    rows (never blocks; past `max_pending` queued calls the rows are dropped, warned once) and
    one daemon thread writes them; what is queued at exit is written first (atexit)."""

    def __init__(self, store: ScoredStore, max_pending: int = 1000) -> None:
        self.store = store
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._warned = False

    def record(self, features: pd.DataFrame, segments: np.ndarray) -> bool:
        """Queue one scoring call's rows; False (and a warning, once) when they are dropped."""
        try:
            rows = features[FEATURES].astype(float).reset_index(drop=True)  # a copy: ours now
            self._queue.put_nowait((rows, np.array(segments, copy=True)))
        except Exception as error:  # queue.Full, or rows that are not features
            if not self._warned:
                log.warning(
                    "scored rows not recorded in %s: %s", self.store.folder, error or "queue full"
                )
                self._warned = True
            return False
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._write, name="scored-rows", daemon=True)
                self._thread.start()
                atexit.register(self.flush, 10.0)
        return True

    def _write(self) -> None:
        while True:
            rows, segments = self._queue.get()
            try:
                self.store.record(rows, segments)  # never raises: it warns
            finally:
                self._queue.task_done()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued is written (or failed); False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True


@functools.cache  # one writer per folder and version, so its size count lives across app reruns
def _writer(folder: Path, version: str) -> BackgroundWriter:
    return BackgroundWriter(ScoredStore(folder, version))


def flush_all(timeout_s: float | None = None) -> bool:
    """Wait until every writer of this process has written what it was given (tests, exit)."""
    return all(_writer(*key).flush(timeout_s) for key in list(_WRITERS))


_WRITERS: dict[tuple[Path, str], None] = {}  # the keys of _writer's cache


def record_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """Where scoring records: $CUSTSEG_RECORD_DIR, data/scored/ when unset, None when `off`."""
    chosen = (os.environ if environ is None else environ).get(RECORD_DIR_ENV, "").strip()
    if chosen.lower() == RECORD_OFF:
        return None
    return Path(chosen) if chosen else SCORED


def recorder(
    version: str, folder: Path | None = None, environ: Mapping[str, str] | None = None
) -> Callable[[pd.DataFrame, np.ndarray], bool] | None:
    """The `record(features, segments)` of `version`'s store in `folder`, else in
    `record_dir()` (a BackgroundWriter's: it returns at once); None when recording is off."""
    chosen = folder or record_dir(environ)
    if not chosen:
        return None
    key = (Path(chosen).absolute(), str(version))
    _WRITERS[key] = None
    return _writer(*key).record
