"""The registered segmentation model: resolve an alias, load the version, describe its run and
segments, and score one customer.

Pure functions, no Streamlit: the app (`app/`), the tests and the benchmarks call the same code.
MLflow is imported lazily (2–5 s) so importing this module stays cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from custseg.errors import InvalidInput, ModelNotFoundError, ServingError, first_line
from custseg.features import INCOME, SPENDING
from custseg.pipeline.lineage import describe_git
from custseg.serving.validation import frame_problems
from custseg.tracking import configure_mlflow, registry_uri, sqlite_path

if TYPE_CHECKING:
    from mlflow import MlflowClient

SETUP_COMMAND = "make run"


# --- the registered model -----------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """One registered model version, as found through an alias."""

    name: str
    alias: str
    version: str
    run_id: str
    registry_uri: str

    @property
    def uri(self) -> str:
        """The version's own URI: loading it cannot race with the alias being moved."""
        return f"models:/{self.name}/{self.version}"

    @property
    def cache_key(self) -> tuple[str, str, str, str]:
        """What identifies the loaded model (the alias is not part of it: it may move)."""
        return (self.registry_uri, self.name, self.version, self.run_id)


@dataclass(frozen=True)
class RunInfo:
    """What the model panel shows about the training run behind a version."""

    run_id: str
    experiment_id: str
    trained_at: datetime | None
    k: int | None
    silhouette: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: Lineage | None = None


@dataclass(frozen=True)
class Lineage:
    """What the model was trained on, from the run's tags (train writes them)."""

    data_sha256: str
    data_rows: int | None
    git_commit: str | None
    git_dirty: bool | None

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Lineage | None:
        """None for a run without lineage; anything malformed reads as unknown, never shown raw."""
        sha = tags.get("data.sha256", "")
        if not _HEX.fullmatch(sha):
            return None
        rows = tags.get("data.rows", "")
        commit = tags.get("git.commit", "")
        return cls(
            data_sha256=sha,
            data_rows=int(rows) if rows.isdigit() else None,
            git_commit=commit if _HEX.fullmatch(commit) else None,
            git_dirty={"true": True, "false": False}.get(tags.get("git.dirty", "")),
        )

    def describe(self) -> str:
        rows = "? rows" if self.data_rows is None else f"{self.data_rows:,} rows"
        return (
            f"data {self.data_sha256[:12]} ({rows}) · commit "
            f"{describe_git(self.git_commit, self.git_dirty)}"
        )


_HEX = re.compile(r"[0-9a-f]{7,64}")


def mlflow_client() -> MlflowClient:
    """A client on this project's stores (MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI honoured)."""
    return configure_mlflow().MlflowClient()


def missing_sqlite_store(uri: str) -> Path | None:
    """The file of a `sqlite:///` URI when it does not exist, else None.

    Checked first because MLflow would otherwise create and migrate an empty database (~6 s)
    just to report that it holds no model.
    """
    path = sqlite_path(uri)
    return None if path is None or path.is_file() else path


