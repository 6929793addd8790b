"""The OpenAI-compatible backend and the retry layer, against a real HTTP server on loopback."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from tenacity import RetryError

from agent.backends._retry import RetryPolicy, parse_retry_after
from agent.backends.base import (
    Capabilities,
    Delta,
    Message,
    ModelRequest,
    ToolCall,
    ToolSpec,
    Usage,
)
from agent.backends.openai_compat import OpenAICompatibleBackend
from agent.errors import BackendError, ConfigError

from .wire_server import Event, Reply, WireServer

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=2.0)

READ_FILE = ToolSpec(
    name="read_file",
    description="Read a file from the workspace.",
    parameters={"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)


def completion(
    message: dict[str, Any], *, model: str = "test-model-2025", usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """A chat-completions response body as OpenAI sends it, extra fields included."""
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
    }
    if usage is not None:
        body["usage"] = {**usage, "total_tokens": sum(usage.values())}
    return body


TEXT_OK = Reply(body=completion({"content": "done"}))


def ask(*messages: Message, tools: tuple[ToolSpec, ...] = ()) -> ModelRequest:
    return ModelRequest(
        task_id="t1",
        purpose="act",
        turn=0,
        tools=tools,
        messages=messages or (Message(role="user", content="hi"),),
    )


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as running:
        yield running


@pytest.fixture
async def backend(server: WireServer) -> AsyncIterator[OpenAICompatibleBackend]:
    model = OpenAICompatibleBackend(f"{server.url}/v1", "test-model", api_key="sk-test", retry=FAST)
    yield model
    await model.aclose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- the happy paths -----------------------------------------------------------------------------


# The tool-call round trip (request body, call, usage, model) is a case of the conformance
# suite, run against every HTTP backend: tests/test_http_conformance.py.


async def test_plain_text_answer_without_tools_or_key(server: WireServer) -> None:
    server.reply(
        Reply(
            body=completion(
                {"content": "Paris."}, usage={"prompt_tokens": 9, "completion_tokens": 2}
            )
        )
    )
    backend = OpenAICompatibleBackend(f"{server.url}/v1/", "local", retry=FAST)
    try:
        response = await backend.complete(ask(Message(role="user", content="Capital of France?")))
    finally:
        await backend.aclose()

    sent = server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert "authorization" not in sent.headers
    assert sent.json == {
        "model": "local",
        "messages": [{"role": "user", "content": "Capital of France?"}],
    }
    assert response.text == "Paris."
    assert response.tool_calls == ()
    assert response.usage == Usage(input_tokens=9, output_tokens=2)


async def test_arguments_kept_raw_or_reserialized(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(
        Reply(
            body=completion(
                {
                    "tool_calls": [
                        {
                            "id": "a",
                            "type": "function",
                            "function": {"name": "read_file", "arguments": '{"path": "x", oops'},
                        },
                        {
                            "type": "function",
                            "function": {"name": "read_file", "arguments": {"path": "y"}},
                        },
                    ]
                }
            )
        )
    )

    response = await backend.complete(ask(tools=(READ_FILE,)))

    first, second = response.tool_calls
    assert first.arguments == '{"path": "x", oops'  # invalid JSON: the loop reports it later
    assert second.arguments == '{"path": "y"}'
    assert second.id == "call_1"  # the server gave none; the call still needs one to answer
    assert response.usage == Usage()
    assert response.model == "test-model-2025"


# --- retried failures ----------------------------------------------------------------------------


async def test_429_waits_for_retry_after_then_succeeds(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(
        Reply(
            status=429,
            headers={"Retry-After": "1"},
            body={"error": {"message": "Rate limit reached", "type": "requests"}},
        ),
        TEXT_OK,
    )

    started = time.monotonic()
    response = await backend.complete(ask())
    elapsed = time.monotonic() - started

    assert response.text == "done"
    assert len(server.requests) == 2
    # base_delay is 0.01 s, so only the header can account for a wait this long.
    assert elapsed >= 0.95


async def test_5xx_retried_until_success(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(
        Reply(status=500, body={"error": {"message": "boom"}}),
        Reply(status=502, body=b"<html>Bad Gateway</html>"),
        TEXT_OK,
    )

    response = await backend.complete(ask())

    assert response.text == "done"
    assert len(server.requests) == 3


async def test_408_is_retried(server: WireServer, backend: OpenAICompatibleBackend) -> None:
    server.reply(Reply(status=408, body={"error": {"message": "request timeout"}}), TEXT_OK)

    assert (await backend.complete(ask())).text == "done"
    assert len(server.requests) == 2


async def test_repeated_503_exhausts_retries_with_backend_error(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(*[Reply(status=503, body={"error": {"message": "overloaded"}})] * 5)

    with pytest.raises(BackendError) as caught:
        await backend.complete(ask())

    assert not isinstance(caught.value, RetryError)
    assert caught.value.code == "server_error"
    assert caught.value.retryable is True
    assert caught.value.status == 503
    assert "overloaded" in str(caught.value)
    assert len(server.requests) == FAST.attempts


async def test_timeout_after_configured_attempts(server: WireServer) -> None:
    server.reply(*[Reply(delay=2.0, body=completion({"content": "late"}))] * 3)
    backend = OpenAICompatibleBackend(
        server.url,
        "slow",
        timeout=0.2,
        connect_timeout=0.5,
        retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=1.0),
    )
    try:
        with pytest.raises(BackendError) as caught:
            await backend.complete(ask())
    finally:
        await backend.aclose()

    assert caught.value.code == "timeout"
    assert caught.value.retryable is True
    assert len(server.requests) == 2


async def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    backend = OpenAICompatibleBackend(
        url, "nowhere", retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=1.0)
    )
    try:
        with pytest.raises(BackendError) as caught:
            await backend.complete(ask())
    finally:
        await backend.aclose()

    assert caught.value.code == "connection_failed"
    assert caught.value.retryable is True
    assert f"{url}/chat/completions" in str(caught.value)


# --- failures that are not retried ---------------------------------------------------------------


async def test_400_is_not_retried(server: WireServer, backend: OpenAICompatibleBackend) -> None:
    server.reply(
        Reply(
            status=400,
            body={
                "error": {
                    "message": "Invalid value for 'temperature'",
                    "type": "invalid_request_error",
                }
            },
        ),
        TEXT_OK,
    )

    with pytest.raises(BackendError) as caught:
        await backend.complete(ask())

    assert len(server.requests) == 1
    assert caught.value.code == "bad_request"
    assert caught.value.retryable is False
    assert caught.value.status == 400
    assert "Invalid value for 'temperature'" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "auth_failed"), (403, "auth_failed"), (404, "not_found"), (422, "bad_request")],
)
async def test_client_errors_map_to_codes(
    server: WireServer, backend: OpenAICompatibleBackend, status: int, code: str
) -> None:
    server.reply(Reply(status=status, body={"error": {"message": "Incorrect API key provided"}}))

    with pytest.raises(BackendError) as caught:
        await backend.complete(ask())

    assert (caught.value.code, caught.value.retryable, caught.value.status) == (code, False, status)
    assert "Incorrect API key provided" in str(caught.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b"this is not json", "this is not json"),
        ({"object": "list", "data": []}, "object"),
        ({"choices": []}, "no choices"),
        ({"error": {"message": "upstream provider failed"}}, "upstream provider failed"),
    ],
)
async def test_malformed_200_is_bad_response(
    server: WireServer, backend: OpenAICompatibleBackend, body: Any, shown: str
) -> None:
    server.reply(Reply(body=body), TEXT_OK)

    with pytest.raises(BackendError) as caught:
        await backend.complete(ask())

    assert caught.value.code == "bad_response"
    assert caught.value.retryable is False
    assert shown in str(caught.value)
    assert len(server.requests) == 1


# --- construction --------------------------------------------------------------------------------


async def test_constructor_does_no_io_and_aclose_is_idempotent() -> None:
    backend = OpenAICompatibleBackend(f"http://127.0.0.1:{closed_port()}/v1", "m")
    assert backend.name == "openai-compatible:m"
    await backend.aclose()
    await backend.aclose()


def test_rejects_a_base_url_that_is_not_http() -> None:
    with pytest.raises(ConfigError, match=r"ftp://example\.com"):
        OpenAICompatibleBackend("ftp://example.com/v1", "m")


# --- the retry layer on its own ------------------------------------------------------------------


async def test_retry_does_not_retry_other_exceptions() -> None:
    calls = 0

    async def broken() -> str:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not a backend failure")

    with pytest.raises(ValueError, match="a bug"):
        await FAST.run(broken)
    assert calls == 1


async def test_retry_after_is_capped_by_max_delay() -> None:
    calls = 0

    async def throttled() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BackendError("slow down", code="rate_limited", retryable=True, retry_after=30)
        return "ok"

    started = time.monotonic()
    result = await RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05).run(throttled)

    assert result == "ok"
    assert calls == 2
    assert time.monotonic() - started < 1.0


def test_retry_policy_refuses_zero_attempts() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        RetryPolicy(attempts=0)


def test_parse_retry_after() -> None:
    now = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=10), usegmt=True), now=now)
        == 10.0
    )
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=10), usegmt=True), now=now) == 0.0
    )
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-1") is None
    assert parse_retry_after(None) is None


# --- streaming details ---------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> Event:
    """A `chat.completion.chunk` event; with no delta, one without choices (the usage chunk)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return Event(
        {"object": "chat.completion.chunk", "model": "test-model-2025", "choices": choices, **extra}
    )


