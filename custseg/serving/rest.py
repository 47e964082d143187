"""REST scoring for programs: MLflow's own scoring server on the registered model.

`custseg serve` (`make serve`) resolves the alias once, so the server and its log name one
version, then runs `mlflow models serve` on that version in this environment (no conda or
virtualenv build), bound to 127.0.0.1. Its API is MLflow's: POST /invocations with
`dataframe_split` / `dataframe_records` JSON or CSV; GET /ping, /health, /version.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from custseg.serving.model import ModelRef, resolve_model
from custseg.telemetry import NO_TELEMETRY
from custseg.tracking import registry_uri, tracking_uri

DEFAULT_PORT = 5001  # beside the MLflow UI's 5000


def serve_command(ref: ModelRef, port: int, host: str = "127.0.0.1") -> list[str]:
    """The `mlflow models serve` command line for one registered version."""
    return [
        sys.executable, "-m", "mlflow", "models", "serve",
        "--model-uri", ref.uri,
        "--env-manager", "local",  # this project's environment: nothing is built or fetched
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip


def serve_environment() -> dict[str, str]:
    """The server's environment: this project's stores, telemetry off."""
    # MLflow starts `uvicorn` by name: this interpreter's scripts come first on PATH.
    scripts = str(Path(sys.executable).parent)
    return {
        **os.environ,
        **NO_TELEMETRY,
        "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": tracking_uri(),
        "MLFLOW_REGISTRY_URI": registry_uri(),
    }


def serve(name: str, alias: str, port: int) -> None:
    """Resolve `name@alias` (one line and exit 2 if there is none) and become the server."""
    ref = resolve_model(name, alias)  # ModelNotFoundError: a ServingError, reported as one line
    print(
        f"serving {ref.name} v{ref.version} (@{alias}) at http://127.0.0.1:{port}/invocations",
        flush=True,
    )
    command = serve_command(ref, port)
    os.execve(command[0], command, serve_environment())
