"""MCP tools from a server written with the `mcp` SDK (examples/mcp/notes_server.py): over stdio
in a sandbox container of its own (the default), over stdio on this host (a trusted server), and
over streamable HTTP on loopback through an egress proxy. Listed with their schemas, called
(directly and by a scripted run), an error result read as an error, a server that dies started
again once, annotations that only tighten, and secrets filled in only for an HTTP server's host.

These never skip: `make test` starts Docker and builds the runtime image first.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx2
import pytest
from pydantic import ValidationError

from agent.store import Store
from base.errors import ConfigError
from tools import InvalidArguments, Registry, ToolContext
from tools.mcp import MCPSource, mcp_tools
from tools.secrets import Secret, Secrets
from tools.tool import Tool

from .apis import NOTES_SERVER, notes_over_http_fixture  # noqa: F401 - a fixture
from .conftest import make_runner

SANDBOXED = MCPSource(
    name="notes", command=["python3", "notes_server.py"], folder=str(NOTES_SERVER.parent)
)
ROLE: dict[str, str | list[str] | bool] = {"label": "agent.role=mcp"}


@pytest.fixture(name="client")
def client_fixture() -> Iterator[docker.DockerClient]:
    """The Docker engine; the MCP servers' containers a test left running are removed after it
    (a server's container ends when its runner does, which outlives a test)."""
    client = docker.from_env()
    yield client
    for container in client.containers.list(all=True, filters=ROLE):
        container.remove(force=True)


def _servers(client: docker.DockerClient) -> list[Any]:
    """The MCP servers' containers running now (one that has just ended may take a moment to go)."""
    deadline = time.monotonic() + 10
    while True:
        running = client.containers.list(filters={**ROLE, "status": "running"})
        if time.monotonic() > deadline or all(c.status == "running" for c in running):
            return running
        time.sleep(0.1)


def _by_name(source: MCPSource) -> dict[str, Tool]:
    return {t.name: t for t in mcp_tools(source)}


def test_tools_are_listed_with_their_schemas_and_hints_only_tighten(
    client: docker.DockerClient,
) -> None:
    tools = _by_name(SANDBOXED)
    assert set(tools) == {
        *("notes_list_notes", "notes_add_note", "notes_read_note"),
        *("notes_forget_notes", "notes_die"),
    }
    add = tools["notes_add_note"].spec.parameters
    assert add["required"] == ["title", "text"]
    assert add["properties"]["title"]["type"] == "string"
    with pytest.raises(InvalidArguments, match="3 is not of type 'string'"):
        tools["notes_add_note"].parse({"title": 3, "text": "x"})
    # Not trusted: its read-only hint loosens nothing; a destructive hint asks all the same.
    assert tools["notes_list_notes"].touches == "external"
    assert tools["notes_forget_notes"].needs_approval is True
    # The container it was listed from has ended, and is gone.
    assert _servers(client) == []
    # Trusted (run on this host, as the operator's own program), its read-only hints are taken.
    trusted = MCPSource(name="notes", command=[sys.executable, str(NOTES_SERVER)], trusted=True)
    on_host = _by_name(trusted)
    assert on_host["notes_list_notes"].touches == "read"
    assert on_host["notes_add_note"].touches == "external"


async def test_a_stdio_server_runs_hardened_in_a_container_and_is_started_again_once(
    client: docker.DockerClient,
) -> None:
    tools = _by_name(SANDBOXED)
    ctx = ToolContext("t", "c1", "t/1")
    kept = await tools["notes_add_note"].invoke({"title": "a", "text": "hello"}, ctx)
    assert (kept.ok, kept.content) == (True, "kept 'a' (5 characters)")
    [box] = _servers(client)
    settings = box.attrs["HostConfig"]
    assert settings["NetworkMode"] == "none"
    assert settings["ReadonlyRootfs"] is True
    assert settings["CapDrop"] == ["ALL"]
    assert not settings["CapAdd"]
    assert "no-new-privileges:true" in settings["SecurityOpt"]
    assert settings["PidsLimit"] == 128
    assert settings["Memory"] == 512 * 2**20
    assert box.attrs["Config"]["User"] == "1000:1000"
    [mount] = box.attrs["Mounts"]
    assert (mount["Source"], mount["Destination"], mount["RW"]) == (
        str(NOTES_SERVER.parent),
        "/srv/mcp",
        False,
    )
    missing = await tools["notes_read_note"].invoke({"title": "zz"}, ctx)
    assert (missing.ok, "no note is titled 'zz'" in missing.content) == (False, True)
    died = await tools["notes_die"].invoke({}, ctx)
    assert (died.ok, died.error_code) == (False, "sandbox_restarted")
    assert "whether the call took effect is not known" in died.content
    # Started again once: a new container, its notes gone.
    again = await tools["notes_list_notes"].invoke({}, ctx)
    assert again.ok, again.content
    assert '"result": []' in again.content
    [second] = _servers(client)
    assert second.id != box.id
    await tools["notes_die"].invoke({}, ctx)
    gone = await tools["notes_list_notes"].invoke({}, ctx)
    assert (gone.ok, gone.error_code) == (False, "sandbox_gone")
    assert "stopped again after it was started once more" in gone.content
    assert _servers(client) == []


async def test_a_scripted_run_calls_mcp_tools_and_the_model_reads_an_error_result(
    store: Store, client: docker.DockerClient
) -> None:
    registry = Registry()
    registry.include(mcp_tools(SANDBOXED))
    runner, backend = make_runner(
        store,
        [
            {"plan": ["Keep a note and read two back"]},
            {"tool": "notes_add_note", "args": {"title": "plan", "text": "ship on friday"}},
            {"tool": "notes_read_note", "args": {"title": "plan"}},
            {"tool": "notes_read_note", "args": {"title": "nope"}},
            {"done": "the plan note says: ship on friday"},
        ],
        registry=registry,
    )
    state = await runner.run(runner.create("Keep a note, then read it"))
    assert state.status == "done"
    seen = json.dumps([m.model_dump() for m in backend.requests[-1].messages])
    assert "ship on friday" in seen  # the second call's result
    assert "no note is titled 'nope'" in seen  # the error result, as the model read it


async def test_an_http_server_is_reached_through_an_egress_proxy(notes_over_http: str) -> None:
    tools = _by_name(MCPSource(name="web", url=notes_over_http))
    assert tools["web_list_notes"].touches == "external"  # not trusted
    ctx = ToolContext("t", "c1", "t/1")
    kept = await tools["web_add_note"].invoke({"title": "b", "text": "over http"}, ctx)
    assert kept.ok, kept.content
    read = await tools["web_read_note"].invoke({"title": "b"}, ctx)
    assert (read.ok, read.content) == (True, "over http")
    # The proxy is on the way: 0.0.0.0 is never dialled, though this host would answer there
    # (the positive control: straight to it, the server answers).
    unspecified = notes_over_http.replace("127.0.0.1", "0.0.0.0")
    async with httpx2.AsyncClient(trust_env=False) as direct:
        answer = await direct.get(unspecified, headers={"Accept": "text/event-stream"})
    assert answer.status_code < 500
    with pytest.raises(ConfigError, match=r"the egress proxy refused 0\.0\.0\.0:\d+: link-local"):
        mcp_tools(MCPSource(name="web", url=unspecified))


async def test_secrets_are_filled_in_for_an_http_server_s_host_only(notes_over_http: str) -> None:
    port = int(notes_over_http.split(":")[2].split("/", maxsplit=1)[0])
    value = "s3cret-" + "x" * 12
    keyring = Secrets({"NOTE_KEY": Secret("NOTE_KEY", (f"127.0.0.1:{port}",), "file", value)})
    tools = _by_name(MCPSource(name="web", url=notes_over_http))
    ctx = ToolContext("t", "c1", "t/1", secrets=keyring)
    kept = await tools["web_add_note"].invoke({"title": "k", "text": "{{secret:NOTE_KEY}}"}, ctx)
    assert kept.ok, kept.content
    read = await tools["web_read_note"].invoke({"title": "k"}, ctx)
    assert read.content == value  # filled in (the runner's redaction is tested with runs)
    elsewhere = Secrets({"NOTE_KEY": Secret("NOTE_KEY", ("api.example.com",), "file", value)})
    refused = await tools["web_add_note"].invoke(
        {"title": "k", "text": "{{secret:NOTE_KEY}}"},
        ToolContext("t", "c2", "t/2", secrets=elsewhere),
    )
    assert (refused.ok, refused.error_code) == (False, "secret_out_of_scope")
    assert tools["web_add_note"].fills_secrets


async def test_a_stdio_server_is_sent_no_secret(client: docker.DockerClient) -> None:
    tools = _by_name(SANDBOXED)
    value = "s3cret-" + "y" * 12
    keyring = Secrets({"NOTE_KEY": Secret("NOTE_KEY", ("api.example.com",), "file", value)})
    ctx = ToolContext("t", "c1", "t/1", secrets=keyring)
    refused = await tools["notes_add_note"].invoke(
        {"title": "k", "text": "{{secret:NOTE_KEY}}"}, ctx
    )
    assert (refused.ok, refused.error_code) == (False, "secret_out_of_scope")
    assert "has no host a secret could be scoped to" in refused.content
    assert not tools["notes_add_note"].fills_secrets


def test_a_server_that_cannot_be_had_is_refused_saying_why(tmp_path: Path) -> None:
    exits = [sys.executable, "-c", "raise SystemExit(4)"]
    with pytest.raises(ConfigError, match="MCP server gone: its tools could not be listed"):
        mcp_tools(MCPSource(name="gone", command=exits, trusted=True))
    with pytest.raises(ConfigError, match="MCP server boxed: its tools could not be listed"):
        mcp_tools(MCPSource(name="boxed", command=["python3", "-c", "raise SystemExit(4)"]))
    with pytest.raises(ConfigError, match="is not a folder"):
        mcp_tools(MCPSource(name="x", command=["python3", "s.py"], folder=str(tmp_path / "no")))
    with pytest.raises(ConfigError, match="the runtime image nope:1 is not built"):
        mcp_tools(SANDBOXED, runtime_image="nope:1")
    with pytest.raises(ValidationError, match="give a server's command"):
        MCPSource(name="neither")
    with pytest.raises(ValidationError, match="not an http"):
        MCPSource(name="x", url="ftp://127.0.0.1/mcp")
    with pytest.raises(ValidationError, match="a trusted one runs with this host's Python"):
        MCPSource(name="x", command=["s"], trusted=True, packages=["httpx"])


def test_no_docker_command_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="needs the docker command"):
        mcp_tools(SANDBOXED)