DONE = Event("[DONE]")


async def test_parallel_tool_calls_are_assembled_by_index(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    def piece(index: int, **function: str) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, "function": function}]}

    server.reply(
        Reply(
            events=(
                chunk(
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "a",
                                "function": {"name": "read_file", "arguments": ""},
                            }
                        ],
                    }
                ),
                chunk(piece(0, arguments='{"path": ')),
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "b",
                                "function": {"name": "read_file", "arguments": ""},
                            }
                        ]
                    }
                ),
                chunk(piece(1, arguments='{"path": "y"}')),
                chunk(piece(0, arguments='"x"}')),
                chunk({}, "tool_calls"),
                chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 9}),
                DONE,
            )
        )
    )
    told: list[Delta] = []

    response = await backend.complete(ask(tools=(READ_FILE,)), on_delta=told.append)

    assert response.tool_calls == (
        ToolCall(id="a", name="read_file", arguments='{"path": "x"}'),
        ToolCall(id="b", name="read_file", arguments='{"path": "y"}'),
    )
    assert [d.text for d in told] == ['{"path": ', '{"path": "y"}', '"x"}']
    assert response.usage == Usage(input_tokens=5, output_tokens=9)


async def test_a_stream_without_a_finish_reason_is_truncated(server: WireServer) -> None:
    server.reply(Reply(events=(chunk({"content": "Hal"}), DONE)))
    backend = OpenAICompatibleBackend(server.url, "m", retry=RetryPolicy(attempts=1))
    try:
        with pytest.raises(BackendError) as caught:
            await backend.complete(ask(), on_delta=lambda delta: None)
    finally:
        await backend.aclose()

    assert (caught.value.code, caught.value.retryable) == ("truncated_stream", True)
    assert "finish_reason" in str(caught.value)


