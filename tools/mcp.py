"""Tools from MCP servers (Model Context Protocol), through the official `mcp` SDK: each tool a
server lists becomes a tool of the registry, with the schema the server gives, behind the same
gate.

    [[tools.mcp]]                        # in agent.toml; as many as you like
    name = "notes"                       # put before each tool's name: notes_add_note
    command = ["python3", "server.py"]   # a server spoken to over stdio, or:
    url = "http://127.0.0.1:8720/mcp"    # one over streamable HTTP
    trusted = true                       # needed today (see below); its read-only hints may
                                         # then loosen the gate

A tool's annotations may only tighten the gate: a destructive hint asks a reviewer; a read-only
hint makes it a read only for a server the operator marked trusted (otherwise every call is an
external effect). What a call returns is read for the model: text, structured content (as
JSON), images and resources kept as artifacts; an error result is an error the model reads. A
server that stops is started again once; if it stops again, its tools fail saying so, and the
task goes on.

Not yet (the issue that asks for them is open): a stdio server run in a sandbox container, and
an HTTP server reached through the egress proxy. Until then a server runs (stdio) or is reached
(HTTP) as the operator's own program, on this host, and only one the operator marks
`trusted = true` is loaded: an untrusted one is refused, saying so.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from base.errors import ConfigError, ErrorCode
from tools.tool import Tool, ToolContext, ToolError

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


class MCPSource(BaseModel):
    """One `[[tools.mcp]]` entry of agent.toml."""

    model_config = ConfigDict(extra="forbid")

    name: str
    command: list[str] | None = None
    url: str | None = None
    trusted: bool = False
    env: dict[str, str] = {}

    @model_validator(mode="after")
    def _one_transport(self) -> MCPSource:
        if (self.command is None) == (self.url is None):
            raise ValueError("give a server's command (stdio) or its url (streamable HTTP)")
        if not self.command and self.url is None:
            raise ValueError("a server's command cannot be empty")
        return self


@dataclass
class _Server:
    """A connection to one server, made on first use in each event loop, and made again once
    after the server stops."""

    source: MCPSource
    _open: dict[int, tuple[contextlib.AsyncExitStack, Any]] = field(default_factory=dict)
    restarted: bool = False
    gone: str | None = None

    def _client(self) -> Any:
        from mcp import Client, StdioServerParameters  # noqa: PLC0415 - only where MCP is used

        if self.source.url is not None:
            return Client(self.source.url)
        command = self.source.command or []
        params = StdioServerParameters(
            command=command[0], args=command[1:], env=self.source.env or None
        )
        return Client(params)

    async def session(self) -> Any:
        key = id(asyncio.get_running_loop())
        if key not in self._open:
            stack = contextlib.AsyncExitStack()
            client = await stack.enter_async_context(self._client())
            self._open[key] = (stack, client)
        return self._open[key][1]

    async def close(self) -> None:
        key = id(asyncio.get_running_loop())
        if (opened := self._open.pop(key, None)) is not None:
            with contextlib.suppress(Exception):
                await opened[0].aclose()

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """The server's result of `tool`. A server that stops is started again for the next
        call (once); this call is not sent again, since it may have taken effect. Raises
        `ToolError` saying which."""
        if self.gone is not None:
            raise ToolError(self.gone, code=ErrorCode.SANDBOX_GONE)
        try:
            return await (await self.session()).call_tool(tool, arguments)
        except Exception as exc:  # noqa: BLE001 - the connection's failure, of any kind
            await self.close()
            said = f"{type(exc).__name__}: {exc}"
            if self.restarted:
                self.gone = (
                    f"the MCP server {self.source.name} stopped again after it was started "
                    f"once more ({said}); its tools cannot be called now"
                )
                raise ToolError(self.gone, code=ErrorCode.SANDBOX_GONE) from None
            self.restarted = True
            raise ToolError(
                f"the MCP server {self.source.name} stopped during this call ({said}); whether "
                "the call took effect is not known; the server is started again for the next "
                "call",
                code=ErrorCode.SANDBOX_RESTARTED,
            ) from None


def mcp_tools(source: MCPSource) -> list[Tool]:
    """The tools `source`'s server lists, as tools of the registry. Raises `ConfigError` when
    the server cannot be reached or lists tools that cannot be made tools."""
    if not source.trusted:
        raise ConfigError(
            f"MCP server {source.name}: it would run as this host's own program (a sandbox for "
            "MCP servers is not built yet): mark it trusted = true in [[tools.mcp]] if it is"
        )
    server = _Server(source)

    async def listed() -> Any:
        try:
            client = await server.session()
            return await client.list_tools()
        finally:
            await server.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop of its own, wherever called
        try:
            found = pool.submit(asyncio.run, listed()).result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - whatever stops the server answering
            raise ConfigError(
                f"MCP server {source.name}: its tools could not be listed: {type(exc).__name__}: "
                f"{exc}"
            ) from None
    return [_tool(server, listed_tool) for listed_tool in found.tools]


def _tool(server: _Server, listed: Any) -> Tool:
    source = server.source
    name = _NAME_CHARS.sub("_", f"{source.name}_{listed.name}")[:64]
    hints = listed.annotations
    read_only = bool(hints is not None and hints.read_only_hint)
    destructive = bool(hints is not None and hints.destructive_hint)

    async def call(ctx: ToolContext, arguments: dict[str, Any]) -> str:
        result = await server.call(listed.name, arguments)
        text = _read(ctx, name, result)
        if result.is_error:
            raise ToolError(text or f"{name} failed", code=ErrorCode.TOOL_ERROR)
        return text

    schema = dict(listed.input_schema or {"type": "object"})
    schema.pop("title", None)
    try:
        return Tool(
            call,
            name=name,
            description=(listed.description or listed.name)[:2000],
            # A hint loosens nothing unless the operator trusts the server.
            touches="read" if read_only and source.trusted else "external",
            timeout=120.0,
            reconcile=None,
            idempotent=bool(hints is not None and hints.idempotent_hint),
            needs_approval=destructive,
            schema=schema,
        )
    except ConfigError as exc:
        raise ConfigError(f"MCP server {source.name}: tool {listed.name}: {exc}") from None


def _read(ctx: ToolContext, name: str, result: Any) -> str:
    """What the model reads of a call's result; images and resources kept as artifacts."""
    parts: list[str] = []
    for number, item in enumerate(result.content or []):
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(str(item.text))
        elif kind in ("image", "audio"):
            data = base64.b64decode(item.data)
            parts.append(_kept(ctx, f"mcp-{name}-{number}.{item.mime_type.split('/')[-1]}", data))
        elif kind == "resource":
            resource = item.resource
            if getattr(resource, "text", None) is not None:
                parts.append(f"[resource {resource.uri}]\n{resource.text}")
            else:
                data = base64.b64decode(resource.blob)
                parts.append(_kept(ctx, f"mcp-{name}-{number}.bin", data))
        elif kind == "resource_link":
            parts.append(f"[resource {item.uri}]")
    structured = getattr(result, "structured_content", None)
    if structured is not None and not parts:
        parts.append(json.dumps(structured, indent=2, ensure_ascii=False))
    return "\n".join(parts)


def _kept(ctx: ToolContext, file: str, data: bytes) -> str:
    if ctx.artifacts is None:
        return f"({len(data):,} bytes not kept: this runner keeps no artifacts)"
    ctx.artifacts.keep(file, data)
    return f"({len(data):,} bytes kept as the artifact {file})"
