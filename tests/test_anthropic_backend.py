"""The Anthropic backend's own rules, over real HTTP on loopback.

What every HTTP backend shares (streaming, retries, timeouts, truncation) is in
test_http_conformance.py; here are the message translation the Messages API insists on, its
usage counts, its status codes and stream events, and the `anthropic:` model URI.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import pytest

from agent.backends import SCHEMES, backend_from_uri
from agent.backends._retry import RetryPolicy
from agent.backends.anthropic import AnthropicBackend
from agent.backends.base import (
    Capabilities,
    Delta,
    Message,
    ModelRequest,
    ToolCall,
    Usage,
)
from base.errors import BackendError, ConfigError
from base.toolspec import ToolSpec

from .wire_server import Event, Reply, WireServer

NO_WAIT = RetryPolicy(attempts=2, base_delay=0.0, max_delay=1.0)

READ_FILE = ToolSpec(
    name="read_file",
    description="Read a file from the workspace.",
    parameters={"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)


def message(content: list[dict[str, Any]], usage: dict[str, int] | None = None) -> Reply:
    """A Messages API response body, as the API sends it."""
    return Reply(
        body={
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-test-2025",
            "content": content,
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage or {"input_tokens": 1, "output_tokens": 1},
        }
    )


def event(kind: str, **fields: Any) -> Event:
    return Event({"type": kind, **fields}, event=kind)


def ask(
    *messages: Message,
    tools: tuple[ToolSpec, ...] = (),
    choice: Literal["auto", "required"] = "required",
) -> ModelRequest:
    return ModelRequest(
        task_id="t1",
        purpose="act",
        turn=0,
        tools=tools,
        tool_choice=choice,
        messages=messages or (Message(role="user", content="hi"),),
    )


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as running:
        yield running


@pytest.fixture
async def backend(server: WireServer) -> AsyncIterator[AnthropicBackend]:
    model = AnthropicBackend(server.url, "claude-test", api_key="sk-ant-test", retry=NO_WAIT)
    yield model
    await model.aclose()


# --- translation ---------------------------------------------------------------------------------


async def test_messages_are_translated_so_the_api_accepts_them(
    server: WireServer, backend: AnthropicBackend
) -> None:
    server.reply(message([{"type": "text", "text": "ok"}]))
    request = ask(
        Message(role="system", content="You are careful."),
        Message(role="system", content="Work in /workspace."),
        Message(role="user", content="Compare a.txt and b.txt."),
        Message(
            role="assistant",
            content="I'll read both.",
            tool_calls=(
                ToolCall(id="toolu_1", name="read_file", arguments='{"path": "a.txt"}'),
                ToolCall(id="toolu_2", name="read_file", arguments='{"path": "b.txt", oops'),
            ),
        ),
        Message(role="tool", tool_call_id="toolu_1", content="alpha"),
        Message(role="tool", tool_call_id="toolu_2", content="Error: arguments are not JSON"),
        Message(role="user", content="Mind the second call."),
        Message(role="assistant", content=""),  # says nothing: dropped, and the users merge
        Message(role="user", content="Go on."),
        Message(
            role="assistant",
            tool_calls=(ToolCall(id="toolu_3", name="read_file", arguments=""),),
        ),
        Message(role="user", content="A note first."),
        Message(role="tool", tool_call_id="toolu_3", content="beta"),
        tools=(READ_FILE,),
        choice="auto",
    )

    await backend.complete(request)

    [sent] = server.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json == {
        "model": "claude-test",
        "max_tokens": 4096,
        "system": "You are careful.\n\nWork in /workspace.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Compare a.txt and b.txt."}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "I'll read both."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "read_file",
                        "input": {"path": "a.txt"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_2",
                        "name": "read_file",
                        "input": {"_raw": '{"path": "b.txt", oops'},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "alpha"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": "Error: arguments are not JSON",
                    },
                    {"type": "text", "text": "Mind the second call."},
                    {"type": "text", "text": "Go on."},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_3", "name": "read_file", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [
                    # A result must open its turn, even when the text came first.
                    {"type": "tool_result", "tool_use_id": "toolu_3", "content": "beta"},
                    {"type": "text", "text": "A note first."},
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
        "tool_choice": {"type": "auto"},
    }
    roles = [turn["role"] for turn in sent.json["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles))


async def test_a_request_without_tools_or_system_sends_neither(
    server: WireServer, backend: AnthropicBackend
) -> None:
    server.reply(message([{"type": "text", "text": "Paris."}]))

    response = await backend.complete(ask(Message(role="user", content="Capital of France?")))

    assert server.requests[0].json == {
        "model": "claude-test",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}],
    }
    assert response.text == "Paris."

    server.reply(message([{"type": "text", "text": "Paris."}]))
    capped = ask(Message(role="user", content="Capital?")).model_copy(
        update={"max_output_tokens": 40}
    )
    await backend.complete(capped)
    assert server.requests[1].json["max_tokens"] == 40  # a request's cap, within the backend's


async def test_a_tool_message_without_its_call_id_is_refused_before_sending(
    server: WireServer, backend: AnthropicBackend
) -> None:
    with pytest.raises(BackendError) as caught:
        await backend.complete(ask(Message(role="tool", content="orphan")))

    assert (caught.value.code, caught.value.retryable) == ("bad_request", False)
    assert server.requests == []


# --- answers -------------------------------------------------------------------------------------


async def test_usage_counts_cache_reads_and_writes_as_input(
    server: WireServer, backend: AnthropicBackend
) -> None:
    cached = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "output_tokens": 1,
    }
    server.reply(
        message([{"type": "text", "text": "a"}], usage={**cached, "output_tokens": 5}),
        Reply(
            events=(
                event("message_start", message={"model": "claude-test-2025", "usage": cached}),
                event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
                event("content_block_delta", index=0, delta={"type": "text_delta", "text": "a"}),
                event("content_block_stop", index=0),
                event(
                    "message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 9}
                ),
                event("message_stop"),
            )
        ),
    )

    whole = await backend.complete(ask())
    streamed = await backend.complete(ask(), on_delta=lambda delta: None)

    assert whole.usage == Usage(input_tokens=1110, output_tokens=5)
    assert streamed.usage == Usage(input_tokens=1110, output_tokens=9)


async def test_thinking_blocks_unknown_events_and_empty_inputs_in_a_stream(
    server: WireServer, backend: AnthropicBackend
) -> None:
    tool_use = {"type": "tool_use", "id": "toolu_9", "name": "list_files", "input": {}}
    server.reply(
        Reply(
            events=(
                event("message_start", message={"usage": {"input_tokens": 4, "output_tokens": 1}}),
                event("content_block_start", index=0, content_block={"type": "thinking"}),
                event(
                    "content_block_delta",
                    index=0,
                    delta={"type": "thinking_delta", "thinking": "Let me look."},
                ),
                event("content_block_delta", index=0, delta={"type": "signature_delta"}),
                event("content_block_stop", index=0),
                event("a_future_event", detail="ignored"),
                event("content_block_start", index=1, content_block={"type": "text", "text": ""}),
                event("content_block_delta", index=1, delta={"type": "text_delta", "text": "Hm."}),
                event("content_block_stop", index=1),
                event("content_block_start", index=2, content_block=tool_use),
                event("content_block_delta", index=2, delta={"type": "input_json_delta"}),
                event("content_block_stop", index=2),
                event(
                    "message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 3}
                ),
                event("message_stop"),
            )
        )
    )
    told: list[Delta] = []

    response = await backend.complete(ask(), on_delta=told.append)

    assert told == [Delta("text", "Hm.")]
    assert response.text == "Hm."
    assert response.tool_calls == (ToolCall(id="toolu_9", name="list_files", arguments="{}"),)
    assert response.model == "claude-test"  # message_start named none
    assert response.usage == Usage(input_tokens=4, output_tokens=3)


async def test_a_delta_for_a_block_never_started_is_a_bad_response(
    server: WireServer, backend: AnthropicBackend
) -> None:
    server.reply(
        Reply(
            events=(
                event("message_start", message={"usage": {"input_tokens": 4}}),
                event("content_block_delta", index=3, delta={"type": "text_delta", "text": "?"}),
                event("message_stop"),
            )
        )
    )

    with pytest.raises(BackendError) as caught:
        await backend.complete(ask(), on_delta=lambda delta: None)

    assert (caught.value.code, caught.value.retryable) == ("bad_response", False)
    assert len(server.requests) == 1


# --- failures ------------------------------------------------------------------------------------


def error_body(kind: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text}}


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, "invalid_request_error", "bad_request"),
        (401, "authentication_error", "auth_failed"),
        (403, "permission_error", "auth_failed"),
        (404, "not_found_error", "not_found"),
        (413, "request_too_large", "bad_request"),
    ],
)
async def test_client_errors_are_mapped_and_not_retried(
    server: WireServer, backend: AnthropicBackend, status: int, kind: str, code: str
) -> None:
    server.reply(Reply(status=status, body=error_body(kind, f"the provider says {kind}")))

    with pytest.raises(BackendError) as caught:
        await backend.complete(ask())

    assert (caught.value.code, caught.value.retryable, caught.value.status) == (code, False, status)
    assert f"the provider says {kind}" in str(caught.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (529, "overloaded_error", "overloaded"),
        (500, "api_error", "server_error"),
        (429, "rate_limit_error", "rate_limited"),
        (408, "timeout_error", "timeout"),
    ],
)
async def test_retryable_statuses_fail_after_the_attempts_with_the_providers_message(
    server: WireServer, backend: AnthropicBackend, status: int, kind: str, code: str
) -> None:
    server.reply(*[Reply(status=status, body=error_body(kind, "Overloaded"))] * NO_WAIT.attempts)

    with pytest.raises(BackendError) as caught:
        await backend.complete(ask())

    assert (caught.value.code, caught.value.retryable, caught.value.status) == (code, True, status)
    assert "Overloaded" in str(caught.value)
    assert len(server.requests) == NO_WAIT.attempts


async def test_an_invalid_request_error_event_is_not_retried(
    server: WireServer, backend: AnthropicBackend
) -> None:
    server.reply(
        Reply(
            events=(
                event("message_start", message={"usage": {"input_tokens": 4}}),
                event("error", error={"type": "invalid_request_error", "message": "bad image"}),
            )
        )
    )

    with pytest.raises(BackendError) as caught:
        await backend.complete(ask(), on_delta=lambda delta: None)

    assert (caught.value.code, caught.value.retryable) == ("bad_request", False)
    assert "bad image" in str(caught.value)
    assert len(server.requests) == 1


# --- construction and the model URI --------------------------------------------------------------


async def test_probe_knows_without_asking(server: WireServer, backend: AnthropicBackend) -> None:
    assert await backend.probe() == Capabilities(native_tools=True, streaming=True)
    assert server.requests == []


async def test_constructor_does_no_io_and_refuses_a_url_that_is_not_http() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = AnthropicBackend(f"http://127.0.0.1:{port}", "m", api_key="k")
    assert backend.name == "anthropic:m"
    await backend.aclose()
    await backend.aclose()
    with pytest.raises(ConfigError, match=r"ftp://example\.com"):
        AnthropicBackend("ftp://example.com", "m", api_key="k")


def test_the_uri_needs_the_key_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)

    assert "anthropic" in SCHEMES
    with pytest.raises(ConfigError, match=r"\$ANTHROPIC_API_KEY"):
        backend_from_uri("anthropic:claude-sonnet-4-5")


def test_the_uri_defaults_to_anthropics_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)

    backend = backend_from_uri("anthropic:claude-sonnet-4-5")

    assert isinstance(backend, AnthropicBackend)
    assert backend.url == "https://api.anthropic.com/v1/messages"
    assert backend.name == "anthropic:claude-sonnet-4-5"


async def test_the_uri_takes_key_and_base_url_from_the_environment(
    server: WireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    server.reply(message([{"type": "text", "text": "hello"}]))

    backend = backend_from_uri("anthropic:claude-sonnet-4-5", max_attempts=1)
    try:
        response = await backend.complete(ask())
    finally:
        await backend.aclose()

    [sent] = server.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-env"
    assert sent.json["model"] == "claude-sonnet-4-5"
    assert response.text == "hello"