def registry_stamp(uri: str, ttl_s: float, now: float) -> tuple[int, int]:
    """A cache-key part that changes whenever the registry at `uri` may have changed: the
    sqlite file's modification time (any write changes it) and the `ttl_s`-long window `now`
    falls in, which bounds how stale an answer from any other store can be."""
    path = sqlite_path(uri)
    return (mtime_ns(path) if path is not None else -1), int(now // ttl_s)


def mtime_ns(path: Path) -> int:
    """`path`'s modification time in ns, -1 when it is not a file: a cache-key part that
    changes whenever the file is written (or appears)."""
    return path.stat().st_mtime_ns if path.is_file() else -1


def list_aliases(name: str, client: MlflowClient | None = None) -> dict[str, str]:
    """The registered model's aliases and the versions they point at ({} when none/no model)."""
    from mlflow.exceptions import MlflowException

    uri = registry_uri()
    if missing_sqlite_store(uri):
        return {}
    client = client or mlflow_client()
    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if not _model_exists(client, name):
            return {}
        raise ServingError(f"MLflow registry {uri}: {first_line(error)}") from None
    return {alias: str(version) for alias, version in sorted(model.aliases.items())}


def resolve_model(name: str, alias: str, client: MlflowClient | None = None) -> ModelRef:
    """Find the version behind `models:/<name>@<alias>` with one registry query.

    Raises ModelNotFoundError naming the command that fixes it when there is no registry,
    no such model, or no such alias.
    """
    from mlflow.exceptions import MlflowException

    uri = registry_uri()
    if (path := missing_sqlite_store(uri)) is not None:
        raise ModelNotFoundError(
            f"No MLflow registry yet ({path} does not exist). Train and register the model "
            f"with `{SETUP_COMMAND}`, then rerun the command, or reload the app."
        )
    client = client or mlflow_client()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        # Tell a missing model from a missing alias from a broken store (error codes vary).
        if not _model_exists(client, name):
            raise ModelNotFoundError(
                f"No registered model '{name}' in {uri}. Train and register it with "
                f"`{SETUP_COMMAND}`, then rerun the command, or reload the app."
            ) from None
        aliases = list_aliases(name, client)
        if alias in aliases:
            raise ServingError(f"MLflow registry {uri}: {first_line(error)}") from None
        have = ", ".join(f"@{a} → v{v}" for a, v in aliases.items()) or "no aliases"
        raise ModelNotFoundError(
            f"Model '{name}' has no version with alias @{alias} (it has {have}). "
            f"`{SETUP_COMMAND}` registers and promotes a model when it passes the quality "
            "gate, `custseg promote VERSION` promotes one by decision; or choose another alias."
        ) from None
    return ModelRef(name, alias, str(version.version), version.run_id or "", uri)


def version_ref(
    name: str, alias: str, version: str, client: MlflowClient | None = None
) -> ModelRef:
    """The ModelRef of a version already found under `alias` (e.g. by `list_aliases`), so what
    a page shows and what it serves come from one registry answer."""
    from mlflow.exceptions import MlflowException

    client = client or mlflow_client()
    try:
        found = client.get_model_version(name, version)
    except MlflowException as error:
        raise ServingError(f"MLflow registry {registry_uri()}: {first_line(error)}") from None
    return ModelRef(name, alias, str(found.version), found.run_id or "", registry_uri())


def _model_exists(client: MlflowClient, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


def load_model(ref: ModelRef) -> Any:
    """Load the version's scikit-learn KMeans (MLflow's skops format, not a pickle)."""
    mlflow = configure_mlflow()
    try:
        model = mlflow.sklearn.load_model(ref.uri)
    except Exception as error:  # any failure here is "the files are gone or unreadable"
        raise ServingError(
            f"Cannot load {ref.uri} (@{ref.alias}): {first_line(error)}. "
            f"Re-create the model with `{SETUP_COMMAND}`."
        ) from None
    if not hasattr(model, "cluster_centers_") or not hasattr(model, "predict"):
        raise ServingError(f"{ref.uri} is a {type(model).__name__}, not a fitted KMeans model")
    return model


def describe_run(run_id: str, client: MlflowClient | None = None) -> RunInfo:
    """Training time, k and silhouette of the run that produced a model version."""
    from mlflow.exceptions import MlflowException

    client = client or mlflow_client()
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise ServingError(
            f"The training run {run_id} of this model is gone: {first_line(error)}. "
            f"Re-create it with `{SETUP_COMMAND}`."
        ) from None
    metrics = dict(run.data.metrics)
    k = run.data.params.get("k")
    started = run.info.start_time
    return RunInfo(
        run_id=run_id,
        experiment_id=str(run.info.experiment_id),
        trained_at=None if started is None else datetime.fromtimestamp(started / 1000, tz=UTC),
        k=int(k) if k is not None and str(k).isdigit() else None,
        silhouette=metrics.get("silhouette"),
        metrics=metrics,
        lineage=Lineage.from_tags(dict(run.data.tags)),
    )


PROFILE_COLUMNS = ["segment", "name", "size", "share", "mean_income", "mean_spending"]


def load_segment_profiles(
    run: RunInfo, n_clusters: int, client: MlflowClient | None = None
) -> pd.DataFrame:
    """The run's `segment_profiles.json` table, one row per segment 0..k-1.

    A run without the table (logged by something else) still gets one row per segment, named
    "segment N" with unknown sizes, so the app never depends on this artifact to work.
    """
    client = client or mlflow_client()
    try:
        table = client.load_table(run.experiment_id, "segment_profiles.json", run_ids=[run.run_id])
    except Exception:  # missing artifact or unreadable table: fall back below
        table = pd.DataFrame(columns=PROFILE_COLUMNS)
    profile = pd.DataFrame({"segment": range(n_clusters)})
    if not table.empty and "segment" in table:
        keep = [c for c in table.columns if c in PROFILE_COLUMNS]
        profile = profile.merge(table[keep].drop_duplicates("segment"), on="segment", how="left")
    for column in PROFILE_COLUMNS:
        if column not in profile:
            profile[column] = np.nan
    profile["name"] = [
        name if isinstance(name, str) and name else f"segment {segment}"
        for segment, name in zip(profile["segment"], profile["name"], strict=True)
    ]
    return profile[PROFILE_COLUMNS]


def segment_labels(profile: pd.DataFrame) -> list[str]:
    """Unique display labels "N · name", indexed by segment id (two segments may share a name)."""
    return [f"{s} · {n}" for s, n in zip(profile["segment"], profile["name"], strict=True)]


def mlflow_run_url(ui_url: str | None, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run, when the UI's address is configured (e.g. MLFLOW_UI_URL)."""
    if not ui_url or not ui_url.strip():
        return None
    return f"{ui_url.strip().rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


# --- one customer ---------------------------------------------------------------------------


def features_frame(income: Any, spending: Any) -> pd.DataFrame:
    """The model's input: float columns named as at training time (no feature-name warning)."""
    return pd.DataFrame(
        {
            INCOME: np.asarray(income, dtype=float).reshape(-1),
            SPENDING: np.asarray(spending, dtype=float).reshape(-1),
        }
    )


def predict_segment(model: Any, income: float, spending: float) -> int:
    """The segment id of one customer; InvalidInput, naming the feature, for values the rules
    refuse (custseg.serving.validation: batch and REST check the same way)."""
    customer = features_frame(income, spending)
    if problems := frame_problems(customer):
        raise InvalidInput([problem.describe("row", 0) for problem in problems])
    return int(model.predict(customer)[0])
