"""The registry: a set of tools with unique names, each with the source it came from, and the
loading of tools from installed packages' entry points, modules and files.

From a module, only the tools it defines are taken (or those its `__all__` lists): a module that
imports another's tool does not register it a second time. A package whose entry point fails to
load is skipped and kept as a `LoadProblem`: one broken plugin never stops the runtime."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from base.errors import ConfigError
from base.toolspec import ToolSpec
from tools.sources import GROUP, LoadProblem, ToolSource, defined_at, entry_point_source, failure
from tools.tool import Tool


class Registry:
    """A set of tools with unique names, each with the source it was registered from."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._sources: dict[str, ToolSource] = {}
        #: sources of tools that could not be loaded and were skipped (see `load_entry_points`)
        self.problems: list[LoadProblem] = []
        for t in tools:
            self.add(t)

    def add(self, t: Tool, source: ToolSource | None = None) -> Tool:
        """Add a tool. A tool declared with `replaces=NAME` takes the place of the tool of that
        name. Raises `ConfigError` if the name is taken (naming both sources)."""
        self.include_from([t], source)
        return t

    def include(self, source: Registry | Tool | ModuleType | Iterable[Tool]) -> None:
        """Add every tool of another registry, a module (the tools it defines, or those its
        `__all__` lists), or a list."""
        if isinstance(source, ModuleType):
            where = ToolSource("module", source.__name__)
            self.include_from(tools_of(source, where), where)
        elif isinstance(source, Tool | Registry):
            self.include_from([source], None)
        else:
            self.include_from(list(source), None)

    def include_from(self, found: Iterable[Tool | Registry], source: ToolSource | None) -> None:
        """Add tools and the tools of registries, all or none, as coming from `source` (without
        one, a registry's tools keep the sources it gave them, and a tool's is where its
        function is defined)."""
        adding: dict[str, tuple[Tool, ToolSource]] = {}
        for item in found:
            pairs = (
                [(t, source or item.source_of(t.name)) for t in item]
                if isinstance(item, Registry)
                else [(item, source or defined_at(item))]
            )
            for t, where in pairs:
                if adding.get(t.name, (None,))[0] is t:
                    continue  # a module's tool and its registry holding it: once
                self._check_free(t, where, adding)
                adding[t.name] = (t, where)
        for t, where in adding.values():
            if t.replaces is not None:
                self._tools.pop(t.replaces, None)
                self._sources.pop(t.replaces, None)
            self._tools[t.name] = t
            self._sources[t.name] = where

    def _check_free(
        self, t: Tool, where: ToolSource, adding: dict[str, tuple[Tool, ToolSource]]
    ) -> None:
        taken = adding.get(t.name) or (
            (self._tools[t.name], self._sources[t.name]) if t.name in self._tools else None
        )
        if taken is None or taken[0] is t or t.replaces == t.name:
            return
        raise ConfigError(
            f"a tool named {t.name!r} is already registered, from {taken[1]}; this one is from "
            f"{where}. Rename one, or declare the new one with replaces={t.name!r}"
        )

    def disable(self, names: Iterable[str]) -> None:
        """Take tools out by name (`[tools] disable` in agent.toml). Raises `ConfigError` for a
        name that is not a tool."""
        for name in names:
            if name not in self._tools:
                raise ConfigError(
                    f"[tools] disable names {name!r}, which is not a tool; the tools are: "
                    + ", ".join(self._tools)
                )
            del self._tools[name]
            del self._sources[name]

    def source_of(self, name: str) -> ToolSource:
        return self._sources[name]

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(t.spec for t in self._tools.values())

    def load_module(self, spec: str) -> None:
        """Include the tools of `package.module`, `package.module:attribute`, or a `.py` file.
        A dotted module is looked for on the path, then in the current folder (as `python -m`
        would, but after the runtime's own packages). Raises `ConfigError` if it cannot be
        imported or has no tools."""
        if spec.endswith(".py"):
            path = Path(spec)
            source = ToolSource("file", str(path))
            module = _import_file(path, source)
            self.include_from(tools_of(module, source), source)
            return
        module_name, _, attr = spec.partition(":")
        source = ToolSource("module", spec)
        module = _import_module(module_name)
        target: Any = getattr(module, attr, None) if attr else module
        if isinstance(target, ModuleType):
            self.include_from(tools_of(target, source), source)
        elif isinstance(target, Tool | Registry):
            self.include_from([target], source)
        else:
            raise ConfigError(f"{spec} is not a tool, a registry or a module")

    def load_entry_points(self, group: str = GROUP) -> None:
        """Include tools that installed packages declare in the `agent.tools` entry-point group.
        One that fails to load is skipped and kept in `problems`."""
        for ep in entry_points(group=group):
            source = entry_point_source(ep)
            try:
                self.include_from(_entry_point_tools(ep, source), source)
            except Exception as exc:  # noqa: BLE001 (whatever a plugin raises, the others load)
                trace = "".join(traceback.format_exception(exc))
                self.problems.append(LoadProblem(source, failure(exc), trace))


def tools_of(module: ModuleType, source: ToolSource) -> list[Tool | Registry]:
    """The tools a module defines, or those its `__all__` lists (tools or registries). Raises
    `ConfigError` if there are none."""
    listed: list[str] | None = getattr(module, "__all__", None)
    found: list[Tool | Registry] = []
    if listed is not None:
        found = [v for n in listed if isinstance(v := getattr(module, n, None), Tool | Registry)]
    else:
        found = [
            v
            for v in vars(module).values()
            if isinstance(v, Tool) and v.fn.__module__ == module.__name__
        ]
    if not found:
        imported = any(isinstance(v, Tool | Registry) for v in vars(module).values())
        raise ConfigError(
            f"{source} defines no tools"
            + (
                " (the tools it imports are registered from where they are defined; list them "
                "in its __all__ to register them from here)"
                if imported
                else ""
            )
        )
    return found


def _import_module(name: str) -> ModuleType:
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        # As `python -m` would find it, but last: a folder of the project named like one of the
        # runtime's packages (tools/, sandbox/) never takes that package's place.
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    except Exception as exc:  # a module that raises on import cannot be used either
        raise ConfigError(f"cannot import tool module {name!r}: {failure(exc)}") from exc


def _import_file(path: Path, source: ToolSource) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"no tool file {path}")
    # Keyed on the full path: two files with the same name in different folders are two modules.
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"agent_tools_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load tool file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"tool file {path} failed to load: {failure(exc)}") from exc
    return module


def _entry_point_tools(ep: Any, source: ToolSource) -> list[Tool | Registry]:
    target = ep.load()
    if isinstance(target, ModuleType):
        return tools_of(target, source)
    if isinstance(target, Tool | Registry):
        return [target]
    raise ConfigError(f"{ep.value} is not a tool, a registry or a module")
