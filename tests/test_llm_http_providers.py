"""The OpenAI-compatible and Ollama providers against real HTTP servers on 127.0.0.1.

`openai` talks to the session's llama.cpp server directly; `ollama` talks to a stand-in that
speaks Ollama's /api/chat in front of the same model. Failure paths use small stdlib servers
that misbehave on purpose (refuse, stall, answer 503 once).
"""

from __future__ import annotations

import json
import socket
import time
from http.server import BaseHTTPRequestHandler

import pytest
from pydantic import BaseModel

from custseg.config import LLMParams
from custseg.errors import LLMError
from custseg.llm.local_server import LocalServer
from custseg.llm.providers import OllamaProvider, OpenAICompatibleProvider, make_provider
from custseg.llm.settings import resolve_settings
from tests.fixtures.llm import OllamaStandIn, forward_chat, reply, serve

KEY_VAR = "CUSTSEG_TEST_LLM_KEY"


class City(BaseModel):
    city: str
    country: str


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def openai_provider(
    llm_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> OpenAICompatibleProvider:
    """Built the way users build it: params + env, the key only from the named variable."""
    params = LLMParams(
        provider="openai", model="anything", base_url=f"{llm_server.url}/v1", api_key_env=KEY_VAR
    )
    monkeypatch.setenv(KEY_VAR, llm_server.api_key)
    provider = make_provider(resolve_settings(params))
    assert isinstance(provider, OpenAICompatibleProvider)
    provider.backoff_s = 0.05
    return provider


@pytest.fixture
def ollama_provider(ollama_stand_in: OllamaStandIn) -> OllamaProvider:
    params = LLMParams(provider="ollama", model=ollama_stand_in.model, base_url=ollama_stand_in.url)
    provider = make_provider(resolve_settings(params))
    assert isinstance(provider, OllamaProvider)
    provider.backoff_s = 0.05
    return provider


def test_openai_plain_completion(openai_provider: OpenAICompatibleProvider) -> None:
    reply = openai_provider.complete(ask("Say hello."), max_tokens=8)
    assert reply.text.strip() and reply.completion_tokens > 0


def test_openai_json_completion(openai_provider: OpenAICompatibleProvider) -> None:
    city, _ = openai_provider.complete_json(
        ask("Paris: give its city and country as JSON."), City, max_tokens=32
    )
    assert (city.city, city.country) == ("Paris", "France")


def test_openai_logprobs(openai_provider: OpenAICompatibleProvider) -> None:
    reply = openai_provider.complete_with_logprobs(ask("Say yes."), top_logprobs=3, max_tokens=2)
    assert reply.logprobs and len(reply.logprobs[0].top_logprobs) == 3


def test_openai_wrong_key_fails_at_once_without_leaking_it(llm_server: LocalServer) -> None:
    secret = "sk-wrong-but-secret"
    provider = OpenAICompatibleProvider(
        base_url=f"{llm_server.url}/v1", api_key=secret, model="m", max_retries=3
    )
    with pytest.raises(LLMError) as caught:
        provider.complete(ask("hi"))
    message = str(caught.value)
    assert message.startswith("openai model m: HTTP 401 from ") and "Invalid API Key" in message
    assert secret not in message and caught.value.attempts == 1


def test_ollama_plain_completion(ollama_provider: OllamaProvider) -> None:
    reply = ollama_provider.complete(ask("Say hello."), max_tokens=8)
    assert reply.text.strip()
    assert reply.prompt_tokens > 0 and 0 < reply.completion_tokens <= 8
    assert reply.generation_ms and reply.generation_ms > 0


def test_ollama_json_completion_sends_a_capped_schema(
    ollama_provider: OllamaProvider, ollama_stand_in: OllamaStandIn
) -> None:
    city, _ = ollama_provider.complete_json(
        ask("Paris: give its city and country as JSON."), City, max_tokens=32
    )
    assert (city.city, city.country) == ("Paris", "France")
    sent = ollama_stand_in.requests[-1]
    assert sent["stream"] is False and sent["options"]["num_predict"] == 32
    assert sent["format"]["properties"]["city"]["maxLength"] == 600


def test_ollama_logprobs(ollama_provider: OllamaProvider) -> None:
    reply = ollama_provider.complete_with_logprobs(ask("Say yes."), top_logprobs=2, max_tokens=2)
    assert reply.logprobs and len(reply.logprobs[0].top_logprobs) == 2


def test_ollama_unknown_model_is_not_retried(ollama_stand_in: OllamaStandIn) -> None:
    provider = OllamaProvider(base_url=ollama_stand_in.url, model="nope:1b", max_retries=3)
    with pytest.raises(LLMError) as caught:
        provider.complete(ask("hi"))
    assert str(caught.value).startswith("ollama model nope:1b: HTTP 404 from ")
    assert 'model "nope:1b" not found' in str(caught.value)
    assert caught.value.attempts == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_server_is_retried_then_reported() -> None:
    port = free_port()  # nothing listens there
    provider = OpenAICompatibleProvider(
        base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=2, backoff_s=0.01
    )
    with pytest.raises(LLMError) as caught:
        provider.complete(ask("hi"))
    message = str(caught.value)
    assert message.startswith(f"openai model m: cannot reach http://127.0.0.1:{port}/v1/")
    assert message.endswith("(after 3 requests)") and caught.value.attempts == 3


def test_stalled_server_hits_the_timeout() -> None:
    def stall(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(1.5)
        reply(handler, 200, b"{}")

    with serve(stall) as url:
        provider = OpenAICompatibleProvider(
            base_url=f"{url}/v1", model="m", timeout=0.3, max_retries=1, backoff_s=0.01
        )
        started = time.perf_counter()
        with pytest.raises(LLMError, match=r"no reply from .* within 0\.3 s \(after 2 requests\)"):
            provider.complete(ask("hi"))
        assert time.perf_counter() - started < 1.5


def test_busy_server_then_success(llm_server: LocalServer) -> None:
    """503 then a proxied real answer: the provider retries once and returns the answer."""
    seen: list[int] = []

    def busy_once(handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
        seen.append(len(seen))
        if len(seen) == 1:
            reply(handler, 503, json.dumps({"error": {"message": "loading model"}}).encode())
            return
        reply(handler, 200, forward_chat(llm_server, body))

    with serve(busy_once) as url:
        provider = OpenAICompatibleProvider(base_url=f"{url}/v1", model="m", backoff_s=0.01)
        answer = provider.complete(ask("Say hi."), max_tokens=4)
    assert answer.text.strip() and seen == [0, 1]
