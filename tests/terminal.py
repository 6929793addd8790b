"""A person's terminal for tests: `agent` run in a pseudo-terminal, and reading what it shows."""

from __future__ import annotations

import os
import pty
import select
import sys
import time

from .conftest import REPO


def agent_in_terminal(*argv: str, env: dict[str, str] | None = None) -> tuple[int, int]:
    """Start `agent ARGV...` in a pseudo-terminal; its (pid, terminal fd)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a person's terminal
        os.environ.update({"PYTHONPATH": str(REPO), **(env or {})})
        os.execv(sys.executable, [sys.executable, "-m", "frontends.cli", *argv])
    return pid, fd


def read_until(fd: int, marker: bytes, timeout: float = 30.0) -> bytes:
    """What the terminal shows until `marker` (or its end); fails after `timeout` seconds."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} on the terminal; it showed: {seen[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # the terminal closed: the program ended
                break
    return seen
