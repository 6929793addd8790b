"""A small web site on loopback for the browser tests: the pages in tests/site, a form endpoint
that records what it receives, and a download. Every request is recorded."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import pytest_asyncio

from agent.store import Store
from browser._bodies import sent_fields
from sandbox.limits import SandboxConfig
from sandbox.manager import Sandboxes, store_scope

ROOT = Path(__file__).parent


@dataclass
class Site:
    port: int
    #: (method, path, body) of every request, in order
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    #: (path, content type, body) of every POST, in order
    posts: list[tuple[str, str, bytes]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.host}/{path.lstrip('/')}"

    def received(self) -> list[dict[str, list[str]] | None]:
        """The fields of every form posted to /submit, read in its own encoding."""
        return [sent_fields(kind, body) for path, kind, body in self.posts if "/submit" in path]

    def posted(self) -> list[dict[str, list[str]]]:
        """The forms posted to /submit, decoded."""
        return [
            parse_qs(body.decode(), keep_blank_values=True)
            for method, path, body in self.requests
            if method == "POST" and path.startswith("/submit")
        ]


@contextmanager
def serve_site(port: int = 0) -> Iterator[Site]:
    """Serve tests/ (the pages are under /site and /pages) on 127.0.0.1 at `port` (0: any)."""
    site = Site(port)

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(ROOT), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, body: bytes, kind: str, **headers: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            site.requests.append(("GET", self.path, b""))
            if self.path.startswith("/slow/"):  # an answer that takes a while
                time.sleep(0.8)
                self._answer(b"the slow answer", "text/plain")
                return
            if self.path.startswith("/download/"):
                name = self.path.rsplit("/", 1)[1]
                self._answer(
                    b"quarterly report: all good\n",
                    "text/plain",
                    Content_Disposition=f'attachment; filename="{name}"',
                )
                return
            super().do_GET()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            site.requests.append(("POST", self.path, body))
            site.posts.append((self.path, self.headers.get("Content-Type") or "", body))
            page = b"<!doctype html><title>Thanks</title><h1>Thank you</h1><p>Received.</p>"
            self._answer(page, "text/html")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(name="sites")
def sites_fixture() -> Iterator[tuple[Site, Site]]:
    """Two sites: the one a task works on, and another."""
    with serve_site() as site, serve_site() as elsewhere:
        yield site, elsewhere


@pytest_asyncio.fixture(name="sandboxes")
async def sandboxes_fixture(store: Store) -> AsyncIterator[Sandboxes]:
    """The store's sandboxes. The test's sites are on this host's loopback: the operator's
    config lets tasks reach it (where their allowlist names it)."""
    sandboxes = Sandboxes(
        SandboxConfig(pool_size=0, allow_private=True), scope=store_scope(store.path)
    )
    yield sandboxes
    await sandboxes.aclose()
