"""Trust in the judge, on labeled pairs of a good and a degraded item per metric.

Per metric:

- ranking accuracy: the share of pairs whose good item scores strictly above the bad one;
- threshold agreement: the share of *items* on the right side of the metric's pass mark
  (params `eval.thresholds`): a good item at or above it, a bad item below it. A failed judge
  call counts as wrong. Its two halves are reported too (good items passing, bad items failing);
- spread: the good and bad items' median scores, the gap between them, and the standard
  deviation of all scores (a judge whose scores bunch has a small gap and a small deviation);
- held-out agreement: a pass mark set from calibration agrees best on the very pairs it was set
  from; this one sets it on all pairs but one (`best_threshold`) and tests it on that one, each
  pair in turn: an out-of-sample estimate of the agreement a mark set here has on new items.

Each metric is reported twice (`calibration_report`): `judge` reads the judge's own score (for
helpfulness and grounding before the scorer scales it by a check; improvement's arithmetic as
the scorer does it), `judge+checks` the metric's score with every item that a judge-free check
fails (`check_failures`: the task's limits and asks, the names, figures and claims the answer
states against the profile) counted as failed, as the eval stage counts it whatever the judge
says. The grounding pairs are also answered by `grounding_check` alone (no judge, pass mark 1.0).

The sections are the scorer's GEval definitions (`specs.METRICS`), not a list kept here: a
definition the file has no pairs for is reported as not calibrated.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import msgspec

from custseg.config import read_yaml
from custseg.conversation import GroundedIn
from custseg.errors import ConfigError
from custseg.evaluation.addressed import check_answer
from custseg.evaluation.asks import ignored_review
from custseg.evaluation.items import Item, improvement_item
from custseg.evaluation.limits import check_limits
from custseg.evaluation.scorer import Scorer, check_plan
from custseg.evaluation.specs import METRICS

MIN_PAIRS = 40  # 95 % Wilson intervals about ±0.1 wide at 0.9 (17 pairs: ±0.15)
TIE_EPS = 1e-9  # scores closer than this are a tie
PAIRWISE = "improvement"  # its pairs hold the draft and review the final is judged against
PLANS = frozenset({"plan_quality"})  # its items are plans: held to their claims only


def metric_sections() -> dict[str, str]:
    """Calibration section (a GEval definition, `METRICS`' value) → the result metric that
    scores it (the first `METRICS` names for it; helpfulness_final asks the same GEval)."""
    sections: dict[str, str] = {}
    for metric, spec in METRICS.items():
        if spec is not None:
            sections.setdefault(spec, metric)
    return sections


SECTION_METRIC = metric_sections()
FIELDS = {
    section: ("task", *(("draft", "review") if section == PAIRWISE else ()), "good", "bad")
    for section in SECTION_METRIC
}
CHECK = "grounding_check"  # the judge-free metric, reported on the grounding pairs
# How a bad item is degraded; all but `off_topic` stay on the task's topic.
DEGRADED = frozenset(
    {
        "vague",
        "generic",
        "restates_task",
        "missing_step",
        "misreads_task",
        "wrong_segment",
        "wrong_number",
        "invented_segment",
        "ignores_review",
        "worse_than_draft",
        "false_comparison",
        "wrong_order",
        "missing_item",
        "broken_limit",
        "truncated",
        "off_topic",
    }
)
OFF_TOPIC = "off_topic"


class CalibrationSet(dict[str, list[dict[str, str]]]):
    """The labeled pairs per section, and the segment profile the grounding pairs are checked
    against (`profile`)."""

    def __init__(self, sections: dict[str, list[dict[str, str]]], profile: GroundedIn) -> None:
        super().__init__(sections)
        self.profile = profile


def load_calibration(path: Path) -> CalibrationSet:
    """The labeled pairs per metric and the profile; ConfigError (one line, naming the section
    and the pair's index) if a section is missing, short or malformed."""
    if not Path(path).is_file():
        raise ConfigError(f"eval.calibration: file not found: {path}")
    data = read_yaml(Path(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    # Keys as text: YAML reads `0:` as an int key, and it is as unknown as any other.
    if unknown := sorted(str(key) for key in data if key not in FIELDS and key != "profile"):
        raise ConfigError(f"{path}: {', '.join(unknown)}: not a metric the scorer defines")
    present = {section: fields for section, fields in FIELDS.items() if section in data}
    if not present:
        raise ConfigError(f"{path}: no pairs for any metric ({', '.join(FIELDS)})")
    for section, fields in present.items():
        pairs = data.get(section)
        if not isinstance(pairs, list) or len(pairs) < MIN_PAIRS:
            raise ConfigError(f"{path}: {section}: needs at least {MIN_PAIRS} pairs")
        for i, pair in enumerate(pairs):
            if not isinstance(pair, dict):
                raise ConfigError(f"{path}: {section}[{i}]: expected a mapping")
            bad = [f for f in fields if not isinstance(pair.get(f), str) or not pair[f].strip()]
            if bad:
                raise ConfigError(f"{path}: {section}[{i}]: missing {', '.join(bad)}")
            if pair.get("degraded") not in DEGRADED:
                raise ConfigError(
                    f"{path}: {section}[{i}]: degraded must be one of {', '.join(sorted(DEGRADED))}"
                )
    try:
        profile = msgspec.convert(data.get("profile"), GroundedIn)
    except msgspec.ValidationError as error:
        raise ConfigError(f"{path}: profile: {error}") from None
    if not profile.segments:
        raise ConfigError(f"{path}: profile: needs the model's segments")
    return CalibrationSet({section: data[section] for section in present}, profile)


def on_topic_share(pairs: list[dict[str, str]]) -> float:
    """The share of a section's bad items that stay on the task's topic."""
    return sum(p["degraded"] != OFF_TOPIC for p in pairs) / len(pairs) if pairs else 0.0


def pair_items(
    section: str,
    index: int,
    pair: dict[str, str],
    seed: int,
    profile: GroundedIn | None = None,
) -> tuple[Item, Item]:
    """(good item, bad item); pairwise positions drawn per item like a real conversation's;
    the grounding items show `profile` before the task, as the eval stage does."""
    metric = SECTION_METRIC[section]
    items = []
    for label in ("good", "bad"):
        item_id = f"calibration:{section}:{index}:{label}"
        if section == PAIRWISE:
            items.append(
                improvement_item(
                    item_id, pair["task"], pair["draft"], pair[label], seed, review=pair["review"]
                )
            )
        elif section == "grounding":
            if profile is None:
                raise ValueError("grounding pairs need the segment profile")
            items.append(Item(item_id, metric, pair["task"], pair[label], grounding=profile))
        else:
            items.append(Item(item_id, metric, pair["task"], pair[label]))
    return items[0], items[1]


def check_failures(
    section: str, task: str, answer: str, profile: GroundedIn, pair: dict[str, str] | None = None
) -> str:
    """What the judge-free checks find wrong with an answer ('' for nothing): the task's limits
    and asks (`limits`), the segment names, figures and claims it states (`addressed`, against
    `profile`), and for an improvement pair's final whether it ignores a review asking for more
    (`asks.ignored_review`). Plans are steps, not answers: held to what they state
    (`check_plan`), as the eval holds them."""
    if section in PLANS:
        return "; ".join(check_plan(answer, task, profile)[1])
    found: list[str] = []
    if section == PAIRWISE and pair is not None:  # the final against its draft's review
        found.append(ignored_review(pair["review"], pair["draft"], answer, task))
    limits = check_limits(answer, task)
    check = check_answer(answer, task, profile.segments)
    found += [limits.reason() if not limits.passed else "", "" if check.passed else check.reason()]
    return " ".join(f for f in found if f)


def check_items(good: Item, bad: Item) -> tuple[Item, Item]:
    """The grounding pair's items for `grounding_check`: the same task, answer and profile."""
    return replace(good, metric=CHECK), replace(bad, metric=CHECK)


def compare(good: dict[str, Any], bad: dict[str, Any]) -> str:
    """'higher' | 'tie' | 'lower' | 'error' for one pair's two result rows."""
    if good["error"] or bad["error"]:
        return "error"
    difference = good["score"] - bad["score"]
    return "higher" if difference > TIE_EPS else "tie" if difference >= -TIE_EPS else "lower"


@dataclass(frozen=True)
class SectionResult:
    """One metric's report on its labeled pairs (see the module docstring)."""

    pairs: int
    higher: int  # good scored strictly above bad
    ties: int
    errors: int  # pairs with a failed judge call: not higher, and both items wrong
    threshold: float
    good_pass: int  # good items scored at or above the threshold
    bad_fail: int  # bad items scored below it
    good_median: float | None
    bad_median: float | None
    std: float | None  # of all scored items
    best_threshold: float | None  # the pass mark that would agree best on this very set
    held_out_agreement: float | None  # that mark's agreement on pairs it was not set from
    # Per pair, in order: (good ranked above bad, good right held out, bad right held out).
    outcomes: tuple[tuple[bool, bool, bool], ...] = ()

    @property
    def accuracy(self) -> float:
        return self.higher / self.pairs if self.pairs else 0.0

    @property
    def agreement(self) -> float:
        return (self.good_pass + self.bad_fail) / (2 * self.pairs) if self.pairs else 0.0

    @property
    def gap(self) -> float | None:
        if self.good_median is None or self.bad_median is None:
            return None
        return self.good_median - self.bad_median

    def report(self) -> dict[str, Any]:
        """The result as JSON-ready numbers, derived ones included."""
        fields = {k: v for k, v in asdict(self).items() if k != "outcomes"}
        rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in fields.items()}
        derived = {"accuracy": self.accuracy, "agreement": self.agreement, "gap": self.gap}
        return {**rounded, **{k: v if v is None else round(v, 4) for k, v in derived.items()}}


def _score(row: dict[str, Any]) -> float | None:
    return row["score"] if row["error"] is None else None


def _scores(rows: list[dict[str, Any]]) -> list[float]:
    return [score for r in rows if (score := _score(r)) is not None]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _between(low: float, high: float) -> float:
    """A mark that passes `high` and not `low`: midway, or `high` itself when the two are
    neighbouring floats with no number between them."""
    middle = (low + high) / 2
    return middle if low < middle else high


def best_threshold(good: list[float], bad: list[float]) -> float | None:
    """The pass mark (midway between two neighbouring scores) with the most items on the right
    side; the lowest such one. In-sample: a hint for `eval.thresholds`, not a measurement."""
    values = sorted(set(good + bad))
    if not values:
        return None
    candidates = [values[0]] + [_between(a, b) for a, b in itertools.pairwise(values)]
    candidates.append(values[-1] + TIE_EPS * 2)

    def right(t: float) -> int:
        return sum(g >= t for g in good) + sum(b < t for b in bad)

    return max(candidates, key=lambda t: (right(t), -t))


def held_out_marks(pairs: list[tuple[float | None, float | None]]) -> list[tuple[bool, bool]]:
    """Leave-one-out: per (good, bad) pair, whether each of its items is on the right side of
    the best pass mark set on the other pairs. A failed item (None) is wrong; with no mark (one
    pair, or every other item failed) both are."""
    right = []
    for i, (good, bad) in enumerate(pairs):
        others = pairs[:i] + pairs[i + 1 :]
        mark = best_threshold(
            [g for g, _ in others if g is not None], [b for _, b in others if b is not None]
        )
        if mark is None:
            right.append((False, False))
            continue
        right.append((good is not None and good >= mark, bad is not None and bad < mark))
    return right


def held_out_agreement(pairs: list[tuple[float | None, float | None]]) -> float | None:
    """The share of items `held_out_marks` puts right; None with fewer than two pairs."""
    if len(pairs) < 2:
        return None
    return sum(g + b for g, b in held_out_marks(pairs)) / (2 * len(pairs))


def summarise(
    pair_rows: list[tuple[dict[str, Any], dict[str, Any]]], threshold: float
) -> SectionResult:
    """One metric's SectionResult from its (good row, bad row) pairs."""
    outcomes = [compare(good, bad) for good, bad in pair_rows]
    good_rows = [good for good, _ in pair_rows]
    bad_rows = [bad for _, bad in pair_rows]
    good, bad = _scores(good_rows), _scores(bad_rows)
    every = good + bad
    scored = [(_score(g), _score(b)) for g, b in pair_rows]
    marks = held_out_marks(scored) if len(scored) > 1 else [(False, False)] * len(scored)
    return SectionResult(
        pairs=len(pair_rows),
        higher=outcomes.count("higher"),
        ties=outcomes.count("tie"),
        errors=outcomes.count("error"),
        threshold=threshold,
        good_pass=sum(s >= threshold for s in good),
        bad_fail=sum(s < threshold for s in bad),
        good_median=_median(good),
        bad_median=_median(bad),
        std=statistics.pstdev(every) if len(every) > 1 else None,
        best_threshold=best_threshold(good, bad),
        held_out_agreement=held_out_agreement(scored),
        outcomes=tuple((o == "higher", g, b) for o, (g, b) in zip(outcomes, marks, strict=True)),
    )


# The views of a metric (module docstring); grounding_check is reported on its own.
JUDGE, WITH_CHECKS = "judge", "judge+checks"
# Metrics whose row `score` folds a check into the judge's (`judge_score` is the judge's alone).
FOLDED = frozenset({"plan_quality", "helpfulness", "grounding"})


def views(section: str, row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The row as each view scores it: the judge's part alone, and the metric with a check's
    finding counted as a fail (score 0)."""
    judge = row["judge_score"] if section in FOLDED and row["error"] is None else row["score"]
    checked = 0.0 if row["error"] is None and row["checks"] else row["score"]
    return {JUDGE: {**row, "score": judge}, WITH_CHECKS: {**row, "score": checked}}


def calibrate(
    pairs: CalibrationSet,
    scorer: Scorer,
    seed: int,
    progress: Callable[[Iterable[Any]], Iterator[Any]] = iter,
    sections: Iterable[str] | None = None,
    limit: int | None = None,
) -> tuple[dict[str, dict[str, SectionResult]], list[dict[str, Any]]]:
    """Per metric (the chosen sections', plus `grounding_check` with grounding) and view, its
    result; and every scored row (good and bad) for inspection, with what the checks found."""
    chosen = list(sections or pairs)
    profile = pairs.profile
    jobs = [
        (section, i, pair, pair_items(section, i, pair, seed, profile))
        for section in chosen
        for i, pair in enumerate(pairs[section][:limit])
    ]
    rows: list[dict[str, Any]] = []
    scored: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {s: [] for s in chosen}
    if "grounding" in chosen:
        scored[CHECK] = []
    for section, i, pair, (good_item, bad_item) in progress(jobs):
        tagged = {"section": section, "pair": i, "degraded": pair["degraded"]}
        judged = [(section, good_item, bad_item)]
        if section == "grounding":
            judged.append((CHECK, *check_items(good_item, bad_item)))
        for metric, good_item_, bad_item_ in judged:
            found = {
                label: check_failures(section, pair["task"], pair[label], profile, pair)
                for label in ("good", "bad")
            }
            good = {**scorer.score(good_item_), **tagged, "label": "good", "checks": found["good"]}
            bad = {**scorer.score(bad_item_), **tagged, "label": "bad", "checks": found["bad"]}
            scored[metric].append((good, bad))
            rows += [good, bad]
    results: dict[str, dict[str, SectionResult]] = {}
    for metric, pair_rows in scored.items():
        threshold = threshold_of(scorer, metric)
        if metric == CHECK:
            results[metric] = {CHECK: summarise(pair_rows, threshold)}
            continue
        seen = [(views(metric, g), views(metric, b)) for g, b in pair_rows]
        results[metric] = {
            view: summarise([(g[view], b[view]) for g, b in seen], threshold)
            for view in (JUDGE, WITH_CHECKS)
        }
    return results, rows


def threshold_of(scorer: Scorer, metric: str) -> float:
    """The pass mark a calibration metric is judged at: params' for a judge's metric, 1.0 for
    `grounding_check` (it passes only with nothing invented)."""
    key = METRICS[SECTION_METRIC.get(metric, metric)]
    return 1.0 if key is None else scorer.thresholds[key]
