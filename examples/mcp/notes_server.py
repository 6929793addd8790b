"""A small MCP server written with the official `mcp` SDK, for trying MCP tools and for the
tests: notes kept in memory.

    python examples/mcp/notes_server.py                 # stdio
    python examples/mcp/notes_server.py --http 8720     # streamable HTTP on 127.0.0.1:8720/mcp
"""

from __future__ import annotations

import argparse
import os

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("notes")
NOTES: dict[str, str] = {}


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def list_notes() -> list[str]:
    """The titles of the notes kept."""
    return sorted(NOTES)


@server.tool()
def add_note(title: str, text: str) -> str:
    """Keep a note under a title (replacing one of that title)."""
    NOTES[title] = text
    return f"kept {title!r} ({len(text)} characters)"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def read_note(title: str) -> str:
    """A note's text. An unknown title is an error."""
    if title not in NOTES:
        raise ToolError(f"no note is titled {title!r}")
    return NOTES[title]


@server.tool(annotations=ToolAnnotations(destructiveHint=True))
def forget_notes() -> str:
    """Forget every note."""
    NOTES.clear()
    return "forgotten"


@server.tool()
def die() -> str:
    """End the server's process (for the tests of a server that dies)."""
    os._exit(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    args = parser.parse_args()
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run()


if __name__ == "__main__":
    main()
