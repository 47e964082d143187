"""Long commands say up front what they will do and how long it should take, from measured costs."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from custseg.agents.capture import seconds_per_conversation
from custseg.agents.cli import BUNDLED_S_PER_CONVERSATION, capture_estimate, run_estimate
from custseg.entrypoint import duration
from custseg.evaluation.judge_cache import JudgeCache, mean_call_seconds
from custseg.evaluation.stage import estimate
from tests.fixtures.project import ROOT

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _conversation(start_s: float, end_s: float) -> str:
    return json.dumps(
        {
            "started_at": (T0 + timedelta(seconds=start_s)).isoformat(),
            "completed_at": (T0 + timedelta(seconds=end_s)).isoformat(),
        }
    )


def test_durations_read_like_people_say_them() -> None:
    assert [duration(s) for s in (4, 89, 90, 570, 5399, 7560)] == [
        "4 s", "89 s", "1.5 min", "9.5 min", "90.0 min", "2.1 h"
    ]  # fmt: skip


def test_the_last_batch_sets_the_pace(tmp_path: Path) -> None:
    path = tmp_path / "conversations.jsonl"
    old = [_conversation(0, 500)]  # a day earlier, another machine's pace: not counted
    batch = [_conversation(86_400 + i, 86_400 + 30 * (i + 1)) for i in range(4)]
    path.write_text("\n".join([*old, "not json", '{"started_at": 5}', *batch]) + "\n")
    assert seconds_per_conversation(path) == 30.0
    assert capture_estimate(12, 30.0, 3600) == (
        "capture: waiting for 12 conversation(s) (timeout 3600 s); the last batch took ~30 s "
        "a conversation here, so expect ~6.0 min"
    )
    assert seconds_per_conversation(tmp_path / "none.jsonl") is None
    assert capture_estimate(3, None, 60).endswith("no earlier batch to estimate from")


@settings(deadline=None)  # file I/O per example: a busy machine is not a failure
@given(st.lists(st.text(max_size=60) | st.binary(max_size=60).map(repr), max_size=8))
def test_any_file_gives_an_estimate_or_none(lines: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "c.jsonl")
        path.write_text("\n".join(lines))
        value = seconds_per_conversation(path)
        assert value is None or value > 0


def test_the_committed_conversations_give_a_pace() -> None:
    assert seconds_per_conversation(ROOT / "data/conversations.jsonl") > 0


def test_the_eval_stage_estimates_from_the_judges_measured_latency(tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path, {"a": {"latency_s": 6.0}, "b": {"latency_s": 8.0}})
    assert mean_call_seconds(cache) == 7.0
    assert mean_call_seconds(JudgeCache(tmp_path / "empty")) is None
    line = estimate(48, 12, 7.0)
    assert line == (
        "eval: 48 judge call(s) for 12 conversation(s); ~7.0 s a judge call here, so at most "
        "~5.6 min (cached replies cost nothing)"
    )


@given(st.integers(1, 500), st.none() | st.floats(0.5, 3600))
def test_the_demo_states_its_duration_as_an_estimate(n: int, measured: float | None) -> None:
    line = run_estimate(n, measured)
    per = BUNDLED_S_PER_CONVERSATION if measured is None else measured
    assert line.startswith(f"expected duration: {n} task(s) x ~{per:.0f} s a conversation")
    assert f"= ~{duration(n * per)}, an estimate" in line and "\n" not in line
    assert ("bundled model" in line) == (measured is None)


def test_submit_estimate_sends_nothing_and_needs_no_broker(tmp_path: Path) -> None:
    """`make agents-demo` runs this first: tasks x the committed batch's pace, no connection."""
    (tmp_path / "tasks.yaml").write_text("- one task\n- another task\n")
    params = str(ROOT / "params.yaml")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "custseg",
            "submit",
            "--estimate",
            "--file",
            "tasks.yaml",
            "--params",
            params,
        ],
        cwd=tmp_path,  # no data/conversations.jsonl here: the bundled model's measured pace
        env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == run_estimate(2, None) + "\n"
