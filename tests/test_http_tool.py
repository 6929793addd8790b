"""The HTTP tool against a real API server on loopback, through a real sandbox's egress proxy:
what the model reads, secrets filled in for their hosts only, redirects, retries, idempotency
keys, and a canary secret that a server echoes back in every form appearing nowhere.

These never skip: `make test` starts Docker and builds the runtime image first.
"""

from __future__ import annotations

import base64
import json
import secrets as random
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agent.effects import artifacts_of
from agent.events import ToolResulted
from agent.runner import Runner
from agent.store import Store
from base.artifacts import FolderArtifacts
from frontends.render import Renderer
from policies import Gate
from sandbox.container import Sandbox
from sandbox.limits import SandboxLimits
from sandbox.manager import Sandboxes
from sandbox.proxy import EgressAttempt
from tools import Registry, ToolContext
from tools.builtin import registry as builtin
from tools.http import IDEMPOTENCY_HEADER, http_request
from tools.mcp import MCPSource, mcp_tools
from tools.openapi import OpenAPISource, openapi_tools
from tools.secrets import Secret, Secrets

from .apis import (  # noqa: F401 - fixtures
    SMALL,
    boxes_fixture,
    kept_files,
    leaks,
    notes_over_http_fixture,
)
from .conftest import ALLOW_ALL, REPO, scripted

CANARY = "cAnArY-" + random.token_hex(8)
INVENTORY = REPO / "examples" / "openapi" / "inventory.yaml"


@dataclass
class Api:
    """A small API on loopback that says what it was sent, and echoes what it is asked to."""

    port: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    flaky: int = 0  # how many more times /flaky answers 503

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(api: Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode(errors="replace")
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            seen = {"method": self.command, "path": url.path, "query": query, "body": body}
            seen["headers"] = dict(self.headers.items())
            api.received.append(seen)
            if url.path == "/redirect":
                self._send(302, b"", {"Location": query["to"]})
            elif url.path == "/flaky" and api.flaky > 0:
                api.flaky -= 1
                self._send(503, b"busy", {"Retry-After": "0"})
            elif url.path == "/echo-forms":
                # Whatever it was sent, in every form a careless server echoes it in.
                token = self.headers.get("X-Token", "")
                raw = token.encode()
                echoed = [
                    token,
                    base64.b64encode(raw).decode(),
                    base64.b64encode(b"user:" + raw).decode(),
                    urllib.parse.quote(token, safe=""),
                    raw.hex(),
                ]
                status = int(query.get("status", "200"))
                self._send(status, "\n".join(echoed).encode(), {"Content-Type": "text/plain"})
            elif url.path == "/big":
                self._send(200, b"x" * 10_000, {"Content-Type": "text/plain"})
            else:
                data = json.dumps(seen).encode()
                self._send(200, data, {"Content-Type": "application/json"})

        def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

    return Handler


@pytest.fixture
def api() -> Iterator[Api]:
    made = Api()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(made))
    made.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield made
    server.shutdown()
    server.server_close()


def _limits(api: Api, network: str = "proxy") -> SandboxLimits:
    # The API is reached by its IP (in scope for the canary) and as localhost (out of scope).
    allow = (f"127.0.0.1:{api.port}", f"localhost:{api.port}") if network == "proxy" else ()
    return SMALL.model_copy(update={"network": network, "allow_domains": allow})


#: a value that would end a URL's path and query, and more, if it were put in as it is
ODD = "abc/def?x=1&y 2#z@evil.example"


def _secrets(api: Api) -> Secrets:
    host = (f"127.0.0.1:{api.port}",)
    return Secrets(
        {"CANARY": Secret("CANARY", host, "file", CANARY), "ODD": Secret("ODD", host, "file", ODD)}
    )


async def _context(
    boxes: Sandboxes, api: Api, tmp_path: Path, task: str = "caller", network: str = "proxy"
) -> tuple[ToolContext, list[EgressAttempt]]:
    decided: list[EgressAttempt] = []
    boxes.egress.listener = lambda _task, attempt: decided.append(attempt)
    box: Sandbox = await boxes.for_task(task, _limits(api, network))

    async def opened() -> Sandbox:
        return box

    ctx = ToolContext(
        task,
        "c1",
        f"{task}/1.0",
        sandbox=opened,
        artifacts=FolderArtifacts(tmp_path / "kept"),
        secrets=_secrets(api),
    )
    return ctx, decided


