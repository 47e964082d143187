"""Page: drift of the customers scored recently from the served version's training data.

Reads the last report of `custseg monitor` (metrics/monitor.json, or $CUSTSEG_MONITOR_REPORT);
the training side of each histogram is the served version's own sample (its artifact).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
import ui_common

from custseg.errors import MonitorError
from custseg.features import FEATURES
from custseg.monitoring.drift import NO_DRIFT, RETRAIN
from custseg.monitoring.report import (
    MONITOR_COMMAND,
    TRY_COMMAND,
    histogram_figure,
    read_report,
    report_path,
    segment_mix_figure,
)

st.title("Monitoring")
st.caption(
    "Do the customers scored recently still look like the ones the served version was trained "
    "on? Per feature PSI and a Kolmogorov-Smirnov test, the segment mix by chi-square."
)
served = ui_common.served_model()
path = report_path()
try:
    report = read_report(path)
except MonitorError as error:
    st.error(str(error), icon=":material/error:")
    st.stop()
if report is None:
    st.info(f"No drift report at {path} yet: run `{MONITOR_COMMAND}` (or `{TRY_COMMAND}`).")
    st.stop()
version = served.ref.version
if report["version"] != version:
    # The report's fields are text from a file: shown with st.text, never as Markdown.
    st.info(f"The last drift report is not of the served version v{version}:")
    st.text(f"{path} is of version {report['version'][:40]}")
    st.info(f"Run `{MONITOR_COMMAND}` for v{version}.")
    st.stop()

ui_common.model_panel(served)
status = report["verdict"]
show = st.success if status == NO_DRIFT else st.error if status == RETRAIN else st.warning
show(f"Verdict: {status}", icon=":material/monitor_heart:")  # one of three fixed words
st.text(report["summary"])
st.text(f"{int(report['rows']):,} scored rows from {str(report.get('source', '?'))[:200]}")

st.subheader("Features")
table = pd.DataFrame(
    [
        {"feature": f, **{k: report["features"][f][k] for k in ("psi", "ks", "p_value")},
         "training mean": report["features"][f]["reference_mean"],
         "recent mean": report["features"][f]["window_mean"],
         "drift": bool(report["features"][f].get("drift"))}
        for f in FEATURES
    ]
)  # fmt: skip
st.dataframe(table, hide_index=True, key="monitor_features")
sample = served.training.sample
for column, feature in zip(st.columns(len(FEATURES)), FEATURES, strict=True):
    figure = None
    if len(sample):
        histogram = report["features"][feature].get("histogram")
        figure = histogram_figure(feature, sample[feature].to_numpy(float), histogram)
    if figure is None:
        column.text(f"{feature}: no distributions to draw (the report or version lacks them)")
    else:
        column.plotly_chart(figure, key=f"monitor_hist_{feature}", width="stretch")

st.subheader("Segment mix")
mix = report["segments"]
st.text(f"chi-square p {float(mix['p_value']):.2g}, largest share change "
        f"{float(mix.get('max_change', 0)):.1%}")  # fmt: skip
st.plotly_chart(segment_mix_figure(report), key="monitor_segments", width="stretch")
names = served.labels if len(served.labels) == len(mix["training_share"]) else None
shares = pd.DataFrame(
    {"segment": range(len(mix["training_share"])), "training share": mix["training_share"],
     "recent share": mix["window_share"]}
)  # fmt: skip
if names:
    shares.insert(1, "name", names)
st.dataframe(shares, hide_index=True, key="monitor_shares")
