"""Plotly figures of the served model: the segment map and the batch segment counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from custseg.features import BOUNDS, INCOME, MALL_HEADERS, SPENDING

# Enough distinct colours for k ≤ 24 (k_range tops out at 10); cycled beyond that.
PALETTE = qualitative.Plotly + qualitative.Set2 + qualitative.Pastel1
# Customers drawn per segment: each browser redraws every point after a Predict, and 20 sessions
# share the server's cores; a few hundred a segment still show each segment's shape.
MAP_POINTS_PER_SEGMENT = 300
MAP_SEED = 0


def segment_color(segment: int) -> str:
    """The colour of a segment, the same in every figure."""
    return PALETTE[segment % len(PALETTE)]


def thin_per_segment(
    segments: np.ndarray, per_segment: int = MAP_POINTS_PER_SEGMENT, seed: int = MAP_SEED
) -> np.ndarray:
    """Row positions of at most `per_segment` rows of each segment, drawn with `seed`, in row
    order: the same segments and seed give the same rows."""
    segments = np.asarray(segments)
    rng = np.random.default_rng(seed)
    kept = [
        rng.choice(rows, per_segment, replace=False) if len(rows) > per_segment else rows
        for rows in (np.flatnonzero(segments == s) for s in np.unique(segments))
    ]
    return np.sort(np.concatenate(kept)) if kept else np.array([], dtype=int)


def segment_map_spec(
    customers: pd.DataFrame, segments: np.ndarray, centers: np.ndarray, labels: list[str]
) -> dict:
    """Customers coloured by segment and segment centers as black X, validated, as a plain
    figure dict; `customer_star` is the customer, drawn over it as a yellow star.

    `customers` holds the feature columns (and `customer_id` if known); `segments` is the
    model's prediction for each row; `labels[s]` names segment s in the legend and hovers.

    The app builds it once per model and sends each rerun's star alone (map_component.py): building
    and validating the whole figure again cost ~25 ms of server CPU a click.
    """
    fig = go.Figure()
    ids = customers["customer_id"] if "customer_id" in customers else pd.Series(customers.index)
    segments = np.asarray(segments)
    for segment, label in enumerate(labels):
        rows = segments == segment
        if not rows.any():
            continue
        fig.add_trace(
            go.Scatter(
                x=customers[INCOME].to_numpy()[rows],
                y=customers[SPENDING].to_numpy()[rows],
                mode="markers",
                name=label,
                marker={"color": segment_color(segment), "size": 8, "opacity": 0.75},
                customdata=ids.to_numpy()[rows],
                hovertemplate=(
                    f"<b>{label}</b><br>customer %{{customdata}}<br>"
                    "income %{x:.0f} k$<br>spending score %{y:.0f}<extra></extra>"
                ),
            )
        )
    fig.add_trace(
        go.Scatter(
            x=centers[:, 0],
            y=centers[:, 1],
            mode="markers",
            name="segment centers",
            marker={"symbol": "x", "color": "black", "size": 14, "line": {"width": 1}},
            text=labels[: len(centers)],
            hovertemplate=(
                "<b>center of %{text}</b><br>income %{x:.1f} k$<br>"
                "spending score %{y:.1f}<extra></extra>"
            ),
        )
    )
    fig.update_layout(
        xaxis={"title": MALL_HEADERS[INCOME], "range": axis_range(BOUNDS[INCOME])},
        yaxis={"title": MALL_HEADERS[SPENDING], "range": axis_range(BOUNDS[SPENDING])},
        # Legend above the plot: at the side it would squeeze the plot in a half-width column.
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        height=560,
        hovermode="closest",
    )
    return fig.to_dict()


def customer_star(
    point: tuple[float, float], point_segment: int | None, labels: list[str]
) -> go.Scatter:
    """The customer being segmented, as a gold star naming its segment in the hover."""
    where = "" if point_segment is None else f"<br>{labels[point_segment]}"
    return go.Scatter(
        x=[point[0]],
        y=[point[1]],
        mode="markers",
        name="this customer",
        marker={
            "symbol": "star",
            "color": "gold",
            "size": 26,
            "line": {"color": "black", "width": 1.5},
        },
        hovertemplate=(
            f"<b>this customer</b>{where}<br>income %{{x:.0f}} k$<br>"
            "spending score %{y:.0f}<extra></extra>"
        ),
    )


def with_customer(
    spec: dict,
    labels: list[str],
    point: tuple[float, float] | None,
    point_segment: int | None = None,
) -> go.Figure:
    """The figure of a `segment_map_spec` plus the customer's star; `spec` is not changed.
    (The app now sends the two apart to its map component; this stays for apps of older
    checkouts that bench_app_client.py runs against this package.)

    Both parts are validated when built (the star just now), so they are assembled without a
    second validation: plotly's `_validate=False`, the switch its own template loader uses.
    """
    data = list(spec["data"])
    if point is not None:
        data.append(customer_star(point, point_segment, labels).to_plotly_json())
    return go.Figure({"data": data, "layout": spec["layout"]}, _validate=False)


def axis_range(bounds: tuple[float, float], pad: float = 0.04) -> list[float]:
    """The app's input range plus a margin: fixed axes keep the star in view wherever it is."""
    low, high = bounds
    return [low - pad * (high - low), high + pad * (high - low)]


def segment_counts_figure(counts: pd.DataFrame) -> go.Figure:
    """Customers per segment as horizontal bars, coloured like the segment map."""
    fig = go.Figure(
        go.Bar(
            x=counts["customers"],
            y=counts["name"],
            orientation="h",
            marker={"color": [segment_color(int(s)) for s in counts["segment"]]},
            text=[
                f"{c:,} ({s:.0%})"
                for c, s in zip(counts["customers"], counts["share"], strict=True)
            ],
            textposition="auto",
            hovertemplate="%{y}<br>%{x:,} customers<extra></extra>",
        )
    )
    fig.update_layout(
        xaxis_title="customers",
        yaxis={"autorange": "reversed"},
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        height=max(200, 45 * len(counts)),
    )
    return fig
