"""The judge-free checks of what a task asks (issue #33): the order it asks the segments in, a
group of segments it names by level or by a superlative, all segments, a whole (not cut-off)
answer, a budget given as a split, one item in prose; property tests with generated profiles
and sentences, then the calibration set (no false alarm on its good items)."""

from __future__ import annotations

import itertools

import msgspec
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from custseg.conversation import Segment
from custseg.evaluation.addressed import check_claims, task_order
from custseg.evaluation.calibration import check_failures, load_calibration
from custseg.evaluation.claims import ranked
from custseg.evaluation.grounding import COUNT_WORDS, TOLERANCE
from custseg.evaluation.limits import _NO_END, WHOLE, check_limits, cut_off
from tests.fixtures.project import ROOT
from tests.test_eval_claims import profiles, value

FIELDS = {
    "mean_spending": ("mean spending score", "spending score"),
    "mean_income": ("mean annual income", "income"),
    "size": ("number of customers", "customers"),
}


def in_order(group: list[Segment], field: str, highest: bool) -> bool:
    sign, tol = (1 if highest else -1), TOLERANCE[field]
    return all(
        sign * (value(a, field) - value(b, field)) >= -tol for a, b in itertools.pairwise(group)
    )


def order_task(field: str, highest: bool | None, k: int, form: int) -> str:
    words = FIELDS[field][form % 2]
    if highest is None:
        return f"Rank the {COUNT_WORDS[k - 1]} segments by {words}."
    if form < 2:
        first = "highest" if highest else "lowest"
        return f"Rank the {COUNT_WORDS[k - 1]} segments by {words}, {first} first."
    way = "most to fewest" if highest else "fewest to most"
    if field != "size":
        way = "highest to lowest" if highest else "lowest to highest"
    return f"List the segments from {way} {words}."


@settings(max_examples=200)
@given(profile=profiles(min_size=2), data=st.data())
def test_a_ranking_the_task_asks_for_holds_only_in_that_order(profile, data) -> None:
    field = data.draw(st.sampled_from(list(FIELDS)))
    highest = data.draw(st.sampled_from([True, False, None]))
    task = order_task(field, highest, len(profile), data.draw(st.integers(0, 3)))
    assert task_order(task) == (field, highest), task
    listed = data.draw(st.permutations(profile))
    style = data.draw(st.sampled_from(["{n}. {name} ({v:g})", "{n}) {name}: {v:g}", "- {name}"]))
    answer = "\n".join(
        style.format(n=n, name=s.name, v=value(s, field)) for n, s in enumerate(listed, 1)
    )
    right = in_order(listed, field, highest) if highest is not None else (
        in_order(listed, field, True) or in_order(listed, field, False)
    )  # fmt: skip
    findings = [f for f in check_claims(answer, task, profile) if "the task asks for" in f]
    assert (findings == []) == right, (task, answer, findings)
    if findings:
        assert findings[0].startswith("ranks ") and "the order is" in findings[0]
    # The right order, written on one line as the agents write it, always passes.
    way = highest is not False
    order = sorted(profile, key=lambda s: value(s, field), reverse=way)
    one_line = " ".join(f"{n}. {s.name}" for n, s in enumerate(order, 1))
    assert [f for f in check_claims(one_line, task, profile) if "ranks" in f] == []


NOT_RANKINGS = ["Rank our stores by revenue.", "List the segments that spend most.",
                "Which segment has the highest income?", "Order the offers by cost."]  # fmt: skip


@given(st.sampled_from(NOT_RANKINGS))
def test_a_task_that_asks_no_ranking_of_segments_sets_no_order(task) -> None:
    assert task_order(task) is None


WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=9)


@settings(max_examples=300)
@given(words=st.lists(WORDS, min_size=1, max_size=12), end=st.sampled_from(list(".!?\"')")))
def test_an_answer_that_ends_a_sentence_is_whole(words, end) -> None:
    answer = " ".join(words) + end
    assert cut_off(answer) is None
    assert all(WHOLE not in b for b in check_limits(answer, "Suggest an idea.").broken)


@settings(max_examples=300)
@given(words=st.lists(WORDS, min_size=1, max_size=12), stop=st.sampled_from(sorted(_NO_END)),
       mark=st.sampled_from(["", ",", ":", " (for"]))  # fmt: skip
