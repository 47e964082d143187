"""`custseg eval compare`: pairing by task, the bootstrap interval and sign test, the CLI; and the
agent variant on envelopes, conversations and traces. Fast tier: result files only, no LLM."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custseg import jsonl
from custseg.agents.capture.assembler import conversation_record
from custseg.agents.envelope import ModelInfo, parse_envelope, reply, task_envelope
from custseg.config import AgentsParams
from custseg.conversation import DEFAULT_VARIANT
from custseg.errors import ConfigError, InvalidMessage
from custseg.evaluation.compare import (
    bootstrap_ci,
    check_rows,
    compare,
    load_rows,
    mlflow_fields,
    sign_test,
    table_lines,
    unpaired_line,
)
from custseg.evaluation.items import conversation_items, read_conversations
from custseg.evaluation.judge import CachedJudge
from custseg.evaluation.scorer import Scorer
from custseg.evaluation.specs import SPECS
from custseg.evaluation.traces import agent_spans
from tests.fixtures.project import ROOT
from tests.test_eval_units import RecordingProvider

METRICS = ["helpfulness_final", "improvement", "grounding_check"]
JUDGE = "local:test-judge"
FAST = 500  # resamples in property tests: the logic, not the precision, is under test
scores = st.floats(0, 1, allow_nan=False)
task_scores = st.lists(scores, min_size=1, max_size=12)


def rows_for(values: list[float], variant: str, metric: str = "helpfulness_final") -> list[dict]:
    return [
        {
            "correlation_id": f"{variant}-{i}",
            "task": f"task {i}",
            "metric": metric,
            "score": v,
            "judge_model": None if metric == "grounding_check" else JUDGE,
            "variant": variant,
        }
        for i, v in enumerate(values)
    ]


# --- statistics --------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(task_scores)
def test_identical_inputs_give_zero_difference_and_an_interval_holding_zero(values) -> None:
    result = compare(rows_for(values, "v1"), rows_for(values, "v2"), "v1", "v2", resamples=FAST)
    (m,) = result.metrics
    assert m.diff == 0 and m.ci_low <= 0 <= m.ci_high
    assert (m.wins, m.losses, m.ties, m.p_value) == (0, 0, len(values), 1.0)


@settings(max_examples=40, deadline=None)
@given(task_scores, st.floats(-0.5, 0.5, allow_nan=False))
def test_a_constant_shift_gives_an_interval_around_the_shift(values, shift) -> None:
    shifted = [v + shift for v in values]
    (m,) = compare(rows_for(values, "a"), rows_for(shifted, "b"), "a", "b", resamples=FAST).metrics
    assert m.diff == pytest.approx(shift, abs=1e-9)
    assert m.ci_low == pytest.approx(shift, abs=1e-9) and m.ci_high == pytest.approx(
        shift, abs=1e-9
    )


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(scores, scores), min_size=1, max_size=10), st.randoms())
def test_pairing_by_task_does_not_depend_on_row_order(pairs, rnd) -> None:
    rows_a = rows_for([a for a, _ in pairs], "v1") + rows_for([a for a, _ in pairs], "v1", "x")
    rows_b = rows_for([b for _, b in pairs], "v2") + rows_for([b for _, b in pairs], "v2", "x")
    first = compare(rows_a, rows_b, "v1", "v2", resamples=FAST)
    rnd.shuffle(rows_a)
    rnd.shuffle(rows_b)
    assert compare(rows_a, rows_b, "v1", "v2", resamples=FAST) == first


@settings(max_examples=30, deadline=None)
@given(task_scores, st.integers(1, 5), st.integers(0, 5))
def test_unpaired_tasks_are_named_and_left_out(values, extra_a, extra_b) -> None:
    rows_a = rows_for(values + [0.0] * extra_a, "v1")
    rows_b = rows_for(values + [1.0] * extra_b, "v2")
    for row in rows_b[len(values) :]:  # B's extra tasks are other tasks than A's extra ones
        row["task"] = "other " + row["task"]
    result = compare(rows_a, rows_b, "v1", "v2", resamples=FAST)
    (m,) = result.metrics
    assert m.n == len(values) and m.diff == 0  # the extra tasks changed nothing
    assert len(result.only_a) == extra_a and len(result.only_b) == extra_b
    line = unpaired_line(result)
    assert line is not None and "\n" not in line
    assert f"{extra_a} only in v1" in line and f"{extra_b} only in v2" in line
    assert rows_a[-1]["task"] in line


def test_a_clear_improvement_has_an_interval_above_zero_and_a_small_p() -> None:
    rnd = random.Random(7)
    a = [rnd.uniform(0.2, 0.6) for _ in range(20)]
    b = [v + 0.2 + rnd.uniform(-0.05, 0.05) for v in a]
    (m,) = compare(rows_for(a, "v1"), rows_for(b, "v2"), "v1", "v2").metrics
    assert 0.15 < m.ci_low < m.diff < m.ci_high < 0.25
    assert m.wins == 20 and m.p_value == pytest.approx(2 * 0.5**20)


def test_the_bootstrap_is_seeded_and_the_sign_test_two_sided() -> None:
    diffs = np.array([0.3, -0.1, 0.2, 0.0, 0.5, -0.2])
    assert bootstrap_ci(diffs, 2_000, seed=3) == bootstrap_ci(diffs, 2_000, seed=3)
    assert sign_test(diffs)[1:] == (3, 2, 1)
    assert sign_test(diffs)[0] == pytest.approx(1.0)  # 3 of 5: no evidence either way
    assert sign_test(-diffs)[0] == sign_test(diffs)[0]
    low, high = bootstrap_ci(np.array([1.0, 0.0] * 50), 20_000)  # large blocks are drawn too
    assert low < 0.5 < high


def test_duplicates_count_once_errors_are_left_out_and_judges_named() -> None:
    rows_a = rows_for([0.2, 0.4], "v1") + rows_for([0.6], "v1")  # task 0 twice: mean 0.4
    rows_b = rows_for([0.4, None], "v2") + rows_for([1.0], "v2", "grounding_check")
    rows_b[0]["judge_model"] = "local:other-judge"
    result = compare(rows_a, rows_b, "v1", "v2", resamples=FAST)
    check, final = result.metrics
    assert (final.n, final.diff) == (1, 0.0) and result.unscored == 1
    assert final.judge == f"{JUDGE} | local:other-judge" or final.judge == (
        f"local:other-judge | {JUDGE}"
    )
    assert check.n == 0 and math.isnan(check.diff)
    table = "\n".join(table_lines(result))
    assert "judges differ: v1 by local:test-judge; v2 by local:other-judge" in table
    assert "no judge (a check)" in table
    assert "1 row(s) without a score" in table
    params, metrics = mlflow_fields(result)
    assert params["variant_a"] == "v1" and params["variant_b"] == "v2"
    assert "local:other-judge" in params["judge.helpfulness_final"]
    assert (params["judge_a"], params["judge_b"]) == (JUDGE, "local:other-judge")
    assert metrics["helpfulness_final.diff"] == 0.0 and "grounding_check.diff" not in metrics
    assert json.dumps(result.report(), allow_nan=False)  # NaN became null


# --- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"correlation_id": "a", "metric": "m", "score": 1}\n{"corr', "line 2: torn last line"),
        ("[1]\n", "line 1: not a JSON object"),
        ("\n\n", "no rows"),
        ('{"metric": "m", "score": 1}\n', "row 1: `correlation_id` missing"),
        ('{"correlation_id": "a", "metric": "m", "score": "0.5"}\n', "row 1: `score` is not"),
        ('{"correlation_id": "a", "metric": "m", "score": true}\n', "row 1: `score` is not"),
    ],
)
def test_bad_result_files_are_one_line_naming_the_problem(tmp_path, text, expected) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(expected)) as caught:
        check_rows(load_rows(path), str(path))
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_a_missing_file_is_one_line_and_torn_conversations_are_read(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"results .*nope\.jsonl: No such file"):
        load_rows(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match=r"results .*: Is a directory"):
        load_rows(tmp_path)
    torn = tmp_path / "conversations.jsonl"
    torn.write_text('{"correlation_id": "a", "task": "t"}\n{"correlation_id": "b", "ta')
    assert load_rows(torn, "conversations", strict=False) == [{"correlation_id": "a", "task": "t"}]


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "custseg", "eval", "compare", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_cli_compares_variants_of_one_file_by_their_conversations(tmp_path) -> None:
    """Rows without task or variant (today's eval rows) get both from the conversations."""
    conversations, rows = [], []
    for variant, bump in (("v1", 0.0), ("v2", 0.25)):
        for i in range(6):
            cid = f"{variant}c{i}"
            conv = {"correlation_id": cid, "task": f"task {i}", "variant": variant}
            if variant == "v1":
                del conv["variant"]  # written before variants: reads as v1
            conversations.append(conv)
            for metric in METRICS:
                score = 0.1 * i + bump
                judge = None if metric == "grounding_check" else JUDGE
                row = {"correlation_id": cid, "metric": metric, "score": score}
                rows.append({**row, "judge_model": judge})
    jsonl.write(tmp_path / "conv.jsonl", conversations)
    jsonl.write(tmp_path / "results.jsonl", rows)
    out = tmp_path / "cmp.json"
    args = ["v1", "v2", "--results", "results.jsonl", "--conversations", "conv.jsonl"]
    done = run_cli(*args, "--json", str(out), "--resamples", "1000", "--no-mlflow", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "v2 vs v1" in done.stdout and f"judge: {JUDGE}" in done.stdout
    report = json.loads(out.read_text())
    assert report["variant_a"] == "v1" and report["variant_b"] == "v2"
    for metric in METRICS:
        assert report["metrics"][metric]["n"] == 6
        assert report["metrics"][metric]["diff"] == pytest.approx(0.25)
    wrong = run_cli(*args[:1], "v3", *args[2:], "--no-mlflow", cwd=tmp_path)
    assert wrong.returncode != 0 and "v3: neither a file nor a variant" in wrong.stderr
    assert "['v1', 'v2']" in wrong.stderr and not (tmp_path / "mlruns").exists()


def test_cli_logs_one_mlflow_run_linking_both_variants(tmp_path, migrated_mlflow_db) -> None:
    a, b = rows_for([0.2, 0.5, 0.4], "v1"), rows_for([0.6, 0.7, 0.9], "v2")
    jsonl.write(tmp_path / "a.jsonl", a)
    jsonl.write(tmp_path / "b.jsonl", b)
    shutil.copy(migrated_mlflow_db, tmp_path / "mlflow.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    done = run_cli("a.jsonl", "b.jsonl", "--experiment", "cmp", "--resamples", "500",
                   cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = re.search(r"mlflow run (\w+) in experiment cmp", done.stdout)[1]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        params = dict(db.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))
        metrics = dict(db.execute("SELECT key, value FROM metrics WHERE run_uuid = ?", (run_id,)))
    assert (params["variant_a"], params["variant_b"]) == ("v1", "v2")
    assert params["judge_a"] == params["judge_b"] == params["judge.helpfulness_final"] == JUDGE
    assert metrics["helpfulness_final.diff"] == pytest.approx((0.4 + 0.2 + 0.5) / 3, abs=1e-9)
    assert metrics["helpfulness_final.n"] == 3 and metrics["helpfulness_final.p"] == 0.25
    low, high = metrics["helpfulness_final.ci_low"], metrics["helpfulness_final.ci_high"]
    assert 0 < low <= metrics["helpfulness_final.diff"] <= high


# --- the variant on the wire, in the capture and in traces -------------------------------------


def test_envelopes_carry_the_variant_and_old_records_read_as_v1() -> None:
    task = task_envelope("a task", variant="v2")
    model = ModelInfo(provider="p", name="m")
    plan = reply(task, "plan", "planner", {"task": "a task", "plan": "p"}, model)
    assert parse_envelope(plan.to_bytes()).variant == "v2"  # replies keep the task's variant
    old = msgspec.json.decode(task_envelope("t").to_bytes())
    del old["variant"]
    assert parse_envelope(msgspec.json.encode(old)).variant == DEFAULT_VARIANT == "v1"


ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
VARIANTS = st.text(max_size=40) | st.from_regex(r"[A-Za-z0-9][\w.\n-]{0,40}", fullmatch=True)


@given(VARIANTS | st.sampled_from(["", "a" * 33, "v2.1"]) | st.integers() | st.none())
def test_a_bad_variant_is_refused_naming_the_field(value) -> None:
    """On the wire: a string of 1-32 characters, like the ids (type and length)."""
    good = isinstance(value, str) and 1 <= len(value) <= 32
    record = msgspec.json.decode(task_envelope("t").to_bytes())
    record["variant"] = value
    raw = msgspec.json.encode(record)
    if good:
        assert parse_envelope(raw).variant == value
    else:
        with pytest.raises(InvalidMessage, match="variant"):
            parse_envelope(raw)


@given(VARIANTS | st.sampled_from(["v1\n", "-v", "v2.1", "a" * 33]))
def test_params_name_a_variant_the_envelope_accepts(value: str) -> None:
    """params.yaml: a plain name (letters, digits, then . _ -), a valid envelope field too."""
    good = 1 <= len(value) <= 32 and value[0] in ALNUM and all(c in ALNUM + "._-" for c in value)
    if good:
        variant = AgentsParams(variant=value).variant
        assert task_envelope("t", variant=variant).to_bytes()
    else:
        with pytest.raises(ValueError, match="variant"):
            AgentsParams(variant=value)
    assert AgentsParams().variant == DEFAULT_VARIANT


def test_the_capture_and_traces_keep_the_variant() -> None:
    model = ModelInfo(provider="p", name="m")
    task = task_envelope("a task", variant="v2")
    plan = reply(task, "plan", "planner", {"task": "a task", "plan": "p"}, model)
    draft = reply(plan, "draft", "writer", {"task": "a task", "plan": "p", "draft": "d"}, model)
    content = {"task": "a task", "draft": "d", "final": "f", "review": "r"}
    final = reply(draft, "final", "reviewer", content, model)
    record = conversation_record({"task": task, "plan": plan, "draft": draft, "final": final})
    assert record["variant"] == "v2"
    assert {e["variant"] for e in record["events"].values()} == {"v2"}
    conv = json.loads(jsonl.dumps_line(record))
    assert {s.attributes["variant"] for s in agent_spans(conv, 0)} == {"v2"}
    for event in conv["events"].values():
        del event["variant"]
    del conv["variant"]
    assert {s.attributes["variant"] for s in agent_spans(conv, 0)} == {"v1"}


@pytest.mark.parametrize("variant", [None, "v2"])
def test_eval_rows_carry_the_task_and_variant_compare_pairs_by(variant) -> None:
    conversation = read_conversations(ROOT / "data" / "conversations.jsonl").complete[0]
    conversation.pop("variant", None)
    if variant:
        conversation["variant"] = variant
    scorer = Scorer(CachedJudge(RecordingProvider(), None), {k: 0.5 for k in SPECS})
    rows = [scorer.score(i) for i in conversation_items(conversation, 42)]
    assert {r["metric"] for r in rows} >= {"helpfulness_final", "grounding_check", "improvement"}
    assert {(r["task"], r["variant"]) for r in rows} == {(conversation["task"], variant or "v1")}
