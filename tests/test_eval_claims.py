"""Claim checks with no judge (#33 item 1): superlatives, comparisons and rankings about
segments against the profile, the segment the task is about, and the counts and parts the task
asks for. Generated profiles (2-8 segments) and sentences: true ones pass, false ones are caught;
then the agents' own conversations and the calibration set's good answers (no false alarm)."""

from __future__ import annotations

import itertools

import msgspec
import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from custseg import jsonl
from custseg.conversation import Segment
from custseg.evaluation.addressed import check_answer, check_claims
from custseg.evaluation.asks import task_asks
from custseg.evaluation.claims import ranked
from custseg.evaluation.grounding import COUNT_WORDS, TOLERANCE
from custseg.evaluation.items import grounded_in
from custseg.evaluation.limits import check_limits
from tests.fixtures.project import ROOT

LEVELS = ("low", "average", "high")
WRITINGS = (
    "{i} income · {s} spending",
    "the {i}-income, {s}-spending customers",
    "{i} income and {s} spending",
    "the '{i} income · {s} spending' segment",
)
TASK = "Tell the store managers about our customers."


@st.composite
def profiles(draw, min_size: int = 2) -> list[Segment]:
    """2-8 segments with distinct names from the pipeline's vocabulary, random sizes and means."""
    pairs = draw(
        st.lists(st.sampled_from(list(itertools.product(LEVELS, LEVELS))), min_size=min_size,
                 max_size=8, unique=True)
    )  # fmt: skip
    sizes = draw(st.lists(st.integers(5, 400), min_size=len(pairs), max_size=len(pairs)))
    return [
        Segment(
            id=n,
            name=f"{i} income · {s} spending",
            size=size,
            share=size / sum(sizes),
            mean_income=draw(st.floats(15, 140).map(lambda v: round(v, 1))),
            mean_spending=draw(st.floats(1, 99).map(lambda v: round(v, 1))),
        )
        for n, ((i, s), size) in enumerate(zip(pairs, sizes, strict=True))
    ]


def said(segment: Segment, template: str) -> str:
    i, s = segment.name.replace(" income ·", "").replace(" spending", "").split()
    return template.format(i=i, s=s)


def value(segment: Segment, field: str) -> float:
    return float(getattr(segment, field))


# A superlative sentence per (field, highest?), about one segment {a}.
SUPERLATIVES = {
    ("mean_income", True): (
        "{a} has the highest mean annual income.",
        "The segment with the highest mean annual income is {a}.",
        "{a} earns the most.",
    ),
    ("mean_income", False): ("{a} has the lowest average income.",),
    ("mean_spending", True): ("{a} spends the most.", "{a} has the highest spending score."),
    ("mean_spending", False): (
        "The segment with the lowest mean spending score is {a}.",
        "{a} are the lowest spenders.",
    ),
    ("size", True): ("The largest segment is {a}.", "{a} has the most customers."),
    ("size", False): ("{a} is the smallest segment.", "{a} has the fewest customers."),
}


@settings(max_examples=200)
@given(profile=profiles(), data=st.data())
def test_a_true_superlative_passes_and_a_false_one_is_caught(profile, data) -> None:
    (field, highest) = data.draw(st.sampled_from(sorted(SUPERLATIVES)))
    sentence = data.draw(st.sampled_from(SUPERLATIVES[field, highest]))
    writing = data.draw(st.sampled_from(WRITINGS))
    order = ranked(profile, field, highest)
    true = sentence.format(a=said(order[0], writing))
    assert check_claims(true, TASK, profile) == [], true
    other = data.draw(st.sampled_from(order[1:]))
    assume(abs(value(other, field) - value(order[0], field)) > TOLERANCE[field])
    false = f"Good news. {sentence.format(a=said(other, writing))} Act on it."
    (finding,) = check_claims(false, TASK, profile)
    assert other.name in finding and order[0].name in finding, finding


