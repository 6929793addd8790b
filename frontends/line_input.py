"""Reading a person's answer from the terminal, so that Ctrl-C always stops the wait.

`input()` blocks in a read of the terminal that a Ctrl-C landing just before it cannot
interrupt: the signal is taken, Python notes it, and the read goes on waiting for a line that
never comes. Here the wait is a `select` that wakes every quarter second, so a noted Ctrl-C is
raised (`KeyboardInterrupt`) at once. Input is handed in (`main(stdin=...)`), never patched.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Protocol

#: how often a wait for a line looks for a Ctrl-C noted meanwhile
POLL_SECONDS = 0.25


class LineSource(Protocol):
    """Where answers come from: the terminal's stdin, or any text stream."""

    def readline(self) -> str: ...

    def isatty(self) -> bool: ...

    def fileno(self) -> int: ...


def wait_for_line(source: LineSource, stop: Callable[[], bool]) -> str | None:
    """The next line from `source`, or None if `stop()` says so while none is typed yet (asked
    between waits). Raises as `read_line` does."""
    if source.isatty():
        while not select.select([source.fileno()], [], [], POLL_SECONDS)[0]:
            if stop():
                return None
    return read_line(source)


def read_line(source: LineSource) -> str:
    """The next line from `source`, without its newline. Raises `EOFError` at the end of input
    and `KeyboardInterrupt` on Ctrl-C."""
    if source.isatty():
        # A terminal in its usual mode says it is readable only once a whole line is typed.
        while not select.select([source.fileno()], [], [], POLL_SECONDS)[0]:
            pass  # between waits Python raises a Ctrl-C it noted
    line = source.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")
