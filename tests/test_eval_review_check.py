"""A final held to its review with no judge (issue #33 "does the final apply the review's
requests?"): a review that asks for something added, and a final that adds fewer than
REVIEW_NEW words or figures its draft and task do not have, ignored it. Generated reviews and
finals, then the calibration set and the committed conversations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from custseg.evaluation.asks import REVIEW_NEW, ignored_review
from custseg.evaluation.calibration import load_calibration
from custseg.evaluation.items import conversation_items, read_conversations
from tests.fixtures.project import ROOT

TASK = "Suggest a birthday campaign for the average income · average spending segment."
DRAFT = "Send a birthday email."
ASKS = ["Add the reward and the timing.", "Too generic. Mention the reward.",
        "Weight it, and give the amounts.", "1. Name the channel.",
        "The draft could be improved by adding the timing."]  # fmt: skip
NO_ASK = [
    "Looks good.",
    "No change requested: the draft answers the task within its limits.",
    "The draft is clear, correct and within the limits.",
    "I would keep it as it is.",
]
NEW = ["voucher", "three", "days", "before", "valid", "weeks", "picks", "purchases", "10", "2.5"]


@settings(max_examples=200)
@given(review=st.sampled_from(ASKS), added=st.lists(st.sampled_from(NEW), unique=True, max_size=6))
def test_a_final_that_adds_too_little_ignores_a_review_asking_for_more(review, added) -> None:
    final = f"{DRAFT} {' '.join(added)}".strip()
    found = ignored_review(review, DRAFT, final, TASK)
    assert bool(found) == (len(added) < REVIEW_NEW), (review, final)


@settings(max_examples=100)
@given(review=st.sampled_from(NO_ASK), final=st.sampled_from([DRAFT, "Send a birthday email!"]))
def test_a_review_asking_for_nothing_is_never_ignored(review, final) -> None:
    assert ignored_review(review, DRAFT, final, TASK) == ""


@given(words=st.lists(st.sampled_from(DRAFT.split() + TASK.split()), min_size=1, max_size=20))
def test_words_the_draft_or_the_task_have_are_nothing_new(words) -> None:
    assert ignored_review(ASKS[0], DRAFT, " ".join(words), TASK)


def test_the_calibration_finals_that_apply_their_review_pass_and_most_that_ignore_it_fail() -> None:
    pairs = load_calibration(ROOT / "eval" / "calibration.yaml")["improvement"]
    for pair in pairs:
        assert ignored_review(pair["review"], pair["draft"], pair["good"], pair["task"]) == ""
    ignoring = [p for p in pairs if p["degraded"] == "ignores_review"]
    caught = [bool(ignored_review(p["review"], p["draft"], p["bad"], p["task"])) for p in ignoring]
    assert sum(caught) >= 8, caught  # not: a final that adds generic words, or the wrong thing


def test_the_eval_asks_it_of_every_conversation_with_a_review() -> None:
    conversations = read_conversations(ROOT / "data" / "conversations.jsonl").complete
    items = [i for c in conversations for i in conversation_items(c, 0)]
    improvement = [i for i in items if i.metric == "improvement"]
    assert improvement and all(i.review for i in improvement)
