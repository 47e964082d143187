"""Judge-free checks added for the calibration misses of 2026-12-07 (issue #33), each a class
with property tests on generated profiles and sentences: superlatives relative to income (a
spending-to-income ratio), a level group as a claim's subject ("both high-income segments …
spend the most"), "they" before any name standing for the task's segment, "the segment with
the lowest …" as the task's target, rankings in shorthand ("low·high 82.7"), "how often"
answered with a frequency, an open list for a count, a review's ruled-out discount, a vague
answer to a task asking what to do, and steps out of order where the task asks for an order."""

from __future__ import annotations

import itertools

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from custseg.conversation import Segment
from custseg.evaluation.addressed import check_claims
from custseg.evaluation.asks import ignored_review, out_of_sequence, vague
from custseg.evaluation.claims import RATIO, TOL, ranked
from custseg.evaluation.grounding import COUNT_WORDS, TOLERANCE
from custseg.evaluation.limits import check_limits, plan_breaches
from tests.test_eval_claims import profiles, value


def ratio(segment: Segment) -> float:
    return value(segment, "mean_spending") / value(segment, "mean_income")


def among(segment: Segment, profile: list[Segment], key, highest: bool, tol: float) -> bool:
    """Whether `segment` is the top (bottom) one by `key`, up to `tol`."""
    best = max(map(key, profile)) if highest else min(map(key, profile))
    return key(segment) >= best - tol if highest else key(segment) <= best + tol


def clear(segment: Segment, profile: list[Segment], key, highest: bool, tol: float) -> bool:
    """True or false beyond doubt: not within `tol` of the line (the check reads rounding either
    way, so the properties test only cases it must decide)."""
    best = max(map(key, profile)) if highest else min(map(key, profile))
    return abs(key(segment) - best) < 1e-9 or abs(key(segment) - best) > 2 * tol


@settings(max_examples=150)
@given(profile=profiles(min_size=2), data=st.data())
def test_a_superlative_relative_to_income_is_checked_against_spending_per_income(
    profile, data
) -> None:
    segment = data.draw(st.sampled_from(profile))
    highest = data.draw(st.booleans())
    assume(clear(segment, profile, ratio, highest, TOL[RATIO]))
    most = "most" if highest else "least"
    relative = data.draw(st.sampled_from(["relative to its income", "for its income"]))
    task = f"Which segment spends the {most} {relative}, and how should we approach it?"
    answer = f'"{segment.name}": reach it with a personal invitation.'
    right = among(segment, profile, ratio, highest, TOL[RATIO])
    assert (check_claims(answer, task, profile) == []) == right, (task, answer)
    said = f'"{segment.name}" spends the {most} relative to its income.'
    assert (check_claims(said, "Tell us about our customers.", profile) == []) == right


@settings(max_examples=150)
@given(profile=profiles(min_size=3), data=st.data())
def test_a_level_group_is_the_subject_of_the_superlative_said_of_it(profile, data) -> None:
    level = data.draw(st.sampled_from(["low", "average", "high"]))
    group = [s for s in profile if s.name.startswith(f"{level} income")]
    assume(1 <= len(group) < len(profile))
    top = ranked(profile, "mean_spending", True)
    bound = value(top[len(group) - 1], "mean_spending")
    values = [value(s, "mean_spending") for s in group]
    assume(all(abs(v - bound) > 2 * TOLERANCE["mean_spending"] or v >= bound for v in values))
    answer = f"Send both {level}-income segments our catalogue, since they both spend the most."
    right = all(v >= bound - TOLERANCE["mean_spending"] for v in values)
    assert (check_claims(answer, "Tell us about our customers.", profile) == []) == right


@settings(max_examples=150)
@given(profile=profiles(min_size=2), data=st.data())
def test_they_before_any_name_is_the_segment_the_task_names(profile, data) -> None:
    segment = data.draw(st.sampled_from(profile))
    highest = data.draw(st.booleans())
    spending = lambda s: value(s, "mean_spending")  # noqa: E731
    assume(clear(segment, profile, spending, highest, TOLERANCE["mean_spending"]))
    task = f'Suggest a reactivation campaign for the "{segment.name}" segment.'
    plan = f"1) Note that they spend the {'most' if highest else 'least'}. 2) Pick an offer."
    right = among(segment, profile, spending, highest, TOLERANCE["mean_spending"])
    assert (check_claims(plan, task, profile, plan=True) == []) == right, plan


