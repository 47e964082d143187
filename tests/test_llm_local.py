"""The bundled model through the local provider: real llama.cpp, real generations."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, field_validator

from custseg.errors import LLMError
from custseg.llm.local_server import running_servers
from custseg.llm.models import DEFAULT_MODEL_ID
from custseg.llm.providers import LocalProvider

ROOT = Path(__file__).resolve().parents[1]


class Person(BaseModel):
    name: str
    age: int


class Story(BaseModel):
    story: str


class Rejected(BaseModel):
    word: str

    @field_validator("word")
    @classmethod
    def never(cls, value: str) -> str:
        raise ValueError("no word is ever accepted")


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def sibling(provider: LocalProvider, **options) -> LocalProvider:
    """Another provider on the same model and server, with some options changed."""
    settings = {
        "model": provider.model,
        "context_size": provider.context_size,
        "threads": provider.threads,
        "max_tokens": provider.max_tokens,
        "backoff_s": provider.backoff_s,
    }
    return LocalProvider(**{**settings, **options})


def test_plain_completion(local_provider: LocalProvider) -> None:
    reply = local_provider.complete(ask("Say hello in three words."), max_tokens=16)
    assert reply.text.strip()
    assert reply.prompt_tokens > 0 and 0 < reply.completion_tokens <= 16
    assert reply.latency_s > 0
    assert reply.model == DEFAULT_MODEL_ID
    assert reply.generation_tokens_per_s and reply.prompt_tokens_per_s  # llama.cpp's timings


def test_max_tokens_cuts_a_plain_reply(local_provider: LocalProvider) -> None:
    reply = local_provider.complete(ask("Count from 1 to 50."), max_tokens=3)
    assert (reply.finish_reason, reply.completion_tokens) == ("length", 3)


def test_json_completion_validates(local_provider: LocalProvider) -> None:
    person, reply = local_provider.complete_json(
        ask("Extract the person as JSON: Alice turned 30 yesterday."), Person, max_tokens=32
    )
    assert person == Person(name="Alice", age=30)
    assert reply.finish_reason == "stop"
    assert reply.text == '{"name": "Alice", "age": 30}'  # one line: no tokens spent on layout


def test_string_fields_are_capped_by_the_grammar(local_provider: LocalProvider) -> None:
    capped = sibling(local_provider, max_string_length=20)
    story, reply = capped.complete_json(
        ask("Write a very long story about a dragon, as JSON."), Story, max_tokens=32
    )
    assert 0 < len(story.story) <= 20
    assert reply.finish_reason == "stop"


def test_truncated_json_fails_at_once_naming_max_tokens(local_provider: LocalProvider) -> None:
    with pytest.raises(LLMError) as caught:
        local_provider.complete_json(ask("Extract: Bob is 41."), Person, max_tokens=4)
    message = str(caught.value)
    assert message.startswith(f"local model {DEFAULT_MODEL_ID}: reply cut off at max_tokens=4")
    assert caught.value.attempts == 1


def test_schema_violation_is_retried_then_reported(local_provider: LocalProvider) -> None:
    provider = sibling(local_provider, max_retries=1)
    with pytest.raises(LLMError) as caught:
        provider.complete_json(ask("Give one word as JSON."), Rejected, max_tokens=24)
    message = str(caught.value)
    assert message.startswith(f"local model {DEFAULT_MODEL_ID}: reply does not match Rejected")
    assert "no word is ever accepted" in message and message.endswith("(after 2 requests)")
    assert caught.value.attempts == 2


def test_logprobs_of_generated_tokens(local_provider: LocalProvider) -> None:
    reply = local_provider.complete_with_logprobs(
        ask("Rate from 0 to 9 how polite 'thank you' is. Answer one digit."),
        top_logprobs=5,
        max_tokens=2,
    )
    assert reply.logprobs
    first = reply.logprobs[0]
    assert first.logprob <= 0 and 1 <= len(first.top_logprobs) <= 5
    assert first.token in {t.token for t in first.top_logprobs}


def test_one_server_per_process(local_provider: LocalProvider) -> None:
    other = sibling(local_provider)
    assert other.server() is local_provider.server()
    assert len(running_servers()) == 1
    assert local_provider.server().url.startswith("http://127.0.0.1:")


def test_missing_gguf_path_is_an_llm_error(local_provider: LocalProvider, tmp_path: Path) -> None:
    provider = sibling(local_provider, model=str(tmp_path / "absent.gguf"))
    with pytest.raises(LLMError, match=r"absent\.gguf: file not found$"):
        provider.complete(ask("hi"))


def cli_env(**extra: str) -> dict[str, str]:
    """This environment without CUSTSEG_* or API-key variables, plus `extra`."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("CUSTSEG_") and "API_KEY" not in k
    }
    return {**clean, **extra}


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custseg", "llm", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=cli_env(**env),
    )


def test_cli_check_sends_one_prompt(llm_model_path: Path) -> None:
    done = cli(
        "check", "--prompt", "Say OK.", "--max-tokens", "4",
        CUSTSEG_LLM_PROVIDER="local", CUSTSEG_MODEL_DIR=str(llm_model_path.parent),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"provider local, model {DEFAULT_MODEL_ID}" in done.stdout
    assert "model loaded in" in done.stdout and "tok/s" in done.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cli_serve_shares_the_model_with_other_processes(llm_model_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "custseg", "llm", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=cli_env(CUSTSEG_LLM_PROVIDER="local", CUSTSEG_MODEL_DIR=str(llm_model_path.parent)),
    )
    try:
        ready, _, _ = select.select([server.stdout], [], [], 120)
        assert ready, "serve printed nothing within 120 s"
        assert f"at http://127.0.0.1:{port}/v1 (no API key" in server.stdout.readline()
        done = cli(
            "check", "--prompt", "Say OK.", "--max-tokens", "4",
            CUSTSEG_LLM_PROVIDER="openai", CUSTSEG_LLM_BASE_URL=f"http://127.0.0.1:{port}/v1",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (
            f"provider openai, model {DEFAULT_MODEL_ID}, http://127.0.0.1:{port}/v1" in done.stdout
        )
    finally:
        server.terminate()
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert out.strip().endswith("stopped")
