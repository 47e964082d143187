"""Pure logic of the eval stage: positions, aggregation, cache keys, conversations, calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custseg import jsonl
from custseg.config import parse_params
from custseg.errors import ConfigError
from custseg.evaluation.calibration import MIN_PAIRS, compare, load_calibration, pair_items
from custseg.evaluation.items import (
    conversation_items,
    final_position,
    pairwise_text,
    positions,
    read_conversations,
    scoring_order,
    split_conversations,
)
from custseg.evaluation.judge import (
    REASON_MAX_CHARS,
    CachedJudge,
    relabel,
    score_first_template,
    score_view,
    shown_reason,
)
from custseg.evaluation.judge_cache import (
    JudgeCache,
    cache_dir,
    cache_key,
    completion_from_dict,
    completion_to_dict,
)
from custseg.evaluation.scorer import (
    Scorer,
    as_changed,
    final_over_draft,
    improvement_score,
    new_words_share,
    plan_reason,
    score_items,
)
from custseg.evaluation.specs import (
    GENERIC_PLAN,
    HELPFULNESS,
    METRICS,
    PLAN_QUALITY,
    SPECS,
    shared_header,
)
from custseg.evaluation.summary import aggregate, flatten
from custseg.llm.base import ChatRequest, Completion, Provider, TokenLogprob, TopLogprob
from custseg.paths import CALIBRATION

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "tests" / "data" / "conversations_small.jsonl"


def test_positions_are_seeded_per_conversation_and_both_occur() -> None:
    ids = [f"conv-{i}" for i in range(40)]
    first = [final_position(42, i) for i in ids]
    assert first == [final_position(42, i) for i in ids]  # reproducible
    assert {"A", "B"} == set(first)  # randomised, not fixed
    assert first != [final_position(7, i) for i in ids]  # the seed matters
    for cid in ids:
        where = positions(42, cid)
        assert sorted(where.values()) == ["draft", "final"]
        assert where[final_position(42, cid)] == "final"


def test_pairwise_score_always_measures_final_over_draft() -> None:
    final_b, final_a = {"A": "draft", "B": "final"}, {"A": "final", "B": "draft"}
    assert final_over_draft(0.9, final_b) == pytest.approx(0.9)
    assert final_over_draft(0.9, final_a) == pytest.approx(0.1)
    assert final_over_draft(0.5, final_a) == pytest.approx(0.5)
    assert pairwise_text("D", "F", final_a) == "Answer A:\nF\n\nAnswer B:\nD"
    assert pairwise_text("D", "F", final_b) == "Answer A:\nD\n\nAnswer B:\nF"


unit = st.floats(0, 1)


@given(unit, unit, unit, st.floats(0.01, 1))
def test_improvement_rises_with_the_pair_and_the_helpfulness_gain(
    pairwise: float, draft: float, final: float, more: float
) -> None:
    score = improvement_score(pairwise, draft, final)
    assert 0 <= score <= 1
    assert improvement_score(min(1, pairwise + more), draft, final) >= score
    assert improvement_score(pairwise, draft, min(1, final + more)) >= score
    assert improvement_score(pairwise, min(1, draft + more), final) <= score
    assert improvement_score(0.5, draft, draft) == pytest.approx(0.5)  # no better, no worse


WORDS = ("give", "them", "a", "voucher", "call", "back", "each", "month", "premium")
sentences = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)


@given(unit, sentences, sentences)
def test_an_unchanged_final_is_no_improvement_whatever_the_judges_say(
    score: float, draft: str, added: str
) -> None:
    assert as_changed(score, new_words_share(draft, draft)) == pytest.approx(0.5)
    assert new_words_share(draft, draft.upper()) == 0.0  # case is no change
    final = f"{draft} {added.upper()} NEWWORD"
    changed = as_changed(score, new_words_share(draft, final))
    # Pulled towards 0.5, never past it.
    assert min(score, 0.5) - 1e-12 <= changed <= max(score, 0.5) + 1e-12
    rewritten = "entirely different words here"
    assert new_words_share(draft, rewritten) == 1.0
    assert as_changed(score, new_words_share(draft, rewritten)) == pytest.approx(score)


def test_helpfulness_is_the_judges_score_times_the_task_limits_kept() -> None:
    conversation = read_conversations(SMALL).complete[0]
    sms = {
        **conversation,
        "task": "Write an SMS (under 160 characters) inviting our best customers to a preview.",
        "draft": "Dear valued customer, " * 10,
        "final": "Private preview Thu 7pm, drinks included. Reply YES.",
    }
    scorer = Scorer(CachedJudge(RecordingProvider(), None), {k: 0.5 for k in SPECS})
    rows = {
        i.metric: scorer.score(i)
        for i in conversation_items(sms, 42)
        if i.metric.startswith(("helpfulness", "improvement"))
    }
    draft, final = rows["helpfulness_draft"], rows["helpfulness_final"]
    assert draft["judge_score"] == final["judge_score"] == pytest.approx(0.67, abs=0.01)
    assert (draft["score"], draft["passed"]) == (0.0, False)
    assert "Check: breaks the task's limits: 219 characters" in draft["reason"]
    assert final["score"] == final["judge_score"] and "Check" not in final["reason"]
    # The same judge reply for both orders: the pair is neutral, the gain is the limits'.
    gain = 0.5 + (final["score"] - draft["score"]) / 2
    assert rows["improvement"]["score"] == pytest.approx((0.5 + gain) / 2, abs=1e-6)
    assert "Check" not in rows["improvement"]["reason"]  # a rewritten final: full weight
    unchanged = {**sms, "final": sms["draft"].upper()}
    (pair,) = (i for i in conversation_items(unchanged, 42) if i.metric == "improvement")
    row = scorer.score(pair)
    assert row["score"] == pytest.approx(0.5)
    assert row["reason"].endswith("Check: 0% of the final's words are new, so partial weight.")


def test_grounding_is_the_judges_score_times_the_checks() -> None:
    conversation = read_conversations(SMALL).complete[0]
    segments = [
        {"id": 0, "name": "high income · high spending", "size": 38, "share": 0.19},
        {"id": 1, "name": "low income · low spending", "size": 22, "share": 0.11},
    ]
    final = "Target the high income · high spending segment: 38 customers, 25% of all."
    grounded = {
        **conversation,
        "final": final,
        "grounded_in": {"model": "m", "version": "3", "segments": segments},
    }
    items = [i for i in conversation_items(grounded, 42) if i.metric.startswith("grounding")]
    scorer = Scorer(CachedJudge(RecordingProvider(), None), {k: 0.5 for k in SPECS})
    judged, checked = (scorer.score(i) for i in items)
    assert checked["score"] == pytest.approx(2 / 3)  # the name and 38 right, 25% wrong
    assert judged["judge_score"] == pytest.approx(0.67, abs=0.01)
    assert judged["score"] == pytest.approx(judged["judge_score"] * checked["score"], abs=1e-6)
    assert judged["grounding"] == checked["grounding"] and judged["grounding"]["wrong"]
    assert "Check: " in judged["reason"] and "25%" in judged["reason"]


def test_the_wrong_segment_and_a_missing_offer_fail_their_rows_with_the_reason() -> None:
    """Issue #33's first case, scored as the stage does: "which segment has the highest mean
    annual income? Suggest one offer", answered with the average segment and no offer."""
    conversation = read_conversations(ROOT / "data" / "conversations.jsonl").complete[11]
    assert conversation["final"] == "average income · average spending"
    scorer = Scorer(CachedJudge(RecordingProvider(), None), {k: 0.5 for k in SPECS})
    rows = {i.metric: scorer.score(i) for i in conversation_items(conversation, 42)}
    check, helpful = rows["grounding_check"], rows["helpfulness_final"]
    assert check["passed"] is False and check["score"] == pytest.approx(0.5)
    assert "claim: addresses average income · average spending (61.1 k$)" in check["reason"]
    assert check["grounding"]["claims"] and rows["grounding"]["grounding"]["claims"]
    assert helpful["passed"] is False and helpful["score"] == 0.0
    assert helpful["reason"].endswith(
        "Check: breaks the task's limits: no offer (task: Suggest one offer)"
    )


