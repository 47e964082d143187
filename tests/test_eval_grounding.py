"""The grounding check (#17): segment names and figures an answer cites, against the profile of
the model that grounded it. Generated profiles and answers, so the rule is tested, not examples."""

from __future__ import annotations

import itertools

import msgspec
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from custseg import jsonl
from custseg.conversation import Segment
from custseg.evaluation.grounding import (
    TOLERANCE,
    check_grounding,
    known_values,
    segment_value,
)
from custseg.evaluation.items import grounded_in
from tests.fixtures.project import ROOT

LEVELS = ("low", "average", "high")
WRITINGS = (
    "{i} income · {s} spending",
    "{i}-income, {s}-spending customers",
    "{i} income and {s} spending",
    "the {i}-income {s}-spenders",
    "{I} Income / {S} Spending",
)


@st.composite
def profiles(draw) -> list[Segment]:
    """2-6 segments with distinct names from the pipeline's vocabulary, sizes and means."""
    pairs = draw(
        st.lists(st.sampled_from(list(itertools.product(LEVELS, LEVELS))), min_size=2,
                 max_size=6, unique=True)
    )  # fmt: skip
    sizes = draw(st.lists(st.integers(5, 400), min_size=len(pairs), max_size=len(pairs)))
    total = sum(sizes)
    return [
        Segment(
            id=n,
            name=f"{i} income · {s} spending",
            size=size,
            share=size / total,
            mean_income=draw(st.floats(15, 140).map(lambda v: round(v, 1))),
            mean_spending=draw(st.floats(1, 99).map(lambda v: round(v, 1))),
        )
        for n, ((i, s), size) in enumerate(zip(pairs, sizes, strict=True))
    ]


def levels_of(segment: Segment) -> tuple[str, ...]:
    return tuple(segment.name.replace(" income ·", "").replace(" spending", "").split())


def written(level_pair: tuple[str, str], template: str) -> str:
    i, s = level_pair
    return template.format(i=i, s=s, I=i.capitalize(), S=s.capitalize())


@settings(max_examples=150)
@given(profile=profiles(), data=st.data())
def test_the_models_segments_in_any_writing_are_known(profile, data) -> None:
    segment = data.draw(st.sampled_from(profile))
    levels = levels_of(segment)
    template = data.draw(st.sampled_from(WRITINGS))
    answer = f"Send the flyer to {written(levels, template)}, then measure."
    check = check_grounding(answer, "Which segment?", profile)
    assert check.passed and check.invented == [] and len(check.segments) == 1, check
    assert check.score == 1.0


@settings(max_examples=150)
@given(profile=profiles(), data=st.data())
def test_a_segment_the_model_does_not_have_is_invented(profile, data) -> None:
    have = {
        tuple(s.name.replace(" income ·", "").replace(" spending", "").split()) for s in profile
    }
    vocabulary = [*LEVELS, "medium", "moderate", "very high", "middle"]
    missing = [p for p in itertools.product(vocabulary, vocabulary) if p not in have]
    invented = data.draw(st.sampled_from(missing))
    answer = f"Target {written(invented, data.draw(st.sampled_from(WRITINGS)))} first."
    check = check_grounding(answer, "Which segment?", profile)
    assert not check.passed and len(check.invented) == 1 and check.score == 0.0, check
    assert "not the model's segments" in check.reason() and "\n" not in check.reason()


FIGURE_TEXT = {
    "size": "{v:.0f} customers",
    "share": "{v:.0f}% of all customers",
    "mean_income": "a mean annual income of {v:.0f} k$",
    "mean_spending": "an average spending score of {v:.0f}",
}
# A share of customers however it is written; "of all" / "of the total" end their clause.
SHARE_TEXTS = (
    "{v:.0f}% of all customers",
    "{v:.0f} percent of our customers",
    "{v:.0f}% of all",
    "{v:.0f}% of the total",
)


