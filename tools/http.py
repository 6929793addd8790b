"""The HTTP tool: a request to an API, sent from the runner's host through the task's egress
proxy, so that it reaches only the hosts the task's allowlist names, and each request is in the
task's log like every other byte the task sends.

- Secrets: `{{secret:NAME}}` in the URL's path or query, the headers or the body is filled in
  here, for a host the secret is scoped to (see `tools/secrets.py`); what comes back is taken
  out of the answer before anyone sees it. A redirect to a host a secret the request carries is
  not scoped to is not followed.
- A POST or PATCH carries an `Idempotency-Key` made from the call's key: sent again after a
  crash, a service that honours the header takes it once. Retries (on a dropped connection,
  429 and 503, after `Retry-After`) are made only for methods that HTTP calls idempotent, or
  with that key.
- The model reads the status, a few headers and the head of the body (JSON pretty-printed); a
  longer or binary body is kept whole as an artifact.

The default policy lets GET, HEAD and OPTIONS through and asks a reviewer for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import urllib.parse
import weakref
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
import pydantic_core
import tenacity
from pydantic import Field

from base.errors import ErrorCode
from sandbox.proxy import REFUSED_HEADER
from tools.registry import Registry
from tools.sandboxed import task_sandbox
from tools.secrets import PLACEHOLDER, SecretRefused, Secrets, uses
from tools.tool import ToolContext, ToolError, tool

Method = Literal["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
#: idempotent by HTTP's own definition: sent again, the effect is the same
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: the headers the model is shown (all are kept with the body, when it is kept)
SHOWN_HEADERS = (
    "content-type",
    "content-length",
    "location",
    "retry-after",
    "etag",
    "last-modified",
    "www-authenticate",
)
SHOWN_BODY = 4000
MAX_BODY = 16 * 1024 * 1024
MAX_REDIRECTS = 5
ATTEMPTS = 3
#: the longest `Retry-After` waited for; a longer one is the model's to see
LONGEST_WAIT = 30.0

Scalar = str | int | float | bool


@dataclass(frozen=True)
class _Answer:
    response: httpx.Response  # closed: its body is `data`
    data: bytes  # decoded (gzip and the like undone), at most MAX_BODY bytes
    cut: bool  # the body was longer


class _Again(Exception):
    """An answer worth sending the request again for (429, 503)."""

    def __init__(self, answer: _Answer) -> None:
        super().__init__(f"{answer.response.status_code}")
        self.answer = answer


@tool(touches="external", timeout=120.0, idempotent=True, needs_network=True, fills_secrets=True)
async def http_request(  # noqa: PLR0917 - a tool's parameters are the model's named arguments
    ctx: ToolContext,
    url: Annotated[str, Field(pattern=r"^https?://", max_length=8000)],
    method: Method = "GET",
    headers: dict[str, str] | None = None,
    query: dict[str, Scalar] | None = None,
    json_body: Any = None,
    form: dict[str, Scalar] | None = None,
    body: str | None = None,
    timeout: Annotated[float, Field(gt=0, le=110)] = 30.0,  # noqa: ASYNC109 - the request's
) -> str:
    """Send an HTTP request to an API and read the answer: its status, main headers and the
    head of its body (JSON pretty-printed; a long body is kept whole as an artifact). It goes
    through the task's egress proxy, so only hosts the task's allowlist names answer. Write
    {{secret:NAME}} where a secret goes (a token in a header, say): its value is filled in here,
    only for the hosts the secret is meant for, and never shown.

    Args:
        url: the URL, http:// or https://, with its path (and query, if you like).
        method: the HTTP method.
        headers: request headers.
        query: query parameters, added to the URL's.
        json_body: a JSON body (sent as application/json).
        form: a form body (sent as application/x-www-form-urlencoded).
        body: a text body, sent as it is (give a Content-Type header).
        timeout: seconds to wait for the answer.
    """
    if sum(part is not None for part in (json_body, form, body)) > 1:
        raise ToolError(
            "give one of json_body, form or body, not several", code=ErrorCode.BAD_ARGUMENTS
        )
    return await send(
        ctx,
        method,
        url,
        headers=headers or {},
        query=query or {},
        json_body=json_body,
        form=form,
        body=body,
        timeout=timeout,
    )


async def send(
    ctx: ToolContext,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    query: dict[str, Any],
    json_body: Any = None,
    form: dict[str, Any] | None = None,
    body: str | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 - the request's
) -> str:
    """Send a request as the HTTP tool does (secrets filled in for the host, through the task's
    proxy, with an idempotency key, retried where safe), and say what came back, for a tool that
    builds its requests (an OpenAPI operation's). Raises `ToolError`."""
    target = _target(url)
    if _has(headers, "host"):
        raise ToolError(
            "a request goes to the host its URL names: give no Host header",
            code=ErrorCode.BAD_ARGUMENTS,
        )
    secrets = ctx.secrets or Secrets()
    request: dict[str, Any] = {"headers": headers, "query": query}
    request |= {"json": json_body, "form": form, "body": body}
    carried = uses(request) | uses(url)
    port = target.port or _default_port(target)
    try:
        filled = secrets.fill(request, target.host, port)
        # In the URL, a value is percent-encoded whole: it cannot end the path or the query.
        filled_url = secrets.fill(url, target.host, port, encode=_encoded)
    except SecretRefused as exc:
        raise ToolError(str(exc), code=exc.code) from None
    full = _target(filled_url)
    if (full.scheme, full.host, full.port) != (target.scheme, target.host, target.port):
        raise ToolError(  # unreachable with encoded values; checked all the same
            "a secret in the URL changed where it goes", code=ErrorCode.BAD_ARGUMENTS
        )
    sent_headers = dict(filled["headers"])
    if method not in IDEMPOTENT and not _has(sent_headers, IDEMPOTENCY_HEADER):
        sent_headers[IDEMPOTENCY_HEADER] = _idempotency_key(ctx)
    client = await _client(ctx)
    # Added to the URL's own query (httpx's `params` would take its place).
    full = full.copy_merge_params(filled["query"] or {})
    first = client.build_request(
        method,
        full,
        headers=sent_headers,
        json=filled["json"],
        data=filled["form"],
        content=filled["body"],
        timeout=timeout,
    )
    answer, note = await _send(client, first, carried, secrets)
    return _read(ctx, answer, note)


def _target(url: str) -> httpx.URL:
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ToolError(f"not a URL: {exc}", code=ErrorCode.BAD_ARGUMENTS) from None
    if not target.host:
        raise ToolError(f"no host in {url!r}", code=ErrorCode.BAD_ARGUMENTS)
    if PLACEHOLDER.search(urllib.parse.urlsplit(url).netloc) or PLACEHOLDER.search(target.host):
        raise ToolError(
            "a secret cannot be in the URL's host, user or port: name the host, and put the "
            "secret in the path, the query, a header or the body",
            code=ErrorCode.BAD_ARGUMENTS,
        )
    return target


def _encoded(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def _has(headers: dict[str, str], name: str) -> bool:
    return any(key.lower() == name.lower() for key in headers)


def _idempotency_key(ctx: ToolContext) -> str:
    """The same for every sending of this call, after a crash too; says nothing of the task."""
    return hashlib.sha256(f"http_request|{ctx.idempotency_key}".encode()).hexdigest()[:32]


#: how many tasks' clients are kept open at once, in each event loop
_KEPT_CLIENTS = 16
_CLOSING: set[asyncio.Task[None]] = set()
#: by event loop (a client's connections belong to one): by proxy URL, a client
_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


async def _client(ctx: ToolContext) -> httpx.AsyncClient:
    """A client that sends through the task's egress proxy, kept for the next call."""
    box = await task_sandbox(ctx, for_a_call=False)
    proxy = box.host_proxy
    if proxy is None:
        raise ToolError(
            "this task has no network: give it the hosts it may reach (agent run "
            "--allow-domain api.example.com)",
            code=ErrorCode.NO_NETWORK,
        )
    clients = _CLIENTS.setdefault(asyncio.get_running_loop(), {})
    if proxy not in clients:
        if len(clients) >= _KEPT_CLIENTS:  # the oldest task's, most likely over: closed
            oldest = clients.pop(next(iter(clients)))
            _CLOSING.add(task := asyncio.get_running_loop().create_task(oldest.aclose()))
            task.add_done_callback(_CLOSING.discard)
        # Not the environment's proxy, nor its certificates' location: the task's own proxy.
        clients[proxy] = httpx.AsyncClient(proxy=proxy, trust_env=False, follow_redirects=False)
    return clients[proxy]


async def _send(
    client: httpx.AsyncClient, request: httpx.Request, carried: set[str], secrets: Secrets
) -> tuple[_Answer, str]:
    """Send `request`, following redirects (but to a host a carried secret is not scoped to);
    the last answer, and a note on a redirect not followed."""
    for _ in range(MAX_REDIRECTS + 1):
        answer = await _sent_with_retries(client, request)
        follow = answer.response.next_request
        if follow is None:
            return answer, ""
        refused = [
            name
            for name in sorted(carried)
            if (secret := next((s for s in secrets if s.name == name), None)) is not None
            and not secret.scoped_to(follow.url.host, follow.url.port or _default_port(follow.url))
        ]
        if refused:
            return answer, (
                f"(the redirect to {follow.url.host} was not followed: the request carries "
                f"the secret {', '.join(refused)}, which is not meant for that host)"
            )
        request = follow
    return answer, f"(stopped after {MAX_REDIRECTS} redirects)"


async def _sent_with_retries(client: httpx.AsyncClient, request: httpx.Request) -> _Answer:
    """The answer, its body read (up to `MAX_BODY`). A dropped connection, 429 or 503 is
    tried again (after its Retry-After, if short enough) where sending twice is safe: an
    idempotent method, or a request with an idempotency key."""
    safe = request.method in IDEMPOTENT or IDEMPOTENCY_HEADER.lower() in request.headers
    try:
        async for attempt in tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(ATTEMPTS if safe else 1),
            wait=_retry_after,
            retry=tenacity.retry_if_exception(_worth_again),
            reraise=True,
        ):
            with attempt:
                answer = await _received(await client.send(request, stream=True))
                _again_if_asked(answer)
                return answer
    except _Again as again:
        return again.answer
    except httpx.ProxyError as exc:  # the proxy refused the tunnel (HTTPS): said as a refusal
        raise ToolError(
            f"the task's egress proxy refused {request.url.host}:{request.url.port or 443} "
            f"({exc}): the task reaches only the hosts its allowlist names",
            code=ErrorCode.REFUSED,
        ) from None
    except httpx.TimeoutException:
        raise ToolError(
            f"{request.method} {request.url.host}: no answer in time", code=ErrorCode.TIMEOUT
        ) from None
    except httpx.HTTPError as exc:
        raise ToolError(
            f"{request.method} {request.url.host}: {type(exc).__name__}: {exc}",
            code=ErrorCode.CONNECTION_FAILED,
        ) from None
    raise AssertionError("unreachable: tenacity returns or raises")


def _worth_again(exc: BaseException) -> bool:
    """A dropped connection, or an answer that asks for another try; not the proxy's refusal."""
    return isinstance(exc, _Again | httpx.TransportError) and not isinstance(exc, httpx.ProxyError)


def _again_if_asked(answer: _Answer) -> None:
    """Raise `_Again` for a 429 or 503 that asks for a wait short enough to make."""
    if answer.response.status_code in (429, 503) and _wait_of(answer.response) <= LONGEST_WAIT:
        raise _Again(answer)


async def _received(response: httpx.Response) -> _Answer:
    """The answer of a streamed `response`: its body read, up to `MAX_BODY` bytes."""
    chunks: list[bytes] = []
    size, cut = 0, False
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY:
                cut = True
                break
    finally:
        await response.aclose()
    return _Answer(response, b"".join(chunks)[:MAX_BODY], cut)


def _wait_of(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0  # an HTTP date, or nothing: a short wait


def _retry_after(state: tenacity.RetryCallState) -> float:
    failed = state.outcome.exception() if state.outcome is not None else None
    if isinstance(failed, _Again):
        return _wait_of(failed.answer.response)
    return 0.2 * state.attempt_number


def _read(ctx: ToolContext, answer: _Answer, note: str) -> str:
    """What the model reads of `answer`."""
    response, data = answer.response, answer.data
    request = response.request
    if response.headers.get(REFUSED_HEADER):  # the proxy answered, not the target
        said = data.decode(errors="replace").strip()
        if response.status_code in (403, 407):
            raise ToolError(
                f"the task's egress proxy refused it: {said} (the task reaches only the hosts "
                "its allowlist names)",
                code=ErrorCode.REFUSED,
            )
        code = ErrorCode.TIMEOUT if response.status_code == 504 else ErrorCode.CONNECTION_FAILED
        raise ToolError(f"{request.method} {request.url.host}: {said}", code=code)
    lines = [
        f"{request.method} {request.url.host}{request.url.path} → {response.status_code} "
        f"{response.reason_phrase}"
    ]
    lines += [
        f"{name}: {response.headers[name]}" for name in SHOWN_HEADERS if name in response.headers
    ]
    shown, whole = _body(response, data)
    if answer.cut:
        shown += f"\n(the body was cut at {MAX_BODY // 2**20} MiB)"
    if whole and ctx.artifacts is not None:
        name = f"http-{hashlib.sha256(data).hexdigest()[:12]}.body"
        ctx.artifacts.keep(name, data)
        shown += f"\n(the whole body, {len(data):,} bytes, is kept as the artifact {name})"
    if note:
        lines.append(note)
    return "\n".join(lines) + ("\n\n" + shown if shown else "")


def _body(response: httpx.Response, data: bytes) -> tuple[str, bool]:
    """The body as the model reads it, and whether it is shortened (so kept whole)."""
    if not data:
        return "", False
    kind = response.headers.get("content-type", "")
    try:
        text = data.decode(response.encoding or "utf-8")
    except (UnicodeDecodeError, LookupError):
        return f"({len(data):,} bytes of {kind or 'binary data'})", True
    if "json" in kind:
        with contextlib.suppress(ValueError):  # not JSON after all: shown as it is
            # pydantic's writer: as json.dumps(indent=2) would, ten times as fast
            text = pydantic_core.to_json(json.loads(text), indent=2).decode()
    if len(text) <= SHOWN_BODY:
        return text, False
    return f"{text[:SHOWN_BODY]}\n[... {len(text) - SHOWN_BODY:,} more characters]", True


registry = Registry([http_request])
