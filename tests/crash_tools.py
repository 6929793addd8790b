"""Tools for the crash test: a counter with a real side effect, slowed down so that a kill often
lands between its intent, its effect, and its result."""

from __future__ import annotations

import json
import os
import random
import time
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


@tool(touches="external", reconcile=counted)
def count(name: str, ctx: ToolContext) -> str:
    """Count one occurrence of `name` in the ledger.

    Args:
        name: what to count.
    """
    time.sleep(random.uniform(0, 0.06))
    fd = os.open(_ledger(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps({"key": ctx.idempotency_key, "name": name}) + "\n").encode())
    finally:
        os.close(fd)
    time.sleep(random.uniform(0, 0.06))
    return f"counted {name}"


@tool
def look(name: str) -> str:
    """Look at something (no side effect).

    Args:
        name: what to look at.
    """
    time.sleep(random.uniform(0, 0.01))
    return f"{name} looks fine"
