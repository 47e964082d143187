"""The hard limits a task sets, checked on the answer with no judge: a length ("a short SMS
(under 160 characters)", "in at most 50 words", "a one-paragraph brief") and a budget the
answer splits ("a 50,000 $ quarterly budget").

A 1.5B judge does not count: it rates a 288-character SMS above a 120-character one and a
split of 70,000 $ of a 50,000 $ budget as "specific and usable". Helpfulness is the judge's
score times the share of the task's limits the answer keeps (1.0 when the task sets none).

Lengths: "under", "within", "at most", "no more than", "less than", "fewer than", "up to",
"max", "maximum (of)", "in" before N characters, words or paragraphs, "N words or less", or
"a 160-character SMS", "a one-paragraph brief" (N in digits or words); all are read as "at
most N" (people write "under 160" for the SMS limit of 160). Not read: a limit per item ("one
sentence per segment", "50 words each") and a count that is not a length ("three words
customers use").
Budgets: an amount with a currency right before the word budget ("a 50,000 $ quarterly
marketing budget", "our $20k budget"), after "budget of", or split ("a 10,000 $ split of …",
"allocate 10,000 $ between …"). The answer's amounts (with a
currency) and shares of the budget ("20% of the budget") must each add up to at most it: a
split that spends more than there is breaks the limit. Not counted: the budget itself
restated, an amount per unit ("5 $ per customer", "each"), and incomes ("a mean annual
income of 49 k$", "customers earning 85k$").
Every answer, whatever its task, must also be whole: one that stops where no sentence can end
(after "and", "to", "their" and the other words of `_NO_END`, or on a comma, colon or open
bracket) was cut off. An answer that ends on any other word, a figure, a quote or a stop is
read as whole.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from custseg.evaluation.asks import (
    forbidden,
    missing,
    out_of_sequence,
    restated,
    task_asks,
    vague,
)
from custseg.evaluation.grounding import COUNT_WORDS, count_value

_COUNT = rf"(?P<n>\d{{1,3}}(?:,\d{{3}})*|{'|'.join(COUNT_WORDS)}|a\s+single|single)"
_AT_MOST = (
    r"(?:under|within|at\s+most|no\s+more\s+than|not\s+more\s+than|less\s+than|fewer\s+than|"
    r"up\s+to|max(?:imum)?(?:\s+of)?|in)"
)
_UNIT = r"(?P<unit>char(?:acter)?s?|words?|paragraphs?)"
# Not a limit per item: "two sentences per segment", "50 words each", "… for each offer".
_NOT_PER = r"(?!\s+(?:per|each|for\s+each|for\s+every|a|an|every)\b)"
_LENGTH = (
    # "under 160 characters", "in at most 50 words", "160 characters or less"
    re.compile(rf"\b{_AT_MOST}\s+{_COUNT}\s+{_UNIT}\b{_NOT_PER}", re.IGNORECASE),
    re.compile(rf"\b{_COUNT}\s+{_UNIT}\s+or\s+(?:less|fewer)\b{_NOT_PER}", re.IGNORECASE),
    # "a 160-character SMS", "a one-paragraph brief" (not "three words customers use")
    re.compile(rf"\b{_COUNT}-{_UNIT}(?=\s+[^\W\d_]){_NOT_PER}(?!\s+or\b)", re.IGNORECASE),
)
_CURRENCY = r"(?:\$|€|£|USD\b|EUR\b|GBP\b|dollars\b|euros\b|pounds\b)"
_SCALE = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6}
_NUMBER = r"\d{1,3}(?:[, ]\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_AMOUNT = rf"(?:{_NUMBER})\s?(?:{'|'.join(_SCALE)})?"
# An amount of money: "15,000 $", "$15,000", "€ 12k", "15 000 euros", "USD 5,000".
_MONEY = rf"(?:{_CURRENCY}\s?{_AMOUNT}(?![\d.,]*\d)|(?<![\d.,]){_AMOUNT}\s?{_CURRENCY})(?![^\W_])"
_MONEY_RE = re.compile(_MONEY, re.IGNORECASE)
_BUDGET = (
    re.compile(rf"(?P<money>{_MONEY})(?:\s+[^\W\d_]+){{0,3}}\s+budget\b", re.IGNORECASE),
    re.compile(rf"\bbudget\s+(?:of|is|:)\s*(?P<money>{_MONEY})", re.IGNORECASE),
    # "a 10,000 $ split of …", "split 10,000 $ between …": the amount split is the budget.
    re.compile(rf"(?P<money>{_MONEY})\s+(?:split|allocation)\b", re.IGNORECASE),
    re.compile(
        rf"\b(?:split|allocate|divide)\s+(?:(?:a|our|the)\s+)?(?P<money>{_MONEY})", re.IGNORECASE
    ),
)
_VALUE = re.compile(rf"({_NUMBER})\s?({'|'.join(_SCALE)})?", re.IGNORECASE)
_SHARE = re.compile(
    r"(?<![\d.])(?P<n>\d+(?:\.\d+)?)\s?(?:%|percent\b)(?=\s+of\s+(?:the|our|your|this)\s+"
    r"(?:[^\W\d_]+\s+){0,2}budget\b)",
    re.IGNORECASE,
)
# An amount that is not spent from the budget: per unit, or someone's income.
_PER_UNIT = re.compile(r"\s*(?:(?:per|each|a|an)\b|/)", re.IGNORECASE)
# An income: "income of 49 k$", "earning 85k$" (the text before it), "85k$ a year" (after).
_INCOME_BEFORE = re.compile(
    r"\b(?:incomes?|earn(?:s|ing)?|salary|salaries|makes?|making)"
    r"(?:\s*[,:=~]|\s+(?:of|is|was|at|around|about|roughly|approximately|above|below|over|under))*\s*$",
    re.IGNORECASE,
)
_INCOME_AFTER = re.compile(r"[\s,]*(?:a\s+year|per\s+year|yearly|annual|/\s?y(?:ea)?r)\b", re.I)


# Words no sentence ends on: articles, possessives, linking words, prepositions that need an
# object, modals. Not "in", "on", "up", "can", "more", "this", "is": "opt in", "sign up", "yes
# we can", "save more", "here it is" can end a subject line.
_NO_END_WORDS = (
    "a an the and or but nor to of for with from by at than as their its our your my because "
    "whose which if while whereas via per such into onto could should would must might shall"
)
_NO_END = frozenset(_NO_END_WORDS.split())
_CUT_MARK = re.compile(r"[,;:(\[{–—-]$|\(\s*[^)]*$")
_LAST_WORD = re.compile(r"([^\W\d_]+)$")
WHOLE = "a whole answer"
ANSWERS = "an answer, not the task restated"
CONCRETE = "a concrete answer"
IN_ORDER = "the steps in order"


def cut_off(answer: str) -> str | None:
    """How the answer ends if it stops mid-sentence ('ends "… for their"'), else None."""
    text = answer.rstrip()
    last = _LAST_WORD.search(text)
    if len(text.split()) < 2:
        return None  # one word is no sentence to cut
    if not (_CUT_MARK.search(text) or (last and last[1].lower() in _NO_END)):
        return None
    return f'ends "… {" ".join(text.split()[-3:])}"'


def _count(written: str) -> int:
    word = " ".join(written.lower().split())
    return 1 if word in ("single", "a single") else count_value(word.replace(",", ""))


def _money(written: str) -> float:
    """The value of an amount of money as written ("$20k" → 20000.0)."""
    found = _VALUE.search(written)
    assert found is not None  # _MONEY matched a number
    number, scale = found.groups()
    return float(re.sub(r"[, ]", "", number)) * _SCALE.get((scale or "").lower(), 1.0)


@dataclass(frozen=True)
class Limit:
    unit: str  # "characters", "words", "paragraphs" or "budget"
    at_most: float
    written: str  # as the task states it

    def measure(self, answer: str) -> float:
        """How much of this limit's unit `answer` uses."""
        text = answer.strip()
        if self.unit == "characters":
            return len(text)
        if self.unit == "words":
            return len(text.split())
        if self.unit == "paragraphs":
            return len([p for p in re.split(r"\n\s*\n", text) if p.strip()])
        return spent(text, self.at_most)


