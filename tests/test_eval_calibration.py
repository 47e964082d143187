"""Trust in the judge: the calibration set, the report's arithmetic, and the bundled model on it.

The bundled judge's replies for every calibration pair are committed
(eval/calibration_judge_cache.jsonl, `custseg eval calibrate --save-replies`) and read back as
a fallback cache: the `llm` tests re-derive every number from them with no judge call while
the prompts, metrics and judge are unchanged; a changed question misses them and is asked of
the real model (~5 s a call on 2 idle cores). One test re-asks a few of them, to show the
replies are this judge's. The other tests use a fake scorer, the stand-in LLM, or no judge.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custseg import jsonl
from custseg.config import load_params
from custseg.errors import ConfigError
from custseg.evaluation import cli
from custseg.evaluation.calibration import (
    CHECK,
    DEGRADED,
    FIELDS,
    JUDGE_PART,
    MIN_PAIRS,
    OFF_TOPIC,
    best_threshold,
    calibrate,
    check_items,
    held_out_agreement,
    load_calibration,
    on_topic_share,
    pair_items,
    summarise,
)
from custseg.evaluation.items import Item
from custseg.evaluation.judge import score_view
from custseg.evaluation.judge_cache import read_seed
from custseg.evaluation.scorer import Scorer, build_scorer, checked_row
from custseg.llm import Provider, make_provider, resolve_settings
from custseg.llm.base import Completion, TokenLogprob, TopLogprob
from custseg.llm.providers import LocalProvider
from custseg.paths import CALIBRATION, CALIBRATION_REPLIES, PARAMS

ROOT = Path(__file__).resolve().parents[1]
# Issue #17's goal is 0.9 on both for every metric; with the bundled 1.5B judge plan quality,
# improvement and grounding reach it on all 17 pairs (docs/evaluation.md: Calibration). The
# committed replies give, of 17 pairs and 34 items (2026-12-06, the docs' table):
#   plan_quality 17 pairs ranked right, 31 items agreeing, 30 held out (1.00 / 0.91 / 0.88)
#   helpfulness  14, 23, 23 (0.82 / 0.68 / 0.68)    improvement 16, 31, 31 (0.94 / 0.91 / 0.91)
#   grounding    17, 31, 29 (1.00 / 0.91 / 0.85)
# The floors are one pair or item below: a question asked afresh (a changed prompt) moves by
# llama.cpp's arithmetic alone, which has moved helpfulness and improvement by a pair; a change
# that makes the judge worse by more fails here.
FLOORS = {  # metric: (pairs ranked right, items agreeing at the pass mark, the same held out)
    "plan_quality": (16, 30, 29),
    "helpfulness": (13, 22, 22),
    "improvement": (15, 30, 30),
    "grounding": (16, 30, 28),
}
# Re-asked of the real model: (section, pair, label), one question of each GEval but one.
REASKED = (("plan_quality", 0, "good"), ("helpfulness", 0, "bad"), ("grounding", 0, "good"))
# How far llama.cpp's arithmetic moves a score between two askings of one prompt: 0 asked in
# the order the replies were made, up to 0.025 in 36 questions asked in a shuffled order (what
# its prompt cache holds changes how the prompt is batched).
REASK_TOLERANCE = 0.05


def committed_scorer(provider: Provider, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Scorer:
    """A Scorer on `provider` with an empty user cache (`cache`) and the committed replies as
    its fallback, as `custseg eval calibrate` reads them on a fresh clone."""
    monkeypatch.setenv("CUSTSEG_JUDGE_CACHE", str(cache))
    return build_scorer(load_params(ROOT / PARAMS), provider, seed=ROOT / CALIBRATION_REPLIES)


@pytest.mark.timeout(2400)  # no judge call when nothing changed; all ~220 cost ~20 min
def test_judge_ranks_and_separates_good_from_degraded_items(
    local_provider: LocalProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = load_params(ROOT / PARAMS)
    pairs = load_calibration(ROOT / CALIBRATION)
    scorer = committed_scorer(local_provider, tmp_path, monkeypatch)
    results, rows = calibrate(pairs, scorer, params.base.seed)
    report = {
        m: (round(r.accuracy, 2), round(r.agreement, 2), r.held_out_agreement, r.errors)
        for m, r in results.items()
    }
    print(f"calibration (accuracy, agreement, held-out, errors): {report}; {scorer.judge.stats}")
    assert set(results) == {*FIELDS, CHECK, JUDGE_PART} == {*FLOORS, CHECK, JUDGE_PART}
    assert len(rows) == 2 * sum(r.pairs for m, r in results.items() if m != JUDGE_PART)
    for metric, (ranked, agreeing, held_out) in FLOORS.items():  # grounding_check: reported
        result = results[metric]
        assert result.pairs == len(pairs[metric]) == 17 and result.errors == 0, (metric, report)
        assert result.higher >= ranked, (metric, report)
        assert result.good_pass + result.bad_fail >= agreeing, (metric, report)
        assert result.held_out_agreement is not None, (metric, report)
        assert round(result.held_out_agreement * 2 * result.pairs) >= held_out, (metric, report)


def test_the_committed_replies_answer_every_calibration_question(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So the test above and `custseg eval calibrate` need no judge call, and the file holds
    nothing else. No model file here: a call would fail. After a change to a prompt, a metric
    or the judge: `custseg eval calibrate --save-replies` (and the table in docs/evaluation.md)."""
    monkeypatch.setenv("CUSTSEG_MODEL_DIR", str(tmp_path / "no-model"))
    params = load_params(ROOT / PARAMS)
    bundled = make_provider(resolve_settings(params.llm))  # conftest cleared CUSTSEG_LLM_*
    scorer = committed_scorer(bundled, tmp_path / "cache", monkeypatch)
    _, rows = calibrate(load_calibration(ROOT / CALIBRATION), scorer, params.base.seed)
    stale = "run `custseg eval calibrate --save-replies`"
    assert scorer.judge.stats.calls == 0, f"{scorer.judge.stats.calls} question(s) new: {stale}"
    assert [row for row in rows if row["error"]] == []
    cache = scorer.judge.cache
    assert set(cache.used) == set(cache.seed), f"replies no question asks: {stale}"


