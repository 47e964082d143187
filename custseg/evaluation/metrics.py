"""GEval metrics for captured agent conversations: definitions, scoring, aggregation.

Four scores per complete conversation, six when its envelopes say which segments grounded it,
from four GEval definitions with fixed evaluation steps (so deepeval makes no steps-generation
call) and one deterministic check:

- plan_quality       task → the Planner's plan, shown as Answer B after a generic plan (Answer
                     A) and judged with the improvement steps: "does B say more than A?"
- helpfulness_draft  task → the Writer's draft   (the `helpfulness` GEval), times the share of
                     the task's hard limits the answer keeps (custseg.evaluation.limits: a
                     length, a budget; the judge does not count)
- helpfulness_final  task → the Reviewer's final (the same)
- improvement        pairwise: draft and final shown as answers A and B, the judge rates "is B
                     better than A?", mapped back so it measures final-over-draft; asked in both
                     orders (a small judge prefers one position: averaged, that cancels), the
                     first drawn by a seeded RNG per conversation. Averaged with the helpfulness
                     gain, 0.5 + (helpfulness_final - helpfulness_draft) / 2 (cached: no call),
                     then pulled towards 0.5 as far as the final repeats the draft (`as_changed`).
- grounding          segment profile + task → the final: does it use only the segments the model
                     has, with figures that match? The `grounding` GEval's score times the
                     grounding check's (the share of cited names and figures that are the
                     model's): a 1.5B judge misses most wrong figures, the check misses what it
                     cannot parse. For conversations whose envelopes carry their segments.
- grounding_check    the check alone (custseg.evaluation.grounding, no judge): segment names and
                     figures the final cites, checked against the profile.

Every prompt starts with the same header (all metrics' steps), then the case, then a question
naming the metric. Scored conversation by conversation (`scoring_order`), consecutive prompts
share the header and the task, each pairwise prompt extends the helpfulness prompt of the
answer it shows first, and the grounding prompts (last) share the profile, so a judge with a
prompt cache (llama.cpp, hosted APIs) reads each answer about once per order it is shown in.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from custseg.config import Params
from custseg.conversation import CHAIN, GroundedIn, describe_segment
from custseg.evaluation.grounding import GroundingCheck, check_grounding
from custseg.evaluation.judge import (
    REPLY_FORMAT,
    CachedJudge,
    JudgeCache,
    cache_dir,
    read_seed,
    score_first_template,
    shown_reason,
)
from custseg.evaluation.limits import LimitsCheck, check_limits
from custseg.llm import Provider, make_provider, resolve_settings

TIE_EPS = 1e-9


@dataclass(frozen=True)
class GEvalSpec:
    """One GEval definition: fixed steps, what the test case's fields are called, and the
    question after the case that tells the judge which steps to follow."""

    name: str
    heading: str  # the steps' title in the shared header (neutral: no hint which answer is final)
    steps: tuple[str, ...]
    labels: dict[str, str | None]
    question: str


HELPFULNESS = GEvalSpec(
    "Helpfulness",
    "Helpfulness",
    (
        "Check that the answer gives exactly what the task asks for (the lines, metrics, offer, "
        "split, figures or choice), for the customer segment the task names.",
        "Check that it is specific and usable as it stands, and keeps the task's limits (how "
        "many, how long, what total).",
        "An answer that restates the task, stays vague or generic, names the wrong segment, "
        "leaves out part of the task, breaks its limits or is off topic scores 0-3; "
        "a direct, specific, correct answer scores 8-10.",
    ),
    # "Answer A", as in the pairwise prompt: that one then extends this one (shared prefix).
    {"Input": "Task", "Actual Output": "Answer A"},
    "Score Answer A with the Helpfulness steps.",
)
IMPROVEMENT = GEvalSpec(
    "Final-vs-Draft Improvement",
    "Answer B versus Answer A",
    (
        "Compare Answer B with Answer A as replies to the task: completeness, correctness, "
        "specificity.",
        "Score 8-10 if Answer B adds the specifics or parts Answer A lacks, or fixes its errors; "
        "5 if Answer B only rewords Answer A; 0-2 if Answer B is vaguer, wrong, or drops what "
        "Answer A had.",
    ),
    {"Input": "Task", "Actual Output": None},  # the output is "Answer A: … Answer B: …"
    "Score Answer B against Answer A with the Answer B versus Answer A steps.",
)
# The 1.5B judge grades a plan on its own poorly (good and bad plans bunch: ranking 0.88,
# agreement 0.79 on the calibration pairs) but tells a plan that says more than another apart
# (1.00 / 0.91): the plan is scored as Answer B against this one, which fits any task.
GENERIC_PLAN = "We will look at the customers, decide what to do for them, and carry it out well."
PLAN_QUALITY = GEvalSpec(
    "Plan Quality",
    IMPROVEMENT.heading,
    IMPROVEMENT.steps,
    {"Input": "Task", "Actual Output": None},  # the output is "Answer A: … Answer B: <plan>"
    IMPROVEMENT.question,
)
GROUNDING = GEvalSpec(
    "Grounding",
    "Grounding",
    (
        "Check that every customer segment the answer names is one of the segments in the "
        "segment profile, under the profile's name for it; any other group of customers is "
        "invented.",
        "Check every figure the answer gives about a segment (customers, share, mean income, "
        "mean spending score) against that segment's own line in the profile; a figure that "
        "differs, or belongs to another segment, is wrong.",
        "An answer with an invented segment or a wrong figure scores 0-2; "
        "one that uses only the profile's segments with their own figures scores 8-10.",
    ),
    {"Input": "Segment profile and task", "Actual Output": "Answer"},
    "Score the answer with the Grounding steps.",
)
SPECS = {
    "plan_quality": PLAN_QUALITY,
    "helpfulness": HELPFULNESS,
    "improvement": IMPROVEMENT,
    "grounding": GROUNDING,
}
SCORE_RANGE = (0, 10)


def shared_header(specs: Iterable[GEvalSpec] = SPECS.values()) -> str:
    """The prompt text every metric shares: each one's numbered steps (as deepeval numbers
    them), the score range and the reply format."""
    from deepeval.metrics.g_eval.utils import number_evaluation_steps

    low, high = SCORE_RANGE
    steps = {s.heading: s.steps for s in specs}  # plan quality asks with improvement's steps
    sections = "\n".join(f"{h}:\n{number_evaluation_steps(list(t))}" for h, t in steps.items())
    return (
        "You are a strict evaluator. Each case below ends with a question naming the steps "
        "to judge it by. Most replies you see have a flaw: as soon as one failure the steps "
        "name applies, give its low score; give 8-10 only when every step is clearly met.\n\n"
        f"{sections}\n"
        f"{high} means every step is fully met; {low} means none is.\n"
        f"{REPLY_FORMAT.format(low=low, high=high)}\n\n"
    )


# Result metric → its GEval definition and threshold key in params `eval.thresholds` (None: not
# a judge's; grounding_check passes when the answer cites nothing the model does not have).
METRICS: dict[str, str | None] = {
    "plan_quality": "plan_quality",
    "helpfulness_draft": "helpfulness",
    "helpfulness_final": "helpfulness",
    "improvement": "improvement",
    "grounding": "grounding",
    "grounding_check": None,
}


def make_geval(spec: GEvalSpec, judge: CachedJudge, threshold: float) -> Any:
    """A deepeval GEval for `spec` on `judge`: fixed steps, score-first template, no async."""
    from deepeval.metrics import GEval
    from deepeval.test_case import SingleTurnParams

    return GEval(
        name=spec.name,
        evaluation_steps=list(spec.steps),
        evaluation_params=[SingleTurnParams.INPUT, SingleTurnParams.ACTUAL_OUTPUT],
        model=judge,
        threshold=threshold,
        top_logprobs=judge.top_logprobs,
        evaluation_template=score_first_template(shared_header(), spec.labels, spec.question),
        async_mode=False,
        verbose_mode=False,
    )


# --- pairwise positions ------------------------------------------------------------------


def final_position(seed: int, item_id: str) -> str:
    """'A' or 'B': where the final answer is shown; fixed for a given (seed, item)."""
    return random.Random(f"{seed}:{item_id}").choice("AB")


def positions(seed: int, item_id: str) -> dict[str, str]:
    """{"A": "draft"|"final", "B": the other}, as recorded in the results."""
    if final_position(seed, item_id) == "B":
        return {"A": "draft", "B": "final"}
    return {"A": "final", "B": "draft"}


def answers_text(answer_a: str, answer_b: str) -> str:
    return f"Answer A:\n{answer_a}\n\nAnswer B:\n{answer_b}"


def pairwise_text(draft: str, final: str, where: dict[str, str]) -> str:
    answers = {"draft": draft, "final": final}
    return answers_text(answers[where["A"]], answers[where["B"]])


def plan_reason(reason: str | None) -> str | None:
    """The judge's reason about "Answer B" against "Answer A" as one about the plan."""
    if reason is None:
        return None
    named = re.sub(r"\bAnswer B\b", "the plan", re.sub(r"\bAnswer A\b", "the generic plan", reason))
    return named[:1].upper() + named[1:]


