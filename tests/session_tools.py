"""A tool for the session's tests: one that takes a while (so a Ctrl-C lands while it runs) and
only reads (so the default policy runs it unasked)."""

from __future__ import annotations

import time

from tools import tool


@tool(touches="read")
def nap(seconds: float) -> str:
    """Wait a while, then say so.

    Args:
        seconds: how long, at most 10.
    """
    time.sleep(min(seconds, 10.0))
    return f"napped {seconds} s"
