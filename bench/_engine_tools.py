"""The tools bench/engine.py's tasks call: a step that does nothing, and one that asks a reviewer
and notes when it starts (how long an approval takes to become a running call)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tools import tool


@tool(touches="read")
def tick(n: int) -> str:
    """Take step `n` (nothing else).

    Args:
        n: the step's number.
    """
    return f"tick {n}"


@tool(touches="external")
def stamp(n: int) -> str:
    """Note when call `n` started (a reviewer approves each).

    Args:
        n: the call's number.
    """
    with Path(os.environ["ENGINE_BENCH_STAMPS"]).open("a") as f:
        f.write(f"{n} {time.time()}\n")
    return f"stamped {n}"
