"""LLM access for agents and judge: the bundled local model, Ollama, or any OpenAI-compatible API.

provider = load_provider()                      # params.yaml `llm:` + CUSTSEG_LLM_* overrides
reply = provider.complete([{"role": "user", "content": "Hi"}])
answer, reply = provider.complete_json(messages, MyPydanticModel)
"""

from custseg.errors import LLMError
from custseg.llm.base import Completion, Message, Provider, TokenLogprob, TopLogprob
from custseg.llm.models import DEFAULT_MODEL_ID, MODELS, fetch_model, model_dir, require_model
from custseg.llm.providers import (
    LocalProvider,
    OllamaProvider,
    OpenAICompatibleProvider,
    load_provider,
    make_provider,
)
from custseg.llm.settings import LLMSettings, resolve_settings

__all__ = [
    "DEFAULT_MODEL_ID",
    "MODELS",
    "Completion",
    "LLMError",
    "LLMSettings",
    "LocalProvider",
    "Message",
    "OllamaProvider",
    "OpenAICompatibleProvider",
    "Provider",
    "TokenLogprob",
    "TopLogprob",
    "fetch_model",
    "load_provider",
    "make_provider",
    "model_dir",
    "require_model",
    "resolve_settings",
]
