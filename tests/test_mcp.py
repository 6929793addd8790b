"""MCP tools from a server written with the `mcp` SDK (examples/mcp/notes_server.py), over
stdio and over streamable HTTP on loopback: listed with their schemas, called, an error result
read as an error, a server that dies started again once, and annotations that only tighten."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from base.errors import ConfigError
from tools import InvalidArguments, ToolContext
from tools.mcp import MCPSource, mcp_tools
from tools.tool import Tool

from .conftest import REPO

SERVER = str(REPO / "examples" / "mcp" / "notes_server.py")


def _stdio() -> dict[str, Tool]:
    source = MCPSource(name="notes", command=[sys.executable, SERVER], trusted=True)
    return {t.name: t for t in mcp_tools(source)}


@pytest.fixture
def http_server() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, SERVER, "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)


def test_tools_are_listed_with_their_schemas_and_hints_only_tighten() -> None:
    tools = _stdio()
    assert set(tools) == {
        *("notes_list_notes", "notes_add_note", "notes_read_note"),
        *("notes_forget_notes", "notes_die"),
    }
    add = tools["notes_add_note"].spec.parameters
    assert add["required"] == ["title", "text"]
    assert add["properties"]["title"]["type"] == "string"
    # The operator trusts it, so its read-only hints are taken; a destructive hint asks; a tool
    # with no hint is an external effect.
    assert tools["notes_list_notes"].touches == "read"
    assert tools["notes_add_note"].touches == "external"
    assert tools["notes_forget_notes"].needs_approval is True
    with pytest.raises(InvalidArguments, match="3 is not of type 'string'"):
        tools["notes_add_note"].parse({"title": 3, "text": "x"})


async def test_calls_over_stdio_an_error_result_and_a_server_that_dies() -> None:
    tools = _stdio()
    ctx = ToolContext("t", "c1", "t/1")
    kept = await tools["notes_add_note"].invoke({"title": "a", "text": "hello"}, ctx)
    assert (kept.ok, kept.content) == (True, "kept 'a' (5 characters)")
    missing = await tools["notes_read_note"].invoke({"title": "zz"}, ctx)
    assert (missing.ok, "no note is titled 'zz'" in missing.content) == (False, True)
    died = await tools["notes_die"].invoke({}, ctx)
    assert (died.ok, died.error_code) == (False, "sandbox_restarted")
    assert "whether the call took effect is not known" in died.content
    # Started again once: a new process, its notes gone.
    again = await tools["notes_list_notes"].invoke({}, ctx)
    assert again.ok, again.content
    assert '"result": []' in again.content
    await tools["notes_die"].invoke({}, ctx)
    gone = await tools["notes_list_notes"].invoke({}, ctx)
    assert (gone.ok, gone.error_code) == (False, "sandbox_gone")
    assert "stopped again after it was started once more" in gone.content


async def test_calls_over_streamable_http(http_server: str) -> None:
    source = MCPSource(name="web", url=http_server, trusted=True)
    tools = {t.name: t for t in mcp_tools(source)}
    ctx = ToolContext("t", "c1", "t/1")
    kept = await tools["web_add_note"].invoke({"title": "b", "text": "over http"}, ctx)
    assert kept.ok, kept.content
    read = await tools["web_read_note"].invoke({"title": "b"}, ctx)
    assert (read.ok, read.content) == (True, "over http")


def test_a_server_not_trusted_or_not_reached_is_refused_saying_why() -> None:
    exits = [sys.executable, "-c", "raise SystemExit(4)"]
    with pytest.raises(ConfigError, match="MCP server gone: its tools could not be listed"):
        mcp_tools(MCPSource(name="gone", command=exits, trusted=True))
    # Until MCP servers run in a sandbox, one the operator has not trusted is not run at all.
    with pytest.raises(ConfigError, match="mark it trusted = true"):
        mcp_tools(MCPSource(name="notes", command=[sys.executable, SERVER]))
    with pytest.raises(ValidationError, match="give a server's command"):
        MCPSource(name="neither")
