"""The grounding check (#17): segment names and figures an answer cites, against the profile of
the model that grounded it. Generated profiles and answers, so the rule is tested, not examples."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from custseg.agents.envelope import Segment
from custseg.evaluation.grounding import TOLERANCE, check_grounding, known_values

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


@settings(max_examples=200)
@given(profile=profiles(), data=st.data())
def test_figures_match_the_profile_up_to_rounding_and_others_are_wrong(profile, data) -> None:
    kind = data.draw(st.sampled_from(sorted(FIGURE_TEXT)))
    values = known_values(profile)[kind]
    true = data.draw(st.sampled_from(values))
    good = check_grounding(f"They are {FIGURE_TEXT[kind].format(v=true)}.", "Tell me.", profile)
    assert good.passed and len(good.figures) == 1, (good, true)
    # A value at least 2 units off every true one (and still a plausible number).
    far = data.draw(st.integers(0, 999).filter(
        lambda v: all(abs(v - t) > TOLERANCE[kind] + 1 for t in values)
    ))  # fmt: skip
    bad = check_grounding(f"They are {FIGURE_TEXT[kind].format(v=far)}.", "Tell me.", profile)
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
        f"Give {n}% off, put {n}% of the budget on email, target customers earning over "
        f"{income} k$ with a spending score above {n}."
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
