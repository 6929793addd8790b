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

from agent.backends._http import named_parameters
from agent.backends._retry import RetryPolicy, parse_retry_after
from agent.backends.base import (
    Capabilities,
    Delta,
    Message,
    ModelRequest,
    ToolCall,
    Usage,
)
from agent.backends.openai_compat import OpenAICompatibleBackend
from base.errors import BackendError, ConfigError, ErrorCode
from base.toolspec import ToolSpec

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
        "temperature": 0.0,
    }
    assert response.text == "Paris."
    assert response.tool_calls == ()
    assert response.usage == Usage(input_tokens=9, output_tokens=2)


async def test_a_request_that_caps_its_answer_says_so(server: WireServer) -> None:
    server.reply(Reply(body=completion({"content": "Paris."})))
    backend = OpenAICompatibleBackend(f"{server.url}/v1/", "local", retry=FAST)
    capped = ask(Message(role="user", content="Capital?")).model_copy(
        update={"max_output_tokens": 40}
    )
    try:
        await backend.complete(capped)
    finally:
        await backend.aclose()

    assert server.requests[0].json["max_tokens"] == 40  # what servers of the format know


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
                    "message": "Invalid value for 'top_k'",
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
    assert "Invalid value for 'top_k'" in str(caught.value)


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
            raise BackendError(
                "slow down", code=ErrorCode.RATE_LIMITED, retryable=True, retry_after=30
            )
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

