"""Where a model comes from: its data, the params that made it, the code, the engine.

Train records it (train_run.json, the MLflow run's tags); export copies it onto the registered
version, so the registry alone says what any version was trained on.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from custseg.config import Params

UNKNOWN = "unknown"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


# What `dvc repro` itself writes: a change there says nothing about the code a model came from.
PIPELINE_WRITES = ("dvc.lock", "data", "models", "metrics", "plots")


def git_state(root: Path = Path(".")) -> dict[str, Any]:
    """The checked-out commit and whether code, params or configs differ from it (None: no git).

    Changes to what the pipeline writes (PIPELINE_WRITES) do not count; the data is identified
    by its SHA-256 instead. A `dvc exp run` is dirty by design: its params are applied first.
    """
    commit = _git("rev-parse", "HEAD", cwd=root)
    if commit is None:
        return {"commit": None, "dirty": None}
    excluded = [f":(exclude){path}" for path in PIPELINE_WRITES]
    status = _git("status", "--porcelain", "--", ".", *excluded, cwd=root)
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def lineage(params: Params, data: Path, rows: int, root: Path = Path(".")) -> dict[str, Any]:
    """Data (path, SHA-256, rows), the params of simulate and train, git state and engine."""
    return {
        "data": {"path": str(data), "sha256": file_sha256(data), "rows": rows},
        "params": {
            "base": params.base.model_dump(mode="json"),
            "simulate": params.simulate.model_dump(mode="json"),
            "train": params.train.model_dump(mode="json"),
        },
        "git": git_state(root),
        "engine": params.train.engine,
    }


def flat_tags(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested values as MLflow tags: dotted keys, strings as they are, anything else as JSON
    (`true`, `200`, `null`), so a tag reads the same as the value in train_run.json."""
    tags: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            tags.update(flat_tags(value, f"{name}."))
        else:
            tags[name] = value if isinstance(value, str) else json.dumps(value)
    return tags


def describe_git(commit: str | None, dirty: bool | None) -> str:
    """'1a2b3c4' or '1a2b3c4 (uncommitted changes)', or 'unknown'."""
    if not commit:
        return UNKNOWN
    return f"{commit[:7]} (uncommitted changes)" if dirty else commit[:7]
