"""`custseg serve` started for a test or a benchmark: a free loopback port in a sandbox project,
healthy before use, its process group stopped after; and clients that send any body."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from custseg.errors import ServerNotUp
from custseg.net import free_port, wait_until_answers
from custseg.testing.browser import stop_process
from custseg.testing.sandbox import MLFLOW_ENV, project_env


@contextmanager
def running_scoring_server(project: Path, log: Path, timeout_s: float = 120.0) -> Iterator[str]:
    """Yield the server's base URL once GET /ping answers 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_ENV} | project_env(project)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "custseg", "serve", "--port", str(port)],
            cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_answers(f"{url}/ping", process, timeout_s, name="custseg serve")
        except ServerNotUp as error:
            raise ServerNotUp(f"{error}: {log.read_text()[-2000:]}") from None
        yield url
    finally:
        stop_process(process, 30, group=True)


def post(
    url: str,
    body: bytes,
    content_type: str | None = "application/json",
    chunked: bool = False,
    path: str = "/invocations",
    method: str = "POST",
) -> tuple[int, bytes]:
    """(status, reply bytes) of one request, whatever the status: with `content_type` None no
    Content-Type header is sent; `chunked` sends the body without a Content-Length."""
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    headers = {} if content_type is None else {"Content-Type": content_type}
    try:
        if chunked:
            pieces = (body[i : i + 65536] for i in range(0, len(body), 65536))
            connection.request(method, path, pieces, headers, encode_chunked=True)
        else:
            connection.request(method, path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def post_json(url: str, body: bytes) -> tuple[int, dict]:
    """POST `body` to /invocations; (status, parsed JSON reply) whatever the status."""
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
