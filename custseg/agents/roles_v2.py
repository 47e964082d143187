"""Agent variant v2: the three agents with facts from tools, limits enforced before sending, and
a Reviewer whose structured edits change the final (custseg.agents.roles keeps v1).

Per reply: the deterministic tool pre-step (custseg.agents.tools) gives the figures, recorded
as tool calls; the LLM writes; the reply loses any sentence of the agents' own instructions
(review.drop_leaks) and is held to the task's limits and the facts (enforce); what it went
through and any breach left are recorded in the envelope's `work`.
"""

from __future__ import annotations

from collections.abc import Callable

from custseg.agents.enforce import enforce, problems
from custseg.agents.envelope import Envelope, ModelInfo, Work, reply
from custseg.agents.review import (
    EDIT_CHARS,
    FinalReply,
    ReviewEdits,
    clean_edits,
    drop_echoes,
    drop_leaks,
    edit_outcomes,
    review_text,
    same_text,
)
from custseg.agents.roles import CONTEXT, OTHER_SCRIPT, Role, tidy_final
from custseg.agents.tools import Predict, facts_text, task_tool_calls
from custseg.conversation import GroundedIn
from custseg.evaluation.asks import counted, task_asks
from custseg.evaluation.limits import task_limits
from custseg.llm import Message, Provider

VARIANT = "v2"
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
    "review": "You are the Reviewer. List the concrete edits that would make the draft a better "
    "answer to the task: each edit one instruction saying what to add, cut or change. Ask for "
    "no edit the draft already satisfies. Reply in JSON with an `edits` list (empty if the draft "
    "needs no change).",
    "final": "You are the Reviewer. Rewrite the whole draft applying every numbered edit: the "
    "final is the complete answer (every item the task asks for), not only the changed part, "
    f"in at most 120 words. {FACTS_RULE} Reply in JSON with the `final` answer alone, as the "
    "team would send it, and in `declined` the number of each edit you did not apply and why.",
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


def lost_items(draft: str, final: str, task: str) -> list[str]:
    """The counts the task asks for that the draft lists in full and the final no longer does
    (seen: a final that kept only the edited third metric). The eval's ask reader does not
    count items in prose, so this compares the two lists instead."""
    lost = []
    for ask in task_asks(task):
        if ask.n > 1 and ask.what in ("items", "lines"):
            had, has = counted(draft, ask.what), counted(final, ask.what)
            if had and had[0] >= ask.n and (has is None or has[0] < ask.n):
                lost.append(f"gives fewer than {ask.n} {ask.what} (task: {ask.written})")
    return lost


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
    model = ModelInfo(
        provider=llm.name,
        name=llm.model,
        params={"temperature": llm.temperature, "max_tokens": max_tokens, "revisions": REVISIONS},
    )
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
        return clean(llm.complete(asked, max_tokens=max_tokens).text)[0]

    if role.name == "planner":
        plan = llm.complete(chat(INSTRUCTIONS_V2["planner"], facts, task), max_tokens=max_tokens)
        text, notes = clean(plan.text.strip())
        content = {"task": task, "plan": text or plan.text.strip()}
        work = Work(tool_calls=tuple(calls), revisions=_notes(notes))
    elif role.name == "writer":
        plan = incoming.content["plan"]
        asked = chat(INSTRUCTIONS_V2["writer"], facts, f"{task}\n{limits}".strip(), plan=plan)
        text, notes = clean(llm.complete(asked, max_tokens=max_tokens).text.strip())
        done = enforce(text, task, segments, revise, REVISIONS, who="draft")
        content = {"task": task, "plan": plan, "draft": done.text or text}
        work = Work(
            tool_calls=tuple((calls + done.tool_calls)[:50]),
            revisions=_notes(notes + done.revisions),
            breaches=_notes(done.breaches),
        )
    else:
        content, work = _review(incoming, llm, max_tokens, facts, segments, revise, calls)
    return reply(incoming, role.produces, role.name, content, model, grounding, work=work)


def _review(incoming, llm, max_tokens, facts, segments, revise, calls) -> tuple[dict, Work]:
    """The review as edits (the checks' findings first, then the LLM's), then the final that
    applies them, held to the limits; a final that is the draft unchanged while edits were
    asked gets one more try, and is otherwise recorded as applying none."""
    task, draft = incoming.content["task"], incoming.content["draft"]
    limits = limits_line(task)
    found = [f"Fix what breaks the task or the facts: {p}" for p in problems(draft, task, segments)]
    if draft.strip().casefold().startswith(task.strip()[:40].casefold()):
        found.append("Do not restate the task; start with the answer.")
    asked = chat(INSTRUCTIONS_V2["review"], facts, f"{task}\n{limits}".strip(), draft=draft)
    review, _ = llm.complete_json(asked, ReviewEdits, max_tokens=max(96, max_tokens // 3))
    edits = clean_edits([e[:EDIT_CHARS] for e in found] + review.edits)
    notes: list[str] = []
    final, declined = draft, []
    if edits:
        numbered = "\n".join(f"{i}. {e}" for i, e in enumerate(edits, 1))
        for attempt in range(2):
            extra = (
                "\nYour last final was the draft unchanged: apply the edits this time."
                if attempt
                else ""
            )
            asked = chat(
                INSTRUCTIONS_V2["final"] + extra,
                facts,
                f"{task}\n{limits}".strip(),
                draft=draft,
                edits=numbered,
            )
            reply_, _ = llm.complete_json(asked, FinalReply, max_tokens=max_tokens)
            cut = len(reply_.final) >= getattr(llm, "max_string_length", 10**9) - 1
            final, dropped = clean(tidy_final(reply_.final, cut=cut))
            notes += dropped
            declined = reply_.declined
            if final and not same_text(final, draft):
                break
            notes.append(f"final attempt {attempt + 1} was the draft unchanged")
        final = final or draft
    done = enforce(final, task, segments, revise, REVISIONS, who="final")
    lost = lost_items(draft, done.text, task)
    if (done.breaches or lost) and final != draft and not problems(draft, task, segments):
        # The final broke what the draft kept: the draft goes out, its edits unapplied.
        notes.append(
            "final broke the task's limits or facts the draft kept"
            + (f" ({'; '.join(lost)})" if lost else "")
            + ": the draft sent"
        )
        done = enforce(draft, task, segments, revise, 0, who="final")
    outcomes = edit_outcomes(edits, declined, unchanged=bool(edits) and same_text(done.text, draft))
    content = {"task": task, "draft": draft, "final": done.text, "review": review_text(outcomes)}
    work = Work(
        tool_calls=tuple((calls + done.tool_calls)[:50]),
        revisions=_notes(notes + done.revisions),
        breaches=_notes(done.breaches),
        edits=outcomes,
    )
    return content, work
