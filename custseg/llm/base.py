"""What every provider returns and raises, and the retry loop they share."""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from custseg.errors import LLMError, RetryableError
from custseg.llm.schema import capped_json_schema, json_schema_name

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}
T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")

# HTTP statuses worth another try: the server is busy or briefly broken, not the request.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
DEFAULT_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
DEFAULT_MAX_STRING_LENGTH = 600


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token; attribute names match OpenAI's so deepeval can read them as is."""

    token: str
    logprob: float
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str
    finish_reason: str = "stop"  # "length" when max_tokens cut the reply
    logprobs: tuple[TokenLogprob, ...] | None = field(default=None, repr=False)
    # Server-side compute time, when the server reports it (llama.cpp, Ollama).
    prompt_ms: float | None = None
    generation_ms: float | None = None

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per wall-clock second (prompt processing included)."""
        return self.completion_tokens / self.latency_s if self.latency_s > 0 else 0.0

    @property
    def generation_tokens_per_s(self) -> float | None:
        """Generation speed by the server's own clock (None if it did not say)."""
        if not self.generation_ms:
            return None
        return self.completion_tokens / (self.generation_ms / 1000)

    @property
    def prompt_tokens_per_s(self) -> float | None:
        """Prompt-processing speed by the server's own clock (None if it did not say)."""
        if not self.prompt_ms:
            return None
        return self.prompt_tokens / (self.prompt_ms / 1000)


@dataclass(frozen=True)
class ChatRequest:
    """One provider-neutral chat call; each provider turns it into its own wire format."""

    messages: tuple[Message, ...]
    temperature: float
    max_tokens: int
    json_schema: dict[str, Any] | None = None
    schema_name: str = "reply"
    top_logprobs: int | None = None
    # The reply's opening, written for the model, and the grammar of the rest (llama.cpp's).
    prefill: str = ""
    grammar: str | None = None


def backoff_delay(attempt: int, base_s: float = DEFAULT_BACKOFF_S) -> float:
    """Seconds to wait before retry number `attempt` (0-based): 0.5, 1, 2, … capped at 8."""
    return min(MAX_BACKOFF_S, base_s * 2**attempt)


def with_retries(
    call: Callable[[int], R], *, max_retries: int, describe: str, backoff_s: float
) -> R:
    """Run `call(attempt)` until it returns, retrying RetryableError up to max_retries times.

    Non-retryable LLMErrors pass straight through; the last retryable cause becomes an LLMError.
    """
    attempts = max_retries + 1
    for attempt in range(attempts):
        try:
            return call(attempt)
        except RetryableError as error:
            cause = str(error)
            if attempt + 1 < attempts:
                time.sleep(backoff_delay(attempt, backoff_s))
    # "requests", not "attempts": the agents count their own attempts of a task around this.
    plural = "s" if attempts > 1 else ""
    raise LLMError(f"{describe}: {cause} (after {attempts} request{plural})", attempts=attempts)


def parse_json_reply(text: str, schema: type[T]) -> T:
    """Validate a JSON reply against `schema`; RetryableError says what was wrong."""
    try:
        return schema.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            raise RetryableError(f"reply is not valid JSON: {_snippet(text)}") from None
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise RetryableError(
            f"reply does not match {schema.__name__}: {where}: {first['msg']}"
        ) from None


