"""Claims an answer makes about segments, checked against the profile with no judge.

- Superlatives: "X has the highest mean annual income", "the segment with the most customers is
  X", "the two segments that spend the least are X and Y", "These segments have the highest
  spending scores" (of the names in the sentence before, or of the list right above it), "X is
  the second-largest segment"; paired, "A and B have the highest and lowest spending scores(,
  respectively)": A the highest, B the lowest.
  The segments stated must be the top (bottom) ones of that figure, as many as are named.
  Relative to the other figure ("X spends the least relative to its income", "for its
  income", "the lowest spending-to-income ratio"): by mean spending per k$ of mean income.
  Said of a group named by level ("both high-income segments … they both spend the most"):
  every segment of the model at that level.
- Comparisons: "X has a higher mean income than Y", "X spends more than Y".
- Rankings: "ranked by mean income: X, Y, Z", "from highest to lowest spending: X, Y, Z" (the
  names in the order written must be in that order, up to rounding).

Which segment the answer addresses is custseg.evaluation.addressed's.

Precision first: a sentence the checks cannot read stays silent. Not read: questions, negations
and hedges ("not the highest", "one of the highest", "if"; a hedge in a second predicate, ", and
are likely to …", silences that predicate only), superlatives within a group ("the
highest income among the low spenders"), and a pronoun with no segment named before it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

from custseg.conversation import Segment
from custseg.evaluation.grounding import (
    _CLAUSE_END,
    COUNT_WORDS,
    LEVELS,
    TOLERANCE,
    CitedName,
    count_value,
    level_words,
    name_spans,
    segment_key,
)

Key = tuple[str, str]
# Spending for the income: "spends the least relative to its income" ranks by this ratio.
RATIO = "spending_per_income"
# A figure a claim ranks segments by: the profile's field (or RATIO) and how it is said.
SAID = {
    "mean_income": "mean income",
    "mean_spending": "mean spending score",
    "size": "number of customers",
    RATIO: "mean spending score per k$ of mean income",
}
UNIT = {"mean_income": " k$", "mean_spending": "", "size": " customers", RATIO: ""}
# Up to rounding: the figures' own, and for the ratio what ±1.5 on both means moves it by.
TOL = {**TOLERANCE, RATIO: 0.05}
_N = rf"(?:\d{{1,2}}|{'|'.join(COUNT_WORDS)})"
_INCOME = r"(?:(?:mean|average)\s+)?(?:annual\s+)?(?:incomes?|earners?|earnings)"
_SPENDING = r"(?:(?:mean|average)\s+)?(?:spending(?:\s+scores?)?|spenders?|spend)"
_SIZE = (
    r"(?:(?:number\s+of\s+)?(?:customers|clients|shoppers)|share|"
    r"(?:customer\s+)?(?:segments?|groups?|base))"
)
_HIGH = r"highest|largest|biggest|greatest|most|top"
_LOW = r"lowest|smallest|least|fewest"
_FIGURE = rf"{_INCOME}|{_SPENDING}|{_SIZE}"
_ATTR = rf"(?P<attr>{_FIGURE})"
_SUPERLATIVE = re.compile(
    rf"\b(?:the|our)\s+(?:(?P<k>{_N})\s+)?(?:(?P<rank>second|third)[- ])?"
    rf"(?P<dir>{_HIGH}|{_LOW})[- ]{_ATTR}"
    rf"(?:\s+and\s+(?:the\s+)?(?:(?P<dir_b>{_HIGH}|{_LOW})\s+)?(?P<attr2>{_INCOME}|{_SPENDING}))?\b"
    rf"|\b(?P<verb>spends?|spending|earns?|earning)\s+(?:the\s+)?(?P<dir2>most|least)\b",
    re.IGNORECASE,
)
# Two superlatives of one figure for two names, paired in order: "A and B have the highest and
# lowest mean spending scores(, respectively)": A the highest, B the lowest.
_PAIRED = re.compile(
    rf"\b(?:the|our)\s+(?P<dir>{_HIGH}|{_LOW})\s+and\s+(?:the\s+)?(?P<dir_b>{_HIGH}|{_LOW})"
    rf"[- ]{_ATTR}\b",
    re.IGNORECASE,
)
# A list item's line: "1. …", "2) …", "- …", "* …", "• …".
_LIST_ITEM = re.compile(r"[ \t]*(?:\d{1,2}[.)]|[-*•])\s")
# Two figures compared in words they contradict: "34 customers, more than the 39 of …",
# "48.9 k$, just below … at 47.2 k$" (not "over" / "under": "5 visits over 12 weeks").
_FIGURES_COMPARED = re.compile(
    r"(?<![\d.])(?P<a>\d+(?:\.\d+)?)\s*(?:k\s?\$|\$|%|customers|points)?,?\s+"
    r"(?:just\s+|well\s+|far\s+|slightly\s+|much\s+)?"
    r"(?P<dir>more|higher|larger|bigger|greater|above|fewer|less|lower|smaller|below)\b"
    r"(?:\s+than)?\s+(?:(?:the|that\s+of|those\s+of)\s+|[^\d;.\n]{1,50}?\s(?:at|with)\s+)?"
    r"(?P<b>\d+(?:\.\d+)?)(?![\d])",
    re.IGNORECASE,
)
# A superlative set beside the name before it ("B, our largest group", "B, the largest").
_APPOSITION = re.compile(r"[\"'”’]?\s*,\s*(?:which\s+is\s+|who\s+are\s+)?", re.IGNORECASE)
_COMPARATIVE = re.compile(
    r"\b(?:(?P<verb>spends?|earns?)\s+)?(?P<dir>higher|greater|larger|bigger|more|lower|"
    r"smaller|less|fewer)\b(?P<mid>[^.;\n]{0,40}?)\bthan\b",
    re.IGNORECASE,
)
# A second predicate of the same subject: "These segments have the highest …, and are likely to
# …". A hedge there is its own; the claim before it is still read.
_AND_PREDICATE = re.compile(
    r",\s+and\s+(?=(?:are|is|have|has|will|would|could|may|might|should|can|tend|also)\b)",
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
    r"\s*(?:scores?\s+)?(?:among|of\s+(?!all\b|[\d$€£])|within|"
    r"in\s+(?:its|their|the|this|that)|except|besides|other\s+than|apart\s+from|after|"
    r"outside|for\s+(?:its|their|a|an))\b",
    re.IGNORECASE,
)
_PRONOUN = re.compile(r"\b(?:these|those|both|they|this\s+segment|the\s+two|it)\b", re.IGNORECASE)
_SIZE_WORDS = ("larger", "bigger", "smaller")
# A ranking: "ranked by mean income: A, B, C", "from highest to lowest spending: A, B, C".
_RANKING = re.compile(
    rf"\b(?:ranked|ordered|sorted|in\s+order)\s+(?:by|of)\s+(?:their\s+|the\s+)?{_ATTR}"
    rf"(?:\s*,?\s*\(?(?P<first>{_HIGH}|{_LOW})\s+first\b)?"
    rf"|\bfrom\s+(?:the\s+)?(?P<from>{_HIGH}|{_LOW})(?:[- ](?P<attr_a>{_FIGURE}))?"
    rf"\s+to\s+(?:the\s+)?(?:{_HIGH}|{_LOW})(?:[- ](?P<attr_b>{_FIGURE}))?",
    re.IGNORECASE,
)
# "relative to its income", "for their income", "-to-income ratio": a superlative of spending
# for the income (or income for the spending), not of the figure alone.
_RELATIVE = re.compile(
    r"(?:\s*,?\s*(?:relative\s+to|compared\s+(?:to|with)|for|given|against|per|"
    r"in\s+proportion\s+to)\s+(?:its|their|the|each|a)?\s*(?:(?:mean|average|annual)\s+)*"
    r"|[- ]to[- ])"
    r"(?P<base>incomes?|earnings|spending(?:\s+scores?)?)\b",
    re.IGNORECASE,
)
# A group of segments named by one level: "both high-income segments", "the low-spending
# segments" (the model's segments of that level).
LEVEL_GROUP = re.compile(
    rf"\b(?:the|both|our|these|those|all)\s+(?:(?P<n>{_N})\s+)?(?P<level>{LEVELS})[- ]"
    r"(?P<figure>income|spending)\s+(?:customer\s+)?segments\b",
    re.IGNORECASE,
)
_ASCENDING = re.compile(r"\bascending\b", re.IGNORECASE)
_PARAGRAPH_END = re.compile(r"\n\s*\n")
# Parts of a sentence that make separate claims ("A ..., while B ...").
_CONTRAST = re.compile(r",?\s+(?:while|whereas|but)\b|,\s+and\s+(?=the\b)", re.IGNORECASE)


def _field(attr: str) -> str:
    word = attr.lower()
    if re.search(r"incomes?|earn", word):
        return "mean_income"
    return "mean_spending" if "spend" in word else "size"


def _value(segment: Segment, field: str) -> float | None:
    if field == RATIO:
        spending, income = segment.mean_spending, segment.mean_income
        return None if spending is None or not income else float(spending) / float(income)
    value = getattr(segment, field)
    return None if value is None else float(value)


def _shown(value: float, field: str = "") -> str:
    return f"{value:.2f}" if field == RATIO else f"{value:.1f}".removesuffix(".0")


def _named(segments: Sequence[Segment], field: str) -> str:
    return " and ".join(
        f"{s.name} ({_shown(v, field)}{UNIT[field]})"
        for s in segments
        if (v := _value(s, field)) is not None
    )


def group_spans(text: str, segments: Sequence[Segment]) -> list[CitedName]:
    """The segments a level group stands for ("both high-income segments": every segment of
    the model with that income level), each as cited where the group is."""
    found = []
    for group in LEVEL_GROUP.finditer(text):
        place = 0 if group["figure"].lower() == "income" else 1
        level = level_words(group["level"])
        keys = [k for s in segments if (k := segment_key(s.name)) and k[place] == level]
        if keys and (not group["n"] or count_value(group["n"]) == len(keys)):
            written = " ".join(group.group(0).split())
            found += [CitedName(written, k, group.start(), group.end()) for k in keys]
    return found


def _is_high(word: str) -> bool:
    """Whether a superlative's word points up ("highest", "most") rather than down."""
    return re.fullmatch(_HIGH, word, re.IGNORECASE) is not None


