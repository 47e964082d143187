"""The champion gate: which version is the champion now, and may a candidate replace it?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from custseg.config import UserError, first_line

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def promotion_decision(
    candidate_silhouette: float, champion_silhouette: float | None, tolerance: float
) -> Decision:
    """Promote when there is no champion, or the candidate is not worse by more than `tolerance`."""
    if champion_silhouette is None:
        return Decision(True, "no champion yet")
    floor = champion_silhouette - tolerance
    if candidate_silhouette >= floor:
        return Decision(
            True,
            f"silhouette {candidate_silhouette:.4f} ≥ champion {champion_silhouette:.4f} "
            f"− tolerance {tolerance:g}",
        )
    return Decision(
        False,
        f"silhouette {candidate_silhouette:.4f} < champion {champion_silhouette:.4f} "
        f"− tolerance {tolerance:g}",
    )


class RegistryError(UserError):
    """The MLflow registry failed to answer; nothing may be promoted on a guess."""


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
