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
its type, `temperature`, `tools`; OpenAI's `error.param`, where given, names it exactly), or a
stream of a request with tools or a `response_format` that ends before its first event
(llama.cpp's server, for a `tool_choice` it cannot stream). The backend then steps the request
down (`agent.backends._refusals`), one thing at a time, and sends it again at once:

    stream                           -> the answer asked for whole
    tool_choice "required"           -> "auto"
    response_format json_schema      -> json_object with the schema -> none (the prompt asks)
    temperature                      -> left to the server
    tools (nothing left to step)     -> tool calls as JSON (below)

A stepped-down request is sent once (so is any request with tools while the backend does not yet
know whether the server has tool calls): if it fails with a 400, 422, 500 or 501 too, naming
nothing, that counts as a refusal of it, unless the error blames another parameter (OpenAI's
`error.param`, a validation error's location: a prompt too long is no refusal). In JSON mode the
next `response_format` is then tried; with native tools, the server's tool calls are taken to be
broken (llama.cpp's chatml-function-calling fails a `tool_choice` "required" with an empty 500)
and tool calls are asked for as JSON. What was refused is remembered for the life of the backend
(one server), so no shape refused is sent twice, and each step is told once, as a note (`notes`,
`on_note`, and `Capabilities.notes` for `agent doctor`).

Not every server's model has native tool calls. The backend learns it from use: while it does
not know, a request with tools whose native shapes are all refused, or that is answered without a
call although one was required, is sent once more in JSON mode (`agent.backends._json_tools`).
If that yields a call, later requests go straight to JSON mode; so they do, whatever it yields,
after a refusal that named what it refused. Otherwise the first answer stands, and a refusal that
named nothing is raised with its own code (e.g. a 400's `bad_request`). A JSON call written into
`content` instead of `tool_calls` is read as a call either way.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import aclosing
from typing import Any, Literal

import httpx

from agent.backends import _json_tools, _refusals
from agent.backends._http import HttpClient, check_base_url, is_event_stream, sse_events, truncated
from agent.backends._json_tools import JsonMode
from agent.backends._openai_wire import ChatStream, parse_response, request_body, wire_message
from agent.backends._refusals import Mode, Refused, Shape
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
)
from base.errors import BackendError, ErrorCode
from base.toolspec import ToolSpec

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
    connects until the first `complete`. `temperature` is sent with every request (0, greedy,
    suits tool calls and makes answers repeatable; None leaves it to the server). `on_note` is
    told, once each, what the backend found the server cannot do and how it asks instead (also
    kept in `notes`).

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
        temperature: float | None = 0.0,
        on_note: Callable[[str], None] | None = None,
        vision: bool = False,
    ) -> None:
        check_base_url(base_url, "OpenAI-compatible")
        self.name = f"openai-compatible:{model}"
        self.vision = vision
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        official = httpx.URL(self.base_url).host == "api.openai.com"
        self._cap = "max_completion_tokens" if official else "max_tokens"
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
        self._temperature = temperature
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
            # While nothing is known, a failure naming nothing may be the server's way to say it
            # has no tool calls (llama.cpp's says 500): tried in JSON mode rather than again.
            response = await self._ask(
                request, "native", on_delta, tentative=self._native_tools is None
            )
        except Refused as refused:
            if self._native_tools is not None:
                raise
            return await self._instead_of_native(request, on_delta, refused)
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
        self,
        request: ModelRequest,
        mode: Mode,
        on_delta: DeltaSink | None,
        *,
        tentative: bool = False,
    ) -> ModelResponse:
        """The answer to `request` sent in `mode`, in the best shape the server takes.

        `tentative`: the first shape is sent once, like a stepped-down one (see the module
        docstring). Raises `Refused` when no step is left, else `BackendError` as it came.
        """
        shape = Shape(
            mode,
            stream=on_delta is not None and mode not in self._whole,
            tool_choice=request.tool_choice if self._required else "auto",
            json_mode=self._json_mode,
            temperature=self._temperature,
        )
        kind: Literal["text", "tool_call"] = "tool_call" if mode == "json" else "text"
        while True:
            try:
                return await self._send(
                    self._body(request, shape), on_delta, kind, tentative=tentative
                )
            except Refused as refused:
                lower = _refusals.lower(shape, refused.parameters)
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

    def _step(self, shape: Shape, lower: Shape, refused: Refused) -> None:
        """Remember that `shape` was refused, and say how the server is asked from now on."""
        if lower.stream != shape.stream:
            self._whole.add(shape.mode)
            what = {"plain": "answers", "native": "tool calls", "json": "JSON tool calls"}
            change = f"streamed {what[shape.mode]}", "asking for them whole"
        elif lower.tool_choice != shape.tool_choice:
            self._required = False
            change = 'tool_choice "required"', 'sending "auto"'
        elif lower.temperature != shape.temperature:
            self._temperature = None
            change = f"temperature {shape.temperature}", "leaving it to the server"
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
        self._tell(f"{self.base_url} {_refusals.refused_what(refused, change[0])}: {change[1]}")

    def _tell(self, note: str) -> None:
        self._notes.append(note)
        if self.on_note is not None:
            self.on_note(note)

    def _body(self, request: ModelRequest, shape: Shape) -> dict[str, Any]:
        if shape.mode == "json":
            body: dict[str, Any] = {
                "model": self.model,
                "messages": [wire_message(m) for m in _json_tools.messages(request)],
            }
            response_format = _json_tools.response_format(request, shape.json_mode)
            if response_format is not None:
                body["response_format"] = response_format
        else:
            body = request_body(self.model, request, vision=self.vision, cap=self._cap)
            if shape.mode == "native":
                body["tool_choice"] = shape.tool_choice
        if shape.temperature is not None:
            body["temperature"] = shape.temperature
        if shape.stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body

    async def _instead_of_native(
        self, request: ModelRequest, on_delta: DeltaSink | None, refused: Refused
    ) -> ModelResponse:
        """The answer in JSON mode, for a request whose every native shape the server refused.

        Remembered as the way to ask if the answer could be read, or if the refusal named what
        it refused (asking natively again would be refused again). Otherwise nothing is learned
        and `refused` is raised, as it is if JSON mode fails too.
        """
        try:
            response, readable = await self._ask_json(request, on_delta)
        except BackendError:
            raise refused from refused.__cause__  # the first refusal says more than this
        if not readable and not (refused.parameters or refused.broke):
            raise refused
        self._native_tools = False
        self._tell(f"{self.base_url} {_refusals.refused_what(refused, 'tool calls')}: {_AS_JSON}")
        return response

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
        except Refused as refused:
            if refused.broke:
                # The server closes the connection under the next request: not to be reused.
                await self._http.drop_connections()
            raise
        except BackendError as error:
            refusal = _refusals.refusal(error, body, self.url, tentative=tentative)
            if refusal is None:
                raise
            raise refusal from error
        if body.get("stream"):
            self._streams = False
        answer = parse_response(self.url, response, default_model=self.model)
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
        stream = ChatStream(self.url, self.model, on_delta, content_kind)
        began = False
        try:
            async with aclosing(sse_events(self.url, response)) as events:
                async for event in events:
                    began = True
                    if event.data.strip() == "[DONE]":
                        return stream.result()
                    stream.add(event.data)
        except BackendError as error:
            if (
                began
                or error.code != ErrorCode.TRUNCATED_STREAM
                or not _refusals.asks_more_than_chat(body)
            ):
                raise
            raise _refusals.broken(self.url, body) from error
        if not began and _refusals.asks_more_than_chat(body):
            raise _refusals.broken(self.url, body)
        raise truncated(self.url, "the stream ended without [DONE]")


_AS_JSON = "asking for tool calls as JSON"


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
