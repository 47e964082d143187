"""The task's hard limits enforced on a reply before it is sent (agent variant v2).

The limits and facts are the eval's (custseg.evaluation.limits: lengths, item counts, parts,
budgets; custseg.evaluation.addressed: segment names, figures and claims), so what is enforced
here is what is scored there. A reply that breaks one gets cheap deterministic repairs first
(hashtags stripped, cut back at a sentence boundary under a length limit), then at most
`attempts` LLM revisions told what is wrong; what is still broken is sent with the breaches
recorded in the envelope, never silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from custseg.agents.envelope import ToolCall
from custseg.agents.tools import count_text
from custseg.conversation import Segment
from custseg.evaluation.addressed import check_answer
from custseg.evaluation.limits import Limit, check_limits, task_limits

Revise = Callable[[str, list[str]], str]  # (reply, what is wrong) → a revised reply

_HASHTAG = re.compile(r"(?<![\w&])#[^\W\d_][\w-]*")
SENTENCE_END = re.compile(r"[.!?][)\]\"'”’]*(?=\s|$)")  # closing quotes and brackets included
_LIST_NUMBER = re.compile(r"(?:^|\s)\d{1,2}[.)]$")  # "2." ends a list marker, not a sentence
MIN_WORDS_KEPT = 3  # a cut that keeps less is no answer: left to a revision


def problems(text: str, task: str, segments: Sequence[Segment] | None) -> list[str]:
    """What `text` breaks: the task's limits and asks, and (with a profile) the facts."""
    found = check_limits(text, task).broken
    if segments:
        check = check_answer(text, task, segments)
        found += [f"not the model's segment: {s}" for s in check.invented]
        found += [f"wrong figure: {w}" for w in check.wrong]
        found += [f"false claim: {c}" for c in check.claims]
    return found


def strip_hashtags(text: str) -> str:
    """Hashtags out (an SMS or a brief is not a post), and the space they leave."""
    stripped = _HASHTAG.sub("", text)
    return "\n".join(re.sub(r"[ \t]{2,}", " ", line).rstrip() for line in stripped.split("\n"))


def cut_to(text: str, limit: Limit) -> str:
    """`text` cut back to its last sentence end that keeps a character or word limit; the text
    as it is if it keeps it already or no sentence end does."""
    text = text.strip()
    if limit.measure(text) <= limit.at_most:
        return text
    ends = [
        m.end() for m in SENTENCE_END.finditer(text) if not _LIST_NUMBER.search(text[: m.end()])
    ]
    for end in reversed(ends):
        kept = text[:end].strip()
        if limit.measure(kept) <= limit.at_most:
            return kept if len(kept.split()) >= MIN_WORDS_KEPT else text
    return text


def repair(text: str, task: str) -> tuple[str, list[str]]:
    """Cheap deterministic repairs for the length limits `task` sets, and what was done."""
    notes = []
    lengths = [lim for lim in task_limits(task) if lim.unit in ("characters", "words")]
    if not lengths:
        return text, notes
    if any(lim.measure(text) > lim.at_most for lim in lengths) and _HASHTAG.search(text):
        text = strip_hashtags(text).strip()
        notes.append("hashtags stripped")
    for lim in lengths:
        cut = cut_to(text, lim)
        if cut != text:
            notes.append(f"cut at a sentence end to keep {lim.written}")
            text = cut
    return text, notes


@dataclass
class Enforced:
    text: str
    revisions: list[str] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)


def enforce(
    text: str,
    task: str,
    segments: Sequence[Segment] | None,
    revise: Revise,
    attempts: int = 1,
    who: str = "reply",
) -> Enforced:
    """Check `text` against the task's limits (and the facts); repair, revise at most
    `attempts` times, and return the text to send with what it went through and what it still
    breaks. A revision that breaks more than what it revised, or as much at more length, is
    not kept."""
    done = Enforced(text)
    counts = bool([lim for lim in task_limits(task) if lim.unit in ("characters", "words")])
    if counts and _HASHTAG.search(text):  # a length-limited text (an SMS, a brief): no tags
        done.text = strip_hashtags(text).strip()
        done.revisions.append(f"{who}: hashtags stripped")

    def measured(reply: str) -> list[str]:
        if counts:  # the count tool: what the agent measured its reply with
            done.tool_calls.append(
                ToolCall(name="count_text", arguments={"of": who}, result=count_text(reply))
            )
        return problems(reply, task, segments)

    found = measured(done.text)
    for attempt in range(attempts + 1):
        if not found:
            break
        repaired, notes = repair(done.text, task)
        if notes:
            still = measured(repaired)
            if len(still) <= len(found):
                done.text, found = repaired, still
                done.revisions.append(f"{who}: " + "; ".join(notes))
            if not found or attempt == attempts:
                break
        elif attempt == attempts:
            break
        revised = revise(done.text, found).strip()
        if not revised:
            continue
        revised, notes = repair(revised, task)
        still = measured(revised)
        # Fewer problems, or as many in no more words (a revision may not trade one for two).
        kept = len(still) < len(found) or (
            len(still) == len(found) and len(revised) <= len(done.text)
        )
        done.revisions.append(
            f"{who}: LLM revision {attempt + 1} for: {'; '.join(found)}"
            + ("" if kept else " (not kept: no better)")
        )
        if kept:
            done.text, found = revised, still
    done.breaches = [f"{who}: {problem}" for problem in found]
    return done
