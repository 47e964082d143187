"""Streamlit glue shared by the app's pages: settings, caches, the model selector and panel.

The logic lives in `custseg.serving` (model, batch, charts); this module only caches it and
renders it. `streamlit run app/Home.py` makes the entry point's folder importable, so pages
simply `import ui_common`.
"""

from __future__ import annotations

import functools
import gc
import os
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from custseg.config import ConfigError, ExportParams, load_params
from custseg.features import FEATURES
from custseg.paths import CUSTOMERS, PARAMS
from custseg.pipeline.data import read_training_data
from custseg.serving.batch import Ranges, training_ranges
from custseg.serving.charts import display_sample
from custseg.serving.model import (
    SETUP_COMMAND,
    ModelNotFoundError,
    ModelRef,
    RunInfo,
    ServingError,
    describe_run,
    features_frame,
    list_aliases,
    load_model,
    load_segment_profiles,
    mlflow_run_url,
    resolve_model,
    segment_labels,
    version_ref,
)
from custseg.telemetry import disable_telemetry
from custseg.tracking import tracking_uri

disable_telemetry()
# MLflow's tqdm bars would otherwise fill the server log on every artifact read.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ALIAS_KEY = "model_alias"
ALIASES_SEEN = "model_aliases_seen"  # {alias: version} as the sidebar showed them this run
ENV_ALIAS = "CUSTSEG_MODEL_ALIAS"
ENV_NAME = "CUSTSEG_MODEL_NAME"
ENV_UI_URL = "MLFLOW_UI_URL"
MAX_MAP_POINTS = 5_000


@dataclass(frozen=True)
class ServedModel:
    """The model a page scores with, and what the app shows about it."""

    ref: ModelRef
    run: RunInfo
    model: Any
    profile: pd.DataFrame
    labels: list[str]

    @property
    def n_clusters(self) -> int:
        return int(self.model.n_clusters)


@functools.lru_cache(maxsize=8)
def _export_params_at(path: str, mtime_ns: int) -> tuple[str, str]:
    try:
        export = load_params(path).export
    except ConfigError:  # a broken params.yaml must not break serving: use the defaults
        export = ExportParams()
    return export.model_name, export.alias


def _export_params() -> tuple[str, str]:
    """(model name, alias) from params.yaml, re-read only when the file changes."""
    path = PARAMS.resolve()
    mtime = path.stat().st_mtime_ns if path.is_file() else -1
    return _export_params_at(str(path), mtime)


def model_name() -> str:
    """Registered model name: $CUSTSEG_MODEL_NAME, else params.yaml `export.model_name`."""
    return os.environ.get(ENV_NAME, "").strip() or _export_params()[0]


def default_alias() -> str:
    """Alias served by default: $CUSTSEG_MODEL_ALIAS, else params.yaml `export.alias`."""
    return os.environ.get(ENV_ALIAS, "").strip() or _export_params()[1]


def selected_alias() -> str:
    return st.session_state.get(ALIAS_KEY) or default_alias()


def model_selector() -> None:
    """Sidebar select of the registered model's aliases (the default alias listed first)."""
    default = default_alias()
    try:
        aliases = list_aliases(model_name())
    except ServingError:
        aliases = {}  # the page that needs the model reports the problem
    # The page serves the version this very query found: the box and the panel cannot differ.
    st.session_state[ALIASES_SEEN] = aliases
    options = sorted(set(aliases) | {default}, key=lambda a: (a != default, a))
    if st.session_state.get(ALIAS_KEY) not in options:  # an alias removed meanwhile
        st.session_state.pop(ALIAS_KEY, None)
    st.sidebar.selectbox(
        "Model alias",
        options,
        key=ALIAS_KEY,
        format_func=lambda a: f"@{a} → v{aliases[a]}" if a in aliases else f"@{a} (not set)",
        help=f"Which registered version of '{model_name()}' scores customers. "
        f"The default comes from ${ENV_ALIAS} or params.yaml.",
    )


