"""params.yaml validation: every bad value stops the stage with one line, writing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from custseg.agents.client import read_tasks
from custseg.config import Params, check_params_file, load_params, parse_params, read_yaml
from custseg.errors import ConfigError
from custseg.evaluation.calibration import load_calibration
from custseg.pipeline.check import tracked_params
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


# Every YAML file a user hands the project: params, the calibration pairs, the tasks to submit.
YAML_READERS = [load_params, check_params_file, load_calibration, read_tasks, read_yaml]


def _read(reader, path: Path) -> object:  # type: ignore[no-untyped-def]
    return reader(path, []) if reader is check_params_file else reader(path)


@pytest.mark.parametrize("reader", YAML_READERS, ids=lambda r: r.__name__)
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\xff\xfe garbage", "not UTF-8 text (byte 1)"),
        (b"[" * 50_000, "nested too deeply to be read as YAML"),
        (b"{a: " * 50_000, "nested too deeply to be read as YAML"),
        (b"key: [unclosed\n", "not valid YAML at line 2"),
    ],
    ids=["binary", "deep-list", "deep-map", "broken"],
)
def test_a_hostile_yaml_file_is_one_line_naming_it(
    tmp_path: Path,
    reader,
    content: bytes,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        _read(reader, path)
    assert str(error.value) == f"{path}: {message}"


def test_a_directory_is_not_read_as_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": a directory, not a file$"):
        read_yaml(tmp_path)
    with pytest.raises(ConfigError, match=r": a directory, not a file$"):
        load_params(tmp_path)


@settings(max_examples=200, deadline=None)
@given(content=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_load_or_fail_in_one_line(content: bytes) -> None:
    """Generated files (bytes, or text YAML may choke on): a value or one ConfigError line."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "any.yaml"
        path.write_bytes(content)
        for reader in YAML_READERS:
            try:
                _read(reader, path)
            except ConfigError as error:
                assert "\n" not in str(error) and str(error).startswith(str(path)), error


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


# --- the `params` stage: the whole file, before DVC runs anything -----------------------------

check_params = stage("check_params")
DVC_PARAMS = tracked_params(yaml.safe_load((ROOT / "dvc.yaml").read_text()))


def test_the_check_covers_every_key_dvc_tracks() -> None:
    assert DVC_PARAMS == ["base.seed", "simulate", "train", "export", "eval", "llm", "monitor"]
    assert check_params_file(ROOT / "params.yaml", DVC_PARAMS) == Params()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p.update(exprot=p.pop("export")), "params.yaml: exprot: unknown key"),
        (lambda p: p.pop("export"), "params.yaml: export: missing (dvc.yaml's stages track it)"),
        (lambda p: p["base"].pop("seed"), "params.yaml: base.seed: missing"),
        (lambda p: p.update(extra=1), "params.yaml: extra: unknown key"),
        (
            lambda p: p.update(base=None),
            "params.yaml: base: must be a section of `key: value` lines (got None)",
        ),
    ],
    ids=["misspelled section", "missing section", "missing key", "unknown key", "empty section"],
)
def test_the_params_stage_names_the_problem_and_writes_nothing(
    project: Path, capsys: pytest.CaptureFixture, edit, expected: str
) -> None:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    edit(raw)
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    assert expected in _fails_cleanly(check_params, capsys, expected)
    assert not (project / "models/params.ok").exists()


def test_a_yaml_syntax_error_is_one_line(project: Path, capsys: pytest.CaptureFixture) -> None:
    (project / "params.yaml").write_text("train:\n  n_clusters: [3\n")
    _fails_cleanly(check_params, capsys, "params.yaml: not valid YAML at line 3")


def _mutations() -> st.SearchStrategy:
    """Edits a careless user makes: any tracked key deleted, set to junk, or a new key anywhere."""
    junk = st.none() | st.integers() | st.text(max_size=8) | st.lists(st.integers(), max_size=2)
    paths = st.sampled_from(
        ["base", "base.seed", "simulate", "simulate.income", "simulate.income.mean", "train",
         "train.k_range", "train.n_clusters", "export", "export.tolerance", "eval", "llm",
         "llm.provider", "agents", "agents.partitions"]
    )  # fmt: skip
    return st.lists(
        st.tuples(st.sampled_from(["delete", "set", "add"]), paths, junk), min_size=1, max_size=3
    )


@settings(max_examples=150, deadline=None)
@given(mutations=_mutations())
def test_any_mutated_params_file_is_accepted_whole_or_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, mutations: list
) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for action, path, value in mutations:
        *parents, leaf = path.split(".")
        node = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if action == "delete":
            node.pop(leaf, None)
        elif action == "set":
            node[leaf] = value
        else:
            node[f"{leaf}_x"] = value
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        params = check_params_file(path, DVC_PARAMS)
    except ConfigError as error:
        message = str(error)
        assert message.startswith(f"{path}: ") and "\n" not in message
        return
    assert isinstance(params, Params)  # accepted: every section a stage reads is valid