def phrase_claims(text: str, phrase: re.Match) -> list[tuple[str, bool]]:
    """(figure, from the highest) for each claim a `_SUPERLATIVE` match makes; a superlative
    relative to the other figure ("spends the least relative to its income") is one of RATIO."""

    if phrase["verb"]:
        claims = [(_field(phrase["verb"]), phrase["dir2"].lower() == "most")]
    else:
        # "the highest income and (the lowest) spending": each figure with its own word.
        claims = [(_field(phrase["attr"]), _is_high(phrase["dir"]))]
        if phrase["attr2"]:
            claims.append((_field(phrase["attr2"]), _is_high(phrase["dir_b"] or phrase["dir"])))
    if relative := _RELATIVE.match(text, phrase.end()):
        (field, highest), base = claims[-1], _field(relative["base"])
        if len(claims) > 1 or {field, base} != {"mean_income", "mean_spending"}:
            return []  # not a ratio of spending and income: not read
        return [(RATIO, highest if field == "mean_spending" else not highest)]
    return claims


def ranked(segments: Sequence[Segment], field: str, highest: bool) -> list[Segment]:
    """The segments that have `field`, from the highest (or lowest) value."""
    having = [s for s in segments if _value(s, field) is not None]
    return sorted(having, key=lambda s: _value(s, field) or 0.0, reverse=highest)


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
    tol = TOL[field]
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
    return abs(value - place) <= TOL[field]


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


