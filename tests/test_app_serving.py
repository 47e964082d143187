"""custseg.serving (model, batch, charts) without Streamlit: batch validation and scoring, model
resolution against a real registry, and the figures."""

from __future__ import annotations

import gc
import gzip
import hashlib
import io
import json
import os
import pickle
import re
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from custseg.errors import BatchError, InvalidInput, ModelNotFoundError
from custseg.pipeline.training_data import training_ranges
from custseg.serving.batch import (
    score_batch,
    score_csv,
    segment_counts,
    validate_batch,
)
from custseg.serving.charts import (
    customer_star,
    segment_counts_figure,
    segment_map_spec,
)
from custseg.serving.download import frame_to_csv_bytes, neutralise_cell
from custseg.serving.map_component import PLOTLY_JS, component_dir, map_parts, render_args
from custseg.serving.model import (
    Lineage,
    describe_run,
    features_frame,
    list_aliases,
    load_model,
    load_segment_profiles,
    mlflow_run_url,
    predict_segment,
    registry_stamp,
    resolve_model,
    segment_labels,
)
from custseg.serving.upload import parse_batch_csv
from custseg.serving.validation import PLAIN_NUMBER

LABELS = [f"{i} · name" for i in range(3)]
LINEAGE_TAGS = ["data.sha256", "data.rows", "git.commit", "git.dirty"]

# The app fixtures (served_project, ...) until tests/conftest.py lists this module.


@pytest.fixture(scope="module")
def kmeans() -> KMeans:
    """A small real KMeans fitted like the train stage's (float features, named columns)."""
    rng = np.random.default_rng(0)
    X = features_frame(rng.uniform(15, 140, 300), rng.uniform(1, 100, 300))
    return KMeans(n_clusters=3, n_init=3, random_state=0).fit(X)


def problems(data: bytes, **limits: int) -> list[str]:
    with pytest.raises(BatchError) as caught:
        validate_batch(parse_batch_csv(data, **limits))
    return caught.value.problems


# --- parsing and validation ---------------------------------------------------------------


def test_our_headers_and_the_mall_headers_are_accepted() -> None:
    ours = validate_batch(parse_batch_csv(b"annual_income,spending_score\n60,50\n"))
    mall = parse_batch_csv(
        "\ufeffCustomerID,Gender,Age, Annual Income (k$) ,Spending Score (1-100)\n"
        "1,Male,19,15,39\n2,Female,21,15.5,81\n".encode()
    )
    assert ours.to_numpy().tolist() == [[60.0, 50.0]]
    assert validate_batch(mall).to_numpy().tolist() == [[15.0, 39.0], [15.5, 81.0]]
    assert list(validate_batch(mall).columns) == ["annual_income", "spending_score"]


def test_missing_and_ambiguous_columns() -> None:
    [message] = problems(b"income,spending_score\n60,50\n")
    assert message.startswith("missing column 'annual_income' (or 'Annual Income (k$)')")
    assert "'income', 'spending_score'" in message
    [message] = problems(b"annual_income,Annual Income (k$),spending_score\n1,2,3\n")
    assert "all look like 'annual_income'" in message


def test_non_numeric_and_out_of_range_values_name_their_lines() -> None:
    rows = ["60,50"] * 3 + ["x,50", "60,", "inf,50", "14.9,50", "60,101", "60,0"]
    found = problems(("annual_income,spending_score\n" + "\n".join(rows) + "\n").encode())
    assert found == [
        "'annual_income': 2 missing or non-numeric value(s) at line(s) 5, 7 (first: 'x')",
        "'annual_income': 1 value(s) outside 15–140 at line(s) 8 (first: 14.9)",
        "'spending_score': 1 missing or non-numeric value(s) at line(s) 6 (first: empty)",
        "'spending_score': 2 value(s) outside 1–100 at line(s) 9, 10 (first: 101)",
    ]


def test_only_the_first_few_lines_are_listed() -> None:
    text = "annual_income,spending_score\n" + "oops,50\n" * 8
    [message] = problems(text.encode())
    assert "8 missing or non-numeric value(s) at line(s) 2, 3, 4, 5, 6 … (first: 'oops')" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "the file is empty"),
        (b"  \n", "the file is empty"),
        (b"annual_income,spending_score\n", "the file has a header but no data rows"),
        (b"annual_income,spending_score\n1,2\n3,4,5,6\n", "not a well-formed CSV"),
        (pickle.dumps({"annual_income": 1}), "this is a binary file, not CSV text"),
    ],
)
def test_unusable_files(data: bytes, expected: str) -> None:
    with pytest.raises(BatchError) as caught:
        parse_batch_csv(data)
    assert caught.value.problems[0].startswith(expected)


