"""Trust in the judge: how often it scores the good item of a labeled pair above the bad one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from custseg.config import ConfigError
from custseg.evaluation.metrics import TIE_EPS, Item, Scorer, pairwise_text, positions

MIN_PAIRS = 15
FIELDS = {
    "plan_quality": ("task", "good", "bad"),
    "helpfulness": ("task", "good", "bad"),
    "improvement": ("task", "draft", "good", "bad"),
}
# Which result metric scores each calibration section (helpfulness_final uses the same GEval).
SECTION_METRIC = {
    "plan_quality": "plan_quality",
    "helpfulness": "helpfulness_draft",
    "improvement": "improvement",
}


def load_calibration(path: Path) -> dict[str, list[dict[str, str]]]:
    """The labeled pairs per metric; ConfigError if a section is missing, short or malformed."""
    if not Path(path).is_file():
        raise ConfigError(f"eval.calibration: file not found: {path}")
    data = yaml.safe_load(Path(path).read_text()) or {}
    for section, fields in FIELDS.items():
        pairs = data.get(section)
        if not isinstance(pairs, list) or len(pairs) < MIN_PAIRS:
            raise ConfigError(f"{path}: {section}: needs at least {MIN_PAIRS} pairs")
        for i, pair in enumerate(pairs):
            bad = [f for f in fields if not isinstance(pair.get(f), str) or not pair[f].strip()]
            if bad:
                raise ConfigError(f"{path}: {section}[{i}]: missing {', '.join(bad)}")
    return {section: data[section] for section in FIELDS}


def pair_items(section: str, index: int, pair: dict[str, str], seed: int) -> tuple[Item, Item]:
    """(good item, bad item); pairwise positions drawn per item like a real conversation's."""
    metric = SECTION_METRIC[section]
    items = []
    for label in ("good", "bad"):
        item_id = f"calibration:{section}:{index}:{label}"
        if section == "improvement":
            where = positions(seed, item_id)
            text = pairwise_text(pair["draft"], pair[label], where)
            items.append(Item(item_id, metric, pair["task"], text, where))
        else:
            items.append(Item(item_id, metric, pair["task"], pair[label]))
    return items[0], items[1]


@dataclass(frozen=True)
class SectionResult:
    pairs: int
    higher: int  # good scored strictly above bad
    ties: int
    errors: int  # a pair with a failed judge call counts as not higher

    @property
    def accuracy(self) -> float:
        return self.higher / self.pairs if self.pairs else 0.0


def compare(good: dict[str, Any], bad: dict[str, Any]) -> str:
    """'higher' | 'tie' | 'lower' | 'error' for one pair's two result rows."""
    if good["error"] or bad["error"]:
        return "error"
    difference = good["score"] - bad["score"]
    return "higher" if difference > TIE_EPS else "tie" if difference >= -TIE_EPS else "lower"


def calibrate(
    pairs: dict[str, list[dict[str, str]]],
    scorer: Scorer,
    seed: int,
    progress: Callable[[Iterable[Any]], Iterator[Any]] = iter,
    sections: Iterable[str] | None = None,
    limit: int | None = None,
) -> tuple[dict[str, SectionResult], list[dict[str, Any]]]:
    """Per-section accuracy, and every scored row (good and bad) for inspection."""
    chosen = list(sections or pairs)
    jobs = [
        (section, i, pair_items(section, i, pair, seed))
        for section in chosen
        for i, pair in enumerate(pairs[section][:limit])
    ]
    rows: list[dict[str, Any]] = []
    outcomes: dict[str, list[str]] = {s: [] for s in chosen}
    for section, i, (good_item, bad_item) in progress(jobs):
        good, bad = scorer.score(good_item), scorer.score(bad_item)
        outcome = compare(good, bad)
        outcomes[section].append(outcome)
        rows += [{**good, "pair": i, "label": "good"}, {**bad, "pair": i, "label": "bad"}]
    results = {
        s: SectionResult(len(o), o.count("higher"), o.count("tie"), o.count("error"))
        for s, o in outcomes.items()
    }
    return results, rows
