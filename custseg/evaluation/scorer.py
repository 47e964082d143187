"""Scoring judge questions: one GEval per definition on one cached judge, the deterministic checks
folded in (task limits, grounding), and the improvement score's arithmetic."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custseg.config import Params
from custseg.conversation import GroundedIn
from custseg.evaluation.addressed import check_answer
from custseg.evaluation.asks import ignored_review
from custseg.evaluation.grounding import GroundingCheck
from custseg.evaluation.items import Item, pairwise_text, scoring_order, swapped
from custseg.evaluation.judge import CachedJudge, shown_reason
from custseg.evaluation.judge_cache import JudgeCache, cache_dir, read_seed
from custseg.evaluation.limits import LimitsCheck, check_limits, plan_breaches
from custseg.evaluation.specs import METRICS, SPECS, make_geval
from custseg.llm import Provider, make_provider, resolve_settings


def plan_reason(reason: str | None) -> str | None:
    """The judge's reason about "Answer B" against "Answer A" as one about the plan."""
    if reason is None:
        return None
    named = re.sub(r"\bAnswer B\b", "the plan", re.sub(r"\bAnswer A\b", "the generic plan", reason))
    return named[:1].upper() + named[1:]


def final_over_draft(b_over_a: float, where: dict[str, str]) -> float:
    """The judge's "B better than A" score (0–1) as "final better than draft"."""
    return b_over_a if where["B"] == "final" else 1.0 - b_over_a


def improvement_score(pairwise: float, helpfulness_draft: float, helpfulness_final: float) -> float:
    """Half the pairwise judgement (final over draft, both orders averaged), half the
    helpfulness gain mapped to 0–1 (0.5: the final helps as much as the draft). Measured on the
    calibration pairs, either alone ranks 0.88 and the two together 1.0 (README)."""
    gain = 0.5 + (helpfulness_final - helpfulness_draft) / 2
    return (pairwise + gain) / 2


# A final with at least this share of words the draft does not have gets the judges' full
# verdict; less, proportionally less (README: set on the calibration pairs).
FULLY_REWRITTEN = 0.5


def new_words_share(draft: str, final: str) -> float:
    """The share of the final's words that are not in the draft (0.0: the draft kept as is)."""
    kept = set(re.findall(r"[^\W_]+", draft.casefold()))
    words = re.findall(r"[^\W_]+", final.casefold())
    return sum(word not in kept for word in words) / len(words) if words else 0.0


def as_changed(score: float, new_words: float) -> float:
    """An improvement score pulled towards 0.5 (no better, no worse) as far as the final only
    repeats the draft (`new_words`: its `new_words_share`): the 1.5B judges rate a final that
    ignores the review, keeping the draft's words, as better than it; an unchanged final is no
    improvement, whatever they say."""
    weight = min(1.0, new_words / FULLY_REWRITTEN)
    return 0.5 + (score - 0.5) * weight


def check_plan(plan: str, task: str, grounding: GroundedIn) -> tuple[float, list[str]]:
    """A plan held to what it states, without a judge: its claims about the segments and the
    segment it addresses (`check_answer(plan=True)`: the share of them that hold), and the
    task's limits it sets out to break (`plan_breaches`); the findings, one line each."""
    check = check_answer(plan, task, grounding.segments, plan=True)
    found = ([] if check.passed else [check.reason()]) + plan_breaches(plan, task)
    return check.score, found


def with_check(reason: str | None, found: str) -> str | None:
    """The judge's reason, then what a deterministic check found (if anything)."""
    return f"{reason} Check: {found}" if found else reason


