"""The task-limits check (#17): lengths and budgets a task sets, measured on the answer with no
judge. Generated tasks and answers, so each way of writing a limit is tested, not one example."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from custseg.evaluation.limits import ANSWERS, WHOLE, check_limits, spent, task_limits

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 5: "five", 10: "ten"}
AT_MOST = ("under", "within", "at most", "no more than", "less than", "up to", "maximum")
UNITS = {"characters": ("characters", "chars"), "words": ("words",), "paragraphs": ("paragraphs",)}
word = st.text("abcdefghij", min_size=1, max_size=8)


@st.composite
def length_tasks(draw) -> tuple[str, str, int]:
    """(task, unit, N) with the limit written one of the ways people write it."""
    unit = draw(st.sampled_from(sorted(UNITS)))
    n = draw(st.integers(1, 400) if unit != "paragraphs" else st.sampled_from(sorted(NUMBER_WORDS)))
    shown = NUMBER_WORDS[n] if unit == "paragraphs" and draw(st.booleans()) else f"{n:,}"
    written = draw(st.sampled_from(UNITS[unit]))
    singular = written.removesuffix("s")
    limit = draw(
        st.sampled_from(
            (
                f"({draw(st.sampled_from(AT_MOST))} {shown} {written})",
                f"in {shown} {written} or less",
                f"in {shown} {written}",
                f"as a {shown}-{singular} text",
            )
        )
    )
    return f"Write a short note {limit} for the store managers.", unit, n


def text_of(unit: str, n: int) -> str:
    """A text that uses exactly `n` of `unit`."""
    if unit == "characters":
        return ("ab" * n)[:n]
    if unit == "words":
        return " ".join(["word"] * n)
    return "\n\n".join(["A paragraph here."] * n)


@given(length_tasks(), st.integers(0, 3))
def test_an_answer_within_a_length_limit_keeps_it_and_one_over_breaks_it(case, under) -> None:
    task, unit, n = case
    (limit,) = task_limits(task)
    assert (limit.unit, limit.at_most) == (unit, n)
    kept = check_limits(text_of(unit, max(1, n - under)), task)
    assert kept.passed and kept.score == 1.0
    broken = check_limits(text_of(unit, n + 1 + under), task)
    assert not broken.passed and broken.score == 0.0
    assert limit.written in broken.reason() and unit in broken.reason()


@given(st.sampled_from(("per", "each", "for each")), st.sampled_from(("sentence", "word")))
def test_a_limit_per_item_is_not_a_limit_on_the_answer(per: str, unit: str) -> None:
    task = f"Give a budget split with at most two {unit}s {per} segment."
    assert task_limits(task) == []
    assert check_limits("x " * 500, task).score == 1.0


def test_a_task_without_limits_scores_every_answer_one() -> None:
    for task in (
        "Which segment has the most customers?",
        "Suggest three metrics to track.",
        "List three words customers use for us and two paragraphs of our history.",
    ):
        assert task_limits(task) == []
        assert check_limits("Anything, however long. " * 50, task).passed


MONEY = (
    "{v:,} $", "${v:,}", "$ {v:,}", "{v:,} dollars", "€{v:,}", "{v:,} euros", "USD {v:,}",
    "£{v:,}", "{k}k $", "${k}k",
)  # fmt: skip


def money(template: str, value: int) -> str:
    return template.format(v=value, k=value // 1000)


@st.composite
def splits(draw) -> tuple[int, list[int], str]:
    """(budget, the split's amounts, the currency writing), all whole thousands."""
    budget = 1000 * draw(st.integers(5, 500))
    amounts = draw(st.lists(st.integers(1, 200).map(lambda k: 1000 * k), min_size=2, max_size=6))
    return budget, amounts, draw(st.sampled_from(MONEY))


def split_text(amounts: list[int], template: str) -> str:
    return "\n".join(
        f"- Segment group {chr(65 + i)}: {money(template, a)}, because it grows."
        for i, a in enumerate(amounts)
    )


@given(splits(), st.sampled_from(("a {m} quarterly marketing budget", "a budget of {m}")))
def test_a_split_that_spends_more_than_the_budget_breaks_it(case, phrase) -> None:
    budget, amounts, template = case
    task = f"Propose how to split {phrase.format(m=money(template, budget))} across segments."
    (limit,) = task_limits(task)
    assert (limit.unit, limit.at_most) == ("budget", budget)
    answer = split_text(amounts, template)
    # An amount equal to the budget is read as the budget restated, not spent.
    total = sum(a for a in amounts if a != budget)
    assert spent(answer, budget) == total
    assert check_limits(answer, task).passed == (total <= budget * 1.005)


@given(st.lists(st.integers(1, 60), min_size=2, max_size=6))
def test_shares_of_the_budget_add_up_like_amounts(shares: list[int]) -> None:
    task = "Split a 50,000 $ budget across the segments."
    answer = " ".join(f"Give {s}% of the budget to group {i}." for i, s in enumerate(shares))
    assert check_limits(answer, task).passed == (sum(shares) <= 100)


@given(st.integers(20, 200), st.sampled_from(("$", " k$", "k $", "k dollars")))
def test_incomes_and_amounts_per_unit_are_not_spent(income: int, unit: str) -> None:
    task = "Split a 10,000 $ budget across the segments."
    amount = f"{income}{unit}" if unit.strip() != "$" else f"${income}k"
    answers = (
        f"The high income · low spending segment has a mean annual income of {amount}: give it "
        "6,000 $.",
        f"Customers earning {amount} get 6,000 $.",
        f"Customers on {amount} a year get 6,000 $.",
        "Give 6,000 $ to the top segment and 5 $ per customer as a voucher, 2 $ each.",
        "Of the 10,000 $ budget, give 6,000 $ to the top segment.",
    )
    for answer in answers:
        assert spent(answer, 10_000) == 6000, answer
        assert check_limits(answer, task).passed


def test_the_agents_sms_over_160_characters_is_caught() -> None:
    task = (
        'Write a short SMS (under 160 characters) inviting "high income · high spending" '
        "customers to a private preview evening."
    )
    long_sms = "Hi there! Join us for a private preview evening. " * 4
    check = check_limits(long_sms, task)
    assert check.score == 0.0
    assert check.broken == [f"{len(long_sms.strip())} characters (task: under 160 characters)"]
    assert check_limits("Private preview, Thu 7pm. Reply YES.", task).passed


PIECES = [*"0123456789 ,.$€£k%-\n\"'", "under ", " words", " budget", " per", "in ", "-word"]
hostile = st.lists(st.sampled_from(PIECES), max_size=80).map("".join) | st.text(max_size=300)


@given(hostile, hostile)
def test_any_task_and_answer_give_a_score_between_zero_and_one(task: str, answer: str) -> None:
    check = check_limits(answer, task)
    assert 0.0 <= check.score <= 1.0
    assert check.passed == (check.score == 1.0)
    # Each limit as the task states it; a whole answer, not the task restated, is every task's,
    # stated by none.
    every = (WHOLE, ANSWERS)
    assert all(written in " ".join(task.split()) or written in every for written in check.limits)
