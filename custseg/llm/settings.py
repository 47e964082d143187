"""The effective LLM settings: params.yaml's `llm:` section, then CUSTSEG_LLM_* overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from custseg.config import LLMParams
from custseg.errors import ConfigError
from custseg.llm.local_server import available_cores

# Which LLMParams field each environment variable overrides.
ENV_OVERRIDES: dict[str, str] = {
    "provider": "CUSTSEG_LLM_PROVIDER",
    "model": "CUSTSEG_LLM_MODEL",
    "base_url": "CUSTSEG_LLM_BASE_URL",
    "temperature": "CUSTSEG_LLM_TEMPERATURE",
    "max_tokens": "CUSTSEG_LLM_MAX_TOKENS",
    "timeout": "CUSTSEG_LLM_TIMEOUT",
}
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


def apply_env_overrides(params: LLMParams, env: Mapping[str, str]) -> LLMParams:
    """`params` with CUSTSEG_LLM_* values applied and validated by the same rules.

    An empty variable counts as unset. A bad value raises ConfigError naming the variable.
    """
    raw = params.model_dump()
    overridden: dict[str, str] = {}
    for key, var in ENV_OVERRIDES.items():
        value = env.get(var, "").strip()
        if value:
            raw[key] = value
            overridden[key] = var
    try:
        return LLMParams.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "<root>"
        source = overridden.get(key, f"llm.{key}")
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {message} (got {first.get('input')!r})") from None


def _base_url(params: LLMParams, env: Mapping[str, str]) -> str | None:
    where = ENV_OVERRIDES["base_url"] if env.get(ENV_OVERRIDES["base_url"], "").strip() else None
    where = where or "llm.base_url"
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


def resolve_settings(params: LLMParams, env: Mapping[str, str] | None = None) -> LLMSettings:
    """Merge params.yaml's `llm:` with CUSTSEG_LLM_* variables into validated settings.

    The API key is read only from the variable named by `api_key_env`, and only for openai.
    """
    env = os.environ if env is None else env
    merged = apply_env_overrides(params, env)
    api_key = (env.get(merged.api_key_env) or None) if merged.provider == "openai" else None
    return LLMSettings(
        provider=merged.provider,
        model=merged.model,
        base_url=_base_url(merged, env),
        temperature=merged.temperature,
        max_tokens=merged.max_tokens,
        timeout=merged.timeout,
        max_retries=merged.max_retries,
        context_size=merged.context_size,
        threads=merged.threads or available_cores(),
        api_key_env=merged.api_key_env,
        api_key=api_key,
    )
