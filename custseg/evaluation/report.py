"""Pure helpers behind the app's "Agent evaluation" page: load results, chart, join."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from custseg import jsonl
from custseg.evaluation.specs import METRICS

EVAL_COMMAND = "dvc repro eval"
CAPTURE_COMMAND = "custseg capture"
TABLE_COLUMNS = ["correlation_id", "metric", "score", "passed", "reason", "error", "latency_s"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; unreadable lines are left out (the eval reports them)."""
    return jsonl.read(path).objects()


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per conversation × metric, metrics in their fixed order."""
    frame = pd.DataFrame(rows)
    for column in [*TABLE_COLUMNS, "positions"]:
        if column not in frame:
            frame[column] = None
    frame["metric"] = pd.Categorical(frame["metric"], categories=list(METRICS), ordered=True)
    return frame.sort_values(["correlation_id", "metric"]).reset_index(drop=True)


def score_wide(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per conversation, one score column per metric (errors as empty cells)."""
    if frame.empty:
        return pd.DataFrame(columns=["correlation_id", *METRICS])
    wide = frame.pivot_table(
        index="correlation_id", columns="metric", values="score", aggfunc="first", observed=False
    )
    return wide.reindex(columns=list(METRICS)).reset_index()


def score_distribution_figure(frame: pd.DataFrame) -> Any:
    """Per-metric histograms of scores on 0–1: ten 0.1-wide bins, the last one closed (1.0)."""
    import plotly.express as px

    scored = frame[frame["error"].isna()].copy()
    scored["metric"] = scored["metric"].astype(str)
    # Binned here rather than by plotly: the same bins in every facet, and 1.0 in the last bin.
    scored["score"] = (scored["score"].clip(0, 1) * 10).astype(int).clip(upper=9) / 10 + 0.05
    counts = scored.groupby(["metric", "score"]).size().reset_index(name="count")
    figure = px.bar(
        counts,
        x="score",
        y="count",
        facet_col="metric",
        category_orders={"metric": list(METRICS)},
        range_x=[0, 1],
    )
    figure.update_traces(width=0.095)
    # An explicit count range: autorange over the matched facet axes came out clipped in Chromium.
    figure.update_yaxes(range=[0, max(1, int(counts["count"].max())) * 1.1])
    figure.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10})
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return figure


def conversation_index(conversations: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(c.get("correlation_id")): c for c in conversations}


def label(conversation: dict[str, Any], width: int = 70) -> str:
    """`<id prefix> · <task start>` for a picker."""
    task = " ".join(str(conversation.get("task") or "").split())
    task = task if len(task) <= width else task[: width - 1] + "…"
    return f"{str(conversation.get('correlation_id'))[:8]} · {task}"