def test_items_are_scored_conversation_by_conversation_and_returned_in_order() -> None:
    conversations = read_conversations(SMALL).complete
    items = [i for c in conversations for i in conversation_items(c, 42)]
    scored = []

    class Recorder:
        def score(self, item):
            scored.append(item)
            return {"metric": item.metric, "id": item.item_id}

    rows = score_items(Recorder(), items)  # type: ignore[arg-type]
    assert [(r["metric"], r["id"]) for r in rows] == [(i.metric, i.item_id) for i in items]
    assert [i.item_id for i in scored] == [i.item_id for i in items]  # one conversation at a time
    for first in range(0, len(scored), 4):
        plan, first_shown, pair, second_shown = scored[first : first + 4]
        assert (plan.metric, pair.metric) == ("plan_quality", "improvement")
        assert first_shown.metric == f"helpfulness_{pair.where['A']}"
        assert second_shown.metric == f"helpfulness_{pair.where['B']}"
    # Grounded conversations: their grounding questions come last, one after the other.
    segment = {"id": 0, "name": "low income · high spending", "size": 38, "share": 0.19}
    grounded = [
        {**c, "grounded_in": {"model": "m", "version": "3", "segments": [segment]}}
        for c in conversations
    ]
    items = [i for c in grounded for i in conversation_items(c, 42)]
    order = [items[i].metric for i in scoring_order(items)]
    assert order[-4:] == ["grounding", "grounding_check"] * 2
    assert not any(m.startswith("grounding") for m in order[:-4])