def _bracket_before(text: str, start: int, at: int) -> int | None:
    """Where the bracket `at` sits in opens (within text[start:at]), or None outside one."""
    opening = text.rfind("(", start, at)
    return opening if opening != -1 and ")" not in text[opening:at] else None


def _list_above(text: str, at: int, spans: Sequence[CitedName]) -> list[CitedName]:
    """The names in the list right above the line `at` starts (two items or more, blank lines
    between them allowed): "1. A … 2. B … These segments …" speaks of A and B, not B alone."""
    line_start = text.rfind("\n", 0, at) + 1
    if text[line_start:at].strip():
        return []  # a sentence earlier on the same line comes first
    items: list[tuple[int, int]] = []
    end = line_start - 1  # the newline that ends the line above
    while end >= 0:
        start = text.rfind("\n", 0, end) + 1
        line = text[start:end]
        if _LIST_ITEM.match(line):
            items.append((start, end))
        elif line.strip():
            break
        end = start - 1
    if len(items) < 2:
        return []
    return [n for n in spans if any(a <= n.start and n.end <= b for a, b in items)]


def _paired_finding(
    text: str, phrase: re.Match, names: Sequence[CitedName], by_key: dict[Key, Segment],
    segments: Sequence[Segment],
) -> str | None:  # fmt: skip
    """A `_PAIRED` superlative said of exactly two segments, each checked with its own word."""
    keys = list(dict.fromkeys(n.key for n in names))
    if len(keys) != 2 or any(k not in by_key for k in keys):
        return None  # not two segments, or one the grounding check flags already
    if _RELATIVE.match(text, phrase.end()) or _WITHIN.match(text, phrase.end()):
        return None  # relative to the other figure, or within a group: not read
    field = _field(phrase["attr"])
    for key, word in zip(keys, (phrase["dir"], phrase["dir_b"]), strict=True):
        highest = _is_high(word)
        if not holds([by_key[key]], segments, field, highest, 0):
            top = ranked(segments, field, highest)[:1]
            which = "highest" if highest else "lowest"
            return (
                f"says {_named([by_key[key]], field)} has the {which} {SAID[field]}; "
                f"it is {_named(top, field)}"
            )
    return None


