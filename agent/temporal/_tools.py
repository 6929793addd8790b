"""The tools of this worker, which its workflows judge calls with.

A worker's tools are code, like its workflows: a worker sets them once, before it starts, and
every workflow it runs reads them here (the module is passed through Temporal's workflow sandbox,
so the registry is built once, outside it). Workers of one task queue run the same tools.
"""

from __future__ import annotations

from tools.registry import Registry

_registry: Registry | None = None


def set_registry(registry: Registry) -> None:
    global _registry  # noqa: PLW0603 - set once per worker process, before it starts
    _registry = registry


def registry() -> Registry:
    if _registry is None:
        raise RuntimeError("this worker's tools were not set (agent.temporal.worker sets them)")
    return _registry
