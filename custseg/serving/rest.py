"""REST scoring for programs: `custseg serve` (`make serve`) speaks MLflow's scoring protocol for
one registered version, and checks every value before the model sees it.

It resolves the alias once (its first line names the version), loads that version and serves it
with uvicorn on 127.0.0.1, in this process (nothing is built, fetched or reported):
- POST /invocations: JSON `{"dataframe_split": {"columns": [...], "data": [[...], ...]}}` or
  `{"dataframe_records": [{...}, ...]}`, or CSV with a header row (`text/csv`, read as batch
  scoring reads an upload). Answer: `{"predictions": [segment, ...]}`, one per row, in order,
  and `"outside_training_data": [[feature, ...], ...]`, per row the features whose value lies
  outside the served version's training range (its own data, custseg.serving.training_data,
  never the workspace's CSV); null when the version did not record its ranges.
- GET /info: the version served (name, alias, version, run id) and its training data (path,
  source, rows, SHA-256, ranges).
- GET /ping and /health: 200 (the model is loaded before the port opens); GET /version:
  MLflow's version, as MLflow's server answers.
Every feature value must pass custseg.serving.validation's rules, the app's and batch
scoring's: a finite number (JSON: a number, not a string) within the feature's bounds. Anything
else gets a 4xx JSON error `{"error_code": ..., "message": ...}` whose message is one line
naming the field: never a traceback, never the request body. A body over the limit
(`--max-body-mb`, default 10 MB) gets 413.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from custseg.errors import BatchError, RequestError, ServingError, UserError, first_line
from custseg.features import FEATURES
from custseg.serving.model import ModelRef, features_frame, load_model, resolve_model
from custseg.serving.training_data import TrainingData, outside_features
from custseg.serving.validation import feature_problems, plain_number, quoted
from custseg.telemetry import NO_TELEMETRY

DEFAULT_PORT = 5001  # beside the MLflow UI's 5000
DEFAULT_MAX_BODY_MB = 10  # ~250,000 customers as dataframe_split JSON
# A body a little over the limit is read to its end (and dropped) so the client, still sending,
# gets the 413 instead of a reset connection; one declared beyond this is refused unread.
MAX_DRAINED_BYTES = 64 * 2**20
BODY_TIMEOUT_S = 60.0  # a client that stops sending its body is answered 408 and let go
MAX_MESSAGE_CHARS = 500
JSON_FORMATS = ("dataframe_split", "dataframe_records")
CONTENT_TYPES = {"application/json": "json", "text/csv": "csv"}
ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    500: "INTERNAL_ERROR",
}
_ABSENT = object()  # a record without the feature's key
Reply = tuple[int, dict[str, Any]]

log = logging.getLogger("custseg.serve")


# --- the request, as data -------------------------------------------------------------------


def bad_request(message: str) -> RequestError:
    return RequestError(400, [f"Invalid input: {message}"])


def content_kind(content_type: str | None) -> str:
    """The request's kind, json or csv, from its Content-Type; RequestError 415 otherwise."""
    mime, *parameters = [part.strip() for part in (content_type or "").split(";")]
    kind = CONTENT_TYPES.get(mime.lower())
    if kind is None:
        shown = f"Content-Type {quoted(mime)}" if mime else "no Content-Type"
        raise RequestError(415, [f"{shown}: send application/json or text/csv"])
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            raise RequestError(
                415, [f"Content-Type parameter {quoted(parameter)}: only charset=utf-8 is accepted"]
            )
    return kind


