"""The Streamlit app under AppTest, against a real MLflow registry holding a trained model.

AppTest runs the real pages (app/Home.py and app/views/*) in-process. It cannot upload a file,
so the batch page is driven through its paste box, which feeds the same bytes to the same
`score_csv` as an upload; the upload widget itself is exercised in test_app_browser.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from custseg.serving.model import features_frame
from custseg.tracking import configure_mlflow
from tests.fixtures.app import segment_map_traces
from tests.fixtures.project import write_params

BATCH_PAGE = "views/batch.py"

# The app fixtures (served_project, pipeline, ...) until tests/conftest.py lists this module.


APP = Path(__file__).resolve().parents[1] / "app" / "Home.py"


def start_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def predict(at: AppTest, income: int, spending: int) -> AppTest:
    at.slider(key="income").set_value(income)
    at.slider(key="spending").set_value(spending)
    at.button(key="predict").click().run()
    assert not at.exception, at.exception
    return at


def expected_segment(model, income: float, spending: float) -> int:
    return int(model.predict(features_frame(income, spending))[0])


def all_text(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("error", "info", "markdown", "caption", "code", "text", "warning")
        for e in at.get(kind)
    ]
    return "\n".join(str(p) for p in parts)


def test_page_layout_before_any_prediction(served_project: Path) -> None:
    at = start_app()
    assert at.title[0].value.endswith("Which segment is this customer in?")
    income, spending = at.slider(key="income"), at.slider(key="spending")
    assert (income.label, income.min, income.max, income.value, income.step) == (
        "Annual Income (k$)", 15, 140, 60, 1
    )  # fmt: skip
    assert (spending.label, spending.min, spending.max, spending.value, spending.step) == (
        "Spending Score (1-100)", 1, 100, 50, 1
    )  # fmt: skip
    assert at.button(key="predict").label == "Predict Customer Cluster"
    assert not at.metric  # nothing predicted until the button is clicked
    assert "click **Predict Customer Cluster**" in at.info[0].value
    assert segment_map_traces(at), "the segment map is missing"
    assert "customer-segments` v1 · @champion" in all_text(at)
    data_sha = hashlib.sha256((served_project / "data/customers.csv").read_bytes()).hexdigest()
    # The sandbox is not a git checkout: the commit is unknown, said so.
    assert f"data {data_sha[:12]} (200 rows) · commit unknown" in all_text(at)


@pytest.mark.parametrize(("income", "spending"), [(120, 15), (20, 90), (60, 50), (140, 100)])
def test_prediction_equals_the_registered_model(
    served_project: Path, income: int, spending: int, registered_model_loader
) -> None:
    model = registered_model_loader()
    at = predict(start_app(), income, spending)
    segment = expected_segment(model, income, spending)
    metric = at.metric[0]
    assert metric.value == f"Cluster {segment}"
    assert metric.delta == f"out of {model.n_clusters} clusters"
    assert segment_map_traces(at)[-1]["name"] == "this customer"
    # The segment's name and profile come from the run's segment_profiles.json table.
    client = configure_mlflow().MlflowClient()
    run_id = client.get_model_version_by_alias("customer-segments", "champion").run_id
    experiment_id = client.get_run(run_id).info.experiment_id
    table = client.load_table(experiment_id, "segment_profiles.json", run_ids=[run_id])
    row = table.set_index("segment").loc[segment]
    assert at.subheader[0].value == row["name"].capitalize()
    assert f"**{int(row['size']):,}** training customers" in all_text(at)


def star(at: AppTest) -> tuple[list, list]:
    """Where the map's star (its last trace: the customer predicted) is drawn."""
    trace = segment_map_traces(at)[-1]
    return trace["x"], trace["y"]