async def _call(ctx: ToolContext, **arguments: Any) -> tuple[bool, str]:
    result = await http_request.invoke(arguments, ctx)
    return result.ok, result.content


async def test_a_request_goes_through_the_task_s_proxy_and_reads_well(
    boxes: Sandboxes, api: Api, tmp_path: Path
) -> None:
    ctx, decided = await _context(boxes, api, tmp_path)
    ok, said = await _call(ctx, url=f"{api.base}/items?a=1", query={"b": 2})
    assert ok, said
    first = said.splitlines()
    assert first[0] == "GET 127.0.0.1/items → 200 OK"
    assert "content-type: application/json" in said
    assert '"query": {\n    "a": "1",\n    "b": "2"\n  }' in said  # pretty-printed
    assert [(a.host, a.port, a.allowed) for a in decided] == [("127.0.0.1", api.port, True)]
    # A long body: its head for the model, the whole kept.
    ok, said = await _call(ctx, url=f"{api.base}/big")
    assert "[... 6,000 more characters]" in said
    [kept] = (tmp_path / "kept").iterdir()
    assert kept.read_bytes() == b"x" * 10_000
    assert f"is kept as the artifact {kept.name}" in said
    # A host outside the allowlist is refused by the proxy, and the model told so: over HTTP
    # (the proxy answers) and HTTPS (it refuses the tunnel).
    ok, said = await _call(ctx, url=f"http://127.0.0.2:{api.port}/")
    assert not ok
    assert "the task's egress proxy refused it" in said
    assert "not in the allowlist" in said
    result = await http_request.invoke({"url": f"https://127.0.0.2:{api.port}/"}, ctx)
    assert (result.ok, result.error_code) == (False, "refused")
    assert "the task reaches only the hosts its allowlist names" in result.content
    assert [a.allowed for a in decided[1:]] == [True, False, False]  # tried once each
    assert len(api.received) == 2


async def test_a_secret_is_filled_in_for_its_hosts_only(
    boxes: Sandboxes, api: Api, tmp_path: Path
) -> None:
    ctx, _ = await _context(boxes, api, tmp_path)
    headers = {"Authorization": "Bearer {{secret:CANARY}}"}
    ok, said = await _call(ctx, url=f"{api.base}/me", headers=headers)
    assert ok, said
    assert api.received[-1]["headers"]["Authorization"] == f"Bearer {CANARY}"
    # The same server by another name the secret is not meant for: nothing is sent.
    before = len(api.received)
    ok, said = await _call(ctx, url=f"http://localhost:{api.port}/me", headers=headers)
    assert not ok
    assert f"may be sent only to 127.0.0.1:{api.port}, not to localhost:{api.port}" in said
    assert len(api.received) == before
    # A redirect to that other name is not followed with the secret.
    to = urllib.parse.quote(f"http://localhost:{api.port}/landed")
    ok, said = await _call(ctx, url=f"{api.base}/redirect?to={to}", headers=headers)
    assert ok, said
    assert "302 Found" in said
    assert "the redirect to localhost was not followed" in said
    assert [r["path"] for r in api.received[before:]] == ["/redirect"]
    # Without a secret, the redirect is followed (the control).
    ok, said = await _call(ctx, url=f"{api.base}/redirect?to={to}")
    assert said.splitlines()[0] == "GET localhost/landed → 200 OK"
    # In the URL, a value is encoded whole: it cannot change where the request goes.
    before = len(api.received)
    ok, said = await _call(ctx, url=f"{api.base}/v/{{{{secret:ODD}}}}?k={{{{secret:ODD}}}}")
    assert ok, said
    [seen] = api.received[before:]
    assert seen["path"] == "/v/" + urllib.parse.quote(ODD, safe="")
    assert seen["query"] == {"k": ODD}
    # A secret may not name the host, nor ride in a Host header to another site.
    for url, headers, said_part in [
        (f"http://{{{{secret:CANARY}}}}@127.0.0.1:{api.port}/", {}, "cannot be in the URL's host"),
        (f"{api.base}/", {"Host": "evil.example", "X-K": "{{secret:CANARY}}"}, "no Host header"),
    ]:
        ok, said = await _call(ctx, url=url, headers=headers)
        assert (ok, said_part in said) == (False, True), said
    assert len(api.received) == before + 1


