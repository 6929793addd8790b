"""Tool calls written as JSON, for models whose OpenAI-compatible server has no native ones.

Such a server refuses `tools` (a 400) or ignores them. The backend then asks for the same thing
through structured output: no `tools`, but a `response_format` whose JSON schema admits one call
of one of the request's tools, ``{"name": ..., "arguments": {...}}``, and a system note listing
the tools. The answer is read back into a `ToolCall`, so the loop sees no difference.

Servers differ in how they take a schema (`JsonMode`): OpenAI and vLLM as ``json_schema``;
llama.cpp's Python server only as ``{"type": "json_object", "schema": ...}``; some not at all,
and then the note alone asks for the JSON (``prompt``).

The conversation is rendered as plain text too, since a server without tool calls seldom has a
chat template for `tool` messages or an assistant's `tool_calls`: an earlier call appears as the
JSON the model is asked to write, and its result as a user message naming the call.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, cast

from agent.backends._chat import chat_messages, describe_tools, tool_call_schema
from agent.backends.base import Message, ModelRequest, ToolCall
from base.toolspec import ToolSpec

Role = Literal["system", "user", "assistant", "tool"]

#: How the schema of a call is sent, from the most widely meant to the least.
JsonMode = Literal["json_schema", "json_object", "prompt"]
JSON_MODES: tuple[JsonMode, ...] = ("json_schema", "json_object", "prompt")

# What models wrap a JSON answer in, though asked not to: a Markdown fence, or Hermes-style tags.
_WRAPPERS = (
    re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL),
    re.compile(r"^<tool_call>\s*(.*?)\s*</tool_call>$", re.DOTALL),
)


def response_format(request: ModelRequest, mode: JsonMode = "json_schema") -> dict[str, Any] | None:
    """The `response_format` that admits one call of one of the request's tools, sent as `mode`
    says (None for ``prompt``: no `response_format` at all).

    With `tool_choice` "auto" it also admits ``{"text": ...}``, an answer without a call.
    """
    if mode == "prompt":
        return None
    # The same schema a local model's grammar is made from (with each tool's $defs at the root,
    # where its references resolve).
    schema = tool_call_schema(request.tools)
    choices: list[dict[str, Any]] = schema["anyOf"]
    if request.tool_choice == "auto":
        choices.append(
            {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        )
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    # Not strict: strict mode refuses most real tool schemas (optional fields, open objects).
    return {
        "type": "json_schema",
        "json_schema": {"name": "tool_call", "strict": False, "schema": schema},
    }


def messages(request: ModelRequest) -> list[Message]:
    """The request's conversation in plain user and assistant turns, with the tools' note."""
    return [
        Message(role=cast(Role, m["role"]), content=m["content"])
        for m in chat_messages(request.messages, _note(request))
    ]


def read_answer(text: str, tools: tuple[ToolSpec, ...], *, call_id: str) -> ToolCall | str | None:
    """The call a JSON answer makes, the text of a ``{"text": ...}`` answer, or None.

    Tolerates a Markdown fence or ``<tool_call>`` tags around the JSON and "parameters" for
    "arguments", as models write them. A call must name one of `tools`.
    """
    body = text.strip()
    for wrapper in _WRAPPERS:
        if match := wrapper.match(body):
            body = match.group(1)
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    if isinstance(name, str) and name in {tool.name for tool in tools}:
        arguments = value.get("arguments", value.get("parameters", {}))
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        return ToolCall(id=call_id, name=name, arguments=raw)
    if value.keys() == {"text"} and isinstance(value["text"], str):
        return str(value["text"])
    return None


def _note(request: ModelRequest) -> str:
    # The local backend's description of the tools, short enough for a small model's context:
    # the schema itself is held by `response_format` where the server takes one.
    note = describe_tools(request.tools, constrained=request.tool_choice == "required")
    if request.tool_choice == "auto":
        note += '\nTo answer without a tool, answer with only {"text": "<your answer>"}.'
    return note
