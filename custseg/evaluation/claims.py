"""Claims an answer makes about segments, checked against the profile with no judge.

- Superlatives: "X has the highest mean annual income", "the segment with the most customers is
  X", "the two segments that spend the least are X and Y", "These segments have the highest
  spending scores" (of the names in the sentence before), "X is the second-largest segment".
  The segments stated must be the top (bottom) ones of that figure, as many as are named.
- Comparisons: "X has a higher mean income than Y", "X spends more than Y".
- The segment the task is about: the one it names ("... for the "high income · low spending"
  segment"), the one it asks for ("Which segment has the highest mean annual income?"), or the
  one a customer it describes falls in ("earns 85k$ a year and has a spending score of 20",
  when one segment's means are clearly the nearest). An answer that names segments must name it.
- How many segments the task asks for: "which two segments" (at least two named), "the five
  segments" / "all segments" (all of the model's, when it has that many).

Precision first: a sentence the checks cannot read stays silent. Not read: questions, negations
and hedges ("not the highest", "one of the highest", "if"), superlatives within a group ("the
highest income among the low spenders"), and a pronoun with no segment named before it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Sequence
from typing import NamedTuple

from custseg.conversation import Segment
from custseg.evaluation.grounding import (
    _CLAUSE_END,
    _LEVEL_WORDING,
    COUNT_WORDS,
    TOLERANCE,
    CitedName,
    GroundingCheck,
    check_grounding,
    count_value,
    name_spans,
    segment_key,
)

Key = tuple[str, str]
# A figure a claim ranks segments by: the profile's field and how it is said.
SAID = {"mean_income": "mean income", "mean_spending": "mean spending score", "size": "size"}
UNIT = {"mean_income": " k$", "mean_spending": "", "size": " customers"}
_N = rf"(?:\d{{1,2}}|{'|'.join(COUNT_WORDS)})"
_INCOME = r"(?:(?:mean|average)\s+)?(?:annual\s+)?(?:incomes?|earners?|earnings)"
_SPENDING = r"(?:(?:mean|average)\s+)?(?:spending(?:\s+scores?)?|spenders?|spend)"
_SIZE = r"(?:customers|clients|shoppers|share|(?:customer\s+)?(?:segments?|groups?|base))"
_HIGH = r"highest|largest|biggest|greatest|most|top"
_LOW = r"lowest|smallest|least|fewest"
_ATTR = rf"(?P<attr>{_INCOME}|{_SPENDING}|{_SIZE})"
_SUPERLATIVE = re.compile(
    rf"\bthe\s+(?:(?P<k>{_N})\s+)?(?:(?P<rank>second|third)[- ])?(?P<dir>{_HIGH}|{_LOW})[- ]{_ATTR}"
    rf"(?:\s+and\s+(?:the\s+)?(?:(?:{_HIGH}|{_LOW})\s+)?(?P<attr2>{_INCOME}|{_SPENDING}))?\b"
    rf"|\b(?P<verb>spends?|spending|earns?|earning)\s+(?:the\s+)?(?P<dir2>most|least)\b",
    re.IGNORECASE,
)
_COMPARATIVE = re.compile(
    r"\b(?:(?P<verb>spends?|earns?)\s+)?(?P<dir>higher|greater|larger|bigger|more|lower|"
    r"smaller|less|fewer)\b(?P<mid>[^.;\n]{0,40}?)\bthan\b",
    re.IGNORECASE,
)
# What makes a sentence unreadable as a plain claim: a hedge, a negation, a condition.
_HEDGE = re.compile(
    r"\b(?:not|no|never|one\s+of|among|if|whether|could|might|may|would|unless|likely|"
    r"probably|perhaps|assume|assuming|suppose)\b|n't\b",
    re.IGNORECASE,
)
# A superlative within a group, not over all segments ("the highest income among the ...").
_WITHIN = re.compile(
    r"^\s*(?:scores?\s+)?(?:among|of\s+the|within|in\s+(?:its|their|the|this|that)|except|"
    r"besides|other\s+than|apart\s+from|after|outside|for\s+(?:its|their|a|an))\b",
    re.IGNORECASE,
)
_PRONOUN = re.compile(r"\b(?:these|those|both|they|this\s+segment|the\s+two|it)\b", re.IGNORECASE)
# Parts of a sentence that make separate claims ("A ..., while B ...").
_CONTRAST = re.compile(r",?\s+(?:while|whereas|but)\b|,\s+and\s+(?=the\b)", re.IGNORECASE)
_TASK_ASKS = re.compile(rf"\bwhich\s+(?:(?P<n>{_N})\s+)?(?:customer\s+)?segments?\b", re.I)
_ALL_SEGMENTS = re.compile(
    rf"\b(?:(?:all|across|of|explaining|describe|covering)\s+)?the\s+(?P<n>{_N})\s+"
    r"(?:customer\s+)?segments\b|\ball\s+(?:the\s+|our\s+)?(?:customer\s+)?segments\b",
    re.IGNORECASE,
)
_CUSTOMER_INCOME = re.compile(r"\bearns?\s+\$?(?P<v>\d+(?:\.\d+)?)\s?k\b", re.IGNORECASE)
_CUSTOMER_SPENDING = re.compile(r"\bspending\s+score\s+(?:of\s+|is\s+)?(?P<v>\d+)\b", re.I)
_SIZE_WORDS = ("larger", "bigger", "smaller")
# A customer is placed in a segment only when its means are clearly the nearest.
CLEARLY_NEAREST = 0.6


def _field(attr: str) -> str:
    word = attr.lower()
    if re.search(r"incomes?|earn", word):
        return "mean_income"
    return "mean_spending" if "spend" in word else "size"


def _value(segment: Segment, field: str) -> float | None:
    value = getattr(segment, field)
    return None if value is None else float(value)


def _shown(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _named(segments: Sequence[Segment], field: str) -> str:
    return " and ".join(
        f"{s.name} ({_shown(v)}{UNIT[field]})"
        for s in segments
        if (v := _value(s, field)) is not None
    )


def ranked(segments: Sequence[Segment], field: str, highest: bool) -> list[Segment]:
    """The segments that have `field`, from the highest (or lowest) value."""
    having = [s for s in segments if _value(s, field) is not None]
    return sorted(having, key=lambda s: _value(s, field), reverse=highest)  # type: ignore[arg-type,return-value]


def in_top(
    segment: Segment, segments: Sequence[Segment], field: str, highest: bool, n: int
) -> bool:
    """Whether `segment` is among the `n` highest (lowest) by `field`, up to rounding (True
    when the profile does not say: nothing to check against)."""
    order, value = ranked(segments, field, highest), _value(segment, field)
    if value is None or n > len(order):
        return True
    bound = _value(order[n - 1], field)
    assert bound is not None
    tol = TOLERANCE[field]
    return value >= bound - tol if highest else value <= bound + tol


def holds(
    claimed: Sequence[Segment], segments: Sequence[Segment], field: str, highest: bool, skip: int
) -> bool:
    """Whether `claimed` are the top (bottom) ones by `field`, up to rounding: each is among
    as many as are claimed. With `skip` (one claimed, "the second-highest"): it has the value
    of place `skip` + 1, up to rounding."""
    order = ranked(segments, field, highest)
    if not skip:
        return all(in_top(s, segments, field, highest, len(claimed)) for s in claimed)
    value = _value(claimed[0], field)
    if value is None or skip >= len(order):
        return True
    place = _value(order[skip], field)
    assert place is not None
    return abs(value - place) <= TOLERANCE[field]


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence (and line, and part between semicolons)."""
    bounds, start = [], 0
    for match in _CLAUSE_END.finditer(text):
        bounds.append((start, match.end()))
        start = match.end()
    return [*bounds, (start, len(text))]