class RecordingProvider(Provider):
    """Answers every judge call with the same score and keeps the prompts (no model)."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__(model="recorder")
        self.prompts: list[str] = []

    def _send(self, request: ChatRequest) -> Completion:
        self.prompts.append(request.messages[-1]["content"])
        return _completion(['{"', "score", '":', " ", "7", ",", ' "', "reason", '":', ' "ok"}'])


def test_prompts_share_the_header_the_task_and_answer_a() -> None:
    conversation = read_conversations(SMALL).complete[0]
    provider = RecordingProvider()
    scorer = Scorer(CachedJudge(provider, None), {k: 0.5 for k in SPECS})
    rows = score_items(scorer, conversation_items(conversation, 42))
    assert [r["judge_score"] for r in rows] == pytest.approx([0.67, 0.67, 0.67, 0.5], abs=0.01)
    assert rows[3]["score"] == pytest.approx(0.5)  # B over A alike both ways, no gain: none
    # The pair is asked in both orders, each right after the helpfulness of the answer it
    # shows first; no helpfulness is asked twice.
    plan, first_shown, pair, second_shown, swapped_pair = provider.prompts
    header = shared_header()
    task = f"{header}Task:\n{conversation['task'].strip()}"
    assert all(p.startswith(task) for p in provider.prompts)
    assert all(p.endswith("\nJSON:") for p in provider.prompts)
    shown_first = conversation[positions(42, conversation["correlation_id"])["A"]]
    answer_a = f"{task} \n\nAnswer A:\n{shown_first.strip()}"
    assert first_shown.startswith(answer_a) and pair.startswith(answer_a)
    shown_second = conversation[positions(42, conversation["correlation_id"])["B"]]
    assert swapped_pair.startswith(f"{task} \n\nAnswer A:\n{shown_second.strip()}\n\nAnswer B:")
    assert second_shown.startswith(f"{task} \n\nAnswer A:\n{shown_second.strip()}")
    assert first_shown.endswith(f"{HELPFULNESS.question}\nJSON:")
    assert second_shown.endswith(f"{HELPFULNESS.question}\nJSON:") and second_shown != first_shown
    # The plan is held against a generic plan with the improvement steps.
    plan_shown = f"Answer A:\n{GENERIC_PLAN}\n\nAnswer B:\n{conversation['plan'].strip()}"
    assert plan.startswith(f"{task} \n\n{plan_shown}")
    assert plan.endswith(f"{PLAN_QUALITY.question}\nJSON:")
    for spec in SPECS.values():  # each metric's steps are in the shared header, once
        steps = "\n".join(f"{n}. {step}" for n, step in enumerate(spec.steps, 1))
        assert header.count(f"{spec.heading}:\n{steps}") == 1
    assert "Final" not in header and "Draft" not in header  # no hint which answer is which


def test_a_plan_reason_names_the_plan_not_the_answer_letters() -> None:
    reason = "Answer B adds steps Answer A lacks; Answer Boss stays"
    assert plan_reason(reason) == "The plan adds steps the generic plan lacks; Answer Boss stays"
    assert plan_reason("vague, as Answer A is") == "Vague, as the generic plan is"
    assert plan_reason(None) is None and plan_reason("") == ""


def test_a_header_without_the_metrics_steps_is_refused() -> None:
    template = score_first_template("Only: 1. be nice\n10 means yes.\n", {}, "Score it.")
    with pytest.raises(ValueError, match="steps"):
        template.generate_evaluation_results("1. be strict\n", "Input:\nx \n\n")


def test_incomplete_and_unreadable_conversations_are_skipped() -> None:
    data = SMALL.read_bytes() + b"\n{not json\n[1, 2]\n"
    conversations = split_conversations(jsonl.parse(data))
    assert len(conversations.complete) == 2
    whys = [s["why"] for s in conversations.skipped]
    assert whys == ["missing final", "not valid JSON", "not a JSON object"]
    ungrounded = conversations.complete[0]  # captured before the agents were grounded
    items = conversation_items(ungrounded, seed=42)
    assert [i.metric for i in items] == list(METRICS)[:4]
    assert items[-1].where == positions(42, ungrounded["correlation_id"])
    segment = {"id": 0, "name": "low income · high spending", "size": 38, "share": 0.19}
    grounded = {**ungrounded, "grounded_in": {"model": "m", "version": "3", "segments": [segment]}}
    items = conversation_items(grounded, seed=42)
    assert [i.metric for i in items] == list(METRICS)
    assert items[4].shown_input.startswith('Model m v3, its only segments:\n- "low income · hi')
    assert items[4].shown_input.endswith(f"Task: {ungrounded['task']}")
    assert items[4].task == items[5].task == ungrounded["task"]  # what the check reads
    assert [i.judge_calls for i in items] == [1, 1, 1, 2, 1, 0]
    assert {i.output for i in items[4:]} == {ungrounded["final"]}


def _row(metric: str, score: float | None, passed: bool | None, error: str | None = None):
    return {"metric": metric, "score": score, "passed": passed, "error": error}


def test_aggregate_means_pass_rates_and_counts() -> None:
    rows = [
        _row("plan_quality", 0.8, True),
        _row("plan_quality", 0.2, False),
        _row("plan_quality", None, None, "LLMError: 503"),
        _row("improvement", 0.6, True),
    ]
    summary = aggregate(rows, n_conversations=4, n_skipped=1)
    assert summary["conversations"] == 4 and summary["skipped"] == 1
    assert summary["scored"] == 3 and summary["errors"] == 1
    assert summary["plan_quality"] == {"mean": 0.5, "pass_rate": 0.5, "scored": 2, "errors": 1}
    assert summary["helpfulness_draft"]["mean"] is None
    flat = flatten(summary)
    assert flat["plan_quality.mean"] == 0.5 and flat["errors"] == 1.0
    assert "helpfulness_draft.mean" not in flat  # None is not a number


def test_cache_key_covers_prompt_and_settings(tmp_path: Path) -> None:
    settings = {"model": "m", "temperature": 0.0, "max_tokens": 128, "top_logprobs": 20}
    key = cache_key("raw", "prompt", settings)
    assert key == cache_key("raw", "prompt", dict(reversed(settings.items())))
    for change in ({"model": "n"}, {"temperature": 0.7}, {"max_tokens": 64}, {"top_logprobs": 5}):
        assert cache_key("raw", "prompt", {**settings, **change}) != key
    assert cache_key("raw", "prompt!", settings) != key
    assert cache_key("json", "prompt", settings) != key

    cache = JudgeCache(tmp_path / "judge")
    assert cache.get(key) is None
    reply = completion_to_dict(Completion("x", 3, 1, 0.5, "m"))
    cache.put(key, reply)
    assert cache.get(key) == reply
    entry = tmp_path / "judge" / key[:2] / f"{key}.json"
    for damaged in ("{broken", '{"text": "x"}', '{"text": 1, "prompt_tokens": "a"}', "[]"):
        entry.write_text(damaged)
        assert cache.get(key) is None, damaged  # a reply the judge cannot read is a miss


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CUSTSEG_JUDGE_CACHE", raising=False)
    assert cache_dir(None) == Path("~/.cache/custseg/judge").expanduser()
    assert cache_dir(tmp_path / "p") == tmp_path / "p"
    monkeypatch.setenv("CUSTSEG_JUDGE_CACHE", str(tmp_path / "env"))
    assert cache_dir(tmp_path / "p") == tmp_path / "env"


def test_a_judge_cache_that_cannot_be_a_directory_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Checked before any judge call: a reply that cannot be kept would be paid for again."""
    monkeypatch.delenv("CUSTSEG_JUDGE_CACHE", raising=False)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=rf"^eval.cache_dir: {a_file}: not a directory$"):
        cache_dir(a_file)
    below = rf"^eval.cache_dir: {a_file}/sub: {a_file} is not a directory$"
    with pytest.raises(ConfigError, match=below):
        cache_dir(a_file / "sub")
    monkeypatch.setenv("CUSTSEG_JUDGE_CACHE", str(a_file))
    with pytest.raises(ConfigError, match=r"^\$CUSTSEG_JUDGE_CACHE: .*: not a directory$"):
        cache_dir(None)
    monkeypatch.setenv("CUSTSEG_JUDGE_CACHE", str(tmp_path / "new" / "cache"))
    assert cache_dir(None).is_dir()  # created


