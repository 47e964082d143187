"""The model carries its own data (issue #32): train logs the data's identity, ranges and a seeded
map sample with the version, and every view reads them from the version it serves, never from
the workspace's data/customers.csv. The views run under AppTest against a real sqlite registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custseg.features import FEATURES, INCOME, SPENDING
from custseg.pipeline.training_data import (
    ARTIFACT_DIR,
    MAX_SAMPLE_ROWS,
    SAMPLE_FILE,
    SUMMARY_FILE,
    describe_ranges,
    map_sample,
    training_ranges,
    training_summary,
    write_training_data,
)
from custseg.serving.charts import MAP_POINTS_PER_SEGMENT, thin_per_segment
from custseg.serving.model import features_frame
from custseg.serving.training_data import TrainingData, parse_training_data
from custseg.testing.rest import post, running_scoring_server
from custseg.tracking import configure_mlflow
from tests.fixtures.app import segment_map_traces
from tests.fixtures.project import stage, write_params
from tests.test_app import all_text, batch_page, predict, start_app

SHA = "ab" * 32


def customers_frame(incomes: list[float], spendings: list[float], prefix: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"{prefix}{i}" for i in range(len(incomes))],
            INCOME: incomes,
            SPENDING: spendings,
        }
    )


# --- the pure parts -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300),
    max_rows=st.integers(1, 120),
    seed=st.integers(0, 2**31 - 1),
    with_ids=st.booleans(),
)
def test_the_map_sample_is_bounded_seeded_and_drawn_from_the_data(
    n: int, max_rows: int, seed: int, with_ids: bool
) -> None:
    rng = np.random.default_rng(n)
    frame = customers_frame(list(rng.integers(15, 141, n)), list(rng.integers(1, 101, n)), "c")
    if not with_ids:
        frame = frame.drop(columns="customer_id")
    sample = map_sample(frame, max_rows, seed)
    assert len(sample) == min(n, max_rows)
    assert sample.equals(map_sample(frame, max_rows, seed)), "the same seed, the same sample"
    assert all(sample[f].dtype == float for f in FEATURES)
    assert ("customer_id" in sample) == with_ids
    if with_ids and n:  # rows of the data, in the data's order
        positions = [int(i[1:]) for i in sample["customer_id"]]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert sample[FEATURES].to_numpy().tolist() == (
            frame.iloc[positions][FEATURES].astype(float).to_numpy().tolist()
        )


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.tuples(st.floats(15, 140), st.floats(1, 100)), min_size=1, max_size=50),
    path=st.text(max_size=300),
)
def test_what_train_writes_reads_back_the_same(tmp_path_factory, rows, path: str) -> None:
    frame = customers_frame([r[0] for r in rows], [r[1] for r in rows], "c")
    ranges = training_ranges(frame)
    assert all(
        low <= frame[f].min() and frame[f].max() <= high for f, (low, high) in ranges.items()
    )
    sample = map_sample(frame, MAX_SAMPLE_ROWS, 7)
    summary = training_summary(
        {"path": path, "rows": len(frame), "sha256": SHA}, None, ranges, len(sample), 7
    )
    folder = write_training_data(tmp_path_factory.mktemp("td") / ARTIFACT_DIR, summary, sample)
    read = parse_training_data(
        "3", json.loads((folder / SUMMARY_FILE).read_text()), pd.read_parquet(folder / SAMPLE_FILE)
    )
    assert read.recorded and read.ranges == ranges and read.sha256 == SHA
    assert (read.path, read.rows, read.version) == (path, len(frame), "3")
    assert read.sample.equals(sample)
    # The path is the user's text: one code span, no backtick or line break of its own, bounded.
    shown = read.describe()
    if path:
        span = shown.split("`")[1]
        assert shown.count("`") == 2 and "\n" not in span and len(span) <= 120
    assert f"{len(frame):,} customers" in shown and SHA[:12] in shown


@pytest.mark.parametrize(
    ("summary", "problem"),
    [
        ({}, "no data"),
        ({"data": {"path": "x"}, "ranges": {}}, "no range for annual_income"),
        (
            {"data": {}, "ranges": {INCOME: [50, 20], SPENDING: [1, 100]}},
            "bad range for annual_income",
        ),
        (
            {"data": {}, "ranges": {INCOME: [20, 50], SPENDING: [1, float("nan")]}},
            "bad range for spending_score",
        ),
        ({"data": {}, "ranges": [1, 2]}, "ranges is not an object"),
    ],
)
def test_a_malformed_summary_is_refused(summary: dict, problem: str) -> None:
    sample = customers_frame([20.0], [50.0], "c")
    with pytest.raises(ValueError, match=problem):
        parse_training_data("1", summary, sample)


def test_not_recorded_says_so_in_one_line() -> None:
    missing = TrainingData("7")
    assert not missing.recorded and missing.sample.empty
    assert "\n" not in missing.not_recorded()
    assert missing.not_recorded().startswith("Ranges not recorded for version 7")


def test_train_logs_the_datas_identity_ranges_and_a_bounded_seeded_sample(project: Path) -> None:
    """Over 5,000 customers: the sample is capped, and a rerun on the same data logs the same."""
    write_params(
        project,
        simulate={"n_customers": 6_000},
        train={
            "n_clusters": 2,
            "n_init": 1,
            "k_range": {"min": 2, "max": 3},
            "silhouette_sample": 500,
        },
    )
    assert stage("simulate").main([]) == 0
    data = pd.read_csv(project / "data/customers.csv")
    client = configure_mlflow().MlflowClient()
    logged = []
    for _ in range(2):
        assert stage("train").main([]) == 0
        run = json.loads((project / "models/train_run.json").read_text())
        folder = Path(client.download_artifacts(run["run_id"], ARTIFACT_DIR, str(project)))
        logged.append(
            (
                run,
                json.loads((folder / SUMMARY_FILE).read_text()),
                pd.read_parquet(folder / SAMPLE_FILE),
            )
        )
    (first, summary, sample), (second, again, sample_again) = logged
    assert first["run_id"] != second["run_id"] and summary == again and sample.equals(sample_again)
    assert len(sample) == MAX_SAMPLE_ROWS and summary["sample"]["rows"] == MAX_SAMPLE_ROWS
    assert sample["customer_id"].is_unique and set(sample["customer_id"]) <= set(
        data["customer_id"].astype(str)
    )
    lineage = first["lineage"]["data"]
    assert summary["data"] == {**lineage, "source": None}
    assert lineage["rows"] == 6_000 and lineage["path"] == "data/customers.csv"
    assert summary["ranges"] == {f: [data[f].min(), data[f].max()] for f in FEATURES}


@settings(max_examples=100, deadline=None)
@given(
    customers=st.lists(st.tuples(st.floats(15, 140), st.floats(1, 100)), min_size=1, max_size=40),
    low=st.floats(0, 100),
    width=st.floats(0, 100),
)
def test_rest_names_per_prediction_the_features_outside_the_versions_ranges(
    customers: list[tuple[float, float]], low: float, width: float
) -> None:
    from sklearn.cluster import KMeans

    from custseg.serving.invocations import score_body

    ranges = {INCOME: (low, low + width), SPENDING: (low / 2, low / 2 + width)}
    model = KMeans(2, n_init=1, random_state=0).fit(features_frame([20, 120], [10, 90]))
    records = [dict(zip(FEATURES, c, strict=True)) for c in customers]
    body = json.dumps({"dataframe_records": records})
    recorded = TrainingData("3", ranges=ranges)
    _, reply = score_body(model, "json", body.encode(), 2**20, training=recorded)
    assert reply["outside_training_data"] == [
        [f for f, v in zip(FEATURES, c, strict=True) if not ranges[f][0] <= v <= ranges[f][1]]
        for c in customers
    ]
    _, reply = score_body(model, "json", body.encode(), 2**20, training=TrainingData("3"))
    assert reply["outside_training_data"] is None, "not recorded: no note, not an empty one"
    _, reply = score_body(model, "json", body.encode(), 2**20)
    assert list(reply) == ["predictions"]


# --- every view reads the served version's data ---------------------------------------------


def map_points(at) -> set[tuple[float, float]]:
    """The customers the segment map draws (every trace but the centres and the star)."""
    points: set[tuple[float, float]] = set()
    for trace in segment_map_traces(at):
        if trace.get("name") in ("segment centers", "this customer"):
            continue
        xs, ys = (decoded(trace[axis]) for axis in ("x", "y"))
        points |= set(zip(xs, ys, strict=True))
    return points


def decoded(values) -> list[float]:
    """Plotly writes numpy arrays as base64 typed arrays."""
    if isinstance(values, dict):
        raw = base64.b64decode(values["bdata"])
        return np.frombuffer(raw, dtype=np.dtype(values["dtype"])).astype(float).tolist()
    return [float(v) for v in values]


def test_every_view_shows_the_served_versions_data_not_the_workspaces(
    project: Path, pipeline, registered_model_loader, tmp_path_factory
) -> None:
    # Train on 300 customers of a user's CSV (incomes 20-130) ...
    rng = np.random.default_rng(1)
    trained = customers_frame(
        list(np.round(rng.uniform(20, 130, 300), 1)), list(rng.integers(5, 96, 300)), "m"
    )
    trained.loc[0, [INCOME, SPENDING]] = [20.0, 5]  # the ranges' ends, exactly
    trained.loc[1, [INCOME, SPENDING]] = [130.0, 95]
    trained.to_csv(project / "mall.csv", index=False)
    columns = {"annual_income": INCOME, "spending_score": SPENDING, "customer_id": "customer_id"}
    write_params(
        project,
        simulate={"source": "mall.csv", "columns": columns},
        train={"n_clusters": 3, "n_init": 2},
    )
    pipeline(project)
    model = registered_model_loader()
    trained_sha = hashlib.sha256((project / "data/customers.csv").read_bytes()).hexdigest()
    trained_ranges = training_ranges(trained)

    # ... then the workspace's data changes: 150 other customers, incomes 40-60 only.
    workspace = customers_frame(list(rng.uniform(40, 60, 150)), list(rng.uniform(40, 60, 150)), "w")
    workspace.to_csv(project / "data/customers.csv", index=False)

    # The segment page: caption, map, range warnings.
    at = predict(start_app(), 25, 50)  # inside the model's data, outside the workspace's
    caption = at.caption[0].value
    assert "trained on 300 customers in `data/customers.csv` (from `mall.csv`)" in caption
    assert f"data {trained_sha[:12]}" in caption and "version 1" in caption
    expected = set(zip(trained[INCOME].astype(float), trained[SPENDING].astype(float), strict=True))
    assert map_points(at) == expected, "the map draws the model's training customers"
    assert not at.warning, "25 k$ lies inside the model's training data"
    at = predict(at, 135, 50)
    warning = at.warning[0].value
    assert "outside the training data" in warning and describe_ranges(trained_ranges) in warning
    assert "annual_income 20–130, spending_score 5–95" in warning
    assert "Ranges not recorded" not in all_text(at)

    # The batch page: its notes count against the model's ranges (the workspace's would say 2).
    text = "annual_income,spending_score\n25,50\n135,50\n50,50\n"
    at = batch_page(at, text)
    shown = all_text(at)
    assert (
        f"1 customer(s) lie outside the training data ({describe_ranges(trained_ranges)})" in shown
    )
    expected_segments = model.predict(features_frame([25, 135, 50], [50, 50, 50]))
    assert at.dataframe[1].value["segment"].tolist() == expected_segments.tolist()

    # REST scores with the version and notes against its ranges, whatever the workspace holds.
    log = tmp_path_factory.mktemp("rest") / "serve.log"
    customers = pd.concat([workspace[FEATURES], features_frame([25, 135, 50], [50, 50, 99])])
    with running_scoring_server(project, log) as url:
        body = json.dumps({"dataframe_records": customers.to_dict("records")})
        status, reply = post(url, body.encode())
        info = json.loads(post(url, b"", None, path="/info", method="GET")[1])
    assert status == 200
    scored = json.loads(reply)
    assert scored["predictions"] == model.predict(customers).tolist()
    # 25 k$ is inside the model's data (20-130), outside the workspace's (40-60); 135 and 99 not
    assert scored["outside_training_data"] == [[]] * 151 + [[INCOME], [SPENDING]]
    assert info["version"] == "1" and info["training_data"] == {
        "recorded": True,
        "path": "data/customers.csv",
        "source": "mall.csv",
        "rows": 300,
        "sha256": trained_sha,
        "ranges": {f: list(trained_ranges[f]) for f in FEATURES},
        "sample_rows": 300,
    }
    assert "version 1 was trained on 300 customers in data/customers.csv" in log.read_text()


@given(
    st.lists(st.integers(0, 4), max_size=400),
    st.integers(1, 50),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_thinning_keeps_at_most_the_cap_of_each_segment_and_repeats(
    segments: list[int], cap: int, seed: int
) -> None:
    kept = thin_per_segment(np.array(segments, dtype=int), cap, seed)
    assert np.array_equal(kept, thin_per_segment(np.array(segments, dtype=int), cap, seed))
    assert list(kept) == sorted(set(kept)), "row positions, each once, in row order"
    drawn = np.array(segments, dtype=int)[kept]
    for segment in set(segments):
        assert (drawn == segment).sum() == min(cap, segments.count(segment)), segment


def map_traces(at) -> dict[str, int]:
    """Points drawn per segment trace of the segment map."""
    return {
        t["name"]: len(decoded(t["x"]))
        for t in segment_map_traces(at)
        if t.get("name") not in ("segment centers", "this customer")
    }


def test_the_map_draws_at_most_its_cap_a_segment_of_the_served_versions_customers(
    project: Path, pipeline
) -> None:
    """A version trained on 900 customers in 2 segments: 300 of each on the map, all of them
    the version's own customers, none of the workspace's, and the caption says so."""
    rng = np.random.default_rng(2)
    incomes = [*rng.uniform(20, 40, 450), *rng.uniform(100, 130, 450)]
    trained = customers_frame(list(np.round(incomes, 1)), list(rng.integers(5, 96, 900)), "m")
    trained.to_csv(project / "mall.csv", index=False)
    columns = {"annual_income": INCOME, "spending_score": SPENDING, "customer_id": "customer_id"}
    write_params(
        project,
        simulate={"source": "mall.csv", "columns": columns},
        train={"n_clusters": 2, "n_init": 2},
    )
    pipeline(project)
    workspace = customers_frame(list(rng.uniform(60, 80, 100)), list(rng.uniform(1, 99, 100)), "w")
    workspace.to_csv(project / "data/customers.csv", index=False)

    at = predict(start_app(), 70, 50)
    assert sorted(map_traces(at).values()) == [MAP_POINTS_PER_SEGMENT] * 2
    expected = set(zip(trained[INCOME].astype(float), trained[SPENDING].astype(float), strict=True))
    assert map_points(at) <= expected, "only the served version's training customers"
    assert len(map_points(at)) > MAP_POINTS_PER_SEGMENT, "both segments are drawn"
    assert (
        f"600 of the 900 training customers are shown: at most {MAP_POINTS_PER_SEGMENT} a "
        "segment" in all_text(at)
    )


def test_a_version_without_its_data_degrades_to_the_centres_in_one_line(project: Path) -> None:
    """A version registered before train logged its data: no crash; centres only, said once."""
    from sklearn.cluster import KMeans

    X = features_frame([20, 25, 120, 125], [80, 90, 10, 20])
    mlflow = configure_mlflow("older")
    with mlflow.start_run():
        mlflow.log_param("k", 2)
        model = KMeans(2, n_init=1, random_state=0).fit(X)
        # Explicit requirements: inferring them costs ~5 s.
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    version = mlflow.register_model(info.model_uri, "customer-segments").version
    mlflow.MlflowClient().set_registered_model_alias("customer-segments", "champion", version)
    (project / "data").mkdir(exist_ok=True)  # a workspace CSV that must not be drawn
    customers_frame([50.0, 60.0], [50.0, 60.0], "w").to_csv(project / "data/customers.csv")

    at = predict(start_app(), 140, 100)  # far outside anything: no range to warn with
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"Ranges not recorded for version {version} "
    )
    assert "centres only" in warnings[0] and "\n" not in warnings[0]
    assert map_points(at) == set(), "only the centres (and the customer) are drawn"
    assert "training data not recorded for version" in at.caption[0].value

    at = batch_page(at, "annual_income,spending_score\n140,100\n")
    shown = all_text(at)
    assert f"Ranges not recorded for version {version} " in shown
    assert "lie outside" not in shown and at.dataframe[1].value["segment"].tolist() in ([0], [1])


SERVING_CODE = [
    "app",
    "custseg/serving",
    "custseg/agents",
    "custseg/evaluation",
    "custseg/monitoring",
]
WORKSPACE_DATA = {"CUSTOMERS", "CUSTOMERS_PARQUET", "customers_path", "read_training_data"}


def test_no_view_agent_or_eval_names_the_workspace_data() -> None:
    """What serves (app, REST, batch, agents, eval, monitoring) reads the served version's data
    only: none of it names the workspace's customers file or the pipeline's reader of it."""
    import ast

    root = Path(__file__).resolve().parents[1]
    found = []
    for folder in SERVING_CODE:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                and node.body
                and isinstance(node.body[0], ast.Expr)
            }
            for node in ast.walk(tree):
                name = getattr(node, "id", None) or getattr(node, "attr", None)
                if isinstance(node, ast.alias):
                    name = node.name
                text = node.value if isinstance(node, ast.Constant) else None
                if name in WORKSPACE_DATA or (
                    isinstance(text, str)
                    and id(node) not in docstrings
                    and "data/customers." in text
                ):
                    found.append(f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}")
    assert not found, f"the workspace's data is read by {found}"
