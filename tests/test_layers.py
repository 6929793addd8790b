"""The import graph keeps the layers apart: frontends above the core, the loop above the tools,
the sandbox and the browser, `base/` under everything, and no circle anywhere.

Every import counts, those made only for the type checker too: a circle there is one a change
can close for real by moving a line.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("base", "agent", "frontends", "tools", "sandbox", "browser", "policies", "documents")
#: the layers under the loop: they never import it, nor the frontends
UNDER_THE_LOOP = ("tools", "sandbox", "browser", "policies", "documents")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules `name` imports (`from package import name` counts the module of
    that name when there is one, and the package only for names that are not modules)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(base)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    names = set(known)
    return {name: imports_of(name, path, names) for name, path in known.items()}


def top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def test_no_import_circle() -> None:
    edges = graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_each_layer_imports_only_what_is_under_it() -> None:
    wrong = []
    for name, imported in graph().items():
        for other in imported:
            layer, target = top(name), top(other)
            if layer == "base" and target != "base":
                wrong.append(f"{name} -> {other} (base/ imports nothing of the project)")
            if layer in UNDER_THE_LOOP and target in ("agent", "frontends"):
                wrong.append(f"{name} -> {other} (under the loop, importing it or a frontend)")
            if layer != "frontends" and target == "frontends":
                wrong.append(f"{name} -> {other} (the core importing a frontend)")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_walk_sees_imports_and_circles() -> None:
    # The positive control: the walk finds the imports a module is known to make, so an empty
    # finding above is not the walk seeing nothing.
    edges = graph()
    assert "base.errors" in edges["sandbox.manager"]
    assert "agent.runner" in edges["frontends.tasks"]
    assert len(edges) > 50
