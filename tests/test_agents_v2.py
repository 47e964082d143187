"""Agent variant v2's own logic, no LLM: the tools and the pre-step that calls them, the limits
enforced before sending, the review's edits parsed and accounted for, and the leak check
(generated inputs where the task is about input classes)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from custseg.agents.edits import (
    MAX_LLM_EDITS,
    Asked,
    Patch,
    apply_edits,
    fresh,
    list_items,
    lost_items,
    worse_problems,
)
from custseg.agents.enforce import cut_to, enforce, problems, repair, strip_hashtags
from custseg.agents.envelope import Edit, Envelope, parse_envelope, task_envelope
from custseg.agents.review import (
    MAX_EDITS,
    SECTIONS,
    clean_edits,
    drop_echoes,
    drop_leaks,
    leaked,
    parse_edits,
    review_text,
)
from custseg.agents.roles import INSTRUCTIONS, ROLES, answer
from custseg.agents.roles_v2 import INSTRUCTIONS_V2
from custseg.agents.tools import (
    ToolError,
    assign_customer,
    count_text,
    facts_text,
    rank_segments,
    segment_figures,
    task_tool_calls,
)
from custseg.conversation import GroundedIn, Segment
from custseg.evaluation.addressed import check_answer
from custseg.evaluation.limits import check_limits, task_limits

SEGMENTS = (
    Segment(0, "low income · high spending", 38, 0.19, 48.8684, 82.6842),
    Segment(1, "high income · low spending", 34, 0.17, 69.4118, 18.7647),
    Segment(2, "average income · average spending", 51, 0.255, 61.0588, 51.3922),
    Segment(3, "low income · low spending", 39, 0.195, 47.2051, 15.8974),
    Segment(4, "high income · high spending", 38, 0.19, 72.0, 84.7105),
)
GROUNDING = GroundedIn("customer-segments", "7", SEGMENTS)
SMS = (
    'Write a short SMS (under 160 characters) inviting "high income · high spending" customers '
    "to a private preview evening."
)


def nearest(income: float, spending: float) -> int:
    """A stand-in for the served KMeans: the segment with the nearest means."""
    return min(
        SEGMENTS, key=lambda s: (s.mean_income - income) ** 2 + (s.mean_spending - spending) ** 2
    ).id


# --- tools ------------------------------------------------------------------------------------


def test_tools_answer_from_the_profile() -> None:
    assert segment_figures(SEGMENTS, "High-income, low-spending")["size"] == 34
    assert rank_segments(SEGMENTS, "mean_income")[0]["segment"] == ("high income · high spending")
    assert rank_segments(SEGMENTS, "size", highest_first=False)[0]["size"] == 34
    assert assign_customer(SEGMENTS, nearest, 85, 20)["segment"] == "high income · low spending"
    assert count_text("  Two words  ") == {"words": 2, "characters": 9}
    with pytest.raises(ToolError, match="no segment named 'premium'"):
        segment_figures(SEGMENTS, "premium")
    with pytest.raises(ToolError, match="cannot rank by 'age'"):
        rank_segments(SEGMENTS, "age")


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (SMS, [("segment_figures", {"name": "high income · high spending"})]),
        (
            "Which segment has the highest mean annual income? Suggest one offer.",
            [("rank_segments", {"feature": "mean_income", "highest_first": True})],
        ),
        (
            "Which segment has the fewest customers?",
            [("rank_segments", {"feature": "size", "highest_first": False})],
        ),
        (
            "A customer earns 85k$ a year and has a spending score of 20. Which segment is this?",
            [("assign_customer", {"income": 85.0, "spending": 20.0})],
        ),
        (
            "How often should we retrain?",
            [("rank_segments", {"feature": "size", "highest_first": True})],
        ),
    ],
)  # fmt: skip
def test_the_pre_step_calls_the_tools_a_task_needs(task: str, expected: list) -> None:
    calls = task_tool_calls(task, GROUNDING, nearest)
    assert [(c.name, c.arguments) for c in calls] == expected
    assert all("error" not in json.dumps(c.result) for c in calls)


def test_facts_are_the_figures_the_grounding_check_accepts() -> None:
    task = "A customer earns 85k$ a year and has a spending score of 20. Which segment is this?"
    facts = facts_text(task_tool_calls(task, GROUNDING, nearest), GROUNDING)
    assert '"high income · low spending"' in facts and "mean spending score 19" in facts
    check = check_answer(facts, task, SEGMENTS)
    assert check.passed and check.figures, check.reason()


def test_a_tool_that_fails_is_recorded_not_raised() -> None:
    def broken(_income: float, _spending: float) -> int:
        raise ValueError("income must be positive")

    task = "A customer earns 85k$ a year and has a spending score of 20."
    (call,) = task_tool_calls(task, GROUNDING, broken)
    assert call.result == {"error": "ValueError: income must be positive"}
    assert "assign_customer: ValueError" in facts_text([call], GROUNDING)


# --- limits enforced --------------------------------------------------------------------------


def test_hashtags_go_and_a_long_sms_is_cut_at_a_sentence_end() -> None:
    assert strip_hashtags("Join us tonight! #VIP #style") == "Join us tonight!"
    assert strip_hashtags("Costs 5 #2 pencils & R&D") == "Costs 5 #2 pencils & R&D"
    limit = task_limits(SMS)[0]
    text = "Join our private preview evening on Friday. " * 5
    cut = cut_to(text, limit)
    assert len(cut) <= 160 and cut.endswith(".") and text.startswith(cut)
    assert cut_to("x" * 200, limit) == "x" * 200  # no sentence end keeps it: left to a revision


sentences = st.lists(
    st.text(alphabet="abc xyz#", min_size=1, max_size=40).map(lambda s: s.strip() + "."),
    max_size=12,
)


@given(sentences, st.integers(min_value=20, max_value=200))
def test_repair_never_grows_a_reply_and_keeps_a_limit_it_can(parts: list[str], n: int) -> None:
    task = f"Write a short SMS (under {n} characters) for our customers."
    text = " ".join(parts)
    repaired, notes = repair(text, task)
    assert len(repaired) <= len(text.strip())
    prefixes = [" ".join(parts[:i]).strip() for i in range(1, len(parts) + 1)]
    if "#" not in text and any(len(p) <= n and len(p.split()) >= 3 for p in prefixes):
        assert len(repaired) <= n  # a cut that keeps a few words is always found
    assert bool(notes) == (repaired != text)


def test_a_breaking_reply_is_revised_then_sent_with_the_breach_recorded() -> None:
    long = "A" * 300
    asked: list[list[str]] = []

    def revise(text: str, found: list[str]) -> str:
        asked.append(found)
        return "Still far too long " * 20

    done = enforce(long, SMS, SEGMENTS, revise, attempts=1, who="final")
    assert len(asked) == 1 and "300 characters" in asked[0][0]
    assert done.breaches == ["final: 300 characters (task: under 160 characters)"]
    assert any("LLM revision 1" in r and "not kept" in r for r in done.revisions)
    assert {c.name for c in done.tool_calls} == {"count_text"}


def test_a_revision_that_keeps_the_limits_is_sent_without_breach() -> None:
    done = enforce("B" * 300, SMS, SEGMENTS, lambda _t, _f: "Join us on Friday.", attempts=1)
    assert done.text == "Join us on Friday." and done.breaches == []
    assert check_limits(done.text, SMS).passed


def test_a_wrong_figure_is_a_problem_the_revision_is_told() -> None:
    task = 'How many customers are in the "high income · low spending" segment?'
    told: list[str] = []

    def revise(_text: str, found: list[str]) -> str:
        told.extend(found)
        return 'The "high income · low spending" segment has 34 customers.'

    wrong = 'The "high income · low spending" segment has 85 customers.'
    done = enforce(wrong, task, SEGMENTS, revise)
    assert any("wrong figure" in f for f in told) and done.breaches == []


# --- the review's edits -----------------------------------------------------------------------


@given(st.lists(st.text(max_size=300), max_size=10))
def test_edits_are_cleaned_bounded_and_unique(raw: list[str]) -> None:
    edits = clean_edits(raw)
    assert len(edits) <= MAX_EDITS
    assert len({e.casefold() for e in edits}) == len(edits)
    assert all(0 < len(e) <= 200 and e == e.strip() for e in edits)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=100).map(repr)))
def test_an_unreadable_review_is_one_line(text: str) -> None:
    try:
        edits = parse_edits(text)
    except ValueError as error:
        assert str(error).startswith("invalid review: ") and "\n" not in str(error)
    else:
        assert isinstance(edits, list)


def test_a_review_is_parsed_and_each_edit_listed_with_its_outcome() -> None:
    edits = parse_edits(json.dumps({"edits": ["1. Add the date.", "Add the date.", "- Cut tags"]}))
    assert edits == ["Add the date.", "Cut tags"]
    with pytest.raises(ValueError, match="invalid review: edits"):
        parse_edits(json.dumps({"edits": ["a b"] * 9}))
    outcomes = [Edit("Add the date.", True), Edit("Cut tags", False, "no tags there")]
    assert review_text(()).startswith("No change requested")
    assert (
        review_text(outcomes)
        == "1. Add the date. (applied)\n2. Cut tags (not applied: no tags there)"
    )


# --- prompts never leak -------------------------------------------------------------------------

PROMPTS = [*INSTRUCTIONS.values(), *INSTRUCTIONS_V2.values()]
LEAK = (
    "The final answer should be the answer as the team would send it: never mention the "
    "draft, the review or yourself."
)


def test_the_leak_seen_in_a_real_review_is_found_and_dropped() -> None:
    answer_text = f"Offer a points programme for premium brands. {LEAK} Measure uptake monthly."
    assert leaked(answer_text, PROMPTS)
    kept, found = drop_leaks(answer_text, PROMPTS)
    assert kept == "Offer a points programme for premium brands. Measure uptake monthly."
    assert found and not leaked(kept, PROMPTS)


safe_words = st.sampled_from(["offer", "points", "segment", "evening", "customers", "brand", "."])


@given(
    st.lists(safe_words, max_size=40).map(" ".join),
    st.sampled_from(PROMPTS),
    st.integers(min_value=0, max_value=3),
)
def test_no_instruction_survives_drop_leaks(text: str, prompt: str, at: int) -> None:
    pieces = text.split(".")
    pieces.insert(min(at, len(pieces)), f" {prompt} ")
    kept, _ = drop_leaks(".".join(pieces), PROMPTS)
    assert not leaked(kept, PROMPTS)
    assert not leaked(text, PROMPTS)  # ordinary words are not an instruction


# --- the v2 agents, end to end in process (a scripted LLM) -----------------------------------


class ScriptedLLM:
    """Replies as scripted per kind of request (a plain reply, the review's edits, each edit's
    patch in turn); records what it was asked."""

    name, model, temperature, max_string_length = "scripted", "scripted", 0.0, 600

    def __init__(self, text: str, edits: list[str], patches: list[dict] = ()) -> None:
        self.text, self.edits, self.patches, self.asked = text, edits, list(patches), []
        self.schemas: list[str] = []

    def complete(self, messages, max_tokens=None):
        self.asked.append(messages)
        return SimpleNamespace(text=self.text)

    def complete_json(self, messages, schema, max_tokens=None):
        self.asked.append(messages)
        self.schemas.append(schema.__name__)
        if "edits" in schema.model_fields:
            return schema(edits=self.edits), None
        return schema(**(self.patches.pop(0) if self.patches else {"new": ""})), None


def run_chain(llm: ScriptedLLM, task: str) -> dict[str, Envelope]:
    envelope, chain = task_envelope(task, variant="v2"), {}
    for role in ("planner", "writer", "reviewer"):
        envelope = answer(ROLES[role], envelope, llm, 200, GROUNDING)
        chain[role] = parse_envelope(envelope.to_bytes())  # valid on the wire
    return chain


def review_only(llm: ScriptedLLM, task: str, draft: str) -> Envelope:
    """The Reviewer's reply to a draft (no planner or writer call)."""
    incoming = task_envelope(task, variant="v2")
    incoming = msgspec.structs.replace(
        incoming, type="draft", content={"task": task, "plan": "1. Answer.", "draft": draft}
    )
    return parse_envelope(answer(ROLES["reviewer"], incoming, llm, 200, GROUNDING).to_bytes())


