"""The egress proxy through real sockets on loopback: a target that counts every byte it receives,
a real HTTP origin, and clients that speak to the proxy as curl or pip would. Only name resolution
is injected, so that names can be made to resolve to metadata or loopback addresses."""

from __future__ import annotations

import asyncio
import base64
import http.server
import ipaddress
import json
import logging
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from sandbox._addresses import OWN, judge, own_of
from sandbox.proxy import EgressAttempt, EgressProxy

MAPPED = ipaddress.ip_address("::ffff:169.254.169.254")  # its text differs across Pythons
NAMES = {
    "metadata.example": ["169.254.169.254"],
    "sneaky.example": ["127.0.0.1"],
    "rebind.example": ["93.184.216.34", "127.0.0.1"],
    "mapped.example": [str(MAPPED)],
    "localhost": ["127.0.0.1"],
}
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
TIMEOUT = 5.0


async def resolve(host: str, port: int) -> list[str]:
    try:
        return NAMES[host]
    except KeyError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None


class Target:
    """A TCP server that counts the connections and bytes it receives and echoes them back."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = 0
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                self.received += len(data)
                writer.write(b"echo:" + data)
                await writer.drain()
        finally:
            writer.close()


class Origin(http.server.BaseHTTPRequestHandler):
    """Answers with the request it saw, as JSON: method, path, headers and body."""

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": self.rfile.read(length).decode(),
        }
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
async def proxy() -> AsyncIterator[EgressProxy]:
    # The targets here are on loopback, named outright: the operator's config opens them.
    async with EgressProxy(resolver=resolve, connect_timeout=2.0, allow_private=True) as proxy:
        yield proxy


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    target = Target()
    server = await asyncio.start_server(target.serve, "127.0.0.1", 0)
    target.port = server.sockets[0].getsockname()[1]
    async with server:
        yield target


@pytest.fixture
def origin() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def credentials(token: str, user: str = "agent") -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def request(method: str, host_port: str, token: str | None, *headers: str) -> bytes:
    target = host_port if method == "CONNECT" else f"http://{host_port}/x?q=1"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_port}", *headers]
    if token is not None:
        lines.append(f"Proxy-Authorization: {credentials(token)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def send(
    proxy: EgressProxy, data: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def ask(
    proxy: EgressProxy, data: bytes, *, eof: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Send `data`, read one response: (status, headers lowercased, body)."""
    reader, writer = await send(proxy, data)
    if eof:
        writer.write_eof()
    try:
        async with asyncio.timeout(TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
            headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body = await reader.read()
    finally:
        writer.close()
    return int(status_line.split(" ")[1]), headers, body


async def open_tunnel(
    proxy: EgressProxy, host_port: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await send(proxy, request("CONNECT", host_port, token))
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readuntil(b"\r\n\r\n") == ESTABLISHED
    return reader, writer


# --- CONNECT ---------------------------------------------------------------------------------


async def test_allowlisted_connect_tunnels_bytes_both_ways(
    proxy: EgressProxy, target: Target
) -> None:
    attempts: list[EgressAttempt] = []
    token = proxy.register("task-1", [f"127.0.0.1:{target.port}"], attempts.append)

    reader, writer = await open_tunnel(proxy, f"127.0.0.1:{target.port}", token)
    writer.write(b"hello")
    await writer.drain()
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readexactly(10) == b"echo:hello"
        # The client's end reaches the target, whose close then reaches the client.
        writer.write_eof()
        assert await reader.read() == b""
    writer.close()

    assert (target.connections, target.received) == (1, 5)
    assert attempts == [
        EgressAttempt(
            "task-1", "CONNECT", "127.0.0.1", target.port, True, "allowlisted", "127.0.0.1"
        )
    ]


async def test_localhost_entry_lets_a_loopback_address_through(
    proxy: EgressProxy, target: Target
) -> None:
    attempts: list[EgressAttempt] = []
    token = proxy.register("task-1", [f"LocalHost:{target.port}"], attempts.append)

    reader, writer = await open_tunnel(proxy, f"localhost:{target.port}", token)
    writer.write(b"hi")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readexactly(7) == b"echo:hi"
    writer.close()

    assert attempts == [
        EgressAttempt(
            "task-1", "CONNECT", "localhost", target.port, True, "allowlisted", "127.0.0.1"
        )
    ]


@pytest.mark.parametrize("method", ["CONNECT", "GET"])
@pytest.mark.parametrize(
    ("host", "entry", "reason", "address"),
    [
        ("evil.example", "good.example", "not in the allowlist", None),
        ("metadata.example", "metadata.example", "cloud metadata address", "169.254.169.254"),
        (
            "mapped.example",
            "mapped.example",
            f"cloud metadata address (169.254.169.254, inside {MAPPED})",
            str(MAPPED),
        ),
        ("sneaky.example", "sneaky.example", "private or loopback address", "127.0.0.1"),
        ("rebind.example", "*.example", "private or loopback address", "127.0.0.1"),
        ("169.254.169.254", "169.254.169.254", "cloud metadata address", "169.254.169.254"),
        ("169.254.10.1", "169.254.10.1", "link-local or reserved address", "169.254.10.1"),
        ("0.0.0.0", "0.0.0.0", "link-local or reserved address", "0.0.0.0"),
        ("[fe80::1]", "[fe80::1]", "link-local or reserved address", "fe80::1"),
    ],
)
async def test_refused_requests_get_403_and_the_target_gets_nothing(
    proxy: EgressProxy,
    target: Target,
    method: str,
    host: str,
    entry: str,
    reason: str,
    address: str | None,
) -> None:
    attempts: list[EgressAttempt] = []
    token = proxy.register("task-2", [f"{entry}:{target.port}"], attempts.append)

    status, _, body = await ask(proxy, request(method, f"{host}:{target.port}", token))

    assert status == 403
    assert body == f"egress to {host}:{target.port} refused: {reason}\n".encode()
    # sneaky.example and rebind.example resolve to the target's own address: it would have seen
    # a connection had the proxy opened one.
    assert (target.connections, target.received) == (0, 0)
    assert attempts == [
        EgressAttempt("task-2", method, host.strip("[]"), target.port, False, reason, address)
    ]


async def test_unresolvable_allowed_name_gets_502(proxy: EgressProxy) -> None:
    attempts: list[EgressAttempt] = []
    token = proxy.register("task-3", ["nowhere.example"], attempts.append)

    status, _, body = await ask(proxy, request("CONNECT", "nowhere.example:443", token))

    assert status == 502
    assert b"could not resolve" in body
    assert attempts == [
        EgressAttempt("task-3", "CONNECT", "nowhere.example", 443, False, "could not resolve", None)
    ]


async def test_allowed_target_that_refuses_the_connection_gets_502(proxy: EgressProxy) -> None:
    with socket.socket() as s:  # a port that was just free, and now has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    attempts: list[EgressAttempt] = []
    token = proxy.register("task-3", [f"127.0.0.1:{port}"], attempts.append)

    status, _, _ = await ask(proxy, request("CONNECT", f"127.0.0.1:{port}", token))

    assert status == 502
    assert [(a.allowed, a.address) for a in attempts] == [(True, "127.0.0.1")]


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        credentials("not-the-token"),
        credentials("{token}", user="root"),
        "Bearer {token}",
        "Basic !!!not-base64!!!",
    ],
)
async def test_missing_or_wrong_credentials_get_407(
    proxy: EgressProxy, target: Target, authorization: str | None
) -> None:
    attempts: list[EgressAttempt] = []
    token = proxy.register("task-4", [f"127.0.0.1:{target.port}"], attempts.append)
    headers = [] if authorization is None else [f"Proxy-Authorization: {authorization}"]
    headers = [h.replace("{token}", token) for h in headers]

    status, response, _ = await ask(
        proxy, request("CONNECT", f"127.0.0.1:{target.port}", None, *headers)
    )

    assert status == 407
    assert response["proxy-authenticate"] == 'Basic realm="agent egress"'
    assert (target.connections, attempts) == (0, [])


