"""Every HTTP backend against the same cases, over real HTTP on loopback.

Each backend has a `Wire`: it knows how its provider phrases an answer (whole, or as a stream of
Server-Sent Events), an error and a mid-stream failure, in the shapes the providers really send,
extra fields included. The cases are written once, against that adapter.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import pytest

from agent.backends._retry import RetryPolicy
from agent.backends.anthropic import AnthropicBackend
from agent.backends.base import Delta, Message, ModelBackend, ModelRequest, ToolCall
from agent.backends.base import Usage as TokenUsage
from agent.backends.openai_compat import OpenAICompatibleBackend
from base.errors import BackendError
from base.images import Image
from base.toolspec import ToolSpec

from .wire_server import Event, Reply, WireServer

NO_WAIT = RetryPolicy(attempts=3, base_delay=0.0, max_delay=2.0)

READ_FILE = ToolSpec(
    name="read_file",
    description="Read a file from the workspace.",
    parameters={"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)

ROUND_TRIP = ModelRequest(
    task_id="t1",
    purpose="act",
    turn=2,
    tool_choice="required",
    tools=(READ_FILE,),
    messages=(
        Message(role="system", content="You are careful."),
        Message(role="user", content="Compare a.txt and b.txt."),
        Message(
            role="assistant",
            tool_calls=(ToolCall(id="call_1", name="read_file", arguments='{"path": "a.txt"}'),),
        ),
        Message(role="tool", tool_call_id="call_1", content="alpha"),
    ),
)

HELLO = ModelRequest(
    task_id="t1",
    purpose="act",
    turn=0,
    tools=(),
    messages=(Message(role="user", content="Say hello."),),
)

USAGE = {"input": 31, "output": 7}


class Wire(Protocol):
    """How one provider's API phrases things, for scripting the wire server."""

    path: str
    #: what a mid-stream `error_event` maps to
    stream_error_code: str

    def backend(self, url: str, *, retry: RetryPolicy, timeout: float = 5.0) -> ModelBackend: ...

    def authorised(self, headers: dict[str, str]) -> bool: ...

    def round_trip_body(self) -> dict[str, Any]:
        """The body `ROUND_TRIP` must be sent as."""
        ...

    def streams(self, body: dict[str, Any]) -> bool:
        """Whether a request body asks for a stream."""
        ...

    def text(self, text: str) -> Reply: ...

    def tool_call(self, call_id: str, name: str, arguments: str) -> Reply: ...

    def text_events(self, pieces: list[str]) -> tuple[Event, ...]: ...

    def tool_call_events(self, call_id: str, name: str, pieces: list[str]) -> tuple[Event, ...]: ...

    def error(
        self, status: int, message: str, *, headers: dict[str, str] | None = None
    ) -> Reply: ...

    def error_event(self) -> Event:
        """The event a provider sends when it fails after the 200, e.g. overloaded."""
        ...

    def pictures(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """The pictures a request body sends, each as (the call it answers, its data URL), where
        the provider documents them: an image part of a user message after the tool messages
        (OpenAI), an image block in the tool result (Anthropic)."""
        ...


class OpenAIWire:
    path = "/v1/chat/completions"
    stream_error_code = "server_error"

    def pictures(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        messages = body["messages"]
        for i, message in enumerate(messages):
            if message["role"] != "user" or isinstance(message["content"], str):
                continue
            assert messages[i - 1]["role"] == "tool", "pictures follow the tool messages"
            answers = ""
            for part in message["content"]:
                if part["type"] == "text":
                    answers = part["text"].removeprefix("The picture ").removesuffix(" gave:")
                else:
                    assert part["type"] == "image_url", part
                    found.append((answers, part["image_url"]["url"]))
        return found

    def backend(self, url: str, *, retry: RetryPolicy, timeout: float = 5.0) -> ModelBackend:
        return OpenAICompatibleBackend(
            f"{url}/v1", "test-model", api_key="sk-test", retry=retry, timeout=timeout
        )

    def authorised(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == "Bearer sk-test"

    def round_trip_body(self) -> dict[str, Any]:
        return {
            "model": "test-model",
            "messages": [
                {"role": "system", "content": "You are careful."},
                {"role": "user", "content": "Compare a.txt and b.txt."},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "read_file", "arguments": '{"path": "a.txt"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "alpha"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "read_file",
                        "description": "Read a file from the workspace.",
                        "parameters": READ_FILE.parameters,
                    },
                }
            ],
            "tool_choice": "required",
            "temperature": 0.0,
        }

    def streams(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True and body.get("stream_options") == {"include_usage": True}

    def text(self, text: str) -> Reply:
        return self._completion({"content": text, "refusal": None}, "stop")

    def tool_call(self, call_id: str, name: str, arguments: str) -> Reply:
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        return self._completion({"content": None, "tool_calls": [call]}, "tool_calls")

    def text_events(self, pieces: list[str]) -> tuple[Event, ...]:
        return (
            _chunk({"role": "assistant", "content": "", "refusal": None}),
            *(_chunk({"content": piece}) for piece in pieces),
            *self._ending("stop"),
        )

    def tool_call_events(self, call_id: str, name: str, pieces: list[str]) -> tuple[Event, ...]:
        first = {"index": 0, "id": call_id, "type": "function"}
        return (
            _chunk(
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{**first, "function": {"name": name, "arguments": ""}}],
                    "refusal": None,
                }
            ),
            *(
                _chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                for piece in pieces
            ),
            *self._ending("tool_calls"),
        )

    def error(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> Reply:
        kind = {429: "requests", 400: "invalid_request_error"}.get(status, "server_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return Reply(status=status, body=body, headers=headers or {})

    def error_event(self) -> Event:
        return Event(
            {
                "error": {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        )

    def _completion(self, message: dict[str, Any], finish: str) -> Reply:
        return Reply(
            body={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "test-model-2025",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", **message},
                        "finish_reason": finish,
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": USAGE["input"],
                    "completion_tokens": USAGE["output"],
                    "total_tokens": USAGE["input"] + USAGE["output"],
                },
                "system_fingerprint": "fp_1",
            }
        )

    def _ending(self, finish: str) -> tuple[Event, ...]:
        usage = {
            "prompt_tokens": USAGE["input"],
            "completion_tokens": USAGE["output"],
            "total_tokens": USAGE["input"] + USAGE["output"],
        }
        return (_chunk({}, finish), _chunk(None, usage=usage), Event("[DONE]"))


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, *, usage: Any = None) -> Event:
    """A `chat.completion.chunk`; with no delta, the last one, which carries only usage."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    return Event(
        {
            "id": "chatcmpl-9",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "test-model-2025",
            "system_fingerprint": "fp_1",
            "choices": choices,
            "usage": usage,
        }
    )


class AnthropicWire:
    def pictures(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for turn in body["messages"]:
            for block in turn["content"] if isinstance(turn["content"], list) else []:
                if block["type"] != "tool_result" or isinstance(block["content"], str):
                    continue
                for part in block["content"]:
                    if part["type"] == "image":
                        source = part["source"]
                        assert source["type"] == "base64", source
                        url = f"data:{source['media_type']};base64,{source['data']}"
                        found.append((block["tool_use_id"], url))
                    else:
                        assert part["type"] == "text", part
        return found

    path = "/v1/messages"
    stream_error_code = "overloaded"

    def backend(self, url: str, *, retry: RetryPolicy, timeout: float = 5.0) -> ModelBackend:
        return AnthropicBackend(
            url, "claude-test", api_key="sk-ant-test", retry=retry, timeout=timeout
        )

    def authorised(self, headers: dict[str, str]) -> bool:
        return (
            headers.get("x-api-key") == "sk-ant-test"
            and headers.get("anthropic-version") == "2023-06-01"
        )

    def round_trip_body(self) -> dict[str, Any]:
        return {
            "model": "claude-test",
            "max_tokens": 4096,
            "system": "You are careful.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Compare a.txt and b.txt."}]},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "read_file",
                            "input": {"path": "a.txt"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "alpha"}
                    ],
                },
            ],
            "tools": [
                {
                    "name": "read_file",
                    "description": "Read a file from the workspace.",
                    "input_schema": READ_FILE.parameters,
                }
            ],
            "tool_choice": {"type": "any"},
        }

    def streams(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def text(self, text: str) -> Reply:
        return self._message([{"type": "text", "text": text}], "end_turn")

    def tool_call(self, call_id: str, name: str, arguments: str) -> Reply:
        block = {"type": "tool_use", "id": call_id, "name": name, "input": json.loads(arguments)}
        return self._message([block], "tool_use")

    def text_events(self, pieces: list[str]) -> tuple[Event, ...]:
        return (
            self._start(),
            _event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            _event("ping"),
            *(
                _event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
                for piece in pieces
            ),
            _event("content_block_stop", index=0),
            *self._ending("end_turn"),
        )

    def tool_call_events(self, call_id: str, name: str, pieces: list[str]) -> tuple[Event, ...]:
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        return (
            self._start(),
            _event("content_block_start", index=0, content_block=block),
            *(
                _event(
                    "content_block_delta",
                    index=0,
                    delta={"type": "input_json_delta", "partial_json": piece},
                )
                for piece in pieces
            ),
            _event("content_block_stop", index=0),
            *self._ending("tool_use"),
        )

    def error(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> Reply:
        kind = {
            400: "invalid_request_error",
            429: "rate_limit_error",
            529: "overloaded_error",
        }.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
        return Reply(status=status, body=body, headers=headers or {})

    def error_event(self) -> Event:
        return _event("error", error={"type": "overloaded_error", "message": "Overloaded"})

    def _message(self, content: list[dict[str, Any]], stop: str) -> Reply:
        return Reply(
            body={
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "model": "test-model-2025",
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": USAGE["input"],
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": USAGE["output"],
                },
            }
        )

    def _start(self) -> Event:
        message: dict[str, Any] = {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "test-model-2025",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": USAGE["input"],
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        }
        return _event("message_start", message=message)

    def _ending(self, stop: str) -> tuple[Event, ...]:
        return (
            _event(
                "message_delta",
                delta={"stop_reason": stop, "stop_sequence": None},
                usage={"output_tokens": USAGE["output"]},
            ),
            _event("message_stop"),
        )


def _event(kind: str, **fields: Any) -> Event:
    """An Anthropic stream event: named, and its type repeated in its data, as the API does."""
    return Event({"type": kind, **fields}, event=kind)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(params=[OpenAIWire(), AnthropicWire()], ids=["openai", "anthropic"])
def wire(request: pytest.FixtureRequest) -> Wire:
    adapter: Wire = request.param
    return adapter


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as running:
        yield running


@pytest.fixture
async def backend(server: WireServer, wire: Wire) -> AsyncIterator[ModelBackend]:
    model = wire.backend(server.url, retry=NO_WAIT)
    yield model
    await model.aclose()


class Deltas:
    """A sink that keeps what it is told, and when."""

    def __init__(self) -> None:
        self.told: list[Delta] = []
        self.times: list[float] = []

    def __call__(self, delta: Delta) -> None:
        self.told.append(delta)
        self.times.append(time.monotonic())

    def joined(self, kind: str) -> str:
        return "".join(d.text for d in self.told if d.kind == kind)


EXPECTED_USAGE = TokenUsage(input_tokens=USAGE["input"], output_tokens=USAGE["output"])


# --- answers -------------------------------------------------------------------------------------

#: a picture as a tool result carries it (a JPEG's first bytes will do for the wire)
PICTURE = Image.of(b"\xff\xd8\xff\xe0 a picture", "image/jpeg")

SEEING = ROUND_TRIP.model_copy(
    update={
        "messages": (
            *ROUND_TRIP.messages[:-1],
            Message(
                role="assistant",
                tool_calls=(
                    ToolCall(id="call_1", name="read_file", arguments='{"path": "a.txt"}'),
                    ToolCall(id="call_2", name="browser_screenshot", arguments="{}"),
                ),
            ),
            Message(role="tool", tool_call_id="call_1", content="alpha"),
            Message(role="tool", tool_call_id="call_2", content="took it", images=(PICTURE,)),
        )
    }
)


@pytest.mark.parametrize("vision", [True, False], ids=["sees", "blind"])
async def test_a_picture_goes_where_the_provider_takes_it_only_to_a_model_that_sees(
    server: WireServer, wire: Wire, backend: ModelBackend, vision: bool
) -> None:
    backend.vision = vision
    server.reply(wire.tool_call("call_3", "read_file", '{"path": "b.txt"}'))
    await backend.complete(SEEING)
    [sent] = server.requests
    expected = [("call_2", f"data:image/jpeg;base64,{PICTURE.data}")] if vision else []
    assert wire.pictures(sent.json) == expected
    # The text goes either way: a model that cannot see reads what the picture shows.
    assert "took it" in sent.body.decode()


async def test_tool_call_round_trip(server: WireServer, wire: Wire, backend: ModelBackend) -> None:
    server.reply(wire.tool_call("call_2", "read_file", '{"path": "b.txt"}'))

    response = await backend.complete(ROUND_TRIP)

    [sent] = server.requests
    assert (sent.method, sent.path) == ("POST", wire.path)
    assert wire.authorised(sent.headers)
    assert sent.json == wire.round_trip_body()
    assert response.tool_calls == (
        ToolCall(id="call_2", name="read_file", arguments='{"path": "b.txt"}'),
    )
    assert response.text == ""
    assert response.usage == EXPECTED_USAGE
    assert response.model == "test-model-2025"


async def test_streamed_text_arrives_piece_by_piece(
    server: WireServer, wire: Wire, backend: ModelBackend
) -> None:
    pieces = ["Hel", "lo, ", "wor", "ld."]
    server.reply(Reply(events=wire.text_events(pieces), event_delay=0.05))
    deltas = Deltas()

    response = await backend.complete(HELLO, on_delta=deltas)
    finished = time.monotonic()

    assert wire.streams(server.requests[0].json)
    assert deltas.told == [Delta("text", piece) for piece in pieces]
    assert response.text == deltas.joined("text") == "Hello, world."
    # Told as the pieces came, not all at the end: the stream's last events were still pending.
    assert finished - deltas.times[0] >= 0.1
    assert response.usage == EXPECTED_USAGE
    assert response.model == "test-model-2025"


async def test_streamed_tool_call_arguments_are_assembled(
    server: WireServer, wire: Wire, backend: ModelBackend
) -> None:
    pieces = ['{"pa', 'th": "no', 'tes/a.txt"}']
    server.reply(Reply(events=wire.tool_call_events("call_7", "read_file", pieces)))
    deltas = Deltas()

    response = await backend.complete(ROUND_TRIP, on_delta=deltas)

    assert deltas.told == [Delta("tool_call", piece) for piece in pieces]
    assert response.tool_calls == (
        ToolCall(id="call_7", name="read_file", arguments='{"path": "notes/a.txt"}'),
    )
    assert response.usage == EXPECTED_USAGE


async def test_streamed_and_whole_answers_are_the_same(
    server: WireServer, wire: Wire, backend: ModelBackend
) -> None:
    server.reply(
        wire.text("Hello, world."),
        Reply(events=wire.text_events(["Hello, ", "world."])),
        wire.tool_call("call_3", "read_file", '{"path": "c.txt"}'),
        Reply(events=wire.tool_call_events("call_3", "read_file", ['{"path": ', '"c.txt"}'])),
    )

    whole_text = await backend.complete(HELLO)
    streamed_text = await backend.complete(HELLO, on_delta=Deltas())
    whole_call = await backend.complete(ROUND_TRIP)
    streamed_call = await backend.complete(ROUND_TRIP, on_delta=Deltas())

    assert [wire.streams(r.json) for r in server.requests] == [False, True, False, True]
    assert whole_text == streamed_text
    assert whole_text.text == "Hello, world."
    assert whole_text.usage == EXPECTED_USAGE
    assert whole_call == streamed_call
    assert whole_call.tool_calls[0].arguments.replace(" ", "") == '{"path":"c.txt"}'


async def test_a_whole_answer_to_a_stream_request_is_read_and_told(
    server: WireServer, wire: Wire, backend: ModelBackend
) -> None:
    server.reply(wire.text("Plain JSON, no stream."))
    deltas = Deltas()

    response = await backend.complete(HELLO, on_delta=deltas)

    assert wire.streams(server.requests[0].json)
    assert response.text == "Plain JSON, no stream."
    assert deltas.told == [Delta("text", "Plain JSON, no stream.")]
    assert response.usage == EXPECTED_USAGE


# --- retried failures ----------------------------------------------------------------------------


async def test_429_waits_for_retry_after_then_succeeds(
    server: WireServer, wire: Wire, backend: ModelBackend
) -> None:
    server.reply(
        wire.error(429, "Rate limit reached", headers={"Retry-After": "0.3"}), wire.text("done")
    )

    started = time.monotonic()
    response = await backend.complete(HELLO)

    assert response.text == "done"
    assert len(server.requests) == 2
    # The policy's own backoff is 0 s, so only the header accounts for the wait.
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("status", [500, 502, 503, 529])
async def test_5xx_is_retried_then_succeeds(
    server: WireServer, wire: Wire, backend: ModelBackend, status: int
) -> None:
    server.reply(wire.error(status, "try again later"), wire.text("done"))

    assert (await backend.complete(HELLO)).text == "done"
    assert len(server.requests) == 2


async def test_a_400_is_not_retried(server: WireServer, wire: Wire, backend: ModelBackend) -> None:
    server.reply(wire.error(400, "messages: field required"), wire.text("never sent"))

    with pytest.raises(BackendError) as caught:
        await backend.complete(HELLO)

    assert len(server.requests) == 1
    assert (caught.value.code, caught.value.retryable, caught.value.status) == (
        "bad_request",
        False,
        400,
    )
    assert "messages: field required" in str(caught.value)


async def test_a_slow_server_times_out_after_the_configured_attempts(
    server: WireServer, wire: Wire
) -> None:
    server.reply(*[Reply(delay=2.0, body={})] * 3)
    backend = wire.backend(server.url, retry=RetryPolicy(attempts=2, base_delay=0), timeout=0.2)
    try:
        with pytest.raises(BackendError) as caught:
            await backend.complete(HELLO)
    finally:
        await backend.aclose()

    assert (caught.value.code, caught.value.retryable) == ("timeout", True)
    assert len(server.requests) == 2


async def test_a_stall_between_events_times_out_and_is_retried(
    server: WireServer, wire: Wire
) -> None:
    server.reply(
        Reply(events=wire.text_events(["never", "finished"]), event_delay=1.0),
        Reply(events=wire.text_events(["on time"])),
    )
    backend = wire.backend(server.url, retry=NO_WAIT, timeout=0.3)
    try:
        response = await backend.complete(HELLO, on_delta=Deltas())
    finally:
        await backend.aclose()

    assert response.text == "on time"
    assert len(server.requests) == 2


@pytest.mark.parametrize("how", ["connection closed", "body ended"])
async def test_a_truncated_stream_is_retried(
    server: WireServer, wire: Wire, backend: ModelBackend, how: str
) -> None:
    events = wire.text_events(["Hello, ", "world."])
    first = (
        Reply(events=events, cut_after=len(events) // 2)
        if how == "connection closed"
        else Reply(events=events[:-1])  # a clean end of the body, but the last event never came
    )
    server.reply(first, Reply(events=events))
    deltas = Deltas()

    response = await backend.complete(HELLO, on_delta=deltas)

    assert len(server.requests) == 2
    assert response.text == "Hello, world."
    # The sink may hear the start of the answer again; the response holds one attempt's.
    assert deltas.joined("text").endswith("Hello, world.")


async def test_a_stream_truncated_every_time_fails_as_truncated(
    server: WireServer, wire: Wire
) -> None:
    events = wire.tool_call_events("call_1", "read_file", ['{"path"', ': "a"}'])
    server.reply(*[Reply(events=events, cut_after=3)] * 2)
    backend = wire.backend(server.url, retry=RetryPolicy(attempts=2, base_delay=0))
    try:
        with pytest.raises(BackendError) as caught:
            await backend.complete(ROUND_TRIP, on_delta=Deltas())
    finally:
        await backend.aclose()

    assert (caught.value.code, caught.value.retryable) == ("truncated_stream", True)
    assert len(server.requests) == 2


async def test_an_error_event_mid_stream_is_mapped_and_retried(
    server: WireServer, wire: Wire
) -> None:
    events = wire.text_events(["Hello"])
    broken = Reply(events=(*events[: len(events) // 2], wire.error_event()))
    server.reply(broken, Reply(events=events), broken, broken)
    backend = wire.backend(server.url, retry=RetryPolicy(attempts=2, base_delay=0))
    try:
        response = await backend.complete(HELLO, on_delta=Deltas())
        with pytest.raises(BackendError) as caught:
            await backend.complete(HELLO, on_delta=Deltas())
    finally:
        await backend.aclose()

    assert response.text == "Hello"
    assert (caught.value.code, caught.value.retryable) == (wire.stream_error_code, True)
    assert len(server.requests) == 4  # broken then fine; broken twice, the attempts used up
