"""The v2 Reviewer's edits applied to the draft one at a time, each checked before it is kept.

The bundled 1.5B model, asked to rewrite a whole draft with every edit applied, returned the
draft unchanged, only the edited part, or declined every edit. So the final is built from the
draft instead: edits the checks can make are made by code (a restated task cut, a segment's
missing figures from the tool facts), and for each of the review's edits the LLM writes only
the words that change (`Patch`: which words of the text to replace, or none to add, and the new
words). Code applies the patch, and keeps the result only if it is a change, keeps every item
the text had, breaks no limit or fact it kept, has no placeholder, is not much shorter unless
the edit asks for a cut, and adds new words when it adds. Otherwise the edit is recorded as not
applied, with the reason. An edit that is not an instruction (a copied draft sentence) is
recorded as not applied and never sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from pydantic import BaseModel, Field

from custseg.agents.enforce import SENTENCE_END
from custseg.agents.envelope import Edit
from custseg.agents.review import same_text
from custseg.conversation import Segment
from custseg.evaluation.addressed import check_answer, task_target
from custseg.evaluation.asks import content_tokens, counted, task_asks
from custseg.evaluation.grounding import name_spans, segment_key
from custseg.evaluation.limits import task_limits

MAX_LLM_EDITS = 3  # LLM calls for edits per final: what keeps a v2 conversation's time bounded
OLD_CHARS, NEW_CHARS = 200, 360  # a sentence or two to replace, a few to write: not the answer


class Patch(BaseModel):
    """One edit as the LLM writes it: the text's words it replaces ("" adds) and the new words."""

    old: str = Field(default="", max_length=OLD_CHARS, description="exact words to replace")
    new: str = Field(max_length=NEW_CHARS, description="the new words, concrete")


class Addition(BaseModel):
    """An edit that only adds: the words to add."""

    new: str = Field(max_length=NEW_CHARS, description="the words to add, concrete")


Ask = Callable[[str, str], Patch]  # (current text, one edit) → the LLM's patch
Problems = Callable[[str], list[str]]  # a text → what it breaks of the task's limits and facts

_WORD = re.compile(r"[^\W_]+")
_ADDS = (  # verbs of an edit that only adds words: the LLM writes just those
    "add|include|mention|name|state|say|give|list|specify|quote|cite|offer|suggest|propose|"
    "provide|explain|clarify|describe|detail|expand|elaborate|support|back|justify|attach|"
    "link|insert|append|end"
)
_VERBS = (
    f"{_ADDS}|use|show|emphasi[sz]e|highlight|stress|change|replace|rewrite|rephrase|reword|"
    "make|turn|put|move|start|begin|open|close|split|merge|combine|fix|correct|update|adjust|"
    "shorten|cut|remove|delete|drop|trim|omit|avoid|keep|limit|reduce|condense|simplify|"
    "tighten|focus|target|tailor|personali[sz]e|reorder|rank|sort|prepend"
)
_INSTRUCTION = re.compile(rf"^(?:please\s+)?(?:{_VERBS})\b", re.IGNORECASE)
_ADDITION = re.compile(rf"^(?:please\s+)?(?:{_ADDS})\b", re.IGNORECASE)
_CUTS = re.compile(
    r"\b(?:shorten|cut|remove|delete|drop|trim|omit|condense|tighten|reduce|fewer|shorter|"
    r"concise)\b",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"\[[^\]\n]{1,40}\]|\{[^}\n]{1,40}\}|<[^>\n]{1,40}>|\bX{2,}\b|\.\.\.$")
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")
_LIST_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+", re.MULTILINE)
QUOTES = "\"'“”‘’«»`"  # a model quoting the text swaps these (seen: "X" copied as 'X')
SHORTER = 0.9  # a kept result has at least this share of the text's words, unless it cuts
MIN_NEW_WORDS = 3  # an addition that brings fewer words the text lacks adds nothing
REPEATS = 0.8  # a sentence with this share of its words in the text says nothing new
RESTATED = 0.75  # an opening sentence with this share of its words in the task restates it
MIN_ANSWER_WORDS = 8  # fewer, with no length limit: the draft is not an answer yet
MIN_REST_WORDS = 15  # the answer left after cutting a restated opening must be this long


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def complete_sentences(edit: str) -> str:
    """An edit up to its last complete sentence (seen: "... For example," cut off)."""
    text = edit.strip()
    ends = [m.end() for m in SENTENCE_END.finditer(text)]  # '."' ends one
    return text[: ends[-1]] if ends and ends[-1] < len(text) else text