async def test_unregistered_token_gets_407(proxy: EgressProxy, target: Target) -> None:
    attempts: list[EgressAttempt] = []
    token = proxy.register("task-4", [f"127.0.0.1:{target.port}"], attempts.append)
    proxy.unregister(token)

    status, _, _ = await ask(proxy, request("CONNECT", f"127.0.0.1:{target.port}", token))

    assert status == 407
    assert (target.connections, attempts) == (0, [])


async def test_url_carries_the_token_for_a_container(proxy: EgressProxy) -> None:
    token = proxy.register("task-5", [], lambda attempt: None)
    url = urlsplit(proxy.url(token, "host.docker.internal"))
    assert (url.scheme, url.username, url.password) == ("http", "agent", token)
    assert (url.hostname, url.port) == ("host.docker.internal", proxy.port)
    assert proxy.url(token, "fd00::1") == f"http://agent:{token}@[fd00::1]:{proxy.port}"
    assert token != proxy.register("task-5", [], lambda attempt: None)


def test_port_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = EgressProxy().port


# --- plain HTTP --------------------------------------------------------------------------------


async def test_get_is_forwarded_in_origin_form_without_proxy_headers(
    proxy: EgressProxy, origin: int
) -> None:
    attempts: list[EgressAttempt] = []
    token = proxy.register("task-6", [f"127.0.0.1:{origin}"], attempts.append)
    extra = ["Proxy-Connection: keep-alive", "Connection: keep-alive, X-Hop", "X-Hop: 1"]

    status, _, body = await ask(
        proxy, request("GET", f"127.0.0.1:{origin}", token, *extra, "X-Kept: yes")
    )

    assert status == 200
    seen = json.loads(body)
    assert (seen["method"], seen["path"]) == ("GET", "/x?q=1")
    assert seen["headers"]["host"] == f"127.0.0.1:{origin}"
    assert seen["headers"]["connection"] == "close"
    assert seen["headers"]["x-kept"] == "yes"
    assert not {"proxy-authorization", "proxy-connection", "x-hop"} & set(seen["headers"])
    assert attempts == [
        EgressAttempt("task-6", "GET", "127.0.0.1", origin, True, "allowlisted", "127.0.0.1")
    ]


