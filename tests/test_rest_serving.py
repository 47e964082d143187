"""`custseg serve` (`make serve`): the REST scoring server on the registered champion, over HTTP.

The server runs as its own process (`custseg serve`), as a user starts it; generated requests,
good and hostile, go to it over real HTTP, and its answers are checked against the registered
model loaded here and against the rules every value must pass (BOUNDS, finite JSON numbers).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custseg.features import BOUNDS, FEATURES, INCOME, SPENDING
from custseg.net import free_port
from custseg.serving.model import features_frame
from custseg.serving.rest import DEFAULT_MAX_BODY_MB
from custseg.serving.validation import MAX_QUOTED_CHARS
from custseg.testing.rest import post, post_json, running_scoring_server
from custseg.testing.sandbox import project_env

MLFLOW_VERSION = version("mlflow")


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "serve.log"


@pytest.fixture(scope="module")
def server(trained_project: Path, server_log: Path) -> Iterator[str]:
    with running_scoring_server(trained_project, server_log) as url:
        yield url


@pytest.fixture(scope="module")
def trained_ranges(trained_project: Path) -> dict[str, tuple[float, float]]:
    """The served version's training ranges, read here from the data it was trained on."""
    import pandas as pd

    data = pd.read_csv(trained_project / "data/customers.csv")
    return {f: (float(data[f].min()), float(data[f].max())) for f in FEATURES}


def outside(customers, ranges: dict[str, tuple[float, float]]) -> list[list[str]]:
    """Per customer, the features outside the training ranges: what each prediction must say."""
    return [
        [f for f, value in zip(FEATURES, customer, strict=True)
         if not ranges[f][0] <= float(value) <= ranges[f][1]]
        for customer in customers
    ]  # fmt: skip


@pytest.fixture(scope="module")
def served_model(trained_project: Path):
    """The registered champion, loaded here (not through the server's code)."""
    from tests.fixtures.app import load_registered

    with pytest.MonkeyPatch.context() as patch:
        for key, value in project_env(trained_project).items():
            patch.setenv(key, value)
        return load_registered()


def test_it_scores_like_model_predict(server: str, registered_model) -> None:
    rng = np.random.default_rng(3)
    X = features_frame(rng.uniform(15, 140, 500), rng.uniform(1, 100, 500))
    body = json.dumps({"dataframe_split": X.to_dict(orient="split", index=False)}).encode()
    status, reply = post_json(server, body)
    assert status == 200, reply
    assert reply["predictions"] == registered_model.predict(X).tolist()
    one = {"dataframe_records": [{"annual_income": 60, "spending_score": 50}]}
    status, reply = post_json(server, json.dumps(one).encode())
    assert (status, reply["predictions"]) == (
        200,
        registered_model.predict(features_frame(60, 50)).tolist(),
    )


GOOD = b'{"dataframe_records": [{"annual_income": 60, "spending_score": 5}]}'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "Invalid input"),
        (b'{"dataframe_split": {"columns": ["age"], "data": [[1]]}}', "annual_income"),
        (b'{"dataframe_records": [{"annual_income": "lots", "spending_score": 5}]}', ""),
        (b"[]", ""),
    ],
    ids=["bad JSON", "wrong columns", "text for a number", "no payload key"],
)
def test_bad_requests_get_an_error_response(server: str, body: bytes, expected: str) -> None:
    status, reply = post_json(server, body)
    assert 400 <= status < 500, (status, reply)
    assert expected in json.dumps(reply)
    assert (
        post_json(server, b'{"dataframe_records": [{"annual_income": 60, "spending_score": 5}]}')[0]
        == 200
    ), "the server is still serving after a bad request"


@pytest.fixture
def registered_model(trained_project: Path, monkeypatch: pytest.MonkeyPatch):
    from tests.fixtures.app import load_registered

    for key, value in project_env(trained_project).items():
        monkeypatch.setenv(key, value)
    return load_registered()


def test_no_registered_model_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("base:\n  seed: 1\n")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none.db'}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "custseg", "serve", "--port", str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: No MLflow registry yet") and "`make run`" in line
    # A terminal has commands, not pages (issue #32).
    assert "rerun the command" in line and "page" not in line
    assert not (tmp_path / "none.db").exists(), "a missing store is not created"


# --- generated requests, good and hostile ---------------------------------------------------

MAX_REPLY_BYTES = 1_000  # an error is one short line, whatever was sent
FORMATS = ("dataframe_split", "dataframe_records")


