"""The stand-in LLM's HTTP server (custseg.testing.stand_in_llm.serve): a client that abandons a
call is one quiet log line, not a traceback; a handler that fails is still a traceback."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

import pytest

from custseg.testing.stand_in_llm import reply, serve

BODY = b'{"messages": []}'


def post(url: str) -> socket.socket:
    """A raw POST to `url`, left open for the caller to read or abandon."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(BODY)}\r\n\r\n"
    sock.sendall(head.encode() + BODY)
    return sock


def wait_until(predicate, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_client_gone_away_is_one_quiet_line(
    capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    read, gone, answered = threading.Event(), threading.Event(), threading.Event()

    def late_reply(handler: BaseHTTPRequestHandler) -> None:
        handler.rfile.read(int(handler.headers["Content-Length"]))
        read.set()
        gone.wait(10)
        try:  # large enough that the write meets the client's reset, not a kernel buffer
            reply(handler, 200, b"x" * 8_000_000)
        finally:
            answered.set()

    caplog.set_level(logging.INFO, logger="custseg.stand_in_llm")
    with serve(late_reply) as url:
        sock = post(url)
        assert read.wait(10)
        # Close with a reset (SO_LINGER 0), as a client killed or timed out mid-call does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        gone.set()
        assert answered.wait(10)
        wait_until(lambda: caplog.records, "the server's note of the client gone away")
    (record,) = caplog.records
    message = record.getMessage()
    assert message.startswith("client 127.0.0.1:") and "left before its reply" in message
    assert "Traceback" not in capsys.readouterr().err


def test_a_failing_handler_is_still_a_traceback(capsys: pytest.CaptureFixture) -> None:
    def broken(handler: BaseHTTPRequestHandler) -> None:
        raise RuntimeError("stand-in bug")

    err = ""
    with serve(broken) as url:
        sock = post(url)
        try:

            def traceback_shown() -> bool:
                nonlocal err
                err += capsys.readouterr().err
                return "RuntimeError: stand-in bug" in err

            wait_until(traceback_shown, "the handler's traceback on stderr")
        finally:
            sock.close()
    assert "Traceback (most recent call last)" in err


def test_a_whole_call_is_answered(caplog: pytest.LogCaptureFixture) -> None:
    def ok(handler: BaseHTTPRequestHandler) -> None:
        handler.rfile.read(int(handler.headers["Content-Length"]))
        reply(handler, 200, b'{"ok": true}')

    with serve(ok) as url, post(url) as sock:
        answer = b""
        while not answer.endswith(b'{"ok": true}'):
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 200")
    assert not caplog.records