def _superlative_findings(
    text: str,
    spans: Sequence[CitedName],
    by_key: dict[Key, Segment],
    segments: Sequence[Segment],
    about: Sequence[Segment] = (),
) -> list[str]:
    findings: list[str] = []
    # Before any segment is named, "they" / "it" are the segment(s) the task is about.
    previous = [CitedName(s.name, k, -1, -1) for s in about if (k := segment_key(s.name))]
    groups = group_spans(text, segments)
    for start, end in _sentences(text):
        sentence = text[start:end]
        in_sentence = [n for n in spans if n.start >= start and n.end <= end]
        grouped = [n for n in groups if n.start >= start and n.end <= end]
        cut = m.start() if (m := _AND_PREDICATE.search(text, start, end)) else end
        readable = not sentence.rstrip().endswith("?") and not _HEDGE.search(text, start, cut)
        read_end = cut if _HEDGE.search(text, cut, end) else end
        for part_start, part_end in _parts(text, start, read_end) if readable else []:
            names = [n for n in in_sentence if n.start >= part_start and n.end <= part_end]
            phrases = list(_SUPERLATIVE.finditer(text, part_start, part_end))
            if len(phrases) > 1 and len({n.key for n in names}) > 1:
                continue  # which name each phrase is about: not read
            named = names  # compared only when named: a group is read by its superlatives
            pronoun = _PRONOUN.search(text, part_start, part_end)
            if not names and (group := [n for n in grouped if n.start >= part_start]):
                names = [n for n in group if n.end <= part_end]
            if not names and not in_sentence and not grouped and pronoun:
                # "it" / "this segment" stands for one segment only; "these", "both" for all
                # (of the list right above, else of the sentence before).
                singular = pronoun.group(0).lower() in ("it", "this segment")
                listed = [] if singular else _list_above(text, start, spans)
                names = listed or (
                    previous if not singular or len({n.key for n in previous}) == 1 else []
                )
            paired = list(_PAIRED.finditer(text, part_start, part_end))
            for phrase in paired:
                before = [n for n in names if n.end <= phrase.start()]
                subject = before or [n for n in names if n.start >= phrase.end()]
                if found := _paired_finding(text, phrase, subject, by_key, segments):
                    findings.append(found)
            # a superlative inside a paired one ("… and the lowest spending") is the pair's
            phrases = [
                p for p in phrases if not any(q.start() <= p.start() < q.end() for q in paired)
            ]
            for phrase in phrases:
                # Its subject: the names before it ("A has the highest ..., unlike B"), else
                # after it ("the segment with the highest ... is A").
                before = [n for n in names if n.end <= phrase.start()]
                if (opening := _bracket_before(text, part_start, phrase.start())) is not None:
                    # "A (…), B (51 customers, the largest segment)": a bracket speaks of the
                    # name just before it, not of every name before the phrase.
                    before = [n for n in before if n.end <= opening][-1:]
                elif before and _APPOSITION.fullmatch(text, before[-1].end, phrase.start()):
                    before = before[-1:]  # "A and B, our largest group, …": B's alone
                subject = before or [n for n in names if n.start >= phrase.end()] or names
                found = _claim_finding(text, phrase, subject, by_key, segments)
                if found:
                    findings.append(found)
            findings += _comparison_findings(text, part_start, part_end, named, by_key)
        if readable and (ranking := _RANKING.search(text, start, end)):
            findings += _ranking_findings(text, ranking, end, spans, by_key)
        if in_sentence or grouped:
            previous = in_sentence or grouped
    return findings


