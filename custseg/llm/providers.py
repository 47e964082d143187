"""The three providers: OpenAI-compatible HTTP, Ollama's /api/chat, and the bundled local model.

The local provider is the OpenAI-compatible one pointed at an in-process llama.cpp server, so
there is one HTTP code path for both.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from custseg.config import load_params
from custseg.errors import HTTPRequestError, LLMError, RetryableError
from custseg.llm.base import ChatRequest, Completion, Provider, TokenLogprob, TopLogprob
from custseg.llm.http import post_json
from custseg.llm.local_server import LocalServer, local_server
from custseg.llm.models import require_model
from custseg.llm.queue import one_at_a_time
from custseg.llm.settings import LLMSettings, resolve_settings
from custseg.paths import PARAMS


def _logprob_entries(entries: Any) -> tuple[TokenLogprob, ...] | None:
    """OpenAI's `logprobs.content` (or Ollama's `logprobs`) as TokenLogprobs; None if absent."""
    if not isinstance(entries, list):
        return None
    return tuple(
        TokenLogprob(
            token=str(entry.get("token", "")),
            logprob=float(entry.get("logprob", 0.0)),
            top_logprobs=tuple(
                TopLogprob(str(top.get("token", "")), float(top.get("logprob", 0.0)))
                for top in entry.get("top_logprobs") or ()
            ),
        )
        for entry in entries
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _ns_to_ms(value: Any) -> float | None:
    number = _number(value)
    return number / 1e6 if number is not None else None


def openai_chat_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The /v1/chat/completions request for `request`."""
    body: dict[str, Any] = {
        "model": model,
        "messages": list(request.messages),
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "stream": False,
    }
    if request.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": request.schema_name, "schema": request.json_schema},
        }
    if request.top_logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = request.top_logprobs
    return body


def parse_openai_reply(data: dict[str, Any], latency_s: float, model: str) -> Completion:
    """A Completion from a /v1/chat/completions reply."""
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise RetryableError("reply has no choices[0].message.content") from None
    usage = data.get("usage") or {}
    logprobs = choice.get("logprobs") or {}
    timings = data.get("timings") or {}  # llama.cpp's extension
    return Completion(
        text=text,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        latency_s=latency_s,
        model=str(data.get("model") or model),
        finish_reason=str(choice.get("finish_reason") or "stop"),
        logprobs=_logprob_entries(logprobs.get("content") if isinstance(logprobs, dict) else None),
        prompt_ms=_number(timings.get("prompt_ms")),
        generation_ms=_number(timings.get("predicted_ms")),
    )


def ollama_chat_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The Ollama /api/chat request for `request` (non-streaming)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": list(request.messages),
        "stream": False,
        "options": {"temperature": request.temperature, "num_predict": request.max_tokens},
    }
    if request.json_schema is not None:
        body["format"] = request.json_schema
    if request.top_logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = request.top_logprobs
    return body


def parse_ollama_reply(data: dict[str, Any], latency_s: float, model: str) -> Completion:
    """A Completion from an Ollama /api/chat reply."""
    try:
        text = data["message"]["content"] or ""
    except (KeyError, TypeError):
        raise RetryableError("reply has no message.content") from None
    return Completion(
        text=text,
        prompt_tokens=int(data.get("prompt_eval_count") or 0),
        completion_tokens=int(data.get("eval_count") or 0),
        latency_s=latency_s,
        model=str(data.get("model") or model),
        finish_reason=str(data.get("done_reason") or "stop"),
        logprobs=_logprob_entries(data.get("logprobs")),
        prompt_ms=_ns_to_ms(data.get("prompt_eval_duration")),
        generation_ms=_ns_to_ms(data.get("eval_duration")),
    )


class _HTTPProvider(Provider):
    """Shared by the HTTP providers: post, time, parse, and keep secrets out of errors."""

    def __init__(self, *, api_key: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self._api_key = api_key

    def _endpoint(self) -> tuple[str, dict[str, str]]:
        raise NotImplementedError

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, data: dict[str, Any], latency_s: float) -> Completion:
        raise NotImplementedError

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _send(self, request: ChatRequest) -> Completion:
        url, headers = self._endpoint()
        started = time.perf_counter()
        try:
            data = post_json(url, self._body(request), headers=headers, timeout=self.timeout)
        except HTTPRequestError as error:
            raise LLMError(f"{self.describe}: {self._scrub(str(error))}") from None
        except RetryableError as error:
            raise RetryableError(self._scrub(str(error))) from None
        return self._parse(data, time.perf_counter() - started)


class OpenAICompatibleProvider(_HTTPProvider):
    """Any server speaking OpenAI's /v1/chat/completions; `base_url` ends with /v1."""

    name = "openai"

    def __init__(self, *, base_url: str, **options: Any) -> None:
        super().__init__(**options)
        self.base_url = base_url.rstrip("/")

    def _endpoint(self) -> tuple[str, dict[str, str]]:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return f"{self.base_url}/chat/completions", headers

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        return openai_chat_body(self.model, request)

    def _parse(self, data: dict[str, Any], latency_s: float) -> Completion:
        return parse_openai_reply(data, latency_s, self.model)


class OllamaProvider(_HTTPProvider):
    """An Ollama server's /api/chat; structured output through `format` = JSON schema."""

    name = "ollama"

    def __init__(self, *, base_url: str, **options: Any) -> None:
        super().__init__(**options)
        self.base_url = base_url.rstrip("/")

    def _endpoint(self) -> tuple[str, dict[str, str]]:
        return f"{self.base_url}/api/chat", {}

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        return ollama_chat_body(self.model, request)

    def _parse(self, data: dict[str, Any], latency_s: float) -> Completion:
        return parse_ollama_reply(data, latency_s, self.model)


def local_model_path(model: str) -> Path:
    """A known model id's verified cached file, or a .gguf path given directly."""
    if model.endswith(".gguf"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise LLMError(f"local model {model}: file not found")
        return path
    return require_model(model)


_LOCAL_CALLS = threading.Lock()


def closed_objects(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object that does not say otherwise
    (JSON schema allows extra keys by default, and a constrained small model then adds some)."""
    if isinstance(schema, list):
        return [closed_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: closed_objects(value) for key, value in schema.items()}
    if closed.get("type") == "object" and "properties" in closed:
        closed.setdefault("additionalProperties", False)
    return closed


COMPACT_JSON = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}


def llguidance_json_grammar(schema: dict[str, Any]) -> str:
    """llama.cpp's `grammar` for JSON matching `schema` (llguidance reads its `x-guidance`)."""
    return "%llguidance {}\nstart: %json " + json.dumps(schema, ensure_ascii=False)


class LocalProvider(OpenAICompatibleProvider):
    """The bundled GGUF model behind llama.cpp's server, started on first use in this process."""

    name = "local"
    supports_prefill = True
    calls_in_flight = 1  # decoded one at a time (`_send`): more would only queue, timed

    def __init__(self, *, context_size: int = 4096, threads: int = 1, **options: Any) -> None:
        super().__init__(base_url="http://127.0.0.1", **options)
        self.context_size = context_size
        self.threads = threads
        self._path: Path | None = None  # set once the model file has been verified

    def server(self) -> LocalServer:
        """Start the server if this process has not yet (verifies the model file first)."""
        if self._path is None:
            self._path = local_model_path(self.model)
        return local_server(
            self._path, context_size=self.context_size, threads=self.threads, alias=self.model
        )

    def _endpoint(self) -> tuple[str, dict[str, str]]:
        server = self.server()
        headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
        return f"{server.url}/v1/chat/completions", headers

    def json_schema(self, schema: type[BaseModel]) -> dict[str, Any]:
        """Closed objects, one-line JSON (`{"a": 1, "b": "x"}`): `response_format` would let the
        model spend a token on every newline and indent, and on a CPU each generated token costs
        as much as ~3 prompt tokens."""
        return {**closed_objects(super().json_schema(schema)), "x-guidance": COMPACT_JSON}

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body = openai_chat_body(self.model, request)
        if request.json_schema is not None:  # as a grammar: response_format drops x-guidance
            del body["response_format"]
            body["grammar"] = llguidance_json_grammar(request.json_schema)
        if request.prefill:  # llama.cpp continues a last assistant message, and returns it whole
            body["messages"].append({"role": "assistant", "content": request.prefill})
        if request.grammar is not None:
            body["grammar"] = request.grammar
        return body

    def _send(self, request: ChatRequest) -> Completion:
        # The server decodes one request at a time: queue here, in the process, so that the
        # per-call timeout (and a watching caller's clock) measures the call itself, not the
        # wait behind other agents' calls.
        with one_at_a_time(_LOCAL_CALLS):
            return super()._send(request)

    def _scrub(self, text: str) -> str:
        return text  # the per-process key is never echoed by llama.cpp


def make_provider(settings: LLMSettings) -> Provider:
    """The provider `settings` describe (nothing is started or contacted yet)."""
    common: dict[str, Any] = {
        "model": settings.model,
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "timeout": settings.timeout,
        "max_retries": settings.max_retries,
    }
    if settings.provider == "local":
        return LocalProvider(context_size=settings.context_size, threads=settings.threads, **common)
    if settings.provider == "ollama":
        return OllamaProvider(base_url=str(settings.base_url), **common)
    return OpenAICompatibleProvider(
        base_url=str(settings.base_url), api_key=settings.api_key, **common
    )


def load_provider(params_path: Path | str = PARAMS) -> Provider:
    """The provider configured by params.yaml's `llm:` section and CUSTSEG_LLM_* variables."""
    return make_provider(resolve_settings(load_params(params_path).llm))
