"""The store of scored rows: what it keeps, its bound, that a full disk never fails a
prediction (a real full tmpfs), and that `custseg monitor` reads it back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from custseg.cli import main
from custseg.features import FEATURES, INCOME, SPENDING
from custseg.monitoring.drift import NO_DRIFT, SEGMENT
from custseg.monitoring.store import (
    RECORD_DIR_ENV,
    VERSION,
    BackgroundWriter,
    ScoredStore,
    flush_all,
    recorder,
)
from custseg.serving.batch import score_csv
from custseg.serving.rest import scoring_app


def customers(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({INCOME: rng.normal(60, 15, rows), SPENDING: rng.uniform(1, 100, rows)})


@pytest.fixture(scope="module")
def kmeans() -> KMeans:
    return KMeans(n_clusters=3, n_init=1, random_state=0).fit(customers(300))


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5), seed=st.integers(0, 2**16))
def test_the_store_keeps_features_segment_and_version_only(
    sizes: list[int], seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("scored")
    store = ScoredStore(folder, version="3")
    calls = [customers(n, seed + i).assign(customer_id=1, email="x") for i, n in enumerate(sizes)]
    for frame in calls:
        assert store.record(frame, np.arange(len(frame)) % 3)
    back = pd.read_parquet(folder)
    assert list(back.columns[:4]) == [*FEATURES, SEGMENT, VERSION]  # + pyarrow's day=… column
    assert len(back) == sum(sizes) and set(back[VERSION]) == {"3"}
    expected = pd.concat(calls)[FEATURES].to_numpy()
    assert sorted(map(tuple, back[FEATURES].to_numpy())) == sorted(map(tuple, expected))


def test_the_store_stays_within_its_bound_dropping_the_oldest(tmp_path: Path) -> None:
    store = ScoredStore(tmp_path, version="1", max_bytes=40_000)
    for i in range(40):
        assert store.record(customers(50, i), np.zeros(50, dtype=int))
    files = sorted(tmp_path.glob("day=*/*.parquet"))
    assert sum(f.stat().st_size for f in files) <= 40_000
    assert 0 < len(files) < 40
    kept = pd.concat(pd.read_parquet(f) for f in files)
    assert np.allclose(kept[INCOME].tail(50), customers(50, 39)[INCOME])  # the newest is kept


@contextlib.contextmanager
def full_tmpfs(path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs at `path`, filled up: every write there fails with ENOSPC."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], check=True)
    try:
        with contextlib.suppress(OSError), (path / "filler").open("wb") as filler:
            while True:
                filler.write(b"x" * 4096)
                filler.flush()
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_disk_never_fails_a_prediction(tmp_path: Path, kmeans: KMeans, caplog) -> None:
    with full_tmpfs(tmp_path / "full") as full:
        store = ScoredStore(full / "scored", version="1")
        assert store.record(customers(10), np.zeros(10, dtype=int)) is False
        assert "scored rows not recorded" in caplog.text

        sent: list[dict] = []
        body = json.dumps({"dataframe_records": customers(5).to_dict("records")}).encode()

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http", "method": "POST", "path": "/invocations",
            "headers": [(b"content-type", b"application/json")],
        }  # fmt: skip
        app = scoring_app(kmeans, max_body_bytes=2**20, record=store.record)
        asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=30))
        assert sent[0]["status"] == 200
        predictions = json.loads(sent[1]["body"])["predictions"]
        assert predictions == kmeans.predict(customers(5)).tolist()
        assert [p.name for p in full.rglob("*") if p.is_file()] == [
            "filler"
        ]  # nothing half-written


def test_monitor_reads_the_store_of_the_served_version_only(
    served_project: Path, tmp_path: Path, capsys
) -> None:
    from tests.fixtures.app import load_registered

    model = load_registered()
    training = pd.read_csv(served_project / "data/customers.csv")[FEATURES].astype(float)
    ScoredStore(tmp_path / "scored", version="1").record(training, model.predict(training))
    other = ScoredStore(tmp_path / "scored", version="99")  # another version's segment ids
    other.record(customers(300), np.full(300, 41))
    out = tmp_path / "monitor.json"
    assert main(["monitor", "--window", str(tmp_path / "scored"), "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["verdict"] == NO_DRIFT and report["rows"] == len(training)
    capsys.readouterr()
    other_only = tmp_path / "other"
    ScoredStore(other_only, version="99").record(customers(300), np.full(300, 41))
    assert main(["monitor", "--window", str(other_only), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no scored rows of version 1 (the window has 99)" in err


def test_scoring_records_into_data_scored_unless_told_otherwise(tmp_path: Path) -> None:
    from custseg.monitoring.store import record_dir
    from custseg.paths import SCORED

    assert record_dir({}) == record_dir({RECORD_DIR_ENV: "  "}) == SCORED == Path("data/scored")
    assert recorder("1", environ={RECORD_DIR_ENV: "off"}) is None
    assert recorder("1", environ={RECORD_DIR_ENV: " OFF "}) is None
    record = recorder("1", environ={RECORD_DIR_ENV: str(tmp_path)})
    assert record is not None and record is not recorder("2", tmp_path)
    assert record(customers(3), np.zeros(3, dtype=int))
    assert flush_all(30)
    assert len(pd.read_parquet(tmp_path)) == 3


def test_a_batch_upload_records_what_it_scored_even_on_a_full_disk(
    tmp_path: Path, kmeans: KMeans
) -> None:
    text = "id,Annual Income (k$),Spending Score (1-100),email\n1,15,1,a@b\n2,140,100,c@d\n"
    store = ScoredStore(tmp_path / "scored", version="4")
    result = score_csv(text.encode(), kmeans, ["a", "b", "c"], record=store.record)
    back = pd.read_parquet(tmp_path / "scored")
    assert back[INCOME].tolist() == [15.0, 140.0] and "email" not in back and "id" not in back
    assert back[SEGMENT].tolist() == result.scored["segment"].tolist()
    with full_tmpfs(tmp_path / "full") as full:
        failing = ScoredStore(full / "scored", version="4").record
        again = score_csv(text.encode(), kmeans, ["a", "b", "c"], record=failing)
        assert again.scored["segment"].tolist() == result.scored["segment"].tolist()


def test_the_app_batch_page_records_with_the_served_version(
    served_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.fixtures.app import APP

    monkeypatch.setenv(RECORD_DIR_ENV, str(tmp_path / "scored"))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page("views/batch.py").run()
    at.text_area(key="batch_text").input("annual_income,spending_score\n60,50\n90,12\n").run()
    assert not at.exception, at.exception
    assert flush_all(30)
    back = pd.read_parquet(tmp_path / "scored")
    assert back[[INCOME, SPENDING]].values.tolist() == [[60.0, 50.0], [90.0, 12.0]]
    assert set(back[VERSION]) == {"1"}


def test_the_predict_button_records_each_click_not_each_rerun(
    served_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.fixtures.app import APP, load_registered

    monkeypatch.setenv(RECORD_DIR_ENV, str(tmp_path / "scored"))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    for income, spending in ((20, 90), (130, 10)):
        at.slider(key="income").set_value(income)
        at.slider(key="spending").set_value(spending)
        at.button(key="predict").click().run()
    at.run()  # a rerun with no click: nothing new was scored
    assert not at.exception, at.exception
    assert flush_all(30)
    back = pd.read_parquet(tmp_path / "scored").sort_values(INCOME)
    assert back[[INCOME, SPENDING]].values.tolist() == [[20.0, 90.0], [130.0, 10.0]]
    expected = load_registered().predict(back[FEATURES]).tolist()
    assert back[SEGMENT].tolist() == expected and set(back[VERSION]) == {"1"}
    assert at.metric[0].value == f"Cluster {expected[-1]}"


@contextlib.contextmanager
def read_only_tmpfs(path: Path) -> Iterator[Path]:
    """A read-only tmpfs at `path`: every write there fails with EROFS (root ignores modes)."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_read_only_folder_warns_once_and_scoring_goes_on(
    tmp_path: Path, kmeans: KMeans, caplog: pytest.LogCaptureFixture
) -> None:
    text = "annual_income,spending_score\n60,50\n90,12\n"
    with read_only_tmpfs(tmp_path / "ro") as folder:
        store = ScoredStore(folder / "scored", version="2")
        results = [score_csv(text.encode(), kmeans, ["a", "b", "c"], record=store.record)]
        results.append(score_csv(text.encode(), kmeans, ["a", "b", "c"], record=store.record))
        assert store.record(customers(3), np.zeros(3, dtype=int)) is False
    scored = pd.DataFrame({INCOME: [60.0, 90.0], SPENDING: [50.0, 12.0]})
    for result in results:
        assert result.scored["segment"].tolist() == kmeans.predict(scored).tolist()
    warnings = [r for r in caplog.records if "scored rows not recorded" in r.getMessage()]
    assert len(warnings) == 1 and "Read-only file system" in warnings[0].getMessage()