def test_an_answer_cut_after_a_word_no_sentence_ends_on_is_cut_off(words, stop, mark) -> None:
    answer = " ".join([*words, stop]) + mark + "  \n"
    assert cut_off(answer) is not None
    limits = check_limits(answer, "Suggest an idea.")
    assert not limits.passed and limits.score == 0.0 and WHOLE in limits.reason()


@given(st.sampled_from(['3. "Save more"', "Sign up", "Yes we can", "Here it is", "Track visits",
                        "1. A 2. B 3. C", "Budget range", "Total: 84.7"]))  # fmt: skip
def test_an_answer_ending_on_a_word_a_line_can_end_on_is_whole(answer) -> None:
    assert cut_off(answer) is None


@settings(max_examples=150)
@given(profile=profiles(min_size=3), data=st.data())
def test_a_group_the_task_names_by_level_must_all_be_addressed(profile, data) -> None:
    place = data.draw(st.sampled_from([0, 1]))
    level = data.draw(st.sampled_from(["low", "average", "high"]))
    group = [s for s in profile if s.name.replace(" ·", "").split()[2 * place] == level]
    assume(group)
    figure = ("income", "spending")[place]
    k = COUNT_WORDS[len(group) - 1]
    task = f"Give one sentence for each of the {k} {level}-{figure} segments."
    both = " ".join(f"{s.name}: invite them to a preview." for s in group)
    assert check_claims(both, task, profile) == []
    named = data.draw(st.lists(st.sampled_from(profile), min_size=1, unique=True))
    answer = " ".join(f"{s.name}: invite them to a preview." for s in named)
    found = [f for f in check_claims(answer, task, profile) if "the task is about" in f]
    assert (found == []) == all(s in named for s in group), (task, answer, found)


@settings(max_examples=150)
@given(profile=profiles(min_size=3), data=st.data())
def test_the_n_segments_with_a_superlative_must_be_the_ones_named(profile, data) -> None:
    field = data.draw(st.sampled_from(["mean_income", "mean_spending"]))
    highest = data.draw(st.booleans())
    order = ranked(profile, field, highest)
    assume(abs(value(order[1], field) - value(order[2], field)) > TOLERANCE[field])
    which = "highest" if highest else "lowest"
    task = f"Suggest one offer each for the two segments with the {which} {FIELDS[field][0]}."
    offer = "a free personal-shopper session"
    assert check_claims(f"{order[0].name}: {offer}. {order[1].name}: {offer}.", task, profile) == []
    (finding,) = check_claims(f"{order[0].name}: {offer}.", task, profile)
    assert finding.startswith(f"addresses {order[0].name}") and order[1].name in finding


@given(profile=profiles(), task=st.sampled_from([
    "Summarise the segments in a table with size and mean income.",
    "Draft a brief explaining what all the customer segments mean.",
]))  # fmt: skip
def test_a_task_about_every_segment_is_not_answered_by_naming_none(profile, task) -> None:
    assert "names none of the segments" in " ".join(
        check_claims("Each segment has its own needs; treat them accordingly.", task, profile)
    )
    assert check_claims("high·high are our best; low/low buy rarely.", task, profile) == []
    every = "; ".join(f"{s.name}: {s.size}" for s in profile)
    assert check_claims(every, task, profile) == []


