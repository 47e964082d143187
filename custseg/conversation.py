"""A conversation as every part sees it: the chain of message types it goes through, and the
segments its answers are grounded in (with how they are described to the agents and the judge).

The agents write these, the capture keeps them and the evaluation reads them: they live on this
floor so that neither of those imports the other.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import msgspec

MessageType = Literal["task", "plan", "draft", "final"]
CHAIN: tuple[MessageType, ...] = get_args(MessageType)  # one conversation, in order

Figure = Annotated[float, msgspec.Meta(ge=0)] | None

# An agent variant (prompts, tools, model, settings) as "name" or "name-version", e.g. "v1":
# stamped on every envelope, kept in the captured conversation, compared by `custseg eval compare`.
# On the wire it is checked by type and length, like the ids; params.yaml (what our agents send)
# also restricts its characters (custseg.config.AgentsParams.variant).
DEFAULT_VARIANT = "v1"  # what a record written before variants existed was
VARIANT_MAX_CHARS = 32
Variant = Annotated[str, msgspec.Meta(min_length=1, max_length=VARIANT_MAX_CHARS)]


class Segment(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """One segment of a registered model, as its training run profiled it."""

    id: Annotated[int, msgspec.Meta(ge=0)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    size: Annotated[int, msgspec.Meta(ge=0)] | None = None  # customers
    share: Figure = None  # of all customers, 0–1
    mean_income: Figure = None  # k$
    mean_spending: Figure = None  # score 1–100


class GroundedIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """The registered model whose segments the reply's author was given, and those segments:
    the facts an answer is checked against, kept with it."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    segments: Annotated[tuple[Segment, ...], msgspec.Meta(max_length=100)] = ()


def describe_segment(segment: Segment) -> str:
    """One line of facts about a segment, as the agents are told it and the judge reads it."""
    facts = [
        f"{segment.size:,} customers" if segment.size is not None else None,
        f"{segment.share:.0%} of all" if segment.share is not None else None,
        f"mean annual income {segment.mean_income:.0f} k$"
        if segment.mean_income is not None
        else None,
        f"mean spending score {segment.mean_spending:.0f}"
        if segment.mean_spending is not None
        else None,
    ]
    return f'"{segment.name}": ' + ", ".join(f for f in facts if f)
