"""What a call of an MCP server's tool costs through the registry, against the `mcp` client
calling the same server directly: the server in a sandbox container (the default), and on this
host (a trusted server).

Ours: `Tool.invoke` of `notes_read_note` (arguments checked against the tool's schema, sent
over the kept connection from the process's background loop, the result read for the model), the
tool loaded from examples/mcp/notes_server.py as `[[tools.mcp]]` loads it. The reference: an
`mcp.Client` in the benchmark's own loop, over stdio to another server of the same kind (a
container started with the same `docker run` arguments, or a process on this host), calling
`read_note` with the same arguments and reading its text. Each round times CALLS calls of each,
the order alternating from round to round; the figure is the median of the per-round ratios.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

from _goals import Goals, machine, per_call
from mcp import Client, StdioServerParameters

from sandbox._docker import connect
from sandbox.limits import DEFAULT_IMAGE
from sandbox.mcp_box import run_command, server_image
from tools import ToolContext
from tools.mcp import MCPSource, mcp_tools

ROUNDS = 7
CALLS = 100
SERVER = Path(__file__).resolve().parent.parent / "examples" / "mcp" / "notes_server.py"


async def compare(name: str, source: MCPSource, params: StdioServerParameters) -> float:
    """The median ratio of a call through the registry to one by the mcp client."""
    tools = {t.name: t for t in mcp_tools(source)}
    add, read = tools["notes_add_note"], tools["notes_read_note"]
    ctx = ToolContext("bench", "c1", "bench/1")
    assert (await add.invoke({"title": "t", "text": "some text"}, ctx)).ok
    async with Client(params) as client:
        await client.call_tool("add_note", {"title": "t", "text": "some text"})

        async def ours() -> None:
            result = await read.invoke({"title": "t"}, ctx)
            assert result.content == "some text", result.content

        async def direct() -> None:
            result = await client.call_tool("read_note", {"title": "t"})
            assert getattr(result.content[0], "text", None) == "some text"

        for warm in (ours, direct):
            await warm()
        ratios: list[float] = []
        for number in range(1, ROUNDS + 1):
            order = [ours, direct] if number % 2 else [direct, ours]
            took = {call.__name__: await per_call(call, CALLS) for call in order}
            ratios.append(took["ours"] / took["direct"])
            print(
                f"{name} round {number}: through the registry {took['ours'] * 1e3:.2f} ms, "
                f"the mcp client directly {took['direct'] * 1e3:.2f} ms"
            )
    return statistics.median(ratios)


async def main() -> None:
    print(machine())
    command = ["python3", "notes_server.py"]
    boxed = MCPSource(name="notes", command=command, folder=str(SERVER.parent))
    image = server_image(connect(), DEFAULT_IMAGE)
    in_box = StdioServerParameters(
        command="docker", args=run_command("bench", image, command, folder=SERVER.parent)
    )
    sandboxed = await compare("sandboxed", boxed, in_box)
    trusted = MCPSource(name="notes", command=[sys.executable, str(SERVER)], trusted=True)
    on_host = await compare(
        "on host", trusted, StdioServerParameters(command=sys.executable, args=[str(SERVER)])
    )
    goals = Goals()
    print(goals.add("registry_vs_mcp_client_sandboxed", sandboxed, "<= 1.2x"))
    print(goals.add("registry_vs_mcp_client_on_host", on_host, "<= 1.2x"))
    goals.finish()


if __name__ == "__main__":
    asyncio.run(main())
