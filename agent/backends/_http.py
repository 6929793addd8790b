"""Machinery the HTTP model backends share: one client, one failure mapping, one SSE reader.

Every failure of a request to a model API becomes a `BackendError` here, once::

    429                                  rate_limited       retryable, retry_after from Retry-After
    408                                  timeout            retryable
    529                                  overloaded         retryable
    other 5xx                            server_error       retryable
    401, 403                             auth_failed
    404                                  not_found
    other 4xx                            bad_request
    other non-2xx (a redirect)           bad_response
    httpx.TimeoutException               timeout            retryable, also between two chunks
    httpx.TransportError                 connection_failed  retryable
    ... while an event stream is read    truncated_stream   retryable
    an error event inside a stream       by its type (`stream_error`), most of them retryable
    httpx.DecodingError                  bad_response

The message carries the provider's own explanation (`error.message`) where the body has one; a
status error also keeps it alone, as `context["detail"]`, and the parameter an OpenAI-style body
blames (`error.param`) as `context["param"]`. Retrying is `RetryPolicy`'s job; this module only
says what is retryable.

`named_parameters` reads which request parameters a refusal names: the one place text is read,
because a server that cannot do something a request asks often says so only in its message.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from base.errors import BackendError, ConfigError, ErrorCode

from ._retry import parse_retry_after

_M = TypeVar("_M", bound=BaseModel)

# Enough of an error body to recognise it in a log, not a whole HTML error page.
_MAX_ERROR_TEXT = 500


def check_base_url(base_url: str, provider: str) -> None:
    """Raise `ConfigError` unless `base_url` is an http(s) URL with a host."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"{provider} base_url must be an http(s) URL, got {base_url!r}")


class HttpClient:
    """One `httpx.AsyncClient`, made on first use, and the one way a backend sends a request.

    `timeout` bounds each read (so also the wait between two chunks of a stream), write and pool
    wait; `connect_timeout` bounds opening a connection. A `client` passed in is left open by
    `aclose`; otherwise one is made (over `transport`, if given) and closed by `aclose`.

    Raises `ConfigError` if given both a client and a transport.
    """

    def __init__(
        self,
        *,
        timeout: float,
        connect_timeout: float,
        client: httpx.AsyncClient | None,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        if client is not None and transport is not None:
            raise ConfigError("pass either an httpx client or a transport, not both")
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._client = client
        self._owns_client = client is None
        self._transport = transport

    async def aclose(self) -> None:
        """Close the client if it was made here. Safe to call more than once."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def drop_connections(self) -> None:
        """Let the next request open a new connection (with a client made here; one passed in is
        left as it is): for a server that failed under an answer and closes its connection."""
        await self.aclose()

    @asynccontextmanager
    async def post(
        self, url: str, payload: dict[str, Any], headers: dict[str, str]
    ) -> AsyncIterator[httpx.Response]:
        """POST `payload` as JSON and yield the response once its headers arrived, body unread.

        Raises `BackendError` for a non-2xx status, and for a transport failure before or while
        the body is read (see the module docstring). Read an event stream with `sse_events`.
        """
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self._transport)
        try:
            async with self._client.stream(
                "POST", url, json=payload, headers=headers, timeout=self._timeout
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise status_error(url, response)
                yield response
        except httpx.TimeoutException as error:
            raise timed_out(url, error) from error
        except httpx.TransportError as error:
            raise BackendError(
                f"could not reach {url}: {str(error) or type(error).__name__}",
                code=ErrorCode.CONNECTION_FAILED,
                retryable=True,
                url=url,
            ) from error
        except httpx.DecodingError as error:
            raise BackendError(
                f"{url} sent a body that could not be decoded: {error}",
                code=ErrorCode.BAD_RESPONSE,
                retryable=False,
                url=url,
            ) from error


def is_event_stream(response: httpx.Response) -> bool:
    """Whether the response is Server-Sent Events (a server may answer a stream request in JSON)."""
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("text/event-stream")


# --- Server-Sent Events --------------------------------------------------------------------------


@dataclass(frozen=True)
class SseEvent:
    """One event of a stream: its `event` name ("message" when unnamed) and its `data` text."""

    event: str
    data: str


async def sse_events(url: str, response: httpx.Response) -> AsyncGenerator[SseEvent, None]:
    """The events of an event-stream body, each as soon as its closing blank line arrives.

    An event cut off by the end of the body is dropped, as the SSE standard says: the caller
    notices that its stream's last event never came. Use under `contextlib.aclosing`.

    Raises `BackendError`: `timeout` when the next line does not arrive in time,
    `truncated_stream` when the connection fails part-way (both retryable).
    """
    name = ""
    data: list[str] = []
    try:
        async for line in response.aiter_lines():
            if not line:
                if data:
                    yield SseEvent(name or "message", "\n".join(data))
                name, data = "", []
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            # Comments (":" lines, used as keep-alives), "id" and "retry" change nothing here.
    except httpx.TimeoutException as error:
        raise timed_out(url, error) from error
    except httpx.TransportError as error:
        raise truncated(
            url, f"the connection failed ({str(error) or type(error).__name__})"
        ) from error


def truncated(url: str, why: str) -> BackendError:
    """The error for a stream that ended before its last event: retryable, as the answer is lost."""
    return BackendError(
        f"{url} broke off its answer: {why}",
        code=ErrorCode.TRUNCATED_STREAM,
        retryable=True,
        url=url,
    )


def stream_error(url: str, error: Any) -> BackendError:
    """The error for an error event a provider sent inside a stream it had begun with 200.

    It is classified by the HTTP status it names (`code`, as vLLM sends) or by its `type`, as
    Anthropic and OpenAI send them; an unknown type counts as the provider's own trouble, which
    is retryable.
    """
    detail = error if isinstance(error, dict) else {"message": str(error)}
    kind = str(detail.get("type") or "")
    status = detail.get("code")
    if isinstance(status, int) and 400 <= status < 600:
        code, retryable = classify(status)
    else:
        code, retryable = _ERROR_TYPES.get(kind, (ErrorCode.SERVER_ERROR, True))
        status = None
    message = detail.get("message") or kind or "no message"
    return BackendError(
        f"{url} reported an error mid-answer: {message}" + (f" ({kind})" if kind else ""),
        code=code,
        retryable=retryable,
        status=status,
        url=url,
    )


# The error types providers put in an error event, by what they mean for us.
_ERROR_TYPES = {
    "overloaded_error": (ErrorCode.OVERLOADED, True),
    "rate_limit_error": (ErrorCode.RATE_LIMITED, True),
    "api_error": (ErrorCode.SERVER_ERROR, True),
    "server_error": (ErrorCode.SERVER_ERROR, True),
    "timeout_error": (ErrorCode.TIMEOUT, True),
    "authentication_error": (ErrorCode.AUTH_FAILED, False),
    "permission_error": (ErrorCode.AUTH_FAILED, False),
    "not_found_error": (ErrorCode.NOT_FOUND, False),
    "invalid_request_error": (ErrorCode.BAD_REQUEST, False),
    "request_too_large": (ErrorCode.BAD_REQUEST, False),
}


# --- failures ------------------------------------------------------------------------------------


def timed_out(url: str, error: httpx.TimeoutException) -> BackendError:
    return BackendError(
        f"{url} did not answer in time ({type(error).__name__})",
        code=ErrorCode.TIMEOUT,
        retryable=True,
        url=url,
    )


def bad_response(url: str, what: str, *, status: int | None = None) -> BackendError:
    """The error for a 2xx answer this backend cannot read; not retried, it would come again."""
    return BackendError(
        f"{url} answered {what}",
        code=ErrorCode.BAD_RESPONSE,
        retryable=False,
        status=status,
        url=url,
    )


def parsed_body(model: type[_M], url: str, response: httpx.Response, what: str) -> _M:
    """A 2xx answer's body read as `model` (the provider's wire shape). Raises `bad_response`,
    naming `what` it should have been, when the body is not that."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as error:
        raise bad_response(
            url,
            f"{response.status_code} with a body that is not {what}: "
            f"{provider_message(response)} ({error.error_count()} validation errors)",
            status=response.status_code,
        ) from error


