"""The GEval metrics for captured agent conversations: what each one asks the judge.

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
                     figures the final cites, and its claims about segments (.claims, .addressed:
                     superlatives, rankings, the segment the task asks about), checked against
                     the profile.

Every prompt starts with the same header (all metrics' steps), then the case, then a question
naming the metric. Scored conversation by conversation (`items.scoring_order`), consecutive
prompts share the header and the task, each pairwise prompt extends the helpfulness prompt of
the answer it shows first, and the grounding prompts (last) share the profile, so a judge with
a prompt cache (llama.cpp, hosted APIs) reads each answer about once per order it is shown in.

`custseg.evaluation.items` turns conversations into these questions, `.scorer` asks them,
`.summary` aggregates the rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from custseg.evaluation.judge import REPLY_FORMAT, CachedJudge, score_first_template


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
# a judge's; grounding_check passes when the answer cites nothing the model does not have and
# claims nothing the profile contradicts).
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