@settings(max_examples=150)
@given(profile=profiles(min_size=3), data=st.data())
def test_the_two_that_most_or_least_are_the_top_or_bottom_two(profile, data) -> None:
    field = data.draw(st.sampled_from(["mean_income", "mean_spending"]))
    highest = data.draw(st.booleans())
    word = {"mean_income": "mean annual incomes", "mean_spending": "spending scores"}[field]
    top = "highest" if highest else "lowest"
    form = data.draw(
        st.sampled_from(
            [
                f"The two segments with the {top} {word} are {{a}} and {{b}}.",
                f"Send the flyer to {{a}} and {{b}}. These segments have the {top} {word}.",
            ]
        )
    )
    order = ranked(profile, field, highest)
    a, b = data.draw(st.permutations(order[:2]))
    assert check_claims(form.format(a=a.name, b=b.name), TASK, profile) == []
    outsider = data.draw(st.sampled_from(order[2:]))
    assume(abs(value(outsider, field) - value(order[1], field)) > TOLERANCE[field])
    wrong = form.format(a=a.name, b=outsider.name)
    (finding,) = check_claims(wrong, TASK, profile)
    assert f"the {top}" in finding and outsider.name in finding, finding


@settings(max_examples=150)
@given(profile=profiles(), data=st.data())
def test_two_figures_in_one_superlative_are_each_checked_with_their_own_word(profile, data) -> None:
    up, down = data.draw(st.sampled_from([(True, False), (False, True), (True, True)]))
    words = {True: "highest", False: "lowest"}
    sentence = f"{{a}} has the {words[up]} mean annual income and the {words[down]} spending score."
    income, spending = ranked(profile, "mean_income", up), ranked(profile, "mean_spending", down)
    both = [s for s in profile if s in (income[0], spending[0])]
    if income[0] == spending[0]:
        assert check_claims(sentence.format(a=income[0].name), TASK, profile) == []
    for segment in both:
        wrong = (
            abs(value(segment, "mean_income") - value(income[0], "mean_income")) > 1.5
            or abs(value(segment, "mean_spending") - value(spending[0], "mean_spending")) > 1.5
        )
        findings = check_claims(sentence.format(a=segment.name), TASK, profile)
        assert (findings != []) == wrong, findings


PAIRED_FORMS = (
    "{a} and {b} have the {x} and {y} {word}, respectively.",
    "{a} and {b} have the {x} and the {y} {word}.",
    # the list above is what "These segments" speaks of; the hedge is the second predicate's
    "Send it to:\n1. {a}: act now\n2. {b}: act later\n\nThese segments have the {x} and {y} "
    "{word}, respectively, and are likely to respond.",
)


@settings(max_examples=200)
@given(profile=profiles(min_size=3), data=st.data())
def test_paired_superlatives_are_checked_name_by_name_in_order(profile, data) -> None:
    # Seen on a v2 conversation: "These segments have the highest and lowest mean spending
    # scores, respectively" of a numbered list whose first item is the average spender.
    field = data.draw(st.sampled_from(["mean_income", "mean_spending"]))
    word = {"mean_income": "mean annual incomes", "mean_spending": "mean spending scores"}[field]
    x_high = data.draw(st.booleans())
    x, y = ("highest", "lowest") if x_high else ("lowest", "highest")
    form = data.draw(st.sampled_from(PAIRED_FORMS))
    first, second = ranked(profile, field, x_high)[0], ranked(profile, field, not x_high)[0]
    assume(first != second)
    true = form.format(a=first.name, b=second.name, x=x, y=y, word=word)
    assert check_claims(true, TASK, profile) == [], true
    other = data.draw(st.sampled_from([s for s in profile if s not in (first, second)]))
    assume(abs(value(other, field) - value(first, field)) > TOLERANCE[field])
    wrong = form.format(a=other.name, b=second.name, x=x, y=y, word=word)
    (finding,) = check_claims(wrong, TASK, profile)
    assert finding.startswith(f"says {other.name}") and f"the {x}" in finding, finding


def test_a_hedge_still_silences_the_claim_it_is_part_of() -> None:
    profile = conversation(0)["profile"]
    order = ranked(profile, "mean_spending", True)
    low = order[-1].name
    for sentence in (
        f"{low} may have the highest spending score, and is small.",
        f"{low} and {order[0].name} might have the highest and lowest spending scores.",
    ):
        assert check_claims(sentence, TASK, profile) == [], sentence
    caught = f"{low} has the highest spending score, and may respond."
    assert len(check_claims(caught, TASK, profile)) == 1


@settings(max_examples=100)
@given(profile=profiles(min_size=3), data=st.data())
def test_a_superlatives_subject_is_the_name_before_it_else_after_it(profile, data) -> None:
    order = ranked(profile, "mean_income", True)
    other = data.draw(st.sampled_from(order[1:]))
    true = f"{order[0].name} has the highest mean annual income, unlike {other.name}."
    assert check_claims(true, TASK, profile) == []
    followed = f"The highest mean annual income is {order[0].name}'s, then {order[1].name}."
    assert check_claims(followed, TASK, profile) == []  # the top two, in order: true
    assume(abs(value(other, "mean_income") - value(order[0], "mean_income")) > 1.5)
    false = f"{other.name} has the highest mean annual income, unlike {order[0].name}."
    (finding,) = check_claims(false, TASK, profile)
    assert finding.startswith(f"says {other.name}")


