"""The runtime's one import for people who write tools, and its guard.

    from agent_runtime import tool, ToolContext, ToolError

The runtime's own packages have plain names (`agent`, `tools`, `sandbox`, `policies`, `browser`,
`base`, `frontends`), and a project often has folders named the same. Importing this package
pins those names to the runtime's own folders, ahead of everything on `sys.path` (the current
folder and `PYTHONPATH` included): a project with its own `tools/` runs the runtime unharmed.
The `agent` command imports it first. A project's own package of one of those names is then not
importable by that name in the same process; a tool module that tries is told so
(`tools.registry.shadowed`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

#: the runtime's top-level packages, which a project's folders must not stand in for
PACKAGES = frozenset({"agent", "base", "browser", "frontends", "policies", "sandbox", "tools"})
#: the folder that holds them (the checkout, or site-packages)
ROOT = str(Path(__file__).resolve().parent.parent)


class _RuntimeFirst(importlib.abc.MetaPathFinder):
    """Finds the runtime's top-level packages in `ROOT` only, before any other finder looks."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in PACKAGES:
            return None  # submodules follow their package's own path
        return importlib.machinery.PathFinder.find_spec(fullname, [ROOT])


def install() -> None:
    """Put the guard first on `sys.meta_path` (once). Raises `ImportError` if one of the
    runtime's names was already imported from elsewhere (a project's folder got there first)."""
    if not any(isinstance(f, _RuntimeFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _RuntimeFirst())
    for name in PACKAGES:
        module = sys.modules.get(name)
        where = getattr(module, "__file__", None) or ""
        if module is not None and not where.startswith(ROOT):
            raise ImportError(
                f"the module {name!r} was imported from {where or 'a namespace folder'} before "
                f"the runtime, whose own package of that name is in {ROOT}: import agent_runtime "
                "first, or rename the project's folder"
            )


install()

if TYPE_CHECKING:
    from tools.registry import Registry
    from tools.tool import CannotTell, Tool, ToolContext, ToolError, ToolResult, Touches, tool

#: where each name a tool author imports from here lives (loaded on first use: the `agent`
#: command starts without them)
_LAZY = {
    "Registry": "tools.registry",
    **dict.fromkeys(
        ("CannotTell", "Tool", "ToolContext", "ToolError", "ToolResult", "Touches", "tool"),
        "tools.tool",
    ),
}
#: set (to "1") when the session's prompt was drawn before the program was loaded
PROMPT_SHOWN = "AGENT_PROMPT_SHOWN"
PROMPT = "agent> "
INTRO = "agent — type a task, or /help. Ctrl-C pauses a task; Ctrl-D leaves."


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> int:
    """The `agent` command. A session in a terminal gets its prompt drawn at once, before the
    program is loaded (about half a second): what is typed meanwhile is kept, and the session's
    input line takes it over once it is ready."""
    argv = sys.argv[1:]
    alone = not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"))
    if alone and sys.stdin.isatty() and sys.stdout.isatty():
        sys.stdout.write(f"{INTRO}\n{PROMPT}")
        sys.stdout.flush()
        os.environ[PROMPT_SHOWN] = "1"
    from frontends.cli import main as cli_main  # noqa: PLC0415 (after the guard, on demand)

    return cli_main()


__all__ = [
    "CannotTell",
    "Registry",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "Touches",
    "main",
    "tool",
]
