"""A POST /invocations body, as data, for `custseg serve` (custseg.serving.rest): its kind from
the Content-Type, MLflow's JSON formats or a CSV read as batch scoring reads an upload, every
feature value checked by custseg.serving.validation's rules, and the replies, errors included,
in MLflow's shapes. Pure functions of bytes and a loaded model: no server, no I/O."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from custseg.errors import BatchError, RequestError, first_line
from custseg.features import FEATURES
from custseg.serving.model import ModelRef, features_frame
from custseg.serving.training_data import TrainingData, outside_features
from custseg.serving.validation import feature_problems, plain_number, quoted

# An error message as sent: JSON escapes a character in up to 12 bytes (an astral one as two
# \uXXXX), so a cap in characters let 500 of them grow past 1 KB.
MAX_MESSAGE_BYTES = 600
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


def capped(line: str, max_bytes: int = MAX_MESSAGE_BYTES) -> str:
    """`line`, cut (ending in "…") so that it takes at most `max_bytes` as a JSON string."""
    if len(json.dumps(line)) <= max_bytes:
        return line
    budget, kept = max_bytes - len(json.dumps("…")), []
    for char in line:
        budget -= len(json.dumps(char)) - 2
        if budget < 0:
            break
        kept.append(char)
    return "".join(kept) + "…"


def error_reply(status: int, message: str) -> Reply:
    """MLflow's error shape; the message one line, capped in bytes as sent."""
    line = capped(" ".join(message.split()))
    return status, {"error_code": ERROR_CODES.get(status, "BAD_REQUEST"), "message": line}