def _unit(written: str) -> str:
    word = written.lower()
    return "characters" if word.startswith("char") else "words" if word[0] == "w" else "paragraphs"


def task_limits(task: str) -> list[Limit]:
    """The limits `task` sets on its answer, once each (the tightest of a unit)."""
    found: dict[str, Limit] = {}

    def keep(limit: Limit) -> None:
        if limit.at_most > 0 and (
            limit.unit not in found or limit.at_most < found[limit.unit].at_most
        ):
            found[limit.unit] = limit

    for pattern in _LENGTH:
        for match in pattern.finditer(task):
            written = " ".join(match.group(0).split())
            keep(Limit(_unit(match["unit"]), _count(match["n"]), written))
    for pattern in _BUDGET:
        for match in pattern.finditer(task):
            keep(Limit("budget", _money(match["money"]), " ".join(match.group(0).split())))
    return list(found.values())


def spent(answer: str, budget: float) -> float:
    """What `answer` allocates of `budget`: the larger of its amounts' sum and its shares' sum
    (as an amount), leaving out the budget restated, amounts per unit and incomes."""
    amounts = 0.0
    for match in _MONEY_RE.finditer(answer):
        value = _money(match.group(0))
        before, after = answer[: match.start()], answer[match.end() :]
        if math.isclose(value, budget, rel_tol=1e-9) or _PER_UNIT.match(after):  # restated
            continue
        if _INCOME_BEFORE.search(before[-40:]) or _INCOME_AFTER.match(after):
            continue
        amounts += value
    shares = sum(float(m["n"]) for m in _SHARE.finditer(answer)) / 100 * budget
    return max(amounts, shares)