def test_v2_records_tools_edits_and_a_breach_and_v1_records_none() -> None:
    # Every plain reply is too long with no sentence end to cut at, and has a hashtag.
    llm = ScriptedLLM(
        "Join us " * 30 + "#VIP",
        ["Add the date."],
        [{"old": "Join us", "new": "Join"}, {"new": "On Friday 7 pm at the Main Street store."}],
    )
    chain = run_chain(llm, SMS)
    assert "Facts (from the model's tools)" in llm.asked[0][0]["content"]
    assert chain["planner"].work.tool_calls[0].name == "segment_figures"
    writer = chain["writer"].work
    assert (
        "#" not in chain["writer"].content["draft"]
        and "draft: hashtags stripped" in writer.revisions
    )
    assert writer.breaches == ("draft: 239 characters (task: under 160 characters)",)
    final = chain["reviewer"]
    # The checks' finding comes first: the patch shortens the text, so it is kept (nearer the
    # limit); the date would lengthen it again, so it is not.
    assert [(e.edit, e.applied) for e in final.work.edits] == [
        (
            "Shorten the answer to under 160 characters (it has 239 characters): cut filler "
            "words and any sentence the task does not need.",
            True,
        ),
        ("Add the date.", False),
    ]
    assert "it breaks the task or the facts: 278 characters" in final.work.edits[1].why_not
    assert final.work.breaches == ("final: 236 characters (task: under 160 characters)",)
    assert final.model.params["llm_calls"] == 3  # the review and one call per edit
    v1 = answer(ROLES["planner"], task_envelope(SMS), llm, 50, GROUNDING)
    assert v1.work is None and b'"work":null' in v1.to_bytes()