@settings(max_examples=150)
@given(profile=profiles(), data=st.data())
def test_a_comparison_holds_only_when_the_figures_say_so(profile, data) -> None:
    a, b = data.draw(st.permutations(profile))[:2]
    field, sentence = data.draw(
        st.sampled_from(
            [
                ("mean_income", "{a} has a higher mean annual income than {b}."),
                ("mean_spending", "{a} has a higher spending score than {b}."),
                ("mean_spending", "{a} spends more than {b}."),
                ("size", "{a} has more customers than {b}."),
            ]
        )
    )
    assume(abs(value(a, field) - value(b, field)) > TOLERANCE[field])
    findings = check_claims(sentence.format(a=a.name, b=b.name), TASK, profile)
    assert (findings == []) == (value(a, field) > value(b, field)), findings


@settings(max_examples=100)
@given(profile=profiles(min_size=3), data=st.data())
def test_a_ranking_place_is_checked(profile, data) -> None:
    order = ranked(profile, "size", True)
    assert check_claims(f"{order[1].name} is the second-largest segment.", TASK, profile) == []
    other = data.draw(st.sampled_from([order[0], *order[2:]]))
    assume(abs(value(other, "size") - value(order[1], "size")) > TOLERANCE["size"])
    (finding,) = check_claims(f"{other.name} is the second-largest segment.", TASK, profile)
    assert "second-highest number of customers" in finding


@settings(max_examples=150)
@given(profile=profiles(min_size=3), data=st.data())
def test_a_ranking_holds_only_in_the_figures_order(profile, data) -> None:
    field, words = data.draw(
        st.sampled_from([("mean_income", "mean annual income"), ("size", "customers"),
                         ("mean_spending", "spending score")])
    )  # fmt: skip
    highest = data.draw(st.booleans())
    head = data.draw(
        st.sampled_from(
            [
                f"Ranked by {words}, {'highest' if highest else 'lowest'} first: {{names}}.",
                f"From {'highest to lowest' if highest else 'lowest to highest'} {words}:\n"
                "{lines}\n\nThat is all.",
            ]
        )
    )
    named = data.draw(st.lists(st.sampled_from(profile), min_size=2, max_size=4, unique=True))
    order = sorted(named, key=lambda s: value(s, field), reverse=highest)
    tol = TOLERANCE[field]

    def written(group: list[Segment]) -> str:
        lines = "\n".join(f"{n}. {s.name} ({value(s, field):g})" for n, s in enumerate(group, 1))
        return head.format(names=", ".join(s.name for s in group), lines=lines)

    assert check_claims(written(order), TASK, profile) == []
    shuffled = data.draw(st.permutations(named))
    sign = 1 if highest else -1
    in_order = all(sign * (value(a, field) - value(b, field)) >= -tol
                   for a, b in itertools.pairwise(shuffled))  # fmt: skip
    findings = check_claims(written(list(shuffled)), TASK, profile)
    assert (findings == []) == in_order, findings
    if findings:
        assert findings[0].startswith("ranks ") and "the order is" in findings[0]


@settings(max_examples=150)
@given(profile=profiles(), data=st.data())
def test_the_answer_must_address_the_segment_the_task_asks_for(profile, data) -> None:
    field, words = data.draw(
        st.sampled_from([("mean_income", "the highest mean annual income"),
                         ("size", "the most customers"),
                         ("mean_spending", "the lowest mean spending score")])
    )  # fmt: skip
    task = f"Which segment has {words}? Suggest one offer for it."
    order = ranked(profile, field, "lowest" not in words)
    right = f"{order[0].name}: offer them early access to the new collection."
    assert check_claims(right, task, profile) == []
    other = data.draw(st.sampled_from(order[1:]))
    assume(abs(value(other, field) - value(order[0], field)) > TOLERANCE[field])
    (finding,) = check_claims(right.replace(order[0].name, other.name), task, profile)
    assert finding.startswith(f"addresses {other.name}") and order[0].name in finding
    # Loose wording is not read as a name (silent); no segment at all is a finding.
    assert check_claims("Offer the high-income shoppers early access.", task, profile) == []
    assert check_claims("Offer early access.", task, profile) == [
        "names no segment; the task asks which"
    ]
    assert check_claims("Segment 1: offer early access.", task, profile) == []  # a label
    named = data.draw(st.sampled_from(profile))
    asked = f'Propose a loyalty offer for the "{named.name}" segment.'
    assert check_claims(f"Give {named.name} a free gift.", asked, profile) == []
    for another in (s for s in profile if s != named):
        (finding,) = check_claims(f"Give {another.name} a free gift.", asked, profile)
        assert "the task is about" in finding and named.name in finding


