"""Promotion is a decision: an experiment's model is registered and judged but not promoted, and
`custseg promote VERSION` moves @champion showing the gate's verdict (a real sqlite registry;
the stages run in this process as DVC would run them)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from custseg.cli import main
from custseg.pipeline.export import EXPERIMENT_ENV
from custseg.testing.sandbox import run_pipeline
from tests.fixtures.project import stage, write_params

NAME = "customer-segments"


def _champion() -> int:
    return int(MlflowClient().get_model_version_by_alias(NAME, "champion").version)


def _stages(*names: str) -> dict:
    for name in names:
        assert stage(name).main([]) == 0, name
    return json.loads(Path("models/model_info.json").read_text())


def test_an_experiment_is_judged_but_only_the_committed_pipeline_promotes(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_pipeline(project)  # v1 @champion
    # More customers, same k: a candidate the gate passes.
    write_params(project, simulate={"n_customers": 400})
    monkeypatch.setenv(EXPERIMENT_ENV, "brisk-oath")  # as `dvc exp run` sets it
    held = _stages("simulate", "train", "export")
    assert held["version"] == 2 and held["gate"]["passed"], held["decision"]
    assert not held["promoted"] and held["aliases"] == ["candidate"]
    assert held["gate"]["experiment"] == "brisk-oath"
    assert held["decision"].endswith(
        "; the gate passes, but experiment brisk-oath does not move the champion: "
        "`custseg promote VERSION`, or `dvc exp apply` + commit + `dvc repro -f -s export`"
    )
    tags = MlflowClient().get_model_version(NAME, "2").tags
    assert tags["dvc.experiment"] == "brisk-oath"
    assert (tags["gate.passed"], tags["gate.promoted"]) == ("true", "false")
    shown = json.loads((project / "metrics/export.json").read_text())
    assert (shown["passed"], shown["promoted"]) == (True, False)
    assert _champion() == 1

    # Forced in the experiment itself: promoted.
    write_params(project, export={"force": True})
    forced = _stages("export")
    assert forced["version"] == 2 and forced["promoted"] and _champion() == 2

    # The committed pipeline (no experiment) re-deciding on the same run promotes on the verdict.
    MlflowClient().set_registered_model_alias(NAME, "champion", "1")
    write_params(project, export={"force": False})
    monkeypatch.delenv(EXPERIMENT_ENV)
    committed = _stages("export")
    assert committed["version"] == 2 and committed["promoted"] and _champion() == 2
    assert committed["gate"]["experiment"] is None


def test_custseg_promote_shows_the_verdict_and_moves_the_champion(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_pipeline(project)  # v1 @champion, k=5
    write_params(project, train={"n_clusters": 3})
    refused = _stages("train", "export")
    assert refused["version"] == 2 and not refused["promoted"]
    assert "k 3 ≠ champion's k 5" in refused["decision"]
    capsys.readouterr()
    record = (project / "models/model_info.json").read_bytes()

    assert main(["promote", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{NAME} v2: the gate refused: {refused['decision']}",
        f"{NAME} v2 is now @champion (was v1)",
        "models/model_info.json is unchanged: it records what `dvc repro` exported; "
        "what is served is @champion in the registry, and models/champion in the repository",
        f"{NAME} v2 saved in models/champion (not a git + DVC checkout: not tracked)",
    ]
    # The export stage's record stays as DVC wrote it (else `dvc repro` would rerun export).
    assert (project / "models/model_info.json").read_bytes() == record
    assert _champion() == 2
    version = MlflowClient().get_model_version(NAME, "2")
    assert version.tags["promoted_by"] == "custseg promote"
    assert version.description.startswith("promoted to @champion by `custseg promote` (was v1)")

    assert main(["promote", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-2] == f"{NAME} v2 is already @champion"
    # Back to v1: its verdict was the first one's.
    assert main(["promote", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{NAME} v1: the gate passed: no champion yet",
        f"{NAME} v1 is now @champion (was v2)",
        "models/model_info.json is unchanged: it records what `dvc repro` exported; "
        "what is served is @champion in the registry, and models/champion in the repository",
        f"{NAME} v1 saved in models/champion (not a git + DVC checkout: not tracked)",
    ]

    # An unknown version, or a model with none: one line, nothing moved.
    assert main(["promote", "9"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {NAME} has no version 9 (versions 1-2)\n"
    write_params(project, export={"model_name": "other-segments"})
    assert main(["promote", "1"]) == 2
    assert capsys.readouterr().err == (
        "error: other-segments has no version 1 (no versions; run `dvc repro`)\n"
    )
    assert _champion() == 1
    names = [m.name for m in MlflowClient().search_registered_models()]
    assert not [n for n in names if n.endswith(".gate-lock")], "the gate's lock is released"


@settings(max_examples=50)
@given(content=st.binary(max_size=64) | st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
    st.sampled_from(["name", "version", "run_id", "other"]), st.integers() | st.text(max_size=5)
)))  # fmt: skip
def test_restore_reads_what_model_info_names_or_says_in_one_line_why_not(content: bytes) -> None:
    from custseg.errors import UserError
    from custseg.pipeline.restore import named_version

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model_info.json"
        assert named_version(path) is None  # not there yet: `dvc repro` makes it
        path.write_bytes(content)
        try:
            info = json.loads(content.decode("utf-8"))
        except ValueError:
            info = None
        kinds = {"name": str, "version": int, "run_id": str}
        valid = isinstance(info, dict) and all(type(info.get(k)) is t for k, t in kinds.items())
        if valid:
            assert named_version(path) == {key: info[key] for key in kinds}
        else:
            with pytest.raises(UserError) as error:
                named_version(path)
            assert str(error.value) == (
                f"{path}: not an export's output; run `dvc repro -f -s export` to rewrite it"
            )


# --- a promotion travels with the repository --------------------------------------------------


@pytest.mark.parametrize(
    ("model_info", "stands"),
    [
        (None, True),  # nothing exported yet
        ({"promoted": False, "run_id": "b", "gate": {"champion_run_id": "a"}}, True),  # refused
        ({"promoted": True, "run_id": "b", "gate": {"champion_run_id": "c"}}, True),  # earlier
        ({"promoted": True, "run_id": "b", "gate": {}}, True),  # an older export's record
        ({"promoted": True, "run_id": "b", "gate": {"champion_run_id": "a"}}, False),  # replaced
        ({"promoted": True, "run_id": "a", "gate": {"champion_run_id": "a"}}, True),  # itself
    ],
)
def test_the_committed_pipeline_overrides_a_promotion_only_by_replacing_it(
    model_info: dict | None, stands: bool
) -> None:
    from custseg.pipeline.promoted import promotion_stands

    assert promotion_stands({"run_id": "a"}, model_info) is stands


def test_a_promotion_saved_in_the_repository_is_relogged_into_a_new_registry(
    project: Path, migrated_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`custseg promote` saves the version in models/champion; a registry without it (a clone's)
    gets it back, served as it was: same model, data, ranges and profile."""
    import shutil

    import mlflow

    from custseg.agents.grounding import load_grounding
    from custseg.pipeline.restore import restore_promotion
    from custseg.serving.model import features_frame, resolve_model
    from custseg.serving.training_data import load_training_data

    run_pipeline(project)  # v1 @champion, k=5
    write_params(project, train={"n_clusters": 3})
    assert not _stages("train", "export")["promoted"]  # v2, k=3: refused (a new k)
    assert main(["promote", "2"]) == 0
    saved = json.loads((project / "models/champion/promotion.json").read_text())
    original = MlflowClient().get_model_version(NAME, "2")
    assert (saved["version"], saved["run_id"]) == (2, original.run_id)
    grid = features_frame([15, 40, 60, 80, 120, 140], [1, 30, 50, 70, 90, 100])
    expected = mlflow.sklearn.load_model(f"models:/{NAME}/2").predict(grid).tolist()
    before = load_training_data("2", original.run_id, MlflowClient())
    profile = load_grounding(NAME, "champion").segments

    # A new, empty registry: what a fresh clone has.
    fresh = f"sqlite:///{project / 'clone.db'}"
    shutil.copy2(migrated_mlflow_db, project / "clone.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh)
    mlflow.set_tracking_uri(fresh)
    mlflow.set_registry_uri(fresh)
    line = restore_promotion(saved, project / "models/champion", "champion")
    assert line == f"re-logged {NAME} v2 (run {original.run_id[:8]}, promoted by hand) as v1: " + (
        "now @champion"
    )
    ref = resolve_model(NAME, "champion")
    assert ref.version == "1"
    assert mlflow.sklearn.load_model(ref.uri).predict(grid).tolist() == expected
    after = load_training_data(ref.version, ref.run_id, MlflowClient())
    assert after.recorded and (after.sha256, after.rows, after.ranges) == (
        before.sha256, before.rows, before.ranges,
    )  # fmt: skip
    assert after.sample.equals(before.sample)
    assert load_grounding(NAME, "champion").segments == profile
    tags = MlflowClient().get_model_version(NAME, "1").tags
    assert tags["restored_from_run"] == original.run_id and tags["restored_from_version"] == "2"
    again = restore_promotion(saved, project / "models/champion", "champion")
    assert again.endswith(
        "holds customer-segments v2 (run " + original.run_id[:8] + (", promoted by hand) as v1")
    )


def test_an_export_that_replaces_the_promoted_champion_names_it(project: Path) -> None:
    """The gate records the run of the champion it replaced: the promotion then no longer stands."""
    from custseg.pipeline.promoted import promotion_stands, read_promotion

    run_pipeline(project)  # v1 @champion, k=5
    write_params(project, train={"n_clusters": 3})
    _stages("train", "export")  # v2, refused
    assert main(["promote", "2"]) == 0
    promotion = read_promotion(project / "models/champion")
    assert promotion_stands(promotion, json.loads(Path("models/model_info.json").read_text()))
    write_params(project, train={"n_clusters": 4}, export={"force": True})
    replaced = _stages("train", "export")  # v3, forced over the promoted v2
    assert replaced["promoted"] and replaced["gate"]["champion_run_id"] == promotion["run_id"]
    assert not promotion_stands(promotion, replaced)