def _parts(text: str, start: int, end: int) -> list[tuple[int, int]]:
    cuts = [m.start() for m in _CONTRAST.finditer(text, start, end)]
    edges = [start, *cuts, end]
    return list(itertools.pairwise(edges))


def _superlative_findings(
    text: str, spans: Sequence[CitedName], by_key: dict[Key, Segment], segments: Sequence[Segment]
) -> list[str]:
    findings: list[str] = []
    previous: list[CitedName] = []
    for start, end in _sentences(text):
        sentence = text[start:end]
        in_sentence = [n for n in spans if n.start >= start and n.end <= end]
        readable = not sentence.rstrip().endswith("?") and not _HEDGE.search(sentence)
        for part_start, part_end in _parts(text, start, end) if readable else []:
            names = [n for n in in_sentence if n.start >= part_start and n.end <= part_end]
            phrases = list(_SUPERLATIVE.finditer(text, part_start, part_end))
            if len(phrases) > 1 and len({n.key for n in names}) > 1:
                continue  # which name each phrase is about: not read
            if not names and not in_sentence and _PRONOUN.search(text, part_start, part_end):
                names = previous
            for phrase in phrases:
                found = _claim_finding(text, phrase, names, by_key, segments)
                if found:
                    findings.append(found)
            findings += _comparison_findings(text, part_start, part_end, names, by_key)
        if in_sentence:
            previous = in_sentence
    return findings


