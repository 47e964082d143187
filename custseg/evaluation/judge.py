"""The GEval judge: a score-first template, the score's reading, and call counting.

`CachedJudge` is `custseg.evaluation.adapter.ProviderJudge` with every judge call looked up in
a `JudgeCache` (custseg.evaluation.judge_cache) first, keyed by everything that changes the
reply (prompt, model, temperature, max_tokens, top_logprobs, output schema). Re-scoring
unchanged conversations costs no call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

from custseg.telemetry import disable_telemetry

disable_telemetry()  # before deepeval is imported: it reads its opt-out at import and exit

from deepeval.metrics.g_eval.g_eval import GEvalTemplate  # noqa: E402
from deepeval.models.utils import EvaluationCost  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from custseg.evaluation.adapter import ProviderJudge, as_chat_completion  # noqa: E402
from custseg.evaluation.judge_cache import (  # noqa: E402
    JudgeCache,
    cache_key,
    completion_from_dict,
    completion_to_dict,
)
from custseg.llm.base import Completion, Provider, TokenLogprob, TopLogprob  # noqa: E402

REASON_MAX_CHARS = 48  # the grammar ends a longer reason here: generated tokens are the slow part
REPLY_FORMAT = (
    'Reply with JSON only: {{"score": <integer {low}-{high}>, "reason": "<one short phrase>"}}.'
)


class ScoreFirst(BaseModel):
    """The judge's reply. Score first: a small model then cannot copy a digit from its reason
    into the score, and the score's token is the first digit of the reply (see `score_view`)."""

    score: int = Field(ge=0, le=10)
    reason: str = Field(max_length=REASON_MAX_CHARS)


# A provider that continues a given reply (llama.cpp) reads the reply's fixed opening as prompt
# instead of generating it token by token (4 of the ~20 tokens of a reply, each as slow as ~3
# prompt tokens on a CPU), then writes the rest under this grammar: the same one-line JSON
# ScoreFirst's schema allows.
SCORE_PREFILL = '{"score": '
_JSON_CHAR = r'(?:[^"\\\x00-\x1f]|\\["\\bfnrt]|\\u[0-9a-fA-F]{4})'
SCORE_FIRST_REST = (
    "%llguidance {}\n"
    'start: SCORE ", \\"reason\\": \\"" REASON "\\"}"\n'
    "SCORE: /10|[0-9]/\n"
    f"REASON: /{_JSON_CHAR}{{0,{REASON_MAX_CHARS}}}/\n"
)


def shown_reason(reason: str | None) -> str | None:
    """The judge's reason as stored: one cut off by the length cap ends at its last whole word,
    marked with an ellipsis."""
    if reason is None or len(reason) < REASON_MAX_CHARS:
        return reason
    whole = reason.rstrip()  # a space at the cut: the last word was complete
    if whole == reason and " " in whole:
        whole = whole[: whole.rfind(" ")]
    whole = whole.rstrip(" ,;:-")
    return whole if whole.endswith((".", "!", "?")) else f"{whole}…"


TEN_FROM = 5  # a reply scoring this or more reads a "1" beside its score as the start of "10"


def score_view(completion: Completion) -> Completion:
    """The completion with logprobs cut just after the score's first digit token, and "10"
    read as one score.

    deepeval searches the logprobs *backwards* for the score's token; with a score-first reply
    a digit in the reason would be found first. Cut there, the search finds the score.

    Qwen writes "10" as two tokens, "1" then "0", and deepeval reads every alternative token
    as the score it spells: the probability of "10" then counts as a score of 1, and a judge
    torn between 8 and 10 scores about 5 (a fifth to a third of the mass sat on "1" beside a
    sampled 8). So at the score's position a "1" is read as "10" when the reply is "10" or its
    score is at least TEN_FROM (beside a high score a "1" starts "10": 2-4 get almost none),
    and as 1 otherwise.
    """
    if not completion.logprobs:
        return completion
    tokens = completion.logprobs
    index = next((i for i, t in enumerate(tokens) if t.token.strip().isdecimal()), None)
    if index is None:
        return completion
    score = tokens[index]
    digit = score.token.strip()
    following = tokens[index + 1].token.strip() if index + 1 < len(tokens) else ""
    ten = (digit == "1" and following.startswith("0")) or int(digit[0]) >= TEN_FROM

    def read(token: str) -> str:
        return "10" if ten and token.strip() == "1" else token

    shown = TokenLogprob(
        read(score.token),
        score.logprob,
        tuple(TopLogprob(read(t.token), t.logprob) for t in score.top_logprobs),
    )
    return replace(completion, logprobs=(*tokens[:index], shown))


@dataclass
class CallStats:
    calls: int = 0
    hits: int = 0
    seconds: float = 0.0  # judge time actually spent (misses only)


class CachedJudge(ProviderJudge):
    """A `ProviderJudge` whose calls go through a `JudgeCache`; counts calls and hits.

    Only successful replies are stored, so a failed call is retried on the next run.
    """

    def __init__(
        self,
        provider: Provider,
        cache: JudgeCache | None,
        *,
        max_tokens: int = 96,
        top_logprobs: int = 20,
    ) -> None:
        super().__init__(provider, raw_schema=ScoreFirst, max_tokens=max_tokens)
        self.cache = cache
        self.top_logprobs = top_logprobs
        self.stats = CallStats()
        self.last_latency_s = 0.0  # of the reply last returned (the original call's, if cached)
        self._lock = threading.Lock()

    def settings(self, kind: str, schema: type[BaseModel] | None, top_logprobs: int | None) -> dict:
        """Everything besides the prompt that shapes the reply."""
        return {
            "model": self.provider.model,
            "temperature": self.provider.temperature,
            "max_tokens": self.max_tokens,
            "top_logprobs": top_logprobs,
            "schema": self.provider.json_schema(schema) if schema else None,
            "kind": kind,
        }

    def _cached(self, kind: str, prompt: str, settings: dict, call: Any) -> dict[str, Any]:
        key = cache_key(kind, prompt, settings)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            with self._lock:
                self.stats.hits += 1
            self.last_latency_s = float(hit.get("latency_s", 0.0))
            return hit
        with self._lock:
            self.stats.calls += 1
        value = call()
        self.last_latency_s = float(value.get("latency_s", 0.0))
        with self._lock:
            self.stats.seconds += self.last_latency_s
        if self.cache is not None:
            self.cache.put(key, value)
        return value

    def generate(self, prompt: str, schema: type[BaseModel] | None = None, **_: Any) -> Any:
        def call() -> dict[str, Any]:
            if schema is None:
                completion = self.provider.complete(
                    self._messages(prompt), max_tokens=self.max_tokens
                )
            else:
                _, completion = self.provider.complete_json(
                    self._messages(prompt), schema, max_tokens=self.max_tokens
                )
            return completion_to_dict(completion)

        kind = "json" if schema else "text"
        data = self._cached(kind, prompt, self.settings(kind, schema, None), call)
        return schema.model_validate_json(data["text"]) if schema else data["text"]

    def generate_raw_response(
        self, prompt: str, top_logprobs: int = 20, **_: Any
    ) -> tuple[SimpleNamespace, EvaluationCost]:
        if not self.provider.supports_logprobs:
            raise AttributeError(f"{self.provider.name} provider returns no logprobs")

        prefilled = self.provider.supports_prefill and self.raw_schema is ScoreFirst

        def call() -> dict[str, Any]:
            if prefilled:
                completion = self.provider.continue_with_logprobs(
                    self._messages(prompt),
                    SCORE_PREFILL,
                    SCORE_FIRST_REST,
                    top_logprobs,
                    max_tokens=self.max_tokens,
                )
            else:
                completion = self.provider.complete_with_logprobs(
                    self._messages(prompt),
                    top_logprobs=top_logprobs,
                    schema=self.raw_schema,
                    max_tokens=self.max_tokens,
                )
            return completion_to_dict(completion)

        settings = self.settings("raw", self.raw_schema, top_logprobs)
        if prefilled:  # not bit for bit the one-shot reply: batched prompt numerics differ
            settings["prefill"] = SCORE_PREFILL
        completion = completion_from_dict(self._cached("raw", prompt, settings, call))
        cost = EvaluationCost(0.0, completion.prompt_tokens, completion.completion_tokens)
        return as_chat_completion(score_view(completion)), cost


def relabel(test_case_content: str, labels: dict[str, str | None]) -> str:
    """deepeval's 'Input:' / 'Actual Output:' headings renamed to what they hold here; a
    heading mapped to None is dropped (its content carries its own labels)."""
    lines = []
    for line in test_case_content.splitlines():
        heading = line[:-1] if line.endswith(":") else None
        if heading in labels:
            if labels[heading] is not None:
                lines.append(f"{labels[heading]}:")
        else:
            lines.append(line)
    return "\n".join(lines).strip()


def score_first_template(header: str, labels: dict[str, str | None], question: str) -> type:
    """A GEvalTemplate for judges with a prompt cache: `header` (every metric's steps, the
    score range and the reply format: the same text for all metrics) first, then the case,
    then `question` naming the metric. The reply is asked score first, with no example score
    to copy, and the case's fields are named after what they hold (task, plan, answer…)."""

    class ScoreFirstTemplate(GEvalTemplate):
        @staticmethod
        def generate_evaluation_results(
            evaluation_steps: str,
            test_case_content: str,
            score_range: tuple[int, int] = (0, 10),
            **_: Any,
        ) -> str:
            if evaluation_steps not in header or f"{score_range[1]} means" not in header:
                raise ValueError("the shared header does not hold this metric's steps or range")
            return f"{header}{relabel(test_case_content, labels)}\n\n{question}\nJSON:"

    return ScoreFirstTemplate
