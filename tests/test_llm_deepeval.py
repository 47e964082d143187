"""The deepeval judge adapter on the real local model, including GEval's logprob path."""

from __future__ import annotations

import asyncio
import math

import pytest
from deepeval.metrics import GEval
from deepeval.metrics.g_eval.utils import calculate_weighted_summed_score
from deepeval.test_case import LLMTestCase, SingleTurnParams
from pydantic import BaseModel, Field

from custseg.evaluation.adapter import ProviderJudge, as_chat_completion
from custseg.llm.providers import LocalProvider


class ScoreFirst(BaseModel):
    """Score before reason: a small judge copies less from the reason into the score."""

    score: int = Field(ge=0, le=10)
    reason: str = Field(max_length=100)  # fits in the judge's max_tokens


class Capital(BaseModel):
    capital: str


@pytest.fixture
def judge(local_provider: LocalProvider) -> ProviderJudge:
    return ProviderJudge(local_provider, raw_schema=ScoreFirst, max_tokens=48)


def test_generate_text_and_schema(judge: ProviderJudge) -> None:
    assert judge.generate("Say OK.").strip()
    answer = judge.generate("What is the capital of France? Answer as JSON.", schema=Capital)
    assert answer == Capital(capital="Paris")
    assert asyncio.run(judge.a_generate("Say OK.")).strip()
    assert judge.get_model_name() == f"local:{judge.provider.model}"


class Digit(BaseModel):
    score: int = Field(ge=0, le=9)  # one digit: Qwen splits "10" into two tokens
    reason: str = Field(max_length=60)


def test_raw_response_carries_what_geval_reads(local_provider: LocalProvider) -> None:
    judge = ProviderJudge(local_provider, raw_schema=Digit, max_tokens=40)
    prompt = 'Rate from 0 to 9 how correct "2 + 2 = 4" is. JSON with score and reason.'
    raw, cost = judge.generate_raw_response(prompt, top_logprobs=20)
    assert cost == 0.0 and cost.input_tokens > 0 and cost.output_tokens > 0
    parsed = Digit.model_validate_json(raw.choices[0].message.content)
    weighted = calculate_weighted_summed_score(parsed.score, raw)
    assert 0 <= weighted <= 9 and not math.isnan(weighted)


def test_geval_uses_the_probability_weighted_path(local_provider: LocalProvider) -> None:
    calls: list[int] = []

    class CountingJudge(ProviderJudge):
        def generate_raw_response(self, prompt: str, top_logprobs: int = 5, **kw):
            calls.append(top_logprobs)
            return super().generate_raw_response(prompt, top_logprobs, **kw)

    metric = GEval(
        name="Correctness",
        evaluation_steps=["Check the actual output answers the input correctly."],
        evaluation_params=[SingleTurnParams.INPUT, SingleTurnParams.ACTUAL_OUTPUT],
        model=CountingJudge(local_provider, raw_schema=ScoreFirst, max_tokens=48),
        async_mode=False,
        verbose_mode=False,
    )
    score = metric.measure(LLMTestCase(input="What is 2 + 2?", actual_output="4"))
    assert calls == [20]
    assert 0.0 <= score <= 1.0 and metric.reason


def test_prefilled_reply_is_the_score_first_json_without_its_opening_tokens(
    local_provider: LocalProvider,
) -> None:
    """The local judge reads `{"score": ` as prompt: the reply still parses as the judge's
    ScoreFirst (reason capped), its first generated token is the score, and it spends fewer
    generated tokens than the one-shot reply to the same prompt, with a close weighted score."""
    from custseg.evaluation.judge import REASON_MAX_CHARS, SCORE_PREFILL, CachedJudge, score_view
    from custseg.evaluation.judge import ScoreFirst as JudgeReply

    prompt = (
        'Rate from 0 to 10 how correct "2 + 2 = 5" is, with a long, detailed reason. '
        'Reply with JSON only: {"score": <integer 0-10>, "reason": "<reason>"}.'
    )
    judge = CachedJudge(local_provider, None, max_tokens=64)
    raw, cost = judge.generate_raw_response(prompt, top_logprobs=20)
    prefilled = JudgeReply.model_validate_json(raw.choices[0].message.content)
    assert raw.choices[0].message.content.startswith(SCORE_PREFILL)
    assert len(prefilled.reason) <= REASON_MAX_CHARS
    first = raw.choices[0].logprobs.content[0]
    assert first.token.strip().isdecimal()  # nothing generated before the score

    one_shot = local_provider.complete_with_logprobs(
        [{"role": "user", "content": prompt}], 20, schema=JudgeReply, max_tokens=64
    )
    one_shot_reply = JudgeReply.model_validate_json(one_shot.text)
    assert [t.token for t in one_shot.logprobs[:2]] == ['{"', "score"]  # generated one by one
    assert cost.output_tokens <= one_shot.completion_tokens - 3
    weighted = [
        calculate_weighted_summed_score(reply.score, view)
        for reply, view in (
            (prefilled, raw),
            (one_shot_reply, as_chat_completion(score_view(one_shot))),
        )
    ]
    assert abs(weighted[0] - weighted[1]) <= 1.0