# Keyed by version, not alias: a newly promoted champion is a new key, loaded on the next rerun
# without restarting the server; the alias itself is re-resolved (one cheap query) every rerun.
@st.cache_resource(max_entries=4, show_spinner="Loading the model from the MLflow registry…")
def _load_model(key: tuple[str, str, str, str], _ref: ModelRef) -> Any:
    model = load_model(_ref)
    # Streamlit runs a full gc.collect() after every rerun; with MLflow, pandas and the model on
    # the heap that cost ~200 ms a rerun. Freezing what is loaded by now takes it out of every
    # later collection (objects created by sessions are still collected).
    gc.freeze()
    return model


@st.cache_data(max_entries=32, show_spinner=False)
def _run_info(store: str, run_id: str) -> RunInfo:
    return describe_run(run_id)


@st.cache_data(max_entries=32, show_spinner=False)
def _profile(store: str, run_id: str, n_clusters: int, _run: RunInfo) -> pd.DataFrame:
    return load_segment_profiles(_run, n_clusters)


def served_model() -> ServedModel:
    """The model behind the selected alias, or an actionable message and a stopped page."""
    try:
        # No client up front: creating one would create (and migrate) a missing sqlite store.
        alias, seen = selected_alias(), st.session_state.get(ALIASES_SEEN) or {}
        if alias in seen:
            ref = version_ref(model_name(), alias, seen[alias])
        else:  # not found by the selector: resolve_model names what is missing
            ref = resolve_model(model_name(), alias)
        model = _load_model(ref.cache_key, ref)
        run = _run_info(tracking_uri(), ref.run_id)
        profile = _profile(tracking_uri(), ref.run_id, int(model.n_clusters), run)
    except ServingError as error:
        show_model_error(error)
        st.stop()
    return ServedModel(ref, run, model, profile, segment_labels(profile))


def show_model_error(error: ServingError) -> None:
    """The problem in one line and, when it is a missing model, the command that fixes it."""
    st.error(str(error), icon=":material/error:")
    if isinstance(error, ModelNotFoundError):
        st.info("From the repository root, train and register the model, then reload:")
        st.code(SETUP_COMMAND, language="bash")


@st.cache_data(max_entries=4, show_spinner="Scoring the training customers…")
def _training_view(
    path: str, mtime_ns: int, model_key: tuple[str, ...], max_points: int, _model: Any
) -> pd.DataFrame:
    customers = display_sample(read_training_data(path), max_points)
    view = customers.copy()
    view["segment"] = _model.predict(features_frame(view[FEATURES[0]], view[FEATURES[1]]))
    return view


@st.cache_data(max_entries=4, show_spinner=False)
def _training_ranges(path: str, mtime_ns: int) -> Ranges:
    return training_ranges(read_training_data(path))


def training_data_ranges() -> Ranges | None:
    """(min, max) of each feature in the training customers (None without the data file)."""
    path = CUSTOMERS.resolve()
    return _training_ranges(str(path), path.stat().st_mtime_ns) if path.is_file() else None


def training_view(served: ServedModel) -> pd.DataFrame | None:
    """A display sample of the training customers with the served model's segments (None if
    the data file is missing: the map then shows only the centers)."""
    path = CUSTOMERS.resolve()
    if not path.is_file():
        return None
    key = served.ref.cache_key
    return _training_view(str(path), path.stat().st_mtime_ns, key, MAX_MAP_POINTS, served.model)


def model_panel(served: ServedModel) -> None:
    """Name, version, alias, run, training time, k and silhouette, linked to the MLflow UI."""
    ref, run = served.ref, served.run
    with st.container(border=True):
        st.markdown(f"**Model** `{ref.name}` v{ref.version} · @{ref.alias}")
        trained = run.trained_at.strftime("%Y-%m-%d %H:%M UTC") if run.trained_at else "unknown"
        silhouette = "n/a" if run.silhouette is None else f"{run.silhouette:.3f}"
        st.markdown(
            f"k = **{served.n_clusters}** · silhouette **{silhouette}**  \n"
            f"trained {trained}  \nrun `{ref.run_id}`"
        )
        # Built only from validated hex digests and numbers: nothing here is free text.
        st.caption(run.lineage.describe() if run.lineage else "data and commit: not recorded")
        url = mlflow_run_url(os.environ.get(ENV_UI_URL), run.experiment_id, ref.run_id)
        if url:
            st.link_button("Open the run in MLflow", url)
        else:
            st.caption(
                f"Set `{ENV_UI_URL}` (e.g. `http://127.0.0.1:5000`, see `make ui`) to link the run."
            )