def _claim_finding(
    text: str,
    phrase: re.Match,
    names: Sequence[CitedName],
    by_key: dict[Key, Segment],
    segments: Sequence[Segment],
) -> str | None:
    if _WITHIN.match(text, phrase.end()):
        return None
    keys = list(dict.fromkeys(n.key for n in names))
    if not keys or any(k not in by_key for k in keys):
        return None  # no subject, or one the grounding check flags already
    claimed = [by_key[k] for k in keys]
    if phrase["verb"]:
        fields, highest, skip = [_field(phrase["verb"])], phrase["dir2"].lower() == "most", 0
    else:
        fields = [_field(phrase["attr"])] + ([_field(phrase["attr2"])] if phrase["attr2"] else [])
        highest = re.fullmatch(_HIGH, phrase["dir"], re.IGNORECASE) is not None
        rank = (phrase["rank"] or "").lower()
        skip = {"second": 1, "third": 2}.get(rank, 0)
        if skip and len(claimed) > 1:
            return None
    for field in dict.fromkeys(fields):
        if not holds(claimed, segments, field, highest, skip):
            order = ranked(segments, field, highest)[skip : skip + len(claimed)]
            which = "highest" if highest else "lowest"
            place = {0: "", 1: "second-", 2: "third-"}[skip]
            return (
                f"says {_named(claimed, field)} {'have' if len(claimed) > 1 else 'has'} the "
                f"{place}{which} {SAID[field]}; {'they are' if len(order) > 1 else 'it is'} "
                f"{_named(order, field)}"
            )
    return None


def _compared(match: re.Match) -> str | None:
    """The figure a comparison is about, or None when it does not say."""
    said = (match["verb"] or match["mid"] or "").lower()
    if re.search(r"income|earn", said):
        return "mean_income"
    if "spend" in said:
        return "mean_spending"
    if "customers" in said or (not said.strip() and match["dir"].lower() in _SIZE_WORDS):
        return "size"
    return None


def _comparison_findings(
    text: str, start: int, end: int, names: Sequence[CitedName], by_key: dict[Key, Segment]
) -> list[str]:
    findings = []
    for match in _COMPARATIVE.finditer(text, start, end):
        field = _compared(match)
        if field is None:
            continue
        left = [n for n in names if n.end <= match.start()]
        right = [n for n in names if n.start >= match.end() and n.start - match.end() <= 12]
        if not left or not right:
            continue
        a, b = by_key.get(left[-1].key), by_key.get(right[0].key)
        va = _value(a, field) if a else None
        vb = _value(b, field) if b else None
        if a is None or b is None or va is None or vb is None:
            continue
        higher = match["dir"].lower() in ("higher", "greater", "larger", "bigger", "more")
        if (va < vb - TOLERANCE[field]) if higher else (va > vb + TOLERANCE[field]):
            word = "higher" if higher else "lower"
            findings.append(
                f"says {a.name} has a {word} {SAID[field]} than {b.name}; "
                f"it is {_shown(va)}{UNIT[field]} against {_shown(vb)}{UNIT[field]}"
            )
    return findings


class Target(NamedTuple):
    segments: list[Segment]
    why: str
    field: str | None  # the figure that singles them out, if one does
    highest: bool = True  # from the highest value of `field` (else the lowest)

    def addressed(self, named: Sequence[Segment], segments: Sequence[Segment]) -> bool:
        """Whether `named` include the target: as many of the top (bottom) ones by the field,
        up to rounding (a near tie is either), or the very segments."""
        if self.field is None:
            return all(s in named for s in self.segments)
        n = len(self.segments)
        near = [s for s in named if in_top(s, segments, self.field, self.highest, n)]
        return len(near) >= len(self.segments)


