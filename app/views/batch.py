"""Page: score a CSV of customers (upload or paste) and download it with a segment per row.

Upload and paste feed the same bytes to `custseg.serving.batch.score_csv`, which only parses CSV
text; the tests drive this page through the paste box and the browser test through the upload.
"""

from __future__ import annotations

import hashlib

import streamlit as st
import ui_common

from custseg.errors import BatchError
from custseg.features import BOUNDS, INCOME, MALL_HEADERS, SPENDING
from custseg.monitoring.store import recorder
from custseg.serving.batch import BatchResult, score_csv
from custseg.serving.charts import segment_counts_figure
from custseg.serving.upload import MAX_BATCH_BYTES, MAX_BATCH_ROWS

PREVIEW_ROWS = 20

served = ui_common.served_model()

st.title("Score a file of customers")
st.markdown(
    f"A CSV with a header row and the columns `{INCOME}` "
    f"({BOUNDS[INCOME][0]:g}–{BOUNDS[INCOME][1]:g} k$) and `{SPENDING}` "
    f"({BOUNDS[SPENDING][0]:g}–{BOUNDS[SPENDING][1]:g}); the Mall Customers headers "
    f"`{MALL_HEADERS[INCOME]}` and `{MALL_HEADERS[SPENDING]}` work too. Other columns come "
    "back exactly as uploaded (a cell a spreadsheet would run as a formula gets a leading `'`). "
    f"Up to {MAX_BATCH_ROWS:,} rows and {MAX_BATCH_BYTES // 2**20} MB; UTF-8, UTF-16 with a "
    "byte-order mark, Windows-1252."
)
uploaded = st.file_uploader("CSV file", type=["csv", "txt"], key="batch_file")
with st.expander("…or paste CSV text", expanded=False):
    pasted = st.text_area(
        "CSV text",
        key="batch_text",
        height=160,
        max_chars=1_000_000,
        placeholder="customer_id,annual_income,spending_score\n1,60,50",
    )

if uploaded is not None:
    data, source = uploaded.getvalue(), uploaded.name
elif pasted and pasted.strip():
    data, source = pasted.encode(), "the pasted text"
else:
    st.info("Upload a CSV file (or paste CSV text) to score it.")
    ui_common.model_panel(served)
    st.stop()

# Reruns (e.g. the download click) reuse this session's result instead of rescoring.
digest = hashlib.blake2b(data, digest_size=16).hexdigest()
cached = ui_common.kept_result()  # (input digest, model key, BatchResult) of the last scoring
if cached is not None and cached[:2] == (digest, served.ref.cache_key):
    result: BatchResult = cached[2]
else:
    try:
        with st.spinner("Scoring…"):
            # Ranges of the served version's own training data (None: not recorded with it).
            result = score_csv(
                data,
                served.model,
                served.labels,
                served.training.ranges,
                record=recorder(served.ref.version),  # data/scored, or $CUSTSEG_RECORD_DIR
            )
    except BatchError as error:
        ui_common.forget_result()
        # The problems quote the file (headers, values) and the name is the user's: plain text,
        # never Markdown, so a header such as "[x](http://…)" cannot become a link or an image.
        st.error("This file cannot be scored:", icon=":material/error:")
        st.text(f"{source}\n" + "\n".join(f"- {problem}" for problem in error.problems))
        st.stop()
    ui_common.keep_result((digest, served.ref.cache_key, result))

st.success(
    f"Scored {len(result.scored):,} customers with `{served.ref.name}` "
    f"v{served.ref.version} (@{served.ref.alias}).",
    icon=":material/check_circle:",
)
st.text(f"File: {source}")
for note in result.notes:
    st.text(note)
if not served.training.recorded:
    st.text(f"{served.training.not_recorded()}: rows were not checked against them.")
left, right = st.columns([1, 1], gap="large")
with left:
    st.subheader("Customers per segment")
    st.dataframe(
        result.counts,
        hide_index=True,
        column_config={"share": st.column_config.NumberColumn(format="percent")},
    )
    st.download_button(
        "Download the scored CSV",
        data=result.csv_when_asked(),  # the CSV is only built when clicked
        file_name="scored_customers.csv",
        mime="text/csv",
        key="batch_download",
        on_click="ignore",
        type="primary",
    )
with right:
    st.plotly_chart(segment_counts_figure(result.counts), key="batch_chart", width="stretch")
st.subheader(f"First {min(PREVIEW_ROWS, len(result.scored))} rows")
st.dataframe(result.scored.head(PREVIEW_ROWS), hide_index=True)