def good_value(feature: str) -> st.SearchStrategy:
    low, high = BOUNDS[feature]
    return st.integers(int(low), int(high)) | st.floats(low, high)


HOSTILE_VALUES = (
    st.none()
    | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, -5, 0, 10**40, True])
    | st.floats()
    | st.integers(-(10**30), 10**30)
    | st.text(max_size=80)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=60),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=25,
)


def value_of(column: str) -> st.SearchStrategy:
    return (good_value(column) | HOSTILE_VALUES) if column in FEATURES else ANY_JSON


RECORD = st.fixed_dictionaries(
    {}, optional={INCOME: value_of(INCOME), SPENDING: value_of(SPENDING), "customer_id": ANY_JSON}
)


@st.composite
def split_payloads(draw: st.DrawFn) -> dict:
    columns = draw(st.lists(st.sampled_from([INCOME, SPENDING, "customer_id"]), max_size=4))
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        row = [draw(value_of(column)) for column in columns]
        if draw(st.integers(0, 9)) == 0:  # now and then a row of the wrong length
            row = row[1:] if row and draw(st.booleans()) else [*row, 1]
        rows.append(row)
    split = {"columns": columns, "data": rows}
    return {"dataframe_split": draw(st.sampled_from([split, split["data"], {"data": rows}]))}


PAYLOADS = st.one_of(
    split_payloads(),
    st.builds(lambda rows: {"dataframe_records": rows}, st.lists(RECORD | ANY_JSON, max_size=5)),
    st.dictionaries(st.sampled_from([*FORMATS, "inputs", "params"]), ANY_JSON, max_size=3),
    ANY_JSON,
)


def valid(feature: str, value: object) -> bool:
    """The rule, restated: a JSON number (not a boolean), finite, within the feature's bounds."""
    low, high = BOUNDS[feature]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return is_number and math.isfinite(value) and low <= value <= high


def customers_in(payload: object) -> list[tuple[object, object]] | None:
    """The (income, spending) values of a request of the right shape; None for any other."""
    if not isinstance(payload, dict) or len(payload) != 1:
        return None
    [(key, body)] = payload.items()
    if key == "dataframe_records":
        rows = body if isinstance(body, list) else []
        if not rows or not all(isinstance(r, dict) for r in rows):
            return None
        if all(any(feature in r for r in rows) for feature in FEATURES):  # a record may lack one
            return [(r.get(INCOME), r.get(SPENDING)) for r in rows]
        return None
    if key != "dataframe_split" or not isinstance(body, dict):
        return None
    columns, data = body.get("columns"), body.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        return None
    if columns.count(INCOME) != 1 or columns.count(SPENDING) != 1 or not isinstance(data, list):
        return None
    if not data or not all(isinstance(r, list) and len(r) == len(columns) for r in data):
        return None
    at = columns.index(INCOME), columns.index(SPENDING)
    return [(r[at[0]], r[at[1]]) for r in data]


def long_texts(value: object) -> list[str]:
    """Every string in a JSON value longer than a message may quote."""
    if isinstance(value, str):
        return [value] if len(value) > MAX_QUOTED_CHARS else []
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in long_texts(k) + long_texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in long_texts(v)]
    return []


def one_line_error(status: int, reply: bytes, statuses: set[int]) -> str:
    """The message of a JSON error reply that is one short line, with nothing of the server."""
    assert status in statuses, (status, reply[:300])
    assert len(reply) <= MAX_REPLY_BYTES, reply[:300]
    error = json.loads(reply)
    assert set(error) == {"error_code", "message"}, error
    message = error["message"]
    assert message and "\n" not in message, message
    for leak in ("Traceback", ".py", "site-packages", 'File "', "/tmp/", "/work/"):
        assert leak not in message, message
    return message


@settings(max_examples=200)
@given(payload=PAYLOADS)
def test_generated_requests_get_the_models_answer_or_a_one_line_error(
    server: str, served_model, trained_ranges, payload: object
) -> None:
    body = json.dumps(payload).encode()  # NaN and ±Infinity as Python's json writes them
    status, reply = post(server, body)
    customers = customers_in(payload)
    if customers is not None and all(valid(INCOME, i) and valid(SPENDING, s) for i, s in customers):
        assert status == 200, reply
        incomes, spendings = zip(*customers, strict=True)
        expected = served_model.predict(features_frame(incomes, spendings)).tolist()
        notes = outside(customers, trained_ranges)
        assert json.loads(reply) == {"predictions": expected, "outside_training_data": notes}
        return
    message = one_line_error(status, reply, {400})
    if customers is None:  # the shape is wrong: the message names where
        assert any(name in message for name in FORMATS), message
    else:  # the values are wrong: the message names each field that has a bad one
        for position, feature in enumerate(FEATURES):
            if not all(valid(feature, customer[position]) for customer in customers):
                assert repr(feature) in message, message
    for text in long_texts(payload):
        assert text[: MAX_QUOTED_CHARS + 1] not in message, "the body is never echoed"