def _completion(tokens: list[str]) -> Completion:
    logprobs = tuple(
        TokenLogprob(t, -0.1, (TopLogprob(t, -0.1), TopLogprob("3", -2.5))) for t in tokens
    )
    return Completion("".join(tokens), 10, len(tokens), 1.5, "m", "stop", logprobs)


def test_completion_round_trip_and_score_view() -> None:
    tokens = ['{"', "score", '":', " ", "7", ",", ' "reason', '":', ' "', "1", "5", '%"}']
    completion = _completion(tokens)
    assert completion_from_dict(json.loads(json.dumps(completion_to_dict(completion)))) == (
        completion
    )
    view = score_view(completion)
    assert [t.token for t in view.logprobs][-1] == "7"  # the reason's digits are cut off
    assert score_view(_completion(['{"', "x"])).logprobs == _completion(['{"', "x"]).logprobs


def test_a_reason_cut_by_the_cap_ends_at_a_whole_word() -> None:
    def cut(text: str) -> str:
        return text.ljust(REASON_MAX_CHARS, "x")[:REASON_MAX_CHARS]

    assert shown_reason(cut("Both answers are relevant and corr")) == (
        "Both answers are relevant and…"
    )
    assert shown_reason(cut("Relevant, ")) == "Relevant…"  # the cut-off word is dropped
    assert shown_reason(cut("Relevant and concrete. ")) == "Relevant and concrete."
    assert shown_reason("Relevant and concrete.") == "Relevant and concrete."
    assert shown_reason(None) is None


