"""Settings: params.yaml `llm:` + CUSTSEG_LLM_* overrides, validated, key kept secret."""

from __future__ import annotations

import pytest

from custseg.config import LLMParams
from custseg.errors import ConfigError
from custseg.llm.local_server import available_cores
from custseg.llm.settings import DEFAULT_OLLAMA_URL, resolve_settings


def test_defaults_are_the_local_bundled_model() -> None:
    settings = resolve_settings(LLMParams())
    assert settings.provider == "local"
    assert settings.model == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert settings.base_url is None
    assert settings.threads == available_cores()


def test_env_overrides_every_documented_field(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "CUSTSEG_LLM_PROVIDER": "openai",
        "CUSTSEG_LLM_MODEL": "gpt-x",
        "CUSTSEG_LLM_BASE_URL": "http://127.0.0.1:9999/v1/",
        "CUSTSEG_LLM_TEMPERATURE": "0.7",
        "CUSTSEG_LLM_MAX_TOKENS": "99",
        "CUSTSEG_LLM_TIMEOUT": "12.5",
    }
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = resolve_settings(LLMParams())
    assert (settings.provider, settings.model) == ("openai", "gpt-x")
    assert settings.base_url == "http://127.0.0.1:9999/v1"
    assert (settings.temperature, settings.max_tokens, settings.timeout) == (0.7, 99, 12.5)


@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_empty_variable_counts_as_unset(blank: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTSEG_LLM_MODEL", blank)
    assert resolve_settings(LLMParams()).model == LLMParams().model


@pytest.mark.parametrize(
    ("var", "value", "words"),
    [
        ("CUSTSEG_LLM_TEMPERATURE", "hot", "valid number"),
        ("CUSTSEG_LLM_TEMPERATURE", "3", "less than or equal to 2"),
        ("CUSTSEG_LLM_MAX_TOKENS", "0", "greater than or equal to 1"),
        ("CUSTSEG_LLM_TIMEOUT", "-1", "greater than 0"),
        ("CUSTSEG_LLM_PROVIDER", "anthropic", "'local', 'ollama' or 'openai'"),
    ],
)
def test_bad_env_value_names_the_variable(
    var: str, value: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as caught:
        resolve_settings(LLMParams())
    message = str(caught.value)
    assert message.startswith(f"{var}: ")
    assert words in message and value in message
    assert "\n" not in message


def test_bad_yaml_value_names_the_key() -> None:
    params = LLMParams.model_construct(**{**LLMParams().model_dump(), "max_tokens": 0})
    with pytest.raises(ConfigError, match=r"^llm\.max_tokens: "):
        resolve_settings(params)


def test_openai_needs_a_base_url() -> None:
    with pytest.raises(ConfigError, match=r"^llm\.base_url: required when provider is openai"):
        resolve_settings(LLMParams(provider="openai"))


def test_base_url_must_be_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTSEG_LLM_BASE_URL", "ftp://x")
    with pytest.raises(ConfigError, match=r"^CUSTSEG_LLM_BASE_URL: must start with http"):
        resolve_settings(LLMParams(provider="ollama"))


def test_ollama_has_a_loopback_default_url() -> None:
    assert resolve_settings(LLMParams(provider="ollama")).base_url == DEFAULT_OLLAMA_URL


def test_api_key_comes_only_from_the_named_variable_and_never_shows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = LLMParams(provider="openai", base_url="http://127.0.0.1:1/v1", api_key_env="MY_KEY")
    monkeypatch.setenv("MY_KEY", "sk-very-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "no")
    settings = resolve_settings(params)
    assert settings.api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(settings)
    assert "sk-very-secret" not in str(settings)
    monkeypatch.delenv("MY_KEY")
    assert resolve_settings(params).api_key is None