@dataclass
class Scorer:
    """Scores Items with one GEval per definition on one cached judge."""

    judge: CachedJudge
    thresholds: dict[str, float]
    _gevals: dict[str, Any] = field(default_factory=dict)
    # Each question's answer, so improvement reuses the helpfulness rows' (also with no cache).
    _answers: dict[tuple[str, str, str], tuple[float, str | None, float]] = field(
        default_factory=dict
    )

    def geval(self, metric: str) -> Any:
        spec_key = METRICS[metric]
        if spec_key not in self._gevals:
            self._gevals[spec_key] = make_geval(
                SPECS[spec_key], self.judge, self.thresholds[spec_key]
            )
        return self._gevals[spec_key]

    def score(self, item: Item) -> dict[str, Any]:
        """One result row; a judge failure becomes `error` (score None), never an exception."""
        if METRICS[item.metric] is None:
            return checked_row(item)
        threshold = self.thresholds[METRICS[item.metric]]
        row: dict[str, Any] = {
            "correlation_id": item.item_id,
            "metric": item.metric,
            "score": None,
            "judge_score": None,
            "passed": None,
            "threshold": threshold,
            "reason": None,
            "judge_model": self.judge.get_model_name(),
            "latency_s": 0.0,
            "error": None,
            "positions": item.where,
            "grounding": None,
            "task": item.task,  # what `custseg eval compare` pairs two variants by
            "variant": item.variant,
            **({"work": item.work} if item.work is not None else {}),
        }
        started = time.perf_counter()
        kept = True  # the task's limits and asks, where the metric checks them
        try:
            if item.answers is not None:
                score, judge_score, reason, latency = self._improvement(item)
                if item.review is not None:  # a final that ignores a review asking for more
                    found = ignored_review(item.review, *item.answers, item.task)
                    reason, kept = with_check(reason, found), not found
            else:
                asked = (item.metric, item.shown_input, item.shown_output)
                judge_score, reason, latency = self._judge(*asked)
                score = judge_score
                if item.metric == "plan_quality":
                    reason = plan_reason(reason)
                    if item.grounding is not None:  # a plan's claims hold, or it fails
                        share, found = check_plan(item.output, item.task, item.grounding)
                        score *= share
                        reason, kept = with_check(reason, "; ".join(found)), not found
                elif METRICS[item.metric] == "helpfulness":
                    score, limits = self._helpfulness(item.task, item.output)
                    reason, kept = with_check(reason, limits.reason()), limits.passed
        except Exception as error:  # an LLMError, bad JSON, a timeout: this item only
            row["error"] = " ".join(f"{type(error).__name__}: {error}".split())[:500]
            row["latency_s"] = round(time.perf_counter() - started, 3)
            return row
        if item.metric == "grounding":  # the judge's view, scaled by what the check found
            assert item.grounding is not None
            check = check_answer(item.output, item.task, item.grounding.segments)
            score *= check.score
            row["grounding"] = check_details(item.grounding, check)
            reason = with_check(reason, "" if check.passed else check.reason())
        row.update(
            score=round(score, 6),
            judge_score=round(judge_score, 6),
            passed=score >= threshold and kept,  # a broken limit or a missed ask fails it
            reason=reason,
            # The original calls' judge time, also when answered from the cache (deterministic).
            latency_s=round(latency, 3),
        )
        return row

    def _judge(self, metric: str, shown_input: str, output: str) -> tuple[float, str | None, float]:
        """One GEval question: (score, shown reason, the judge's seconds)."""
        from deepeval.test_case import LLMTestCase

        question = (METRICS[metric], shown_input, output)  # helpfulness_draft/_final: one GEval
        if question not in self._answers:
            geval = self.geval(metric)
            score = geval.measure(
                LLMTestCase(input=shown_input, actual_output=output), _show_indicator=False
            )
            answer = float(score), shown_reason(geval.reason), self.judge.last_latency_s
            self._answers[question] = answer
        return self._answers[question]

    def _helpfulness(self, task: str, answer: str) -> tuple[float, LimitsCheck]:
        """An answer's helpfulness score, the judge's times the share of the task's limits it
        keeps, and that check."""
        limits = check_limits(answer, task)
        return self._judge("helpfulness_draft", task, answer)[0] * limits.score, limits

    def _improvement(self, item: Item) -> tuple[float, float, str | None, float]:
        """(score, the pairwise part, the first order's reason, seconds of the two pairwise
        calls). Each order is asked right after the helpfulness of the answer it shows first
        (the same prompt up to that answer, so a prompt cache reads it once); those scores are
        the answers' own helpfulness rows' (asked once, see `_answers`)."""
        assert item.answers is not None and item.where is not None
        draft, final = item.answers
        answers = {"draft": draft, "final": final}
        parts = []
        for where in (item.where, swapped(item.where)):
            self._judge("helpfulness_draft", item.task, answers[where["A"]])
            b_over_a, reason, latency = self._judge(
                item.metric, item.task, pairwise_text(draft, final, where)
            )
            parts.append((final_over_draft(b_over_a, where), reason, latency))
        pairwise = (parts[0][0] + parts[1][0]) / 2
        helpful = [self._helpfulness(item.task, answer)[0] for answer in (draft, final)]
        new = new_words_share(draft, final)
        score = as_changed(improvement_score(pairwise, *helpful), new)
        partial = f"{new:.0%} of the final's words are new, so partial weight."
        reason = with_check(parts[0][1], partial if new < FULLY_REWRITTEN else "")
        return score, pairwise, reason, parts[0][2] + parts[1][2]


def checked_row(item: Item) -> dict[str, Any]:
    """The grounding check's row: no judge, a score and a reason all the same."""
    assert item.grounding is not None
    check = check_answer(item.output, item.task, item.grounding.segments)
    return {
        "correlation_id": item.item_id,
        "metric": item.metric,
        "score": round(check.score, 6),
        "judge_score": None,
        "passed": check.passed,
        "threshold": 1.0,
        "reason": check.reason(),
        "judge_model": None,
        "latency_s": 0.0,
        "error": None,
        "positions": None,
        "grounding": check_details(item.grounding, check),
        "task": item.task,
        "variant": item.variant,
        **({"work": item.work} if item.work is not None else {}),
    }


def check_details(grounding: GroundedIn, check: GroundingCheck) -> dict[str, Any]:
    """What the grounding check cited and found wrong, against which model version."""
    return {
        "model": grounding.model,
        "version": grounding.version,
        "segments": check.segments,
        "invented": check.invented,
        "figures": check.figures,
        "wrong": check.wrong,
        "claims": check.claims,
    }


def score_items(
    scorer: Scorer,
    items: list[Item],
    progress: Callable[[Iterable[int]], Iterator[int]] = iter,
) -> list[dict[str, Any]]:
    """Rows in the order of `items`, scored in `scoring_order`."""
    rows: list[dict[str, Any]] = [{} for _ in items]
    for index in progress(scoring_order(items)):
        rows[index] = scorer.score(items[index])
    return rows


def build_scorer(
    params: Params, provider: Provider | None = None, seed: Path | None = None
) -> Scorer:
    """The Scorer `params` describe: the `llm:` judge unless `provider` is given, cached under
    `eval.cache_dir` / $CUSTSEG_JUDGE_CACHE, with the replies in the `seed` file as fallback."""
    judge = CachedJudge(
        provider or make_provider(resolve_settings(params.llm)),
        JudgeCache(cache_dir(params.eval.cache_dir), read_seed(seed) if seed else None),
        max_tokens=params.eval.max_tokens,
        top_logprobs=params.eval.top_logprobs,
    )
    return Scorer(judge, params.eval.thresholds.model_dump())