def test_relabel_names_the_fields() -> None:
    content = "Input:\nWhich segment? \n\nActual Output:\nHigh income. \n\n"
    assert relabel(content, {"Input": "Task", "Actual Output": "Plan"}) == (
        "Task:\nWhich segment? \n\nPlan:\nHigh income."
    )
    pair = "Input:\nWhich? \n\nActual Output:\nAnswer A:\nx\n\nAnswer B:\ny \n\n"
    assert relabel(pair, {"Input": "Task", "Actual Output": None}) == (
        "Task:\nWhich? \n\nAnswer A:\nx\n\nAnswer B:\ny"
    )


def test_calibration_set_is_complete_and_pairs_are_consistent() -> None:
    pairs = load_calibration(ROOT / CALIBRATION)
    assert all(len(p) >= MIN_PAIRS for p in pairs.values())
    good, bad = pair_items("improvement", 0, pairs["improvement"][0], seed=42)
    assert good.where and bad.where and good.task == bad.task
    assert compare({"error": None, "score": 0.7}, {"error": None, "score": 0.7}) == "tie"
    assert compare({"error": None, "score": 0.7}, {"error": None, "score": 0.2}) == "higher"
    assert compare({"error": "x", "score": None}, {"error": None, "score": 0.2}) == "error"


def test_calibration_file_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "cal.yaml"
    path.write_text("plan_quality: []\n")
    with pytest.raises(ConfigError, match=f"plan_quality: needs at least {MIN_PAIRS} pairs"):
        load_calibration(path)


def test_eval_params_are_validated() -> None:
    assert parse_params({}).eval.thresholds.helpfulness == 0.5
    with pytest.raises(ConfigError, match=r"eval\.thresholds\.improvement"):
        parse_params({"eval": {"thresholds": {"improvement": 2}}})
    with pytest.raises(ConfigError, match=r"eval\.judge: unknown key"):
        parse_params({"eval": {"judge": "x"}})
