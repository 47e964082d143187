"""Captured conversations as MLflow traces, scored by the judge.

One trace per correlation_id in the eval experiment: a root span for the conversation and a span
per agent (its input, output, model and timing, all from the envelopes), and every score as an
MLflow assessment (feedback) on the trace: its value, the judge's reason, pass mark and pass.

Idempotent: a trace carries the correlation id and a hash of the conversation as tags; a re-run
keeps an unchanged trace, only adds or updates the feedback whose score changed, and replaces a
trace whose conversation changed under the same id. Feedback from others (a reviewer's, in the
UI) is never touched, so only feedback marked as this project's is updated or removed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from custseg.conversation import DEFAULT_VARIANT

TRACE_NAME = "conversation"
TAG_ID = "custseg.correlation_id"
TAG_VARIANT = "custseg.variant"
TAG_SHA = "custseg.conversation_sha256"
TAG_PASSED = "custseg.passed"  # "true" | "false": a reviewer filters failing conversations
TAG_FAILING = "custseg.failing"  # the metrics that did not pass, comma-separated
MARK = "custseg.source"  # feedback metadata key: written by this project's eval stage
MARK_VALUE = "eval-stage"
CHECK_SOURCE = "custseg.grounding_check"

# The agents in chain order: the span's name, its input fields and output fields.
AGENTS = (
    ("planner", "plan", ("task",), ("plan",)),
    ("writer", "draft", ("task", "plan"), ("draft",)),
    ("reviewer", "final", ("task", "draft"), ("review", "final")),
)


@dataclass(frozen=True)
class AgentSpan:
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int
    # The tools the agent called (v2 agents: name, arguments, result): a span each.
    tools: tuple[dict[str, Any], ...] = ()


def agent_work(produced: dict[str, Any]) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """An agent's recorded work (custseg.agents.envelope.Work): its tool calls, and its
    revisions, breaches and edits as span attributes (none for a v1 record)."""
    work = produced.get("work") if isinstance(produced.get("work"), dict) else {}
    calls = tuple(c for c in work.get("tool_calls") or () if isinstance(c, dict) and c.get("name"))
    attributes = {key: work[key] for key in ("revisions", "breaches", "edits") if work.get(key)}
    return calls, attributes


@dataclass(frozen=True)
class FeedbackSpec:
    """One score as the assessment it becomes."""

    name: str
    value: float | bool | None
    rationale: str | None
    error: str | None
    source_type: str  # LLM_JUDGE, or CODE for the deterministic grounding check
    source_id: str
    metadata: dict[str, str]

    def same_as(self, assessment: Any) -> bool:
        """Whether an existing assessment already says exactly this."""
        error = getattr(assessment, "error", None)
        return (
            assessment.name == self.name
            and _value(assessment) == self.value
            and (assessment.rationale or None) == self.rationale
            and (error.error_message if error else None) == self.error
            and assessment.source.source_type == self.source_type
            and assessment.source.source_id == self.source_id
            and dict(assessment.metadata or {}) == self.metadata
        )


@dataclass
class TraceSync:
    """What one sync did: traces created / replaced / kept, feedback added / updated /
    removed / kept."""

    created: int = 0
    replaced: int = 0
    kept: int = 0
    feedback_added: int = 0
    feedback_updated: int = 0
    feedback_removed: int = 0
    feedback_kept: int = 0
    trace_ids: dict[str, str] = field(default_factory=dict)  # correlation_id → trace id


def time_ns(value: Any) -> int | None:
    """An envelope's ISO-8601 time as epoch nanoseconds; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # the capture writes UTC with a zone; a naive time would be a guess
    return int(moment.timestamp() * 1_000_000) * 1_000