async def test_a_post_carries_one_idempotency_key_and_retries_are_safe(
    boxes: Sandboxes, api: Api, tmp_path: Path
) -> None:
    ctx, _ = await _context(boxes, api, tmp_path)
    api.flaky = 2
    ok, said = await _call(ctx, url=f"{api.base}/flaky", method="POST", json_body={"n": 1})
    assert ok, said
    assert "200 OK" in said.splitlines()[0]
    keys = {r["headers"][IDEMPOTENCY_HEADER] for r in api.received}
    assert len(api.received) == 3  # two 503s, then the answer
    assert len(keys) == 1
    assert [json.loads(r["body"]) for r in api.received] == [{"n": 1}] * 3
    # The same call sent again (after a crash, say) carries the same key; GETs carry none.
    await _call(ctx, url=f"{api.base}/again", method="POST", json_body={"n": 1})
    assert api.received[-1]["headers"][IDEMPOTENCY_HEADER] in keys
    await _call(ctx, url=f"{api.base}/read")
    assert IDEMPOTENCY_HEADER not in api.received[-1]["headers"]


async def test_a_task_with_no_network_is_told_how_to_give_it_one(
    boxes: Sandboxes, api: Api, tmp_path: Path
) -> None:
    ctx, _ = await _context(boxes, api, tmp_path, task="offline", network="none")
    ok, said = await _call(ctx, url=f"{api.base}/")
    assert not ok
    assert "this task has no network" in said
    assert "--allow-domain" in said
    assert not api.received


def _hygiene_tasks(api: Api, closed: int) -> list[tuple[str, dict[str, Any]]]:
    """Tasks of one call each that send the canary (or try to), and the calls: a server that
    echoes it in every form, with 2xx, 4xx and 5xx; in a header, the query, JSON, form and text
    bodies; redirects on the same host and to another; a host it is not meant for; a port that
    refuses the connection; a body kept as an artifact; OpenAPI operations; an MCP server's
    tools (over HTTP) that keep it, say it back, and quote it in an error result."""
    token = {"X-Token": "{{secret:CANARY}}"}
    bearer = {"Authorization": "Bearer {{secret:CANARY}}"}
    away = urllib.parse.quote(f"http://localhost:{api.port}/elsewhere")
    here = urllib.parse.quote(f"{api.base}/landed?k={{{{secret:CANARY}}}}")
    secret = "{{secret:CANARY}}"
    http: list[dict[str, Any]] = [
        {"url": f"{api.base}/echo-forms", "headers": token},
        {"url": f"{api.base}/echo-forms?status=401", "headers": token},
        {"url": f"{api.base}/echo-forms?status=500", "headers": token},
        {"url": f"{api.base}/echo", "method": "POST", "json_body": {"key": secret}},
        {"url": f"{api.base}/echo?key={secret}"},
        {"url": f"{api.base}/echo", "query": {"key": secret}},
        {"url": f"{api.base}/redirect?to={away}", "headers": token},
        {"url": f"{api.base}/redirect?to={here}", "headers": bearer},
        {"url": f"http://localhost:{api.port}/x", "headers": token},  # not its host
        {"url": f"http://127.0.0.1:{closed}/?k={secret}"},  # nothing listens there
        {"url": f"{api.base}/big", "headers": token},
        {"url": f"{api.base}/echo", "method": "PUT", "form": {"password": secret}},
        {"url": f"{api.base}/echo", "method": "PATCH", "body": f"token={secret}"},
        {"url": f"{api.base}/echo", "method": "HEAD", "headers": bearer},
        {"url": f"{api.base}/echo", "method": "DELETE", "headers": bearer},
    ]
    openapi: list[tuple[str, dict[str, Any]]] = [
        ("listItems", {"status": "in_stock"}),
        ("createItem", {"body": {"name": "lamp", "price": 3, "note": secret}}),
        ("getItem", {"itemId": 1}),
    ]
    mcp: list[tuple[str, dict[str, Any]]] = [
        ("web_add_note", {"title": "key", "text": secret}),
        ("web_read_note", {"title": "key"}),
        ("web_read_note", {"title": secret}),  # an error result: "no note is titled '...'"
    ]
    return [("http_request", call) for call in http] + openapi + mcp