@settings(max_examples=200)
@given(profile=profiles(), data=st.data())
def test_figures_match_the_profile_up_to_rounding_and_others_are_wrong(profile, data) -> None:
    kind = data.draw(st.sampled_from(sorted(FIGURE_TEXT)))
    values = known_values(profile)[kind]
    true = data.draw(st.sampled_from(values))
    text = FIGURE_TEXT[kind] if kind != "share" else data.draw(st.sampled_from(SHARE_TEXTS))
    good = check_grounding(f"They are {text.format(v=true)}.", "Tell me.", profile)
    assert good.passed and len(good.figures) == 1, (good, true)
    # A value at least 2 units off every true one (and still a plausible number).
    far = data.draw(st.integers(0, 999).filter(
        lambda v: all(abs(v - t) > TOLERANCE[kind] + 1 for t in values)
    ))  # fmt: skip
    bad = check_grounding(f"They are {text.format(v=far)}.", "Tell me.", profile)
    assert not bad.passed and bad.wrong == bad.figures and len(bad.wrong) == 1, (bad, far)


@settings(max_examples=50)
@given(profile=profiles(), budget=st.integers(1_000, 900_000), income=st.integers(10, 200))
def test_numbers_the_task_gives_are_not_the_answers_claims(profile, budget, income) -> None:
    task = f"A customer earns {income} k$. Split a {budget:,} customers mailing."
    answer = f"At {income} k$ and for all {budget:,} customers, use the usual flyer."
    check = check_grounding(answer, task, profile)
    assert check.figures == [] and check.passed


def test_an_answer_citing_nothing_passes_and_says_so() -> None:
    profile = [Segment(id=0, name="low income · low spending", size=10, share=1.0)]
    check = check_grounding("Be friendly and clear.", "Write a slogan.", profile)
    assert check.passed and check.score == 1.0
    assert check.reason() == "cites no segment and no segment figure"


@settings(max_examples=50)
@given(profile=profiles(), n=st.integers(1, 99), income=st.integers(10, 200))
def test_other_numbers_are_not_claims_about_segments(profile, n, income) -> None:
    """A discount, a budget split, a customer's income or a threshold is not a segment's."""
    answer = (
        f"Give {n}% off, put {n}% of the budget on email and {n}% of the total budget on "
        f"ads, target customers earning over {income} k$ with a spending score above {n}."
    )
    check = check_grounding(answer, "Plan a promotion.", profile)
    assert check.figures == [] and check.passed, check


def test_the_ways_the_agents_state_figures_are_read() -> None:
    profile = [Segment(id=0, name="low income · high spending", size=38, share=0.19,
                       mean_income=48.9, mean_spending=82.7),
               Segment(id=1, name="high income · low spending", size=162, share=0.81,
                       mean_income=69.4, mean_spending=18.8)]  # fmt: skip
    answer = (
        "The 'low income · high spending' segment, with 38 customers (19%) and a mean annual "
        "income of 49 k$ and a mean spending score of 83, representing 19% of all customers; "
        "the other has an average income of $69k and an average spending score of about 19."
    )
    check = check_grounding(answer, "Brief the managers.", profile)
    assert check.figures == [
        "38 customers",
        "19%",
        "19%",
        "mean annual income of 49 k$",
        "average income of $69k",
        "mean spending score of 83",
        "average spending score of about 19",
    ]
    assert check.passed, check


# --- figures stated for a segment, and for several ----------------------------------------------


def stated(kind: str, value: float) -> str:
    return FIGURE_TEXT[kind].format(v=value)


def apart(kind: str, a: float | None, b: float | None) -> bool:
    """Two values an answer rounding to whole numbers cannot confuse."""
    return a is not None and b is not None and abs(a - b) > TOLERANCE[kind] + 1


