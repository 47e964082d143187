"""The champion as tools (agent variant v2): pure functions over the served version's segment
profile and its KMeans, and the deterministic pre-step that picks which to call for a task.

The bundled llama.cpp model does not call functions reliably, so the agents do not ask it to:
`task_tool_calls` reads the task (segment names, superlatives, a customer's income and spending
score), calls the tools, and the results go into the prompt as the only figures to use. Every
call is recorded (name, arguments, result) in the reply's envelope (`Work.tool_calls`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from custseg.agents.envelope import ToolCall
from custseg.conversation import GroundedIn, Segment, describe_segment
from custseg.evaluation.grounding import name_spans, segment_key

Predict = Callable[[float, float], int]  # (income k$, spending score) → segment id
FEATURES = ("size", "mean_income", "mean_spending")
_FEATURE_WORDS = {
    "size": "customers",
    "mean_income": "mean annual income",
    "mean_spending": "mean spending score",
}


class ToolError(ValueError):
    """A tool asked for something the profile does not have (one line, recorded as the result)."""


def _figures(segment: Segment) -> dict[str, Any]:
    shown = {
        "size": segment.size,
        "share": None if segment.share is None else round(segment.share, 3),
        "mean_income": None if segment.mean_income is None else round(segment.mean_income, 1),
        "mean_spending": None if segment.mean_spending is None else round(segment.mean_spending, 1),
    }
    return {"segment": segment.name, **{k: v for k, v in shown.items() if v is not None}}


def _by_name(segments: Sequence[Segment], name: str) -> Segment:
    wanted = segment_key(name)
    for segment in segments:
        if segment.name.casefold() == name.casefold() or (
            wanted is not None and segment_key(segment.name) == wanted
        ):
            return segment
    known = ", ".join(s.name for s in segments)
    raise ToolError(f"no segment named {name!r} (the model has: {known})")


def segment_figures(segments: Sequence[Segment], name: str) -> dict[str, Any]:
    """A segment's figures by its name (any way of writing its income and spending levels)."""
    return _figures(_by_name(segments, name))


def rank_segments(
    segments: Sequence[Segment], feature: str, highest_first: bool = True
) -> list[dict[str, Any]]:
    """All segments ordered by `feature` (size, mean_income or mean_spending)."""
    if feature not in FEATURES:
        raise ToolError(f"cannot rank by {feature!r}: one of {', '.join(FEATURES)}")
    known = [s for s in segments if getattr(s, feature) is not None]
    ordered = sorted(known, key=lambda s: getattr(s, feature), reverse=highest_first)
    return [{"rank": i + 1, **_figures(s)} for i, s in enumerate(ordered)]


def assign_customer(
    segments: Sequence[Segment], predict: Predict, income: float, spending: float
) -> dict[str, Any]:
    """The segment the served model puts a customer in (its `predict`), with its figures."""
    segment_id = predict(income, spending)
    found = next((s for s in segments if s.id == segment_id), None)
    if found is None:
        raise ToolError(f"the model answered segment {segment_id}, which the profile lacks")
    return {"income": income, "spending": spending, **_figures(found)}


def count_text(text: str) -> dict[str, int]:
    """Words and characters of a text, as the task's limits count them (evaluation.limits)."""
    stripped = text.strip()
    return {"words": len(stripped.split()), "characters": len(stripped)}


# --- which tools a task needs ----------------------------------------------------------------

_HIGH = r"highest|largest|biggest|most|top|greatest"
_LOW = r"lowest|smallest|least|fewest"
_SUPERLATIVE = re.compile(
    rf"\b(?P<dir>{_HIGH}|{_LOW})\s+(?:(?:mean|average)\s+)?(?:annual\s+)?"
    r"(?P<what>income|spending(?:\s+score)?|spenders?|customers|clients|shoppers|members)\b",
    re.IGNORECASE,
)
_NUM = r"(\d{1,4}(?:\.\d+)?)"
_INCOME = re.compile(
    rf"\b(?:earns?|earning|income\s+(?:of|is)?)\s*(?:about\s+|around\s+)?\$?{_NUM}\s?k\b",
    re.IGNORECASE,
)
_SPENDING = re.compile(rf"\bspending\s+score\s+(?:of\s+|is\s+)?{_NUM}\b", re.IGNORECASE)


def _call(name: str, arguments: dict[str, Any], run: Callable[[], Any]) -> ToolCall:
    try:
        result = run()
    except ToolError as error:
        result = {"error": str(error)}
    except Exception as error:  # the served model refusing a value: recorded, not fatal
        result = {"error": f"{type(error).__name__}: {error}"[:300]}
    return ToolCall(name=name, arguments=arguments, result=result)


def task_tool_calls(task: str, grounding: GroundedIn, predict: Predict | None) -> list[ToolCall]:
    """The tools `task` needs, called: figures of each segment it names, a ranking for each
    superlative it asks about (by size when it names none, so every segment is listed), and
    the segment of a customer it describes by income and spending score."""
    segments = grounding.segments
    calls: list[ToolCall] = []
    named: list[str] = []
    for span in name_spans(task):
        if span.written not in named:
            named.append(span.written)
    for name in named:
        calls.append(
            _call("segment_figures", {"name": name}, lambda n=name: segment_figures(segments, n))
        )
    ranked: list[tuple[str, bool]] = []
    for match in _SUPERLATIVE.finditer(task):
        what = match["what"].lower()
        feature = (
            "mean_income"
            if what == "income"
            else "mean_spending"
            if what.startswith("spend")
            else "size"
        )
        key = (feature, match["dir"].lower() not in _LOW.split("|"))
        if key not in ranked:
            ranked.append(key)
    income, spending = _INCOME.search(task), _SPENDING.search(task)
    customer = income and spending and predict is not None
    if not named and not ranked and not customer:
        ranked.append(("size", True))
    for feature, highest in ranked:
        calls.append(
            _call(
                "rank_segments",
                {"feature": feature, "highest_first": highest},
                lambda f=feature, h=highest: rank_segments(segments, f, h),
            )
        )
    if customer:
        assert income and spending and predict is not None
        args = {"income": float(income[1]), "spending": float(spending[1])}
        calls.append(
            _call(
                "assign_customer",
                args,
                lambda: assign_customer(segments, predict, args["income"], args["spending"]),
            )
        )
    return calls


def facts_text(calls: Sequence[ToolCall], grounding: GroundedIn) -> str:
    """The tool results as the facts an agent is given: each segment once, in the wording the
    grounding check reads (`describe_segment`), rankings in order, a customer's segment."""
    by_name = {s.name: s for s in grounding.segments}
    lines: list[str] = []
    for call in calls:
        result = call.result
        if isinstance(result, dict) and "error" in result:
            lines.append(f"- {call.name}: {result['error']}")
        elif call.name == "segment_figures":
            lines.append(f"- {describe_segment(by_name[result['segment']])}")
        elif call.name == "rank_segments":
            feature = call.arguments["feature"]
            order = "highest" if call.arguments["highest_first"] else "lowest"
            lines.append(f"- Segments by {_FEATURE_WORDS[feature]}, {order} first:")
            lines += [f"  {r['rank']}. {describe_segment(by_name[r['segment']])}" for r in result]
        elif call.name == "assign_customer":
            lines.append(
                f"- A customer with income {result['income']:g} k$ and spending score "
                f'{result["spending"]:g} is in the "{result["segment"]}" segment (the model\'s '
                f"prediction): {describe_segment(by_name[result['segment']])}"
            )
    return "\n".join(lines)
