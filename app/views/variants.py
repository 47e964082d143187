"""Page: two agent variants compared — per metric the paired difference, its bootstrap 95 %
interval and a sign test, as `custseg eval compare A B --json metrics/compare_A_B.json` wrote
them (the same numbers as its table and its MLflow run)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from custseg.errors import ConfigError
from custseg.evaluation.compare import (
    comparison_frame,
    difference_figure,
    read_report,
    table_lines,
    unpaired_line,
)

REPORTS = Path("metrics")
COMMAND = "custseg eval compare v1 v2 --json metrics/compare_v1_v2.json"

st.title("Agent variants compared")
st.caption(
    "Both variants answered the same tasks; each metric's difference is taken task by task "
    "(B − A), with a bootstrap 95 % interval and a two-sided sign test. An interval above 0 "
    "says B is better on that metric beyond what the tasks' spread explains."
)
reports = sorted(REPORTS.glob("compare_*.json"))
if not reports:
    st.info(f"No comparison in `{REPORTS}/` yet. Score both variants, then run `{COMMAND}`.")
    st.stop()
chosen = st.selectbox("Comparison", reports, format_func=lambda path: path.name, key="cmp_file")
try:
    comparison = read_report(chosen)
except ConfigError as error:
    st.error(str(error))
    st.stop()

heading, judges = table_lines(comparison)[:2]
st.text(f"{heading}\n{judges}")  # file contents are data: never Markdown
st.dataframe(comparison_frame(comparison), hide_index=True, key="cmp_table")
st.plotly_chart(difference_figure(comparison), key="cmp_figure")
if line := unpaired_line(comparison):
    st.text(line)
if comparison.unscored:
    st.text(f"left out: {comparison.unscored} row(s) without a score (judge errors)")