@settings(max_examples=200)
@given(profile=profiles(), data=st.data())
def test_a_figure_after_a_name_must_be_that_segments(profile, data) -> None:
    """Another segment's figure passed before (some segment has it); now it is wrong."""
    named, other = data.draw(st.permutations(profile))[:2]
    kind = data.draw(st.sampled_from(sorted(FIGURE_TEXT)))
    own, theirs = segment_value(named, kind), segment_value(other, kind)
    assume(apart(kind, own, theirs))
    name = written(levels_of(named), data.draw(st.sampled_from(WRITINGS)))
    right = check_grounding(f"{name} has {stated(kind, own)}, so act.", "Tell me.", profile)
    assert right.passed and len(right.figures) == 1, right
    check = check_grounding(f"{name} has {stated(kind, theirs)}, so act.", "Tell me.", profile)
    assert not check.passed and len(check.wrong) == 1 and check.score == 0.5, check
    assert f"said of {named.name}" in check.reason()


@settings(max_examples=150)
@given(profile=profiles(), data=st.data())
def test_two_segments_compared_in_one_sentence_each_get_their_own_figure(profile, data) -> None:
    a, b = data.draw(st.permutations(profile))[:2]
    kind = data.draw(st.sampled_from(sorted(FIGURE_TEXT)))
    va, vb = segment_value(a, kind), segment_value(b, kind)
    assume(apart(kind, va, vb))
    na, nb = (written(levels_of(s), data.draw(st.sampled_from(WRITINGS))) for s in (a, b))
    right = f"{na} has {stated(kind, va)} while {nb} has {stated(kind, vb)}."
    assert check_grounding(right, "Compare.", profile).passed
    swapped = check_grounding(
        f"{na} has {stated(kind, vb)} while {nb} has {stated(kind, va)}.", "Compare.", profile
    )
    assert len(swapped.wrong) == 2, swapped


@settings(max_examples=100)
@given(profile=profiles(), data=st.data())
def test_a_figure_with_no_name_before_it_in_its_sentence_may_be_any_segments(profile, data) -> None:
    named, other = data.draw(st.permutations(profile))[:2]
    kind = data.draw(st.sampled_from(sorted(FIGURE_TEXT)))
    name = written(levels_of(named), data.draw(st.sampled_from(WRITINGS)))
    value = segment_value(other, kind)
    for answer in (
        f"Start with {name}. The next group has {stated(kind, value)}.",
        f"With {stated(kind, value)}, the other group trails {name}.",
        f"{name} first;\nthe next has {stated(kind, value)}.",
    ):
        assert check_grounding(answer, "Tell me.", profile).passed, answer


@settings(max_examples=150)
@given(profile=profiles(), data=st.data())
def test_customers_and_shares_of_several_segments_together_match_their_sum(profile, data) -> None:
    members = data.draw(st.lists(st.sampled_from(profile), min_size=2, unique=True))
    kind = data.draw(st.sampled_from(["size", "share"]))
    total = sum(segment_value(s, kind) for s in members)
    figure = stated(kind, total)
    a, b = (written(levels_of(s), data.draw(st.sampled_from(WRITINGS))) for s in members[:2])
    for answer in (
        f"Together these segments are {figure}.",
        f"{a} and {b} together make up {figure}.",
        f"Combined, {a} and {b} are {figure}.",
    ):
        check = check_grounding(answer, "How many?", profile)
        assert check.passed and len(check.figures) == 1, (answer, check)
    # Stated for one segment, the sum is that segment's no more.
    assume(apart(kind, total, segment_value(members[0], kind)))
    alone = check_grounding(f"{a} has {figure}.", "How many?", profile)
    assert not alone.passed, alone


@settings(max_examples=100)
@given(profile=profiles(), share=st.integers(0, 100))
def test_a_share_no_segments_add_up_to_is_still_wrong(profile, share) -> None:
    values = known_values(profile)["share"]
    assume(all(abs(share - v) > TOLERANCE["share"] + 0.5 for v in values))
    check = check_grounding(f"Together they are {share}% of all customers.", "?", profile)
    assert not check.passed and check.wrong == check.figures == [f"{share}%"], check


