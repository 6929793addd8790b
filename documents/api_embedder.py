"""An embedder behind an HTTP API that speaks OpenAI's embeddings wire format (`POST
{base}/embeddings`), for an index that should use a hosted model instead of the bundled one.

Named by a URI, as a model is: `openai:MODEL` (the key from $OPENAI_API_KEY, the base URL from
$OPENAI_BASE_URL if set) or `openai-compatible:URL#MODEL` (a key only from
$AGENT_DOCUMENTS_API_KEY, so one meant for a provider never goes to another server). The URI
is what the index records, so a search embeds its query with the same model.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import numpy as np

from base.errors import ConfigError, StoreError
from documents.embedder import Vectors

OPENAI_URL = "https://api.openai.com/v1"
#: texts sent in one request (the API takes up to 2,048)
BATCH = 64


def client(
    uri: str, what: str, *, transport: httpx.BaseTransport | None = None
) -> tuple[httpx.Client, str]:
    """An HTTP client for the API a URI names (`openai:MODEL`, `openai-compatible:URL#MODEL`),
    and the model's name; `what` ("embedder", "transcriber") is said in errors. Raises
    `ConfigError` for a URI it cannot use, or a key that is missing."""
    scheme, _, rest = uri.partition(":")
    if scheme == "openai" and rest:
        base, model = os.environ.get("OPENAI_BASE_URL", OPENAI_URL), rest
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ConfigError(f"the {what} {uri} needs an API key: set $OPENAI_API_KEY")
    elif scheme == "openai-compatible" and "#" in rest:
        base, _, model = rest.partition("#")
        if not base.startswith(("http://", "https://")) or not model:
            raise ConfigError(f"the {what} {uri}: give openai-compatible:http(s)://HOST/v1#MODEL")
        key = os.environ.get("AGENT_DOCUMENTS_API_KEY")
    else:
        raise ConfigError(
            f"unknown {what} {uri!r}: use 'local', 'openai:MODEL' or 'openai-compatible:URL#MODEL'"
        )
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = httpx.Client(
        base_url=base.rstrip("/"), headers=headers, timeout=300.0, transport=transport
    )
    return http, model


def answered(answer: httpx.Response, what: str) -> Any:
    """An API's answer, as JSON; its refusals and failures as the errors they are."""
    if answer.status_code in (401, 403):
        raise ConfigError(f"the {what} refused the key ({answer.status_code})")
    if answer.status_code != 200:
        raise StoreError(
            f"the {what} answered {answer.status_code}: {answer.text[:200]}",
            retryable=answer.status_code == 429 or answer.status_code >= 500,
        )
    try:
        return answer.json()
    except ValueError as exc:
        raise StoreError(f"the {what} answered what is not JSON: {exc}") from exc


class ApiEmbedder:
    """Texts to unit vectors through an embeddings API."""

    def __init__(self, uri: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self._http, self.model = client(uri, "embedder", transport=transport)
        self.name = uri
        self.dimensions = 0  # known from the first answer

    def embed(self, texts: list[str]) -> Vectors:
        rows: list[Vectors] = []
        for start in range(0, len(texts), BATCH):
            rows.append(self._ask(texts[start : start + BATCH]))
        if not rows:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.concatenate(rows)

    def _ask(self, texts: list[str]) -> Vectors:
        try:
            answer = self._http.post("/embeddings", json={"model": self.model, "input": texts})
        except httpx.HTTPError as exc:
            raise StoreError(
                f"the embedder {self.name} did not answer: {exc}", retryable=True
            ) from exc
        body = answered(answer, f"embedder {self.name}")
        try:
            data: list[dict[str, Any]] = sorted(body["data"], key=lambda d: d["index"])
            matrix = np.array([d["embedding"] for d in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"the embedder {self.name} answered what is not embeddings: {exc}"
            ) from exc
        if matrix.ndim != 2 or len(matrix) != len(texts):
            raise StoreError(
                f"the embedder {self.name} gave {len(matrix)} vectors for {len(texts)} texts"
            )
        self.dimensions = int(matrix.shape[1])
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        unit: Vectors = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit
