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

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

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

from tools.registry import Registry  # noqa: E402 (only once the guard is in place)
from tools.tool import (  # noqa: E402
    CannotTell,
    Tool,
    ToolContext,
    ToolError,
    ToolResult,
    Touches,
    tool,
)


def main() -> int:
    """The `agent` command."""
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
