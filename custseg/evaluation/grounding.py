"""The deterministic half of the grounding metric: which segments and figures an answer cites,
checked against the segments its model has (the profile the agents were given).

Segment names are read as "<level> income · <level> spending" in any of the ways people write
them ("high-income, low-spending customers", "high income and low spending"); a name is known
only with the profile's own level words, so "medium income · moderate spending" is invented
when the profile says "average". Figures are the four a profile holds, where the answer states
them as such: customers ("38 customers"), shares of customers ("19% of all customers", "38
customers (19%)"), mean income ("a mean annual income of 49 k$") and mean spending score ("an
average spending score of 83"); one matches if some segment (or all customers together) has
it, up to rounding. Other numbers (a discount, a budget split, a customer's income, a
threshold) are not claims about segments, nor are numbers the task itself gives.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from custseg.agents.envelope import Segment

LEVELS = (
    r"(?:very\s+)?(?:low(?:er|est)?|high(?:er|est)?|average|medium|middle|mid|moderate|upper|"
    r"below[- ]average|above[- ]average)"
)
_NAME = re.compile(
    rf"\b(?P<income>{LEVELS})[- ]income\b[\s,·•/&+–-]*(?:and\s+|with\s+)?"
    rf"(?P<spending>{LEVELS})[- ]spend(?:ing|ers?)?\b",
    re.IGNORECASE,
)
_NUMBER = r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)"
_ABOUT = r"(?:\s+(?:of|is|was|around|about|roughly|approximately|~|:))*\s*"
_FIGURES = {
    "size": re.compile(rf"{_NUMBER}\s+(?:customers|clients|shoppers|people)\b", re.IGNORECASE),
    # A share of customers, not any percentage (a discount, a budget split).
    "share": re.compile(
        rf"{_NUMBER}\s?(?:%|percent\b)(?=\s+of\s+(?:all\s+|our\s+|the\s+)*(?:customers|"
        rf"clients|shoppers|the\s+customer\s+base|customer\s+base))"
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


def level_words(text: str) -> str:
    return " ".join(text.lower().replace("-", " ").split())


def segment_key(name: str) -> tuple[str, str] | None:
    """("high", "low") for "high income · low spending" (or any way of writing it)."""
    found = _NAME.search(name)
    return (level_words(found["income"]), level_words(found["spending"])) if found else None


def cited_names(text: str) -> list[tuple[str, tuple[str, str]]]:
    """Each segment name the text cites, as written and as (income, spending) levels; once."""
    seen, cited = set(), []
    for found in _NAME.finditer(text):
        key = (level_words(found["income"]), level_words(found["spending"]))
        if key not in seen:
            seen.add(key)
            cited.append((" ".join(found.group(0).split()), key))
    return cited


def _value(match: re.Match) -> float:
    return float(next(g for g in match.groups() if g).replace(",", ""))


def cited_figures(text: str, given: str = "") -> list[tuple[str, str, float]]:
    """(kind, as written, value) of each figure the text cites that `given` (the task) did not
    already state."""
    stated = {
        (kind, _value(m)) for kind, pattern in _FIGURES.items() for m in pattern.finditer(given)
    }
    figures = []
    for kind, pattern in _FIGURES.items():
        for match in pattern.finditer(text):
            value = _value(match)
            if (kind, value) not in stated:
                figures.append((kind, " ".join(match.group(0).split()), value))
    return figures


def known_values(segments: Sequence[Segment]) -> dict[str, list[float]]:
    """Every value each kind of figure can truthfully take: per segment, and all together."""
    sizes = [s.size for s in segments if s.size is not None]
    return {
        "size": [*sizes, *([sum(sizes)] if sizes else [])],
        "share": [*(100 * s.share for s in segments if s.share is not None), 100.0],
        "mean_income": [s.mean_income for s in segments if s.mean_income is not None],
        "mean_spending": [s.mean_spending for s in segments if s.mean_spending is not None],
    }


@dataclass(frozen=True)
class GroundingCheck:
    segments: list[str]  # cited, as written
    invented: list[str]  # cited but not the model's
    figures: list[str]
    wrong: list[str]  # figures no segment has

    @property
    def cited(self) -> int:
        return len(self.segments) + len(self.figures)

    @property
    def score(self) -> float:
        """The share of cited names and figures that are the model's (1.0 when none cited)."""
        bad = len(self.invented) + len(self.wrong)
        return 1.0 if not self.cited else (self.cited - bad) / self.cited

    @property
    def passed(self) -> bool:
        return not self.invented and not self.wrong

    def reason(self) -> str:
        if not self.cited:
            return "cites no segment and no segment figure"
        parts = [f"cites {len(self.segments)} segment name(s) and {len(self.figures)} figure(s)"]
        if self.invented:
            parts.append("not the model's segments: " + "; ".join(self.invented))
        if self.wrong:
            parts.append("figures no segment has: " + "; ".join(self.wrong))
        return ". ".join(parts)


def check_grounding(answer: str, task: str, segments: Sequence[Segment]) -> GroundingCheck:
    """Check `answer`'s segment names and figures against the model's `segments`."""
    known = {segment_key(s.name) for s in segments} - {None}
    names = cited_names(answer)
    values = known_values(segments)
    figures = cited_figures(answer, task)
    return GroundingCheck(
        segments=[written for written, _ in names],
        invented=[written for written, key in names if key not in known],
        figures=[written for _, written, _ in figures],
        wrong=[
            written
            for kind, written, value in figures
            if not any(abs(value - v) <= TOLERANCE[kind] for v in values[kind])
        ],
    )
