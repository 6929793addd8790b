"""The OpenAI chat-completions wire format: our requests as bodies, its answers (whole or
streamed) as `ModelResponse`s. Providers add fields freely; only ours are read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.backends._http import (
    bad_response,
    parsed_body,
    stream_error,
    truncated,
)
from agent.backends.base import (
    Delta,
    DeltaSink,
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    Usage,
)
from base.errors import BackendError, ErrorCode
from base.toolspec import ToolSpec

# --- request -------------------------------------------------------------------------------------


def request_body(
    model: str, request: ModelRequest, *, vision: bool = False, cap: str = "max_tokens"
) -> dict[str, Any]:
    """The body of a chat completion request. With `vision`, the pictures tool results carry
    are sent as image parts (see `wire_messages`). A request's cap on its answer goes in the
    field `cap` names: OpenAI's API takes `max_completion_tokens` (its `max_tokens` is refused
    by its reasoning models), servers that speak its format mostly know only `max_tokens`."""
    body: dict[str, Any] = {"model": model, "messages": wire_messages(request.messages, vision)}
    # OpenAI rejects `tool_choice` without `tools`, and some servers reject an empty `tools`.
    if request.tools:
        body["tools"] = [_wire_tool(tool) for tool in request.tools]
        body["tool_choice"] = request.tool_choice
    if request.max_output_tokens is not None:
        body[cap] = request.max_output_tokens
    return body


def wire_messages(messages: Sequence[Message], vision: bool) -> list[dict[str, Any]]:
    """The messages in the wire's shape. A tool message's content can only be text, and the tool
    messages answering one turn must follow it unbroken: with `vision`, their pictures go in one
    user message after them, each introduced by the call it came from."""
    out: list[dict[str, Any]] = []
    pictures: list[dict[str, Any]] = []
    for message in messages:
        if pictures and message.role != "tool":
            out.append({"role": "user", "content": pictures})
            pictures = []
        if vision and message.images and message.role == "user":  # pictures given with the task
            parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
            parts += [
                {"type": "image_url", "image_url": {"url": i.data_url()}} for i in message.images
            ]
            out.append({"role": "user", "content": parts})
            continue
        out.append(wire_message(message))
        if vision and message.images:
            pictures.append({"type": "text", "text": f"The picture {message.tool_call_id} gave:"})
            pictures += [
                {"type": "image_url", "image_url": {"url": image.data_url()}}
                for image in message.images
            ]
    if pictures:
        out.append({"role": "user", "content": pictures})
    return out


def wire_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        if message.tool_call_id is None:
            raise BackendError(
                "a tool message needs the tool_call_id it answers",
                code=ErrorCode.BAD_REQUEST,
                retryable=False,
            )
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            # A turn that only calls tools has no content: sent as "", since llama.cpp's server
            # refuses null (its validation: a 500) and fails without the field (its
            # chatml-function-calling template reads `message.content`).
            "content": message.content,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def _wire_tool(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


# --- response ------------------------------------------------------------------------------------


class _Wire(BaseModel):
    # Providers add fields freely (logprobs, refusal, system_fingerprint...); only ours matter.
    model_config = ConfigDict(extra="ignore")


class _WireFunction(_Wire):
    name: str
    # Some servers send the arguments as a JSON object rather than the JSON text of one.
    arguments: str | dict[str, Any] | None = None


class _WireToolCall(_Wire):
    id: str | None = None
    function: _WireFunction


class _WireMessage(_Wire):
    content: str | None = None
    tool_calls: list[_WireToolCall] | None = None


class _WireChoice(_Wire):
    message: _WireMessage


class _WireUsage(_Wire):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _WireCompletion(_Wire):
    model: str | None = None
    choices: list[_WireChoice]
    usage: _WireUsage | None = None


def parse_response(url: str, response: httpx.Response, *, default_model: str) -> ModelResponse:
    status = response.status_code
    completion = parsed_body(_WireCompletion, url, response, "a chat completion")
    if not completion.choices:
        raise bad_response(url, "with no choices", status=status)
    message = completion.choices[0].message
    usage = completion.usage or _WireUsage()
    return ModelResponse(
        text=message.content or "",
        tool_calls=tuple(
            _tool_call(call.id, call.function.name, call.function.arguments, index)
            for index, call in enumerate(message.tool_calls or ())
        ),
        usage=Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens),
        model=completion.model or default_model,
    )


def _tool_call(
    call_id: str | None, name: str, arguments: str | dict[str, Any] | None, index: int
) -> ToolCall:
    if arguments is None:
        arguments = ""
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    # A call without an id cannot be answered; some local servers omit it, so give it one that
    # is unique within the response.
    return ToolCall(id=call_id or f"call_{index}", name=name, arguments=arguments)


# --- stream --------------------------------------------------------------------------------------


class _WireFunctionDelta(_Wire):
    name: str | None = None
    arguments: str | dict[str, Any] | None = None


class _WireToolCallDelta(_Wire):
    index: int | None = None
    id: str | None = None
    function: _WireFunctionDelta | None = None


class _WireDelta(_Wire):
    content: str | None = None
    tool_calls: list[_WireToolCallDelta] | None = None


class _WireChunkChoice(_Wire):
    index: int = 0
    delta: _WireDelta = Field(default_factory=_WireDelta)
    finish_reason: str | None = None


class _WireChunk(_Wire):
    model: str | None = None
    choices: list[_WireChunkChoice] = Field(default_factory=list)
    usage: _WireUsage | None = None


@dataclass
class _PartialCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChatStream:
    """A chat completion put together from its chunks, telling `on_delta` of each piece."""

    def __init__(
        self,
        url: str,
        model: str,
        on_delta: DeltaSink | None,
        content_kind: Literal["text", "tool_call"],
    ) -> None:
        self._url = url
        self._on_delta = on_delta
        self._content_kind = content_kind
        self._model: str | None = None
        self._default_model = model
        self._text: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._usage = _WireUsage()
        self._finish_reason: str | None = None

    def add(self, data: str) -> None:
        """Take one chunk's data. Raises `BackendError` for an error event or a garbled chunk."""
        try:
            raw = json.loads(data)
        except ValueError as error:
            raise bad_response(
                self._url, f"a stream chunk that is not JSON: {data[:200]}"
            ) from error
        # OpenAI and vLLM report a failure after the 200 as a chunk holding only `error`.
        if isinstance(raw, dict) and raw.get("error"):
            raise stream_error(self._url, raw["error"])
        try:
            chunk = _WireChunk.model_validate(raw)
        except ValidationError as error:
            raise bad_response(
                self._url, f"a stream chunk of the wrong shape: {data[:200]}"
            ) from error
        self._model = self._model or chunk.model
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices:
            if choice.index == 0:  # only one choice is asked for; others are not ours
                self._add_delta(choice.delta)
                self._finish_reason = choice.finish_reason or self._finish_reason

    def result(self) -> ModelResponse:
        """The response, once `[DONE]` came. Raises `BackendError` if no choice finished."""
        if self._finish_reason is None:
            raise truncated(self._url, "the stream ended without a finish_reason")
        return ModelResponse(
            text="".join(self._text),
            tool_calls=tuple(
                _tool_call(call.id, call.name, "".join(call.arguments), index)
                for index, call in sorted(self._calls.items())
            ),
            usage=Usage(
                input_tokens=self._usage.prompt_tokens,
                output_tokens=self._usage.completion_tokens,
            ),
            model=self._model or self._default_model,
        )

    def _add_delta(self, delta: _WireDelta) -> None:
        if delta.content:
            self._text.append(delta.content)
            self._tell(self._content_kind, delta.content)
        for position, piece in enumerate(delta.tool_calls or ()):
            # The first piece of a call brings its id and name, later ones more arguments.
            call = self._calls.setdefault(
                piece.index if piece.index is not None else position, _PartialCall()
            )
            call.id = call.id or piece.id
            if piece.function is None:
                continue
            call.name = call.name or piece.function.name or ""
            arguments = piece.function.arguments
            if arguments:
                text = arguments if isinstance(arguments, str) else json.dumps(arguments)
                call.arguments.append(text)
                self._tell("tool_call", text)

    def _tell(self, kind: Literal["text", "tool_call"], text: str) -> None:
        if self._on_delta is not None:
            self._on_delta(Delta(kind, text))
