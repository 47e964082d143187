"""Parquet data: simulate.format: parquet, and a Parquet file or folder as simulate.source."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from custseg.config import SimulateParams
from custseg.errors import ConfigError
from custseg.features import COLUMNS
from custseg.pipeline.data import read_customers_csv, simulate_customers
from tests.fixtures.project import stage, write_params

simulate, train, export = (stage("simulate"), stage("train"), stage("export"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_simulate_writes_parquet_with_the_csvs_rows_and_the_same_bytes_each_time(
    project: Path,
) -> None:
    assert simulate.main([]) == 0
    csv = pd.read_csv(project / "data/customers.csv")
    write_params(project, simulate={"format": "parquet"})
    assert simulate.main([]) == 0
    parquet = project / "data/customers.parquet"
    first = _digest(parquet)
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), csv, check_dtype=False)
    assert simulate.main([]) == 0
    assert _digest(parquet) == first


def test_a_parquet_file_or_folder_is_a_source(tmp_path: Path) -> None:
    theirs = simulate_customers(SimulateParams(n_customers=30), seed=1).rename(
        columns={"annual_income": "Income", "spending_score": "Score"}
    )
    one = tmp_path / "customers.parquet"
    theirs.to_parquet(one, index=False)
    folder = tmp_path / "parts"
    folder.mkdir()
    theirs.iloc[:10].to_parquet(folder / "part-0.parquet", index=False)
    theirs.iloc[10:].to_parquet(folder / "part-1.parquet", index=False)
    columns = {"annual_income": "Income", "spending_score": "Score"}
    for source in (one, folder):
        frame = read_customers_csv(SimulateParams(source=source, columns=columns))
        assert list(frame.columns) == COLUMNS and len(frame) == 30
        assert frame["annual_income"].tolist() == theirs["Income"].tolist()


def test_a_broken_parquet_source_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(ConfigError, match=r"^simulate.source: .*broken.parquet is not readable"):
        read_customers_csv(SimulateParams(source=broken))


def test_train_and_export_on_parquet_data(project: Path) -> None:
    write_params(project, simulate={"format": "parquet"}, train={"k_range": {"max": 4}})
    assert simulate.main([]) == 0
    assert train.main([]) == 0
    run_info = json.loads((project / "models/train_run.json").read_text())
    assert run_info["lineage"]["data"]["path"] == "data/customers.parquet"
    assert run_info["lineage"]["data"]["rows"] == 200
    assert export.main([]) == 0
    assert json.loads((project / "models/model_info.json").read_text())["version"] == 1
