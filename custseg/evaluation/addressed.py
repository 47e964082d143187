"""Whether an answer addresses what its task asks about, checked with no judge, and the full
claim check (`check_claims`: this and custseg.evaluation.claims) that `grounding_check` adds.

- The segment the task is about: the one it names ("... for the "high income · low spending"
  segment"), the one it asks for ("Which segment has the highest mean annual income?"), or the
  one a customer it describes falls in ("earns 85k$ a year and has a spending score of 20",
  when one segment's means are clearly the nearest). An answer that names segments must name
  it (a near tie on the figure is either); a "which segment" task answered with no segment, not
  even in loose words ("the high spenders"), is a finding.
- How many segments the task asks for: "which two segments" (at least two named), "the five
  segments" / "all segments" / "summarise the segments" (all of the model's, when it has that
  many; an answer naming none of them, not even loosely, is a finding too), "the two
  high-income segments" (the model's segments of that level, all named).
- The order the task asks for: "Rank the five segments by mean spending score, highest first",
  "List the segments from most to fewest customers": the segments, in the order the answer
  first names them (in full or in shorthand, "low·high 82.7"), must be in that order of the
  figure, up to rounding (either way when the task names no direction).
- Before the answer names any segment, "they" / "it" stand for the segment(s) the task is
  about, so "Note that they spend the most" is a claim about them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import NamedTuple

from custseg.conversation import Segment
from custseg.evaluation.claims import (
    _ATTR,
    _FIGURE,
    _HIGH,
    _LOW,
    _N,
    _SUPERLATIVE,
    _WITHIN,
    LEVEL_GROUP,
    RATIO,
    SAID,
    Key,
    _field,
    _named,
    claim_findings,
    in_top,
    order_finding,
    phrase_claims,
    ranked,
)
from custseg.evaluation.grounding import (
    _LEVEL_WORDING,
    LEVELS,
    CitedName,
    GroundingCheck,
    check_grounding,
    cited_labels,
    count_value,
    level_words,
    name_spans,
    segment_key,
)

_TASK_ASKS = re.compile(rf"\bwhich\s+(?:(?P<n>{_N})\s+)?(?:customer\s+)?segments?\b", re.I)
_ALL_SEGMENTS = re.compile(
    rf"\b(?:(?:all|across|of|explaining|describe|covering)\s+)?the\s+(?P<n>{_N})\s+"
    r"(?:customer\s+)?segments\b|\ball\s+(?:the\s+|our\s+)?(?:customer\s+)?segments\b"
    # "Summarise the segments in a table" (not "list the segments that ...": some of them)
    r"|\b(?:summari[sz]e|describe|compare|tabulate|rank|list)\s+(?:the|our)\s+(?:customer\s+)?"
    r"segments\b(?!\s+(?:with|that|which|who|whose|where)\b)",
    re.IGNORECASE,
)
# "the two segments with the lowest ...", "the segment with the lowest ..." (asks for them as
# "which two segments" / "which segment" does).
_THE_N_WITH = re.compile(
    rf"\b(?:the|both)\s+(?:(?P<n>{_N})\s+(?:customer\s+)?segments|(?:customer\s+)?segment)"
    r"\s+(?=with\b|that\b|whose\b)",
    re.I,
)
THE_ONE_WITH = 12  # characters at most from "the segment" to its superlative ("that has the")
# Segments written in shorthand ("high·high are our best customers", "low·high 82.7").
_SHORTHAND = re.compile(rf"\b(?P<income>{LEVELS})\s*[·/]\s*(?P<spending>{LEVELS})\b", re.IGNORECASE)
# A task that asks for the segments in order of a figure.
_TASK_ORDER = re.compile(
    rf"\b(?:rank|order|sort|list)\s+(?:(?:the|our|all)\s+)*(?:{_N}\s+)?(?:customer\s+)?segments\b"
    rf"(?:\s+(?:by|on)\s+(?:their\s+|the\s+)?{_ATTR}"
    rf"(?:\s*,?\s*\(?(?P<first>{_HIGH}|{_LOW})\s+first\b)?"
    rf"|\s+from\s+(?:the\s+)?(?P<from>{_HIGH}|{_LOW})(?:[- ](?P<attr_a>{_FIGURE}))?"
    rf"\s+to\s+(?:the\s+)?(?:{_HIGH}|{_LOW})(?:[- ](?P<attr_b>{_FIGURE}))?)",
    re.IGNORECASE,
)
# "Which segments have a mean spending score above 50?": every segment past that line.
_PAST_A_LINE = re.compile(
    rf"\b(?:have|has|with)\s+(?:an?\s+)?{_ATTR}\s+(?P<dir>above|over|below|under|"
    r"(?:more|higher|greater|less|lower|fewer)\s+than)\s+(?P<v>\d+(?:\.\d+)?)\s?(?:k\b)?",
    re.IGNORECASE,
)
_CUSTOMER_INCOME = re.compile(r"\bearns?\s+\$?(?P<v>\d+(?:\.\d+)?)\s?k\b", re.IGNORECASE)
_CUSTOMER_SPENDING = re.compile(r"\bspending\s+score\s+(?:of\s+|is\s+)?(?P<v>\d+)\b", re.I)
# A customer is placed in a segment only when its means are clearly the nearest.
CLEARLY_NEAREST = 0.6


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
    the_one = _THE_N_WITH.search(task)
    asks = _TASK_ASKS.search(task) or the_one
    if asks:
        phrase = _SUPERLATIVE.search(task, asks.end())
        if phrase and asks is the_one and phrase.start() - asks.end() > THE_ONE_WITH:
            phrase = None  # "the segment that we ...": a superlative further on is not its
        claims = phrase_claims(task, phrase) if phrase and not phrase["rank"] else []
        if claims and (claims[0][0] == RATIO or not _WITHIN.match(task, phrase.end())):
            n = count_value(asks["n"]) if asks["n"] else 1
            field, highest = claims[0]
            order = ranked(segments, field, highest)
            if n <= len(order):
                which = "highest" if highest else "lowest"
                why = f"the task asks for the {which} {SAID[field]}"
                return Target(order[:n], why, field, highest)
        if line := _PAST_A_LINE.search(task, asks.end()):
            return _past_a_line(line, segments)
        income, spending = _CUSTOMER_INCOME.search(task), _CUSTOMER_SPENDING.search(task)
        if income and spending:
            return _nearest(float(income["v"]), float(spending["v"]), segments)
    if group := LEVEL_GROUP.search(task):
        place = 0 if group["figure"].lower() == "income" else 1
        level = level_words(group["level"])
        having = [s for k, s in by_key.items() if k[place] == level]
        if having and (not group["n"] or count_value(group["n"]) == len(having)):
            return Target(having, f"the task is about {group.group(0)}", None)
    keys = list(dict.fromkeys(n.key for n in name_spans(task)))
    if len(keys) == 1 and keys[0] in by_key:
        return Target([by_key[keys[0]]], "the task is about", None)
    return None


def _past_a_line(line: re.Match, segments: Sequence[Segment]) -> Target | None:
    """The segments whose figure is past the task's line ("above 50"): the profile's own
    values against the task's number, so no rounding to allow for; None when none is."""
    field, bound = _field(line["attr"]), float(line["v"])
    above = re.match(r"above|over|more|higher|greater", line["dir"], re.IGNORECASE) is not None
    values = [(s, v) for s in segments if (v := getattr(s, field)) is not None]
    having = [s for s, v in values if v != bound and (v > bound) == above]
    if not having:
        return None
    return Target(having, f"the task asks for those {line.group(0).split(None, 1)[1]}", None)