@pytest.mark.timeout(600)
def test_the_committed_replies_are_the_bundled_judges(
    local_provider: LocalProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few committed questions asked again of the real model score the same, within what
    llama.cpp's arithmetic moves."""
    params = load_params(ROOT / PARAMS)
    cal = load_calibration(ROOT / CALIBRATION)
    items = []
    for section, index, label in REASKED:
        good, bad = pair_items(section, index, cal[section][index], params.base.seed, cal.profile)
        items.append(good if label == "good" else bad)
    committed = committed_scorer(local_provider, tmp_path / "committed", monkeypatch)
    recorded = [committed.score(item) for item in items]
    monkeypatch.setenv("CUSTSEG_JUDGE_CACHE", str(tmp_path / "fresh"))
    fresh = build_scorer(params, local_provider)  # no committed replies: every question asked
    asked = [fresh.score(item) for item in items]
    assert (committed.judge.stats.calls, fresh.judge.stats.calls) == (0, len(items))
    differences = [
        abs(a["judge_score"] - r["judge_score"]) for a, r in zip(asked, recorded, strict=True)
    ]
    print(f"re-asked {len(items)}: score differences {differences}")
    assert max(differences) <= REASK_TOLERANCE, (recorded, asked)


# --- the calibration set ---------------------------------------------------------------------


@pytest.mark.parametrize("section", sorted(FIELDS))
def test_every_section_has_distinct_good_and_bad_items(section: str) -> None:
    pairs = load_calibration(ROOT / CALIBRATION)[section]
    assert all(pair["good"].strip() != pair["bad"].strip() for pair in pairs)
    assert len({pair["task"] for pair in pairs}) == len(pairs)  # one pair per task


@pytest.mark.parametrize("section", sorted(FIELDS))
def test_most_degraded_items_stay_on_topic(section: str) -> None:
    pairs = load_calibration(ROOT / CALIBRATION)[section]
    assert len(pairs) >= MIN_PAIRS
    assert {p["degraded"] for p in pairs} <= DEGRADED
    assert on_topic_share(pairs) >= 0.5, section
    # Several kinds of on-topic failure, not one repeated.
    assert len({p["degraded"] for p in pairs} - {OFF_TOPIC}) >= 3, section


def test_calibration_profile_is_the_committed_conversations() -> None:
    profile = load_calibration(ROOT / CALIBRATION).profile
    conversation = jsonl.read(ROOT / "data" / "conversations.jsonl").values[0]
    assert conversation["grounded_in"]["version"] == profile.version
    assert [s["name"] for s in conversation["grounded_in"]["segments"]] == [
        s.name for s in profile.segments
    ]


def test_good_grounding_answers_pass_the_deterministic_check() -> None:
    """Sums of shares ("together 65% of customers") included: the check's one former miss."""
    cal = load_calibration(ROOT / CALIBRATION)
    failing = []
    for i, pair in enumerate(cal["grounding"]):
        good, _ = pair_items("grounding", i, pair, seed=42, profile=cal.profile)
        row = checked_row(
            Item(good.item_id, CHECK, pair["task"], good.output, grounding=good.grounding)
        )
        if not row["passed"]:
            failing.append(i)
    assert failing == []


def test_the_deterministic_check_ranks_and_separates_the_grounding_pairs() -> None:
    """All 17 pairs, no judge (measured 2026-11-30: ranking 0.94, agreement 0.97; 0.82 / 0.91
    before counts of segments and labels listed beside segment names were read, 0.53 / 0.74
    before figures were checked against the segment they are stated for). Its one miss: a
    quoted label away from the word segment ('"young professionals" within this group')."""
    cal = load_calibration(ROOT / CALIBRATION)
    rows = []
    for i, pair in enumerate(cal["grounding"]):
        items = check_items(*pair_items("grounding", i, pair, 42, cal.profile))
        good, bad = (checked_row(item) for item in items)
        rows.append((good, bad))
    result = summarise(rows, 1.0)
    assert result.pairs == 17 and result.errors == 0
    assert result.accuracy >= 0.94 and result.agreement >= 0.97, result.report()


def test_grounding_items_show_the_profile_before_the_task() -> None:
    cal = load_calibration(ROOT / CALIBRATION)
    good, bad = pair_items("grounding", 0, cal["grounding"][0], seed=42, profile=cal.profile)
    shown = good.shown_input
    assert shown == bad.shown_input and shown.endswith(f"Task: {cal['grounding'][0]['task']}")
    assert "customer-segments v10" in shown and '"low income · high spending": 38' in shown
    assert good.task == cal["grounding"][0]["task"]  # the check reads the plain task
    assert good.grounding == cal.profile
    with pytest.raises(ValueError, match="profile"):
        pair_items("grounding", 0, cal["grounding"][0], seed=42)


def _write(tmp_path: Path, edit: Any) -> Path:
    import yaml

    data = yaml.safe_load((ROOT / CALIBRATION).read_text())
    edit(data)
    path = tmp_path / "cal.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["improvement"][3].pop("review"), r"improvement\[3\]: missing review"),
        (lambda d: d["grounding"][2].pop("degraded"), r"grounding\[2\]: degraded must be one of"),
        (lambda d: d["helpfulness"][0].update(degraded="bad"), r"helpfulness\[0\]: degraded"),
        (lambda d: d["plan_quality"].__setitem__(1, "text"), r"plan_quality\[1\]: expected a"),
        (lambda d: d.pop("profile"), r"profile: Expected `object`"),
        (lambda d: d["profile"].update(segments=[]), "profile: needs the model's segments"),
        (lambda d: d.__setitem__("grounding", d["grounding"][:3]), "grounding: needs at least 15"),
    ],
)
def test_calibration_file_errors_name_section_and_index(
    tmp_path: Path, edit: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_calibration(_write(tmp_path, edit))
    assert "\n" not in str(error.value)


def test_calibration_file_that_is_not_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "cal.yaml"
    path.write_text("plan_quality:\n  - task: a: b\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 2$"):
        load_calibration(path)


# --- the report's arithmetic, with a fake scorer -----------------------------------------------


def row(score: float | None, error: str | None = None) -> dict[str, Any]:
    return {"score": score, "error": error}


def test_summarise_counts_ranking_agreement_and_spread() -> None:
    pairs = [
        (row(0.9), row(0.2)),  # higher; both on the right side of 0.5
        (row(0.6), row(0.55)),  # higher; bad passes: wrong side
        (row(0.4), row(0.4)),  # tie; good fails
        (row(0.3), row(0.7)),  # lower; both wrong
        (row(None, "boom"), row(0.1)),  # error: good wrong, bad right
    ]
    r = summarise(pairs, threshold=0.5)
    assert (r.pairs, r.higher, r.ties, r.errors) == (5, 2, 1, 1)
    assert r.accuracy == pytest.approx(0.4)
    assert (r.good_pass, r.bad_fail) == (2, 3)  # good 0.9, 0.6; bad 0.2, 0.4, 0.1
    assert r.agreement == pytest.approx(0.5)
    assert r.good_median == pytest.approx(0.5)  # of 0.9, 0.6, 0.4, 0.3
    assert r.bad_median == pytest.approx(0.4)
    assert r.gap == pytest.approx(0.1)
    assert r.std is not None and r.std > 0
    report = r.report()
    assert report["accuracy"] == 0.4 and report["agreement"] == 0.5 and report["threshold"] == 0.5


def test_best_threshold_is_the_lowest_with_most_items_right() -> None:
    assert best_threshold([0.8, 0.9], [0.1, 0.3]) == pytest.approx(0.55)
    assert best_threshold([0.6, 0.9], [0.5, 0.7]) == pytest.approx(0.55)  # 3 of 4 right
    assert best_threshold([], []) is None
    # Neighbouring floats have no midpoint between them: the mark is the higher one.
    assert best_threshold([5e-324], [0.0]) == 5e-324


def test_held_out_agreement_tests_each_pair_at_the_mark_the_others_set() -> None:
    separated = [(0.9, 0.1), (0.8, 0.2), (0.7, 0.3)]  # every mark set from two pairs: 0.5
    assert held_out_agreement(separated) == 1.0
    # Each pair alone sets a mark that misplaces one item of the other: in-sample 3 of 4 (0.25),
    # held out 2 of 4.
    assert best_threshold([0.9, 0.3], [0.8, 0.2]) == pytest.approx(0.25)
    assert held_out_agreement([(0.9, 0.8), (0.3, 0.2)]) == 0.5
    # A failed item counts wrong; the others still set marks without it.
    assert held_out_agreement([(None, 0.1), (0.8, 0.2), (0.7, 0.3)]) == pytest.approx(5 / 6)
    assert held_out_agreement([(0.9, 0.1)]) is None and held_out_agreement([]) is None
    assert held_out_agreement([(None, None), (None, None)]) == 0.0


scores = st.none() | st.floats(0.0, 1.0)


@given(st.lists(st.tuples(scores, scores), min_size=2, max_size=20))
def test_held_out_agreement_is_a_share_of_the_items(
    pairs: list[tuple[float | None, float | None]],
) -> None:
    agreement = held_out_agreement(pairs)
    assert agreement is not None and 0.0 <= agreement <= 1.0
    failed = sum(score is None for pair in pairs for score in pair)
    assert round(agreement * 2 * len(pairs)) <= 2 * len(pairs) - failed  # failed items: wrong


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(2, 10))
def test_held_out_agreement_of_repeated_pairs_is_their_own(good: float, bad: float, n: int) -> None:
    """Copies of one pair: every held-out pair meets the mark the copies set, so it agrees as
    far as one pair can (both items right if good is above bad, else one)."""
    expected = 1.0 if good > bad else 0.5
    assert held_out_agreement([(good, bad)] * n) == expected