def test_figures_stated_for_a_segment_read_as_people_write_them() -> None:
    a = Segment(
        id=0,
        name="high income · low spending",
        size=38,
        share=0.19,
        mean_income=88.2,
        mean_spending=17.1,
    )
    b = Segment(
        id=1,
        name="low income · high spending",
        size=22,
        share=0.11,
        mean_income=25.7,
        mean_spending=79.4,
    )
    c = Segment(id=2, name="average income · average spending", size=140, share=0.70,
                mean_income=55.0, mean_spending=50.0)  # fmt: skip
    profile = [a, b, c]
    right = [
        "High-income, low-spending customers, 38 customers (19%), get a loyalty card.",
        "High income · low spending has 38 customers while low income · high spending has 22.",
        "Together the two segments make up 30% of customers.",
        "High income · low spending and low income · high spending have 60 customers.",
        "High income · low spending is 38 customers out of 200 customers.",
        "Unlike low income · high spending, the remaining 178 customers spend moderately.",
        '"High income · low spending" has the highest mean annual income, 88 k$.',
        "High income · low spending: mean spending score: 17.",
    ]
    for answer in right:
        check = check_grounding(answer, "Plan.", profile)
        assert check.passed and check.figures, (answer, check)
    wrong = {
        "High-income, low-spending customers (22 customers) get a loyalty card.": [
            "22 customers (said of high income · low spending: 38)"
        ],
        "High income · low spending has 22 customers while low income · high spending has 38 "
        "customers.": [
            "22 customers (said of high income · low spending: 38)",
            "38 customers (said of low income · high spending: 22)",
        ],
        '"Low income · high spending" has the highest mean annual income, 88 k$.': [
            "mean annual income, 88 k$ (said of low income · high spending: 25.7)"
        ],
        "High income · low spending alone is 30% of all customers.": [
            "30% (said of high income · low spending: 19)"
        ],
    }
    for answer, expected in wrong.items():
        assert check_grounding(answer, "Plan.", profile).wrong == expected, answer


# --- other labels presented as segments ------------------------------------------------------

LABEL_WORDS = ("Budget", "Hunters", "VIP", "loyalists", "young", "professionals", "luxury",
               "elite", "Weekend", "Browsers", "students", "Premium")  # fmt: skip
LABEL_TEXT = (
    "Target the '{L}' segment first.",
    'Our "{L}" cluster deserves a flyer.',
    "Start with segment “{L}”.",
    "The ‘{L}’ segments answer coupons.",
    "Mail the cluster called '{L}'.",
)


@settings(max_examples=150)
@given(profile=profiles(), first_id=st.integers(0, 5), n=st.integers(0, 120), data=st.data())
def test_a_segment_number_the_profile_does_not_have_is_invented(profile, first_id, n, data) -> None:
    """The agents see the segments as a list: its places (1-based) count, as do the ids."""
    profile = [msgspec.structs.replace(s, id=first_id + i) for i, s in enumerate(profile)]
    has = n in {s.id for s in profile} or 1 <= n <= len(profile)
    word = data.draw(st.sampled_from(["segment", "Segment", "cluster", "Cluster #"]))
    check = check_grounding(f"Send the flyer to {word} {n} first.", "Which segment?", profile)
    assert len(check.segments) == 1 and check.passed == has, check
    assert check.invented == ([] if has else [f"{word} {n}"])


@settings(max_examples=150)
@given(
    profile=profiles(),
    words=st.lists(st.sampled_from(LABEL_WORDS), min_size=1, max_size=3),
    template=st.sampled_from(LABEL_TEXT),
)
def test_a_quoted_label_presented_as_a_segment_is_invented_unless_the_profile_has_it(
    profile, words, template
) -> None:
    label = " ".join(words)
    check = check_grounding(template.format(L=label), "Which segment?", profile)
    assert check.invented == [label] and check.score == 0.0, check
    named = [*profile[:-1], msgspec.structs.replace(profile[-1], name=label)]
    assert check_grounding(template.format(L=label.upper()), "Which segment?", named).passed


