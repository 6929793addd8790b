"""A backend for Anthropic's Messages API (`POST {base_url}/v1/messages`).

Failures are mapped to `BackendError` once, by the table in `agent.backends._http` (429
rate_limited with Retry-After, 529 overloaded, 5xx server_error, 408 timeout: retryable; 401/403
auth_failed, 404 not_found, other 4xx bad_request: not), plus this format's own::

    200 of the wrong shape               bad_response
    an `error` event mid-stream          by its type: overloaded_error, rate_limit_error and
                                         api_error are retryable, invalid_request_error is not
    a stream without `message_stop`      truncated_stream   retryable

Given `on_delta`, a request is streamed and each piece of text (`text_delta`) or of a tool call's
input (`input_json_delta`) is told as it arrives. A retried attempt starts its response afresh,
so a sink may be told the start of an answer again; the `ModelResponse` holds one attempt's.

Our provider-neutral messages are translated so that the API accepts them: system messages, in
order, become the top-level `system`; an assistant's calls become `tool_use` blocks; tool results
become `tool_result` blocks of a user turn (first in it, as the API requires); adjacent turns of
one role are merged, so user and assistant alternate. A call whose arguments are not the JSON text
of an object (the model wrote it so; the loop told it of the error) is sent back as
``{"_raw": "<the text>"}``, since `tool_use.input` must be an object.
"""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.backends._http import (
    HttpClient,
    SseEvent,
    bad_response,
    check_base_url,
    is_event_stream,
    parsed_body,
    sse_events,
    stream_error,
    truncated,
)
from agent.backends._retry import RetryPolicy
from agent.backends.base import (
    Capabilities,
    Delta,
    DeltaSink,
    Message,
    ModelBackend,
    ModelRequest,
    ModelResponse,
    ToolCall,
    Usage,
)
from base.errors import BackendError, ErrorCode

ANTHROPIC_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"


class AnthropicBackend(ModelBackend):
    """A Claude model behind the Messages API.

    `base_url` is the API root without `/v1`, e.g. ``https://api.anthropic.com``. `max_tokens`
    caps each answer (the API requires a cap). `timeout` bounds each read (also the wait between
    two events of a stream), write and pool wait; `connect_timeout` bounds opening a connection.
    Pass `client` (or just `transport`) to control the HTTP layer; a client passed in is left
    open by `aclose`. Nothing connects until the first `complete`.

    Raises `ConfigError` if `base_url` is not an http(s) URL.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_tokens: int = 4096,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        vision: bool = True,
    ) -> None:
        check_base_url(base_url, "Anthropic")
        self.name = f"anthropic:{model}"
        self.vision = vision
        self.model = model
        self.url = f"{base_url.rstrip('/')}/v1/messages"
        self.max_tokens = max_tokens
        self._api_key = api_key
        self._retry = retry or RetryPolicy()
        self._http = HttpClient(
            timeout=timeout, connect_timeout=connect_timeout, client=client, transport=transport
        )

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        """Send `request` and return the model's answer, retrying per the retry policy.

        Raises `BackendError` with one of the codes in the module docstring.
        """
        limit = min(self.max_tokens, request.max_output_tokens or self.max_tokens)
        body = _request_body(self.model, limit, request, self.vision)
        if on_delta is not None:
            body["stream"] = True
        return await self._retry.run(lambda: self._attempt(body, on_delta))

    async def probe(self) -> Capabilities:
        """Claude models call tools natively and stream; no request is needed to know it."""
        return Capabilities(native_tools=True, streaming=True, context_window=self.context_window)

    async def aclose(self) -> None:
        """Close the HTTP client if this backend created it. Safe to call more than once."""
        await self._http.aclose()

    async def _attempt(self, body: dict[str, Any], on_delta: DeltaSink | None) -> ModelResponse:
        headers = {"x-api-key": self._api_key, "anthropic-version": API_VERSION}
        async with self._http.post(self.url, body, headers) as response:
            if is_event_stream(response):
                stream = _MessageStream(self.url, self.model, on_delta)
                async with aclosing(sse_events(self.url, response)) as events:
                    async for event in events:
                        if stream.add(event):
                            return stream.result()
                raise truncated(self.url, "the stream ended without message_stop")
            await response.aread()
        answer = _parse_message(self.url, response, default_model=self.model)
        if on_delta is not None:  # asked to stream, answered whole: tell it whole
            if answer.text:
                on_delta(Delta("text", answer.text))
            for call in answer.tool_calls:
                on_delta(Delta("tool_call", call.arguments))
        return answer


# --- request -------------------------------------------------------------------------------------


def _request_body(
    model: str, max_tokens: int, request: ModelRequest, vision: bool = False
) -> dict[str, Any]:
    turns: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message, vision)
        if not blocks:
            continue  # the API refuses empty content; the turns around it may then merge
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        # Results must open their user turn; a stable sort keeps each side in order.
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    system = "\n\n".join(m.content for m in request.messages if m.role == "system" and m.content)
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [
            {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
            for tool in request.tools
        ]
        body["tool_choice"] = {"type": "any" if request.tool_choice == "required" else "auto"}
    return body


def _blocks(message: Message, vision: bool) -> list[dict[str, Any]]:
    if message.role == "tool":
        if message.tool_call_id is None:
            raise BackendError(
                "a tool message needs the tool_call_id it answers",
                code=ErrorCode.BAD_REQUEST,
                retryable=False,
            )
        content: str | list[dict[str, Any]] = message.content
        if vision and message.images:
            content = [{"type": "text", "text": message.content}] + [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": i.media_type, "data": i.data},
                }
                for i in message.images
            ]
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": content}]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    if vision and message.role == "user":  # pictures given with the task
        blocks += [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": i.media_type, "data": i.data},
            }
            for i in message.images
        ]
    for call in message.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call.arguments)}
        )
    return blocks


def _input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"_raw": arguments}


# --- response ------------------------------------------------------------------------------------


class _Wire(BaseModel):
    # The API adds fields and block types over time; only ours matter.
    model_config = ConfigDict(extra="ignore")


class _WireUsage(_Wire):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    def usage(self) -> Usage:
        # Tokens written to or read from the prompt cache are input too, priced differently.
        read = (
            (self.input_tokens or 0)
            + (self.cache_creation_input_tokens or 0)
            + (self.cache_read_input_tokens or 0)
        )
        return Usage(input_tokens=read, output_tokens=self.output_tokens or 0)

    def updated(self, later: _WireUsage) -> _WireUsage:
        """These counts with those `later` gives: a stream's counts are running totals."""
        return self.model_copy(update=later.model_dump(exclude_none=True))


