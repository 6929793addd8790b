"""Model backends, and `backend_from_uri` that builds one from a `--model` URI.

scripted:PATH                         replay a script of turns (see `agent.backends.scripted`)
openai:MODEL                          OpenAI's API; key from $OPENAI_API_KEY,
                                      base URL from $OPENAI_BASE_URL if set
openai-compatible:BASE_URL#MODEL      any OpenAI-compatible server (vLLM, llama.cpp's server,
                                      Ollama, a gateway); key from $OPENAI_API_KEY if set
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.backends._retry import RetryPolicy
from agent.backends.base import ModelBackend
from agent.backends.openai_compat import OpenAICompatibleBackend
from agent.backends.scripted import ScriptedBackend
from agent.errors import ConfigError

SCHEMES = ("scripted", "openai", "openai-compatible")
OPENAI_URL = "https://api.openai.com/v1"


def normalize_uri(uri: str) -> str:
    """The URI with a scripted path made absolute, so a task resumed elsewhere finds its script."""
    scheme, _, rest = uri.partition(":")
    if scheme == "scripted" and rest:
        return f"scripted:{Path(rest).expanduser().resolve()}"
    return uri


def backend_from_uri(
    uri: str, *, api_key: str | None = None, timeout: float = 120.0, max_attempts: int = 5
) -> ModelBackend:
    """Build the backend a model URI names. Raises `ConfigError` for a URI it cannot use."""
    scheme, sep, rest = uri.partition(":")
    if not sep or not rest:
        raise ConfigError(
            f"model URI {uri!r} has no scheme; use one of: "
            + ", ".join(f"{s}:..." for s in SCHEMES)
        )
    retry = RetryPolicy(attempts=max_attempts)
    if scheme == "scripted":
        backend = ScriptedBackend.from_file(Path(rest).expanduser())
        backend.name = normalize_uri(uri)
        return backend
    if scheme == "openai":
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ConfigError(
                f"{uri} needs an API key: set OPENAI_API_KEY (or [model] api_key_env in agent.toml)"
            )
        base = os.environ.get("OPENAI_BASE_URL", OPENAI_URL)
        openai = OpenAICompatibleBackend(base, rest, api_key=key, timeout=timeout, retry=retry)
        openai.name = uri
        return openai
    if scheme == "openai-compatible":
        base, hash_, model = rest.partition("#")
        if not hash_ or not model:
            raise ConfigError(
                f"model URI {uri!r} needs the model after '#', e.g. "
                "openai-compatible:http://127.0.0.1:8080/v1#qwen3-30b-a3b"
            )
        compat = OpenAICompatibleBackend(
            base,
            model,
            timeout=timeout,
            retry=retry,
            api_key=api_key or os.environ.get("OPENAI_API_KEY"),
        )
        compat.name = uri
        return compat
    raise ConfigError(
        f"unknown model scheme {scheme!r} in {uri!r}; use one of: " + ", ".join(SCHEMES)
    )


__all__ = ["SCHEMES", "ModelBackend", "backend_from_uri", "normalize_uri"]
