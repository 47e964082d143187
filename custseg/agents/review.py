"""The v2 Reviewer's structured review and the checks around it: the review is a list of
concrete edits (JSON, validated; custseg.agents.edits applies them and records per edit
whether it was applied and why not), and no sentence of the agents' own instructions may
reach an answer."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Annotated

from pydantic import BaseModel, Field, ValidationError

from custseg.agents.envelope import Edit

MAX_EDITS = 4
EDIT_CHARS = 200


class ReviewEdits(BaseModel):
    """The review: up to MAX_EDITS edits, each one instruction (empty: nothing to change)."""

    # Each edit capped (the grammar closes it there), so a review fits its token budget.
    edits: list[Annotated[str, Field(max_length=EDIT_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_EDITS,
        description="concrete edits to the draft, one instruction each; empty if none needed",
    )


_SPACE = re.compile(r"\s+")
_LIST_MARK = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s*")


def clean_edits(raw: Iterable[str]) -> list[str]:
    """The review's edits as kept: stripped of list marks and space, empty and repeated ones
    dropped, each at most EDIT_CHARS characters, at most MAX_EDITS."""
    kept: list[str] = []
    for edit in raw:
        text = _SPACE.sub(" ", _LIST_MARK.sub("", str(edit))).strip()[:EDIT_CHARS].strip()
        if len(re.findall(r"[^\W\d_]+", text)) >= 2 and text.casefold() not in map(
            str.casefold, kept
        ):
            kept.append(text)
    return kept[:MAX_EDITS]


def parse_edits(text: str) -> list[str]:
    """The edits of a JSON review reply; ValueError (one line) if it is not a valid review."""
    try:
        review = ReviewEdits.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ValueError(f"invalid review: {where}: {first['msg']}") from None
    return clean_edits(review.edits)


def review_text(outcomes: Sequence[Edit]) -> str:
    """The review as the conversation keeps it: the edits asked for, each with its outcome."""
    if not outcomes:
        return "No change requested: the draft answers the task within its limits."
    lines = []
    for number, edit in enumerate(outcomes, 1):
        status = "applied" if edit.applied else f"not applied: {edit.why_not}"
        lines.append(f"{number}. {edit.edit} ({status})")
    return "\n".join(lines)


def normalised(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", text.casefold()))


def same_text(a: str, b: str) -> bool:
    """Whether two answers are the same words (case, punctuation and spacing aside)."""
    return normalised(a) == normalised(b)


# --- prompts never leak into answers --------------------------------------------------------

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
LEAK_MIN_WORDS = 6  # shorter instruction sentences ("Output only the plan.") are too common
SHINGLE = 6  # a run of this many words of an instruction sentence found in the answer


def instruction_sentences(prompts: Iterable[str]) -> list[str]:
    """The sentences of the agents' instructions that are long enough to tell apart."""
    found = []
    for prompt in prompts:
        for match in _SENTENCE.finditer(prompt):
            sentence = match.group(0).strip()
            if len(normalised(sentence).split()) >= LEAK_MIN_WORDS and sentence not in found:
                found.append(sentence)
    return found


def _shingles(words: Sequence[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def leaked(answer: str, prompts: Iterable[str]) -> list[str]:
    """The instruction sentences (of `prompts`) an answer repeats: one with a run of SHINGLE
    words in the answer, in order, case and punctuation aside."""
    said = _shingles(normalised(answer).split())
    return [
        sentence
        for sentence in instruction_sentences(prompts)
        if _shingles(normalised(sentence).split()) & said
    ]


def drop_leaks(answer: str, prompts: Iterable[str]) -> tuple[str, list[str]]:
    """`answer` without the sentences that repeat an instruction (every sentence a repeated run
    of words touches), and those instructions; repeated until none is left."""
    sentences = instruction_sentences(prompts)
    found: list[str] = []
    while new := [s for s in leaked(answer, sentences) if s not in found]:
        found += new
        bad = set().union(*(_shingles(normalised(s).split()) for s in new))
        pieces = [m.group(0) for m in _PIECE.finditer(answer)]
        words = [normalised(p).split() for p in pieces]
        flat = [(i, w) for i, ws in enumerate(words) for w in ws]
        touched: set[int] = set()
        for start in range(len(flat) - SHINGLE + 1):
            run = flat[start : start + SHINGLE]
            if tuple(w for _, w in run) in bad:
                touched.update(i for i, _ in run)
        answer = "".join(p for i, p in enumerate(pieces) if i not in touched).strip()
    return answer, found


# Pieces that together are the whole text: sentences with their end marks, bare runs, breaks.
_PIECE = re.compile(r"[^.!?\n]*[.!?]+[ \t]*|[^.!?\n]+|\n+")


# The prompt's own sections ("Problems:", "Edits:", ...) that a small model echoes after its
# answer (seen: a revision that ended with "Problems:" and the problems it was told).
SECTIONS = ("task", "plan", "draft", "edits", "problems", "answer", "facts", "review", "checks")
_SECTION = re.compile(rf"^[ \t*#]*(?:{'|'.join(SECTIONS)})[ \t*]*:[ \t*]*", re.IGNORECASE | re.M)


def drop_echoes(answer: str) -> tuple[str, bool]:
    """`answer` up to the first line that opens one of the prompt's sections (a leading
    "Answer:" label only loses the label); and whether anything was dropped."""
    text = answer.strip()
    for match in _SECTION.finditer(text):
        if match.start() == 0:
            if match.group(0).strip(" \t*#:").casefold() == "answer":
                return drop_echoes(text[match.end() :])[0], True
            continue
        return text[: match.start()].rstrip(), True
    return text, False
