"""A deepeval judge (`DeepEvalBaseLLM`) over any provider, with logprobs for GEval."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from custseg.telemetry import disable_telemetry

disable_telemetry()  # before deepeval is imported: it reads its opt-out at import and exit

from deepeval.models import DeepEvalBaseLLM  # noqa: E402
from deepeval.models.utils import EvaluationCost  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from custseg.errors import LLMError  # noqa: E402
from custseg.llm.base import Completion, Provider  # noqa: E402


def as_chat_completion(completion: Completion) -> SimpleNamespace:
    """The attributes deepeval reads from an OpenAI ChatCompletion, and nothing more.

    GEval takes `choices[0].message.content` and, to weight the score by probability,
    `choices[0].logprobs.content[i].token / .logprob / .top_logprobs[j].token / .logprob`.
    """
    logprobs = SimpleNamespace(content=list(completion.logprobs or ()))
    choice = SimpleNamespace(
        message=SimpleNamespace(content=completion.text),
        logprobs=logprobs,
        finish_reason=completion.finish_reason,
    )
    return SimpleNamespace(choices=[choice], model=completion.model)


class ProviderJudge(DeepEvalBaseLLM):
    """Lets deepeval metrics (GEval, …) use a custseg provider as their judge.

    `raw_schema`, when given, constrains the output of `generate_raw_response` (the call
    GEval makes to get logprobs), e.g. to a score-first {"score", "reason"} model.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        raw_schema: type[BaseModel] | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.provider = provider
        self.raw_schema = raw_schema
        self.max_tokens = max_tokens
        super().__init__(model=provider.model)

    def load_model(self, *args: Any, **kwargs: Any) -> Provider:
        return self.provider

    def get_model_name(self, *args: Any, **kwargs: Any) -> str:
        return f"{self.provider.name}:{self.provider.model}"

    def _messages(self, prompt: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": prompt}]

    def generate(self, prompt: str, schema: type[BaseModel] | None = None, **_: Any) -> Any:
        """The reply text, or a validated `schema` instance when a schema is given."""
        if schema is None:
            return self.provider.complete(self._messages(prompt), max_tokens=self.max_tokens).text
        instance, _completion = self.provider.complete_json(
            self._messages(prompt), schema, max_tokens=self.max_tokens
        )
        return instance

    async def a_generate(self, prompt: str, schema: type[BaseModel] | None = None, **_: Any) -> Any:
        return await asyncio.to_thread(self.generate, prompt, schema)

    def supports_log_probs(self) -> bool:
        return self.provider.supports_logprobs

    def generate_raw_response(
        self, prompt: str, top_logprobs: int = 5, **_: Any
    ) -> tuple[SimpleNamespace, EvaluationCost]:
        """(ChatCompletion-like reply with logprobs, zero cost carrying token counts).

        deepeval falls back to `generate(prompt, schema)` on AttributeError, so a provider
        without logprobs raises exactly that.
        """
        if not self.provider.supports_logprobs:
            raise AttributeError(f"{self.provider.name} provider returns no logprobs")
        completion = self.provider.complete_with_logprobs(
            self._messages(prompt),
            top_logprobs=top_logprobs,
            schema=self.raw_schema,
            max_tokens=self.max_tokens,
        )
        if self.raw_schema is not None and completion.finish_reason == "length":
            raise LLMError(
                f"{self.provider.describe}: judge reply cut off at max_tokens; raise max_tokens "
                f"or cap the schema's strings"
            )
        cost = EvaluationCost(0.0, completion.prompt_tokens, completion.completion_tokens)
        return as_chat_completion(completion), cost

    async def a_generate_raw_response(
        self, prompt: str, top_logprobs: int = 5, **_: Any
    ) -> tuple[SimpleNamespace, EvaluationCost]:
        return await asyncio.to_thread(self.generate_raw_response, prompt, top_logprobs)