class KeptAlive(Origin):
    """An origin that keeps connections open (HTTP/1.1) and says nothing of closing them."""

    protocol_version = "HTTP/1.1"


async def test_a_client_is_told_a_forwarded_connection_closes_after_its_answer(
    proxy: EgressProxy,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeptAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    token = proxy.register("task-6", [f"127.0.0.1:{port}"], lambda attempt: None)
    try:
        async with httpx.AsyncClient(proxy=proxy.url(token, "127.0.0.1"), trust_env=False) as c:
            answers = [await c.get(f"http://127.0.0.1:{port}/n{i}") for i in range(40)]
    finally:
        server.shutdown()
        server.server_close()
    # Each answer says the connection closes, so none is sent into one that is closing (the
    # client would take a kept-alive one for reusable, and its next request could be lost),
    # and every request is the proxy's to judge, its credentials taken off.
    assert [a.status_code for a in answers] == [200] * 40
    assert {a.headers["connection"] for a in answers} == {"close"}
    seen = [json.loads(a.content) for a in answers]
    assert [s["path"] for s in seen] == [f"/n{i}" for i in range(40)]
    assert not any("proxy-authorization" in s["headers"] for s in seen)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # an origin's own refusal header: taken off, so it is not taken for the proxy's
        (
            b"HTTP/1.1 403 Forbidden\r\nX-Agent-Egress: refused\r\nContent-Length: 2\r\n\r\nno",
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
        ),
        # an answer whose head this cannot read (bare newlines): passed on as it came
        (b"HTTP/1.0 200 OK\nContent-Length: 2\n\nok", b"HTTP/1.0 200 OK\nContent-Length: 2\n\nok"),
    ],
)
async def test_an_origin_s_answer_is_relayed_as_it_came_but_for_its_connection(
    proxy: EgressProxy, answer: bytes, expected: bytes
) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    origin = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = origin.sockets[0].getsockname()[1]
    token = proxy.register("task-6", [f"127.0.0.1:{port}"], lambda attempt: None)
    try:
        reader, writer = await send(proxy, request("GET", f"127.0.0.1:{port}", token))
        async with asyncio.timeout(TIMEOUT):
            relayed = await reader.read()
        writer.close()
    finally:
        origin.close()
    assert relayed == expected