@pytest.fixture(scope="module")
def small_model():
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=2, n_init=1, random_state=0).fit(features_frame([20, 120], [10, 90]))


@settings(max_examples=400)
@given(payload=PAYLOADS)
def test_the_scoring_core_answers_any_json_or_raises_a_request_error(
    small_model, payload: object
) -> None:
    """In process, many more shapes than over HTTP: nothing but a RequestError ever escapes."""
    from custseg.errors import RequestError
    from custseg.serving.invocations import score_body

    try:
        status, reply = score_body(small_model, "json", json.dumps(payload).encode(), 2**20)
    except RequestError as error:
        assert error.status == 400 and "\n" not in str(error)
    else:
        assert status == 200 and len(reply["predictions"]) == len(customers_in(payload))


@given(text=st.text(max_size=600), status=st.sampled_from([400, 404, 413]))
def test_an_error_reply_stays_small_whatever_the_characters(text: str, status: int) -> None:
    # Seen over HTTP: two values of 40 astral characters each made a 1,002-byte reply (JSON
    # writes each as two \\uXXXX escapes); the caps were in characters.
    from custseg.serving.invocations import MAX_MESSAGE_BYTES, capped, error_reply
    from custseg.serving.validation import MAX_QUOTED_BYTES, quoted

    shown = quoted(text)
    assert len(json.dumps(shown)) <= MAX_QUOTED_BYTES + len(json.dumps("…"))
    assert shown == repr(text) or shown.endswith("…'") or shown.endswith('…"')
    message = f"Invalid input: {quoted(text)}: bad; {quoted(text[::-1])}: bad; {text}"
    _, reply = error_reply(status, message)
    assert len(json.dumps(reply["message"])) <= MAX_MESSAGE_BYTES
    assert len(json.dumps(reply)) <= MAX_REPLY_BYTES
    line = " ".join(message.split())
    assert reply["message"] == line or reply["message"][:-1] == line[: len(reply["message"]) - 1]
    assert capped(line) == reply["message"]


@settings(max_examples=60)
@given(body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_bytes_that_are_not_a_request_get_a_one_line_error(server: str, body: bytes) -> None:
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if payload is not None and customers_in(payload) is not None:
        return  # a well-formed request: the test above covers those
    one_line_error(*post(server, body), {400})


@settings(max_examples=40)
@given(text=st.text(max_size=300))
def test_csv_bodies_are_scored_or_refused_in_one_line(server: str, text: str) -> None:
    status, reply = post(server, text.encode(), content_type="text/csv")
    if status != 200:
        assert "'annual_income'" in one_line_error(status, reply, {400}) or "CSV" in reply.decode()


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/xml", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=x", "application/json; charset=latin-1",
     "application/json; q=1", "text/csv; charset=utf-16", "application/jsonx", ""],
)  # fmt: skip
def test_other_content_types_get_415(server: str, content_type: str | None) -> None:
    message = one_line_error(*post(server, GOOD, content_type), {415})
    assert "application/json or text/csv" in message or "charset=utf-8" in message


