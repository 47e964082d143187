"""Benchmark of the eval stage's judging against deepeval's default GEval, same judge, same run.

1. Ours, cold cache: judge calls (goal: one per judge question: one per metric, two for the
   pair asked in both orders, none for a helpfulness asked already) and wall time.
2. Ours, re-run: judge calls (goal: 0) and wall time.
3. deepeval's default GEval on the same conversations and judge: criteria only (so deepeval
   generates the evaluation steps), stock template, no cache. One metric instance per
   definition, reused across conversations (deepeval then generates steps once per metric).
   Goal: our cold wall time ≤ 0.5× this. Run on a quiet machine: the two sides run one after
   the other, each in its natural order (ours in `custseg.evaluation.items.scoring_order`,
   deepeval conversation by conversation, all metrics each, as `deepeval.evaluate` does).

    python bench/bench_eval.py [--conversations data/conversations.jsonl] [--n 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from custseg.config import load_params
from custseg.evaluation.adapter import ProviderJudge
from custseg.evaluation.items import conversation_items, read_conversations
from custseg.evaluation.judge import CachedJudge
from custseg.evaluation.judge_cache import JudgeCache
from custseg.evaluation.scorer import Scorer, score_items
from custseg.evaluation.specs import METRICS
from custseg.llm import load_provider
from custseg.paths import CONVERSATIONS, PARAMS

ROOT = Path(__file__).resolve().parents[1]  # the checkout whose conversations are judged
RATIO_GOAL = 0.5
FALLBACK = ROOT / "tests" / "data" / "conversations_small.jsonl"
# The same four questions, as deepeval's documentation would phrase them: criteria only.
CRITERIA = {
    "plan_quality": "Determine whether the actual output is a relevant, concrete plan for the "
    "input task.",
    "helpfulness": "Determine whether the actual output helpfully and correctly answers the "
    "input task.",
    "improvement": "Determine whether Answer B in the actual output is better than Answer A "
    "as a reply to the input task.",
    "grounding": "Determine whether the actual output uses only the customer segments, and "
    "figures, given in the input's segment profile.",
}


class Tally:
    """A provider that counts the judge calls made through it and their tokens (as the
    provider reports them); everything else is the provider's."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider
        self.calls = self.prompt_tokens = self.completion_tokens = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)

    def _count(self, completion: Any) -> Any:
        self.calls += 1
        self.prompt_tokens += completion.prompt_tokens or 0
        self.completion_tokens += completion.completion_tokens or 0
        return completion

    def complete(self, *args: Any, **kwargs: Any) -> Any:
        return self._count(self._provider.complete(*args, **kwargs))

    def complete_with_logprobs(self, *args: Any, **kwargs: Any) -> Any:
        return self._count(self._provider.complete_with_logprobs(*args, **kwargs))

    def continue_with_logprobs(self, *args: Any, **kwargs: Any) -> Any:  # ours: score prefilled
        return self._count(self._provider.continue_with_logprobs(*args, **kwargs))

    def complete_json(self, *args: Any, **kwargs: Any) -> Any:
        instance, completion = self._provider.complete_json(*args, **kwargs)
        self._count(completion)
        return instance, completion

    def line(self) -> str:
        return (
            f"{self.calls} judge calls, {self.prompt_tokens} prompt + "
            f"{self.completion_tokens} completion tokens"
        )


def make_scorer(provider: Any, cache: JudgeCache, params: Any) -> Scorer:
    judge = CachedJudge(
        provider, cache, max_tokens=params.eval.max_tokens, top_logprobs=params.eval.top_logprobs
    )
    return Scorer(judge, params.eval.thresholds.model_dump())


def stock_metrics(provider: Any, params: Any) -> dict[str, Any]:
    """deepeval's documented way: criteria only, stock template, the provider adapter."""
    from deepeval.metrics import GEval
    from deepeval.test_case import SingleTurnParams

    judge = ProviderJudge(provider, max_tokens=params.eval.max_tokens * 2)
    return {
        key: GEval(
            name=key,
            criteria=criteria,
            evaluation_params=[SingleTurnParams.INPUT, SingleTurnParams.ACTUAL_OUTPUT],
            model=judge,
            async_mode=False,
            verbose_mode=False,
        )
        for key, criteria in CRITERIA.items()
    }


def stock_score(metrics: dict[str, Any], item: Any) -> str | None:
    from deepeval.test_case import LLMTestCase

    try:
        metrics[METRICS[item.metric]].measure(
            LLMTestCase(input=item.task, actual_output=item.output), _show_indicator=False
        )
    except Exception as error:  # count it; the default path can fail on a small judge
        return f"{type(error).__name__}: {error}"
    return None


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=Path, default=ROOT / CONVERSATIONS)
    parser.add_argument("--params", type=Path, default=ROOT / PARAMS)
    parser.add_argument("--n", type=int, default=3, help="conversations to score")
    args = parser.parse_args()
    params = load_params(args.params)
    source = args.conversations
    complete = read_conversations(source).complete[: args.n] if source.is_file() else []
    if not complete:  # nothing captured yet: the test file's conversations
        source = FALLBACK
        complete = read_conversations(source).complete[: args.n]
    # The judge's questions only: grounding_check needs no judge, on either side.
    items = [
        i
        for c in complete
        for i in conversation_items(c, params.base.seed)
        if METRICS[i.metric] is not None
    ]
    provider = load_provider(args.params)
    print(f"{len(complete)} conversation(s) from {source}, {len(items)} scores, {provider}")
    provider.complete([{"role": "user", "content": "Say OK."}], max_tokens=2)  # load it first

    # Each side runs as it would for a user: ours as the stage does (`scoring_order`), the
    # default as deepeval.evaluate does (conversation by conversation, all metrics each).
    cold_tally = Tally(provider)
    with tempfile.TemporaryDirectory() as tmp:
        cache = JudgeCache(Path(tmp))
        scorer = make_scorer(cold_tally, cache, params)
        cold_s, rows = timed(lambda: score_items(scorer, items))
        cold_stats, cold_errors = scorer.judge.stats, sum(r["error"] is not None for r in rows)
        ours = scorer.judge.get_model_name()
        warm = make_scorer(Tally(provider), cache, params)
        warm_s, _ = timed(lambda: score_items(warm, items))
        warm_stats = warm.judge.stats
    print(f"ours: {cold_s:.1f} s for {len(items)} scores", flush=True)
    stock_tally = Tally(provider)
    stock = stock_metrics(stock_tally, params)
    stock_s, errors = timed(lambda: [stock_score(stock, item) for item in items])
    stock_errors = sum(error is not None for error in errors)

    questions = sum(i.judge_calls for i in items)
    print(f"judge: {ours} (both sides)")
    print(f"ours, cold: {cold_stats.calls} judge calls for {questions} questions (goal: equal)")
    print(f"  {cold_tally.line()}, {cold_errors} errors, {cold_s:.1f} s")
    print(
        f"ours, re-run: {warm_stats.calls} calls, {warm_stats.hits} hits (goal 0 calls), "
        f"{warm_s:.2f} s"
    )
    print(f"deepeval default GEval: {stock_tally.line()}, {stock_errors} errors, {stock_s:.1f} s")
    ratio = cold_s / stock_s if stock_s else float("nan")
    verdict = "met" if ratio <= RATIO_GOAL else "NOT met"
    print(f"wall time ours/default: {ratio:.2f} (goal ≤ {RATIO_GOAL}: {verdict})")
    if stock_tally.prompt_tokens:
        tokens = (cold_tally.prompt_tokens + cold_tally.completion_tokens) / (
            stock_tally.prompt_tokens + stock_tally.completion_tokens
        )
        print(f"judge tokens ours/default: {tokens:.2f}")


if __name__ == "__main__":
    main()
