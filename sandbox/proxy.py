"""The egress proxy: the one way out for a sandbox whose network is "proxy".

It runs on the host. Each task is registered with its allowlist and gets a token for its
container's `HTTP_PROXY`/`HTTPS_PROXY`. A request is judged against the task's allowlist and the
addresses its host resolves to; each decision goes to the task's recorder before the target is
touched, and a refused target never sees a connection::

    async with EgressProxy("172.17.0.1") as proxy:
        token = proxy.register(task_id, ["pkg.example", "*.files.example"], attempts.append)
        env = {"HTTPS_PROXY": proxy.url(token, "host.docker.internal")}
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Self

from sandbox._addresses import IPAddress, judge
from sandbox._allowlist import (
    HOST_NAME,
    Entry,
    check_entry,
    ip_or_none,
    parse_entry,
    split_host_port,
)

__all__ = [
    "EgressAttempt",
    "EgressProxy",
    "Recorder",
    "Resolver",
    "ServiceLookup",
    "check_entry",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EgressAttempt:
    """One decision of the proxy on a task's request to reach `host:port`."""

    task_id: str
    method: str
    host: str  # as the client asked, lowercased, without a trailing dot
    port: int
    allowed: bool
    reason: str  # short and human: "allowlisted", "not in the allowlist", ...
    address: str | None  # the address connected to (allowed) or refused, if resolved