def parse_json(body: bytes) -> Any:
    """The body's JSON; integers are read as floats (no 4,300-digit limit to trip over)."""
    try:
        return json.loads(body, parse_int=float)
    except RecursionError:
        raise bad_request("the JSON is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise bad_request(f"the body is not JSON: {first_line(error)[:120]}") from None


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")


def json_columns(payload: Any) -> dict[str, list[Any]]:
    """Each feature's values from a `dataframe_split` or `dataframe_records` payload (MLflow's
    JSON formats; other columns are ignored, as MLflow ignores them)."""
    formats = " or ".join(map(repr, JSON_FORMATS))
    if not isinstance(payload, dict):
        raise bad_request(f"the body is {json_type(payload)}; send an object with {formats}")
    keys = list(payload)
    unknown = [key for key in keys if key not in JSON_FORMATS]
    if unknown:
        raise bad_request(f"unknown key {quoted(unknown[0])}; send an object with {formats}")
    if len(keys) != 1:
        raise bad_request(f"send one of {formats}, not {len(keys)}")
    key = keys[0]
    columns = split_columns(payload[key]) if key == "dataframe_split" else records(payload[key])
    if not columns[FEATURES[0]]:
        raise bad_request(f"{key}: no rows to score")
    return columns


def split_columns(split: Any) -> dict[str, list[Any]]:
    """`{"columns": [...], "data": [[...], ...]}` → each feature's values."""
    where = "dataframe_split"
    if not isinstance(split, dict):
        expected = "expected an object with 'columns' and 'data'"
        raise bad_request(f"{where} is {json_type(split)}; {expected}")
    columns, data = split.get("columns"), split.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise bad_request(f"{where}.columns: expected a list of column names")
    if not isinstance(data, list):
        raise bad_request(f"{where}.data is {json_type(data)}; expected a list of rows")
    positions = {}
    for feature in FEATURES:
        found = [i for i, column in enumerate(columns) if column == feature]
        if len(found) != 1:
            have = ", ".join(map(quoted, columns[:10])) or "none"
            problem = f"missing column {feature!r}" if not found else f"{feature!r} is repeated"
            raise bad_request(f"{where}.columns: {problem} (columns: {have})")
        positions[feature] = found[0]
    for n, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            got = f"{len(row)} value(s)" if isinstance(row, list) else json_type(row)
            raise bad_request(
                f"{where}.data[{n}]: {got}; expected a list of {len(columns)}, one per column"
            )
    return {feature: [row[i] for row in data] for feature, i in positions.items()}


def records(rows: Any) -> dict[str, list[Any]]:
    """`[{"annual_income": …, "spending_score": …}, …]` → each feature's values."""
    where = "dataframe_records"
    if not isinstance(rows, list):
        raise bad_request(f"{where} is {json_type(rows)}; expected a list of objects")
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise bad_request(f"{where}[{n}] is {json_type(row)}; expected an object")
    for feature in FEATURES:
        if rows and not any(feature in row for row in rows):
            raise bad_request(f"{where}: missing column {feature!r} (no record has it)")
    return {feature: [row.get(feature, _ABSENT) for row in rows] for feature in FEATURES}


def json_numbers(values: list[Any]) -> np.ndarray:
    """JSON values as the numbers they are; NaN for anything that is not a number (`parse_json`
    reads every JSON number as a float, so a list of floats is the common, fast case)."""
    if all(type(value) is float for value in values):
        return np.array(values, dtype=float)
    return np.array([value if type(value) is float else np.nan for value in values], dtype=float)


def json_shown(value: Any) -> str:
    """A JSON value as a message names it (a number plainly, text quoted and cut short)."""
    if value is _ABSENT:
        return "no value"
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, float):  # NaN and Infinity as JSON spells them
        return plain_number(value) if np.isfinite(value) else json.dumps(value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)  # null, true, false
    return json_type(value)  # a list, an object: never quoted whole


def checked_features(columns: dict[str, list[Any]]) -> Any:
    """The model's input frame; RequestError naming each field whose values break the rules."""
    numbers = {feature: json_numbers(values) for feature, values in columns.items()}
    problems = [
        problem.describe("row", 0)
        for feature, values in columns.items()
        for problem in feature_problems(
            feature, feature, numbers[feature], lambda i, values=values: json_shown(values[i])
        )
    ]
    if problems:
        raise bad_request("; ".join(problems))
    return features_frame(numbers[FEATURES[0]], numbers[FEATURES[1]])


