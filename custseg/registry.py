"""The promotion gate: when does a candidate model become the champion?"""

from __future__ import annotations

from dataclasses import dataclass


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