@settings(max_examples=100)
@given(profile=profiles(), data=st.data())
def test_all_the_segments_a_task_asks_about_are_covered(profile, data) -> None:
    k = len(profile)
    task = f"Draft a brief explaining what the {COUNT_WORDS[k - 1]} customer segments mean."
    named = data.draw(st.lists(st.sampled_from(profile), min_size=1, unique=True))
    answer = " ".join(f"{s.name} is one kind of shopper." for s in named)
    findings = check_claims(answer, task, profile)
    assert (findings == []) == (len(named) == k), findings
    if findings:
        assert findings[0].startswith(f"covers {len(named)} of the {k} segments")


def test_the_customer_a_task_describes_falls_in_the_nearest_segment() -> None:
    profile = conversation(13)["profile"]
    task = conversation(13)["task"]  # earns 85k$, spending score 20
    assert check_claims("The high income · low spending segment.", task, profile) == []
    (finding,) = check_claims("The high income · high spending segment.", task, profile)
    assert "nearest: high income · low spending" in finding


@pytest.mark.parametrize(
    "sentence",
    [
        "It is not true that {a} has the highest mean annual income.",
        "Which segment has the highest mean annual income, {a}?",
        "{a} is one of the segments with the highest mean annual income.",
        "If {a} had the highest mean annual income, we would upsell.",
        "{a} has the highest mean annual income among the low spenders.",
        "Most customers in {a} like the app.",
        "{b} and {a} matter. It has the highest mean annual income.",
        "Give {a} the largest share of the budget.",
        "{a} is the top segment for this launch.",
        "{a} has the highest mean annual income of the low-income segments.",
    ],
)
def test_a_sentence_the_check_cannot_read_stays_silent(sentence) -> None:
    profile = conversation(11)["profile"]
    lowest, highest = (
        ranked(profile, "mean_income", False)[0],
        ranked(profile, "mean_income", True)[0],
    )
    assert check_claims(sentence.format(a=lowest.name, b=highest.name), TASK, profile) == []


# --- counts and parts the task asks for (limits) -------------------------------------------------

SUBJECTS = [
    "Fresh styles, kind prices",
    "Your new favourite, for less",
    "Style that fits the budget",
    "New in: smart buys",
    "Looks you love, prices you like",
]


@settings(max_examples=150)
@given(n=st.integers(1, 5), m=st.integers(1, 5), data=st.data())
def test_too_few_lines_sentences_or_listed_items_break_the_ask(n, m, data) -> None:
    word = COUNT_WORDS[n - 1]
    kind = data.draw(st.sampled_from(["lines", "sentences", "items"]))
    form = "{t}"
    if kind == "lines":
        task = f"Write {word} email subject line{'s' * (n > 1)} for the launch."
        form = data.draw(st.sampled_from(["{t}", '"{t}"', "{i}. {t}", "- {t}"]))
        answer = "\n".join(form.format(t=t, i=i) for i, t in enumerate(SUBJECTS[:m], 1))
    elif kind == "sentences":
        task = f"Explain the segments in {word} sentence{'s' * (n > 1)}."
        answer = " ".join(f"{t}." for t in SUBJECTS[:m])
    else:
        assume(n > 1 and m > 1)
        task = f"Suggest {word} metrics to track the promotion."
        answer = "\n".join(f"- {t}" for t in SUBJECTS[:m])
    check = check_limits(answer, task)
    numbered_past = form.startswith("{i}.") and m > n  # "3." of two: too many
    too_many = kind == "sentences" and m > n  # sentences are counted in prose too
    assert check.passed == (m >= n and not numbered_past and not too_many), (task, answer, check)
    if m < n:
        assert check.broken == [f"gives {m} {kind.removesuffix('s')}(s) (task: {check.limits[0]})"]


