"""A backend for any server speaking the OpenAI chat-completions wire format.

OpenAI itself, vLLM, llama.cpp's server, Ollama, LM Studio and most gateways accept the same
`POST {base_url}/chat/completions`. Their failures are mapped to `BackendError` here, once::

    429                      rate_limited       retryable, retry_after from Retry-After
    408                      timeout            retryable
    5xx                      server_error       retryable
    401, 403                 auth_failed
    404                      not_found
    other 4xx                bad_request
    200 of the wrong shape   bad_response
    httpx.TimeoutException   timeout            retryable
    httpx.TransportError     connection_failed  retryable

Retrying is `RetryPolicy`'s job; this module only says what is retryable.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from agent.backends._retry import RetryPolicy, parse_retry_after
from agent.backends.base import (
    DeltaSink,
    Message,
    ModelBackend,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from agent.errors import BackendError, ConfigError

# Enough of an error body to recognise it in a log, not a whole HTML error page.
_MAX_ERROR_TEXT = 500


class OpenAICompatibleBackend(ModelBackend):
    """A model behind an OpenAI-compatible `/chat/completions` endpoint.

    `base_url` is the API root, e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
    `timeout` bounds each read, write and pool wait; `connect_timeout` bounds opening a
    connection. Pass `client` (or just `transport`) to control the HTTP layer, e.g. in tests;
    a client passed in is left open by `aclose`. Nothing connects until the first `complete`.

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
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(
                f"OpenAI-compatible base_url must be an http(s) URL, got {base_url!r}"
            )
        if client is not None and transport is not None:
            raise ConfigError("pass either an httpx client or a transport, not both")
        self.name = f"openai-compatible:{model}"
        self.model = model
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self._api_key = api_key
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._retry = retry or RetryPolicy()
        self._client = client
        self._owns_client = client is None
        self._transport = transport

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        """Send `request` and return the model's answer, retrying per the retry policy.

        Raises `BackendError` with one of the codes in the module docstring.
        """
        payload = _request_body(self.model, request)
        return await self._retry.run(lambda: self._post(payload))

    async def aclose(self) -> None:
        """Close the HTTP client if this backend created it. Safe to call more than once."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self._transport)
        return self._client

    async def _post(self, payload: dict[str, Any]) -> ModelResponse:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            response = await self._http().post(
                self.url, json=payload, headers=headers, timeout=self._timeout
            )
        except httpx.TimeoutException as error:
            raise BackendError(
                f"{self.url} did not answer in time ({type(error).__name__})",
                code="timeout",
                retryable=True,
                url=self.url,
            ) from error
        except httpx.TransportError as error:
            raise BackendError(
                f"could not reach {self.url}: {error or type(error).__name__}",
                code="connection_failed",
                retryable=True,
                url=self.url,
            ) from error
        except httpx.DecodingError as error:
            raise BackendError(
                f"{self.url} sent a body that could not be decoded: {error}",
                code="bad_response",
                retryable=False,
                url=self.url,
            ) from error
        if not response.is_success:
            raise _status_error(self.url, response)
        return _parse_response(self.url, response, default_model=self.model)


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
    try:
        completion = _WireCompletion.model_validate_json(response.content)
    except ValidationError as error:
        raise BackendError(
            f"{url} answered {response.status_code} with a body that is not a chat completion: "
            f"{_provider_message(response)} ({error.error_count()} validation errors)",
            code="bad_response",
            retryable=False,
            status=response.status_code,
            url=url,
        ) from error
    if not completion.choices:
        raise BackendError(
            f"{url} answered with no choices",
            code="bad_response",
            retryable=False,
            status=response.status_code,
            url=url,
        )
    message = completion.choices[0].message
    usage = completion.usage or _WireUsage()
    return ModelResponse(
        text=message.content or "",
        tool_calls=tuple(
            _tool_call(call, index) for index, call in enumerate(message.tool_calls or ())
        ),
        usage=Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens),
        model=completion.model or default_model,
    )


def _tool_call(call: _WireToolCall, index: int) -> ToolCall:
    arguments = call.function.arguments
    if arguments is None:
        arguments = ""
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    # A call without an id cannot be answered; some local servers omit it, so give it one that
    # is unique within the response.
    return ToolCall(id=call.id or f"call_{index}", name=call.function.name, arguments=arguments)


# --- errors --------------------------------------------------------------------------------------


def _status_error(url: str, response: httpx.Response) -> BackendError:
    status = response.status_code
    code, retryable = _classify(status)
    return BackendError(
        f"{url} answered {status}: {_provider_message(response)}",
        code=code,
        retryable=retryable,
        status=status,
        url=url,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def _classify(status: int) -> tuple[str, bool]:
    if status == 429:
        return "rate_limited", True
    if status == 408:
        return "timeout", True
    if status >= 500:
        return "server_error", True
    if status in (401, 403):
        return "auth_failed", False
    if status == 404:
        return "not_found", False
    if 400 <= status < 500:
        return "bad_request", False
    # Redirects are not followed: an endpoint that moved is a misconfigured base_url.
    return "bad_response", False


def _provider_message(response: httpx.Response) -> str:
    """The provider's own explanation: `error.message` from a JSON body, else the raw text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return str(body["message"])
    text = response.text.strip()
    if not text:
        return response.reason_phrase or "(empty body)"
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "..."
