"""A backend for any server speaking the OpenAI chat-completions wire format.

OpenAI itself, vLLM, llama.cpp's server, Ollama, LM Studio and most gateways accept the same
`POST {base_url}/chat/completions`. Their failures are mapped to `BackendError` once, by the
table in `agent.backends._http`, plus two of this format's own::

    200 of the wrong shape          bad_response
    a stream without `[DONE]`, or   truncated_stream   retryable
    without a finish_reason

Given `on_delta`, a request is streamed (`stream: true`, usage asked for in the last chunk) and
each piece of text or of a call's arguments is told as it arrives. A server that answers a stream
request with a plain JSON body is read as before, and `on_delta` told the whole answer at once.
A retried attempt starts its response afresh, so a sink may be told the start of an answer again;
the `ModelResponse` holds each attempt's own answer only.

Not every server's model has native tool calls. The backend learns it from use: while it does
not know, a request with tools that is refused with 400, or answered without a call although one
was required, is sent once more in JSON mode (`agent.backends._json_tools`). If that yields a call,
later requests go straight to JSON mode; if not, the first answer stands (a 400 is raised as it
came). A JSON call written into `content` instead of `tool_calls` is read as a call either way.
"""

from __future__ import annotations

import json
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.backends import _json_tools
from agent.backends._http import (
    HttpClient,
    bad_response,
    check_base_url,
    is_event_stream,
    provider_message,
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
    ToolSpec,
    Usage,
)
from agent.errors import BackendError

# The tiny request `probe` makes when nothing is known yet.
_NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}
_PING = ModelRequest(
    task_id="probe",
    purpose="act",
    turn=0,
    messages=(Message(role="user", content="Call the ping tool."),),
    tools=(ToolSpec(name="ping", description="Say you are there.", parameters=_NO_ARGUMENTS),),
    tool_choice="required",
)