def csv_features(body: bytes, max_bytes: int) -> Any:
    """A CSV body, read and checked exactly as batch scoring reads an upload."""
    from custseg.serving.batch import validate_batch
    from custseg.serving.upload import parse_batch_csv

    try:
        return validate_batch(parse_batch_csv(body, max_bytes=max_bytes))
    except BatchError as error:
        raise bad_request(f"CSV body: {'; '.join(error.problems)}") from None


Recorder = Callable[[Any, Any], object]  # (features, segments): ScoredStore.record, never raises


def score_body(
    model: Any,
    kind: str,
    body: bytes,
    max_bytes: int,
    record: Recorder | None = None,
    training: TrainingData | None = None,
) -> Reply:
    """The reply to one POST /invocations: (200, predictions) or a RequestError. With
    `record`, the scored rows are also recorded (drift monitoring); with the served version's
    `training` data, each prediction's features outside its ranges are named."""
    if kind == "csv":
        features = csv_features(body, max_bytes)
    else:
        features = checked_features(json_columns(parse_json(body)))
    segments = model.predict(features)
    if record is not None:
        record(features, segments)
    reply: dict[str, Any] = {"predictions": segments.tolist()}
    if training is not None:
        ranges = training.ranges
        reply["outside_training_data"] = ranges and outside_features(features, ranges)
    return 200, reply


def info_reply(ref: ModelRef, training: TrainingData) -> dict[str, Any]:
    """GET /info: which version is served and the data it was trained on."""
    served = {"name": ref.name, "alias": ref.alias, "version": ref.version, "run_id": ref.run_id}
    return {**served, "training_data": training.as_json()}


def error_reply(status: int, message: str) -> Reply:
    """MLflow's error shape; the message one line, capped."""
    line = " ".join(message.split())
    if len(line) > MAX_MESSAGE_CHARS:
        line = line[: MAX_MESSAGE_CHARS - 1] + "…"
    return status, {"error_code": ERROR_CODES.get(status, "BAD_REQUEST"), "message": line}


# --- the ASGI app ---------------------------------------------------------------------------

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def too_large(size: str, max_bytes: int) -> RequestError:
    limit = f"{max_bytes / 2**20:g} MB (custseg serve --max-body-mb)"
    return RequestError(413, [f"the body is {size}; the limit is {limit}"])


async def read_body(headers: dict[str, str], receive: Receive, max_bytes: int) -> bytes:
    """The request body, at most `max_bytes`; RequestError 413 beyond (see MAX_DRAINED_BYTES)."""
    declared = headers.get("content-length", "")
    declared_size = int(declared) if declared.isdigit() else None
    if declared_size is not None and declared_size > MAX_DRAINED_BYTES:
        raise too_large(f"{declared_size / 2**20:.1f} MB", max_bytes)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("the client left")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= max_bytes:
            chunks.append(chunk)
        elif size > MAX_DRAINED_BYTES:
            break
        if not message.get("more_body", False):
            break
    if size > max_bytes:
        shown = f"{size / 2**20:.1f} MB" if size <= MAX_DRAINED_BYTES else "over 64 MB"
        raise too_large(shown, max_bytes)
    return b"".join(chunks)


