"""The three agents' jobs as pure functions: which message each answers, and how."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from custseg.agents.envelope import Envelope, ModelInfo, reply
from custseg.conversation import GroundedIn, MessageType, describe_segment
from custseg.llm import Message, Provider

RoleName = Literal["planner", "writer", "reviewer"]
CONTEXT = (
    "You work in the marketing team of a retailer that segments its customers by annual income "
    "(k$) and spending score (1-100) with KMeans."
)


@dataclass(frozen=True)
class Role:
    name: RoleName
    consumes: MessageType
    produces: MessageType


ROLES: dict[str, Role] = {
    "planner": Role("planner", "task", "plan"),
    "writer": Role("writer", "plan", "draft"),
    "reviewer": Role("reviewer", "draft", "final"),
}


class Review(BaseModel):
    """The reviewer's structured reply: the critique and the answer kept apart."""

    review: str = Field(description="two sentences: what the draft got wrong or missed")
    final: str = Field(
        description="only the improved answer itself, as the team would send it: no words about "
        "the draft, the review or the reviewer"
    )


# Sentences about the process rather than the answer (what a small model adds to its final).
META_TALK = re.compile(
    r"\b(reviewer|reviewed|the draft|this (revised|improved|updated|final|new) "
    r"(answer|version|response|draft|text)|would help the (reviewer|team review))\b",
    re.IGNORECASE,
)
# Chinese, Japanese and Korean script: the bundled model sometimes drifts into it mid-sentence.
OTHER_SCRIPT = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]")
# Pieces of an answer: sentences (split after . ! ?) and lines, separators kept.
_PIECES = re.compile(r"((?<=[.!?])[ \t]+|\n+)")
_ENDED = re.compile(r"[.!?:][)\]\"'*]*$|^\W*$")
_LIST_MARKER = re.compile(r"^\s*(\d+[.)]|[-*•])\s*$")


def _trim_edges(text: str) -> str:
    """Whitespace and the stray brackets a JSON reply leaves at either end (pairs stay)."""
    text, changed = text.strip(), True
    while changed:
        changed = False
        for opener, closer in ("{}", "[]"):
            surplus = text.count(closer) - text.count(opener)
            stray = closer if surplus > 0 else opener  # the kind there is one too many of
            if surplus and text.endswith(stray):
                text, changed = text[:-1].rstrip(), True
            elif surplus and text.startswith(stray):
                text, changed = text[1:].lstrip(), True
    return text


def _pieces(text: str) -> list[tuple[str, str]]:
    parts = _PIECES.split(text)
    return [(parts[i], parts[i + 1] if i + 1 < len(parts) else "") for i in range(0, len(parts), 2)]


def tidy_final(text: str, cut: bool = False) -> str:
    """The Reviewer's final as the answer alone: stray brackets off, sentences about the review
    or in another script dropped, and, when the reply was `cut` at its length cap, trimmed back
    to its last complete sentence. Never adds text; rather than return nothing it skips the
    trim back, then falls back to the stripped input (so tidying a tidy text changes nothing)."""
    stripped = _trim_edges(text)
    return _tidied(stripped, cut) or (cut and _tidied(stripped, False)) or stripped


def _tidied(stripped: str, cut: bool) -> str:
    kept: list[tuple[str, str]] = []
    for piece, sep in _pieces(stripped):
        if not (META_TALK.search(piece) or OTHER_SCRIPT.search(piece)):
            kept.append((piece, sep))
        elif kept and "\n" in sep and "\n" not in kept[-1][1]:
            kept[-1] = (kept[-1][0], sep)  # a dropped line's break still separates its neighbours
    if cut and kept and not _ENDED.search(kept[-1][0].rstrip()):
        ended = [i for i, (p, _) in enumerate(kept) if _ENDED.search(p.rstrip()) and p.strip()]
        if ended:
            kept = kept[: ended[-1] + 1]
    while True:  # a dangling list number, then brackets it exposes, until nothing changes
        while kept and _LIST_MARKER.match(kept[-1][0]):
            kept.pop()
        joined = "".join(p + sep for p, sep in kept).strip()
        tidy = _trim_edges(joined)
        if tidy == joined:
            return tidy
        kept = _pieces(tidy)


INSTRUCTIONS: dict[str, str] = {
    "planner": "You are the Planner. Write a numbered plan of 3 to 5 short, concrete steps that "
    "answer the task. Output only the plan.",
    "writer": "You are the Writer. Follow the plan and write a clear, specific answer to the task "
    "in at most 150 words. Output only the answer.",
    "reviewer": "You are the Reviewer. Check the draft for relevance to the task, correctness and "
    "clarity. Reply in JSON with a short `review` and an improved `final` answer (at most 90 "
    "words) that fixes what you found. The `final` is only the answer, in English, as the team "
    "would send it: never mention the draft, the review or yourself.",
}


def grounding_context(grounding: GroundedIn) -> str:
    """The segments as the agents are told them: the only ones that exist."""
    lines = "\n".join(f"- {describe_segment(s)}" for s in grounding.segments)
    return (
        f"The retailer's customer segments today (model {grounding.model} v{grounding.version}; "
        f"income in k$, spending score 1-100). These are the only segments; use their names and "
        f"figures exactly and invent no others:\n{lines}"
    )


def prompt(
    role: RoleName, task: str, grounding: GroundedIn | None = None, **context: str
) -> list[Message]:
    """The chat for `role`: shared context, the champion's segments, its instructions; then the
    task and its inputs."""
    parts = [f"Task: {task}", *(f"{name.capitalize()}:\n{text}" for name, text in context.items())]
    known = f"\n{grounding_context(grounding)}\n" if grounding else " "
    return [
        {"role": "system", "content": f"{CONTEXT}{known}{INSTRUCTIONS[role]}"},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def answer(
    role: Role,
    incoming: Envelope,
    llm: Provider,
    max_tokens: int,
    grounding: GroundedIn | None = None,
) -> Envelope:
    """Ask the LLM to do `role`'s job on `incoming`, told the champion's segments (`grounding`),
    and wrap the result as the reply envelope, which records the model version behind them.
    A task that asks for agent variant v2 gets custseg.agents.roles_v2's answer."""
    from custseg.agents.roles_v2 import answer_v2, is_v2

    if is_v2(incoming.variant):
        from custseg.agents.grounding import served_predict

        return answer_v2(role, incoming, llm, max_tokens, grounding, served_predict)
    task = incoming.content["task"]
    model = ModelInfo(
        provider=llm.name,
        name=llm.model,
        params={"temperature": llm.temperature, "max_tokens": max_tokens},
    )
    if role.name == "planner":
        plan = llm.complete(prompt("planner", task, grounding), max_tokens=max_tokens).text.strip()
        content = {"task": task, "plan": plan}
    elif role.name == "writer":
        plan = incoming.content["plan"]
        chat = prompt("writer", task, grounding, plan=plan)
        draft = llm.complete(chat, max_tokens=max_tokens).text.strip()
        content = {"task": task, "plan": plan, "draft": draft}
    else:
        draft = incoming.content["draft"]
        review, _ = llm.complete_json(
            prompt("reviewer", task, grounding, draft=draft), Review, max_tokens=max_tokens
        )
        # A final as long as the schema allows was cut there by the grammar, maybe mid-word.
        cut = len(review.final) >= getattr(llm, "max_string_length", 10**9) - 1
        content = {
            "task": task,
            "draft": draft,
            "final": tidy_final(review.final, cut=cut),
            "review": review.review.strip(),
        }
    return reply(incoming, role.produces, role.name, content, model, grounding)
