"""Tools for the crash test: a counter with a real side effect, slowed down so that a kill often
lands between its intent, its effect, and its result."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tools import ToolContext, tool


def _ledger() -> Path:
    return Path(os.environ["CRASH_LEDGER"])


def _entries() -> list[dict[str, str]]:
    path = _ledger()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def counted(ctx: ToolContext) -> str | None:
    for entry in _entries():
        if entry["key"] == ctx.idempotency_key:
            return f"counted {entry['name']}"
    return None


@contextmanager
def _busy(tool: str, key: str) -> Iterator[None]:
    """With $CRASH_BUSY set, a file in that folder says this process is in a call, while it is
    (how the Temporal test finds a worker to kill mid-call)."""
    folder = os.environ.get("CRASH_BUSY")
    if not folder:
        yield
        return
    marker = Path(folder) / f"{os.getpid()}-{tool}-{key.replace('/', '_')}"
    marker.touch()
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


@tool(touches="external", reconcile=counted)
def count(name: str, ctx: ToolContext) -> str:
    """Count one occurrence of `name` in the ledger.

    Args:
        name: what to count.
    """
    pause = float(os.environ.get("CRASH_PAUSE", "0.06"))
    with _busy("count", ctx.idempotency_key):
        time.sleep(random.uniform(0, pause))
        fd = os.open(_ledger(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps({"key": ctx.idempotency_key, "name": name}) + "\n").encode())
        finally:
            os.close(fd)
        time.sleep(random.uniform(0, pause))
    return f"counted {name}"


@tool
def look(name: str) -> str:
    """Look at something (no side effect).

    Args:
        name: what to look at.
    """
    pause = float(os.environ.get("CRASH_PAUSE", "0.06")) / 2
    with _busy("look", name.replace(" ", "_")):
        time.sleep(random.uniform(0, pause))
    return f"{name} looks fine"
