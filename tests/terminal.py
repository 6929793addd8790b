"""A person's terminal for tests: `agent` run in a pseudo-terminal, and reading what it shows.

On a loaded machine (CI runs Docker, Chromium and model tests beside these) a child can be slow
to start: the waits are generous, and a wait that runs out says what the child was doing (its
Python stacks, dumped by `faulthandler`), so a stall is diagnosed rather than guessed at.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

from .conftest import REPO

#: how long a test waits for what the terminal should show
WAIT_SECONDS = 60.0

#: the child started on each terminal, so a wait that runs out can ask it where it is
_children: dict[int, int] = {}
#: per terminal, what was read after the last marker found
_unread: dict[int, bytes] = {}


def agent_in_terminal(*argv: str, env: dict[str, str] | None = None) -> tuple[int, int]:
    """Start `agent ARGV...` in a pseudo-terminal; its (pid, terminal fd)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a person's terminal
        os.environ.update({"PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1", **(env or {})})
        os.execv(sys.executable, [sys.executable, "-m", "frontends.cli", *argv])
    _children[fd] = pid
    _unread.pop(fd, None)  # a new terminal: nothing of an old one on the same fd
    return pid, fd


def read_until(fd: int, marker: bytes, timeout: float = WAIT_SECONDS) -> bytes:
    """What the terminal shows until `marker` (or its end); fails after `timeout` seconds,
    with what the child was doing then."""
    # What an earlier call read past its own marker (in the same chunk) counts here too.
    seen = _unread.pop(fd, b"")
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"no {marker!r} on the terminal in {timeout:.0f} s; it showed: {seen[-500:]!r}"
                f"{_stacks(fd)}"
            )
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # the terminal closed: the program ended
                break
    if marker in seen:
        _unread[fd] = seen[seen.index(marker) + len(marker) :]
    return seen


def _stacks(fd: int) -> str:
    """The Python stacks of the child on terminal `fd` (it is stopped to dump them), or ""."""
    pid = _children.get(fd)
    try:
        if pid is None or os.waitpid(pid, os.WNOHANG) != (0, 0):
            return ""
    except ChildProcessError:  # another terminal's child, gone since: nothing to ask
        return ""
    os.kill(pid, signal.SIGABRT)  # faulthandler writes every thread's stack to the terminal
    dumped = b""
    deadline = time.monotonic() + 5.0
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        try:
            dumped += os.read(fd, 65536)
        except OSError:
            break
    return f"\nthe child's stacks then:\n{dumped.decode(errors='replace')}"