def scoring_app(
    model: Any,
    max_body_bytes: int,
    body_timeout_s: float = BODY_TIMEOUT_S,
    record: Recorder | None = None,
    served: tuple[ModelRef, TrainingData] | None = None,
) -> Callable[..., Awaitable[None]]:
    """The ASGI app serving `model`: routes, body limit and time limit, and every failure as a
    JSON reply; `record` gets each scored request's rows; `served` (the version and its
    training data) adds GET /info and the range notes of each prediction."""
    mlflow_version = version("mlflow")
    training = None if served is None else served[1]
    routes = ("/ping", "/health", "/version", "/invocations", *(("/info",) if served else ()))

    async def reply(send: Send, status: int, body: bytes, media: str) -> None:
        headers = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def invocations(scope: dict[str, Any], receive: Receive) -> Reply:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            kind = content_kind(headers.get("content-type"))
            async with asyncio.timeout(body_timeout_s):
                body = await read_body(headers, receive, max_body_bytes)
            return await asyncio.to_thread(
                score_body, model, kind, body, max_body_bytes, record, training
            )
        except RequestError as error:
            return error_reply(error.status, str(error))
        except TimeoutError:
            return error_reply(408, f"the body did not arrive within {body_timeout_s:g} s")

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else is served
            return
        path, method = scope["path"], scope["method"]
        if path in ("/ping", "/health", "/version") and method == "GET":
            text = mlflow_version if path == "/version" else "\n"
            await reply(send, 200, text.encode(), "application/json")
            return
        if path == "/info" and method == "GET" and served is not None:
            status, payload = 200, info_reply(*served)
        elif path == "/invocations" and method == "POST":
            try:
                status, payload = await invocations(scope, receive)
            except ConnectionResetError:
                return
            except Exception:  # the reply stays one line; the server log gets the traceback
                log.exception("POST /invocations failed")
                status, payload = error_reply(500, "the server failed to score this request")
        elif path in routes:
            allowed = "POST" if path == "/invocations" else "GET"
            status, payload = error_reply(405, f"{method} {path}: use {allowed}")
        else:
            status, payload = error_reply(404, f"no such path: {quoted(path)}")
        await reply(send, status, json.dumps(payload).encode(), "application/json")

    return app


# --- the command ----------------------------------------------------------------------------


def bind_loopback(port: int) -> socket.socket:
    """The listening socket on 127.0.0.1:`port`, taken before the model loads (a busy port is
    one line at once, not a failure after the load)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as error:
        sock.close()
        raise UserError(f"cannot listen on 127.0.0.1:{port}: {error.strerror}") from None
    return sock


def serve(
    name: str,
    alias: str,
    port: int,
    max_body_mb: int = DEFAULT_MAX_BODY_MB,
    record_dir: Path | None = None,
) -> None:
    """Resolve `name@alias` (one line and exit 2 if there is none), load that version and serve
    it until SIGTERM/Ctrl-C, recording what is scored in `record_dir` (default
    $CUSTSEG_RECORD_DIR, else data/scored; `off`: nowhere)."""
    import uvicorn

    os.environ.update(NO_TELEMETRY)  # nothing phones home, whatever the shell set
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    sock = bind_loopback(port)  # first: a busy port is told before MLflow's import (2-5 s)
    try:
        ref = resolve_model(name, alias)  # ModelNotFoundError: a ServingError, one line
        print(
            f"serving {ref.name} v{ref.version} (@{alias}) at http://127.0.0.1:{port}/invocations",
            flush=True,
        )
        model = load_model(ref)
    except ServingError:
        sock.close()
        raise
    print(f"model loaded; request bodies up to {max_body_mb} MB", flush=True)
    from custseg.serving.model import mlflow_client
    from custseg.serving.training_data import load_training_data

    # The version's own data (its run's artifacts), never the workspace's CSV.
    training = load_training_data(ref.version, ref.run_id, mlflow_client())
    print(training.plain(), flush=True)
    from custseg.monitoring.store import record_dir as default_record_dir
    from custseg.monitoring.store import recorder

    where = record_dir or default_record_dir()  # --record DIR, else $CUSTSEG_RECORD_DIR
    record = recorder(ref.version, where) if where else None
    print(f"recording scored rows in {where}" if where else "recording is off", flush=True)
    config = uvicorn.Config(
        scoring_app(model, max_body_mb * 2**20, record=record, served=(ref, training)),
        lifespan="off",
        server_header=False,
        timeout_keep_alive=5,
        log_level="info",
    )
    uvicorn.Server(config).run(sockets=[sock])