def test_the_sliders_sit_in_a_form_and_only_predict_uses_them(
    served_project: Path, registered_model_loader
) -> None:
    """Moving a slider is not sent to the server (AppTest honours forms as the browser does):
    a rerun meanwhile (another widget, say) keeps the last predicted customer; Predict sends
    the sliders' values."""
    model = registered_model_loader()
    at = predict(start_app(), 60, 50)
    assert at.slider(key="income").form_id == at.button(key="predict").form_id != ""
    for income, spending in [(25, 80), (130, 10)]:
        at.slider(key="income").set_value(income)
        at.slider(key="spending").set_value(spending).run()
        assert at.metric[0].value == f"Cluster {expected_segment(model, 60, 50)}"
        assert star(at) == ([60], [50])
        predict(at, income, spending)  # the values set again, with Predict this time
        assert at.metric[0].value == f"Cluster {expected_segment(model, income, spending)}"
        assert star(at) == ([income], [spending])
        predict(at, 60, 50)  # back to the first customer for the next round


def test_model_panel_links_the_run_when_the_ui_address_is_set(
    served_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_UI_URL", "http://127.0.0.1:5000/")
    at = start_app()
    buttons = at.get("link_button")
    assert len(buttons) == 1
    url = buttons[0].proto.url
    assert url.startswith("http://127.0.0.1:5000/#/experiments/") and "/runs/" in url


def test_no_registered_model_shows_the_command(project: Path) -> None:
    """A migrated but empty registry: guidance, no exception, no traceback."""
    at = start_app()
    assert not at.exception
    assert "No registered model 'customer-segments'" in at.error[0].value
    assert at.code[0].value == "make run"
    assert not at.slider  # the page stopped before its widgets


def test_no_registry_file_shows_the_command_and_creates_nothing(project: Path) -> None:
    (project / "mlflow.db").unlink()
    at = start_app()
    assert "No MLflow registry yet" in at.error[0].value and "`make run`" in at.error[0].value
    assert at.code[0].value == "make run"
    assert not (project / "mlflow.db").exists(), "the app must not create an empty registry"


def test_missing_alias_names_the_aliases_that_exist(
    served_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUSTSEG_MODEL_ALIAS", "gold")
    at = start_app()
    message = at.error[0].value
    assert "no version with alias @gold" in message
    assert "@candidate → v1" in message and "@champion → v1" in message
    # Choosing an alias that exists in the sidebar recovers without a restart.
    at.selectbox(key="model_alias").select("champion").run()
    assert not at.error and at.slider(key="income")


def test_a_newly_promoted_champion_is_served_without_restart(
    project: Path, pipeline, registered_model_loader
) -> None:
    pipeline(project)  # v1, k = 5
    at = predict(start_app(), 100, 20)
    assert at.metric[0].delta == "out of 5 clusters"

    # Retrain with k = 3, promoted by decision (a new k never passes the gate alone): v2.
    write_params(project, train={"n_clusters": 3}, export={"force": True})
    pipeline(project)
    v2 = registered_model_loader()
    assert v2.n_clusters == 3

    at.run()  # the same session: the next rerun resolves the alias again
    assert at.metric[0].delta == "out of 3 clusters"
    assert at.metric[0].value == f"Cluster {expected_segment(v2, 100, 20)}"
    assert "v2 · @champion" in all_text(at)
    # The sidebar's alias box shows the version the panel serves (one registry answer per run).
    box = at.selectbox(key="model_alias")
    assert box.format_func(box.value) == "@champion → v2"


def test_the_customer_survives_leaving_the_page(served_project: Path, registered_model_loader):
    model = registered_model_loader()
    at = predict(start_app(), 100, 20)
    at.switch_page(BATCH_PAGE).run()
    at.switch_page("views/segment.py").run()
    assert not at.exception, at.exception
    assert (at.slider(key="income").value, at.slider(key="spending").value) == (100, 20)
    assert at.metric[0].value == f"Cluster {expected_segment(model, 100, 20)}"


def test_missing_model_files_are_explained_and_the_workspace_data_is_not_needed(
    project: Path, pipeline
) -> None:
    pipeline(project)
    (project / "mlruns").rename(project / "mlruns-away")
    at = start_app()
    assert "Cannot load models:/customer-segments/1 (@champion)" in at.error[0].value
    assert "`make run`" in at.error[0].value

    (project / "mlruns-away").rename(project / "mlruns")
    (project / "data" / "customers.csv").unlink()
    at.run()  # recovers without a restart; the map is the model's own data, not the workspace's
    assert not at.error and not at.exception and not at.warning
    predict(at, 50, 50)
    assert at.metric[0].value.startswith("Cluster ") and segment_map_traces(at)
    customers = segment_map_traces(at)[:-2]
    assert customers, "the training customers are still drawn (centres and star are the last two)"


# --- the batch page -----------------------------------------------------------------------


def batch_page(at: AppTest, csv_text: str) -> AppTest:
    at.switch_page(BATCH_PAGE).run()
    at.text_area(key="batch_text").input(csv_text).run()
    assert not at.exception, at.exception
    return at


def test_batch_page_scores_a_csv(served_project: Path, registered_model_loader) -> None:
    model = registered_model_loader()
    rows = [(15, 1), (140, 100), (60.5, 50), (90, 12)]
    text = "id,Annual Income (k$),Spending Score (1-100)\n" + "".join(
        f"c{i},{inc},{sp}\n" for i, (inc, sp) in enumerate(rows)
    )
    at = batch_page(start_app(), text)
    assert "Scored 4 customers with `customer-segments` v1" in at.success[0].value
    shown = all_text(at)
    assert "File: the pasted text" in shown
    # 15 k$ and 140 k$ lie outside the simulated customers' incomes: said, not hidden.
    assert "2 customer(s) lie outside the training data (annual_income " in shown
    expected = model.predict(features_frame([r[0] for r in rows], [r[1] for r in rows]))
    counts = at.dataframe[0].value
    assert (
        counts["customers"].tolist() == np.bincount(expected, minlength=model.n_clusters).tolist()
    )
    preview = at.dataframe[1].value
    assert preview["segment"].tolist() == expected.tolist()
    assert preview["id"].tolist() == ["c0", "c1", "c2", "c3"]  # the user's columns are kept
    assert at.get("download_button") and at.get("plotly_chart")


def test_batch_page_rejects_a_malformed_csv_with_line_numbers(served_project: Path) -> None:
    text = "annual_income,spending_score\n60,50\nabc,40\n70,\n200,50\n"
    at = batch_page(start_app(), text)
    assert "This file cannot be scored" in at.error[0].value
    problems = all_text(at)
    assert "the pasted text\n- " in problems
    assert "'annual_income': 1 missing or non-numeric value(s) at line(s) 3 (first: 'abc')" in (
        problems
    )
    assert "'spending_score': 1 missing or non-numeric value(s) at line(s) 4" in problems
    assert "'annual_income': 1 value(s) outside 15–140 at line(s) 5 (first: 200)" in problems
    assert not at.get("download_button")


def test_batch_page_shows_hostile_headers_as_text(served_project: Path) -> None:
    at = batch_page(
        start_app(), "[click](http://203.0.113.9/x),![t](http://203.0.113.9/t.png)\n1,2\n"
    )
    assert "'[click](http://203.0.113.9/x)'" in "\n".join(t.value for t in at.text)
    assert not any("203.0.113.9" in m.value for m in at.markdown), "never rendered as Markdown"


def test_segment_page_warns_outside_the_training_data(served_project: Path) -> None:
    at = predict(start_app(), 140, 50)  # the simulated incomes stop well below 140 k$
    assert any("outside the training data" in w.value for w in at.warning)
    at = predict(at, 60, 50)
    assert not at.warning


def test_batch_page_names_missing_columns(served_project: Path) -> None:
    at = batch_page(start_app(), "income,score\n1,2\n")
    assert "missing column 'annual_income' (or 'Annual Income (k$)')" in all_text(at)
