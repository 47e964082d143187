"""The last drift report (metrics/monitor.json) as the app shows it: read and checked, the
one-line verdict for the model panel, and the Monitoring page's figures (plotly dicts).

Pure but for reading the file; the page renders. A missing report is None; a malformed one
is a MonitorError naming what is wrong (the page says it in one line).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from custseg.errors import MonitorError
from custseg.features import FEATURES
from custseg.monitoring.drift import DRIFT, NO_DATA, NO_DRIFT, RETRAIN
from custseg.paths import MONITOR_METRICS

REPORT_ENV = "CUSTSEG_MONITOR_REPORT"  # another report than metrics/monitor.json
MONITOR_COMMAND = "dvc repro monitor"  # the recorded rows (data/scored/) of the served version
TRY_COMMAND = "custseg monitor --simulate-drift income"
_FEATURE_KEYS = ("psi", "ks", "p_value", "reference_mean", "window_mean")


def report_path() -> Path:
    return Path(os.environ.get(REPORT_ENV, "").strip() or MONITOR_METRICS)


def read_report(path: Path) -> dict[str, Any] | None:
    """The checked report at `path` with `checked_at` (the file's time), None when absent."""
    try:
        text, mtime = path.read_text(), path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError as error:
        raise MonitorError(f"{path}: unreadable ({error.strerror})") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise MonitorError(f"{path}: not JSON") from None
    report = check_report(data, str(path))
    return {**report, "checked_at": datetime.fromtimestamp(mtime, UTC)}


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise MonitorError(f"{where} is not a number")
    return float(value)


def check_report(data: Any, source: str) -> dict[str, Any]:
    """`data` if it has what the page shows, else MonitorError naming the first wrong field."""
    if not isinstance(data, dict):
        raise MonitorError(f"{source}: not a drift report")
    verdicts = (NO_DRIFT, DRIFT, RETRAIN, NO_DATA)
    if data.get("verdict") not in verdicts:
        raise MonitorError(f"{source}: verdict is not one of {', '.join(verdicts)}")
    for key in ("version", "summary"):
        if not isinstance(data.get(key), str):
            raise MonitorError(f"{source}: {key} is not text")
    _number(data.get("rows"), f"{source}: rows")
    check_daily(data.get("daily", []), source)
    if data["verdict"] == NO_DATA:  # too few rows: no statistics to check
        return data
    features = data.get("features")
    for feature in FEATURES:
        stats = features.get(feature) if isinstance(features, dict) else None
        if not isinstance(stats, dict):
            raise MonitorError(f"{source}: features.{feature} is missing")
        for key in _FEATURE_KEYS:
            _number(stats.get(key), f"{source}: features.{feature}.{key}")
    mix = data.get("segments")
    if not isinstance(mix, dict):
        raise MonitorError(f"{source}: segments is missing")
    _number(mix.get("p_value"), f"{source}: segments.p_value")
    shares = [mix.get("training_share"), mix.get("window_share")]
    if not all(isinstance(s, list) for s in shares) or len(shares[0]) != len(shares[1]):
        raise MonitorError(f"{source}: segments' shares are not two lists of one length")
    for i, share in enumerate(shares[0] + shares[1]):
        _number(share, f"{source}: segment share {i}")
    return data


def check_daily(daily: Any, source: str) -> None:
    """The segment mix by day: a list of {day, rows, shares}, shares of one length."""
    if not isinstance(daily, list):
        raise MonitorError(f"{source}: daily is not a list")
    lengths = set()
    for i, entry in enumerate(daily):
        where = f"{source}: daily[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("day"), str):
            raise MonitorError(f"{where}.day is not text")
        _number(entry.get("rows"), f"{where}.rows")
        shares = entry.get("shares")
        if not isinstance(shares, list):
            raise MonitorError(f"{where}.shares is not a list")
        for share in shares:
            _number(share, f"{where}.shares")
        lengths.add(len(shares))
    if len(lengths) > 1:
        raise MonitorError(f"{source}: daily shares are not of one length")


def verdict_line(report: dict[str, Any]) -> str:
    """The model panel's line: verdict, summary, rows and when."""
    when = report["checked_at"].strftime("%Y-%m-%d %H:%M UTC")
    detail = "" if report["verdict"] == NO_DRIFT else f": {report['summary']}"
    return f"Drift check {when}, {int(report['rows']):,} scored rows: {report['verdict']}{detail}"


def histogram_figure(feature: str, training: np.ndarray, histogram: Any) -> dict | None:
    """Training (the version's sample) vs recent shares over the report's bins, overlaid;
    None when the report carries no usable bins (written before it kept them)."""
    try:
        edges = np.asarray(histogram["edges"], dtype=float)
        recent = np.asarray(histogram["window"], dtype=float)
    except (KeyError, TypeError, ValueError):
        return None
    if edges.ndim != 1 or len(edges) < 2 or len(recent) != len(edges) - 1 or recent.sum() <= 0:
        return None
    inside = np.clip(training, edges[0], edges[-1])  # the bins span the window's range too
    train = np.histogram(inside, bins=edges)[0].astype(float)
    centres, widths = (edges[1:] + edges[:-1]) / 2, np.diff(edges)

    def bars(name: str, counts: np.ndarray, colour: str) -> dict:
        share = counts / counts.sum() if counts.sum() else counts
        return {"type": "bar", "name": name, "x": centres.tolist(), "y": share.tolist(),
                "width": widths.tolist(), "opacity": 0.55, "marker": {"color": colour}}  # fmt: skip

    return {
        "data": [bars("training", train, "#1f77b4"), bars("recent", recent, "#d62728")],
        "layout": {
            "barmode": "overlay",
            "title": {"text": feature},
            "xaxis": {"title": {"text": feature}},
            "yaxis": {"title": {"text": "share of customers"}, "tickformat": ".0%"},
            "height": 320,
            "margin": {"t": 40, "b": 40},
        },
    }


def segment_mix_figure(report: dict[str, Any]) -> dict:
    """Each segment's training vs recent share, side by side."""
    mix = report["segments"]
    ids = [str(i) for i in range(len(mix["training_share"]))]
    return {
        "data": [
            {"type": "bar", "name": "training", "x": ids, "y": mix["training_share"]},
            {"type": "bar", "name": "recent", "x": ids, "y": mix["window_share"]},
        ],
        "layout": {
            "barmode": "group",
            "xaxis": {"title": {"text": "segment"}, "type": "category"},
            "yaxis": {"title": {"text": "share of customers"}, "tickformat": ".0%"},
            "height": 320,
            "margin": {"t": 20, "b": 40},
        },
    }


def daily_mix_figure(report: dict[str, Any], names: list[str] | None = None) -> dict | None:
    """Each segment's share per recorded day (lines), with its training share dotted; None
    without days (a simulated window or a plain file has no day partitions)."""
    daily = report.get("daily") or []
    if not daily:
        return None
    days = [entry["day"] for entry in daily]
    training = report.get("segments", {}).get("training_share", [])
    data = []
    for segment in range(len(daily[0]["shares"])):
        name = names[segment] if names and segment < len(names) else f"segment {segment}"
        shares = [entry["shares"][segment] for entry in daily]
        data.append({"type": "scatter", "mode": "lines+markers", "name": name, "x": days,
                     "y": shares, "legendgroup": str(segment)})  # fmt: skip
        if segment < len(training):
            data.append({"type": "scatter", "mode": "lines", "x": [days[0], days[-1]],
                         "y": [training[segment]] * 2, "line": {"dash": "dot", "width": 1},
                         "legendgroup": str(segment), "showlegend": False,
                         "name": f"{name} (training)"})  # fmt: skip
    return {
        "data": data,
        "layout": {
            "xaxis": {"title": {"text": "day scored"}, "type": "category"},
            "yaxis": {"title": {"text": "share of the day's customers"}, "tickformat": ".0%"},
            "height": 340,
            "margin": {"t": 20, "b": 40},
        },
    }
