"""The v2 Reviewer's first edits: what the eval's judge-free checks find in a text, each turned
into one concrete instruction (what to add, cut or change, with the count, figure or segment
itself), and where code can make it, the patch too (no LLM call).

The 1.5B Reviewer's own edits mostly asked for what the draft already said (13 v2 finals of
2026-12-07: 6 left as the draft). The checks (custseg.evaluation: limits, asks, addressed,
claims) say what is really missing or wrong, so their edits come first; the LLM's own edits
follow, and one that only asks to add what the text already says is recorded as not applied
without spending a call (`custseg.agents.edits.already_said`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from custseg.agents.edits import (
    FIX,
    MIN_REST_WORDS,
    OLD_CHARS,
    Asked,
    Patch,
    figures_sentence,
    words,
)
from custseg.conversation import Segment
from custseg.evaluation.addressed import task_target
from custseg.evaluation.asks import task_asks
from custseg.evaluation.grounding import name_spans, segment_key
from custseg.evaluation.limits import ANSWERS, WHOLE, task_limits

_SPLIT = re.compile(r"^(?P<what>.*) \(task: (?P<rule>[^()]*)\)$", re.DOTALL)
_GIVES = re.compile(r"^gives (?P<n>\d+) ")
_NUMBERED = re.compile(r"^numbered up to (?P<n>\d+)$")
_MEASURED = re.compile(r"^(?P<n>[\d.,]+) ")
_SAID_OF = re.compile(r"^(?P<written>.*) \(said of (?P<name>.+): (?P<value>[\d.]+)\)$")
_FIGURE_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_MISSING = re.compile(r"\(missing: (?P<names>[^)]*)\)$")
_CLAIMED = re.compile(r"^says (?P<name>.+?) \([^()]*\) has the (?P<word>\w+)")
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n")
_ADDRESSES = re.compile(r"^addresses (?P<named>.+?); (?P<why>.+): (?P<target>.+)$")
_PARTS = {
    "an offer": "Add one concrete offer for {who}: what they get (a perk, gift, event or "
    "service) and how to claim it, in one sentence.",
    "a number": "State the figure the task asks for ({rule}) as a number from Facts.",
    "a reason": 'Add one sentence that says why, starting with "because", using {who}\'s '
    "figures from Facts.",
}


def _who(task: str, segments: Sequence[Segment]) -> str:
    target = task_target(task, segments) if segments else None
    if target is None:
        return "these customers"
    return " and ".join(f'the "{s.name}" segment' for s in target.segments)


def _by_name(segments: Sequence[Segment], name: str) -> Segment | None:
    return next((s for s in segments if s.name.casefold() == name.strip().casefold()), None)


def _limited(task: str) -> bool:
    """Whether the text is held to a length: a sentence more from code would break it."""
    return any(lim.unit in ("characters", "words") for lim in task_limits(task))


def _shown(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _opening(text: str) -> str:
    """The first sentence or line, as the eval's `restated` reads it."""
    return re.split(r"(?<=[.!?])\s+|\n", text.strip(), maxsplit=1)[0]


def _unfinished(text: str) -> str:
    """What follows the text's last sentence end (the part cut off mid-sentence)."""
    ends = [m.end() for m in re.finditer(r"[.!?:](?=\s|$)|\n", text.strip())]
    return text.strip()[ends[-1] :].strip() if ends else ""


def _cut(text: str, part: str) -> Patch | None:
    """A patch cutting `part` from `text` when enough of an answer is left."""
    rest = text.replace(part, "", 1) if part else text
    return Patch(old=part, new="") if part and len(words(rest)) >= MIN_REST_WORDS else None


def _task_edit(
    text: str, what: str, rule: str, task: str, segments: Sequence[Segment]
) -> Asked | None:
    """The edit for a broken limit or ask of the task (`rule` as the task writes it)."""
    problem = f"{what} (task: {rule})"
    ask = next((a for a in task_asks(task) if a.written == rule), None)
    if ask is not None and ask.what in _PARTS:
        return Asked(_PARTS[ask.what].format(who=_who(task, segments), rule=rule), problem)
    if ask is not None:
        noun = ask.what.removesuffix("s")
        if (gives := _GIVES.match(what)) and int(gives["n"]) < ask.n:
            more = ask.n - int(gives["n"])
            return Asked(
                f"Add {more} more {noun}{'s' if more > 1 else ''}, so the answer gives {ask.n} "
                f"({rule}): each new and concrete, numbered like the others.",
                problem,
            )
        return Asked(
            f"Cut the answer to {ask.n} {ask.what} ({rule}): keep the {ask.n} most concrete, "
            "drop the rest.",
            problem,
        )
    limit = next((lim for lim in task_limits(task) if lim.written == rule), None)
    if limit is not None:
        used = _MEASURED.match(what)
        if limit.unit == "budget":
            has = f"; it spends {used['n']} of it" if used else ""
            return Asked(f"Cut the spend so it stays within {rule}{has}.", problem)
        has = f" (it has {used['n']} {limit.unit})" if used else ""
        return Asked(
            f"Shorten the answer to {rule}{has}: cut filler words and any sentence the task "
            "does not need.",
            problem,
        )
    if rule == ANSWERS:
        return Asked("Cut the opening sentence, which only restates the task; start with the "
                     "answer.", problem, _cut(text, _opening(text)))  # fmt: skip
    if rule == WHOLE:
        return Asked("Finish the last sentence, which stops mid-way, or cut it.", problem,
                     _cut(text, _unfinished(text)))  # fmt: skip
    if what.startswith("offers "):
        offer = what.removeprefix("offers ")
        return Asked(
            f'Replace "{offer}" with a perk that is no discount (early access, a gift, a '
            f"service): the task says {rule}.",
            problem,
        )
    return None