def _shown(value: float) -> str:
    return f"{value:,.2f}".removesuffix(".00")


@dataclass(frozen=True)
class LimitsCheck:
    limits: list[str]  # as the task states them
    broken: list[str]  # what the answer does instead

    @property
    def score(self) -> float:
        """The share of the task's limits the answer keeps (1.0 when it sets none)."""
        return 1.0 if not self.limits else 1 - len(self.broken) / len(self.limits)

    @property
    def passed(self) -> bool:
        return not self.broken

    def reason(self) -> str:
        return "breaks the task's limits: " + "; ".join(self.broken) if self.broken else ""


def check_limits(answer: str, task: str) -> LimitsCheck:
    """Check `answer` against each limit `task` sets and each count or part it asks for."""
    limits, broken = task_limits(task), []
    asks = task_asks(task)
    for ask in asks:
        if (lacks := missing(answer, ask)) is not None:
            broken.append(f"{lacks} (task: {ask.written})")
    for limit in limits:
        used = limit.measure(answer)
        slack = 0.005 if limit.unit == "budget" else 0.0  # rounding in a split ("33.3%")
        if used > limit.at_most * (1 + slack):
            unit = "of the budget" if limit.unit == "budget" else limit.unit
            broken.append(f"{_shown(used)} {unit} (task: {limit.written})")
    written = [limit.written for limit in limits] + [ask.written for ask in asks]
    if (offered := forbidden(answer, task)) is not None:  # counted only when broken, as below
        written.append(offered[0])
        broken.append(f"offers {offered[1]} (task: {offered[0]})")
    if (opening := restated(answer, task)) is not None:
        written.append(ANSWERS)
        broken.append(f"{opening} (task: {ANSWERS})")
    if (said := vague(answer, task)) is not None:  # counted only when broken, as below
        written.append(CONCRETE)
        broken.append(f"{said} (task: {CONCRETE})")
    if (disorder := out_of_sequence(answer, task)) is not None:  # counted only when broken
        written.append(IN_ORDER)
        broken.append(f"{disorder} (task: {IN_ORDER})")
    if (ending := cut_off(answer)) is not None:  # counted only when broken: others' scores stay
        written.append(WHOLE)
        broken.append(f"{ending} (task: {WHOLE})")
    return LimitsCheck(written, broken)


