"""What a call of an MCP server's tool costs through the registry, against the `mcp` client
calling the same server directly.

Ours: `Tool.invoke` of `notes_read_note` (arguments checked against the tool's schema, sent
over the kept stdio connection, the result read for the model), the tool loaded from
examples/mcp/notes_server.py as `[[tools.mcp]]` loads it. The reference: an `mcp.Client`, over
stdio to another process of the same server, calling `read_note` with the same arguments and
reading its text. Each round times CALLS calls of each, the order alternating from round to
round; the figure is the median of the per-round ratios.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

from _goals import Goals, machine, per_call
from mcp import Client, StdioServerParameters

from tools import ToolContext
from tools.mcp import MCPSource, mcp_tools

ROUNDS = 7
CALLS = 100
SERVER = str(Path(__file__).resolve().parent.parent / "examples" / "mcp" / "notes_server.py")


async def main() -> None:
    print(machine())
    source = MCPSource(name="notes", command=[sys.executable, SERVER], trusted=True)
    tools = {t.name: t for t in mcp_tools(source)}
    add, read = tools["notes_add_note"], tools["notes_read_note"]
    ctx = ToolContext("bench", "c1", "bench/1")
    assert (await add.invoke({"title": "t", "text": "some text"}, ctx)).ok
    params = StdioServerParameters(command=sys.executable, args=[SERVER])
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
                f"round {number}: through the registry {took['ours'] * 1e3:.2f} ms, the mcp "
                f"client directly {took['direct'] * 1e3:.2f} ms"
            )
    goals = Goals()
    print(goals.add("registry_vs_mcp_client", statistics.median(ratios), "<= 1.2x"))
    goals.finish()


if __name__ == "__main__":
    asyncio.run(main())
