"""Plotly figures shared by the train stage (MLflow artifact) and the app."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def k_sweep_figure(sweep: pd.DataFrame, chosen_k: int) -> go.Figure:
    """Elbow (inertia) and silhouette curves over k, the chosen k marked."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Elbow: inertia", "Silhouette"))
    for col, metric in ((1, "inertia"), (2, "silhouette")):
        fig.add_trace(
            go.Scatter(x=sweep["k"], y=sweep[metric], mode="lines+markers", name=metric),
            row=1,
            col=col,
        )
        fig.add_vline(x=chosen_k, line_dash="dash", line_color="grey", row=1, col=col)
    fig.update_xaxes(title_text="k (clusters)", dtick=1)
    fig.update_layout(showlegend=False, title=f"k sweep (chosen k = {chosen_k})", height=400)
    return fig
