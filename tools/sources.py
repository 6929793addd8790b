"""Where a tool came from (`ToolSource`): the entry point of an installed package (the runtime's
own are its built-ins), a module named by its import path, a file, or code. A listing says it,
and two tools with one name are both named by it. A source that could not be loaded is a
`LoadProblem`, said with the file and line that failed."""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tools.tool import Tool

#: the distribution whose entry points are the built-in tools
RUNTIME_DIST = "agent-runtime"
#: the folder holding the runtime's top-level packages (the checkout, or site-packages)
RUNTIME_ROOT = Path(__file__).resolve().parent.parent
#: the entry-point group installed packages declare their tools in
GROUP = "agent.tools"

SourceKind = Literal["built-in", "entry point", "module", "file", "code", "openapi", "mcp"]


@dataclass(frozen=True)
class ToolSource:
    """Where a tool was registered from: its kind and what names it (a package's entry point, a
    module's import path, a file's path, or, for a tool added in code, the file and line of its
    function)."""

    kind: SourceKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class LoadProblem:
    """A source of tools that could not be loaded and was skipped."""

    source: ToolSource
    error: str
    #: the traceback of the error, for `-v`
    trace: str

    def __str__(self) -> str:
        return f"skipped the tools of {self.source}: {self.error}"


def defined_at(tool: Tool) -> ToolSource:
    """The source of a tool added in code: the file and line where its function is defined."""
    code = getattr(tool.fn, "__code__", None)
    if code is None:
        return ToolSource("code", tool.fn.__module__)
    return ToolSource("code", f"{code.co_filename}:{code.co_firstlineno}")


def failure(exc: BaseException) -> str:
    """An exception raised while importing a tool module, said with the file and line it came
    from (the deepest frame outside Python's import machinery), and, where a project's package
    was looked for under a name the runtime's own package has, said so."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{type(exc).__name__}: {exc.msg} (at {exc.filename}:{exc.lineno})"
    text = f"{type(exc).__name__}: {exc}"
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<frozen") and "importlib" not in f.filename
    ]
    if frames and frames[-1].filename != __file__:
        text += f" (at {frames[-1].filename}:{frames[-1].lineno})"
    if isinstance(exc, ImportError) and (top := _runtime_package(exc.name)):
        text += (
            f"; {top!r} is the runtime's own package ({RUNTIME_ROOT / top}), so a project's "
            f"folder named {top}/ cannot be imported by that name beside it: rename the folder, "
            "or import from it relatively"
        )
    return text


def _runtime_package(name: str | None) -> str | None:
    """The runtime's top-level package `name` is in, if it is one."""
    top = (name or "").split(".")[0]
    where = getattr(sys.modules.get(top), "__file__", None) or ""
    return top if top and Path(where).resolve().is_relative_to(RUNTIME_ROOT) else None


def entry_point_source(ep: EntryPoint) -> ToolSource:
    dist = ep.dist
    if dist is not None and dist.name == RUNTIME_DIST:
        return ToolSource("built-in", ep.value)
    package = f"{dist.name} {dist.version}" if dist is not None else "an unknown package"
    return ToolSource("entry point", f"{ep.name} = {ep.value} (package {package})")
