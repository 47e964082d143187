"""The simulate stage: deterministic bytes, the seed's distributions, and a user's own CSV."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from custseg.config import SimulateParams
from custseg.features import COLUMNS
from custseg.pipeline.data import simulate_customers
from tests.fixtures.project import stage, write_params

simulate = stage("simulate")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_params_give_identical_bytes(project: Path) -> None:
    assert simulate.main([]) == 0
    first = _digest(project / "data/customers.csv")
    assert simulate.main([]) == 0
    assert _digest(project / "data/customers.csv") == first
    write_params(project, base={"seed": 7})
    assert simulate.main([]) == 0
    assert _digest(project / "data/customers.csv") != first


def test_output_has_stable_columns_and_default_size(project: Path) -> None:
    assert simulate.main([]) == 0
    header, *rows = (project / "data/customers.csv").read_text().splitlines()
    assert header.split(",") == COLUMNS
    assert len(rows) == 200


def test_distributions_follow_the_params() -> None:
    customers = simulate_customers(SimulateParams(n_customers=50_000), seed=1)
    income, spending = customers["annual_income"], customers["spending_score"]
    assert income.between(15, 140).all() and spending.between(1, 100).all()
    assert income.mean() == pytest.approx(60, abs=0.3)
    assert income.std() == pytest.approx(15, abs=0.3)
    assert spending.mean() == pytest.approx(50.5, abs=0.5)
    # Uniform: every score from 1 to 100 appears, none more than ~1.3x as often as expected.
    counts = np.bincount(spending, minlength=101)[1:]
    assert counts.min() > 0 and counts.max() < 1.3 * len(spending) / 100
    assert customers["customer_id"].is_unique


def test_clipping_bounds_hold_for_extreme_params() -> None:
    params = SimulateParams(n_customers=5_000, income={"mean": 130, "std": 60})
    income = simulate_customers(params, seed=3)["annual_income"]
    assert income.min() >= 15 and income.max() == 140


def test_a_users_csv_is_mapped_to_the_stable_columns(project: Path) -> None:
    (project / "mall.csv").write_text(
        "CustomerID,Gender,Annual Income (k$),Spending Score (1-100)\n"
        "17,Male,15,39\n18,Female,16.5, 81\n19,Female,137,18\n"
    )
    write_params(
        project,
        simulate={"source": "mall.csv", "columns": {"customer_id": "CustomerID"}},
    )
    assert simulate.main([]) == 0
    assert (project / "data/customers.csv").read_text().splitlines() == [
        "customer_id,annual_income,spending_score",
        "17,15.0,39",
        "18,16.5,81",
        "19,137.0,18",
    ]