class _WireBlock(_Wire):
    type: str
    text: str = ""
    id: str | None = None
    name: str | None = None
    input: Any = None


class _WireMessage(_Wire):
    model: str | None = None
    content: list[_WireBlock]
    usage: _WireUsage = Field(default_factory=_WireUsage)


def _parse_message(url: str, response: httpx.Response, *, default_model: str) -> ModelResponse:
    message = parsed_body(_WireMessage, url, response, "a message")
    return ModelResponse(
        text="".join(block.text for block in message.content if block.type == "text"),
        tool_calls=tuple(
            ToolCall(
                id=block.id or "", name=block.name or "", arguments=json.dumps(block.input or {})
            )
            for block in message.content
            if block.type == "tool_use"
        ),
        usage=message.usage.usage(),
        model=message.model or default_model,
    )


# --- stream --------------------------------------------------------------------------------------


class _StartedMessage(_Wire):
    model: str | None = None
    usage: _WireUsage = Field(default_factory=_WireUsage)


class _MessageStart(_Wire):
    message: _StartedMessage


class _BlockStart(_Wire):
    index: int
    content_block: _WireBlock


class _DeltaBody(_Wire):
    type: str
    text: str = ""
    partial_json: str = ""


class _BlockDelta(_Wire):
    index: int
    delta: _DeltaBody


class _MessageDelta(_Wire):
    usage: _WireUsage | None = None


class _MessageStream:
    """A message put together from its stream's events, telling `on_delta` of each piece."""

    def __init__(self, url: str, model: str, on_delta: DeltaSink | None) -> None:
        self._url = url
        self._on_delta = on_delta
        self._model = model
        self._usage = _WireUsage()
        # By block index: the started block, and the pieces of its text or its input's JSON.
        self._blocks: dict[int, tuple[_WireBlock, list[str]]] = {}

    def add(self, event: SseEvent) -> bool:
        """Take one event; True once the message is complete.

        Raises `BackendError` for an `error` event or an event of the wrong shape.
        """
        try:
            data = json.loads(event.data)
        except ValueError as error:
            raise bad_response(
                self._url, f"an event that is not JSON: {event.data[:200]}"
            ) from error
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "error":
            raise stream_error(self._url, data.get("error"))
        try:
            if kind == "message_start":
                started = _MessageStart.model_validate(data).message
                self._model = started.model or self._model
                self._usage = started.usage
            elif kind == "content_block_start":
                start = _BlockStart.model_validate(data)
                self._blocks[start.index] = (start.content_block, [])
                if start.content_block.type == "text" and start.content_block.text:
                    self._piece(start.index, start.content_block.text)
            elif kind == "content_block_delta":
                delta = _BlockDelta.model_validate(data)
                if delta.delta.type == "text_delta":
                    self._piece(delta.index, delta.delta.text)
                elif delta.delta.type == "input_json_delta":
                    self._piece(delta.index, delta.delta.partial_json)
                # thinking, signature and citation deltas are not part of our response
            elif kind == "message_delta":
                usage = _MessageDelta.model_validate(data).usage
                if usage is not None:
                    self._usage = self._usage.updated(usage)
            # ping, content_block_stop and event types added later change nothing here
        except ValidationError as error:
            raise bad_response(self._url, f"a {kind} event of the wrong shape") from error
        return kind == "message_stop"

    def result(self) -> ModelResponse:
        text: list[str] = []
        calls: list[ToolCall] = []
        for block, pieces in (self._blocks[index] for index in sorted(self._blocks)):
            if block.type == "text":
                text.extend(pieces)
            elif block.type == "tool_use":
                # The input arrives as JSON text in pieces; a call without arguments sends none.
                arguments = "".join(pieces) or json.dumps(block.input or {})
                calls.append(
                    ToolCall(id=block.id or "", name=block.name or "", arguments=arguments)
                )
        return ModelResponse(
            text="".join(text),
            tool_calls=tuple(calls),
            usage=self._usage.usage(),
            model=self._model,
        )

    def _piece(self, index: int, text: str) -> None:
        if index not in self._blocks:
            raise bad_response(self._url, f"a delta for content block {index}, never started")
        block, pieces = self._blocks[index]
        if not text or block.type not in ("text", "tool_use"):
            return
        pieces.append(text)
        if self._on_delta is not None:
            self._on_delta(Delta("text" if block.type == "text" else "tool_call", text))
