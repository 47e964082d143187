"""The envelope and the capture's joining logic, pure (the broker tests run them live)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kafka.structs import TopicPartition

from custseg.agents import envelope
from custseg.agents.capture import Assembler, Watch, append, recover
from custseg.agents.envelope import json_schema, parse_envelope, reply
from custseg.errors import InvalidMessage
from custseg.testing.conversations import MODEL, conversation


def test_replies_link_ids_deterministically() -> None:
    task, plan, draft, final = conversation()
    assert {e.correlation_id for e in (plan, draft, final)} == {task.correlation_id}
    assert (plan.causation_id, draft.causation_id, final.causation_id) == (
        task.event_id,
        plan.event_id,
        draft.event_id,
    )
    again = reply(task, "plan", "planner", {"task": "t", "plan": "other"}, MODEL)
    assert again.event_id == plan.event_id, "a redelivered input must give the same reply id"
    assert parse_envelope(final.to_bytes()) == final


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json {", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (None, "empty record"),
        (b'{"event_id": "e"}', "invalid envelope: "),
    ],
)
def test_bad_records_are_named(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        parse_envelope(raw)


def test_missing_correlation_id_and_content_are_rejected() -> None:
    data = json.loads(conversation()[1].to_bytes())
    del data["correlation_id"]
    with pytest.raises(InvalidMessage, match="correlation_id"):
        parse_envelope(json.dumps(data).encode())
    data = json.loads(conversation()[2].to_bytes())
    data["content"].pop("draft")
    with pytest.raises(InvalidMessage, match=r"content of a draft lacks \['draft'\]"):
        parse_envelope(json.dumps(data).encode())


def test_assembler_joins_out_of_order_and_ignores_duplicates() -> None:
    a, b = conversation("a"), conversation("b")
    tp = {t: TopicPartition(t, 0) for t in ("tasks", "plans", "drafts", "finals")}
    assembler = Assembler()
    arrivals = [
        (a[3], "finals", 0),
        (b[0], "tasks", 0),
        (a[1], "plans", 0),
        (a[1], "plans", 1),
        (a[0], "tasks", 1),
        (b[1], "plans", 2),
    ]
    assert [assembler.add(e, tp[t], o) for e, t, o in arrivals] == [None] * 6
    # Pending conversations hold back the commit to their oldest message on each partition.
    assert assembler.safe_offsets()[tp["tasks"]] == 0
    done = assembler.add(a[2], tp["drafts"], 0)
    assert done is not None and done["correlation_id"] == a[0].correlation_id
    assert (done["task"], done["plan"], done["draft"], done["final"]) == ("a", "1. p", "d", "f")
    assert assembler.add(a[3], tp["finals"], 1) is None, "a complete conversation is written once"
    assert assembler.missing() == {b[0].correlation_id: ["draft", "final"]}
    assert assembler.safe_offsets() == {
        tp["tasks"]: 0,
        tp["plans"]: 2,
        tp["drafts"]: 1,
        tp["finals"]: 2,
    }


def test_recover_cuts_a_torn_last_line(tmp_path: Path) -> None:
    out = tmp_path / "conversations.jsonl"
    out.write_text('{"correlation_id": "a"}\n{"correlation_id": "b"}\n{"correlati')
    assert recover(out) == {"a", "b"}
    assert out.read_text().endswith('"b"}\n')


def test_the_published_schema_matches_the_code() -> None:
    published = Path(envelope.__file__).with_name("envelope.schema.json")
    assert json.loads(published.read_text()) == json_schema(), (
        "regenerate custseg/agents/envelope.schema.json from json_schema()"
    )


@pytest.mark.parametrize("torn", [b'{"correla', b'{"task": "' + b"x" * 200_000])
def test_append_cuts_a_torn_tail_before_writing(tmp_path: Path, torn: bytes) -> None:
    out = tmp_path / "conversations.jsonl"
    out.write_bytes(b'{"correlation_id": "a"}\n{"correlation_id": "b"}\n' + torn)
    with out.open("a+b") as sink:
        append(sink, b'{"correlation_id": "c"}\n')
        append(sink, b'{"correlation_id": "d"}\n')
    assert recover(out) == {"a", "b", "c", "d"}
    assert out.read_bytes().count(b"\n") == 4


def test_watch_stops_on_expected_idle_timeout_or_request() -> None:
    assert not Watch(written={"a"}, expect={"a", "b"}).over()
    watch = Watch(written={"a"}, expect={"a", "b"})
    watch.wrote(["b"])
    assert watch.over()
    silent = Watch(written=set(), idle_s=0.01, last_message=time.monotonic() - 1, ready=1)
    assert silent.over()
    assert Watch(written=set(), timeout_s=0.01, started=time.monotonic() - 1).over()
    assert Watch(written=set(), asked=lambda: True).over()
    assert not Watch(written=set(), idle_s=60, timeout_s=60).over()


def test_the_idle_clock_starts_once_every_reader_has_its_partitions() -> None:
    watch = Watch(written=set(), idle_s=0.05, readers=2, last_message=time.monotonic() - 10)
    assert not watch.over(), "silence before the partitions are assigned is a slow start"
    watch.assigned()
    time.sleep(0.1)
    assert not watch.over(), "one reader of two is not yet listening"
    watch.assigned()
    assert not watch.over(), "the clock starts now"
    time.sleep(0.1)
    assert watch.over()