def final_over_draft(b_over_a: float, where: dict[str, str]) -> float:
    """The judge's "B better than A" score (0–1) as "final better than draft"."""
    return b_over_a if where["B"] == "final" else 1.0 - b_over_a


def swapped(where: dict[str, str]) -> dict[str, str]:
    return {"A": where["B"], "B": where["A"]}


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


def with_check(reason: str | None, found: str) -> str | None:
    """The judge's reason, then what a deterministic check found (if anything)."""
    return f"{reason} Check: {found}" if found else reason


# --- conversations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversations:
    complete: list[dict[str, Any]]
    skipped: list[dict[str, str]]  # {"correlation_id", "why"}


def missing_parts(record: dict[str, Any]) -> list[str]:
    return [p for p in CHAIN if not isinstance(record.get(p), str) or not record[p].strip()]


def split_conversations(lines: Iterable[str]) -> Conversations:
    """Complete conversations, and the rest (incomplete or unreadable lines) with why."""
    complete, skipped = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped.append({"correlation_id": f"line {number}", "why": "not valid JSON"})
            continue
        if not isinstance(record, dict):
            skipped.append({"correlation_id": f"line {number}", "why": "not a JSON object"})
            continue
        cid = str(record.get("correlation_id") or f"line {number}")
        if missing := missing_parts(record):
            skipped.append({"correlation_id": cid, "why": f"missing {', '.join(missing)}"})
            continue
        complete.append({**record, "correlation_id": cid})
    return Conversations(complete, skipped)