def test_an_edit_that_changes_nothing_is_recorded_not_applied() -> None:
    text = "Send a private preview invitation to our best customers this Friday."
    llm = ScriptedLLM(text, ["Add the time of the evening.", "Change the day to Friday."], [
        {"new": ""}, {"old": "this Friday", "new": "this Friday"},
    ])  # fmt: skip
    final = review_only(llm, SMS, text)
    assert final.content["final"] == text
    assert [e.why_not for e in final.work.edits] == [
        "the edit came back empty",
        "it changes nothing",
    ]
    assert "(not applied: it changes nothing)" in final.content["review"]


def test_no_edits_asked_means_no_change() -> None:
    text = "Send a private preview invitation to our best customers this Friday."
    final = run_chain(ScriptedLLM(text, []), SMS)["reviewer"]
    assert final.content["final"] == text and final.work.edits == ()
    assert final.content["review"].startswith("No change requested")
    assert final.model.params["llm_calls"] == 1


CUSTOMER = (
    "A customer earns 85k$ a year and has a spending score of 20. Which segment is this and "
    "what should we offer them?"
)
SEEN_DRAFT = (  # data/conversations_v2.jsonl, the partial run: its final was this draft
    'The customer falls into the "high income · low spending" segment. We should offer them '
    "premium products, loyalty programs, or personalized discounts tailored to their spending "
    "habits."
)