def conversation_sha(conv: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(conv, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def agent_spans(conv: dict[str, Any], now_ns: int) -> list[AgentSpan]:
    """A span per agent: it starts when its input was produced and ends when its output was.

    Times missing from the envelopes fall back to the previous known one (zero-length spans),
    and a span never ends before it starts (the agents' clocks may differ slightly)."""
    events = conv.get("events") if isinstance(conv.get("events"), dict) else {}

    def event(part: str) -> dict[str, Any]:
        found = events.get(part)
        return found if isinstance(found, dict) else {}

    previous = time_ns(event("task").get("produced_at")) or time_ns(conv.get("started_at"))
    previous = previous or now_ns
    spans = []
    for name, part, inputs, outputs in AGENTS:
        produced = event(part)
        end = max(time_ns(produced.get("produced_at")) or previous, previous)
        model = produced.get("model") if isinstance(produced.get("model"), dict) else {}
        grounded = produced.get("grounded_in") or conv.get("grounded_in")
        attributes = {
            "agent": name,
            "event_id": produced.get("event_id"),
            "causation_id": produced.get("causation_id"),
            "model": model.get("name"),
            "provider": model.get("provider"),
            "model_params": model.get("params"),
            "variant": produced.get("variant") or conv.get("variant") or DEFAULT_VARIANT,
        }
        if isinstance(grounded, dict):
            attributes["grounded_in"] = f"{grounded.get('model')} v{grounded.get('version')}"
        tools, work = agent_work(produced)
        attributes.update(work)
        spans.append(
            AgentSpan(
                name,
                {key: conv.get(key) for key in inputs},
                {key: conv.get(key) for key in outputs},
                {k: v for k, v in attributes.items() if v is not None},
                previous,
                end,
                tools,
            )
        )
        previous = end
    return spans


def feedback_specs(rows: Iterable[dict[str, Any]]) -> dict[str, list[FeedbackSpec]]:
    """The eval stage's result rows as feedback, grouped by correlation id."""
    grouped: dict[str, list[FeedbackSpec]] = {}
    for row in rows:
        judged = row.get("judge_model") is not None
        metadata = {
            MARK: MARK_VALUE,
            "threshold": str(row.get("threshold")),
            "passed": str(row.get("passed")).lower(),
        }
        if row.get("positions"):
            metadata["positions"] = json.dumps(row["positions"], sort_keys=True)
        if row.get("grounding"):
            metadata["grounding"] = json.dumps(row["grounding"], sort_keys=True)
        score = row.get("score")
        grouped.setdefault(str(row["correlation_id"]), []).append(
            FeedbackSpec(
                name=str(row["metric"]),
                value=None if score is None else float(score),
                rationale=row.get("reason") or None,
                error=row.get("error") or None,
                source_type="LLM_JUDGE" if judged else "CODE",
                source_id=str(row["judge_model"]) if judged else CHECK_SOURCE,
                metadata=metadata,
            )
        )
    return grouped


def failing(specs: Iterable[FeedbackSpec]) -> list[str]:
    """The metrics that did not pass (a judge error counts as not passed)."""
    return sorted({s.name for s in specs if s.metadata.get("passed") != "true"})


def sync_traces(
    experiment_id: str,
    conversations: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    progress: Callable[[Iterable[Any]], Iterator[Any]] = iter,
    now_ns: int | None = None,
) -> TraceSync:
    """Make the experiment's traces say what `conversations` and their score `rows` say."""
    import time

    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    now_ns = now_ns or time.time_ns()
    result = TraceSync()
    existing = traces_by_id(client, experiment_id)
    kept: dict[str, Any] = {}  # correlation id → its unchanged trace
    for conv in progress(conversations):
        cid = str(conv["correlation_id"])
        sha = conversation_sha(conv)
        found = existing.get(cid, [])
        keep = next((t for t in found if t.info.tags.get(TAG_SHA) == sha), None)
        stale = [t.info.trace_id for t in found if t is not keep]
        if stale:  # a changed conversation, or a duplicate left by a run killed mid-way
            client.delete_traces(experiment_id, trace_ids=stale)
        if keep is None:
            result.trace_ids[cid] = create_trace(client, experiment_id, conv, sha, now_ns)
            result.replaced += bool(stale)
            result.created += not stale
        else:
            result.trace_ids[cid] = keep.info.trace_id
            kept[cid] = keep
            result.kept += 1
    if result.created or result.replaced:
        mlflow.flush_trace_async_logging()  # feedback needs its trace stored
    specs = feedback_specs(rows)
    for cid, trace_id in result.trace_ids.items():
        mine = specs.get(cid, [])
        keep = kept.get(cid)
        sync_feedback(trace_id, mine, list(keep.info.assessments or []) if keep else [], result)
        tags = {TAG_PASSED: str(not failing(mine)).lower(), TAG_FAILING: ",".join(failing(mine))}
        for key, value in tags.items():
            if keep is None or keep.info.tags.get(key) != value:
                client.set_trace_tag(trace_id, key, value)
    return result


def traces_by_id(client: Any, experiment_id: str) -> dict[str, list[Any]]:
    """Every trace of the experiment that carries a correlation id, grouped by it."""
    grouped: dict[str, list[Any]] = {}
    token = None
    while True:
        page = client.search_traces(
            locations=[experiment_id],
            max_results=500,
            page_token=token,
            include_spans=False,
            order_by=["timestamp_ms ASC"],
        )
        for trace in page:
            if cid := trace.info.tags.get(TAG_ID):
                grouped.setdefault(cid, []).append(trace)
        token = page.token
        if not token:
            return grouped


def create_trace(
    client: Any, experiment_id: str, conv: dict[str, Any], sha: str, now_ns: int
) -> str:
    from mlflow.entities import SpanType

    spans = agent_spans(conv, now_ns)
    grounded = conv.get("grounded_in") if isinstance(conv.get("grounded_in"), dict) else {}
    tags = {TAG_ID: str(conv["correlation_id"]), TAG_SHA: sha}
    tags[TAG_VARIANT] = str(conv.get("variant") or DEFAULT_VARIANT)  # old records: "v1"
    if grounded:
        tags["custseg.grounded_in"] = f"{grounded.get('model')} v{grounded.get('version')}"
    root = client.start_trace(
        TRACE_NAME,
        span_type=SpanType.CHAIN,
        inputs={"task": conv.get("task")},
        tags=tags,
        experiment_id=experiment_id,
        start_time_ns=spans[0].start_ns,
    )
    for span in spans:
        child = client.start_span(
            span.name,
            root.trace_id,
            root.span_id,
            span_type=SpanType.AGENT,
            inputs=span.inputs,
            attributes=span.attributes,
            start_time_ns=span.start_ns,
        )
        for call in span.tools:  # untimed (deterministic, sub-millisecond): at the agent's start
            tool = client.start_span(
                str(call["name"]),
                root.trace_id,
                child.span_id,
                span_type=SpanType.TOOL,
                inputs=call.get("arguments") or {},
                start_time_ns=span.start_ns,
            )
            client.end_span(
                root.trace_id,
                tool.span_id,
                outputs={"result": call.get("result")},
                end_time_ns=span.start_ns,
            )
        client.end_span(root.trace_id, child.span_id, outputs=span.outputs, end_time_ns=span.end_ns)
    client.end_trace(
        root.trace_id, outputs={"final": conv.get("final")}, end_time_ns=spans[-1].end_ns
    )
    return root.trace_id


def sync_feedback(
    trace_id: str, specs: list[FeedbackSpec], assessments: list[Any], result: TraceSync
) -> None:
    """Add what is missing, update what changed, remove this project's feedback for metrics no
    longer scored; anyone else's assessments stay as they are."""
    import mlflow

    ours = [a for a in assessments if (a.metadata or {}).get(MARK) == MARK_VALUE]
    by_name: dict[str, list[Any]] = {}
    for assessment in ours:
        by_name.setdefault(assessment.name, []).append(assessment)
    for spec in specs:
        same = by_name.pop(spec.name, [])
        match = next((a for a in same if spec.same_as(a)), None)
        if match is not None:
            result.feedback_kept += 1
        else:  # logged before the old one goes: a run killed in between loses nothing
            log_feedback(mlflow, trace_id, spec)
            result.feedback_updated += bool(same)
            result.feedback_added += not same
        for old in same:
            if old is not match:
                mlflow.delete_assessment(trace_id, old.assessment_id)
    for leftover in by_name.values():
        for old in leftover:
            mlflow.delete_assessment(trace_id, old.assessment_id)
            result.feedback_removed += 1


def log_feedback(mlflow: Any, trace_id: str, spec: FeedbackSpec) -> None:
    from mlflow.entities import AssessmentError, AssessmentSource

    mlflow.log_feedback(
        trace_id=trace_id,
        name=spec.name,
        value=spec.value,
        rationale=spec.rationale,
        error=AssessmentError(error_code="JUDGE_ERROR", error_message=spec.error)
        if spec.error
        else None,
        source=AssessmentSource(source_type=spec.source_type, source_id=spec.source_id),
        metadata=spec.metadata,
    )


def _value(assessment: Any) -> Any:
    value = getattr(assessment, "value", None)
    if value is None and getattr(assessment, "feedback", None) is not None:
        value = assessment.feedback.value
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