def task_target(task: str, segments: Sequence[Segment]) -> Target | None:
    """The segment(s) the task is about and why: the one it names, the ones it asks for by a
    superlative, or the one a customer it describes falls in."""
    by_key = {key: s for s in segments if (key := segment_key(s.name)) is not None}
    asks = _TASK_ASKS.search(task)
    if asks:
        phrase = _SUPERLATIVE.search(task, asks.end())
        if (
            phrase
            and not phrase["verb"]
            and not phrase["rank"]
            and not _WITHIN.match(task, phrase.end())
        ):
            n = count_value(asks["n"]) if asks["n"] else 1
            field = _field(phrase["attr"])
            highest = re.fullmatch(_HIGH, phrase["dir"], re.IGNORECASE) is not None
            order = ranked(segments, field, highest)
            if n <= len(order):
                which = "highest" if highest else "lowest"
                why = f"the task asks for the {which} {SAID[field]}"
                return Target(order[:n], why, field, highest)
        income, spending = _CUSTOMER_INCOME.search(task), _CUSTOMER_SPENDING.search(task)
        if income and spending:
            return _nearest(float(income["v"]), float(spending["v"]), segments)
    keys = list(dict.fromkeys(n.key for n in name_spans(task)))
    if len(keys) == 1 and keys[0] in by_key:
        return Target([by_key[keys[0]]], "the task is about", None)
    return None


def _nearest(income: float, spending: float, segments: Sequence[Segment]) -> Target | None:
    """The segment whose means are clearly the nearest to a customer's (None if none is)."""
    having = [s for s in segments if s.mean_income is not None and s.mean_spending is not None]
    if len(having) < 2:
        return None
    dist = sorted(
        (math.hypot(s.mean_income - income, s.mean_spending - spending), n)  # type: ignore[operator]
        for n, s in enumerate(having)
    )
    if dist[0][0] > CLEARLY_NEAREST * dist[1][0]:
        return None
    return Target([having[dist[0][1]]], "the customer the task describes is nearest", None)


def _target_findings(
    answer: str, task: str, spans: Sequence[CitedName], by_key: dict[Key, Segment],
    segments: Sequence[Segment],
) -> list[str]:  # fmt: skip
    named = [by_key[k] for k in dict.fromkeys(n.key for n in spans) if k in by_key]
    findings = []
    asks = _TASK_ASKS.search(task)
    if asks and not spans and not _LEVEL_WORDING.search(answer):
        return ["names no segment; the task asks which"]
    if asks and asks["n"] and 0 < len(named) < count_value(asks["n"]):
        findings.append(f"names {len(named)} segment(s); the task asks for {asks['n']}")
    every = _ALL_SEGMENTS.search(task)
    if every and named and (not every["n"] or count_value(every["n"]) == len(segments)):
        missing = [s.name for s in segments if s not in named]
        if missing:
            findings.append(
                f"covers {len(named)} of the {len(segments)} segments the task asks about "
                f"(missing: {', '.join(missing)})"
            )
    target = task_target(task, segments)
    if target and named and not target.addressed(named, segments):
        field = target.field

        def listed(group: Sequence[Segment]) -> str:
            return _named(group, field) if field else " and ".join(s.name for s in group)

        findings.append(f"addresses {listed(named)}; {target.why}: {listed(target.segments)}")
    return findings


def check_claims(answer: str, task: str, segments: Sequence[Segment]) -> list[str]:
    """What `answer` claims about the segments that the profile contradicts, and where it
    misses the segment(s) `task` asks about: one readable line each (none when all hold)."""
    by_key: dict[Key, Segment] = {}
    for segment in segments:
        if (key := segment_key(segment.name)) is not None:
            by_key.setdefault(key, segment)
    spans = name_spans(answer)
    found = _superlative_findings(answer, spans, by_key, segments)
    found += _target_findings(answer, task, spans, by_key, segments)
    return list(dict.fromkeys(found))


def check_answer(answer: str, task: str, segments: Sequence[Segment]) -> GroundingCheck:
    """The grounding check with the claims: names, figures and claims against `segments`."""
    return dataclasses.replace(
        check_grounding(answer, task, segments), claims=check_claims(answer, task, segments)
    )