@settings(max_examples=100)
@given(budget=st.integers(2, 90).map(lambda k: k * 1000), data=st.data())
def test_a_budget_given_as_a_split_is_a_limit(budget, data) -> None:
    phrase = data.draw(st.sampled_from(["Propose a {m} split of a budget between A and B.",
                                        "Allocate {m} between A and B."]))  # fmt: skip
    task = phrase.format(m=f"{budget:,} $")
    first = data.draw(st.integers(1, budget // 1000 - 1)) * 1000
    over = data.draw(st.integers(0, 5)) * 1000
    assume(first != over)  # B's amount would equal the budget: read as the budget restated
    answer = f"{first:,} $ for A and {budget - first + over:,} $ for B."
    assert check_limits(answer, task).passed == (over == 0), (task, answer)


@given(n=st.integers(2, 5), item=st.sampled_from(["App sign-ups", "Weekend visits per customer"]))
def test_one_clause_with_nothing_joining_items_is_one_item(n, item) -> None:
    task = f"Suggest {COUNT_WORDS[n - 1]} metrics to judge a new loyalty app."
    assert "gives 1 item(s)" in check_limits(f"{item} among the segment.", task).reason()
    # Prose that could hold several items is not counted.
    assert check_limits(f"{item}, visits and basket value.", task).passed


# --- the calibration set -------------------------------------------------------------------------


def test_the_new_rules_raise_no_false_alarm_and_catch_the_classes_they_target() -> None:
    calibration = load_calibration(ROOT / "eval" / "calibration.yaml")
    profile = calibration.profile
    targeted = {"wrong_order": 0, "truncated": 0}
    for section in ("plan_quality", "helpfulness", "improvement", "grounding"):
        for pair in calibration[section]:
            assert check_failures(section, pair["task"], pair["good"], profile, pair) == "", pair
            if section == "plan_quality":
                continue  # its own classes: tests/test_eval_plan_checks.py
            found = check_failures(section, pair["task"], pair["bad"], profile)
            if pair["degraded"] in targeted and found:
                targeted[pair["degraded"]] += 1
    raw = yaml.safe_load((ROOT / "eval" / "calibration.yaml").read_text())
    expected = {
        kind: sum(p["degraded"] == kind for s in ("helpfulness", "improvement", "grounding")
                  for p in raw[s])
        for kind in targeted
    }  # fmt: skip
    assert targeted == expected  # every ordering and every cut-off answer there is caught
    assert msgspec.convert(raw["profile"]["segments"], list[Segment]) == list(profile.segments)


SENTENCES = [
    "They earn 48.9 k$ on average.",
    "They spend heavily, e.g. on new collections.",
    "Value lines keep them!",
    "Loyalty points help too.",
    "Watch their credit, i.e. limits.",
    "A quarterly review is advised?",
]


@settings(max_examples=200)
@given(n=st.integers(2, 4), said=st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=6))
def test_an_n_sentence_answer_has_exactly_n_sentences_in_prose(n, said) -> None:
    task = f'Write a {COUNT_WORDS[n - 1]}-sentence summary of the "low income" segment.'
    found = check_limits(" ".join(said), task)
    assert ("sentence" in found.reason()) == (len(said) != n), (task, said, found.reason())


OFFERS = [
    "Give them 20% off every purchase.",
    "Send a discount code.",
    "A 15 % off voucher.",
    "We cut prices with a discount.",
]
NOT_OFFERS = [
    "Offer perks, not discounts.",
    "Free alterations instead of a discount.",
    "No discount: early access to new collections.",
    "Reward visits without any discount.",
]
RULES = ["without discounting", "with no discounts", "but not a discount"]


@settings(max_examples=100)
@given(
    rule=st.sampled_from(RULES), offer=st.sampled_from(OFFERS), other=st.sampled_from(NOT_OFFERS)
)
def test_an_answer_offering_what_the_task_forbids_breaks_it(rule, offer, other) -> None:
    task = f"Propose a loyalty offer for the high income · low spending segment {rule}."
    assert "offers" in check_limits(f"{other} {offer}", task).reason()
    assert "offers" not in check_limits(other, task).reason()  # said as what it is not
    assert "offers" not in check_limits(offer, "Propose a loyalty offer.").reason()  # allowed


TASK_WORDS = 'Propose a loyalty-programme offer for the "high income · low spending" segment that could raise their spending without discounting.'  # noqa: E501


@settings(max_examples=200)
@given(
    picked=st.lists(st.sampled_from(TASK_WORDS.rstrip(".").split()), min_size=1, max_size=14),
    new=st.sampled_from(["", "perks", "34", "alterations"]),
)
def test_an_answer_opening_with_the_tasks_own_words_restates_it(picked, new) -> None:
    answer = f"{' '.join(picked)} {new}. Then a points system with early access."
    content = [w for w in picked if len(w.strip('"·')) >= 4 and w not in ("that", "their")]
    found = "restated" in check_limits(answer, TASK_WORDS).reason()
    if new:
        assert not found, answer  # one word or figure of its own: an answer
    elif len(set(content)) >= 8:
        assert found, answer
