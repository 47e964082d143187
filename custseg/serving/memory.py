"""Give freed memory back to the operating system in a long-running server.

glibc's malloc keeps what Python frees (a scored 1M-row upload is ~90 MB of small objects and
column buffers) in its heap for reuse, so a server's resident size only ever grows: five
concurrent large uploads left the app ~450 MB larger long after their sessions ended.
`malloc_trim(0)` returns the free pages; a daemon thread calls it every few seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable
from functools import cache

TRIM_EVERY_S = 20.0
log = logging.getLogger(__name__)


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the OS; False where the C library cannot (not glibc)."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


def resident_bytes(pid: int | str = "self") -> int:
    """The resident set size of a process (Linux /proc), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for process {pid}")


@cache
def start_releasing(
    every_s: float = TRIM_EVERY_S, before: Callable[[], None] | None = None
) -> threading.Thread:
    """Start (once per process and arguments) a daemon thread that calls `before` (to drop what
    is no longer needed) and then releases free memory, every `every_s` seconds."""

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                if before is not None:
                    before()
            except Exception:  # a failing hook must not end the releasing for good
                log.exception("dropping unused memory failed; will try again")
            release_free_memory()

    stop = threading.Event()
    thread = threading.Thread(target=loop, name="release-free-memory", daemon=True)
    thread.start()
    return thread
