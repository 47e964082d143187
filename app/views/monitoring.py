"""Page: drift of the customers scored recently from the served version's training data.

Reads the last report of the `monitor` stage or `custseg monitor` (metrics/monitor.json, or
$CUSTSEG_MONITOR_REPORT): the verdict, each feature's distributions, the segment mix and its
course over the recorded days;
the training side of each histogram is the served version's own sample (its artifact).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
import ui_common

from custseg.errors import MonitorError
from custseg.features import FEATURES
from custseg.monitoring.drift import NO_DATA, NO_DRIFT, RETRAIN
from custseg.monitoring.report import (
    MONITOR_COMMAND,
    TRY_COMMAND,
    daily_mix_figure,
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
show = {NO_DRIFT: st.success, RETRAIN: st.error, NO_DATA: st.info}.get(status, st.warning)
show(f"Verdict: {status}", icon=":material/monitor_heart:")  # one of four fixed words
st.text(report["summary"])
st.text(f"{int(report['rows']):,} scored rows from {str(report.get('source', '?'))[:200]}")
if status == NO_DATA:
    st.info(
        "Score customers (the Segment and Batch pages, `custseg serve`) and run "
        f"`{MONITOR_COMMAND}`, or try it: `{TRY_COMMAND}`."
    )
    st.stop()

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

st.subheader("Segment mix over time")
over_time = daily_mix_figure(report, names)
if over_time is None:
    st.text("No days to draw: the window was not read from the store of scored rows.")
else:
    days = report["daily"]
    st.text(f"{len(days)} day(s), {days[0]['day'][:10]} to {days[-1]['day'][:10]}; "
            "dotted: each segment's training share")  # fmt: skip
    st.plotly_chart(over_time, key="monitor_daily", width="stretch")
