"""Page: GEval scores of the agents' conversations — distributions, reasons, and a drill-down.

Reads `eval.results` (data/eval_results.jsonl, written by the `eval` stage) and
`eval.conversations` (data/conversations.jsonl, written by `python -m eval capture`).
"""

from __future__ import annotations

import streamlit as st

from custseg.config import DEFAULT_PARAMS, ConfigError, load_params
from eval.metrics import METRICS
from eval.report import (
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

st.title("Agent evaluation")
st.caption(
    "Planner → Writer → Reviewer conversations scored by an LLM judge (deepeval GEval, "
    "probability-weighted 0–1 scores). `improvement` measures the final over the draft."
)

try:
    paths = load_params(DEFAULT_PARAMS).eval
except ConfigError as error:
    st.error(str(error))
    st.stop()

if not paths.conversations.is_file():
    st.info(
        f"No captured conversations at `{paths.conversations}` yet. Run the agents and "
        f"`{CAPTURE_COMMAND}`, then `{EVAL_COMMAND}`."
    )
    st.stop()
if not paths.results.is_file():
    st.info(f"No evaluation results at `{paths.results}` yet. Run `{EVAL_COMMAND}`.")
    st.stop()

frame = results_frame(read_jsonl(paths.results))
conversations = conversation_index(read_jsonl(paths.conversations))
if frame.empty:
    st.info(f"`{paths.results}` holds no scores. Run `{EVAL_COMMAND}`.")
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
    st.info(f"The scored conversations are not in `{paths.conversations}`.")
    st.stop()
chosen = st.selectbox(
    "Conversation", ids, format_func=lambda cid: label(conversations[cid]), key="eval_conv"
)
conversation = conversations[chosen]
for column, part in zip(st.columns(4), ("task", "plan", "draft", "final"), strict=True):
    column.markdown(f"**{part.capitalize()}**")
    column.write(conversation.get(part) or "—")
if conversation.get("review"):
    st.caption(f"Reviewer's note: {conversation['review']}")
mine = frame[frame["correlation_id"] == chosen]
for row in mine.itertuples():
    failed = isinstance(row.error, str)  # pandas holds "no error" as NaN, which is truthy
    score = "error" if failed else f"{row.score:.2f}"
    where = (
        f" (shown as A={row.positions['A']}, B={row.positions['B']})"
        if isinstance(row.positions, dict)
        else ""
    )
    st.markdown(f"**{row.metric}** {score}{where} — {row.error if failed else row.reason}")