def _claim_finding(
    text: str,
    phrase: re.Match,
    names: Sequence[CitedName],
    by_key: dict[Key, Segment],
    segments: Sequence[Segment],
) -> str | None:
    relative = _RELATIVE.match(text, phrase.end())
    if (not relative and _WITHIN.match(text, phrase.end())) or (
        (phrase["dir"] or "").lower() == "top" and _field(phrase["attr"]) == "size"
    ):
        return None  # within a group; "the top segment" (best, not largest)
    keys = list(dict.fromkeys(n.key for n in names))
    if not keys or any(k not in by_key for k in keys):
        return None  # no subject, or one the grounding check flags already
    claimed = [by_key[k] for k in keys]
    claims = phrase_claims(text, phrase)
    skip = 0 if phrase["verb"] else {"second": 1, "third": 2}.get((phrase["rank"] or "").lower(), 0)
    if skip and len(claimed) > 1:
        return None
    for field, highest in dict.fromkeys(claims):
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


def _ranking_findings(
    text: str, ranking: re.Match, end: int, spans: Sequence[CitedName], by_key: dict[Key, Segment]
) -> list[str]:
    """A ranking's names, in the order written (the rest of its sentence, or the first name of
    each line up to the paragraph's end), must be in order of its figure."""
    attr = ranking["attr"] or ranking["attr_a"] or ranking["attr_b"]
    if attr is None:
        return []
    field = _field(attr)
    word = (ranking["first"] or ranking["from"] or "highest").lower()
    highest = re.fullmatch(_HIGH, word, re.IGNORECASE) is not None
    highest = highest and not _ASCENDING.search(text, ranking.start(), end)
    names = [n for n in spans if ranking.end() <= n.start and n.end <= end]
    if not names:  # a list after it: the first name of each line
        stop = _PARAGRAPH_END.search(text, ranking.end())
        lines: dict[int, CitedName] = {}
        for n in spans:
            if ranking.end() <= n.start and (stop is None or n.end <= stop.start()):
                lines.setdefault(text.count("\n", 0, n.start), n)
        names = list(lines.values())
    keys = list(dict.fromkeys(n.key for n in names))
    if any(k not in by_key for k in keys):
        return []
    found = order_finding([by_key[k] for k in keys], field, highest)
    return [found] if found else []


def in_order(values: Sequence[float], field: str, highest: bool) -> bool:
    """Whether `values` run from the highest (lowest) down (up), up to rounding."""
    tol, sign = TOL[field], 1 if highest else -1
    return all(sign * (a - b) >= -tol for a, b in itertools.pairwise(values))


def order_finding(said: Sequence[Segment], field: str, highest: bool | None) -> str | None:
    """What is wrong with `said` as a ranking by `field` from the highest (lowest; None: either
    way), up to rounding; None when it holds, or with fewer than two segments to order."""
    values = [v for s in said if (v := _value(s, field)) is not None]
    if len(said) < 2 or len(values) < len(said):
        return None
    ways = (True, False) if highest is None else (highest,)
    if any(in_order(values, field, way) for way in ways):
        return None
    way = highest is not False
    order = sorted(said, key=lambda s: _value(s, field) or 0.0, reverse=way)
    which = "highest" if way else "lowest"
    return (
        f"ranks {', '.join(s.name for s in said)} by {SAID[field]} from the {which}; "
        f"the order is {_named(order, field).replace(' and ', ', ')}"
    )


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
        if (va < vb - TOL[field]) if higher else (va > vb + TOL[field]):
            word = "higher" if higher else "lower"
            findings.append(
                f"says {a.name} has a {word} {SAID[field]} than {b.name}; "
                f"it is {_shown(va, field)}{UNIT[field]} against {_shown(vb, field)}{UNIT[field]}"
            )
    return findings


def claim_findings(
    answer: str, segments: Sequence[Segment], about: Sequence[Segment] = ()
) -> list[str]:
    """What `answer` claims about the segments that the profile contradicts, one readable
    line each (none when all hold); `about`: the segment(s) its task is about, whom "they"
    and "it" stand for before the answer names any."""
    by_key: dict[Key, Segment] = {}
    for segment in segments:
        if (key := segment_key(segment.name)) is not None:
            by_key.setdefault(key, segment)
    found = _superlative_findings(answer, name_spans(answer), by_key, segments, about)
    return found + figure_contradictions(answer)


def figure_contradictions(text: str) -> list[str]:
    """Two figures compared in words that they themselves contradict ("34 customers, more
    than the 39 of …"), one line each; no profile needed."""
    found = []
    for match in _FIGURES_COMPARED.finditer(text):
        a, b, word = float(match["a"]), float(match["b"]), match["dir"].lower()
        more = word in ("more", "higher", "larger", "bigger", "greater", "above")
        if (a <= b) if more else (a >= b):
            found.append(f"says {match['a']} is {word} than {match['b']}")
    return found