# A length a plan sets out for the answer ("about 200 words", "a 300-character SMS").
_PLANNED_LENGTH = re.compile(r"\b(?P<n>\d[\d,]*)[- ]?(?P<unit>words?|char(?:acter)?s?)\b", re.I)


def plan_breaches(plan: str, task: str) -> list[str]:
    """What a plan sets out that breaks the task's own limits, one line each: a length past the
    task's ("about 200 words" for at most 50), another number of the items it asks for ("six
    subject lines" for three), amounts past its budget. A plan may leave all of that to the
    answer, so only what it states is read (a plan is not held to the answer's length)."""
    found = []
    for limit in task_limits(task):
        if limit.unit == "budget":
            if (used := spent(plan, limit.at_most)) > limit.at_most * 1.005:
                found.append(f"plans {_shown(used)} (task: {limit.written})")
            continue
        for said in _PLANNED_LENGTH.finditer(plan):
            n = float(said["n"].replace(",", "") or 0)
            if _unit(said["unit"]) == limit.unit and n > limit.at_most:
                found.append(f"plans {' '.join(said.group(0).split())} (task: {limit.written})")
    for ask in task_asks(task):
        head = ask.written.split()[-1].casefold()
        for said in task_asks(plan):
            same_items = said.what == ask.what and said.written.split()[-1].casefold() == head
            if same_items and said.n != ask.n:
                found.append(f"plans {said.written} (task: {ask.written})")
    if (disorder := out_of_sequence(plan, task)) is not None:
        found.append(f"plans {disorder} (task: {IN_ORDER})")
    own = plan_own_words(plan, task)
    if len(own) < PLAN_OWN_WORDS:
        found.append(
            f"a generic plan: {len(own)} word(s) of its own beyond the task and generic steps"
        )
    return list(dict.fromkeys(found))


# Words any plan may use without saying anything of its own ("analyse the data, develop a
# strategy, monitor the results"): process verbs and nouns, and function words.
_GENERIC = """
    about also analyse analysis analyze answer appropriate approach assess assessment best
    better collect consider could create customer customers data decide decision develop done
    draft each effective effectively ensure evaluate evaluation every execute finally findings
    first from gather goal goals good happy have here implement implementation improve improvement
    indicator indicators information insights into just keep key look make measure message
    metric metrics model monitor monitoring more most need needed needs next objective
    objectives only other over performance plan planning practice practices process program
    programme question relevant report reporting research result results review segment
    segments send should some something step steps strategies strategy success successful task
    than that their them then there these they thing things think this those time track
    tracking understand very well were what when where which will with work would write your
"""
GENERIC_PLAN_WORDS = frozenset(_GENERIC.split())
PLAN_OWN_WORDS = 3  # fewer words of its own than this: a generic plan (good plans seen: ≥ 4)


def plan_own_words(plan: str, task: str) -> list[str]:
    """The plan's words of four letters or more that are neither the task's nor generic."""
    said = {w.casefold() for w in re.findall(r"[^\W\d_]+", task)}
    own = []
    for word in (w.casefold() for w in re.findall(r"[^\W\d_]+", plan)):
        stem = re.sub(r"(?:ed|es|s)$", "", word)
        if len(word) >= 4 and word not in said and not {word, stem} & GENERIC_PLAN_WORDS:
            own.append(word)
    return own
