"""Agent variant v2: the three agents with facts from tools, limits enforced before sending, and
a Reviewer whose structured edits change the final (custseg.agents.roles keeps v1).

Per reply: the deterministic tool pre-step (custseg.agents.tools) gives the figures, recorded
as tool calls; the LLM writes; the reply loses any sentence of the agents' own instructions
(review.drop_leaks) and is held to the task's limits and the facts (enforce); what it went
through and any breach left are recorded in the envelope's `work`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from custseg.agents.check_edits import check_edits
from custseg.agents.edits import (
    NEW_CHARS,
    Addition,
    Asked,
    Patch,
    apply_edits,
    checked_edits,
    only_adds,
    short_answer_edit,
)
from custseg.agents.enforce import enforce, problems
from custseg.agents.envelope import Envelope, ModelInfo, ToolCall, Work, reply
from custseg.agents.review import (
    ReviewEdits,
    clean_edits,
    drop_echoes,
    drop_leaks,
    review_text,
)
from custseg.agents.roles import CONTEXT, OTHER_SCRIPT, Role, tidy_final
from custseg.agents.tools import Predict, facts_text, task_tool_calls
from custseg.conversation import GroundedIn, Segment
from custseg.evaluation.asks import task_asks
from custseg.evaluation.limits import task_limits
from custseg.llm import Message, Provider

T = TypeVar("T")

VARIANT = "v2"
PATCH_TOKENS = 256  # one edit's JSON: its strings are capped (edits.OLD_CHARS, NEW_CHARS)
REVISIONS = 1  # LLM revisions per reply that breaks a limit (then it is sent, breach recorded)
FACTS_RULE = (
    "Use only the segment names and figures in Facts, written exactly as there; invent no "
    "other segment, figure or statistic."
)
INSTRUCTIONS_V2: dict[str, str] = {
    "planner": "You are the Planner. Write a numbered plan of 3 to 5 short, concrete steps that "
    f"answer the task. {FACTS_RULE} Output only the plan.",
    "writer": "You are the Writer. Follow the plan and answer the task directly and specifically "
    f"in at most 120 words. Do not repeat the task. {FACTS_RULE} Output only the answer.",
    "review": "You are the Reviewer. List at most 3 concrete edits that would make the draft a "
    "better answer to the task: each one instruction naming exactly what to add (the fact, "
    "offer, figure or step itself), what to cut, or which words to change and to what. Ask for "
    "no edit the draft already satisfies. Reply in JSON with an `edits` list (empty if the "
    "draft needs no change).",
    "add": "Write only the words this edit adds to the draft: one or two concrete, specific "
    "sentences (or one list item, numbered like the draft's), in the draft's style, saying "
    f"nothing the draft already says, with no placeholder. {FACTS_RULE} Reply in JSON with the "
    "words in `new`.",
    "edit": "Apply only this edit to the draft. Reply in JSON: `old` is the few words or the "
    "one sentence of the draft that the edit changes, copied exactly, and `new` is what replaces "
    f"them: concrete and specific, in the draft's style, with no placeholder. {FACTS_RULE}",
    "revise": "Rewrite the answer so it fixes every problem listed and still answers the task. "
    f"{FACTS_RULE} Output only the answer.",
}


def _notes(notes: list[str], most: int = 20) -> tuple[str, ...]:
    """Notes as the envelope takes them: at most `most`, each at most 1000 characters."""
    return tuple(n if len(n) <= 1000 else n[:999] + "…" for n in notes[:most])


def is_v2(variant: str) -> bool:
    return variant == VARIANT or variant.startswith(f"{VARIANT}-")


def chat(instructions: str, facts: str, task: str, **context: str) -> list[Message]:
    parts = [f"Task: {task}", *(f"{name.capitalize()}:\n{text}" for name, text in context.items())]
    return [
        {
            "role": "system",
            "content": f"{CONTEXT}\nFacts (from the model's tools):\n{facts}\n{instructions}",
        },
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def limits_line(task: str) -> str:
    """The task's hard limits and asked counts, as the agents are reminded of them."""
    limits = [lim.written for lim in task_limits(task)]
    limits += [ask.written for ask in task_asks(task) if ask.n > 1]
    return f"Hard limits of the task (keep them): {'; '.join(limits)}." if limits else ""


def clean(text: str) -> tuple[str, list[str]]:
    """A reply without the prompt's sections echoed after it, instruction sentences, stray
    brackets or another script."""
    text, echoed = drop_echoes(text)
    kept, leaks = drop_leaks(text, INSTRUCTIONS_V2.values())
    tidy = tidy_final(kept) if kept else kept
    notes = [f"dropped a repeated instruction: {leak[:80]}" for leak in leaks]
    notes += ["dropped the prompt's sections echoed after the answer"] if echoed else []
    if OTHER_SCRIPT.search(text) and not OTHER_SCRIPT.search(tidy):
        notes.append("dropped sentences in another script")
    return tidy, notes


class Counted:
    """A provider that counts its calls (a v2 reply records them: its time is mostly theirs)."""

    def __init__(self, llm: Provider) -> None:
        self.llm, self.calls = llm, 0

    def complete(self, messages: list[Message], max_tokens: int) -> str:
        self.calls += 1
        return self.llm.complete(messages, max_tokens=max_tokens).text

    def complete_json(self, messages: list[Message], schema: type[T], max_tokens: int) -> T:
        self.calls += 1
        return self.llm.complete_json(messages, schema, max_tokens=max_tokens)[0]


