"""What a task asks the answer to give, checked with no judge: how many items ("three email
subject lines", "two sentences", "three metrics") and that each asked part is there ("suggest
one offer" → an offer; "how many customers" → a number; "and why?" → a reason).

Counting, generous so a correct answer is never failed: lines-like items (subject lines,
headlines, slogans) are the most of the answer's non-empty lines, list items, inline numbers
("1. … 2. …") and quoted strings; sentences are split at . ! ? and line ends; other items
(metrics, ideas, tips) are counted only in a list (2+ bulleted or numbered lines, or inline
numbers), never in prose, except a single clause with nothing that could join items (no comma,
"and", "or", second sentence): one item. Too few is a finding; too many only when the answer
numbers its items past the count ("4." of three), or gives more sentences than asked (sentences
are counted in prose: "a two-sentence summary" in six). Not read: counts per item ("one
sentence per segment") and counts of segments (custseg.evaluation.claims checks those against
the profile). A task that forbids discounts ("without discounting", "no discounts") is broken
by an answer offering one not negated in its clause ("20% off"; not "perks, not discounts"),
and a final offering one its review rules out ignores the review.
"How often" asks for a frequency ("quarterly"; not "regularly"); a count of items is not
given by an open list ("… and any other relevant metrics"). A task asking what to do with no
count or part to give needs something concrete (`vague`); a task asking for steps in order is
broken by a closing step (follow up, report) before an opening one (listen, read)
(`out_of_sequence`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from custseg.evaluation.grounding import _LEVEL_WORDING, COUNT_WORDS, count_value

_N = rf"(?P<n>\d{{1,2}}|{'|'.join(COUNT_WORDS)})"
_VERB = (
    r"(?:write|suggest|give|list|propose|draft|name|provide|outline|recommend|share|create|"
    r"craft|come\s+up\s+with|send)"
)
_COUNT_ASK = (
    re.compile(
        rf"\b{_VERB}\s+(?:me\s+|us\s+)?(?:exactly\s+|only\s+)?{_N}\s+"
        r"(?P<what>[^\W\d_][\w-]*(?:\s+[^\W\d_][\w-]*){0,2})",
        re.IGNORECASE,
    ),
    re.compile(
        rf"\bin\s+(?:exactly\s+)?{_N}\s+(?P<what>sentences?|lines?|bullets?|"
        r"bullet\s+points?)\b(?!\s+(?:per|each|for\s+each)\b)",
        re.IGNORECASE,
    ),
    # "a two-sentence summary": the whole answer is that many sentences.
    re.compile(rf"\b{_N}-(?P<what>sentence)\b", re.IGNORECASE),
)
# Not a count of the answer's items: "one sentence per segment", "two lines for each offer".
_PER_ITEM = re.compile(r"\s+(?:per|each|for\s+each|for\s+every|a|an|every)\b", re.I)
_LINES = re.compile(r"\b(?:lines?|headlines?|taglines?|slogans?|titles?|tweets?)$", re.I)
_SENTENCES = re.compile(r"^sentences?$", re.IGNORECASE)
# Counted elsewhere, or not items: segments (claims), words/characters/paragraphs (limits).
_NOT_ITEMS = re.compile(
    r"(?:segments?|clusters?|groups?|words?|char(?:acter)?s?|paragraphs?|times?|days?|weeks?|"
    r"months?|years?|customers?|percent|k)$",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"^[ \t]{0,3}(?:[-*•]|\d{1,2}[.)])[ \t]+\S", re.MULTILINE)
_INLINE_NUMBER = re.compile(r"(?:^|\s)(?P<n>\d{1,2})[.)]\s+(?=\S)")
_QUOTED = re.compile(r"(?<!\w)[\"“][^\"“”\n]{3,}[\"”]")
# What joins items in prose: a comma, a semicolon, a colon, a line, "and", "or", "+", "&", "vs".
_JOINS = re.compile(r"[,;:\n+&/]|\b(?:and|or|plus|then|versus|vs)\b|[.!?]\s+\S", re.IGNORECASE)
# Not after an abbreviation ("e.g. free alterations"): sentences are counted in prose.
_SENTENCE_END = re.compile(
    r"(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)(?<!\bapprox)(?<!\bMrs)(?<!\bMr)(?<!\bDr)(?<!\bSt)"
    r"[.!?]+(?=\s|$)",
    re.IGNORECASE,
)
# Parts a task asks for and words any answer giving them has.
PARTS = (
    (
        "an offer",
        re.compile(
            rf"\b(?:{_VERB}|make|design)\s+(?:(?:one|an?|a\s+single|exactly\s+one|some)\s+)?"
            r"(?:[\w-]+\s+){0,2}?offers?\b|\bwhat\s+(?:should|could|can|would)\s+we\s+offer\b",
            re.IGNORECASE,
        ),
        re.compile(
            r"offer|discount|%|percent|voucher|coupon|reward|free|perk|deal|access|program|"
            r"invit|bundle|gift|points|loyalty|member|trial|upgrade|cashback|cash\s+back|event|"
            r"evening|preview|sale|promot|promo|subscription|service|package|bonus|credit|"
            r"exclusive|premium|luxury|product|personal|tier|vip|early|delivery|shipping",
            re.IGNORECASE,
        ),
    ),
    (
        "a number",
        re.compile(
            r"\bhow\s+many\b|\bwhat\s+(?:share|percentage|proportion|is\s+(?:their|its|the)\s+"
            r"(?:mean|average))\b",
            re.IGNORECASE,
        ),
        re.compile(r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|half)\b", re.I),
    ),
    (
        "a frequency",
        re.compile(r"\bhow\s+often\b", re.IGNORECASE),
        # "regularly", "from time to time", "when needed" say no frequency.
        re.compile(
            r"\b(?:daily|weekly|fortnightly|monthly|quarterly|yearly|annually|hourly|every|once|"
            r"twice|times|per\s+(?:day|week|month|quarter|season|year)|a\s+(?:day|week|month|"
            r"quarter|season|year))\b",
            re.IGNORECASE,
        ),
    ),
    (
        "a reason",
        re.compile(r"\b(?:and|explain|say|tell\s+us)\s+why\b", re.IGNORECASE),
        # Generous: any linking word a reason is given with (only a bare answer lacks one).
        re.compile(
            r"\b(?:because|since|as|so|due|given|thanks|which|that|who|indicat\w*|reasons?|why|"
            r"means?|shows?|helps?|to|for|with)\b|[:–—]",
            re.IGNORECASE,
        ),
    ),
)


def _plural(word: str) -> bool:
    return word.lower().endswith("s") and not word.lower().endswith("ss")


@dataclass(frozen=True)
class Ask:
    what: str  # "items", "lines", "sentences" or a part ("an offer")
    n: int  # how many (1 for a part)
    written: str  # as the task states it


def _count_ask(match: re.Match) -> Ask | None:
    """The count a `_COUNT_ASK` match asks for, if it is a count of items."""
    n, words = count_value(match["n"]), match["what"].split()
    # The thing counted: the first plural word ("three email subject lines"); of one, only a
    # line or a sentence ("one subject line"), anything else is a part (PARTS).
    if n > 1:
        at = next((i for i, w in enumerate(words) if _plural(w) or _SENTENCES.match(w)), None)
    else:
        at = next((i for i, w in enumerate(words) if _LINES.search(w) or _SENTENCES.match(w)), None)
    if at is None or n > 12 or _NOT_ITEMS.search(words[at]) or (n == 1 and _plural(words[at])):
        return None
    noun = " ".join(words[: at + 1])
    noun_end = match.start("what") + list(re.finditer(r"\S+", match["what"]))[at].end()
    if _PER_ITEM.match(match.string, noun_end):
        return None
    if _LINES.search(noun):
        kind = "lines"
    elif _SENTENCES.match(words[at]):
        kind = "sentences"
    elif n > 1:
        kind = "items"
    else:
        return None  # "one offer": a part (PARTS), not a count
    said = match.group(0)[: match.start("what") - match.start()] + noun
    return Ask(kind, n, " ".join(said.split()))


def task_asks(task: str) -> list[Ask]:
    """What `task` asks the answer to give: counts of items and parts."""
    asks = []
    for pattern in _COUNT_ASK:
        for match in pattern.finditer(task):
            if (ask := _count_ask(match)) is not None:
                asks.append(ask)
    for what, asked, _ in PARTS:
        if found := asked.search(task):
            asks.append(Ask(what, 1, " ".join(found.group(0).split())))
    return asks


def counted(answer: str, kind: str) -> tuple[int, int] | None:
    """(at most, at least) how many `kind` the answer gives: the generous and the strict
    count; None when it cannot be counted (items in prose)."""
    text = answer.strip()
    lines = [line for line in text.splitlines() if line.strip()]
    listed = len(_LIST_ITEM.findall(text))
    inline = [int(m["n"]) for m in _INLINE_NUMBER.finditer(text)]
    numbered = len(inline) if inline[:2] == [1, 2] else 0
    strict = max(inline) if numbered else 0
    if kind == "sentences":
        pieces = [p for line in lines for p in _SENTENCE_END.split(line) if p.strip()]
        return len(pieces), strict
    if kind == "lines":
        return max(len(lines), listed, numbered, len(_QUOTED.findall(text))), strict
    if max(listed, numbered) < 2:
        # Prose is not counted, except one clause with nothing that joins items: one item.
        return (1, 0) if not _JOINS.search(text) else None
    return max(listed, numbered, len(lines)), strict


# A list left open ("and any other relevant metrics", "etc."): not the number of items asked.
_OPEN_LIST = re.compile(
    r"\b(?:and|or)\s+(?:any|all|many|some)\s+other\b|\betc\b|\band\s+so\s+on\b|"
    r"\band\s+the\s+like\b|\bor\s+similar\b|\band\s+whatever\s+else\b",
    re.IGNORECASE,
)


def missing(answer: str, ask: Ask) -> str | None:
    """What the answer lacks or overdoes of `ask`, as one line (None when it keeps it)."""
    for what, _, gives in PARTS:
        if ask.what == what:
            return None if gives.search(answer) else f"no {what.split()[-1]}"
    if ask.what == "items" and (left_open := _OPEN_LIST.search(answer)):
        return f'an open list ("{left_open.group(0)}"), not {ask.n} items'
    found = counted(answer, ask.what)
    if found is None:
        return None
    most, least = found
    if most < ask.n:
        return f"gives {most} {ask.what.removesuffix('s')}(s)"
    if ask.what == "sentences" and most > ask.n:  # sentences are counted in prose too
        return f"gives {most} sentences"
    if least > ask.n:
        return f"numbered up to {least}"
    return None


# A review that asks for something added, in the imperative at the start of a sentence or
# clause ("Add the date", "Too generic. Mention …", "Weight it, and give …", ": use …"), or
# as "could be improved by adding …".
_ASKS_MORE = re.compile(
    r"(?:^|[.:;!?]\s+|^\s*(?:\d{1,2}[.)]|[-*•])\s*|,?\s+and\s+)"
    r"(?:add|give|name|say|mention|include|make|state|use|list|explain|back)\b"
    r"|\b(?:improved|better)\s+by\s+(?:adding|providing|including|giving|mentioning|naming|"
    r"stating|listing|specifying)\b",
    re.IGNORECASE | re.MULTILINE,
)
_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|[^\W\d_]+")
_FUNCTION = """about also been being could each every from have here into just more most other
should some than that their them then there these they this very were what when where which
will with would your"""
_FUNCTION_WORDS = frozenset(_FUNCTION.split())
REVIEW_NEW = 2  # new words or figures a final that applies a review asking for more has


def content_tokens(text: str) -> list[str]:
    """The text's figures and its words of four letters or more, but function words, casefolded."""
    tokens = (t.casefold() for t in _TOKEN.findall(text))
    return [t for t in tokens if (t[0].isdigit() or len(t) >= 4) and t not in _FUNCTION_WORDS]


