"""Tools for the Temporal engine's tests: one that returns a long output, one that is a step of
a long task."""

from __future__ import annotations

import time

from tools import tool


@tool
def produce(size: int) -> str:
    """Produce an output of `size` characters (no side effect).

    Args:
        size: how many characters.
    """
    line = "0123456789abcdef" * 4 + "\n"
    return (line * (size // len(line) + 1))[:size]


@tool
def tick(n: int) -> str:
    """Take step `n` of a long task (no side effect).

    Args:
        n: the step's number.
    """
    return f"tick {n} taken"


@tool
def nap(seconds: float) -> str:
    """Wait `seconds` (no side effect): a step that takes a while.

    Args:
        seconds: how long.
    """
    time.sleep(seconds)
    return f"napped {seconds} s"
