"""Plans held to what they state, with no judge (issue #33): their claims about the segments
and the segment they address (not which segments they name: steps may leave that to the
answer), a count, length or budget they set out against the task's, and a plan with no words
of its own (only the task's and generic steps). Generated tasks and plans, then the
calibration set and the committed conversations."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from custseg.conversation import GroundedIn
from custseg.evaluation.calibration import check_failures, load_calibration
from custseg.evaluation.grounding import COUNT_WORDS
from custseg.evaluation.items import grounded_in, read_conversations
from custseg.evaluation.limits import GENERIC_PLAN_WORDS, PLAN_OWN_WORDS, plan_breaches
from custseg.evaluation.scorer import check_plan
from tests.fixtures.project import ROOT
from tests.test_eval_claims import profiles

SPECIFIC = ["alterations", "preview", "vouchers", "weekend", "basket", "concierge", "tailoring",
            "newsletter", "referral", "birthday", "parking", "catalogue"]  # fmt: skip
DETAIL = "1) Note the segment's habits. 2) Offer early access, free alterations and a preview."


def grounding(segments) -> GroundedIn:
    return GroundedIn(model="customer-segments", version="1", segments=tuple(segments))


@settings(max_examples=100)
@given(n=st.integers(2, 6), m=st.integers(2, 9), noun=st.sampled_from(["subject lines", "ideas"]))
def test_a_plan_that_sets_out_another_count_of_the_asked_items_breaks_the_task(n, m, noun) -> None:
    task = f"Write {COUNT_WORDS[n - 1]} {noun} for our spring sale."
    plan = f"1) Pick the sale's selling points. 2) Draft {COUNT_WORDS[m - 1]} {noun} about them."
    found = [f for f in plan_breaches(plan, task) if "generic" not in f]
    assert bool(found) == (n != m), (task, plan, found)


@settings(max_examples=100)
@given(
    limit=st.integers(20, 300),
    planned=st.integers(5, 600),
    unit=st.sampled_from(["words", "characters"]),
)
def test_a_plan_that_sets_out_a_longer_answer_than_allowed_breaks_it(limit, planned, unit) -> None:
    task = f"Write a welcome message of at most {limit} {unit} for new customers."
    plan = f"1) Name one offer. 2) Draft a welcome of about {planned} {unit}. {DETAIL}"
    assert bool(plan_breaches(plan, task)) == (planned > limit), (task, plan)


@settings(max_examples=100)
@given(budget=st.integers(2, 90).map(lambda k: k * 1000), data=st.data())
def test_a_plan_whose_amounts_pass_the_budget_breaks_it(budget, data) -> None:
    task = f"Propose a {budget:,} $ split of a promotion budget between A and B."
    first = data.draw(st.integers(1, budget // 1000 - 1)) * 1000
    over = data.draw(st.integers(0, 5)) * 1000
    assume(budget - first + over != budget)  # an amount equal to the budget reads as restated
    second = budget - first + over
    plan = f"1) Compare A and B. 2) Give each an amount, e.g. {first:,} $ and {second:,} $."
    assert bool(plan_breaches(plan, task)) == (over > 0), (task, plan)


@settings(max_examples=200)
@given(
    generic=st.lists(st.sampled_from(sorted(GENERIC_PLAN_WORDS)), min_size=3, max_size=20),
    own=st.lists(st.sampled_from(SPECIFIC), unique=True, max_size=6),
)
def test_a_plan_with_no_words_of_its_own_is_generic(generic, own) -> None:
    task = "Propose a loyalty offer for the high income · low spending segment."
    plan = " ".join(f"{n}) {w.capitalize()} the task." for n, w in enumerate(generic + own, 1))
    flagged = any("generic plan" in f for f in plan_breaches(plan, task))
    assert flagged == (len(own) < PLAN_OWN_WORDS), plan


@settings(max_examples=100)
@given(profile=profiles(min_size=3), data=st.data())
def test_a_plan_is_held_to_the_segment_the_task_names_not_to_naming_segments(profile, data) -> None:
    asked, other = data.draw(st.permutations(profile))[:2]
    task = f'Propose a loyalty offer for the "{asked.name}" segment.'
    right = f"1) Read the {asked.name} segment's figures. {DETAIL}"
    unnamed = f"1) Read the segment's figures. {DETAIL}"
    wrong = f"1) Read the {other.name} segment's figures. {DETAIL}"
    assert check_plan(right, task, grounding(profile))[1] == []
    assert check_plan(unnamed, task, grounding(profile))[1] == []  # the answer will name it
    assert check_plan(wrong, task, grounding(profile))[1], wrong


def test_which_tasks_plans_need_not_name_a_segment() -> None:
    profile = load_calibration(ROOT / "eval" / "calibration.yaml").profile
    task = "Which segment has the most customers? Say how many that is."
    plan = (
        "1) Read the number of customers of each segment. 2) Pick the largest. 3) Report its count."
    )
    assert check_failures("plan_quality", task, plan, profile) == ""
    false = "1) Note that low income · low spending has the most customers. 2) Report its count."
    assert "highest number of customers" in check_failures("plan_quality", task, false, profile)


def test_the_calibration_plans_good_pass_and_the_classes_the_checks_read_are_caught() -> None:
    calibration = load_calibration(ROOT / "eval" / "calibration.yaml")
    caught: dict[str, list[bool]] = {}
    for pair in calibration["plan_quality"]:
        assert check_failures("plan_quality", pair["task"], pair["good"], calibration.profile) == ""
        found = check_failures("plan_quality", pair["task"], pair["bad"], calibration.profile)
        caught.setdefault(pair["degraded"], []).append(bool(found))
    for kind in ("generic", "vague"):
        assert all(caught[kind]), (kind, caught[kind])
    # A count, a length and a budget the plan states; not "write a full-page letter" for an SMS.
    assert sum(caught["broken_limit"]) == 3, caught["broken_limit"]


def test_the_committed_plans_flagged_are_the_wrong_ones() -> None:
    flagged = {}
    for conv in read_conversations(ROOT / "data" / "conversations.jsonl").complete:
        found = check_plan(conv["plan"], conv["task"], grounded_in(conv))[1]
        if found:
            flagged[conv["task"][:40]] = found
    # The two plans the readers called wrong: the highest income said of the average
    # segment, and the 85 k$ / 20 customer sent to a high-spending segment.
    assert set(flagged) == {
        "Which segment has the highest mean annua",
        "A customer earns 85k$ a year and has a s",
    }, flagged
