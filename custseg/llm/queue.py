"""What a caller's clock should count: the call itself, not its wait behind other calls.

A provider that decodes one call at a time in this process (the bundled model) makes later
calls wait their turn. A caller that bounds its calls (`agents.runtime.calls`) watches the
thread's call through `watching`; the provider tells it when the call starts waiting and when
it starts running, and a call its caller walked away from while it waited is never run (it
would only spend the model on an answer nobody reads).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class CallWatcher(Protocol):
    def waiting(self) -> None:
        """The call waits behind other calls from now on."""

    def running(self) -> None:
        """The call runs from now on; raises CallAbandoned if its caller walked away."""


_WATCHER = threading.local()


@contextmanager
def watching(watcher: CallWatcher) -> Iterator[None]:
    """Tell `watcher` about the calls this thread makes in the block."""
    _WATCHER.current = watcher
    try:
        yield
    finally:
        _WATCHER.current = None


@contextmanager
def one_at_a_time(lock: threading.Lock) -> Iterator[None]:
    """Hold `lock` for a call, telling the thread's watcher (if any) while the call waits for
    it and when it starts."""
    watcher: CallWatcher | None = getattr(_WATCHER, "current", None)
    if watcher is not None:
        watcher.waiting()
    with lock:
        if watcher is not None:
            watcher.running()
        yield