class FakeScorer:
    """Scores by label (good 0.8, bad 0.3, as a perfect judge would), except `flip` items;
    `grounding_check` rows as the real check makes them."""

    def __init__(self, flip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.thresholds = {
            "plan_quality": 0.5,
            "helpfulness": 0.5,
            "improvement": 0.6,
            "grounding": 0.5,
        }
        self.flip = flip
        self.judge = SimpleNamespace(
            get_model_name=lambda: "fake", stats=SimpleNamespace(calls=0, hits=0)
        )
        self.items: list[Item] = []

    def score(self, item: Item) -> dict[str, Any]:
        self.items.append(item)
        if item.metric == CHECK:
            return checked_row(item)
        good = item.item_id.endswith(":good") != (item.item_id in self.flip)
        return {
            "correlation_id": item.item_id,
            "metric": item.metric,
            "error": None,
            "score": 0.8 if good else 0.3,
            "judge_score": 0.8 if good else 0.3,
        }


def test_calibrate_reports_every_metric_and_grounding_check() -> None:
    cal = load_calibration(ROOT / CALIBRATION)
    scorer = FakeScorer(flip={"calibration:improvement:0:bad"})
    results, rows = calibrate(cal, scorer, seed=42, limit=4)  # type: ignore[arg-type]
    assert list(results) == [*FIELDS, CHECK, JUDGE_PART]
    assert all(r.pairs == 4 for r in results.values())
    assert results["plan_quality"].accuracy == 1.0 and results["plan_quality"].agreement == 1.0
    improvement = results["improvement"]
    assert improvement.threshold == 0.6 and improvement.ties == 1
    assert improvement.accuracy == 0.75 and improvement.agreement == pytest.approx(7 / 8)
    assert improvement.held_out_agreement == pytest.approx(7 / 8)
    assert results["plan_quality"].held_out_agreement == 1.0
    assert results[CHECK].threshold == 1.0
    assert {r["label"] for r in rows} == {"good", "bad"}
    assert all(r["degraded"] in DEGRADED for r in rows if r["label"] == "bad")
    judged = [i for i in scorer.items if i.metric == "grounding"]
    assert judged and all(i.shown_input.startswith("Model customer-segments v10") for i in judged)


def test_cli_reports_and_gates_on_accuracy_and_agreement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import custseg.evaluation.scorer as scorer

    monkeypatch.setattr(scorer, "build_scorer", lambda params, seed: FakeScorer())
    args = argparse.Namespace(
        params=ROOT / PARAMS,
        file=ROOT / CALIBRATION,
        metric=["helpfulness", "grounding"],
        limit=2,
        json=tmp_path / "cal.json",
        rows=tmp_path / "rows.jsonl",
        min_accuracy=0.9,
        replies=ROOT / CALIBRATION_REPLIES,
        save_replies=False,
    )
    cli.cmd_calibrate(args)
    out = capsys.readouterr().out
    assert "agreement" in out and "grounding_check" in out
    report = json.loads(args.json.read_text())
    assert report["helpfulness"]["accuracy"] == 1.0 and report["helpfulness"]["agreement"] == 1.0
    assert report["on_topic_bad"]["grounding"] == 1.0
    assert len(jsonl.read(args.rows).values) == 2 * 2 * 3  # 3 metrics × 2 pairs × 2 items

    monkeypatch.setattr(
        scorer,
        "build_scorer",
        lambda params, seed: FakeScorer(flip={"calibration:helpfulness:0:bad"}),
    )
    with pytest.raises(ConfigError, match=r"below 0\.9 for helpfulness"):
        cli.cmd_calibrate(args)


def test_saved_replies_answer_the_next_calibration_with_no_judge_call(
    stand_in_llm: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--save-replies` writes exactly the replies the pairs needed to `--replies`; read back
    there, they answer every question of a run with an empty user cache. The stand-in LLM is
    the judge (its scores mean nothing; the plumbing is the subject)."""
    monkeypatch.setenv("CUSTSEG_LLM_PROVIDER", "openai")
    monkeypatch.setenv("CUSTSEG_LLM_BASE_URL", stand_in_llm)
    monkeypatch.setenv("CUSTSEG_LLM_MODEL", "stand-in-judge")
    monkeypatch.setenv("CUSTSEG_JUDGE_CACHE", str(tmp_path / "first-cache"))
    args = argparse.Namespace(
        params=ROOT / PARAMS,
        file=ROOT / CALIBRATION,
        metric=None,
        limit=None,
        json=None,
        rows=None,
        min_accuracy=0.0,
        replies=tmp_path / "replies.jsonl",
        save_replies=True,
    )
    cli.cmd_calibrate(args)
    saved = read_seed(args.replies)
    out = capsys.readouterr().out
    assert f"judge calls made: {len(saved)}, " in out and f"saved {len(saved)} judge" in out
    assert len(saved) > 4 * len(load_calibration(ROOT / CALIBRATION)["plan_quality"])

    monkeypatch.setenv("CUSTSEG_JUDGE_CACHE", str(tmp_path / "second-cache"))
    args.save_replies = False
    cli.cmd_calibrate(args)
    assert f"judge calls made: 0, cache hits: {len(saved)}" in capsys.readouterr().out

    args.save_replies, args.limit = True, 2  # a part of the pairs would drop the others' replies
    with pytest.raises(ConfigError, match=r"^--save-replies: needs every pair") as error:
        cli.cmd_calibrate(args)
    assert "\n" not in str(error.value)
    args.save_replies, args.limit, args.replies = False, None, tmp_path
    with pytest.raises(ConfigError, match=r"^--replies: .*: a directory, not a file$"):
        cli.cmd_calibrate(args)


# --- the score mapping ---------------------------------------------------------------------


def _reply(digits: list[tuple[str, list[tuple[str, float]]]]) -> Completion:
    """A score-first reply whose score tokens are `digits` (token, its alternatives)."""
    head = [TokenLogprob(t, -0.1) for t in ('{"', "score", '":', " ")]
    score = [TokenLogprob(t, -0.1, tuple(TopLogprob(a, p) for a, p in alts)) for t, alts in digits]
    tail = [TokenLogprob(t, -0.1, (TopLogprob("1", -0.1),)) for t in (",", ' "reason', '": "1"}')]
    return Completion("", 10, 10, 1.0, "m", "stop", (*head, *score, *tail))


def test_score_view_reads_a_one_beside_a_high_score_as_ten() -> None:
    high = score_view(_reply([("8", [("8", -0.7), ("1", -1.2), ("9", -2.0)])]))
    assert [t.token for t in high.logprobs[-1].top_logprobs] == ["8", "10", "9"]
    assert high.logprobs[-1].token == "8" and len(high.logprobs) == 5  # cut after the score
    low = score_view(_reply([("2", [("2", -0.5), ("1", -1.0), ("0", -2.0)])]))
    assert [t.token for t in low.logprobs[-1].top_logprobs] == ["2", "1", "0"]
    ten = score_view(_reply([("1", [("1", -0.2), ("9", -2.0)]), ("0", [("0", -0.01)])]))
    assert ten.logprobs[-1].token == "10"
    assert [t.token for t in ten.logprobs[-1].top_logprobs] == ["10", "9"]
    one = score_view(_reply([("1", [("1", -0.2), ("2", -2.0)])]))
    assert one.logprobs[-1].token == "1"


def test_a_ten_and_its_neighbours_weigh_as_high_scores() -> None:
    from deepeval.metrics.g_eval.utils import calculate_weighted_summed_score

    from custseg.evaluation.adapter import as_chat_completion

    reply = _reply([("8", [("8", math.log(0.5)), ("1", math.log(0.3)), ("9", math.log(0.2))])])
    weighted = calculate_weighted_summed_score(8, as_chat_completion(score_view(reply)))
    assert weighted == pytest.approx(0.5 * 8 + 0.3 * 10 + 0.2 * 9)  # not 0.3 * 1