def test_items_in_prose_are_not_counted_and_numbered_past_the_count_are() -> None:
    task = "Suggest three metrics to track the promotion."
    assert check_limits("Track the visits and the basket size.", task).passed  # prose: silent
    listed = "1. Visits\n2. Basket size\n3. Repeat rate\n4. Returns"
    assert check_limits(listed, task).broken == ["numbered up to 4 (task: Suggest three metrics)"]
    assert task_asks("Write one sentence per segment.") == []


@pytest.mark.parametrize(
    ("task", "good", "bad"),
    [
        ("Suggest one offer for them.", "A free personal-shopper session.", "The high spenders."),
        ("What should we offer them?", "Early access to the sale.", "They are a segment."),
        ("How many customers are in it?", "There are 34 customers.", "Quite a few."),
        ("Which two segments get the flyer, and why?", "A and B: they buy most.", "A and B"),
    ],
)
def test_a_part_the_task_asks_for_must_be_there(task, good, bad) -> None:
    assert check_limits(good, task).passed
    assert not check_limits(bad, task).passed


# --- the agents' own conversations and the calibration set ---------------------------------------


def conversation(index: int) -> dict:
    record = jsonl.read(ROOT / "data" / "conversations.jsonl").values[index]
    grounding = grounded_in(record)
    assert grounding is not None
    return {**record, "profile": grounding.segments}


# Issue #33's Why: the finals that are wrong, and what the checks say about each.
WRONG_FINALS = {
    1: ("limits", "gives 1 line(s) (task: Write three email subject lines)"),
    2: ("claims", "have the highest mean spending score; they are high income · high spending"),
    11: ("claims", "the task asks for the highest mean income: high income · high spending"),
    12: ("claims", "covers 2 of the 5 segments the task asks about"),
    8: ("limits", "gives 1 item(s) (task: Suggest three metrics)"),  # "The average income · …"
    13: ("claims", "names no segment; the task asks which"),
    # Issue #34's Why: "Drafts restate the task ("Propose a loyalty-programme offer for …").
    0: ("limits", "opens with the task restated"),
    # The final "To keep" (cut after a word a sentence can end on): nothing concrete.
    7: ("limits", "vague: no figure, time, segment"),
}


def test_the_wrong_committed_finals_fail_with_the_right_reason() -> None:
    for index, (check, expected) in WRONG_FINALS.items():
        c = conversation(index)
        if check == "claims":
            found = check_answer(c["final"], c["task"], c["profile"])
        else:
            found = check_limits(c["final"], c["task"])
        assert not found.passed and expected in found.reason(), (index, found.reason())
    eleven = conversation(11)
    assert "no offer" in check_limits(eleven["final"], eleven["task"]).reason()


def test_no_false_alarm_on_the_committed_conversations_good_answers() -> None:
    for index in range(len(jsonl.read(ROOT / "data" / "conversations.jsonl").values)):
        c = conversation(index)
        if index in WRONG_FINALS:
            continue
        found = check_answer(c["final"], c["task"], c["profile"])
        assert found.passed, (index, found.reason())
        # The SMS over 160 characters was already a broken limit; nothing else is.
        broken = check_limits(c["final"], c["task"]).broken
        assert all("characters" in b for b in broken), (index, broken)


# Right answers written as the agents write: lists, bold, quotes, comparisons, rankings.
WRITTEN_RIGHT = [
    (case["task"], case["answer"])
    for case in yaml.safe_load((ROOT / "tests/data/claims_right_answers.yaml").read_text())
]


@pytest.mark.parametrize(("task", "answer"), WRITTEN_RIGHT)
def test_no_false_alarm_on_right_answers_in_the_agents_styles(task, answer) -> None:
    profile = conversation(0)["profile"]
    found = check_answer(answer, task, profile)
    assert found.passed, found.reason()
    assert check_limits(answer, task).passed, check_limits(answer, task).reason()


def test_no_false_alarm_on_the_calibration_sets_good_answers() -> None:
    calibration = yaml.safe_load((ROOT / "eval" / "calibration.yaml").read_text())
    profile = msgspec.convert(calibration["profile"]["segments"], list[Segment])
    caught = 0
    for section in ("helpfulness", "grounding", "improvement"):
        for pair in calibration[section]:
            assert check_claims(pair["good"], pair["task"], profile) == [], pair["good"]
            assert check_limits(pair["good"], pair["task"]).passed, pair["good"]
            bad = check_claims(pair["bad"], pair["task"], profile)
            caught += bool(bad) or not check_limits(pair["bad"], pair["task"]).passed
    assert caught >= 15  # and they catch bad ones (17 when written)
