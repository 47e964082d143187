"""Streamlit glue shared by the app's pages: settings, caches, the model selector and panel.

The logic lives in `custseg.serving` (model, batch, charts); this module only caches it and
renders it. `streamlit run app/Home.py` makes the entry point's folder importable, so pages
simply `import ui_common`.
"""

from __future__ import annotations

import functools
import gc
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import streamlit.components.v1 as components
from streamlit import config, runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from custseg.config import ExportParams, load_params
from custseg.errors import ConfigError, ModelNotFoundError, MonitorError, ServingError
from custseg.features import FEATURES
from custseg.monitoring.report import read_report, report_path, verdict_line
from custseg.paths import PARAMS
from custseg.serving.charts import customer_star, segment_map_spec, thin_per_segment
from custseg.serving.map_component import MapParts, component_dir, map_parts, render_args
from custseg.serving.memory import start_releasing
from custseg.serving.model import (
    SETUP_COMMAND,
    ModelRef,
    RunInfo,
    describe_run,
    features_frame,
    list_aliases,
    load_model,
    load_segment_profiles,
    mlflow_client,
    mlflow_run_url,
    mtime_ns,
    registry_stamp,
    resolve_model,
    segment_labels,
    version_ref,
)
from custseg.serving.training_data import TrainingData, load_training_data
from custseg.telemetry import disable_telemetry
from custseg.tracking import registry_uri, tracking_uri

disable_telemetry()
# MLflow's tqdm bars would otherwise fill the server log on every artifact read.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ALIAS_KEY = "model_alias"
ALIASES_SEEN = "model_aliases_seen"  # {alias: version} as the sidebar showed them this run
ENV_ALIAS = "CUSTSEG_MODEL_ALIAS"
ENV_NAME = "CUSTSEG_MODEL_NAME"
ENV_UI_URL = "MLFLOW_UI_URL"
# How stale the alias box may be on a store whose changes cannot be seen (a tracking server);
# a local sqlite registry is re-read as soon as its file changes.
REGISTRY_TTL_S = 3.0


@dataclass(frozen=True)
class ServedModel:
    """The model a page scores with, and what the app shows about it."""

    ref: ModelRef
    run: RunInfo
    model: Any
    profile: pd.DataFrame
    labels: list[str]
    training: TrainingData  # the version's own data: map, ranges, caption

    @property
    def n_clusters(self) -> int:
        return int(self.model.n_clusters)


# Large per-session results live here, not in st.session_state: Streamlit keeps a closed tab's
# session (state and all) until its TTL has passed *and* another visitor connects, so on a quiet
# server a 1M-row upload stayed in memory indefinitely. The memory thread drops the results of
# sessions that are no longer connected (a reconnecting tab simply scores its file again).
_RESULTS: dict[str, Any] = {}
_RESULTS_LOCK = threading.Lock()
_INACTIVE_SINCE: dict[str, float] = {}  # session id → when first seen disconnected


def _session_id() -> str:
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else ""


def keep_result(value: Any) -> None:
    """Keep `value` for this session's later reruns (one value a session)."""
    with _RESULTS_LOCK:
        _RESULTS[_session_id()] = value


def kept_result() -> Any:
    """What this session kept with `keep_result`, or None."""
    with _RESULTS_LOCK:
        return _RESULTS.get(_session_id())


def forget_result() -> None:
    with _RESULTS_LOCK:
        _RESULTS.pop(_session_id(), None)


def drop_what_closed_sessions_hold() -> None:
    """Results of sessions no longer connected, and uploads of sessions that cannot come back."""
    if not runtime.exists():  # e.g. under AppTest: no server, no sessions to outlive
        return
    server = runtime.get_instance()
    with _RESULTS_LOCK:
        for session in [s for s in _RESULTS if not server.is_active_session(s)]:
            del _RESULTS[session]
    # Streamlit frees a session's uploads when the session shuts down, but a tab closed for good
    # only expires from the reconnect cache, without a shutdown: its uploads stayed forever.
    uploads = server.uploaded_file_mgr
    ttl_s = config.get_option("server.disconnectedSessionTTL")
    now = time.monotonic()
    for session in list(getattr(uploads, "file_storage", {})):
        if server.is_active_session(session):
            _INACTIVE_SINCE.pop(session, None)
        elif now - _INACTIVE_SINCE.setdefault(session, now) > ttl_s:  # past any reconnect
            uploads.remove_session_files(session)
            del _INACTIVE_SINCE[session]


# Freed memory goes back to the OS every few seconds, after closed sessions' results are dropped.
start_releasing(before=drop_what_closed_sessions_hold)


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
    return _export_params_at(str(path), mtime_ns(path))


def model_name() -> str:
    """Registered model name: $CUSTSEG_MODEL_NAME, else params.yaml `export.model_name`."""
    return os.environ.get(ENV_NAME, "").strip() or _export_params()[0]


def default_alias() -> str:
    """Alias served by default: $CUSTSEG_MODEL_ALIAS, else params.yaml `export.alias`."""
    return os.environ.get(ENV_ALIAS, "").strip() or _export_params()[1]


def selected_alias() -> str:
    return st.session_state.get(ALIAS_KEY) or default_alias()


