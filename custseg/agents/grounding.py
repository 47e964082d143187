"""What the agents know about the customers: the registered champion's segments.

At start, and whenever the champion alias has moved (checked at most every REFRESH_S), the
agents read the champion version's `segment_profiles.json` (names, sizes, shares, means; train
logs it) from the MLflow registry; every agent gets them as context (`roles.prompt`), and every
reply records the model name, version and segments that grounded it (`GroundedIn`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable

import msgspec

from custseg.conversation import GroundedIn
from custseg.errors import ModelNotFoundError, NoGrounding, ServingError
from custseg.serving.model import SETUP_COMMAND, describe_run, load_segment_profiles, resolve_model
from custseg.tracking import registry_uri

REFRESH_S = 30.0  # how stale the agents' idea of the champion may get


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def champion_version(model: str, alias: str) -> str:
    """The version `models:/<model>@<alias>` points at now (one registry query)."""
    try:
        return resolve_model(model, alias).version
    except ServingError as error:
        raise NoGrounding(f"cannot resolve {model}@{alias}: {error}") from None


def load_grounding(model: str, alias: str) -> GroundedIn:
    """The segments of `models:/<model>@<alias>`; NoGrounding (one line) without one."""
    # The agents' stderr is their event log: no artifact-download progress bars in it.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        ref = resolve_model(model, alias)
        run = describe_run(ref.run_id)
        k = run.k or 0
        profiles = load_segment_profiles(run, k) if k else None
    except ModelNotFoundError:
        raise NoGrounding(
            f"no registered model {model}@{alias} in {registry_uri()} to ground the agents' "
            f"answers in: run `{SETUP_COMMAND}` first"
        ) from None
    except ServingError as error:
        raise NoGrounding(f"cannot read {model}@{alias}'s segments: {error}") from None
    if profiles is None or profiles.empty:
        raise NoGrounding(f"{model} v{ref.version} has no segment profiles: run `{SETUP_COMMAND}`")
    raw = {
        "model": model,
        "version": ref.version,
        "segments": [
            {
                "id": int(row.segment),
                "name": str(row.name),
                "size": None if (size := _number(row.size)) is None else int(size),
                "share": _number(row.share),
                "mean_income": _number(row.mean_income),
                "mean_spending": _number(row.mean_spending),
            }
            for row in profiles.itertuples(index=False)
        ],
    }
    # Validated here, against the envelope's own limits: a profile no reply could carry (a
    # 300-character name, a negative size) refuses the start instead of dead-lettering every reply.
    try:
        return msgspec.convert(raw, GroundedIn)
    except msgspec.ValidationError as error:
        raise NoGrounding(
            f"{model} v{ref.version}'s segment profiles cannot ground the agents: {error}"
        ) from None


class Champion:
    """The grounding to use now, shared by the worker threads: the alias is resolved again at
    most every `refresh_s`, the segments loaded again only when it points at another version.
    A registry that does not answer then keeps the last grounding (and says so)."""

    def __init__(
        self,
        model: str,
        alias: str,
        load: Callable[[str, str], GroundedIn] = load_grounding,
        refresh_s: float = REFRESH_S,
        on_event: Callable[[str], None] = print,
        version_of: Callable[[str, str], str] = champion_version,
    ) -> None:
        self.model, self.alias, self.load, self.refresh_s = model, alias, load, refresh_s
        self.on_event, self.version_of = on_event, version_of
        self.lock = threading.Lock()
        self.grounding = load(model, alias)  # raises NoGrounding: the agents refuse to start
        self.checked = time.monotonic()

    def current(self) -> GroundedIn:
        with self.lock:
            if time.monotonic() - self.checked >= self.refresh_s:
                self.checked = time.monotonic()
                try:
                    if self.version_of(self.model, self.alias) == self.grounding.version:
                        return self.grounding
                    latest = self.load(self.model, self.alias)
                except NoGrounding as error:
                    self.on_event(f"grounding: kept v{self.grounding.version}: {error}")
                    return self.grounding
                if latest.version != self.grounding.version:
                    self.on_event(
                        f"grounding: {self.model}@{self.alias} moved to v{latest.version} "
                        f"(was v{self.grounding.version})"
                    )
                self.grounding = latest
            return self.grounding


_MODELS: dict[tuple[str, str], object] = {}
_MODELS_LOCK = threading.Lock()


def served_predict(grounding: GroundedIn) -> Callable[[float, float], int]:
    """The `predict` of the model version the grounding came from (its KMeans, loaded from the
    registry at the first call, once per version): the assign-customer tool's answer is the
    served model's. A version that cannot be loaded raises NoGrounding from the call."""
    key = (grounding.model, grounding.version)

    def predict(income: float, spending: float) -> int:
        from custseg.serving.model import load_model, predict_segment, version_ref

        with _MODELS_LOCK:
            if key not in _MODELS:
                try:
                    _MODELS[key] = load_model(version_ref(key[0], "champion", key[1]))
                except ServingError as error:
                    raise NoGrounding(f"cannot load {key[0]} v{key[1]}: {error}") from None
            model = _MODELS[key]
        return predict_segment(model, income, spending)

    return predict