def test_csv_and_charset_utf8_are_scored_like_json(
    server: str, served_model, trained_ranges
) -> None:
    expected = {
        "predictions": served_model.predict(features_frame([60, 20], [5, 90])).tolist(),
        "outside_training_data": outside([(60, 5), (20, 90)], trained_ranges),
    }
    csv_body = b"customer_id,annual_income,spending_score\n007,60,5\nx,20,90\n"
    for body, content_type in [
        (csv_body, "text/csv"),
        (csv_body, "text/csv; charset=UTF-8"),
        (json.dumps({"dataframe_records": [{INCOME: 60, SPENDING: 5}, {INCOME: 20, SPENDING: 90}]})
         .encode(), "application/json; charset=utf-8"),
    ]:  # fmt: skip
        status, reply = post(server, body, content_type)
        assert (status, json.loads(reply)) == (200, expected)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_body_size_limit(server: str, chunked: bool) -> None:
    """A body of exactly the limit is scored; one byte more is 413, declared or streamed."""
    limit = DEFAULT_MAX_BODY_MB * 2**20
    at_limit = GOOD + b" " * (limit - len(GOOD))  # JSON allows trailing blanks
    assert post(server, at_limit, chunked=chunked)[0] == 200
    message = one_line_error(*post(server, at_limit + b" ", chunked=chunked), {413})
    assert message == (
        f"the body is 10.0 MB; the limit is {DEFAULT_MAX_BODY_MB} MB (custseg serve --max-body-mb)"
    )
    huge = b"[" * (limit + 1)  # also never parsed
    assert post(server, huge, chunked=chunked)[0] == 413
    assert post(server, GOOD)[0] == 200, "the server is still serving"


def test_other_paths_and_methods_are_json_errors(server: str) -> None:
    assert post(server, b"", None, path="/ping", method="GET") == (200, b"\n")
    assert post(server, b"", None, path="/health", method="GET") == (200, b"\n")
    assert post(server, b"", None, path="/version", method="GET") == (200, MLFLOW_VERSION.encode())
    message = one_line_error(*post(server, b"", None, path="/invocations", method="GET"), {405})
    assert message == "GET /invocations: use POST"
    assert one_line_error(*post(server, GOOD, path="/info"), {405}) == "POST /info: use GET"
    message = one_line_error(*post(server, GOOD, path="/predict"), {404})
    assert message == "no such path: '/predict'"


def test_the_server_names_the_version_it_serves_and_logged_no_failure(
    server: str, server_log: Path
) -> None:
    assert post(server, GOOD)[0] == 200
    lines = server_log.read_text().splitlines()
    port = server.rsplit(":", 1)[1]
    assert (
        lines[0]
        == f"serving customer-segments v1 (@champion) at http://127.0.0.1:{port}/invocations"
    )
    assert lines[1] == f"model loaded; request bodies up to {DEFAULT_MAX_BODY_MB} MB"
    assert lines[2].startswith("version 1 was trained on 200 customers in data/customers.csv")
    # The hostile requests of the other tests were all answered: no failure was logged.
    assert "Traceback" not in server_log.read_text() and "ERROR" not in server_log.read_text()


def test_info_names_the_version_and_its_training_data(
    server: str, trained_project: Path, trained_ranges
) -> None:
    import hashlib

    status, reply = post(server, b"", None, path="/info", method="GET")
    assert status == 200
    info = json.loads(reply)
    data = (trained_project / "data/customers.csv").read_bytes()
    assert {k: info[k] for k in ("name", "alias", "version")} == {
        "name": "customer-segments", "alias": "champion", "version": "1",
    }  # fmt: skip
    assert (
        info["run_id"]
        == json.loads((trained_project / "models/model_info.json").read_text())["run_id"]
    )
    assert info["training_data"] == {
        "recorded": True,
        "path": "data/customers.csv",
        "source": None,
        "rows": 200,
        "sha256": hashlib.sha256(data).hexdigest(),
        "ranges": {f: list(trained_ranges[f]) for f in FEATURES},
        "sample_rows": 200,
    }


def test_a_busy_port_is_one_line_before_anything_loads(tmp_path: Path) -> None:
    import socket

    (tmp_path / "params.yaml").write_text("base:\n  seed: 1\n")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none.db'}", "PATH": "/usr/bin:/bin"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "custseg", "serve", "--port", str(port)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert done.stderr.strip() == line  # not the missing registry: the port is checked first


def test_a_body_that_stops_arriving_is_answered_408() -> None:
    """The ASGI app in process, its client a stand-in that sends headers and then nothing: the
    wait is bounded (0.2 s here, 60 s in `custseg serve`) and the answer is one JSON line."""
    import asyncio

    from custseg.serving.rest import scoring_app

    sent: list[dict] = []

    async def stalled() -> dict:
        await asyncio.Event().wait()  # never set: the body never comes
        return {}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/invocations",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
    }  # fmt: skip
    app = scoring_app(model=None, max_body_bytes=2**20, body_timeout_s=0.2)
    asyncio.run(asyncio.wait_for(app(scope, stalled, send), timeout=30))
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"]) == {
        "error_code": "REQUEST_TIMEOUT",
        "message": "the body did not arrive within 0.2 s",
    }
