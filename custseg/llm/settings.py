"""The effective LLM settings: params.yaml's `llm:` section, then CUSTSEG_LLM_* overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from custseg.config import LLMParams
from custseg.errors import ConfigError
from custseg.llm.local_server import available_cores

ENV_PREFIX = "CUSTSEG_LLM_"
DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"


@dataclass(frozen=True)
class LLMSettings:
    """Everything a provider needs; `api_key` is kept out of repr so it never reaches a log."""

    provider: Literal["local", "ollama", "openai"]
    model: str
    base_url: str | None
    temperature: float
    max_tokens: int
    timeout: float
    max_retries: int
    context_size: int
    threads: int
    api_key_env: str
    api_key: str | None = field(default=None, repr=False)


class LLMEnv(BaseSettings):
    """The CUSTSEG_LLM_* environment variables, read by pydantic-settings; each one set (and not
    blank) overrides its params.yaml `llm:` key, validated by LLMParams' own rules."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore")

    provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    temperature: str | None = None
    max_tokens: str | None = None
    timeout: str | None = None

    def overrides(self) -> dict[str, str]:
        """The keys the environment sets (a blank variable counts as unset)."""
        return {k: v.strip() for k, v in self.model_dump(exclude_none=True).items() if v.strip()}


def env_name(key: str) -> str:
    """The variable that overrides `llm.<key>`."""
    return f"{ENV_PREFIX}{key.upper()}"


def apply_env_overrides(params: LLMParams) -> tuple[LLMParams, set[str]]:
    """`params` with the CUSTSEG_LLM_* values applied, and which keys they set; a bad value
    raises ConfigError naming the variable (a bad params.yaml value: the `llm.` key)."""
    overridden = LLMEnv().overrides()
    try:
        merged = LLMParams.model_validate({**params.model_dump(), **overridden})
    except ValidationError as error:
        first = error.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "<root>"
        source = env_name(key) if key in overridden else f"llm.{key}"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {message} (got {first.get('input')!r})") from None
    return merged, set(overridden)


def _base_url(params: LLMParams, from_env: bool) -> str | None:
    where = env_name("base_url") if from_env else "llm.base_url"
    url = params.base_url.rstrip("/") if params.base_url else None
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: must start with http:// or https:// (got {url!r})")
    if params.provider == "openai" and not url:
        raise ConfigError(
            f"{where}: required when provider is openai (e.g. http://127.0.0.1:8000/v1)"
        )
    if params.provider == "ollama":
        return url or DEFAULT_OLLAMA_URL
    return url if params.provider == "openai" else None


def resolve_settings(params: LLMParams) -> LLMSettings:
    """Merge params.yaml's `llm:` with CUSTSEG_LLM_* variables into validated settings.

    The API key is read only from the variable named by `api_key_env`, and only for openai.
    """
    merged, overridden = apply_env_overrides(params)
    api_key = (os.environ.get(merged.api_key_env) or None) if merged.provider == "openai" else None
    return LLMSettings(
        provider=merged.provider,
        model=merged.model,
        base_url=_base_url(merged, "base_url" in overridden),
        temperature=merged.temperature,
        max_tokens=merged.max_tokens,
        timeout=merged.timeout,
        max_retries=merged.max_retries,
        context_size=merged.context_size,
        threads=merged.threads or available_cores(),
        api_key_env=merged.api_key_env,
        api_key=api_key,
    )
