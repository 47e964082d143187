"""The champion gate: its arithmetic, and what the registry must say before anything is promoted
(a real sqlite registry; faults injected into the real client)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from custseg.features import FEATURES
from custseg.pipeline.registry import (
    Comparison,
    Decision,
    compare_on_data,
    current_champion,
    hold_for_experiment,
    promotion_decision,
)
from custseg.pipeline.segments import sample_silhouette
from custseg.testing.sandbox import run_pipeline
from tests.fixtures.project import stage, write_params

NAME = "customer-segments"


def _scores(candidate: float, champion: float, ari: float = 1.0) -> Comparison:
    return Comparison(candidate, champion, ari)


def test_first_model_is_always_promoted() -> None:
    decision = promotion_decision(None, tolerance=0.0)
    assert decision.promote and decision.reason == "no champion yet"


def test_within_tolerance_is_promoted_and_beyond_is_not() -> None:
    assert promotion_decision(_scores(0.395, 0.40), tolerance=0.01).promote
    assert promotion_decision(_scores(0.39, 0.40), tolerance=0.01).promote
    assert not promotion_decision(_scores(0.389, 0.40), tolerance=0.01).promote
    assert promotion_decision(_scores(0.45, 0.40), tolerance=0.0).promote
    assert not promotion_decision(_scores(0.3999, 0.40), tolerance=0.0).promote


def test_the_reason_says_why() -> None:
    reason = promotion_decision(_scores(0.30, 0.40, ari=0.5), tolerance=0.05).reason
    assert reason == (
        "silhouette 0.3000 < champion 0.4000 − tolerance 0.05, both on this data; ARI 0.500"
    )
    reason = promotion_decision(_scores(0.50, 0.40, ari=0.5), tolerance=0.05, min_ari=0.8).reason
    assert reason.endswith("ARI 0.500 < min_ari 0.8")


def test_a_champion_that_cannot_score_the_data_is_kept_unless_forced() -> None:
    cannot = Comparison(0.6, unscorable="it takes 3 features, this data has 2")
    kept = promotion_decision(cannot, tolerance=0.01)
    assert not kept.promote
    assert kept.reason == (
        "the champion cannot score this data: it takes 3 features, this data has 2; "
        "set export.force: true to promote anyway"
    )
    forced = promotion_decision(cannot, tolerance=0.01, force=True)
    assert forced.promote and forced.reason.endswith("; promoted by export.force")


scores = st.floats(-1, 1, allow_nan=False)


segment_counts = st.none() | st.integers(2, 10)


@given(
    candidate=scores,
    champion=scores,
    ari=st.floats(-0.5, 1, allow_nan=False),
    tolerance=st.floats(0, 2, allow_nan=False),
    min_ari=st.none() | st.floats(-1, 1, allow_nan=False),
    force=st.booleans(),
    candidate_k=segment_counts,
    champion_k=segment_counts,
)
def test_the_gate_promotes_exactly_when_its_rules_allow(
    candidate: float,
    champion: float,
    ari: float,
    tolerance: float,
    min_ari: float | None,
    force: bool,
    candidate_k: int | None,
    champion_k: int | None,
) -> None:
    comparison = Comparison(
        candidate, champion, ari, candidate_k=candidate_k, champion_k=champion_k
    )
    decision = promotion_decision(comparison, tolerance, min_ari=min_ari, force=force)
    new_k = None not in (candidate_k, champion_k) and candidate_k != champion_k
    allowed = (
        candidate >= champion - tolerance and (min_ari is None or ari >= min_ari) and not new_k
    )
    assert decision.promote is (allowed or force)
    assert decision.reason.endswith("promoted by export.force") is (force and not allowed)
    assert (f"k {candidate_k} ≠ champion's k {champion_k}" in decision.reason) is new_k
    assert "\n" not in decision.reason


def test_a_new_k_is_not_promoted_on_silhouette_alone() -> None:
    """Silhouette favours few segments: k=2 beating k=5 by a wide margin is still refused."""
    two_beats_five = Comparison(0.52, 0.37, 0.4, candidate_k=2, champion_k=5)
    refused = promotion_decision(two_beats_five, tolerance=0.01)
    assert not refused.promote
    assert refused.reason.startswith("silhouette 0.5200 ≥ champion 0.3700")
    assert refused.reason.endswith(
        "; k 2 ≠ champion's k 5: a new k is promoted by decision "
        "(`custseg promote VERSION` or export.force), never on silhouette alone"
    )
    assert promotion_decision(two_beats_five, tolerance=0.01, force=True).promote
    same_k = Comparison(0.52, 0.37, 0.4, candidate_k=5, champion_k=5)
    assert promotion_decision(same_k, tolerance=0.01).promote


@given(
    promote=st.booleans(),
    experiment=st.none() | st.text("abcdefghij-", min_size=1, max_size=20),
    force=st.booleans(),
)
def test_an_experiment_takes_the_champion_only_when_forced(
    promote: bool, experiment: str | None, force: bool
) -> None:
    verdict = Decision(promote, "the gate's reason")
    held = hold_for_experiment(verdict, experiment, force=force)
    assert held.promote is (promote and (experiment is None or force))
    assert held.reason.startswith("the gate's reason")
    if promote and not held.promote:
        assert f"experiment {experiment} does not move the champion" in held.reason
        assert "`custseg promote VERSION`" in held.reason
    else:
        assert held == verdict


def _blobs(centers: list[tuple[float, float]], n: int, seed: int, std: float = 3.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    points = np.vstack([rng.normal(c, std, size=(n, 2)) for c in centers])
    return pd.DataFrame(points, columns=FEATURES)


def test_compare_on_data_scores_both_labelings_of_the_same_rows() -> None:
    X = _blobs([(20, 20), (20, 80), (80, 20), (80, 80)], 60, seed=1)
    four = KMeans(4, n_init=3, random_state=0).fit(X)
    two = KMeans(2, n_init=3, random_state=0).fit(X)
    same = compare_on_data(four, four, X, sample_size=100, seed=7)
    assert same.candidate_silhouette == same.champion_silhouette and same.ari == 1.0
    versus = compare_on_data(two, four, X, sample_size=100, seed=7)
    assert (versus.candidate_k, versus.champion_k) == (2, 4)
    assert versus.champion_silhouette == same.champion_silhouette
    assert versus.candidate_silhouette < versus.champion_silhouette
    assert 0 < versus.ari < 1 and versus.unscorable is None


def test_a_champion_on_other_features_cannot_score() -> None:
    X = _blobs([(20, 20), (80, 80)], 30, seed=2)
    candidate = KMeans(2, n_init=1, random_state=0).fit(X)
    other = X.assign(age=40.0).rename(columns={FEATURES[0]: "income_eur"})
    foreign = KMeans(2, n_init=1, random_state=0).fit(other)
    result = compare_on_data(candidate, foreign, X, sample_size=100, seed=0)
    assert result.champion_silhouette is None and result.ari is None
    assert result.unscorable.startswith("it was trained on features ['income_eur'")

    class Broken:
        def predict(self, _X: pd.DataFrame) -> None:
            raise RuntimeError("no\nway")

    broken = compare_on_data(candidate, Broken(), X, sample_size=100, seed=0)
    assert broken.unscorable == "its predict failed: no"


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(3, 400),
    k=st.integers(1, 6),
    sample=st.integers(2, 300),
    seed=st.integers(0, 2**31 - 1),
)
def test_sample_silhouette_is_sklearns_number_on_the_same_sample(
    n: int, k: int, sample: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, 2))
    labels = rng.integers(0, k, n)
    got = sample_silhouette(values, labels, sample, seed)
    rows = np.random.RandomState(seed).permutation(n)[:sample] if n > sample else slice(None)
    distinct = len(np.unique(labels[rows]))
    sample_size = sample if n > sample else None
    if distinct < 2:
        assert got == -1.0
    elif distinct >= len(values[rows]):
        assert got == 0.0
    else:
        assert got == silhouette_score(values, labels, sample_size=sample_size, random_state=seed)


def test_only_a_missing_alias_means_no_champion(project: Path) -> None:
    client = MlflowClient()
    client.create_registered_model(NAME)
    version = client.create_model_version(NAME, source=str(project / "anything")).version
    assert current_champion(client, NAME, "champion") is None
    client.set_registered_model_alias(NAME, "champion", version)
    assert current_champion(client, NAME, "champion").version == version


def _broken(method: str):
    def fail(*_args, **_kwargs):
        raise MlflowException("database is locked", INTERNAL_ERROR)

    return method, fail


@pytest.mark.parametrize(
    "faults",
    [
        [_broken("get_model_version_by_alias")],
        [_broken("get_model_version_by_alias"), _broken("get_registered_model")],
    ],
    ids=["alias lookup fails", "alias lookup and model lookup fail"],
)
def test_a_registry_error_stops_export_with_nothing_promoted(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, faults: list
) -> None:
    run_pipeline(project)  # v1 @champion
    info = (project / "models/model_info.json").read_text()
    write_params(project, train={"n_clusters": 3})
    assert stage("train").main([]) == 0
    capsys.readouterr()
    for method, fail in faults:
        monkeypatch.setattr(MlflowClient, method, fail)
    assert stage("export").main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if line.startswith("error:")] == err[-1:]
    assert err[-1].startswith("error: MLflow registry: ")
    assert err[-1].endswith("database is locked; nothing promoted")
    monkeypatch.undo()
    champion = MlflowClient().get_model_version_by_alias(NAME, "champion")
    assert str(champion.version) == "1", "a registry error must never move the champion"
    assert (project / "models/model_info.json").read_text() == info
    assert json.loads(info)["version"] == 1


# --- the gate on real data in a real registry ------------------------------------------------

# Five groups laid out unlike the simulated customers, so neither data set's model fits the other.
REAL_CENTERS = [(20, 40), (40, 60), (60, 80), (80, 20), (100, 40)]


def _write_real_customers(path: Path) -> None:
    """A customers CSV with Mall Customers headers: five well-separated groups."""
    frame = _blobs(REAL_CENTERS, 40, seed=5, std=5.0).round(1)
    frame.insert(0, "CustomerID", range(1, len(frame) + 1))
    frame.columns = ["CustomerID", "Annual Income (k$)", "Spending Score (1-100)"]
    frame.to_csv(path, index=False)


def _export_after(project: Path, **sections: dict) -> dict:
    """Apply params, run the stages DVC would rerun (simulate, train, export), read the result."""
    write_params(project, **sections)
    for name in ("simulate", "train", "export"):
        assert stage(name).main([]) == 0, name
    return json.loads((project / "models/model_info.json").read_text())


def _version_tags(version: int) -> dict[str, str]:
    return MlflowClient().get_model_version(NAME, str(version)).tags


def test_the_gate_compares_like_with_like_across_data_sets(project: Path) -> None:
    _write_real_customers(project / "real.csv")
    simulated = _export_after(project)
    assert simulated["promoted"] and simulated["decision"] == "no champion yet"

    # Real customers: the simulated champion is scored on them too, and loses.
    real = _export_after(project, simulate={"source": "real.csv"})
    gate = real["gate"]
    assert real["promoted"] and gate["champion_version"] == 1
    assert gate["candidate_silhouette"] > gate["champion_silhouette"] + 0.01
    assert gate["champion_silhouette"] != simulated["metrics"]["silhouette"]
    assert gate["candidate_silhouette"] == pytest.approx(real["metrics"]["silhouette"])

    # Back to simulated data: the old gate compared this model's silhouette (on easy-looking
    # simulated data) with the champion's on its own well-separated data and refused it.
    back = _export_after(project, simulate={"source": None})
    assert back["metrics"]["silhouette"] < real["metrics"]["silhouette"] - 0.01
    assert back["promoted"], back["decision"]
    assert back["gate"]["champion_version"] == 2
    assert back["gate"]["candidate_silhouette"] > back["gate"]["champion_silhouette"]

    # A genuinely worse model of the same data is refused, and promoted only when forced.
    _export_after(project, simulate={"source": "real.csv"})  # v4: the real-data champion
    worse = _export_after(project, train={"n_clusters": 2})
    assert not worse["promoted"] and worse["aliases"] == ["candidate"]
    assert worse["decision"].startswith(f"silhouette {worse['gate']['candidate_silhouette']:.4f} <")
    assert "k 2 ≠ champion's k 5" in worse["decision"] and not worse["gate"]["passed"]
    assert 0 < worse["gate"]["ari"] < 1
    assert _champion() == 4
    write_params(project, export={"force": True})
    assert stage("export").main([]) == 0
    forced = json.loads((project / "models/model_info.json").read_text())
    assert forced["version"] == worse["version"] and forced["promoted"]
    assert forced["decision"].endswith("; promoted by export.force")
    assert _champion() == worse["version"]

    # Every version carries its lineage and the decision as tags; metrics/export.json has both
    # scores for `dvc exp show`.
    data_sha = hashlib.sha256((project / "data/customers.csv").read_bytes()).hexdigest()
    tags = _version_tags(forced["version"])
    assert tags["data.sha256"] == data_sha == forced["lineage"]["data"]["sha256"]
    assert tags["data.rows"] == "200" and tags["engine"] == "sklearn"
    assert tags["params.simulate.source"] == "real.csv"
    assert tags["params.train.n_clusters"] == "2" and tags["params.base.seed"] == "42"
    assert tags["git.commit"] == "null", "the sandbox is not a git checkout"
    assert tags["gate.promoted"] == "true" and tags["gate.force"] == "true"
    assert float(tags["gate.champion_silhouette"]) == forced["gate"]["champion_silhouette"]
    assert _version_tags(2)["params.simulate.source"] == "real.csv"
    assert _version_tags(3)["params.simulate.source"] == "null"
    assert _version_tags(1)["gate.decision"] == "no champion yet"
    described = MlflowClient().get_model_version(NAME, str(worse["version"])).description
    assert described.startswith("promoted to @champion: silhouette")
    shown = json.loads((project / "metrics/export.json").read_text())
    assert shown["promoted"] is True and shown["version"] == forced["version"]
    assert shown["candidate_silhouette"] == forced["gate"]["candidate_silhouette"]
    assert shown["champion_silhouette"] == forced["gate"]["champion_silhouette"]


def _champion() -> int:
    return int(MlflowClient().get_model_version_by_alias(NAME, "champion").version)


def test_a_champion_on_other_features_is_kept_unless_forced(project: Path) -> None:
    import mlflow

    X = _blobs([(20, 20), (80, 80)], 30, seed=3).assign(age=30.0)
    with mlflow.start_run():
        logged = mlflow.sklearn.log_model(KMeans(2, n_init=1, random_state=0).fit(X), name="m")
    foreign = mlflow.register_model(logged.model_uri, NAME)
    MlflowClient().set_registered_model_alias(NAME, "champion", foreign.version)

    kept = _export_after(project)
    assert not kept["promoted"] and _champion() == int(foreign.version)
    assert kept["decision"] == (
        "the champion cannot score this data: it was trained on features "
        "['annual_income', 'spending_score', 'age'], this data has "
        "['annual_income', 'spending_score']; set export.force: true to promote anyway"
    )
    forced = _export_after(project, export={"force": True})
    assert forced["promoted"] and _champion() == forced["version"]


def decide_at_once(
    model: str, clients: list[MlflowClient], hold_s: float, **lock: float
) -> list[BaseException]:
    """Each client in a thread of its own holds the gate of `model` (`lock`: gate_lock's
    options) while it reads the model's count tag, waits `hold_s` and writes it back plus one;
    the exceptions the threads raised (a thread's exception is otherwise lost)."""
    import threading

    from custseg.pipeline.registry import gate_lock

    client, failures = MlflowClient(), []

    def decide(mine: MlflowClient) -> None:
        try:
            with gate_lock(mine, model, **lock):
                count = int(client.get_registered_model(model).tags["count"])
                time.sleep(hold_s)
                client.set_registered_model_tag(model, "count", str(count + 1))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=decide, args=(mine,)) for mine in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return failures