def new_content(final: str, before: str) -> list[str]:
    """The final's figures, and words of four letters or more, that `before` does not have."""
    seen = {t.casefold() for t in _TOKEN.findall(before)}
    return [t for t in content_tokens(final) if t not in seen]


def ignored_review(review: str, draft: str, final: str, task: str) -> str:
    """'' unless the final offers what the review rules out ("does not respond to discounts":
    "20% off"), or the review asks for something added and the final adds fewer than
    REVIEW_NEW words or figures that neither the draft nor the task has (then one line)."""
    if (offered := forbidden(final, review)) is not None:
        rule, offer = offered
        return f'ignores the review: the final offers {offer}, which it rules out ("{rule}")'
    if not _ASKS_MORE.search(review):
        return ""
    new = new_content(final, f"{draft}\n{task}")
    if len(new) >= REVIEW_NEW:
        return ""
    return (
        f"ignores the review: it asks for more, and the final adds {len(new)} word(s) or "
        "figure(s) the draft and the task do not have"
    )


# What a task or a review forbids: "without discounting", "no discounts", "not a discount",
# "does not respond to discounts", "avoid discounts".
_FORBIDS_DISCOUNT = re.compile(
    r"\b(?:without|no|not|never|avoid(?:ing)?)\s+(?:\w+\s+){0,2}?discount(?:s|ing)?\b",
    re.IGNORECASE,
)
_DISCOUNT = re.compile(
    r"\b\d+(?:[.,]\d+)?\s?%\s+off\b|\bdiscount(?:s|ed|ing)?\b|\bprice\s+(?:cuts?|reductions?)\b",
    re.IGNORECASE,
)
# A negation earlier in the same clause ("perks, not discounts", "no price cut").
_NEGATED = re.compile(
    r"\b(?:no|not|without|never|nor|instead\s+of|rather\s+than|avoid\w*)\b[^.;:!?\n]{0,40}$",
    re.IGNORECASE,
)


def forbidden(answer: str, task: str) -> tuple[str, str] | None:
    """(the task's rule as written, what the answer offers) if the task forbids discounts and
    the answer offers one (not negated in its clause); None otherwise."""
    if not (rule := _FORBIDS_DISCOUNT.search(task)):
        return None
    for offer in _DISCOUNT.finditer(answer):
        if not _NEGATED.search(answer[: offer.start()]):
            return " ".join(rule.group(0).split()), " ".join(offer.group(0).split())
    return None


RESTATED_MIN = 6  # distinct words of a first sentence made only of the task's: a restatement


def restated(answer: str, task: str) -> str | None:
    """One line if the answer opens with the task restated: a first sentence of RESTATED_MIN
    or more distinct words (four letters or more) and figures, every one of them the task's."""
    first = re.split(r"(?<=[.!?])\s+|\n", answer.strip(), maxsplit=1)[0]
    words = content_tokens(first)
    if len(set(words)) < RESTATED_MIN or new_content(first, task):
        return None
    return f'opens with the task restated ("{" ".join(first.split()[:8])} …")'


# A task that asks what to do ("suggest a campaign", "how should we …", "list the risks and how
# to avoid them"), not for a text to send: its answer needs something concrete.
_ASKS_ACTION = re.compile(
    r"\b(?:suggest|propose|outline|recommend|design)\b|\bhow\s+(?:often|should|could|can|would|"
    r"do|to|we)\b|\bwhat\s+(?:should|could|would)\b",
    re.IGNORECASE,
)
# Concrete: a figure, an amount, a count or a span of time.
_FIGURE_WORD = re.compile(
    rf"[\d$€£%]|\b(?:{'|'.join(COUNT_WORDS)}|half|third|quarter|dozen|once|twice|daily|weekly|"
    r"fortnightly|monthly|quarterly|yearly|annual(?:ly)?|(?:every|each|per|a|next|last)\s+"
    r"(?:day|week|weekend|month|quarter|season|year))\b",
    re.IGNORECASE,
)
# Three or more things listed: "A, B and C" or "A; B; C" in a sentence, or two list lines.
_LISTED = re.compile(r"[,;][^.!?\n]*?(?:[,;]|\b(?:and|or)\b)")


