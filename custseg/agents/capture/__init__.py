"""Capture: join the agent topics by correlation_id and append each complete conversation once.

Offsets are committed only up to the oldest message of a conversation still being assembled, so a
restart re-reads what it needs; conversations already in the file are recognised and skipped.
It reads `read_committed`: only what the agents' transactions committed, one version of each
reply. A record off its conversation's home partition is skipped (the agents move it home). A
dead letter that names a record the conversation holds closes it as failed: one line in the
`.failed.jsonl` file beside the output, with the reason, so its offsets are released.
No record holds it up for good: see `reader.WaitBounds` (replies without a task, dead letters
naming a record never read).
Only one capture writes a file at a time (a lock file beside it).

The rooms: `assembler` joins a conversation's records, `sink` writes and reads back the files,
`reader` is the loop over one slice of partitions, `parallel` runs N of them in processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from custseg.agents.capture.assembler import Assembler, conversation_record, find_chain
from custseg.agents.capture.parallel import in_parallel
from custseg.agents.capture.reader import (
    DEFAULT_BOUNDS,
    CaptureResult,
    WaitBounds,
    Watch,
    read_slice,
)
from custseg.agents.capture.sink import (
    append,
    failed_path,
    ids_in,
    only_writer,
    recover,
    seconds_per_conversation,
)

__all__ = [
    "Assembler",
    "CaptureResult",
    "WaitBounds",
    "Watch",
    "append",
    "capture",
    "conversation_record",
    "failed_path",
    "find_chain",
    "ids_in",
    "recover",
    "seconds_per_conversation",
]


def capture(
    bootstrap: str,
    topics: Iterable[str],
    out: Path,
    group: str,
    *,
    workers: int = 1,
    dlq: str | None = None,
    expect: set[str] | None = None,
    idle_s: float | None = 10.0,
    timeout_s: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_written: Callable[[str], None] = lambda correlation_id: None,
    on_note: Callable[[str], None] = lambda line: None,
    bounds: WaitBounds = DEFAULT_BOUNDS,
) -> CaptureResult:
    """Consume the chain's `topics` (task, plan, draft, final: `topics.chain_topics`) until every
    `expect`ed conversation is written, `idle_s` passes with no message, `timeout_s` elapses or
    `should_stop()`; append complete conversations to `out`.

    `workers` > 1 reads the partitions in that many processes (see `reader.slice_partitions`).
    With the `dlq` topic, a conversation a dead letter ends is closed as failed (see
    `failed_path`). What it lets go of (`bounds`) is reported to `on_note`, one line each."""
    with only_writer(out):
        captured = recover(out)
        watch = Watch(
            written=set(captured),
            expect=expect,
            idle_s=idle_s,
            timeout_s=timeout_s,
            asked=should_stop,
            on_written=on_written,
            on_note=on_note,
            readers=workers,
        )
        args = (bootstrap, list(topics), out, group, dlq)
        if workers == 1:
            return read_slice(*args, 0, 1, captured, watch, bounds)
        return in_parallel(args, workers, captured, watch, bounds)