async def test_post_body_reaches_the_origin(proxy: EgressProxy, origin: int) -> None:
    token = proxy.register("task-6", [f"127.0.0.1:{origin}"], lambda attempt: None)
    head = request("POST", f"127.0.0.1:{origin}", token, "Content-Length: 5")

    status, _, body = await ask(proxy, head + b"hello")

    assert status == 200
    assert json.loads(body)["body"] == "hello"


# --- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET http://127.0.0.1/ HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"GET /relative HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET http:///x HTTP/1.1\r\n\r\n",
        b"GET ftp://example.com/ HTTP/1.1\r\n\r\n",
        b"CONNECT 127.0.0.1:99999 HTTP/1.1\r\n\r\n",
        b"CONNECT 127.0.0.1:http HTTP/1.1\r\n\r\n",
        b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n",
        b"CONNECT bad_host!:443 HTTP/1.1\r\n\r\n",
        b"GET http://example.com/ HTTP/1.1\r\nName : value\r\n\r\n",
        b"GET http://example.com/ HTTP/1.1\r\n folded\r\n\r\n",
        b"GET http://example.com/ HTTP/2\r\n\r\n",
        b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n",
    ],
)
async def test_malformed_requests_get_400_and_the_next_client_is_served(
    proxy: EgressProxy, target: Target, data: bytes
) -> None:
    attempts: list[EgressAttempt] = []
    token = proxy.register("task-7", [f"127.0.0.1:{target.port}"], attempts.append)

    status, _, _ = await ask(proxy, data, eof=True)

    assert status == 400
    _, writer = await open_tunnel(proxy, f"127.0.0.1:{target.port}", token)
    writer.close()
    assert [a.allowed for a in attempts] == [True]


async def test_a_failing_recorder_does_not_stop_the_proxy(
    proxy: EgressProxy, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    def record(attempt: EgressAttempt) -> None:
        raise RuntimeError("audit log is down")

    token = proxy.register("task-8", [f"127.0.0.1:{target.port}"], record)

    with caplog.at_level(logging.ERROR, logger="sandbox.proxy"):
        for _ in range(2):
            reader, writer = await open_tunnel(proxy, f"127.0.0.1:{target.port}", token)
            writer.write(b"x")
            async with asyncio.timeout(TIMEOUT):
                assert await reader.readexactly(6) == b"echo:x"
            writer.close()

    assert "recorder of task task-8 failed" in caplog.text


# --- recording -------------------------------------------------------------------------------


async def test_every_decision_is_recorded_once_for_its_own_task(
    proxy: EgressProxy, target: Target
) -> None:
    first: list[EgressAttempt] = []
    second: list[EgressAttempt] = []
    token = proxy.register("first", [f"127.0.0.1:{target.port}", "sneaky.example"], first.append)
    other = proxy.register("second", ["nowhere.example"], second.append)

    _, writer = await open_tunnel(proxy, f"127.0.0.1:{target.port}", token)
    writer.close()
    statuses = [
        (await ask(proxy, request("GET", "sneaky.example", token)))[0],
        (await ask(proxy, request("CONNECT", "evil.example:443", token)))[0],
        (await ask(proxy, request("CONNECT", "evil.example:443", "wrong")))[0],
        (await ask(proxy, b"nonsense\r\n\r\n"))[0],
        (await ask(proxy, request("CONNECT", "nowhere.example:443", other)))[0],
    ]

    assert statuses == [403, 403, 407, 400, 502]
    port = target.port
    assert first == [
        EgressAttempt("first", "CONNECT", "127.0.0.1", port, True, "allowlisted", "127.0.0.1"),
        EgressAttempt(
            "first", "GET", "sneaky.example", 80, False, "private or loopback address", "127.0.0.1"
        ),
        EgressAttempt("first", "CONNECT", "evil.example", 443, False, "not in the allowlist", None),
    ]
    assert second == [
        EgressAttempt("second", "CONNECT", "nowhere.example", 443, False, "could not resolve", None)
    ]


async def test_aclose_closes_open_tunnels(target: Target) -> None:
    proxy = EgressProxy(resolver=resolve, allow_private=True)
    await proxy.start()
    token = proxy.register("task-9", [f"127.0.0.1:{target.port}"], lambda attempt: None)
    reader, writer = await open_tunnel(proxy, f"127.0.0.1:{target.port}", token)

    await proxy.aclose()

    async with asyncio.timeout(TIMEOUT):
        assert await reader.read() == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)