def _nearest(income: float, spending: float, segments: Sequence[Segment]) -> Target | None:
    """The segment whose means are clearly the nearest to a customer's (None if none is)."""
    having = [s for s in segments if s.mean_income is not None and s.mean_spending is not None]
    if len(having) < 2:
        return None
    dist = sorted(
        (math.hypot((s.mean_income or 0.0) - income, (s.mean_spending or 0.0) - spending), n)
        for n, s in enumerate(having)
    )
    if dist[0][0] > CLEARLY_NEAREST * dist[1][0]:
        return None
    return Target([having[dist[0][1]]], "the customer the task describes is nearest", None)


def _target_findings(
    answer: str, task: str, spans: Sequence[CitedName], by_key: dict[Key, Segment],
    segments: Sequence[Segment], plan: bool = False,
) -> list[str]:  # fmt: skip
    named = [by_key[k] for k in dict.fromkeys(n.key for n in spans) if k in by_key]
    findings = []
    if plan:  # a plan may leave naming them to its steps: only a wrong segment is its error
        return _wrong_target(task, named, segments)
    asks = _TASK_ASKS.search(task)
    # Not even loosely ("the high spenders") nor by a label ("segment 2"): no answer at all.
    if (
        asks
        and not spans
        and not _LEVEL_WORDING.search(answer)
        and not cited_labels(answer, segments)
    ):
        return ["names no segment; the task asks which"]
    if asks and asks["n"] and 0 < len(named) < count_value(asks["n"]):
        findings.append(f"names {len(named)} segment(s); the task asks for {asks['n']}")
    every = _ALL_SEGMENTS.search(task)
    if every and not spans and not _LEVEL_WORDING.search(answer) and not _SHORTHAND.search(answer):
        findings.append("names none of the segments; the task asks about all of them")
    if every and named and (not every["n"] or count_value(every["n"]) == len(segments)):
        missing = [s.name for s in segments if s not in named]
        if missing:
            findings.append(
                f"covers {len(named)} of the {len(segments)} segments the task asks about "
                f"(missing: {', '.join(missing)})"
            )
    return findings + _wrong_target(task, named, segments)