def _figure_patch(written: str, value: float) -> Patch | None:
    """The written figure with its number made the model's ("17%" → "19.5%")."""
    numbers = _FIGURE_NUMBER.findall(written)
    if len(numbers) != 1:
        return None
    return Patch(old=written, new=written.replace(numbers[0], _shown(value), 1))


def _added(sentence: str) -> Patch:
    """Code's addition: the model's figures, past the cap held on the LLM's words."""
    return Patch.model_construct(old="", new=sentence)


def _claim_sentence(text: str, said: re.Match[str], segments: Sequence[Segment]) -> str | None:
    """The sentence of `text` making the claim `said` (naming its segment, with its
    superlative): words the LLM can copy as the ones to change (it had copied the check's
    paraphrase, which the text does not contain)."""
    segment = _by_name(segments, said["name"])
    if segment is None:
        return None
    key, word = segment_key(segment.name), said["word"].casefold()
    for sentence in _SENTENCES.split(text):
        named = next((s.start for s in name_spans(sentence) if s.key == key), None)
        if named is None or word not in sentence.casefold():
            continue
        if named and sentence[named - 1] in "\"'“‘«":  # from the name's opening quote
            named -= 1
        for span in (sentence, sentence[named:]):  # the whole sentence, else from the name on
            if len(span.strip()) < OLD_CHARS - 1:
                return span.strip()
        return None
    return None


def _claim_edit(text: str, claim: str, task: str, segments: Sequence[Segment]) -> Asked:
    problem = f"false claim: {claim}"
    target = task_target(task, segments) if segments else None
    if claim.startswith("names no segment") and target is not None:
        names = " and ".join(f'"{s.name}"' for s in target.segments)
        sentence = " ".join(figures_sentence(s) for s in target.segments)
        patch = None if _limited(task) else _added(sentence)
        return Asked(f"Name the segment the task asks for: {names}.", problem, patch)
    if (missing := _MISSING.search(claim)) is not None:
        left = [s for n in missing["names"].split(", ") if (s := _by_name(segments, n))]
        names = ", ".join(f'"{s.name}"' for s in left) or missing["names"]
        sentence = " ".join(figures_sentence(s) for s in left)
        patch = None if _limited(task) or not left else _added(sentence)
        return Asked(f"Add one sentence on each segment the answer leaves out: {names}.",
                     problem, patch)  # fmt: skip
    if (addresses := _ADDRESSES.match(claim)) is not None:
        return Asked(
            f"Answer about {addresses['target']}, not {addresses['named']}: {addresses['why']}.",
            problem,
        )
    if claim.startswith("names ") and "the task asks for" in claim:
        return Asked(f"Name as many segments as the task asks for ({claim}).", problem)
    if "the order is" in claim:
        order = claim.split("the order is", 1)[1].split(" (the task")[0].strip()
        return Asked(f"Put the segments in the model's order: {order}.", problem)
    edit = f"Correct this claim, which the model's figures contradict: {claim}."
    said = _CLAIMED.match(claim)
    if said is None or (sentence := _claim_sentence(text, said, segments)) is None:
        return Asked(edit, problem)
    patch = _unclaimed(sentence, said["word"])
    return Asked(f'{edit} The words to change: "{sentence}"', problem, patch)


def _unclaimed(sentence: str, superlative: str) -> Patch | None:
    """Code's patch for a false superlative: its "the lowest" made "a"/"an", the figure kept
    ("the lowest average annual income (61 k$)" → "an average annual income (61 k$)"). The
    1.5B model, shown the words, returned them unchanged or with their quotes dropped."""
    found = re.search(rf"\bthe {re.escape(superlative)}\s+(\w)", sentence, re.IGNORECASE)
    if found is None:
        return None
    article = "an" if found[1].casefold() in "aeiou" else "a"
    if sentence[found.start()].isupper():
        article = article.capitalize()
    return Patch(
        old=sentence, new=f"{sentence[: found.start()]}{article} {sentence[found.start(1) :]}"
    )


def edit_for(text: str, problem: str, task: str, segments: Sequence[Segment]) -> Asked:
    """One problem of `text` (as `enforce.problems` words it) as a concrete edit, with a code
    patch where code can make it; a problem no rule knows keeps the general fix instruction."""
    if (split := _SPLIT.match(problem)) is not None:
        made = _task_edit(text, split["what"], split["rule"], task, segments)
        if made is not None:
            return made
    if problem.startswith("not the model's segment: "):
        name = problem.removeprefix("not the model's segment: ")
        known = ", ".join(f'"{s.name}"' for s in segments)
        return Asked(f'Replace "{name}" with the model\'s segment it means: one of {known}.',
                     problem)  # fmt: skip
    if problem.startswith("wrong figure: "):
        wrong = problem.removeprefix("wrong figure: ")
        if (said := _SAID_OF.match(wrong)) is not None:
            value = float(said["value"])
            return Asked(
                f'Change "{said["written"]}" to the model\'s figure for "{said["name"]}": '
                f"{_shown(value)}.",
                problem,
                _figure_patch(said["written"], value),
            )
        return Asked(f'Correct or cut "{wrong}": it is none of the model\'s figures.', problem)
    if problem.startswith("false claim: "):
        return _claim_edit(text, problem.removeprefix("false claim: "), task, segments)
    return Asked(f"{FIX}{problem}", problem)


def check_edits(
    text: str, problems: Sequence[str], task: str, segments: Sequence[Segment]
) -> list[Asked]:
    """The checks' findings on `text` as edits, one per problem (a repeated one once)."""
    return [edit_for(text, p, task, segments) for p in dict.fromkeys(problems)]
