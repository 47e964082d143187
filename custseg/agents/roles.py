"""The three agents' jobs as pure functions: which message each answers, and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from custseg.agents.envelope import Envelope, ModelInfo, reply
from custseg.agents.topics import MessageType
from custseg.llm import Message, Provider

RoleName = Literal["planner", "writer", "reviewer"]
CONTEXT = (
    "You work in the marketing team of a retailer that segments its customers by annual income "
    "(k$) and spending score (1-100) with KMeans, e.g. 'high income · low spending'."
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
    """The reviewer's structured reply."""

    review: str = Field(description="two sentences: what the draft got wrong or missed")
    final: str = Field(description="the improved answer to the task")


INSTRUCTIONS: dict[str, str] = {
    "planner": "You are the Planner. Write a numbered plan of 3 to 5 short, concrete steps that "
    "answer the task. Output only the plan.",
    "writer": "You are the Writer. Follow the plan and write a clear, specific answer to the task "
    "in at most 150 words. Output only the answer.",
    "reviewer": "You are the Reviewer. Check the draft for relevance to the task, correctness and "
    "clarity. Reply in JSON with a short `review` and an improved `final` answer (at most 150 "
    "words) that fixes what you found.",
}


def prompt(role: RoleName, task: str, **context: str) -> list[Message]:
    """The chat for `role`: shared context + its instructions, then the task and its inputs."""
    parts = [f"Task: {task}", *(f"{name.capitalize()}:\n{text}" for name, text in context.items())]
    return [
        {"role": "system", "content": f"{CONTEXT} {INSTRUCTIONS[role]}"},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def answer(role: Role, incoming: Envelope, llm: Provider, max_tokens: int) -> Envelope:
    """Ask the LLM to do `role`'s job on `incoming` and wrap the result as the reply envelope."""
    task = incoming.content["task"]
    model = ModelInfo(
        provider=llm.name,
        name=llm.model,
        params={"temperature": llm.temperature, "max_tokens": max_tokens},
    )
    if role.name == "planner":
        plan = llm.complete(prompt("planner", task), max_tokens=max_tokens).text.strip()
        content = {"task": task, "plan": plan}
    elif role.name == "writer":
        plan = incoming.content["plan"]
        draft = llm.complete(prompt("writer", task, plan=plan), max_tokens=max_tokens).text.strip()
        content = {"task": task, "plan": plan, "draft": draft}
    else:
        draft = incoming.content["draft"]
        review, _ = llm.complete_json(
            prompt("reviewer", task, draft=draft), Review, max_tokens=max_tokens
        )
        content = {
            "task": task,
            "draft": draft,
            "final": review.final.strip(),
            "review": review.review.strip(),
        }
    return reply(incoming, role.produces, role.name, content, model)
