"""Judge questions from conversations: reading captured conversations, one `Item` per metric,
the pairwise positions, and the order that lets a judge's prompt cache reuse the most."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from custseg import jsonl
from custseg.conversation import CHAIN, DEFAULT_VARIANT, GroundedIn, describe_segment
from custseg.evaluation.specs import GENERIC_PLAN, METRICS

# --- pairwise positions ------------------------------------------------------------------


def final_position(seed: int, item_id: str) -> str:
    """'A' or 'B': where the final answer is shown; fixed for a given (seed, item)."""
    return random.Random(f"{seed}:{item_id}").choice("AB")


def positions(seed: int, item_id: str) -> dict[str, str]:
    """{"A": "draft"|"final", "B": the other}, as recorded in the results."""
    if final_position(seed, item_id) == "B":
        return {"A": "draft", "B": "final"}
    return {"A": "final", "B": "draft"}


def answers_text(answer_a: str, answer_b: str) -> str:
    """Two answers as the pairwise prompt shows them."""
    return f"Answer A:\n{answer_a}\n\nAnswer B:\n{answer_b}"


def pairwise_text(draft: str, final: str, where: dict[str, str]) -> str:
    """Draft and final as answers A and B, placed as `where` says."""
    answers = {"draft": draft, "final": final}
    return answers_text(answers[where["A"]], answers[where["B"]])


def swapped(where: dict[str, str]) -> dict[str, str]:
    """The other order of a pair's positions."""
    return {"A": where["B"], "B": where["A"]}


# --- conversations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversations:
    """A conversations file, split into the complete ones and the skipped lines."""

    complete: list[dict[str, Any]]
    skipped: list[dict[str, str]]  # {"correlation_id", "why"}


def missing_parts(record: dict[str, Any]) -> list[str]:
    """The parts of the chain (task, plan, draft, final) a record lacks or leaves blank."""
    return [p for p in CHAIN if not isinstance(record.get(p), str) or not record[p].strip()]


def split_conversations(lines: jsonl.Lines) -> Conversations:
    """Complete conversations, and the rest (incomplete or unreadable lines) with why, in the
    order of the file."""
    complete, skipped = [], []
    for number, record in sorted([*lines.records, *((b.number, b) for b in lines.bad)]):
        if isinstance(record, jsonl.BadLine):
            skipped.append({"correlation_id": f"line {number}", "why": record.why})
            continue
        if not isinstance(record, dict):
            skipped.append({"correlation_id": f"line {number}", "why": "not a JSON object"})
            continue
        cid = str(record.get("correlation_id") or f"line {number}")
        if missing := missing_parts(record):
            skipped.append({"correlation_id": cid, "why": f"missing {', '.join(missing)}"})
            continue
        complete.append({**record, "correlation_id": cid})
    return Conversations(complete, skipped)


def read_conversations(path: Path) -> Conversations:
    """A captured conversations file (JSONL), split as `split_conversations` does."""
    return split_conversations(jsonl.read(path))


# --- judge questions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One judge question: which metric, about what, with which test case."""

    item_id: str
    metric: str
    task: str
    output: str
    where: dict[str, str] | None = None  # pairwise positions, of the order asked first
    answers: tuple[str, str] | None = None  # (draft, final) of an improvement item
    grounding: GroundedIn | None = None  # the segments the answer is checked against
    variant: str = DEFAULT_VARIANT  # the agent variant that answered (custseg eval compare)
    work: dict[str, Any] | None = None  # v2 agents: tool calls, breaches, edits (work_summary)
    review: str | None = None  # an improvement item's review of the draft (asks.ignored_review)

    @property
    def judge_calls(self) -> int:
        """The judge calls it needs at most: none for the check, two orders for a pair."""
        return 0 if METRICS[self.metric] is None else 2 if self.answers else 1

    @property
    def shown_input(self) -> str:
        """The judge's input: the task, after the segment profile when it checks grounding."""
        if self.metric != "grounding" or self.grounding is None:
            return self.task
        return f"{profile_text(self.grounding)}\n\nTask: {self.task}"

    @property
    def shown_output(self) -> str:
        """What the judge reads as the output: a plan after the generic one it is held against."""
        return (
            answers_text(GENERIC_PLAN, self.output)
            if self.metric == "plan_quality"
            else self.output
        )


