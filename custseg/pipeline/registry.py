"""The champion gate: which version is the champion now, and may a candidate replace it?"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
from sklearn.metrics import adjusted_rand_score

from custseg.errors import RegistryError, first_line
from custseg.features import FEATURES
from custseg.pipeline.segments import sample_silhouette

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


@dataclass(frozen=True)
class Comparison:
    """Candidate and champion scored on the candidate's data: the same rows, the same seeded
    silhouette sample. `unscorable` says why the champion could not label this data at all."""

    candidate_silhouette: float
    champion_silhouette: float | None = None
    ari: float | None = None  # adjusted Rand index between the two labelings
    unscorable: str | None = None
    candidate_k: int | None = None  # number of segments; None when the model does not say
    champion_k: int | None = None


def n_segments(model: Any) -> int | None:
    """How many segments a fitted model has (its centers), or None for a model without them."""
    centers = getattr(model, "cluster_centers_", None)
    return None if centers is None else len(centers)


def _feature_mismatch(model: Any) -> str | None:
    names = getattr(model, "feature_names_in_", None)
    if names is not None and list(names) != FEATURES:
        return f"it was trained on features {list(names)}, this data has {FEATURES}"
    n_features = getattr(model, "n_features_in_", len(FEATURES))
    if n_features != len(FEATURES):
        return f"it takes {n_features} features, this data has {len(FEATURES)}"
    return None


def compare_on_data(
    candidate: Any, champion: Any, X: pd.DataFrame, sample_size: int, seed: int
) -> Comparison:
    """Label `X` with both models and score each labeling the same way (pure: no registry)."""
    values = X[FEATURES].to_numpy(dtype=float)
    candidate_labels = candidate.predict(X[FEATURES])
    candidate_score = sample_silhouette(values, candidate_labels, sample_size, seed)
    if (mismatch := _feature_mismatch(champion)) is not None:
        return Comparison(candidate_score, unscorable=mismatch)
    try:
        champion_labels = champion.predict(X[FEATURES])
    except Exception as error:  # a foreign model: whatever it raises, it cannot score this data
        return Comparison(candidate_score, unscorable=f"its predict failed: {first_line(error)}")
    return Comparison(
        candidate_score,
        sample_silhouette(values, champion_labels, sample_size, seed),
        float(adjusted_rand_score(champion_labels, candidate_labels)),
        candidate_k=n_segments(candidate),
        champion_k=n_segments(champion),
    )


def promotion_decision(
    comparison: Comparison | None,
    tolerance: float,
    *,
    min_ari: float | None = None,
    force: bool = False,
) -> Decision:
    """Promote when there is no champion, or when, on the candidate's data, the candidate's
    silhouette is not worse than the champion's by more than `tolerance` (and the two labelings
    agree to at least `min_ari`, when set) and both have the same number of segments.
    `force` promotes whatever the scores say.

    A different k is never promoted on silhouette alone: silhouette favours few segments (k=2
    often scores best on data with no real groups), so changing k is a decision (`force`, or
    `custseg promote`), not a score."""
    if comparison is None:
        return Decision(True, "no champion yet")
    if comparison.unscorable is not None:
        reason = f"the champion cannot score this data: {comparison.unscorable}"
        if force:
            return Decision(True, f"{reason}; promoted by export.force")
        return Decision(False, f"{reason}; set export.force: true to promote anyway")
    candidate, champion = comparison.candidate_silhouette, comparison.champion_silhouette
    assert champion is not None and comparison.ari is not None
    good_enough = candidate >= champion - tolerance
    reason = (
        f"silhouette {candidate:.4f} {'≥' if good_enough else '<'} champion {champion:.4f} "
        f"− tolerance {tolerance:g}, both on this data; ARI {comparison.ari:.3f}"
    )
    stable = min_ari is None or comparison.ari >= min_ari
    if min_ari is not None:
        reason += f" {'≥' if stable else '<'} min_ari {min_ari:g}"
    new_k, old_k = comparison.candidate_k, comparison.champion_k
    same_k = new_k is None or old_k is None or new_k == old_k
    if not same_k:
        reason += (
            f"; k {new_k} ≠ champion's k {old_k}: a new k is promoted by decision "
            "(`custseg promote VERSION` or export.force), never on silhouette alone"
        )
    if good_enough and stable and same_k:
        return Decision(True, reason)
    if force:
        return Decision(True, f"{reason}; promoted by export.force")
    return Decision(False, reason)


def hold_for_experiment(decision: Decision, experiment: str | None, *, force: bool) -> Decision:
    """An experiment's model is registered and judged, but takes @champion only when asked
    (`force`): otherwise every `dvc exp run` that the gate liked would replace production."""
    if experiment is None or force or not decision.promote:
        return decision
    return Decision(
        False,
        f"{decision.reason}; the gate passes, but experiment {experiment} does not move the "
        "champion: `custseg promote VERSION`, or `dvc exp apply` + commit + "
        "`dvc repro -f -s export`",
    )


# A version re-logged from a promotion saved in the repository (custseg.pipeline.promoted) names
# the run it was first trained in: registries then agree on which model a decision was about.
RESTORED_FROM = "restored_from_run"


def original_run(version: ModelVersion) -> str:
    """The run a registered version was first trained in (its own, unless it was re-logged)."""
    return (version.tags or {}).get(RESTORED_FROM) or version.run_id


def current_champion(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version behind `name@alias`, or None when the model has no such alias yet.

    Only a missing alias means "no champion": the lookup's failure is confirmed against the
    model's alias list, and any other registry error raises RegistryError (one line), so a
    broken registry never lets a candidate through.
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        lookup_error = error
    try:
        missing = alias not in client.get_registered_model(name).aliases
    except MlflowException as error:
        lookup_error = error
        missing = False
    if missing:
        return None
    raise RegistryError(
        f"MLflow registry: cannot read {name}@{alias}: {first_line(lookup_error)}; nothing promoted"
    )


# --- one gate at a time ----------------------------------------------------------------------
# Two exports deciding at once would each compare against the same champion and the later alias
# write would win unseen (a lost update). The registry has no compare-and-set on an alias, but a
# registered model's name is unique in every store (sqlite, PostgreSQL, behind a server), so
# creating `<name>.gate-lock` is an atomic claim: the gate reads the champion, compares, records
# and moves the alias while it holds the claim, then deletes it.
GATE_LOCK_SUFFIX = ".gate-lock"
GATE_LOCK_STALE_S = 600.0  # a claim older than this was left by an export that died
BREAKING_SUFFIX = ".breaking"  # a second claim: who may delete a stale gate lock
BREAKING_STALE_S = 60.0  # breaking takes milliseconds; older, the breaker died doing it


def break_stale(
    client: MlflowClient,
    lock: str,
    created: int | None,
    breaking_stale_s: float = BREAKING_STALE_S,
    clock: Callable[[], float] = time.time,
) -> bool:
    """Delete the stale claim `lock` (the one created at `created`) unless another waiter is
    breaking it; True when this waiter did, or the claim is gone.

    Waiters that saw the same stale claim must not each delete "it": the second would delete
    the claim the first has just taken. So breaking takes a claim of its own, and under it the
    lock is deleted only if it is still the claim that was seen."""
    from mlflow.exceptions import MlflowException

    breaker = f"{lock}{BREAKING_SUFFIX}"
    try:
        client.create_registered_model(breaker)
    except MlflowException:
        with suppress(MlflowException):  # another waiter breaks it (or died doing so)
            since = client.get_registered_model(breaker).creation_timestamp / 1000
            if clock() - since > breaking_stale_s:
                client.delete_registered_model(breaker)
        return False
    try:
        try:
            still = client.get_registered_model(lock).creation_timestamp == created
        except MlflowException:
            return True  # released meanwhile
        if still:
            with suppress(MlflowException):
                client.delete_registered_model(lock)
        return True
    finally:
        with suppress(MlflowException):
            client.delete_registered_model(breaker)


@contextmanager
def gate_lock(
    client: MlflowClient,
    name: str,
    timeout_s: float = 300.0,
    stale_s: float = GATE_LOCK_STALE_S,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.time,
) -> Iterator[str]:
    """Hold the export gate of model `name`; RegistryError (one line) after `timeout_s`.
    `clock` is the wall clock the store's creation times are compared with (tests move it)."""
    from mlflow.exceptions import MlflowException

    lock = f"{name}{GATE_LOCK_SUFFIX}"
    holder = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(
                lock,
                tags={"holder": holder},
                description=f"held by the export gate of {name} while it decides; "
                "deleted when it is done (delete it by hand only if that export died)",
            )
            break
        except MlflowException as error:
            # "does not exist": the store saw the claim taken, then released before it could
            # say by whom (a lost race, seen under contention): claim again.
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                continue
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            held = client.get_registered_model(lock)
        except MlflowException:
            continue  # released meanwhile: claim again
        # The store's own creation time: a claim read before its tags are written is not stale.
        since = (held.creation_timestamp or clock() * 1000) / 1000
        stale = clock() - since > stale_s
        if stale and break_stale(client, lock, held.creation_timestamp, clock=clock):
            continue
        if time.monotonic() > deadline:
            raise RegistryError(
                f"MLflow registry: the export gate of {name} is held by "
                f"{held.tags.get('holder', '?')} for {clock() - since:.0f} s; nothing promoted "
                "(retry, or "
                f"delete the registered model {lock} if that export died)"
            )
        time.sleep(poll_s)
    try:
        yield holder
    finally:
        with suppress(MlflowException):
            client.delete_registered_model(lock)
