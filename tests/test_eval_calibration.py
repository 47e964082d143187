"""Trust in the judge: the bundled model ranks the good item of each labeled pair higher.

Uses the tests' own judge cache (`tests_judge_cache`), not the user's that `custseg eval
calibrate` fills: warm, this test makes no judge call; cold, it makes about 90 (~5 s each on 2
idle cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from custseg.config import load_params
from custseg.evaluation.calibration import FIELDS, calibrate, load_calibration
from custseg.evaluation.metrics import build_scorer
from custseg.llm.providers import LocalProvider
from custseg.paths import CALIBRATION, PARAMS

ROOT = Path(__file__).resolve().parents[1]
MIN_ACCURACY = 0.8


def test_judge_ranks_good_above_degraded_items(
    local_provider: LocalProvider, tests_judge_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUSTSEG_JUDGE_CACHE", str(tests_judge_cache))
    params = load_params(ROOT / PARAMS)
    pairs = load_calibration(ROOT / CALIBRATION)
    scorer = build_scorer(params, local_provider)
    results, rows = calibrate(pairs, scorer, params.base.seed)
    report = {s: (round(r.accuracy, 2), r.ties, r.errors) for s, r in results.items()}
    print(f"calibration (accuracy, ties, errors): {report}; judge {scorer.judge.stats}")
    assert set(results) == set(FIELDS)
    assert len(rows) == 2 * sum(r.pairs for r in results.values())
    for section, result in results.items():
        assert result.errors == 0, (section, report)
        assert result.accuracy >= MIN_ACCURACY, (section, report)


@pytest.mark.parametrize("section", sorted(FIELDS))
def test_every_section_has_distinct_good_and_bad_items(section: str) -> None:
    pairs = load_calibration(ROOT / CALIBRATION)[section]
    assert all(pair["good"].strip() != pair["bad"].strip() for pair in pairs)
    assert len({pair["task"] for pair in pairs}) == len(pairs)  # one pair per task