def test_a_pickle_is_never_unpickled(tmp_path: Path) -> None:
    """A pickle whose loading would write a file: parsing it must not have that effect."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = pickle.dumps(Exploit(), protocol=0)  # protocol 0 has no NUL byte up front
    with pytest.raises(BatchError):
        score_csv(payload, None, LABELS)
    assert not marker.exists()


def test_row_and_size_limits() -> None:
    data = b"annual_income,spending_score\n" + b"60,50\n" * 11
    assert problems(data, max_rows=10) == ["more than 10 rows; split the file"]
    assert len(parse_batch_csv(data, max_rows=11)) == 11
    [message] = problems(data, max_bytes=50)
    assert message.startswith("the file is 0.0 MB; the limit is")


# --- scoring ------------------------------------------------------------------------------


def test_scores_equal_model_predict_and_rows_keep_their_order(kmeans: KMeans) -> None:
    rng = np.random.default_rng(1)
    income, spending = rng.integers(15, 141, 500), rng.integers(1, 101, 500)
    frame = pd.DataFrame({"id": range(500), "annual_income": income, "spending_score": spending})
    result = score_csv(frame.to_csv(index=False).encode(), kmeans, LABELS)
    expected = kmeans.predict(features_frame(income, spending))
    assert result.scored["segment"].tolist() == expected.tolist()
    assert result.scored["id"].tolist() == [str(i) for i in range(500)]  # as uploaded: text
    assert result.scored["segment_name"].tolist() == [LABELS[s] for s in expected]
    assert result.counts["customers"].tolist() == np.bincount(expected, minlength=3).tolist()
    assert result.counts["share"].sum() == pytest.approx(1.0)
    # The download is the user's rows plus the two new columns, as CSV text.
    downloaded = pd.read_csv(io.BytesIO(result.to_csv_bytes()))
    assert list(downloaded.columns) == [
        "id",
        "annual_income",
        "spending_score",
        "segment",
        "segment_name",
    ]
    assert downloaded["segment"].tolist() == expected.tolist()


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({"id": ["a", "b,c", 'd"e', None], "x": [1.5, np.nan, 3.0, 1e-7]}),
        pd.DataFrame({"weird, name": [1, 2], "mixed": [1, "two"]}),  # Arrow cannot type it
        pd.DataFrame({"cat": pd.Categorical.from_codes([1, 0], ["0 · a", "1 · b"])}),
    ],
)
def test_csv_export_reads_back_like_pandas_output(frame: pd.DataFrame) -> None:
    ours = frame_to_csv_bytes(frame)
    theirs = frame.to_csv(index=False, lineterminator="\n").encode()
    assert ours.split(b"\n", 1)[0] == theirs.split(b"\n", 1)[0]  # the same header line
    pd.testing.assert_frame_equal(
        pd.read_csv(io.BytesIO(ours)), pd.read_csv(io.BytesIO(theirs)), check_exact=True
    )


def test_score_batch_leaves_the_input_untouched(kmeans: KMeans) -> None:
    original = pd.DataFrame({"annual_income": [20.0, 130.0], "spending_score": [90.0, 5.0]})
    scored = score_batch(kmeans, validate_batch(original), original, LABELS)
    assert list(original.columns) == ["annual_income", "spending_score"]
    assert scored["segment"].tolist() == kmeans.predict(original).tolist()


def test_counts_list_every_segment_even_empty_ones() -> None:
    counts = segment_counts(np.array([2, 2, 0]), LABELS)
    assert counts["customers"].tolist() == [1, 0, 2]
    assert counts["name"].tolist() == LABELS


def test_predict_segment_is_model_predict(kmeans: KMeans) -> None:
    for income, spending in [(15, 1), (140, 100), (60, 50)]:
        assert predict_segment(kmeans, income, spending) == int(
            kmeans.predict(features_frame(income, spending))[0]
        )
    # The app's customer passes the rules batch and REST use (its sliders cannot leave them).
    with pytest.raises(InvalidInput) as caught:
        predict_segment(kmeans, -5, np.inf)
    assert caught.value.problems == [
        "'annual_income': 1 value(s) outside 15–140 at row(s) 0 (first: -5)",
        "'spending_score': 1 missing or non-numeric value(s) at row(s) 0 (first: inf)",
    ]


def test_labels_are_unique_even_when_names_repeat() -> None:
    profile = pd.DataFrame({"segment": [0, 1], "name": ["same", "same"]})
    assert segment_labels(profile) == ["0 · same", "1 · same"]


@given(st.dictionaries(st.sampled_from(LINEAGE_TAGS), st.text(max_size=80)))
def test_lineage_shows_only_digests_and_numbers(tags: dict[str, str]) -> None:
    lineage = Lineage.from_tags(tags)
    if lineage is None:
        return
    shown = lineage.describe()
    assert re.fullmatch(r"data [0-9a-f]{7,12} \((\?|[\d,]+) rows\) · commit .*", shown)
    commit = shown.split(" · commit ", 1)[1]
    assert re.fullmatch(r"unknown|[0-9a-f]{7}( \(uncommitted changes\))?", commit)


def test_lineage_from_train_tags() -> None:
    tags = {"data.sha256": "ab" * 32, "data.rows": "1200", "git.commit": "c" * 40}
    lineage = Lineage.from_tags({**tags, "git.dirty": "true"})
    assert (
        lineage.describe() == f"data {'ab' * 6} (1,200 rows) · commit ccccccc (uncommitted changes)"
    )
    assert Lineage.from_tags({}) is None
    assert Lineage.from_tags({"data.sha256": "[x](http://a)"}) is None


def test_mlflow_run_url() -> None:
    assert mlflow_run_url(None, "1", "abc") is None
    assert mlflow_run_url("  ", "1", "abc") is None
    assert mlflow_run_url("http://127.0.0.1:5000/", "1", "abc") == (
        "http://127.0.0.1:5000/#/experiments/1/runs/abc"
    )


# --- the registry -------------------------------------------------------------------------


def test_resolve_and_load_the_champion(served_project: Path, registered_model_loader) -> None:
    ref = resolve_model("customer-segments", "champion")
    assert (ref.version, ref.uri) == ("1", "models:/customer-segments/1")
    assert list_aliases("customer-segments") == {"candidate": "1", "champion": "1"}
    model = load_model(ref)
    reference = registered_model_loader()
    X = features_frame([20, 80, 130], [90, 50, 10])
    assert model.predict(X).tolist() == reference.predict(X).tolist()

    run = describe_run(ref.run_id)
    assert run.k == model.n_clusters == 5
    assert 0 < run.silhouette < 1 and run.trained_at is not None
    data = (served_project / "data/customers.csv").read_bytes()
    assert run.lineage == Lineage(hashlib.sha256(data).hexdigest(), 200, None, None)
    profile = load_segment_profiles(run, model.n_clusters)
    assert profile["segment"].tolist() == [0, 1, 2, 3, 4]
    assert all(" income · " in name for name in profile["name"])
    assert profile["size"].sum() == 200


def test_a_run_without_profiles_gets_generic_names(served_project: Path) -> None:
    from custseg.tracking import configure_mlflow

    client = configure_mlflow().MlflowClient()
    ref = resolve_model("customer-segments", "champion")
    parent = client.get_run(ref.run_id)
    [nested] = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{ref.run_id}' and params.k = '3'",
    )
    profile = load_segment_profiles(describe_run(nested.info.run_id), 3)
    assert profile["name"].tolist() == ["segment 0", "segment 1", "segment 2"]
    assert profile["size"].isna().all()


def test_missing_model_and_alias_errors(served_project: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"No registered model 'other'.*`make run`"):
        resolve_model("other", "champion")
    with pytest.raises(ModelNotFoundError, match=r"no version with alias @gold"):
        resolve_model("customer-segments", "gold")
    assert list_aliases("other") == {}


# --- figures ------------------------------------------------------------------------------


def drawn(spec: dict, point: tuple[float, float] | None, segment: int | None) -> go.Figure:
    """The figure the map component draws: its JSON parts decoded as the browser does."""
    star = None if point is None else customer_star(point, segment, LABELS).to_plotly_json()
    args = json.loads(json.dumps(render_args(map_parts(spec), star)))  # as Streamlit sends them
    extra = [json.loads(args["star"])] if args["star"] is not None else []
    data = json.loads(args["base"])["data"] + extra
    return go.Figure({"data": data, "layout": json.loads(args["layout"])})


def test_segment_map_traces(kmeans: KMeans) -> None:
    customers = features_frame([20, 130, 60], [90, 5, 50])
    customers.insert(0, "customer_id", [7, 8, 9])
    segments = kmeans.predict(customers[["annual_income", "spending_score"]])
    spec = segment_map_spec(customers, segments, kmeans.cluster_centers_, LABELS)
    fig = drawn(spec, (60, 50), 1)
    names = [trace.name for trace in fig.data]
    assert names[-2:] == ["segment centers", "this customer"]
    assert set(names[:-2]) == {LABELS[s] for s in segments}  # segment names in the legend
    centers, star = fig.data[-2], fig.data[-1]
    assert centers.marker.symbol == "x" and centers.marker.color == "black"
    assert star.marker.symbol == "star" and star.marker.color == "gold" and star.marker.size >= 20
    assert "1 · name" in star.hovertemplate
    assert all("customer %{customdata}" in t.hovertemplate for t in fig.data[:-2])


@settings(max_examples=30, deadline=None)  # ~40 ms an example: plotly validates the figure
@given(
    income=st.floats(-1e6, 1e6, allow_nan=False),
    spending=st.floats(-1e6, 1e6, allow_nan=False),
    segment=st.none() | st.integers(0, len(LABELS) - 1),
)
def test_the_component_draws_the_shared_map_and_the_star(
    kmeans: KMeans, income: float, spending: float, segment: int | None
) -> None:
    """The app shares one map spec between sessions and sends it as JSON with each customer's
    star: decoded, it is the spec's figure plus the star, and the spec stays as it was."""
    customers = features_frame([20, 130, 60], [90, 5, 50])
    spec = segment_map_spec(customers, kmeans.predict(customers), kmeans.cluster_centers_, LABELS)
    before = pickle.dumps(spec)
    figure = drawn(spec, (income, spending), segment)
    assert pickle.dumps(spec) == before
    expected = go.Figure(spec)
    expected.add_trace(customer_star((income, spending), segment, LABELS))
    assert figure.to_plotly_json() == json.loads(expected.to_json())
    assert list(figure.data[-1].x) == [income] and figure.data[-1].name == "this customer"
    # The shared traces' JSON (and so the browser's cached copy) does not depend on the star.
    assert map_parts(spec) == map_parts(pickle.loads(before))


