"""A stand-in OpenAI-compatible LLM server: answers every chat at once, deterministically, in
the shape each agent asks for, and the judge's questions with a score (no model). For tests and
benchmarks of the plumbing around the LLM (Kafka, retries, kills, the eval stage's cache and
MLflow run), where the real model would make a run take minutes. A task can carry cues:
FAIL_CUE makes every call for it fail (HTTP 500), SLOW_CUE makes it take SLOW_S, VARY_CUE makes
each answer differ (so a reply produced twice would show), STALL_CUE makes every call for it
hang (STALL_S: longer than any test waits) and STALL_ONCE_CUE only the first call for that
task; LATE_ONCE_CUE makes the first call for that task answer, but only after LATE_S (long after
a worker stopped waiting for it). `STALLED` counts the stalled and late calls per task, for a
test to wait on."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("custseg.stand_in_llm")

# A client that abandons a call (its timeout, a worker killed or stopped) closes its socket; the
# reply written after that fails with one of these. Expected in these tests: not a traceback.
CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that notes a client gone away in one line and keeps every other
    handler error loud (the stock traceback on stderr)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, CLIENT_GONE):
            log.info("client %s:%s left before its reply (%s)", *client_address[:2], error)
            return
        super().handle_error(request, client_address)


@contextmanager
def serve(handle: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A throwaway HTTP server on 127.0.0.1 whose POSTs go to `handle`; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_POST(self) -> None:
            handle(self)

    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    """Answer a request with a JSON body."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


# Cues a task can carry for the stand-in: every call for it fails (HTTP 500), is slow, or
# answers differently each time (so a reply produced twice would show).
FAIL_CUE, SLOW_CUE, VARY_CUE = "[fail]", "[slow]", "[vary]"
STALL_CUE, STALL_ONCE_CUE, LATE_ONCE_CUE = "[stall]", "[stall-once]", "[late-once]"
SLOW_S = 0.5
STALL_S = 900.0
LATE_S = 8.0
STALLED: dict[str, int] = {}  # task line → calls stalled (a server's handler threads share it)
_stalled_lock = threading.Lock()


def _stall_s(asked: str) -> float:
    """How long this call hangs before it goes on (0: not at all), counting it in STALLED."""
    task = asked.split("\n", 1)[0]
    with _stalled_lock:
        first = task not in STALLED
        if STALL_CUE in asked or (STALL_ONCE_CUE in asked and first):
            seconds = STALL_S
        elif LATE_ONCE_CUE in asked and first:
            seconds = LATE_S
        else:
            return 0.0
        STALLED[task] = STALLED.get(task, 0) + 1
    return seconds


def stand_in_content(body: dict[str, Any]) -> str:
    """A fast, deterministic answer in the shape each agent asks for (JSON for a schema)."""
    task = body["messages"][-1]["content"].split("\n", 1)[0].removeprefix("Task: ")
    if VARY_CUE in task:
        task += f" ({uuid.uuid4().hex[:8]})"
    if body.get("response_format"):
        fields = _schema_fields(body)
        if "edits" in fields:  # agent variant v2's review: a list of edits
            return json.dumps({"edits": ["Add one measure of success to the answer."]})
        if "new" in fields:  # v2's edit: words added at the end of the draft
            return json.dumps({"old": "", "new": "Measure success by repeat visits each week."})
        return json.dumps(
            {"review": "The draft is on topic; it lacked a measure.", "final": f"Answer: {task}"}
        )
    return f"1. Read the task: {task}\n2. Answer it with the segments."


def _schema_fields(body: dict[str, Any]) -> dict[str, Any]:
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    return schema.get("properties") or {}


def asks_for_a_score(body: dict[str, Any]) -> bool:
    """Whether the request is a judge's: its reply schema has a `score` field."""
    return "score" in _schema_fields(body)


def stand_in_score(prompt: str) -> int:
    """The stand-in judge's score, 0-10: drawn from the prompt, so the same question always
    gets the same score and different questions mostly different ones."""
    return int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 11


def stand_in_judgement(prompt: str) -> tuple[str, list[dict[str, Any]]]:
    """A score-first JSON reply, and its tokens with logprobs as llama.cpp reports them: the
    score's first digit 3:1 between the score and its neighbour, every other token certain."""
    score = stand_in_score(prompt)
    digits = list(str(score))
    neighbour = str(score - 1 if score > 0 else 1)

    def token(text: str, alternatives: tuple[tuple[str, float], ...] = ()) -> dict[str, Any]:
        tops = alternatives or ((text, 0.0),)
        return {
            "token": text,
            "logprob": tops[0][1],
            "top_logprobs": [{"token": t, "logprob": p} for t, p in tops],
        }

    first = token(digits[0], ((digits[0], math.log(0.75)), (neighbour, math.log(0.25))))
    tokens = [
        *map(token, ('{"', "score", '":', " ")),
        first,
        *map(token, digits[1:]),
        *map(token, (",", ' "', "reason", '":', ' "', "stand-in judgement", '"}')),
    ]
    return "".join(t["token"] for t in tokens), tokens


def stand_in_reply(body: dict[str, Any]) -> tuple[int, bytes]:
    """(HTTP status, JSON body) the stand-in answers a /v1/chat/completions request with."""
    asked = body["messages"][-1]["content"]
    if FAIL_CUE in asked:
        return 500, json.dumps({"error": "stand-in told to fail"}).encode()
    if stall_s := _stall_s(asked):
        time.sleep(stall_s)  # in a daemon handler thread: the server still answers others
    if SLOW_CUE in asked:
        time.sleep(SLOW_S)
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
    if asks_for_a_score(body):
        content, tokens = stand_in_judgement(asked)
        if body.get("logprobs"):
            choice["logprobs"] = {"content": tokens}
    else:
        content = stand_in_content(body)
    choice["message"] = {"role": "assistant", "content": content}
    answer = {
        "model": body.get("model", "stand-in"),
        "choices": [choice],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10},
    }
    return 200, json.dumps(answer).encode()


def stand_in_chat(handler: BaseHTTPRequestHandler) -> None:
    body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
    reply(handler, *stand_in_reply(body))


@contextmanager
def stand_in_llm_server() -> Iterator[str]:
    """Run the stand-in on a free 127.0.0.1 port; yields its base URL (…/v1)."""
    with serve(stand_in_chat) as url:
        yield f"{url}/v1"