def test_a_copied_sentence_is_no_edit_and_a_cut_off_one_is_applied_in_full_sentences() -> None:
    added = "Invite them to a private styling session with early access to the new collection."
    llm = ScriptedLLM(SEEN_DRAFT, [
        "Add a sentence about the specific products offered to the customer. For example,",
        "We should offer them premium products, loyalty programs, or personalized discounts.",
    ], [{"new": added}])  # fmt: skip
    final = review_only(llm, CUSTOMER, SEEN_DRAFT)
    edits = final.work.edits
    # Code adds the segment's figures from the tools (the draft named it with none).
    assert edits[0].applied and edits[0].edit.startswith('Give the "high income · low spending"')
    assert edits[1] == Edit(
        "Add a sentence about the specific products offered to the customer.", True
    )
    assert edits[2].applied is False and edits[2].why_not == "not an instruction"
    text = final.content["final"]
    assert text.startswith(
        'The customer falls into the "high income · low spending" segment. The "high income · '
        'low spending" segment has 34 customers (17% of all customers), a mean annual income '
        "of 69 k$ and a mean spending score of 19. We should offer"
    )
    assert text.endswith(added) and check_answer(text, CUSTOMER, SEGMENTS).passed
    assert final.model.params["llm_calls"] == 2  # the copied sentence was never sent


def test_an_addition_keeps_only_what_neither_repeats_the_text_nor_restates_the_task() -> None:
    # Seen with the bundled model: an addition that began with the draft's first sentence, and
    # one that was the task's own fact.
    added = (
        "The customer falls into the 'high income · low spending' segment. Their spending "
        "score of 20 is far below their income level, so a personal shopper could unlock it."
    )
    assert fresh(added, SEEN_DRAFT, CUSTOMER) == (
        "Their spending score of 20 is far below their income level, so a personal shopper "
        "could unlock it."
    )
    assert fresh("The customer earns 85k$ a year.", SEEN_DRAFT, CUSTOMER) == ""
    llm = ScriptedLLM(
        SEEN_DRAFT, ["Add the customer's yearly earnings."], [{"new": "Earns 85k$ a year."}]
    )
    final = review_only(llm, CUSTOMER, SEEN_DRAFT)
    assert final.work.edits[-1].why_not == "it only repeats the text or the task"