def _wrong_target(task: str, named: list[Segment], segments: Sequence[Segment]) -> list[str]:
    """The segments named, when the task asks about others (by name, level, superlative or a
    customer's figures)."""
    target = task_target(task, segments)
    if not (target and named and not target.addressed(named, segments)):
        return []
    field = target.field

    def listed(group: Sequence[Segment]) -> str:
        return _named(group, field) if field else " and ".join(s.name for s in group)

    return [f"addresses {listed(named)}; {target.why}: {listed(target.segments)}"]


def task_order(task: str) -> tuple[str, bool | None] | None:
    """The figure a task asks the segments ranked by, and whether from the highest (None: it
    does not say); None when it asks for no ranking."""
    asked = _TASK_ORDER.search(task)
    attr = asked and (asked["attr"] or asked["attr_a"] or asked["attr_b"])
    if not asked or not attr:
        return None
    word = asked["first"] or asked["from"]
    return _field(attr), None if word is None else re.fullmatch(_HIGH, word, re.I) is not None


def shorthand_spans(text: str) -> list[CitedName]:
    """Segments written in shorthand ("low·high 82.7"), as cited names."""
    return [
        CitedName(m.group(0), (level_words(m["income"]), level_words(m["spending"])), *m.span())
        for m in _SHORTHAND.finditer(text)
    ]


def _order_findings(task: str, spans: Sequence[CitedName], by_key: dict[Key, Segment]) -> list[str]:
    asked = task_order(task)
    keys = list(dict.fromkeys(n.key for n in sorted(spans, key=lambda n: n.start)))
    if asked is None or any(k not in by_key for k in keys):
        return []  # an unknown name is the grounding check's finding
    found = order_finding([by_key[k] for k in keys], *asked)
    return [f"{found} (the task asks for that order)"] if found else []


def check_claims(
    answer: str, task: str, segments: Sequence[Segment], plan: bool = False
) -> list[str]:
    """What `answer` claims about the segments that the profile contradicts, and where it
    misses the segment(s) `task` asks about: one readable line each (none when all hold). A
    `plan` is held to its claims, the segment it addresses and, where it ranks segments (in
    shorthand too), their order: its steps may leave naming every segment to the answer."""
    by_key: dict[Key, Segment] = {}
    for segment in segments:
        if (key := segment_key(segment.name)) is not None:
            by_key.setdefault(key, segment)
    target = task_target(task, segments)
    found = claim_findings(answer, segments, target.segments if target else ())
    spans = name_spans(answer)
    found += _target_findings(answer, task, spans, by_key, segments, plan)
    # In shorthand too ("Sort them: low·high 82.7, high·high 84.7"): plans rank that way.
    found += _order_findings(task, [*spans, *shorthand_spans(answer)], by_key)
    return list(dict.fromkeys(found))


def check_answer(
    answer: str, task: str, segments: Sequence[Segment], plan: bool = False
) -> GroundingCheck:
    """The grounding check with the claims: names, figures and claims against `segments`
    (`plan`: as check_claims holds a plan)."""
    return dataclasses.replace(
        check_grounding(answer, task, segments), claims=check_claims(answer, task, segments, plan)
    )