@settings(max_examples=150)
@given(profile=profiles(min_size=2), data=st.data())
def test_the_segment_with_a_superlative_is_the_tasks_target(profile, data) -> None:
    segment = data.draw(st.sampled_from(profile))
    income = lambda s: value(s, "mean_income")  # noqa: E731
    assume(clear(segment, profile, income, False, TOLERANCE["mean_income"]))
    task = "Suggest an offer for the segment with the lowest mean annual income."
    answer = f'Give "{segment.name}" a basics bundle at 15 $.'
    right = among(segment, profile, income, False, TOLERANCE["mean_income"])
    assert (check_claims(answer, task, profile) == []) == right, answer
    # "the segment that we …" with a superlative far after it is not asked for by it
    far = "Suggest an offer for the segment that our stores serve on the busiest weekend days, "
    assert check_claims(answer, far + "the one with the lowest income.", profile) == []


def shorthand(segment: Segment) -> str:
    income, spending = segment.name.replace(" income ·", "").replace(" spending", "").split()
    return f"{income}·{spending}"


@settings(max_examples=150)
@given(profile=profiles(min_size=3), data=st.data())
def test_a_plans_ranking_in_shorthand_holds_only_in_the_order_asked(profile, data) -> None:
    listed = data.draw(st.permutations(profile))
    spending = [value(s, "mean_spending") for s in listed]
    tol = TOLERANCE["mean_spending"]
    ordered = all(a >= b - tol for a, b in itertools.pairwise(spending))
    clearly = all(a > b + 2 * tol or a >= b for a, b in itertools.pairwise(spending))
    assume(ordered == clearly)
    task = "Rank the segments by mean spending score, highest first."
    plan = "1) Read the scores. 2) Sort them: " + ", ".join(
        f"{shorthand(s)} {value(s, 'mean_spending'):g}" for s in listed
    )
    found = check_claims(plan, task, profile, plan=True)
    assert (found == []) == ordered, (plan, found)


FREQUENCIES = ["quarterly", "every month", "twice a year", "once a week", "weekly"]
NOT_FREQUENCIES = ["regularly", "from time to time", "when needed", "often"]


@given(said=st.sampled_from(FREQUENCIES + NOT_FREQUENCIES))
def test_how_often_is_answered_with_a_frequency(said) -> None:
    task = "How often should we retrain the segmentation model?"
    found = check_limits(f"Retrain it {said}, and watch the silhouette score.", task)
    assert found.passed == (said in FREQUENCIES), found.reason()


@given(
    n=st.integers(2, 5),
    items=st.lists(st.sampled_from(["visits", "basket value", "redemptions"]), min_size=2),
    tail=st.sampled_from(["", " and any other relevant metrics", ", etc.", " and so on"]),
)
def test_an_open_list_is_not_the_number_of_items_asked(n, items, tail) -> None:
    task = f"Suggest {COUNT_WORDS[n - 1]} metrics to track the weekend promotion."
    found = check_limits(f"Track {', '.join(items)}{tail}.", task)
    assert ("an open list" in found.reason()) == bool(tail), found.reason()


RULED_OUT = ["This segment does not respond to discounts", "Avoid discounts", "No discounts here"]


@given(
    review=st.sampled_from(RULED_OUT),
    final=st.sampled_from(["Email them a 20% discount code.", "Send a discount voucher."]),
    other=st.sampled_from(["Invite them to a preview evening.", "Offer perks, not discounts."]),
)
def test_a_final_offering_what_its_review_rules_out_ignores_it(review, final, other) -> None:
    task, draft = "Outline how to win back lapsed customers.", "Email them."
    assert "rules out" in ignored_review(f"{review}.", draft, final, task)
    assert "rules out" not in ignored_review(f"{review}.", draft, other, task)
    assert "rules out" not in ignored_review("Be specific.", draft, final, task)


CONCRETE = [
    "a 10 $ voucher",
    "three days before",
    "quarterly",
    '"Happy birthday, Ana"',
    "the high income · low spending customers",
    "affordability checks, low limits and clear terms",
]
ACTION_TASKS = [
    "Suggest a birthday campaign for our customers.",
    "How should we approach the new segment?",
    "List the risks of credit-card offers, and how to avoid them.",
]