def is_instruction(edit: str) -> bool:
    """Whether an edit says what to do (starts with an editing verb), rather than being a
    sentence copied from the draft."""
    return bool(_INSTRUCTION.match(edit.strip(" \"'*-")))


def only_adds(edit: str) -> bool:
    """Whether an edit asks only for words added (the LLM then writes just those, and code
    adds them at the end: asked for a replacement, the 1.5B model copied half the draft)."""
    return bool(_ADDITION.match(edit.strip(" \"'*-")))


# Words of an edit that say how, not what: left out when asking whether the text has it.
_HOW = frozenset(
    re.findall(
        r"\w+",
        """add adding include including mention give state say list specify provide explain clarify
describe detail details expand elaborate insert append step steps sentence sentences
draft answer text clear clearly concise specific concrete more example examples figure
figures make show better brief short information part section line also further each
final additional extra new""",
    )
)
ALREADY_SAID = 0.8  # share of an addition's content words the text already has
MIN_ASKED = 2  # content words an addition must ask for before it can be judged said


def already_said(edit: str, text: str) -> bool:
    """Whether an edit that only adds asks for what `text` already says: at
    least MIN_ASKED content words, and ALREADY_SAID of them there (seen: "Add a figure to show
    the mean annual income and spending score of the segment" to a draft that gave both)."""
    if not only_adds(edit):
        return False
    asked = [t for t in content_tokens(edit) if t not in _HOW]
    had = set(words(text))
    if any(t[0].isdigit() and t not in had for t in asked):
        return False  # a figure the text lacks is new (seen: "… for every $100 spent")
    return len(asked) >= MIN_ASKED and sum(t in had for t in asked) / len(asked) >= ALREADY_SAID


def asks_to_cut(edit: str) -> bool:
    return bool(_CUTS.search(edit))


def restates_task(sentence: str, task: str) -> bool:
    """Whether a sentence says little but the task's own words."""
    said = words(sentence)
    asked = set(words(task))
    return len(said) >= 3 and sum(w in asked for w in said) / len(said) >= RESTATED


def cut_restated_task(text: str, task: str) -> str | None:
    """`text` without its opening sentence when that only restates the task and enough of an
    answer follows; None when there is nothing to cut."""
    first = _SENTENCE.match(text.strip())
    if first is None or not restates_task(first.group(0), task):
        return None
    rest = text.strip()[first.end() :].strip()
    return rest if len(words(rest)) >= MIN_REST_WORDS else None


def figures_sentence(segment: Segment) -> str:
    """A segment's figures in one sentence, worded as the grounding check reads them."""
    parts = []
    if segment.size is not None:
        share = f" ({segment.share:.0%} of all customers)" if segment.share is not None else ""
        parts.append(f"{segment.size} customers{share}")
    if segment.mean_income is not None:
        parts.append(f"a mean annual income of {segment.mean_income:.0f} k$")
    if segment.mean_spending is not None:
        parts.append(f"a mean spending score of {segment.mean_spending:.0f}")
    listed = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
    return f'The "{segment.name}" segment has {listed}.'


def missing_figures(text: str, task: str, segments: Sequence[Segment]) -> list[Segment]:
    """The segments the task is about that the text names without citing any figure (or all
    of them when it names none and cites no figure: a vague answer): their figures (from the
    tools) make the answer specific. Not for a text held to a length or to
    a number of lines, where a sentence more would break the task."""
    if not segments or any(lim.unit in ("characters", "words") for lim in task_limits(task)):
        return []
    if any(ask.what in ("lines", "sentences") for ask in task_asks(task)):
        return []
    target = task_target(task, segments)
    check = check_answer(text, task, segments)
    if target is None or check.figures or len(target.segments) > 2:
        return []
    named = {name.casefold() for name in check.segments}
    cited = [s for s in target.segments if _named_in(s, named)]
    # A vague answer (naming none of them, citing no figure, no list of asked items): their
    # figures make it specific. A title-only draft is left to `short_answer_edit`.
    vague = len(words(text)) >= MIN_ANSWER_WORDS and not any(a.n > 1 for a in task_asks(task))
    return cited or (list(target.segments) if vague else [])


def _named_in(segment: Segment, named: set[str]) -> bool:
    key = segment_key(segment.name)
    return any(n == segment.name.casefold() or segment_key(n) == key for n in named)


def add_after_naming(text: str, segment: Segment, sentence: str) -> str:
    """`sentence` put after the sentence (or line) of `text` that first names `segment`,
    else at the end."""
    key = segment_key(segment.name)
    at = next((s.end for s in name_spans(text) if s.key == key), None)
    if at is None:
        return join_added(text, sentence)
    end = re.compile(r"[.!?](?=\s|$)|\n").search(text, at)
    cut = len(text) if end is None else end.end() if end.group(0) != "\n" else end.start()
    return f"{text[:cut].rstrip()} {sentence}{text[cut:]}".strip()


