"""A real HTTP server on loopback that answers from a script, for testing HTTP model backends.

Tests queue the replies the server will give, in order, then inspect the requests it received::

    with WireServer() as server:
        server.reply(Reply(status=429, headers={"Retry-After": "1"}), Reply(body={...}))
        ... point a backend at server.url ...
        assert len(server.requests) == 2

A reply may instead be a stream of Server-Sent Events, written one by one (chunked, each flushed,
optionally after a pause) and optionally cut off by closing the connection part-way::

    server.reply(Reply(events=(Event({"type": "ping"}, event="ping"), ...), cut_after=3))

A request that finds no reply queued gets a 418 naming the problem, which backends do not retry.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event: `data` is sent as JSON unless it is a `str`; `event` names it."""

    data: Any
    event: str | None = None

    def encode(self) -> bytes:
        data = self.data if isinstance(self.data, str) else json.dumps(self.data)
        lines = [f"event: {self.event}"] if self.event else []
        lines += [f"data: {line}" for line in data.split("\n")]
        return ("\n".join(lines) + "\n\n").encode()


@dataclass(frozen=True)
class Reply:
    """One scripted answer: `body` is sent as JSON, or as is if it is already `bytes`.

    With `events`, the answer is an event stream instead: each event waits `event_delay` seconds
    and is flushed on its own. `cut_after` closes the connection after that many events, without
    ending the chunked body, as a server or proxy that dies mid-answer does. `delay` comes before
    the status line either way.
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    events: tuple[Event, ...] | None = None
    event_delay: float = 0.0
    cut_after: int | None = None


@dataclass(frozen=True)
class Recorded:
    """A request as the server received it; `json` is None when the body was not JSON."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class WireServer:
    """A `ThreadingHTTPServer` on 127.0.0.1 with a free port, serving queued `Reply`s."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        # Set on stop so replies still sleeping out a `delay` end at once.
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:54321``."""
        if self._httpd is None:
            raise RuntimeError("the wire server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def reply(self, *replies: Reply) -> None:
        """Queue replies, to be given one per request in order."""
        with self._lock:
            self._replies.extend(replies)

    def start(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        # A short poll interval: `shutdown` waits out one poll, and tests stop a server each.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> WireServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _take(self, request: Recorded) -> Reply | None:
        with self._lock:
            self.requests.append(request)
            return self._replies.popleft() if self._replies else None


def _handler_for(server: WireServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle(self) -> None:
            # The client may drop a connection, e.g. one with a stream it stopped reading.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                super().handle()

        def do_POST(self) -> None:
            self._answer()

        def do_GET(self) -> None:
            self._answer()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output readable

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            recorded = Recorded(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length),
            )
            reply = server._take(recorded)
            if reply is None:
                reply = Reply(
                    status=418,
                    body={
                        "error": {
                            "message": "wire server: no reply queued for "
                            f"{self.command} {self.path}"
                        }
                    },
                )
            if reply.delay and server._stopping.wait(reply.delay):
                return
            try:
                if reply.events is None:
                    self._send_body(reply)
                else:
                    self._send_events(reply, reply.events)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (a timeout test); nothing left to tell it

        def _send_body(self, reply: Reply) -> None:
            body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            headers = {"Content-Type": "application/json", **reply.headers}
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _send_events(self, reply: Reply, events: tuple[Event, ...]) -> None:
            self.send_response(reply.status)
            headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            for name, value in {**headers, **reply.headers}.items():
                self.send_header(name, value)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for event in events[: reply.cut_after]:
                if reply.event_delay and server._stopping.wait(reply.event_delay):
                    self.close_connection = True
                    return
                chunk = event.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            if reply.cut_after is not None:
                self.close_connection = True  # no closing chunk: the body is cut off
                return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler
