"""Pure pieces of the provider layer: schema capping, retry loop, wire formats."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from pydantic import BaseModel, Field

from custseg.errors import LLMError, RetryableError
from custseg.llm.base import ChatRequest, Completion, backoff_delay, parse_json_reply, with_retries
from custseg.llm.http import error_detail, is_loopback
from custseg.llm.providers import (
    LocalProvider,
    OllamaProvider,
    OpenAICompatibleProvider,
    closed_objects,
    ollama_chat_body,
    openai_chat_body,
    parse_ollama_reply,
    parse_openai_reply,
)
from custseg.llm.schema import capped_json_schema, json_schema_name


class Inner(BaseModel):
    note: str
    tags: list[str]


class Outer(BaseModel):
    title: str
    short: str = Field(max_length=10)
    maybe: str | None = None
    kind: str = Field(json_schema_extra={"enum": ["a", "b"]})
    inner: Inner
    count: int


def test_every_free_string_gets_a_max_length() -> None:
    schema = capped_json_schema(Outer, 600)
    props = schema["properties"]
    assert props["title"]["maxLength"] == 600
    assert props["short"]["maxLength"] == 10  # an explicit limit is kept
    assert {"type": "string", "maxLength": 600} in props["maybe"]["anyOf"]
    assert "maxLength" not in props["kind"]  # enums are already bounded
    assert "maxLength" not in props["count"]
    inner = schema["$defs"]["Inner"]["properties"]
    assert inner["note"]["maxLength"] == 600
    assert inner["tags"]["items"]["maxLength"] == 600
    assert "maxLength" not in Outer.model_json_schema()["properties"]["title"]  # a copy


def test_schema_name_is_server_safe() -> None:
    assert json_schema_name(Outer) == "Outer"


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n) for n in range(6)] == [0.5, 1, 2, 4, 8, 8]


def test_retries_until_success_then_stops() -> None:
    calls: list[int] = []

    def flaky(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 2:
            raise RetryableError("connection reset")
        return "ok"

    assert with_retries(flaky, max_retries=2, describe="p model m", backoff_s=0) == "ok"
    assert calls == [0, 1, 2]


def test_retries_are_bounded_and_the_error_names_the_cause() -> None:
    def broken(_attempt: int) -> str:
        raise RetryableError("HTTP 503 from http://x: busy")

    with pytest.raises(LLMError) as caught:
        with_retries(broken, max_retries=1, describe="openai model gpt-x", backoff_s=0)
    assert (
        str(caught.value) == "openai model gpt-x: HTTP 503 from http://x: busy (after 2 requests)"
    )
    assert caught.value.attempts == 2


def test_permanent_errors_are_not_retried() -> None:
    calls: list[int] = []

    def denied(attempt: int) -> str:
        calls.append(attempt)
        raise LLMError("openai model m: HTTP 401")

    with pytest.raises(LLMError):
        with_retries(denied, max_retries=5, describe="d", backoff_s=0)
    assert calls == [0]


def test_parse_json_reply_says_what_is_wrong() -> None:
    assert parse_json_reply('{"note": "n", "tags": []}', Inner).note == "n"
    with pytest.raises(RetryableError, match="not valid JSON"):
        parse_json_reply('{"note": "n", "ta', Inner)
    with pytest.raises(RetryableError, match=r"does not match Inner: tags: Field required"):
        parse_json_reply('{"note": "n"}', Inner)


def test_error_detail_reads_openai_and_ollama_shapes() -> None:
    assert error_detail(b'{"error": {"message": "Invalid API Key"}}') == "Invalid API Key"
    assert error_detail(b'{"error": "model \\"x\\" not found"}') == 'model "x" not found'
    assert error_detail(b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"


def test_loopback_detection() -> None:
    assert is_loopback("http://127.0.0.1:8080/v1")
    assert is_loopback("http://localhost:11434")
    assert is_loopback("http://[::1]:1/")
    assert not is_loopback("https://api.example.com/v1")


REQUEST = ChatRequest(
    messages=({"role": "user", "content": "hi"},),
    temperature=0.0,
    max_tokens=8,
    json_schema={"type": "object"},
    schema_name="Reply",
    top_logprobs=3,
)


def test_openai_body() -> None:
    body = openai_chat_body("m", REQUEST)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Reply", "schema": {"type": "object"}},
    }
    assert (body["max_tokens"], body["logprobs"], body["top_logprobs"]) == (8, True, 3)
    assert body["stream"] is False


def test_local_json_is_one_line_with_no_extra_keys() -> None:
    local = LocalProvider(model="some.gguf")
    schema = local.json_schema(Outer)
    assert schema["x-guidance"]["whitespace_flexible"] is False
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Inner"]["additionalProperties"] is False  # nested objects too
    assert schema["properties"]["title"]["maxLength"] == local.max_string_length
    body = local._body(REQUEST)
    assert "response_format" not in body  # it would drop x-guidance: sent as a grammar
    assert body["grammar"] == '%llguidance {}\nstart: %json {"type": "object"}'
    assert closed_objects({"type": "object", "properties": {}, "additionalProperties": True}) == {
        "type": "object",
        "properties": {},
        "additionalProperties": True,  # an explicit choice is kept
    }


def test_local_body_continues_a_prefilled_reply_under_its_grammar() -> None:
    local = LocalProvider(model="some.gguf")
    request = replace(REQUEST, json_schema=None, prefill='{"score": ', grammar="start: /[0-9]/")
    body = local._body(request)
    assert body["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": '{"score": '},  # llama.cpp continues the last one
    ]
    assert body["grammar"] == "start: /[0-9]/" and "response_format" not in body
    assert local._body(REQUEST)["messages"] == [{"role": "user", "content": "hi"}]  # no prefill


@pytest.mark.parametrize(
    "provider",
    [
        OpenAICompatibleProvider(base_url="http://127.0.0.1:9/v1", model="m"),
        OllamaProvider(base_url="http://127.0.0.1:9", model="m"),
    ],
)
def test_only_the_local_provider_continues_a_reply(provider) -> None:
    assert not provider.supports_prefill
    with pytest.raises(LLMError, match="does not continue a given reply"):  # before any request
        provider.continue_with_logprobs(REQUEST.messages, '{"a": ', "start: /x/")


class NoLogprobs(LocalProvider):
    """A local provider whose server answers with text but without the logprobs asked for."""

    def _send(self, request: ChatRequest) -> Completion:
        return Completion("7}", 3, 2, 0.01, self.model)


NO_LOGPROBS = "local model some.gguf: the server returned no logprobs"


def test_a_reply_without_the_logprobs_asked_for_is_one_error() -> None:
    provider = NoLogprobs(model="some.gguf")
    messages = REQUEST.messages
    for ask in (
        lambda: provider.complete_with_logprobs(messages, 5),
        lambda: provider.continue_with_logprobs(messages, '{"a": ', "start: /x/", 5),
    ):
        with pytest.raises(LLMError, match=re.escape(NO_LOGPROBS)):
            ask()


def test_ollama_body() -> None:
    body = ollama_chat_body("qwen", REQUEST)
    assert body["format"] == {"type": "object"}
    assert body["options"] == {"temperature": 0.0, "num_predict": 8}
    assert body["stream"] is False


def test_replies_without_content_are_retryable() -> None:
    with pytest.raises(RetryableError):
        parse_openai_reply({"choices": []}, 0.1, "m")
    with pytest.raises(RetryableError):
        parse_ollama_reply({"done": True}, 0.1, "m")
