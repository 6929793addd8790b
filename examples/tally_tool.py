"""A custom tool with a side effect, registered with `@tool`.

`tally` adds to a named counter in a ledger file: a stand-in for any API that changes something
in the world (a CRM, a ticket system, a payment). Because it has an effect, it is declared
`touches="external"` (the default policy asks a reviewer first), and it gives the runtime a way
to reconcile: each ledger line carries the call's idempotency key, so after a crash the runtime
asks `already_tallied` whether the call took effect instead of sending it again.

Use it with:  agent run --tools examples/tally_tool.py ...
The ledger is $TALLY_LEDGER, else tally.jsonl in the agent's data folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agent.home import default_home
from tools import ToolContext, ToolError, tool


def ledger_path() -> Path:
    return Path(os.environ.get("TALLY_LEDGER") or default_home() / "tally.jsonl")


def read_ledger(path: Path | None = None) -> list[dict[str, Any]]:
    """Every entry ever written, oldest first."""
    path = path or ledger_path()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def already_tallied(ctx: ToolContext) -> str | None:
    """The result of the call with this idempotency key, if it took effect; else None."""
    for entry in read_ledger():
        if entry["key"] == ctx.idempotency_key:
            return f"{entry['counter']} is now {entry['total']}"
    return None


@tool(touches="external", reconcile=already_tallied, timeout=10)
def tally(counter: str, ctx: ToolContext, amount: int = 1) -> str:
    """Add to a named counter and return its new total.

    Args:
        counter: the counter's name, e.g. "front-desk".
        amount: how much to add (1 to 1000).
    """
    if not 1 <= amount <= 1000:
        raise ToolError(f"amount must be between 1 and 1000, got {amount}")
    path = ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    total = amount + sum(e["amount"] for e in read_ledger(path) if e["counter"] == counter)
    line = (
        json.dumps(
            {"key": ctx.idempotency_key, "counter": counter, "amount": amount, "total": total}
        )
        + "\n"
    )
    # One write of one line with O_APPEND: the effect happens entirely or not at all.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return f"{counter} is now {total}"
