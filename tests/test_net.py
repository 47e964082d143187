"""custseg.net: free loopback ports and waiting for a server to answer, on real processes."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from custseg.errors import ServerNotUp
from custseg.net import answers, free_port, wait_until_answers


@contextmanager
def started(*args: str) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen([sys.executable, *args], stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_free_port_can_be_bound_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_waits_until_a_real_server_answers() -> None:
    port = free_port()
    with started("-m", "http.server", str(port), "--bind", "127.0.0.1") as server:
        url = f"http://127.0.0.1:{port}/"
        assert wait_until_answers(url, server, 30, name="http.server") >= 0
        assert answers(url) and not answers(url, accept=lambda body: body == b"ok")


def test_a_server_that_exits_or_never_answers_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    exited = pytest.raises(ServerNotUp, match=r"^toy exited with code 3$")
    with started("-c", "raise SystemExit(3)") as gone, exited:
        wait_until_answers(url, gone, 30, name="toy")
    late = pytest.raises(ServerNotUp, match=r"^toy: .* not answering after 0.5 s$")
    with started("-c", "import time; time.sleep(60)") as silent, late:
        wait_until_answers(url, silent, 0.5, name="toy")
