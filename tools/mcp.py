"""Tools from MCP servers (Model Context Protocol), through the official `mcp` SDK: each tool a
server lists becomes a tool of the registry, with the schema the server gives, behind the same
gate.

    [[tools.mcp]]                        # in agent.toml; as many as you like
    name = "notes"                       # put before each tool's name: notes_add_note
    command = ["python3", "server.py"]   # a server spoken to over stdio, run in a sandbox; or:
    url = "http://127.0.0.1:8720/mcp"    # one over streamable HTTP, through an egress proxy
    folder = "mcp/notes"                 # where the command runs (relative to agent.toml);
                                         # mounted read-only in its sandbox, at /srv/mcp
    packages = ["httpx"]                 # what its sandbox's image adds to the mcp SDK
    trusted = false                      # true: run it on this host, as your own program; its
                                         # read-only hints may then loosen the gate

A stdio server is someone else's program: unless the operator marks it trusted, it runs in a
container of its own (`sandbox/mcp_box.py`): hardened, with no network, its folder read-only, in
the runtime image with the `mcp` SDK and its `packages` (that image is built the first time).
An HTTP server is reached through an egress proxy of its own that lets requests reach the
server's host and port and nothing else (a redirect elsewhere is refused, and said).

A tool's annotations may only tighten the gate: a destructive hint asks a reviewer; a read-only
hint makes it a read only for a server the operator marked trusted (otherwise every call is an
external effect). Secrets (`{{secret:NAME}}` in an argument) are filled in for an HTTP server,
when they are scoped to its host; a stdio server has no host to scope one to, and is sent none.
What a call returns is read for the model: text, structured content (as JSON), images and
resources kept as artifacts; an error result is an error the model reads. A server that stops
is started again once; if it stops again, its tools fail saying so, and the task goes on.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, model_validator

from base.errors import ConfigError, ErrorCode, SandboxError
from sandbox.limits import DEFAULT_IMAGE
from tools._schema import name_of
from tools.secrets import SecretRefused, Secrets, uses
from tools.tool import Tool, ToolContext, ToolError

#: how much of a failed server's stderr is said
LAST_WORDS = 400
Progress = Callable[[str], None]


class MCPSource(BaseModel):
    """One `[[tools.mcp]]` entry of agent.toml."""

    model_config = ConfigDict(extra="forbid")

    name: str
    command: list[str] | None = None
    url: str | None = None
    trusted: bool = False
    env: dict[str, str] = {}
    folder: str | None = None
    packages: list[str] = []

    @model_validator(mode="after")
    def _one_transport(self) -> MCPSource:
        if (self.command is None) == (self.url is None):
            raise ValueError("give a server's command (stdio) or its url (streamable HTTP)")
        if not self.command and self.url is None:
            raise ValueError("a server's command cannot be empty")
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {self.url!r}")
            if self.folder is not None or self.packages or self.env:
                raise ValueError("folder, packages and env are for a server run over stdio")
        if self.folder is not None and "," in self.folder:
            raise ValueError(
                f"a folder with a comma in its path cannot be mounted: {self.folder!r}"
            )
        if self.packages and self.trusted:
            raise ValueError(
                "packages go into the image of a sandboxed server: a trusted one runs with "
                "this host's Python (install them there)"
            )
        return self

    @property
    def sandboxed(self) -> bool:
        return self.command is not None and not self.trusted

    @property
    def address(self) -> tuple[str, int]:
        """An HTTP server's host and port."""
        parts = urlsplit(self.url or "")
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