class OpenAICompatibleBackend(ModelBackend):
    """A model behind an OpenAI-compatible `/chat/completions` endpoint.

    `base_url` is the API root, e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
    `timeout` bounds each read (also the wait between two chunks of a stream), write and pool
    wait; `connect_timeout` bounds opening a connection. Pass `client` (or just `transport`) to
    control the HTTP layer, e.g. in tests; a client passed in is left open by `aclose`. Nothing
    connects until the first `complete`.

    Raises `ConfigError` if `base_url` is not an http(s) URL.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        check_base_url(base_url, "OpenAI-compatible")
        self.name = f"openai-compatible:{model}"
        self.model = model
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self._api_key = api_key
        self._retry = retry or RetryPolicy()
        self._http = HttpClient(
            timeout=timeout, connect_timeout=connect_timeout, client=client, transport=transport
        )
        # Learned from use; None until an answer tells.
        self._native_tools: bool | None = None
        self._streams: bool | None = None

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        """Send `request` and return the model's answer, retrying per the retry policy.

        Raises `BackendError` with one of the codes in the module docstring.
        """
        if not request.tools:
            return await self._send(_request_body(self.model, request), on_delta)
        if self._native_tools is False:
            response, _ = await self._send_json_mode(request, on_delta)
            return response
        try:
            response = await self._send(_request_body(self.model, request), on_delta)
        except BackendError as error:
            if self._native_tools is not None or error.status != 400:
                raise
            fallback = await self._try_json_mode(request, on_delta)
            if fallback is None:
                raise
            return fallback
        if response.tool_calls:
            self._native_tools = True
            return response
        answer = _json_tools.read_answer(response.text, request.tools, call_id=_call_id(request))
        if isinstance(answer, ToolCall):
            return response.model_copy(update={"text": "", "tool_calls": (answer,)})
        if self._native_tools is None and request.tool_choice == "required":
            fallback = await self._try_json_mode(request, on_delta)
            if fallback is not None:
                # Both answers were paid for.
                return fallback.model_copy(update={"usage": response.usage + fallback.usage})
        return response

    async def probe(self) -> Capabilities:
        """What is known of the model; if nothing yet, one tiny streamed request with a tool.

        `native_tools` and `streaming` are True unless use showed otherwise.
        Raises `BackendError` if that request fails.
        """
        if self._native_tools is None:
            await self.complete(_PING, on_delta=_ignore)
        return Capabilities(
            native_tools=self._native_tools is not False,
            streaming=self._streams is not False,
            context_window=self.context_window,
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this backend created it. Safe to call more than once."""
        await self._http.aclose()

    async def _try_json_mode(
        self, request: ModelRequest, on_delta: DeltaSink | None
    ) -> ModelResponse | None:
        """The answer in JSON mode, remembered as the way to ask; None if it fails or is unread."""
        try:
            response, readable = await self._send_json_mode(request, on_delta)
        except BackendError:
            return None  # the caller's first answer (or error) says more than this one
        if not readable:
            return None
        self._native_tools = False
        return response

    async def _send_json_mode(
        self, request: ModelRequest, on_delta: DeltaSink | None
    ) -> tuple[ModelResponse, bool]:
        """Ask for a tool call as JSON; the response, and whether its answer could be read."""
        body = {
            "model": self.model,
            "messages": [_wire_message(m) for m in _json_tools.messages(request)],
            "response_format": _json_tools.response_format(request),
        }
        response = await self._send(body, on_delta, content_kind="tool_call")
        answer = _json_tools.read_answer(response.text, request.tools, call_id=_call_id(request))
        if isinstance(answer, ToolCall):
            return response.model_copy(update={"text": "", "tool_calls": (answer,)}), True
        if isinstance(answer, str):
            return response.model_copy(update={"text": answer}), True
        return response, False  # as written: the loop shows the model its unusable answer

    async def _send(
        self,
        body: dict[str, Any],
        on_delta: DeltaSink | None,
        *,
        content_kind: Literal["text", "tool_call"] = "text",
    ) -> ModelResponse:
        if on_delta is not None:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        return await self._retry.run(lambda: self._attempt(body, on_delta, content_kind))

    async def _attempt(
        self,
        body: dict[str, Any],
        on_delta: DeltaSink | None,
        content_kind: Literal["text", "tool_call"],
    ) -> ModelResponse:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        async with self._http.post(self.url, body, headers) as response:
            if is_event_stream(response):
                self._streams = True
                stream = _ChatStream(self.url, self.model, on_delta, content_kind)
                async with aclosing(sse_events(self.url, response)) as events:
                    async for event in events:
                        if event.data.strip() == "[DONE]":
                            return stream.result()
                        stream.add(event.data)
                raise truncated(self.url, "the stream ended without [DONE]")
            await response.aread()
        if body.get("stream"):
            self._streams = False
        answer = _parse_response(self.url, response, default_model=self.model)
        if on_delta is not None:
            _tell_whole(answer, on_delta, content_kind)
        return answer


def _ignore(delta: Delta) -> None:
    pass


def _call_id(request: ModelRequest) -> str:
    # One call per turn in JSON mode, and a task's turns are numbered uniquely.
    return f"call_{request.turn}"


def _tell_whole(
    response: ModelResponse, on_delta: DeltaSink, content_kind: Literal["text", "tool_call"]
) -> None:
    if response.text:
        on_delta(Delta(content_kind, response.text))
    for call in response.tool_calls:
        on_delta(Delta("tool_call", call.arguments))


# --- request -------------------------------------------------------------------------------------


def _request_body(model: str, request: ModelRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [_wire_message(message) for message in request.messages],
    }
    # OpenAI rejects `tool_choice` without `tools`, and some servers reject an empty `tools`.
    if request.tools:
        body["tools"] = [_wire_tool(tool) for tool in request.tools]
        body["tool_choice"] = request.tool_choice
    return body


def _wire_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        if message.tool_call_id is None:
            raise BackendError(
                "a tool message needs the tool_call_id it answers",
                code="bad_request",
                retryable=False,
            )
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            # The wire format wants null, not "", for an assistant turn that only calls tools.
            "content": message.content or None,
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


def _parse_response(url: str, response: httpx.Response, *, default_model: str) -> ModelResponse:
    status = response.status_code
    try:
        completion = _WireCompletion.model_validate_json(response.content)
    except ValidationError as error:
        raise bad_response(
            url,
            f"{status} with a body that is not a chat completion: "
            f"{provider_message(response)} ({error.error_count()} validation errors)",
            status=status,
        ) from error
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


class _ChatStream:
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