def _stamp() -> tuple[int, int]:
    return registry_stamp(registry_uri(), REGISTRY_TTL_S, time.time())


# Registry answers shared by every session until the store may have changed: querying it on
# every rerun cost ~20 ms of server CPU a click. Errors are not cached (they raise).
@st.cache_data(max_entries=16, show_spinner=False)
def _aliases(uri: str, name: str, stamp: tuple[int, int]) -> dict[str, str]:
    return list_aliases(name)


@st.cache_data(max_entries=64, show_spinner=False)
def _version_ref(uri: str, name: str, alias: str, version: str, stamp: tuple[int, int]) -> ModelRef:
    return version_ref(name, alias, version)


def model_selector() -> None:
    """Sidebar select of the registered model's aliases (the default alias listed first)."""
    default = default_alias()
    try:
        aliases = _aliases(registry_uri(), model_name(), _stamp())
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


# A version's data never changes; the TTL only lets a failed read (taken as "not recorded")
# be tried again.
@st.cache_data(max_entries=32, ttl=60, show_spinner=False)
def _training_data(store: str, version: str, run_id: str) -> TrainingData:
    return load_training_data(version, run_id, mlflow_client())


def served_model() -> ServedModel:
    """The model behind the selected alias, or an actionable message and a stopped page."""
    try:
        # No client up front: creating one would create (and migrate) a missing sqlite store.
        alias, seen = selected_alias(), st.session_state.get(ALIASES_SEEN) or {}
        if alias in seen:
            ref = _version_ref(registry_uri(), model_name(), alias, seen[alias], _stamp())
        else:  # not found by the selector: resolve_model names what is missing
            ref = resolve_model(model_name(), alias)
        model = _load_model(ref.cache_key, ref)
        run = _run_info(tracking_uri(), ref.run_id)
        profile = _profile(tracking_uri(), ref.run_id, int(model.n_clusters), run)
        training = _training_data(tracking_uri(), ref.version, ref.run_id)
    except ServingError as error:
        show_model_error(error)
        st.stop()
    return ServedModel(ref, run, model, profile, segment_labels(profile), training)


def show_model_error(error: ServingError) -> None:
    """The problem in one line and, when it is a missing model, the command that fixes it."""
    st.error(str(error), icon=":material/error:")
    if isinstance(error, ModelNotFoundError):
        st.info("From the repository root, train and register the model, then reload:")
        st.code(SETUP_COMMAND, language="bash")


@dataclass(frozen=True)
class SegmentMap:
    """The segment map of a model without the customer (a plotly figure dict, shared by every
    session: read, never changed) and how many training customers it shows."""

    spec: dict
    points: int
    parts: MapParts  # the spec as the map component's JSON, serialised once


# A resource, not data: the same dict is handed to every session instead of a pickled copy.
@st.cache_resource(max_entries=4, show_spinner="Scoring the training customers…")
def _segment_map(model_key: tuple[str, ...], recorded: bool, _served: ServedModel) -> SegmentMap:
    customers, model = _served.training.sample, _served.model
    segments = (
        model.predict(features_frame(customers[FEATURES[0]], customers[FEATURES[1]]))
        if len(customers)
        else np.array([], dtype=int)
    )
    drawn = thin_per_segment(segments)
    spec = segment_map_spec(
        customers.iloc[drawn], segments[drawn], model.cluster_centers_, _served.labels
    )
    return SegmentMap(spec, len(drawn), map_parts(spec))


def segment_map(served: ServedModel) -> SegmentMap:
    """The served version's map of its own training customers (the sample train logged with
    it; only the centres for a version without one), built once per version."""
    return _segment_map(served.ref.cache_key, served.training.recorded, served)


@functools.cache
def _map_component():
    # declare_component once per process; its folder is built once per page and plotly version.
    folder = component_dir(Path("~/.cache/custseg/components").expanduser())
    return components.declare_component("segment_map", path=str(folder))


def draw_segment_map(
    segment_map: SegmentMap,
    labels: list[str],
    point: tuple[float, float] | None,
    point_segment: int | None,
) -> None:
    """The map with the customer's star, redrawn in place (Plotly.react) on every rerun: a
    stable key keeps the component's frame, where st.plotly_chart mounted a new chart."""
    star = None if point is None else customer_star(point, point_segment, labels).to_plotly_json()
    _map_component()(**render_args(segment_map.parts, star), key="segment_map", default=None)


def last_verdict(version: str) -> str | None:
    """The last drift report's one line when it is of `version` (a broken one: nothing here;
    the Monitoring page names the problem)."""
    try:
        report = read_report(report_path())
    except MonitorError:
        return None
    return verdict_line(report) if report and report["version"] == version else None


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
        if verdict := last_verdict(ref.version):
            st.text(verdict)  # from a file: text, never Markdown
        url = mlflow_run_url(os.environ.get(ENV_UI_URL), run.experiment_id, ref.run_id)
        if url:
            st.link_button("Open the run in MLflow", url)
        else:
            st.caption(
                f"Set `{ENV_UI_URL}` (e.g. `http://127.0.0.1:5000`, see `make ui`) to link the run."
            )