def test_the_gate_lock_lets_one_export_decide_at_a_time(project: Path) -> None:
    """Six deciders each read a counter tag, wait, and write it back plus one: with the gate held
    no update is lost (without it, all would read 0). Released: no lock model remains."""
    from custseg.pipeline.registry import GATE_LOCK_SUFFIX

    client = MlflowClient()
    client.create_registered_model("raced", tags={"count": "0"})
    clients = [MlflowClient() for _ in range(6)]
    assert decide_at_once("raced", clients, 0.05, poll_s=0.05) == []
    assert client.get_registered_model("raced").tags["count"] == "6"
    assert not client.search_registered_models(f"name = 'raced{GATE_LOCK_SUFFIX}'")


class SlowDeleteClient(MlflowClient):
    """A registry client whose deletes take `delay` seconds to arrive (a slow store)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def delete_registered_model(self, name: str) -> None:
        time.sleep(self.delay)
        super().delete_registered_model(name)


def test_waiters_that_see_the_same_stale_gate_break_it_once(project: Path) -> None:
    """Three deciders find one stale claim; their deletes arrive 0.2, 0.4 and 0.6 s later.
    Each deleting "the stale claim" would delete the claim the first has taken meanwhile and
    let a second decider in while the first still decides (a lost update); breaking takes a
    claim of its own and deletes only the claim it saw."""
    from custseg.pipeline.registry import GATE_LOCK_SUFFIX

    client = MlflowClient()
    client.create_registered_model("stale", tags={"count": "0"})
    client.create_registered_model(f"stale{GATE_LOCK_SUFFIX}", tags={"holder": "gone:1"})
    time.sleep(2.0)  # older than the stale age below
    clients = [SlowDeleteClient(delay) for delay in (0.2, 0.4, 0.6)]
    assert decide_at_once("stale", clients, 0.5, stale_s=1.5, poll_s=0.05) == []
    assert client.get_registered_model("stale").tags["count"] == "3"
    left = client.search_registered_models("name LIKE 'stale.%'")
    assert not left, [m.name for m in left]  # neither the gate lock nor a breaker claim


def test_a_breaker_claim_left_by_a_dead_waiter_expires(project: Path) -> None:
    from custseg.pipeline.registry import BREAKING_SUFFIX, GATE_LOCK_SUFFIX, break_stale

    client = MlflowClient()
    lock = f"orphan{GATE_LOCK_SUFFIX}"
    created = client.create_registered_model(lock).creation_timestamp
    client.create_registered_model(f"{lock}{BREAKING_SUFFIX}")  # its breaker died breaking it
    assert not break_stale(client, lock, created, breaking_stale_s=60)  # someone is breaking
    assert client.get_registered_model(lock)
    a_second_later = lambda: time.time() + 1.0  # noqa: E731
    # expires that claim, then breaks the lock
    assert not break_stale(client, lock, created, breaking_stale_s=0.5, clock=a_second_later)
    assert break_stale(client, lock, created, breaking_stale_s=0.5, clock=a_second_later)
    assert not client.search_registered_models("name LIKE 'orphan.%'")
    # A claim that is not the one seen (taken again meanwhile) is left alone.
    client.create_registered_model(lock)
    assert break_stale(client, lock, created - 1)
    assert client.get_registered_model(lock)


def test_a_held_gate_times_out_in_one_line_and_a_stale_one_is_taken(project: Path) -> None:
    from custseg.errors import RegistryError
    from custseg.pipeline.registry import GATE_LOCK_SUFFIX, gate_lock

    client = MlflowClient()
    client.create_registered_model(f"held{GATE_LOCK_SUFFIX}", tags={"holder": "other-host:42"})
    with pytest.raises(RegistryError) as waited, gate_lock(client, "held", timeout_s=0.3):
        pass
    message = str(waited.value)
    assert "\n" not in message and "held by other-host:42" in message
    assert f"delete the registered model held{GATE_LOCK_SUFFIX}" in message

    client.create_registered_model(f"dead{GATE_LOCK_SUFFIX}", tags={"holder": "gone:1"})
    # A second later it is older than the stale age below: left by an export that died.
    later = lambda: time.time() + 1.0  # noqa: E731
    with gate_lock(client, "dead", timeout_s=5, stale_s=0.5, clock=later) as holder:
        assert client.get_registered_model(f"dead{GATE_LOCK_SUFFIX}").tags["holder"] == holder
