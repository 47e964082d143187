"""Page: GEval scores of the agents' conversations — distributions, reasons, and a drill-down.

Reads data/eval_results.jsonl (written by the `eval` stage) and data/conversations.jsonl
(written by `custseg capture`).
"""

from __future__ import annotations

import streamlit as st

from custseg.conversation import CHAIN
from custseg.evaluation.items import grounded_in
from custseg.evaluation.report import (
    CAPTURE_COMMAND,
    EVAL_COMMAND,
    TABLE_COLUMNS,
    conversation_index,
    label,
    read_jsonl,
    results_frame,
    score_distribution_figure,
    score_wide,
)
from custseg.evaluation.specs import METRICS
from custseg.paths import CONVERSATIONS, EVAL_RESULTS

st.title("Agent evaluation")
st.caption(
    "Planner → Writer → Reviewer conversations scored by an LLM judge (deepeval GEval, "
    "probability-weighted 0–1 scores). `helpfulness` is the judge's score times the share of "
    "the task's hard limits (a length, a budget) the answer keeps; `improvement` measures the "
    "final over the draft (0.5 when the final repeats the draft); "
    "`grounding_check` (no judge: the segment names and figures the final cites, against the "
    "profile) and `grounding` (the judge's score given the profile, times the check's) whether "
    "the answer keeps to the segments of the model that grounded it."
)

if not CONVERSATIONS.is_file():
    st.info(
        f"No captured conversations at `{CONVERSATIONS}` yet. Run the agents and "
        f"`{CAPTURE_COMMAND}`, then `{EVAL_COMMAND}`."
    )
    st.stop()
if not EVAL_RESULTS.is_file():
    st.info(f"No evaluation results at `{EVAL_RESULTS}` yet. Run `{EVAL_COMMAND}`.")
    st.stop()

frame = results_frame(read_jsonl(EVAL_RESULTS))
conversations = conversation_index(read_jsonl(CONVERSATIONS))
if frame.empty:
    st.info(f"`{EVAL_RESULTS}` holds no scores. Run `{EVAL_COMMAND}`.")
    st.stop()

columns = st.columns(len(METRICS))
for column, metric in zip(columns, METRICS, strict=True):
    mine = frame[(frame["metric"] == metric) & frame["error"].isna()]
    mean = f"{mine['score'].mean():.2f}" if len(mine) else "–"
    rate = f"{mine['passed'].astype(bool).mean():.0%} pass" if len(mine) else "no scores"
    column.metric(metric, mean, rate, delta_color="off")
errors = int(frame["error"].notna().sum())
if errors:
    st.warning(f"{errors} judge call(s) failed; see the `error` column.")

st.subheader("Score distribution")
st.plotly_chart(score_distribution_figure(frame), key="eval_distribution")

st.subheader("Scores per conversation")
st.dataframe(score_wide(frame), hide_index=True, key="eval_wide")
with st.expander("Every score with the judge's reason"):
    table = frame[TABLE_COLUMNS].astype({"metric": str})
    st.dataframe(table, hide_index=True, key="eval_table")

st.subheader("Conversation")
ids = [cid for cid in dict.fromkeys(frame["correlation_id"]) if cid in conversations]
if not ids:
    st.info(f"The scored conversations are not in `{CONVERSATIONS}`.")
    st.stop()
chosen = st.selectbox(
    "Conversation", ids, format_func=lambda cid: label(conversations[cid]), key="eval_conv"
)
conversation = conversations[chosen]
# Tasks are typed by users and the rest written by an LLM: all shown as text, never Markdown.
for column, part in zip(st.columns(len(CHAIN)), CHAIN, strict=True):
    column.markdown(f"**{part.capitalize()}**")
    column.text(conversation.get(part) or "—")
if conversation.get("review"):
    st.text(f"Reviewer's note: {conversation['review']}")
if grounding := grounded_in(conversation):
    names = "; ".join(s.name for s in grounding.segments)
    st.text(f"Grounded in {grounding.model} v{grounding.version}: {names}")
mine = frame[frame["correlation_id"] == chosen]
for row in mine.itertuples():
    failed = isinstance(row.error, str)  # pandas holds "no error" as NaN, which is truthy
    score = "error" if failed else f"{row.score:.2f}"
    where = (
        f" (asked in both orders, first as A={row.positions['A']}, B={row.positions['B']})"
        if isinstance(row.positions, dict)
        else ""
    )
    st.markdown(f"**{row.metric}** {score}{where}")
    st.text(row.error if failed else row.reason)