def join_added(text: str, new: str) -> str:
    """New words added at the end: a new list item on its own line, a sentence after prose."""
    text, new = text.rstrip(), new.strip()
    last = text.split("\n")[-1]
    if _LIST_ITEM.match(new) or _LIST_ITEM.match(last):
        return f"{text}\n{new}"
    if text and not re.search(r"[.!?:]['\"”)]*$", text):
        text += "."
    return f"{text} {new}".strip()


def apply_patch(text: str, patch: Patch) -> tuple[str | None, str]:
    """`text` with the patch applied, or None and why it cannot be."""
    old, new = patch.old.strip(), patch.new.strip()
    if not new and not old:
        return None, "the edit came back empty"
    if not old:
        return join_added(text, new), ""
    if len(old) >= OLD_CHARS - 1:
        return None, "it would rewrite more than a sentence or two"
    if old in text:
        if text.rstrip().endswith(old):  # the text's end (an unfinished tail cut): that one
            return (text.rstrip()[: -len(old)] + new).strip(), ""
        return text.replace(old, new, 1).strip(), ""
    loose = re.compile(r"\s+".join(map(_loose_word, old.split())), re.IGNORECASE)
    if found := loose.search(text):
        return (text[: found.start()] + new + text[found.end() :]).strip(), ""
    return None, f"the words to change are not in the text: {old[:80]!r}"


def _loose_word(word: str) -> str:
    """A word of the words to change as a pattern where any quote mark matches any other."""
    quote = f"[{re.escape(QUOTES)}]"
    return "".join(quote if c in QUOTES else re.escape(c) for c in word)


def fresh(added: str, text: str, task: str) -> str:
    """The sentences of `added` that neither repeat `text` (seen: an addition that began by
    copying the draft's first two sentences) nor restate the task ("The customer earns 85k$
    a year.")."""
    had = set(words(text))
    kept = []
    for sentence in re.split(r"(?<=[.!?])[ \t]+|\n+", added.strip()):
        said = words(sentence)
        repeats = not said or sum(w in had for w in said) / len(said) >= REPEATS
        if not repeats and not restates_task(sentence, task):
            kept.append(sentence.strip())
    return " ".join(kept)


def list_items(text: str) -> int:
    return len(_LIST_ITEM.findall(text))


def lost_items(before: str, after: str, task: str) -> list[str]:
    """The counts the task asks for that `before` lists in full and `after` no longer does
    (seen: a final that kept only the edited third metric), and list items gone."""
    lost = []
    for ask in task_asks(task):
        if ask.n > 1 and ask.what in ("items", "lines"):
            had, has = counted(before, ask.what), counted(after, ask.what)
            if had and had[0] >= ask.n and (has is None or has[0] < ask.n):
                lost.append(f"gives fewer than {ask.n} {ask.what} (task: {ask.written})")
    if list_items(after) < list_items(before):
        lost.append(f"lists {list_items(after)} items where it had {list_items(before)}")
    return lost


_MEASURED = re.compile(r"^(\d+) (?:characters|words) \(task:")


def _problem_key(problem: str) -> str:
    """A problem without what was measured ("205 characters (task: under 160 characters)" →
    "(task: under 160 characters)"), so one text's problems can be matched to another's."""
    at = problem.find("(task:")
    return problem[at:] if at >= 0 else problem


def _measured(problem: str) -> float:
    """How far a length problem measured (inf for any other: it is fixed only when gone)."""
    found = _MEASURED.match(problem)
    return int(found[1]) if found else float("inf")


def worse_problems(before: Sequence[str], after: Sequence[str]) -> list[str]:
    """The problems of `after` that `before` did not have, or had with a smaller length."""
    had = {_problem_key(p): _measured(p) for p in before}
    return [
        p
        for p in after
        if _problem_key(p) not in had
        or (_MEASURED.match(p) and _measured(p) > had[_problem_key(p)])
    ]


class Asked(NamedTuple):
    """An edit to apply, the check's finding it is to fix (None: the review's own), and the
    patch code made for it (None: the LLM writes it)."""

    edit: str
    fixes: str | None = None
    patch: Patch | None = None


FIX = "Fix what breaks the task or the facts: "


def fix_edit(problem: str) -> Asked:
    return Asked(f"{FIX}{problem}", problem)