async def test_a_canary_secret_echoed_back_is_kept_nowhere(
    store: Store, home: Path, boxes: Sandboxes, api: Api, notes_over_http: str
) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    notes = notes_over_http.split("/")[2]
    hosts = (f"127.0.0.1:{api.port}", f"127.0.0.1:{closed}", notes)
    keyring = Secrets({"CANARY": Secret("CANARY", hosts, "file", CANARY)})
    registry = Registry()
    registry.include(builtin)
    registry.add(http_request)
    # The inventory's operations, sent to this echoing API: it says back the key it was sent.
    spec = OpenAPISource(spec=str(INVENTORY), server=api.base, secret="CANARY")
    registry.include(openapi_tools(spec))
    registry.include(mcp_tools(MCPSource(name="web", url=notes_over_http)))
    screen = StringIO()
    limits = _limits(api).model_copy(
        update={"allow_domains": (*_limits(api).allow_domains, f"127.0.0.1:{closed}")}
    )
    tasks, backends, results = [], [], []
    for tool, arguments in _hygiene_tasks(api, closed):
        backend = scripted([{"plan": ["Call"]}, {"tool": tool, "args": arguments}, {"done": "ok"}])
        runner = Runner(
            store,
            registry,
            Gate.from_text(ALLOW_ALL),
            planner=backend,
            sandboxes=boxes,
            secrets=keyring,
        )
        runner.subscribe(Renderer(Console(file=screen, width=200)))
        task = runner.create(f"Call {tool}", sandbox=limits)
        state = await runner.run(task)
        await boxes.release(task)
        assert state.status == "done", (arguments, state.status)
        tasks.append(task)
        backends.append(backend)
        [result] = [e.event for e in store.events(task) if isinstance(e.event, ToolResulted)]
        results.append(result)
    assert len(tasks) == 21
    # The probe could have seen it: the servers were sent the canary, and said it back.
    assert sum(CANARY in json.dumps(r) for r in api.received) >= 12
    assert "[secret:CANARY]" in results[0].content
    assert results[-2].content == "[secret:CANARY]"  # the note, read back
    assert (results[-1].ok, "no note is titled '[secret:CANARY]'" in results[-1].content) == (
        False,
        True,
    )
    codes = {r.error_code for r in results}
    assert {"secret_out_of_scope", "connection_failed"} <= codes
    # And it is nowhere: the log, the artifacts, the screen, what the model was sent.
    store.close()
    kept = kept_files(home)
    for task in tasks:
        kept |= kept_files(home, artifacts_of(store, task))
    assert "events.db" in kept
    assert any(name.startswith("artifact ") for name in kept)  # the big body
    for name, data in kept.items():
        assert leaks(CANARY, data) == [], name
    assert leaks(CANARY, screen.getvalue().encode()) == []
    for backend in backends:
        for request in backend.requests:
            assert leaks(CANARY, request.model_dump_json().encode()) == []
    # The model was told which secrets there are: their names and hosts.
    [told] = [t for t in backends[0].requests[-1].tools if t.name == "http_request"]
    assert f"{{{{secret:CANARY}}}} for 127.0.0.1:{api.port}" in told.description


async def test_a_sandbox_inherits_nothing_of_the_runner_s_environment(
    boxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    box = await boxes.for_task("env-check")
    result = await box.exec("env", timeout=10)
    assert result.ok
    assert "PATH=" in result.stdout  # the control: the environment was read
    assert CANARY not in result.stdout
    assert "OPENAI_API_KEY" not in result.stdout
