"""The v2 Reviewer's check → edit mapping (custseg.agents.check_edits): each judge-free finding
becomes a concrete instruction, code makes the patch where it can, and the patch removes the
finding. Pure functions, no LLM."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from custseg.agents.check_edits import check_edits, edit_for
from custseg.agents.edits import (
    QUOTES,
    Asked,
    Patch,
    already_said,
    apply_edits,
    apply_patch,
    is_instruction,
    only_adds,
)
from custseg.agents.enforce import problems
from custseg.conversation import Segment
from custseg.evaluation.limits import check_limits
from tests.test_agents_v2 import SEGMENTS  # the committed champion's five segments

WORDS = ("two", "three", "four", "five", "six")
ITEMS = ["Visits per week.", "Basket size in $.", "Redemption rate.", "App sessions.",
         "Returns per month.", "Reviews written.", "Newsletter clicks."]  # fmt: skip


def edits_of(text: str, task: str) -> list[Asked]:
    return check_edits(text, problems(text, task, SEGMENTS), task, SEGMENTS)


def never_fails(_text: str, _edit: str) -> Patch:
    raise AssertionError("a code patch needs no LLM call")


@given(
    st.integers(min_value=3, max_value=6),
    st.integers(min_value=2, max_value=5),
    st.sampled_from(["metrics", "ideas", "email subject lines", "tips"]),
)
def test_too_few_items_asks_for_exactly_the_missing_ones(n: int, m: int, noun: str) -> None:
    m = min(m, n - 1)  # a list of 2+ items: what the eval counts (prose is not counted)
    task = f'Suggest {WORDS[n - 2]} {noun} for the "low income · low spending" segment.'
    text = "\n".join(f"{i}. {t}" for i, t in enumerate(ITEMS[:m], 1))
    found = [a for a in edits_of(text, task) if a.fixes and "(task:" in a.fixes]
    assert len(found) == 1, found
    edit = found[0].edit
    assert edit.startswith(f"Add {n - m} more ") and f"gives {n} " in edit
    assert is_instruction(edit) and only_adds(edit)


@given(st.integers(min_value=40, max_value=200), st.integers(min_value=1, max_value=80))
def test_a_length_over_the_limit_asks_for_that_length(limit: int, over: int) -> None:
    task = f"Write a short SMS (under {limit} characters) for our best customers."
    text = ("Join us at the store for an evening of previews. " * 10)[: limit + over - 1] + "x"
    edit = next(a for a in edits_of(text, task) if a.fixes and "characters" in a.fixes)
    assert edit.edit.startswith(f"Shorten the answer to under {limit} characters (it has ")
    assert f"(it has {len(text)} characters)" in edit.edit


@given(
    st.sampled_from(SEGMENTS),
    st.sampled_from(["mean spending score of", "mean annual income of"]),
    st.integers(min_value=0, max_value=99),
)
def test_a_wrong_figure_is_patched_by_code_to_the_models(
    segment: Segment, said: str, v: int
) -> None:
    truth = segment.mean_spending if "spending" in said else segment.mean_income
    unit = "" if "spending" in said else " k$"
    text = f'The "{segment.name}" segment has a {said} {v}{unit}. Invite them to the evening.'
    task = f'Describe the "{segment.name}" segment.'
    wrong = [a for a in edits_of(text, task) if a.fixes and a.fixes.startswith("wrong figure")]
    if abs(v - truth) <= 1.5:  # within the check's tolerance: nothing to fix
        assert not wrong
        return
    assert len(wrong) == 1 and wrong[0].patch is not None
    fixed, why = apply_patch(text, wrong[0].patch)
    assert fixed is not None, why
    assert not [p for p in problems(fixed, task, SEGMENTS) if p.startswith("wrong figure")]


@given(st.sets(st.sampled_from(SEGMENTS), min_size=1, max_size=4))
def test_segments_left_out_of_an_all_segments_brief_are_added_by_code(named: set) -> None:
    task = "Draft a one-paragraph brief explaining what the five customer segments mean."
    text = " ".join(f'The "{s.name}" segment is worth a visit.' for s in named)
    covers = [a for a in edits_of(text, task) if a.fixes and "covers" in a.fixes]
    assert len(covers) == 1 and covers[0].patch is not None
    done = apply_edits(text, covers, task, lambda t: problems(t, task, SEGMENTS), never_fails)
    assert done.outcomes[0].applied, done.outcomes
    assert not [p for p in problems(done.text, task, SEGMENTS) if "covers" in p]
    for segment in SEGMENTS:
        assert segment.name in done.text


def test_a_missing_offer_reason_and_number_each_get_their_instruction() -> None:
    offer = 'Suggest one offer for the "high income · low spending" segment.'
    [edit] = [a.edit for a in edits_of("Treat them well and keep in touch with them.", offer)]
    assert edit.startswith('Add one concrete offer for the "high income · low spending" segment')
    why = 'Which segment should get the flyer, and why? Use the "low income · low spending" one.'
    text = 'The "low income · low spending" segment'
    assert any("says why" in a.edit for a in edits_of(text, why))
    many = 'How many customers are in the "high income · low spending" segment?'
    assert any(a.edit.startswith("State the figure") for a in edits_of("Quite a lot.", many))


def test_a_restated_opening_and_an_unfinished_ending_are_cut_by_code() -> None:
    task = "Which two segments should receive the spring clearance-sale flyer, and why?"
    draft = (  # data/conversations_v2.jsonl, 2026-12-07: its final kept the opening
        "The two segments that should receive the spring clearance-sale flyer are:\n"
        '1. "average income · average spending": mean spending score 51, the middle of the '
        "market.\n"
        '2. "low income · low spending": mean spending score 16, the most sensitive to price.'
    )
    assert any("restated" in b for b in check_limits(draft, task).broken)
    done = apply_edits(
        draft, edits_of(draft, task), task, lambda t: problems(t, task, SEGMENTS), never_fails
    )
    assert done.text.startswith("1.") and not check_limits(done.text, task).broken
    cut = "The budget goes to the two loyal segments in spring, with a flyer and a voucher for"
    whole = "Send the flyer to the loyal customers first, then to the rest of the list in May "
    whole += "and June. " + cut
    edits = edits_of(whole, "Plan the spring flyer.")
    assert [a.patch for a in edits] == [Patch(old=cut, new="")]
    # Seen in the five-segment brief: the unfinished tail repeats words said earlier; the cut
    # is the tail's, not the earlier words'.
    twice = "The budget goes to the two loyal segments in spring. " + whole
    [edit] = edits_of(twice, "Plan the spring flyer.")
    assert apply_patch(twice, edit.patch)[0] == twice.removesuffix(cut).strip()


STOCK = ["loyal", "customers", "spring", "flyer", "store", "points", "members", "evening"]
sentences = st.lists(
    st.lists(st.sampled_from(STOCK), min_size=3, max_size=8).map(" ".join), min_size=1, max_size=4
)


@given(sentences, st.integers(min_value=0, max_value=3))
def test_an_addition_of_what_the_text_says_is_already_said(parts: list[str], at: int) -> None:
    text = ". ".join(parts) + "."
    copied = parts[min(at, len(parts) - 1)]
    assert already_said(f"Add {copied}", text)  # 3+ content words, all the text's


@given(sentences, st.lists(st.sampled_from(["voucher", "gala", "tailor", "concierge"]), min_size=2))
def test_an_addition_of_new_words_is_not_already_said(parts: list[str], new: list[str]) -> None:
    text = ". ".join(parts) + "."
    assert not already_said(f"Mention a {' '.join(new)} evening", text)
    assert not already_said(f"Change the evening to a {' '.join(new)}", text)  # not an addition


@given(sentences, st.integers(min_value=100, max_value=999))
def test_an_addition_with_a_figure_the_text_lacks_is_not_already_said(parts: list, n: int) -> None:
    text = ". ".join(parts) + "."
    assert not already_said(f"Add {parts[0]} for every ${n} spent", text)


def test_a_problem_no_rule_knows_keeps_the_general_instruction() -> None:
    odd = "something else entirely"
    assert edit_for("Text.", odd, "Any task.", SEGMENTS) == Asked(
        f"Fix what breaks the task or the facts: {odd}", odd
    )


@given(
    st.sampled_from([s for s in SEGMENTS if s.mean_income > min(x.mean_income for x in SEGMENTS)]),
    st.sampled_from(["", "Our five segments differ in income and spending, ", "In short, " * 12]),
    st.lists(st.sampled_from(QUOTES), min_size=2, max_size=2),
)
def test_a_false_superlative_edit_shows_words_of_the_text_the_llm_can_copy(
    segment: Segment, opening: str, quotes: list[str]
) -> None:
    """The claim's edit shows the words that make it, as written, and reaches the LLM whole
    (the 1.5B model had copied the check's paraphrase, not in the text; the quoted words were
    then cut off as an unfinished sentence); copied with any quote marks, they are found."""
    claim = (f'{opening}the "{segment.name}" segment has the lowest average annual income '
             f"({segment.mean_income:.0f} k$).")  # fmt: skip
    text = f"{claim[0].upper()}{claim[1:]} Invite them to the preview."
    task = "Draft a one-paragraph brief explaining what the five customer segments mean."
    edit = next(a for a in edits_of(text, task) if a.fixes and "lowest" in a.fixes)
    seen: list[str] = []

    def copies_the_quoted_words(_current: str, asked: str) -> Patch:
        seen.append(asked)
        quoted = asked.split('The words to change: "', 1)[1].removesuffix('"')
        assert quoted in text and segment.name in quoted and "lowest" in quoted
        old = quoted.replace('"', quotes[0], 1).replace('"', quotes[1], 1)
        return Patch(old=old, new=f'The "{segment.name}" segment earns more than most.')

    def found(t: str) -> list[str]:
        return problems(t, task, SEGMENTS)

    # Without code's patch, the LLM is shown the words whole and its copy is found.
    by_llm = apply_edits(text, [edit._replace(patch=None)], task, found, copies_the_quoted_words)
    assert seen == [edit.edit]
    assert by_llm.outcomes[0].applied, by_llm.outcomes
    assert "lowest" not in by_llm.text and by_llm.text.endswith("Invite them to the preview.")
    # Code's own patch: the superlative made "an", the figure kept, no LLM call.
    by_code = apply_edits(text, [edit], task, found, never_fails)
    assert by_code.outcomes[0].applied, by_code.outcomes
    assert f"an average annual income ({segment.mean_income:.0f} k$)" in by_code.text
    assert not [p for p in found(by_code.text) if "lowest" in p]