def short_answer_edit(text: str, task: str) -> Asked | None:
    """An edit for an answer too short to answer a task with no length limit (seen: a draft
    that was only its title, "Rewards for Spending")."""
    n = len(words(text))
    if n >= MIN_ANSWER_WORDS or any(
        lim.unit in ("characters", "words") for lim in task_limits(task)
    ):
        return None
    return Asked(f"Add the concrete answer the task asks for: the draft is only {n} words.")


def rejection(
    before: str, after: str, asked: Asked, task: str, problems: Problems, added: str
) -> str | None:
    """Why `after` (the text with the edit applied) is not kept, or None to keep it."""
    if same_text(before, after):
        return "it changes nothing"
    if _PLACEHOLDER.search(added.strip()):
        return f"it leaves a placeholder: {added.strip()[:80]!r}"
    if lost := lost_items(before, after, task):
        return f"it loses what the text had: {'; '.join(lost)}"
    found_before, found_after = problems(before), problems(after)
    if worse := worse_problems(found_before, found_after):
        return f"it breaks the task or the facts: {'; '.join(worse)}"
    if asked.fixes is not None:
        still = [p for p in found_after if _problem_key(p) == _problem_key(asked.fixes)]
        if still and _measured(still[0]) >= _measured(asked.fixes):
            return f"the problem is still there: {still[0]}"
        return None
    if not asks_to_cut(asked.edit) and len(words(after)) < SHORTER * len(words(before)):
        return f"it cuts the text from {len(words(before))} to {len(words(after))} words"
    had = set(words(before))
    if (
        not asks_to_cut(asked.edit)
        and len({w for w in words(added) if w not in had}) < MIN_NEW_WORDS
    ):
        return "it adds nothing the text lacks"
    return None


@dataclass
class Applied:
    """The final as built from the draft: its text, each edit's outcome, and notes."""

    text: str
    outcomes: list[Edit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def checked_edits(
    text: str, task: str, segments: Sequence[Segment] | None
) -> tuple[str, list[Edit]]:
    """The edits code makes (and records as applied): a restated task cut, the figures of the
    segments the task is about when the text names them without any."""
    outcomes = []
    if (rest := cut_restated_task(text, task)) is not None:
        text = rest
        outcomes.append(Edit(edit="Do not restate the task; start with the answer.", applied=True))
    for segment in missing_figures(text, task, segments or ()):
        sentence = figures_sentence(segment)
        text = add_after_naming(text, segment, sentence)
        outcomes.append(Edit(edit=f'Give the "{segment.name}" figures: {sentence}', applied=True))
    return text, outcomes


def applied_patch(
    text: str, patch: Patch, asked: Asked, task: str, problems: Problems
) -> tuple[str | None, str]:
    """`text` with the patch applied if it is kept, else None and why not. An addition keeps
    only its sentences that neither repeat the text nor restate the task."""
    if patch.new and not patch.old.strip():
        patch = patch.model_copy(update={"new": fresh(patch.new, text, task)})
        if not patch.new:
            return None, "it only repeats the text or the task"
    after, why = apply_patch(text, patch)
    if after is None:
        return None, why
    why = rejection(text, after, asked, task, problems, patch.new) or ""
    return (None, why) if why else (after, "")


def apply_edits(
    text: str, edits: Sequence[Asked], task: str, problems: Problems, ask: Ask,
    most: int = MAX_LLM_EDITS,
) -> Applied:  # fmt: skip
    """`edits` applied to `text` one at a time, each kept only if `applied_patch` keeps it:
    a patch code made as it is, any other by `ask` (at most `most` calls); an addition the
    review asks for that the text already says is not asked for. Every edit gets an outcome."""
    done = Applied(text)
    calls = 0
    for asked in edits:
        edit = complete_sentences(asked.edit)
        if asked.fixes is None and not is_instruction(edit):
            why = "not an instruction"
        elif asked.patch is not None:
            after, why = applied_patch(done.text, asked.patch, asked, task, problems)
            if after is not None:
                done.text = after
                done.outcomes.append(Edit(edit=edit, applied=True))
                continue
        elif asked.fixes is None and already_said(edit, done.text):
            why = "the text already says it"
        elif calls >= most:
            why = f"not tried: at most {most} edits per final"
        else:
            calls += 1
            after, why = applied_patch(
                done.text, ask(done.text, edit), asked._replace(edit=edit), task, problems
            )
            if after is not None:
                done.text = after
                done.outcomes.append(Edit(edit=edit, applied=True))
                continue
            done.notes.append(f"edit not applied ({why[:200]}): {edit[:120]}")
        shown = asked.edit if why == "not an instruction" else edit
        done.outcomes.append(Edit(edit=shown, applied=False, why_not=why[:1000]))
    return done