# --- allowlist rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "asked", "matches"),
    [
        ("example.com", "example.com:443", True),
        ("example.com", "example.com:80", True),
        ("example.com", "example.com:8443", False),
        ("example.com:8443", "example.com:8443", True),
        ("example.com:8443", "example.com:443", False),
        ("example.com", "www.example.com:443", False),
        ("example.com", "notexample.com:443", False),
        ("*.example.com", "www.example.com:443", True),
        ("*.example.com", "a.b.example.com:80", True),
        ("*.example.com", "example.com:443", False),
        ("*.example.com", "badexample.com:443", False),
        ("*.example.com", "www.example.com.evil.test:443", False),
        ("*.example.com:8080", "api.example.com:8080", True),
        ("*.example.com:8080", "api.example.com:443", False),
        ("Example.COM.", "example.com:443", True),
        ("example.com", "Example.COM.:443", True),
        ("*.EXAMPLE.com", "API.example.com.:443", True),
        ("169.254.1.1", "169.254.1.1:443", True),
        ("169.254.1.1", "169.254.1.1:22", False),
        ("169.254.1.1:22", "169.254.1.1:22", True),
        ("example.com", "169.254.1.1:443", False),
        ("fe80::1", "[fe80::1]:443", True),
        ("[fe80::1]:8080", "[FE80:0::1]:8080", True),
        ("[fe80::1]:8080", "[fe80::2]:8080", False),
    ],
)
async def test_allowlist_matching(entry: str, asked: str, matches: bool) -> None:
    async def loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    attempts: list[EgressAttempt] = []
    # Every name resolves to loopback and every literal here is link-local, so a matched entry is
    # still refused, but for another reason than the allowlist, and nothing is connected to.
    async with EgressProxy(resolver=loopback) as proxy:
        token = proxy.register("task-10", [entry], attempts.append)
        status, _, _ = await ask(proxy, request("CONNECT", asked, token))

    assert status == 403
    [attempt] = attempts
    assert (attempt.reason != "not in the allowlist") == matches
    host, _, port = asked.rpartition(":")
    assert (attempt.host, attempt.port) == (host.lower().rstrip(".").strip("[]"), int(port))


@pytest.mark.parametrize(
    "entry",
    [
        *("", "*", "*.", "exa mple.com", "example.com:0", "example.com:65536", "example.com:http"),
        *("*.10.0.0.1", "[not-an-ip]:80", "[::1]x", "http://example.com", "example.com/path"),
    ],
)
def test_register_refuses_malformed_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="not"):
        EgressProxy().register("task-11", [entry], lambda attempt: None)


# --- what the proxy never dials ----------------------------------------------------------------

#: an address a name an attacker controls could resolve to: one of this host's own, public
#: ones (given to the host's loopback by the test; nothing is sent anywhere)
OWN_PUBLIC = "100.128.0.7"
VETTED = {
    "bench.example": "198.18.0.1",  # benchmarking
    "ietf.example": "192.0.0.8",  # IETF protocol assignments
    "future.example": "240.0.0.1",  # reserved
    "doc6.example": "2001:db8::1",  # documentation
    "sixtofour.example": "2002:7f00:1::1",  # 6to4, carrying 127.0.0.1
    "nat64.example": "64:ff9b::a9fe:a9fe",  # NAT64, carrying 169.254.169.254
    "teredo.example": "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "ula.example": "fd12:3456::1",
    "own.example": OWN_PUBLIC,
}


