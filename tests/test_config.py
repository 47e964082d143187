"""params.yaml validation: every bad value stops the stage with one line, writing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from custseg.config import ConfigError, Params, load_params, parse_params
from tests.fixtures.project import ROOT, stage, write_params

export, simulate, train = (stage("export"), stage("simulate"), stage("train"))


def test_committed_params_are_valid_and_match_the_documented_defaults() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.simulate.n_customers == 200
    assert (params.simulate.income.mean, params.simulate.income.std) == (60, 15)
    assert (params.simulate.income.min, params.simulate.income.max) == (15, 140)
    assert (params.simulate.spending.min, params.simulate.spending.max) == (1, 100)
    assert params.train.n_clusters == 5 and params.train.init == "k-means++"
    assert (params.train.n_init, params.train.max_iter) == (10, 300)
    assert params.export.alias == "champion"
    assert params == Params(), "params.yaml and the model's defaults drifted apart"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"train": {"n_clusters": 1}},
            "train.n_clusters: must be an integer ≥ 2 or 'auto' (got 1)",
        ),
        ({"train": {"n_clusters": "many"}}, "train.n_clusters: must be an integer ≥ 2 or 'auto'"),
        ({"train": {"k_range": {"min": 6, "max": 3}}}, "train.k_range: min (6) > max (3)"),
        ({"train": {"k_range": {"min": 1, "max": 3}}}, "train.k_range.min: "),
        ({"simulate": {"income": {"min": 90, "max": 20}}}, "simulate.income: min (90) > max (20)"),
        ({"simulate": {"spending": {"min": 100, "max": 1}}}, "simulate.spending: min (100) > max"),
        ({"simulate": {"income": {"std": 0}}}, "simulate.income.std: "),
        ({"simulate": {"n_customers": 0}}, "simulate.n_customers: "),
        ({"train": {"init": "kmeans"}}, "train.init: "),
        ({"export": {"tolerance": -0.1}}, "export.tolerance: "),
        ({"export": {"force": "yes"}}, "export.force: "),
        ({"export": {"force": 1}}, "export.force: "),
        ({"export": {"min_ari": 1.5}}, "export.min_ari: "),
        ({"trian": {"n_clusters": 3}}, "trian: unknown key"),
        ({"llm": {"provider": "gpt"}}, "llm.provider: "),
        (
            {"agents": {"partitions": 2, "capture_workers": 3}},
            "agents: capture_workers (3) > partitions (2)",
        ),
    ],
)
def test_invalid_values_name_the_key(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_params(raw)
    message = str(error.value)
    assert message.startswith(f"params.yaml: {expected}")
    assert "\n" not in message


def test_unreadable_params_file(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not valid YAML at line \d"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "missing.yaml")


def _fails_cleanly(stage, capsys: pytest.CaptureFixture, expected: str) -> str:
    assert stage.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err, err
    assert len(err.splitlines()) == 1
    return err


SENTINEL = "keep me\n"


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"train": {"n_clusters": 1}}, "train.n_clusters"),
        ({"simulate": {"source": "nowhere.csv"}}, "simulate.source: file not found: nowhere.csv"),
    ],
)
def test_a_bad_value_stops_simulate_without_touching_outputs(
    project: Path, capsys: pytest.CaptureFixture, sections: dict, expected: str
) -> None:
    write_params(project, **sections)
    (project / "data").mkdir()
    (project / "data/customers.csv").write_text(SENTINEL)
    _fails_cleanly(simulate, capsys, expected)
    assert (project / "data/customers.csv").read_text() == SENTINEL
    assert not list((project / "data").glob(".*.tmp"))


def _write_source(project: Path, text: str, **columns: str | None) -> None:
    (project / "mine.csv").write_text(text)
    mapping = {"annual_income": "Income", "spending_score": "Score", **columns}
    write_params(project, simulate={"source": "mine.csv", "columns": mapping})


@pytest.mark.parametrize(
    ("csv", "columns", "expected"),
    [
        ("Income,Other\n10,20\n", {}, "simulate.columns: spending_score='Score' not in mine.csv"),
        (
            "Income,Score\n10,20\n30,abc\n40,x\n",
            {},
            "simulate.columns.spending_score: column "
            "'Score' of mine.csv has 2 non-numeric value(s), first at data row 2: 'abc'",
        ),
        ("Income,Score\n10,20\n,5\n", {}, "simulate.columns.annual_income: column 'Income'"),
        ("Income,Score\n", {}, "simulate.source: mine.csv has no rows"),
        ("", {}, "simulate.source: mine.csv is not a readable CSV"),
        ("Income,Score\n1,2\n", {"customer_id": "Id"}, "customer_id='Id' not in mine.csv"),
    ],
)
def test_bad_source_csv_is_named(
    project: Path, capsys: pytest.CaptureFixture, csv: str, columns: dict, expected: str
) -> None:
    _write_source(project, csv, **columns)
    _fails_cleanly(simulate, capsys, expected)
    assert not (project / "data/customers.csv").exists()


def test_fewer_customers_than_clusters_stops_train_before_tracking(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    _write_source(project, "Income,Score\n10,20\n30,40\n50,60\n")
    assert simulate.main([]) == 0
    capsys.readouterr()
    (project / "metrics").mkdir()
    (project / "metrics/train.json").write_text(SENTINEL)
    _fails_cleanly(train, capsys, "train.n_clusters: 5 clusters need more than 5 customers")
    assert (project / "metrics/train.json").read_text() == SENTINEL
    assert not (project / "mlruns").exists(), "nothing may be tracked for a rejected input"


def test_export_without_a_training_run_says_what_to_run(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    _fails_cleanly(export, capsys, "models/train_run.json: not found; run `dvc repro train` first")
    assert not (project / "models/model_info.json").exists()


def test_every_stage_rejects_an_invalid_params_file_before_writing(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    write_params(project, export={"tolerance": -1})
    for module in (simulate, train, export):
        _fails_cleanly(module, capsys, "export.tolerance")
    assert not any((project / d).exists() for d in ("data", "metrics", "models", "plots"))