def read_conversations(path: Path) -> Conversations:
    return split_conversations(Path(path).read_text().splitlines())


# --- scoring -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One judge question: which metric, about what, with which test case."""

    item_id: str
    metric: str
    task: str
    output: str
    where: dict[str, str] | None = None  # pairwise positions, of the order asked first
    answers: tuple[str, str] | None = None  # (draft, final) of an improvement item
    grounding: GroundedIn | None = None  # the segments the answer is checked against

    @property
    def judge_calls(self) -> int:
        """The judge calls it needs at most: none for the check, two orders for a pair."""
        return 0 if METRICS[self.metric] is None else 2 if self.answers else 1

    @property
    def shown_input(self) -> str:
        """The judge's input: the task, after the segment profile when it checks grounding."""
        if self.metric != "grounding" or self.grounding is None:
            return self.task
        return f"{profile_text(self.grounding)}\n\nTask: {self.task}"

    @property
    def shown_output(self) -> str:
        """What the judge reads as the output: a plan after the generic one it is held against."""
        return (
            answers_text(GENERIC_PLAN, self.output)
            if self.metric == "plan_quality"
            else self.output
        )


def grounded_in(conv: dict[str, Any]) -> GroundedIn | None:
    """The model version and segments that grounded the conversation's final, if it says."""
    try:
        grounding = msgspec.convert(conv.get("grounded_in"), GroundedIn | None)
    except msgspec.ValidationError:
        return None
    return grounding if grounding and grounding.segments else None


def profile_text(grounding: GroundedIn) -> str:
    lines = "\n".join(f"- {describe_segment(s)}" for s in grounding.segments)
    return f"Model {grounding.model} v{grounding.version}, its only segments:\n{lines}"


def improvement_item(item_id: str, task: str, draft: str, final: str, seed: int) -> Item:
    """The pairwise item, shown first in the order the seed draws for `item_id`."""
    where = positions(seed, item_id)
    return Item(
        item_id, "improvement", task, pairwise_text(draft, final, where), where, (draft, final)
    )


