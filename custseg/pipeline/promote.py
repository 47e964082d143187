"""`custseg promote VERSION`: a person's decision to make a registered version the champion.

Experiments and a change of k never take @champion on their own (custseg.pipeline.registry);
this is how they do, with the gate's recorded verdict shown beside the decision.

The decision travels with the repository: the promoted version's model, data and profile are
saved in models/champion/ and tracked by DVC (custseg.pipeline.promoted); committed and pushed,
a clone's `make run` re-logs them and serves the same champion. models/model_info.json stays as
it is: it is the export stage's DVC output (what `dvc repro` registered and the gate's decision),
and rewriting it would make DVC rerun export, which decides again."""

from __future__ import annotations

from pathlib import Path

from custseg.config import ExportParams
from custseg.errors import RegistryError, UserError, first_line
from custseg.paths import MODEL_INFO
from custseg.pipeline.promoted import PROMOTED, save_promotion, track_with_dvc
from custseg.pipeline.registry import current_champion, gate_lock
from custseg.tracking import configure_mlflow


def gate_verdict(tags: dict[str, str]) -> str:
    """What the gate said about a version when `export` registered it (its `gate.*` tags)."""
    decision = tags.get("gate.decision")
    if decision is None:
        return "the gate never judged it (not registered by `dvc repro`/`dvc exp run`)"
    passed = tags.get("gate.passed", tags.get("gate.promoted")) == "true"
    return f"{'passed' if passed else 'refused'}: {decision}"


def _known_versions(client, name: str) -> list[int]:
    return sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def promote(version: int, params: ExportParams, folder: Path = PROMOTED) -> list[str]:
    """Move `params.alias` to `version` (under the gate's lock) and save it in `folder` for the
    repository; the lines to print."""
    from mlflow.exceptions import MlflowException

    client = configure_mlflow().MlflowClient()
    name = params.model_name
    try:
        known = _known_versions(client, name)
        if version not in known:
            have = f"versions {known[0]}-{known[-1]}" if known else "no versions; run `dvc repro`"
            raise UserError(f"{name} has no version {version} ({have})")
        tags = client.get_model_version(name, str(version)).tags
        lines = [f"{name} v{version}: the gate {gate_verdict(tags)}"]
        with gate_lock(client, name):
            champion = current_champion(client, name, params.alias)
            before = None if champion is None else int(champion.version)
            if before != version:
                client.set_model_version_tag(name, str(version), "promoted_by", "custseg promote")
                client.update_model_version(
                    name,
                    str(version),
                    description=f"promoted to @{params.alias} by `custseg promote` "
                    f"(was v{before}); the gate {gate_verdict(tags)}",
                )
                client.set_registered_model_alias(name, params.alias, str(version))
    except MlflowException as error:
        raise RegistryError(f"MLflow registry: {first_line(error)}; nothing promoted") from None
    if before == version:
        lines.append(f"{name} v{version} is already @{params.alias}")
    else:
        was = "no champion before" if before is None else f"was v{before}"
        lines.append(f"{name} v{version} is now @{params.alias} ({was})")
        lines.append(unchanged_record(params.alias))
    try:  # the repository records the decision too, so a clone serves the same champion
        saved = save_promotion(client, name, version, folder)
        return [*lines, *track_with_dvc(folder, saved)]
    except (MlflowException, OSError, ValueError) as error:
        raise UserError(
            f"{name} v{version} is @{params.alias}, but saving it in {folder} failed: "
            f"{first_line(error)}; rerun `custseg promote {version}`"
        ) from None


def unchanged_record(alias: str) -> str:
    """Which one is the truth after a promotion: the registry's alias, not model_info.json."""
    return (
        f"{MODEL_INFO} is unchanged: it records what `dvc repro` exported; "
        f"what is served is @{alias} in the registry, and {PROMOTED} in the repository"
    )
