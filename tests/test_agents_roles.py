"""The Reviewer's final is the answer alone: tidy_final on real failure shapes, generated text."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from custseg.agents.roles import META_TALK, OTHER_SCRIPT, tidy_final


def test_stray_braces_go_balanced_ones_stay() -> None:
    assert tidy_final("Offer 10% off to segment 3.\n}") == "Offer 10% off to segment 3."
    assert tidy_final('"Send the flyer to high spenders."}') == '"Send the flyer to high spenders."'
    assert tidy_final("{ Send it. }}") == "{ Send it. }"
    assert tidy_final("Use the {segment} placeholder.") == "Use the {segment} placeholder."


def test_sentences_about_the_review_are_dropped() -> None:
    text = (
        "Target segment 2 with a loyalty card. This would help the reviewer see the change. "
        "The draft missed the budget.\nMeasure redemption after four weeks."
    )
    assert (
        tidy_final(text)
        == "Target segment 2 with a loyalty card.\nMeasure redemption after four weeks."
    )


def test_drift_into_another_script_is_dropped() -> None:
    text = "Compare the two groups. Then compute the new average收入和支出"
    assert tidy_final(text) == "Compare the two groups."


def test_a_reply_cut_at_its_cap_ends_at_its_last_sentence() -> None:
    text = "1. Pick the segment.\n2. Write the offer.\n3. Regularly evaluate the re"
    assert tidy_final(text, cut=True) == "1. Pick the segment.\n2. Write the offer."
    numbered = "Retrain monthly. 5. Regularly evaluate the re"
    assert tidy_final(numbered, cut=True) == "Retrain monthly."
    # Not cut: an unterminated last line is the model's choice, kept.
    lines = "Subject lines: 'Discover Your New Savings', 'Exclusive Savings'"
    assert tidy_final(lines) == lines


def test_nothing_left_falls_back_to_the_text() -> None:
    assert tidy_final("  The draft was fine.  ") == "The draft was fine."
    assert tidy_final("") == ""


def _is_subsequence(small: str, big: str) -> bool:
    chars = iter(big)
    return all(c in chars for c in small)


words = st.sampled_from(
    ["Offer", "segment", "3", "spending", "the draft", "reviewer", "收入", "{", "}", "[", "]",
     "1.", "-", "'quoted'", "flyer", "high income", "This revised answer"]
)  # fmt: skip
separators = st.sampled_from([" ", ". ", "! ", "? ", "\n", "\n\n", ", ", ": "])
texts = st.lists(st.tuples(words, separators), max_size=30).map(
    lambda pairs: "".join(w + s for w, s in pairs)
) | st.text(max_size=200)


@given(texts, st.booleans())
@example("1. This revised answer. Offer ", True)  # the cut left only a list number: not stable
def test_tidy_final_only_removes_and_is_stable(text: str, cut: bool) -> None:
    tidy = tidy_final(text, cut=cut)
    assert _is_subsequence(tidy, text), "tidy_final must never add or reorder text"
    assert tidy == tidy.strip()
    assert tidy_final(tidy) == tidy
    if OTHER_SCRIPT.search(tidy) or META_TALK.search(tidy):
        # Only when every piece was process talk or drift: then the text itself, stripped.
        assert tidy in text