def grounded_in(conv: dict[str, Any]) -> GroundedIn | None:
    """The model version and segments that grounded the conversation's final, if it says."""
    try:
        grounding = msgspec.convert(conv.get("grounded_in"), GroundedIn | None)
    except msgspec.ValidationError:
        return None
    return grounding if grounding and grounding.segments else None


def profile_text(grounding: GroundedIn) -> str:
    """The segment profile as the grounding prompt shows it."""
    lines = "\n".join(f"- {describe_segment(s)}" for s in grounding.segments)
    return f"Model {grounding.model} v{grounding.version}, its only segments:\n{lines}"


def improvement_item(
    item_id: str,
    task: str,
    draft: str,
    final: str,
    seed: int,
    variant: str = DEFAULT_VARIANT,
    review: str | None = None,
) -> Item:
    """The pairwise item, shown first in the order the seed draws for `item_id`."""
    where = positions(seed, item_id)
    text = pairwise_text(draft, final, where)
    return Item(
        item_id, "improvement", task, text, where, (draft, final), variant=variant, review=review
    )


def work_summary(conv: dict[str, Any]) -> dict[str, Any] | None:
    """What a conversation's agents did besides replying (v2 records it; v1: None): every tool
    call's name, the breaches the final was sent with, and its edits applied of those asked."""
    work = conv.get("work")
    if not isinstance(work, dict):
        return None
    parts = [w for w in work.values() if isinstance(w, dict)]
    final = work.get("final") if isinstance(work.get("final"), dict) else {}
    edits = [e for e in final.get("edits") or () if isinstance(e, dict)]
    return {
        "tool_calls": [str(c.get("name")) for w in parts for c in w.get("tool_calls") or ()],
        "breaches": [str(b) for b in final.get("breaches") or ()],
        "edits": len(edits),
        "edits_applied": sum(bool(e.get("applied")) for e in edits),
    }


def review(conv: dict[str, Any]) -> str | None:
    """The conversation's review of the draft, if it kept one."""
    text = conv.get("review")
    return text if isinstance(text, str) and text.strip() else None


def conversation_items(conv: dict[str, Any], seed: int) -> list[Item]:
    """A complete conversation's judge questions: four, six when it says what grounded it."""
    cid, task = conv["correlation_id"], conv["task"]
    variant = str(conv.get("variant") or DEFAULT_VARIANT)  # captured before variants: v1
    items = [
        Item(cid, "plan_quality", task, conv["plan"], grounding=grounded_in(conv), variant=variant),
        Item(cid, "helpfulness_draft", task, conv["draft"], variant=variant),
        Item(cid, "helpfulness_final", task, conv["final"], variant=variant),
        improvement_item(cid, task, conv["draft"], conv["final"], seed, variant, review(conv)),
    ]
    if grounding := grounded_in(conv):
        items += [
            Item(cid, "grounding", task, conv["final"], grounding=grounding, variant=variant),
            Item(cid, "grounding_check", task, conv["final"], grounding=grounding, variant=variant),
        ]
    if (work := work_summary(conv)) is not None:
        items = [dataclasses.replace(item, work=work) for item in items]
    return items


def scoring_order(items: list[Item]) -> list[int]:
    """Indices of `items` in the order that lets a prompt cache reuse the most. Conversation
    by conversation: the plan, the answer shown first in the pair, the pair (whose prompt
    starts as the previous one does: header, task, answer A; it asks the other order right
    after the other answer's helpfulness), then that answer's row (answered already). Then
    every grounding question in a row: their prompts share the header and the profile."""
    first_shown = {i.item_id: i.where["A"] for i in items if i.where}
    conversation = {item_id: n for n, item_id in enumerate(dict.fromkeys(i.item_id for i in items))}

    def rank(index: int) -> tuple[int, int, int]:
        item = items[index]
        if item.metric.startswith("grounding"):
            return 1, conversation[item.item_id], 0
        if item.metric == "plan_quality":
            step = 0
        elif item.metric == "improvement":
            step = 2
        else:  # helpfulness_draft / helpfulness_final
            step = 1 if item.metric.endswith(f"_{first_shown.get(item.item_id)}") else 3
        return 0, conversation[item.item_id], step

    return sorted(range(len(items)), key=rank)