def test_a_draft_that_is_only_a_title_gets_its_answer_added() -> None:
    # Seen with the bundled model: the draft was "Rewards for Spending", the review's one edit
    # the answer itself (not an instruction), and the final stayed the title.
    task = 'Propose a loyalty-programme offer for the "high income · low spending" segment.'
    offer = "Give members a free personal shopper after their third full-price visit."
    llm = ScriptedLLM("", ["Rewards for Spending: Offer a free shopper."], [{"new": offer}])
    final = review_only(llm, task, "Rewards for Spending")
    assert final.content["final"] == f"Rewards for Spending. {offer}"
    assert [(e.applied, e.why_not) for e in final.work.edits] == [
        (True, None),
        (False, "not an instruction"),
    ]
    assert final.work.edits[0].edit.endswith("the draft is only 3 words.")


def test_a_restated_task_is_cut_by_code() -> None:
    task = (
        'Propose a loyalty-programme offer for the "high income · low spending" segment that '
        "could raise their spending without discounting."
    )
    draft = (
        'Propose a loyalty-programme offer for the "high income · low spending" segment to '
        "raise their spending. Give members who spend 500 $ in a quarter a free personal "
        "shopper, early access to new premium lines and double points on full-price items."
    )
    final = review_only(ScriptedLLM(draft, []), task, draft)
    assert final.content["final"].startswith("Give members who spend 500 $")
    assert final.work.edits[0] == Edit("Do not restate the task; start with the answer.", True)


def test_a_patch_replaces_the_words_it_names_or_is_refused_with_why() -> None:
    draft = "1. Visits per week.\n2. Basket size.\n3. Redemption rate."
    task = 'Suggest three metrics for the "low income · low spending" segment.'
    llm = ScriptedLLM(draft, ["Change basket size to the mean basket value in $.",
                              "Replace the visits with app sessions.",
                              "Add a date for the first review."], [
        {"old": "basket  SIZE", "new": "Mean basket value in $ per visit"},
        {"old": "Visits per month", "new": "App sessions per week"},
        {"new": "Review them on [date]."},
    ])  # fmt: skip
    final = review_only(llm, task, draft)
    assert final.content["final"] == (
        "1. Visits per week.\n2. Mean basket value in $ per visit.\n3. Redemption rate."
    )
    assert [e.applied for e in final.work.edits] == [True, False, False]
    assert "not in the text: 'Visits per month'" in final.work.edits[1].why_not
    # An edit that only adds gets only the words to add asked for; code puts them at the end.
    assert llm.schemas == ["ReviewEdits", "Patch", "Patch", "Addition"]
    assert llm.asked[-1][-1]["content"].endswith("Edit: Add a date for the first review.")
    assert "placeholder" in final.work.edits[2].why_not


def test_at_most_three_edits_go_to_the_llm() -> None:
    text = "Send the flyer to the best customers in spring."
    asked = [Asked(f"Add fact number {n} about the flyer.") for n in range(5)]
    calls: list[str] = []
    facts = [
        "Print it on recycled paper.",
        "Mail it to each home in March.",
        "Add a QR code to the shop.",
    ]

    def ask(_text: str, edit: str) -> Patch:
        calls.append(edit)
        return Patch(new=facts[len(calls) - 1])

    done = apply_edits(text, asked, "Plan a flyer.", lambda _t: [], ask)
    assert len(calls) == MAX_LLM_EDITS == 3
    assert [e.applied for e in done.outcomes] == [True, True, True, False, False]
    assert done.outcomes[4].why_not == "not tried: at most 3 edits per final"


