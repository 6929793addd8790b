"""What every benchmark ends with: one line per goal, and a non-zero exit naming a missed one;
and what several share: what a figure was measured on (`machine`), and the mean time of an
async call made many times over (`per_call`).

A goal is written as it is printed, ``<= 1.5x`` or ``>= 0.9x``; `Goals.add` checks the figure
against it. `machine()` says what the figures were measured on.
"""

from __future__ import annotations

import operator
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

_COMPARE = {"<=": operator.le, ">=": operator.ge}


def machine() -> str:
    """The CPU's model, how many cores this process may use, and the architecture."""
    model = platform.processor() or "unknown CPU"
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = row.partition(":")
            if sep and key.strip() == "model name":
                model = value.strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"machine: {model}; {cores} cores; {platform.system()} {platform.machine()}"


class Goals:
    """The goals a benchmark met and missed."""

    def __init__(self) -> None:
        self.missed: list[str] = []

    def add(self, name: str, value: float, goal: str) -> str:
        """The goal's line, e.g. ``loop_overhead: 1.12x (goal <= 1.5x)``; remembered as missed
        when `value` does not meet `goal`. Raises `ValueError` for a goal it cannot read."""
        op, _, target = goal.partition(" ")
        if op not in _COMPARE or not target.endswith("x"):
            raise ValueError(f"a goal reads '<= N.Nx' or '>= N.Nx', not {goal!r}")
        shown = f"{value:.2f}"
        # Judged on the figure as printed, so a line never reads as met and counts as missed.
        if not _COMPARE[op](float(shown), float(target[:-1])):
            self.missed.append(name)
        return f"{name}: {shown}x (goal {goal})"

    def finish(self) -> None:
        """Exit 1, naming them, if any goal was missed."""
        if self.missed:
            print(f"missed goals: {', '.join(self.missed)}", file=sys.stderr)
            sys.exit(1)


async def per_call(call: Callable[[], Awaitable[object]], calls: int) -> float:
    """Seconds per call of `call`, awaited `calls` times one after another."""
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls
