"""Bundled model through the provider vs llama.cpp called directly, in the same run.

One in-process llama.cpp server; three ways to call it, interleaved:
  provider    LocalProvider.complete (our HTTP client, retries, parsing)
  bare-http   one urllib POST to the same server, nothing else
  in-process  xllamacpp's handle_chat_completions (no HTTP at all)
Two workloads: generation (short prompt, --gen-tokens tokens) and prompt processing (long
prompt, 1 token). Every prompt starts with a fresh tag, so no call profits from the prompt cache.

The overhead of a call is its wall time divided by the compute time llama.cpp reports for that
same request (prompt_ms + predicted_ms); dividing by the same request's own compute time keeps
a busy machine from skewing the comparison. Goal: provider / in-process <= 1.05.

    python bench/bench_llm.py [--reps 3] [--gen-tokens 64] [--prompt-paragraphs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from custseg.llm.local_server import LocalServer, available_cores
from custseg.llm.models import DEFAULT_MODEL_ID, require_model
from custseg.llm.providers import LocalProvider
from custseg.telemetry import disable_telemetry

PARAGRAPH = (
    "Customer segmentation splits a mall's shoppers into groups by annual income and spending "
    "score so that marketing can treat each group differently. "
)
WORKLOADS = ("generation", "prompt")


@dataclass(frozen=True)
class Run:
    wall_s: float
    compute_s: float  # llama.cpp's own prompt + generation time for this request
    prompt_tokens: int
    completion_tokens: int
    prompt_ms: float
    generation_ms: float

    @property
    def overhead(self) -> float:
        return self.wall_s / self.compute_s


Caller = Callable[[list[dict[str, str]], int], Run]


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux


def _run(
    wall_s: float, prompt_tokens: int, completion_tokens: int, p_ms: float, g_ms: float
) -> Run:
    return Run(wall_s, (p_ms + g_ms) / 1000, prompt_tokens, completion_tokens, p_ms, g_ms)


def via_provider(provider: LocalProvider) -> Caller:
    def call(messages: list[dict[str, str]], max_tokens: int) -> Run:
        reply = provider.complete(messages, max_tokens=max_tokens)
        p_ms, g_ms = reply.prompt_ms or 0.0, reply.generation_ms or 0.0
        return _run(reply.latency_s, reply.prompt_tokens, reply.completion_tokens, p_ms, g_ms)

    return call


def _body(messages: list[dict[str, str]], max_tokens: int) -> dict:
    return {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0}


def _from_reply(reply: dict, wall_s: float) -> Run:
    usage, timings = reply["usage"], reply["timings"]
    return _run(
        wall_s,
        usage["prompt_tokens"],
        usage["completion_tokens"],
        timings["prompt_ms"],
        timings["predicted_ms"],
    )


def via_bare_http(server: LocalServer) -> Caller:
    def call(messages: list[dict[str, str]], max_tokens: int) -> Run:
        request = urllib.request.Request(
            f"{server.url}/v1/chat/completions",
            data=json.dumps(_body(messages, max_tokens)).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {server.api_key}",
            },
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=900) as response:
            reply = json.loads(response.read())
        return _from_reply(reply, time.perf_counter() - started)

    return call


def via_in_process(server: LocalServer) -> Caller:
    def call(messages: list[dict[str, str]], max_tokens: int) -> Run:
        started = time.perf_counter()
        reply = server.handle.handle_chat_completions(_body(messages, max_tokens))
        return _from_reply(reply, time.perf_counter() - started)

    return call


def workloads(tag: str, gen_tokens: int, paragraphs: int) -> dict[str, tuple[list, int]]:
    """Generation-heavy (short prompt, many tokens) and prompt-heavy (long prompt, 1 token)."""
    count = [{"role": "user", "content": f"[{tag}] Count from 1 to 500, separated by commas."}]
    long = [{"role": "user", "content": f"[{tag}] Summarise:\n" + PARAGRAPH * paragraphs}]
    return {"generation": (count, gen_tokens), "prompt": (long, 1)}


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(results: dict[tuple[str, str], list[Run]], paths: list[str]) -> float:
    """Print the table; return the provider's worst overhead ratio against in-process."""
    print(
        f"\n{'workload':<11} {'path':<11} {'wall s':>7} {'tok/s':>7} {'overhead':>9} {'ratio':>7}"
    )
    worst = 0.0
    for workload in WORKLOADS:
        base = median([r.overhead for r in results[(workload, "in-process")]])
        for name in paths:
            runs = results[(workload, name)]
            if workload == "generation":
                speed = median([r.completion_tokens / (r.generation_ms / 1000) for r in runs])
            else:
                speed = median([r.prompt_tokens / (r.prompt_ms / 1000) for r in runs])
            overhead = median([r.overhead for r in runs])
            ratio = overhead / base
            print(
                f"{workload:<11} {name:<11} {median([r.wall_s for r in runs]):>7.2f} "
                f"{speed:>7.1f} {overhead:>8.3f}x {ratio:>6.3f}x"
            )
            if name == "provider":
                worst = max(worst, ratio)
    print("(tok/s by llama.cpp's clock; overhead = wall / compute; ratio = vs in-process)")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="runs per path and workload")
    parser.add_argument("--gen-tokens", type=int, default=64, help="tokens per generation run")
    parser.add_argument(
        "--prompt-paragraphs", type=int, default=10, help="prompt size (~28 tokens each)"
    )
    args = parser.parse_args()
    disable_telemetry()

    path = require_model(DEFAULT_MODEL_ID)
    before = rss_mb()
    provider = LocalProvider(model=DEFAULT_MODEL_ID, threads=available_cores(), timeout=900)
    server = provider.server()
    size_gb = path.stat().st_size / 1e9
    print(f"model {DEFAULT_MODEL_ID} ({size_gb:.2f} GB), {provider.threads} threads")
    print(f"load: {server.load_s:.2f} s, RSS {before:.0f} -> {rss_mb():.0f} MB")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)

    callers = {
        "provider": via_provider(provider),
        "bare-http": via_bare_http(server),
        "in-process": via_in_process(server),
    }
    names = list(callers)
    callers["provider"]([{"role": "user", "content": "warm up"}], 4)  # first-call costs
    results: dict[tuple[str, str], list[Run]] = {}
    for rep in range(args.reps):
        for name in names[rep % 3 :] + names[: rep % 3]:  # rotate who goes first
            loads = workloads(f"{rep}-{name}", args.gen_tokens, args.prompt_paragraphs)
            for workload, (messages, max_tokens) in loads.items():
                run = callers[name](messages, max_tokens)
                results.setdefault((workload, name), []).append(run)
                print(
                    f"  rep {rep} {workload:<10} {name:<10} wall {run.wall_s:6.2f} s, "
                    f"compute {run.compute_s:6.2f} s",
                    flush=True,
                )
    worst = report(results, names)
    verdict = "OK" if worst <= 1.05 else "ABOVE GOAL"
    print(f"\nprovider vs in-process (worst workload): {worst:.3f}x, goal <= 1.05: {verdict}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB; load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