@pytest.mark.parametrize(
    ("event", "code", "shown"),
    [
        # vLLM names the status its error stands for
        (
            Event(
                {
                    "error": {
                        "object": "error",
                        "message": "too long",
                        "type": "BadRequestError",
                        "code": 400,
                    }
                }
            ),
            "bad_request",
            "too long",
        ),
        (Event("{not json"), "bad_response", "not JSON"),
        (Event({"choices": "many"}), "bad_response", "wrong shape"),
    ],
)
async def test_a_bad_chunk_fails_without_a_retry(
    server: WireServer, backend: OpenAICompatibleBackend, event: Event, shown: str, code: str
) -> None:
    server.reply(Reply(events=(chunk({"content": "Hi"}), event, DONE)))

    with pytest.raises(BackendError) as caught:
        await backend.complete(ask(), on_delta=lambda delta: None)

    assert (caught.value.code, caught.value.retryable) == (code, False)
    assert shown in str(caught.value)
    assert len(server.requests) == 1


# --- models without native tool calls ------------------------------------------------------------

TOOLS_REFUSED = Reply(
    status=400,
    body={"error": {"message": '"auto" tool choice requires --enable-auto-tool-choice'}},
)

HISTORY = ModelRequest(
    task_id="t1",
    purpose="act",
    turn=2,
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

JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "tool_call",
        "strict": False,
        "schema": {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "name": {"const": "read_file"},
                        # closed to arguments the tool does not list
                        "arguments": {**READ_FILE.parameters, "additionalProperties": False},
                    },
                    "required": ["name", "arguments"],
                    "additionalProperties": False,
                }
            ]
        },
    },
}