def test_the_map_component_folder_holds_the_local_plotly(tmp_path: Path) -> None:
    """The component's page and the plotly package's own plotly.min.js, nothing fetched; made
    once, then reused."""
    folder = component_dir(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "plotly.min.js.gz"]
    assert gzip.decompress((folder / "plotly.min.js.gz").read_bytes()) == PLOTLY_JS.read_bytes()
    page = (folder / "index.html").read_text()
    assert 'fetch("plotly.min.js.gz")' in page and "http" not in page
    assert component_dir(tmp_path) == folder and len(list(tmp_path.iterdir())) == 1


def test_registry_stamp_follows_the_sqlite_file_and_the_clock(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    assert registry_stamp(uri, 3.0, 10.0) == (-1, 3)  # no file yet
    db.write_bytes(b"x")
    first = registry_stamp(uri, 3.0, 10.0)
    assert first[0] > 0 and registry_stamp(uri, 3.0, 11.9) == first  # same file, same window
    os.utime(db, ns=(first[0] + 1_000, first[0] + 1_000))  # any write moves the stamp
    assert registry_stamp(uri, 3.0, 10.0) != first
    # A server store cannot be watched: its answers live for one window at most.
    assert registry_stamp("http://127.0.0.1:5000", 3.0, 10.0) == (-1, 3)
    assert registry_stamp("http://127.0.0.1:5000", 3.0, 12.0) == (-1, 4)


def test_counts_figure() -> None:
    fig = segment_counts_figure(segment_counts(np.array([0, 1, 1]), LABELS))
    assert list(fig.data[0].y) == LABELS and list(fig.data[0].x) == [1, 2, 0]


# --- files people really have, and safe downloads ------------------------------------------

SAFE_START = ("=", "+", "-", "@", "\t", "\r")


@given(st.text(max_size=40))
def test_a_neutralised_cell_never_starts_a_formula(value: str) -> None:
    safe = neutralise_cell(value)
    assert safe in (value, "'" + value)
    if safe.startswith(SAFE_START):
        assert PLAIN_NUMBER.fullmatch(safe), "only plain numbers may keep a leading sign"


def test_a_download_does_not_keep_its_result_alive(kmeans: KMeans) -> None:
    result = score_csv(b"annual_income,spending_score\n60,50\n20,90\n", kmeans, LABELS)
    build, scored = result.csv_when_asked(), weakref.ref(result.scored)
    assert build() == result.to_csv_bytes()
    del result
    gc.collect()
    assert scored() is None, "the download callable kept the scored rows alive"
    with pytest.raises(BatchError, match="expired"):
        build()


def test_downloads_neutralise_text_and_keep_numbers(kmeans: KMeans) -> None:
    hostile = ['=HYPERLINK("http://x","y")', "=1+2", "@SUM(1+1)", "+SUM(A1:A2)", "\tx", "-12"]
    lines = "".join(f'"{h.replace(chr(34), chr(34) * 2)}",60,50\n' for h in hostile)
    result = score_csv(f"=name,annual_income,spending_score\n{lines}".encode(), kmeans, LABELS)
    table = pd.read_csv(io.BytesIO(result.to_csv_bytes()), dtype=str, keep_default_na=False)
    assert list(table.columns)[:3] == ["'=name", "annual_income", "spending_score"]
    assert table["'=name"].tolist() == ["'" + h for h in hostile[:-1]] + ["-12"]
    assert table["annual_income"].tolist() == ["60"] * len(hostile)
    assert result.scored["=name"].tolist() == hostile, "the page's own table is untouched"


def test_bytes_no_encoding_makes_numbers_name_the_line() -> None:
    # Not UTF-8: read as Windows-1252, where the bytes are letters, so the value is named.
    assert problems(b"annual_income,spending_score\n\xff\xfe60,50\n") == [
        "'annual_income': 1 missing or non-numeric value(s) at line(s) 2 (first: 'ÿþ60')"
    ]


def test_windows_1252_and_semicolon_files_are_read_and_said_so(kmeans: KMeans) -> None:
    text = "Kunde;Annual Income (k$);Spending Score (1-100)\nJosé Müller;60,5;50\nÅsa;70;20\n"
    result = score_csv(text.encode("cp1252"), kmeans, LABELS)
    assert result.scored["Kunde"].tolist() == ["José Müller", "Åsa"]
    assert result.scored["Annual Income (k$)"].tolist() == [60.5, 70.0]
    assert result.notes == ("Read as Windows-1252 text, ';' (decimal comma)-separated.",)
    tabs = score_csv(b"annual_income\tspending_score\n60\t50\n", kmeans, LABELS)
    assert tabs.notes == ("Read as tab-separated.",)
    assert score_csv(b"annual_income,spending_score\n60,50\n", kmeans, LABELS).notes == ()


def test_a_users_segment_column_is_kept_under_another_name(kmeans: KMeans) -> None:
    data = b"annual_income,spending_score,segment,input_segment\n60,50,gold,x\n"
    result = score_csv(data, kmeans, LABELS)
    assert result.scored["input_segment_2"].tolist() == ["gold"]
    assert result.scored["input_segment"].tolist() == ["x"]
    assert result.scored["segment"].tolist() == kmeans.predict(features_frame(60, 50)).tolist()
    assert result.notes == (
        "The file's own column 'segment' is kept as 'input_segment_2'; 'segment' is now the "
        "model's.",
    )


def test_customers_outside_the_training_data_are_counted(kmeans: KMeans) -> None:
    ranges = training_ranges(features_frame([28, 104], [1, 100]))
    data = b"annual_income,spending_score\n111,50\n60,50\n20,10\n"
    result = score_csv(data, kmeans, LABELS, ranges)
    assert result.notes == (
        "2 customer(s) lie outside the training data (annual_income 28–104, spending_score "
        "1–100): their segments are extrapolations.",
    )


def test_the_memory_thread_drops_what_is_unused_then_returns_free_memory() -> None:
    import threading

    from custseg.serving.memory import release_free_memory, resident_bytes, start_releasing

    dropped = threading.Event()
    thread = start_releasing(0.05, dropped.set)
    assert thread.daemon and dropped.wait(5), "the hook was not called"
    big = bytearray(200 * 2**20)  # 200 MiB touched, freed, handed back
    big[::4096] = b"x" * len(big[::4096])
    before = resident_bytes()
    del big
    assert release_free_memory(), "glibc's malloc_trim is what Debian (and CI) runs"
    assert resident_bytes() < before - 150 * 2**20
