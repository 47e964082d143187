"""The bundled model served in-process by xllamacpp (llama.cpp's OpenAI-compatible server).

One server per process and per (model file, context size, threads), started on first use,
bound to 127.0.0.1 on a port the OS picks, guarded by a random per-process API key, and shut
down at interpreter exit.
"""

from __future__ import annotations

import atexit
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custseg.errors import LLMError

DEBUG_ENV = "CUSTSEG_LLM_DEBUG"  # any value: let llama.cpp log at info level
PROMPT_CACHE_MIB = 512
CACHE_REUSE_TOKENS = 32  # the shortest repeated passage worth shifting instead of re-reading
# How long a release is waited for. It bounds nothing while a decode is in flight: the release
# then waits for the decode to end holding the GIL, so this wait cannot time out (seen: 575 s);
# `custseg agents` ends with entrypoint.exit_now instead of releasing.
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class ServerKey:
    model_path: str
    context_size: int
    threads: int
    alias: str


@dataclass
class LocalServer:
    url: str  # http://127.0.0.1:PORT
    api_key: str = field(repr=False)
    load_s: float
    handle: Any = field(repr=False)  # the xllamacpp.Server; dropping it stops the server


_LOCK = threading.Lock()
_SERVERS: dict[ServerKey, LocalServer] = {}
_ATEXIT_REGISTERED = False


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _server_params(key: ServerKey, api_key: str | None, port: int) -> Any:
    import xllamacpp  # imported on first use: only the local provider needs it

    params = xllamacpp.CommonParams()
    params.model.path = key.model_path
    params.model_alias = {key.alias}  # what the server reports as the model name
    params.n_ctx = key.context_size
    params.n_parallel = 1
    # Reused prompt states (agents alternate system prompts) live in RAM; llama.cpp's default
    # cap is 8 GiB, too much next to everything else on a small machine.
    params.cache_ram_mib = PROMPT_CACHE_MIB
    # A prompt that repeats a passage of the previous one at another place (the judge shows an
    # answer as "Answer B", then alone as "Answer A") reuses its cached states, shifted there.
    params.n_cache_reuse = CACHE_REUSE_TOKENS
    params.cpuparams.n_threads = key.threads
    params.cpuparams_batch.n_threads = key.threads
    # No busy-waiting between batches: when another process (a second server, a test run)
    # shares the cores, spinning threads starve each other and generation collapses.
    params.cpuparams.poll = 0
    params.cpuparams_batch.poll = 0
    params.hostnames = ["127.0.0.1"]
    params.port = port  # 0: the OS picks a free port
    params.api_keys = [api_key] if api_key else []
    params.cors_origins = ""  # no browser page may call it
    params.ui = False
    params.endpoint_metrics = True  # see _wait_for_task_loop
    params.verbosity = 3 if os.environ.get(DEBUG_ENV) else 1  # 1: errors only
    return params


def _wait_for_task_loop(handle: Any) -> None:
    """Return once llama.cpp's task loop runs.

    xllamacpp.Server() returns before that loop starts; a shutdown in between is lost and the
    destructor then waits forever. A metrics request is answered by the loop itself.
    """
    handle.handle_metrics()


def _drop(server: LocalServer, timeout_s: float) -> bool:
    """Release the llama.cpp server off-thread; False if it did not stop within `timeout_s`."""
    holder = [server.handle]
    server.handle = None
    stopper = threading.Thread(target=holder.clear, name="llama-stop", daemon=True)
    stopper.start()
    stopper.join(timeout_s)
    return not stopper.is_alive()


def start_server(
    model_path: Path,
    *,
    context_size: int,
    threads: int,
    alias: str,
    port: int = 0,
    api_key: str | None = None,
) -> LocalServer:
    """Load the model and serve it on 127.0.0.1:`port` (0: any free port) until dropped."""
    import xllamacpp

    key = ServerKey(str(model_path), context_size, threads, alias)
    started = time.perf_counter()
    try:
        handle = xllamacpp.Server(_server_params(key, api_key, port))
    except (RuntimeError, ValueError) as error:
        busy = f" (is port {port} in use?)" if port else ""
        raise LLMError(f"local model {alias}: llama.cpp could not start{busy}: {error}") from None
    server = LocalServer(handle.listening_address.rstrip("/"), api_key or "", 0.0, handle)
    _wait_for_task_loop(handle)
    server.load_s = time.perf_counter() - started
    if not server.url.startswith("http://127.0.0.1:"):
        _drop(server, STOP_TIMEOUT_S)
        raise LLMError(f"local model {alias}: server bound to {server.url}, not 127.0.0.1")
    return server


def local_server(model_path: Path, *, context_size: int, threads: int, alias: str) -> LocalServer:
    """The running server for this model and settings, started on the first call."""
    global _ATEXIT_REGISTERED
    key = ServerKey(str(model_path), context_size, threads, alias)
    with _LOCK:
        if key not in _SERVERS:
            # A random key: other local users and processes cannot borrow this server.
            _SERVERS[key] = start_server(
                model_path,
                context_size=context_size,
                threads=threads,
                alias=alias,
                api_key=secrets.token_urlsafe(24),
            )
            if not _ATEXIT_REGISTERED:
                atexit.register(shutdown_local_servers)
                _ATEXIT_REGISTERED = True
        return _SERVERS[key]


def shutdown_local_servers() -> int:
    """Stop every server this process started; return how many stopped cleanly in time."""
    with _LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    return sum(_drop(server, STOP_TIMEOUT_S) for server in servers)


def stop_server(server: LocalServer) -> bool:
    """Stop one server from `start_server`; False if llama.cpp did not stop in time."""
    return _drop(server, STOP_TIMEOUT_S)


def running_servers() -> list[LocalServer]:
    with _LOCK:
        return list(_SERVERS.values())