def conversation_items(conv: dict[str, Any], seed: int) -> list[Item]:
    cid, task = conv["correlation_id"], conv["task"]
    items = [
        Item(cid, "plan_quality", task, conv["plan"]),
        Item(cid, "helpfulness_draft", task, conv["draft"]),
        Item(cid, "helpfulness_final", task, conv["final"]),
        improvement_item(cid, task, conv["draft"], conv["final"], seed),
    ]
    if grounding := grounded_in(conv):
        items += [
            Item(cid, "grounding", task, conv["final"], grounding=grounding),
            Item(cid, "grounding_check", task, conv["final"], grounding=grounding),
        ]
    return items


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
        }
        started = time.perf_counter()
        try:
            if item.answers is not None:
                score, judge_score, reason, latency = self._improvement(item)
            else:
                asked = (item.metric, item.shown_input, item.shown_output)
                judge_score, reason, latency = self._judge(*asked)
                score = judge_score
                if item.metric == "plan_quality":
                    reason = plan_reason(reason)
                elif METRICS[item.metric] == "helpfulness":
                    score, limits = self._helpfulness(item.task, item.output)
                    reason = with_check(reason, limits.reason())
        except Exception as error:  # an LLMError, bad JSON, a timeout: this item only
            row["error"] = " ".join(f"{type(error).__name__}: {error}".split())[:500]
            row["latency_s"] = round(time.perf_counter() - started, 3)
            return row
        if item.metric == "grounding":  # the judge's view, scaled by what the check found
            assert item.grounding is not None
            check = check_grounding(item.output, item.task, item.grounding.segments)
            score *= check.score
            row["grounding"] = check_details(item.grounding, check)
            reason = with_check(reason, "" if check.passed else check.reason())
        row.update(
            score=round(score, 6),
            judge_score=round(judge_score, 6),
            passed=score >= threshold,
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
    check = check_grounding(item.output, item.task, item.grounding.segments)
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
    }


def scoring_order(items: list[Item]) -> list[int]:
    """Indices of `items` in the order that lets a prompt cache reuse the most. Conversation
    by conversation: the plan, the answer shown first in the pair, the pair (whose prompt
    starts as the previous one does: header, task, answer A; it asks the other order right
    after the other answer's helpfulness), then that answer's row (answered already). Then
    every grounding question in a row: their prompts share the header and the profile."""
    first_shown = {i.item_id: i.where["A"] for i in items if i.where}
    conversation = {item_id: n for n, item_id in enumerate(dict.fromkeys(i.item_id for i in items))}

    def rank(index: int) -> tuple[int, int, int]:
        item = items[index]
        if item.metric.startswith("grounding"):
            return 1, conversation[item.item_id], 0
        if item.metric == "plan_quality":
            step = 0
        elif item.metric == "improvement":
            step = 2
        else:  # helpfulness_draft / helpfulness_final
            step = 1 if item.metric.endswith(f"_{first_shown.get(item.item_id)}") else 3
        return 0, conversation[item.item_id], step

    return sorted(range(len(items)), key=rank)


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


# --- aggregation -------------------------------------------------------------------------------


def aggregate(rows: list[dict[str, Any]], n_conversations: int, n_skipped: int) -> dict[str, Any]:
    """metrics/eval.json: per metric mean score and pass rate; scored/error/skipped counts."""
    summary: dict[str, Any] = {
        "conversations": n_conversations,
        "skipped": n_skipped,
        "scored": sum(r["error"] is None for r in rows),
        "errors": sum(r["error"] is not None for r in rows),
    }
    for metric in METRICS:
        mine = [r for r in rows if r["metric"] == metric]
        ok = [r for r in mine if r["error"] is None]
        summary[metric] = {
            "mean": round(sum(r["score"] for r in ok) / len(ok), 6) if ok else None,
            "pass_rate": round(sum(bool(r["passed"]) for r in ok) / len(ok), 6) if ok else None,
            "scored": len(ok),
            "errors": len(mine) - len(ok),
        }
    return summary


def flatten(summary: dict[str, Any]) -> dict[str, float]:
    """`{"plan_quality": {"mean": x}}` → `{"plan_quality.mean": x}`, numbers only (for MLflow)."""
    flat: dict[str, float] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    flat[f"{key}.{sub}"] = float(v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[key] = float(value)
    return flat


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
