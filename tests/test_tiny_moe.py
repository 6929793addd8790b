"""The tiny MoE GGUF: its metadata as written, and llama.cpp loading it and generating from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import gguf
import pytest
from pydantic import BaseModel, Field

from tests.native import run_native
from tests.tiny_moe import smollm2_gguf, write_tiny_moe


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Written once per module: reading the source tokenizer is most of the ~2 s this takes.
    return write_tiny_moe(
        tmp_path_factory.mktemp("tiny_moe") / "tiny-moe.gguf", tokenizer_from=smollm2_gguf()
    )


def _scalar(reader: gguf.GGUFReader, key: str) -> object:
    field = reader.get_field(key)
    assert field is not None, key
    return field.contents()


def test_metadata_as_written(model_path: Path) -> None:
    reader = gguf.GGUFReader(model_path)
    assert _scalar(reader, "general.architecture") == "llama"
    assert _scalar(reader, "llama.block_count") == 2
    assert _scalar(reader, "llama.expert_count") == 4
    assert _scalar(reader, "llama.expert_used_count") == 2
    # SmolLM2's ChatML template, copied with the tokenizer.
    assert "<|im_start|>" in str(_scalar(reader, "tokenizer.chat_template"))
    # GGUF lists dimensions fastest first: {n_embd, n_ff, n_expert} for an expert stack.
    shapes = {t.name: t.shape.tolist() for t in reader.tensors}
    assert shapes["blk.1.ffn_gate_inp.weight"] == [64, 4]
    assert shapes["blk.1.ffn_up_exps.weight"] == [64, 128, 4]
    assert shapes["blk.1.ffn_down_exps.weight"] == [128, 64, 4]
    assert 10_000_000 < model_path.stat().st_size < 20_000_000


# llama.cpp runs in a child process: a native crash there fails the test, not the test run.
_GENERATE = """
import json, sys
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, verbose=False, seed=0)
completion = llm.create_completion("Hello", max_tokens=8, temperature=0)
print(json.dumps({"metadata": llm.metadata, "completion": completion}))
"""


def test_llama_cpp_loads_the_experts_and_generates(model_path: Path) -> None:
    result = run_native(_GENERATE, str(model_path))

    assert result["metadata"]["llama.expert_count"] == "4"
    assert result["metadata"]["llama.expert_used_count"] == "2"
    completion = result["completion"]
    assert completion["usage"]["completion_tokens"] > 0
    assert completion["choices"][0]["text"]


class _Arguments(BaseModel):
    # Bounded: the noise the weights produce rarely picks a closing quote, so an unbounded string
    # runs on to max_tokens and the JSON is cut off.
    path: str = Field(max_length=20)


class _ToolCall(BaseModel):
    tool: Literal["read_file", "write_file"]
    arguments: _Arguments


_CONSTRAINED = """
import json, sys
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, verbose=False, seed=0)
response = llm.create_chat_completion(
    messages=[{"role": "user", "content": "Read notes.txt"}],
    response_format={"type": "json_object", "schema": json.loads(sys.argv[2])},
    max_tokens=64,
    temperature=0,
)
print(json.dumps(response))
"""


def test_a_schema_constrains_its_noise_to_valid_json(model_path: Path) -> None:
    schema = json.dumps(_ToolCall.model_json_schema())
    response = run_native(_CONSTRAINED, str(model_path), schema)

    choice = response["choices"][0]
    assert choice["finish_reason"] == "stop"
    _ToolCall.model_validate_json(choice["message"]["content"] or "")