def vague(answer: str, task: str) -> str | None:
    """One line if a task asking what to do is answered with nothing concrete: no figure,
    amount, count or span of time, no segment named (even loosely), nothing quoted, no list of
    three. A task with a count or a part to give (`task_asks`: "three metrics", "one offer") is
    held to that instead: "a free personal-shopper session" is a concrete offer with none."""
    if not _ASKS_ACTION.search(task) or task_asks(task):
        return None
    # A segment named even loosely ("both high-income segments") is something concrete.
    if _FIGURE_WORD.search(answer) or _LEVEL_WORDING.search(answer) or _QUOTED.search(answer):
        return None
    if _LISTED.search(answer) or len(_LIST_ITEM.findall(answer)) >= 2:
        return None
    return "vague: no figure, time, segment, quoted item or list of three"


# A task that asks for steps in order ("List, in order, the three things to do first").
_ASKS_SEQUENCE = re.compile(
    r"\bin\s+(?:the\s+right\s+|that\s+|this\s+)?(?:order|sequence)\b|\bstep[- ]by[- ]step\b",
    re.IGNORECASE,
)
# Steps that open a sequence (hear or read first) and steps that can only close one.
_OPENS = r"listen|hear|apologi[sz]e|acknowledge|read|define|collect|gather|identify"
_CLOSES = r"follow[- ]up|follow\s+up|report|evaluate|measure"
_STEP_KIND = re.compile(rf"\b(?:(?P<opens>{_OPENS})|(?P<closes>{_CLOSES}))\b", re.IGNORECASE)
# Where a step ends: a number ("2)"), "then", a semicolon or a line.
_STEP_BREAK = re.compile(r"(?:^|\s)\d{1,2}[.)]\s|,?\s+then\b|[;\n]", re.IGNORECASE)


def out_of_sequence(answer: str, task: str) -> str | None:
    """One line if a task asking for steps in order is answered with a step that can only
    close a sequence ("follow up", "report") before one that opens it ("listen", "read")."""
    if not _ASKS_SEQUENCE.search(task):
        return None
    kinds = [(m.lastgroup, m.group(0)) for step in _STEP_BREAK.split(answer)
             if (m := _STEP_KIND.search(step))]  # fmt: skip
    closing = next((i for i, (kind, _) in enumerate(kinds) if kind == "closes"), None)
    opening = [i for i, (kind, _) in enumerate(kinds) if kind == "opens"]
    if closing is None or not opening or opening[-1] < closing:
        return None
    return f'steps out of order: "{kinds[closing][1]}" before "{kinds[opening[-1]][1]}"'
