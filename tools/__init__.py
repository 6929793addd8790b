"""Typed tools: `@tool` turns a typed function into a tool; a `Registry` holds them."""

from tools.registry import Registry
from tools.tool import (
    TOUCHES,
    CannotTell,
    InvalidArguments,
    Shown,
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
    "Shown",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "Touches",
    "tool",
]