list_drafts = st.lists(
    st.sampled_from(["Visits per week.", "Basket size in $.", "Redemption rate.", "App sessions."]),
    min_size=1,
    max_size=5,
).map(lambda items: "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1)))
patches = st.builds(
    Patch,
    old=st.one_of(st.just(""), st.sampled_from(["Visits per week.", "2. Basket", "rate", "x"])),
    new=st.text(alphabet="ab 1.#\n", max_size=60),
)


@given(list_drafts, st.lists(patches, min_size=1, max_size=4))
def test_an_applied_edit_never_loses_an_item_or_breaks_a_limit(draft: str, made: list) -> None:
    task = "Suggest three metrics for the weekend promotion in under 90 characters."
    queue = list(made)
    done = apply_edits(
        draft,
        [Asked("Add one more detail to the metrics.")] * len(made),
        task,
        lambda text: problems(text, task, SEGMENTS),
        lambda _text, _edit: queue.pop(0),
        most=len(made),
    )
    assert list_items(done.text) >= list_items(draft)
    assert not worse_problems(problems(draft, task, SEGMENTS), problems(done.text, task, SEGMENTS))
    assert len(done.outcomes) == len(made)
    assert (done.text == draft) == (not any(e.applied for e in done.outcomes))


def test_an_old_v1_record_still_parses() -> None:
    old = msgspec.json.encode(
        {
            "event_id": "e",
            "correlation_id": "c",
            "type": "task",
            "agent": "user",
            "produced_at": "2026-11-30T03:38:40Z",
            "content": {"task": "t"},
        }
    )
    assert parse_envelope(old).work is None


def test_the_prompt_sections_a_revision_echoes_are_dropped() -> None:
    # Seen with the bundled model: the revision ended with the problems it was told.
    seen = "Budget-Friendly Savings: Discover\n\nProblems:\ngives 1 line(s) (task: Write three …)"
    assert drop_echoes(seen) == ("Budget-Friendly Savings: Discover", True)
    assert drop_echoes("Answer: Send the flyer.\nTask: x") == ("Send the flyer.", True)
    assert drop_echoes("Subject: Spring sale\nBody: 20% off") == (
        "Subject: Spring sale\nBody: 20% off",
        False,
    )


@given(st.lists(safe_words, min_size=1, max_size=30).map(" ".join), st.sampled_from(SECTIONS))
def test_an_echoed_section_after_an_answer_never_survives(text: str, section: str) -> None:
    kept, dropped = drop_echoes(f"{text}\n{section.capitalize()}:\n- gives 1 line(s)")
    assert "gives 1 line" not in kept and dropped and kept == text.strip()


def test_a_patch_that_breaks_what_the_draft_kept_is_not_applied() -> None:
    lines = '"Spring savings for you"\n"Our budget collection is here"\n"Save more this spring"'
    task = 'Write three email subject lines for the "low income · high spending" segment.'
    llm = ScriptedLLM(lines, ["Make the lines shorter."], [{"old": lines, "new": "One line"}])
    final = review_only(llm, task, lines)
    assert final.content["final"] == lines and final.work.breaches == ()
    assert final.work.edits[0].applied is False
    assert final.work.edits[0].why_not.startswith("it loses what the text had: gives fewer than 3")


def test_a_patch_that_keeps_only_the_edited_item_is_not_applied() -> None:
    # Seen with the bundled model: asked to add to metric 3, the final was metric 3 alone.
    task = (
        'Suggest three metrics to track whether the "low income · low spending" segment responds.'
    )
    draft = "1. Visits per week.\n2. Basket size.\n3. Redemption rate."
    llm = ScriptedLLM(draft, ["Rewrite metric 3 to say how the redemption rate is measured."], [
        {"old": draft, "new": "3. Redemption rate of codes."},
    ])  # fmt: skip
    final = review_only(llm, task, draft)
    assert lost_items(draft, "3. Redemption rate of codes.", task)
    assert final.content["final"] == draft
    assert "it loses what the text had" in final.work.edits[0].why_not


def test_the_checks_edits_come_first_and_code_patches_cost_no_llm_call() -> None:
    task = 'Describe the "high income · low spending" segment for the store managers.'
    draft = (
        'The "high income · low spending" segment has a mean spending score of 85, so they '
        "already buy a lot and should get early access to the new collection in spring."
    )
    llm = ScriptedLLM(draft, ["Add the mean spending score of the segment."])
    final = review_only(llm, task, draft)
    edits = final.work.edits
    assert edits[0].edit.startswith('Change "mean spending score of 85" to the model')
    assert edits[0].applied and "mean spending score of 18.8" in final.content["final"]
    # The LLM's own edit asks for what the text says: refused before any call is spent on it.
    assert (edits[1].applied, edits[1].why_not) == (False, "the text already says it")
    assert final.model.params["llm_calls"] == 1  # the review only
    assert "Made or asked already (do not repeat): Change" in llm.asked[0][-1]["content"]