@settings(max_examples=150)
@given(
    task=st.sampled_from([*ACTION_TASKS, "Write an SMS inviting them to the sale."]),
    words=st.lists(st.sampled_from(["send", "a nice", "message", "be careful", "make them"])),
    detail=st.sampled_from(["", *CONCRETE]),
)
def test_an_answer_with_nothing_concrete_to_a_task_asking_what_to_do_is_vague(
    task, words, detail
) -> None:
    answer = f"{' '.join(words)} {detail}".strip().capitalize() + "."
    expected = task in ACTION_TASKS and not detail
    assert (vague(answer, task) is not None) == expected, (task, answer)
    # a task with a count or a part to give is held to that instead
    assert vague(answer, "Suggest one offer for them.") is None


OPENS = ["listen to the complaint", "read the profile", "define the goal"]
CLOSES = ["follow up with a call", "report the results", "measure the uplift"]
MIDDLE = ["offer a fix", "send the voucher", "pick the segment"]


@settings(max_examples=150)
@given(
    steps=st.lists(st.sampled_from(OPENS + CLOSES + MIDDLE), min_size=2, max_size=5),
    numbered=st.booleans(),
)
def test_steps_in_order_never_close_before_they_open(steps, numbered) -> None:
    task = "List, in order, the three things the store manager should do first."
    text = " ".join(f"{i}) {s}." for i, s in enumerate(steps, 1)) if numbered else (
        ", then ".join(steps) + ".")  # fmt: skip
    kinds = ["opens" if s in OPENS else "closes" if s in CLOSES else "" for s in steps]
    closing = kinds.index("closes") if "closes" in kinds else None
    last_open = max((i for i, k in enumerate(kinds) if k == "opens"), default=None)
    wrong = closing is not None and last_open is not None and last_open > closing
    assert (out_of_sequence(text, task) is not None) == wrong, text
    assert (any("out of order" in f for f in plan_breaches(text, task))) == wrong
    assert out_of_sequence(text, "Suggest three things to do.") is None  # no order asked


@settings(max_examples=150)
@given(
    a=st.integers(1, 99),
    b=st.integers(1, 99),
    word=st.sampled_from(["more", "fewer", "higher", "lower", "above", "below"]),
    form=st.sampled_from(
        ["{a} customers, {w} than the {b} of {n}", "{a} k$, just {w} {n} at {b} k$"]
    ),
)
def test_two_figures_compared_in_words_they_contradict_are_caught(a, b, word, form) -> None:
    assume(a != b)
    answer = f'"low income · low spending" has {form.format(a=a, b=b, w=word, n="the rest")}.'
    more = word in ("more", "higher", "above")
    wrong = (a < b) if more else (a > b)
    found = [f for f in check_claims(answer, "Tell us about our customers.", []) if "is " in f]
    assert bool(found) == wrong, (answer, found)
    # over / under are not read: "5 visits over 12 weeks"
    assert check_claims(f"{a} visits over {b} weeks.", "Tell us about our customers.", []) == []


@settings(max_examples=150)
@given(profile=profiles(min_size=3), data=st.data())
def test_a_superlative_beside_a_name_is_that_names_alone(profile, data) -> None:
    first, second = data.draw(st.permutations(profile))[:2]
    size = lambda s: value(s, "size")  # noqa: E731
    assume(clear(second, profile, size, True, TOLERANCE["size"]))
    answer = f"Send it to {first.name}, and {second.name}, our largest group."
    right = among(second, profile, size, True, TOLERANCE["size"])
    assert (check_claims(answer, "Tell us about our customers.", profile) == []) == right


@settings(max_examples=150)
@given(profile=profiles(min_size=2), data=st.data())
def test_which_segments_past_a_line_must_all_be_named(profile, data) -> None:
    line = data.draw(st.integers(5, 95))
    spending = {s.name: value(s, "mean_spending") for s in profile}
    assume(line not in spending.values())
    past = [s for s in profile if spending[s.name] > line]
    assume(past)
    named = data.draw(st.lists(st.sampled_from(profile), min_size=1, unique=True))
    task = f"Which segments have a mean spending score above {line}?"
    answer = "; ".join(f'"{s.name}" ({spending[s.name]:g})' for s in named)
    found = check_claims(answer, task, profile)
    assert (found == []) == all(s in named for s in past), (task, answer, found)