def test_the_predict_button_answers_when_the_store_is_read_only(
    served_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.fixtures.app import APP, load_registered

    with read_only_tmpfs(tmp_path / "ro") as folder:
        monkeypatch.setenv(RECORD_DIR_ENV, str(folder / "scored"))
        at = AppTest.from_file(str(APP), default_timeout=60).run()
        at.slider(key="income").set_value(100)
        at.slider(key="spending").set_value(80)
        at.button(key="predict").click().run()
        assert not at.exception, at.exception
        segment = int(
            load_registered().predict(pd.DataFrame({INCOME: [100.0], SPENDING: [80.0]}))[0]
        )
        assert at.metric[0].value == f"Cluster {segment}"
        assert flush_all(30)
        assert not list(folder.rglob("*"))


class SlowStore(ScoredStore):
    """A store on a disk that takes `delay_s` a write."""

    def __init__(self, folder: Path, delay_s: float) -> None:
        super().__init__(folder, version="1")
        self.delay_s = delay_s

    def record(self, features: pd.DataFrame, segments: np.ndarray) -> bool:
        time.sleep(self.delay_s)
        return super().record(features, segments)


def test_a_slow_disk_never_slows_scoring_and_every_row_is_written(tmp_path: Path) -> None:
    writer = BackgroundWriter(SlowStore(tmp_path, delay_s=0.2))
    frames = [customers(5, seed) for seed in range(5)]
    start = time.perf_counter()
    for frame in frames:
        assert writer.record(frame, np.ones(5, dtype=int))
        frame[INCOME] = -1.0  # the caller reuses its frame: the queued copy is not touched
    assert time.perf_counter() - start < 0.2  # five writes take 1 s: none waited for
    assert writer.flush(30)
    back = pd.read_parquet(tmp_path)
    assert len(back) == 25 and (back[INCOME] > 0).all()


def test_a_full_queue_drops_rows_and_warns_once(tmp_path: Path, caplog) -> None:
    writer = BackgroundWriter(SlowStore(tmp_path, delay_s=0.5), max_pending=2)
    outcomes = [writer.record(customers(2, i), np.zeros(2, dtype=int)) for i in range(6)]
    assert outcomes[:2] == [True, True] and not all(outcomes)
    assert caplog.text.count("scored rows not recorded") == 1
    assert writer.flush(30)