@pytest.fixture
def own_public() -> Iterator[str]:
    """`OWN_PUBLIC` on the host's loopback for the test (root, as CI has)."""
    subprocess.run(["ip", "addr", "add", f"{OWN_PUBLIC}/32", "dev", "lo"], check=True)
    try:
        yield OWN_PUBLIC
    finally:
        subprocess.run(["ip", "addr", "del", f"{OWN_PUBLIC}/32", "dev", "lo"], check=False)


async def vetted(host: str, port: int) -> list[str]:
    return [VETTED[host]]


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("bench.example", "special-purpose address"),
        ("ietf.example", "special-purpose address"),
        ("future.example", "special-purpose address"),
        ("doc6.example", "special-purpose address"),
        ("sixtofour.example", "private or loopback address (127.0.0.1, inside 2002:7f00:1::1)"),
        (
            "nat64.example",
            "cloud metadata address (169.254.169.254, inside 64:ff9b::a9fe:a9fe)",
        ),
        ("teredo.example", "Teredo address (its IPv4 address is hidden)"),
        ("ula.example", "private or loopback address"),
        ("own.example", "an address of the proxy's own host"),
    ],
)
async def test_an_allowlisted_name_never_leads_to_a_special_or_own_address(
    own_public: str, host: str, reason: str
) -> None:
    attempts: list[EgressAttempt] = []
    # The operator opened private addresses: still, a *name* never reaches one.
    async with EgressProxy(resolver=vetted, allow_private=True) as proxy:
        token = proxy.register("task-12", ["*.example"], attempts.append)
        status, _, body = await ask(proxy, request("CONNECT", f"{host}:443", token))
    assert status == 403, body
    [attempt] = attempts
    assert (attempt.allowed, attempt.reason, attempt.address) == (False, reason, VETTED[host])


@pytest.mark.parametrize("allow_private", [False, True])
async def test_a_private_or_own_address_named_outright_is_dialled_only_if_config_says_so(
    own_public: str, allow_private: bool
) -> None:
    target = Target()
    servers = [
        await asyncio.start_server(target.serve, address, 0)
        for address in ("127.0.0.1", own_public)
    ]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    attempts: list[EgressAttempt] = []
    try:
        async with EgressProxy(resolver=resolve, allow_private=allow_private) as proxy:
            entries = [f"127.0.0.1:{ports[0]}", f"{own_public}:{ports[1]}"]
            token = proxy.register("task-13", entries, attempts.append)
            statuses = [
                (await ask(proxy, request("CONNECT", entry, token), eof=True))[0]
                for entry in entries
            ]
    finally:
        for server in servers:
            server.close()
    if allow_private:
        assert statuses == [200, 200]  # the control: the proxy would have connected
        assert target.connections == 2
    else:
        assert statuses == [403, 403]
        assert [a.reason for a in attempts] == [
            "private or loopback address",
            "an address of the proxy's own host",
        ]
        assert target.connections == 0


async def test_a_proxy_away_from_its_host_refuses_the_addresses_it_is_told_are_the_host_s() -> None:
    # A deployment's proxy runs in a container: its interfaces are not the engine host's, so it
    # is told them. OWN_PUBLIC is on none of this host's interfaces here (no fixture adds it).
    address = ipaddress.ip_address(OWN_PUBLIC)
    assert judge(address, explicit=False, allow_private=False) is None  # the control
    assert judge(address, explicit=False, allow_private=False, own=own_of([OWN_PUBLIC])) == OWN
    attempts: list[EgressAttempt] = []
    async with EgressProxy(resolver=vetted, own=own_of([OWN_PUBLIC])) as proxy:
        token = proxy.register("deployment v1", ["*.example"], attempts.append, token="given")
        assert token == "given"
        status, _, body = await ask(proxy, request("CONNECT", "own.example:443", token))
    assert status == 403, body
    assert [(a.allowed, a.reason) for a in attempts] == [(False, OWN)]