Recorder = Callable[[EgressAttempt], None]
ServiceLookup = Callable[[str], Awaitable[frozenset[tuple[str, int]]]]
"""The (host, port) pairs of a task's own services (the deployments it made), by task id: the
task reaches them with no allowlist entry, even on this host's loopback."""
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Resolves (host, port) to IP addresses; raises OSError when it cannot."""

USER = "agent"
MAX_HEAD = 64 * 1024  # request line and headers
HEAD_TIMEOUT = 30.0  # for a client to send them
ALLOWLISTED = "allowlisted"
NOT_ALLOWLISTED = "not in the allowlist"
UNRESOLVED = "could not resolve"
OWN_SERVICE = "the task's own deployment"


_CHUNK = 64 * 1024
# After an error answer the rest of the request is read and dropped for a while: closing with
# unread input resets the connection, and the client may lose the answer.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1024 * 1024
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/1\.[01]")
# Hop-by-hop headers, and Host, which is rewritten. Transfer-Encoding is hop-by-hop too, but it
# stays: the body is relayed as the client framed it.
_NOT_FORWARDED = frozenset(
    {*("connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate")}
    | {"te", "trailer", "upgrade", "host"}
)


class _HTTPError(Exception):
    """Ends a connection with an error answer; never leaves this module."""

    def __init__(self, status: HTTPStatus, text: str, *headers: str) -> None:
        super().__init__(text)
        self.status, self.text, self.headers = status, text, headers


@dataclass(frozen=True)
class _Task:
    task_id: str
    entries: tuple[Entry, ...]
    record: Recorder


@dataclass(frozen=True)
class _Request:
    method: str
    version: str
    headers: tuple[tuple[str, str], ...]
    host: str  # lowercased, without a trailing dot
    address: IPAddress | None  # when the host is an IP literal
    port: int
    path: str  # origin-form, for a forwarded request; "" for CONNECT

    @property
    def target(self) -> str:
        return f"{_bracket(self.host)}:{self.port}"

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name]


#: on every answer the proxy makes itself (a refusal), so that it is not taken for the target's
REFUSED_HEADER = "X-Agent-Egress"


class EgressProxy:
    """An HTTP/1.1 forward proxy (CONNECT and absolute-form requests) that enforces allowlists.

    Use as `async with EgressProxy(...) as proxy:`, or call `start` and `aclose`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        connect_timeout: float = 10.0,
        resolver: Resolver | None = None,
        allow_private: bool = False,
        services: ServiceLookup | None = None,
        own: Callable[[IPAddress], bool] | None = None,
    ) -> None:
        """`allow_private`: an allowlist entry that names a private, loopback or this host's own
        address outright (an IP literal, localhost) may reach it; the operator's to say, in
        config (see `sandbox._addresses`). `services`: where a task's own deployments are, which
        it may reach as they are named there (an IP literal and a port), and nothing else.
        `own`: which addresses are the guarded host's (default: this host's interfaces)."""
        self.services = services
        self._own = own
        self._host, self._port = host, port
        self._private = allow_private
        self._connect_timeout = connect_timeout
        self._resolver = resolver or _resolve
        self._tasks: dict[str, _Task] = {}
        #: client address -> token, for clients that cannot send credentials (a browser)
        self._sources: dict[str, str] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[object]] = set()
        self._closed = False

    async def start(self) -> None:
        """Start listening. Raises OSError if the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("the egress proxy is already started")
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=MAX_HEAD
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop listening and close every open connection and tunnel."""
        if self._server is None:
            return
        self._closed = True
        self._server.close()
        for connection in self._connections:
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        """The port listened on. Raises RuntimeError before `start`."""
        if self._server is None:
            raise RuntimeError("the egress proxy is not started")
        return self._port

    def register(
        self,
        task_id: str,
        allow: Sequence[str],
        record: Recorder,
        *,
        source: str | None = None,
        token: str | None = None,
    ) -> str:
        """Let a task's clients reach `allow`; return the token they authenticate with (`token`,
        or a new random one). A client connecting from the address `source` needs no token: it
        is taken for the task's (the task's forwarder, which a browser in the sandbox reaches
        without credentials).

        An entry is a host name (`example.com`), its subdomains (`*.example.com`), an IP address or
        `localhost`, with an optional `:port`; without one, ports 80 and 443. Raises ValueError
        for an entry that is none of these.
        """
        entries = tuple(parse_entry(entry) for entry in allow)
        token = token or secrets.token_urlsafe(24)
        self._tasks[token] = _Task(task_id, entries, record)
        if source is not None:
            self._sources[source] = token
        return token

    def unregister(self, token: str) -> None:
        """Refuse the token (and its source address) from now on; tunnels already open stay
        open. Unknown tokens pass."""
        self._tasks.pop(token, None)
        for source in [s for s, t in self._sources.items() if t == token]:
            del self._sources[source]

    def url(self, token: str, host: str) -> str:
        """The proxy URL, with credentials, for a client that reaches this proxy at `host`."""
        return f"http://{USER}:{token}@{_bracket(host)}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed:  # accepted just before aclose() stopped listening
            writer.close()
            return
        connection = asyncio.current_task()
        assert connection is not None
        self._connections.add(connection)
        try:
            try:
                await self._serve(reader, writer)
            except _HTTPError as error:
                await _answer(reader, writer, error)
        except asyncio.CancelledError:
            # aclose() cancels connections. This task is the top of its stack, and Python 3.11's
            # start_server logs a cancelled one as a failure.
            pass
        except OSError:
            pass  # the client or the target went away
        except Exception:
            logger.exception("egress proxy: a connection failed")
        finally:
            writer.close()
            self._connections.discard(connection)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                head = await _read_head(reader)
        except TimeoutError:
            raise _HTTPError(HTTPStatus.REQUEST_TIMEOUT, "request head too slow") from None
        if head is None:
            return
        request = _parse_head(head)
        token = _token(request)
        if token is None:
            peer = writer.get_extra_info("peername")
            token = self._sources.get(str(peer[0])) if peer else None
        task = self._tasks.get(token or "")
        if task is None:
            raise _HTTPError(
                HTTPStatus.PROXY_AUTHENTICATION_REQUIRED,
                "proxy authentication required",
                f'Proxy-Authenticate: Basic realm="{USER} egress"',
            )
        reason, address, status = await self._decide(task.entries, request)
        if reason == NOT_ALLOWLISTED and await self._own_service(task.task_id, request):
            reason, address, status = OWN_SERVICE, ip_or_none(request.host), HTTPStatus.OK
        allowed, text = status == HTTPStatus.OK, None if address is None else str(address)
        attempt = EgressAttempt(
            task.task_id, request.method, request.host, request.port, allowed, reason, text
        )
        try:
            task.record(attempt)
        except Exception:
            logger.exception("egress proxy: the recorder of task %s failed", task.task_id)
        target = request.target
        if address is None or status != HTTPStatus.OK:
            raise _HTTPError(status, f"egress to {target} refused: {reason}")
        try:
            async with asyncio.timeout(self._connect_timeout):
                upstream_reader, upstream = await asyncio.open_connection(
                    str(address), request.port, flags=socket.AI_NUMERICHOST, limit=_CHUNK
                )
        except TimeoutError:
            raise _HTTPError(HTTPStatus.GATEWAY_TIMEOUT, f"egress to {target}: timed out") from None
        except OSError as e:
            raise _HTTPError(HTTPStatus.BAD_GATEWAY, f"egress to {target} failed: {e}") from None
        try:
            if request.method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.write(_origin_head(request))
            async with asyncio.TaskGroup() as group:
                group.create_task(_pipe(reader, upstream))
                if request.method == "CONNECT":
                    group.create_task(_pipe(upstream_reader, writer))
                else:
                    group.create_task(_relay_answer(upstream_reader, writer))
        except* OSError:
            pass  # one side went away: closing both is all there is left to do
        finally:
            upstream.close()

    async def _own_service(self, task_id: str, request: _Request) -> bool:
        if self.services is None or ip_or_none(request.host) is None:
            return False
        try:
            return (request.host, request.port) in await self.services(task_id)
        except Exception:
            logger.exception("egress proxy: the services of task %s could not be read", task_id)
            return False

    async def _decide(
        self, entries: Sequence[Entry], request: _Request
    ) -> tuple[str, IPAddress | None, HTTPStatus]:
        """Why `request` is let through or refused, the address judged, and the status to send."""
        host, port = request.host, request.port
        entry = next((e for e in entries if e.matches(host, request.address, port)), None)
        if entry is None:
            return NOT_ALLOWLISTED, None, HTTPStatus.FORBIDDEN
        addresses = [] if request.address is None else [request.address]
        if request.address is None:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    addresses = list(map(ipaddress.ip_address, await self._resolver(host, port)))
            except (OSError, ValueError):  # TimeoutError is an OSError
                pass
        if not addresses:
            return UNRESOLVED, None, HTTPStatus.BAD_GATEWAY
        # One refused address refuses the host: a name that resolves to a public and a private
        # address is a DNS rebinding attempt, not a reason to pick the good one.
        for address in addresses:
            if reason := judge(
                address, explicit=entry.explicit, allow_private=self._private, own=self._own
            ):
                return reason, address, HTTPStatus.FORBIDDEN
        # Only the first address is tried, so that the one recorded is the one connected to.
        return ALLOWLISTED, addresses[0], HTTPStatus.OK


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _bad(text: str) -> _HTTPError:
    return _HTTPError(HTTPStatus.BAD_REQUEST, text)


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request line and headers; None if the client left without sending anything."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise _bad("incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise _bad("request head over 64 KiB") from None