# Ollama's answer for a model without tool calls: a refusal that names `tools`.
TOOLS_REFUSED = Reply(
    status=400,
    body={"error": "registry.ollama.ai/library/gemma:2b does not support tools"},
)
# A 400 that names nothing: maybe no tool calls, maybe something else entirely.
UNEXPLAINED_400 = Reply(
    status=400, body={"error": {"message": "Unsupported request.", "type": "invalid_request_error"}}
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

JSON_SCHEMA_FORMAT: dict[str, Any] = {
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


async def test_tools_refused_fall_back_to_json_mode_and_stay_there(
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
    # The tools as the local backend describes them: the schema is the response_format's.
    assert "- read_file(path: string): Read a file from the workspace." in system["content"]
    assert '{"name": "<tool name>", "arguments": {<the arguments>}}' in system["content"]
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
    note = f"{backend.base_url} refused tool calls (400): asking for tool calls as JSON"
    assert await backend.probe() == Capabilities(
        native_tools=False, streaming=True, json_mode="json_schema", notes=(note,)
    )
    assert len(server.requests) == 3  # known, so the probe asked nothing


async def test_a_refusal_of_tools_keeps_json_mode_even_for_an_unreadable_answer(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(
        TOOLS_REFUSED,
        Reply(body=completion({"content": "I would read a.txt."})),
        json_call("a.txt"),
    )

    first = await backend.complete(HISTORY)
    second = await backend.complete(HISTORY)

    # As written: the loop shows the model that its answer had no call.
    assert (first.text, first.tool_calls) == ("I would read a.txt.", ())
    assert second.tool_calls[0].arguments == '{"path": "a.txt"}'
    # Tools were refused by name, so they are never offered again.
    assert ["tools" in r.json for r in server.requests] == [True, False, False]


async def test_when_json_mode_fails_too_the_original_error_is_raised(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(
        UNEXPLAINED_400,
        Reply(body=completion({"content": "I cannot answer in JSON."})),
        json_call("a.txt"),
    )

    with pytest.raises(BackendError) as caught:
        await backend.complete(HISTORY)

    assert (caught.value.code, caught.value.status, caught.value.retryable) == (
        "bad_request",
        400,
        False,
    )
    assert "Unsupported request." in str(caught.value)
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
    assert (await backend.probe()).native_tools is False


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

    capabilities = await backend.probe()

    assert (capabilities.native_tools, capabilities.streaming) == (False, False)
    assert capabilities.json_mode == "json_schema"
    assert len(server.requests) == 2


# --- capabilities a server refuses: step down, never retry, never send again ---------------------

# llama.cpp's Python server (llama-cpp-python 0.3.x), as measured: its request validation wraps a
# refused `response_format` in a 500, with pydantic's location of the field.
JSON_SCHEMA_REFUSED = Reply(
    status=500,
    body={
        "error": {
            "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
            "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", "
            "'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File "
            '"/venv/lib/python3.11/site-packages/llama_cpp/server/app.py", line 376, in '
            "create_chat_completion\n    POST /v1/chat/completions",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    },
)
# ... and with --chat_format chatml-function-calling, tool_choice "required" fails an assertion:
# unstreamed, a 500 with an empty message; streamed, a 200 event stream that ends with no event.
REQUIRED_FAILED = Reply(
    status=500,
    body={"error": {"message": "", "type": "internal_server_error", "param": None, "code": None}},
)
STREAM_NEVER_BEGAN = Reply(events=())


def in_prose(text: str = "I would read b.txt next.") -> Reply:
    return Reply(body=completion({"content": text}))


def native_call(path: str) -> Reply:
    call = {
        "id": "n1",
        "type": "function",
        "function": {"name": "read_file", "arguments": json.dumps({"path": path})},
    }
    return Reply(body=completion({"tool_calls": [call]}))


def shape(body: dict[str, Any]) -> tuple[Any, ...]:
    """What a request asks of the server, apart from its conversation."""
    response_format = body.get("response_format")
    return (
        "tools" in body,
        body.get("tool_choice"),
        response_format["type"] if response_format else None,
        bool(body.get("stream")),
        body.get("temperature"),
    )


def shapes(server: WireServer) -> list[tuple[Any, ...]]:
    return [shape(r.json) for r in server.requests]


@pytest.fixture
async def noted(server: WireServer) -> AsyncIterator[tuple[OpenAICompatibleBackend, list[str]]]:
    """A backend whose notes are also collected as told."""
    told: list[str] = []
    model = OpenAICompatibleBackend(f"{server.url}/v1", "m", retry=FAST, on_note=told.append)
    yield model, told
    await model.aclose()


async def test_json_schema_refused_steps_down_to_json_object_with_the_schema(
    server: WireServer, noted: tuple[OpenAICompatibleBackend, list[str]]
) -> None:
    backend, told = noted
    server.reply(in_prose(), JSON_SCHEMA_REFUSED, json_call("b.txt"), json_call("c.txt"))

    first = await backend.complete(HISTORY)
    second = await backend.complete(HISTORY.model_copy(update={"turn": 4}))

    assert first.tool_calls[0].arguments == '{"path": "b.txt"}'
    assert second.tool_calls[0].arguments == '{"path": "c.txt"}'
    native, refused, stepped, later = (r.json for r in server.requests)
    assert "tools" in native
    assert refused["response_format"] == JSON_SCHEMA_FORMAT
    # The same schema, in the form llama.cpp's server takes.
    expected = {"type": "json_object", "schema": JSON_SCHEMA_FORMAT["json_schema"]["schema"]}
    assert stepped["response_format"] == later["response_format"] == expected
    assert stepped["messages"] == refused["messages"]
    # Not retried, and never sent again.
    assert [s[2] for s in shapes(server)].count("json_schema") == 1
    assert told == [
        f"{backend.base_url} refused response_format json_schema (500): asking with json_object "
        "and the schema",
        f"{backend.base_url} answered a required tool call in prose: asking for tool calls as JSON",
    ]
    capabilities = await backend.probe()
    assert (capabilities.json_mode, capabilities.notes) == ("json_object", tuple(told))
    assert len(server.requests) == 4


async def test_json_schema_and_json_object_refused_leave_the_prompt_alone(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    object_refused = Reply(
        status=400,
        body={"error": {"message": "response_format json_object is not supported by this model"}},
    )
    server.reply(
        TOOLS_REFUSED, JSON_SCHEMA_REFUSED, object_refused, json_call("b.txt"), json_call("c.txt")
    )

    first = await backend.complete(HISTORY)
    second = await backend.complete(HISTORY.model_copy(update={"turn": 4}))

    assert first.tool_calls[0].arguments == '{"path": "b.txt"}'
    assert second.tool_calls[0].arguments == '{"path": "c.txt"}'
    assert [s[2] for s in shapes(server)] == [None, "json_schema", "json_object", None, None]
    prompt_only = server.requests[3].json
    assert "tools" not in prompt_only
    assert "Answer with exactly one tool call" in prompt_only["messages"][0]["content"]
    assert (await backend.probe()).json_mode == "prompt"


async def test_a_stepped_down_json_mode_failing_unexplained_steps_down_again(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    # Sent once as a step down, a 500 naming nothing counts as a refusal of that shape too.
    server.reply(TOOLS_REFUSED, JSON_SCHEMA_REFUSED, REQUIRED_FAILED, json_call("b.txt"))

    response = await backend.complete(HISTORY)

    assert response.tool_calls[0].arguments == '{"path": "b.txt"}'
    assert [s[2] for s in shapes(server)] == [None, "json_schema", "json_object", None]


async def test_tool_choice_refused_by_name_steps_down_to_auto(
    server: WireServer, noted: tuple[OpenAICompatibleBackend, list[str]]
) -> None:
    backend, told = noted
    refused = Reply(
        status=500, body={"error": {"message": "tool_choice 'required' is not supported"}}
    )
    server.reply(refused, native_call("b.txt"), native_call("c.txt"))

    first = await backend.complete(HISTORY)
    second = await backend.complete(HISTORY)

    assert first.tool_calls[0].arguments == '{"path": "b.txt"}'
    assert second.tool_calls[0].arguments == '{"path": "c.txt"}'
    assert [s[1] for s in shapes(server)] == ["required", "auto", "auto"]
    assert told == [f'{backend.base_url} refused tool_choice "required" (500): sending "auto"']
    assert (await backend.probe()).native_tools is True


@pytest.mark.parametrize("how", ["no event", "connection closed"])
async def test_a_stream_that_never_begins_steps_down_to_a_whole_answer(
    server: WireServer, noted: tuple[OpenAICompatibleBackend, list[str]], how: str
) -> None:
    backend, told = noted
    broken = STREAM_NEVER_BEGAN if how == "no event" else Reply(events=(DONE,), cut_after=0)
    server.reply(broken, native_call("b.txt"), native_call("c.txt"))
    deltas: list[Delta] = []

    first = await backend.complete(HISTORY, on_delta=deltas.append)
    second = await backend.complete(HISTORY, on_delta=deltas.append)

    assert first.tool_calls[0].arguments == '{"path": "b.txt"}'
    assert second.tool_calls[0].arguments == '{"path": "c.txt"}'
    assert [s[3] for s in shapes(server)] == [True, False, False]  # streamed once only
    assert deltas == [
        Delta("tool_call", '{"path": "b.txt"}'),
        Delta("tool_call", '{"path": "c.txt"}'),
    ]
    assert told == [f"{backend.base_url} broke off streamed tool calls: asking for them whole"]
    # Text without tools still streams: only what broke is given up.
    server.reply(Reply(events=(chunk({"content": "Hi"}), chunk({}, "stop"), DONE)))
    assert (await backend.complete(ask(), on_delta=deltas.append)).text == "Hi"
    assert server.requests[-1].json["stream"] is True


async def test_llama_cpp_chatml_function_calling_ends_in_json_mode_asking_each_shape_once(
    server: WireServer, noted: tuple[OpenAICompatibleBackend, list[str]]
) -> None:
    # The whole sequence of `python -m llama_cpp.server --chat_format chatml-function-calling`:
    # a streamed "required" never begins; unstreamed it fails with an empty 500 (so the server's
    # tool calls are broken); its JSON mode refuses json_schema and takes json_object.
    backend, told = noted
    server.reply(
        STREAM_NEVER_BEGAN,
        REQUIRED_FAILED,
        JSON_SCHEMA_REFUSED,
        Reply(
            events=(
                chunk({"content": '{"name": "read_file", "arguments": {"path": "b.txt"}}'}),
                chunk({}, "stop"),
                DONE,
            )
        ),
        Reply(
            events=(
                chunk({"content": '{"name": "read_file", "arguments": {"path": "c.txt"}}'}),
                chunk({}, "stop"),
                DONE,
            )
        ),
    )

    first = await backend.complete(HISTORY, on_delta=lambda delta: None)
    second = await backend.complete(HISTORY, on_delta=lambda delta: None)

    assert first.tool_calls[0].arguments == '{"path": "b.txt"}'
    assert second.tool_calls[0].arguments == '{"path": "c.txt"}'
    sent = shapes(server)
    assert sent == [
        (True, "required", None, True, 0.0),
        (True, "required", None, False, 0.0),
        (False, None, "json_schema", True, 0.0),
        (False, None, "json_object", True, 0.0),
        (False, None, "json_object", True, 0.0),
    ]
    refused = sent[:3]
    assert all(sent.count(s) == 1 for s in refused)
    # In the order they were learned: JSON mode is kept once it answered.
    assert told == [
        f"{backend.base_url} broke off streamed tool calls: asking for them whole",
        f"{backend.base_url} refused response_format json_schema (500): asking with json_object "
        "and the schema",
        f"{backend.base_url} failed tool calls without saying why (500): asking for tool calls "
        "as JSON",
    ]


async def test_an_unexplained_500_to_the_first_tool_request_is_tried_in_json_mode_at_once(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    # Unstreamed (as `agent run --json` asks), chatml-function-calling's first answer is the 500.
    server.reply(REQUIRED_FAILED, JSON_SCHEMA_REFUSED, json_call("b.txt"))

    response = await backend.complete(HISTORY)

    assert response.tool_calls[0].arguments == '{"path": "b.txt"}'
    assert [s[:3] for s in shapes(server)] == [
        (True, "required", None),
        (False, None, "json_schema"),
        (False, None, "json_object"),
    ]


async def test_temperature_refused_is_left_to_the_server(
    server: WireServer, noted: tuple[OpenAICompatibleBackend, list[str]]
) -> None:
    backend, told = noted
    # OpenAI's reasoning models, which take only their default temperature.
    refused = Reply(
        status=400,
        body={
            "error": {
                "message": "Unsupported value: 'temperature' does not support 0 with this model. "
                "Only the default (1) value is supported.",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "unsupported_value",
            }
        },
    )
    server.reply(refused, TEXT_OK, TEXT_OK)

    assert (await backend.complete(ask())).text == "done"
    assert (await backend.complete(ask())).text == "done"

    assert [s[4] for s in shapes(server)] == [0.0, None, None]
    assert told == [f"{backend.base_url} refused temperature 0.0 (400): leaving it to the server"]


async def test_stream_options_refused_by_name_asks_for_whole_answers(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    refused = Reply(
        status=422,
        body={
            "detail": [
                {
                    "type": "extra_forbidden",
                    "loc": ["body", "stream_options"],
                    "msg": "Extra inputs are not permitted",
                }
            ]
        },
    )
    server.reply(refused, TEXT_OK)
    deltas: list[Delta] = []

    response = await backend.complete(ask(), on_delta=deltas.append)

    assert response.text == "done"
    assert deltas == [Delta("text", "done")]
    assert [s[3] for s in shapes(server)] == [True, False]


# The negative controls: what is not a refusal of a capability is handled as before.


async def test_a_plain_500_naming_no_parameter_is_retried_as_before(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    server.reply(native_call("a.txt"))
    await backend.complete(HISTORY)  # native tool calls work: nothing is tentative any more
    boom = Reply(status=500, body={"error": {"message": "CUDA error: out of memory"}})
    server.reply(boom, boom, native_call("b.txt"), boom, boom, TEXT_OK)

    response = await backend.complete(HISTORY)
    plain = await backend.complete(ask())

    assert response.tool_calls[0].arguments == '{"path": "b.txt"}'
    assert plain.text == "done"
    requests = [r.json for r in server.requests]
    assert requests[1] == requests[2] == requests[3]  # the same request, three times
    assert requests[4] == requests[5] == requests[6]
    assert backend.notes == ()


@pytest.mark.parametrize(
    "blame",
    [
        # OpenAI names the parameter at fault
        {"message": "This model's maximum context length is 2048 tokens.", "param": "messages"},
        # pydantic locates it, and echoes the conversation, which may say anything
        {
            "message": "1 validation error:\n  {'type': 'string_type', 'loc': ('body', "
            "'messages', 1, 'content'), 'msg': 'Input should be a valid string', 'input': "
            "'do not stream the tools or the response_format'}"
        },
    ],
)
async def test_an_error_blaming_another_parameter_is_no_refusal(
    server: WireServer, backend: OpenAICompatibleBackend, blame: dict[str, str]
) -> None:
    server.reply(Reply(status=400, body={"error": blame}), json_call("b.txt"))

    with pytest.raises(BackendError) as caught:
        await backend.complete(HISTORY, on_delta=lambda delta: None)

    assert (caught.value.code, caught.value.retryable) == ("bad_request", False)
    assert len(server.requests) == 1
    assert backend.notes == ()
    # And still nothing learned: the next request is the same shape.
    await backend.complete(HISTORY, on_delta=lambda delta: None)
    assert shapes(server)[0] == shapes(server)[1]


async def test_a_stream_cut_after_it_began_is_truncated_and_retried_not_stepped_down(
    server: WireServer, backend: OpenAICompatibleBackend
) -> None:
    begun = (chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "read_file"}}]}),)
    server.reply(
        Reply(events=(*begun, DONE), cut_after=1),
        Reply(events=(*begun, chunk({}, "tool_calls"), DONE)),
    )

    response = await backend.complete(HISTORY, on_delta=lambda delta: None)

    assert response.tool_calls[0].name == "read_file"
    assert [s[3] for s in shapes(server)] == [True, True]
    assert backend.notes == ()


@pytest.mark.parametrize(
    ("detail", "named"),
    [
        ("tools are not supported", ("tools",)),
        ("Upstream error while streaming", ()),  # no parameter stands on its own
        ("'tool choice' must be auto", ("tool_choice",)),
        ("Stream_options: extra fields not permitted", ("stream",)),
        ("{'loc': ('body', 'messages', 0), 'input': 'tools stream'}", ()),
        ('[{"loc":["body","response_format","type"],"msg":"bad"}]', ("response_format",)),
    ],
)
def test_named_parameters(detail: str, named: tuple[str, ...]) -> None:
    words = {
        "stream": ("stream", "stream_options"),
        "tool_choice": ("tool_choice", "tool choice"),
        "response_format": ("response_format", "json_schema"),
        "tools": ("tools",),
    }
    assert named_parameters(detail, words) == named
