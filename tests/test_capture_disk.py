"""The capture's file on a real broker: records holding line separators, and an output that
stops taking writes (a full disk, a directory removed under a running capture). Nothing that was
not written may be committed: a restarted capture writes every such conversation.

Each test makes its own topics (co-partitioned, three partitions each, like params.yaml).
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from custseg import jsonl
from custseg.agents.capture import capture
from custseg.entrypoint import run
from custseg.errors import WriteError
from custseg.evaluation.items import read_conversations
from custseg.kafka.admin import ensure_topics
from custseg.testing.conversations import conversation, produce, send
from tests.fixtures.agents import Workdir

SEPARATORS = "\u2028\u2029\x85"


def topics_for(bootstrap: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    topics = {t: f"{tag}.{t}s" for t in ("task", "plan", "draft", "final")}
    ensure_topics(bootstrap, dict.fromkeys(topics.values(), 3))
    return topics


def ids(sent: list[list]) -> set[str]:
    return {c[0].correlation_id for c in sent}


def test_a_conversation_with_line_separators_reaches_the_eval_whole(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """#31: the eval read 4 of 5 captured conversations, one held U+2028 (raw in the file)."""
    topics = topics_for(kafka_bootstrap)
    tasks = [f"task {i}" for i in range(4)] + [f"first{SEPARATORS}second\x00third"]
    sent = [conversation(task) for task in tasks]
    send(kafka_bootstrap, topics, (e for c in sent for e in c))
    out = tmp_path / "conversations.jsonl"
    result = capture(
        kafka_bootstrap, topics.values(), out, f"cap-{uuid.uuid4().hex}", expect=ids(sent),
        timeout_s=120,
    )  # fmt: skip
    assert sorted(result.written) == sorted(ids(sent))
    assert len(out.read_bytes().split(b"\n")) == 5 + 1  # one line each, then the last newline
    conversations = read_conversations(out)
    assert conversations.skipped == []
    assert sorted(c["task"] for c in conversations.complete) == sorted(tasks)


def test_a_full_disk_stops_the_capture_in_one_line_and_commits_nothing(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = topics_for(kafka_bootstrap)
    group = f"cap-{uuid.uuid4().hex}"
    sent = produce(kafka_bootstrap, topics, 6)
    out = tmp_path / "conversations.jsonl"
    out.symlink_to("/dev/full")  # every write: ENOSPC

    def full_disk_capture() -> None:
        capture(
            kafka_bootstrap, topics.values(), out, group, workers=3, expect=ids(sent),
            timeout_s=120,
        )  # fmt: skip

    assert run(full_disk_capture) == 2
    expected = f"error: capture: cannot write {out}: [Errno 28] No space left on device"
    assert capsys.readouterr().err.splitlines() == [expected]  # one line, no traceback

    out.unlink()  # the disk fixed: a restart writes every conversation (no offset was committed)
    again = capture(
        kafka_bootstrap, topics.values(), out, group, workers=3, expect=ids(sent), timeout_s=120
    )
    assert sorted(again.written) == sorted(ids(sent))
    assert sorted(r["correlation_id"] for r in jsonl.read(out).objects()) == sorted(ids(sent))


def test_a_directory_removed_under_a_running_capture_stops_it_and_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = topics_for(kafka_bootstrap)
    group = f"cap-{uuid.uuid4().hex}"
    out = tmp_path / "data/conversations.jsonl"
    first = produce(kafka_bootstrap, topics, 3)
    written: set[str] = set()
    failures: list[BaseException] = []
    stop = threading.Event()

    def running_capture() -> None:
        try:
            capture(
                kafka_bootstrap, topics.values(), out, group, idle_s=None, timeout_s=120,
                should_stop=stop.is_set, on_written=written.add,
            )  # fmt: skip
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=running_capture, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while written != ids(first):
            assert time.monotonic() < deadline and thread.is_alive(), f"wrote {written}"
            time.sleep(0.05)
        shutil.rmtree(out.parent)  # the next lines would go to a file nobody can open
        second = produce(kafka_bootstrap, topics, 4)
        thread.join(timeout=120)
        assert not thread.is_alive(), "the capture went on writing into a removed directory"
    finally:
        stop.set()
        thread.join(timeout=30)
    assert len(failures) == 1 and isinstance(failures[0], WriteError), failures
    assert str(failures[0]) == f"capture: cannot write {out}: [Errno 2] No such file or directory"

    # Restarted (it makes the directory again): every conversation of the second batch is written.
    again = capture(kafka_bootstrap, topics.values(), out, group, expect=ids(second), timeout_s=120)
    assert ids(second) <= set(again.written) <= ids(first) | ids(second)
    on_disk = [r["correlation_id"] for r in jsonl.read(out).objects()]
    assert ids(second) <= set(on_disk) and len(on_disk) == len(set(on_disk))


def test_custseg_capture_on_a_full_disk_exits_2_in_one_line_then_resumes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The command as a user runs it: exit 2 and the one line, no traceback; run again once the
    disk is fixed, it writes every conversation (the first run committed nothing)."""
    workdir = Workdir(tmp_path, kafka_bootstrap, {}, partitions=3)
    workdir.create_topics()
    kinds = {"task": "tasks", "plan": "plans", "draft": "drafts", "final": "finals"}
    sent = [conversation(f"task {i}") for i in range(5)]
    send(
        kafka_bootstrap,
        {k: workdir.topics[v] for k, v in kinds.items()},
        (e for c in sent for e in c),
    )
    workdir.conversations.parent.mkdir(parents=True)
    workdir.conversations.symlink_to("/dev/full")

    full = workdir.capture(sorted(ids(sent)), timeout=120)
    assert full.returncode == 2, full.stderr
    assert "Traceback" not in full.stderr
    assert full.stderr.splitlines()[-1] == (
        "error: capture: cannot write data/conversations.jsonl: [Errno 28] No space left on device"
    )

    workdir.conversations.unlink()
    again = workdir.capture(sorted(ids(sent)), timeout=120)
    assert again.returncode == 0, again.stderr
    assert sorted(c["correlation_id"] for c in workdir.lines()) == sorted(ids(sent))
