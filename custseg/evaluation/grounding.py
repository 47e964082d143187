"""The deterministic half of the grounding metric: which segments and figures an answer cites,
checked against the segments its model has (the profile the agents were given).

Segment names are read as "<level> income · <level> spending" in any of the ways people write
them ("high-income, low-spending customers", "high income and low spending"); a name is known
only with the profile's own level words, so "medium income · moderate spending" is invented
when the profile says "average". Other labels presented as segments are invented too when the
profile has no such segment: "segment 7" or "cluster 9" whose number is neither a segment id
nor a place in the list the agents were shown (1-based), a quoted label right before or
after the word segment or cluster ("the 'Budget Hunters' segment") that is not a profile name,
and a label naming people that heads a list item beside two or more items headed by segment
names ("Premium loyalists 15,000 $; low income · low spending 5,000 $; ..."). A count of
segments above the model's ("our six segments" of five) is a wrong figure.

Figures are the four a profile holds, where the answer states them as such: customers ("38
customers"), shares of customers ("19% of all customers", "38 customers (19%)"), mean income
("a mean annual income of 49 k$", "the highest mean annual income, 72 k$") and mean spending
score ("an average spending score of 83", "mean spending score: 17").
A figure stated after a segment name in the same clause (sentence, line, or part between
semicolons) is that segment's: it must match the segment named nearest before it, up to
rounding. A figure with no name before it, or stated for several segments at once ("A and B
have ...", "... together make up ..."), or for all customers ("out of 200 customers"), matches
if some segment has it, or all customers together, or (customers and shares) some 2+ segments
together. Other numbers (a discount, a budget split, a customer's income, a threshold) are not
claims about segments, nor are numbers the task itself gives.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from custseg.conversation import Segment

LEVELS = (
    r"(?:very\s+)?(?:low(?:er|est)?|high(?:er|est)?|average|medium|middle|mid|moderate|upper|"
    r"below[- ]average|above[- ]average)"
)
_NAME = re.compile(
    rf"\b(?P<income>{LEVELS})[- ]income\b[\s,·•/&+–-]*(?:and\s+|with\s+)?"
    rf"(?P<spending>{LEVELS})[- ]spend(?:ing|ers?)?\b",
    re.IGNORECASE,
)
# Half a name ("the 'high spending' segment"): loose wording for the model's segments, not a label.
_LEVEL_WORDING = re.compile(rf"\b{LEVELS}[- ](?:income|spend(?:ing|ers?)?)\b", re.IGNORECASE)
# "Segment 7", "cluster #9" on one line: not "each segment 2 emails", "the segment 10,000 $" or
# a plan's "... this segment\n5. Verify".
_NUMBERED = re.compile(
    r"(?<!\beach\s)(?<!\bevery\s)(?<!\bper\s)(?<!\ba\s)(?<!\bone\s)(?<!\bany\s)"
    r"\b(?:segment|cluster)[ \t]+(?:#[ \t]*|no\.[ \t]*|number[ \t]+)?(?P<n>\d{1,3})\b"
    r"(?![.,]?\d|\s*(?:[%$€£]|k\b|x\b|(?:customers|clients|shoppers|people|percent|points?|"
    r"dollars|euros|times)\b))",
    re.IGNORECASE,
)
# A quoted label: quote marks that are not apostrophes (no letter outside them).
_LABEL = r"(?<!\w)[\"“'‘](?P<label>[^\"“”'‘’\n]{2,60}?)[\"”'’](?!\w)"
_QUOTED = (
    re.compile(rf"{_LABEL}[ \t]+(?:segment|cluster)s?\b", re.IGNORECASE),
    re.compile(
        rf"\b(?:segment|cluster)s?[ \t]+(?:called[ \t]+|named[ \t]+)?{_LABEL}", re.IGNORECASE
    ),
)
_NUMBER = r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)"
# Between a mean and its value: "of", "is", "about", or a comma or colon ("income, 72 k$").
_ABOUT = r"(?:\s*[,:=]|\s+(?:of|is|was|at|around|about|roughly|approximately|~))*\s*"
_FIGURES = {
    "size": re.compile(rf"{_NUMBER}\s+(?:customers|clients|shoppers|people)\b", re.IGNORECASE),
    # A share of customers, not any percentage (a discount, a budget split).
    "share": re.compile(
        rf"{_NUMBER}\s?(?:%|percent\b)(?=\s+of\s+(?:all\s+|our\s+|the\s+)*(?:customers|"
        rf"clients|shoppers|the\s+customer\s+base|customer\s+base))"
        # "of all" / "of the total" with nothing after it in the clause ("…, 19% of all.").
        rf"|{_NUMBER}\s?(?:%|percent\b)(?=\s+of\s+(?:the\s+)?(?:all|total)\s*(?:[.,;:)!?]|$))"
        rf"|(?<=customers\s\()\s*{_NUMBER}\s?%",
        re.IGNORECASE,
    ),
    # A segment's mean, not any income or score (a customer's, a threshold).
    "mean_income": re.compile(
        rf"(?:mean|average)\s+(?:annual\s+)?income{_ABOUT}(?:\$\s?{_NUMBER}\s?k\b|"
        rf"{_NUMBER}\s?k\s?(?:\$|USD\b|dollars\b))",
        re.IGNORECASE,
    ),
    "mean_spending": re.compile(
        rf"(?:mean|average)\s+spending\s+score{_ABOUT}{_NUMBER}", re.IGNORECASE
    ),
}
# How far a cited figure may be from the profile's and still match (rounding in the answer).
TOLERANCE = {"size": 0.5, "share": 1.0, "mean_income": 1.5, "mean_spending": 1.5}
# Where a clause ends: a figure is attributed to a name in its own clause only.
_CLAUSE_END = re.compile(r"[.!?](?=[\s\"'”’)\]*]|$)|[;\n]")
# A figure for several segments at once or for all customers, not the nearest name's.
_TOGETHER = re.compile(
    r"\b(?:together|combined|altogether|jointly|in\s+total|in\s+all|between\s+them|both|sum)\b",
    re.IGNORECASE,
)
_ALL_BEFORE = re.compile(
    r"\b(?:all|total|remaining|other|overall|whole|out\s+of)(?:\s+(?:of|the|our|its))*\s+$",
    re.IGNORECASE,
)
# "six segments", "7 customer clusters": a count of segments (a claim when above the model's).
COUNT_WORDS = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve",
)  # fmt: skip
_SEGMENT_COUNT = re.compile(
    rf"\b(?P<n>\d{{1,2}}|{'|'.join(COUNT_WORDS)})\s+(?:(?:customer|distinct|different|separate"
    r"|main|kmeans|k-means)\s+)?(?:segments|clusters)\b",
    re.IGNORECASE,
)
# A list item (between semicolons or on its own line, after any bullet or number) that starts
# with a label and then a figure: "Premium loyalists 15,000 $ (...)", "- bargain hunters: 12%".
_ITEM_HEAD = re.compile(
    r"(?:^|[;\n])[ \t]*(?:[-*•]|\d{1,2}[.)])?[ \t]*"
    r"(?P<head>[^\W\d_][^;\n:(\d]{1,60}?)[ \t]*(?::|–|-|—)?[ \t]*[$€£]?\d",
)
# A label that names people, as segments do ("loyalists", "bargain hunters", "young families").
_PEOPLE_LABEL = re.compile(r"^(?:[^\W\d_]+[ \t]+){0,2}[^\W\d_]+s$")
# Between two names that are one list ("A and B have ..."): only joining words and marks.
_JOINED = re.compile(r"[\W_]*(?:\b(?:and|or|plus)\b)?[\W_]*(?:\bthe\b)?[\W_]*", re.IGNORECASE)
# All subsets of a profile this small; of larger ones, pairs, triples and all (still cheap).
ALL_SUBSETS_UP_TO = 10


def level_words(text: str) -> str:
    return " ".join(text.lower().replace("-", " ").split())


def segment_key(name: str) -> tuple[str, str] | None:
    """("high", "low") for "high income · low spending" (or any way of writing it)."""
    found = _NAME.search(name)
    return (level_words(found["income"]), level_words(found["spending"])) if found else None


class CitedName(NamedTuple):
    written: str
    key: tuple[str, str]
    start: int
    end: int


def name_spans(text: str) -> list[CitedName]:
    """Every segment name the text cites, where it cites it."""
    return [
        CitedName(
            " ".join(found.group(0).split()),
            (level_words(found["income"]), level_words(found["spending"])),
            found.start(),
            found.end(),
        )
        for found in _NAME.finditer(text)
    ]


def cited_names(spans: Sequence[CitedName]) -> list[CitedName]:
    """Each segment name of `name_spans`, once: its first citation."""
    first: dict[tuple[str, str], CitedName] = {}
    for name in spans:
        first.setdefault(name.key, name)
    return list(first.values())


def cited_labels(text: str, segments: Sequence[Segment]) -> list[tuple[str, bool]]:
    """Other labels the text presents as segments ("segment 7", "the 'Budget Hunters'
    segment"), once each, as written and whether the profile has them."""
    # The agents are shown a bulleted list, no ids: "segment 2" may be an id or a place in it.
    numbers = {s.id for s in segments} | set(range(1, len(segments) + 1))
    names = {" ".join(s.name.casefold().split()) for s in segments}
    found: dict[str, tuple[str, bool]] = {}
    for match in _NUMBERED.finditer(text):
        label = " ".join(match.group(0).split())
        found.setdefault(label.casefold(), (label, int(match["n"]) in numbers))
    for pattern in _QUOTED:
        for match in pattern.finditer(text):
            label = " ".join(match["label"].split())
            if not _LEVEL_WORDING.search(label):  # names in level words are read as names
                found.setdefault(label.casefold(), (label, label.casefold() in names))
    return list(found.values())


def count_value(written: str) -> int:
    """12 for "12" or "twelve"."""
    word = written.lower()
    return int(word) if word.isdecimal() else COUNT_WORDS.index(word) + 1


def segment_counts(text: str, given: str = "") -> list[tuple[str, int]]:
    """(as written, the number) of each count of segments the text states that `given` (the
    task) did not state."""

    def number(match: re.Match) -> int:
        return count_value(match["n"])

    stated = {number(m) for m in _SEGMENT_COUNT.finditer(given)}
    return [
        (" ".join(m.group(0).split()), number(m))
        for m in _SEGMENT_COUNT.finditer(text)
        if number(m) not in stated
    ]


def listed_labels(text: str, spans: Sequence[CitedName]) -> list[str]:
    """Labels heading list items beside items headed by segment names: in "A 15,000 $; B
    12,000 $; <a segment name> 10,000 $" with two or more items headed by names, A and B are
    presented as segments too. Only labels that name people (a plural last word)."""
    heads = [(m.start("head"), m["head"].strip(" \t-–—")) for m in _ITEM_HEAD.finditer(text)]
    starts = {name.start for name in spans}
    named = [head for at, head in heads if at in starts]
    if len(named) < 2:
        return []
    return [
        head
        for at, head in heads
        if at not in starts and not _NAME.search(head) and _PEOPLE_LABEL.match(head)
    ]


def _value(match: re.Match) -> float:
    return float(next(g for g in match.groups() if g).replace(",", ""))


class CitedFigure(NamedTuple):
    kind: str
    written: str
    value: float
    start: int


def cited_figures(text: str, given: str = "") -> list[CitedFigure]:
    """(kind, as written, value, where) of each figure the text cites that `given` (the task)
    did not already state."""
    stated = {
        (kind, _value(m)) for kind, pattern in _FIGURES.items() for m in pattern.finditer(given)
    }
    figures = []
    for kind, pattern in _FIGURES.items():
        for match in pattern.finditer(text):
            value = _value(match)
            if (kind, value) not in stated:
                figures.append(
                    CitedFigure(kind, " ".join(match.group(0).split()), value, match.start())
                )
    return figures


def attributed_to(text: str, at: int, names: Sequence[CitedName]) -> CitedName | None:
    """The name a figure at `at` is stated for: the nearest before it in its clause, unless the
    figure is for several segments or all customers (then None, as with no name)."""
    ends = [m.end() for m in _CLAUSE_END.finditer(text, 0, at)]
    start = ends[-1] if ends else 0
    before = [n for n in names if n.start >= start and n.end <= at]
    if not before or _TOGETHER.search(text, start, at) or _ALL_BEFORE.search(text[start:at]):
        return None
    if len(before) > 1 and _JOINED.fullmatch(text, before[-2].end, before[-1].start):
        return None
    return before[-1]


def _sums(values: Sequence[float]) -> list[float]:
    """Sums of 2+ of `values`: what several segments together can truthfully have."""
    subsets = range(2, len(values)) if len(values) <= ALL_SUBSETS_UP_TO else range(2, 4)
    sums = [sum(c) for r in subsets for c in itertools.combinations(values, r)]
    return [*sums, sum(values)] if len(values) > 1 else sums


def known_values(segments: Sequence[Segment]) -> dict[str, list[float]]:
    """Every value each kind of figure not stated for one segment can truthfully take: per
    segment, all together, and (customers, shares) some 2+ segments together."""
    sizes = [float(s.size) for s in segments if s.size is not None]
    shares = [100 * s.share for s in segments if s.share is not None]
    return {
        "size": [*sizes, *_sums(sizes)],
        "share": [*shares, *_sums(shares), 100.0],
        "mean_income": [s.mean_income for s in segments if s.mean_income is not None],
        "mean_spending": [s.mean_spending for s in segments if s.mean_spending is not None],
    }


def segment_value(segment: Segment, kind: str) -> float | None:
    """A segment's own value of a kind of figure, as the answer would state it."""
    value = getattr(segment, kind)
    return None if value is None else 100 * value if kind == "share" else float(value)


@dataclass(frozen=True)
class GroundingCheck:
    segments: list[str]  # cited, as written
    invented: list[str]  # cited but not the model's
    figures: list[str]
    wrong: list[str]  # figures the model does not have (or not the segment they are stated for)
    # Claims the profile contradicts and segments the task asks about that are missed
    # (custseg.evaluation.claims), one readable line each.
    claims: list[str] = field(default_factory=list)

    @property
    def cited(self) -> int:
        return len(self.segments) + len(self.figures)

    @property
    def score(self) -> float:
        """The share of cited names and figures that are the model's, each false claim counted
        as one more wrong item (1.0 when nothing is cited or claimed)."""
        bad = len(self.invented) + len(self.wrong) + len(self.claims)
        total = self.cited + len(self.claims)
        return 1.0 if not total else (total - bad) / total

    @property
    def passed(self) -> bool:
        return not self.invented and not self.wrong and not self.claims

    def reason(self) -> str:
        parts = (
            [f"cites {len(self.segments)} segment name(s) and {len(self.figures)} figure(s)"]
            if self.cited
            else ["cites no segment and no segment figure"]
        )
        if self.invented:
            parts.append("not the model's segments: " + "; ".join(self.invented))
        if self.wrong:
            parts.append("figures not the model's: " + "; ".join(self.wrong))
        parts += [f"claim: {claim}" for claim in self.claims]
        return ". ".join(parts)


def _shown(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def check_grounding(answer: str, task: str, segments: Sequence[Segment]) -> GroundingCheck:
    """Check `answer`'s segment names and figures against the model's `segments` (the
    claims too: `custseg.evaluation.claims.check_answer`)."""

    by_key: dict[tuple[str, str], Segment] = {}
    for segment in segments:
        if (key := segment_key(segment.name)) is not None:
            by_key.setdefault(key, segment)
    spans, labels = name_spans(answer), cited_labels(answer, segments)
    names, values = cited_names(spans), known_values(segments)
    figures, wrong = cited_figures(answer, task), []
    for figure in figures:
        name = attributed_to(answer, figure.start, spans)
        segment = by_key.get(name.key) if name else None
        own = segment_value(segment, figure.kind) if segment else None
        # Unnamed, or named but not the model's (flagged already) or without this figure.
        truths = values[figure.kind] if own is None else [own]
        if not any(abs(figure.value - v) <= TOLERANCE[figure.kind] for v in truths):
            said = (
                f" (said of {segment.name}: {_shown(own)})" if segment and own is not None else ""
            )
            wrong.append(figure.written + said)
    quoted = {label.casefold() for label, _ in labels}
    listed = [label for label in listed_labels(answer, spans) if label.casefold() not in quoted]
    too_many = [(written, n) for written, n in segment_counts(answer, task) if n > len(segments)]
    wrong += [f"{written} (the model has {len(segments)})" for written, _ in too_many]
    return GroundingCheck(
        segments=[name.written for name in names] + [label for label, _ in labels] + listed,
        invented=[name.written for name in names if name.key not in by_key]
        + [label for label, known in labels if not known]
        + listed,
        figures=[figure.written for figure in figures] + [written for written, _ in too_many],
        wrong=wrong,
    )