@settings(max_examples=100)
@given(profile=profiles(), n=st.integers(1, 999), data=st.data())
def test_ordinary_words_and_numbers_beside_segment_are_no_labels(profile, n, data) -> None:
    """Quantities per segment, apostrophes, a plan's numbered steps, level words in quotes."""
    level_pair = levels_of(data.draw(st.sampled_from(profile)))
    answer = (
        f"Give each segment {n} emails and every cluster {n} coupons, {n} $ per segment {n} $. "
        f"Make a segment {n} times larger. Grow the segment {n}% and the cluster {n} k$. "
        f"The customers' segment choice and the shop's 'best' offer. Check this segment\n"
        f"{n}. Verify the '{level_pair[0]} spending' segments and the "
        f"'{written(level_pair, WRITINGS[0])}' segment."
    )
    check = check_grounding(answer, "Plan.", profile)
    assert check.invented == [] and check.passed, check


NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@settings(max_examples=100)
@given(profile=profiles(), data=st.data())
def test_a_count_of_segments_above_the_models_is_wrong(profile, data) -> None:
    n = data.draw(st.integers(1, 10))
    said = data.draw(st.sampled_from([str(n), NUMBER_WORDS[n - 1]]))
    noun = data.draw(st.sampled_from(["segments", "customer segments", "distinct clusters"]))
    check = check_grounding(f"We work with {said} {noun} here.", "Brief the staff.", profile)
    assert check.passed == (n <= len(profile)), check
    if n > len(profile):
        assert check.wrong == [f"{said} {noun} (the model has {len(profile)})"], check
    # Stated by the task, it is the task's number, not the answer's claim.
    task = f"Brief the staff on our {said} {noun}."
    assert check_grounding(f"Our {said} {noun} differ.", task, profile).passed


PEOPLE = ("premium loyalists", "Bargain Hunters", "weekend browsers", "young families", "students")


@settings(max_examples=100)
@given(profile=profiles(), data=st.data())
def test_labels_listed_beside_segment_names_are_presented_as_segments(profile, data) -> None:
    """A budget split whose items are headed by segment names and by labels naming people."""
    a, b = data.draw(st.lists(st.sampled_from(profile), min_size=2, max_size=2, unique=True))
    label = data.draw(st.sampled_from(PEOPLE))
    sep = data.draw(st.sampled_from(["; ", "\n- ", "\n1. "]))
    items = [f"{a.name} 15,000 $ (best)", f"{label} 12,000 $ (value)", f"{b.name}: 8,000 $"]
    order = data.draw(st.permutations(items))
    check = check_grounding(sep.join(order) + ".", "Split the budget.", profile)
    assert check.invented == [label], check
    # Beside one name only, or as a channel (no people), it is not read as a segment.
    alone = check_grounding(f"{a.name} 15,000 $; {label} 12,000 $.", "Split.", profile)
    channel = check_grounding(
        f"{a.name} 15,000 $; email 12,000 $; {b.name} 8,000 $.", "Split.", profile
    )
    assert alone.passed and channel.passed, (alone, channel)


# --- the agents' own answers ---------------------------------------------------------------------


def test_the_committed_conversations_all_pass() -> None:
    """No false alarm on what the agents really wrote: every plan, draft and final."""
    conversations = jsonl.read(ROOT / "data" / "conversations.jsonl").values
    assert len(conversations) >= 15
    for conversation in conversations:
        grounding = grounded_in(conversation)
        assert grounding is not None
        for text in ("plan", "draft", "final"):
            check = check_grounding(conversation[text], conversation["task"], grounding.segments)
            assert check.passed, (conversation["correlation_id"], text, check.reason())
