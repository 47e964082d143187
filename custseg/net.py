"""Loopback plumbing for the servers the project starts: a free port, and waiting until one
answers over HTTP."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable

from custseg.errors import ServerNotUp


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str, accept: Callable[[bytes], bool] = lambda body: True) -> bool:
    """Whether GET `url` returns 200 with a body `accept` takes (any error: no)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and accept(response.read())
    except OSError:
        return False


def wait_until_answers(
    url: str,
    process: subprocess.Popen,
    timeout_s: float,
    *,
    name: str,
    accept: Callable[[bytes], bool] = lambda body: True,
    interval_s: float = 0.25,
) -> float:
    """Poll `url` until it `answers`; the seconds waited. ServerNotUp if `process` (the server,
    called `name`) exits first or `timeout_s` passes."""
    started = time.monotonic()
    while not answers(url, accept):
        if process.poll() is not None:
            raise ServerNotUp(f"{name} exited with code {process.returncode}")
        if time.monotonic() - started > timeout_s:
            raise ServerNotUp(f"{name}: {url} not answering after {timeout_s:g} s")
        time.sleep(interval_s)
    return time.monotonic() - started