def answer_v2(
    role: Role,
    incoming: Envelope,
    llm: Provider,
    max_tokens: int,
    grounding: GroundedIn | None,
    predict: Callable[[GroundedIn], Predict | None] = lambda _g: None,
) -> Envelope:
    """`role`'s v2 reply to `incoming` (the worker's `answer` for a v2 task)."""
    task = incoming.content["task"]
    counted_llm = Counted(llm)
    calls = task_tool_calls(task, grounding, predict(grounding)) if grounding else []
    facts = facts_text(calls, grounding) if grounding else "(no model profile available)"
    segments = grounding.segments if grounding else None
    limits = limits_line(task)

    def revise(text: str, found: list[str]) -> str:
        asked = chat(
            INSTRUCTIONS_V2["revise"],
            facts,
            f"{task}\n{limits}".strip(),
            answer=text,
            problems="\n".join(found),
        )
        return clean(counted_llm.complete(asked, max_tokens=max_tokens))[0]

    if role.name == "planner":
        plan = counted_llm.complete(
            chat(INSTRUCTIONS_V2["planner"], facts, task), max_tokens=max_tokens
        )
        text, notes = clean(plan.strip())
        content = {"task": task, "plan": text or plan.strip()}
        work = Work(tool_calls=tuple(calls), revisions=_notes(notes))
    elif role.name == "writer":
        plan = incoming.content["plan"]
        asked = chat(INSTRUCTIONS_V2["writer"], facts, f"{task}\n{limits}".strip(), plan=plan)
        text, notes = clean(counted_llm.complete(asked, max_tokens=max_tokens).strip())
        done = enforce(text, task, segments, revise, REVISIONS, who="draft")
        content = {"task": task, "plan": plan, "draft": done.text or text}
        work = Work(
            tool_calls=tuple((calls + done.tool_calls)[:50]),
            revisions=_notes(notes + done.revisions),
            breaches=_notes(done.breaches),
        )
    else:
        content, work = _review(incoming, counted_llm, max_tokens, facts, segments, calls)
    model = ModelInfo(
        provider=llm.name,
        name=llm.model,
        params={
            "temperature": llm.temperature,
            "max_tokens": max_tokens,
            "revisions": REVISIONS,
            "llm_calls": counted_llm.calls,
        },
    )
    return reply(incoming, role.produces, role.name, content, model, grounding, work=work)


def asking(facts: str, task: str, instructions: str, **context: str) -> list[Message]:
    """A Reviewer chat with its instructions last, so the review and each edit share the
    prompt up to the draft (a prompt cache reads that once)."""
    parts = [f"Task: {task}", *(f"{name.capitalize()}:\n{text}" for name, text in context.items())]
    return [
        {"role": "system", "content": f"{CONTEXT}\nFacts (from the model's tools):\n{facts}"},
        {"role": "user", "content": "\n\n".join([*parts, instructions])},
    ]


def _review(
    incoming: Envelope,
    llm: Counted,
    max_tokens: int,
    facts: str,
    segments: Sequence[Segment] | None,
    calls: list[ToolCall],
) -> tuple[dict, Work]:
    """The final built from the draft (custseg.agents.edits): the edits code can make, then
    the checks' findings and the review's edits applied one at a time, each kept only if it
    breaks nothing; what is still broken is recorded, never sent silently."""
    task, draft = incoming.content["task"], incoming.content["draft"]
    header = f"{task}\n{limits_line(task)}".strip()

    def found(text: str) -> list[str]:
        return problems(text, task, segments)

    text, outcomes = checked_edits(draft, task, segments)
    # The checks' findings first, as concrete edits (code writes the ones it can); the LLM's
    # review is told them, so it looks for what they cannot see.
    todo = check_edits(text, found(text), task, segments or ())
    todo += [short] if (short := short_answer_edit(text, task)) else []
    told = [e.edit[:160] for e in outcomes] + [a.edit[:160] for a in todo]
    checks = {"checks": f"Made or asked already (do not repeat): {'; '.join(told[:6])}"}
    asked = asking(facts, header, INSTRUCTIONS_V2["review"], draft=text, **(checks if told else {}))
    review = llm.complete_json(asked, ReviewEdits, max_tokens=max_tokens)  # 4 capped edits
    todo += [Asked(e) for e in clean_edits(review.edits)]

    def ask(current: str, edit: str) -> Patch:
        kind, schema = ("add", Addition) if only_adds(edit) else ("edit", Patch)
        chat_ = asking(facts, header, f"{INSTRUCTIONS_V2[kind]}\nEdit: {edit}", draft=current)
        patch = Patch(**llm.complete_json(chat_, schema, max_tokens=PATCH_TOKENS).model_dump())
        cut = len(patch.new) >= NEW_CHARS - 1  # the grammar's cap: maybe mid-sentence
        return patch.model_copy(update={"new": clean(tidy_final(patch.new, cut=cut))[0]})

    applied = apply_edits(text, todo, task, found, ask)
    done = enforce(applied.text, task, segments, lambda t, _f: t, 0, who="final")
    outcomes += applied.outcomes
    content = {"task": task, "draft": draft, "final": done.text, "review": review_text(outcomes)}
    work = Work(
        tool_calls=tuple((calls + done.tool_calls)[:50]),
        revisions=_notes(applied.notes + done.revisions),
        breaches=_notes(done.breaches),
        edits=tuple(outcomes[:20]),
    )
    return content, work
