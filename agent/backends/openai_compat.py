"""A backend for any server speaking the OpenAI chat-completions wire format.

OpenAI itself, vLLM, llama.cpp's server, Ollama, LM Studio and most gateways accept the same
`POST {base_url}/chat/completions`. Their failures are mapped to `BackendError` once, by the
table in `agent.backends._http`, plus this format's own::

    200 of the wrong shape          bad_response
    a stream without `[DONE]`, or   truncated_stream   retryable
    without a finish_reason
    a refusal of a capability       capability_refused (see below)

Given `on_delta`, a request is streamed (`stream: true`, usage asked for in the last chunk) and
each piece of text or of a call's arguments is told as it arrives. A server that answers a stream
request with a plain JSON body is read as before, and `on_delta` told the whole answer at once.
A retried attempt starts its response afresh, so a sink may be told the start of an answer again;
the `ModelResponse` holds each attempt's own answer only.

Servers differ in what they take, and many say so only by refusing. A refusal of a capability is
an answer, not a fault: it is never retried. It is a 400, 422, 500 or 501 whose message names a
parameter the request carried (`stream`/`stream_options`, `tool_choice`, `response_format` or
its type, `tools`), or a stream of a request with tools or a `response_format` that ends before
its first event (llama.cpp's server, for a `tool_choice` it cannot stream). The backend then steps
the request down, one thing at a time, and sends it again at once:

    stream                           -> the answer asked for whole
    tool_choice "required"           -> "auto"
    response_format json_schema      -> json_object with the schema -> none (the prompt asks)
    tools (nothing left to step)     -> tool calls as JSON (below)

A stepped-down request is sent once: if it fails with a 400, 422, 500 or 501 too, naming nothing,
that counts as a refusal of it, and the next step is tried. What was refused is remembered for
the life of the backend (one server), so no shape refused is sent twice, and each step is told
once, as a note (`notes`, `on_note`, and `Capabilities.notes` for `agent doctor`).

Not every server's model has native tool calls. The backend learns it from use: while it does
not know, a request with tools that is refused (a 400, or a refusal of `tools`), or answered
without a call although one was required, is sent once more in JSON mode
(`agent.backends._json_tools`). If that yields a call, later requests go straight to JSON mode;
if not, the first answer stands (a 400 is raised as it came), except after a refusal of every way
of sending tools, when JSON mode stays. A JSON call written into `content` instead of
`tool_calls` is read as a call either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.backends import _json_tools
from agent.backends._http import (
    HttpClient,
    bad_response,
    check_base_url,
    is_event_stream,
    named_parameters,
    provider_message,
    sse_events,
    stream_error,
    truncated,
)
from agent.backends._json_tools import JSON_MODES, JsonMode
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

#: plain chat; tools offered natively; tool calls asked for as JSON
Mode = Literal["plain", "native", "json"]

# The statuses servers refuse an unsupported parameter with: 400 and 422 (OpenAI, vLLM, FastAPI's
# validation), 500 (llama.cpp's server wraps its validation errors in one), 501.
_REFUSAL_STATUSES = frozenset({400, 422, 500, 501})

# What is given up first when a refusal names nothing: the live view of an answer, then the
# guarantee of a call, then the schema the server holds the answer to.
_STEP_ORDER = ("stream", "tool_choice", "response_format")


@dataclass(frozen=True)
class _Shape:
    """The form a request is sent in. Stepping down changes one field at a time."""

    mode: Mode
    stream: bool
    tool_choice: Literal["auto", "required"] = "required"  # native only
    json_mode: JsonMode = "json_schema"  # json only


class _Refused(BackendError):
    """A server's answer that it cannot take a request of this shape: not retried.

    `parameters` are the ones it named, in `_STEP_ORDER` then ``tools``; none when a stepped-down
    request failed without naming any. `broke` when the sign was a stream that never began.
    """

    def __init__(
        self,
        message: str,
        *,
        parameters: tuple[str, ...],
        broke: bool = False,
        status: int | None = None,
        url: str,
    ) -> None:
        super().__init__(
            message, code="capability_refused", retryable=False, status=status, url=url
        )
        self.parameters = parameters
        self.broke = broke


class OpenAICompatibleBackend(ModelBackend):
    """A model behind an OpenAI-compatible `/chat/completions` endpoint.

    `base_url` is the API root, e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
    `timeout` bounds each read (also the wait between two chunks of a stream), write and pool
    wait; `connect_timeout` bounds opening a connection. Pass `client` (or just `transport`) to
    control the HTTP layer, e.g. in tests; a client passed in is left open by `aclose`. Nothing
    connects until the first `complete`. `on_note` is told, once each, what the backend found the
    server cannot do and how it asks instead (also kept in `notes`).

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
        on_note: Callable[[str], None] | None = None,
    ) -> None:
        check_base_url(base_url, "OpenAI-compatible")
        self.name = f"openai-compatible:{model}"
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.on_note = on_note
        self._api_key = api_key
        self._retry = retry or RetryPolicy()
        self._http = HttpClient(
            timeout=timeout, connect_timeout=connect_timeout, client=client, transport=transport
        )
        # Learned from use; None until an answer tells.
        self._native_tools: bool | None = None
        self._streams: bool | None = None
        # Learned from refusals; they only ever step down.
        self._required = True  # tool_choice "required" is taken
        self._json_mode: JsonMode = "json_schema"
        self._whole: set[Mode] = set()  # modes whose answers are asked for whole, not streamed
        self._notes: list[str] = []

    @property
    def notes(self) -> tuple[str, ...]:
        """What the server was found not to take, and how the backend asks instead, in order."""
        return tuple(self._notes)

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        """Send `request` and return the model's answer, retrying per the retry policy and
        stepping down what the server refuses.

        Raises `BackendError` with one of the codes in the module docstring.
        """
        if not request.tools:
            return await self._ask(request, "plain", on_delta)
        if self._native_tools is False:
            response, _ = await self._ask_json(request, on_delta)
            return response
        try:
            response = await self._ask(request, "native", on_delta)
        except _Refused as refused:
            if self._native_tools is not None:
                raise
            # Every way of offering tools was refused: asking again would be refused again.
            self._native_tools = False
            self._tell(f"{self.base_url} {_refused_what(refused, 'tools')}: {_AS_JSON}")
            response, _ = await self._ask_json(request, on_delta)
            return response
        except BackendError as error:
            if self._native_tools is not None or error.status != 400:
                raise
            fallback = await self._try_json_mode(request, on_delta)
            if fallback is None:
                raise
            self._tell(f"{self.base_url} refused tools (400): {_AS_JSON}")
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
                self._tell(f"{self.base_url} answered a required tool call in prose: {_AS_JSON}")
                # Both answers were paid for.
                return fallback.model_copy(update={"usage": response.usage + fallback.usage})
        return response

    async def probe(self) -> Capabilities:
        """What is known of the model; if nothing yet, one tiny streamed request with a tool
        (stepped down as the server requires, like any other).

        `native_tools` and `streaming` are True unless use showed otherwise; `json_mode` is how
        tool calls are asked for as JSON, when they are; `notes` say what was stepped down.
        Raises `BackendError` if that request fails.
        """
        if self._native_tools is None:
            await self.complete(_PING, on_delta=_ignore)
        return Capabilities(
            native_tools=self._native_tools is not False,
            streaming=self._streams is not False,
            context_window=self.context_window,
            json_mode=self._json_mode if self._native_tools is False else None,
            notes=self.notes,
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this backend created it. Safe to call more than once."""
        await self._http.aclose()

    # --- asking, and stepping down -------------------------------------------------------------

    async def _ask(
        self, request: ModelRequest, mode: Mode, on_delta: DeltaSink | None
    ) -> ModelResponse:
        """The answer to `request` sent in `mode`, in the best shape the server takes.

        Raises `_Refused` when no step is left, else `BackendError` as it came.
        """
        shape = _Shape(
            mode,
            stream=on_delta is not None and mode not in self._whole,
            tool_choice=request.tool_choice if self._required else "auto",
            json_mode=self._json_mode,
        )
        kind: Literal["text", "tool_call"] = "tool_call" if mode == "json" else "text"
        tentative = False
        while True:
            try:
                return await self._send(
                    self._body(request, shape), on_delta, kind, tentative=tentative
                )
            except _Refused as refused:
                lower = _lower(shape, refused.parameters)
                if lower is None:
                    raise
                self._step(shape, lower, refused)
                shape, tentative = lower, True

    async def _send(
        self,
        body: dict[str, Any],
        on_delta: DeltaSink | None,
        content_kind: Literal["text", "tool_call"],
        *,
        tentative: bool,
    ) -> ModelResponse:
        return await self._retry.run(
            lambda: self._attempt(body, on_delta, content_kind, tentative=tentative)
        )

    def _step(self, shape: _Shape, lower: _Shape, refused: _Refused) -> None:
        """Remember that `shape` was refused, and say how the server is asked from now on."""
        if lower.stream != shape.stream:
            self._whole.add(shape.mode)
            what = {"plain": "answers", "native": "tool calls", "json": "JSON tool calls"}
            change = f"streamed {what[shape.mode]}", "asking for them whole"
        elif lower.tool_choice != shape.tool_choice:
            self._required = False
            change = 'tool_choice "required"', 'sending "auto"'
        else:
            self._json_mode = lower.json_mode
            change = (
                f"response_format {shape.json_mode}",
                (
                    "asking with json_object and the schema"
                    if lower.json_mode == "json_object"
                    else "asking for the JSON by the prompt alone"
                ),
            )
        self._tell(f"{self.base_url} {_refused_what(refused, change[0])}: {change[1]}")

    def _tell(self, note: str) -> None:
        self._notes.append(note)
        if self.on_note is not None:
            self.on_note(note)

    def _body(self, request: ModelRequest, shape: _Shape) -> dict[str, Any]:
        if shape.mode == "json":
            body: dict[str, Any] = {
                "model": self.model,
                "messages": [_wire_message(m) for m in _json_tools.messages(request)],
            }
            response_format = _json_tools.response_format(request, shape.json_mode)
            if response_format is not None:
                body["response_format"] = response_format
        else:
            body = _request_body(self.model, request)
            if shape.mode == "native":
                body["tool_choice"] = shape.tool_choice
        import os
        if os.environ.get("XTEMP"):
            body["temperature"] = float(os.environ["XTEMP"]); body["seed"] = 0
        if shape.stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body

    async def _try_json_mode(
        self, request: ModelRequest, on_delta: DeltaSink | None
    ) -> ModelResponse | None:
        """The answer in JSON mode, remembered as the way to ask; None if it fails or is unread."""
        try:
            response, readable = await self._ask_json(request, on_delta)
        except BackendError:
            return None  # the caller's first answer (or error) says more than this one
        if not readable:
            return None
        self._native_tools = False
        return response

    async def _ask_json(
        self, request: ModelRequest, on_delta: DeltaSink | None
    ) -> tuple[ModelResponse, bool]:
        """Ask for a tool call as JSON; the response, and whether its answer could be read."""
        response = await self._ask(request, "json", on_delta)
        answer = _json_tools.read_answer(response.text, request.tools, call_id=_call_id(request))
        if isinstance(answer, ToolCall):
            return response.model_copy(update={"text": "", "tool_calls": (answer,)}), True
        if isinstance(answer, str):
            return response.model_copy(update={"text": answer}), True
        return response, False  # as written: the loop shows the model its unusable answer

    async def _attempt(
        self,
        body: dict[str, Any],
        on_delta: DeltaSink | None,
        content_kind: Literal["text", "tool_call"],
        *,
        tentative: bool,
    ) -> ModelResponse:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            async with self._http.post(self.url, body, headers) as response:
                if is_event_stream(response):
                    self._streams = True
                    return await self._read_stream(body, response, on_delta, content_kind)
                await response.aread()
        except _Refused:
            raise
        except BackendError as error:
            refused = self._refusal(error, body, tentative=tentative)
            if refused is None:
                raise
            raise refused from error
        if body.get("stream"):
            self._streams = False
        answer = _parse_response(self.url, response, default_model=self.model)
        if on_delta is not None:
            _tell_whole(answer, on_delta, content_kind)
        return answer

    async def _read_stream(
        self,
        body: dict[str, Any],
        response: httpx.Response,
        on_delta: DeltaSink | None,
        content_kind: Literal["text", "tool_call"],
    ) -> ModelResponse:
        stream = _ChatStream(self.url, self.model, on_delta, content_kind)
        began = False
        try:
            async with aclosing(sse_events(self.url, response)) as events:
                async for event in events:
                    began = True
                    if event.data.strip() == "[DONE]":
                        return stream.result()
                    stream.add(event.data)
        except BackendError as error:
            if began or error.code != "truncated_stream" or not _asks_more_than_chat(body):
                raise
            raise self._broken(body) from error
        if not began and _asks_more_than_chat(body):
            raise self._broken(body)
        raise truncated(self.url, "the stream ended without [DONE]")

    def _broken(self, body: dict[str, Any]) -> _Refused:
        # llama.cpp's server starts the stream, then fails on what it cannot stream (a
        # tool_choice other than "auto", or any with chatml-function-calling) and ends it bare.
        return _Refused(
            f"{self.url} ended a streamed answer before its first event "
            f"(it cannot stream this request: {_features(body)})",
            parameters=("stream",),
            broke=True,
            url=self.url,
        )

    def _refusal(
        self, error: BackendError, body: dict[str, Any], *, tentative: bool
    ) -> _Refused | None:
        """`error` as a refusal of a capability, if it is one (see the module docstring)."""
        if error.status not in _REFUSAL_STATUSES:
            return None
        detail = str(error.context.get("detail", ""))
        named = named_parameters(detail, _capability_words(body))
        if not named and not tentative:
            return None
        return _Refused(str(error), parameters=named, status=error.status, url=self.url)


_AS_JSON = "asking for tool calls as JSON"


def _lower(shape: _Shape, parameters: tuple[str, ...]) -> _Shape | None:
    """The shape one step below `shape` that leaves out what `parameters` name (whatever comes
    next in `_STEP_ORDER` when they name nothing); None if nothing named can be stepped down."""
    for parameter in parameters or _STEP_ORDER:
        if parameter == "stream" and shape.stream:
            return replace(shape, stream=False)
        if parameter == "tool_choice" and shape.mode == "native" and shape.tool_choice != "auto":
            return replace(shape, tool_choice="auto")
        if parameter == "response_format" and shape.mode == "json" and shape.json_mode != "prompt":
            return replace(shape, json_mode=JSON_MODES[JSON_MODES.index(shape.json_mode) + 1])
    return None


def _refused_what(refused: _Refused, what: str) -> str:
    """E.g. "refused response_format json_schema (500)", "broke off streamed tool calls"."""
    if refused.broke:
        return f"broke off {what}"
    return f"refused {what}" + (f" ({refused.status})" if refused.status else "")


def _capability_words(body: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The capability parameters `body` carries, each with the words a refusal names it by, in
    `_STEP_ORDER`, then ``tools``."""
    words: dict[str, tuple[str, ...]] = {}
    if body.get("stream"):
        words["stream"] = ("stream", "stream_options")
    if "tool_choice" in body:
        words["tool_choice"] = ("tool_choice", "tool choice")
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        words["response_format"] = (
            "response_format",
            "response format",
            str(response_format.get("type", "response_format")),
        )
    if "tools" in body:
        words["tools"] = ("tools",)
    return words


def _asks_more_than_chat(body: dict[str, Any]) -> bool:
    return "tools" in body or "response_format" in body


def _features(body: dict[str, Any]) -> str:
    parts = []
    if "tool_choice" in body:
        parts.append(f"tool_choice {body['tool_choice']!r}")
    if isinstance(body.get("response_format"), dict):
        parts.append(f"response_format {body['response_format'].get('type')!r}")
    return ", ".join(parts) or "tools"


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
        wire: dict[str, Any] = {"role": "assistant"}
        # A turn that only calls tools has no content: left out, as OpenAI allows, since
        # llama.cpp's server refuses null there (a 500 naming `messages`).
        if message.content:
            wire["content"] = message.content
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
        return wire
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