def status_error(url: str, response: httpx.Response) -> BackendError:
    """The error for a non-2xx response whose body has been read."""
    status = response.status_code
    code, retryable = classify(status)
    detail = provider_message(response)
    return BackendError(
        f"{url} answered {status}: {detail}",
        code=code,
        retryable=retryable,
        status=status,
        url=url,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        detail=detail,
        param=_provider_param(response),
    )


def classify(status: int) -> tuple[ErrorCode, bool]:
    """Our code for an HTTP status, and whether trying again may help."""
    if status == 429:
        return ErrorCode.RATE_LIMITED, True
    if status == 408:
        return ErrorCode.TIMEOUT, True
    if status == 529:  # Anthropic's "overloaded": the service, not this request
        return ErrorCode.OVERLOADED, True
    if status >= 500:
        return ErrorCode.SERVER_ERROR, True
    if status in (401, 403):
        return ErrorCode.AUTH_FAILED, False
    if status == 404:
        return ErrorCode.NOT_FOUND, False
    if 400 <= status < 500:
        return ErrorCode.BAD_REQUEST, False
    # Redirects are not followed: an endpoint that moved is a misconfigured base_url.
    return ErrorCode.BAD_RESPONSE, False


def _provider_param(response: httpx.Response) -> str | None:
    """The request parameter an OpenAI-style error body blames (`error.param`), if any."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    param = error.get("param") if isinstance(error, dict) else None
    return param if isinstance(param, str) else None


def provider_message(response: httpx.Response) -> str:
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


# A validation error as pydantic and FastAPI word it (llama.cpp's server, vLLM): the field's
# location, `('body', 'response_format', 'type')` or `["body", "response_format", "type"]`.
_BODY_LOCATION = re.compile(r"""['"]?loc['"]?\s*[:=]\s*[(\[]\s*['"]body['"]\s*,\s*['"](\w+)['"]""")


def located_parameters(detail: str) -> set[str]:
    """The request fields a pydantic-style validation error locates (``('body', FIELD, ...)``)."""
    return set(_BODY_LOCATION.findall(detail))


def named_parameters(detail: str, candidates: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Which of `candidates` a refusal's `detail` names, in the order of `candidates`.

    `candidates` maps each parameter to the words that name it (its own name among them, e.g.
    ``"tool_choice": ("tool_choice", "tool choice")``). Where the detail locates its errors in
    the request body, as pydantic's validation errors do, only the fields located count: the
    rest of such a message echoes the request, whose text may say anything. Otherwise a word
    counts where it stands on its own (``stream`` is not named by ``upstream``), in any case.
    """
    located = located_parameters(detail)
    if located:
        return tuple(name for name, words in candidates.items() if located.intersection(words))
    return tuple(
        name
        for name, words in candidates.items()
        if any(
            re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", detail, re.IGNORECASE)
            for word in words
        )
    )