def _parse_head(head: bytes) -> _Request:
    request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _VERSION.fullmatch(parts[2]):
        raise _bad("bad request line")
    (method, target, version), path = parts, ""
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        value = value.strip(" \t")
        # Space around a name, or a folded line, is how requests get smuggled past proxies.
        if not colon or not _TOKEN.fullmatch(name) or not value.replace("\t", " ").isprintable():
            raise _bad("bad header line")
        headers.append((name, value))
    if method != "CONNECT":
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() != "http":
            raise _bad("expected CONNECT or an absolute http:// URL")
        end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
        target, path = rest[:end], rest[end:].partition("#")[0]
        if not path.isascii() or not path.isprintable():
            raise _bad("bad request target")
        path = path if path.startswith("/") else "/" + path
    try:
        host, port = split_host_port(target)
    except ValueError:
        raise _bad("bad host or port") from None
    if port is None and method == "CONNECT":
        raise _bad("CONNECT needs host:port")
    address = ip_or_none(host)
    if address is None and not HOST_NAME.fullmatch(host):
        raise _bad("missing or bad host")
    port = 80 if port is None else port
    return _Request(method, version, tuple(headers), host, address, port, path)


def _token(request: _Request) -> str | None:
    values = request.values("proxy-authorization")
    scheme, _, credentials = values[0].partition(" ") if len(values) == 1 else ("", "", "")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, token = decoded.partition(":")
    return token if colon and user == USER else None


def _origin_head(request: _Request) -> bytes:
    """The request head for the origin: origin-form, its own Host, no hop-by-hop headers."""
    named = {n.strip().lower() for v in request.values("connection") for n in v.split(",")}
    drop = _NOT_FORWARDED | (named - {"transfer-encoding", "content-length"})
    host = _bracket(request.host) if request.port == 80 else request.target
    lines = [f"{request.method} {request.path} {request.version}", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in request.headers if name.lower() not in drop]
    # One request per connection: the origin closing ends the relay.
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _relay_answer(upstream: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
    """Relay the origin's answer to a forwarded request, telling the client that the connection
    closes after it (the origin was asked to close it): a client that took it for kept alive
    would send its next request into a connection about to close, or past this proxy's check."""
    while True:
        try:
            head = await upstream.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            # Not an answer this can read: passed on as it is, what was read of it first.
            client.write(exc.partial if isinstance(exc, asyncio.IncompleteReadError) else b"")
            await _pipe(upstream, client)
            return
        status_line, *lines = head[:-4].split(b"\r\n")
        informational = status_line[9:10] == b"1"  # "HTTP/1.1 1xx": a final answer follows
        # An origin's own REFUSED_HEADER goes too: only this proxy's refusals carry it.
        dropped = (b"connection", b"keep-alive", REFUSED_HEADER.lower().encode())
        kept = [line for line in lines if line.split(b":", 1)[0].strip().lower() not in dropped]
        if not informational:
            kept.append(b"Connection: close")
        client.write(b"\r\n".join([status_line, *kept]) + b"\r\n\r\n")
        await client.drain()
        if not informational:
            break
    await _pipe(upstream, client)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while chunk := await source.read(_CHUNK):
        sink.write(chunk)
        await sink.drain()
    # Pass the end on as a half-close: a client may end its request and still await the answer.
    if sink.can_write_eof() and not sink.is_closing():
        sink.write_eof()


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, error: _HTTPError
) -> None:
    body = (error.text + "\n").encode()
    head = [
        f"HTTP/1.1 {error.status.value} {error.status.phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        # Tells a client (the browser tools) that the proxy answered, not the target.
        f"{REFUSED_HEADER}: refused",
        *error.headers,
    ]
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        writer.write_eof()
        dropped = 0
        async with asyncio.timeout(_LINGER_SECONDS):
            while dropped < _LINGER_BYTES and (chunk := await reader.read(_CHUNK)):
                dropped += len(chunk)
    except OSError:  # TimeoutError included
        pass
