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
The body is read here; custseg.serving.invocations checks it and shapes the replies. Every
feature value must pass custseg.serving.validation's rules, the app's and batch scoring's: a
finite number (JSON: a number, not a string) within the feature's bounds. Anything else gets
a 4xx JSON error `{"error_code": ..., "message": ...}` whose message is one line naming the
field: never a traceback, never the request body. A body over the limit (`--max-body-mb`,
default 10 MB) gets 413.
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

from custseg.errors import RequestError, ServingError, UserError
from custseg.serving import DEFAULT_MAX_BODY_MB
from custseg.serving.invocations import (
    Recorder,
    Reply,
    content_kind,
    error_reply,
    info_reply,
    score_body,
)
from custseg.serving.model import ModelRef, load_model, resolve_model
from custseg.serving.training_data import TrainingData
from custseg.serving.validation import quoted
from custseg.telemetry import NO_TELEMETRY

# A body a little over the limit is read to its end (and dropped) so the client, still sending,
# gets the 413 instead of a reset connection; one declared beyond this is refused unread.
MAX_DRAINED_BYTES = 64 * 2**20
BODY_TIMEOUT_S = 60.0  # a client that stops sending its body is answered 408 and let go

log = logging.getLogger("custseg.serve")


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
