"""Page: place one customer in a segment with the registered model, on a map of all customers."""

from __future__ import annotations

import numpy as np
import streamlit as st
import ui_common

from custseg.features import BOUNDS, INCOME, MALL_HEADERS, SPENDING
from custseg.monitoring.store import recorder
from custseg.pipeline.training_data import describe_ranges
from custseg.serving.batch import outside_ranges
from custseg.serving.charts import MAP_POINTS_PER_SEGMENT, MAP_SEED
from custseg.serving.model import features_frame, predict_segment

PREDICTED = "segment_predicted"  # set once the button was clicked; predictions then follow

served = ui_common.served_model()

st.sidebar.header("Customer")
# Streamlit drops a widget's value when its page is left; re-seed the sliders from a copy that
# survives, so coming back shows the customer whose prediction is still on the page.
for key, default in {"income": 60, "spending": 50}.items():
    if key not in st.session_state:  # first visit, or back from another page
        st.session_state[key] = st.session_state.get(f"kept_{key}", default)
# A form: moving a slider stays in the browser; only Predict sends both values and reruns the
# page (before, every slider step was a full rerun on the server).
with st.sidebar.form("customer", border=False):
    income = st.slider(
        MALL_HEADERS[INCOME], *(int(b) for b in BOUNDS[INCOME]), step=1, key="income"
    )
    spending = st.slider(
        MALL_HEADERS[SPENDING], *(int(b) for b in BOUNDS[SPENDING]), step=1, key="spending"
    )
    clicked = st.form_submit_button("Predict Customer Cluster", key="predict", type="primary")
    if clicked:
        st.session_state[PREDICTED] = True
st.session_state["kept_income"], st.session_state["kept_spending"] = income, spending

st.title("Which segment is this customer in?")
training = served.training  # the served version's own data, never the workspace's
st.caption(
    f"K-means with k = {served.n_clusters}, trained on {training.describe()}; version "
    f"{served.ref.version}, served from the MLflow model registry."
)

segment = (
    predict_segment(served.model, income, spending) if st.session_state.get(PREDICTED) else None
)
left, right = st.columns([1, 2], gap="large")

with left:
    if segment is None:
        st.info(
            "Set the customer's income and spending score, then click **Predict Customer Cluster**."
        )
    else:
        st.metric(
            "Predicted segment",
            f"Cluster {segment}",
            f"out of {served.n_clusters} clusters",
            delta_color="off",
            delta_arrow="off",
        )
        ranges = training.ranges
        customer = features_frame(income, spending)
        if ranges and outside_ranges(customer, ranges).any():
            st.warning(
                f"This customer lies outside the training data ({describe_ranges(ranges)}): "
                "the segment is an extrapolation.",
                icon=":material/warning:",
            )
        row = served.profile.iloc[segment]
        st.subheader(str(row["name"]).capitalize())
        if row.notna()[["size", "mean_income", "mean_spending"]].all():
            st.markdown(
                f"**{int(row['size']):,}** training customers ({row['share']:.0%}) are in this "
                f"segment.  \nOn average they earn **{row['mean_income']:.1f} k$** a year and "
                f"score **{row['mean_spending']:.1f}** for spending."
            )
        else:
            st.caption("No segment profile was logged with this model's training run.")
    ui_common.model_panel(served)

with right:
    segment_map = ui_common.segment_map(served)
    if not training.recorded:
        st.warning(
            f"{training.not_recorded()}: the map shows the segment centres only and the "
            "customer is not checked against the training ranges.",
            icon=":material/info:",
        )
    ui_common.draw_segment_map(segment_map, served.labels, (income, spending), segment)
    if training.rows is not None and segment_map.points < training.rows:
        st.caption(
            f"{segment_map.points:,} of the {training.rows:,} training customers are shown: "
            f"at most {MAP_POINTS_PER_SEGMENT} a segment, drawn at random (seed {MAP_SEED}) "
            "from the sample logged with this version."
        )

# Drift monitoring: each click is one scored customer (not each rerun: a revisit scores nothing
# new). Last, once the page is drawn, so a slow disk never delays the answer; never raises.
if clicked and segment is not None and (record := recorder(served.ref.version)) is not None:
    record(features_frame(income, spending), np.array([segment]))
