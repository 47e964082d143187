"""MLflow set-up in one place: sqlite tracking + registry, artifacts under ./mlruns."""

from __future__ import annotations

import os

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# Environment switches that keep MLflow, DVC, Streamlit and deepeval from phoning home.
NO_TELEMETRY = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
}


def disable_telemetry() -> None:
    for key, value in NO_TELEMETRY.items():
        os.environ.setdefault(key, value)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def registry_uri() -> str:
    return os.environ.get("MLFLOW_REGISTRY_URI", tracking_uri())


def configure_mlflow(experiment: str | None = None):
    """Point MLflow at this project's stores (overridable by MLFLOW_* variables); return mlflow."""
    disable_telemetry()
    import mlflow  # imported here: 2–5 s, and only entry points that track should pay it

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(registry_uri())
    if experiment:
        mlflow.set_experiment(experiment)
    return mlflow


def model_uri(name: str, alias: str) -> str:
    return f"models:/{name}@{alias}"