@dataclass
class _Kept:
    """A connection held open by a task of its own in one event loop: entered and left in that
    task (the SDK's transports ask for it), left when `closing` is set or when the loop ends
    (which cancels the task), so that no connection outlives its loop half-closed."""

    client: Any
    closing: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class _Server:
    """A connection to one server in each event loop that calls it, made on first use, made
    again once after the server stops. `image` is the image a sandboxed server runs in."""

    source: MCPSource
    image: str | None = None
    _open: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Kept] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    restarted: bool = False
    gone: str | None = None
    #: the proxy's last refusal, said with the failure it caused
    refused: str | None = None
    #: the end of what a stdio server last printed on its stderr, said with its failure
    last_words: str = ""

    async def _client(self, stack: contextlib.AsyncExitStack) -> Any:
        from mcp import Client, StdioServerParameters  # noqa: PLC0415 - only where MCP is used

        source = self.source
        if source.url is not None:
            return Client(await self._through_proxy(stack))
        from mcp.client.stdio import stdio_client  # noqa: PLC0415

        command = source.command or []
        folder = Path(source.folder) if source.folder is not None else None
        if self.image is not None:
            from sandbox.mcp_box import run_command  # noqa: PLC0415

            argv = run_command(source.name, self.image, command, folder=folder, env=source.env)
            params = StdioServerParameters(command="docker", args=argv)
        else:
            params = StdioServerParameters(
                command=command[0], args=command[1:], env=source.env or None, cwd=folder
            )
        # What the server prints on its stderr is kept, not shown: the last of it is said
        # when the server fails.
        errors = stack.enter_context(tempfile.TemporaryFile("w+", errors="replace"))  # noqa: SIM115 - closed by the stack
        stack.callback(self._keep_last_words, errors)
        return Client(stdio_client(params, errlog=errors))

    def _keep_last_words(self, errors: IO[str]) -> None:
        errors.seek(0)
        self.last_words = " ".join(errors.read()[-LAST_WORDS:].split())

    async def _through_proxy(self, stack: contextlib.AsyncExitStack) -> Any:
        """The transport to an HTTP server: through a proxy (in this loop) that lets requests
        reach the server's host and port, and nothing else."""
        import httpx2  # noqa: PLC0415 - the mcp SDK's HTTP client
        from mcp.client.streamable_http import streamable_http_client  # noqa: PLC0415

        from sandbox.proxy import EgressAttempt, EgressProxy  # noqa: PLC0415

        def record(attempt: EgressAttempt) -> None:
            if not attempt.allowed:
                self.refused = f"{attempt.host}:{attempt.port}: {attempt.reason}"

        host, port = self.source.address
        # The one entry is the operator's own: a server on this host or a private network is
        # theirs to name (the proxy lets only explicit entries reach private addresses).
        proxy = await stack.enter_async_context(EgressProxy("127.0.0.1", 0, allow_private=True))
        token = proxy.register(f"mcp:{self.source.name}", [f"{host}:{port}"], record)
        client = await stack.enter_async_context(
            httpx2.AsyncClient(
                proxy=proxy.url(token, "127.0.0.1"),
                trust_env=False,
                timeout=httpx2.Timeout(30.0, read=300.0),
            )
        )
        return streamable_http_client(self.source.url or "", http_client=client)

    async def session(self) -> Any:
        """The connection in this loop, opened if there is none."""
        loop = asyncio.get_running_loop()
        if (kept := self._open.get(loop)) is not None and not kept.task.done():
            return kept.client
        self.last_words = ""
        opened: asyncio.Future[Any] = loop.create_future()
        closing = asyncio.Event()
        task = loop.create_task(self._keep(opened, closing), name=f"mcp {self.source.name}")
        client = await opened
        self._open[loop] = _Kept(client, closing, task)
        return client

    async def _keep(self, opened: asyncio.Future[Any], closing: asyncio.Event) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = await stack.enter_async_context(await self._client(stack))
                opened.set_result(client)
                await closing.wait()
        except BaseException as exc:
            if not opened.done():
                opened.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    async def close(self) -> None:
        """End the connection in this loop, if there is one."""
        if (kept := self._open.pop(asyncio.get_running_loop(), None)) is not None:
            kept.closing.set()
            with contextlib.suppress(Exception):
                await kept.task

    async def listed(self) -> Any:
        """The server's tools; the connection is closed after."""
        try:
            return await (await self.session()).list_tools()
        finally:
            await self.close()

    def said(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        if self.refused is not None:
            text += f"; the egress proxy refused {self.refused}"
        if self.last_words:
            text += f"; its stderr ended: {self.last_words}"
        return text

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
            said = self.said(exc)
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


def mcp_tools(
    source: MCPSource,
    *,
    runtime_image: str = DEFAULT_IMAGE,
    progress: Progress | None = None,
) -> list[Tool]:
    """The tools `source`'s server lists, as tools of the registry; a server that is not
    trusted runs in a container made from `runtime_image` (see `sandbox/mcp_box.py`). Raises
    `ConfigError` when the server cannot be started or reached, or lists tools that cannot be
    made tools."""
    if source.folder is not None and not Path(source.folder).is_dir():
        raise ConfigError(f"MCP server {source.name}: its folder {source.folder} is not a folder")
    server = _Server(source, image=_image(source, runtime_image, progress))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop of its own, wherever called
        try:
            found = pool.submit(asyncio.run, server.listed()).result(timeout=120)
        except Exception as exc:  # noqa: BLE001 - whatever stops the server answering
            raise ConfigError(
                f"MCP server {source.name}: its tools could not be listed: {server.said(exc)}"
            ) from None
    server.refused = None
    return [_tool(server, listed_tool) for listed_tool in found.tools]


def _image(source: MCPSource, runtime_image: str, progress: Progress | None) -> str | None:
    """The image a sandboxed server runs in (built the first time); None for one that is not."""
    if not source.sandboxed:
        return None
    if shutil.which("docker") is None:
        raise ConfigError(
            f"MCP server {source.name}: it runs in a sandbox, which needs the docker command "
            "(install Docker's client), or mark it trusted = true to run it on this host"
        )
    from sandbox._docker import connect  # noqa: PLC0415 - only where a server is sandboxed
    from sandbox.mcp_box import server_image  # noqa: PLC0415

    try:
        return server_image(connect(), runtime_image, source.packages, progress)
    except SandboxError as exc:
        raise ConfigError(f"MCP server {source.name}: its sandbox cannot be had: {exc}") from None


def _tool(server: _Server, listed: Any) -> Tool:
    source = server.source
    name = name_of(f"{source.name}_{listed.name}")[:64]
    hints = listed.annotations
    read_only = bool(hints is not None and hints.read_only_hint)
    destructive = bool(hints is not None and hints.destructive_hint)

    async def call(ctx: ToolContext, arguments: dict[str, Any]) -> str:
        result = await server.call(listed.name, _filled(ctx, source, arguments))
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
            fills_secrets=source.url is not None,
            schema=schema,
        )
    except ConfigError as exc:
        raise ConfigError(f"MCP server {source.name}: tool {listed.name}: {exc}") from None


def _filled(ctx: ToolContext, source: MCPSource, arguments: dict[str, Any]) -> dict[str, Any]:
    """`arguments` with the secrets they name filled in, for an HTTP server's host. Raises
    `ToolError` for a secret that is not scoped to it, and for any at all to a stdio server."""
    if not uses(arguments):
        return arguments
    if source.url is None:
        raise ToolError(
            f"the MCP server {source.name} is run over stdio, and has no host a secret could be "
            "scoped to: secrets are filled in only for a server reached over HTTP",
            code=ErrorCode.SECRET_OUT_OF_SCOPE,
        )
    host, port = source.address
    try:
        filled: dict[str, Any] = (ctx.secrets or Secrets()).fill(arguments, host, port)
    except SecretRefused as exc:
        raise ToolError(str(exc), code=exc.code) from None
    return filled


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
