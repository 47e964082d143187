"""Nothing phones home: the switches that turn off MLflow, DVC, Streamlit and deepeval telemetry."""

from __future__ import annotations

import os

NO_TELEMETRY = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
}


def disable_telemetry() -> None:
    """Set the switches in this process (and its children) unless the user set them already.

    Called before those libraries are imported: deepeval reads its opt-out at import and exit.
    """
    for key, value in NO_TELEMETRY.items():
        os.environ.setdefault(key, value)