def _snippet(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return json.dumps(flat if len(flat) <= limit else flat[:limit] + "…", ensure_ascii=False)


class Provider(ABC):
    """A chat model behind one interface: plain text, schema-validated JSON, or logprobs.

    Retries: transport errors, timeouts and HTTP 408/409/425/429/5xx are retried up to
    `max_retries` times with exponential backoff; other HTTP errors fail at once. In
    `complete_json`, an invalid or non-validating reply is retried too, with the validation
    error fed back to the model; a reply cut off by `max_tokens` fails at once (the same budget
    would cut it again). Every failure is one `LLMError`.
    """

    name: str = "provider"
    supports_logprobs: bool = True
    supports_prefill: bool = False  # continues a reply it is given the opening of
    calls_in_flight: int = 4  # calls a caller may make at once (a server queues the rest)

    def __init__(
        self,
        *,
        model: str,
        temperature: float = 0.0,
        max_tokens: int = 512,
        timeout: float = 120.0,
        max_retries: int = 2,
        max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
        backoff_s: float = DEFAULT_BACKOFF_S,
    ) -> None:
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_string_length = max_string_length
        self.backoff_s = backoff_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"

    @property
    def describe(self) -> str:
        """`provider model` prefix for error messages."""
        return f"{self.name} model {self.model}"

    @abstractmethod
    def _send(self, request: ChatRequest) -> Completion:
        """One HTTP round trip; raise RetryableError or LLMError on failure."""

    def _request(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None,
        temperature: float | None,
        json_schema: dict[str, Any] | None = None,
        schema_name: str = "reply",
        top_logprobs: int | None = None,
    ) -> ChatRequest:
        return ChatRequest(
            messages=tuple(dict(m) for m in messages),
            temperature=self.temperature if temperature is None else temperature,
            max_tokens=self.max_tokens if max_tokens is None else max_tokens,
            json_schema=json_schema,
            schema_name=schema_name,
            top_logprobs=top_logprobs,
        )

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        """Send a chat and return the reply text with token counts and latency."""
        request = self._request(messages, max_tokens=max_tokens, temperature=temperature)
        return self._retrying(lambda _attempt: self._send(request))

    def complete_with_logprobs(
        self,
        messages: Sequence[Message],
        top_logprobs: int = 20,
        *,
        schema: type[BaseModel] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        """Like `complete`, plus the `top_logprobs` most likely tokens at each generated position.

        With `schema`, the output is constrained to its JSON schema (not validated here).
        """
        if not self.supports_logprobs:
            raise LLMError(f"{self.describe}: this provider does not return logprobs")
        request = self._request(
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            json_schema=self.json_schema(schema) if schema else None,
            schema_name=json_schema_name(schema) if schema else "reply",
            top_logprobs=top_logprobs,
        )
        return self._with_logprobs(request)

    def continue_with_logprobs(
        self,
        messages: Sequence[Message],
        prefill: str,
        grammar: str,
        top_logprobs: int = 20,
        *,
        max_tokens: int | None = None,
    ) -> Completion:
        """The reply that starts with `prefill` and goes on as `grammar` allows, with logprobs
        of the generated tokens only (the prefill is read as prompt: no token spent on it).
        The text includes `prefill`."""
        if not self.supports_prefill:
            raise LLMError(f"{self.describe}: this provider does not continue a given reply")
        base = self._request(
            messages, max_tokens=max_tokens, temperature=None, top_logprobs=top_logprobs
        )
        completion = self._with_logprobs(replace(base, prefill=prefill, grammar=grammar))
        if not completion.text.startswith(prefill):  # a server that returns only the rest
            completion = replace(completion, text=prefill + completion.text)
        return completion

    def _with_logprobs(self, request: ChatRequest) -> Completion:
        """Send `request` (retrying) and insist on the logprobs it asked for."""
        completion = self._retrying(lambda _attempt: self._send(request))
        if completion.logprobs is None:
            raise LLMError(f"{self.describe}: the server returned no logprobs")
        return completion

    def complete_json(
        self,
        messages: Sequence[Message],
        schema: type[T],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> tuple[T, Completion]:
        """Ask for JSON constrained to `schema` and return (validated instance, Completion)."""
        base = self._request(
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            json_schema=self.json_schema(schema),
            schema_name=json_schema_name(schema),
        )
        feedback: list[Message] = []

        def attempt(_n: int) -> tuple[T, Completion]:
            request = replace(base, messages=base.messages + tuple(feedback))
            completion = self._send(request)
            try:
                return parse_json_reply(completion.text, schema), completion
            except RetryableError as error:
                if completion.finish_reason == "length":
                    raise LLMError(
                        f"{self.describe}: reply cut off at max_tokens={request.max_tokens} "
                        f"before the JSON was complete; raise llm.max_tokens"
                    ) from None
                # Show the model its mistake so the next attempt can differ even at temperature 0.
                feedback[:] = [
                    {"role": "assistant", "content": completion.text},
                    {"role": "user", "content": f"Invalid: {error}. Reply with corrected JSON."},
                ]
                raise

        return self._retrying(attempt)

    def json_schema(self, schema: type[BaseModel]) -> dict[str, Any]:
        """The JSON schema sent to the server: `schema`'s, with every string length-capped."""
        return capped_json_schema(schema, self.max_string_length)

    def _retrying(self, call: Callable[[int], R]) -> R:
        return with_retries(
            call, max_retries=self.max_retries, describe=self.describe, backoff_s=self.backoff_s
        )
