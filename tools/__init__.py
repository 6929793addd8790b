"""Typed tools: `@tool` turns a typed function into a tool; a `Registry` holds them."""

from tools.registry import Registry
from tools.tool import (
    TOUCHES,
    CannotTell,
    InvalidArguments,
    Tool,
    ToolContext,
    ToolError,
    ToolResult,
    Touches,
    tool,
)

__all__ = [
    "TOUCHES",
    "CannotTell",
    "InvalidArguments",
    "Registry",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "Touches",
    "tool",
]