def json_call(path: str, **usage: int) -> Reply:
    content = json.dumps({"name": "read_file", "arguments": {"path": path}})
    return Reply(body=completion({"content": content}, usage=usage or None))


async def test_tools_refused_with_400_fall_back_to_json_mode_and_stay_there(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(TOOLS_REFUSED, json_call("b.txt"))

    response = await backend.complete(HISTORY)

    assert response.tool_calls == (
        ToolCall(id="call_2", name="read_file", arguments='{"path": "b.txt"}'),
    )
    assert response.text == ""
    native, fallback = (r.json for r in server.requests)
    assert [tool["function"]["name"] for tool in native["tools"]] == ["read_file"]
    assert native["tool_choice"] == "required"
    assert "tools" not in fallback
    assert "tool_choice" not in fallback
    assert fallback["response_format"] == JSON_SCHEMA_FORMAT
    system, user, assistant, result = fallback["messages"]
    assert system["role"] == "system"
    assert system["content"].startswith("You are careful.\n\n")
    assert "- read_file: Read a file from the workspace." in system["content"]
    assert '{"name": "<tool name>", "arguments": {...}}' in system["content"]
    assert user == {"role": "user", "content": "Compare a.txt and b.txt."}
    # The history in plain turns: the earlier call as the JSON asked for, its result as a user's.
    assert assistant == {
        "role": "assistant",
        "content": '{"name": "read_file", "arguments": {"path": "a.txt"}}',
    }
    assert result == {"role": "user", "content": "Result of read_file:\nalpha"}

    # The next request goes straight to JSON mode, and streams the call as tool_call deltas.
    content = json.dumps({"name": "read_file", "arguments": {"path": "c.txt"}})
    server.reply(
        Reply(
            events=(
                chunk({"content": content[:10]}),
                chunk({"content": content[10:]}),
                chunk({}, "stop"),
                DONE,
            )
        )
    )
    told: list[Delta] = []
    later = await backend.complete(HISTORY.model_copy(update={"turn": 4}), on_delta=told.append)

    assert len(server.requests) == 3
    assert "tools" not in server.requests[2].json
    assert server.requests[2].json["response_format"] == JSON_SCHEMA_FORMAT
    assert later.tool_calls == (
        ToolCall(id="call_4", name="read_file", arguments='{"path": "c.txt"}'),
    )
    assert told == [Delta("tool_call", content[:10]), Delta("tool_call", content[10:])]
    assert await backend.probe() == Capabilities(native_tools=False, streaming=True)
    assert len(server.requests) == 3  # known, so the probe asked nothing


async def test_when_json_mode_fails_too_the_original_error_is_raised(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(
        TOOLS_REFUSED,
        Reply(body=completion({"content": "I cannot answer in JSON."})),
        TOOLS_REFUSED,
        json_call("a.txt"),
    )

    with pytest.raises(BackendError) as caught:
        await backend.complete(HISTORY)

    assert (caught.value.code, caught.value.status) == ("bad_request", 400)
    assert "--enable-auto-tool-choice" in str(caught.value)
    assert len(server.requests) == 2
    # Nothing was learned, so the next request offers the tools again.
    response = await backend.complete(HISTORY)
    assert "tools" in server.requests[2].json
    assert response.tool_calls[0].arguments == '{"path": "a.txt"}'


async def test_no_call_although_one_was_required_falls_back_to_json_mode(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(
        Reply(
            body=completion(
                {"content": "I would read b.txt next."},
                usage={"prompt_tokens": 40, "completion_tokens": 6},
            )
        ),
        json_call("b.txt", prompt_tokens=50, completion_tokens=12),
        json_call("c.txt"),
    )

    response = await backend.complete(HISTORY)

    assert response.tool_calls == (
        ToolCall(id="call_2", name="read_file", arguments='{"path": "b.txt"}'),
    )
    assert response.usage == Usage(input_tokens=90, output_tokens=18)  # both answers were paid
    await backend.complete(HISTORY)
    assert "tools" not in server.requests[2].json


async def test_a_json_call_written_as_content_is_read_as_a_call(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    fenced = '```json\n{"name": "read_file", "parameters": {"path": "x"}}\n```'
    server.reply(Reply(body=completion({"content": fenced})))

    response = await backend.complete(HISTORY)

    assert response.tool_calls == (
        ToolCall(id="call_2", name="read_file", arguments='{"path": "x"}'),
    )
    assert response.text == ""
    assert len(server.requests) == 1


async def test_json_mode_with_tool_choice_auto_admits_a_plain_answer(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(TOOLS_REFUSED, Reply(body=completion({"content": '{"text": "Both say hello."}'})))

    response = await backend.complete(HISTORY.model_copy(update={"tool_choice": "auto"}))

    assert response.text == "Both say hello."
    assert response.tool_calls == ()
    choices = server.requests[1].json["response_format"]["json_schema"]["schema"]["anyOf"]
    assert choices[-1]["required"] == ["text"]
    assert await backend.probe() == Capabilities(native_tools=False, streaming=True)


# --- probe ---------------------------------------------------------------------------------------


async def test_probe_asks_once_with_a_ping_tool(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(
        Reply(
            events=(
                chunk(
                    {
                        "tool_calls": [
                            {"index": 0, "id": "p", "function": {"name": "ping", "arguments": "{}"}}
                        ]
                    }
                ),
                chunk({}, "tool_calls"),
                DONE,
            )
        )
    )

    first = await backend.probe()
    again = await backend.probe()

    assert first == again == Capabilities(native_tools=True, streaming=True)
    [sent] = server.requests
    assert [tool["function"]["name"] for tool in sent.json["tools"]] == ["ping"]
    assert sent.json["tool_choice"] == "required"
    assert sent.json["stream"] is True


async def test_probe_learns_a_server_that_does_not_stream(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    call = {"id": "p", "type": "function", "function": {"name": "ping", "arguments": "{}"}}
    server.reply(Reply(body=completion({"tool_calls": [call]})))

    assert await backend.probe() == Capabilities(native_tools=True, streaming=False)


async def test_probe_learns_a_model_without_native_tools(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(
        TOOLS_REFUSED, Reply(body=completion({"content": '{"name": "ping", "arguments": {}}'}))
    )

    assert await backend.probe() == Capabilities(native_tools=False, streaming=False)
    assert len(server.requests) == 2
